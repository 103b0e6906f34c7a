//! An incremental, order-independent commitment over a set of key-value entries.
//!
//! LtHash (Bellare–Micciancio's lattice hash, as specified by Lewi et al. for
//! Facebook and used by Solana for its accounts hash): each entry maps to 1024
//! 16-bit lanes via BLAKE3 in XOF mode, and the set's hash is the lane-wise sum
//! modulo 2^16. Changing an entry subtracts its old lanes and adds the new ones, so
//! a block costs time proportional to the entries it touches, never to the state's
//! size, and every machine that holds the same entries holds the same root whatever
//! order it applied them in. It gives no inclusion proofs; see the crate docs.

use peergrid_core::Hash;

/// Lanes of 16 bits: 2048 bytes, the size the LtHash paper recommends for 200+ bits of security.
const LANES: usize = 1024;

const ENTRY_DOMAIN: &[u8] = b"_PEERGRID_LEDGER_ENTRY";
const ROOT_DOMAIN: &[u8] = b"_PEERGRID_LEDGER_STATE_ROOT";

/// The running sum of every entry's lanes.
#[derive(Clone, PartialEq, Eq)]
pub struct LtHash(Box<[u16; LANES]>);

impl Default for LtHash {
    fn default() -> Self {
        LtHash(Box::new([0; LANES]))
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash({})", self.root())
    }
}

fn lanes(table: u8, key: &[u8], value: &[u8]) -> [u16; LANES] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(ENTRY_DOMAIN);
    hasher.update(&[table]);
    // Length-prefix the key so (key, value) splits are unambiguous.
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(value);
    let mut bytes = [0u8; LANES * 2];
    hasher.finalize_xof().fill(&mut bytes);
    let mut out = [0u16; LANES];
    for (lane, chunk) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([chunk[0], chunk[1]]);
    }
    out
}

impl LtHash {
    /// Add an entry.
    pub fn insert(&mut self, table: u8, key: &[u8], value: &[u8]) {
        let l = lanes(table, key, value);
        for (a, b) in self.0.iter_mut().zip(l.iter()) {
            *a = a.wrapping_add(*b);
        }
    }

    /// Remove an entry that was added before.
    pub fn remove(&mut self, table: u8, key: &[u8], value: &[u8]) {
        let l = lanes(table, key, value);
        for (a, b) in self.0.iter_mut().zip(l.iter()) {
            *a = a.wrapping_sub(*b);
        }
    }

    /// The 32-byte state root: BLAKE3 over the lanes.
    pub fn root(&self) -> Hash {
        let mut hasher = blake3::Hasher::new();
        hasher.update(ROOT_DOMAIN);
        for lane in self.0.iter() {
            hasher.update(&lane.to_le_bytes());
        }
        Hash(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_then_remove_is_the_empty_set() {
        let mut h = LtHash::default();
        let empty = h.root();
        h.insert(1, b"k", b"v");
        assert_ne!(h.root(), empty);
        h.remove(1, b"k", b"v");
        assert_eq!(h.root(), empty);
    }

    #[test]
    fn table_key_and_value_all_matter() {
        let root = |t, k: &[u8], v: &[u8]| {
            let mut h = LtHash::default();
            h.insert(t, k, v);
            h.root()
        };
        let base = root(1, b"ab", b"c");
        assert_ne!(base, root(2, b"ab", b"c"));
        assert_ne!(base, root(1, b"a", b"bc"));
        assert_ne!(base, root(1, b"ab", b"d"));
    }

    proptest! {
        #[test]
        fn order_does_not_matter(entries in proptest::collection::vec((any::<u8>(), any::<[u8; 4]>()), 1..20)) {
            let mut forward = LtHash::default();
            for (t, k) in &entries {
                forward.insert(*t, k, b"x");
            }
            let mut backward = LtHash::default();
            for (t, k) in entries.iter().rev() {
                backward.insert(*t, k, b"x");
            }
            prop_assert_eq!(forward.root(), backward.root());
        }
    }
}
