//! What the ledger stores: accounts, farms, nodes, contracts, proposals and its global records.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use peergrid_core::economics::{self, Billable, Discount, RewardSteps, Split};
use peergrid_core::policy::FarmingPolicy;
use peergrid_core::tx::{ContractSpec, GovAction, PowerTarget, ValidatorEntry};
use peergrid_core::{
    AccountId, Amount, Capacity, ContractId, FarmId, Hash, Location, NodeId, ProposalId, PublicIp,
};

use crate::params::{Council, Params};

/// Borsh for a record that gained fields after its format was frozen: the original fields
/// in their order, then the new `u64`s in theirs, up to the last that is not zero (zeros at
/// the end are written as nothing). A record that does not use them encodes, and hashes
/// into the state root, exactly as before, and a stored record of an older format reads
/// with the missing fields zero. The record must be the last thing in what is decoded (the
/// state stores each value alone), since the fields are told by what is left.
macro_rules! extended_borsh {
    ($ty:ident { $($field:ident),* $(,)? } + $($extension:ident),+ $(,)?) => {
        impl BorshSerialize for $ty {
            fn serialize<W: std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
                $(BorshSerialize::serialize(&self.$field, w)?;)*
                crate::records::write_extensions(w, &[$(self.$extension),+])
            }
        }

        impl BorshDeserialize for $ty {
            fn deserialize_reader<R: std::io::Read>(r: &mut R) -> std::io::Result<Self> {
                $(let $field = BorshDeserialize::deserialize_reader(r)?;)*
                let mut extensions =
                    crate::records::read_extensions(r, [$(stringify!($extension)),+].len())?
                        .into_iter();
                Ok($ty {
                    $($field,)*
                    $($extension: extensions.next().unwrap_or_default(),)+
                })
            }
        }
    };
}

/// Write extension fields: each as its eight bytes, up to the last that is not zero.
fn write_extensions<W: std::io::Write>(w: &mut W, values: &[u64]) -> std::io::Result<()> {
    let written = values
        .iter()
        .rposition(|v| *v != 0)
        .map_or(0, |last| last + 1);
    for value in &values[..written] {
        BorshSerialize::serialize(value, w)?;
    }
    Ok(())
}

/// Read `count` extension fields from what is left: eight bytes for each written, the last
/// written not zero (an older record, or zeros at the end, write fewer or none).
fn read_extensions<R: std::io::Read>(r: &mut R, count: usize) -> std::io::Result<Vec<u64>> {
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)?;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if rest.len() % 8 != 0 || rest.len() > 8 * count {
        let expected = match count {
            1 => "0 or 8".to_string(),
            _ => format!("a multiple of 8 up to {}", 8 * count),
        };
        return Err(invalid(format!(
            "{} bytes after the record's fields; expected {expected}",
            rest.len()
        )));
    }
    let values: Vec<u64> = rest
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    if values.last() == Some(&0) {
        return Err(invalid(
            "an extension field of zero at the end is written as nothing".into(),
        ));
    }
    Ok(values)
}

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FarmIp {
    /// The address.
    pub ip: PublicIp,
    /// The deployment contract it is reserved for.
    pub contract: Option<ContractId>,
}

/// A farm: a farmer's group of nodes.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Uptime {
    /// Ledger time of the last accepted report, ms.
    pub last_report_ms: Option<u64>,
    /// Seconds the node's service had been running in the last report.
    pub last_uptime_secs: u64,
    /// The node's own clock in the last report, s.
    pub last_timestamp_secs: u64,
    /// The boot time (timestamp − uptime, node clock s) the current boot's reports are held
    /// to: the one implied when the boot was first seen, or at the last violation.
    pub boot_secs: i64,
    /// Reports accepted since registration.
    pub reports: u64,
}

/// A node: one machine of a farm.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Ledger ms it was down up to its last report (or registration): every silence longer
    /// than two report intervals, less those two intervals ([`Node::down_ms_until`]).
    #[serde(default)]
    pub down_ms: u64,
    /// [`Economy::outage_ms`] at its last report (or registration): the ledger's outage
    /// since then does not count against its silence for its reward (ledger rules 2 on).
    #[serde(default)]
    pub ledger_outage_ms: u64,
}

