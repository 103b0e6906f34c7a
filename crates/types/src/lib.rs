//! The wire contract: what the ledger records and what its API answers.
//!
//! # Status: ALPHA
//!
//! The ledger's records ([`records`]), what a transaction did or why it was refused
//! ([`Event`], [`TxError`]), finalized blocks as followers see them ([`receipt`]), the state
//! proof format ([`proof`]) and one typed answer per API route ([`api`]). Serde and borsh
//! where the wire needs them; no I/O. The ledger, the chain and every client share these
//! types, and nothing here knows how the state machine works inside.

pub mod api;
pub mod certificate;
pub mod events;
pub mod params;
pub mod proof;
pub mod receipt;
pub mod records;
pub mod render;

pub use api::{ApiError, AtHeight, Page, Status};
pub use events::{Event, TxError};
pub use params::{Council, Params};
pub use receipt::{FinalizedBlock, TxOutcome, TxStatus};
pub use records::{
    Account, Bill, BillStatus, Contract, ContractState, DeleteReason, Economy, Farm, Node,
    NodeStatus, NodeUptime, PeriodUptime, Proposal, ProposalStatus, PrunedBills, RewardReceipt,
    Violation, ViolationKind, VoteRecord,
};
