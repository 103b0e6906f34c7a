//! What storage writes and reads: manifests, capabilities, the owner index and its
//! signed pointer. Each format starts with a version byte of its own ([`Format`]); a
//! reader decodes every version up to its own and refuses newer ones with a message
//! saying to upgrade. Every decoder has a size limit and never panics on arbitrary bytes
//! (tested), and version 1 of each is kept as bytes a build must still read (tested).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::tx::Signature;
use peergrid_core::{AccountId, Hash, Keypair, NodeId};
use serde::{Deserialize, Serialize};

use crate::crypto::Cipher;
use crate::erasure::Scheme;

/// Largest manifest read (about 2.8 million shards' addresses).
pub const MANIFEST_BYTES_MAX: usize = 128 << 20;
/// Largest owner index read.
pub const INDEX_BYTES_MAX: usize = 64 << 20;
/// Largest pointer record.
pub const POINTER_BYTES_MAX: usize = 512;
/// Longest object name, in bytes.
pub const NAME_BYTES_MAX: usize = 1024;
/// What owners sign their index pointer under.
pub const POINTER_NAMESPACE: &[u8] = b"_PEERGRID_STORAGE_POINTER";

/// A stored format could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Empty or cut short.
    #[error("{what} is empty")]
    Empty {
        /// Which format.
        what: &'static str,
    },
    /// Written by a newer peergrid.
    #[error(
        "{what} has format version {found}; this peergrid reads up to {reads}: upgrade peergrid"
    )]
    Newer {
        /// Which format.
        what: &'static str,
        /// The version found.
        found: u8,
        /// The newest version this build reads.
        reads: u8,
    },
    /// Not decodable.
    #[error("{what} is malformed: {reason}")]
    Malformed {
        /// Which format.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// A format with a version of its own: each changes apart from the others, and a build
/// reads every version of it up to [`Format::VERSION`].
pub trait Format: BorshSerialize + BorshDeserialize {
    /// What it is called in errors.
    const WHAT: &'static str;
    /// The version this build writes.
    const VERSION: u8;
    /// The largest encoding read.
    const BYTES_MAX: usize;

    /// Decode the body of an encoding of `version` (1 to [`Format::VERSION`]). While a
    /// format has had one layout it is the current one; the change that makes version 2
    /// keeps here a reader of version 1 (the version 1 fixtures fail without it).
    fn decode_body(version: u8, body: &[u8]) -> Result<Self, FormatError> {
        let _ = version;
        peergrid_core::codec::decode(Self::WHAT, body, Self::BYTES_MAX).map_err(|e| {
            FormatError::Malformed {
                what: Self::WHAT,
                reason: e.to_string(),
            }
        })
    }
}

/// Encode `value` behind its format's current version byte.
pub fn encode_versioned<T: Format>(value: &T) -> Vec<u8> {
    let mut out = vec![T::VERSION];
    out.extend(peergrid_core::codec::encode(value));
    out
}

/// Decode a versioned `T`, of any version this build reads.
pub fn decode_versioned<T: Format>(bytes: &[u8]) -> Result<T, FormatError> {
    let what = T::WHAT;
    let (&version, body) = bytes.split_first().ok_or(FormatError::Empty { what })?;
    if version > T::VERSION {
        return Err(FormatError::Newer {
            what,
            found: version,
            reads: T::VERSION,
        });
    }
    if version == 0 {
        return Err(FormatError::Malformed {
            what,
            reason: "version 0 was never written".into(),
        });
    }
    T::decode_body(version, body)
}

/// The longest segment a manifest may name: a reader holds several in memory at once.
pub const SEGMENT_BYTES_MAX: u32 = 64 << 20;

/// What sealing adds to a segment: its nonce and its tag.
const SEAL_OVERHEAD: u64 = (crate::crypto::NONCE_BYTES + crate::crypto::TAG_BYTES) as u64;

/// One segment of an object: its key and its shards.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Segment {
    /// Plaintext bytes.
    pub plain_len: u32,
    /// Sealed bytes (nonce, ciphertext and tag) that were erasure-coded.
    pub sealed_len: u32,
    /// The key that seals it.
    pub key: [u8; 32],
    /// The address of each of its `k + m` shards, data shards first.
    pub shards: Vec<Hash>,
    /// The node each shard was put on (a hint: repair may move a shard, and readers
    /// then find it by asking the owner's storage nodes).
    pub nodes: Vec<NodeId>,
}

