//! ed25519 keypairs, their BIP39 backup phrase, and key files on disk.
//!
//! The 24-word phrase encodes the key's 32-byte secret seed directly (BIP39
//! entropy = ed25519 seed), so restoring from the phrase gives back exactly the same
//! account, and the phrase is the whole backup. Key files are JSON written with mode
//! 0600 through a temporary file and a rename, so a crash never leaves half a key.

use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::AccountId;

/// Why a key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The phrase is not a valid 24-word BIP39 English mnemonic.
    #[error("invalid mnemonic: {0} (expected the 24 words printed by `peergrid key new`)")]
    Mnemonic(String),
    /// The operating system's random source failed.
    #[error("no randomness available from the operating system: {0}")]
    Random(String),
    /// A key file already exists where a new one would be written.
    #[error("a key file already exists at {0} (use --force to replace it, after backing it up)")]
    Exists(PathBuf),
    /// No key file where one was expected.
    #[error("no key file at {0} (create one with `peergrid key new` or `peergrid key import`)")]
    Missing(PathBuf),
    /// The file exists but is not a peergrid key file.
    #[error("{path} is not a valid key file: {reason}")]
    Invalid {
        /// The file read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The file accessed.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// An ed25519 signing key and the account it controls.
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({})", self.account())
    }
}

/// Number of words in a backup phrase.
pub const MNEMONIC_WORDS: usize = 24;

impl Keypair {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(*seed))
    }

    /// The key whose secret seed is `seed`; used for restoring and for deterministic tests.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Keypair {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// Restore a key from its 24-word backup phrase.
    pub fn from_mnemonic(phrase: &str) -> Result<Self, KeyError> {
        let normalized = phrase
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        let words = normalized.split(' ').filter(|w| !w.is_empty()).count();
        if words != MNEMONIC_WORDS {
            return Err(KeyError::Mnemonic(format!(
                "{words} words given, {MNEMONIC_WORDS} needed"
            )));
        }
        let mnemonic = bip39::Mnemonic::parse_normalized(&normalized).map_err(|e| {
            KeyError::Mnemonic(match e {
                // bip39 counts words from 0, people from 1. The word itself is not
                // said: a near miss would tell a log reader one word of the secret.
                bip39::Error::UnknownWord(i) => format!(
                    "word {} is not in the BIP39 English word list: check its spelling",
                    i + 1
                ),
                bip39::Error::InvalidChecksum => {
                    "the words do not check out: one is wrong or two are swapped".into()
                }
                other => other.to_string(),
            })
        })?;
        let (entropy, len) = mnemonic.to_entropy_array();
        let entropy = Zeroizing::new(entropy);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&entropy[..len.min(32)]);
        Ok(Self::from_seed(seed))
    }

    /// The 24-word backup phrase of this key.
    pub fn mnemonic(&self) -> Zeroizing<String> {
        let seed = Zeroizing::new(self.signing.to_bytes());
        // 32 bytes is a valid BIP39 entropy length, so this cannot fail.
        let mnemonic = bip39::Mnemonic::from_entropy(seed.as_ref())
            .map(|m| m.to_string())
            .unwrap_or_default();
        Zeroizing::new(mnemonic)
    }

    /// The account this key controls.
    pub fn account(&self) -> AccountId {
        AccountId(self.signing.verifying_key().to_bytes())
    }

    /// The secret seed (handle with care: it is the whole key).
    pub fn secret_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// Sign `message` within `namespace`, so a signature for one purpose is never valid for another.
    pub fn sign(&self, namespace: &[u8], message: &[u8]) -> [u8; 64] {
        self.signing
            .sign(&signed_bytes(namespace, message))
            .to_bytes()
    }

    /// Read a key file written by [`Keypair::save`].
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::Missing(path.to_path_buf()));
            }
            Err(source) => {
                return Err(KeyError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let invalid = |reason: String| KeyError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        // Not text is the content's fault, not the file system's: say so, not "cannot access".
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            invalid(format!(
                "not UTF-8 text (the byte at offset {} is not)",
                e.valid_up_to()
            ))
        })?;
        let file: KeyFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.version != KEY_FILE_VERSION {
            return Err(invalid(format!("unsupported version {}", file.version)));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(file.secret_key.as_str(), seed.as_mut())
            .map_err(|_| invalid("secret_key is not 64 hex characters".into()))?;
        let key = Keypair::from_seed(*seed);
        if key.account() != file.account {
            return Err(invalid(format!(
                "the secret key belongs to {}, not to the account {} named in the file",
                key.account(),
                file.account
            )));
        }
        Ok(key)
    }

    /// Write this key to `path` with mode 0600, atomically; refuses to replace a file unless `force`.
    pub fn save(&self, path: &Path, force: bool) -> Result<(), KeyError> {
        if !force && path.exists() {
            return Err(KeyError::Exists(path.to_path_buf()));
        }
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            account: self.account(),
            secret_key: Zeroizing::new(hex::encode(self.signing.to_bytes())),
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default() + "\n");
        write_private_atomically(path, text.as_bytes())
    }
}

