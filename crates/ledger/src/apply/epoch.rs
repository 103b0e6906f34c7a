//! End of block: proposals whose time is up, billing, minting, and the validator set handed over at an epoch's end.

use peergrid_core::ProposalId;

use crate::records::{ProposalStatus, ValidatorMember, ValidatorSet};
use crate::state::State;

use super::*;

impl State {
    /// At the last block of an epoch, hand the next epoch to the validator set voted in, if
    /// any. Runs after the block's votes, so a set passed in the boundary block itself takes
    /// over at once: the chain learns a set only from a finalized boundary block, never from
    /// one still being voted on.
    pub(crate) fn end_epoch(&mut self, height: u64, events: &mut Vec<Event>) {
        let len = self.epoch_blocks().max(1);
        if height.checked_add(1).is_none_or(|next| next % len != 0) {
            return;
        }
        if self.config().pending_validators.is_none() {
            return;
        }
        let Some(pending) = self.config_mut().pending_validators.take() else {
            return;
        };
        let epoch = self.epoch_of(height) + 1;
        let set = ValidatorSet {
            epoch,
            first_height: height + 1,
            members: pending
                .into_iter()
                .map(|v| ValidatorMember {
                    account: v.account,
                    address: Some(v.address),
                })
                .collect(),
        };
        let validators = set.accounts();
        self.config_mut().validators = validators.clone();
        self.validator_sets.insert(epoch, set);
        events.push(Event::ValidatorSetChanged {
            epoch,
            first_height: height + 1,
            validators,
        });
    }

    /// End-of-block work for the block at `height`, at ledger time `now_ms`: close proposals
    /// whose time is up, bill the contracts due and resume those whose owners can pay again,
    /// mint a batch of rewards, prune receipts past their retention, and at an epoch's last
    /// block install the validator set voted in.
    pub(crate) fn end_block(&mut self, height: u64, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let due: Vec<(u64, ProposalId)> = self
            .proposal_expiry
            .range(..(now_ms.saturating_add(1), 0))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.proposal_expiry.remove(&key);
            let Some(p) = self.proposals.get(&key.1).cloned() else {
                continue;
            };
            if p.status != ProposalStatus::Open {
                continue;
            }
            let mut status = self
                .outcome(&p, now_ms, true)
                .unwrap_or(ProposalStatus::Expired { at_ms: now_ms });
            if matches!(status, ProposalStatus::Executed { .. }) {
                if self.check_action(&p.action).is_ok() {
                    self.execute(&p.action);
                } else {
                    status = ProposalStatus::Rejected { at_ms: now_ms };
                }
            }
            self.close_proposal(p, status, &mut events);
        }
        self.end_block_billing(now_ms, &mut events);
        self.end_block_minting(now_ms, &mut events);
        self.prune_receipts();
        self.end_epoch(height, &mut events);
        events
    }
}
