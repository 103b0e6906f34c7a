//! The state root's incremental tree: the ledger's side of the commitment whose format and
//! proof checks live in [`peergrid_types::proof`].

use std::collections::HashMap;

use peergrid_core::Hash;

pub use peergrid_types::proof::{
    BUCKETS, DEPTH, Proof, ProofError, StateProof, bucket_hash, bucket_of, empty, key_hash,
    leaf_hash, node_hash,
};

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
    /// first settle, when every node is [`empty`].
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
            .unwrap_or(empty(level(index)))
    }

    /// Rehash the changed buckets and their paths, one level at a time; the root.
    pub fn settle(&mut self) -> Hash {
        if self.nodes.is_empty() {
            self.nodes = (0..2 * BUCKETS).map(|i| empty(level(i.max(1)))).collect();
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &b in &dirty {
            self.nodes[BUCKETS + b] = self
                .buckets
                .get(&b)
                .map_or(empty(DEPTH), |entries| bucket_hash(entries));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_empty_state_has_the_empty_root_and_proves_absence() {
        let mut c = Commitment::default();
        assert_eq!(c.settle(), empty(0));
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
        assert_ne!(c.settle(), empty(0));
        c.remove(1, b"a");
        c.remove(1, b"b");
        assert_eq!(c.settle(), empty(0));
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
