//! Account ids: ed25519 public keys, printed in the libp2p peer id form.
//!
//! A grid participant has one key: it signs ledger transactions and it is the mesh
//! identity. So an account id is printed exactly as libp2p prints the peer id of the
//! same key (`12D3KooW…`, base58 of the identity multihash of the protobuf-encoded
//! public key), and a node found in the ledger can be dialed by the string the
//! ledger shows. Parsing also accepts 64 hex characters.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use crate::recent::RecentMap;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The bytes libp2p puts before a raw ed25519 key in a peer id: multihash
/// identity (0x00), length 36, then the protobuf `PublicKey { Type: Ed25519, Data: 32 bytes }`.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// How many printed ids one thread remembers per generation (at most twice this, about
/// 1 MiB, are held).
const SHOWN_GENERATION: usize = 1 << 12;

thread_local! {
    // Base58 is quadratic in the length, about a microsecond per id, and the event stream,
    // receipts and tables print the same accounts over and over. Per thread, so printing
    // never waits for a lock.
    static SHOWN: RefCell<RecentMap<[u8; 32], Box<str>>> =
        RefCell::new(RecentMap::new(SHOWN_GENERATION));
}

/// An account: the 32 bytes of an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct AccountId(pub [u8; 32]);

/// Why a string or key is not a usable account id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAccountError {
    /// Neither a peer id nor 64 hex characters.
    #[error("not an account id: {0:?} (expected a peer id like 12D3KooW… or 64 hex characters)")]
    Format(String),
    /// The bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key: {0}")]
    InvalidKey(String),
}

impl AccountId {
    /// The account's ed25519 verifying key, rejecting weak (small-order) keys.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ParseAccountError> {
        let key = VerifyingKey::from_bytes(&self.0)
            .map_err(|_| ParseAccountError::InvalidKey(self.to_string()))?;
        if key.is_weak() {
            return Err(ParseAccountError::InvalidKey(self.to_string()));
        }
        Ok(key)
    }

    /// Check the account rules of [`AccountId::verifying_key`] without building the key. The
    /// decompressed points of ids that passed are remembered (and reused by signature checks):
    /// decompressing is a field exponentiation, and an account signs or receives many
    /// transactions.
    pub fn check_key(&self) -> Result<(), ParseAccountError> {
        crate::sig::account_point(&self.0)
            .map(|_| ())
            .ok_or_else(|| ParseAccountError::InvalidKey(self.to_string()))
    }

    /// The key's raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short form for tables: the first and last characters of the full id.
    pub fn short(&self) -> String {
        let full = self.to_string();
        format!("{}…{}", &full[..10], &full[full.len() - 6..])
    }
}

impl From<VerifyingKey> for AccountId {
    fn from(key: VerifyingKey) -> Self {
        AccountId(key.to_bytes())
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let remembered = SHOWN.with(|shown| {
            let shown = shown.try_borrow().ok()?;
            shown.get(&self.0).map(|text| f.pad(text))
        });
        if let Some(written) = remembered {
            return written;
        }
        let mut bytes = [0u8; 38];
        bytes[..6].copy_from_slice(&PEER_ID_PREFIX);
        bytes[6..].copy_from_slice(&self.0);
        let text = bs58::encode(bytes).into_string();
        let written = f.pad(&text);
        SHOWN.with(|shown| {
            if let Ok(mut shown) = shown.try_borrow_mut() {
                shown.insert(self.0, text.into_boxed_str());
            }
        });
        written
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

impl FromStr for AccountId {
    type Err = ParseAccountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let shown = || s.chars().take(80).collect::<String>();
        let mut raw = [0u8; 32];
        if s.len() == 64 && hex::decode_to_slice(s, &mut raw).is_ok() {
            let id = AccountId(raw);
            id.check_key()?;
            return Ok(id);
        }
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| ParseAccountError::Format(shown()))?;
        if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
            return Err(ParseAccountError::Format(shown()));
        }
        raw.copy_from_slice(&bytes[6..]);
        let id = AccountId(raw);
        id.check_key()?;
        Ok(id)
    }
}

/// People and JSON see the peer id form; binary formats (stored receipts) hold the 32 bytes,
/// as base58 is the costliest part of writing a receipt.
impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Text is parsed with the key rules. Raw bytes come only from binary forms, this
        // program's own records (stored receipts) of ids checked when they came in.
        crate::hash::deserialize_text_or_bytes(d, AccountId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    #[test]
    fn prints_as_a_libp2p_peer_id_and_parses_back() {
        let key = Keypair::from_seed([7; 32]);
        let id = key.account();
        let text = id.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(id.to_string(), text, "printed again from memory");
        assert_eq!(
            format!("{id:>60}"),
            format!("{text:>60}"),
            "padded like text"
        );
        assert_eq!(text.parse::<AccountId>(), Ok(id));
        assert_eq!(hex::encode(id.0).parse::<AccountId>(), Ok(id));
    }

    #[test]
    fn json_holds_the_peer_id_and_binary_formats_the_bytes() {
        let id = Keypair::from_seed([7; 32]).account();
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<AccountId>(&json).expect("back"), id);
        let mut cbor = Vec::new();
        ciborium::into_writer(&id, &mut cbor).expect("cbor");
        assert_eq!(cbor.len(), 2 + 32, "a byte string header and the key");
        assert_eq!(
            ciborium::from_reader::<AccountId, _>(cbor.as_slice()).expect("back"),
            id
        );
    }

    #[test]
    fn remembered_key_checks_give_the_same_answers() {
        let good = Keypair::from_seed([8; 32]).account();
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = AccountId(identity);
        let not_a_point = AccountId([0xff; 32]);
        for _ in 0..2 {
            assert!(good.check_key().is_ok());
            assert!(weak.check_key().is_err());
            assert_eq!(
                not_a_point.check_key().is_ok(),
                not_a_point.verifying_key().is_ok()
            );
        }
    }

    #[test]
    fn rejects_garbage_and_weak_keys() {
        assert!(matches!(
            "hello".parse::<AccountId>(),
            Err(ParseAccountError::Format(_))
        ));
        assert!(matches!(
            "".parse::<AccountId>(),
            Err(ParseAccountError::Format(_))
        ));
        // The identity point is a small-order key: signatures under it prove nothing.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(matches!(
            hex::encode(identity).parse::<AccountId>(),
            Err(ParseAccountError::InvalidKey(_))
        ));
    }
}
