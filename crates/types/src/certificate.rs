//! State certificates: a quorum of an epoch's validators signing the state root a block left.
//!
//! Blocks carry no state root (the ledger applies a block only once it is finalized), so a
//! block's finalization certificate says which transactions are final, not what state they
//! made. After applying a block, each validator of the block's epoch signs a [`Statement`]:
//! the chain, the height, the state root, and the digest of the set that decides the next
//! block. Once a quorum of the epoch's set (the same `n − ⌊(n−1)/3⌋` that finalizes blocks)
//! signed the same statement, any honest validator's state is that root, and a client that
//! knows the set accepts one validator's proven answer against it.
//!
//! The `next_set` of an epoch's last block is the handoff: it names the set of the epoch
//! after, so a client that trusts the genesis set follows every change from certificates
//! alone.

use std::collections::BTreeSet;

use peergrid_core::tx::Signature;
use peergrid_core::{AccountId, Hash};
use serde::{Deserialize, Serialize};

/// The namespace state statements are signed in; nothing else is signed in it.
pub const NAMESPACE: &[u8] = b"peergrid-state-root";

/// What a validator signs after applying a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The chain: its genesis hash.
    pub chain: Hash,
    /// The block's height.
    pub height: u64,
    /// The block's digest, as its finalization certificate names it.
    pub block: Hash,
    /// The state root after the block.
    pub root: Hash,
    /// [`set_digest`] of the validator set deciding block `height + 1`.
    pub next_set: Hash,
}

impl Statement {
    /// The signed bytes: chain ‖ height (u64 BE) ‖ block ‖ root ‖ next set.
    pub fn message(&self) -> [u8; 136] {
        let mut out = [0u8; 136];
        out[..32].copy_from_slice(&self.chain.0);
        out[32..40].copy_from_slice(&self.height.to_be_bytes());
        out[40..72].copy_from_slice(&self.block.0);
        out[72..104].copy_from_slice(&self.root.0);
        out[104..].copy_from_slice(&self.next_set.0);
        out
    }
}

/// The digest of a validator set: its distinct members in byte order, so the order they
/// were voted in does not matter.
pub fn set_digest<'a>(members: impl IntoIterator<Item = &'a AccountId>) -> Hash {
    let sorted: BTreeSet<&[u8; 32]> = members.into_iter().map(AccountId::as_bytes).collect();
    let mut bytes = Vec::with_capacity(24 + 32 * sorted.len());
    bytes.extend_from_slice(b"peergrid-validator-set/1");
    for m in sorted {
        bytes.extend_from_slice(m);
    }
    Hash::of(&bytes)
}

/// Signatures needed out of `n` validators: all but the `⌊(n−1)/3⌋` that may be faulty.
pub fn quorum(n: usize) -> usize {
    n - n.saturating_sub(1) / 3
}

/// One validator's signature over a [`Statement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatementSignature {
    /// The validator (its account is its consensus key).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub signer: AccountId,
    /// Its ed25519 signature over the statement, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub signature: Signature,
}

/// A quorum of the epoch's validators vouching for the state root after a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateCertificate {
    /// The block's height.
    pub height: u64,
    /// The epoch of that block, whose set signs.
    pub epoch: u64,
    /// The block's digest.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block: Hash,
    /// The state root after the block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub root: Hash,
    /// [`set_digest`] of the set deciding the next block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub next_set: Hash,
    /// The signatures, one per validator.
    pub signatures: Vec<StatementSignature>,
}

/// Why a certificate proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Fewer valid signatures than a quorum.
    #[error(
        "the certificate of height {height} has {valid} valid signatures of the epoch's {members} validators; {needed} are needed"
    )]
    TooFew {
        /// The certified height.
        height: u64,
        /// Valid signatures by distinct members.
        valid: usize,
        /// Needed.
        needed: usize,
        /// The epoch's set size.
        members: usize,
    },
    /// A signature by someone outside the epoch's set.
    #[error(
        "the certificate of height {height} is signed by {signer}, who is not a validator of epoch {epoch}"
    )]
    NotAMember {
        /// The certified height.
        height: u64,
        /// The epoch.
        epoch: u64,
        /// The stranger.
        signer: AccountId,
    },
    /// A signature that does not check.
    #[error(
        "the certificate of height {height} carries a signature by {signer} that does not check"
    )]
    BadSignature {
        /// The certified height.
        height: u64,
        /// Whose it claims to be.
        signer: AccountId,
    },
    /// The certificate is for another height, root or epoch than asked.
    #[error("the certificate does not match: {0}")]
    Mismatch(String),
}