/// What is actually signed: the namespace's length, the namespace, then the message.
///
/// The length prefix keeps one namespace from being a prefix of another's signed bytes.
pub fn signed_bytes(namespace: &[u8], message: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(1 + namespace.len() + message.len());
    data.push(u8::try_from(namespace.len()).unwrap_or(u8::MAX));
    data.extend_from_slice(namespace);
    data.extend_from_slice(message);
    data
}

const KEY_FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    account: AccountId,
    secret_key: Zeroizing<String>,
}

/// Write `data` to `path` readable by the owner only: temp file, fsync, rename, fsync the directory.
pub fn write_private_atomically(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::fs::write_private_atomic(path, data).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mnemonic_restores_the_same_account() {
        let key = Keypair::generate().expect("random");
        let phrase = key.mnemonic();
        assert_eq!(phrase.split(' ').count(), MNEMONIC_WORDS);
        let restored =
            Keypair::from_mnemonic(&format!("  {}\n", phrase.to_uppercase())).expect("valid");
        assert_eq!(restored.account(), key.account());
    }

    #[test]
    fn bad_mnemonics_are_rejected_with_a_reason() {
        let key = Keypair::from_seed([1; 32]);
        let phrase = key.mnemonic();
        let words: Vec<&str> = phrase.split(' ').collect();
        let short = words[..12].join(" ");
        let err = Keypair::from_mnemonic(&short).expect_err("12 words");
        assert!(err.to_string().contains("12 words given"), "{err}");
        let mut swapped = words.clone();
        swapped.swap(0, 1);
        if swapped != words {
            assert!(
                Keypair::from_mnemonic(&swapped.join(" ")).is_err(),
                "checksum must catch a swap"
            );
        }
        let mut typo = words.clone();
        typo[3] = "notaword";
        let err = Keypair::from_mnemonic(&typo.join(" ")).expect_err("typo");
        assert!(
            err.to_string().contains("word 4 is not"),
            "the fourth word, counted as people count: {err}"
        );
    }

    #[test]
    fn key_files_are_private_and_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/key.json");
        let key = Keypair::generate().expect("random");
        key.save(&path, false).expect("save");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Keypair::load(&path).expect("load").account(), key.account());
        let other = Keypair::generate().expect("random");
        assert!(matches!(other.save(&path, false), Err(KeyError::Exists(_))));
        assert_eq!(Keypair::load(&path).expect("load").account(), key.account());
        other.save(&path, true).expect("forced");
        assert_eq!(
            Keypair::load(&path).expect("load").account(),
            other.account()
        );
    }

    #[test]
    fn tampered_key_files_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.json");
        assert!(matches!(Keypair::load(&path), Err(KeyError::Missing(_))));
        fs::write(&path, "{not json").expect("write");
        assert!(matches!(
            Keypair::load(&path),
            Err(KeyError::Invalid { .. })
        ));
        let a = Keypair::from_seed([2; 32]);
        let b = Keypair::from_seed([3; 32]);
        let forged = format!(
            r#"{{"version":1,"account":"{}","secret_key":"{}"}}"#,
            a.account(),
            hex::encode(*b.secret_seed())
        );
        fs::write(&path, forged).expect("write");
        let err = Keypair::load(&path).expect_err("mismatch");
        assert!(err.to_string().contains("belongs to"), "{err}");
    }
}
