//! A map and a set that remember recent entries within a fixed bound, for caches of work
//! already done (signatures checked, keys decompressed) where forgetting only costs doing
//! it again.
//!
//! Two generations: inserts fill the current one; when it is full it becomes the previous
//! one and the old previous one is dropped. An entry thus survives at least `generation`
//! later inserts, an entry inserted again moves to the current generation, and the set
//! never holds more than twice `generation` entries.

use std::collections::HashMap;
use std::hash::Hash;

/// Recently inserted entries with a value each, at most `2 × generation` of them.
#[derive(Debug)]
pub struct RecentMap<K, V> {
    current: HashMap<K, V>,
    previous: HashMap<K, V>,
    generation: usize,
}

impl<K: Eq + Hash, V> RecentMap<K, V> {
    /// An empty map holding at most `2 * generation` entries.
    pub fn new(generation: usize) -> Self {
        RecentMap {
            current: HashMap::new(),
            previous: HashMap::new(),
            generation: generation.max(1),
        }
    }

    /// The value remembered for `key`, if it still is.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Remember `value` for `key`.
    pub fn insert(&mut self, key: K, value: V) {
        // An entry still in use moves to the current generation, so that it outlives the rotation.
        self.previous.remove(&key);
        self.current.insert(key, value);
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
    }

    /// Forget `key`.
    pub fn remove(&mut self, key: &K) {
        self.current.remove(key);
        self.previous.remove(key);
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

/// Recently inserted entries, at most `2 × generation` of them.
#[derive(Debug)]
pub struct RecentSet<T>(RecentMap<T, ()>);

impl<T: Eq + Hash> RecentSet<T> {
    /// An empty set holding at most `2 * generation` entries.
    pub fn new(generation: usize) -> Self {
        RecentSet(RecentMap::new(generation))
    }

    /// Whether `item` is still remembered.
    pub fn contains(&self, item: &T) -> bool {
        self.0.get(item).is_some()
    }

    /// Remember `item`.
    pub fn insert(&mut self, item: T) {
        self.0.insert(item, ());
    }

    /// Forget `item`.
    pub fn remove(&mut self, item: &T) {
        self.0.remove(item);
    }

    /// How many entries are remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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

    #[test]
    fn a_map_returns_what_was_remembered() {
        let mut map = RecentMap::new(2);
        map.insert(1u32, "one");
        map.insert(2, "two");
        assert_eq!(
            map.get(&1),
            Some(&"one"),
            "the previous generation is still read"
        );
        map.insert(1, "uno");
        assert_eq!(map.get(&1), Some(&"uno"));
        assert_eq!(map.len(), 2);
    }
}
