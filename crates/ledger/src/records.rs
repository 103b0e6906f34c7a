//! What the ledger stores: accounts, farms, nodes, contracts, proposals and its global records.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use peergrid_core::tx::{ContractSpec, GovAction, PowerTarget};
use peergrid_core::{
    AccountId, Amount, Capacity, ContractId, FarmId, Hash, Location, NodeId, ProposalId, PublicIp,
};

use crate::genesis::{Council, Params};

/// An account's balance and the nonce its next transaction must carry.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Account {
    /// Spendable tokens.
    pub balance: Amount,
    /// Transactions applied so far; the next must carry this nonce.
    pub nonce: u64,
}

/// A public IP of a farm and the contract that holds it, if any.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct FarmIp {
    /// The address.
    pub ip: PublicIp,
    /// The deployment contract it is reserved for.
    pub contract: Option<ContractId>,
}

/// A farm: a farmer's group of nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Farm {
    /// Its id.
    pub id: FarmId,
    /// Unique name.
    pub name: String,
    /// The account that owns it.
    pub owner: AccountId,
    /// Where rewards are paid.
    pub payout: AccountId,
    /// Public IPs it offers.
    pub public_ips: Vec<FarmIp>,
    /// Certified by the council.
    pub certified: bool,
    /// Ledger time of creation, ms.
    pub created_ms: u64,
}

/// What a node last reported about its uptime.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Uptime {
    /// Ledger time of the last accepted report, ms.
    pub last_report_ms: Option<u64>,
    /// Seconds since boot in the last report.
    pub last_uptime_secs: u64,
    /// The node's own clock in the last report, s.
    pub last_timestamp_secs: u64,
    /// Reports accepted since registration.
    pub reports: u64,
}

/// A node: one machine of a farm.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its farm.
    pub farm: FarmId,
    /// Its own key: it signs the node's transactions and is its mesh peer id.
    pub account: AccountId,
    /// What it offers.
    pub capacity: Capacity,
    /// What contracts reserve on it.
    pub used: Capacity,
    /// Where it is.
    pub location: Location,
    /// Ledger time of registration, ms.
    pub registered_ms: u64,
    /// Certified hardware.
    pub certified: bool,
    /// Whether the farmer wants it running.
    pub power_target: PowerTarget,
    /// Token price at registration, µUSD: rewards are converted at this price.
    pub connection_price_uusd: u64,
    /// Its uptime reports.
    pub uptime: Uptime,
    /// Live contracts on it.
    pub contracts: u32,
    /// The rent contract holding the whole node, if any.
    pub rented_by: Option<ContractId>,
}

/// Whether a node is serving, according to its uptime reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Reported within the last two intervals.
    Up,
    /// Switched off by its farmer and reported within the standby window.
    Standby,
    /// Neither.
    Down,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeStatus::Up => "up",
            NodeStatus::Standby => "standby",
            NodeStatus::Down => "down",
        })
    }
}

impl Node {
    /// The node's status at ledger time `now_ms` under `params`.
    pub fn status(&self, now_ms: u64, params: &Params) -> NodeStatus {
        let Some(last) = self.uptime.last_report_ms else {
            return NodeStatus::Down;
        };
        let age_ms = now_ms.saturating_sub(last);
        if age_ms < 2 * params.uptime_interval_secs * 1000 {
            NodeStatus::Up
        } else if self.power_target == PowerTarget::Down && age_ms < params.standby_max_secs * 1000
        {
            NodeStatus::Standby
        } else {
            NodeStatus::Down
        }
    }

    /// Capacity not reserved by any contract.
    pub fn free(&self) -> Capacity {
        self.capacity.saturating_sub(&self.used)
    }
}

/// Why a contract was deleted.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// Its owner cancelled it.
    CanceledByOwner,
    /// Its owner did not pay within the grace period.
    OutOfFunds,
}

/// Where a contract is in its life.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ContractState {
    /// Live and paid.
    Created,
    /// Unpaid since `since_ms`: workloads pause, data is kept.
    GracePeriod {
        /// Ledger time grace began, ms.
        since_ms: u64,
    },
    /// Gone.
    Deleted {
        /// Ledger time of deletion, ms.
        at_ms: u64,
        /// Why.
        reason: DeleteReason,
    },
}

/// A contract: a builder's reservation on the grid.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Contract {
    /// Its id.
    pub id: ContractId,
    /// Who pays.
    pub owner: AccountId,
    /// What was asked for (for deployments, the hash is the current one).
    pub spec: ContractSpec,
    /// The node it reserves on, if any.
    pub node: Option<NodeId>,
    /// What it reserves on that node.
    pub reserved: Capacity,
    /// Public IPs reserved from the node's farm.
    pub public_ips: Vec<PublicIp>,
    /// Its state.
    pub state: ContractState,
    /// Ledger time of creation, ms.
    pub created_ms: u64,
    /// Ledger time it was last billed up to, ms.
    pub billed_until_ms: u64,
}

impl Contract {
    /// Whether the contract still holds resources (created or in grace).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, ContractState::Deleted { .. })
    }

    /// The deployment hash a node must see, for deployment contracts.
    pub fn deployment_hash(&self) -> Option<Hash> {
        match &self.spec {
            ContractSpec::Deployment {
                deployment_hash, ..
            } => Some(*deployment_hash),
            _ => None,
        }
    }
}

/// Where a proposal is.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ProposalStatus {
    /// Collecting votes.
    Open,
    /// Passed and applied.
    Executed {
        /// When, ms.
        at_ms: u64,
    },
    /// Enough members voted against.
    Rejected {
        /// When, ms.
        at_ms: u64,
    },
    /// Not decided in time.
    Expired {
        /// When, ms.
        at_ms: u64,
    },
}

/// A governance proposal.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    /// Its id.
    pub id: ProposalId,
    /// Who proposed.
    pub proposer: AccountId,
    /// What would change.
    pub action: GovAction,
    /// Why.
    pub description: String,
    /// Ledger time proposed, ms.
    pub created_ms: u64,
    /// Ledger time it expires, ms.
    pub expires_ms: u64,
    /// Members in favour.
    pub approvals: Vec<AccountId>,
    /// Members against.
    pub rejections: Vec<AccountId>,
    /// Its status.
    pub status: ProposalStatus,
}

/// Configuration that changes only by governance.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Config {
    /// The chain's name.
    pub chain_id: String,
    /// Hash of the genesis the chain started from.
    pub genesis_hash: Hash,
    /// Receives 40 % of payments.
    pub foundation: AccountId,
    /// Receives 10 % of payments.
    pub staking_pool: AccountId,
    /// Economic parameters.
    pub params: Params,
    /// The council.
    pub council: Council,
    /// The validator set in force.
    pub validators: Vec<AccountId>,
    /// A validator set voted in, waiting for the next epoch boundary.
    pub pending_validators: Option<Vec<AccountId>>,
}

/// Counters and totals that change with almost every block.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Globals {
    /// Height of the last applied block (0 = genesis).
    pub height: u64,
    /// Ledger time of the last applied block, ms.
    pub time_ms: u64,
    /// Next farm id.
    pub next_farm: FarmId,
    /// Next node id.
    pub next_node: NodeId,
    /// Next contract id.
    pub next_contract: ContractId,
    /// Next proposal id.
    pub next_proposal: ProposalId,
    /// Tokens that existed at genesis.
    pub genesis_supply: Amount,
    /// Tokens minted since.
    pub minted: Amount,
    /// Tokens burned since (fees).
    pub burned: Amount,
}
