//! Wiring one validator: simplex consensus, marshal (block dissemination, backfill, the
//! finalized archive), the application and the finalizer, over any runtime and network.
//!
//! The same function runs a validator on the tokio runtime with authenticated TCP
//! networking and on the deterministic runtime with a simulated network, so the
//! fault simulations exercise exactly the code that production runs.

use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::{self, resolver::p2p as marshal_resolver, standard::Inline};
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Finalization;
use commonware_consensus::types::{FixedEpocher, Height, ViewDelta};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{Digested, Digestible, Signer};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::{immutable, prunable};
use commonware_storage::translator::TwoCap;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use peergrid_core::tx::VALIDATORS_MAX;
use rand_core::CryptoRng;
use tracing::info;

use crate::app::{App, Tamper};
use crate::block::Block;
use crate::certify;
use crate::epochs::{Orchestrator, PeerSets, Schemes};
use crate::finalizer::{self, Finalizer};
use crate::prune;
use crate::shared::Shared;
use crate::snapshot;

pub use crate::timing::{NAMESPACE, Timing};

/// Network channels: three for simplex (each carrying the epoch as a subchannel), one for
/// marshal's backfill, one for block broadcast.
pub const CHANNEL_VOTES: u64 = 0;
/// Simplex certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// Simplex resolver.
pub const CHANNEL_RESOLVER: u64 = 2;
/// Marshal backfill.
pub const CHANNEL_BACKFILL: u64 = 3;
/// Block broadcast.
pub const CHANNEL_BROADCAST: u64 = 4;

/// Largest message on any channel: a full block plus framing.
pub const MESSAGE_BYTES_MAX: u32 = (crate::block::BLOCK_TX_BYTES_MAX + (1 << 20)) as u32;

const PAGE_SIZE: NonZeroU16 = NZU16!(4096);
const PAGE_CACHE_SIZE: NonZeroUsize = NZUsize!(1024);
const ITEMS_PER_SECTION: NonZeroU64 = NZU64!(4096);

/// What one validator needs besides its runtime and network.
pub struct Config<B, P, T> {
    /// Its consensus key.
    pub signer: PrivateKey,
    /// Prefix of its storage partitions (unique per validator on a shared disk).
    pub partition: String,
    /// Ledger, mempool and receipts; every epoch's validator set comes from its ledger.
    pub shared: Arc<Shared>,
    /// Blocks peers that misbehave.
    pub blocker: B,
    /// Tells marshal and broadcast which peers exist.
    pub peers: P,
    /// Told each epoch's validators, so the p2p layer admits them.
    pub peer_sets: T,
    /// Most transactions per block.
    pub txs_per_block: usize,
    /// Consensus timing.
    pub timing: Timing,
    /// A fault to put in this validator's own proposals (fault simulations); `None` to run honestly.
    pub tamper: Option<Tamper>,
    /// How many finalized blocks to keep below the newest, with their certificates and
    /// receipts; `None` keeps every block (archive mode). See [`crate::prune`].
    pub keep_blocks: Option<u64>,
    /// Blocks per section of the finalized archives, the unit pruning removes: fixed for
    /// the life of a validator's data ([`ARCHIVE_SECTION`] outside tests).
    pub archive_section: NonZeroU64,
    /// The finalization of the block a snapshot installed in the ledger: marshal starts
    /// from it instead of from genesis (see [`crate::snapshot`]).
    pub floor: Option<Finalization<Scheme, Digest>>,
}

/// Blocks per section of the finalized archives.
pub const ARCHIVE_SECTION: NonZeroU64 = NZU64!(4096);

/// A pair of network endpoints.
pub type Channel<S, R> = (S, R);

/// The five channels a validator uses.
pub struct Channels<S, R> {
    /// Simplex votes.
    pub votes: Channel<S, R>,
    /// Simplex certificates.
    pub certificates: Channel<S, R>,
    /// Simplex resolver.
    pub resolver: Channel<S, R>,
    /// Marshal backfill.
    pub backfill: Channel<S, R>,
    /// Block broadcast.
    pub broadcast: Channel<S, R>,
}

impl<S, R> Channels<S, R> {
    /// The five channels from registered endpoints, in channel-number order; `None` if fewer.
    pub fn take(endpoints: &mut impl Iterator<Item = Channel<S, R>>) -> Option<Self> {
        Some(Channels {
            votes: endpoints.next()?,
            certificates: endpoints.next()?,
            resolver: endpoints.next()?,
            backfill: endpoints.next()?,
            broadcast: endpoints.next()?,
        })
    }
}

/// Handles of a running validator's actors.
pub struct Running {
    /// The orchestrator of the per-epoch consensus engines.
    pub consensus: Handle<()>,
    /// Marshal.
    pub marshal: Handle<()>,
}

