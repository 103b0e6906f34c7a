//! State certificates: after applying a block, each validator of the block's epoch signs its
//! state root (see [`peergrid_types::certificate`]) and sends the signature to every peer;
//! a validator keeps the certificate once a quorum signed the root it computed itself.
//!
//! Certificates of the last [`CERTIFICATES_KEPT`] heights stay in memory; each epoch's last
//! block's, the handoff a light client follows from one set to the next, is kept on disk
//! with the receipts. A validator that was away when an epoch ended (restarted, or joined
//! later) asks its peers for that one, and keeps an answer only if a quorum of the epoch
//! signed the state it applied itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use commonware_cryptography::Signer as _;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_macros::select;
use commonware_p2p::{Receiver, Recipients, Sender};
use peergrid_core::tx::Signature;
use peergrid_core::{AccountId, Hash};
use peergrid_types::certificate::{
    NAMESPACE, StateCertificate, Statement, StatementSignature, quorum, set_digest,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::shared::{FinalizedBlock, Shared};

/// State certificates kept in memory: those of the most recent heights.
pub const CERTIFICATES_KEPT: usize = 4096;
/// How far from this validator's height a peer's vote may be: enough for a peer a few
/// hundred blocks ahead or behind, and a bound on what peers can make us hold.
const VOTE_WINDOW: u64 = 256;
/// A vote on the wire: height (u64 BE) ‖ block ‖ root ‖ next set ‖ signature.
const VOTE_BYTES: usize = 8 + 32 + 32 + 32 + 64;
/// A request for an epoch's last certificate on the wire: its height (u64 BE).
const WANT_BYTES: usize = 8;
/// Largest certificate answer accepted: every member's signature, with room to spare.
const CERTIFICATE_BYTES_MAX: usize = 64 << 10;
/// Blocks after an epoch's last one by which its certificate should have formed here; a
/// validator that was away then (restarted, joined later) asks its peers for it.
const HANDOFF_GRACE: u64 = 8;
/// Most epochs' last certificates asked for at once after a catch-up.
const HANDOFFS_ASKED_MAX: u64 = 64;

/// The certificates this validator assembled, and a signal when one forms.
pub struct Certificates {
    recent: Mutex<BTreeMap<u64, StateCertificate>>,
    formed: watch::Sender<u64>,
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates {
            recent: Mutex::default(),
            formed: watch::Sender::new(0),
        }
    }
}

impl Certificates {
    /// The certificate of `height`, if it formed here lately.
    pub fn recent(&self, height: u64) -> Option<StateCertificate> {
        self.recent.lock().ok()?.get(&height).cloned()
    }

    /// Woken with the height of each certificate that forms.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.formed.subscribe()
    }

    pub(crate) fn keep(&self, certificate: StateCertificate) {
        let height = certificate.height;
        if let Ok(mut recent) = self.recent.lock() {
            recent.insert(height, certificate);
            while recent.len() > CERTIFICATES_KEPT {
                recent.pop_first();
            }
        }
        self.formed.send_replace(height);
    }
}

/// One peer's signature over its statement of a height.
#[derive(Clone, Copy)]
struct Vote {
    block: Hash,
    root: Hash,
    next_set: Hash,
    signature: Signature,
    /// Checked already against the statement it claims.
    checked: bool,
}

fn encode(height: u64, vote: &Vote) -> Bytes {
    let mut out = Vec::with_capacity(VOTE_BYTES);
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&vote.block.0);
    out.extend_from_slice(&vote.root.0);
    out.extend_from_slice(&vote.next_set.0);
    out.extend_from_slice(&vote.signature.0);
    Bytes::from(out)
}

fn decode(bytes: &[u8]) -> Option<(u64, Vote)> {
    if bytes.len() != VOTE_BYTES {
        return None;
    }
    let height = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let block = Hash(bytes[8..40].try_into().ok()?);
    let root = Hash(bytes[40..72].try_into().ok()?);
    let next_set = Hash(bytes[72..104].try_into().ok()?);
    let signature = Signature(bytes[104..].try_into().ok()?);
    Some((
        height,
        Vote {
            block,
            root,
            next_set,
            signature,
            checked: false,
        },
    ))
}

fn account(key: &PublicKey) -> AccountId {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.as_ref());
    AccountId(bytes)
}

/// What this validator itself holds true of a height it applied.
#[derive(Clone)]
struct Own {
    epoch: u64,
    members: Vec<AccountId>,
    block: Hash,
    root: Hash,
    next_set: Hash,
}