extended_borsh!(
    Node {
        id,
        farm,
        account,
        capacity,
        used,
        location,
        registered_ms,
        certified,
        power_target,
        connection_price_uusd,
        uptime,
        contracts,
        rented_by,
    } + down_ms,
    ledger_outage_ms
);

/// Whether a node is serving, according to its uptime reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// Ledger ms the node has been down from its registration up to `now_ms`: the time it went
    /// on without a report (or without its first one) beyond the two report intervals that
    /// [`Node::status`] still counts as up. Contracts are not billed for it. Valid for
    /// `now_ms` from the last report on (a report closes the silence before it), and under
    /// one `uptime_interval_secs` (no governance action changes it today; one that did would
    /// move the current silence's start).
    pub fn down_ms_until(&self, now_ms: u64, params: &Params) -> u64 {
        self.down_ms
            .saturating_add(now_ms.saturating_sub(self.up_until_ms(params)))
    }

    /// Ledger time its current silence starts counting as down: two report intervals after
    /// its last report, or its registration if it never reported.
    pub fn up_until_ms(&self, params: &Params) -> u64 {
        self.uptime
            .last_report_ms
            .unwrap_or(self.registered_ms)
            .saturating_add(params.uptime_interval_secs.saturating_mul(2000))
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeleteReason {
    /// Its owner cancelled it.
    CanceledByOwner,
    /// Its owner did not pay within the grace period.
    OutOfFunds,
    /// Its node could not serve it and gave it back; the time since its last bill was
    /// not billed.
    ReleasedByNode,
}

/// The ledger rules from which a node may give back a contract it cannot serve
/// (`ReleaseContract`): validators of an older chain may run a peergrid that cannot
/// decode it.
pub const RULES_RELEASE: u64 = 2;

impl std::fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeleteReason::CanceledByOwner => "cancelled by its owner",
            DeleteReason::OutOfFunds => "out of funds",
            DeleteReason::ReleasedByNode => "released by its node",
        })
    }
}

/// Where a contract is in its life.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case", tag = "state")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Ledger time it was last billed up to, ms: everything before is paid or written off.
    pub billed_until_ms: u64,
    /// Ledger time of its next bill, ms: its key in the billing index while it is live.
    pub next_bill_ms: u64,
    /// Network traffic reported since the last bill, bytes.
    pub unbilled_nu_bytes: u64,
    /// Its node's down time counter ([`Node::down_ms_until`]) at `billed_until_ms`: the next
    /// bill leaves out what the counter gained since.
    #[serde(default)]
    pub node_down_counter_ms: u64,
    /// What its bills rounded off below a µUSD so far, in pUSD (10^-12 USD, under 10^6):
    /// its next bill adds it (ledger rules 1 on, [`Config::ledger_rules`]).
    #[serde(default)]
    pub carry_pusd: u64,
}

extended_borsh!(
    Contract {
        id,
        owner,
        spec,
        node,
        reserved,
        public_ips,
        state,
        created_ms,
        billed_until_ms,
        next_bill_ms,
        unbilled_nu_bytes,
    } + node_down_counter_ms,
    carry_pusd
);

impl Contract {
    /// Whether the contract still holds resources (created or in grace).
    pub fn is_live(&self) -> bool {
        !matches!(self.state, ContractState::Deleted { .. })
    }

    /// What it is billed for by time, given its node: a rent contract the whole node, a
    /// deployment or storage contract on a node its owner rents only its public IPs (the
    /// rent pays the rest).
    pub fn billable(&self, node: Option<&Node>) -> Billable {
        let covered_by_rent = node.is_some_and(|n| n.rented_by.is_some_and(|r| r != self.id));
        match &self.spec {
            ContractSpec::Deployment { .. } | ContractSpec::Storage { .. } => Billable {
                units: if covered_by_rent {
                    economics::Units::default()
                } else {
                    economics::billing_units(&self.reserved)
                },
                ipv4: self.public_ips.len() as u32,
                names: 0,
            },
            ContractSpec::Name { .. } => Billable {
                names: 1,
                ..Billable::default()
            },
            ContractSpec::Rent { .. } => Billable {
                units: node
                    .map(|n| economics::billing_units(&n.capacity))
                    .unwrap_or_default(),
                ..Billable::default()
            },
        }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Farmers' capacity weight in favour (`2·CU + SU` of their nodes, millionths), as of each vote.
    pub farmer_weight_for: u64,
    /// Farmers' capacity weight against.
    pub farmer_weight_against: u64,
    /// Farmers who voted.
    pub farmer_voters: u32,
    /// Its status.
    pub status: ProposalStatus,
}

/// One account's vote on a proposal, with the weight it carried when cast.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VoteRecord {
    /// For or against.
    pub approve: bool,
    /// Whether the voter was a council member.
    pub council: bool,
    /// The voter's farms' capacity weight, millionths (0 for a council member without nodes).
    pub weight_micro: u64,
    /// Ledger time of the vote, ms.
    pub at_ms: u64,
}

