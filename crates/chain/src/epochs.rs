//! Epochs: which validators decide which blocks, read from the finalized ledger, and the
//! orchestrator that runs one simplex engine per epoch.
//!
//! # Rule
//!
//! Epoch `e` holds heights `e·len` to `(e+1)·len − 1` (`len` is the genesis parameter
//! `epoch_blocks`). The ledger installs a validator set voted in at the end of an epoch's last
//! block, so once that block is finalized and applied, every validator knows the next epoch's
//! set from its own state. Nothing else decides it: no message, no local configuration.
//!
//! # Engines
//!
//! The orchestrator runs the engine of the ledger's current epoch ([`peergrid_ledger::State::epoch`],
//! the epoch of the next block). When the ledger applies an epoch's last block, it stops that
//! epoch's engine and starts the next one's, rooted at that block (simplex's floor), with the
//! new set; marshal's wrapper re-proposes a boundary block rather than build past it, so no
//! engine ever finalizes a block of another epoch. Votes, certificates and resolver requests
//! carry their epoch as a subchannel, so engines of two epochs never read each other's
//! messages. A message of a later epoch than ours means peers have moved on: marshal is asked
//! to fetch our epoch's last block from that peer, and applying it moves us on too; if it is
//! the next epoch's, it is kept for that epoch's engine ([`crate::early`]), so votes cast by
//! validators that switched a little sooner still count. A
//! validator outside its epoch's set runs the engine as a verifier, never signing, and
//! follows by asking the set for each next finalized block; so does a member whose ledger
//! stood still for a while, since peers already in an epoch without it send it nothing.
//!
//! # Peers
//!
//! Each epoch's set is tracked in the p2p layer ([`PeerSets`]) as the primary peers, with the
//! members of the set before it that left as secondary peers, so that validators voted out
//! keep following until the next change. A validator never in any set (a node waiting to be voted in) is
//! admitted only once it is.
//!
//! # Restarts
//!
//! The epoch to start is derived from the ledger alone, which commits each block atomically:
//! a crash before the boundary block commits restarts the old epoch, which finalized it
//! already and re-delivers it through marshal; a crash after restarts the new one. Each
//! epoch's simplex journal has its own partition, so a restarted engine replays only its
//! own epoch's votes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use commonware_codec::DecodeExt;
use commonware_consensus::marshal;
use commonware_consensus::marshal::standard::{Inline, Standard};
use commonware_consensus::simplex::{
    self,
    config::{ForwardPolicy, SkipBudget, SkipPolicy},
    scheme::ed25519::Scheme,
};
use commonware_consensus::types::{Epoch, FixedEpocher, Height, ViewDelta};
use commonware_cryptography::certificate::{Provider, Scheme as _, Scoped};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digestible, Signer as _};
use commonware_macros::select;
use commonware_p2p::utils::mux::{Builder as _, Muxer};
use commonware_p2p::{Blocker, CheckedSender as _, Receiver, Recipients, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_utils::ordered::Set;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{NZDuration, NZUsize};
use rand_core::CryptoRng;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::block::Block;
use crate::early::{Early, Replay};
use crate::leader::WarmStartConfig;
use crate::shared::Shared;
use crate::timing::{NAMESPACE, Timing};

/// How many epochs' schemes a provider keeps built; older ones are rebuilt from the ledger.
const SCHEMES_CACHED_MAX: usize = 8;
/// How often a validator outside its epoch's set, or one whose ledger stands still, asks the
/// set for the next finalized block.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);
/// Longest a validator's first engine after a start waits for the rest of its set to be
/// connected; see [`Orchestrator::await_peers`].
pub const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// One validator of an epoch's set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its consensus key.
    pub key: PublicKey,
    /// Its address as voted (`ip:port`); `None` for the genesis set, whose addresses are in
    /// the genesis file.
    pub address: Option<String>,
}