/// The certifier: signs each applied block's root, gathers peers' votes, forms certificates.
struct Certifier {
    shared: Arc<Shared>,
    signer: PrivateKey,
    me: AccountId,
    chain: Hash,
    /// Votes for heights not certified yet, by height and signer.
    votes: BTreeMap<u64, HashMap<AccountId, Vote>>,
    /// Heights whose disagreeing votes were already reported.
    reported: BTreeMap<u64, ()>,
    /// Our own view of the heights applied lately, so a vote costs no store read.
    owns: BTreeMap<u64, Own>,
    /// Epochs' last heights whose certificate we asked our peers for.
    asked: BTreeMap<u64, ()>,
    /// The latest epoch's last height already looked at by [`Certifier::missing_handoffs`].
    handoff_checked: u64,
}

/// Run the certifier of `shared`'s validator, signing with `signer`, on `channel`.
pub async fn run<S, R>(shared: Arc<Shared>, signer: PrivateKey, channel: (S, R))
where
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    let (mut sender, mut receiver) = channel;
    let mut applied = shared.finalized.subscribe();
    let me = account(&signer.public_key());
    let chain = shared.genesis.hash();
    let mut certifier = Certifier {
        shared,
        signer,
        me,
        chain,
        votes: BTreeMap::new(),
        reported: BTreeMap::new(),
        owns: BTreeMap::new(),
        asked: BTreeMap::new(),
        handoff_checked: 0,
    };
    loop {
        select! {
            block = applied.recv() => match block {
                Ok(block) => {
                    let own = certifier.own_of(&block);
                    if let Some(vote) = own.and_then(|own| certifier.applied(block.height, own)) {
                        sender.send(Recipients::All, encode(block.height, &vote), false);
                    }
                    for want in certifier.missing_handoffs(block.height) {
                        sender.send(Recipients::All, Bytes::copy_from_slice(&want.to_be_bytes()), false);
                    }
                }
                // Too far behind to sign every block (a catch-up applies thousands a
                // second): sign where we are, and the epoch boundaries skipped, which light
                // clients need to follow the sets.
                Err(RecvError::Lagged(_)) => {
                    for height in certifier.catch_up() {
                        let own = certifier.shared.receipts.block(height).and_then(|b| certifier.own_of(&b));
                        if let Some(vote) = own.and_then(|own| certifier.applied(height, own)) {
                            sender.send(Recipients::All, encode(height, &vote), false);
                        }
                    }
                    // The epochs crossed meanwhile: their handoffs formed without us.
                    let height = certifier.height();
                    for want in certifier.missing_handoffs(height) {
                        sender.send(Recipients::All, Bytes::copy_from_slice(&want.to_be_bytes()), false);
                    }
                }
                Err(RecvError::Closed) => return,
            },
            message = receiver.recv() => match message {
                Ok((peer, bytes)) => {
                    let bytes = bytes.as_ref();
                    if bytes.len() == WANT_BYTES {
                        let height = u64::from_be_bytes(bytes.try_into().unwrap_or([0xff; 8]));
                        if let Some(answer) = certifier.answer(height) {
                            sender.send(Recipients::One(peer), answer, false);
                        }
                    } else if bytes.len() == VOTE_BYTES {
                        certifier.received(&peer, bytes);
                    } else {
                        certifier.answered(&peer, bytes);
                    }
                }
                Err(_) => return,
            },
        }
    }
}

impl Certifier {
    fn height(&self) -> u64 {
        self.shared.with_state(|s| s.height()).unwrap_or(0)
    }

    /// The heights worth signing after missing some: every epoch's last block since the
    /// newest certificate kept, and the current height.
    fn catch_up(&self) -> Vec<u64> {
        let height = self.height();
        let len = self.shared.genesis.params.epoch_blocks.max(1);
        let from = self
            .shared
            .certificates
            .recent
            .lock()
            .ok()
            .and_then(|r| r.last_key_value().map(|(h, _)| *h))
            .unwrap_or(0)
            .max(height.saturating_sub(VOTE_WINDOW));
        let mut heights: Vec<u64> = (from / len..=height / len)
            .filter_map(|e| ((e + 1) * len).checked_sub(1))
            .filter(|h| *h > from && *h < height)
            .collect();
        heights.push(height);
        heights
    }

    /// Our own view of `height`: kept since we applied it, or read back.
    fn own(&self, height: u64) -> Option<Own> {
        if let Some(own) = self.owns.get(&height) {
            return Some(own.clone());
        }
        self.own_of(&self.shared.receipts.block(height)?)
    }

