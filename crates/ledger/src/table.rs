//! A map that remembers what a transaction changed (to undo it) and what a block changed (to commit it).

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::codec::{self, DecodeError};

use crate::commitment::Commitment;

/// One entry written by a block: `value` is `None` when the entry was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Which table.
    pub table: u8,
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded value, or `None` for a removal.
    pub value: Option<Vec<u8>>,
}

/// Largest encoded state entry read back from disk.
const ENTRY_BYTES_MAX: usize = 1 << 20;

/// A typed table of the state.
#[derive(Clone, Debug)]
pub struct Table<K, V> {
    tag: u8,
    map: BTreeMap<K, V>,
    /// Value of each key touched in this block as it was when the block began.
    originals: BTreeMap<K, Option<V>>,
    /// Previous values in the order they were overwritten, for rolling back a transaction.
    undo: Vec<(K, Option<V>)>,
}

impl<K, V> Table<K, V>
where
    K: Ord + Clone + BorshSerialize + BorshDeserialize,
    V: Clone + PartialEq + BorshSerialize + BorshDeserialize,
{
    /// An empty table stored under `tag`.
    pub fn new(tag: u8) -> Self {
        Table {
            tag,
            map: BTreeMap::new(),
            originals: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// The value at `key` as the block being applied found it: what the last committed
    /// block left.
    pub fn committed_get(&self, key: &K) -> Option<&V> {
        match self.originals.get(key) {
            Some(original) => original.as_ref(),
            None => self.map.get(key),
        }
    }

    /// This table's tag.
    pub fn tag(&self) -> u8 {
        self.tag
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.map.iter()
    }

    /// Entries within `range`, in key order.
    pub fn range<R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
    ) -> impl DoubleEndedIterator<Item = (&K, &V)> {
        self.map.range(range)
    }

    fn record(&mut self, key: &K) {
        let old = self.map.get(key).cloned();
        if !self.originals.contains_key(key) {
            self.originals.insert(key.clone(), old.clone());
        }
        self.undo.push((key.clone(), old));
    }

    /// Set `key` to `value`.
    pub fn insert(&mut self, key: K, value: V) {
        self.record(&key);
        self.map.insert(key, value);
    }

    /// Remove `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        if !self.map.contains_key(key) {
            return None;
        }
        self.record(key);
        self.map.remove(key)
    }

    /// A mutable reference to the value at `key`, recording it for undo and commit.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if !self.map.contains_key(key) {
            return None;
        }
        self.record(key);
        self.map.get_mut(key)
    }

    /// Load an entry read from disk, without recording it as a change.
    pub(crate) fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        let k = codec::decode("state key", key, ENTRY_BYTES_MAX)?;
        let v = codec::decode("state value", value, ENTRY_BYTES_MAX)?;
        self.map.insert(k, v);
        Ok(())
    }
}

/// What the state needs of every table, whatever its types.
pub(crate) trait AnyTable {
    /// Position in the undo log.
    fn mark(&self) -> usize;
    /// Undo every change after `mark`.
    fn rollback(&mut self, mark: usize);
    /// Forget the undo log: the transaction stands.
    fn forget_undo(&mut self);
    /// Fold this block's changes into `acc`.
    fn fold_changes(&self, acc: &mut Commitment);
    /// Take this block's changes for the store, and start a new block.
    fn take_changes(&mut self, out: &mut Vec<Change>);
    /// Fold every entry into `acc`.
    fn fold_all(&self, acc: &mut Commitment);
    /// Load an entry from disk.
    fn load_entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError>;
    /// The table's tag.
    fn tag(&self) -> u8;
}

impl<K, V> AnyTable for Table<K, V>
where
    K: Ord + Clone + BorshSerialize + BorshDeserialize,
    V: Clone + PartialEq + BorshSerialize + BorshDeserialize,
{
    fn mark(&self) -> usize {
        self.undo.len()
    }

    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some((key, old)) = self.undo.pop() else {
                break;
            };
            match old {
                Some(v) => self.map.insert(key, v),
                None => self.map.remove(&key),
            };
        }
    }

    fn forget_undo(&mut self) {
        self.undo.clear();
    }

    fn fold_changes(&self, acc: &mut Commitment) {
        for (key, original) in &self.originals {
            let current = self.map.get(key);
            if current == original.as_ref() {
                continue;
            }
            let k = codec::encode(key);
            match current {
                Some(new) => acc.insert(self.tag, &k, &codec::encode(new)),
                None => acc.remove(self.tag, &k),
            }
        }
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        for (key, original) in std::mem::take(&mut self.originals) {
            let current = self.map.get(&key);
            if current == original.as_ref() {
                continue;
            }
            out.push(Change {
                table: self.tag,
                key: codec::encode(&key),
                value: current.map(codec::encode),
            });
        }
        self.undo.clear();
    }

    fn fold_all(&self, acc: &mut Commitment) {
        for (k, v) in &self.map {
            acc.insert(self.tag, &codec::encode(k), &codec::encode(v));
        }
    }

    fn load_entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), DecodeError> {
        self.load(key, value)
    }

    fn tag(&self) -> u8 {
        self.tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full_root(t: &Table<u32, u64>) -> peergrid_core::Hash {
        let mut acc = Commitment::default();
        t.fold_all(&mut acc);
        acc.settle()
    }

    #[test]
    fn rollback_restores_inserts_updates_and_removals() {
        let mut t: Table<u32, u64> = Table::new(1);
        t.insert(1, 10);
        t.insert(2, 20);
        t.forget_undo();
        let before = t.map.clone();
        let mark = t.mark();
        t.insert(3, 30);
        *t.get_mut(&1).expect("present") = 11;
        t.remove(&2);
        t.insert(2, 21);
        t.rollback(mark);
        assert_eq!(t.map, before);
    }

    #[test]
    fn a_block_reports_only_net_changes() {
        let mut t: Table<u32, u64> = Table::new(1);
        t.insert(1, 10);
        t.insert(2, 20);
        let mut out = Vec::new();
        t.take_changes(&mut out);
        assert_eq!(out.len(), 2);
        t.insert(1, 11);
        t.insert(1, 10); // back to where it was
        t.remove(&2);
        t.insert(3, 30);
        t.remove(&3); // created and removed within the block
        let mut out = Vec::new();
        t.take_changes(&mut out);
        assert_eq!(
            out,
            vec![Change {
                table: 1,
                key: codec::encode(&2u32),
                value: None
            }]
        );
    }

    proptest! {
        #[test]
        fn incremental_root_equals_a_full_recompute(
            blocks in proptest::collection::vec(
                proptest::collection::vec((0u32..16, proptest::option::of(any::<u64>()), any::<bool>()), 0..12),
                1..6,
            )
        ) {
            let mut t: Table<u32, u64> = Table::new(7);
            let mut committed = Commitment::default();
            for block in blocks {
                for (key, value, keep) in block {
                    let mark = t.mark();
                    match value {
                        Some(v) => t.insert(key, v),
                        None => { t.remove(&key); }
                    }
                    if keep { t.forget_undo() } else { t.rollback(mark) }
                }
                t.fold_changes(&mut committed);
                let mut out = Vec::new();
                t.take_changes(&mut out);
                prop_assert_eq!(committed.settle(), full_root(&t));
            }
        }
    }
}
