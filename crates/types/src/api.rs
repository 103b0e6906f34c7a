//! One typed answer per route of the ledger API: what validators serve and clients read.
//!
//! Every read is an [`AtHeight`]: the value with the finalized height and state root it was
//! read at (and its proof when one was asked for). Every refusal is an [`ApiError`].

use serde::{Deserialize, Serialize};

use peergrid_core::tx::ValidatorEntry;
use peergrid_core::{AccountId, Amount, Capacity, Hash, NodeId, TxHash};

use crate::params::{Council, Params};
use crate::proof::StateProof;
use crate::receipt::TxStatus;
use crate::records::{
    Bill, Economy, Node, NodeStatus, PrunedBills, RewardReceipt, ValidatorSet, VoteRecord,
};

/// The routes of the ledger API, for servers and clients alike.
pub mod routes {
    /// Chain status.
    pub const STATUS: &str = "/v1/status";
    /// Submit one transaction.
    pub const TX: &str = "/v1/tx";
    /// Submit a batch of transactions.
    pub const TXS: &str = "/v1/txs";
    /// Where a transaction is.
    pub const TX_STATUS: &str = "/v1/tx/{hash}";
    /// One account.
    pub const ACCOUNT: &str = "/v1/accounts/{id}";
    /// Farms, paged.
    pub const FARMS: &str = "/v1/farms";
    /// One farm, by id or name.
    pub const FARM: &str = "/v1/farms/{id}";
    /// Nodes, paged.
    pub const NODES: &str = "/v1/nodes";
    /// One node, by id or account.
    pub const NODE: &str = "/v1/nodes/{id}";
    /// Contracts, paged.
    pub const CONTRACTS: &str = "/v1/contracts";
    /// One contract, by id or name.
    pub const CONTRACT: &str = "/v1/contracts/{id}";
    /// A contract's bills.
    pub const BILLS: &str = "/v1/contracts/{id}/bills";
    /// A farm's reward receipts.
    pub const FARM_RECEIPTS: &str = "/v1/farms/{id}/receipts";
    /// One node's receipt of one period.
    pub const NODE_RECEIPT: &str = "/v1/nodes/{id}/receipts/{period}";
    /// A proposal's votes.
    pub const VOTES: &str = "/v1/proposals/{id}/votes";
    /// Minting, billing and supply.
    pub const ECONOMY: &str = "/v1/economy";
    /// Proposals, paged.
    pub const PROPOSALS: &str = "/v1/proposals";
    /// One proposal.
    pub const PROPOSAL: &str = "/v1/proposals/{id}";
    /// A finalized block.
    pub const BLOCK: &str = "/v1/blocks/{height}";
    /// The state certificate of a finalized block: a quorum's signatures over its state root.
    pub const CERTIFICATE: &str = "/v1/blocks/{height}/certificate";
    /// The state snapshots a validator serves.
    pub const SNAPSHOTS: &str = "/v1/snapshots";
    /// One snapshot's state file.
    pub const SNAPSHOT: &str = "/v1/snapshots/{height}";
    /// One snapshot's finalization certificate.
    pub const SNAPSHOT_FINALIZATION: &str = "/v1/snapshots/{height}/finalization";
    /// The validator set of an epoch.
    pub const EPOCH_VALIDATORS: &str = "/v1/epochs/{epoch}/validators";
    /// Finalized blocks as server-sent events.
    pub const EVENTS: &str = "/v1/events";

    /// Every route above.
    pub const ALL: &[&str] = &[
        STATUS,
        TX,
        TXS,
        TX_STATUS,
        ACCOUNT,
        FARMS,
        FARM,
        NODES,
        NODE,
        CONTRACTS,
        CONTRACT,
        BILLS,
        FARM_RECEIPTS,
        NODE_RECEIPT,
        VOTES,
        ECONOMY,
        PROPOSALS,
        PROPOSAL,
        BLOCK,
        CERTIFICATE,
        SNAPSHOTS,
        SNAPSHOT,
        SNAPSHOT_FINALIZATION,
        EPOCH_VALIDATORS,
        EVENTS,
    ];

