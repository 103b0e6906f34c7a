//! The ledger's deterministic state machine: accounts, farms, nodes, contracts, governance.
//!
//! # Status: ALPHA

pub mod genesis;

pub use genesis::{Council, Devnet, Genesis, GenesisError, Params};
