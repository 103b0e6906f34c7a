//! Run a validator for real: tokio runtime, authenticated TCP between validators, the HTTP API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use commonware_codec::DecodeExt;
use commonware_cryptography::ChaCha20Poly1305;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{
    Address, AddressableManager, AddressableTrackedPeers, Receiver, Recipients, Sender,
};
use commonware_runtime::{Quota, Runner, Spawner, Supervisor, tokio as cw_tokio};
use commonware_stream::{cups, sake};
use commonware_utils::ordered::Map;
use commonware_utils::{NZU32, NZUsize};
use futures::StreamExt;
use futures::channel::mpsc;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use peergrid_core::{AccountId, Keypair, SignedTx};
use peergrid_ledger::{Genesis, Ledger, RedbStore};

use crate::api::{self, Api};
use crate::engine::{self, Channels, Timing};
use crate::epochs::{Member, PeerSets};
use crate::mempool::MempoolLimits;
use crate::shared::{Receipts, Shared};
use crate::snapshot;
use peergrid_core::tx::VALIDATORS_MAX;

/// Most messages one peer may send on one channel at once, above the steady rate.
const P2P_BURST_MAX: u32 = 256;

/// Channel on which validators pass each other the transactions users submit.
pub const CHANNEL_GOSSIP: u64 = 5;
/// Channel on which validators pass each other their signatures over state roots.
pub const CHANNEL_STATES: u64 = 6;
/// Namespace of the validators' network handshake.
pub const P2P_NAMESPACE: &[u8] = b"_PEERGRID_CHAIN_P2P";

/// A validator's configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
// A misspelt key (`keep_block`) would otherwise be dropped, and its default run silently.
#[serde(deny_unknown_fields)]
pub struct ValidatorConfig {
    /// The genesis file; validators' network addresses come from it.
    pub genesis: PathBuf,
    /// This validator's key file.
    pub key: PathBuf,
    /// Where its ledger, receipts and consensus journals live.
    pub data_dir: PathBuf,
    /// Address for validator-to-validator traffic.
    pub p2p_listen: SocketAddr,
    /// Address of the ledger HTTP API.
    pub api_listen: SocketAddr,
    /// Most transactions per block.
    #[serde(default = "default_txs_per_block")]
    pub txs_per_block: usize,
    /// Run although the key is not in the genesis set: follow the chain, and vote from the
    /// epoch a council vote puts the key in a validator set. Off by default, so that a wrong
    /// key file is refused rather than run as a validator nobody voted for.
    #[serde(default)]
    pub join: bool,
    /// Finalized blocks kept below the newest, with their certificates and receipts;
    /// older ones are pruned. Never fewer than two epochs.
    #[serde(default = "default_keep_blocks")]
    pub keep_blocks: u64,
    /// Keep every finalized block (for explorers, and for validators that catch up from
    /// genesis); `keep_blocks` is then ignored.
    #[serde(default)]
    pub archive: bool,
    /// Validators' API URLs to take a state snapshot from when the data directory is empty,
    /// instead of applying every block since genesis (which blocks pruned by the others
    /// make impossible on a long chain). `peergrid validator run` fetches it, checked
    /// against its state certificate followed from the genesis set, before [`run`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_from: Vec<String>,
}

fn default_txs_per_block() -> usize {
    ValidatorConfig::TXS_PER_BLOCK_DEFAULT
}

fn default_keep_blocks() -> u64 {
    ValidatorConfig::KEEP_BLOCKS_DEFAULT
}

impl ValidatorConfig {
    /// Most transactions per block unless the file says otherwise.
    pub const TXS_PER_BLOCK_DEFAULT: usize = 5_000;
    /// Blocks kept unless the file says otherwise: a day and more of an idle chain's
    /// blocks, and the hours a peer may be away and still catch up from the others.
    pub const KEEP_BLOCKS_DEFAULT: u64 = 100_000;

