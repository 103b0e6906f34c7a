//! `/peergrid/data/1`: an app's `/data` folder on one node, copied out as a tar archive or
//! replaced by one, for its contract's owner only.
//!
//! ```text
//! request:  len: u32 LE | borsh(DataRequest)            (at most REQUEST_BYTES_MAX)
//! frames:   tag: u8 | len: u32 LE | len bytes            (at most FRAME_BYTES_MAX)
//! export:   node: BEGIN {entries, bytes} | CHUNK… | END {bytes, blake3}  (ERROR at any point)
//! import:   node: READY or ERROR; client: the archive, exactly `bytes`; node: DONE or ERROR
//! ```
//!
//! An export is read while the app runs ([`crate::archive::pack`], which never follows a
//! link): a file the app writes meanwhile may be caught part-way, so an app that needs a
//! consistent copy pauses its own writes first. Every name of a hard-linked file is
//! exported as a file of its own.
//!
//! An import is unpacked beside the folder (`data.import.<n>`), checked whole
//! ([`crate::archive::unpack`]: the entries, the app's disk, the node's disk reserve, then
//! the archive's BLAKE3 that the owner signed), synced, and only then exchanged with the
//! folder in one rename (`RENAME_EXCHANGE`): an import that fails or is cut leaves
//! `/data` as it was, and a node that crashes part-way removes the leftover when the app
//! starts. Runs under way finish on the old files, which are then removed.
//!
//! A stranger's stream holds one of a few slots for at most [`REQUEST_TIMEOUT`]; a
//! transfer, once its request is the owner's, holds a slot of its own, and must keep a
//! modest pace ([`PACE_BYTES_PER_SEC`]) besides never idling for [`IDLE_TIMEOUT`].

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::future::BoxFuture;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_compute::data::DataDir;
use peergrid_core::fs::DiskReserve;
use peergrid_core::tx::Signature;
use peergrid_core::{ContractId, Keypair, now_ms};
use peergrid_mesh::{Mesh, PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use crate::archive::{Contents, Unpacked};
use crate::archive::{pack, unpack};
use crate::shared::Shared;
use crate::world::WorkloadState;

/// The protocol.
pub const DATA_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/data/1");
/// The request format this node writes and reads (2: signed for one grid).
pub const DATA_VERSION: u8 = 2;
/// What owners sign a `/data` request under.
pub const DATA_NAMESPACE: &[u8] = b"_PEERGRID_NODE_DATA";
/// How far a request's signing time may be from the node's clock, ms.
pub const DATA_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Largest request.
pub const REQUEST_BYTES_MAX: usize = 4096;
/// Largest frame body.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Largest error text.
const ERROR_BYTES_MAX: usize = 4096;
/// Bytes of archive per chunk sent.
const CHUNK_BYTES: usize = 256 * 1024;
/// A peer that sends or reads nothing for this long is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A stream whose request has not arrived by then is dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest a transfer may go on average (after a minute's grace): a peer cannot hold
/// a transfer's slot by trickling bytes.
pub const PACE_BYTES_PER_SEC: u64 = 256 * 1024;
/// How long the owner waits for an export's first frame: the node lists the folder first.
pub const LISTING_TIMEOUT: Duration = Duration::from_secs(600);
/// Streams whose request is still awaited, and for one peer.
const REQUESTS_MAX: usize = 16;
const REQUESTS_PER_PEER_MAX: usize = 2;
/// Transfers under way, and for one app.
const TRANSFERS_MAX: usize = 8;
const TRANSFERS_PER_CONTRACT_MAX: usize = 2;
/// Lookups of a node's mesh peer before the owner gives up, 1 s apart.
const PEER_LOOKUPS: u32 = 5;
/// Where an import is unpacked, beside the app's folder (a suffix makes each its own).
const STAGING: &str = "data.import";

const CHUNK: u8 = 0;
const BEGIN: u8 = 1;
const END: u8 = 2;
const ERROR: u8 = 3;
const READY: u8 = 4;
const DONE: u8 = 5;

/// What a request asks of the node.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum DataOp {
    /// Copy the folder out as a tar archive.
    Export,
    /// Replace the folder with the tar archive that follows: `bytes` long, its BLAKE3
    /// `hash`.
    Import {
        /// The archive's length.
        bytes: u64,
        /// Its BLAKE3.
        hash: [u8; 32],
    },
}

/// A request about a contract's `/data`, signed by the contract's owner.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct DataRequest {
    /// [`DATA_VERSION`].
    pub version: u8,
    /// The app's contract on this node.
    pub contract: ContractId,
    /// What to do.
    pub op: DataOp,
    /// When it was signed, ms since the Unix epoch: a node refuses one far from its clock.
    pub at_ms: u64,
    /// The owner's signature over [`data_message`].
    pub signature: Signature,
}

/// What the owner signs: with the grid ([`peergrid_storage::format::grid_id`]), so that
/// a node of another grid the same key is used on cannot replay it here.
pub fn data_message(
    version: u8,
    grid: &str,
    contract: ContractId,
    op: &DataOp,
    at_ms: u64,
) -> Vec<u8> {
    peergrid_core::codec::encode(&(version, grid.to_string(), contract, op, at_ms))
}