/// Tells the p2p layer which peers an epoch needs.
pub trait PeerSets: Send + Sync + 'static {
    /// From `epoch` on, `primary` are the validators and `secondary` those of the set before
    /// that left it, who may still follow. Called with increasing epochs.
    fn track(&mut self, epoch: u64, primary: &[Member], secondary: &[Member]);
}

fn public_key(account: &peergrid_core::AccountId) -> Option<PublicKey> {
    PublicKey::decode(Bytes::copy_from_slice(account.as_bytes())).ok()
}

/// The members of `epoch`'s validator set, if the finalized ledger knows them yet.
pub fn members(shared: &Shared, epoch: u64) -> Option<Vec<Member>> {
    shared.with_state(|s| members_in(s, epoch)).flatten()
}

/// The members of `epoch`'s validator set in `state`, if it knows them.
pub fn members_in(state: &peergrid_ledger::State, epoch: u64) -> Option<Vec<Member>> {
    state.validator_set(epoch).map(|set| {
        set.members
            .iter()
            .filter_map(|m| {
                Some(Member {
                    key: public_key(&m.account)?,
                    address: m.address.clone(),
                })
            })
            .collect()
    })
}

/// The certificate schemes of every epoch, built from the validator sets in the finalized
/// ledger: marshal checks each finalization against its own epoch's set, and each epoch's
/// engine signs (or, outside the set, only verifies) with it.
#[derive(Clone)]
pub struct Schemes {
    shared: Arc<Shared>,
    signer: PrivateKey,
    built: Arc<Mutex<BTreeMap<u64, Arc<Scheme>>>>,
}

impl Schemes {
    /// Schemes of the sets in `shared`'s ledger, signing with `signer` where it is a member.
    pub fn new(shared: Arc<Shared>, signer: PrivateKey) -> Schemes {
        Schemes {
            shared,
            signer,
            built: Arc::default(),
        }
    }

    /// This validator's consensus key.
    pub fn me(&self) -> PublicKey {
        self.signer.public_key()
    }

    /// `epoch`'s scheme, and whether this validator signs in it; `None` until the ledger
    /// knows the epoch's set.
    pub fn get(&self, epoch: u64) -> Option<(Arc<Scheme>, bool)> {
        if let Some(s) = self.built.lock().ok()?.get(&epoch) {
            return Some((s.clone(), s.me().is_some()));
        }
        let keys = members(&self.shared, epoch)?.into_iter().map(|m| m.key);
        let participants = Set::from_iter_dedup(keys);
        let scheme = Scheme::signer(NAMESPACE, participants.clone(), self.signer.clone())
            .unwrap_or_else(|| Scheme::verifier(NAMESPACE, participants));
        let scheme = Arc::new(scheme);
        let mut built = self.built.lock().ok()?;
        built.insert(epoch, scheme.clone());
        while built.len() > SCHEMES_CACHED_MAX {
            built.pop_first();
        }
        let signs = scheme.me().is_some();
        Some((scheme, signs))
    }
}

impl Provider for Schemes {
    type Scope = Epoch;
    type Scheme = Scheme;

    // The ed25519 scheme verifies with the set alone, so a verifier is as complete a scheme
    // as a signer for marshal's purposes.
    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        self.get(epoch.get()).map(|(s, _)| Scoped::scheme(s))
    }
}

/// The marshal wrapper every epoch's engine proposes, verifies and reports through.
pub type Wrapper<E> = Inline<E, Scheme, App, Block, FixedEpocher>;