    /// Our own view of an applied block: its digest, root, epoch, set, and the next block's set.
    fn own_of(&self, applied: &FinalizedBlock) -> Option<Own> {
        let height = applied.height;
        let root = applied.root;
        let mut block = Hash::ZERO;
        hex::decode_to_slice(&applied.digest, &mut block.0).ok()?;
        self.shared.with_state(|s| {
            let epoch = s.epoch_of(height);
            let members: Vec<AccountId> = s
                .validator_set(epoch)?
                .members
                .iter()
                .map(|m| m.account)
                .collect();
            let next = s.validator_set(s.epoch_of(height + 1))?;
            let next_set = set_digest(next.members.iter().map(|m| &m.account));
            Some(Own {
                epoch,
                members,
                block,
                root,
                next_set,
            })
        })?
    }

    /// Sign `height` if we are in its epoch's set, count our vote, and return it to send.
    fn applied(&mut self, height: u64, own: Own) -> Option<Vote> {
        let floor = height.saturating_sub(VOTE_WINDOW);
        self.votes = self.votes.split_off(&floor);
        self.reported = self.reported.split_off(&floor);
        self.owns = self.owns.split_off(&floor);
        self.owns.insert(height, own.clone());
        let vote = if own.members.contains(&self.me) {
            let statement = Statement {
                chain: self.chain,
                height,
                block: own.block,
                root: own.root,
                next_set: own.next_set,
            };
            let signature = self.signer.sign(NAMESPACE, &statement.message());
            let mut bytes = [0u8; 64];
            bytes.copy_from_slice(signature.as_ref());
            let vote = Vote {
                block: own.block,
                root: own.root,
                next_set: own.next_set,
                signature: Signature(bytes),
                checked: true,
            };
            self.votes.entry(height).or_default().insert(self.me, vote);
            Some(vote)
        } else {
            None
        };
        self.try_certify(height, &own);
        vote
    }

    /// The last heights of the epochs that ended [`HANDOFF_GRACE`] blocks or more before
    /// `height` whose certificate did not form here, each the first time it is looked at:
    /// every one since the last looked at (a catch-up crosses many), the newest
    /// [`HANDOFFS_ASKED_MAX`] at most.
    fn missing_handoffs(&mut self, height: u64) -> Vec<u64> {
        let len = self.shared.genesis.params.epoch_blocks.max(1);
        let Some(ended) = height.checked_sub(HANDOFF_GRACE) else {
            return Vec::new();
        };
        // Epochs 0..epochs ended by then; the last one's end is the newest to look at.
        let epochs = (ended + 1) / len;
        let Some(latest) = (epochs * len).checked_sub(1) else {
            return Vec::new();
        };
        // Each epoch's end is looked at once, not at every block (a store read once it
        // left the recent certificates).
        if latest <= self.handoff_checked {
            return Vec::new();
        }
        let first =
            ((self.handoff_checked + 1) / len).max(epochs.saturating_sub(HANDOFFS_ASKED_MAX));
        self.handoff_checked = latest;
        let wanted: Vec<u64> = (first..epochs)
            .map(|e| (e + 1) * len - 1)
            .filter(|last| self.shared.certificate(*last).is_none())
            .collect();
        for last in &wanted {
            self.asked.insert(*last, ());
        }
        while self.asked.len() > 64 {
            self.asked.pop_first();
        }
        if !wanted.is_empty() {
            debug!(
                heights = ?wanted,
                "asking the peers for epochs' last state certificates"
            );
        }
        wanted
    }

    /// Our certificate of an epoch's last `height`, encoded, for a peer that asks.
    fn answer(&self, height: u64) -> Option<Bytes> {
        let len = self.shared.genesis.params.epoch_blocks.max(1);
        if !(height + 1).is_multiple_of(len) {
            return None;
        }
        let certificate = self.shared.certificate(height)?;
        let mut out = Vec::new();
        ciborium::into_writer(&certificate, &mut out).ok()?;
        Some(Bytes::from(out))
    }

    /// A peer's answer: kept if it is a quorum's certificate of the state we applied.
    fn answered(&mut self, peer: &PublicKey, bytes: &[u8]) {
        if bytes.len() > CERTIFICATE_BYTES_MAX {
            return;
        }
        let Ok(certificate) = ciborium::from_reader::<StateCertificate, _>(bytes) else {
            debug!(%peer, len = bytes.len(), "malformed state certificate");
            return;
        };
        let height = certificate.height;
        if !self.asked.contains_key(&height) || self.shared.certificate(height).is_some() {
            return;
        }
        let Some(own) = self.own(height) else {
            return;
        };
        if (
            certificate.epoch,
            certificate.block,
            certificate.root,
            certificate.next_set,
        ) != (own.epoch, own.block, own.root, own.next_set)
        {
            warn!(%peer, height, "a peer's state certificate is not of the state we applied");
            return;
        }
        if let Err(e) = certificate.verify(self.chain, &own.members) {
            warn!(%peer, height, error = %e, "a peer's state certificate does not check");
            return;
        }
        if let Err(e) = self.shared.receipts.record_certificate(&certificate) {
            warn!(height, error = %e, "cannot store the epoch's last state certificate");
        }
        debug!(height, "epoch's last state certificate received");
        self.shared.certificates.keep(certificate);
    }

