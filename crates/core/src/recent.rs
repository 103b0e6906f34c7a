//! A set that remembers recent entries within a fixed bound, for caches of work already
//! done (signatures checked, keys validated) where forgetting only costs doing it again.
//!
//! Two generations: inserts fill the current one; when it is full it becomes the previous
//! one and the old previous one is dropped. An entry thus survives at least `generation`
//! later inserts, an entry inserted again moves to the current generation, and the set
//! never holds more than twice `generation` entries.

use std::collections::HashSet;
use std::hash::Hash;

/// Recently inserted entries, at most `2 × generation` of them.
#[derive(Debug)]
pub struct RecentSet<T> {
    current: HashSet<T>,
    previous: HashSet<T>,
    generation: usize,
}

impl<T: Eq + Hash> RecentSet<T> {
    /// An empty set holding at most `2 * generation` entries.
    pub fn new(generation: usize) -> Self {
        RecentSet {
            current: HashSet::new(),
            previous: HashSet::new(),
            generation: generation.max(1),
        }
    }

    /// Whether `item` is still remembered.
    pub fn contains(&self, item: &T) -> bool {
        self.current.contains(item) || self.previous.contains(item)
    }

    /// Remember `item`.
    pub fn insert(&mut self, item: T) {
        // An entry still in use moves to the current generation, so that it outlives the rotation.
        self.previous.remove(&item);
        self.current.insert(item);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
    }

    /// Forget `item`.
    pub fn remove(&mut self, item: &T) {
        self.current.remove(item);
        self.previous.remove(item);
    }

    /// How many entries are remembered.
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

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let mut set = RecentSet::new(4);
        set.insert(0u32);
        assert!(set.contains(&0));
        set.remove(&0);
        assert!(!set.contains(&0));
        for i in 0..100 {
            set.insert(i);
            assert!(set.len() <= 8);
            assert!(set.contains(&i));
        }
        assert!(!set.contains(&0), "old entries are dropped");
        // An entry inserted again is kept through the next rotation.
        let mut set = RecentSet::new(4);
        set.insert(1u32);
        for i in 10..14 {
            set.insert(i);
        }
        set.insert(1);
        for i in 20..23 {
            set.insert(i);
        }
        assert!(set.contains(&1));
    }
}
