//! Applying one signed transaction: every rule, every rejection, every event.
//!
//! Rules are checked in this order: chain id, field limits, signature, nonce, then
//! the payload's own rules against the state, then the fee. A transaction that
//! breaks any of them is rejected with a [`TxError`] naming the rule and changes
//! nothing, not even the nonce: the state is rolled back to where it was before.

use serde::{Deserialize, Serialize};

use peergrid_core::economics;
use peergrid_core::tx::{
    ContractSpec, FARM_INVITE_NAMESPACE, GovAction, PowerTarget, invitation_message,
};
use peergrid_core::{
    AccountId, Amount, Capacity, ContractId, FarmId, NodeId, Payload, ProposalId, SignedTx,
};

use crate::minting::PreviousReport;
use crate::records::{
    Account, Contract, ContractState, DeleteReason, Farm, FarmIp, Node, Proposal, ProposalStatus,
    Uptime, ValidatorMember, ValidatorSet, VoteRecord,
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

/// Checks that need no state beyond the chain id: fields and signature. The mempool runs these at the door.
pub fn check_stateless(tx: &SignedTx, chain_id: &str) -> Result<(), TxError> {
    check_unsigned(tx, chain_id)?;
    if !tx.verify_signature() {
        return Err(bad_signature(tx));
    }
    Ok(())
}

/// The stateless checks before the signature: chain id and fields.
fn check_unsigned(tx: &SignedTx, chain_id: &str) -> Result<(), TxError> {
    if tx.body.chain_id != chain_id {
        return Err(TxError::WrongChain {
            expected: chain_id.to_string(),
            got: tx.body.chain_id.clone(),
        });
    }
    Ok(tx.check_fields()?)
}

fn bad_signature(tx: &SignedTx) -> TxError {
    TxError::BadSignature {
        signer: tx.body.signer,
    }
}

/// [`check_stateless`] for many transactions at once, with their signatures checked in
/// batches; each answer is exactly what [`check_stateless`] gives for that transaction.
pub fn check_stateless_batch(txs: &[&SignedTx], chain_id: &str) -> Vec<Result<(), TxError>> {
    let mut results: Vec<Result<(), TxError>> =
        txs.iter().map(|tx| check_unsigned(tx, chain_id)).collect();
    // Only transactions that passed the field checks reach the signature, as in check_stateless.
    let to_verify: Vec<(usize, &SignedTx)> = txs
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_ok())
        .map(|(i, tx)| (i, *tx))
        .collect();
    let signed: Vec<&SignedTx> = to_verify.iter().map(|(_, tx)| *tx).collect();
    for ((i, tx), ok) in to_verify.iter().zip(SignedTx::verify_signatures(&signed)) {
        if !ok {
            results[*i] = Err(bad_signature(tx));
        }
    }
    results
}