impl DataRequest {
    /// Sign `op` on `contract`'s `/data` on `grid` with the owner's key, now.
    pub fn sign(owner: &Keypair, grid: &str, contract: ContractId, op: DataOp) -> DataRequest {
        let at_ms = now_ms();
        let message = data_message(DATA_VERSION, grid, contract, &op, at_ms);
        DataRequest {
            version: DATA_VERSION,
            contract,
            op,
            at_ms,
            signature: Signature(owner.sign(DATA_NAMESPACE, &message)),
        }
    }
}

/// The end of an export: the archive's length and BLAKE3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct ExportEnd {
    bytes: u64,
    hash: [u8; 32],
}

/// What a node answers an import with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// The contract.
    pub contract: ContractId,
    /// What the archive held.
    pub unpacked: Unpacked,
    /// The app's disk (`sru`), bytes.
    pub quota_bytes: u64,
}

/// A finished export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// What the node announced.
    pub entries: u64,
    /// The files' bytes it announced.
    pub file_bytes: u64,
    /// The archive's length.
    pub archive_bytes: u64,
    /// Its BLAKE3, hex.
    pub blake3: String,
}

/// Why a `/data` transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The stream could not be opened.
    #[error("cannot open {DATA_PROTOCOL} to {peer}: {source}")]
    Mesh {
        /// The node.
        peer: PeerId,
        /// The mesh's reason.
        source: Box<peergrid_mesh::Error>,
    },
    /// The node refused or failed, saying why.
    #[error("{0}")]
    Refused(String),
    /// The transfer broke.
    #[error("{0}")]
    Io(String),
    /// The archive was sent whole and the answer did not come: the folder may have been
    /// replaced.
    #[error(
        "the archive was sent whole, but the node's answer did not come ({0}): its /data may have been replaced; `peergrid app data export` shows what it holds"
    )]
    Unsure(String),
}

// ---------------------------------------------------------------------------------------
// Framing

async fn write_frame<W: futures::AsyncWrite + Unpin>(
    out: &mut W,
    tag: u8,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&head).await?;
    out.write_all(body).await
}

/// Reads one frame, its body at most [`FRAME_BYTES_MAX`], within `within`.
async fn read_frame<R: futures::AsyncRead + Unpin>(
    input: &mut R,
    within: Duration,
) -> Result<(u8, Vec<u8>), String> {
    let read = async {
        let mut head = [0u8; 5];
        input
            .read_exact(&mut head)
            .await
            .map_err(|e| format!("the stream ended: {e}"))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(format!(
                "a frame of {len} bytes, more than the {FRAME_BYTES_MAX} allowed"
            ));
        }
        let mut body = vec![0u8; len];
        input
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("the stream ended: {e}"))?;
        Ok((head[0], body))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| Err(format!("nothing came for {} s", within.as_secs())))
}

fn error_text(body: &[u8]) -> String {
    let end = body.len().min(ERROR_BYTES_MAX);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------
// The node's side

/// What an allowed request acts on.
pub struct Target {
    /// The app's folder.
    pub data: Arc<DataDir>,
    /// The node's disk reserve, kept free by an import.
    pub reserve: DiskReserve,
    /// Whether the app still runs here with this folder: checked just before an import
    /// is put in place, so that an ended contract's folder is not made again.
    pub still_live: Box<dyn Fn() -> bool + Send + Sync>,
}

/// Decides whether a request may act, and on what: `Err` says why not, for the peer.
pub type Authorize =
    Arc<dyn Fn(DataRequest) -> BoxFuture<'static, Result<Target, String>> + Send + Sync>;

/// Serve `/peergrid/data/1` for the apps of `shared` until the task is aborted.
pub fn serve(mesh: &Mesh, shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let authorize: Authorize = Arc::new(move |request| {
        let shared = shared.clone();
        Box::pin(async move { authorize(shared, request).await })
    });
    serve_with(mesh, authorize)
}

/// Serve `/peergrid/data/1`, each request allowed (or not) by `authorize`.
pub fn serve_with(
    mesh: &Mesh,
    authorize: Authorize,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut incoming = mesh
        .accept_streams(DATA_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("cannot serve {DATA_PROTOCOL}: {e}"))?;
    let requests = incoming.slots(REQUESTS_MAX, REQUESTS_PER_PEER_MAX);
    let transfers: Transfers = Arc::default();
    Ok(tokio::spawn(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let Ok(slot) = requests.take(peer) else {
                tokio::spawn(async move {
                    busy(
                        &mut stream,
                        "too many requests at once; retry in a few seconds",
                    )
                    .await;
                });
                continue;
            };
            let authorize = authorize.clone();
            let transfers = transfers.clone();
            tokio::spawn(async move {
                let allowed = async {
                    let request = read_request(&mut stream).await?;
                    let contract = request.contract;
                    let op = request.op.clone();
                    let target = authorize(request).await?;
                    Ok::<_, String>((contract, op, target))
                };
                let allowed = allowed.await;
                drop(slot);
                let (contract, op, target) = match allowed {
                    Ok(allowed) => allowed,
                    Err(e) => {
                        debug!(%peer, reason = %e, "data request refused");
                        busy(&mut stream, &e).await;
                        return;
                    }
                };
                let held = match TransferSlot::take(&transfers, contract, &op) {
                    Ok(held) => held,
                    Err(why) => {
                        busy(&mut stream, why).await;
                        return;
                    }
                };
                transfer(peer, stream, contract, op, target, &held).await;
                drop(held);
            });
        }
    }))
}

