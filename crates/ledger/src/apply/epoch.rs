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

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;
    use peergrid_core::tx::ValidatorEntry;

    #[test]
    fn a_voted_set_takes_over_after_the_last_block_of_the_epoch_only() {
        let mut kit = Kit::new();
        let entries: Vec<ValidatorEntry> = (240..244)
            .map(|n| ValidatorEntry {
                account: key(n).account(),
                address: format!("10.0.0.{n}:4000"),
            })
            .collect();
        kit.state.config_mut().pending_validators = Some(entries.clone());
        let len = kit.state.epoch_blocks();
        let mut events = Vec::new();
        kit.state.end_epoch(len - 2, &mut events);
        assert!(events.is_empty());
        assert_eq!(kit.state.validator_sets().count(), 1, "only genesis's set");
        kit.state.end_epoch(len - 1, &mut events);
        let accounts: Vec<_> = entries.iter().map(|e| e.account).collect();
        assert_eq!(
            events,
            vec![Event::ValidatorSetChanged {
                epoch: 1,
                first_height: len,
                validators: accounts.clone()
            }]
        );
        let set = kit.state.validator_sets().last().expect("epoch 1's set");
        assert_eq!(set.epoch, 1);
        assert_eq!(set.first_height, len);
        assert_eq!(set.accounts(), accounts);
        assert_eq!(kit.state.config().validators, accounts);
        assert!(kit.state.config().pending_validators.is_none());
        let mut later = Vec::new();
        kit.state.end_epoch(2 * len - 1, &mut later);
        assert!(later.is_empty(), "a set is handed over once");
    }
}