    /// Read a TOML configuration; relative paths are taken from the file's folder.
    pub fn load(path: &std::path::Path) -> anyhow::Result<ValidatorConfig> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let invalid = || format!("{} is not a valid validator config", path.display());
        // Not text is the content's fault, not the file system's: say so.
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| {
                anyhow::anyhow!(
                    "not UTF-8 text (the byte at offset {} is not)",
                    e.valid_up_to()
                )
            })
            .with_context(invalid)?;
        let mut cfg: ValidatorConfig = toml::from_str(text).with_context(invalid)?;
        // Zero would make a validator that proposes only empty blocks: every transaction
        // would wait for another leader, and nothing would say why.
        if cfg.txs_per_block == 0 {
            return Err(anyhow::anyhow!(
                "txs_per_block is 0: a validator must propose at least 1 transaction per block \
                 (leave it out for {})",
                Self::TXS_PER_BLOCK_DEFAULT
            ))
            .with_context(invalid);
        }
        // A URL that can never serve would be retried until the operator gave up.
        if let Some(bad) = cfg.snapshot_from.iter().find(|u| {
            let host = u.strip_prefix("http://").or(u.strip_prefix("https://"));
            host.is_none_or(|h| h.is_empty() || h.contains(char::is_whitespace))
        }) {
            return Err(anyhow::anyhow!(
                "snapshot_from {bad:?} is not a validator's API URL: give URLs like \
                 \"http://203.0.113.7:8700\" (another validator's api_listen)"
            ))
            .with_context(invalid);
        }
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for p in [&mut cfg.genesis, &mut cfg.key, &mut cfg.data_dir] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

fn consensus_key(key: &Keypair) -> anyhow::Result<PrivateKey> {
    PrivateKey::decode(Bytes::copy_from_slice(key.secret_seed().as_slice()))
        .map_err(|e| anyhow::anyhow!("key cannot be used for consensus: {e}"))
}

fn public_key(account: &AccountId) -> anyhow::Result<PublicKey> {
    PublicKey::decode(Bytes::copy_from_slice(account.as_bytes()))
        .map_err(|e| anyhow::anyhow!("validator {account} has an unusable key: {e}"))
}

/// The lookup network's peer sets: each epoch's validators at their voted addresses, or for
/// the genesis set, at those in the genesis file.
struct LookupPeers {
    oracle: lookup::Oracle<PublicKey>,
    genesis: HashMap<PublicKey, SocketAddr>,
}

impl LookupPeers {
    fn address(&self, m: &Member) -> Option<(PublicKey, Address)> {
        let addr = match &m.address {
            Some(a) => a.parse().ok()?,
            None => *self.genesis.get(&m.key)?,
        };
        Some((m.key.clone(), Address::Symmetric(addr)))
    }
}

impl PeerSets for LookupPeers {
    fn track(&mut self, epoch: u64, primary: &[Member], secondary: &[Member]) {
        let primary: Vec<_> = primary.iter().filter_map(|m| self.address(m)).collect();
        // The network refuses a set above its size; the set itself always fits.
        let room = VALIDATORS_MAX.saturating_sub(primary.len());
        let secondary: Vec<_> = secondary
            .iter()
            .filter_map(|m| self.address(m))
            .take(room)
            .collect();
        info!(
            epoch,
            validators = primary.len(),
            leaving = secondary.len(),
            "tracking the epoch's validators"
        );
        let _ = self.oracle.track(
            epoch,
            AddressableTrackedPeers::new(
                Map::from_iter_dedup(primary),
                Map::from_iter_dedup(secondary),
            ),
        );
    }
}

