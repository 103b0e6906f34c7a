//! A shard's address: a BLAKE3 Merkle root over its 16 KiB leaves and its length.
//!
//! One hash serves both jobs: every shard received or read is checked against it, and
//! an audit asks a node for one random leaf with its path to the root, which the node
//! cannot answer without holding that leaf's bytes, and which the auditor checks
//! knowing only the address.

use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::Hash;

/// Bytes per leaf of a shard's tree.
pub const LEAF_BYTES: usize = 16 * 1024;

fn keys() -> &'static ([u8; 32], [u8; 32], [u8; 32]) {
    static KEYS: std::sync::OnceLock<([u8; 32], [u8; 32], [u8; 32])> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        (
            blake3::derive_key("peergrid shard leaf v1", b""),
            blake3::derive_key("peergrid shard node v1", b""),
            blake3::derive_key("peergrid shard root v1", b""),
        )
    })
}

fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    blake3::keyed_hash(&keys().0, bytes).into()
}

fn parent(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&keys().1);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn root(len: u64, top: &[u8; 32]) -> Hash {
    let mut h = blake3::Hasher::new_keyed(&keys().2);
    h.update(&len.to_le_bytes());
    h.update(top);
    Hash(*h.finalize().as_bytes())
}

/// How many leaves a shard of `len` bytes has (an empty shard has one, empty, leaf).
pub fn leaves(len: u64) -> u64 {
    len.div_ceil(LEAF_BYTES as u64).max(1)
}

/// The levels of the tree over `leaf_hashes`, bottom first; an odd last node moves up
/// unchanged.
fn levels(leaf_hashes: Vec<[u8; 32]>) -> Vec<Vec<[u8; 32]>> {
    let mut levels = vec![leaf_hashes];
    while levels.last().is_some_and(|l| l.len() > 1) {
        let below = levels.last().map(Vec::as_slice).unwrap_or_default();
        let up = below
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => parent(l, r),
                [one] => *one,
                _ => [0; 32],
            })
            .collect();
        levels.push(up);
    }
    levels
}

fn leaf_hashes(bytes: &[u8]) -> Vec<[u8; 32]> {
    if bytes.is_empty() {
        return vec![leaf_hash(b"")];
    }
    bytes.chunks(LEAF_BYTES).map(leaf_hash).collect()
}

/// The address of a shard's bytes.
pub fn shard_id(bytes: &[u8]) -> Hash {
    top_of(bytes.len() as u64, leaf_hashes(bytes))
}

fn top_of(len: u64, leaf_hashes: Vec<[u8; 32]>) -> Hash {
    root(len, &top(&levels(leaf_hashes)))
}

fn top(levels: &[Vec<[u8; 32]>]) -> [u8; 32] {
    levels
        .last()
        .and_then(|l| l.first())
        .copied()
        .unwrap_or([0; 32])
}

/// Computes a shard's address as its bytes arrive, holding one leaf at most.
#[derive(Default)]
pub struct ShardHasher {
    len: u64,
    partial: Vec<u8>,
    leaves: Vec<[u8; 32]>,
}

impl ShardHasher {
    /// Feed the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.partial.is_empty() && bytes.len() >= LEAF_BYTES {
                self.leaves.push(leaf_hash(&bytes[..LEAF_BYTES]));
                bytes = &bytes[LEAF_BYTES..];
                continue;
            }
            let take = (LEAF_BYTES - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() == LEAF_BYTES {
                self.leaves.push(leaf_hash(&self.partial));
                self.partial.clear();
            }
        }
    }

    /// The address of everything fed.
    pub fn finalize(self) -> Hash {
        let len = self.len;
        top_of(len, self.into_leaves())
    }

    /// The address of everything fed and the proof of leaf `leaf`, whose bytes the caller
    /// kept as they went by (`None` when there is no such leaf): an audit that never holds
    /// the whole shard.
    pub fn finalize_proving(self, leaf: u64, leaf_bytes: Vec<u8>) -> (Hash, Option<LeafProof>) {
        let len = self.len;
        let levels = levels(self.into_leaves());
        let id = root(len, &top(&levels));
        (id, proof(&levels, len, leaf, leaf_bytes))
    }

    fn into_leaves(mut self) -> Vec<[u8; 32]> {
        if !self.partial.is_empty() || self.leaves.is_empty() {
            self.leaves.push(leaf_hash(&self.partial));
        }
        self.leaves
    }
}

/// Where leaf `leaf` of a shard of `len` bytes lies in it.
pub fn leaf_range(len: u64, leaf: u64) -> std::ops::Range<u64> {
    let start = leaf.saturating_mul(LEAF_BYTES as u64).min(len);
    start..start.saturating_add(LEAF_BYTES as u64).min(len)
}

/// One leaf and the hashes that lead from it to the shard's address.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct LeafProof {
    /// The shard's length.
    pub len: u64,
    /// Which leaf.
    pub leaf: u64,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Sibling hashes, bottom first (levels where the node moved up alone have none).
    pub path: Vec<[u8; 32]>,
}

