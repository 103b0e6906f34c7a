//! The state root: a Merkle tree over 65,536 buckets of entries, which yields inclusion
//! (and absence) proofs against a finalized block's root.
//!
//! An entry `(table, key, value)` lives in the bucket named by the first two bytes of its
//! key hash, `BLAKE3(table ‖ key)`. A bucket's hash covers its entries' `(key hash, leaf
//! hash)` pairs in key-hash order, the leaf hash being `BLAKE3(table ‖ key ‖ value)`; the
//! buckets are the leaves of a binary tree of depth 16 whose top is the state root. A block
//! rehashes only the buckets it touched and their paths, so its cost follows its changes,
//! never the state's size, and the root does not depend on the order changes were made in.
//!
//! A proof of one entry is its bucket's pairs (a few dozen even with millions of entries)
//! and the 16 sibling hashes on the way up: with them anyone recomputes the root from the
//! entry's value, or from its absence, without trusting whoever sent them.

use std::sync::LazyLock;

use peergrid_core::Hash;
use serde::{Deserialize, Serialize};

/// Levels of the tree above the buckets.
pub const DEPTH: usize = 16;
/// Buckets at the bottom of the tree.
pub const BUCKETS: usize = 1 << DEPTH;

const KEY_DOMAIN: &[u8] = b"_PEERGRID_STATE_KEY";
const LEAF_DOMAIN: &[u8] = b"_PEERGRID_STATE_LEAF";
const BUCKET_DOMAIN: &[u8] = b"_PEERGRID_STATE_BUCKET";
const NODE_DOMAIN: &[u8] = b"_PEERGRID_STATE_NODE";

fn hash_entry(domain: &[u8], table: u8, key: &[u8], value: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(domain);
    hasher.update(&[table]);
    // Length-prefix the key so (key, value) splits are unambiguous.
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    Hash(*hasher.finalize().as_bytes())
}

/// Where an entry sits: the hash of its table and key.
pub fn key_hash(table: u8, key: &[u8]) -> Hash {
    hash_entry(KEY_DOMAIN, table, key, &[])
}

/// What an entry holds: the hash of its table, key and value.
pub fn leaf_hash(table: u8, key: &[u8], value: &[u8]) -> Hash {
    hash_entry(LEAF_DOMAIN, table, key, value)
}

/// The bucket an entry of this key hash lives in.
pub fn bucket_of(key_hash: &Hash) -> usize {
    usize::from(u16::from_be_bytes([key_hash.0[0], key_hash.0[1]]))
}

/// A bucket's hash over its `(key hash, leaf hash)` pairs, in key-hash order.
pub fn bucket_hash(entries: &[(Hash, Hash)]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(BUCKET_DOMAIN);
    for (key, leaf) in entries {
        hasher.update(&key.0);
        hasher.update(&leaf.0);
    }
    Hash(*hasher.finalize().as_bytes())
}

/// An inner node's hash over its two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(NODE_DOMAIN);
    hasher.update(&left.0);
    hasher.update(&right.0);
    Hash(*hasher.finalize().as_bytes())
}

/// The hash of an empty subtree at each level: `[DEPTH]` is an empty bucket, `[0]` the root
/// of an empty state.
static EMPTY: LazyLock<[Hash; DEPTH + 1]> = LazyLock::new(|| {
    let mut empty = [bucket_hash(&[]); DEPTH + 1];
    for level in (0..DEPTH).rev() {
        empty[level] = node_hash(&empty[level + 1], &empty[level + 1]);
    }
    empty
});

/// The hash of an empty subtree at `level` (0 is the root of an empty state, [`DEPTH`] an
/// empty bucket).
pub fn empty(level: usize) -> Hash {
    EMPTY[level.min(DEPTH)]
}

/// An entry's bucket and the sibling hashes from it to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Proof {
    /// The bucket's `(key hash, leaf hash)` pairs, in key-hash order.
    pub entries: Vec<(Hash, Hash)>,
    /// Sibling hashes from the bucket up, [`DEPTH`] of them.
    pub siblings: Vec<Hash>,
}

impl Proof {
    /// The root this proof leads to when `key` of `table` holds `value` (`None`: when it is
    /// absent), or `None` when the proof does not fit that claim at all. The claim holds
    /// exactly when the answer is the finalized block's root.
    pub fn root_for(&self, table: u8, key: &[u8], value: Option<&[u8]>) -> Option<Hash> {
        if self.siblings.len() != DEPTH {
            return None;
        }
        let k = key_hash(table, key);
        let b = bucket_of(&k);
        // One bucket, strictly ordered: no pair can be hidden or repeated.
        let ordered = self.entries.windows(2).all(|w| w[0].0.0 < w[1].0.0);
        if !ordered || self.entries.iter().any(|(key, _)| bucket_of(key) != b) {
            return None;
        }
        let found = self.entries.iter().find(|(key, _)| *key == k);
        match (value, found) {
            (Some(v), Some((_, leaf))) if *leaf == leaf_hash(table, key, v) => {}
            (None, None) => {}
            _ => return None,
        }
        let mut hash = bucket_hash(&self.entries);
        let mut index = BUCKETS + b;
        for sibling in &self.siblings {
            hash = if index.is_multiple_of(2) {
                node_hash(&hash, sibling)
            } else {
                node_hash(sibling, &hash)
            };
            index /= 2;
        }
        Some(hash)
    }
}

/// One entry of the state, or its absence, with the proof tying it to a state root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateProof {
    /// The table ([`tables`]).
    pub table: u8,
    /// The entry's key, in the ledger's binary encoding, hex.
    pub key: String,
    /// The entry's value, in the ledger's binary encoding, hex; `None` when absent.
    pub value: Option<String>,
    /// The bucket and the path to the root.
    pub proof: Proof,
}

/// Why a [`StateProof`] does not establish what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The key or value is not hex.
    #[error("the proof's {0} is not hex")]
    Hex(&'static str),
    /// It is about another entry than the one asked for.
    #[error("the proof is for another entry than the one asked for")]
    OtherEntry,
    /// It does not lead to the root it is checked against.
    #[error("the proof does not lead to state root {root}: the answer cannot be trusted")]
    WrongRoot {
        /// The root it was checked against.
        root: Hash,
    },
}

impl StateProof {
    /// Check that this proof is about `key` of `table` and leads to `root`; the entry's
    /// value bytes (`None`: proven absent).
    pub fn check(&self, table: u8, key: &[u8], root: &Hash) -> Result<Option<Vec<u8>>, ProofError> {
        let own_key = hex::decode(&self.key).map_err(|_| ProofError::Hex("key"))?;
        if self.table != table || own_key != key {
            return Err(ProofError::OtherEntry);
        }
        let value = match &self.value {
            Some(v) => Some(hex::decode(v).map_err(|_| ProofError::Hex("value"))?),
            None => None,
        };
        match self.proof.root_for(table, key, value.as_deref()) {
            Some(got) if got == *root => Ok(value),
            _ => Err(ProofError::WrongRoot { root: *root }),
        }
    }
}

/// Tags of the tables a client can ask proofs of.
pub mod tables {
    /// Accounts by id.
    pub const ACCOUNTS: u8 = 3;
    /// Farms by id.
    pub const FARMS: u8 = 4;
    /// Nodes by id.
    pub const NODES: u8 = 6;
    /// Contracts by id.
    pub const CONTRACTS: u8 = 8;
}