/// How a bill ended.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case", tag = "status")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BillStatus {
    /// The owner paid it.
    Paid,
    /// The contract was deleted before its owner could pay: written off, nobody was paid.
    WrittenOff,
}

/// What the pruned bills of a contract added up to: bills older than the retention (see
/// [`crate::billing::bills_kept_ms`]) leave the state, their sum stays, so a contract's
/// bills still account for its whole life.
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PrunedBills {
    /// The end of the last pruned bill: the kept bills start here.
    pub until_ms: u64,
    /// How many bills were pruned.
    pub count: u64,
    /// What the owner paid for them.
    pub tokens: Amount,
}

/// One bill of a contract: the period it covers, every input of its price, and where the money went.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bill {
    /// The contract.
    pub contract: ContractId,
    /// Who paid, or owed.
    pub owner: AccountId,
    /// The node it reserves on, if any.
    pub node: Option<NodeId>,
    /// Start of the period billed, ledger ms (inclusive).
    pub from_ms: u64,
    /// End of the period billed, ledger ms (exclusive): the next bill starts here.
    pub to_ms: u64,
    /// Units, IPv4 addresses and names billed by time.
    pub billable: Billable,
    /// Time of the period its node was down (no uptime report for two intervals), ms: not billed.
    #[serde(default)]
    pub node_down_ms: u64,
    /// Network traffic billed, bytes.
    pub nu_bytes: u64,
    /// `cost_uusd(billable, pricing, to − from − node_down)`.
    pub resources_uusd: u64,
    /// `nu_bytes · nu_price / 10^9`.
    pub nu_uusd: u64,
    /// The owner's cover in months and the discount it earned.
    pub discount: Discount,
    /// `(resources + nu) · (100 − discount) / 100`, rounded down; under ledger rules 1 on,
    /// worked out in pUSD (10^-12 USD) with `carried_in_pusd` added, the rest below a µUSD
    /// going to `carried_out_pusd`.
    pub net_uusd: u64,
    /// Token price used, µUSD per token.
    pub token_price_uusd: u64,
    /// `net_uusd` in tokens: what the owner paid (zero if written off).
    pub tokens: Amount,
    /// Where the tokens went.
    pub split: Split,
    /// The farm payout account that received the farmer's share; `None` means the foundation did.
    pub farmer_payout: Option<AccountId>,
    /// Paid or written off.
    pub status: BillStatus,
    /// What the contract's earlier bills rounded off below a µUSD, pUSD: added to this one.
    #[serde(default)]
    pub carried_in_pusd: u64,
    /// What this bill rounded off below a µUSD, pUSD: carried to the next.
    #[serde(default)]
    pub carried_out_pusd: u64,
}

extended_borsh!(
    Bill {
        contract,
        owner,
        node,
        from_ms,
        to_ms,
        billable,
        nu_bytes,
        resources_uusd,
        nu_uusd,
        discount,
        net_uusd,
        token_price_uusd,
        tokens,
        split,
        farmer_payout,
        status,
    } + node_down_ms,
    carried_in_pusd,
    carried_out_pusd
);