/// Everything needed to read one object, given the key that opens it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Manifest {
    /// The object's name when it was put.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_bytes: u32,
    /// The AEAD of every segment.
    pub cipher: Cipher,
    /// The erasure code of every segment.
    pub scheme: Scheme,
    /// Unix ms when it was put.
    pub created_ms: u64,
    /// Its segments in order.
    pub segments: Vec<Segment>,
}

impl Format for Manifest {
    const WHAT: &'static str = "manifest";
    const VERSION: u8 = 1;
    const BYTES_MAX: usize = MANIFEST_BYTES_MAX;
}

impl Manifest {
    /// Decode and check a manifest's internal consistency.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let m: Manifest = decode_versioned(bytes)?;
        let bad = |reason: String| FormatError::Malformed {
            what: "manifest",
            reason,
        };
        m.scheme.check().map_err(bad)?;
        // A reader shows the name and may write a file under its last part: one made by
        // another peergrid than ours (a capability's owner is anyone) may hold no control
        // character, which a terminal would act on. Only that: names put before a put's
        // other rules (`a//b`) must still read and be removed.
        if m.name.chars().any(char::is_control) {
            return Err(bad(format!("its name {:?} has control characters", m.name)));
        }
        if m.segment_bytes == 0 || m.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(bad(format!(
                "segments of {} bytes (1 to {SEGMENT_BYTES_MAX} are read)",
                m.segment_bytes
            )));
        }
        let mut total = 0u64;
        for (i, s) in m.segments.iter().enumerate() {
            if s.shards.len() != m.scheme.n() || s.nodes.len() != m.scheme.n() {
                return Err(bad(format!("segment {i} lists a wrong number of shards")));
            }
            if s.plain_len > m.segment_bytes {
                return Err(bad(format!("segment {i} is longer than a segment")));
            }
            // A reader finds byte N in segment N / segment_bytes: a short one before the
            // last would shift every later byte (and a get would end short, unnoticed).
            if i + 1 < m.segments.len() && s.plain_len != m.segment_bytes {
                return Err(bad(format!(
                    "segment {i} holds {} bytes, short of a whole segment, and is not the last",
                    s.plain_len
                )));
            }
            // A reader sizes its buffers by it before any shard has been checked.
            if u64::from(s.sealed_len) != u64::from(s.plain_len) + SEAL_OVERHEAD {
                return Err(bad(format!(
                    "segment {i} is {} bytes sealed and {} in plain",
                    s.sealed_len, s.plain_len
                )));
            }
            total += u64::from(s.plain_len);
        }
        if total != m.size {
            return Err(bad(format!(
                "segments add up to {total} bytes, the object has {}",
                m.size
            )));
        }
        Ok(m)
    }

    /// Every shard address with the node it was put on.
    pub fn placements(&self) -> impl Iterator<Item = (Hash, NodeId)> + '_ {
        self.segments
            .iter()
            .flat_map(|s| s.shards.iter().copied().zip(s.nodes.iter().copied()))
    }

    /// The bytes the manifest of an object named `name` in `segments` segments of
    /// `scheme` takes: encoded (the first) and sealed (the second). A put checks them
    /// against what nodes accept before sending any shard.
    pub fn len_for(name: &str, scheme: Scheme, segments: u64) -> (u64, u64) {
        let n = scheme.n();
        let segment = Segment {
            plain_len: 0,
            sealed_len: 0,
            key: [0; 32],
            shards: vec![Hash([0; 32]); n],
            nodes: vec![0; n],
        };
        let empty = Manifest {
            name: name.to_string(),
            size: 0,
            segment_bytes: 0,
            cipher: Cipher::Aes256Gcm,
            scheme,
            created_ms: 0,
            segments: Vec::new(),
        };
        let per_segment = borsh::to_vec(&segment).map_or(0, |v| v.len()) as u64;
        let encoded = (encode_versioned(&empty).len() as u64)
            .saturating_add(segments.saturating_mul(per_segment));
        (encoded, encoded.saturating_add(SEAL_OVERHEAD))
    }

    /// The data shards that hold nothing but the coder's zero padding (a segment smaller
    /// than K shards' alignment). Their bytes, so their address, are the same for every
    /// object with shards of that length: no one object's removal may take them.
    pub fn padding_shards(&self) -> std::collections::HashSet<Hash> {
        let k = usize::from(self.scheme.k);
        let mut out = std::collections::HashSet::new();
        for s in &self.segments {
            let sealed = s.sealed_len as usize;
            let len = self.scheme.shard_len(sealed);
            for (i, id) in s.shards.iter().enumerate().take(k) {
                if i.saturating_mul(len) >= sealed {
                    out.insert(*id);
                }
            }
        }
        out
    }
}

