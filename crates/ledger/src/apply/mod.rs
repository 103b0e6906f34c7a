//! Applying one signed transaction: every rule, every rejection, every event.
//!
//! Rules are checked in this order: chain id, field limits, signature, nonce, then
//! the payload's own rules against the state, then the fee. A transaction that
//! breaks any of them is rejected with a [`TxError`] naming the rule and changes
//! nothing, not even the nonce: the state is rolled back to where it was before.

use serde::{Deserialize, Serialize};

use peergrid_core::economics;
use peergrid_core::tx::{ContractSpec, FARM_INVITE_NAMESPACE, PowerTarget, invitation_message};
use peergrid_core::{AccountId, Amount, Capacity, Payload, SignedTx};

use crate::minting::PreviousReport;
use crate::records::{
    Account, ContractState, DeleteReason, Farm, FarmIp, Node, Proposal, ProposalStatus, Uptime,
};
use crate::state::State;

/// What a block tells the state machine about itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlockContext {
    /// The block's height.
    pub height: u64,
    /// The block's timestamp, set by its proposer: the ledger's only clock, ms.
    pub time_ms: u64,
}

pub use peergrid_types::{Event, TxError};

mod check;
mod contracts;
mod epoch;
mod farms;
mod governance;
mod nodes;

pub use check::{check_stateless, check_stateless_batch, check_stateless_unless};
use contracts::state_name;

impl State {
    /// Apply one transaction at `ctx`: all or nothing.
    pub fn apply_tx(&mut self, tx: &SignedTx, ctx: &BlockContext) -> Result<Vec<Event>, TxError> {
        check_stateless(tx, self.chain_id())?;
        self.apply_checked(tx, tx.encode().len(), ctx)
    }

    /// Apply a transaction whose fields and signature were already checked; `len` is its encoded size.
    pub fn apply_checked(
        &mut self,
        tx: &SignedTx,
        len: usize,
        ctx: &BlockContext,
    ) -> Result<Vec<Event>, TxError> {
        let mark = self.mark();
        let result = self.apply_inner(tx, len, ctx);
        if result.is_err() {
            self.rollback(&mark);
        }
        self.forget_undo();
        result
    }

