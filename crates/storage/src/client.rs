//! The owner's side: reserve space, put and get objects, the owner index, audits.
//!
//! Put: read a segment, derive its key, seal it, erasure-code it into `k + m` shards,
//! address each, and put each on a different node of the owner's storage contracts (the
//! nodes of distinct farms first), several segments in flight. The manifest is sealed
//! and put whole on every one of those nodes; the capability names it. The owner index
//! gains the name only after every shard and the manifest are stored, so an upload cut
//! short lists nothing, and a retry resumes: the same bytes under the same name give
//! the same shards, which the nodes answer they already have.
//!
//! Get: open the manifest, then for each segment ask for its data shards, and a spare
//! whenever one of them lags those already in (or none has come for a while); decode as
//! soon as any `k` arrive checked, and drop the rest. A node that fails, or does not
//! connect within CONNECT_WITHIN, is asked last for the remaining segments.

use peergrid_core::now_ms;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use peergrid_client::{Client, ContractFilter, ContractState, NodeStatus, TxStatus};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, ContractId, FarmId, Hash, Keypair, NodeId, Payload};
use peergrid_mesh::{Mesh, PeerId};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::crypto::{self, Cipher, NONCE_BYTES, StorageKeys, TAG_BYTES};
use crate::direct::{ALIGN, AlignedBuf, BufferPool, DirectWriter};
use crate::erasure::{self, Scheme};
use crate::format::{
    Capability, INDEX_BYTES_MAX, Index, IndexEntry, Manifest, Pointer, Segment, SignedPointer,
    check_name, decode_versioned, encode_versioned,
};
use crate::peers::PeerBook;
use crate::shard::shard_id;
use crate::wire::{self, ListedShard, PutOutcome, WireError};

/// Plaintext bytes per segment.
pub const SEGMENT_BYTES: u32 = 4 << 20;
const _: () = assert!(SEGMENT_BYTES <= crate::format::SEGMENT_BYTES_MAX);
/// Segments being encoded or uploaded at once.
const SEGMENTS_IN_FLIGHT: usize = 3;
/// Segments being fetched at once by a get (`BufferPool::KEPT` keeps buffers for them).
const GETS_IN_FLIGHT: usize = 6;
/// Segments a get may have fetched ahead of its writer: while the fetch loop waits to
/// hand one over, no fetch in flight is read from. With two, a writer a little behind
/// held up every fetch (a 1 GiB get took about 11 % longer).
const WRITES_QUEUED: usize = 8;
/// Segments sealed and coded at once while putting.
const ENCODES_AT_ONCE: usize = 2;
/// How long a get waits for a segment's first shard before asking a spare anyway.
const SPARE_AFTER: Duration = Duration::from_millis(200);

/// Bytes a node counts as used in `contract`, from its answer to a usage request.
fn used_by(answer: &[wire::ContractUsage], contract: ContractId) -> Option<u64> {
    answer
        .iter()
        .find(|u| u.contract == contract)
        .map(|u| u.used)
}

/// What the owner index is read for: a change needs surer answers than a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    ToList,
    ToChange,
}

/// Where a fetched shard of a segment being read is.
enum Fetched {
    /// Received into its place in the segment's buffer (data shards).
    InPlace,
    /// In a buffer of its own.
    Own(Vec<u8>),
}
/// How long the nodes of a put or get have to connect before they count as failed.
const CONNECT_WITHIN: Duration = Duration::from_secs(3);
/// How long a node that failed is treated as failed: tried last, given no shard, not
/// dialled again.
const FAILED_FOR: Duration = Duration::from_secs(10);

/// How long a node an audit could not reach fails the next audits at once: the rest of
/// one `store audit` run, which would otherwise wait on it again for every object.
const AUDIT_UNREACHABLE_FOR: Duration = Duration::from_secs(120);

/// What an audit says of a node it could not reach.
fn not_reached(node: NodeId) -> String {
    format!("node {node} could not be reached (`peergrid node list` shows whether it is up)")
}

/// Whether an exchange failed because the node could not be reached at all (no dial, no
/// answer in time), not because a stream broke or the node refused.
fn unreached(e: &WireError) -> bool {
    match e {
        WireError::Mesh { source, .. } => matches!(
            **source,
            peergrid_mesh::Error::Dial { .. }
                | peergrid_mesh::Error::Timeout { .. }
                | peergrid_mesh::Error::PeerNotFound(_)
        ),
        WireError::Io { timed_out, .. } => *timed_out,
        _ => false,
    }
}
/// How many times a change to the owner index is applied again when another machine
/// changes the index at the same moment, before giving up.
const INDEX_TRIES: u32 = 8;

/// A segment handed to a download's writer: its bytes (`len` from `from` in `buf`), and
/// after it is written, how many segments the resume point may count as done (every
/// eighth and the last).
struct Piece {
    buf: AlignedBuf,
    from: usize,
    len: usize,
    done: Option<u64>,
}

/// Where a download goes: a file, resumable and synced, or a device or pipe.
enum Output {
    File(DirectWriter),
    Stream(std::fs::File),
}

impl Output {
    fn write(&mut self, buf: &mut AlignedBuf, from: usize, len: usize) -> std::io::Result<()> {
        match self {
            Output::File(w) => w.write_from(buf, from, len),
            Output::Stream(f) => std::io::Write::write_all(f, &buf[from..from + len]),
        }
    }

    fn sync_data(&self) -> std::io::Result<()> {
        match self {
            Output::File(w) => w.sync_data(),
            Output::Stream(_) => Ok(()),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Output::File(w) => w.sync().map(drop),
            Output::Stream(mut f) => std::io::Write::flush(&mut f),
        }
    }
}

/// Bytes kept free in each contract beyond the estimate, for the manifest and index.
const OVERHEAD_BYTES: u64 = 1 << 20;

/// Anything storage could not do, said so that the user knows what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The ledger could not be read or refused a transaction.
    #[error("ledger: {0}")]
    Ledger(#[from] peergrid_client::ClientError),
    /// A node could not be reached or refused.
    #[error(transparent)]
    Wire(Box<WireError>),
    /// A stored format could not be read.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// A local file.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Other(String),
}

impl From<WireError> for StorageError {
    fn from(e: WireError) -> Self {
        StorageError::Wire(Box::new(e))
    }
}

/// Whether a get's `out` names this process's standard output (`-` or `/dev/stdout`).
pub fn writes_to_stdout(out: &Path) -> bool {
    out == Path::new("-") || out == Path::new("/dev/stdout")
}

/// A get's `out` must name a file (or a device or pipe), not a folder.
pub fn refuse_folder(out: &Path) -> Result<(), StorageError> {
    if out.is_dir() {
        return Err(other(format!(
            "{} is a folder: give the file to write, e.g. {}",
            out.display(),
            out.join("NAME").display()
        )));
    }
    Ok(())
}

/// The file at `path` to put as `name`, and its size, once both are checked.
async fn file_source<'a>(path: &'a Path, name: &str) -> Result<(Source<'a>, u64), StorageError> {
    check_name(name).map_err(other)?;
    let file_err = |what| {
        let path = path.to_path_buf();
        move |source| StorageError::File { what, path, source }
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(file_err("cannot open"))?;
    let meta = file.metadata().await.map_err(file_err("cannot read"))?;
    // A pipe or device reads as empty or endless by its length: the object would be
    // stored empty, or cut, under a put that says it worked.
    if !meta.is_file() {
        return Err(other(format!(
            "{} is not a regular file: put a file, or pipe a stream's bytes in (`COMMAND | peergrid store put - NAME`) when it ends by itself",
            path.display(),
        )));
    }
    let source = Source::File {
        file: Arc::new(file.into_std().await),
        path,
    };
    Ok((source, meta.len()))
}

fn other(s: impl Into<String>) -> StorageError {
    StorageError::Other(s.into())
}

/// One storage contract of the owner, with the node that holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Holding {
    /// The contract.
    pub contract: ContractId,
    /// Its node.
    pub node: NodeId,
    /// The node's farm.
    pub farm: FarmId,
    /// The node's mesh peer id.
    pub peer: String,
    /// Bytes reserved.
    pub quota: u64,
    /// The node's status on the ledger.
    pub status: NodeStatus,
    /// The contract is in its grace period (unpaid): its node refuses reads and writes.
    pub in_grace: bool,
    /// Ledger time the contract was created, ms.
    pub created_ms: u64,
}

impl Holding {
    fn peer_id(&self) -> Result<PeerId, StorageError> {
        self.peer
            .parse()
            .map_err(|_| other(format!("node {} has no valid peer id", self.node)))
    }

    fn writable(&self) -> bool {
        !self.in_grace && self.status == NodeStatus::Up
    }
}

/// How `reserve` chooses nodes.
#[derive(Clone, Debug)]
pub enum NodeChoice {
    /// This many up nodes with room, distinct farms first.
    Count(usize),
    /// These nodes.
    Ids(Vec<NodeId>),
}

/// Progress of a long operation, for a progress bar.
pub type Progress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What a put stored.
#[derive(Clone, Debug, Serialize)]
pub struct PutReport {
    /// The name.
    pub name: String,
    /// What reads it.
    pub capability: Capability,
    /// Bytes.
    pub size: u64,
    /// The erasure code used.
    pub scheme: Scheme,
    /// Shards stored now.
    pub shards_sent: u64,
    /// Shards the nodes already held (an interrupted put resumed).
    pub shards_resumed: u64,
    /// The name named another object before, now removed: capabilities shared for it no
    /// longer read.
    pub replaced: bool,
    /// The same bytes were stored under this name already: the object and its
    /// capability are kept as they were.
    pub unchanged: bool,
}

/// What a run of puts shares: see [`Storage::put_session`].
pub struct PutSession {
    /// The nodes written to.
    holdings: Vec<Holding>,
    /// The index as last read or written, and when: a put of the bytes it names under
    /// that name already is kept as it was. Read again once older than [`KNOWN_FOR`], by
    /// one of the puts under way while the others wait for it.
    known: tokio::sync::Mutex<(Instant, Option<Arc<Index>>)>,
}

/// How long a put session trusts the index it last read or wrote to tell an unchanged
/// object: another machine with the same words may change it meanwhile.
const KNOWN_FOR: Duration = Duration::from_secs(5);

/// An object on the nodes, not yet named in the index: see [`Storage::name_puts`].
pub struct Unnamed {
    /// What the put did; `replaced` is known once it is named.
    pub report: PutReport,
    /// What names it; `None` when the index names these bytes under this name already.
    entry: Option<IndexEntry>,
    /// Its manifest's shards: removing the object it replaces keeps them.
    keep: HashSet<Hash>,
    /// The shards its nodes held already (each with its holding's place), not sent:
    /// checked, and kept from deletes a while, just before it is named.
    relied: Vec<(usize, Hash)>,
    /// The manifest its name must still name when it is named (a re-coded copy replaces
    /// only the object it was read from, not one put since).
    replaces: Option<Hash>,
}

/// Storage as one account sees it.
pub struct Storage {
    mesh: Mesh,
    ledger: Arc<Client>,
    key: Keypair,
    keys: StorageKeys,
    /// Nodes that failed, and when: tried last while the mark is fresh (FAILED_FOR).
    failed: Mutex<HashMap<PeerId, std::time::Instant>>,
    /// Nodes whose disk was full during this run: given no new shard, still read from.
    full: Mutex<HashSet<PeerId>>,
    /// Nodes an audit of this run could not reach: the audits of the next objects fail
    /// them at once instead of waiting for a dial again. Only an audit's own dial marks
    /// one (a node merely slow to connect for a read is still challenged).
    audit_unreachable: Mutex<HashMap<PeerId, std::time::Instant>>,
    /// A file locked while the owner index is read, changed and written again.
    index_lock: Option<PathBuf>,
    /// Segment buffers a get's writer gave back, for the next segments fetched.
    segments: BufferPool,
    /// Where the owner's nodes were last reached, dialed before asking the DHT.
    peer_book: Option<PeerBook>,
    /// The grid's identity, once asked.
    chain: tokio::sync::OnceCell<String>,
}

/// Where a put's bytes come from.
enum Source<'a> {
    /// A local file.
    File {
        /// Read at each segment's offset.
        file: Arc<std::fs::File>,
        /// For errors.
        path: &'a Path,
    },
    /// One of the owner's objects, read segment by segment from its nodes: a widen needs
    /// no local copy.
    Object {
        /// Its manifest.
        manifest: Manifest,
        /// The owner's nodes.
        peers: HashMap<NodeId, PeerId>,
        /// The same, as a list.
        all: Vec<PeerId>,
    },
}

/// Each node of `holdings` once.
fn distinct_peers(holdings: &[Holding]) -> Vec<PeerId> {
    let mut seen = HashSet::new();
    holdings
        .iter()
        .filter_map(|h| h.peer_id().ok())
        .filter(|p| seen.insert(*p))
        .collect()
}

/// When the owner's first contract on each node of `holdings` was created.
fn joined(holdings: &[Holding]) -> HashMap<PeerId, u64> {
    let mut out: HashMap<PeerId, u64> = HashMap::new();
    for h in holdings {
        if let Ok(p) = h.peer_id() {
            let at = out.entry(p).or_insert(h.created_ms);
            *at = (*at).min(h.created_ms);
        }
    }
    out
}

/// Whether a node of `peers` that has not `answered` may hold an owner index that none of
/// those that answered (with no pointer) holds: one that joined the owner's nodes before
/// one that answered. An index is written to a majority of the nodes of its day, and
/// the nodes that answered are a majority of today's; when none joined after a silent
/// one, every index written since a silent one joined reached one of them.
fn may_hold_index(
    peers: &[PeerId],
    answered: &HashSet<PeerId>,
    joined: &HashMap<PeerId, u64>,
) -> bool {
    let at = |p: &PeerId| joined.get(p).copied().unwrap_or(0);
    let latest_answered = answered.iter().map(at).max();
    let earliest_silent = peers.iter().filter(|p| !answered.contains(p)).map(at).min();
    matches!((earliest_silent, latest_answered), (Some(s), Some(a)) if s < a)
}

/// The mesh peer of each node of `holdings`.
fn peers_by_node(holdings: &[Holding]) -> HashMap<NodeId, PeerId> {
    holdings
        .iter()
        .filter_map(|h| Some((h.node, h.peer_id().ok()?)))
        .collect()
}

/// Order `holdings` so that consecutive ones are on different farms where possible.
fn spread_over_farms(mut holdings: Vec<Holding>) -> Vec<Holding> {
    holdings.sort_by_key(|h| (h.farm, h.node));
    let mut by_farm: BTreeMap<FarmId, std::collections::VecDeque<Holding>> = BTreeMap::new();
    for h in holdings {
        by_farm.entry(h.farm).or_default().push_back(h);
    }
    let mut out = Vec::new();
    while by_farm.values().any(|q| !q.is_empty()) {
        for q in by_farm.values_mut() {
            if let Some(h) = q.pop_front() {
                out.push(h);
            }
        }
    }
    out
}

/// The grid `ledger` runs ([`crate::format::grid_id`]): what pointers and requests to its
/// nodes are signed for.
pub async fn grid_of(ledger: &Client) -> Result<String, peergrid_client::ClientError> {
    let status = ledger.status().await?.data;
    Ok(crate::format::grid_id(
        &status.chain_id,
        &status.genesis_hash,
    ))
}

impl Storage {
    /// Storage for `key`'s account, over `mesh` and `ledger`.
    pub fn new(mesh: Mesh, ledger: Arc<Client>, key: Keypair) -> Storage {
        let keys = StorageKeys::of(&key);
        Storage {
            mesh,
            ledger,
            key,
            keys,
            failed: Mutex::new(HashMap::new()),
            full: Mutex::new(HashSet::new()),
            audit_unreachable: Mutex::new(HashMap::new()),
            index_lock: None,
            segments: BufferPool::default(),
            peer_book: None,
            chain: tokio::sync::OnceCell::new(),
        }
    }

    /// The grid's identity ([`crate::format::grid_id`]), which the owner's pointers are
    /// signed for (asked of the ledger once).
    async fn chain(&self) -> Result<&str, StorageError> {
        self.chain
            .get_or_try_init(|| async { Ok(grid_of(&self.ledger).await?) })
            .await
            .map(String::as_str)
    }

    /// Lock `path` (created if missing) while changing the owner index. Puts and
    /// removals run at once from one home would otherwise each read the same index and
    /// write it back with only their own change: the other's name would be lost.
    pub fn with_index_lock(mut self, path: PathBuf) -> Storage {
        self.index_lock = Some(path);
        self
    }

    /// Remember in `path` where the owner's nodes were reached, and dial those addresses
    /// first next time: a new command then finds its nodes with every bootstrap peer of
    /// the genesis down.
    pub fn with_peer_book(mut self, path: PathBuf) -> Storage {
        self.peer_book = Some(PeerBook::new(path));
        self
    }

