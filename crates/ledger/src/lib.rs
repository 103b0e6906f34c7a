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
//! The state root is an LtHash over every entry ([`lthash`]): incremental and
//! order-independent, but without inclusion proofs. Proofs against a block's root
//! need an authenticated structure (a Merkle tree or commonware's QMDB); that is
//! a later step, and the [`Store`] trait keeps the change contained.

pub mod apply;
pub mod billing;
pub mod genesis;
pub mod ledger;
pub mod lthash;
pub mod minting;
pub mod receipt;
pub mod records;
pub mod state;
pub mod store;
mod table;

pub use apply::{BlockContext, Event, TxError, check_stateless};
pub use genesis::{Council, Devnet, Genesis, GenesisError, Params};
pub use ledger::{BlockOutcome, Ledger, LedgerError, TxReceipt};
pub use records::{
    Account, Bill, BillStatus, Contract, ContractState, DeleteReason, Economy, Farm, Node,
    NodeStatus, NodeUptime, PeriodUptime, Proposal, ProposalStatus, RewardReceipt, Violation,
    ViolationKind, VoteRecord,
};
pub use state::State;
pub use store::{MemoryStore, RedbStore, Snapshot, Store, StoreError};
pub use table::Change;
