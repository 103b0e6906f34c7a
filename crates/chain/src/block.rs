//! Blocks: a parent, a height, the proposer's timestamp and signed transactions.
//!
//! Consensus orders block digests; the ledger applies finalized blocks in height
//! order. Encoding: parent digest (32 bytes) ‖ height (u64 BE) ‖ time ms (u64 BE) ‖
//! transaction count (u32 BE) ‖ for each transaction its length (u32 BE) and its
//! canonical bytes. The digest is SHA-256 over that encoding.

use bytes::{Buf, BufMut};
use commonware_codec::{EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::types::Height;
use commonware_cryptography::{Digestible, Hasher, Sha256, sha256::Digest};
use peergrid_core::tx::TX_BYTES_MAX;
use peergrid_core::{Hash, SignedTx, TxHash};

/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 10_000;
/// Most transaction bytes in one block.
pub const BLOCK_TX_BYTES_MAX: usize = 4 << 20;
/// Fixed part of the encoding: parent, height, time, count.
const HEADER_BYTES: usize = 32 + 8 + 8 + 4;

/// A block of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The parent's digest; for the genesis block, the genesis hash.
    pub parent: Digest,
    /// Height: genesis is 0.
    pub height: u64,
    /// The proposer's clock when it built the block, ms since the Unix epoch: the ledger's time.
    pub time_ms: u64,
    /// Transactions in the order they apply.
    pub txs: Vec<SignedTx>,
    /// The transactions' canonical encodings, kept so encoding and hashing never re-serialize.
    encoded: Vec<Vec<u8>>,
    /// The transactions' hashes, computed once from `encoded` when the block is built or read.
    hashes: Vec<TxHash>,
}

impl Block {
    /// A block of `txs` on `parent`.
    pub fn new(parent: Digest, height: u64, time_ms: u64, txs: Vec<SignedTx>) -> Block {
        let encoded: Vec<Vec<u8>> = txs.iter().map(SignedTx::encode).collect();
        let hashes = encoded.iter().map(|e| Hash::of(e)).collect();
        Block {
            parent,
            height,
            time_ms,
            txs,
            encoded,
            hashes,
        }
    }

    /// The genesis block of the chain whose genesis hash is `genesis_hash`.
    pub fn genesis(genesis_hash: &peergrid_core::Hash, genesis_time_ms: u64) -> Block {
        Block::new(Digest::from(genesis_hash.0), 0, genesis_time_ms, Vec::new())
    }

    /// Encoded size of the transactions.
    pub fn tx_bytes(&self) -> usize {
        self.encoded.iter().map(|t| 4 + t.len()).sum()
    }

    /// The transactions' hashes, in order: [`SignedTx::hash`] of each, computed once.
    pub fn tx_hashes(&self) -> &[TxHash] {
        &self.hashes
    }

    /// The transactions' encoded lengths, in order.
    pub fn tx_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.encoded.iter().map(Vec::len)
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(self.parent.as_ref());
        buf.put_u64(self.height);
        buf.put_u64(self.time_ms);
        buf.put_u32(self.encoded.len() as u32);
        for tx in &self.encoded {
            buf.put_u32(tx.len() as u32);
            buf.put_slice(tx);
        }
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        HEADER_BYTES + self.tx_bytes()
    }
}

