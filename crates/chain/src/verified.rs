//! The transactions this validator has already checked statelessly, so it checks each
//! signature once rather than at admission, in block verification and again when applying.
//!
//! An entry is keyed by the transaction hash: BLAKE3 of the full signed encoding, signature
//! included. [`peergrid_ledger::check_stateless`] is a pure function of those bytes and the
//! chain id (fixed for a validator), so a hash in the set means "these exact bytes passed";
//! a transaction with the same body and another signature has another hash, and poisoning
//! an entry would take a BLAKE3 collision. Only hashes computed locally from transactions
//! that passed the check locally go in: nothing a peer says about a hash is trusted.
//!
//! Bounded by two generations: inserts fill the current one; when it is full it becomes the
//! previous one and the old previous one is dropped. An entry thus survives at least
//! `generation` later inserts, and the set never holds more than twice that. Entries also
//! leave when their block is finalized. Forgetting is always safe: a forgotten transaction
//! is simply checked again.

use std::collections::HashSet;

use peergrid_core::TxHash;

/// Hashes of transactions that passed the stateless checks on this validator.
pub struct VerifiedTxs {
    current: HashSet<TxHash>,
    previous: HashSet<TxHash>,
    generation: usize,
}

impl VerifiedTxs {
    /// An empty set holding at most `2 * generation` hashes.
    pub fn new(generation: usize) -> VerifiedTxs {
        VerifiedTxs {
            current: HashSet::new(),
            previous: HashSet::new(),
            generation: generation.max(1),
        }
    }

    /// Whether `hash` passed the stateless checks here and is still remembered.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.current.contains(hash) || self.previous.contains(hash)
    }

    /// Remember that the transaction with `hash` passed the stateless checks here.
    pub fn insert(&mut self, hash: TxHash) {
        // A hash still in use moves to the current generation, so that it outlives the rotation.
        self.previous.remove(&hash);
        self.current.insert(hash);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
    }

    /// Forget `hash`.
    pub fn remove(&mut self, hash: &TxHash) {
        self.current.remove(hash);
        self.previous.remove(hash);
    }

    /// How many hashes are remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::Hash;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let h = |i: u32| Hash::of(&i.to_le_bytes());
        let mut set = VerifiedTxs::new(4);
        set.insert(h(0));
        assert!(set.contains(&h(0)));
        set.remove(&h(0));
        assert!(!set.contains(&h(0)));
        for i in 0..100 {
            set.insert(h(i));
            assert!(set.len() <= 8);
            assert!(set.contains(&h(i)));
        }
        assert!(!set.contains(&h(0)), "old entries are dropped");
        // A hash inserted again is kept through the next rotation.
        let mut set = VerifiedTxs::new(4);
        set.insert(h(1));
        for i in 10..14 {
            set.insert(h(i));
        }
        set.insert(h(1));
        for i in 20..23 {
            set.insert(h(i));
        }
        assert!(set.contains(&h(1)));
    }
}