/// What reads an object: whose it is, where its manifest is, and the key that opens it.
/// Hand it to anyone to share the object; it is the only secret needed.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Capability {
    /// The owner, whose storage contracts name the nodes that hold the shards.
    pub owner: AccountId,
    /// The address of the sealed manifest.
    pub manifest: Hash,
    /// The key that opens the manifest.
    pub key: [u8; 32],
    /// The AEAD of the manifest.
    pub cipher: Cipher,
}

impl Format for Capability {
    const WHAT: &'static str = "capability";
    const VERSION: u8 = 1;
    const BYTES_MAX: usize = 256;
}

impl fmt::Debug for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Capability({}, manifest {:?}, key …)",
            self.owner, self.manifest
        )
    }
}

const CAPABILITY_PREFIX: &str = "pg1";

/// Check bytes after a capability's text form: one character mistyped or left out when it
/// is copied by hand fails these, where without them it could name another owner.
const CAPABILITY_CHECK_BYTES: usize = 4;

fn capability_check(bytes: &[u8]) -> [u8; CAPABILITY_CHECK_BYTES] {
    let mut check = [0; CAPABILITY_CHECK_BYTES];
    check.copy_from_slice(&blake3::hash(bytes).as_bytes()[..CAPABILITY_CHECK_BYTES]);
    check
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = encode_versioned(self);
        let check = capability_check(&bytes);
        bytes.extend_from_slice(&check);
        write!(
            f,
            "{CAPABILITY_PREFIX}{}",
            bs58::encode(bytes).into_string()
        )
    }
}

impl FromStr for Capability {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| FormatError::Malformed {
            what: "capability",
            reason: format!(
                "{reason}; a capability starts with {CAPABILITY_PREFIX} (from `peergrid store share NAME`)"
            ),
        };
        let body = s
            .trim()
            .strip_prefix(CAPABILITY_PREFIX)
            .ok_or_else(|| bad("wrong prefix"))?;
        let bytes = bs58::decode(body)
            .into_vec()
            .map_err(|_| bad("not base58"))?;
        if let Some((versioned, check)) = bytes.split_last_chunk::<CAPABILITY_CHECK_BYTES>()
            && capability_check(versioned) == *check
        {
            match decode_versioned(versioned) {
                Ok(read) => return Ok(read),
                Err(newer @ FormatError::Newer { .. }) => return Err(newer),
                // An old capability whose last bytes happen to match (one in 2^32).
                Err(_) => {}
            }
        }
        // Capabilities shared before the check bytes were added end without them.
        if bytes.first() == Some(&1)
            && let Ok(old) = decode_versioned(&bytes)
        {
            return Ok(old);
        }
        Err(FormatError::Malformed {
            what: "capability",
            reason: "it is mistyped or cut short (its check does not match): copy it again, \
                     whole, from `peergrid store share NAME` on the owner's machine"
                .into(),
        })
    }
}

impl Serialize for Capability {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Check an object name: 1 to 1,024 bytes of UTF-8, no control characters, not ending
/// in `/` (a folder), parts that are paths (no empty part, `.` or `..`, so a folder's get
/// writes every name), not a capability (so `get` can tell the two apart).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "an object name has 1 to {NAME_BYTES_MAX} bytes, not {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} has control characters; use printable names like photos/cat.jpg"
        ));
    }
    if name.ends_with('/') {
        return Err(format!(
            "{name:?} ends in `/`, which names a folder of objects: add the object's own name, like {name}cat.jpg"
        ));
    }
    if name
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{name:?} has an empty part, `.` or `..`: a name is parts joined by single `/`, \
             like photos/cat.jpg, so that a folder's get can write it as a path"
        ));
    }
    if name.starts_with(CAPABILITY_PREFIX) && name.parse::<Capability>().is_ok() {
        return Err("that name is a capability; choose another name".into());
    }
    Ok(())
}

/// One object in the owner index.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct IndexEntry {
    /// What reads it.
    pub capability: Capability,
    /// Its size in bytes.
    pub size: u64,
    /// Unix ms when it was put.
    pub created_ms: u64,
    /// Its erasure code.
    pub scheme: Scheme,
}