/// The proof of leaf `leaf` of `bytes`, or `None` when the shard has no such leaf.
pub fn prove(bytes: &[u8], leaf: u64) -> Option<LeafProof> {
    let len = bytes.len() as u64;
    let at = leaf_range(len, leaf);
    let leaf_bytes = bytes[at.start as usize..at.end as usize].to_vec();
    proof(&levels(leaf_hashes(bytes)), len, leaf, leaf_bytes)
}

fn proof(levels: &[Vec<[u8; 32]>], len: u64, leaf: u64, bytes: Vec<u8>) -> Option<LeafProof> {
    if leaf >= leaves(len) {
        return None;
    }
    let mut path = Vec::new();
    let mut index = leaf as usize;
    for level in &levels[..levels.len().saturating_sub(1)] {
        let sibling = index ^ 1;
        if let Some(h) = level.get(sibling) {
            path.push(*h);
        }
        index /= 2;
    }
    Some(LeafProof {
        len,
        leaf,
        bytes,
        path,
    })
}

/// Whether `proof` shows that leaf `leaf` belongs to the shard addressed `id`.
pub fn verify(id: &Hash, leaf: u64, proof: &LeafProof) -> bool {
    let count = leaves(proof.len);
    if proof.leaf != leaf || leaf >= count {
        return false;
    }
    let expected_len = if proof.len == 0 {
        0
    } else if leaf + 1 == count {
        (proof.len - leaf * LEAF_BYTES as u64) as usize
    } else {
        LEAF_BYTES
    };
    if proof.bytes.len() != expected_len {
        return false;
    }
    let mut hash = leaf_hash(&proof.bytes);
    let mut index = leaf;
    let mut width = count;
    let mut path = proof.path.iter();
    while width > 1 {
        let sibling = index ^ 1;
        if sibling < width {
            let Some(s) = path.next() else { return false };
            hash = if index.is_multiple_of(2) {
                parent(&hash, s)
            } else {
                parent(s, &hash)
            };
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    path.next().is_none() && root(proof.len, &hash) == *id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_proves_and_nothing_else_does() {
        for len in [
            0usize,
            1,
            LEAF_BYTES,
            LEAF_BYTES + 1,
            5 * LEAF_BYTES + 77,
            8 * LEAF_BYTES,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let id = shard_id(&bytes);
            for leaf in 0..leaves(len as u64) {
                let p = prove(&bytes, leaf).expect("leaf exists");
                assert!(verify(&id, leaf, &p), "len {len} leaf {leaf}");
                let mut forged = p.clone();
                if let Some(b) = forged.bytes.first_mut() {
                    *b ^= 1;
                    assert!(!verify(&id, leaf, &forged), "altered leaf accepted");
                }
                if leaf > 0 {
                    assert!(
                        !verify(&id, leaf - 1, &p),
                        "proof for another leaf accepted"
                    );
                }
            }
            assert!(prove(&bytes, leaves(len as u64)).is_none());
        }
        let a = vec![1u8; 3 * LEAF_BYTES];
        let mut b = a.clone();
        b.push(0);
        assert_ne!(shard_id(&a), shard_id(&b), "the length is bound");
    }

    #[test]
    fn hashing_as_bytes_arrive_gives_the_same_address() {
        let bytes: Vec<u8> = (0..3 * LEAF_BYTES + 999).map(|i| (i % 7) as u8).collect();
        for step in [1usize, 1000, LEAF_BYTES, LEAF_BYTES + 3, bytes.len()] {
            let mut h = ShardHasher::default();
            for c in bytes.chunks(step) {
                h.update(c);
            }
            assert_eq!(h.finalize(), shard_id(&bytes), "step {step}");
        }
        assert_eq!(ShardHasher::default().finalize(), shard_id(b""));
    }

    #[test]
    fn proving_as_bytes_go_by_gives_the_same_proof() {
        for len in [0usize, 1, LEAF_BYTES, 3 * LEAF_BYTES + 999] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 11) as u8).collect();
            for leaf in 0..=leaves(len as u64) {
                let mut h = ShardHasher::default();
                let mut kept = Vec::new();
                let at = leaf_range(len as u64, leaf);
                for (i, c) in bytes.chunks(1000).enumerate() {
                    h.update(c);
                    let from = (i * 1000) as u64;
                    for (j, b) in c.iter().enumerate() {
                        if at.contains(&(from + j as u64)) {
                            kept.push(*b);
                        }
                    }
                }
                let (id, p) = h.finalize_proving(leaf, kept);
                assert_eq!(id, shard_id(&bytes));
                assert_eq!(p, prove(&bytes, leaf), "len {len} leaf {leaf}");
            }
        }
    }

    #[test]
    fn a_proof_of_another_shard_fails() {
        let a = vec![1u8; 3 * LEAF_BYTES];
        let b = vec![2u8; 3 * LEAF_BYTES];
        let p = prove(&b, 1).expect("leaf");
        assert!(!verify(&shard_id(&a), 1, &p));
    }
}
