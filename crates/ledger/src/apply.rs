//! Applying one signed transaction: every rule, every rejection, every event.
//!
//! Rules are checked in this order: chain id, field limits, signature, nonce, then
//! the payload's own rules against the state, then the fee. A transaction that
//! breaks any of them is rejected with a [`TxError`] naming the rule and changes
//! nothing, not even the nonce: the state is rolled back to where it was before.

use serde::{Deserialize, Serialize};

use peergrid_core::tx::{
    ContractSpec, FARM_INVITE_NAMESPACE, FieldError, GovAction, PowerTarget, invitation_message,
};
use peergrid_core::{
    AccountId, Amount, Capacity, ContractId, FarmId, Hash, NodeId, Payload, ProposalId, SignedTx,
};

use crate::records::{
    Account, Contract, ContractState, DeleteReason, Farm, FarmIp, Node, Proposal, ProposalStatus,
    Uptime,
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

/// Why a transaction was rejected. The state is unchanged.
///
/// Serialized adjacently tagged (`{"error": "...", "detail": ...}`): an internally tagged
/// enum cannot hold a variant like `FarmNameTaken(String)`, and a receipt that cannot be
/// serialized stops every validator at that block.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum TxError {
    /// A field breaks a limit or format.
    #[error("{reason}")]
    Field {
        /// The rule broken.
        reason: String,
    },
    /// Signed for another chain.
    #[error("wrong chain: the transaction is for {got:?} but this ledger is {expected:?}")]
    WrongChain {
        /// This ledger's chain id.
        expected: String,
        /// The transaction's.
        got: String,
    },
    /// The signature is not the signer's over this transaction.
    #[error("bad signature: the transaction is not signed by {signer}")]
    BadSignature {
        /// The claimed signer.
        signer: AccountId,
    },
    /// Past its expiry.
    #[error(
        "expired: the transaction was valid until ledger time {expires_ms} ms, it is now {now_ms} ms; sign a new one"
    )]
    Expired {
        /// The transaction's expiry.
        expires_ms: u64,
        /// The block's time.
        now_ms: u64,
    },
    /// Nonce already used.
    #[error("stale nonce {got}: {signer} already used it; the next nonce is {expected}")]
    StaleNonce {
        /// The signer.
        signer: AccountId,
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// Nonce skips ahead.
    #[error("future nonce {got}: {signer} must first use nonce {expected}")]
    FutureNonce {
        /// The signer.
        signer: AccountId,
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// Not enough tokens for the amount plus the fee.
    #[error(
        "insufficient balance: {needed} PGT needed (including a fee of {fee} PGT), {available} PGT available"
    )]
    InsufficientBalance {
        /// Amount plus fee.
        needed: Amount,
        /// The fee alone.
        fee: Amount,
        /// The balance.
        available: Amount,
    },
    /// No such farm.
    #[error("unknown farm {0}")]
    UnknownFarm(FarmId),
    /// Farm name in use.
    #[error("farm name {0:?} is taken; choose another")]
    FarmNameTaken(String),
    /// The signer does not own the farm.
    #[error("{signer} does not own farm {farm}")]
    NotFarmOwner {
        /// The farm.
        farm: FarmId,
        /// The signer.
        signer: AccountId,
    },
    /// The farm lacks free public IPs.
    #[error("farm {farm} has {free} free public IPs, {requested} requested")]
    NotEnoughPublicIps {
        /// The farm.
        farm: FarmId,
        /// Asked for.
        requested: u32,
        /// Free.
        free: u32,
    },
    /// The registration has no valid consent of the farm owner.
    #[error("invalid invitation: farm {farm}'s owner did not sign consent for {node} to join")]
    InvalidInvitation {
        /// The farm.
        farm: FarmId,
        /// The node's key.
        node: AccountId,
    },
    /// No such node.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// The key already belongs to a node.
    #[error("{account} is already registered as node {node}")]
    NodeAlreadyRegistered {
        /// The key.
        account: AccountId,
        /// Its node.
        node: NodeId,
    },
    /// Only the node's own key may do this.
    #[error("only node {node}'s own key may do this, not {signer}")]
    NotNodeKey {
        /// The node.
        node: NodeId,
        /// The signer.
        signer: AccountId,
    },
    /// An uptime report came too early.
    #[error(
        "uptime report too soon: node {node} already reported in this interval; the next one opens at ledger time {next_ms} ms"
    )]
    UptimeTooSoon {
        /// The node.
        node: NodeId,
        /// Earliest next report, ms.
        next_ms: u64,
    },
    /// An uptime report's timestamp is too far from ledger time.
    #[error(
        "uptime timestamp {timestamp_secs} s is {drift_secs} s from ledger time (at most {max_secs} s); check the node's clock"
    )]
    UptimeClockDrift {
        /// The report's timestamp.
        timestamp_secs: u64,
        /// How far off.
        drift_secs: u64,
        /// The limit.
        max_secs: u64,
    },
    /// The node cannot host the reservation.
    #[error("node {node} has {free} free; {requested} requested")]
    InsufficientCapacity {
        /// The node.
        node: NodeId,
        /// Asked for.
        requested: String,
        /// Free.
        free: String,
    },
    /// The node is rented by someone else.
    #[error("node {node} is rented by another account (contract {contract})")]
    NodeRented {
        /// The node.
        node: NodeId,
        /// The rent contract.
        contract: ContractId,
    },
    /// A rent needs an empty node.
    #[error("node {node} already hosts {contracts} contracts; only an empty node can be rented")]
    NodeNotEmpty {
        /// The node.
        node: NodeId,
        /// Live contracts on it.
        contracts: u32,
    },
    /// A rent contract still has deployments on its node.
    #[error(
        "rent contract {contract} still has {contracts} other contracts on node {node}; cancel them first"
    )]
    RentInUse {
        /// The rent contract.
        contract: ContractId,
        /// The node.
        node: NodeId,
        /// Other live contracts.
        contracts: u32,
    },
    /// Gateway name in use.
    #[error("gateway name {0:?} is taken; choose another")]
    NameTaken(String),
    /// No such contract.
    #[error("unknown contract {0}")]
    UnknownContract(ContractId),
    /// The signer does not own the contract.
    #[error("{signer} does not own contract {contract}")]
    NotContractOwner {
        /// The contract.
        contract: ContractId,
        /// The signer.
        signer: AccountId,
    },
    /// The contract cannot change in its state.
    #[error("contract {contract} is {state}; {action} is not possible")]
    ContractState {
        /// The contract.
        contract: ContractId,
        /// Its state.
        state: String,
        /// What was tried.
        action: String,
    },
    /// Only council members may do this.
    #[error("{0} is not a council member")]
    NotCouncilMember(AccountId),
    /// No such proposal.
    #[error("unknown proposal {0}")]
    UnknownProposal(ProposalId),
    /// The proposal is decided or expired.
    #[error("proposal {0} is closed")]
    ProposalClosed(ProposalId),
    /// A member votes once.
    #[error("{voter} already voted on proposal {proposal}")]
    AlreadyVoted {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: AccountId,
    },
    /// The action refers to something that does not exist.
    #[error("proposal action is not applicable: {0}")]
    InvalidAction(String),
    /// A counter or sum would overflow.
    #[error("arithmetic overflow in {0}")]
    Overflow(String),
}