/// Why a node's uptime report breaks the rules; any one zeroes its reward for the period.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "snake_case", tag = "violation")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ViolationKind {
    /// The uptime grew by more than the node's clock advanced since its previous report.
    UptimeBeyondElapsed {
        /// Uptime gained between the reports, s.
        gained_secs: u64,
        /// The node's clock between the reports, s.
        elapsed_secs: u64,
    },
    /// The node (re)started before its previous report, yet that report showed the older start.
    HiddenReboot {
        /// Boot time implied by the previous report (timestamp − uptime), node clock s.
        previous_boot_secs: u64,
        /// Boot time implied by this report, node clock s.
        boot_secs: u64,
        /// The previous report's timestamp, node clock s.
        previous_report_secs: u64,
    },
    /// Over one boot, the node's clock and its uptime counter drifted apart by more than the
    /// allowed skew: the boot time its reports imply moved that far from the one first seen.
    ClockSkew {
        /// Boot time implied when the boot was first seen (timestamp − uptime), node clock s.
        first_boot_secs: u64,
        /// Boot time implied by this report, node clock s.
        boot_secs: u64,
        /// How far it moved, s.
        skew_secs: u64,
        /// The limit, s.
        max_secs: u64,
    },
}

/// A violation and when the ledger saw it.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Violation {
    /// Ledger time of the report, ms.
    pub at_ms: u64,
    /// What was wrong.
    pub kind: ViolationKind,
}

/// Most violations kept per node and period; more are only counted.
pub const VIOLATIONS_KEPT: usize = 4;

/// A node's counters for one minting period, updated as each report is applied.
#[derive(
    Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct PeriodUptime {
    /// The period.
    pub period: u64,
    /// Ledger milliseconds of the period counted as up.
    pub up_ms: u64,
    /// Reports accepted in the period.
    pub reports: u32,
    /// Network traffic reported for contracts on the node, bytes.
    pub nu_bytes: u64,
    /// Public IP seconds paid for by contracts on the node.
    pub ip_secs: u64,
    /// The first violations.
    pub violations: Vec<Violation>,
    /// All violations, kept or not.
    pub violation_count: u32,
}

impl PeriodUptime {
    /// Empty counters for `period`.
    pub fn new(period: u64) -> Self {
        PeriodUptime {
            period,
            ..PeriodUptime::default()
        }
    }
}

/// A node's counters for the current period and the one before (still open to late credit until minted).
#[derive(
    Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct NodeUptime {
    /// The period of the node's latest activity.
    pub current: PeriodUptime,
    /// The period before it.
    pub previous: PeriodUptime,
}

/// A node's reward for one minting period with every input and step, so a farmer can redo it by hand.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewardReceipt {
    /// The period.
    pub period: u64,
    /// The node.
    pub node: NodeId,
    /// Its farm.
    pub farm: FarmId,
    /// Where the reward was paid.
    pub payout: AccountId,
    /// Start of the period, ledger ms.
    pub period_start_ms: u64,
    /// End of the period, ledger ms (exclusive).
    pub period_end_ms: u64,
    /// Start of what counts for this node: the period start, or its registration if later.
    pub counted_from_ms: u64,
    /// `(period_end − counted_from) / 1000`: the uptime denominator.
    pub period_secs: u64,
    /// Seconds counted as up, at most `period_secs`.
    pub up_secs: u64,
    /// Reports accepted in the period.
    pub reports: u32,
    /// Capacity the reward units come from (as registered at minting time).
    pub capacity: Capacity,
    /// Certified hardware.
    pub certified: bool,
    /// Network traffic served, bytes.
    pub nu_bytes: u64,
    /// Public IP seconds paid for by contracts on the node.
    pub ip_secs: u64,
    /// The first violations seen.
    pub violations: Vec<Violation>,
    /// All violations.
    pub violation_count: u32,
    /// The rates in force.
    pub farming: FarmingPolicy,
    /// Every step of the formula.
    pub steps: RewardSteps,
    /// The node's connection price, µUSD per token: the reward's conversion rate.
    pub connection_price_uusd: u64,
    /// `reward_uusd · 10^7 / connection_price`: units minted.
    pub tokens: Amount,
    /// Ledger time of minting, ms.
    pub minted_ms: u64,
}