fn archive_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1024,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 256,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 64 << 20,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: ITEMS_PER_SECTION,
        codec_config,
        replay_buffer: NZUsize!(1 << 20),
        freezer_key_write_buffer: NZUsize!(1 << 20),
        freezer_value_write_buffer: NZUsize!(1 << 20),
        ordinal_write_buffer: NZUsize!(1 << 20),
    }
}

fn prunable_config<C>(
    prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    section: NonZeroU64,
    codec_config: C,
) -> prunable::Config<TwoCap, C> {
    prunable::Config {
        translator: TwoCap,
        metadata_partition: format!("{prefix}-finalized-{name}-metadata"),
        key_partition: format!("{prefix}-finalized-{name}-key"),
        key_page_cache: page_cache.clone(),
        value_partition: format!("{prefix}-finalized-{name}-value"),
        compression: None,
        codec_config,
        items_per_section: section,
        replay_buffer: NZUsize!(1 << 20),
        key_write_buffer: NZUsize!(1 << 20),
        value_write_buffer: NZUsize!(1 << 20),
    }
}

/// An archive of finalized blocks that could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot open the validator's {archive} archive in its data directory: {cause}; check that \
     the disk is mounted, writable and not full, and that no other validator uses this directory"
)]
pub struct ArchiveError {
    /// Which archive: `blocks` or `finalizations`.
    pub archive: &'static str,
    /// The storage layer's explanation.
    pub cause: String,
}

impl ArchiveError {
    fn of(archive: &'static str) -> impl FnOnce(commonware_storage::archive::Error) -> Self {
        move |e| Self {
            archive,
            cause: e.to_string(),
        }
    }
}

