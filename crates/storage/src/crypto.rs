//! Keys and sealing: every byte a node stores is encrypted with a key only the owner
//! (or whoever holds a capability) can derive.
//!
//! The storage master key is derived from the account's secret seed, so the 24 words
//! alone bring back every key. A segment's key is the master key's keyed BLAKE3 of the
//! object's salt and the segment's plaintext: the same bytes under the same name seal to
//! the same shards, which is what lets an interrupted upload resume (the nodes already
//! hold what was sent) and a repair regenerate a lost shard bit for bit. Each such key
//! seals exactly one plaintext, so its nonce can be fixed; the owner index, sealed again
//! at every change under one key, takes a random nonce.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::Keypair;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Bytes of an AEAD nonce; a sealed blob starts with it.
pub const NONCE_BYTES: usize = 12;
/// Bytes of the authentication tag a sealed blob ends with.
pub const TAG_BYTES: usize = 16;

/// The AEAD a sealed blob uses; recorded in every manifest so readers never guess.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[serde(rename_all = "kebab-case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum Cipher {
    /// AES-256-GCM (aws-lc): the default, several times faster where the CPU has AES-NI
    /// (`peergrid bench storage` prints both).
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305 (aws-lc): for CPUs without AES instructions.
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    /// The cipher's name for people.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }
}

/// A blob could not be opened: wrong key, or bytes changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decrypt {what}: wrong key, or the bytes were altered")]
pub struct OpenError {
    /// What was being opened.
    pub what: &'static str,
}

/// Seal `plain` under `key`: `nonce | ciphertext | tag`. A `None` nonce is all zeros,
/// allowed only for a key that seals this one plaintext (content-derived keys).
pub fn seal(
    cipher: Cipher,
    key: &[u8; 32],
    nonce: Option<[u8; NONCE_BYTES]>,
    plain: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(NONCE_BYTES + plain.len() + TAG_BYTES);
    out.resize(NONCE_BYTES, 0);
    out.extend_from_slice(plain);
    seal_in_place(cipher, key, nonce, &mut out);
    out
}

/// [`seal`] where the bytes are: `buf` holds [`NONCE_BYTES`] of room for the nonce,
/// then the plaintext, and gains the tag. A put reads each segment into such a buffer,
/// with room for the erasure coder's padding too, and seals and codes it there.
pub fn seal_in_place(
    cipher: Cipher,
    key: &[u8; 32],
    nonce: Option<[u8; NONCE_BYTES]>,
    buf: &mut Vec<u8>,
) {
    let nonce = nonce.unwrap_or([0; NONCE_BYTES]);
    if buf.len() < NONCE_BYTES {
        buf.resize(NONCE_BYTES, 0);
    }
    buf[..NONCE_BYTES].copy_from_slice(&nonce);
    let sealing = less_safe_key(cipher, key);
    // A 32-byte key and a 12-byte nonce are always valid; sealing fails only past 2^36 bytes.
    match sealing.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut buf[NONCE_BYTES..],
    ) {
        Ok(tag) => buf.extend_from_slice(tag.as_ref()),
        Err(_) => buf.clear(),
    }
}

/// Open a blob [`seal`] made, in place; returns the plaintext.
pub fn open(
    cipher: Cipher,
    key: &[u8; 32],
    what: &'static str,
    sealed: Vec<u8>,
) -> Result<Vec<u8>, OpenError> {
    let (mut bytes, plain) = open_in_place(cipher, key, what, sealed)?;
    bytes.copy_within(plain.clone(), 0);
    bytes.truncate(plain.len());
    Ok(bytes)
}

/// Open a blob [`seal`] made without moving it: the buffer and where the plaintext lies in it.
pub fn open_in_place(
    cipher: Cipher,
    key: &[u8; 32],
    what: &'static str,
    mut sealed: Vec<u8>,
) -> Result<(Vec<u8>, std::ops::Range<usize>), OpenError> {
    let plain = open_slice(cipher, key, what, &mut sealed)?;
    Ok((sealed, plain))
}

/// [`open_in_place`] on a slice of the caller's buffer: where in it the plaintext lies.
pub fn open_slice(
    cipher: Cipher,
    key: &[u8; 32],
    what: &'static str,
    sealed: &mut [u8],
) -> Result<std::ops::Range<usize>, OpenError> {
    if sealed.len() < NONCE_BYTES + TAG_BYTES {
        return Err(OpenError { what });
    }
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(&sealed[..NONCE_BYTES]);
    let opening = less_safe_key(cipher, key);
    let len = opening
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed[NONCE_BYTES..],
        )
        .map_err(|_| OpenError { what })?
        .len();
    Ok(NONCE_BYTES..NONCE_BYTES + len)
}