impl From<FieldError> for TxError {
    fn from(e: FieldError) -> Self {
        TxError::Field {
            reason: e.to_string(),
        }
    }
}

/// Something that happened, for nodes, explorers and wallets following the ledger.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A fee was burned.
    FeeBurned {
        /// Who paid.
        account: AccountId,
        /// How much.
        amount: Amount,
    },
    /// Tokens moved.
    Transferred {
        /// From.
        from: AccountId,
        /// To.
        to: AccountId,
        /// How much.
        amount: Amount,
    },
    /// A farm was created.
    FarmCreated {
        /// Its id.
        farm: FarmId,
        /// Its owner.
        owner: AccountId,
        /// Its name.
        name: String,
    },
    /// A farm changed.
    FarmUpdated {
        /// Its id.
        farm: FarmId,
    },
    /// A node joined a farm.
    NodeRegistered {
        /// Its id.
        node: NodeId,
        /// Its farm.
        farm: FarmId,
        /// Its key.
        account: AccountId,
    },
    /// A node's capacity or location changed.
    NodeUpdated {
        /// Its id.
        node: NodeId,
    },
    /// A node's power target changed.
    PowerTargetSet {
        /// Its id.
        node: NodeId,
        /// The target.
        target: PowerTarget,
    },
    /// A node reported uptime.
    UptimeReported {
        /// Its id.
        node: NodeId,
        /// Seconds since its boot.
        uptime_secs: u64,
    },
    /// A contract was created.
    ContractCreated {
        /// Its id.
        contract: ContractId,
        /// Its owner.
        owner: AccountId,
        /// Its node, if any.
        node: Option<NodeId>,
    },
    /// A deployment contract points at a new deployment.
    ContractUpdated {
        /// Its id.
        contract: ContractId,
        /// The new deployment hash.
        deployment_hash: Hash,
    },
    /// A contract was deleted.
    ContractDeleted {
        /// Its id.
        contract: ContractId,
        /// Its node, if any.
        node: Option<NodeId>,
        /// Why.
        reason: DeleteReason,
    },
    /// A proposal was made.
    ProposalCreated {
        /// Its id.
        proposal: ProposalId,
        /// Who made it.
        proposer: AccountId,
    },
    /// A member voted.
    Voted {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: AccountId,
        /// For or against.
        approve: bool,
    },
    /// A proposal was decided or expired.
    ProposalClosed {
        /// Its id.
        proposal: ProposalId,
        /// How it ended.
        status: ProposalStatus,
    },
}