/// The owner's names for their objects; stored sealed, like an object, on every node of
/// the owner's storage contracts.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Index {
    /// Objects by name.
    pub objects: BTreeMap<String, IndexEntry>,
}

impl Index {
    /// The objects whose names start with `prefix`, by name.
    pub fn starting_with<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a IndexEntry)> + 'a {
        self.objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(n, _)| n.starts_with(prefix))
    }
}

/// Where the owner's newest index is.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Pointer {
    /// Whose index.
    pub owner: AccountId,
    /// Grows with every new index; nodes keep the highest they were given.
    pub seq: u64,
    /// The sealed index's shard address.
    pub index: Hash,
}

/// What names one grid for the owner's pointers and a node's data directory: its chain
/// id, which an operator chooses, and the hash of the genesis it started from, which
/// differs for a grid started anew under the same id.
pub fn grid_id(chain_id: &str, genesis_hash: &Hash) -> String {
    format!("{chain_id}/{genesis_hash}")
}

/// A [`Pointer`] signed by its owner for one grid: the signature covers the grid
/// ([`grid_id`]), so a pointer from another grid (a devnet or testnet the same words were
/// used on, with a higher sequence number) is refused by nodes and readers alike.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedPointer {
    /// The pointer.
    pub pointer: Pointer,
    /// The owner's signature over its encoding.
    pub signature: Signature,
}

impl Format for Index {
    const WHAT: &'static str = "owner index";
    const VERSION: u8 = 1;
    const BYTES_MAX: usize = INDEX_BYTES_MAX;
}

impl Format for SignedPointer {
    const WHAT: &'static str = "pointer";
    const VERSION: u8 = 1;
    const BYTES_MAX: usize = POINTER_BYTES_MAX;
}

impl SignedPointer {
    /// Sign `pointer` with its owner's key, for the grid `chain` ([`grid_id`]).
    pub fn sign(owner: &Keypair, chain: &str, pointer: Pointer) -> SignedPointer {
        let signature = Signature(owner.sign(POINTER_NAMESPACE, &signed_bytes(chain, &pointer)));
        SignedPointer { pointer, signature }
    }

    /// Whether the owner it names signed it for the grid `chain` ([`grid_id`]).
    pub fn verify(&self, chain: &str) -> bool {
        self.signature.verify(
            &self.pointer.owner,
            POINTER_NAMESPACE,
            &signed_bytes(chain, &self.pointer),
        )
    }
}