/// Tells the peer why its stream ends, within 2 s: refusals cost a stranger's flood
/// little.
async fn busy(stream: &mut peergrid_mesh::Stream, why: &str) {
    answer(stream, ERROR, why.as_bytes(), Duration::from_secs(2)).await;
}

/// Writes the last frame and closes, `within` a few seconds: a peer that does not read
/// holds nothing.
async fn answer(
    stream: &mut peergrid_mesh::Stream,
    tag: u8,
    body: &[u8],
    within: Duration,
) -> bool {
    let tell = async {
        let sent = write_frame(stream, tag, body).await.is_ok();
        sent && stream.close().await.is_ok()
    };
    tokio::time::timeout(within, tell).await.unwrap_or(false)
}

/// How long a transfer's last frame may take to be read.
const LAST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Transfers under way, per contract (whoever asks: peer ids are free, contracts are
/// paid for): an import alone, or a few exports. An import's flag is set only while it
/// is its contract's one transfer, and cleared once it tidies up after itself (exports
/// may then start; another import may not, until the old files are gone).
#[derive(Default)]
struct TransferCounts {
    all: usize,
    per_contract: std::collections::HashMap<ContractId, (usize, bool)>,
}

type Transfers = Arc<Mutex<TransferCounts>>;

/// A transfer's place, given back on drop.
struct TransferSlot {
    transfers: Transfers,
    contract: ContractId,
}

impl TransferSlot {
    /// A place for `op` on `contract`'s folder, or why there is none.
    fn take(
        transfers: &Transfers,
        contract: ContractId,
        op: &DataOp,
    ) -> Result<TransferSlot, &'static str> {
        let import = matches!(op, DataOp::Import { .. });
        let mut t = transfers.lock().unwrap_or_else(|e| e.into_inner());
        if t.all >= TRANSFERS_MAX {
            return Err("too many transfers under way on this node; retry in a minute");
        }
        let (count, importing) = t.per_contract.get(&contract).copied().unwrap_or_default();
        if importing {
            return Err("an import to this app's /data is under way here; wait for it");
        }
        if import && count > 0 {
            return Err(
                "this app's /data is being exported or tidied after an import here; retry in a minute",
            );
        }
        if count >= TRANSFERS_PER_CONTRACT_MAX {
            return Err("two exports of this app's /data are under way here; wait for one");
        }
        t.all += 1;
        t.per_contract.insert(contract, (count + 1, import));
        Ok(TransferSlot {
            transfers: transfers.clone(),
            contract,
        })
    }

    /// The import is answered and only tidies up: exports may start.
    fn tidying(&self) {
        let mut t = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = t.per_contract.get_mut(&self.contract) {
            entry.1 = false;
        }
    }
}

impl Drop for TransferSlot {
    fn drop(&mut self) {
        let mut t = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        t.all = t.all.saturating_sub(1);
        if let Some((count, _)) = t.per_contract.get(&self.contract).copied() {
            if count <= 1 {
                t.per_contract.remove(&self.contract);
            } else {
                t.per_contract.insert(self.contract, (count - 1, false));
            }
        }
    }
}

/// The most a transfer of `bytes` may have taken: a minute, and the time at
/// [`PACE_BYTES_PER_SEC`].
fn deadline(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / PACE_BYTES_PER_SEC)
}

async fn transfer(
    peer: PeerId,
    mut stream: peergrid_mesh::Stream,
    contract: ContractId,
    op: DataOp,
    target: Target,
    slot: &TransferSlot,
) {
    match op {
        DataOp::Export => {
            if let Err(e) = export_to(&mut stream, &target.data).await {
                warn!(%peer, contract, reason = %e, "app data export failed");
                answer(&mut stream, ERROR, e.as_bytes(), LAST_FRAME_TIMEOUT).await;
            }
            let _ = tokio::time::timeout(LAST_FRAME_TIMEOUT, stream.close()).await;
        }
        DataOp::Import { bytes, hash } => {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let staging = target
                .data
                .path()
                .with_file_name(format!("{STAGING}.{contract}.{nonce}"));
            let result = import_from(&mut stream, contract, &target, &staging, bytes, hash).await;
            // The owner hears first; the staged folder (the old files, after a swap) goes
            // after, while this import's slot is held.
            match &result {
                Ok(report) => {
                    let body = serde_json::to_vec(report).unwrap_or_default();
                    if !answer(&mut stream, DONE, &body, LAST_FRAME_TIMEOUT).await {
                        info!(%peer, contract, "an app's /data was replaced, but its owner left before hearing it");
                    }
                }
                Err(e) => {
                    warn!(%peer, contract, reason = %e, "app data import refused");
                    answer(&mut stream, ERROR, e.as_bytes(), LAST_FRAME_TIMEOUT).await;
                }
            }
            slot.tidying();
            let mut probe = staging.as_os_str().to_os_string();
            probe.push(".probe");
            let left = staging.clone();
            let tidy = move || {
                let _ = std::fs::remove_dir(&probe);
                remove_all(&left).map_err(|e| e.to_string())
            };
            if let Err(e) = blocking(tidy).await {
                warn!(folder = %staging.display(), error = %e, "cannot remove what an import of an app's /data left; it goes with the contract, or at the app's next start");
            }
        }
    }
}

