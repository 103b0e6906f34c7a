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

use std::collections::HashMap;
use std::sync::LazyLock;

use peergrid_core::Hash;
use serde::{Deserialize, Serialize};

/// Levels of the tree above the buckets.
pub const DEPTH: usize = 16;
const BUCKETS: usize = 1 << DEPTH;

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

fn bucket_of(key_hash: &Hash) -> usize {
    usize::from(u16::from_be_bytes([key_hash.0[0], key_hash.0[1]]))
}

fn bucket_hash(entries: &[(Hash, Hash)]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(BUCKET_DOMAIN);
    for (key, leaf) in entries {
        hasher.update(&key.0);
        hasher.update(&leaf.0);
    }
    Hash(*hasher.finalize().as_bytes())
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
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

/// Level of node `index` in the heap numbering (root 1, buckets from `BUCKETS`).
fn level(index: usize) -> usize {
    index.ilog2() as usize
}

/// The commitment over every entry of the state. Only non-empty buckets are held; the tree
/// above them is one array (4 MiB), allocated at the first [`Commitment::settle`].
#[derive(Clone, Debug, Default)]
pub struct Commitment {
    /// Each non-empty bucket's `(key hash, leaf hash)` pairs, in key-hash order.
    buckets: HashMap<usize, Vec<(Hash, Hash)>>,
    /// Every node's hash by heap index (root 1, buckets from `BUCKETS`); empty before the
    /// first settle, when every node is [`EMPTY`].
    nodes: Vec<Hash>,
    /// Buckets changed since the last [`Commitment::settle`], possibly repeated.
    dirty: Vec<usize>,
}

impl Commitment {
    /// Add or replace an entry.
    pub fn insert(&mut self, table: u8, key: &[u8], value: &[u8]) {
        let k = key_hash(table, key);
        let leaf = leaf_hash(table, key, value);
        let b = bucket_of(&k);
        let bucket = self.buckets.entry(b).or_default();
        match bucket.binary_search_by(|(key, _)| key.0.cmp(&k.0)) {
            Ok(i) => bucket[i].1 = leaf,
            Err(i) => bucket.insert(i, (k, leaf)),
        }
        self.dirty.push(b);
    }

    /// Remove an entry (its value is not needed: the key names it).
    pub fn remove(&mut self, table: u8, key: &[u8]) {
        let k = key_hash(table, key);
        let b = bucket_of(&k);
        if let Some(bucket) = self.buckets.get_mut(&b)
            && let Ok(i) = bucket.binary_search_by(|(key, _)| key.0.cmp(&k.0))
        {
            bucket.remove(i);
            if bucket.is_empty() {
                self.buckets.remove(&b);
            }
            self.dirty.push(b);
        }
    }

    fn node(&self, index: usize) -> Hash {
        self.nodes
            .get(index)
            .copied()
            .unwrap_or(EMPTY[level(index)])
    }

    /// Rehash the changed buckets and their paths, one level at a time; the root.
    pub fn settle(&mut self) -> Hash {
        if self.nodes.is_empty() {
            self.nodes = (0..2 * BUCKETS).map(|i| EMPTY[level(i.max(1))]).collect();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &b in &dirty {
            self.nodes[BUCKETS + b] = self
                .buckets
                .get(&b)
                .map_or(EMPTY[DEPTH], |entries| bucket_hash(entries));
        }
        // Sorted indices stay sorted when halved, so duplicates are neighbours.
        let mut parents: Vec<usize> = dirty.iter().map(|b| (BUCKETS + b) / 2).collect();
        parents.dedup();
        while !parents.is_empty() {
            for &index in &parents {
                self.nodes[index] = node_hash(&self.nodes[2 * index], &self.nodes[2 * index + 1]);
            }
            parents = parents.iter().filter(|&&i| i > 1).map(|i| i / 2).collect();
            parents.dedup();
        }
        self.node(1)
    }

    /// The root as of the last [`Commitment::settle`].
    pub fn root(&self) -> Hash {
        self.node(1)
    }

    /// The proof for `key` of `table`, present or not, against [`Commitment::root`].
    pub fn prove(&self, table: u8, key: &[u8]) -> Proof {
        let b = bucket_of(&key_hash(table, key));
        let mut siblings = Vec::with_capacity(DEPTH);
        let mut index = BUCKETS + b;
        while index > 1 {
            siblings.push(self.node(index ^ 1));
            index /= 2;
        }
        Proof {
            entries: self.buckets.get(&b).cloned().unwrap_or_default(),
            siblings,
        }
    }
}

/// An entry's bucket and the sibling hashes from it to the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct StateProof {
    /// The table ([`crate::state::tables`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_state_has_the_empty_root_and_proves_absence() {
        let mut c = Commitment::default();
        assert_eq!(c.settle(), EMPTY[0]);
        let proof = c.prove(3, b"k");
        assert_eq!(proof.root_for(3, b"k", None), Some(c.root()));
        assert_eq!(proof.root_for(3, b"k", Some(b"v")), None);
    }

    #[test]
    fn proofs_check_values_and_absence_and_nothing_else() {
        let mut c = Commitment::default();
        for i in 0u32..2_000 {
            c.insert((i % 3) as u8, &i.to_le_bytes(), &(i * 7).to_le_bytes());
        }
        let root = c.settle();
        let key = 77u32.to_le_bytes();
        let proof = c.prove(2, &key);
        let value = (77u32 * 7).to_le_bytes();
        assert_eq!(proof.root_for(2, &key, Some(&value)), Some(root));
        assert_eq!(
            proof.root_for(2, &key, Some(b"other")),
            None,
            "a wrong value"
        );
        assert_eq!(proof.root_for(2, &key, None), None, "claimed absent");
        assert_eq!(proof.root_for(1, &key, Some(&value)), None, "another table");

        let absent = 5_000u32.to_le_bytes();
        let proof = c.prove(2, &absent);
        assert_eq!(proof.root_for(2, &absent, None), Some(root));

        // A tampered proof leads elsewhere or nowhere.
        let mut forged = c.prove(2, &key);
        forged.siblings[3] = Hash::of(b"x");
        assert_ne!(forged.root_for(2, &key, Some(&value)), Some(root));
        let mut dropped = c.prove(2, &absent);
        if !dropped.entries.is_empty() {
            dropped.entries.remove(0);
            assert_ne!(dropped.root_for(2, &absent, None), Some(root));
        }
        let mut short = c.prove(2, &key);
        short.siblings.pop();
        assert_eq!(short.root_for(2, &key, Some(&value)), None);
    }

    #[test]
    fn removing_everything_returns_to_the_empty_root() {
        let mut c = Commitment::default();
        c.insert(1, b"a", b"1");
        c.insert(1, b"b", b"2");
        assert_ne!(c.settle(), EMPTY[0]);
        c.remove(1, b"a");
        c.remove(1, b"b");
        assert_eq!(c.settle(), EMPTY[0]);
        assert!(c.buckets.is_empty(), "nothing held");
    }

    proptest! {
        #[test]
        fn the_root_depends_on_the_entries_not_the_order(
            entries in proptest::collection::btree_map((0u8..4, any::<[u8; 3]>()), any::<u16>(), 1..40),
            settle_every in 1usize..10,
        ) {
            let mut forward = Commitment::default();
            for (i, ((t, k), v)) in entries.iter().enumerate() {
                forward.insert(*t, k, &v.to_le_bytes());
                if i % settle_every == 0 {
                    forward.settle();
                }
            }
            let mut backward = Commitment::default();
            // With a detour: a value written then overwritten, an entry added then removed.
            backward.insert(9, b"gone", b"x");
            for ((t, k), v) in entries.iter().rev() {
                backward.insert(*t, k, b"first");
                backward.insert(*t, k, &v.to_le_bytes());
            }
            backward.remove(9, b"gone");
            let root = forward.settle();
            prop_assert_eq!(root, backward.settle());
            for ((t, k), v) in &entries {
                prop_assert_eq!(forward.prove(*t, k).root_for(*t, k, Some(&v.to_le_bytes())), Some(root));
            }
        }
    }
}