fn less_safe_key(cipher: Cipher, key: &[u8; 32]) -> LessSafeKey {
    // Both algorithms take 32-byte keys, so this cannot fail.
    match UnboundKey::new(cipher.algorithm(), key) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("AES-256 and ChaCha20 keys are 32 bytes"),
    }
}

/// The owner's storage keys, all derived from the account's secret seed.
#[derive(Clone)]
pub struct StorageKeys {
    master: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for StorageKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageKeys(…)")
    }
}

impl StorageKeys {
    /// The keys of `owner`'s account.
    pub fn of(owner: &Keypair) -> Self {
        let seed = owner.secret_seed();
        StorageKeys {
            master: Zeroizing::new(blake3::derive_key(
                "peergrid storage master key v1",
                &seed[..],
            )),
        }
    }

    /// The salt of the object stored under `name`: versions of one name may share shards,
    /// different names never do, so removing one object never removes another's bytes.
    pub fn object_salt(&self, name: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.master);
        h.update(b"object salt\0");
        h.update(name.as_bytes());
        *h.finalize().as_bytes()
    }

    /// The key that seals one segment (or a manifest) of plaintext `plain` with `cipher`.
    /// The cipher is part of it, so that one key never seals with two ciphers (the
    /// all-zero nonce is safe only while a key seals one plaintext one way).
    pub fn content_key(&self, salt: &[u8; 32], cipher: Cipher, plain: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.master);
        h.update(b"content key\0");
        h.update(&[cipher as u8]);
        h.update(salt);
        h.update(plain);
        *h.finalize().as_bytes()
    }

    /// The key of the owner index.
    pub fn index_key(&self) -> [u8; 32] {
        blake3::keyed_hash(&self.master, b"owner index key v1").into()
    }
}

/// 12 random bytes for a nonce.
pub fn random_nonce() -> Result<[u8; NONCE_BYTES], String> {
    let mut n = [0u8; NONCE_BYTES];
    // Never fall back to zeros: the index key would then seal twice with one nonce.
    getrandom::fill(&mut n)
        .map_err(|e| format!("the operating system's random generator failed: {e}"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_blobs_open_with_their_key_only() {
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let key = [7u8; 32];
            let sealed = seal(cipher, &key, None, b"hello shard");
            assert_eq!(sealed.len(), NONCE_BYTES + 11 + TAG_BYTES);
            assert_eq!(
                open(cipher, &key, "t", sealed.clone()).expect("opens"),
                b"hello shard"
            );
            assert!(
                open(cipher, &[8u8; 32], "t", sealed.clone()).is_err(),
                "other key"
            );
            let mut altered = sealed;
            altered[NONCE_BYTES + 3] ^= 1;
            assert!(open(cipher, &key, "t", altered).is_err(), "altered byte");
            assert!(open(cipher, &key, "t", vec![1, 2, 3]).is_err(), "too short");
        }
    }

    #[test]
    fn keys_follow_the_words_the_name_and_the_content() {
        let a = StorageKeys::of(&Keypair::from_seed([1; 32]));
        let a2 = StorageKeys::of(&Keypair::from_seed([1; 32]));
        let b = StorageKeys::of(&Keypair::from_seed([2; 32]));
        let salt = a.object_salt("photos/cat.jpg");
        assert_eq!(
            salt,
            a2.object_salt("photos/cat.jpg"),
            "same words, same salt"
        );
        assert_ne!(salt, a.object_salt("photos/dog.jpg"));
        assert_ne!(salt, b.object_salt("photos/cat.jpg"));
        let aes = Cipher::Aes256Gcm;
        assert_eq!(
            a.content_key(&salt, aes, b"x"),
            a2.content_key(&salt, aes, b"x")
        );
        assert_ne!(
            a.content_key(&salt, aes, b"x"),
            a.content_key(&salt, aes, b"y")
        );
        assert_ne!(
            a.content_key(&salt, aes, b"x"),
            a.content_key(&salt, Cipher::ChaCha20Poly1305, b"x")
        );
        assert_ne!(a.index_key(), b.index_key());
    }
}