async fn read_request(stream: &mut peergrid_mesh::Stream) -> Result<DataRequest, String> {
    let read = async {
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| format!("the request did not arrive: {e}"))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > REQUEST_BYTES_MAX {
            return Err(format!(
                "a request of {len} bytes, more than the {REQUEST_BYTES_MAX} allowed"
            ));
        }
        let mut body = vec![0u8; len];
        stream
            .read_exact(&mut body)
            .await
            .map_err(|e| format!("the request did not arrive: {e}"))?;
        Ok(body)
    };
    let body = tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(format!("no request within {} s", REQUEST_TIMEOUT.as_secs())))?;
    // The version first, so that a newer client hears what this node speaks.
    if body.first().is_some_and(|v| *v != DATA_VERSION) {
        let whose = if body[0] > DATA_VERSION {
            "the node's"
        } else {
            "your"
        };
        return Err(format!(
            "request version {} is not one this node reads (it reads {DATA_VERSION}); {whose} peergrid is older: update it",
            body[0]
        ));
    }
    peergrid_core::codec::decode("data request", &body, REQUEST_BYTES_MAX)
        .map_err(|e| format!("malformed data request: {e}"))
}

/// The request's signature checked against `owner`, and its time against the clock.
pub fn check_signed(
    request: &DataRequest,
    grid: &str,
    owner: &peergrid_core::AccountId,
) -> Result<(), String> {
    let skew = now_ms().abs_diff(request.at_ms);
    if skew > DATA_CLOCK_SKEW_MS {
        return Err(format!(
            "the request was signed {} s away from this node's clock; check your clock",
            skew / 1000
        ));
    }
    let message = data_message(
        request.version,
        grid,
        request.contract,
        &request.op,
        request.at_ms,
    );
    if !request.signature.verify(owner, DATA_NAMESPACE, &message) {
        return Err(format!(
            "only contract {}'s owner {owner} may read or replace its /data, on this grid ({grid})",
            request.contract
        ));
    }
    Ok(())
}

/// The app's folder, if the request is its contract owner's, recent, and the contract
/// runs here.
async fn authorize(shared: Arc<Shared>, request: DataRequest) -> Result<Target, String> {
    let contract = request.contract;
    let workload = shared
        .world
        .lock()
        .await
        .workloads
        .get(&contract)
        .cloned()
        .ok_or_else(|| format!("contract {contract} has no workload on this node"))?;
    check_signed(&request, &shared.grid, &workload.owner)?;
    match workload.state {
        WorkloadState::Running => {}
        WorkloadState::Paused => {
            return Err(format!(
                "contract {contract} is in grace period: top up its owner's balance (`peergrid wallet transfer --to OWNER --amount N` from an account that has tokens), then retry"
            ));
        }
        WorkloadState::Refused { reason } => {
            return Err(format!(
                "contract {contract} does not run here (refused: {reason})"
            ));
        }
    }
    let data = shared.compute.data_dir(contract).ok_or_else(|| {
        format!(
            "contract {contract}'s app has no /data on this node yet: its deployment has not started here, or the node's disk for it is not mounted; see `peergrid app status`"
        )
    })?;
    let same = data.clone();
    Ok(Target {
        data,
        reserve: shared.disk_reserve,
        still_live: Box::new(move || {
            shared
                .compute
                .data_dir(contract)
                .is_some_and(|now| Arc::ptr_eq(&now, &same))
        }),
    })
}

/// Writes frames into a channel from a blocking task, hashing what it carries.
struct FrameSink {
    tx: tokio::sync::mpsc::Sender<(u8, Vec<u8>)>,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
    total: u64,
}

impl FrameSink {
    fn send(&self, tag: u8, body: Vec<u8>) -> std::io::Result<()> {
        self.tx
            .blocking_send((tag, body))
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}

impl Write for FrameSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(bytes);
        self.total += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.send(CHUNK, chunk)
    }
}

async fn export_to(stream: &mut peergrid_mesh::Stream, data: &DataDir) -> Result<(), String> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let dir = data.path().to_path_buf();
    let packing = tokio::task::spawn_blocking(move || {
        let mut sink = FrameSink {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
            hasher: blake3::Hasher::new(),
            total: 0,
        };
        let contents = crate::archive::contents(&dir)?;
        sink.send(BEGIN, peergrid_core::codec::encode(&contents))?;
        pack(&dir, &mut sink)?;
        let end = ExportEnd {
            bytes: sink.total,
            hash: *sink.hasher.finalize().as_bytes(),
        };
        sink.send(END, peergrid_core::codec::encode(&end))?;
        Ok::<_, std::io::Error>(contents)
    });
    // Only the time spent waiting on the peer counts against its pace: the node's own
    // reading of the folder does not.
    let (mut sent, mut waited) = (0u64, Duration::ZERO);
    while let Some((tag, body)) = rx.recv().await {
        sent += body.len() as u64;
        let began = std::time::Instant::now();
        tokio::time::timeout(IDLE_TIMEOUT, write_frame(stream, tag, &body))
            .await
            .map_err(|_| format!("the peer read nothing for {} s", IDLE_TIMEOUT.as_secs()))?
            .map_err(|e| format!("the peer left: {e}"))?;
        waited += began.elapsed();
        if waited > deadline(sent) {
            return Err(format!(
                "the export was read slower than {} KiB/s; retry on a faster link",
                PACE_BYTES_PER_SEC / 1024
            ));
        }
    }
    match packing.await {
        Ok(Ok(contents)) => {
            debug!(folder = %data.path().display(), entries = contents.entries, "an app's /data exported");
            Ok(())
        }
        // The app's own tree, past what an archive carries: the owner's to hear.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Other => {
            Err(format!("the app's /data cannot be exported: {e}"))
        }
        Ok(Err(e)) => {
            warn!(folder = %data.path().display(), error = %e, "cannot export an app's /data");
            Err(format!(
                "the node could not read the app's /data ({}); retry, or report it to the node's farmer",
                e.kind()
            ))
        }
        Err(_) => Err("the export stopped on the node; retry".to_string()),
    }
}