/// Start a validator; `states` carries its state votes (see [`crate::certify`]).
pub async fn start<E, B, P, T, S, R>(
    context: E,
    cfg: Config<B, P, T>,
    channels: Channels<S, R>,
    states: Channel<S, R>,
) -> Result<Running, ArchiveError>
where
    E: CryptoRng + Spawner + Metrics + Clock + Storage + Send + Sync + 'static,
    B: Blocker<PublicKey = PublicKey> + Clone + Sync,
    P: Provider<PublicKey = PublicKey> + Clone,
    T: PeerSets,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
{
    let me = cfg.signer.public_key();
    let schemes = Schemes::new(cfg.shared.clone(), cfg.signer.clone());
    let genesis = &cfg.shared.genesis;
    // Genesis checks the length (at least 2, which FixedEpocher needs); `max` keeps a
    // hand-built genesis from panicking here.
    let epocher =
        FixedEpocher::new(NonZeroU64::new(genesis.params.epoch_blocks.max(2)).unwrap_or(NZU64!(2)));
    let genesis_block = Block::genesis(&genesis.hash(), genesis.genesis_time_ms);
    let genesis_digest = genesis_block.digest();
    let page_cache = CacheRef::new(PAGE_SIZE, PAGE_CACHE_SIZE);
    let prefix = cfg.partition.clone();
    let mailbox_size = NZUsize!(1024);

    let marshal_cfg = marshal::Config {
        provider: schemes.clone(),
        epocher: epocher.clone(),
        start: match cfg.floor {
            Some(floor) => marshal::Start::Floor(floor),
            None => marshal::Start::Genesis(Digested::precomputed(
                genesis_block.clone(),
                genesis_digest,
            )),
        },
        partition_prefix: prefix.clone(),
        mailbox_size,
        view_retention: ViewDelta::new(256),
        prunable_items_per_section: NZU64!(256),
        replay_buffer: NZUsize!(1 << 20),
        key_write_buffer: NZUsize!(1 << 20),
        value_write_buffer: NZUsize!(1 << 20),
        page_cache: page_cache.clone(),
        block_codec_config: (),
        max_repair: NZUsize!(64),
        max_pending_acks: NZUsize!(16),
        strategy: Sequential,
    };

    let (finalizer, finalized) = Finalizer::new();
    // Started once the archives are open: a validator whose archives cannot open stops
    // with that alone, not with these engines' complaints that their mailboxes closed.
    let start_io = || {
        let (backfill_handler, backfill_resolver) = marshal_resolver::init(
            context.child("resolver"),
            marshal_resolver::Config {
                public_key: me.clone(),
                peer_provider: cfg.peers.clone(),
                blocker: cfg.blocker.clone(),
                mailbox_size,
                fetch_timeout: NZDuration!(Duration::from_secs(2)),
                fetch_retry_delay: Duration::from_millis(100),
                priority_requests: false,
                priority_responses: false,
            },
            channels.backfill,
        );

        let (broadcast_engine, buffer) = buffered::Engine::new(
            context.child("broadcast"),
            buffered::Config {
                public_key: me.clone(),
                mailbox_size,
                deque_size: 64,
                priority: false,
                codec_config: (),
                peer_provider: cfg.peers.clone(),
                strategy: Sequential,
            },
        );
        broadcast_engine.start(channels.broadcast);
        (buffer, (backfill_handler, backfill_resolver))
    };
    // Blocks finalized by earlier versions sit in immutable archives, which cannot prune:
    // such a validator keeps using them, and so keeps every block.
    let legacy = context
        .scan(&format!("{prefix}-blocks-freezer-table"))
        .await
        .is_ok_and(|blobs| !blobs.is_empty());
    let (mailbox, marshal_handle) = if legacy {
        let finalizations = immutable::Archive::init(
            context.child("finalizations_by_height"),
            // An ed25519 certificate decodes with the committee size as its bound; committees
            // change by epoch, so the bound is the largest any epoch may have.
            archive_config(&prefix, "finalizations", &page_cache, VALIDATORS_MAX),
        )
        .await
        .map_err(ArchiveError::of("finalizations"))?;
        let blocks = immutable::Archive::init(
            context.child("finalized_blocks"),
            archive_config(&prefix, "blocks", &page_cache, ()),
        )
        .await
        .map_err(ArchiveError::of("blocks"))?;
        let (buffer, resolver) = start_io();
        let (actor, mailbox, _floor) = marshal::core::Actor::init(
            context.child("marshal"),
            finalizations,
            blocks,
            marshal_cfg,
        )
        .await;
        (mailbox.clone(), actor.start(finalizer, buffer, resolver))
    } else {
        let section = cfg.archive_section;
        let finalizations = prunable::Archive::init(
            context.child("finalizations_by_height"),
            prunable_config(
                &prefix,
                "finalizations",
                &page_cache,
                section,
                VALIDATORS_MAX,
            ),
        )
        .await
        .map_err(ArchiveError::of("finalizations"))?;
        let blocks = prunable::Archive::init(
            context.child("finalized_blocks"),
            prunable_config(&prefix, "blocks", &page_cache, section, ()),
        )
        .await
        .map_err(ArchiveError::of("blocks"))?;
        let (buffer, resolver) = start_io();
        let (actor, mailbox, _floor) = marshal::core::Actor::init(
            context.child("marshal"),
            finalizations,
            blocks,
            marshal_cfg,
        )
        .await;
        (mailbox.clone(), actor.start(finalizer, buffer, resolver))
    };
    if cfg.shared.snapshots.enabled() {
        let (shared, mailbox) = (cfg.shared.clone(), mailbox.clone());
        context
            .child("snapshots")
            .spawn(move |_| snapshot::keep_finalizations(shared, mailbox));
    }
    match (cfg.keep_blocks, legacy) {
        (Some(_), true) => info!(
            "this validator's blocks are in the archive format of an earlier version, which \
             cannot be pruned: it keeps every block (a validator started on an empty data \
             directory prunes)"
        ),
        (Some(keep), false) => {
            let keep = prune::window(keep, cfg.shared.genesis.params.epoch_blocks);
            let (shared, mailbox) = (cfg.shared.clone(), mailbox.clone());
            context
                .child("pruner")
                .spawn(move |_| prune::run(shared, mailbox, keep));
        }
        (None, _) => {}
    }
    let shared = cfg.shared.clone();
    let archive = mailbox.clone();
    let archived = move |h: u64| {
        let archive = archive.clone();
        async move { archive.get_block(Height::new(h)).await }
    };
    context
        .child("finalizer")
        .spawn(move |_| finalizer::run(shared, finalized, archived));

    context.child("certifier").spawn({
        let (shared, signer) = (cfg.shared.clone(), cfg.signer.clone());
        move |_| certify::run(shared, signer, states)
    });

    let app = App::new(cfg.shared.clone(), cfg.txs_per_block).with_tamper(cfg.tamper);
    let timing = cfg.timing.resting(Duration::from_millis(
        cfg.shared.genesis.params.idle_block_ms,
    ));
    let wrapper = Inline::new(
        context.child("application"),
        app,
        mailbox.clone(),
        epocher.clone(),
    );
    let orchestrator = Orchestrator {
        shared: cfg.shared,
        schemes,
        marshal: mailbox,
        wrapper,
        blocker: cfg.blocker,
        peer_sets: cfg.peer_sets,
        epocher,
        genesis: genesis_digest,
        partition: prefix,
        page_cache,
        timing,
    };
    let consensus = context.child("epochs").spawn(move |context| {
        orchestrator.run(
            context,
            channels.votes,
            channels.certificates,
            channels.resolver,
        )
    });
    Ok(Running {
        consensus,
        marshal: marshal_handle,
    })
}