impl Read for Block {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        if buf.remaining() < HEADER_BYTES {
            return Err(CodecError::EndOfBuffer);
        }
        let mut parent = [0u8; 32];
        buf.copy_to_slice(&mut parent);
        let height = buf.get_u64();
        let time_ms = buf.get_u64();
        let count = buf.get_u32() as usize;
        if count > BLOCK_TXS_MAX {
            return Err(CodecError::InvalidLength(count));
        }
        // The count is the sender's word: reserve only what the bytes present can hold (a
        // transaction takes at least its 4-byte length), not what a 52-byte header claims.
        let room = count.min(buf.remaining() / 4);
        let mut txs = Vec::with_capacity(room);
        let mut encoded = Vec::with_capacity(room);
        let mut hashes = Vec::with_capacity(room);
        let mut total = 0usize;
        for _ in 0..count {
            if buf.remaining() < 4 {
                return Err(CodecError::EndOfBuffer);
            }
            let len = buf.get_u32() as usize;
            total += 4 + len;
            if len > TX_BYTES_MAX || total > BLOCK_TX_BYTES_MAX {
                return Err(CodecError::InvalidLength(len));
            }
            if buf.remaining() < len {
                return Err(CodecError::EndOfBuffer);
            }
            let mut bytes = vec![0u8; len];
            buf.copy_to_slice(&mut bytes);
            // The encoding is canonical, so the hash of these bytes is the transaction's hash.
            let (tx, hash) = SignedTx::decode_hashed(&bytes)
                .map_err(|_| CodecError::Invalid("block", "malformed transaction"))?;
            txs.push(tx);
            encoded.push(bytes);
            hashes.push(hash);
        }
        Ok(Block {
            parent: Digest::from(parent),
            height,
            time_ms,
            txs,
            encoded,
            hashes,
        })
    }
}

impl Digestible for Block {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(self.parent.as_ref());
        header.extend_from_slice(&self.height.to_be_bytes());
        header.extend_from_slice(&self.time_ms.to_be_bytes());
        header.extend_from_slice(&(self.encoded.len() as u32).to_be_bytes());
        let lengths: Vec<[u8; 4]> = self
            .encoded
            .iter()
            .map(|t| (t.len() as u32).to_be_bytes())
            .collect();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 2 * self.encoded.len());
        parts.push(&header);
        for (len, tx) in lengths.iter().zip(&self.encoded) {
            parts.push(len);
            parts.push(tx);
        }
        Sha256::hash(&parts)
    }
}

impl commonware_consensus::Heightable for Block {
    fn height(&self) -> Height {
        Height::new(self.height)
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> Digest {
        self.parent
    }
}

impl commonware_consensus::BoundedBlock for Block {
    fn max_encode_size(_: &()) -> usize {
        HEADER_BYTES + BLOCK_TX_BYTES_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::{Decode, Encode};
    use peergrid_core::tx::Payload;
    use peergrid_core::{Amount, Keypair};

    fn block() -> Block {
        let key = Keypair::from_seed([1; 32]);
        let txs = (0..3)
            .map(|n| {
                SignedTx::new(
                    &key,
                    "c",
                    n,
                    Payload::Transfer {
                        to: key.account(),
                        amount: Amount(n + 1),
                    },
                )
            })
            .collect();
        Block::new(Digest::from([7; 32]), 5, 1_000, txs)
    }

    #[test]
    fn encoding_round_trips_and_digest_covers_everything() {
        let b = block();
        let bytes = b.encode();
        assert_eq!(bytes.len(), b.encode_size());
        let back = Block::decode_cfg(bytes.clone(), &()).expect("decode");
        assert_eq!(back, b);
        assert_eq!(back.digest(), b.digest());
        let hashes: Vec<_> = b.txs.iter().map(SignedTx::hash).collect();
        assert_eq!(back.tx_hashes(), hashes.as_slice());
        let mut later = b.clone();
        later.time_ms += 1;
        assert_ne!(later.digest(), b.digest());
        let fewer = Block::new(b.parent, b.height, b.time_ms, b.txs[..2].to_vec());
        assert_ne!(fewer.digest(), b.digest());
    }

    #[test]
    fn hostile_encodings_are_refused() {
        let bytes = block().encode();
        assert!(Block::decode_cfg(bytes.slice(..bytes.len() - 1), &()).is_err());
        let mut huge_count = bytes.to_vec();
        huge_count[48..52].copy_from_slice(&(BLOCK_TXS_MAX as u32 + 1).to_be_bytes());
        assert!(Block::decode_cfg(bytes::Bytes::from(huge_count), &()).is_err());
        let mut garbage = bytes.to_vec();
        let at = HEADER_BYTES + 4;
        garbage[at] ^= 0xff;
        garbage[at + 1] ^= 0xff;
        assert!(Block::decode_cfg(bytes::Bytes::from(garbage), &()).is_err());
    }
}