/// [`check_stateless_batch`] on the transactions not marked as already checked (`true`);
/// those answer `Ok`. One answer per transaction, in order.
pub fn check_stateless_unless<'a>(
    txs: impl IntoIterator<Item = (&'a SignedTx, bool)>,
    chain_id: &str,
) -> Vec<Result<(), TxError>> {
    let txs: Vec<(&SignedTx, bool)> = txs.into_iter().collect();
    let todo: Vec<usize> = (0..txs.len()).filter(|i| !txs[*i].1).collect();
    let to_check: Vec<&SignedTx> = todo.iter().map(|i| txs[*i].0).collect();
    let mut results = vec![Ok(()); txs.len()];
    for (i, result) in todo.iter().zip(check_stateless_batch(&to_check, chain_id)) {
        results[*i] = result;
    }
    results
}

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

    fn next_farm_id(&mut self) -> Result<FarmId, TxError> {
        let g = self.globals_mut();
        let id = g.next_farm;
        g.next_farm = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("farm id".into()))?;
        Ok(id)
    }

    fn next_node_id(&mut self) -> Result<NodeId, TxError> {
        let g = self.globals_mut();
        let id = g.next_node;
        g.next_node = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("node id".into()))?;
        Ok(id)
    }

    fn owned_farm(&self, farm: FarmId, signer: &AccountId) -> Result<&Farm, TxError> {
        let f = self.farm(farm).ok_or(TxError::UnknownFarm(farm))?;
        if f.owner != *signer {
            return Err(TxError::NotFarmOwner {
                farm,
                signer: *signer,
            });
        }
        Ok(f)
    }

    fn own_node(&self, node: NodeId, signer: &AccountId) -> Result<&Node, TxError> {
        let n = self.node(node).ok_or(TxError::UnknownNode(node))?;
        if n.account != *signer {
            return Err(TxError::NotNodeKey {
                node,
                signer: *signer,
            });
        }
        Ok(n)
    }

    fn owned_contract(
        &self,
        contract: ContractId,
        signer: &AccountId,
    ) -> Result<&Contract, TxError> {
        let c = self
            .contract(contract)
            .ok_or(TxError::UnknownContract(contract))?;
        if c.owner != *signer {
            return Err(TxError::NotContractOwner {
                contract,
                signer: *signer,
            });
        }
        Ok(c)
    }

    fn create_contract(
        &mut self,
        signer: AccountId,
        spec: &ContractSpec,
        ctx: &BlockContext,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let id = self.globals().next_contract;
        let (node, reserved, ip_count) = match spec {
            ContractSpec::Deployment {
                node,
                resources,
                public_ips,
                ..
            } => (Some(*node), *resources, *public_ips),
            ContractSpec::Name { name } => {
                if self.names.contains(name) {
                    return Err(TxError::NameTaken(name.clone()));
                }
                self.names.insert(name.clone(), id);
                (None, Capacity::ZERO, 0)
            }
            ContractSpec::Storage { node, bytes } => {
                let n = self.node(*node).ok_or(TxError::UnknownNode(*node))?;
                // HDD first: bulk shards belong on the cheaper disks; SSD when the node has no HDD room.
                let reserved = if n.free().hru >= *bytes {
                    Capacity {
                        hru: *bytes,
                        ..Capacity::ZERO
                    }
                } else {
                    Capacity {
                        sru: *bytes,
                        ..Capacity::ZERO
                    }
                };
                (Some(*node), reserved, 0)
            }
            ContractSpec::Rent { node } => {
                let n = self.node(*node).ok_or(TxError::UnknownNode(*node))?;
                if let Some(by) = n.rented_by {
                    return Err(TxError::NodeRented {
                        node: *node,
                        contract: by,
                    });
                }
                if n.contracts > 0 {
                    return Err(TxError::NodeNotEmpty {
                        node: *node,
                        contracts: n.contracts,
                    });
                }
                (Some(*node), Capacity::ZERO, 0)
            }
        };
        let mut public_ips = Vec::new();
        if let Some(node_id) = node {
            let n = self.node(node_id).ok_or(TxError::UnknownNode(node_id))?;
            if let Some(rent) = n.rented_by
                && self.contract(rent).is_some_and(|r| r.owner != signer)
            {
                return Err(TxError::NodeRented {
                    node: node_id,
                    contract: rent,
                });
            }
            let used = n
                .used
                .checked_add(&reserved)
                .ok_or_else(|| TxError::Overflow("capacity".into()))?;
            if !used.fits_within(&n.capacity) {
                return Err(TxError::InsufficientCapacity {
                    node: node_id,
                    requested: reserved.to_string(),
                    free: n.free().to_string(),
                });
            }
            let farm_id = n.farm;
            let contracts = n
                .contracts
                .checked_add(1)
                .ok_or_else(|| TxError::Overflow("contracts on a node".into()))?;
            if ip_count > 0 {
                let farm = self.farm(farm_id).ok_or(TxError::UnknownFarm(farm_id))?;
                let free: Vec<usize> = farm
                    .public_ips
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.contract.is_none())
                    .map(|(i, _)| i)
                    .collect();
                if free.len() < ip_count as usize {
                    return Err(TxError::NotEnoughPublicIps {
                        farm: farm_id,
                        requested: ip_count,
                        free: free.len() as u32,
                    });
                }
                if let Some(f) = self.farms.get_mut(&farm_id) {
                    for &i in free.iter().take(ip_count as usize) {
                        f.public_ips[i].contract = Some(id);
                        public_ips.push(f.public_ips[i].ip);
                    }
                }
            }
            if let Some(n) = self.nodes.get_mut(&node_id) {
                n.used = used;
                n.contracts = contracts;
                if matches!(spec, ContractSpec::Rent { .. }) {
                    n.rented_by = Some(id);
                }
            }
        }
        self.globals_mut().next_contract = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("contract id".into()))?;
        self.contracts.insert(
            id,
            Contract {
                id,
                owner: signer,
                spec: spec.clone(),
                node,
                reserved,
                public_ips,
                state: ContractState::Created,
                created_ms: ctx.time_ms,
                billed_until_ms: ctx.time_ms,
                next_bill_ms: u64::MAX,
                unbilled_nu_bytes: 0,
            },
        );
        self.owner_contracts.insert((signer, id), ());
        if let Some(node) = node {
            self.node_contracts.insert((node, id), ());
        }
        let interval_ms = self.params().billing_interval_secs.saturating_mul(1000);
        self.schedule_bill(id, ctx.time_ms.saturating_add(interval_ms));
        events.push(Event::ContractCreated {
            contract: id,
            owner: signer,
            node,
        });
        Ok(())
    }

    /// Delete a live contract and release everything it holds.
    pub(crate) fn delete_contract(
        &mut self,
        id: ContractId,
        reason: DeleteReason,
        now_ms: u64,
        events: &mut Vec<Event>,
    ) {
        let Some(c) = self.contracts.get(&id).cloned() else {
            return;
        };
        if !c.is_live() {
            return;
        }
        if let Some(node_id) = c.node {
            let farm = self.nodes.get(&node_id).map(|n| n.farm);
            if let Some(n) = self.nodes.get_mut(&node_id) {
                n.used = n.used.saturating_sub(&c.reserved);
                n.contracts = n.contracts.saturating_sub(1);
                if n.rented_by == Some(id) {
                    n.rented_by = None;
                }
            }
            if !c.public_ips.is_empty()
                && let Some(f) = farm.and_then(|f| self.farms.get_mut(&f))
            {
                for ip in f.public_ips.iter_mut().filter(|p| p.contract == Some(id)) {
                    ip.contract = None;
                }
            }
        }
        if let ContractSpec::Name { name } = &c.spec {
            self.names.remove(name);
        }
        self.billing_due.remove(&(c.next_bill_ms, id));
        self.grace_by_owner.remove(&(c.owner, id));
        if let Some(c) = self.contracts.get_mut(&id) {
            c.state = ContractState::Deleted {
                at_ms: now_ms,
                reason,
            };
        }
        events.push(Event::ContractDeleted {
            contract: id,
            node: c.node,
            reason,
        });
    }

    fn check_action(&self, action: &GovAction) -> Result<(), TxError> {
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

    fn vote(
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
    fn outcome(&self, p: &Proposal, now_ms: u64, at_expiry: bool) -> Option<ProposalStatus> {
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

    fn close_proposal(&mut self, mut p: Proposal, status: ProposalStatus, events: &mut Vec<Event>) {
        p.status = status;
        self.proposal_expiry.remove(&(p.expires_ms, p.id));
        events.push(Event::ProposalClosed {
            proposal: p.id,
            status,
        });
        self.proposals.insert(p.id, p);
    }

    fn execute(&mut self, action: &GovAction) {
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

    /// At the last block of an epoch, hand the next epoch to the validator set voted in, if
    /// any. Runs after the block's votes, so a set passed in the boundary block itself takes
    /// over at once: the chain learns a set only from a finalized boundary block, never from
    /// one still being voted on.
    fn end_epoch(&mut self, height: u64, events: &mut Vec<Event>) {
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

fn state_name(state: &ContractState) -> String {
    match state {
        ContractState::Created => "created".into(),
        ContractState::GracePeriod { since_ms } => format!("in grace since {since_ms} ms"),
        ContractState::Deleted { .. } => "deleted".into(),
    }
}