/// Feeds a blocking reader from a channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(buf) => {
                    self.buf = buf;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Runs `work` off the executor, its panic an error for the peer.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err("the import stopped on the node; retry".to_string()))
}

/// Takes the archive into `staging` (a new folder beside the app's), checks it, and
/// exchanges it with the app's folder: then `staging` holds the old files. Whatever
/// happens, the caller removes `staging` afterwards.
async fn import_from(
    stream: &mut peergrid_mesh::Stream,
    contract: ContractId,
    target: &Target,
    staging: &Path,
    bytes: u64,
    hash: [u8; 32],
) -> Result<ImportReport, String> {
    let data = &target.data;
    let quota = data.quota_bytes();
    // A tar carries each entry's header blocks besides its bytes (long names and links
    // up to 9 KiB), and each entry counts at least 4 KiB of the quota.
    let most = quota.saturating_mul(3).saturating_add(16 << 20);
    if bytes > most {
        return Err(format!(
            "the archive is {}, more than an app with a {} disk can hold; give it a larger --disk first (`peergrid app update NAME --disk SIZE`)",
            human(bytes),
            human(quota)
        ));
    }
    target.reserve.check(data.path(), bytes, 0).map_err(|full| {
        format!(
            "the node's disk has no room for the archive's {} ({} free, {} kept for the node itself); ask its farmer, or import to another replica",
            human(bytes),
            human(full.free_bytes),
            human(full.reserve_bytes)
        )
    })?;
    let made = staging.to_path_buf();
    blocking(move || {
        std::fs::create_dir(&made).map_err(|e| format!("the node cannot stage the import: {e}"))?;
        probe_exchange(&made).map_err(|e| {
            format!("the node's file system cannot swap folders at once ({e}); an import cannot be made safely here: ask its farmer")
        })
    })
    .await?;
    let unpacked = receive(stream, target, staging, bytes, hash).await?;
    if !(target.still_live)() {
        return Err(format!(
            "contract {contract}'s app stopped here during the import; nothing was replaced"
        ));
    }
    let (from, folder) = (staging.to_path_buf(), data.path().to_path_buf());
    blocking(move || {
        swap(&from, &folder)
            .map_err(|e| format!("the node cannot put the imported folder in place: {e}"))
    })
    .await?;
    data.replaced();
    info!(
        contract,
        files = unpacked.files,
        bytes = unpacked.file_bytes,
        "an app's /data was replaced by its owner's archive"
    );
    data.measure().await;
    Ok(ImportReport {
        contract,
        unpacked,
        quota_bytes: quota,
    })
}

/// Takes the archive's `bytes` from the peer into `staging`, unpacked and checked, its
/// files on disk; what it held.
async fn receive(
    stream: &mut peergrid_mesh::Stream,
    target: &Target,
    staging: &Path,
    bytes: u64,
    hash: [u8; 32],
) -> Result<Unpacked, String> {
    write_frame(stream, READY, &[])
        .await
        .map_err(|e| format!("the peer left: {e}"))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let into = staging.to_path_buf();
    let quota = target.data.quota_bytes();
    let reserve = target.reserve;
    let mut unpacking = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            buf: Vec::new(),
            at: 0,
        };
        unpack(reader, Some(&into), quota, Some(&reserve))
    });
    let mut hasher = blake3::Hasher::new();
    let mut tx = Some(tx);
    // The unpacking's result, once awaited (a task is awaited once).
    let mut outcome: Option<Result<Unpacked, String>> = None;
    // Only the time spent waiting on the peer counts against its pace: the node's own
    // unpacking does not.
    let mut waited = Duration::ZERO;
    let received = async {
        let mut left = bytes;
        let mut buf = vec![0u8; CHUNK_BYTES];
        while left > 0 {
            if waited > deadline(bytes - left) {
                return Err(format!(
                    "the archive came slower than {} KiB/s; retry on a faster link",
                    PACE_BYTES_PER_SEC / 1024
                ));
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let began = std::time::Instant::now();
            let read = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf[..want])).await;
            waited += began.elapsed();
            let n = read
                .map_err(|_| {
                    format!(
                        "the archive stopped coming for {} s",
                        IDLE_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("the archive did not arrive whole: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the archive ended after {} of its {bytes} bytes",
                    bytes - left
                ));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
            if let Some(sender) = &tx
                && sender.send(buf[..n].to_vec()).await.is_err()
            {
                // The unpacking ended before the bytes did: refused, or past the
                // archive's end (its padding follows, hashed all the same).
                tx = None;
                let result = (&mut unpacking)
                    .await
                    .unwrap_or_else(|_| Err("the import stopped on the node; retry".to_string()));
                let refused = result.as_ref().err().cloned();
                outcome = Some(result);
                if let Some(why) = refused {
                    return Err(why);
                }
            }
        }
        Ok::<_, String>(())
    };
    let received = received.await;
    // The unpacking ends (its input closed) before anything is tidied: nothing of it
    // may land after.
    drop(tx);
    let unpacked = match outcome {
        Some(result) => result,
        None => unpacking
            .await
            .unwrap_or_else(|_| Err("the import stopped on the node; retry".to_string())),
    };
    received?;
    let unpacked = unpacked?;
    if *hasher.finalize().as_bytes() != hash {
        return Err(
            "the archive that arrived is not the one signed (its BLAKE3 differs); retry"
                .to_string(),
        );
    }
    let synced = staging.to_path_buf();
    blocking(move || {
        sync_folder(&synced)
            .map_err(|e| format!("the node cannot write the import to its disk: {e}"))
    })
    .await?;
    Ok(unpacked)
}

