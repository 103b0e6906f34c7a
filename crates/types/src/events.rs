//! What a transaction did or why it was refused: the events followers read and the errors
//! clients are told.

use serde::{Deserialize, Serialize};

use peergrid_core::tx::{FieldError, PowerTarget};
use peergrid_core::{AccountId, Amount, Capacity, ContractId, FarmId, Hash, NodeId, ProposalId};

use crate::records::{BillStatus, DeleteReason, ProposalStatus, ViolationKind};

/// Why a transaction was rejected. The state is unchanged.
///
/// Serialized adjacently tagged (`{"error": "...", "detail": ...}`): an internally tagged
/// enum cannot hold a variant like `FarmNameTaken(String)`, and a receipt that cannot be
/// serialized stops every validator at that block.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// A node's new capacity would not hold what its contracts reserve.
    #[error(
        "node {node} cannot shrink to {offered}: its contracts reserve {reserved}, which does \
         not fit ({}); keep at least what they reserve, or wait until those contracts end",
        .reserved.excess_over(.offered)
    )]
    CapacityBelowReserved {
        /// The node.
        node: NodeId,
        /// What its contracts reserve.
        reserved: Capacity,
        /// The capacity it asked for.
        offered: Capacity,
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
    #[error(
        "node {node} already hosts contracts ({contracts}); only an empty node can be rented: cancel them first"
    )]
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
    /// Only council members (or, for votes, farmers with nodes) may do this.
    #[error("{0} is not a council member (nor, for votes, a farmer with nodes)")]
    NotCouncilMember(AccountId),
    /// A public IP belongs to one farm.
    #[error("public IP {ip} is already listed by farm {farm}")]
    PublicIpTaken {
        /// The address.
        ip: String,
        /// The farm listing it.
        farm: FarmId,
    },
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
    /// The chain's ledger rules are older than what was tried.
    #[error(
        "{what} needs ledger rules {needs} or later; this chain runs rules {runs} (`peergrid gov \
         params`), whose validators may not know it"
    )]
    LedgerRules {
        /// What was tried.
        what: String,
        /// The rules it needs.
        needs: u64,
        /// The chain's.
        runs: u64,
    },
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
        /// Seconds its service has been running.
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
    /// A node gave back a contract it could not serve (a `ContractDeleted` follows).
    ContractReleased {
        /// Its id.
        contract: ContractId,
        /// The node.
        node: NodeId,
        /// The node's reason.
        reason: String,
    },
    /// A proposal was made.
    ProposalCreated {
        /// Its id.
        proposal: ProposalId,
        /// Who made it.
        proposer: AccountId,
    },
    /// A council member or a farmer voted.
    Voted {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: AccountId,
        /// For or against.
        approve: bool,
        /// Whether the voter counts as a council member.
        council: bool,
        /// The voter's farms' capacity weight, millionths of `2·CU + SU`.
        weight_micro: u64,
    },
    /// A contract was billed (or, at deletion, its unpaid period written off).
    ContractBilled {
        /// Its id.
        contract: ContractId,
        /// Who paid.
        owner: AccountId,
        /// Period start, ledger ms.
        from_ms: u64,
        /// Period end, ledger ms.
        to_ms: u64,
        /// Net price, µUSD.
        uusd: u64,
        /// Tokens paid.
        tokens: Amount,
        /// Paid or written off.
        status: BillStatus,
    },
    /// A contract's owner could not pay: workloads pause, data is kept.
    ContractGraceStarted {
        /// Its id.
        contract: ContractId,
        /// Its owner.
        owner: AccountId,
        /// Its node, if any.
        node: Option<NodeId>,
        /// Ledger time grace began, ms.
        since_ms: u64,
    },
    /// A contract's debt was paid: it runs again.
    ContractGraceEnded {
        /// Its id.
        contract: ContractId,
        /// Its owner.
        owner: AccountId,
        /// Its node, if any.
        node: Option<NodeId>,
        /// Ledger time grace had begun, ms.
        since_ms: u64,
    },
    /// A node reported a contract's network traffic.
    UsageReported {
        /// The contract.
        contract: ContractId,
        /// The node.
        node: NodeId,
        /// Bytes.
        nu_bytes: u64,
    },
    /// An uptime report broke a rule: the node earns nothing for the period.
    UptimeViolation {
        /// The node.
        node: NodeId,
        /// The minting period.
        period: u64,
        /// What was wrong.
        violation: ViolationKind,
    },
    /// A node's reward for a minting period (possibly zero; its receipt says why).
    RewardMinted {
        /// The period.
        period: u64,
        /// The node.
        node: NodeId,
        /// Its farm.
        farm: FarmId,
        /// Who was paid.
        payout: AccountId,
        /// Reward, µUSD.
        uusd: u64,
        /// Tokens minted.
        tokens: Amount,
    },
    /// Every node of a minting period has its receipt.
    MintingPeriodClosed {
        /// The period.
        period: u64,
    },
    /// A proposal was decided or expired.
    ProposalClosed {
        /// Its id.
        proposal: ProposalId,
        /// How it ended.
        status: ProposalStatus,
    },
    /// A validator set voted in takes over at an epoch boundary.
    ValidatorSetChanged {
        /// The first epoch it decides.
        epoch: u64,
        /// Height of that epoch's first block.
        first_height: u64,
        /// Its members' consensus keys.
        validators: Vec<AccountId>,
    },
}