    /// `route` with each `{name}` replaced by its value, in order.
    pub fn fill(route: &str, values: &[&(dyn std::fmt::Display + Sync)]) -> String {
        let mut out = String::with_capacity(route.len() + 16);
        let mut values = values.iter();
        let mut rest = route;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
            match values.next() {
                Some(v) => out.push_str(&v.to_string()),
                None => out.push_str(&rest[open..close]),
            }
            rest = &rest[close..];
        }
        out.push_str(rest);
        out
    }
}

/// The routes of a node's local endpoint (`peergrid node run --health`).
pub mod node_routes {
    /// 200 while the node's uptime reports reach the ledger, 503 when they do not.
    pub const HEALTH: &str = "/health";
    /// The node's identity, ledger, mesh and disks.
    pub const STATUS: &str = "/v1/status";
    /// The workloads the node runs.
    pub const WORKLOADS: &str = "/v1/workloads";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";
}

/// A value read from the ledger, with the finalized height and state root it was read at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AtHeight<T> {
    /// Finalized height of the read.
    pub height: u64,
    /// State root at that height.
    pub root: Hash,
    /// The value.
    pub data: T,
    /// The entry's proof against `root`, when `?proof=true` asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<StateProof>,
}

/// A page of a list and where the next page starts (`None`: this was the last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// The `from` of the next page.
    #[serde(default)]
    pub next: Option<u64>,
}

/// Why the API refused a request: a machine-readable kind and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// `bad_request`, `not_found`, `rejected`, `mempool_full`, `conflict`, …
    pub error: String,
    /// What was wrong and what to send instead.
    pub message: String,
}

/// A state snapshot a validator serves, for validators joining after its blocks are pruned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    /// The height of the state: an epoch's last block.
    pub height: u64,
    /// Its state root.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub root: Hash,
    /// Size of the state file.
    pub bytes: u64,
}

/// The chain as one validator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// The chain's name: transactions are signed for it.
    pub chain_id: String,
    /// Hash of the genesis the chain started from.
    pub genesis_hash: Hash,
    /// Ledger time of the last finalized block, ms.
    pub time_ms: u64,
    /// How long ago that block was, by this validator's clock, ms.
    pub last_block_age_ms: u64,
    /// Whether blocks are being finalized (the last one is recent enough).
    pub finalizing: bool,
    /// The validator set in force.
    pub validators: Vec<AccountId>,
    /// The current epoch.
    pub epoch: u64,
    /// Blocks per epoch.
    pub epoch_blocks: u64,
    /// The set that decides the next block, with the epoch it took over in.
    pub validator_set: Option<ValidatorSet>,
    /// Voted in by governance, taking over after the current epoch's last block.
    pub pending_validators: Option<Vec<ValidatorEntry>>,
    /// Height of the next epoch's first block.
    pub next_epoch_height: u64,
    /// Tokens at genesis, minted and burned.
    pub supply: Supply,
    /// Transactions waiting in this validator's mempool.
    pub mempool: usize,
    /// The chain's parameters.
    pub params: Params,
    /// The genesis's mesh bootstrap peers, as multiaddr text.
    pub mesh_bootstrap: Vec<String>,
    /// The council in force: who proposes and how many approvals pass a proposal (absent
    /// from validators older than it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub council: Option<Council>,
    /// The version of the ledger's rules the chain runs, from its genesis (0 also from
    /// validators older than it).
    #[serde(default)]
    pub ledger_rules: u64,
}

/// The token supply as the ledger counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Supply {
    /// Tokens at genesis.
    pub genesis: Amount,
    /// Tokens minted since (rewards).
    pub minted: Amount,
    /// Tokens burned since (fees).
    pub burned: Amount,
}

