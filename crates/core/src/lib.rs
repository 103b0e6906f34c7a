//! The grid's vocabulary: account ids and keys, amounts, capacity, and signed transactions.
//!
//! # Status: ALPHA
//!
//! Everything the ledger records and every participant signs is defined here, with
//! one canonical binary encoding (borsh) and one readable form for people (JSON and
//! the strings printed by the CLI). Nothing in this crate does IO except the key
//! file helpers in [`keys`], atomic writes and free space in [`fs`], the test
//! support in [`disklab`], and, with the `http` feature, the HTTP serving loop that
//! the validator's API and the node's entry share (`http`).

pub mod account;
pub mod amount;
pub mod capacity;
pub mod codec;
pub mod disklab;
pub mod economics;
pub mod fs;
pub mod hash;
#[cfg(feature = "http")]
pub mod http;
pub mod keys;
#[cfg(feature = "openapi")]
mod openapi;
pub mod policy;
pub mod recent;
mod sig;
pub mod tx;
pub mod usd;

pub use account::{AccountId, ParseAccountError};
pub use amount::{Amount, ParseAmountError};
pub use capacity::{Capacity, Location, PublicIp};
pub use hash::Hash;
pub use keys::{KeyError, Keypair};
pub use tx::{Payload, SignedTx, TxBody, TxHash};

/// Farm identifier, assigned by the ledger in creation order starting at 1.
pub type FarmId = u32;
/// Node identifier, assigned by the ledger in registration order starting at 1.
pub type NodeId = u32;
/// Contract identifier, assigned by the ledger in creation order starting at 1.
pub type ContractId = u64;
/// Governance proposal identifier, assigned in creation order starting at 1.
pub type ProposalId = u64;

/// Wall-clock Unix time in ms; 0 if the clock is before 1970. Only for what leaves the
/// ledger (timeouts, reports, ages): the ledger's own clock is each block's time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
