//! The ledger's deterministic state machine: accounts, farms, nodes, contracts, governance.
//!
//! # Status: ALPHA
//!
//! The ledger has no clock, network or randomness of its own: time arrives in each
//! block's [`BlockContext`], so applying the same blocks to the same genesis gives
//! the same state and the same root on every machine. [`State::apply_tx`] applies
//! one transaction all or nothing; [`Ledger::execute_block`] applies a block and
//! commits it atomically to a [`Store`].
//!
//! # Economics
//!
//! End-of-block logic ([`Ledger::execute_block`]) closes proposals whose time is up,
//! bills the contracts due and resumes contracts in grace whose owners can pay again
//! ([`billing`]), and mints one batch of a settled minting period ([`minting`]). The
//! formulas themselves live in [`peergrid_core::economics`]. Reads for wallets, the CLI
//! and the explorer: [`State::bills`], [`State::contracts_of`],
//! [`State::grace_contracts_of`], [`State::receipt`], [`State::receipts_of_farm`],
//! [`State::votes`], [`State::farmer_weight`], [`RewardReceipt::render`] and
//! [`Bill::render`].
//!
//! Network usage (`ReportUsage`) pays the ordinary fee: unlike uptime it has no natural
//! once-per-interval bound, and the fee makes reporting in many small pieces cost the
//! node, which earns the traffic's reward.
//!
//! Governance: the council proposes; council members and farmers vote. A farmer's
//! weight is `2·CU + SU` (reward units) of all nodes of the farms it owns, recorded with
//! its vote. A proposal passes when current council approvals reach the threshold and
//! farmer weight for is at least farmer weight against; it closes early once no vote
//! left (counting every node's weight not yet cast) can change that, and otherwise at
//! expiry, on the votes cast.
//!
//! # Epochs
//!
//! Epoch `e` holds heights `e·len` to `(e+1)·len − 1`, `len` being the genesis parameter
//! `epoch_blocks` (commonware's `FixedEpocher` split). A validator set voted in
//! (`SetValidators`, each member with the `ip:port` validators reach it at) waits in
//! `Config::pending_validators` and takes over at the end of the epoch's last block: it is
//! stored by the first epoch it governs, `Event::ValidatorSetChanged` is emitted, and
//! [`State::validator_set`] answers for every epoch up to the next block's
//! ([`State::epoch`]), so any node can check any past epoch's certificates.
//!
//! The state root is a Merkle tree over buckets of entries ([`commitment`]):
//! incremental, order-independent, and it proves any account, farm, node or contract
//! (or its absence) against a finalized block's root ([`State::prove_account`] and
//! its siblings).

pub mod apply;
pub mod billing;
pub mod commitment;
pub mod genesis;
pub mod ledger;
pub mod minting;
pub mod state;
pub mod store;
mod table;

pub use apply::{BlockContext, Checked, Event, TxError, check_stateless, check_stateless_batch};
pub use genesis::{Council, Devnet, Genesis, GenesisError, Params};
pub use ledger::{BlockOutcome, KnownTx, Ledger, LedgerError, TxReceipt};
pub use records::{
    Account, Bill, BillStatus, Contract, ContractState, DeleteReason, Economy, Farm, Node,
    NodeStatus, NodeUptime, PeriodUptime, Proposal, ProposalStatus, PrunedBills, RewardReceipt,
    Violation, ViolationKind, VoteRecord,
};
pub use state::{State, Supply};
pub use store::{MemoryStore, RedbStore, Snapshot, Store, StoreError};
pub use table::Change;

/// The records, events and answers the ledger shares with every client: [`peergrid_types`].
pub use peergrid_types::{receipt, records};