    /// The nonce check alone, so the mempool can tell stale from future transactions.
    pub fn check_nonce(&self, signer: &AccountId, nonce: u64) -> Result<(), TxError> {
        let expected = self.account(signer).nonce;
        match nonce.cmp(&expected) {
            std::cmp::Ordering::Less => Err(TxError::StaleNonce {
                signer: *signer,
                expected,
                got: nonce,
            }),
            std::cmp::Ordering::Greater => Err(TxError::FutureNonce {
                signer: *signer,
                expected,
                got: nonce,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    fn apply_inner(
        &mut self,
        tx: &SignedTx,
        len: usize,
        ctx: &BlockContext,
    ) -> Result<Vec<Event>, TxError> {
        let signer = tx.body.signer;
        if ctx.time_ms > tx.body.expires_ms {
            return Err(TxError::Expired {
                expires_ms: tx.body.expires_ms,
                now_ms: ctx.time_ms,
            });
        }
        self.check_nonce(&signer, tx.body.nonce)?;
        let mut events = Vec::new();
        let fee = if self.is_free(tx) {
            Amount::ZERO
        } else {
            Amount(
                self.params()
                    .fee_per_byte
                    .0
                    .checked_mul(len as u64)
                    .ok_or_else(|| TxError::Overflow("fee".into()))?,
            )
        };
        let before = self.account(&signer);
        if before.balance < fee {
            return Err(TxError::InsufficientBalance {
                needed: fee,
                fee,
                available: before.balance,
            });
        }
        self.apply_payload(signer, &tx.body.payload, fee, ctx, &mut events)?;
        // The payload may have moved tokens; the fee was reserved by its own balance check.
        let account = self.account(&signer);
        let balance = account
            .balance
            .checked_sub(fee)
            .ok_or(TxError::InsufficientBalance {
                needed: fee,
                fee,
                available: account.balance,
            })?;
        let nonce = account
            .nonce
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("nonce".into()))?;
        self.accounts.insert(signer, Account { balance, nonce });
        if fee.0 > 0 {
            let g = self.globals_mut();
            g.burned = g
                .burned
                .checked_add(fee)
                .ok_or_else(|| TxError::Overflow("burned supply".into()))?;
            events.insert(
                0,
                Event::FeeBurned {
                    account: signer,
                    amount: fee,
                },
            );
        }
        Ok(events)
    }

    /// Uptime reports by a registered node about itself cost nothing: the once-per-interval rule bounds them.
    fn is_free(&self, tx: &SignedTx) -> bool {
        match tx.body.payload {
            Payload::ReportUptime { node, .. } => {
                self.node(node).is_some_and(|n| n.account == tx.body.signer)
            }
            _ => false,
        }
    }

    fn apply_payload(
        &mut self,
        signer: AccountId,
        payload: &Payload,
        fee: Amount,
        ctx: &BlockContext,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        match payload {
            Payload::Transfer { to, amount } => {
                let from = self.account(&signer);
                let needed = amount
                    .checked_add(fee)
                    .ok_or_else(|| TxError::Overflow("amount".into()))?;
                if from.balance < needed {
                    return Err(TxError::InsufficientBalance {
                        needed,
                        fee,
                        available: from.balance,
                    });
                }
                let left = Amount(from.balance.0 - amount.0);
                self.accounts.insert(
                    signer,
                    Account {
                        balance: left,
                        ..from
                    },
                );
                let dest = self.account(to);
                let credited = dest
                    .balance
                    .checked_add(*amount)
                    .ok_or_else(|| TxError::Overflow("balance".into()))?;
                self.accounts.insert(
                    *to,
                    Account {
                        balance: credited,
                        ..dest
                    },
                );
                self.mark_funded(to);
                events.push(Event::Transferred {
                    from: signer,
                    to: *to,
                    amount: *amount,
                });
            }
            Payload::CreateFarm { name, public_ips } => {
                if self.farm_names.contains(&name.to_lowercase()) {
                    return Err(TxError::FarmNameTaken(name.clone()));
                }
                let id = self.next_farm_id()?;
                for ip in public_ips {
                    if let Some(other) = self.farm_ips.get(&ip.ip) {
                        return Err(TxError::PublicIpTaken {
                            ip: ip.to_string(),
                            farm: *other,
                        });
                    }
                    self.farm_ips.insert(ip.ip, id);
                }
                self.owner_farms.insert((signer, id), ());
                self.farms.insert(
                    id,
                    Farm {
                        id,
                        name: name.clone(),
                        owner: signer,
                        payout: signer,
                        public_ips: public_ips
                            .iter()
                            .map(|ip| FarmIp {
                                ip: *ip,
                                contract: None,
                            })
                            .collect(),
                        certified: false,
                        created_ms: ctx.time_ms,
                    },
                );
                self.farm_names.insert(name.to_lowercase(), id);
                events.push(Event::FarmCreated {
                    farm: id,
                    owner: signer,
                    name: name.clone(),
                });
            }
            Payload::UpdateFarm {
                farm,
                name,
                public_ips,
                payout,
            } => {
                let mut f = self.owned_farm(*farm, &signer)?.clone();
                if let Some(name) = name
                    && *name != f.name
                {
                    let key = name.to_lowercase();
                    if self.farm_names.get(&key).is_some_and(|id| *id != f.id) {
                        return Err(TxError::FarmNameTaken(name.clone()));
                    }
                    self.farm_names.remove(&f.name.to_lowercase());
                    self.farm_names.insert(key, f.id);
                    f.name = name.clone();
                }
                if let Some(ips) = public_ips {
                    // IPs held by live contracts must stay: removing them would strand the deployments.
                    for held in f.public_ips.iter().filter(|p| p.contract.is_some()) {
                        if !ips.iter().any(|ip| ip.ip == held.ip.ip) {
                            return Err(TxError::Field {
                                reason: format!(
                                    "public IP {} is used by contract {}; it cannot be removed",
                                    held.ip,
                                    held.contract.unwrap_or_default()
                                ),
                            });
                        }
                    }
                    for ip in ips {
                        if let Some(other) = self.farm_ips.get(&ip.ip)
                            && *other != f.id
                        {
                            return Err(TxError::PublicIpTaken {
                                ip: ip.to_string(),
                                farm: *other,
                            });
                        }
                    }
                    for old in &f.public_ips {
                        self.farm_ips.remove(&old.ip.ip);
                    }
                    for ip in ips {
                        self.farm_ips.insert(ip.ip, f.id);
                    }
                    f.public_ips = ips
                        .iter()
                        .map(|ip| FarmIp {
                            ip: *ip,
                            contract: f
                                .public_ips
                                .iter()
                                .find(|p| p.ip.ip == ip.ip)
                                .and_then(|p| p.contract),
                        })
                        .collect();
                }
                if let Some(p) = payout {
                    f.payout = *p;
                }
                self.farms.insert(f.id, f);
                events.push(Event::FarmUpdated { farm: *farm });
            }
            Payload::RegisterNode {
                farm,
                capacity,
                location,
                invitation,
            } => {
                if let Some(existing) = self.node_accounts.get(&signer) {
                    return Err(TxError::NodeAlreadyRegistered {
                        account: signer,
                        node: *existing,
                    });
                }
                let owner = self.farm(*farm).ok_or(TxError::UnknownFarm(*farm))?.owner;
                let message = invitation_message(self.chain_id(), *farm, &signer);
                if !invitation.verify(&owner, FARM_INVITE_NAMESPACE, &message) {
                    return Err(TxError::InvalidInvitation {
                        farm: *farm,
                        node: signer,
                    });
                }
                let id = self.next_node_id()?;
                let node = Node {
                    id,
                    farm: *farm,
                    account: signer,
                    capacity: *capacity,
                    used: Capacity::ZERO,
                    location: location.clone(),
                    registered_ms: ctx.time_ms,
                    certified: false,
                    power_target: PowerTarget::Up,
                    connection_price_uusd: self.params().token_price_uusd,
                    uptime: Uptime::default(),
                    contracts: 0,
                    rented_by: None,
                };
                self.nodes.insert(id, node);
                self.node_accounts.insert(signer, id);
                self.farm_nodes.insert((*farm, id), ());
                let weight = economics::reward_units(capacity).weight_micro();
                let e = self.economy_mut();
                e.farmer_weight_total = e.farmer_weight_total.saturating_add(weight);
                events.push(Event::NodeRegistered {
                    node: id,
                    farm: *farm,
                    account: signer,
                });
            }
            Payload::UpdateNode {
                node,
                capacity,
                location,
            } => {
                let mut n = self.own_node(*node, &signer)?.clone();
                if let Some(c) = capacity {
                    if !n.used.fits_within(c) {
                        return Err(TxError::CapacityBelowReserved {
                            node: n.id,
                            reserved: n.used,
                            offered: *c,
                        });
                    }
                    let old = economics::reward_units(&n.capacity).weight_micro();
                    let new = economics::reward_units(c).weight_micro();
                    let e = self.economy_mut();
                    e.farmer_weight_total = e
                        .farmer_weight_total
                        .saturating_sub(old)
                        .saturating_add(new);
                    n.capacity = *c;
                }
                if let Some(l) = location {
                    n.location = l.clone();
                }
                self.nodes.insert(n.id, n);
                events.push(Event::NodeUpdated { node: *node });
            }
            Payload::SetPowerTarget { node, target } => {
                let farm = self.node(*node).ok_or(TxError::UnknownNode(*node))?.farm;
                self.owned_farm(farm, &signer)?;
                if let Some(n) = self.nodes.get_mut(node) {
                    n.power_target = *target;
                }
                events.push(Event::PowerTargetSet {
                    node: *node,
                    target: *target,
                });
            }
            Payload::ReportUptime {
                node,
                uptime_secs,
                timestamp_secs,
            } => {
                let n = self.own_node(*node, &signer)?;
                let params = self.params();
                let now_secs = ctx.time_ms / 1000;
                let drift_secs = now_secs.abs_diff(*timestamp_secs);
                if drift_secs > params.uptime_drift_secs {
                    return Err(TxError::UptimeClockDrift {
                        timestamp_secs: *timestamp_secs,
                        drift_secs,
                        max_secs: params.uptime_drift_secs,
                    });
                }
                // Ledger time is cut into windows of one interval and a node reports once per
                // window: a strict "once per interval" that block-time jitter cannot game.
                let interval_ms = params.uptime_interval_secs * 1000;
                let window = ctx.time_ms / interval_ms;
                if let Some(last) = n.uptime.last_report_ms
                    && last / interval_ms >= window
                {
                    return Err(TxError::UptimeTooSoon {
                        node: *node,
                        next_ms: (window + 1) * interval_ms,
                    });
                }
                let previous = n.uptime.last_report_ms.map(|at_ms| PreviousReport {
                    at_ms,
                    uptime_secs: n.uptime.last_uptime_secs,
                    timestamp_secs: n.uptime.last_timestamp_secs,
                    boot_secs: n.uptime.boot_secs,
                });
                let boot_secs = self.account_uptime(
                    *node,
                    previous,
                    ctx.time_ms,
                    *uptime_secs,
                    *timestamp_secs,
                    events,
                );
                if let Some(n) = self.nodes.get_mut(node) {
                    n.uptime = Uptime {
                        last_report_ms: Some(ctx.time_ms),
                        last_uptime_secs: *uptime_secs,
                        last_timestamp_secs: *timestamp_secs,
                        boot_secs,
                        reports: n.uptime.reports.saturating_add(1),
                    };
                }
                events.push(Event::UptimeReported {
                    node: *node,
                    uptime_secs: *uptime_secs,
                });
            }
            Payload::ReportUsage { contract, nu_bytes } => {
                let c = self
                    .contract(*contract)
                    .ok_or(TxError::UnknownContract(*contract))?;
                let node_id = c.node.ok_or_else(|| TxError::ContractState {
                    contract: *contract,
                    state: "not on a node".into(),
                    action: "reporting network usage".into(),
                })?;
                if !c.is_live() {
                    return Err(TxError::ContractState {
                        contract: *contract,
                        state: state_name(&c.state),
                        action: "reporting network usage".into(),
                    });
                }
                self.own_node(node_id, &signer)?;
                if let Some(c) = self.contracts.get_mut(contract) {
                    c.unbilled_nu_bytes = c.unbilled_nu_bytes.saturating_add(*nu_bytes);
                }
                self.add_nu_bytes(node_id, ctx.time_ms, *nu_bytes);
                events.push(Event::UsageReported {
                    contract: *contract,
                    node: node_id,
                    nu_bytes: *nu_bytes,
                });
            }
            Payload::CreateContract(spec) => self.create_contract(signer, spec, ctx, events)?,
            Payload::UpdateContract {
                contract,
                deployment_hash,
                resources,
            } => {
                let c = self.owned_contract(*contract, &signer)?.clone();
                let ContractSpec::Deployment {
                    node, public_ips, ..
                } = c.spec
                else {
                    return Err(TxError::ContractState {
                        contract: c.id,
                        state: "not a deployment contract".into(),
                        action: "changing its deployment".into(),
                    });
                };
                if c.state != ContractState::Created {
                    return Err(TxError::ContractState {
                        contract: c.id,
                        state: state_name(&c.state),
                        action: "updating it".into(),
                    });
                }
                // Bill the time so far at the old reservation, so the new one is billed only from now.
                self.try_bill(c.id, ctx.time_ms, fee, false, events)
                    .map_err(|u| TxError::InsufficientBalance {
                        needed: u.needed,
                        fee,
                        available: u.available,
                    })?;
                let n = self.node(node).ok_or(TxError::UnknownNode(node))?;
                let used_without = n.used.saturating_sub(&c.reserved);
                let needed = used_without
                    .checked_add(resources)
                    .ok_or_else(|| TxError::Overflow("capacity".into()))?;
                if !needed.fits_within(&n.capacity) {
                    return Err(TxError::InsufficientCapacity {
                        node,
                        requested: resources.to_string(),
                        free: n.capacity.saturating_sub(&used_without).to_string(),
                    });
                }
                if let Some(n) = self.nodes.get_mut(&node) {
                    n.used = needed;
                }
                if let Some(c) = self.contracts.get_mut(contract) {
                    c.spec = ContractSpec::Deployment {
                        node,
                        deployment_hash: *deployment_hash,
                        resources: *resources,
                        public_ips,
                    };
                    c.reserved = *resources;
                }
                events.push(Event::ContractUpdated {
                    contract: *contract,
                    deployment_hash: *deployment_hash,
                });
            }
            Payload::CancelContract { contract } => {
                let c = self.owned_contract(*contract, &signer)?.clone();
                if !c.is_live() {
                    return Err(TxError::ContractState {
                        contract: c.id,
                        state: state_name(&c.state),
                        action: "cancelling it".into(),
                    });
                }
                if let (ContractSpec::Rent { node }, Some(n)) =
                    (&c.spec, c.node.and_then(|id| self.node(id)))
                    && n.contracts > 1
                {
                    return Err(TxError::RentInUse {
                        contract: c.id,
                        node: *node,
                        contracts: n.contracts - 1,
                    });
                }
                self.close_contract(
                    c.id,
                    DeleteReason::CanceledByOwner,
                    ctx.time_ms,
                    fee,
                    events,
                );
            }
            Payload::Propose {
                action,
                description,
            } => {
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
                        description: description.clone(),
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
            }
            Payload::Vote { proposal, approve } => {
                self.vote(*proposal, signer, *approve, ctx, events)?;
            }
        }
        Ok(())
    }
}
