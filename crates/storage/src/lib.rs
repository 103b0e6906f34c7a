//! Storage: encrypted, erasure-coded objects on the grid's nodes.
//!
//! # Status: ALPHA
//!
//! The owner's side ([`client`]) splits an object into segments, seals each with a key
//! derived from the owner's secret and the content ([`crypto`]), erasure-codes it into
//! `k + m` shards ([`erasure`]), addresses each shard by a BLAKE3 Merkle root
//! ([`shard`]) and puts the shards on distinct nodes of the owner's storage contracts
//! over `/peergrid/shard/1` ([`wire`]). A manifest lists them; a capability (owner,
//! manifest address, key) reads the object and can be shared ([`format`]). The owner
//! index maps names to capabilities and is found through a pointer the owner signs and
//! every one of their storage nodes keeps, so the 24 words alone recover everything.
//! The node's side ([`store`]) keeps shards in a folder per contract, within its
//! reservation, written atomically and checked on every read.

pub mod client;
pub mod crypto;
pub mod direct;
pub mod erasure;
pub mod format;
pub mod peers;
pub mod shard;
pub mod spare;
pub mod store;
pub mod wire;

pub use client::{
    AuditResult, GarbageReport, Holding, NodeChoice, PutReport, RepairReport, Storage,
    StorageError, human_bytes,
};
pub use crypto::{Cipher, StorageKeys};
pub use erasure::Scheme;
pub use format::{Capability, Index, IndexEntry, Manifest};
pub use store::{ContractAccess, ShardStore};

/// Run blocking file work off the async threads; a panicked task is an I/O error.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await?
}
