//! The canonical binary encoding (borsh) with size limits checked before decoding.
//!
//! Borsh is deterministic (one encoding per value), rejects trailing bytes and
//! non-canonical booleans and enum tags, and never preallocates more than the input
//! can hold, so with the input's length bounded here, decoding is bounded too.

use borsh::{BorshDeserialize, BorshSerialize};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Longer than the limit for this kind of message.
    #[error("{what} is {len} bytes, more than the limit of {max} bytes")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}

/// Encode `value` canonically.
pub fn encode<T: BorshSerialize>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail.
    borsh::to_vec(value).unwrap_or_default()
}

/// Decode a `T` from exactly `bytes`, refusing inputs longer than `max` bytes.
pub fn decode<T: BorshDeserialize>(
    what: &'static str,
    bytes: &[u8],
    max: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// `bytes` damaged the way fuzz tests damage a valid encoding: each `(at, byte)` of
/// `edits` overwrites the byte at `at` (modulo the length), then the result is cut to
/// `keep` bytes if given, then `extra` is appended.
pub fn damaged(bytes: &[u8], edits: &[(usize, u8)], keep: Option<usize>, extra: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if !out.is_empty() {
        for &(at, byte) in edits {
            let i = at % out.len();
            out[i] = byte;
        }
    }
    if let Some(keep) = keep {
        out.truncate(keep);
    }
    out.extend_from_slice(extra);
    out
}