impl Supply {
    /// What every balance (pools included) must sum to: genesis + minted − burned, or `None`
    /// when more was burned than ever existed.
    pub fn expected(&self) -> Option<u128> {
        (self.genesis.0 as u128 + self.minted.0 as u128).checked_sub(self.burned.0 as u128)
    }
}

/// A transaction a validator took into its mempool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submitted {
    /// Its hash, to follow it with.
    pub hash: TxHash,
}

/// What a validator did with a batch of transactions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchSubmitted {
    /// How many it took into its mempool.
    pub accepted: usize,
    /// Why each other one was not, by its position in the batch.
    pub errors: Vec<BatchError>,
}

/// One transaction of a batch that was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchError {
    /// Its position in the batch.
    pub index: usize,
    /// Why.
    pub message: String,
}

/// Where a transaction is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxAnswer {
    /// The transaction.
    pub hash: TxHash,
    /// Where it is, as far as this validator knows.
    pub status: TxStatus,
}

/// An account as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountView {
    /// The account.
    pub account: AccountId,
    /// Its balance.
    pub balance: Amount,
    /// Its next nonce.
    pub nonce: u64,
    /// The node it is the key of, if any.
    pub node: Option<NodeId>,
}

/// A node as the API shows it: its record, with what the ledger derives from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    /// The ledger's record.
    #[serde(flatten)]
    pub node: Node,
    /// Up, standby or down, from its uptime reports.
    pub status: NodeStatus,
    /// Capacity no contract reserves.
    pub free: Capacity,
}

/// A page of a contract's bills, with what the bills pruned from the state added up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bills {
    /// Bills, oldest first.
    pub items: Vec<Bill>,
    /// The `from_ms` of the next page.
    #[serde(default)]
    pub next: Option<u64>,
    /// Bills past the retention: they left the state, their totals did not.
    pub pruned: Option<PrunedBills>,
}

/// A farm's reward receipts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipts {
    /// Receipts: a period's in node order, or the newest first.
    pub items: Vec<RewardReceipt>,
    /// The node id the next page of a period starts from.
    #[serde(default)]
    pub next: Option<u64>,
    /// The period ledger time is in.
    pub current_period: u64,
    /// The oldest period whose receipts the state still holds.
    pub kept_from_period: u64,
}

/// One vote on a proposal, with who cast it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Vote {
    /// The voter.
    pub voter: AccountId,
    /// The vote and the weight it carried.
    #[serde(flatten)]
    pub vote: VoteRecord,
}

/// A minting period's bounds in ledger time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Period {
    /// Its number.
    pub period: u64,
    /// First ms.
    pub start_ms: u64,
    /// Ms after its last.
    pub end_ms: u64,
}

/// The supply with every balance added up, to check the supply identity against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupplyCheck {
    /// Tokens at genesis.
    pub genesis: Amount,
    /// Tokens minted since.
    pub minted: Amount,
    /// Tokens burned since.
    pub burned: Amount,
    /// Every balance, pools included; a sum past what an amount holds is shown as the
    /// largest amount, and is not conserved.
    pub balances: Amount,
    /// Whether `genesis + minted − burned` equals `balances`.
    pub conserved: bool,
}

/// Minting progress, farmers' total weight, everything billed, the current period and the supply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EconomyView {
    /// The ledger's economy record.
    #[serde(flatten)]
    pub economy: Economy,
    /// The minting period ledger time is in.
    pub current_period: Period,
    /// The supply identity's terms.
    pub supply: SupplyCheck,
}

#[cfg(test)]
mod tests {
    use super::routes;

    #[test]
    fn routes_fill_their_parameters_in_order() {
        assert_eq!(
            routes::fill(routes::NODE_RECEIPT, &[&7, &3]),
            "/v1/nodes/7/receipts/3"
        );
        assert_eq!(routes::fill(routes::STATUS, &[]), "/v1/status");
        // A missing value leaves the placeholder, which no server route matches.
        assert_eq!(routes::fill(routes::BILLS, &[]), "/v1/contracts/{id}/bills");
    }
}