/// Has the file system write out what was unpacked in `folder`, once for all its files.
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(folder)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}

/// Whether folders can be exchanged at once next to `staging`: tried with an empty one,
/// and back.
fn probe_exchange(staging: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    let mut probe = staging.as_os_str().to_os_string();
    probe.push(".probe");
    let probe = PathBuf::from(probe);
    std::fs::create_dir(&probe)?;
    let exchange = || renameat_with(CWD, staging, CWD, &probe, RenameFlags::EXCHANGE);
    let tried = exchange().and_then(|()| exchange());
    std::fs::remove_dir(&probe)?;
    tried.map_err(std::io::Error::from)
}

/// Exchanges the unpacked folder and the app's in one rename (`staging` then holds the
/// old files), and syncs their parent. A missing app folder is an error: its contract
/// ended, and its folder is not made again.
fn swap(staging: &Path, folder: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, staging, CWD, folder, RenameFlags::EXCHANGE)?;
    // Done either way: a failed sync only leaves the exchange less sure to outlive a
    // power cut.
    if let Some(parent) = folder.parent()
        && let Err(e) = std::fs::File::open(parent).and_then(|dir| dir.sync_all())
    {
        warn!(folder = %parent.display(), error = %e, "cannot sync an app's folder after an import");
    }
    Ok(())
}

/// Removes `path` and what it holds; nothing there is fine.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// What imports left beside the app's `/data` folder at `folder` (a node that stopped
/// during one): each to remove before the app starts.
pub fn leftovers(folder: &Path) -> Vec<PathBuf> {
    let Some(parent) = folder.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(STAGING))
        .map(|e| e.path())
        .collect()
}

fn human(bytes: u64) -> String {
    peergrid_core::capacity::human_bytes(bytes)
}

// ---------------------------------------------------------------------------------------
// The owner's side

async fn open(
    mesh: &Mesh,
    peer: PeerId,
    request: &DataRequest,
) -> Result<peergrid_mesh::Stream, DataError> {
    let mut tries = 0;
    let mut stream = loop {
        tries += 1;
        match mesh.open_stream(peer, DATA_PROTOCOL).await {
            Ok(s) => break s,
            // Two first dials can race to two connections; the surviving one takes a
            // retry.
            Err(peergrid_mesh::Error::OpenStream { .. }) if tries < 2 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // A mesh peer just started may not have found the node in the DHT yet.
            Err(peergrid_mesh::Error::PeerNotFound(_)) if tries < PEER_LOOKUPS => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(source) => {
                return Err(DataError::Mesh {
                    peer,
                    source: Box::new(source),
                });
            }
        }
    };
    let body = peergrid_core::codec::encode(request);
    let len = (body.len() as u32).to_le_bytes();
    let sent = async {
        stream.write_all(&len).await?;
        stream.write_all(&body).await?;
        stream.flush().await
    };
    sent.await
        .map_err(|e| DataError::Io(format!("sending the request: {e}")))?;
    Ok(stream)
}

/// Where an export into `out` is written until it checks: `out.part`.
pub fn part_path(out: &Path) -> PathBuf {
    let mut part = out.as_os_str().to_os_string();
    part.push(".part");
    PathBuf::from(part)
}