/// What a pointer's signature covers: the grid, then the pointer.
fn signed_bytes(chain: &str, pointer: &Pointer) -> Vec<u8> {
    peergrid_core::codec::encode(&(chain.to_string(), pointer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest() -> Manifest {
        Manifest {
            name: "a/b".into(),
            size: 10,
            segment_bytes: 8,
            cipher: Cipher::Aes256Gcm,
            scheme: Scheme { k: 2, m: 1 },
            created_ms: 5,
            segments: vec![
                Segment {
                    plain_len: 8,
                    sealed_len: 36,
                    key: [1; 32],
                    shards: vec![Hash::of(b"1"), Hash::of(b"2"), Hash::of(b"3")],
                    nodes: vec![1, 2, 3],
                },
                Segment {
                    plain_len: 2,
                    sealed_len: 30,
                    key: [2; 32],
                    shards: vec![Hash::of(b"4"), Hash::of(b"5"), Hash::of(b"6")],
                    nodes: vec![1, 2, 3],
                },
            ],
        }
    }

    /// Sequence 3 of `owner`'s pointer, for grid "grid-a".
    fn pointer(owner: &Keypair) -> SignedPointer {
        SignedPointer::sign(
            owner,
            "grid-a",
            Pointer {
                owner: owner.account(),
                seq: 3,
                index: Hash::of(b"i"),
            },
        )
    }

    fn capability(owner: &Keypair) -> Capability {
        Capability {
            owner: owner.account(),
            manifest: Hash::of(b"m"),
            key: [9; 32],
            cipher: Cipher::Aes256Gcm,
        }
    }

    #[test]
    fn formats_round_trip_and_refuse_what_they_cannot_read() {
        let m = manifest();
        assert_eq!(Manifest::decode(&encode_versioned(&m)).expect("decodes"), m);
        let mut newer = encode_versioned(&m);
        newer[0] = Manifest::VERSION + 1;
        assert!(matches!(
            Manifest::decode(&newer),
            Err(FormatError::Newer { .. })
        ));
        let mut inconsistent = m.clone();
        inconsistent.size = 11;
        assert!(
            Manifest::decode(&encode_versioned(&inconsistent))
                .expect_err("inconsistent")
                .to_string()
                .contains("add up")
        );
        // A stranger's manifest cannot size a reader's buffers beyond what sealing gives.
        let mut oversized = m.clone();
        oversized.segments[0].sealed_len = u32::MAX;
        assert!(
            Manifest::decode(&encode_versioned(&oversized))
                .expect_err("oversized")
                .to_string()
                .contains("bytes sealed")
        );
        // A stranger's name reaches the reader's terminal and file names: a put's rules.
        let mut escaping = m.clone();
        escaping.name = "a/\u{1b}]0;owned\u{7}".into();
        assert!(
            Manifest::decode(&encode_versioned(&escaping))
                .expect_err("control characters")
                .to_string()
                .contains("control characters")
        );
        // A name an older put allowed still reads.
        let mut older = m.clone();
        older.name = "a//b".into();
        Manifest::decode(&encode_versioned(&older)).expect("an older name");
        let mut huge = m.clone();
        huge.segment_bytes = SEGMENT_BYTES_MAX + 1;
        assert!(Manifest::decode(&encode_versioned(&huge)).is_err());
        let (encoded, sealed) = Manifest::len_for(&m.name, m.scheme, 2);
        assert_eq!(encoded, encode_versioned(&m).len() as u64);
        assert_eq!(sealed, encoded + 28);
        // Only the last segment may be short: a reader places bytes by segment number.
        let mut short = m.clone();
        short.segments.swap(0, 1);
        assert!(
            Manifest::decode(&encode_versioned(&short))
                .expect_err("short middle segment")
                .to_string()
                .contains("not the last")
        );

        let owner = Keypair::from_seed([4; 32]);
        let cap = capability(&owner);
        let text = cap.to_string();
        assert!(text.starts_with("pg1"));
        assert_eq!(text.parse::<Capability>().expect("parses"), cap);
        assert!("pg1xyz0".parse::<Capability>().is_err());
        assert!(check_name(&text).is_err(), "a capability is not a name");
        assert!(check_name("photos/cat.jpg").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("photos/").is_err(), "a folder is not a name");
        for unsafe_path in ["/etc/x", "a//b", "../up", "./x", "a/./b", "a/.."] {
            assert!(
                check_name(unsafe_path).is_err(),
                "{unsafe_path:?} cannot be written as a path"
            );
        }
        assert!(check_name("a/.hidden/..b").is_ok());

        // Every character changed, and every length cut short, is a mistyped capability,
        // not another owner's object or a format from the future.
        let alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        for at in 3..text.len() {
            let mut typo = text.clone();
            let was = &text[at..at + 1];
            let other = alphabet
                .chars()
                .find(|c| c.to_string() != was)
                .expect("other");
            typo.replace_range(at..at + 1, &other.to_string());
            let err = typo.parse::<Capability>().expect_err("typo").to_string();
            assert!(err.contains("mistyped"), "{typo}: {err}");
            let cut = typo[..at].parse::<Capability>().expect_err("cut short");
            assert!(cut.to_string().contains("mistyped"), "{at}: {cut}");
        }
        // One from a newer build, whole, says so.
        let mut newer = encode_versioned(&cap);
        newer[0] = Capability::VERSION + 1;
        let check = capability_check(&newer);
        newer.extend_from_slice(&check);
        let newer = format!("{CAPABILITY_PREFIX}{}", bs58::encode(newer).into_string());
        assert!(matches!(
            newer.parse::<Capability>(),
            Err(FormatError::Newer { .. })
        ));

        let p = pointer(&owner);
        assert!(p.verify("grid-a"));
        assert!(!p.verify("grid-b"), "a pointer holds on its own grid only");
        let mut forged = p.clone();
        forged.pointer.seq = 4;
        assert!(!forged.verify("grid-a"));
    }

    /// Version 1 of each stored format, as this build writes it. Every later build must
    /// read these very bytes to the same values: a change of layout needs a new version
    /// and a reader of this one, not a silent misreading of objects already stored.
    #[test]
    fn version_1_of_every_format_is_read_forever() {
        const MANIFEST_V1: &str = "0103000000612f620a000000000000000800000001020001000500000000000000020000000800000024000000010101010101010101010101010101010101010101010101010101010101010103000000d63bd9a826af91c1fea371965a64e11ee20f13e46b5f52c59901136605b3a487813e9b729141e7f385afa0a2d0df3e6c3789e427ffe4aeef566a565bc8f2fe3d58d6fd3dc609068615d66b6a2616cce521e6bd49bbcd7854e3f2573b142c663703000000010000000200000003000000020000001e000000020202020202020202020202020202020202020202020202020202020202020203000000e67a9c4536256f1ec7495a146b5442fa7c0ed99e258a08260a4a244fa31c7c61b3372b584dc0df6ce757fa43f459ca1f0c4180a08762cbfa41d022ca24f63d9fb748b4ebf53795686930b718fd46066df65694e910c9e647cd56c2b081b9573203000000010000000200000003000000";
        const INDEX_V1: &str = "01010000000e00000070686f746f732f6361742e6a7067ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c83d9dab06011479163c7c4d5fa735f911bac86729f56aaa115b7eed2eb66e0220909090909090909090909090909090909090909090909090909090909090909010a00000000000000050000000000000002000100";
        const POINTER_V1: &str = "01ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c0300000000000000e9c0ba08015769a0c4354594b96ce0dfbf27c9eb534a2f8378508985f732ff6db4343605da6bbb1601e3fa8ad2177cc7ae395cd44dc61971538a7cb0d8bb31577b55b76170fa712468dace43889044d9a8d6e644ebeca02c75d2b49850cf1302";
        // As shared before its text gained check bytes: still read.
        const CAPABILITY_V1: &str = "pg1D2EroMGddKpg3PNcqMUaDBeLMc43kvMRuTnzgNtaMLYBuFT5ynQ6P577gnoGZ5XaNTTWWt4YTQ44EvMbBq3PcQTBJ4EtBLgQeeXUWLnmytEDMoueqqbds7tCUvW461gUtZMdz";
        const CAPABILITY_V1_CHECKED: &str = "pg12MfVBKatgKpqgTrWLx8cgmmnjSNp4nTifH5MtyNsa4hwZYBAHCcjFt3QTnBMZoF4bLF4he2Vftyu49dJx1gNpfdrGLSb9Ug78kR7qGjoqcgAkF4TtcVLdCQbEHYWLVUMvmUp11hNGrg";
        let owner = Keypair::from_seed([4; 32]);
        let capability = capability(&owner);
        let index = Index {
            objects: [(
                "photos/cat.jpg".to_string(),
                IndexEntry {
                    capability,
                    size: 10,
                    created_ms: 5,
                    scheme: Scheme { k: 2, m: 1 },
                },
            )]
            .into(),
        };
        let pointer = pointer(&owner);
        // What this build writes is still version 1 (a new version adds its own fixture).
        assert_eq!(hex::encode(encode_versioned(&manifest())), MANIFEST_V1);
        assert_eq!(hex::encode(encode_versioned(&index)), INDEX_V1);
        assert_eq!(hex::encode(encode_versioned(&pointer)), POINTER_V1);
        assert_eq!(capability.to_string(), CAPABILITY_V1_CHECKED);
        let bytes = |h: &str| hex::decode(h).expect("fixture hex");
        assert_eq!(Manifest::decode(&bytes(MANIFEST_V1)), Ok(manifest()));
        assert_eq!(decode_versioned::<Index>(&bytes(INDEX_V1)), Ok(index));
        let read: SignedPointer = decode_versioned(&bytes(POINTER_V1)).expect("pointer");
        assert!(read.verify("grid-a"), "a stored pointer still verifies");
        assert_eq!(CAPABILITY_V1.parse::<Capability>(), Ok(capability));
        assert_eq!(CAPABILITY_V1_CHECKED.parse::<Capability>(), Ok(capability));
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Manifest::decode(&bytes);
            let _ = decode_versioned::<Index>(&bytes);
            let _ = decode_versioned::<SignedPointer>(&bytes);
            let _ = decode_versioned::<Capability>(&bytes);
            let _ = String::from_utf8_lossy(&bytes).parse::<Capability>();
        }

        #[test]
        fn altered_manifests_are_refused_or_decode_consistently(flip in 0usize..400, bit in 0u8..8) {
            let mut bytes = encode_versioned(&manifest());
            let i = flip % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(m) = Manifest::decode(&bytes) {
                prop_assert_eq!(m.segments.iter().map(|s| u64::from(s.plain_len)).sum::<u64>(), m.size);
            }
        }
    }
}