    /// A peer's vote: kept if its height is near ours, counted once we applied that height.
    fn received(&mut self, peer: &PublicKey, bytes: &[u8]) {
        let Some((height, vote)) = decode(bytes) else {
            debug!(%peer, len = bytes.len(), "malformed state vote");
            return;
        };
        let ours = self.height();
        if height + VOTE_WINDOW < ours || height > ours + VOTE_WINDOW {
            return;
        }
        if self.shared.certificates.recent(height).is_some() {
            return;
        }
        let signer = account(peer);
        self.votes.entry(height).or_default().insert(signer, vote);
        if height <= ours
            && let Some(own) = self.own(height)
        {
            self.try_certify(height, &own);
        }
    }

    /// Form `height`'s certificate if a quorum of its epoch's set signed what we hold.
    fn try_certify(&mut self, height: u64, own: &Own) {
        if self.shared.certificates.recent(height).is_some() {
            self.votes.remove(&height);
            return;
        }
        let Some(votes) = self.votes.get_mut(&height) else {
            return;
        };
        let chain = self.chain;
        let mut agreeing = Vec::new();
        let mut disagreeing = Vec::new();
        votes.retain(|signer, vote| {
            if !own.members.contains(signer) {
                return false;
            }
            if !vote.checked {
                let claimed = Statement {
                    chain,
                    height,
                    block: vote.block,
                    root: vote.root,
                    next_set: vote.next_set,
                };
                if !vote.signature.verify(signer, NAMESPACE, &claimed.message()) {
                    warn!(%signer, height, "a validator sent a state vote whose signature does not check");
                    return false;
                }
                vote.checked = true;
            }
            if vote.block == own.block && vote.root == own.root && vote.next_set == own.next_set {
                agreeing.push(StatementSignature {
                    signer: *signer,
                    signature: vote.signature,
                });
            } else {
                disagreeing.push((*signer, vote.root));
            }
            true
        });
        if !disagreeing.is_empty() && self.reported.insert(height, ()).is_none() {
            for (signer, root) in &disagreeing {
                warn!(%signer, height, theirs = %root, ours = %own.root,
                    "a validator signed another state root than ours: one of us applied the block differently");
            }
        }
        if agreeing.len() < quorum(own.members.len()) {
            return;
        }
        agreeing.sort_by_key(|s| *s.signer.as_bytes());
        let certificate = StateCertificate {
            height,
            epoch: own.epoch,
            block: own.block,
            root: own.root,
            next_set: own.next_set,
            signatures: agreeing,
        };
        self.votes.remove(&height);
        let len = self.shared.genesis.params.epoch_blocks.max(1);
        if (height + 1).is_multiple_of(len)
            && let Err(e) = self.shared.receipts.record_certificate(&certificate)
        {
            warn!(height, error = %e, "cannot store the epoch's last state certificate");
        }
        debug!(height, "state certified");
        self.shared.certificates.keep(certificate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_cryptography::Signer;
    use peergrid_core::Keypair;

    #[test]
    fn a_consensus_key_signature_checks_as_the_account_s() {
        let key = Keypair::from_seed([9; 32]);
        let signer = <PrivateKey as commonware_codec::DecodeExt<()>>::decode(
            Bytes::copy_from_slice(key.secret_seed().as_slice()),
        )
        .expect("a seed is a key");
        assert_eq!(account(&signer.public_key()), key.account());
        let message = b"statement";
        let signature = signer.sign(NAMESPACE, message);
        let signature = Signature(signature.as_ref().try_into().expect("64 bytes"));
        assert!(signature.verify(&key.account(), NAMESPACE, message));
        assert!(!signature.verify(&key.account(), b"other", message));
    }

    #[test]
    fn votes_round_trip_and_other_lengths_are_refused() {
        let vote = Vote {
            block: Hash::of(b"b"),
            root: Hash::of(b"r"),
            next_set: Hash::of(b"n"),
            signature: Signature([7; 64]),
            checked: true,
        };
        let bytes = encode(42, &vote);
        let (height, back) = decode(&bytes).expect("decodes");
        assert_eq!(height, 42);
        assert_eq!(
            (back.block, back.root, back.next_set, back.signature),
            (vote.block, vote.root, vote.next_set, vote.signature)
        );
        assert!(!back.checked, "a received vote is checked before it counts");
        assert!(decode(&bytes[..VOTE_BYTES - 1]).is_none());
        assert!(decode(&[bytes.as_ref(), &[0]].concat()).is_none());
    }
}