/// Checks that need no state beyond the chain id: fields and signature. The mempool runs these at the door.
pub fn check_stateless(tx: &SignedTx, chain_id: &str) -> Result<(), TxError> {
    if tx.body.chain_id != chain_id {
        return Err(TxError::WrongChain {
            expected: chain_id.to_string(),
            got: tx.body.chain_id.clone(),
        });
    }
    tx.check_fields()?;
    if !tx.verify_signature() {
        return Err(TxError::BadSignature {
            signer: tx.body.signer,
        });
    }
    Ok(())
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
                        return Err(TxError::InsufficientCapacity {
                            node: n.id,
                            requested: format!("{} reserved by contracts", n.used),
                            free: format!("only {c} in the new capacity"),
                        });
                    }
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
                if let Some(n) = self.nodes.get_mut(node) {
                    n.uptime = Uptime {
                        last_report_ms: Some(ctx.time_ms),
                        last_uptime_secs: *uptime_secs,
                        last_timestamp_secs: *timestamp_secs,
                        reports: n.uptime.reports.saturating_add(1),
                    };
                }
                events.push(Event::UptimeReported {
                    node: *node,
                    uptime_secs: *uptime_secs,
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
                self.delete_contract(c.id, DeleteReason::CanceledByOwner, ctx.time_ms, events);
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
                if !self.config().council.members.contains(&signer) {
                    return Err(TxError::NotCouncilMember(signer));
                }
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
            },
        );
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
            _ => Ok(()),
        }
    }

    fn vote(
        &mut self,
        id: ProposalId,
        voter: AccountId,
        approve: bool,
        ctx: &BlockContext,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let council = self.config().council.clone();
        let p = self
            .proposals
            .get(&id)
            .ok_or(TxError::UnknownProposal(id))?;
        if p.status != ProposalStatus::Open || ctx.time_ms >= p.expires_ms {
            return Err(TxError::ProposalClosed(id));
        }
        if p.approvals.contains(&voter) || p.rejections.contains(&voter) {
            return Err(TxError::AlreadyVoted {
                proposal: id,
                voter,
            });
        }
        let mut p = p.clone();
        if approve {
            p.approvals.push(voter);
        } else {
            p.rejections.push(voter);
        }
        events.push(Event::Voted {
            proposal: id,
            voter,
            approve,
        });
        // Only current members count: the council may have changed since the vote opened.
        let count =
            |list: &[AccountId]| list.iter().filter(|a| council.members.contains(a)).count();
        let threshold = council.threshold as usize;
        if count(&p.approvals) >= threshold {
            self.check_action(&p.action)?;
            self.execute(&p.action);
            p.status = ProposalStatus::Executed { at_ms: ctx.time_ms };
        } else if count(&p.rejections) > council.members.len() - threshold {
            p.status = ProposalStatus::Rejected { at_ms: ctx.time_ms };
        }
        if p.status != ProposalStatus::Open {
            self.proposal_expiry.remove(&(p.expires_ms, id));
            events.push(Event::ProposalClosed {
                proposal: id,
                status: p.status,
            });
        }
        self.proposals.insert(id, p);
        Ok(())
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

    /// End-of-block work at ledger time `now_ms`: expire proposals whose time is up.
    pub(crate) fn end_block(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        let due: Vec<(u64, ProposalId)> = self
            .proposal_expiry
            .range(..(now_ms.saturating_add(1), 0))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.proposal_expiry.remove(&key);
            if let Some(p) = self.proposals.get_mut(&key.1)
                && p.status == ProposalStatus::Open
            {
                p.status = ProposalStatus::Expired { at_ms: now_ms };
                events.push(Event::ProposalClosed {
                    proposal: key.1,
                    status: p.status,
                });
            }
        }
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