/// Run a validator until `stop` resolves (the CLI passes Ctrl-C or SIGTERM). Every write is
/// atomic, so a kill at any moment is safe too.
///
/// A key outside the genesis set runs with `join = true`: it follows the chain until a vote
/// puts it in an epoch's set, then votes from that epoch on.
pub fn run(
    cfg: ValidatorConfig,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let genesis = Genesis::load(&cfg.genesis)?;
    let key = Keypair::load(&cfg.key)?;
    let me = key.account();
    let index = genesis.validators.iter().position(|v| v.account == me);
    if index.is_none() && !cfg.join {
        bail!(
            "{me} (from {}) is not a validator in {}; to run it as a validator waiting to be \
             voted in, add `join = true` to its configuration",
            cfg.key.display(),
            cfg.genesis.display()
        );
    }
    let mut peers = Vec::new();
    for v in &genesis.validators {
        let Some(addr) = &v.address else {
            bail!(
                "validator {} has no network address in the genesis file; add `address = \"host:port\"`",
                v.account
            );
        };
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("address {addr:?} of {} is not host:port", v.account))?;
        peers.push((public_key(&v.account)?, addr));
    }
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
    let store = RedbStore::open(&cfg.data_dir.join("ledger.redb"))?;
    let floor_file = cfg.data_dir.join(snapshot::FLOOR_FILE);
    let ledger = Ledger::open(Box::new(store) as Box<_>, &genesis)?;
    let receipts = Receipts::open(&cfg.data_dir.join("receipts.redb"))?;
    info!(height = ledger.state().height(), epoch = ledger.state().epoch(), root = %ledger.state().root(), ?index, "ledger opened");
    let shared = Shared::new(genesis.clone(), ledger, receipts, MempoolLimits::default());
    shared
        .snapshots
        .enable(cfg.data_dir.join("snapshots"))
        .context("cannot create the snapshots folder")?;
    let signer = consensus_key(&key)?;
    // A validator started from a snapshot starts consensus from its block, every time: the
    // floor is ignored once marshal has gone past it.
    let floor = match std::fs::read(&floor_file) {
        Ok(bytes) if bytes.len() > 32 => {
            let block = peergrid_core::Hash(bytes[..32].try_into().unwrap_or([0; 32]));
            Some(snapshot::floor(&shared, &bytes[32..], &block)?)
        }
        Ok(_) => bail!(
            "{} is damaged: remove the data directory and start again",
            floor_file.display()
        ),
        Err(_) => None,
    };

    let data_dir = cfg.data_dir.clone();
    let runtime = cw_tokio::Config::new().with_storage_directory(cfg.data_dir.join("consensus"));
    let runner = cw_tokio::Runner::new(runtime);
    // Consensus's storage panics when a write fails (a full or failing disk): said as an
    // error that names the data directory, not as a panic and a backtrace.
    // With RUST_BACKTRACE set, the default hook's backtrace is printed too.
    let default: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    let backtrace = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let chained = default.clone();
    std::panic::set_hook(Box::new(move |info| {
        let at = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::error!(%at, "{}", panic_text(info.payload()));
        if backtrace {
            chained(info);
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runner.start(|context| async move {
            serve(context, cfg, shared, signer, peers, index, floor, stop).await
        })
    }));
    std::panic::set_hook(Box::new(move |info| default(info)));
    match outcome {
        Ok(result) => result,
        Err(panic) => Err(stopped(&data_dir, &panic_text(&*panic))),
    }
}

/// A panic's message.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a part of the validator failed".into(),
    }
}

/// Why the validator stopped, with its data directory's disk and what to do: most such
/// stops are a full or failing disk, and the rest are bugs to report.
fn stopped(data_dir: &std::path::Path, why: &str) -> anyhow::Error {
    let space = peergrid_core::fs::disk_space(data_dir);
    let human = peergrid_core::capacity::human_bytes;
    let disk = match &space {
        Ok(s) => format!(
            "{} free of {}",
            human(s.available_bytes),
            human(s.total_bytes)
        ),
        Err(e) => format!("its disk cannot be read: {e}"),
    };
    // Below 1 % (at most 64 MiB) free, the disk is taken to be full.
    let full = space
        .as_ref()
        .is_ok_and(|s| s.available_bytes < (s.total_bytes / 100).min(64 << 20));
    let storage = [
        "journal", "archive", "blob", "sync", "write", "persist", "metadata", "storage", "redb",
        "i/o", "io error",
    ]
    .iter()
    .any(|w| why.to_lowercase().contains(w));
    let todo = if why.contains("delete this validator's data directory") {
        ""
    } else if full {
        ": the disk is full; free some space, then start it again (it resumes from what it stored)"
    } else if storage || space.is_err() {
        ": check that the disk is mounted, writable and not full, then start it again (it \
         resumes from what it stored)"
    } else {
        ". This is not a disk problem that peergrid knows of: please report it with the log \
         above; starting it again may get it past it"
    };
    anyhow::anyhow!(
        "the validator stopped: {why}. Its data directory is {} ({disk}){todo}",
        data_dir.display()
    )
}

/// Where consensus starts: from genesis, or from the finalization of a snapshot's block.
type Floor = Option<
    commonware_consensus::simplex::types::Finalization<
        commonware_consensus::simplex::scheme::ed25519::Scheme,
        commonware_cryptography::sha256::Digest,
    >,
>;

