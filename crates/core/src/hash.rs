//! 32-byte BLAKE3 digests with a hex form for people.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte BLAKE3 digest.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero digest, used where "no hash yet" must still encode.
    pub const ZERO: Hash = Hash([0; 32]);

    /// BLAKE3 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Hash(*blake3::hash(data).as_bytes())
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(&self.0[..8]))
    }
}

/// Why a string is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a hash: expected 64 hex characters, got {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for Hash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.strip_prefix("0x").unwrap_or(s), &mut out)
            .map_err(|_| ParseHashError(s.chars().take(80).collect()))?;
        Ok(Hash(out))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_text_or_bytes(d, Hash)
    }
}

/// Read a hash or an account id: its text form from human-readable formats, its 32 raw bytes
/// from binary ones (text forms cost a hex or base58 encoding each time, most of the cost of
/// storing receipts). Either is accepted whatever the format claims, because serde reads
/// internally tagged enums (ledger events) through a buffer that always claims to be
/// human-readable.
pub(crate) fn deserialize_text_or_bytes<'de, D, T>(
    d: D,
    wrap: fn([u8; 32]) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct TextOrBytes<T> {
        wrap: fn([u8; 32]) -> T,
    }
    impl<'de, T> serde::de::Visitor<'de> for TextOrBytes<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("its text form or 32 bytes")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<T, E> {
            <[u8; 32]>::try_from(v)
                .map(self.wrap)
                .map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            let mut out = [0u8; 32];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(serde::de::Error::invalid_length(33, &self));
            }
            Ok((self.wrap)(out))
        }
    }
    let visitor = TextOrBytes { wrap };
    if d.is_human_readable() {
        d.deserialize_str(visitor)
    } else {
        d.deserialize_bytes(visitor)
    }
}