/// Export the app's `/data` from `peer` into `out` (a file made whole only at the end:
/// written to `out.part`, renamed once the archive's length and BLAKE3 check);
/// `progress` hears the bytes so far and the files' bytes announced.
pub async fn export(
    mesh: &Mesh,
    peer: PeerId,
    request: &DataRequest,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Exported, DataError> {
    let mut stream = open(mesh, peer, request).await?;
    let (tag, body) = read_frame(&mut stream, LISTING_TIMEOUT)
        .await
        .map_err(DataError::Io)?;
    let begin: Contents = match tag {
        BEGIN => peergrid_core::codec::decode("export header", &body, 64)
            .map_err(|e| DataError::Io(format!("the node's answer is malformed: {e}")))?,
        ERROR => return Err(DataError::Refused(error_text(&body))),
        other => {
            return Err(DataError::Io(format!(
                "the node answered frame {other} first"
            )));
        }
    };
    let part = part_path(out);
    let mut file = std::fs::File::create(&part)
        .map_err(|e| DataError::Io(format!("cannot write {}: {e}", part.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let received = loop {
        let (tag, body) = match read_frame(&mut stream, IDLE_TIMEOUT).await {
            Ok(frame) => frame,
            Err(e) => break Err(DataError::Io(e)),
        };
        match tag {
            CHUNK => {
                hasher.update(&body);
                total += body.len() as u64;
                if let Err(e) = file.write_all(&body) {
                    break Err(DataError::Io(format!(
                        "cannot write {}: {e}",
                        part.display()
                    )));
                }
                progress(total, begin.bytes);
            }
            END => {
                let end: ExportEnd = match peergrid_core::codec::decode("export end", &body, 64) {
                    Ok(end) => end,
                    Err(e) => {
                        break Err(DataError::Io(format!(
                            "the node's answer is malformed: {e}"
                        )));
                    }
                };
                let hash = *hasher.finalize().as_bytes();
                if end.bytes != total || end.hash != hash {
                    break Err(DataError::Io(format!(
                        "the archive did not arrive whole ({total} of {} bytes, or its BLAKE3 differs); retry",
                        end.bytes
                    )));
                }
                break Ok(Exported {
                    entries: begin.entries,
                    file_bytes: begin.bytes,
                    archive_bytes: total,
                    blake3: hex::encode(hash),
                });
            }
            ERROR => break Err(DataError::Refused(error_text(&body))),
            other => {
                break Err(DataError::Io(format!(
                    "the node sent frame {other} in an export"
                )));
            }
        }
    };
    let _ = stream.close().await;
    let done = received.and_then(|exported| {
        file.sync_all()
            .and_then(|()| std::fs::rename(&part, out))
            .map_err(|e| DataError::Io(format!("cannot write {}: {e}", out.display())))?;
        Ok(exported)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    done
}

/// What a local archive holds and takes of an app's disk, checked the way a node checks
/// it before it is sent; its length and BLAKE3.
pub fn scan(archive: &Path) -> Result<(Unpacked, u64, [u8; 32]), String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", archive.display());
    let file = std::fs::File::open(archive).map_err(cannot)?;
    let bytes = file.metadata().map_err(cannot)?.len();
    let unpacked = unpack(std::io::BufReader::new(file), None, u64::MAX, None)
        .map_err(|e| format!("{}: {e}", archive.display()))?;
    // The whole file, the archive's end and padding included: the node hashes all it gets.
    let mut hasher = blake3::Hasher::new();
    let mut again = std::fs::File::open(archive).map_err(cannot)?;
    std::io::copy(&mut again, &mut hasher).map_err(cannot)?;
    Ok((unpacked, bytes, *hasher.finalize().as_bytes()))
}

/// Replace the app's `/data` on `peer` with the archive at `archive` (`bytes` long, its
/// BLAKE3 in the signed request); `progress` hears the bytes sent.
pub async fn import(
    mesh: &Mesh,
    peer: PeerId,
    request: &DataRequest,
    archive: &Path,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, DataError> {
    let DataOp::Import { bytes, .. } = request.op else {
        return Err(DataError::Io("not an import request".to_string()));
    };
    let stream = open(mesh, peer, request).await?;
    let (mut input, mut output) = stream.split();
    let (tag, body) = read_frame(&mut input, IDLE_TIMEOUT)
        .await
        .map_err(DataError::Io)?;
    match tag {
        READY => {}
        ERROR => return Err(DataError::Refused(error_text(&body))),
        other => {
            return Err(DataError::Io(format!(
                "the node answered frame {other} first"
            )));
        }
    }
    let mut file = std::fs::File::open(archive)
        .map_err(|e| DataError::Io(format!("cannot read {}: {e}", archive.display())))?;
    let all_sent = std::cell::Cell::new(false);
    let send = async {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut sent = 0u64;
        while sent < bytes {
            let want = buf
                .len()
                .min(usize::try_from(bytes - sent).unwrap_or(usize::MAX));
            let n = file
                .read(&mut buf[..want])
                .map_err(|e| DataError::Io(format!("cannot read {}: {e}", archive.display())))?;
            if n == 0 {
                return Err(DataError::Io(format!(
                    "{} changed while it was sent; retry",
                    archive.display()
                )));
            }
            tokio::time::timeout(IDLE_TIMEOUT, output.write_all(&buf[..n]))
                .await
                .map_err(|_| {
                    DataError::Io(format!(
                        "the node read nothing for {} s",
                        IDLE_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| DataError::Io(format!("the node stopped reading: {e}")))?;
            sent += n as u64;
            progress(sent);
        }
        // Every byte is written: from here the node may have it all.
        all_sent.set(true);
        output
            .flush()
            .await
            .map_err(|e| DataError::Io(format!("the node stopped reading: {e}")))?;
        // The node answers once it has unpacked and checked it all.
        std::future::pending::<Result<(), DataError>>().await
    };
    // The node may refuse part-way (the app's disk, its own): its answer ends the send.
    // One read of the answer throughout, so that nothing it took is lost.
    let read = read_answer(&mut input);
    tokio::pin!(read);
    let outcome = tokio::select! {
        biased;
        answer = &mut read => Ok(answer),
        sent = send => Err(sent.err().unwrap_or_else(|| DataError::Io("sending stopped".to_string()))),
    };
    let answer = match outcome {
        Ok(answer) => answer,
        // A send cut by the node's refusal: its answer says why.
        Err(cut) => match tokio::time::timeout(Duration::from_secs(5), &mut read).await {
            Ok(Ok(frame)) => Ok(frame),
            _ if all_sent.get() => return Err(DataError::Unsure(cut.to_string())),
            _ => return Err(cut),
        },
    };
    let _ = output.close().await;
    let (tag, body) = answer.map_err(|e| match all_sent.get() {
        true => DataError::Unsure(e),
        false => DataError::Io(e),
    })?;
    match tag {
        DONE => serde_json::from_slice(&body)
            .map_err(|e| DataError::Io(format!("the node's answer is malformed: {e}"))),
        ERROR => Err(DataError::Refused(error_text(&body))),
        other => Err(DataError::Io(format!("the node answered frame {other}"))),
    }
}

/// The node's answer to an import, however long unpacking takes after the last byte
/// (each wait bounded by [`IDLE_TIMEOUT`] less than the whole: a large archive's final
/// checks take a while).
async fn read_answer<R: futures::AsyncRead + Unpin>(
    input: &mut R,
) -> Result<(u8, Vec<u8>), String> {
    let mut head = [0u8; 5];
    input
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("the node ended the import without an answer: {e}"))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(format!("the node's answer is {len} bytes long"));
    }
    let mut body = vec![0u8; len];
    tokio::time::timeout(IDLE_TIMEOUT, input.read_exact(&mut body))
        .await
        .map_err(|_| "the node's answer stopped part-way".to_string())?
        .map_err(|e| format!("the node's answer stopped part-way: {e}"))?;
    Ok((head[0], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: &str = "peergrid-devnet/0123";

    #[test]
    fn requests_are_bound_to_their_contract_and_archive() {
        let key = Keypair::generate().expect("test setup");
        let op = DataOp::Import {
            bytes: 10,
            hash: [1; 32],
        };
        let request = DataRequest::sign(&key, GRID, 7, op.clone());
        assert_eq!(check_signed(&request, GRID, &key.account()), Ok(()));
        let other = Keypair::generate().expect("test setup");
        let e = check_signed(&request, GRID, &other.account()).expect_err("not the owner");
        assert!(e.contains("owner"), "{e}");
        // The same request on another grid the key is used on (a devnet's, a testnet's).
        let e =
            check_signed(&request, "peergrid-test/abc", &key.account()).expect_err("another grid");
        assert!(e.contains("on this grid (peergrid-test/abc)"), "{e}");
        for forged in [
            DataRequest {
                op: DataOp::Import {
                    bytes: 10,
                    hash: [2; 32],
                },
                ..request.clone()
            },
            DataRequest {
                contract: 8,
                ..request.clone()
            },
            DataRequest {
                op: DataOp::Export,
                ..request.clone()
            },
        ] {
            assert!(check_signed(&forged, GRID, &key.account()).is_err());
        }
        let stale = DataRequest::sign(&key, GRID, 7, DataOp::Export);
        let stale = DataRequest {
            at_ms: stale.at_ms - DATA_CLOCK_SKEW_MS - 1000,
            ..stale
        };
        let message = data_message(DATA_VERSION, GRID, 7, &DataOp::Export, stale.at_ms);
        let stale = DataRequest {
            signature: Signature(key.sign(DATA_NAMESPACE, &message)),
            ..stale
        };
        let e = check_signed(&stale, GRID, &key.account()).expect_err("stale");
        assert!(e.contains("clock"), "{e}");
    }

    #[test]
    fn an_import_runs_alone_and_exports_two_at_a_time() {
        let transfers: Transfers = Arc::default();
        let import = DataOp::Import {
            bytes: 1,
            hash: [0; 32],
        };
        let first = TransferSlot::take(&transfers, 1, &import).expect("an import");
        assert!(TransferSlot::take(&transfers, 1, &DataOp::Export).is_err());
        assert!(TransferSlot::take(&transfers, 1, &import).is_err());
        // Another app is not held up.
        let other = TransferSlot::take(&transfers, 2, &import).expect("another app's");
        // Tidying: exports may start, imports may not.
        first.tidying();
        let export = TransferSlot::take(&transfers, 1, &DataOp::Export).expect("an export");
        assert!(TransferSlot::take(&transfers, 1, &import).is_err());
        assert!(
            TransferSlot::take(&transfers, 1, &DataOp::Export).is_err(),
            "two at most"
        );
        drop(first);
        drop(export);
        drop(other);
        let t = transfers.lock().expect("lock");
        assert_eq!((t.all, t.per_contract.len()), (0, 0), "nothing leaks");
        drop(t);
        // Eight in all on a node.
        let held: Vec<_> = (10..18)
            .map(|c| TransferSlot::take(&transfers, c, &DataOp::Export).expect("a slot"))
            .collect();
        assert!(TransferSlot::take(&transfers, 99, &DataOp::Export).is_err());
        drop(held);
        TransferSlot::take(&transfers, 99, &DataOp::Export).expect("freed");
    }

    #[test]
    fn a_swap_exchanges_two_folders_at_once() {
        let root = tempfile::tempdir().expect("test setup");
        let data = root.path().join("data");
        let staging = root.path().join(format!("{STAGING}.1.2"));
        std::fs::create_dir(&data).expect("test setup");
        std::fs::write(data.join("old"), b"old").expect("test setup");
        std::fs::create_dir(&staging).expect("test setup");
        std::fs::write(staging.join("new"), b"new").expect("test setup");
        probe_exchange(&staging).expect("this file system exchanges folders");
        assert!(
            staging.join("new").exists(),
            "a probe leaves the staging as it was"
        );
        swap(&staging, &data).expect("swap");
        assert!(data.join("new").exists() && !data.join("old").exists());
        assert!(staging.join("old").exists());
        // A leftover is found by its prefix; the folder itself is not.
        assert_eq!(leftovers(&data), vec![staging.clone()]);
        // An app folder that is gone (its contract ended) is not made again.
        remove_all(&data).expect("remove");
        assert!(swap(&staging, &data).is_err());
        assert!(!data.exists());
    }
}
