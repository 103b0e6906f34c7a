//! Governance: proposing, which actions apply, farmers' weight, votes, closing and executing proposals.

use peergrid_core::economics;
use peergrid_core::tx::GovAction;
use peergrid_core::{AccountId, ProposalId};

use crate::records::{Proposal, ProposalStatus, VoteRecord};
use crate::state::State;

use super::*;

impl State {
    pub(super) fn propose(
        &mut self,
        at: Applying<'_>,
        action: &GovAction,
        description: &str,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, ctx, .. } = at;
        let council = &self.config().council;
        if !council.members.contains(&signer) {
            return Err(TxError::NotCouncilMember(signer));
        }
        self.check_action(action)?;
        let id = self.globals().next_proposal;
        self.globals_mut().next_proposal = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("proposal id".into()))?;
        let expires_ms = ctx
            .time_ms
            .saturating_add(self.params().proposal_ttl_secs * 1000);
        self.proposals.insert(
            id,
            Proposal {
                id,
                proposer: signer,
                action: action.clone(),
                description: description.to_string(),
                created_ms: ctx.time_ms,
                expires_ms,
                approvals: vec![],
                rejections: vec![],
                farmer_weight_for: 0,
                farmer_weight_against: 0,
                farmer_voters: 0,
                status: ProposalStatus::Open,
            },
        );
        self.proposal_expiry.insert((expires_ms, id), ());
        events.push(Event::ProposalCreated {
            proposal: id,
            proposer: signer,
        });
        // Proposing is approving: a council of one decides at once.
        self.vote(id, signer, true, ctx, events)?;
        Ok(())
    }

    pub(crate) fn check_action(&self, action: &GovAction) -> Result<(), TxError> {
        match action {
            GovAction::SetNodeCertified { node, .. } if self.node(*node).is_none() => Err(
                TxError::InvalidAction(format!("node {node} does not exist")),
            ),
            GovAction::SetFarmCertified { farm, .. } if self.farm(*farm).is_none() => Err(
                TxError::InvalidAction(format!("farm {farm} does not exist")),
            ),
            GovAction::SetPricingPolicy(p) => {
                p.check().map_err(|e| TxError::InvalidAction(e.to_string()))
            }
            GovAction::SetFarmingPolicy(f) => {
                f.check().map_err(|e| TxError::InvalidAction(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// A farmer's governance weight: `2·CU + SU` (reward units, millionths) of every node of
    /// every farm `account` owns.
    pub fn farmer_weight(&self, account: &AccountId) -> u64 {
        self.farms_of(account)
            .flat_map(|f| self.nodes_of(f.id))
            .map(|n| economics::reward_units(&n.capacity).weight_micro())
            .fold(0u64, u64::saturating_add)
    }

    pub(crate) fn vote(
        &mut self,
        id: ProposalId,
        voter: AccountId,
        approve: bool,
        ctx: &BlockContext,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let council = self.config().council.members.contains(&voter);
        let weight_micro = self.farmer_weight(&voter);
        if !council && weight_micro == 0 {
            return Err(TxError::NotCouncilMember(voter));
        }
        let p = self
            .proposals
            .get(&id)
            .ok_or(TxError::UnknownProposal(id))?;
        if p.status != ProposalStatus::Open || ctx.time_ms >= p.expires_ms {
            return Err(TxError::ProposalClosed(id));
        }
        if self.votes.contains(&(id, voter)) {
            return Err(TxError::AlreadyVoted {
                proposal: id,
                voter,
            });
        }
        let mut p = p.clone();
        if council {
            if approve {
                p.approvals.push(voter);
            } else {
                p.rejections.push(voter);
            }
        }
        if weight_micro > 0 {
            let side = if approve {
                &mut p.farmer_weight_for
            } else {
                &mut p.farmer_weight_against
            };
            *side = side.saturating_add(weight_micro);
            p.farmer_voters = p.farmer_voters.saturating_add(1);
        }
        self.votes.insert(
            (id, voter),
            VoteRecord {
                approve,
                council,
                weight_micro,
                at_ms: ctx.time_ms,
            },
        );
        events.push(Event::Voted {
            proposal: id,
            voter,
            approve,
            council,
            weight_micro,
        });
        if let Some(status) = self.outcome(&p, ctx.time_ms, false) {
            if matches!(status, ProposalStatus::Executed { .. }) {
                self.check_action(&p.action)?;
                self.execute(&p.action);
            }
            self.close_proposal(p, status, events);
        } else {
            self.proposals.insert(id, p);
        }
        Ok(())
    }

    /// How `p` ends at `now_ms`, or `None` while it stays open.
    ///
    /// Council approvals from current members must reach the threshold, and farmers'
    /// weight in favour must be at least their weight against. Before expiry a proposal
    /// closes only when no further vote can change that: the council can no longer reach
    /// the threshold, or it has and the farmers who have not voted (the rest of all
    /// nodes' weight) could not tip the farmer side. At expiry (`at_expiry`) it passes or
    /// fails on the votes cast.
    pub(crate) fn outcome(
        &self,
        p: &Proposal,
        now_ms: u64,
        at_expiry: bool,
    ) -> Option<ProposalStatus> {
        let council = &self.config().council;
        let count =
            |list: &[AccountId]| list.iter().filter(|a| council.members.contains(a)).count();
        let threshold = council.threshold as usize;
        let council_passes = count(&p.approvals) >= threshold;
        let council_fails = count(&p.rejections) > council.members.len().saturating_sub(threshold);
        let (yes, no) = (p.farmer_weight_for as u128, p.farmer_weight_against as u128);
        let undecided = (self.economy().farmer_weight_total as u128).saturating_sub(yes + no);
        let executed = ProposalStatus::Executed { at_ms: now_ms };
        let rejected = ProposalStatus::Rejected { at_ms: now_ms };
        if council_fails {
            Some(rejected)
        } else if council_passes && yes >= no + undecided {
            Some(executed)
        } else if council_passes && no > yes + undecided {
            Some(rejected)
        } else if !at_expiry {
            None
        } else if council_passes && yes >= no {
            Some(executed)
        } else if council_passes {
            Some(rejected)
        } else {
            Some(ProposalStatus::Expired { at_ms: now_ms })
        }
    }

    pub(crate) fn close_proposal(
        &mut self,
        mut p: Proposal,
        status: ProposalStatus,
        events: &mut Vec<Event>,
    ) {
        p.status = status;
        self.proposal_expiry.remove(&(p.expires_ms, p.id));
        events.push(Event::ProposalClosed {
            proposal: p.id,
            status,
        });
        self.proposals.insert(p.id, p);
    }

    pub(crate) fn execute(&mut self, action: &GovAction) {
        match action {
            GovAction::SetTokenPrice { uusd } => self.config_mut().params.token_price_uusd = *uusd,
            GovAction::SetFeePerByte { fee } => self.config_mut().params.fee_per_byte = *fee,
            GovAction::SetPricingPolicy(p) => self.config_mut().params.pricing = p.clone(),
            GovAction::SetFarmingPolicy(f) => self.config_mut().params.farming = f.clone(),
            GovAction::SetNodeCertified { node, certified } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.certified = *certified;
                }
            }
            GovAction::SetFarmCertified { farm, certified } => {
                if let Some(f) = self.farms.get_mut(farm) {
                    f.certified = *certified;
                }
            }
            GovAction::SetCouncil { members, threshold } => {
                self.config_mut().council = crate::genesis::Council {
                    members: members.clone(),
                    threshold: *threshold,
                };
            }
            GovAction::SetValidators { validators } => {
                self.config_mut().pending_validators = Some(validators.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;
    use peergrid_core::Payload;

    fn proposal(approvals: &[u8], rejections: &[u8], weight_for: u64) -> Proposal {
        Proposal {
            id: 0,
            proposer: key(1).account(),
            action: GovAction::SetTokenPrice { uusd: 1 },
            description: String::new(),
            created_ms: 0,
            expires_ms: 1,
            approvals: approvals.iter().map(|n| key(*n).account()).collect(),
            rejections: rejections.iter().map(|n| key(*n).account()).collect(),
            farmer_weight_for: weight_for,
            farmer_weight_against: 0,
            farmer_voters: u32::from(weight_for > 0),
            status: ProposalStatus::Open,
        }
    }

    #[test]
    fn a_proposal_closes_early_only_when_no_vote_left_can_change_it() {
        let mut kit = Kit::new();
        let executed = Some(ProposalStatus::Executed { at_ms: 5 });
        let rejected = Some(ProposalStatus::Rejected { at_ms: 5 });
        let s = &kit.state;
        assert_eq!(s.outcome(&proposal(&[1], &[], 0), 5, false), None);
        assert_eq!(
            s.outcome(&proposal(&[1], &[], 0), 5, true),
            Some(ProposalStatus::Expired { at_ms: 5 })
        );
        assert_eq!(s.outcome(&proposal(&[1, 2], &[], 0), 5, false), executed);
        assert_eq!(s.outcome(&proposal(&[1], &[2, 3], 0), 5, false), rejected);
        assert_eq!(
            s.outcome(&proposal(&[1, 9], &[], 0), 5, true),
            Some(ProposalStatus::Expired { at_ms: 5 }),
            "only council members count toward the threshold"
        );
        // Once farmers hold weight, a council majority waits for them until expiry.
        let farm = kit.farm(&key(4), "farm");
        kit.node(&key(4), farm, &key(40));
        let s = &kit.state;
        let total = s.economy().farmer_weight_total;
        assert_eq!(s.outcome(&proposal(&[1, 2], &[], 0), 5, false), None);
        assert_eq!(s.outcome(&proposal(&[1, 2], &[], 0), 5, true), executed);
        assert_eq!(
            s.outcome(&proposal(&[1, 2], &[], total), 5, false),
            executed
        );
    }

    #[test]
    fn only_council_members_propose_and_proposing_is_approving() {
        let mut kit = Kit::new();
        let propose = Payload::Propose {
            action: GovAction::SetTokenPrice { uusd: 42 },
            description: "price".into(),
        };
        let err = kit.refused(&key(5), propose.clone());
        assert_eq!(err, TxError::NotCouncilMember(key(5).account()));
        kit.ok(&key(1), propose);
        let p = kit.state.proposal(1).expect("proposal 1");
        assert_eq!(p.approvals, vec![key(1).account()]);
        assert_eq!(p.status, ProposalStatus::Open);
        kit.ok(
            &key(2),
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        assert_eq!(kit.state.params().token_price_uusd, 42);
        let err = kit.refused(
            &key(2),
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        assert_eq!(
            err,
            TxError::ProposalClosed(1),
            "an executed proposal takes no more votes"
        );
    }
}