impl StateCertificate {
    /// The statement the signatures are over, on chain `chain`.
    pub fn statement(&self, chain: Hash) -> Statement {
        Statement {
            chain,
            height: self.height,
            block: self.block,
            root: self.root,
            next_set: self.next_set,
        }
    }

    /// Check that a quorum of `members` (the set of the certificate's epoch) signed this
    /// certificate's statement on `chain`. Every signature must be a member's and check:
    /// a certificate carrying a bad one is refused whole, since honest validators never
    /// send one.
    pub fn verify(&self, chain: Hash, members: &[AccountId]) -> Result<(), CertificateError> {
        let set: BTreeSet<&AccountId> = members.iter().collect();
        let needed = quorum(set.len());
        let message = self.statement(chain).message();
        let mut signed = BTreeSet::new();
        for s in &self.signatures {
            if !set.contains(&s.signer) {
                return Err(CertificateError::NotAMember {
                    height: self.height,
                    epoch: self.epoch,
                    signer: s.signer,
                });
            }
            // A repeated signer counts once; checking it again proves nothing new.
            if signed.contains(&s.signer) {
                continue;
            }
            if !s.signature.verify(&s.signer, NAMESPACE, &message) {
                return Err(CertificateError::BadSignature {
                    height: self.height,
                    signer: s.signer,
                });
            }
            signed.insert(s.signer);
        }
        if set.is_empty() || signed.len() < needed {
            return Err(CertificateError::TooFew {
                height: self.height,
                valid: signed.len(),
                needed,
                members: set.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::Keypair;

    fn keys(n: u8) -> Vec<Keypair> {
        (1..=n).map(|i| Keypair::from_seed([i; 32])).collect()
    }

    fn certificate(signers: &[&Keypair], chain: Hash, root: Hash) -> StateCertificate {
        let mut c = StateCertificate {
            height: 7,
            epoch: 0,
            block: Hash::of(b"block"),
            root,
            next_set: Hash::of(b"next"),
            signatures: Vec::new(),
        };
        let message = c.statement(chain).message();
        c.signatures = signers
            .iter()
            .map(|k| StatementSignature {
                signer: k.account(),
                signature: Signature(k.sign(NAMESPACE, &message)),
            })
            .collect();
        c
    }

    #[test]
    fn quorum_is_what_finalizes_blocks() {
        let cases = [
            (1, 1),
            (2, 2),
            (3, 3),
            (4, 3),
            (5, 4),
            (6, 5),
            (7, 5),
            (10, 7),
        ];
        for (n, q) in cases {
            assert_eq!(quorum(n), q, "quorum of {n}");
        }
    }

    #[test]
    fn a_quorum_of_members_verifies_and_fewer_or_strangers_do_not() {
        let k = keys(5);
        let members: Vec<AccountId> = k[..4].iter().map(Keypair::account).collect();
        let chain = Hash::of(b"chain");
        let root = Hash::of(b"root");

        let three = certificate(&[&k[0], &k[1], &k[2]], chain, root);
        assert_eq!(three.verify(chain, &members), Ok(()));

        let two = certificate(&[&k[0], &k[1]], chain, root);
        assert!(matches!(
            two.verify(chain, &members),
            Err(CertificateError::TooFew {
                valid: 2,
                needed: 3,
                ..
            })
        ));

        // The same signer three times is one signature.
        let repeated = certificate(&[&k[0], &k[0], &k[0]], chain, root);
        assert!(matches!(
            repeated.verify(chain, &members),
            Err(CertificateError::TooFew { valid: 1, .. })
        ));

        let stranger = certificate(&[&k[0], &k[1], &k[4]], chain, root);
        assert!(matches!(
            stranger.verify(chain, &members),
            Err(CertificateError::NotAMember { .. })
        ));

        // Signed on another chain, or over another root: the signatures do not check.
        assert!(matches!(
            three.verify(Hash::of(b"other chain"), &members),
            Err(CertificateError::BadSignature { .. })
        ));
        let mut forged = three.clone();
        forged.root = Hash::of(b"a root nobody signed");
        assert!(matches!(
            forged.verify(chain, &members),
            Err(CertificateError::BadSignature { .. })
        ));
        assert!(matches!(
            three.verify(chain, &[]),
            Err(CertificateError::NotAMember { .. })
        ));
    }

    #[test]
    fn a_set_digest_ignores_order_and_repeats_but_not_members() {
        let k = keys(3);
        let a: Vec<AccountId> = k.iter().map(Keypair::account).collect();
        let mut b = a.clone();
        b.reverse();
        b.push(a[0]);
        assert_eq!(set_digest(&a), set_digest(&b));
        assert_ne!(set_digest(&a), set_digest(&a[..2]));
    }
}