/// What the orchestrator needs besides its channels.
pub struct Orchestrator<B, T, E: Clock + Send + Sync + 'static> {
    /// The ledger the epochs are read from.
    pub shared: Arc<Shared>,
    /// Every epoch's scheme.
    pub schemes: Schemes,
    /// Marshal, for boundary blocks and fetch hints.
    pub marshal: marshal::core::Mailbox<Scheme, Standard<Block>>,
    /// The application wrapped for marshal.
    pub wrapper: Wrapper<E>,
    /// Blocks misbehaving peers.
    pub blocker: B,
    /// The p2p layer's peer sets.
    pub peer_sets: T,
    /// Epochs per block.
    pub epocher: FixedEpocher,
    /// Digest of the genesis block, epoch 0's floor.
    pub genesis: Digest,
    /// Prefix of the engines' journal partitions.
    pub partition: String,
    /// Shared page cache.
    pub page_cache: CacheRef,
    /// Consensus timing.
    pub timing: Timing,
}

/// An epoch's running engine; aborted when dropped.
struct Active {
    epoch: u64,
    signs: bool,
    members: Vec<PublicKey>,
    handle: Handle<()>,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl<B, T, E> Orchestrator<B, T, E>
where
    E: CryptoRng + Spawner + Metrics + Clock + Storage + Send + Sync + 'static,
    B: Blocker<PublicKey = PublicKey> + Clone + Sync,
    T: PeerSets,
{
    /// Run engines, one epoch after another, until the context stops.
    pub async fn run<S, R>(
        mut self,
        context: E,
        votes: (S, R),
        certificates: (S, R),
        resolver: (S, R),
    ) where
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let (mux, mut votes, mut votes_later) =
            Muxer::builder(context.child("votes_mux"), votes.0, votes.1)
                .with_backup()
                .build();
        mux.start();
        let (mux, mut certificates, mut certificates_later) = Muxer::builder(
            context.child("certificates_mux"),
            certificates.0,
            certificates.1,
        )
        .with_backup()
        .build();
        mux.start();
        let (mux, mut resolver) = Muxer::new(context.child("resolver_mux"), resolver.0, resolver.1);
        mux.start();
        let mut early_votes = Early::default();
        let mut early_certificates = Early::default();
        let mut finalized = self.shared.finalized.subscribe();
        let mut active: Option<Active> = None;
        let mut tracked: Option<u64> = None;
        // A deadline rather than a fresh sleep per turn, so steady traffic cannot starve it.
        let mut tick = context.current() + FOLLOW_INTERVAL;
        let mut last_height = None;
        let mut first_engine = true;
        loop {
            let Some(epoch) = self.shared.with_state(|s| s.epoch()) else {
                warn!("the ledger lock is poisoned; stopping consensus");
                return;
            };
            if active.as_ref().map(|a| a.epoch) != Some(epoch) {
                let signed = active.as_ref().map(|a| a.signs);
                // Stop the old engine before the new one registers its channels.
                active = None;
                if tracked.is_none_or(|t| t < epoch) {
                    self.track(epoch);
                    tracked = Some(epoch);
                }
                match self.floor(epoch).await {
                    Some(floor) => {
                        let Some((scheme, signs)) = self.schemes.get(epoch) else {
                            warn!(
                                epoch,
                                "no validator set for the ledger's own epoch; stopping consensus"
                            );
                            return;
                        };
                        let (Ok(mut v), Ok(c), Ok(r)) = (
                            votes.register(epoch).await,
                            certificates.register(epoch).await,
                            resolver.register(epoch).await,
                        ) else {
                            debug!(epoch, "consensus channels closed; stopping");
                            return;
                        };
                        let members: Vec<PublicKey> =
                            scheme.participants().iter().cloned().collect();
                        if first_engine && signs {
                            self.await_peers(&context, &mut v.0, &members).await;
                        }
                        first_engine = false;
                        let v = (v.0, early_votes.receiver(epoch, v.1));
                        let c = (c.0, early_certificates.receiver(epoch, c.1));
                        let r = (r.0, Replay::plain(r.1));
                        let handle =
                            self.start_engine(&context, epoch, (*scheme).clone(), floor, v, c, r);
                        info!(epoch, validators = members.len(), signs, "entered epoch");
                        // An operator must hear it when a vote moves this validator out of
                        // the set (or into it): the process keeps running either way.
                        match (signed, signs) {
                            (Some(true), false) => warn!(
                                epoch,
                                "this validator is not in epoch {epoch}'s set: it follows the \
                                 chain and no longer votes"
                            ),
                            (Some(false), true) => warn!(
                                epoch,
                                "this validator is in epoch {epoch}'s set: it votes from now on"
                            ),
                            _ => {}
                        }
                        // The engine two epochs back has long stopped; its journal is never
                        // read again, since restarts resume from the ledger's epoch.
                        if let Some(old) = epoch.checked_sub(2) {
                            let _ = context
                                .remove(&format!("{}-consensus-{old}", self.partition), None)
                                .await;
                        }
                        active = Some(Active {
                            epoch,
                            signs,
                            members,
                            handle,
                        });
                    }
                    None => warn!(
                        epoch,
                        "the block that ends the previous epoch is not in the archive yet"
                    ),
                }
            }
            let follow = active
                .as_ref()
                .filter(|a| !a.signs)
                .map(|a| a.members.clone());
            select! {
                update = finalized.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = update {
                        return;
                    }
                    // Ask for the next block as soon as one applies, not at the next tick.
                    if let Some(members) = follow {
                        self.follow(members);
                    }
                },
                later = votes_later.recv() => match later {
                    Some((theirs, message)) => {
                        self.later(epoch, theirs, message.0.clone());
                        early_votes.keep(epoch, theirs, message);
                    }
                    None => return,
                },
                later = certificates_later.recv() => match later {
                    Some((theirs, message)) => {
                        self.later(epoch, theirs, message.0.clone());
                        early_certificates.keep(epoch, theirs, message);
                    }
                    None => return,
                },
                _ = context.sleep_until(tick) => {
                    tick = context.current() + FOLLOW_INTERVAL;
                    let height = self.shared.with_state(|s| s.height());
                    // A member whose ledger stands still may have missed the boundary: peers
                    // already in an epoch without it send it nothing that would tell it.
                    let stalled = height == last_height;
                    last_height = height;
                    let members = follow.or_else(|| {
                        stalled.then(|| active.as_ref().map(|a| a.members.clone())).flatten()
                    });
                    if let Some(members) = members {
                        self.follow(members);
                    }
                },
            }
        }
    }

    /// Tell the p2p layer about `epoch`'s validators.
    fn track(&mut self, epoch: u64) {
        let Some(primary) = members(&self.shared, epoch) else {
            return;
        };
        // The set before the one in force, not merely the previous epoch's: a validator
        // voted out stays admitted as a follower until the next change, however many
        // epochs that takes.
        let first = self
            .shared
            .with_state(|s| s.validator_set(epoch).map(|v| v.epoch))
            .flatten()
            .unwrap_or(epoch);
        let secondary: Vec<Member> = first
            .checked_sub(1)
            .and_then(|e| members(&self.shared, e))
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !primary.iter().any(|p| p.key == m.key))
            .collect();
        self.peer_sets.track(epoch, &primary, &secondary);
    }

    /// The block `epoch`'s engine builds on: genesis, or the previous epoch's last block.
    async fn floor(&self, epoch: u64) -> Option<Digest> {
        use commonware_consensus::types::Epocher as _;
        let Some(previous) = epoch.checked_sub(1) else {
            return Some(self.genesis);
        };
        let height = self.epocher.last(Epoch::new(previous))?;
        self.marshal.get_block(height).await.map(|b| b.digest())
    }

    /// A peer sent a vote or certificate of epoch `theirs`: if it is ahead of ours, fetch the
    /// block that ends ours from it, which moves us on once applied.
    fn later(&self, ours: u64, theirs: u64, from: PublicKey) {
        use commonware_consensus::types::Epocher as _;
        if theirs <= ours {
            return;
        }
        if let Some(height) = self.epocher.last(Epoch::new(ours)) {
            debug!(ours, theirs, %from, "a peer is in a later epoch; fetching our epoch's end");
            self.marshal.hint_finalized(height, NonEmptyVec::new(from));
        }
    }

    /// Wait until every other member of the set is connected, or [`CONNECT_WAIT`] passed.
    ///
    /// At a cold start every validator starts its engine at once, and the first leader's
    /// proposal went to peers not connected yet: view 1 timed out (1 s) on every devnet
    /// start, and the nullify votes that followed often split view 2 for another 2 s. A
    /// restart among running validators connects in milliseconds; with a member down,
    /// the wait ends at the deadline and consensus goes on without it. Messages that
    /// arrive meanwhile queue in the channels registered for this epoch.
    async fn await_peers<S>(&self, context: &E, sender: &mut S, members: &[PublicKey])
    where
        S: Sender<PublicKey = PublicKey>,
    {
        let me = self.schemes.me();
        let others = members.iter().filter(|m| **m != me).count();
        let deadline = context.current() + CONNECT_WAIT;
        loop {
            // The network's connected peers, as the sender would address them; nothing
            // is sent.
            let connected = sender.check(Recipients::All).map_or(0, |c| {
                c.recipients()
                    .iter()
                    .filter(|p| **p != me && members.contains(p))
                    .count()
            });
            if connected >= others {
                debug!(connected, "the validator set is connected");
                return;
            }
            if context.current() >= deadline {
                info!(
                    connected,
                    others, "starting consensus before every validator is connected"
                );
                return;
            }
            context.sleep(Duration::from_millis(20)).await;
        }
    }

    /// Outside the set, nothing pushes finalizations to us: ask the set for the next block.
    fn follow(&self, members: Vec<PublicKey>) {
        let Some(next) = self.shared.with_state(|s| s.height() + 1) else {
            return;
        };
        let me = self.schemes.me();
        let others: Vec<PublicKey> = members.into_iter().filter(|m| *m != me).collect();
        if let Ok(targets) = NonEmptyVec::try_from(others) {
            self.marshal.hint_finalized(Height::new(next), targets);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_engine<S, R>(
        &self,
        context: &E,
        epoch: u64,
        scheme: Scheme,
        floor: Digest,
        votes: (S, R),
        certificates: (S, R),
        resolver: (S, R),
    ) -> Handle<()>
    where
        S: Sender<PublicKey = PublicKey>,
        R: Receiver<PublicKey = PublicKey>,
    {
        let t = self.timing;
        let engine = simplex::Engine::new(
            context.child("simplex").with_attribute("epoch", epoch),
            simplex::config::Config {
                scheme,
                elector: WarmStartConfig,
                blocker: self.blocker.clone(),
                automaton: self.wrapper.clone(),
                relay: self.wrapper.clone(),
                reporter: self.wrapper.clone(),
                strategy: Sequential,
                partition: format!("{}-consensus-{epoch}", self.partition),
                mailbox_size: NZUsize!(1024),
                epoch: Epoch::new(epoch),
                floor: simplex::config::Floor::Genesis(floor),
                replay_buffer: NZUsize!(1 << 20),
                write_buffer: NZUsize!(1 << 20),
                page_cache: self.page_cache.clone(),
                leader_timeout: t.leader_timeout,
                certification_timeout: t.certification_timeout,
                timeout_retry: t.timeout_retry,
                view_retention: ViewDelta::new(256),
                skip: SkipPolicy::Enabled {
                    timeout: t.skip_timeout,
                    budget: SkipBudget::Participants,
                },
                fetch_timeout: NZDuration!(Duration::from_secs(1)),
                fetch_retry_delay: Duration::from_millis(100),
                forward: ForwardPolicy::Disabled,
                track_historical_votes: false,
            },
        );
        engine.start(votes, certificates, resolver)
    }
}