    /// Hold the index lock, if there is one, until the returned file is dropped.
    async fn lock_index(&self) -> Result<Option<std::fs::File>, StorageError> {
        let Some(path) = self.index_lock.clone() else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)?;
            file.lock()?;
            Ok::<_, std::io::Error>(file)
        })
        .await
        .map_err(|e| other(e.to_string()))?
        .map(Some)
        .map_err(|e| other(format!("cannot lock {shown}: {e}")))
    }

    /// Start a mesh peer with `key` that finds nodes through the grid's bootstrap peers
    /// (from the ledger's genesis), and return storage over it.
    pub async fn connect(ledger: Client, key: Keypair) -> Result<Storage, StorageError> {
        let bootstrap = ledger
            .mesh_bootstrap()
            .await?
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let config = peergrid_mesh::Config::client(bootstrap);
        let mesh = Mesh::start(&key, config)
            .await
            .map_err(|e| other(format!("cannot start a mesh peer: {e}")))?;
        Ok(Storage::new(mesh, Arc::new(ledger), key))
    }

    /// Connect to each of `holdings`' nodes once, all at the same time, before many
    /// streams go to each. A node that cannot be reached, or not within CONNECT_WITHIN
    /// (a stopped process never answers, and its dial would take the mesh's whole
    /// timeout), counts as failed: a put gives its shards to others, a get asks it last.
    async fn connect_all(&self, holdings: &[Holding]) {
        // One that already failed had its chance: dialing it again would wait as long.
        let peers: HashSet<PeerId> = holdings
            .iter()
            .filter_map(|h| h.peer_id().ok())
            .filter(|p| !self.has_failed(p))
            .collect();
        let known = match &self.peer_book {
            Some(book) => {
                let book = book.clone();
                tokio::task::spawn_blocking(move || book.load())
                    .await
                    .unwrap_or_default()
            }
            None => HashMap::new(),
        };
        let mut dials: FuturesUnordered<_> = peers
            .iter()
            .map(|&p| {
                let last_seen = known.get(&p).cloned().unwrap_or_default();
                async move {
                    // Where it was last reached first; the DHT if it moved or is not known.
                    if !last_seen.is_empty() {
                        match self.mesh.connect(p, last_seen).await {
                            Ok(()) => return (p, Ok(())),
                            Err(e) => debug!(peer = %p, error = %e, "not at its last address"),
                        }
                    }
                    (p, self.mesh.connect(p, Vec::new()).await)
                }
            })
            .collect();
        let deadline = tokio::time::Instant::now() + CONNECT_WITHIN;
        let mut connected = HashSet::new();
        while let Ok(Some((p, r))) = tokio::time::timeout_at(deadline, dials.next()).await {
            match r {
                Ok(()) => {
                    connected.insert(p);
                }
                Err(e) => debug!(peer = %p, error = %e, "cannot connect to a node"),
            }
        }
        for p in peers.difference(&connected) {
            let node = (holdings.iter())
                .find(|h| h.peer_id().ok() == Some(*p))
                .map_or_else(|| p.to_string(), |h| h.node.to_string());
            warn!(peer = %p, "node {node} of your storage did not connect within {CONNECT_WITHIN:?}; using the others");
            self.mark_failed(*p);
        }
        if let Some(book) = &self.peer_book {
            self.remember_addresses(book, &connected).await;
        }
    }

    /// Write down the addresses `connected` nodes were reached at.
    async fn remember_addresses(&self, book: &PeerBook, connected: &HashSet<PeerId>) {
        let Ok(infos) = self.mesh.peers().await else {
            return;
        };
        let reached: Vec<(PeerId, Vec<peergrid_mesh::Multiaddr>)> = infos
            .into_iter()
            .filter_map(|info| {
                let peer = info.peer_id.parse::<PeerId>().ok()?;
                let addrs = info.dialed.iter().filter_map(|a| a.parse().ok()).collect();
                (connected.contains(&peer) && !info.relayed).then_some((peer, addrs))
            })
            .collect();
        let book = book.clone();
        match tokio::task::spawn_blocking(move || book.remember(reached)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "cannot write the node address cache"),
            Err(e) => debug!(error = %e, "cannot write the node address cache"),
        }
    }

    /// Close the mesh connections, so that nodes see this peer leave at once.
    pub async fn close(&self) {
        self.mesh.close().await;
    }

    /// The account this storage belongs to.
    pub fn owner(&self) -> AccountId {
        self.key.account()
    }

    fn mark_failed(&self, peer: PeerId) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, std::time::Instant::now());
    }

    /// Whether an audit could not reach `peer` within AUDIT_UNREACHABLE_FOR.
    fn audit_unreachable(&self, peer: &PeerId) -> bool {
        (self.audit_unreachable.lock())
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|at| at.elapsed() < AUDIT_UNREACHABLE_FOR)
    }

    /// Whether `peer` failed within FAILED_FOR (or an audit could not reach it). The mark
    /// fades so that storage kept open for long (a chaos run, `repair --watch`) gives a
    /// node back its shards once it is up again, while one command does not wait on a
    /// stopped node twice.
    fn has_failed(&self, peer: &PeerId) -> bool {
        self.audit_unreachable(peer)
            || self
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(peer)
                .is_some_and(|at| at.elapsed() < FAILED_FOR)
    }

    fn mark_full(&self, peer: PeerId) {
        self.full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer);
    }

    /// Whether `peer` can be given a shard: reachable so far, and its disk not full.
    fn can_take(&self, peer: &PeerId) -> bool {
        !self.has_failed(peer)
            && !self
                .full
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(peer)
    }

    /// `owner`'s live storage contracts, each with its node. The list comes from one
    /// validator; each contract, and each node's key (which is the peer shards are sent
    /// to), is then read with its proof against a root a quorum certified, so a lying
    /// validator cannot send the owner's shards and pointer to a peer of its choosing.
    /// Only the node's up or down status, which steers the choice of nodes, is taken
    /// unproven.
    pub async fn holdings(&self, owner: AccountId) -> Result<Vec<Holding>, StorageError> {
        let (_, contracts) = self
            .ledger
            .contracts(ContractFilter {
                owner: Some(owner),
                node: None,
            })
            .await?;
        let listed: Vec<(ContractId, NodeId, u64)> = contracts
            .iter()
            .filter(|c| c.owner == owner && c.is_live())
            .filter_map(|c| match c.spec {
                ContractSpec::Storage { node, bytes } => Some((c.id, node, bytes)),
                _ => None,
            })
            .collect();
        let node_ids: std::collections::BTreeSet<NodeId> =
            listed.iter().map(|&(_, n, _)| n).collect();
        let lying = |what: String| {
            other(format!(
                "the validator answering said {what}: do not trust it; pass another validator with --ledger, and tell its operator"
            ))
        };
        let (proven, nodes) = futures::join!(
            futures::future::join_all(
                listed
                    .iter()
                    .map(|&(id, _, _)| self.ledger.proven_contract(id))
            ),
            futures::future::join_all(node_ids.iter().map(|&n| async move {
                let (view, proven) =
                    futures::join!(self.ledger.node(n), self.ledger.proven_node(n));
                (n, view, proven)
            }))
        );
        let mut known: HashMap<NodeId, (peergrid_client::NodeView, peergrid_client::Node)> =
            HashMap::new();
        for (n, view, proven) in nodes {
            let Some(node) = proven?.value else {
                return Err(lying(format!(
                    "your storage contract is on node {n}, but its proof says the ledger has no such node"
                )));
            };
            let Some(view) = view? else {
                return Err(lying(format!(
                    "your storage contract is on node {n}, and then that the ledger has no such node"
                )));
            };
            if view.data.node.account != node.account {
                return Err(lying(format!(
                    "node {n}'s key is {}, but its proof says {}",
                    view.data.node.account, node.account
                )));
            }
            known.insert(n, (view.data, node));
        }
        let mut out = Vec::new();
        for (&(id, node, bytes), proven) in listed.iter().zip(proven) {
            let Some(c) = proven?.value else {
                return Err(lying(format!(
                    "you have storage contract {id}, which its proof says does not exist"
                )));
            };
            if c.owner != owner || c.spec != (ContractSpec::Storage { node, bytes }) {
                return Err(lying(format!(
                    "storage contract {id} is yours, of {bytes} bytes on node {node}, but its proof says otherwise"
                )));
            }
            let in_grace = match c.state {
                ContractState::Created => false,
                ContractState::GracePeriod { .. } => true,
                // Ended since the list was read.
                ContractState::Deleted { .. } => continue,
            };
            let Some((view, n)) = known.get(&node) else {
                continue;
            };
            out.push(Holding {
                contract: id,
                node,
                farm: n.farm,
                peer: n.account.to_string(),
                quota: bytes,
                status: view.status,
                in_grace,
                created_ms: c.created_ms,
            });
        }
        Ok(out)
    }

    /// Reserve `bytes` on each of the chosen nodes: one storage contract per node, in one
    /// batch; if any is refused, the others are cancelled, so none is kept.
    pub async fn reserve(
        &self,
        bytes: u64,
        choice: NodeChoice,
    ) -> Result<Vec<ContractId>, StorageError> {
        let (_, nodes) = self.ledger.nodes(None).await?;
        let chosen: Vec<NodeId> = match choice {
            NodeChoice::Ids(ids) => {
                let mut seen = HashSet::new();
                if let Some(twice) = ids.iter().find(|id| !seen.insert(**id)) {
                    return Err(other(format!(
                        "node {twice} is named twice: one reservation per node, of the size you need there"
                    )));
                }
                for id in &ids {
                    let n = nodes.iter().find(|n| n.node.id == *id).ok_or_else(|| {
                        other(format!(
                            "node {id} is not on the ledger (see `peergrid node list`)"
                        ))
                    })?;
                    if n.status != NodeStatus::Up {
                        return Err(other(format!(
                            "node {id} is {}; choose up nodes (see `peergrid node list`)",
                            n.status
                        )));
                    }
                }
                ids
            }
            NodeChoice::Count(count) => {
                let mine: HashSet<NodeId> = self
                    .holdings(self.owner())
                    .await?
                    .iter()
                    .map(|h| h.node)
                    .collect();
                let free = |n: &peergrid_client::NodeView| n.free.hru.max(n.free.sru);
                let room = |n: &peergrid_client::NodeView| free(n) >= bytes;
                let most_free = (nodes.iter())
                    .filter(|n| n.status == NodeStatus::Up)
                    .map(free)
                    .max()
                    .unwrap_or(0);
                let candidates: Vec<Holding> = nodes
                    .iter()
                    .filter(|n| n.status == NodeStatus::Up && room(n))
                    .map(|n| Holding {
                        contract: 0,
                        node: n.node.id,
                        farm: n.node.farm,
                        peer: n.node.account.to_string(),
                        quota: 0,
                        status: n.status,
                        in_grace: false,
                        created_ms: 0,
                    })
                    .collect();
                // Nodes already holding this owner's data last, so new space spreads wider.
                let (fresh, again): (Vec<Holding>, Vec<Holding>) = candidates
                    .into_iter()
                    .partition(|h| !mine.contains(&h.node));
                let mut ordered = spread_over_farms(fresh);
                ordered.extend(spread_over_farms(again));
                if ordered.len() < count {
                    return Err(other(format!(
                        "{count} node{} asked for, but only {} up nodes have {} free{}",
                        if count == 1 { "" } else { "s" },
                        ordered.len(),
                        human_bytes(bytes),
                        match (ordered.len(), most_free) {
                            (0, 0) => String::new(),
                            (0, most) => format!(
                                ": ask for less (--size); the most one node has free is {}",
                                human_bytes(most)
                            ),
                            _ => ": ask for fewer with --nodes, or for less with --size".into(),
                        }
                    )));
                }
                ordered.into_iter().take(count).map(|h| h.node).collect()
            }
        };
        if chosen.is_empty() {
            return Err(other("no node chosen"));
        }
        let payloads = chosen
            .iter()
            .map(|&node| Payload::CreateContract(ContractSpec::Storage { node, bytes }))
            .collect();
        let outcomes = self
            .ledger
            .send_all(&self.key, payloads, Duration::from_secs(30))
            .await?;
        let mut created = Vec::new();
        let mut failures = Vec::new();
        for ((_, status), node) in outcomes.iter().zip(&chosen) {
            match status {
                TxStatus::Finalized { events, .. } => {
                    let id = events.iter().find_map(|e| match e {
                        peergrid_client::Event::ContractCreated { contract, .. } => Some(*contract),
                        _ => None,
                    });
                    match id {
                        Some(id) => created.push(id),
                        None => failures.push(format!("node {node}: no contract created")),
                    }
                }
                TxStatus::Rejected { reason, .. } => {
                    failures.push(format!("node {node}: {reason}"))
                }
                other => failures.push(format!("node {node}: {other:?}")),
            }
        }
        if !failures.is_empty() {
            if !created.is_empty() {
                let cancels = created
                    .iter()
                    .map(|&contract| Payload::CancelContract { contract })
                    .collect();
                let cancelled = self
                    .ledger
                    .send_all(&self.key, cancels, Duration::from_secs(30))
                    .await;
                let live: Vec<ContractId> = match &cancelled {
                    Ok(outcomes) => created
                        .iter()
                        .zip(outcomes)
                        .filter(|(_, (_, s))| !matches!(s, TxStatus::Finalized { .. }))
                        .map(|(c, _)| *c)
                        .collect(),
                    Err(_) => created.clone(),
                };
                if !live.is_empty() {
                    let cancel: Vec<String> = live
                        .iter()
                        .map(|c| format!("`peergrid contract cancel {c}`"))
                        .collect();
                    return Err(other(format!(
                        "the reservation was refused ({}), and contracts {live:?} of it could not be cancelled and are still billed{}: cancel them with {}",
                        failures.join("; "),
                        cancelled
                            .err()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default(),
                        cancel.join(", ")
                    )));
                }
            }
            return Err(other(format!(
                "the reservation was refused, nothing kept: {}",
                failures.join("; ")
            )));
        }
        self.until_known(&created).await;
        if let Err(e) = self.spread_index(&created).await {
            warn!(error = %e, "your new nodes do not keep your index yet: your next put or rm gives it to them");
        }
        Ok(created)
    }

    /// Wait, ten seconds at most, until each node of `contracts` counts its contract. A
    /// node learns of a contract from the ledger moments after it is final and refuses
    /// its shards until then, so a put right after the reserve would send them to other
    /// nodes (or fail, with none to spare).
    async fn until_known(&self, contracts: &[ContractId]) {
        let Ok(holdings) = self.holdings(self.owner()).await else {
            return;
        };
        let fresh: Vec<Holding> = holdings
            .into_iter()
            .filter(|h| contracts.contains(&h.contract))
            .collect();
        self.connect_all(&fresh).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        futures::future::join_all(fresh.iter().map(|h| async move {
            let Ok(peer) = h.peer_id() else {
                return;
            };
            let mut wait = Duration::from_millis(100);
            loop {
                if let Ok(u) = wire::usage(&self.mesh, peer, vec![h.contract]).await
                    && used_by(&u, h.contract).is_some()
                {
                    return;
                }
                if tokio::time::Instant::now() + wait > deadline {
                    warn!(
                        node = h.node,
                        contract = h.contract,
                        "the node has not learned of its new contract yet: puts go to your other nodes until it has"
                    );
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }))
        .await;
    }

    /// Give the nodes of `contracts` (just reserved) the owner's newest index and its
    /// pointer. Until they have them, their "no pointer" answers count towards the
    /// majority an index read asks for: with the older nodes down, a put would start a
    /// new, empty index, and lose its object from the index once they are back.
    async fn spread_index(&self, contracts: &[ContractId]) -> Result<(), StorageError> {
        let holdings = self.holdings(self.owner()).await?;
        // With no node from before, there is no index to give (a first reservation).
        if holdings.iter().all(|h| contracts.contains(&h.contract)) {
            return Ok(());
        }
        let Some((pointer, sealed)) = self.sealed_index_on(&holdings, Reading::ToList).await?
        else {
            return Ok(());
        };
        let (pointer, sealed) = (&pointer, &sealed);
        let fresh = holdings.iter().filter(|h| contracts.contains(&h.contract));
        let given = futures::future::join_all(fresh.map(|h| async move {
            let peer = h.peer_id()?;
            // The node learns of its new contract from the ledger within moments, and
            // refuses the contract's owner until then.
            let mut wait = Duration::from_millis(100);
            loop {
                let tried = async {
                    wire::put(&self.mesh, peer, h.contract, pointer.pointer.index, sealed).await?;
                    wire::put_pointer(&self.mesh, peer, pointer.clone()).await
                }
                .await;
                match tried {
                    Err(wire::WireError::Refused { .. }) if wait < Duration::from_secs(8) => {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    other => return other.map_err(StorageError::from),
                }
            }
        }))
        .await;
        given.into_iter().collect::<Result<Vec<()>, _>>().map(drop)
    }

    /// The holdings a put writes to: writable ones, one per node, distinct farms first.
    async fn writable_holdings(&self) -> Result<Vec<Holding>, StorageError> {
        let all = self.holdings(self.owner()).await?;
        if all.is_empty() {
            return Err(other(
                "you have no storage reserved: run `peergrid store reserve --size 10GiB` first",
            ));
        }
        let usable: Vec<Holding> = all.into_iter().filter(|h| h.writable()).collect();
        if usable.is_empty() {
            return Err(other(
                "none of your storage contracts can take data now (their nodes are down or the contracts are in grace: top up)",
            ));
        }
        self.connect_all(&usable).await;
        // Nodes that did not connect get no shard: the default scheme follows the nodes
        // that can take one now, and an explicit one too wide for them fails at once.
        let reachable: Vec<Holding> = usable
            .into_iter()
            .filter(|h| h.peer_id().is_ok_and(|p| self.can_take(&p)))
            .collect();
        if reachable.is_empty() {
            return Err(other(
                "none of the nodes of your storage can be reached now: check `peergrid node list`, or try again later",
            ));
        }
        Ok(spread_over_farms(self.roomiest_per_node(reachable).await))
    }

    /// One contract per node: of the owner's contracts on a node, the one with the most
    /// room left, so that a second reservation on a node is written to once the first is
    /// full (a node that does not answer keeps its first).
    async fn roomiest_per_node(&self, holdings: Vec<Holding>) -> Vec<Holding> {
        let mut by_node: Vec<(NodeId, Vec<Holding>)> = Vec::new();
        for h in holdings {
            match by_node.iter_mut().find(|(n, _)| *n == h.node) {
                Some((_, hs)) => hs.push(h),
                None => by_node.push((h.node, vec![h])),
            }
        }
        futures::future::join_all(by_node.into_iter().map(|(_, mut hs)| async move {
            if hs.len() > 1
                && let Ok(peer) = hs[0].peer_id()
                && let Ok(u) =
                    wire::usage(&self.mesh, peer, hs.iter().map(|h| h.contract).collect()).await
            {
                // A contract the node does not count yet (just reserved) cannot take a
                // shard yet either: one it counts comes first, then the most room.
                let room =
                    |h: &Holding| used_by(&u, h.contract).map(|used| h.quota.saturating_sub(used));
                if let Some(i) = (0..hs.len()).max_by_key(|&i| {
                    let r = room(&hs[i]);
                    (r.is_some(), r.unwrap_or(0))
                }) {
                    return hs.swap_remove(i);
                }
            }
            hs.swap_remove(0)
        }))
        .await
    }

    /// Store the file at `path` under `name`.
    pub async fn put(
        &self,
        path: &Path,
        name: &str,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
    ) -> Result<PutReport, StorageError> {
        // A bad name or file is said before any node is asked.
        let (source, size) = file_source(path, name).await?;
        self.put_one(source, size, name, scheme, progress, None)
            .await
    }

    /// Put one object from `source` and name it: a session of its own.
    async fn put_one(
        &self,
        source: Source<'_>,
        size: u64,
        name: &str,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
        replaces: Option<Hash>,
    ) -> Result<PutReport, StorageError> {
        let session = self.put_session().await?;
        let mut up = self
            .upload(&session, source, size, name, scheme, progress)
            .await?;
        up.replaces = replaces;
        let mut reports = self.name_puts(&session, vec![up]).await?;
        reports
            .pop()
            .ok_or_else(|| other(format!("{name} was not named in your index")))
    }

    /// Begin puts that share their nodes and the index as it is now: for many files,
    /// [`Storage::put_unnamed`] each, then [`Storage::name_puts`] them together, so the
    /// index is read and written once for all of them, not once each.
    pub async fn put_session(&self) -> Result<PutSession, StorageError> {
        let holdings = self.writable_holdings().await?;
        let index = self.index().await.ok().map(|(_, index)| Arc::new(index));
        Ok(PutSession {
            holdings,
            known: tokio::sync::Mutex::new((Instant::now(), index)),
        })
    }

    /// The session's index, read again when older than [`KNOWN_FOR`] (none when it
    /// cannot be read: nothing is then taken as unchanged).
    async fn known(&self, session: &PutSession) -> Option<Arc<Index>> {
        let mut known = session.known.lock().await;
        if known.0.elapsed() >= KNOWN_FOR {
            let index = self.index().await.ok().map(|(_, index)| Arc::new(index));
            *known = (Instant::now(), index);
        }
        known.1.clone()
    }

    /// Store the file at `path` as an object to be named `name`: on the nodes, but not
    /// listed until [`Storage::name_puts`] names it (until then `store gc` may take it).
    pub async fn put_unnamed(
        &self,
        session: &PutSession,
        path: &Path,
        name: &str,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
    ) -> Result<Unnamed, StorageError> {
        let (source, size) = file_source(path, name).await?;
        self.upload(session, source, size, name, scheme, progress)
            .await
    }

    /// Name `uploads` in the index in one change, and remove the objects they replace;
    /// a report for each, in their order.
    pub async fn name_puts(
        &self,
        session: &PutSession,
        uploads: Vec<Unnamed>,
    ) -> Result<Vec<PutReport>, StorageError> {
        let named: Vec<(&str, &IndexEntry, Option<Hash>)> = uploads
            .iter()
            .filter_map(|u| Some((u.report.name.as_str(), u.entry.as_ref()?, u.replaces)))
            .collect();
        let mut names = HashSet::new();
        if let Some((twice, _, _)) = named.iter().find(|(n, _, _)| !names.insert(*n)) {
            return Err(other(format!(
                "{twice:?} is put twice in one change: give each object its own name"
            )));
        }
        // What each name named before, from the first try that found it: a try again after
        // a change from elsewhere may find this put's own entry there already.
        let mut replaced: HashMap<String, IndexEntry> = HashMap::new();
        if !named.is_empty() {
            self.keep_relied(&session.holdings, &uploads).await?;
            let mut written = None;
            self.update_index(&session.holdings, |index| {
                for (name, entry, replaces) in &named {
                    let now = index.objects.get(*name).map(|e| e.capability.manifest);
                    if let Some(expected) = replaces
                        && now != Some(*expected)
                        && now != Some(entry.capability.manifest)
                    {
                        return Err(other(format!(
                            "{name} changed while it was re-coded (put or removed meanwhile): \
                             it was left as it is now; the re-coded copy is garbage for \
                             `peergrid store gc`"
                        )));
                    }
                }
                for (name, entry, _) in &named {
                    if let Some(old) = index.objects.insert(name.to_string(), (*entry).clone())
                        && old.capability.manifest != entry.capability.manifest
                    {
                        replaced.entry(name.to_string()).or_insert(old);
                    }
                }
                written = Some(Arc::new(index.clone()));
                Ok(())
            })
            .await?;
            *session.known.lock().await = (Instant::now(), written);
        }
        let mut reports = Vec::with_capacity(uploads.len());
        for up in uploads {
            let mut report = up.report;
            if let Some(old) = replaced.get(&report.name) {
                self.delete_object(&old.capability, &up.keep).await;
                report.replaced = true;
            }
            if !report.unchanged {
                info!(
                    name = report.name,
                    size = report.size,
                    scheme = %report.scheme,
                    sent = report.shards_sent,
                    resumed = report.shards_resumed,
                    "stored"
                );
            }
            reports.push(report);
        }
        Ok(reports)
    }

    /// Ask the nodes again for the shards `uploads` found on them instead of sending,
    /// which keeps them from deletes while the names are written: another machine with
    /// the same words may have removed them since (replacing or removing an object that
    /// shared them), and a name must not be given to an object missing them. A node that
    /// does not answer is not counted: its shards are among those the code may lose.
    async fn keep_relied(
        &self,
        holdings: &[Holding],
        uploads: &[Unnamed],
    ) -> Result<(), StorageError> {
        let mut on: BTreeMap<usize, Vec<Hash>> = BTreeMap::new();
        for up in uploads.iter().filter(|u| u.entry.is_some()) {
            for (at, id) in &up.relied {
                on.entry(*at).or_default().push(*id);
            }
        }
        let missing: usize = futures::future::join_all(on.into_iter().map(|(at, mut ids)| {
            ids.sort_unstable();
            ids.dedup();
            async move {
                let h = &holdings[at];
                let peer = h.peer_id().ok().filter(|p| !self.has_failed(p))?;
                let mut missing = 0;
                for chunk in ids.chunks(wire::IDS_MAX) {
                    match wire::keep(&self.mesh, peer, h.contract, chunk.to_vec()).await {
                        Ok(flags) => missing += flags.iter().filter(|held| !**held).count(),
                        Err(e) => {
                            debug!(node = h.node, error = %e, "cannot check the shards a put found on a node");
                            break;
                        }
                    }
                }
                Some(missing)
            }
        }))
        .await
        .into_iter()
        .flatten()
        .sum();
        if missing > 0 {
            return Err(other(format!(
                "{missing} shard(s) this put found on your nodes instead of sending were removed meanwhile (another machine with your words replaced or removed an object that shared them): nothing was named; run the same put again to send them"
            )));
        }
        Ok(())
    }

    /// Put `size` bytes read from `source` on the session's nodes, to be named `name`:
    /// see [`Storage::put_unnamed`].
    async fn upload(
        &self,
        session: &PutSession,
        source: Source<'_>,
        size: u64,
        name: &str,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
    ) -> Result<Unnamed, StorageError> {
        let holdings = &session.holdings;
        let scheme = scheme_for(holdings, scheme)?;
        let segments = size.div_ceil(u64::from(SEGMENT_BYTES));
        check_manifest_fits(name, scheme, size, segments).map_err(other)?;
        let count = holdings.len();
        // What each node is given of the segments from `first` on.
        let need_from = |first: u64| {
            let mut need = vec![0u64; count];
            for seg in first..segments {
                let plain = (size - seg * u64::from(SEGMENT_BYTES)).min(u64::from(SEGMENT_BYTES));
                let shard = scheme.shard_len(plain as usize + NONCE_BYTES + TAG_BYTES) as u64;
                for j in 0..scheme.n() {
                    need[placed(count, seg, j)] += shard;
                }
            }
            need
        };
        let salt = self.keys.object_salt(name);
        if let Err(short) = self.check_room(holdings, &need_from(0)).await {
            // Shards already there count as used: a retry of a put cut short, or a put
            // again of the same bytes under the same name, would be refused for room its
            // own shards take. Only what is not there yet must fit.
            let stored = self
                .stored_prefix(&source, size, segments, scheme, &salt, holdings)
                .await;
            if stored == 0 {
                return Err(short);
            }
            self.check_room(holdings, &need_from(stored)).await?;
            info!(
                name,
                stored,
                segments,
                "segments of this object are on your nodes already (a put of the same bytes under this name, perhaps cut short): only the rest must fit"
            );
        }

        let (tx, rx) = tokio::sync::mpsc::channel::<SealedSegment>(SEGMENTS_IN_FLIGHT);
        let keys = StorageKeys::of(&self.key);
        let source = &source;
        // Segments are read (a file at their offset, so no cursor is shared; an object
        // from its nodes), then sealed and coded on blocking threads, two at a time, so
        // the client uses a second core when the uploads leave one free; they reach the
        // uploader in order.
        let reader = async move {
            let encodings = futures::stream::iter(0..segments).map(|at| {
                let keys = keys.clone();
                async move {
                    let encoded = self
                        .sealed_segment(source, size, scheme, keys, salt, at)
                        .await?;
                    Ok((at, encoded))
                }
            });
            send_in_order(encodings, &tx).await?;
            Ok::<u64, StorageError>(segments)
        };
        self.store_segments(session, name, scheme, (reader, rx), None, progress)
            .await
    }

    /// Store what `reader` gives until its end under `name`: a pipe, whose length is
    /// known only once it has ended. A segment that would overrun a node's share of the
    /// reservation stops the put, and the shards it sent are removed.
    pub async fn put_stream(
        &self,
        reader: impl std::io::Read + Send + 'static,
        name: &str,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
    ) -> Result<PutReport, StorageError> {
        check_name(name).map_err(other)?;
        let session = self.put_session().await?;
        let scheme = scheme_for(&session.holdings, scheme)?;
        let free = (self.used(&session.holdings).await.into_iter())
            .zip(&session.holdings)
            .map(|(used, h)| h.quota.saturating_sub(used + OVERHEAD_BYTES))
            .collect();
        let budget = Budget {
            given: vec![0; session.holdings.len()],
            free,
            counted: HashMap::new(),
            read: 0,
        };
        let salt = self.keys.object_salt(name);
        let keys = StorageKeys::of(&self.key);
        // Read in order (a pipe has one cursor) on a thread of its own: a pipe may keep
        // a read waiting for long, and a put that stops must not wait for it, nor must the
        // program's end (the runtime waits for its own blocking threads).
        let (read_tx, read_rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1);
        std::thread::Builder::new()
            .name("peergrid-put-read".into())
            .spawn(move || {
                let mut reader = reader;
                let full = SEGMENT_BYTES as usize;
                loop {
                    let mut buf = crate::spare::take_len_with_room(
                        NONCE_BYTES + full,
                        segment_room(scheme, full),
                    );
                    let read = read_full(&mut reader, &mut buf[NONCE_BYTES..]).map(|got| {
                        buf.truncate(NONCE_BYTES + got);
                        buf
                    });
                    let last = !matches!(&read, Ok(b) if b.len() == NONCE_BYTES + full);
                    if read_tx.blocking_send(read).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|e| other(format!("cannot start reading what is put: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SealedSegment>(SEGMENTS_IN_FLIGHT);
        // Each segment sealed and coded on a blocking thread while the next is read.
        let reader = async move {
            // The reading thread sends a segment's room with no bytes in it at the end: it
            // goes back to the spare buffers.
            let segments = futures::stream::unfold(read_rx, |mut rx| async move {
                match rx.recv().await? {
                    Ok(buf) if buf.len() == NONCE_BYTES => {
                        crate::spare::give(buf);
                        None
                    }
                    read => Some((read, rx)),
                }
            });
            let mut taken = 0u64;
            let segments = segments.inspect(|_| taken += 1);
            let encodings = segments.enumerate().map(|(at, read)| {
                let keys = keys.clone();
                async move {
                    let buf = read.map_err(|e| other(format!("cannot read what is put: {e}")))?;
                    let encoded = tokio::task::spawn_blocking(move || {
                        seal_and_code(&keys, &salt, scheme, buf, Cipher::Aes256Gcm)
                    })
                    .await
                    .map_err(|e| other(format!("the encoder stopped: {e}")))?
                    .map_err(other)?;
                    Ok((at as u64, encoded))
                }
            });
            let sent = send_in_order(encodings, &tx).await?;
            // Most often the command before the pipe failed: an empty object stored now
            // would replace what the name holds.
            if taken == 0 {
                return Err(other(
                    "the pipe ended before its first byte: nothing was stored (did the command writing into it fail?)",
                ));
            }
            Ok::<u64, StorageError>(sent)
        };
        let up = self
            .store_segments(&session, name, scheme, (reader, rx), Some(budget), progress)
            .await?;
        let mut reports = self.name_puts(&session, vec![up]).await?;
        reports
            .pop()
            .ok_or_else(|| other(format!("{name} was not named in your index")))
    }

    /// Upload the segments `reader` sends on its channel (sealed and coded, in order from
    /// the first; it gives their count), then store their manifest: an object, not yet
    /// named. With a `budget` (a put whose length is known only at its end), a segment
    /// that would overrun it, or make the manifest too large, stops the put, and the
    /// shards the put sent are removed.
    async fn store_segments(
        &self,
        session: &PutSession,
        name: &str,
        scheme: Scheme,
        (reader, rx): (
            impl Future<Output = Result<u64, StorageError>>,
            tokio::sync::mpsc::Receiver<SealedSegment>,
        ),
        mut budget: Option<Budget>,
        progress: Progress<'_>,
    ) -> Result<Unnamed, StorageError> {
        let holdings = Arc::new(session.holdings.clone());
        let count = holdings.len();
        let uploader = async {
            let mut rx = rx;
            let mut done: BTreeMap<u64, Segment> = BTreeMap::new();
            // Each shard this put stored (not one a node held already), and where.
            let mut fresh: Vec<(usize, Hash)> = Vec::new();
            // Each shard a node held already, and where: checked again before naming.
            let mut relied: Vec<(usize, Hash)> = Vec::new();
            let mut uploads = FuturesUnordered::new();
            let (mut sent, mut resumed, mut uploaded_bytes) = (0u64, 0u64, 0u64);
            let mut reading = true;
            let mut refused = None;
            loop {
                tokio::select! {
                    next = rx.recv(), if reading && uploads.len() < SEGMENTS_IN_FLIGHT => match next {
                        Some((seg, shards, segment)) => {
                            if let Some(b) = budget.as_mut() {
                                let shard = scheme.shard_len(segment.sealed_len as usize) as u64;
                                let mut over = b.take(count, seg, scheme, shard, &[]);
                                if over.is_some() {
                                    // The same bytes put before (a put run again, or one cut
                                    // short): shards the nodes hold already take no more room.
                                    b.untake(seg, shard);
                                    let held = self.held(&holdings, seg, &segment).await;
                                    over = b.take(count, seg, scheme, shard, &held);
                                }
                                let after = b.read + u64::from(segment.plain_len);
                                // Why, and what to do: said after what the put undid.
                                let why = match over {
                                    Some(at) => Some((b.overrun(&holdings[at], at), b.advice(&holdings, scheme))),
                                    None => check_manifest_fits(name, scheme, after, seg + 1)
                                        .err()
                                        .map(|e| (format!("after {} sent: {e}", human_bytes(b.read)), String::new())),
                                };
                                if let Some(why) = why {
                                    refused = Some(why);
                                    reading = false;
                                    // The reader stops at its next segment.
                                    rx.close();
                                    continue;
                                }
                                b.read = after;
                            }
                            let holdings = holdings.clone();
                            uploads.push(self.upload_segment(seg, shards, segment, holdings, move |s, j| placed(count, s, j)));
                        }
                        None => reading = false,
                    },
                    Some(result) = uploads.next(), if !uploads.is_empty() => {
                        let (seg, segment, places) = match result {
                            Ok(up) => up,
                            // Refused already: what is sent is removed and the refusal said.
                            Err(e) if refused.is_some() => {
                                warn!(error = %e, "a segment under way when the put was refused failed too");
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        let shard = scheme.shard_len(segment.sealed_len as usize) as u64;
                        for (j, &(at, stored)) in places.iter().enumerate() {
                            if stored {
                                sent += 1;
                            } else {
                                resumed += 1;
                                relied.push((at, segment.shards[j]));
                            }
                            // Only a put that may be refused part way removes what it sent.
                            if stored && budget.is_some() {
                                fresh.push((at, segment.shards[j]));
                            }
                        }
                        if let Some(b) = budget.as_mut() {
                            b.settle(seg, &places, shard);
                        }
                        uploaded_bytes += u64::from(segment.plain_len);
                        progress(uploaded_bytes);
                        done.insert(seg, segment);
                    }
                    else => break,
                }
            }
            Ok::<_, StorageError>((done, sent, resumed, fresh, relied, refused))
        };
        // An upload that fails drops the channel, which stops the reader. An uploader that
        // stops first, refused or failed, does not wait for the reader: a pipe's may be
        // waiting for bytes that are no longer wanted.
        let (read, uploaded) = {
            let (reader, uploader) = (std::pin::pin!(reader), std::pin::pin!(uploader));
            match futures::future::select(reader, uploader).await {
                futures::future::Either::Left((read, uploader)) => (Some(read), uploader.await),
                futures::future::Either::Right((uploaded, reader)) => match &uploaded {
                    Ok((.., None)) => (Some(reader.await), uploaded),
                    _ => (None, uploaded),
                },
            }
        };
        let (done, sent, resumed, fresh, relied, refused) = uploaded.map_err(|e| {
            other(format!(
                "{e} (run the same put again: the shards already stored are not sent again)"
            ))
        })?;
        if let Some((why, then)) = refused {
            let removed = self.remove_sent(&holdings, &fresh).await;
            let undone = if removed == fresh.len() {
                format!("the {removed} shards this put sent are removed")
            } else {
                format!(
                    "{} of the {} shards this put sent could not be removed (`peergrid store gc` removes them later)",
                    fresh.len() - removed,
                    fresh.len()
                )
            };
            return Err(other(format!(
                "{why}; nothing was named, and {undone}.{then}"
            )));
        }
        let segments =
            read.ok_or_else(|| other("the upload stopped before every segment was stored"))??;
        if done.len() as u64 != segments {
            return Err(other("the upload stopped before every segment was stored"));
        }
        let size = done.values().map(|s| u64::from(s.plain_len)).sum();
        // The same bytes put again under the same name (a sync run again): the object
        // stays as it was, and so does every capability shared for it.
        let known = self.known(session).await;
        if let Some(kept) = self
            .unchanged(known.as_deref(), &holdings, name, size, scheme, &done)
            .await
        {
            info!(
                name,
                "the same bytes are stored under this name already: kept as it was"
            );
            return Ok(Unnamed {
                report: PutReport {
                    name: name.to_string(),
                    capability: kept.capability,
                    size,
                    scheme,
                    shards_sent: sent,
                    shards_resumed: resumed,
                    replaced: false,
                    unchanged: true,
                },
                entry: None,
                keep: HashSet::new(),
                relied: Vec::new(),
                replaces: None,
            });
        }
        let manifest = Manifest {
            name: name.to_string(),
            size,
            segment_bytes: SEGMENT_BYTES,
            cipher: Cipher::Aes256Gcm,
            scheme,
            created_ms: now_ms(),
            segments: done.into_values().collect(),
        };
        let plain = encode_versioned(&manifest);
        let salt = self.keys.object_salt(name);
        let key = self.keys.content_key(&salt, Cipher::Aes256Gcm, &plain);
        let sealed = crypto::seal(Cipher::Aes256Gcm, &key, None, &plain);
        // As many copies as the shards may lose, and one: the object then stays readable
        // whichever m of its nodes go.
        let copies = (usize::from(scheme.m) + 1).min(distinct_peers(&holdings).len());
        let (id, _) = self
            .put_everywhere(&holdings, &sealed, "manifest", copies)
            .await?;
        let capability = Capability {
            owner: self.owner(),
            manifest: id,
            key,
            cipher: Cipher::Aes256Gcm,
        };
        Ok(Unnamed {
            report: PutReport {
                name: name.to_string(),
                capability,
                size,
                scheme,
                shards_sent: sent,
                shards_resumed: resumed,
                replaced: false,
                unchanged: false,
            },
            entry: Some(IndexEntry {
                capability,
                size,
                created_ms: manifest.created_ms,
                scheme,
            }),
            keep: manifest.placements().map(|(h, _)| h).collect(),
            relied,
            replaces: None,
        })
    }

    /// Remove the shards a put stored (each with the index of its holding) when the put
    /// is refused part way: nothing names them.
    async fn remove_sent(&self, holdings: &[Holding], sent: &[(usize, Hash)]) -> usize {
        let mut on: BTreeMap<usize, Vec<Hash>> = BTreeMap::new();
        for (at, id) in sent {
            on.entry(*at).or_default().push(*id);
        }
        let removed = futures::future::join_all(on.into_iter().map(|(at, ids)| async move {
            let h = &holdings[at];
            let Ok(peer) = h.peer_id() else {
                return 0;
            };
            let mut removed = 0;
            for chunk in ids.chunks(wire::IDS_MAX) {
                match wire::delete(&self.mesh, peer, h.contract, chunk.to_vec()).await {
                    Ok(_) => removed += chunk.len(),
                    Err(e) => warn!(node = h.node, error = %e, "cannot remove the shards of a put refused part way"),
                }
            }
            removed
        }))
        .await;
        removed.into_iter().sum()
    }

    /// Which shards of segment `seg` the holdings it is placed on hold already.
    async fn held(&self, holdings: &[Holding], seg: u64, segment: &Segment) -> Vec<usize> {
        let count = holdings.len();
        let asked = (segment.shards.iter().enumerate()).map(|(j, id)| async move {
            let peer = holdings[placed(count, seg, j)].peer_id().ok()?;
            let have = wire::has(&self.mesh, peer, vec![*id]).await.ok()?;
            have.first().copied()?.then_some(j)
        });
        futures::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The index entry of `name` when it names an object of exactly these segments
    /// (`size` bytes in `scheme`, each segment's key and shards alike).
    async fn unchanged(
        &self,
        index: Option<&Index>,
        holdings: &[Holding],
        name: &str,
        size: u64,
        scheme: Scheme,
        done: &BTreeMap<u64, Segment>,
    ) -> Option<IndexEntry> {
        let old = index?.objects.get(name)?;
        if old.size != size || old.scheme != scheme {
            return None;
        }
        // From the put's own nodes, which keep every manifest of the owner's: their list
        // read from the ledger once for the session, not once for each file of a folder.
        let manifest = match self.open_among(&old.capability, holdings).await {
            Ok(manifest) => manifest,
            Err(_) => self.open(&old.capability).await.ok()?.0,
        };
        let same = manifest.segments.len() == done.len()
            && (manifest.segments.iter().zip(done.values()))
                .all(|(a, b)| a.key == b.key && a.shards == b.shards);
        same.then(|| old.clone())
    }

    /// Bytes used in each holding, as its node counts them (`None`: no answer).
    pub async fn usage(&self, holdings: &[Holding]) -> Vec<Option<u64>> {
        futures::future::join_all(holdings.iter().map(|h| async move {
            // Asking one that did not connect lately would dial it again, and wait as long
            // again, for nothing.
            let peer = h.peer_id().ok().filter(|p| !self.has_failed(p))?;
            let u = wire::usage(&self.mesh, peer, vec![h.contract]).await.ok()?;
            used_by(&u, h.contract)
        }))
        .await
    }

    /// What each holding's node counts as used, its node dialed first where it was last
    /// reached (as puts and gets do): none for a node that does not answer.
    pub async fn usage_reached(&self, holdings: &[Holding]) -> Vec<Option<u64>> {
        self.connect_all(holdings).await;
        self.usage(holdings).await
    }

    /// Bytes each holding's node counts as used (none assumed when it does not say).
    async fn used(&self, holdings: &[Holding]) -> Vec<u64> {
        let used = self.usage(holdings).await;
        (holdings.iter().zip(used))
            .map(|(h, used)| {
                used.unwrap_or_else(|| {
                    // One that did not connect was named then, and is given nothing.
                    if h.peer_id().is_ok_and(|p| self.has_failed(&p)) {
                        return 0;
                    }
                    warn!(
                        node = h.node,
                        contract = h.contract,
                        "the node did not say what this contract uses; assuming none"
                    );
                    0
                })
            })
            .collect()
    }

    /// Fail with the numbers if some node lacks room for what it would be given.
    async fn check_room(&self, holdings: &[Holding], need: &[u64]) -> Result<(), StorageError> {
        let mut short = Vec::new();
        let mut short_nodes: Vec<NodeId> = Vec::new();
        let mut most = 0;
        let used = self.used(holdings).await;
        for ((h, need), used) in holdings.iter().zip(need).zip(used) {
            let free = h.quota.saturating_sub(used);
            if need + OVERHEAD_BYTES > free {
                short_nodes.push(h.node);
                most = most.max(need + OVERHEAD_BYTES);
                short.push(format!(
                    "node {} (contract {}) needs {} but has {} free of {}",
                    h.node,
                    h.contract,
                    human_bytes(need + OVERHEAD_BYTES),
                    human_bytes(free),
                    human_bytes(h.quota)
                ));
            }
        }
        if short.is_empty() {
            return Ok(());
        }
        // A node's shards of one object go into one of the owner's contracts there, so
        // the new reservation must hold the whole share by itself.
        let nodes: Vec<String> = short_nodes.iter().map(|n| format!("--node {n}")).collect();
        Err(other(format!(
            "the object does not fit your reservation, nothing was uploaded: {}; reserve more with `peergrid store reserve --size {}MiB {}`, or put it with a scheme of more data shards (--scheme) to need less on each node",
            short.join("; "),
            most.div_ceil(1 << 20),
            nodes.join(" ")
        )))
    }

    /// A holding that can take a shard and is none of `targets`: a segment's shards stay
    /// on distinct nodes.
    fn free_holding(&self, holdings: &[Holding], targets: &[usize]) -> Option<usize> {
        (0..holdings.len()).find(|i| {
            !targets.contains(i) && holdings[*i].peer_id().is_ok_and(|p| self.can_take(&p))
        })
    }

    /// Segment `seg` of `source` (`size` bytes) read, sealed and coded as a put of the
    /// name of `salt` in `scheme` stores it (on a blocking thread).
    async fn sealed_segment(
        &self,
        source: &Source<'_>,
        size: u64,
        scheme: Scheme,
        keys: StorageKeys,
        salt: [u8; 32],
        seg: u64,
    ) -> Result<(erasure::Shards, Segment), StorageError> {
        let offset = seg * u64::from(SEGMENT_BYTES);
        let len = (size - offset).min(u64::from(SEGMENT_BYTES)) as usize;
        let sealable = self.read_segment(source, scheme, seg, offset, len).await?;
        tokio::task::spawn_blocking(move || {
            seal_and_code(&keys, &salt, scheme, sealable, Cipher::Aes256Gcm)
        })
        .await
        .map_err(|e| other(format!("the encoder stopped: {e}")))?
        .map_err(other)
    }

    /// How many segments from the start of `source` (`size` bytes), put as the name of
    /// `salt` with `scheme`, have every shard on one of the nodes of `holdings` already:
    /// a put cut short, or one of a file that since grew, left such a prefix (a put sends
    /// its segments in order, a few at a time). Found by halving, a segment sealed and
    /// asked for at each step (of every node: a shard its node refused went to another).
    async fn stored_prefix(
        &self,
        source: &Source<'_>,
        size: u64,
        segments: u64,
        scheme: Scheme,
        salt: &[u8; 32],
        holdings: &[Holding],
    ) -> u64 {
        let peers = distinct_peers(holdings);
        let present = |seg: u64| {
            let peers = &peers;
            async move {
                let keys = StorageKeys::of(&self.key);
                let Ok((_, segment)) = self
                    .sealed_segment(source, size, scheme, keys, *salt, seg)
                    .await
                else {
                    return false;
                };
                let ids = &segment.shards;
                let answers = futures::future::join_all(
                    peers.iter().map(|&p| wire::has(&self.mesh, p, ids.clone())),
                )
                .await;
                let mut found = vec![false; ids.len()];
                for flags in answers.into_iter().flatten() {
                    for (f, has) in found.iter_mut().zip(flags) {
                        *f |= has;
                    }
                }
                found.iter().all(|f| *f)
            }
        };
        // The first segment not there is in lo..=hi.
        let (mut lo, mut hi) = (0, segments);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if present(mid).await {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Put one segment's shards, each on its assigned node, another if that one fails;
    /// where each went (its holding) and whether it was stored now (not held already).
    async fn upload_segment(
        &self,
        seg: u64,
        shards: erasure::Shards,
        mut segment: Segment,
        holdings: Arc<Vec<Holding>>,
        assign: impl Fn(u64, usize) -> usize,
    ) -> Result<(u64, Segment, Vec<(usize, bool)>), StorageError> {
        let n = shards.count();
        let mut targets: Vec<usize> = (0..n).map(|j| assign(seg, j)).collect();
        // A node known to have failed, or to be full, is not waited for again: its shard
        // goes to a node that holds none of this segment, if there is one.
        for j in 0..n {
            if holdings[targets[j]]
                .peer_id()
                .is_ok_and(|p| self.can_take(&p))
            {
                continue;
            }
            if let Some(i) = self.free_holding(&holdings, &targets) {
                targets[j] = i;
            }
        }
        // Whether each shard was stored now (not held already).
        let mut stored = vec![false; n];
        let mut pending: Vec<usize> = (0..n).collect();
        for _attempt in 0..3 {
            let results = futures::future::join_all(pending.iter().map(|&j| {
                let h = &holdings[targets[j]];
                let bytes = shards.get(j);
                let id = segment.shards[j];
                async move {
                    let peer = h.peer_id()?;
                    wire::put(&self.mesh, peer, h.contract, id, bytes)
                        .await
                        .map_err(StorageError::from)
                }
            }))
            .await;
            let mut retry = Vec::new();
            for (&j, r) in pending.iter().zip(results) {
                match r {
                    Ok(PutOutcome::Stored) => stored[j] = true,
                    Ok(PutOutcome::AlreadyThere) => stored[j] = false,
                    Err(e) => {
                        warn!(segment = seg, shard = j, node = holdings[targets[j]].node, error = %e, "cannot put a shard; trying again");
                        // A node that cannot be dialed is skipped from now on; one whose
                        // stream broke may take the shard on a new one.
                        let unreachable = matches!(&e, StorageError::Wire(w) if matches!(**w, WireError::Mesh { .. }));
                        if unreachable && let Ok(p) = holdings[targets[j]].peer_id() {
                            self.mark_failed(p);
                        }
                        // A node whose disk is full takes no shard until it frees space;
                        // what it holds is still read from it.
                        let full = matches!(&e, StorageError::Wire(w) if w.is_disk_full());
                        if full && let Ok(p) = holdings[targets[j]].peer_id() {
                            self.mark_full(p);
                        }
                        retry.push((j, e));
                    }
                }
            }
            if retry.is_empty() {
                for (j, t) in targets.iter().enumerate() {
                    segment.nodes[j] = holdings[*t].node;
                }
                return Ok((seg, segment, targets.into_iter().zip(stored).collect()));
            }
            // Move each failed shard to a node that holds none of this segment yet; with
            // none left, try the same node again unless it cannot be dialed at all.
            pending.clear();
            let mut last = None;
            for (j, e) in retry {
                let spare = self.free_holding(&holdings, &targets);
                let same_ok = holdings[targets[j]]
                    .peer_id()
                    .is_ok_and(|p| self.can_take(&p));
                match spare {
                    Some(i) => {
                        targets[j] = i;
                        pending.push(j);
                    }
                    None if same_ok => pending.push(j),
                    None => {
                        return Err(other(format!(
                            "cannot store segment {seg}: {e}; no other node of yours can take its shard (reserve on more nodes, or pass --scheme with fewer shards)"
                        )));
                    }
                }
                last = Some(e);
            }
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(e) = last {
                debug!(segment = seg, error = %e, "retrying");
            }
        }
        Err(other(format!(
            "cannot store segment {seg} after three attempts; see the warnings above for each node's error"
        )))
    }

    /// Put one blob (a manifest or an index) on every holding, and fail unless at least
    /// `nodes_min` distinct nodes keep it: one copy would be lost with its node, and the
    /// objects it names with it. Its address, and the nodes that keep it.
    async fn put_everywhere(
        &self,
        holdings: &[Holding],
        sealed: &[u8],
        what: &str,
        nodes_min: usize,
    ) -> Result<(Hash, HashSet<NodeId>), StorageError> {
        let id = shard_id(sealed);
        let results = futures::future::join_all(holdings.iter().map(|h| async move {
            let peer = h.peer_id()?;
            wire::put(&self.mesh, peer, h.contract, id, sealed)
                .await
                .map_err(StorageError::from)
        }))
        .await;
        let kept: HashSet<NodeId> = (holdings.iter().zip(&results))
            .filter(|(_, r)| r.is_ok())
            .map(|(h, _)| h.node)
            .collect();
        for (h, r) in holdings.iter().zip(&results) {
            if let Err(e) = r {
                warn!(node = h.node, error = %e, "cannot put the {what} on a node");
            }
        }
        if kept.len() < nodes_min.max(1) {
            let first = results.into_iter().find_map(Result::err);
            return Err(other(format!(
                "the {what} could be stored on only {} of the {} nodes it needs: {}; \
                 run the command again when more are up (`peergrid store status`), or \
                 reserve more room (`peergrid store reserve`)",
                kept.len(),
                nodes_min.max(1),
                first.map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        Ok((id, kept))
    }

    /// The owner's newest pointer and index (empty before the first put).
    ///
    /// Every put writes the pointer to each node of the owner it reaches, and warns when
    /// that is not a majority of them; so once a majority has answered, the newest
    /// pointer is among the answers, and nodes that did not connect within
    /// CONNECT_WITHIN are not waited for.
    pub async fn index(&self) -> Result<(Option<SignedPointer>, Index), StorageError> {
        let holdings = self.holdings(self.owner()).await?;
        self.index_on(&holdings, Reading::ToList).await
    }

    /// The newest pointer and index kept by the nodes of `holdings`, all the owner's.
    async fn index_on(
        &self,
        holdings: &[Holding],
        reading: Reading,
    ) -> Result<(Option<SignedPointer>, Index), StorageError> {
        let Some((pointer, sealed)) = self.sealed_index_on(holdings, reading).await? else {
            return Ok((None, Index::default()));
        };
        let plain = crypto::open(
            Cipher::Aes256Gcm,
            &self.keys.index_key(),
            "the owner index",
            sealed,
        )
        .map_err(|e| other(e.to_string()))?;
        let index = decode_versioned::<Index>(&plain)?;
        Ok((Some(pointer), index))
    }

    /// The newest pointer kept by the nodes of `holdings` and the sealed index it names.
    async fn sealed_index_on(
        &self,
        holdings: &[Holding],
        reading: Reading,
    ) -> Result<Option<(SignedPointer, Vec<u8>)>, StorageError> {
        let peers: Vec<PeerId> = distinct_peers(holdings);
        let joined = joined(holdings);
        self.connect_all(holdings).await;
        let mut tries = 0;
        let mut tried: Option<Pointer> = None;
        loop {
            let Some(pointer) = self.newest_pointer(&peers, &joined, reading).await? else {
                return Ok(None);
            };
            let sealed = match self
                .fetch_blob(&peers, pointer.pointer.index, INDEX_BYTES_MAX as u64)
                .await
            {
                Ok(sealed) => sealed,
                // A change from elsewhere replaced that index, and removed it, after its
                // pointer was read: the newer pointer names the index that replaced it.
                Err(e) if tries < INDEX_TRIES && tried.as_ref() != Some(&pointer.pointer) => {
                    debug!(error = %e, "the index named by the newest pointer is gone; reading the pointers again");
                    tries += 1;
                    tried = Some(pointer.pointer);
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(Some((pointer, sealed)));
        }
    }

    /// The newest pointer `peers` keep: see [`Storage::index`] for whose answers count.
    /// To change the index, fewer than a majority answering is an error: a change is
    /// kept only once its pointer is on a majority ([`Storage::save_index`]), so a
    /// majority's answers include the newest, but fewer could all be older, and the
    /// change written over them would hide every name added since, whose objects gc
    /// would then take as garbage.
    /// `joined` is when the owner's first contract on each node was created: with no
    /// pointer among the answers, whether a node still silent may hold the index.
    async fn newest_pointer(
        &self,
        peers: &[PeerId],
        joined: &HashMap<PeerId, u64>,
        reading: Reading,
    ) -> Result<Option<SignedPointer>, StorageError> {
        let owner = self.owner();
        let chain = self.chain().await?;
        let majority = peers.len() / 2 + 1;
        let mut live_pending = peers.iter().filter(|p| !self.has_failed(p)).count();
        let mut asks: FuturesUnordered<_> = peers
            .iter()
            .map(|&p| {
                let live = !self.has_failed(&p);
                async move {
                    (
                        p,
                        live,
                        wire::get_pointer(&self.mesh, p, owner, chain).await,
                    )
                }
            })
            .collect();
        // Each pointer answered, with how many nodes keep it.
        let mut kept: Vec<(SignedPointer, usize)> = Vec::new();
        let mut reached = 0;
        let mut answered: HashSet<PeerId> = HashSet::new();
        while let Some((peer, live, a)) = asks.next().await {
            if live {
                live_pending -= 1;
            }
            match a {
                Ok(p) => {
                    reached += 1;
                    answered.insert(peer);
                    if let Some(p) = p {
                        match kept.iter_mut().find(|(k, _)| k.pointer == p.pointer) {
                            Some((_, n)) => *n += 1,
                            None => kept.push((p, 1)),
                        }
                    }
                }
                Err(e) => debug!(error = %e, "no pointer from a node"),
            }
            // No pointer among a majority is no proof that there is none when the nodes
            // still to answer may hold it (reserved before some that answered).
            if live_pending == 0
                && reached >= majority
                && (!kept.is_empty() || !may_hold_index(peers, &answered, joined))
            {
                break;
            }
        }
        if reached == 0 && !peers.is_empty() {
            return Err(other(
                "none of your storage nodes answered; is the grid up? (`peergrid node list`)",
            ));
        }
        if reading == Reading::ToChange && reached < majority {
            return Err(other(format!(
                "only {reached} of your {} storage nodes answered, too few to be sure your index is the newest: changing it now could hide names kept on the others. Try again when more are up (`peergrid store status` shows which are down), or cancel the contracts of nodes gone for good (`peergrid contract cancel ID`)",
                peers.len()
            )));
        }
        let silent = peers.len() - reached;
        if kept.is_empty() && may_hold_index(peers, &answered, joined) {
            // A change would start a new index, and the names on the silent nodes would
            // win it back once they return: the change's own names would be lost, and gc
            // would take their objects for garbage.
            if reading == Reading::ToChange {
                return Err(other(format!(
                    "none of the {reached} of your {} storage nodes that answered holds your \
                     index, and {silent} did not answer: if you stored objects before, it is \
                     on those. Try again when they are up (`peergrid store status` shows \
                     which), or cancel the contracts of nodes gone for good (`peergrid \
                     contract cancel ID`)",
                    peers.len()
                )));
            }
            warn!(
                answered = reached,
                nodes = peers.len(),
                "none of your storage nodes that answered holds your index; if you stored objects before, it is on those that did not answer"
            );
        }
        // An owner with no storage nodes has no index to be behind on.
        if reached < majority && !peers.is_empty() {
            warn!(
                answered = reached,
                nodes = peers.len(),
                "fewer than half of your storage nodes answered: the index may be older than your last put until they are back"
            );
        }
        // Two machines that changed the index at once can leave two pointers with one
        // sequence number, each on some nodes. The one on more nodes is the one whose
        // writer saw no other when it read them back, so the other writer applies its
        // change again on top of it.
        Ok(kept
            .into_iter()
            .max_by_key(|(p, n)| (p.pointer.seq, *n, p.pointer.index))
            .map(|(p, _)| p))
    }

    /// Apply `change` to the newest owner index and store the result; its result. Other
    /// commands from this home wait (the index lock); a change made at the same time
    /// from another machine is found by reading the pointers back, and then `change`
    /// is applied again to the index that has it, so neither change is lost.
    async fn update_index<T>(
        &self,
        holdings: &[Holding],
        mut change: impl FnMut(&mut Index) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let _lock = self.lock_index().await?;
        let all = self.holdings(self.owner()).await?;
        let nodes = distinct_peers(&all).len();
        // The owner's other contracts on the same nodes keep the index too: held only by
        // the contracts a put writes to (the roomiest), it was lost with them when they
        // lapsed, and the pointers, kept per node, went on naming it: every later command
        // of the owner failed, the objects in contracts still paid for included.
        let also: Vec<Holding> = all
            .iter()
            .filter(|h| h.writable() && holdings.iter().any(|w| w.node == h.node))
            .filter(|h| !holdings.iter().any(|w| w.contract == h.contract))
            .cloned()
            .collect();
        let mut attempt = 0;
        loop {
            let (pointer, mut index) = self.index_on(&all, Reading::ToChange).await?;
            let out = change(&mut index)?;
            let ours = self
                .save_index(holdings, &also, nodes, pointer.as_ref(), &index)
                .await?;
            let Some(theirs) = self.pointer_elsewhere(holdings, &ours).await else {
                return Ok(out);
            };
            attempt += 1;
            if attempt >= INDEX_TRIES {
                return Err(other(format!(
                    "your index was changed from elsewhere {attempt} times while this command changed it (a put or rm from another machine with the same words?); run it again"
                )));
            }
            // Random, so that two machines retrying do not collide again in step.
            let wait = Duration::from_millis(50 + random_below(200 << attempt.min(4)));
            info!(
                ours = ours.pointer.seq,
                theirs = theirs.pointer.seq,
                ?wait,
                "the index changed elsewhere at the same time; applying this change again"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// A pointer as new as `ours` or newer, other than ours, now kept by one of
    /// `holdings`' nodes: another machine wrote the owner's index at the same time.
    async fn pointer_elsewhere(
        &self,
        holdings: &[Holding],
        ours: &SignedPointer,
    ) -> Option<SignedPointer> {
        let owner = self.owner();
        let chain = self.chain().await.ok()?;
        let answers = futures::future::join_all(
            distinct_peers(holdings)
                .into_iter()
                .filter(|p| !self.has_failed(p))
                .map(|p| wire::get_pointer(&self.mesh, p, owner, chain)),
        )
        .await;
        answers
            .into_iter()
            .filter_map(|a| a.ok().flatten())
            // An older one is a node that did not take ours (full, or cut off), not a
            // change made elsewhere.
            .find(|p| p.pointer.seq >= ours.pointer.seq && p.pointer != ours.pointer)
    }

    /// Store `index` on `holdings` and point to it from each, and on `also` (other
    /// contracts on their nodes) as it fits; `nodes` is how many nodes the owner has in
    /// all: a pointer kept by half of them or fewer is an error.
    async fn save_index(
        &self,
        holdings: &[Holding],
        also: &[Holding],
        nodes: usize,
        old: Option<&SignedPointer>,
        index: &Index,
    ) -> Result<SignedPointer, StorageError> {
        let nonce = crypto::random_nonce().map_err(other)?;
        let sealed = crypto::seal(
            Cipher::Aes256Gcm,
            &self.keys.index_key(),
            Some(nonce),
            &encode_versioned(index),
        );
        // Every reader refuses a larger one: written, it would lock the owner out of every
        // name, and out of `rm` too.
        if sealed.len() > INDEX_BYTES_MAX {
            return Err(other(format!(
                "your index of {} names would take {}, more than the {} it may: nothing was \
                 changed. Remove names you no longer need first (`peergrid store rm PREFIX/`)",
                index.objects.len(),
                human_bytes(sealed.len() as u64),
                human_bytes(INDEX_BYTES_MAX as u64)
            )));
        }
        // A majority of the owner's nodes must keep the index the pointers will name.
        let majority = nodes / 2 + 1;
        let (id, mut kept_by) = self
            .put_everywhere(holdings, &sealed, "owner index", 0)
            .await?;
        let sealed = &sealed;
        let copies = futures::future::join_all(also.iter().map(|h| async move {
            let put = async {
                wire::put(&self.mesh, h.peer_id()?, h.contract, id, sealed)
                    .await
                    .map_err(StorageError::from)
            };
            (h, put.await)
        }))
        .await;
        for (h, result) in copies {
            match result {
                Ok(_) => {
                    kept_by.insert(h.node);
                }
                Err(e) => {
                    debug!(node = h.node, contract = h.contract, error = %e, "no copy of the owner index in this contract")
                }
            }
        }
        if kept_by.len() < majority {
            return Err(other(format!(
                "the new index could be stored on only {} of your {nodes} storage nodes, too few \
                 to be sure it outlives them: nothing was changed. `peergrid store status` \
                 shows why the others could not: a contract in its grace period takes nothing \
                 until you top up your account, a full one until you reserve more room \
                 (`peergrid store reserve`), a node down until it is back; cancel the \
                 contracts of nodes gone for good (`peergrid contract cancel ID`)",
                kept_by.len()
            )));
        }
        let pointer = SignedPointer::sign(
            &self.key,
            self.chain().await?,
            Pointer {
                owner: self.owner(),
                seq: old.map(|p| p.pointer.seq + 1).unwrap_or(1),
                index: id,
            },
        );
        // Only where the index is: a pointer to an index its node lacks would send readers
        // to the others for it.
        let results =
            futures::future::join_all(holdings.iter().filter(|h| kept_by.contains(&h.node)).map(
                |h| {
                    let p = pointer.clone();
                    async move {
                        wire::put_pointer(&self.mesh, h.peer_id()?, p)
                            .await
                            .map_err(StorageError::from)
                    }
                },
            ))
            .await;
        let kept = results.iter().filter(|r| r.is_ok()).count();
        // Kept by half or fewer, the change could be missed by the next one, which reads a
        // majority that need not include them, and written over.
        if kept * 2 <= nodes {
            return Err(other(format!(
                "the new index reached only {kept} of your {nodes} storage nodes, too few for the next change to be sure to see it: run the command again when more are up (`peergrid store status` shows which are down, or in their grace period until you top up your account), or cancel the contracts of nodes gone for good (`peergrid contract cancel ID`); nothing stored is lost"
            )));
        }
        // The previous index is no longer named by anything.
        if let Some(old) = old
            && old.pointer.index != id
        {
            for h in holdings.iter().chain(also) {
                if let Ok(peer) = h.peer_id() {
                    let _ =
                        wire::delete(&self.mesh, peer, h.contract, vec![old.pointer.index]).await;
                }
            }
        }
        Ok(pointer)
    }

    /// Fetch a blob from whichever of `peers` answers first with the right bytes.
    async fn fetch_blob(
        &self,
        peers: &[PeerId],
        id: Hash,
        len_max: u64,
    ) -> Result<Vec<u8>, StorageError> {
        // Two nodes first (reachable ones before those that failed), one more for each
        // failure and for each wait without an answer: a manifest may be a hundred
        // megabytes, and asking every node at once received it from every node.
        let mut order: Vec<PeerId> = peers.to_vec();
        order.sort_by_key(|p| self.has_failed(p));
        let mut pending = std::collections::VecDeque::from(order);
        let ask = |p: PeerId| async move { wire::get(&self.mesh, p, id, len_max).await };
        let mut tries = FuturesUnordered::new();
        for p in pending.drain(..pending.len().min(2)) {
            tries.push(ask(p));
        }
        let mut wait = Duration::from_millis(500);
        let mut last = None;
        loop {
            if tries.is_empty() {
                match pending.pop_front() {
                    Some(p) => tries.push(ask(p)),
                    None => break,
                }
            }
            tokio::select! {
                r = tries.next() => match r {
                    Some(Ok(bytes)) => return Ok(bytes),
                    Some(Err(e)) => {
                        last = Some(e);
                        if let Some(p) = pending.pop_front() {
                            tries.push(ask(p));
                        }
                    }
                    None => {}
                },
                // At most three at once on a timer: a large blob on a slow link is not
                // worth asking of every node.
                _ = tokio::time::sleep(wait), if !pending.is_empty() && tries.len() < 3 => {
                    if let Some(p) = pending.pop_front() {
                        tries.push(ask(p));
                    }
                    wait *= 2;
                }
            }
        }
        Err(other(format!(
            "no node of the owner's storage serves {id}: it was removed, or the nodes that hold it are down (`peergrid node list`){}",
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )))
    }

    /// Which of `ids` `peer` serves, asked in requests of at most [`wire::IDS_MAX`].
    async fn has_all(&self, peer: PeerId, ids: &[Hash]) -> Result<Vec<bool>, WireError> {
        let mut flags = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(wire::IDS_MAX) {
            flags.extend(wire::has(&self.mesh, peer, chunk.to_vec()).await?);
        }
        Ok(flags)
    }

    /// The manifest a capability names, and the owner's nodes by id.
    pub async fn open(&self, cap: &Capability) -> Result<(Manifest, Vec<Holding>), StorageError> {
        let holdings = self.reached_holdings(cap.owner).await?;
        let manifest = self.open_among(cap, &holdings).await?;
        Ok((manifest, holdings))
    }

    /// `owner`'s holdings (see [`Storage::holdings`]), their nodes dialed: for many
    /// objects of one owner, read once and given to [`Storage::open_among`] for each.
    pub async fn reached_holdings(&self, owner: AccountId) -> Result<Vec<Holding>, StorageError> {
        let holdings = self.holdings(owner).await?;
        if holdings.is_empty() {
            return Err(other(format!(
                "{owner} has no storage contract left: its objects are gone"
            )));
        }
        self.connect_all(&holdings).await;
        Ok(holdings)
    }

    /// The manifest of `cap`, an object of the owner of `holdings`.
    pub async fn open_among(
        &self,
        cap: &Capability,
        holdings: &[Holding],
    ) -> Result<Manifest, StorageError> {
        self.read_manifest(&distinct_peers(holdings), cap).await
    }

    /// The manifest `cap` names, from whichever of `peers` serves it first.
    async fn read_manifest(
        &self,
        peers: &[PeerId],
        cap: &Capability,
    ) -> Result<Manifest, StorageError> {
        let sealed = self
            .fetch_blob(
                peers,
                cap.manifest,
                crate::format::MANIFEST_BYTES_MAX as u64,
            )
            .await?;
        let plain = crypto::open(cap.cipher, &cap.key, "the manifest", sealed)
            .map_err(|e| other(e.to_string()))?;
        Ok(Manifest::decode(&plain)?)
    }

    /// Read the object `cap` names into `out`, `range` bytes of it if given; resumes a
    /// download that was interrupted (kept as `OUT.partial`).
    pub async fn get(
        &self,
        cap: &Capability,
        out: &Path,
        range: Option<(u64, u64)>,
        progress: Progress<'_>,
    ) -> Result<u64, StorageError> {
        let (manifest, holdings) = self.open(cap).await?;
        let got = (self.get_opened(cap, &manifest, &holdings, out, range, progress)).await?;
        Ok(got.written)
    }

    /// Whether the file at `path` holds exactly the bytes of `manifest`'s object, so that
    /// a get into it has nothing to write: told by the keys of its segments, which come
    /// from the owner's secret and their bytes (another owner's object never matches).
    /// Reads the file once; false when it cannot be read.
    pub async fn holds_already(&self, manifest: &Manifest, path: &Path) -> bool {
        let same_len =
            std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == manifest.size);
        if !same_len {
            return false;
        }
        let keys = self.keys.clone();
        let salt = keys.object_salt(&manifest.name);
        let (cipher, path) = (manifest.cipher, path.to_path_buf());
        let segments: Vec<(u32, [u8; 32])> = (manifest.segments.iter())
            .map(|s| (s.plain_len, s.key))
            .collect();
        let longest = segments.iter().map(|(len, _)| *len).max().unwrap_or(0);
        let mut buf = vec![0u8; longest as usize];
        let same = crate::blocking(move || {
            let mut file = std::fs::File::open(&path)?;
            for (len, key) in segments {
                let plain = &mut buf[..len as usize];
                std::io::Read::read_exact(&mut file, plain)?;
                if keys.content_key(&salt, cipher, plain) != key {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        same.await.unwrap_or(false)
    }

    /// [`Storage::get`] of an object [`Storage::open`] already gave, for a caller that
    /// needed its manifest first (its size for a progress bar): not read twice.
    pub async fn get_opened(
        &self,
        cap: &Capability,
        manifest: &Manifest,
        holdings: &[Holding],
        out: &Path,
        range: Option<(u64, u64)>,
        progress: Progress<'_>,
    ) -> Result<Got, StorageError> {
        let (start, end) = match range {
            Some((s, e)) if s <= e && e <= manifest.size => (s, e),
            Some((s, e)) => {
                return Err(other(format!(
                    "range {s}-{e} is outside the object's {} bytes",
                    manifest.size
                )));
            }
            None => (0, manifest.size),
        };
        let seg_bytes = u64::from(manifest.segment_bytes);
        let first = start / seg_bytes;
        let last = if end == start {
            first
        } else {
            (end - 1) / seg_bytes + 1
        };
        let file_err = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| StorageError::File { what, path, source }
        };
        // Standard output (`-`), a device or a pipe is written straight: it cannot be
        // resumed, synced or renamed over (a rename over `/dev/null` replaced it). The
        // standard output is this process's own, not reopened: a shell's `>>` appends.
        let to_stdout = writes_to_stdout(out);
        refuse_folder(out)?;
        // By what it is, not where (`/dev/shm` holds plain files, to be written whole),
        // except a process's own descriptors: `/dev/stderr` or `/dev/fd/N` may stand for a
        // plain file opened by a shell (`2>>log`), written where the shell put it.
        let descriptor = ["/dev/stdout", "/dev/stderr", "/dev/stdin"]
            .iter()
            .any(|d| out == Path::new(d))
            || out.starts_with("/dev/fd")
            || out.starts_with("/proc/self/fd");
        let stream = std::fs::metadata(out).is_ok_and(|m| !m.is_file()) || to_stdout || descriptor;
        // A link to a file is written through, as `cp` does: the file it names is
        // replaced, the link stays.
        let linked;
        let out = match std::fs::symlink_metadata(out) {
            Ok(m) if m.file_type().is_symlink() && !stream => {
                linked = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
                linked.as_path()
            }
            _ => out,
        };
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        let state_file = PathBuf::from(format!("{}.partial.json", out.display()));
        #[derive(Serialize, Deserialize, PartialEq)]
        struct Resume {
            manifest: Hash,
            start: u64,
            end: u64,
            segments_done: u64,
        }
        let done_before = |resume_from: u64| {
            if resume_from == first {
                0
            } else {
                ((resume_from.saturating_mul(seg_bytes)).max(start) - start).min(end - start)
            }
        };
        let mut resume_from = first;
        if !stream
            && let Ok(bytes) = std::fs::read(&state_file)
            && let Ok(r) = serde_json::from_slice::<Resume>(&bytes)
            && r.manifest == cap.manifest
            && (r.start, r.end) == (start, end)
        {
            let from = first.saturating_add(r.segments_done);
            // The state says how far the file got; the file must agree (removed or cut
            // short since, it would be resumed with a hole of zeros), and hold the bytes
            // fetched (changed since, it would be completed around them and renamed to
            // OUT as the object).
            let on_disk = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            if on_disk < done_before(from) {
                warn!(
                    path = %partial.display(),
                    "the interrupted download's file is shorter than its state says; starting over"
                );
            } else if let Some(i) = self
                .changed_segment(manifest, &partial, (start, end), first..from)
                .await
            {
                warn!(
                    path = %partial.display(),
                    segment = i,
                    "the interrupted download's file changed since it was written; starting over"
                );
            } else {
                resume_from = from;
                info!(
                    segments = r.segments_done,
                    "resuming an interrupted download"
                );
            }
        }
        let written_before = done_before(resume_from);
        let target = if stream {
            out.to_path_buf()
        } else {
            partial.clone()
        };
        let opened = {
            let target = target.clone();
            crate::blocking(move || {
                Ok(if to_stdout {
                    use std::os::fd::AsFd;
                    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
                    Output::Stream(std::fs::File::from(fd))
                } else if stream {
                    // Reopened, a descriptor's file starts at byte 0: appended to, the bytes
                    // go where the shell's `>>` (or a fresh `>`) would put them.
                    Output::Stream(
                        std::fs::OpenOptions::new()
                            .write(true)
                            .append(descriptor)
                            .open(&target)?,
                    )
                } else {
                    Output::File(DirectWriter::resume(&target, written_before)?)
                })
            })
            .await
        };
        let output = opened.map_err(file_err("cannot write", &target))?;
        progress(written_before);
        // One blocking thread writes the segments while the next ones are fetched, and
        // every eighth syncs the file and moves the resume point past it. It gives the
        // buffers back to be decoded into again: fresh memory for every segment cost
        // more to fault in and zero than the bytes cost to decode.
        let (to_writer, mut pieces) = tokio::sync::mpsc::channel::<Piece>(WRITES_QUEUED);
        let give_back = self.segments.clone();
        let writer = {
            let (target, state_file, manifest) = (target.clone(), state_file.clone(), cap.manifest);
            tokio::task::spawn_blocking(move || -> Result<(), StorageError> {
                let mut output = output;
                while let Some(Piece {
                    mut buf,
                    from,
                    len,
                    done,
                }) = pieces.blocking_recv()
                {
                    output
                        .write(&mut buf, from, len)
                        .map_err(file_err("cannot write", &target))?;
                    if let Some(segments_done) = done {
                        output
                            .sync_data()
                            .map_err(file_err("cannot sync", &target))?;
                        let state = Resume {
                            manifest,
                            start,
                            end,
                            segments_done,
                        };
                        let bytes = serde_json::to_vec(&state).map_err(|e| other(e.to_string()))?;
                        crate::store::write_atomic(&state_file, &bytes)
                            .map_err(file_err("cannot write", &state_file))?;
                    }
                    give_back.give(buf);
                }
                output.finish().map_err(file_err("cannot sync", &target))
            })
        };
        let peers = peers_by_node(holdings);
        let all_peers: Vec<PeerId> = peers.values().copied().collect();
        let mut written = written_before;
        let fetched = async {
            let mut fetches = futures::stream::iter(resume_from..last)
                .map(|i| {
                    let segment = &manifest.segments[i as usize];
                    self.fetch_segment(manifest, segment, &peers, &all_peers)
                })
                .buffered(GETS_IN_FLIGHT);
            let mut seg = resume_from;
            while let Some(plain) = fetches.next().await {
                let (buf, plain) = plain.map_err(|e| other(format!("segment {seg}: {e}")))?;
                let seg_start = seg * seg_bytes;
                let from = start.max(seg_start) - seg_start;
                let to = end.min(seg_start + plain.len() as u64) - seg_start;
                let wanted = plain.start + from as usize..plain.start + to as usize;
                let len = wanted.len();
                seg += 1;
                let done = (!stream && (seg % 8 == 0 || seg == last)).then_some(seg - first);
                let piece = Piece {
                    buf,
                    from: wanted.start,
                    len,
                    done,
                };
                if to_writer.send(piece).await.is_err() {
                    // The writer stopped on an error, which it returns below.
                    break;
                }
                written += len as u64;
                progress(written);
            }
            Ok::<(), StorageError>(())
        }
        .await;
        drop(to_writer);
        let wrote = writer.await.map_err(|e| other(e.to_string()))?;
        // What to do next depends on why shards were missing: a contract in grace (its
        // node's refusal says so) is the owner's to top up; otherwise nodes were down, or
        // the contracts holding the shards are gone.
        let next = |e: &StorageError| {
            let said = e.to_string();
            let again = if stream {
                "run the same get again"
            } else {
                "run the same get again: it goes on after what was written"
            };
            if said.contains(crate::store::GRACE_REFUSAL) {
                format!(
                    "some shards are in a storage contract in grace: top up its owner's balance, then {again}"
                )
            } else {
                format!(
                    "if nodes were down, {again}; if the contracts that held the shards were deleted (`peergrid contract list` shows your contracts and their states), more than the object's parity is gone and it cannot be read"
                )
            }
        };
        fetched.map_err(|e| other(format!("{e} ({})", next(&e))))?;
        wrote?;
        if !stream {
            tokio::fs::rename(&partial, out)
                .await
                .map_err(file_err("cannot write", out))?;
            // The rename itself made durable before the resume state goes: a crash now
            // must not leave neither OUT nor the state to resume from.
            let folder = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let _ = tokio::task::spawn_blocking(move || {
                std::fs::File::open(folder).and_then(|d| d.sync_all())
            })
            .await;
            let _ = tokio::fs::remove_file(&state_file).await;
        }
        Ok(Got {
            written,
            resumed: written_before,
        })
    }

    /// The first of `segments` whose plaintext in `partial` (an interrupted download of
    /// `range` of the object) is not the segment the manifest names, if any: each is
    /// sealed again with its key and coded, and its shards' addresses compared, as anyone
    /// holding the capability can. A segment the range holds only part of cannot be
    /// checked so, and is taken as written.
    async fn changed_segment(
        &self,
        manifest: &Manifest,
        partial: &Path,
        (start, end): (u64, u64),
        segments: std::ops::Range<u64>,
    ) -> Option<u64> {
        let manifest = manifest.clone();
        let partial = partial.to_path_buf();
        let checked = crate::blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = std::fs::File::open(&partial)?;
            let seg_bytes = u64::from(manifest.segment_bytes);
            for i in segments {
                let Some(segment) = manifest.segments.get(i as usize) else {
                    return Ok(Some(i));
                };
                let seg_start = i * seg_bytes;
                let seg_end = seg_start + u64::from(segment.plain_len);
                if seg_start < start || seg_end > end {
                    continue;
                }
                let mut sealable = segment_buffer(manifest.scheme, segment.plain_len as usize);
                file.seek(SeekFrom::Start(seg_start - start))?;
                (&mut file)
                    .take(u64::from(segment.plain_len))
                    .read_to_end(&mut sealable)?;
                crypto::seal_in_place(manifest.cipher, &segment.key, None, &mut sealable);
                let same = sealable.len() == segment.sealed_len as usize
                    && erasure::encode_owned(manifest.scheme, sealable).is_ok_and(|shards| {
                        shards
                            .iter()
                            .map(shard_id)
                            .eq(segment.shards.iter().copied())
                    });
                if !same {
                    return Ok(Some(i));
                }
            }
            Ok(None)
        })
        .await;
        // A file that cannot be read back is not resumed either.
        checked.unwrap_or(Some(0))
    }

    /// Fetch any `k` shards of `segment`, decode and open it: a buffer and where in it
    /// the segment's plaintext lies (it is opened in place, not moved).
    async fn fetch_segment(
        &self,
        manifest: &Manifest,
        segment: &Segment,
        peers: &HashMap<NodeId, PeerId>,
        all_peers: &[PeerId],
    ) -> Result<(AlignedBuf, std::ops::Range<usize>), StorageError> {
        let scheme = manifest.scheme;
        let k = usize::from(scheme.k);
        let n = scheme.n();
        let sealed_len = segment.sealed_len as usize;
        let shard_len = scheme.shard_len(sealed_len);
        // The sealed segment starts a nonce before a block boundary, so that its
        // plaintext, opened in place, starts on one: a get writes it to disk from there.
        // Its data shards (the sealed bytes, then the coder's padding) are received
        // straight into their places in it; parity shards, needed only to rebuild a
        // missing one, into buffers of their own.
        let at = ALIGN - NONCE_BYTES;
        let mut buf = self.segments.take(at + k * shard_len);
        // Data shards first (no decoding needed when they all arrive), nodes that failed last.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&j| {
            let failed = peers
                .get(&segment.nodes[j])
                .is_none_or(|p| self.has_failed(p));
            (failed, j >= k)
        });
        let mut next = order.into_iter();
        let mut got: Vec<Option<Fetched>> = (0..n).map(|_| None).collect();
        let mut have = 0;
        let mut errors = Vec::new();
        {
            // A data shard's place goes with its fetch and comes back if the fetch fails.
            let mut places: Vec<Option<&mut [u8]>> = buf[at..at + k * shard_len]
                .chunks_mut(shard_len)
                .map(Some)
                .collect();
            // First from the nodes the manifest names; if too few answer, ask the owner's
            // other nodes for the missing shards (repair may have moved them).
            for pass in 0..2 {
                let elsewhere = pass == 1;
                let fetch = one_lifetime(|j: usize, mut place: Option<&mut [u8]>| {
                    let id = segment.shards[j];
                    let hinted = peers.get(&segment.nodes[j]).copied();
                    async move {
                        if !elsewhere {
                            let Some(p) = hinted else {
                                let e = other(format!(
                                    "node {} of shard {id} holds no contract of the owner",
                                    segment.nodes[j]
                                ));
                                return (j, place, Err(e));
                            };
                            let fetched = match place.as_deref_mut() {
                                Some(out) => get_into_retrying(&self.mesh, p, id, out)
                                    .await
                                    .map(|()| Fetched::InPlace),
                                None => get_owned(&self.mesh, p, id, shard_len)
                                    .await
                                    .map(Fetched::Own),
                            };
                            if let Err(e) = &fetched
                                && e.is_unreachable()
                            {
                                self.mark_failed(p);
                            }
                            return (j, place, fetched.map_err(StorageError::from));
                        }
                        let others: Vec<_> = all_peers
                            .iter()
                            .filter(|p| Some(**p) != hinted && !self.has_failed(p))
                            .map(|&p| async move { get_owned(&self.mesh, p, id, shard_len).await })
                            .collect();
                        if others.is_empty() {
                            let e = other(format!("no other node to ask for shard {id}"));
                            return (j, place, Err(e));
                        }
                        // The first that has it; if none does, every node's answer, since
                        // which of them failed how is what tells a lost shard from a slow node.
                        let mut asking: FuturesUnordered<_> = others.into_iter().collect();
                        let mut answers = Vec::new();
                        while let Some(answer) = asking.next().await {
                            match answer {
                                Ok(b) => return (j, place, Ok(Fetched::Own(b))),
                                Err(e) => answers.push(e.to_string()),
                            }
                        }
                        let e = other(format!(
                            "shard {id} is on none of your other nodes ({})",
                            answers.join("; ")
                        ));
                        (j, place, Err(e))
                    }
                });
                // From other nodes a shard is asked of several at once, so into a buffer
                // of its own, not into its place.
                let mut start = |j: usize| {
                    let place = if elsewhere {
                        None
                    } else {
                        places.get_mut(j).and_then(Option::take)
                    };
                    fetch(j, place)
                };
                let mut running = FuturesUnordered::new();
                let mut queue: Box<dyn Iterator<Item = usize> + Send> = if elsewhere {
                    Box::new(
                        (0..n)
                            .filter(|j| got[*j].is_none())
                            .collect::<Vec<_>>()
                            .into_iter(),
                    )
                } else {
                    Box::new(next.by_ref().collect::<Vec<_>>().into_iter())
                };
                let started = tokio::time::Instant::now();
                let mut in_flight = HashSet::new();
                for j in queue.by_ref().take(k - have) {
                    in_flight.insert(j);
                    running.push(start(j));
                }
                // Spares hedge against stragglers: the shards are of one size, so once one has
                // arrived the others are due in about as long; one not in by half as long
                // again marks a slow or stuck node, and a spare is asked then, one more each
                // half of that first time after (or SPARE_AFTER with nothing in, then twice
                // as long for each next). Asked at once, a spare was sent whole before its
                // cancel reached the node: a third more bytes served for every get.
                let spare_timer = tokio::time::sleep(SPARE_AFTER);
                tokio::pin!(spare_timer);
                let mut spares_left = true;
                let mut first_in: Option<Duration> = None;
                let mut quiet = SPARE_AFTER;
                let mut returned = Vec::new();
                loop {
                    tokio::select! {
                        next = running.next() => {
                            let Some((j, place, r)) = next else { break };
                            in_flight.remove(&j);
                            match r {
                                Ok(fetched) => {
                                    got[j] = Some(fetched);
                                    have += 1;
                                    if have == k {
                                        break;
                                    }
                                    if first_in.is_none() {
                                        let first = started.elapsed();
                                        first_in = Some(first);
                                        let due = started + first * 3 / 2;
                                        if due < spare_timer.deadline() {
                                            spare_timer.as_mut().reset(due);
                                        }
                                    }
                                }
                                Err(e) => {
                                    debug!(shard = j, error = %e, "shard not fetched");
                                    errors.push(e.to_string());
                                    returned.push((j, place));
                                    if let Some(j) = queue.next() {
                                        in_flight.insert(j);
                                        running.push(start(j));
                                    }
                                }
                            }
                        }
                        () = &mut spare_timer, if spares_left => match queue.next() {
                            Some(j) => {
                                in_flight.insert(j);
                                running.push(start(j));
                                // With nothing in yet the link may just be slow: each
                                // further spare waits twice as long as the last.
                                let again = match first_in {
                                    Some(f) => (f / 2).max(Duration::from_millis(1)),
                                    None => {
                                        quiet *= 2;
                                        quiet
                                    }
                                };
                                spare_timer.as_mut().reset(tokio::time::Instant::now() + again);
                            }
                            None => spares_left = false,
                        },
                    }
                }
                // A parity shard made up the k while a data shard, asked at the same time,
                // is still arriving: decoding costs about ten times what encoding does, so the
                // data shard gets a short grace (a quarter of the time so far, 2 to 50 ms)
                // before the segment is decoded without it. A slow node is not waited for.
                let data_missing =
                    |got: &[Option<Fetched>]| (0..k).filter(|j| got[*j].is_none()).count();
                if have >= k
                    && data_missing(&got) > 0
                    && (0..k).all(|j| got[j].is_some() || in_flight.contains(&j))
                {
                    let grace = (started.elapsed() / 4)
                        .clamp(Duration::from_millis(2), Duration::from_millis(50));
                    let _ = tokio::time::timeout(grace, async {
                        while let Some((j, _, r)) = running.next().await {
                            if let Ok(fetched) = r {
                                got[j] = Some(fetched);
                                if data_missing(&got) == 0 {
                                    break;
                                }
                            }
                        }
                    })
                    .await;
                }
                drop(running);
                for (j, place) in returned {
                    if let Some(slot) = places.get_mut(j) {
                        *slot = place;
                    }
                }
                if have == k || all_peers.len() <= 1 {
                    break;
                }
            }
        }
        if have < k {
            self.segments.give(buf);
            return Err(other(format!(
                "only {have} of the {k} shards needed could be fetched: {}",
                errors.join("; ")
            )));
        }
        let (cipher, key) = (manifest.cipher, segment.key);
        let segment_plain_len = segment.plain_len as usize;
        tokio::task::spawn_blocking(move || {
            let data = &mut buf[at..at + k * shard_len];
            let mut present = vec![false; k];
            let mut parity: Vec<Option<Vec<u8>>> = vec![None; n - k];
            for (j, fetched) in got.into_iter().enumerate() {
                match fetched {
                    Some(Fetched::InPlace) => present[j] = true,
                    Some(Fetched::Own(bytes)) if j < k => {
                        data[j * shard_len..(j + 1) * shard_len].copy_from_slice(&bytes);
                        present[j] = true;
                        crate::spare::give(bytes);
                    }
                    Some(Fetched::Own(bytes)) => parity[j - k] = Some(bytes),
                    None => {}
                }
            }
            let restored = erasure::restore_in_place(scheme, data, &present, &parity);
            parity.into_iter().flatten().for_each(crate::spare::give);
            restored.map_err(|e| other(e.to_string()))?;
            let plain =
                crypto::open_slice(cipher, &key, "a segment", &mut buf[at..at + sealed_len])
                    .map_err(|e| other(e.to_string()))?;
            if plain.len() != segment_plain_len {
                return Err(other("a segment decrypted to a wrong length"));
            }
            let plain = at + plain.start..at + plain.end;
            Ok::<_, StorageError>((buf, plain))
        })
        .await
        .map_err(|e| other(e.to_string()))?
    }

    /// Restore the redundancy of the object `name`: every shard no reachable node of the
    /// owner serves is rebuilt from any `k` others (the same bytes under the same key
    /// give the same shard, so the manifest and every capability stay valid) and put on
    /// a node that holds none of that segment's shards, distinct farms first.
    pub async fn repair(
        &self,
        name: &str,
        entry: &IndexEntry,
    ) -> Result<RepairReport, StorageError> {
        let (manifest, _) = self.open(&entry.capability).await?;
        let holdings = self.writable_holdings().await?;
        // Where each shard is now, and the manifest: one `has` per node for all of them.
        let manifest_id = entry.capability.manifest;
        let mut ids: Vec<Hash> = manifest.placements().map(|(h, _)| h).collect();
        ids.push(manifest_id);
        let mut located: HashMap<Hash, Vec<usize>> = HashMap::new();
        let mut reachable: HashSet<usize> = HashSet::new();
        let answers = futures::future::join_all(holdings.iter().map(|h| {
            let ids = ids.clone();
            async move { Ok::<_, StorageError>(self.has_all(h.peer_id()?, &ids).await?) }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(flags) => {
                    reachable.insert(i);
                    for (id, has) in ids.iter().zip(flags) {
                        if has {
                            located.entry(*id).or_default().push(i);
                        }
                    }
                }
                Err(e) => {
                    warn!(node = holdings[i].node, error = %e, "cannot ask a node which shards it holds")
                }
            }
        }
        let salt = self.keys.object_salt(name);
        let mut report = RepairReport {
            name: name.to_string(),
            segments: manifest.segments.len() as u64,
            segments_repaired: 0,
            shards_rebuilt: 0,
            shards_missing: 0,
            manifest_copies: self
                .copy_manifest(&holdings, &reachable, &located, manifest_id)
                .await,
            scheme: manifest.scheme,
            widen_to: widen_to(manifest.scheme, holdings.len()),
        };
        let scheme = manifest.scheme;
        for (index, segment) in manifest.segments.iter().enumerate() {
            let lost: Vec<usize> = (0..scheme.n())
                .filter(|j| !located.contains_key(&segment.shards[*j]))
                .collect();
            if lost.is_empty() {
                continue;
            }
            report.shards_missing += lost.len() as u64;
            let busy: HashSet<usize> = segment
                .shards
                .iter()
                .filter_map(|id| located.get(id))
                .flatten()
                .copied()
                .collect();
            let mut free: Vec<usize> = (0..holdings.len())
                .filter(|i| reachable.contains(i) && !busy.contains(i))
                .collect();
            if free.is_empty() {
                // Every reachable node holds a shard of it already: rebuilding it would
                // find no place for what it rebuilt.
                continue;
            }
            let peers = peers_by_node(&holdings);
            let all_peers: Vec<PeerId> = peers.values().copied().collect();
            let (buf, plain) = self
                .fetch_segment(&manifest, segment, &peers, &all_peers)
                .await
                .map_err(|e| other(format!("segment {index} cannot be rebuilt: {e}")))?;
            let keys = self.keys.clone();
            let (shards, rebuilt) = tokio::task::spawn_blocking(move || {
                encode_segment(&keys, &salt, scheme, &buf[plain], Cipher::Aes256Gcm)
            })
            .await
            .map_err(|e| other(e.to_string()))?
            .map_err(other)?;
            if rebuilt.shards != segment.shards {
                return Err(other(format!(
                    "segment {index} re-encodes to other shards than its manifest lists; it was not written by this key"
                )));
            }
            let busy_farms: HashSet<FarmId> = busy.iter().map(|&i| holdings[i].farm).collect();
            free.sort_by_key(|&i| (busy_farms.contains(&holdings[i].farm), i));
            let mut free = free.into_iter();
            let mut rebuilt_here = 0;
            for j in lost {
                let mut stored = false;
                for target in free.by_ref() {
                    let h = &holdings[target];
                    let Ok(peer) = h.peer_id() else { continue };
                    match wire::put(
                        &self.mesh,
                        peer,
                        h.contract,
                        segment.shards[j],
                        shards.get(j),
                    )
                    .await
                    {
                        Ok(_) => {
                            located.entry(segment.shards[j]).or_default().push(target);
                            stored = true;
                            break;
                        }
                        Err(e) => {
                            warn!(node = h.node, error = %e, "cannot put a rebuilt shard; trying another node")
                        }
                    }
                }
                if stored {
                    rebuilt_here += 1;
                }
            }
            if rebuilt_here > 0 {
                report.segments_repaired += 1;
                report.shards_rebuilt += rebuilt_here;
            }
        }
        Ok(report)
    }

    /// Put the sealed manifest `id` on every reachable node (the `reachable`th of
    /// `holdings`) that `located` says lacks it: a put leaves it on the nodes of its day,
    /// and once those have all gone, shards repaired onto others would read no more.
    /// Returns how many nodes were given it.
    async fn copy_manifest(
        &self,
        holdings: &[Holding],
        reachable: &HashSet<usize>,
        located: &HashMap<Hash, Vec<usize>>,
        id: Hash,
    ) -> u64 {
        let has = located.get(&id).map(Vec::as_slice).unwrap_or_default();
        let lacking: Vec<&Holding> = (0..holdings.len())
            .filter(|i| reachable.contains(i) && !has.contains(i))
            .map(|i| &holdings[i])
            .collect();
        if lacking.is_empty() {
            return 0;
        }
        let sealed = match self
            .fetch_blob(
                &distinct_peers(holdings),
                id,
                crate::format::MANIFEST_BYTES_MAX as u64,
            )
            .await
        {
            Ok(sealed) => sealed,
            Err(e) => {
                warn!(error = %e, "cannot read the manifest to copy it to the nodes that lack it");
                return 0;
            }
        };
        let sealed = &sealed;
        let copied = futures::future::join_all(lacking.iter().map(|h| async move {
            let peer = h.peer_id().ok()?;
            match wire::put(&self.mesh, peer, h.contract, id, sealed).await {
                Ok(_) => Some(()),
                Err(e) => {
                    warn!(node = h.node, error = %e, "cannot copy the manifest to a node");
                    None
                }
            }
        }))
        .await;
        copied.into_iter().flatten().count() as u64
    }

    /// Store `name` again as `scheme`, wider than it was put with ([`widen_to`]). Each
    /// segment is read from the nodes and put again as it arrives (no local copy): the
    /// object gets a new capability, and its old shards are removed (so its old
    /// capability, if you shared it, reads no more). `progress` counts bytes stored.
    pub async fn widen(
        &self,
        name: &str,
        entry: &IndexEntry,
        scheme: Scheme,
        progress: Progress<'_>,
    ) -> Result<PutReport, StorageError> {
        let (manifest, holdings) = self.open(&entry.capability).await?;
        if manifest.segment_bytes != SEGMENT_BYTES {
            return Err(other(format!(
                "{name} is stored in segments of {} bytes and this version re-codes only segments of {SEGMENT_BYTES}: get it and put it again (`peergrid store get {name} FILE`, then `peergrid store put FILE {name}`)",
                manifest.segment_bytes
            )));
        }
        let peers = peers_by_node(&holdings);
        let all = peers.values().copied().collect();
        let size = manifest.size;
        let source = Source::Object {
            manifest,
            peers,
            all,
        };
        let replaces = Some(entry.capability.manifest);
        self.put_one(source, size, name, Some(scheme), progress, replaces)
            .await
    }

    /// Segment `seg` of `source`, `len` bytes from `offset`, in a [`segment_buffer`] for
    /// `scheme`.
    async fn read_segment(
        &self,
        source: &Source<'_>,
        scheme: Scheme,
        seg: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, StorageError> {
        match source {
            Source::File { file, path } => {
                let file = file.clone();
                crate::blocking(move || {
                    // Read into, not zeroed first: zeroing was 3 % of a put's client.
                    let mut buf = crate::spare::take_len_with_room(
                        NONCE_BYTES + len,
                        segment_room(scheme, len),
                    );
                    let plain = &mut buf[NONCE_BYTES..];
                    std::os::unix::fs::FileExt::read_exact_at(&*file, plain, offset)?;
                    Ok(buf)
                })
                .await
                .map_err(|source| StorageError::File {
                    what: "cannot read",
                    path: path.to_path_buf(),
                    source,
                })
            }
            Source::Object {
                manifest,
                peers,
                all,
            } => {
                let segment = manifest
                    .segments
                    .get(seg as usize)
                    .ok_or_else(|| other(format!("the object has no segment {seg}")))?;
                let (buf, range) = self
                    .fetch_segment(manifest, segment, peers, all)
                    .await
                    .map_err(|e| other(format!("segment {seg}: {e}")))?;
                if range.len() != len {
                    return Err(other(format!(
                        "segment {seg} holds {} bytes, its manifest says {len}",
                        range.len()
                    )));
                }
                let mut sealable = segment_buffer(scheme, len);
                sealable.extend_from_slice(&buf[range]);
                self.segments.give(buf);
                Ok(sealable)
            }
        }
    }

    /// Remove the object `name`: from the index, then its shards from the nodes.
    pub async fn remove(&self, name: &str) -> Result<IndexEntry, StorageError> {
        let holdings = self.writable_holdings().await?;
        let mut removed: Option<IndexEntry> = None;
        let entry = self
            .update_index(&holdings, |index| {
                if let Some(entry) = index.objects.remove(name) {
                    removed = Some(entry.clone());
                    return Ok(entry);
                }
                // A try again after a change from elsewhere: this command's first try
                // removed it, and its index won after all.
                removed.clone().ok_or_else(|| {
                    other(format!(
                        "no object named {name:?} (see `peergrid store ls`)"
                    ))
                })
            })
            .await?;
        self.delete_object(&entry.capability, &HashSet::new()).await;
        Ok(entry)
    }

    /// Remove every object whose name starts with `prefix/` in one index change, then
    /// their shards (`progress` counts the objects done); the objects removed, by name.
    pub async fn remove_under(
        &self,
        prefix: &str,
        progress: Progress<'_>,
    ) -> Result<Vec<(String, IndexEntry)>, StorageError> {
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(other(
                "give the prefix of the objects to remove, like photos/",
            ));
        }
        let under = format!("{prefix}/");
        let holdings = self.writable_holdings().await?;
        // Kept across tries: one after a change from elsewhere may find none left, this
        // command's first try having removed them in an index that won after all.
        let mut removed: BTreeMap<String, IndexEntry> = BTreeMap::new();
        self.update_index(&holdings, |index| {
            let names: Vec<String> = index
                .starting_with(&under)
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                if let Some(entry) = index.objects.remove(&name) {
                    removed.entry(name).or_insert(entry);
                }
            }
            if removed.is_empty() {
                return Err(other(format!(
                    "no object's name starts with {under:?} (see `peergrid store ls`)"
                )));
            }
            Ok(())
        })
        .await?;
        for (done, entry) in removed.values().enumerate() {
            self.delete_object(&entry.capability, &HashSet::new()).await;
            progress(done as u64 + 1);
        }
        Ok(removed.into_iter().collect())
    }

    /// Best effort: delete an object's shards and manifest, except those in `keep` and
    /// those other objects may share (all padding).
    async fn delete_object(&self, cap: &Capability, keep: &HashSet<Hash>) {
        let Ok((manifest, holdings)) = self.open(cap).await else {
            return;
        };
        let mut keep = keep.clone();
        keep.extend(manifest.padding_shards());
        let keep = &keep;
        let mut ids: Vec<Hash> = manifest
            .placements()
            .map(|(h, _)| h)
            .filter(|h| !keep.contains(h))
            .collect();
        ids.push(cap.manifest);
        let mut on_node: HashMap<NodeId, usize> = HashMap::new();
        for (h, node) in manifest.placements() {
            if !keep.contains(&h) {
                *on_node.entry(node).or_default() += 1;
            }
        }
        let (ids, on_node) = (&ids, &on_node);
        futures::future::join_all(holdings.iter().map(|h| async move {
            let peer = h.peer_id().ok()?;
            if self.has_failed(&peer) {
                // Its dial would only time out again. What it holds still counts in its
                // contract's usage until the contract ends.
                let left = on_node.get(&h.node).copied().unwrap_or(0);
                if left > 0 {
                    warn!(node = h.node, shards = left, "a node of your storage did not answer: its shards of this object stay on it until `peergrid store gc` runs while it is up");
                }
                return None;
            }
            for chunk in ids.chunks(wire::IDS_MAX) {
                if let Err(e) = wire::delete(&self.mesh, peer, h.contract, chunk.to_vec()).await {
                    debug!(node = h.node, error = %e, "cannot delete shards");
                }
            }
            Some(())
        }))
        .await;
    }

    /// Remove from the owner's nodes the shards that nothing the owner stores names: those
    /// of an object removed while one of its nodes was down, of a put cut short and never
    /// retried, or of an index replaced while a node was down, and the copies a node that
    /// was down keeps of shards a repair rebuilt elsewhere. A shard written less than
    /// `older_than` ago is left, since a put from another machine with the same words may
    /// still be under way and not yet in the index. Nothing is removed when `dry_run`, nor
    /// when any object's manifest cannot be read (its shards cannot be told from garbage),
    /// nor unless more than half of the owner's nodes answer and one keeps a pointer (the
    /// index read could be older than the newest).
    pub async fn collect_garbage(
        &self,
        older_than: Duration,
        dry_run: bool,
    ) -> Result<Vec<GarbageReport>, StorageError> {
        // A put from this home adds its name under the same lock, after its shards.
        let _lock = self.lock_index().await?;
        let holdings = self.holdings(self.owner()).await?;
        let (pointer, index) = self.index_on(&holdings, Reading::ToList).await?;
        let mut peers = distinct_peers(&holdings);
        let nodes = peers.len();
        peers.retain(|p| !self.has_failed(p));
        // What is in use is known only from the newest index, which a put leaves on more
        // than half of the nodes: with fewer answering, or none keeping a pointer (a lost
        // pointer file), everything would look like garbage.
        let Some(newest) = pointer.as_ref() else {
            return Err(other(
                "none of your nodes that answered keeps an index pointer, so what is in use is unknown; nothing was removed",
            ));
        };
        let mut named: HashSet<Hash> = HashSet::new();
        // How many times the manifests place each shard: one placed once is kept on one node.
        let mut placed: HashMap<Hash, u32> = HashMap::new();
        let mut shard_lens: HashMap<Hash, u64> = HashMap::new();
        named.insert(newest.pointer.index);
        // A node that was down when the index last changed keeps an older pointer: it is
        // given the newest (on a dry run, as if it were), and the index the old one named
        // becomes garbage. One as new as the newest but different is another machine's
        // change: its index is kept.
        let owner = self.owner();
        let chain = self.chain().await?;
        let answers = futures::future::join_all(peers.iter().map(|&p| async move {
            let kept = wire::get_pointer(&self.mesh, p, owner, chain).await.ok()?;
            Some(match &kept {
                Some(k) if k.pointer.seq < newest.pointer.seq && dry_run => None,
                Some(k) if k.pointer.seq < newest.pointer.seq => {
                    match wire::put_pointer(&self.mesh, p, newest.clone()).await {
                        Ok(()) => None,
                        Err(e) => {
                            debug!(peer = %p, error = %e, "cannot give a node the newest pointer");
                            kept
                        }
                    }
                }
                _ => kept,
            })
        }))
        .await;
        let answered = answers.iter().filter(|a| a.is_some()).count();
        if answered * 2 <= nodes {
            return Err(other(format!(
                "only {answered} of your {nodes} storage nodes answered; gc needs more than half, to be sure it reads your newest index: nothing was removed, run it again when more are up"
            )));
        }
        // A pointer newer than the index read, or another of its sequence: the objects that
        // index names are not known here, and would look like garbage.
        let other_change = (answers.iter().flatten().flatten()).any(|k| {
            k.pointer.seq > newest.pointer.seq
                || (k.pointer.seq == newest.pointer.seq && k.pointer != newest.pointer)
        });
        if other_change {
            return Err(other(
                "your index changed while gc read it (a put or rm from another machine with the same words, or a node that answered late); nothing was removed: run it again",
            ));
        }
        named.extend(
            answers
                .into_iter()
                .flatten()
                .flatten()
                .map(|k| k.pointer.index),
        );
        let peers = &peers;
        let mut manifests = futures::stream::iter(index.objects.iter())
            .map(|(name, entry)| async move {
                (
                    name,
                    entry,
                    self.read_manifest(peers, &entry.capability).await,
                )
            })
            .buffer_unordered(16);
        while let Some((name, entry, manifest)) = manifests.next().await {
            let manifest = manifest.map_err(|e| {
                other(format!(
                    "cannot read the manifest of {name}, so its shards cannot be told from garbage ({e}); nothing was removed: run it again when more of your nodes answer"
                ))
            })?;
            named.insert(entry.capability.manifest);
            for (h, _) in manifest.placements() {
                named.insert(h);
                *placed.entry(h).or_default() += 1;
            }
            for s in &manifest.segments {
                let len = manifest.scheme.shard_len(s.sealed_len as usize) as u64;
                shard_lens.extend(s.shards.iter().map(|h| (*h, len)));
            }
        }
        // Every node is listed before anything is removed: a shard found on several nodes
        // is told from its extra copies only by comparing the listings.
        let listings = futures::future::join_all(holdings.iter().map(|h| self.list_all(h))).await;
        let extra = extra_copies(
            listings.iter().map(|l| l.as_ref().ok().map(Vec::as_slice)),
            &placed,
        );
        // A node may list shards it does not hold, as young, to have gc remove the real
        // copies: each copy kept answers an audit before the others go.
        let kept: HashSet<(usize, Hash)> = extra.iter().map(|(&(_, id), &k)| (k, id)).collect();
        let (holdings_ref, shard_lens) = (&holdings, &shard_lens);
        // A few at a time (a node serves 16 streams per peer), a broken stream asked again.
        let proven: HashSet<(usize, Hash)> = futures::stream::iter(kept)
            .map(|(k, id)| async move {
                let peer = holdings_ref[k].peer_id().ok()?;
                let leaf = random_below(crate::shard::leaves(
                    shard_lens.get(&id).copied().unwrap_or(0),
                ));
                match retrying(|| wire::audit(&self.mesh, peer, id, leaf)).await {
                    Ok(true) => Some((k, id)),
                    outcome => {
                        warn!(node = holdings_ref[k].node, shard = %id, ?outcome, "a copy gc would keep did not pass its audit; the other copies stay");
                        None
                    }
                }
            })
            .buffer_unordered(8)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let extra: HashSet<(usize, Hash)> = extra
            .into_iter()
            .filter(|((_, id), k)| proven.contains(&(*k, *id)))
            .map(|(e, _)| e)
            .collect();
        let sweep = &Sweep {
            named: &named,
            extra: &extra,
            older_than,
            dry_run,
        };
        Ok(
            futures::future::join_all(holdings.iter().zip(listings).enumerate().map(
                |(i, (h, listed))| async move {
                    let mut report = GarbageReport {
                        node: h.node,
                        contract: h.contract,
                        ..GarbageReport::default()
                    };
                    let collected = match listed {
                        Ok(listed) => self.collect_on(i, h, &listed, sweep, &mut report).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = collected {
                        report.error = Some(e.to_string());
                    }
                    report
                },
            ))
            .await,
        )
    }

    /// Bytes of the owner's objects (their shards and manifests) that `h`'s contract
    /// holds on its node, not counting the copy of the owner index every contract keeps:
    /// what cancelling it deletes. `None` when the node does not answer.
    pub async fn held_for_objects(&self, h: &Holding) -> Result<Option<u64>, StorageError> {
        self.connect_all(std::slice::from_ref(h)).await;
        let listed = match self.list_all(h).await {
            Ok(listed) => listed,
            Err(StorageError::Wire(e)) if e.is_unreachable() => return Ok(None),
            Err(_) if h.peer_id().is_ok_and(|p| self.has_failed(&p)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // An index that cannot be read now counts as the objects' (the caller refuses
        // then, and says --force).
        let index = (self.index().await.ok())
            .and_then(|(pointer, _)| pointer)
            .map(|p| p.pointer.index);
        Ok(Some(
            listed
                .iter()
                .filter(|s| Some(s.id) != index)
                .map(|s| s.len)
                .sum(),
        ))
    }

    /// Every shard of `h`'s contract on its node, in pages.
    async fn list_all(&self, h: &Holding) -> Result<Vec<ListedShard>, StorageError> {
        let peer = h.peer_id()?;
        if self.has_failed(&peer) {
            return Err(other(
                "the node did not answer; run gc again when it is back",
            ));
        }
        let mut listed = Vec::new();
        let mut after = None;
        // What the contract can hold: a node listing more (made-up addresses, page after
        // page) would keep gc listing, and growing the list, forever.
        let mut bytes: u64 = 0;
        loop {
            let page = wire::list(&self.mesh, peer, h.contract, after).await?;
            // In address order, after the last page: a node answering otherwise (the same
            // page again and again) would keep gc listing forever.
            let mut last = after;
            for shard in &page {
                if last.is_some_and(|l| shard.id <= l) {
                    return Err(other(format!(
                        "node {} listed its shards out of order; run gc again later, or leave that node",
                        h.node
                    )));
                }
                last = Some(shard.id);
                // A few bytes each at least: a sealed shard is never smaller.
                bytes = bytes.saturating_add(shard.len.max(8));
            }
            if bytes > h.quota.saturating_mul(2).max(wire::SHARD_BYTES_MAX) {
                return Err(other(format!(
                    "node {} listed more shards than contract {} can hold ({} reserved); run gc again later, or leave that node",
                    h.node,
                    h.contract,
                    human_bytes(h.quota)
                )));
            }
            let full = page.len() == wire::IDS_MAX;
            after = last;
            listed.extend(page);
            if !full {
                return Ok(listed);
            }
        }
    }

    /// Count `listed` (the shards of `h`, the `i`th holding) into `report`, and remove
    /// the garbage old enough: what nothing names, and the extra copies of shards kept
    /// on another node.
    async fn collect_on(
        &self,
        i: usize,
        h: &Holding,
        listed: &[ListedShard],
        sweep: &Sweep<'_>,
        report: &mut GarbageReport,
    ) -> Result<(), StorageError> {
        let peer = h.peer_id()?;
        let (older_than, dry_run) = (sweep.older_than, sweep.dry_run);
        let mut garbage = Vec::new();
        for shard in listed {
            let extra = sweep.extra.contains(&(i, shard.id));
            if sweep.named.contains(&shard.id) && !extra {
                report.kept += 1;
            } else if Duration::from_secs(shard.age_secs) < older_than {
                report.young += 1;
            } else {
                report.garbage += 1;
                report.garbage_bytes += shard.len;
                report.extra_copies += u64::from(extra);
                garbage.push(shard.id);
            }
        }
        if dry_run {
            return Ok(());
        }
        for chunk in garbage.chunks(wire::IDS_MAX) {
            // The node checks the age again: a put may have come to rely on a shard since.
            report.removed += u64::from(
                wire::collect(&self.mesh, peer, h.contract, chunk.to_vec(), older_than).await?,
            );
        }
        Ok(())
    }

    /// Challenge the nodes holding `cap`'s object: `samples` random shards, one random
    /// leaf each. Results per node.
    pub async fn audit(
        &self,
        cap: &Capability,
        samples: usize,
    ) -> Result<Vec<AuditResult>, StorageError> {
        let (manifest, holdings) = self.open(cap).await?;
        let peers = peers_by_node(&holdings);
        let placements: Vec<(Hash, NodeId, u64)> = manifest
            .segments
            .iter()
            .flat_map(|s| {
                let len = manifest.scheme.shard_len(s.sealed_len as usize) as u64;
                s.shards
                    .iter()
                    .zip(&s.nodes)
                    .map(move |(h, n)| (*h, *n, len))
            })
            .collect();
        let mut results: BTreeMap<NodeId, AuditResult> = BTreeMap::new();
        let picks = sample(placements.len(), samples);
        // A repair puts a lost shard on another node and leaves the manifest naming the
        // first: each shard is challenged where it is now, the node the manifest names
        // while it still holds it, and there too when no node says it does.
        let picked: Vec<Hash> = picks.iter().map(|&i| placements[i].0).collect();
        let (picked, peers) = (&picked, &peers);
        let answers = futures::future::join_all(
            (peers.iter())
                .filter(|(_, peer)| !self.has_failed(peer))
                .map(|(&node, &peer)| async move {
                    // Where shards are is a hint: a node slow to say is not waited for.
                    let ask =
                        tokio::time::timeout(Duration::from_secs(3), self.has_all(peer, picked));
                    Some((node, ask.await.ok()?.ok()?))
                }),
        )
        .await;
        let mut holders: HashMap<Hash, Vec<NodeId>> = HashMap::new();
        for (node, flags) in answers.into_iter().flatten() {
            for (id, has) in picked.iter().zip(flags) {
                if has {
                    holders.entry(*id).or_default().push(node);
                }
            }
        }
        let holders = &holders;
        let checks = futures::future::join_all(picks.into_iter().map(|i| {
            let (id, named, len) = placements[i];
            let node = match holders.get(&id) {
                Some(at) if !at.contains(&named) => at.first().copied().unwrap_or(named),
                _ => named,
            };
            let peer = peers.get(&node).copied();
            async move {
                let leaf = random_below(crate::shard::leaves(len));
                // A challenge that got no answer (the node not reached, or the stream
                // broken after retries) is no evidence about the shard, and is told apart
                // from a wrong proof or a refusal: a farmer is not blamed for a link.
                let outcome = match peer {
                    None => Err(Challenge::Failed(format!(
                        "node {node} no longer holds a contract of the owner"
                    ))),
                    // A node an audit of another object of this run could not reach
                    // fails at once (for AUDIT_UNREACHABLE_FOR): dialing it again for
                    // every object would wait as long each time.
                    Some(p) if self.audit_unreachable(&p) => {
                        Err(Challenge::Unanswered(not_reached(node)))
                    }
                    // A broken stream is asked again: only the node's answer, or its
                    // refusal, is evidence about the shard.
                    Some(p) => match retrying(|| wire::audit(&self.mesh, p, id, leaf)).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(Challenge::Failed(format!(
                            "node {node} answered a wrong proof for shard {id}"
                        ))),
                        Err(e) if unreached(&e) => {
                            (self.audit_unreachable.lock())
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(p, std::time::Instant::now());
                            Err(Challenge::Unanswered(not_reached(node)))
                        }
                        Err(e) if e.is_unreachable() => Err(Challenge::Unanswered(e.to_string())),
                        // Unpaid, the node keeps the shard and serves nothing of it: the
                        // owner's to top up, no evidence against the farmer.
                        Err(wire::WireError::Refused { reason, .. })
                            if reason == crate::store::GRACE_REFUSAL =>
                        {
                            Err(Challenge::Unanswered(format!(
                                "node {node}: your contract there is in grace: top up"
                            )))
                        }
                        Err(e) => Err(Challenge::Failed(e.to_string())),
                    },
                };
                (node, outcome)
            }
        }))
        .await;
        for (node, outcome) in checks {
            let r = results.entry(node).or_insert_with(|| AuditResult {
                node,
                passed: 0,
                failed: 0,
                unanswered: 0,
                last_error: None,
                at_ms: now_ms(),
            });
            match outcome {
                Ok(()) => r.passed += 1,
                Err(Challenge::Failed(e)) => {
                    r.failed += 1;
                    r.last_error = Some(e);
                }
                Err(Challenge::Unanswered(e)) => {
                    r.unanswered += 1;
                    r.last_error = Some(e);
                }
            }
        }
        Ok(results.into_values().collect())
    }
}

/// What a garbage collection removes, decided once its nodes are listed.
struct Sweep<'a> {
    /// Every shard an object, a manifest or an index names.
    named: &'a HashSet<Hash>,
    /// The extra copies ([`extra_copies`]), by holding.
    extra: &'a HashSet<(usize, Hash)>,
    /// Garbage younger than this is left.
    older_than: Duration,
    /// Count only.
    dry_run: bool,
}

/// The copies in `listings` (one per holding, `None` for a node that did not answer) to
/// remove as extra, each with the holding whose copy is kept: of a shard the manifests
/// place once but found on several nodes, every copy but the one written last, which is
/// the copy a repair rebuilt and checked (the others are on nodes that were down then,
/// and one may be why the repair ran).
fn extra_copies<'a>(
    listings: impl Iterator<Item = Option<&'a [ListedShard]>>,
    placed: &HashMap<Hash, u32>,
) -> HashMap<(usize, Hash), usize> {
    // Per shard, every (age, holding) that lists it.
    let mut copies: HashMap<Hash, Vec<(u64, usize)>> = HashMap::new();
    for (i, listed) in listings.enumerate() {
        for shard in listed.into_iter().flatten() {
            if placed.get(&shard.id) == Some(&1) {
                copies
                    .entry(shard.id)
                    .or_default()
                    .push((shard.age_secs, i));
            }
        }
    }
    let mut extra = HashMap::new();
    for (id, mut found) in copies {
        found.sort_unstable();
        let kept = found[0].1;
        extra.extend(found.into_iter().skip(1).map(|(_, i)| ((i, id), kept)));
    }
    extra
}

/// What a get wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Got {
    /// Bytes of the object (or of its range) now in the output, the resumed ones included.
    pub written: u64,
    /// Of them, bytes an interrupted get had written already (kept as `OUT.partial`).
    pub resumed: u64,
}

/// What a repair did for one object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RepairReport {
    /// The object.
    pub name: String,
    /// Its segments.
    pub segments: u64,
    /// Segments that had shards rebuilt.
    pub segments_repaired: u64,
    /// Shards rebuilt and stored again.
    pub shards_rebuilt: u64,
    /// Shards no reachable node served before the repair.
    pub shards_missing: u64,
    /// Nodes given a copy of the object's manifest they lacked.
    pub manifest_copies: u64,
    /// The object's scheme.
    #[serde(serialize_with = "as_text")]
    pub scheme: Scheme,
    /// The scheme a put would give it now, when that is wider without less parity: the
    /// object was put while nodes were down, or before more were reserved
    /// ([`Storage::widen`]).
    #[serde(serialize_with = "opt_as_text")]
    pub widen_to: Option<Scheme>,
}

/// The scheme a put on `nodes` nodes would give an object stored as `stored`, when that
/// is worth storing it again (a new capability, old links broken): more parity (2+1 to
/// 3+2) survives more lost nodes; with the same parity, more data shards are worth it only
/// when they save at least [`WIDEN_ROOM_SAVED_PERCENT_MIN`] of the room (2+2 to 3+2 saves
/// 17 %; 3+2 to 4+2, 10 %, is not offered). Never one with less parity.
pub fn widen_to(stored: Scheme, nodes: usize) -> Option<Scheme> {
    let wider = Scheme::for_nodes(nodes);
    // Room per byte is n/k: compare n·k' against n'·k to stay in integers.
    let (old, new) = (
        stored.n() as u64 * u64::from(wider.k),
        wider.n() as u64 * u64::from(stored.k),
    );
    let saves = old.saturating_sub(new) * 100 >= old * WIDEN_ROOM_SAVED_PERCENT_MIN;
    let worth = wider.m > stored.m || (wider.m == stored.m && saves);
    Some(wider).filter(|w| worth && w.n() > stored.n())
}

/// Least share of the room a same-parity widening must save to be offered, percent.
pub const WIDEN_ROOM_SAVED_PERCENT_MIN: u64 = 15;

fn as_text<S: serde::Serializer>(v: &Scheme, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_as_text<S: serde::Serializer>(v: &Option<Scheme>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// What garbage collection found in one storage contract.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GarbageReport {
    /// The node.
    pub node: NodeId,
    /// The contract.
    pub contract: ContractId,
    /// Shards an object, a manifest or the index names.
    pub kept: u64,
    /// Shards nothing names, old enough to remove.
    pub garbage: u64,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// Of the garbage, copies of a shard that another node keeps: a repair rebuilt it
    /// there while this node was down.
    pub extra_copies: u64,
    /// Shards nothing names yet, younger than the age asked: a put may be under way.
    pub young: u64,
    /// Shards removed (none on a dry run).
    pub removed: u64,
    /// Why the node could not be collected.
    pub error: Option<String>,
}

/// How one node did in an audit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditResult {
    /// The node.
    pub node: NodeId,
    /// Challenges answered with a valid proof.
    pub passed: u32,
    /// Challenges failed: a wrong proof, or refused (the shard not there).
    pub failed: u32,
    /// Challenges not answered: the node not reached, or the connection broken after
    /// retries; no evidence about its shards either way.
    #[serde(default)]
    pub unanswered: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// Unix ms of the audit.
    pub at_ms: u64,
}

/// How one audit challenge went wrong.
enum Challenge {
    /// The node answered, and its answer shows the shard is not there as it should be.
    Failed(String),
    /// No answer came.
    Unanswered(String),
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) % n.max(1)
}

/// `count` distinct indices below `n` (all of them when `count >= n`).
fn sample(n: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..all.len() {
        let j = i + random_below((all.len() - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

/// A segment sealed and coded for upload: its number, its shards, its manifest entry.
type SealedSegment = (u64, erasure::Shards, Segment);

/// Run `encodings` (segments being sealed and coded, in order from the first),
/// [`ENCODES_AT_ONCE`] at a time, and send each to the uploader in order, until they end
/// or the uploader stops; the count sent.
async fn send_in_order(
    encodings: impl futures::Stream<
        Item = impl Future<Output = Result<(u64, (erasure::Shards, Segment)), StorageError>>,
    >,
    tx: &tokio::sync::mpsc::Sender<SealedSegment>,
) -> Result<u64, StorageError> {
    let mut encoded = std::pin::pin!(encodings.buffered(ENCODES_AT_ONCE));
    let mut sent = 0;
    while let Some(next) = encoded.next().await {
        let (at, (shards, segment)) = next?;
        if tx.send((at, shards, segment)).await.is_err() {
            break;
        }
        sent += 1;
    }
    Ok(sent)
}

/// Which of `count` holdings shard `shard` of segment `seg` goes to: rotate over all.
fn placed(count: usize, seg: u64, shard: usize) -> usize {
    (seg as usize + shard) % count
}

/// The scheme a put uses on `holdings`: the one given, or the default for their number;
/// refused when its shards need more distinct nodes than there are.
fn scheme_for(holdings: &[Holding], scheme: Option<Scheme>) -> Result<Scheme, StorageError> {
    let scheme = scheme.unwrap_or_else(|| Scheme::for_nodes(holdings.len()));
    scheme.check().map_err(other)?;
    if scheme.n() > holdings.len() {
        return Err(other(format!(
            "a {scheme} scheme puts {} shards of each segment on distinct nodes, but your storage is on {} usable nodes: reserve more (`peergrid store reserve --nodes N`) or give a --scheme of at most {} shards in all, like {}",
            scheme.n(),
            holdings.len(),
            holdings.len(),
            Scheme::for_nodes(holdings.len())
        )));
    }
    Ok(scheme)
}

/// What a put of a stream may still give each holding: the room it had when the put
/// began, less what the segments under way or stored take.
struct Budget {
    /// Room in each holding when the put began.
    free: Vec<u64>,
    /// Bytes given to each since.
    given: Vec<u64>,
    /// The holdings each segment under way is counted on.
    counted: HashMap<u64, Vec<usize>>,
    /// Bytes of the stream stored or under way.
    read: u64,
}

impl Budget {
    /// Count segment `seg`'s shards (`shard` bytes each) on their holdings (of `count`),
    /// but for those of `held` (shards its nodes hold already); the first holding it
    /// overruns.
    fn take(
        &mut self,
        count: usize,
        seg: u64,
        scheme: Scheme,
        shard: u64,
        held: &[usize],
    ) -> Option<usize> {
        let on: Vec<usize> = (0..scheme.n())
            .filter(|j| !held.contains(j))
            .map(|j| placed(count, seg, j))
            .collect();
        for &at in &on {
            self.given[at] += shard;
        }
        let over = on
            .iter()
            .copied()
            .find(|&at| self.given[at] > self.free[at]);
        self.counted.insert(seg, on);
        over
    }

    /// Undo [`Budget::take`] of segment `seg`.
    fn untake(&mut self, seg: u64, shard: u64) {
        for at in self.counted.remove(&seg).unwrap_or_default() {
            self.given[at] = self.given[at].saturating_sub(shard);
        }
    }

    /// Segment `seg` is stored: each shard's holding, and whether it took room there.
    fn settle(&mut self, seg: u64, places: &[(usize, bool)], shard: u64) {
        self.untake(seg, shard);
        for &(at, stored) in places {
            if stored {
                self.given[at] += shard;
            }
        }
    }

    /// Why holding `at` (`h`) stops the put.
    fn overrun(&self, h: &Holding, at: usize) -> String {
        format!(
            "what is put does not fit your reservation: after {} sent, node {} (contract {}) has no room for its share of the next segment ({} free of {} when the put began, {} of it kept for the manifest and index)",
            human_bytes(self.read),
            h.node,
            h.contract,
            human_bytes(self.free[at]),
            human_bytes(h.quota),
            human_bytes(OVERHEAD_BYTES),
        )
    }

    /// What to do when the put is refused.
    fn advice(&self, holdings: &[Holding], scheme: Scheme) -> String {
        // Shards rotate over the holdings: each takes n/(k × holdings) of the bytes.
        let share =
            (100 * scheme.n()).div_ceil(usize::from(scheme.k.max(1)) * holdings.len().max(1));
        let mut nodes: Vec<NodeId> = holdings.iter().map(|h| h.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let nodes: Vec<String> = nodes.iter().map(|n| format!("--node {n}")).collect();
        format!(
            " Reserve room for all of it, then put it again: one object's shards on a node go into one reservation there, which must hold that node's whole share, about {share} % of what is put (`peergrid store reserve --size SIZE {}`)",
            nodes.join(" ")
        )
    }
}

/// Fill `buf` from `reader` unless it ends first; the bytes read.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether the manifest of `size` bytes in `segments` segments of `scheme` is within what
/// a reader decodes and a node stores: nodes would refuse it only after every shard was
/// sent.
fn check_manifest_fits(name: &str, scheme: Scheme, size: u64, segments: u64) -> Result<(), String> {
    let (encoded, sealed) = Manifest::len_for(name, scheme, segments);
    if encoded > crate::format::MANIFEST_BYTES_MAX as u64 || sealed > wire::SHARD_BYTES_MAX {
        return Err(format!(
            "{} in {scheme} needs a manifest of {}, over the {} a node keeps: use a scheme with fewer shards (--scheme 3+2), or put it as several objects (`split --bytes`)",
            human_bytes(size),
            human_bytes(sealed),
            human_bytes(wire::SHARD_BYTES_MAX)
        ));
    }
    Ok(())
}

/// Seal and erasure-code one segment: its shards and its manifest entry.
fn encode_segment(
    keys: &StorageKeys,
    salt: &[u8; 32],
    scheme: Scheme,
    plain: &[u8],
    cipher: Cipher,
) -> Result<(erasure::Shards, Segment), String> {
    let mut sealable = segment_buffer(scheme, plain.len());
    sealable.extend_from_slice(plain);
    seal_and_code(keys, salt, scheme, sealable, cipher)
}

/// A buffer for one segment of `plain_len` bytes: [`NONCE_BYTES`] of room for the nonce,
/// to which the plaintext is added, with room for the tag and the coder's padding, so
/// the segment is sealed and coded where it was read.
fn segment_buffer(scheme: Scheme, plain_len: usize) -> Vec<u8> {
    let mut buf = crate::spare::take(segment_room(scheme, plain_len));
    buf.resize(NONCE_BYTES, 0);
    buf
}

/// The bytes a [`segment_buffer`] for `plain_len` bytes must have room for.
fn segment_room(scheme: Scheme, plain_len: usize) -> usize {
    let sealed_len = NONCE_BYTES + plain_len + TAG_BYTES;
    usize::from(scheme.k.max(1)) * scheme.shard_len(sealed_len)
}

/// One segment through the pipeline: its key from its bytes, sealed in place, coded
/// there, each shard addressed. `sealable` is a [`segment_buffer`] holding the plaintext.
fn seal_and_code(
    keys: &StorageKeys,
    salt: &[u8; 32],
    scheme: Scheme,
    mut sealable: Vec<u8>,
    cipher: Cipher,
) -> Result<(erasure::Shards, Segment), String> {
    let plain_len = sealable.len().saturating_sub(NONCE_BYTES);
    let key = keys.content_key(salt, cipher, &sealable[NONCE_BYTES.min(sealable.len())..]);
    crypto::seal_in_place(cipher, &key, None, &mut sealable);
    let sealed_len = sealable.len();
    let shards = erasure::encode_owned(scheme, sealable).map_err(|e| e.to_string())?;
    let ids = shards.iter().map(shard_id).collect();
    Ok((
        shards,
        Segment {
            plain_len: plain_len as u32,
            sealed_len: sealed_len as u32,
            key,
            shards: ids,
            nodes: vec![0; scheme.n()],
        },
    ))
}

/// The single-pass pipeline alone, in memory, one core: seal, erasure-code and address
/// `data` in segments; what `peergrid bench storage` measures put and get against.
pub fn pipeline_only(keys: &StorageKeys, scheme: Scheme, data: &[u8], cipher: Cipher) -> usize {
    let salt = keys.object_salt("bench");
    let mut shards = 0;
    for plain in data.chunks(SEGMENT_BYTES as usize) {
        if let Ok((_, segment)) = encode_segment(keys, &salt, scheme, plain, cipher) {
            shards += segment.shards.iter().filter(|s| **s != Hash::ZERO).count();
        }
    }
    shards
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What `peergrid bench storage` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Bytes put and got.
    pub bytes: u64,
    /// The scheme used.
    pub scheme: String,
    /// Put, bytes per second.
    pub put_per_sec: f64,
    /// Get, bytes per second.
    pub get_per_sec: f64,
    /// The pipeline alone (AES-256-GCM), in memory, one core, bytes per second.
    pub ceiling_aes_per_sec: f64,
    /// The same with ChaCha20-Poly1305.
    pub ceiling_chacha_per_sec: f64,
    /// Seconds the pipeline alone (AES-256-GCM) took, on one core: its CPU time.
    pub ceiling_aes_secs: f64,
    /// CPU seconds this process (the client) spent on the put, where the system says.
    pub put_cpu_secs: Option<f64>,
    /// CPU seconds this process spent on the get.
    pub get_cpu_secs: Option<f64>,
    /// The file system the object was read from and written back to (the temporary
    /// directory's), where the system says: a get's rate depends on it.
    pub files_on: Option<String>,
}

/// CPU time this process has used, user and system, from `/proc/self/stat` (Linux).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Some((user + system) / 100.0)
}

/// The type of the file system `path` is on (`ext4`, `tmpfs`), from the deepest mount
/// that holds it in `/proc/self/mountinfo` (Linux).
fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional…] - type source …
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?.replace("\\040", " ").replace("\\134", "\\");
            let kind = fields.get(fields.iter().position(|f| *f == "-")? + 1)?;
            let depth = Path::new(&point).components().count();
            path.starts_with(&point).then(|| (depth, kind.to_string()))
        })
        // Of mounts on the same point the last is the one seen.
        .max_by_key(|(depth, _)| *depth)
        .map(|(_, kind)| kind)
}

/// CPU seconds used between two readings, when both were available.
fn cpu_between(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

impl Storage {
    /// Put and get `bytes` of random data as `bench/<n>` on the owner's storage, next to
    /// the in-memory pipeline over the same bytes; the object is removed afterwards.
    pub async fn bench(
        &self,
        bytes: u64,
        scheme: Option<Scheme>,
        progress: Progress<'_>,
    ) -> Result<BenchReport, StorageError> {
        let dir =
            std::env::temp_dir().join(format!("peergrid-bench-storage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|source| StorageError::File {
            what: "cannot create",
            path: dir.clone(),
            source,
        })?;
        let input = dir.join("input.bin");
        let output = dir.join("output.bin");
        let result = async {
            let data = tokio::task::spawn_blocking(move || {
                let mut data = vec![0u8; bytes as usize];
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
                for chunk in data.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let b = x.to_le_bytes();
                    chunk.copy_from_slice(&b[..chunk.len()]);
                }
                data
            })
            .await
            .map_err(|e| other(e.to_string()))?;
            tokio::fs::write(&input, &data)
                .await
                .map_err(|source| StorageError::File {
                    what: "cannot write",
                    path: input.clone(),
                    source,
                })?;
            let holdings = self.writable_holdings().await?;
            let scheme = scheme.unwrap_or_else(|| Scheme::for_nodes(holdings.len()));
            // The ceiling: the same bytes through seal + erasure code + addresses, one core.
            let keys = self.keys.clone();
            let (aes, chacha, data) = tokio::task::spawn_blocking(move || {
                let t = std::time::Instant::now();
                pipeline_only(&keys, scheme, &data, Cipher::Aes256Gcm);
                let aes = t.elapsed().as_secs_f64();
                let t = std::time::Instant::now();
                pipeline_only(&keys, scheme, &data, Cipher::ChaCha20Poly1305);
                (aes, t.elapsed().as_secs_f64(), data)
            })
            .await
            .map_err(|e| other(e.to_string()))?;
            let name = format!("bench/{}", now_ms());
            let (t, cpu) = (std::time::Instant::now(), process_cpu_secs());
            let report = self.put(&input, &name, Some(scheme), progress).await?;
            let put = t.elapsed().as_secs_f64();
            let put_cpu_secs = cpu_between(cpu, process_cpu_secs());
            let (t, cpu) = (std::time::Instant::now(), process_cpu_secs());
            self.get(&report.capability, &output, None, progress)
                .await?;
            let get = t.elapsed().as_secs_f64();
            let get_cpu_secs = cpu_between(cpu, process_cpu_secs());
            let back = tokio::fs::read(&output)
                .await
                .map_err(|source| StorageError::File {
                    what: "cannot read",
                    path: output.clone(),
                    source,
                })?;
            if back != data {
                return Err(other("the object read back differs from what was put"));
            }
            let _ = self.remove(&name).await;
            let b = bytes as f64;
            Ok(BenchReport {
                bytes,
                scheme: scheme.to_string(),
                put_per_sec: b / put,
                get_per_sec: b / get,
                ceiling_aes_per_sec: b / aes,
                ceiling_chacha_per_sec: b / chacha,
                ceiling_aes_secs: aes,
                put_cpu_secs,
                get_cpu_secs,
                files_on: file_system_of(&dir),
            })
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// `fetch` as it is: only so that every place it is handed borrows the one segment
/// buffer (a closure's own `&mut` argument would be taken as any lifetime).
fn one_lifetime<'a, F, Fut>(fetch: F) -> F
where
    F: Fn(usize, Option<&'a mut [u8]>) -> Fut,
{
    fetch
}

/// A shard of `len` bytes from `peer` in a buffer of its own, asked again when the
/// exchange broke rather than being refused (see [`Retry`]).
async fn get_owned(mesh: &Mesh, peer: PeerId, id: Hash, len: usize) -> Result<Vec<u8>, WireError> {
    let mut out = crate::spare::take_len(len);
    get_into_retrying(mesh, peer, id, &mut out).await?;
    Ok(out)
}

/// [`get_owned`] into `out`, which the shard must fill exactly.
async fn get_into_retrying(
    mesh: &Mesh,
    peer: PeerId,
    id: Hash,
    out: &mut [u8],
) -> Result<(), WireError> {
    let mut retry = Retry::default();
    loop {
        match wire::get_into(mesh, peer, id, out).await {
            Err(e) => match retry.after(&e) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// `exchange` again when the stream broke under it (see [`Retry`]).
async fn retrying<T, F, Fut>(exchange: F) -> Result<T, WireError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, WireError>>,
{
    let mut retry = Retry::default();
    loop {
        match exchange().await {
            Err(e) => match retry.after(&e) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// When to try an exchange again: when the stream broke under it (not when the node
/// refused, answered or let a deadline pass), twice, after 100 and 300 ms. A broken
/// exchange says nothing about the shard, only about the muxer, which drops a stream now
/// and then under many parallel ones; a node too slow to answer is not made slower to
/// give up on.
struct Retry {
    pause: Duration,
    tries: u32,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            pause: Duration::from_millis(100),
            tries: 0,
        }
    }
}

impl Retry {
    /// How long to wait before trying again after `error`; `None` to give up.
    fn after(&mut self, error: &WireError) -> Option<Duration> {
        let broken = matches!(
            error,
            WireError::Io {
                timed_out: false,
                ..
            }
        );
        if !broken || self.tries >= 2 {
            return None;
        }
        self.tries += 1;
        let pause = self.pause;
        self.pause *= 3;
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_follows_the_nodes_and_never_lowers_parity() {
        let s = |k, m| Scheme { k, m };
        assert_eq!(
            widen_to(s(2, 2), 5),
            Some(s(3, 2)),
            "same parity, less room"
        );
        assert_eq!(widen_to(s(2, 1), 5), Some(s(3, 2)), "more parity");
        assert_eq!(widen_to(s(3, 2), 7), Some(s(4, 3)));
        assert_eq!(
            widen_to(s(3, 2), 6),
            None,
            "4+2 saves 10 %: not worth a new capability"
        );
        assert_eq!(widen_to(s(3, 2), 5), None, "already what a put gives");
        assert_eq!(widen_to(s(3, 2), 4), None, "narrower");
        assert_eq!(widen_to(s(4, 3), 6), None, "wider would mean less parity");
        assert_eq!(widen_to(s(2, 2), 3), None);
    }

    #[test]
    fn a_stream_s_budget_counts_what_its_shards_take_where_they_went() {
        let scheme = Scheme { k: 2, m: 1 };
        let mut b = Budget {
            free: vec![10, 10, 10, 10],
            given: vec![0; 4],
            counted: HashMap::new(),
            read: 0,
        };
        // Segment 0 goes to holdings 0, 1, 2; segment 1 to 1, 2, 3; segment 2 to 2, 3, 0.
        assert_eq!(b.take(4, 0, scheme, 4, &[]), None);
        assert_eq!(b.given, [4, 4, 4, 0]);
        assert_eq!(b.take(4, 1, scheme, 4, &[]), None);
        assert_eq!(b.given, [4, 8, 8, 4]);
        // A third overruns holding 2, unless its nodes hold its shards there already.
        assert_eq!(b.take(4, 2, scheme, 4, &[]), Some(2));
        b.untake(2, 4);
        assert_eq!(b.given, [4, 8, 8, 4]);
        assert_eq!(b.take(4, 2, scheme, 4, &[0, 1]), None);
        assert_eq!(b.given, [8, 8, 8, 4]);
        // Segment 0 stored: its first shard moved to holding 3, its second was there.
        b.settle(0, &[(3, true), (1, false), (2, true)], 4);
        assert_eq!(b.given, [4, 4, 8, 8]);
        assert!(!b.counted.contains_key(&0));
    }

    #[test]
    fn a_pipe_is_read_in_whole_segments_until_it_ends() {
        // A reader giving a few bytes at a time, as a pipe does.
        struct Dribble(std::io::Cursor<Vec<u8>>);
        impl std::io::Read for Dribble {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(3);
                self.0.read(&mut buf[..n])
            }
        }
        let mut r = Dribble(std::io::Cursor::new((0..20u8).collect()));
        let mut buf = [0u8; 8];
        assert_eq!(read_full(&mut r, &mut buf).expect("read"), 8);
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(read_full(&mut r, &mut buf).expect("read"), 8);
        assert_eq!(read_full(&mut r, &mut buf).expect("read"), 4);
        assert_eq!(buf[..4], [16, 17, 18, 19]);
        assert_eq!(read_full(&mut r, &mut buf).expect("read"), 0);
    }

    #[test]
    fn the_bench_names_the_file_system_its_files_are_on() {
        assert_eq!(
            file_system_of(Path::new("/proc/self")).as_deref(),
            Some("proc")
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(file_system_of(dir.path()).is_some_and(|kind| !kind.is_empty()));
        assert_eq!(file_system_of(&dir.path().join("not there")), None);
    }

    #[test]
    fn segments_seal_and_code_deterministically_per_name() {
        let keys = StorageKeys::of(&Keypair::from_seed([5; 32]));
        let salt = keys.object_salt("a");
        let scheme = Scheme { k: 3, m: 2 };
        let data = vec![42u8; 100_000];
        let (s1, e1) =
            encode_segment(&keys, &salt, scheme, &data, Cipher::Aes256Gcm).expect("encode");
        let (s2, e2) =
            encode_segment(&keys, &salt, scheme, &data, Cipher::Aes256Gcm).expect("encode");
        assert_eq!(s1, s2, "a retried put sends the same shards");
        assert_eq!(e1, e2);
        let (_, other_name) = encode_segment(
            &keys,
            &keys.object_salt("b"),
            scheme,
            &data,
            Cipher::Aes256Gcm,
        )
        .expect("encode");
        assert_ne!(
            e1.shards, other_name.shards,
            "another name never shares shards"
        );
        // Any three shards open the segment.
        let partial: Vec<Option<Vec<u8>>> = s1
            .iter()
            .enumerate()
            .map(|(i, s)| (i >= 2).then(|| s.to_vec()))
            .collect();
        let sealed = erasure::decode(scheme, partial, e1.sealed_len as usize).expect("decode");
        assert_eq!(
            crypto::open(Cipher::Aes256Gcm, &e1.key, "t", sealed).expect("open"),
            data
        );
    }

    #[test]
    fn a_put_whose_manifest_nodes_would_refuse_is_refused_before_it_starts() {
        let wide = Scheme { k: 16, m: 4 };
        let segments = |size: u64| size.div_ceil(u64::from(SEGMENT_BYTES));
        let tib = 1u64 << 40;
        assert!(check_manifest_fits("x", wide, tib / 2, segments(tib / 2)).is_ok());
        let refused = check_manifest_fits("x", wide, tib, segments(tib)).expect_err("1 TiB");
        assert!(refused.contains("--scheme 3+2"), "{refused}");
        let narrow = Scheme { k: 3, m: 2 };
        assert!(check_manifest_fits("x", narrow, 2 * tib, segments(2 * tib)).is_ok());
    }

    #[test]
    fn padding_shards_are_the_ones_small_objects_share_and_only_those() {
        let keys = StorageKeys::of(&Keypair::from_seed([5; 32]));
        let scheme = Scheme { k: 3, m: 2 };
        let manifest = |name: &str, size: usize| {
            let data = vec![7u8; size];
            let (_, segment) = encode_segment(
                &keys,
                &keys.object_salt(name),
                scheme,
                &data,
                Cipher::Aes256Gcm,
            )
            .expect("encode");
            Manifest {
                name: name.into(),
                size: size as u64,
                segment_bytes: SEGMENT_BYTES,
                cipher: Cipher::Aes256Gcm,
                scheme,
                created_ms: 0,
                segments: vec![segment],
            }
        };
        let (a, b) = (manifest("a.txt", 30), manifest("b.txt", 30));
        let shared: HashSet<Hash> = (a.segments[0].shards.iter())
            .filter(|h| b.segments[0].shards.contains(h))
            .copied()
            .collect();
        assert!(!shared.is_empty(), "two small objects share zero shards");
        assert_eq!(a.padding_shards(), shared);
        assert_eq!(b.padding_shards(), shared);
        assert!(!a.padding_shards().contains(&a.segments[0].shards[0]));
        assert!(
            manifest("c", 100_000).padding_shards().is_empty(),
            "a segment filling its shards has no padding shard"
        );
    }

    #[test]
    fn gc_keeps_one_copy_of_a_shard_the_one_written_last() {
        let [a, b, c, blob] = [1u8, 2, 3, 4].map(|i| shard_id(&[i]));
        let at = |id: Hash, age_secs: u64| ListedShard {
            id,
            len: 1,
            age_secs,
        };
        // `a` was put on node 0 a day ago and rebuilt on node 2 an hour ago while 0 was
        // down; `b` is only on node 1; `c` is placed twice (two manifests name it), and a
        // manifest-like blob is on every node: those keep every copy.
        let node0 = vec![at(a, 86_400), at(c, 10), at(blob, 5)];
        let node1 = vec![at(b, 86_400), at(c, 10), at(blob, 5)];
        let node2 = vec![at(a, 3_600), at(blob, 5)];
        let placed = HashMap::from([(a, 1), (b, 1), (c, 2)]);
        let listings = [Some(node0.as_slice()), Some(&node1), Some(&node2)];
        let extra = extra_copies(listings.into_iter(), &placed);
        assert_eq!(extra, HashMap::from([((0, a), 2)]), "node 2's copy is kept");
        // With the node of the newer copy not answering, the only copy seen is kept.
        let listings = [Some(node0.as_slice()), Some(&node1), None];
        assert!(extra_copies(listings.into_iter(), &placed).is_empty());
        // Copies of the same age: the first node's is kept, whichever order they came in.
        let listings = [Some(&node1[..1]), Some(&node1[..1])];
        assert_eq!(
            extra_copies(listings.into_iter(), &placed),
            HashMap::from([((1, b), 0)])
        );
    }

    #[test]
    fn an_index_may_be_on_a_silent_node_only_if_it_joined_before_one_that_answered() {
        let [a, b, c] = [PeerId::random(), PeerId::random(), PeerId::random()];
        let peers = [a, b, c];
        // Reserved together, one silent: a first put may start the index.
        let together = HashMap::from([(a, 1_000), (b, 1_000), (c, 1_000)]);
        assert!(!may_hold_index(&peers, &HashSet::from([a, b]), &together));
        // The owner's older nodes silent, a newer one answered: they may hold it.
        let later = HashMap::from([(a, 1_000), (b, 1_000), (c, 2_000)]);
        assert!(may_hold_index(&peers, &HashSet::from([c]), &later));
        // The newest silent: every index since it joined reached one that answered.
        assert!(!may_hold_index(&peers, &HashSet::from([a, b]), &later));
        assert!(!may_hold_index(&peers, &HashSet::from([a, b, c]), &later));
    }

    #[test]
    fn farms_alternate_and_samples_are_distinct() {
        let h = |node, farm| Holding {
            contract: node as u64,
            node,
            farm,
            peer: String::new(),
            quota: 0,
            status: NodeStatus::Up,
            in_grace: false,
            created_ms: 0,
        };
        let order: Vec<FarmId> =
            spread_over_farms(vec![h(1, 1), h(2, 1), h(3, 1), h(4, 2), h(5, 2)])
                .iter()
                .map(|h| h.farm)
                .collect();
        assert_eq!(order, vec![1, 2, 1, 2, 1]);
        let s = sample(10, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().collect::<HashSet<_>>().len(), 4);
        assert_eq!(sample(3, 10).len(), 3);
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