/// Ledger-wide economics: minting progress and the farmers' total governance weight.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Economy {
    /// Ledger time of genesis, ms: minting period `p` is `[genesis + p·len, genesis + (p+1)·len)`.
    pub genesis_ms: u64,
    /// The next period to mint.
    pub mint_period: u64,
    /// The next node to mint in that period (nodes are minted in id order, a batch per block).
    pub mint_cursor: NodeId,
    /// Sum of every node's `2·CU + SU` reward units, millionths: all farmers' possible weight.
    pub farmer_weight_total: u64,
    /// Tokens paid by contract owners, ever.
    pub billed_total: Amount,
    /// Ledger ms without a block beyond [`STALL_GAP_MS`] in each gap, ever: time the ledger
    /// could not hear any node, which a node's reward does not count as its silence
    /// (ledger rules 2 on; always 0 before).
    #[serde(default)]
    pub outage_ms: u64,
    /// The part of that outage after the end of the period to mint next, ms: minting waits
    /// two report intervals past the period's end, and this much longer, so that nodes
    /// have had the ledger for those two intervals to report the period's end.
    #[serde(default)]
    pub mint_outage_ms: u64,
}

extended_borsh!(
    Economy {
        genesis_ms,
        mint_period,
        mint_cursor,
        farmer_weight_total,
        billed_total,
    } + outage_ms,
    mint_outage_ms
);

/// The part of a gap between two blocks that is the ledger's outage: what lies beyond this
/// past an idle chain's rest. A rule of ledger rules 2, fixed with them: it matches the
/// 10 s after which `/health` calls a chain stalled today, but must not follow it.
pub const STALL_GAP_MS: u64 = 10_000;

/// Configuration that changes only by governance.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
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
    pub pending_validators: Option<Vec<ValidatorEntry>>,
    /// The version of the ledger's rules the chain runs, from its genesis: rules that would
    /// replay a chain's blocks to other state roots take effect from a version on, so a
    /// chain made before them keeps its own. 0: every step of a bill rounds down. 1: what a
    /// bill rounds off below a µUSD is carried to the contract's next bill.
    #[serde(default)]
    pub ledger_rules: u64,
}

extended_borsh!(
    Config {
        chain_id,
        genesis_hash,
        foundation,
        staking_pool,
        params,
        council,
        validators,
        pending_validators,
    } + ledger_rules
);

/// A validator set and the epochs it governs, kept for every change so that any node can
/// check the certificates of any past epoch.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorSet {
    /// The first epoch the set governs; it governs every later one until the next change.
    pub epoch: u64,
    /// Height of the epoch's first block.
    pub first_height: u64,
    /// The members, in the order they were voted in.
    pub members: Vec<ValidatorMember>,
}

/// One member of a [`ValidatorSet`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorMember {
    /// Its consensus key.
    pub account: AccountId,
    /// Where validators reach it, as voted; `None` for the genesis set, whose addresses are
    /// in the genesis file and not consensus data.
    pub address: Option<String>,
}

impl ValidatorSet {
    /// The members' consensus keys.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.members.iter().map(|m| m.account).collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::Keypair;
    use proptest::prelude::*;

    fn bill(node_down_ms: u64) -> Bill {
        Bill {
            contract: 7,
            owner: Keypair::from_seed([1; 32]).account(),
            node: Some(3),
            from_ms: 1_000,
            to_ms: 11_000,
            billable: Billable::default(),
            node_down_ms,
            nu_bytes: 0,
            resources_uusd: 125,
            nu_uusd: 0,
            discount: Discount::default(),
            net_uusd: 125,
            token_price_uusd: 10_000,
            tokens: Amount(125_000),
            split: Split::default(),
            farmer_payout: None,
            status: BillStatus::Paid,
            carried_in_pusd: 0,
            carried_out_pusd: 0,
        }
    }

    #[test]
    fn an_extension_field_is_written_only_when_it_is_not_zero() {
        let without = borsh::to_vec(&bill(0)).expect("encode");
        let with = borsh::to_vec(&bill(4_000)).expect("encode");
        // The older format is a prefix: a record that does not use the field is unchanged.
        assert_eq!(with.len(), without.len() + 8);
        assert_eq!(&with[..without.len()], &without[..]);
        assert_eq!(
            borsh::from_slice::<Bill>(&without).expect("decode"),
            bill(0)
        );
        assert_eq!(
            borsh::from_slice::<Bill>(&with).expect("decode"),
            bill(4_000)
        );
    }