#[allow(clippy::too_many_arguments)] // each is one part of the validator `run` assembled
async fn serve(
    context: cw_tokio::Context,
    cfg: ValidatorConfig,
    shared: Arc<Shared>,
    signer: PrivateKey,
    peers: Vec<(PublicKey, SocketAddr)>,
    index: Option<usize>,
    floor: Floor,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tracing::debug!("runtime started");
    let handshake = cups::Cups::<_, ChaCha20Poly1305>::new(
        sake::Sake {
            signer: signer.clone(),
            synchrony_bound: Duration::from_secs(5),
            max_handshake_age: Duration::from_secs(10),
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    let mut p2p = lookup::Config::local(
        handshake,
        P2P_NAMESPACE,
        cfg.p2p_listen,
        // Any epoch's set (at most VALIDATORS_MAX) and this validator; the validators who
        // just left an epoch's set follow as secondaries only while there is room.
        NZUsize!(VALIDATORS_MAX + 1),
        engine::MESSAGE_BYTES_MAX,
        NZUsize!(4096),
    );
    // The epoch in force and the one before it: each set carries the validators who left
    // the set before it, so older sets add no one a validator still needs to hear from.
    p2p.tracked_peer_sets = NZUsize!(2);
    let (mut network, oracle) = lookup::Network::new(context.child("p2p"), p2p);
    tracing::debug!("p2p network created");
    // Per peer and channel. Blocks and transaction gossip are batched, so a thousand messages a
    // second is ample. Each channel's inbound mailbox holds a whole burst from every peer
    // the network may keep (129 per set, 2 sets): with bursts of a thousand and 4 sets, the
    // mailboxes took 1.7 GB per validator, zeroed at start, and finality slowed
    // (BENCHMARKS.md). A peer sending faster than its burst waits for the rate, and while it
    // waits its other channels wait too, so the burst must cover a catch-up's requests.
    let quota = Quota::per_second(NZU32!(1_000)).allow_burst(NZU32!(P2P_BURST_MAX));
    let mut ch = Vec::new();
    for c in 0..=CHANNEL_STATES {
        ch.push(network.register(c, quota));
    }
    network.start();
    let mut ch = ch.into_iter();
    let channels = Channels::take(&mut ch).context("five consensus channels were registered")?;
    let (mut gossip_out, mut gossip_in) = ch.next().context("the gossip channel was registered")?;
    let states = ch.next().context("the state channel was registered")?;

    let peer_sets = LookupPeers {
        oracle: oracle.clone(),
        genesis: peers.into_iter().collect(),
    };
    engine::start(
        context.child("validator"),
        engine::Config {
            signer,
            // Genesis validators keep the partition names of their existing data.
            partition: match index {
                Some(i) => format!("validator-{i}"),
                None => "validator".into(),
            },
            shared: shared.clone(),
            blocker: oracle.clone(),
            peers: oracle.clone(),
            peer_sets,
            txs_per_block: cfg.txs_per_block,
            timing: Timing::default(),
            tamper: None,
            keep_blocks: (!cfg.archive).then_some(cfg.keep_blocks),
            archive_section: engine::ARCHIVE_SECTION,
            floor,
        },
        channels,
        states,
    )
    .await?;

    // Transactions users give this validator go to every validator, so whoever leads next has them.
    let (gossip, mut to_gossip) = mpsc::unbounded::<SignedTx>();
    context.child("gossip_out").spawn(move |_| async move {
        // A transaction that did not fit in the last message starts the next one.
        let mut carry: Option<Vec<u8>> = None;
        loop {
            let first = match carry.take() {
                Some(tx) => tx,
                None => match to_gossip.next().await {
                    Some(tx) => tx.encode(),
                    None => break,
                },
            };
            let mut batch = GossipBatch::default();
            carry = batch.push(first).err();
            while carry.is_none() {
                match to_gossip.try_recv() {
                    Ok(tx) => carry = batch.push(tx.encode()).err(),
                    Err(_) => break,
                }
            }
            gossip_out.send(Recipients::All, Bytes::from(batch.encode()), false);
        }
    });
    let inbound = shared.clone();
    context.child("gossip_in").spawn(move |_| async move {
        while let Ok((peer, message)) = gossip_in.recv().await {
            let Ok(batch) = peergrid_core::codec::decode::<Vec<Vec<u8>>>(
                "gossip",
                message.as_ref(),
                engine::MESSAGE_BYTES_MAX as usize,
            ) else {
                warn!(%peer, "malformed transaction gossip");
                continue;
            };
            let txs: Vec<_> = batch
                .iter()
                .filter_map(|bytes| SignedTx::decode_hashed(bytes).ok())
                .collect();
            // Up to 512 signatures: checked off the threads that drive consensus, one
            // batch at a time, so a flood of gossip waits here instead of starving votes.
            let shared = inbound.clone();
            let _ = tokio::task::spawn_blocking(move || shared.submit_batch(txs)).await;
        }
    });

    let listener = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", cfg.api_listen))?;
    // Its own target: `validator run` shows this line by default, once every check passed.
    info!(target: "peergrid::validator", api = %cfg.api_listen, p2p = %cfg.p2p_listen, data = %cfg.data_dir.display(), "validator running; Ctrl-C stops it");
    // The peer's address bounds how many event streams one client holds.
    let limits = peergrid_core::http::Limits::for_this_process();
    let fatal = shared.clone();
    let mut api = Api::new(shared, Some(gossip));
    // Event streams hold their connection for good: at most half the connections, so
    // that the other requests are always served (or refused with a reason).
    api.event_streams = crate::event_streams::EventStreams::new(
        crate::event_streams::EVENT_STREAMS_MAX.min(limits.connections / 2),
        crate::event_streams::EVENT_STREAMS_PER_ADDRESS_MAX,
    );
    let app = api::router(api);
    tokio::select! {
        () = peergrid_core::http::serve(listener, app, limits) => {}
        _ = stop => info!("stopping"),
        why = fatal.failed() => return Err(stopped(&cfg.data_dir, &why)),
    }
    Ok(())
}

/// Most transactions in one gossip message.
const GOSSIP_TXS_MAX: usize = 512;

/// Encoded transactions gathered into one gossip message, within what the p2p layer takes:
/// it refuses a message above [`engine::MESSAGE_BYTES_MAX`] by panicking, and 512 large
/// transactions are more than that.
#[derive(Default)]
struct GossipBatch {
    txs: Vec<Vec<u8>>,
    /// The message's encoded size so far.
    bytes: usize,
}

impl GossipBatch {
    /// Add `tx`, or hand it back when the message has no room for it (an empty message
    /// takes any transaction: one is far below the limit).
    fn push(&mut self, tx: Vec<u8>) -> Result<(), Vec<u8>> {
        // borsh: the list's and each transaction's u32 length before its bytes.
        let bytes = self.bytes.max(4) + 4 + tx.len();
        let full = self.txs.len() >= GOSSIP_TXS_MAX || bytes > engine::MESSAGE_BYTES_MAX as usize;
        if full && !self.txs.is_empty() {
            return Err(tx);
        }
        self.bytes = bytes;
        self.txs.push(tx);
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        peergrid_core::codec::encode(&self.txs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_messages_stay_within_what_the_network_takes() {
        let limit = engine::MESSAGE_BYTES_MAX as usize;
        let largest = vec![7u8; peergrid_core::tx::TX_BYTES_MAX];
        let mut batch = GossipBatch::default();
        let mut taken = 0;
        let left = loop {
            match batch.push(largest.clone()) {
                Ok(()) => taken += 1,
                Err(tx) => break tx,
            }
        };
        assert_eq!(left, largest, "the one left over is handed back whole");
        assert!(taken < GOSSIP_TXS_MAX, "the bytes bound first: {taken}");
        let message = batch.encode();
        assert_eq!(message.len(), batch.bytes);
        assert!(message.len() <= limit, "{} > {limit}", message.len());
        assert!(message.len() + 4 + largest.len() > limit, "room was left");
        let back: Vec<Vec<u8>> =
            peergrid_core::codec::decode("gossip", &message, limit).expect("decodes");
        assert_eq!(back.len(), taken);
        // Small ones: at most GOSSIP_TXS_MAX to a message.
        let mut small = GossipBatch::default();
        for _ in 0..GOSSIP_TXS_MAX {
            small.push(vec![1; 200]).expect("room");
        }
        assert!(small.push(vec![1; 200]).is_err());
        // Whatever its size, a transaction starts a message of its own.
        assert!(GossipBatch::default().push(vec![0; limit]).is_ok());
    }

    #[test]
    fn a_stop_says_what_to_do_by_its_cause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = stopped(
            dir.path(),
            "unable to append to journal: Runtime(WriteFailed)",
        );
        let disk = disk.to_string();
        assert!(
            disk.contains(&dir.path().display().to_string())
                && disk.contains("mounted, writable and not full"),
            "{disk}"
        );
        let bug = stopped(dir.path(), "assertion failed: view > 0").to_string();
        assert!(
            bug.contains("report it") && !bug.contains("not full"),
            "{bug}"
        );
        let archive = stopped(
            dir.path(),
            "cannot rebuild the ledger: delete this validator's data directory to resync it",
        )
        .to_string();
        assert!(!archive.contains("start it again"), "{archive}");
    }
}