    #[test]
    fn an_extension_field_is_read_strictly() {
        let without = borsh::to_vec(&bill(0)).expect("encode");
        let mut zero = without.clone();
        zero.extend_from_slice(&[0; 8]);
        let err = borsh::from_slice::<Bill>(&zero).expect_err("zero written out");
        assert!(err.to_string().contains("written as nothing"), "{err}");
        let mut odd = without.clone();
        odd.extend_from_slice(&[1, 2, 3]);
        let err = borsh::from_slice::<Bill>(&odd).expect_err("three bytes left");
        assert!(err.to_string().contains("3 bytes after"), "{err}");
        let mut long = without;
        long.extend_from_slice(&[1; 9]);
        assert!(borsh::from_slice::<Bill>(&long).is_err());
    }

    #[test]
    fn fields_added_later_are_written_up_to_the_last_that_is_not_zero() {
        let without = borsh::to_vec(&bill(0)).expect("encode");
        let carried = |down, carried_in_pusd, carried_out_pusd| Bill {
            carried_in_pusd,
            carried_out_pusd,
            ..bill(down)
        };
        // Zeros before a field that is not zero are written; zeros at the end are not.
        for (b, extra) in [
            (carried(0, 0, 5), 24),
            (carried(0, 3, 0), 16),
            (carried(7, 3, 5), 24),
            (carried(7, 0, 0), 8),
        ] {
            let bytes = borsh::to_vec(&b).expect("encode");
            assert_eq!(bytes.len(), without.len() + extra, "{b:?}");
            assert_eq!(&bytes[..without.len()], &without[..]);
            assert_eq!(borsh::from_slice::<Bill>(&bytes).expect("decode"), b);
        }
        // A zero written at the end, and more fields than the record has, are refused.
        let mut trailing = without.clone();
        trailing.extend_from_slice(&[[1, 0, 0, 0, 0, 0, 0, 0], [0; 8]].concat());
        let err = borsh::from_slice::<Bill>(&trailing).expect_err("zero at the end");
        assert!(err.to_string().contains("written as nothing"), "{err}");
        let mut four = without;
        four.extend_from_slice(&[1; 32]);
        let err = borsh::from_slice::<Bill>(&four).expect_err("four fields");
        assert!(err.to_string().contains("up to 24"), "{err}");
    }

    #[test]
    fn an_economy_without_outage_keeps_the_bytes_of_the_format_before_it() {
        let economy = Economy {
            genesis_ms: 1_700_000_000_000,
            mint_period: 4,
            mint_cursor: 12,
            farmer_weight_total: 99,
            billed_total: Amount(5),
            outage_ms: 0,
            mint_outage_ms: 0,
        };
        // What the derived encoding wrote for the five fields it had.
        let before =
            borsh::to_vec(&(1_700_000_000_000u64, 4u64, 12u32, 99u64, Amount(5))).expect("encode");
        assert_eq!(borsh::to_vec(&economy).expect("encode"), before);
        let stalled = Economy {
            outage_ms: 59_000,
            ..economy
        };
        let bytes = borsh::to_vec(&stalled).expect("encode");
        assert_eq!(bytes.len(), before.len() + 8);
        assert_eq!(
            borsh::from_slice::<Economy>(&bytes).expect("decode"),
            stalled
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_extended_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = borsh::from_slice::<Bill>(&bytes);
            let _ = borsh::from_slice::<Node>(&bytes);
            let _ = borsh::from_slice::<Economy>(&bytes);
            let _ = borsh::from_slice::<Contract>(&bytes);
            let _ = borsh::from_slice::<Config>(&bytes);
        }

        #[test]
        fn a_bill_reads_back_as_written(
            down in any::<u64>(),
            contract in any::<u64>(),
            carried_in_pusd in prop_oneof![Just(0), any::<u64>()],
            carried_out_pusd in prop_oneof![Just(0), any::<u64>()],
        ) {
            let b = Bill { contract, carried_in_pusd, carried_out_pusd, ..bill(down) };
            let bytes = borsh::to_vec(&b).expect("encode");
            prop_assert_eq!(borsh::from_slice::<Bill>(&bytes).expect("decode"), b);
        }
    }
}
