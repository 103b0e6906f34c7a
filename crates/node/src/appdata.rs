//! `/peergrid/data/1`: an app's `/data` folder on one node, copied out as a tar archive or
//! replaced by one, for its contract's owner only.
//!
//! ```text
//! request:  len: u32 LE | borsh(DataRequest)            (at most REQUEST_BYTES_MAX)
//! frames:   tag: u8 | len: u32 LE | len bytes            (at most FRAME_BYTES_MAX)
//! export:   node: BEGIN {files, bytes} | CHUNK… | END {bytes, blake3}    (ERROR at any point)
//! import:   node: READY or ERROR; client: the archive, exactly `bytes`; node: DONE or ERROR
//! ```
//!
//! An export is read while the app runs: a file the app writes meanwhile may be caught
//! part-way, so an app that needs a consistent copy pauses its own writes first. Every
//! name of a hard-linked file is exported as a file of its own.
//!
//! An import is unpacked beside the folder (`data.import`), checked whole (only files,
//! folders and symbolic links, no name leaving the folder, the app's disk, the node's
//! disk reserve, the archive's BLAKE3 that the owner signed), and only then exchanged
//! with the folder in one rename (`RENAME_EXCHANGE`): an import that fails or is cut
//! leaves `/data` as it was, and a node that crashes part-way removes the leftover when
//! the app starts. Runs under way finish on the old files, which are then removed.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_compute::data::{DataDir, ENTRY_BYTES_MIN, usage};
use peergrid_core::fs::DiskReserve;
use peergrid_core::tx::Signature;
use peergrid_core::{ContractId, Keypair, now_ms};
use peergrid_mesh::{Mesh, PeerId, Slots, StreamProtocol};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::shared::Shared;
use crate::world::WorkloadState;

/// The protocol.
pub const DATA_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/data/1");
/// The request format this node writes and reads.
pub const DATA_VERSION: u8 = 1;
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
/// Requests one node answers at once, and for one peer.
const STREAMS_MAX: usize = 4;
const STREAMS_PER_PEER_MAX: usize = 2;
/// Where an import is unpacked, beside the app's folder.
const STAGING: &str = "data.import";
/// Longest path or link target accepted in an archive.
const PATH_BYTES_MAX: usize = 4096;

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

/// What the owner signs.
pub fn data_message(version: u8, contract: ContractId, op: &DataOp, at_ms: u64) -> Vec<u8> {
    peergrid_core::codec::encode(&(version, contract, op, at_ms))
}

impl DataRequest {
    /// Sign `op` on `contract`'s `/data` with the owner's key, now.
    pub fn sign(owner: &Keypair, contract: ContractId, op: DataOp) -> DataRequest {
        let at_ms = now_ms();
        let message = data_message(DATA_VERSION, contract, &op, at_ms);
        DataRequest {
            version: DATA_VERSION,
            contract,
            op,
            at_ms,
            signature: Signature(owner.sign(DATA_NAMESPACE, &message)),
        }
    }
}

/// What an export holds, announced before its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ExportBegin {
    /// Files, folders and links.
    pub entries: u64,
    /// The files' bytes.
    pub bytes: u64,
}

/// The end of an export: the archive's length and BLAKE3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
struct ExportEnd {
    bytes: u64,
    hash: [u8; 32],
}

/// What an archive holds, as it unpacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unpacked {
    /// Regular files.
    pub files: u64,
    /// Folders, those made for a path's parents included.
    pub folders: u64,
    /// Symbolic links.
    pub links: u64,
    /// The files' bytes.
    pub file_bytes: u64,
    /// What it takes of an app's disk, counted as `/data`'s quota counts.
    pub disk_bytes: u64,
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

/// Reads one frame, its body at most [`FRAME_BYTES_MAX`], within [`IDLE_TIMEOUT`].
async fn read_frame<R: futures::AsyncRead + Unpin>(input: &mut R) -> Result<(u8, Vec<u8>), String> {
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
    tokio::time::timeout(IDLE_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(format!("nothing came for {} s", IDLE_TIMEOUT.as_secs())))
}

fn error_text(body: &[u8]) -> String {
    let end = body.len().min(ERROR_BYTES_MAX);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

// ---------------------------------------------------------------------------------------
// Archives

/// The tar of the folder at `dir` (a file's bytes as long as it was when listed), written
/// to `out`; what it holds is told to `begin` before the first byte.
pub fn pack(
    dir: &Path,
    out: impl Write,
    begin: impl FnOnce(ExportBegin) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let entries = list(dir)?;
    begin(ExportBegin {
        entries: entries.len() as u64,
        bytes: entries.iter().map(|e| e.len).sum(),
    })?;
    let mut tar = tar::Builder::new(out);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(entry.mtime);
        match entry.kind {
            Kind::Folder => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &entry.name, std::io::empty())?;
            }
            Kind::Link => {
                let target = match std::fs::read_link(dir.join(&entry.name)) {
                    Ok(target) => target,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                tar.append_link(&mut header, &entry.name, target)?;
            }
            Kind::File => {
                let file = match std::fs::File::open(dir.join(&entry.name)) {
                    Ok(file) => file,
                    // Removed by the app since it was listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(entry.len);
                // Exactly the length announced: cut or padded with zeros if the app
                // changed the file meanwhile, so the archive stays whole.
                let bytes = file
                    .take(entry.len)
                    .chain(std::io::repeat(0))
                    .take(entry.len);
                tar.append_data(&mut header, &entry.name, bytes)?;
            }
        }
    }
    tar.into_inner()?.flush()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Folder,
    Link,
}

struct Listed {
    name: PathBuf,
    kind: Kind,
    len: u64,
    mtime: u64,
}

/// Everything under `dir`, a folder before what it holds, names sorted; links never
/// followed; what is neither file, folder nor link (the guest cannot make one) skipped.
fn list(dir: &Path) -> std::io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names = Vec::new();
        match std::fs::read_dir(dir.join(&rel)) {
            Ok(entries) => {
                for entry in entries {
                    names.push(entry?.file_name());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        names.sort();
        let mut folders = Vec::new();
        for name in names {
            let rel = rel.join(name);
            let meta = match dir.join(&rel).symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let kind = if meta.is_dir() {
                Kind::Folder
            } else if meta.is_file() {
                Kind::File
            } else if meta.file_type().is_symlink() {
                Kind::Link
            } else {
                continue;
            };
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let len = if kind == Kind::File { meta.len() } else { 0 };
            if kind == Kind::Folder {
                folders.push(rel.clone());
            }
            out.push(Listed {
                name: rel,
                kind,
                len,
                mtime,
            });
        }
        // Popped in name order.
        stack.extend(folders.into_iter().rev());
    }
    Ok(out)
}

/// The entry's path inside the folder: relative, nothing but names (`.` dropped); `None`
/// for the folder itself.
fn inside(path: &Path) -> Result<Option<PathBuf>, String> {
    if path.as_os_str().len() > PATH_BYTES_MAX {
        return Err(format!(
            "a name longer than {PATH_BYTES_MAX} bytes: {}…",
            path.to_string_lossy().chars().take(60).collect::<String>()
        ));
    }
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "{:?} leaves the folder (an absolute path or `..`): only paths inside /data can be imported",
                    path
                ));
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Reads the tar archive from `input` and, with `dest` (a new folder), unpacks it there.
/// Refused: anything but files, folders and symbolic links; names leaving the folder or
/// passing through a link; a name twice; more than `quota_bytes` of disk as `/data`
/// counts it; with `reserve`, a file that would eat into the node's disk reserve.
pub fn unpack(
    input: impl Read,
    dest: Option<&Path>,
    quota_bytes: u64,
    reserve: Option<&DiskReserve>,
) -> Result<Unpacked, String> {
    use std::collections::HashMap;
    let mut seen: HashMap<PathBuf, Kind> = HashMap::new();
    let mut n = Unpacked::default();
    let over = |n: &Unpacked, at: &Path| {
        format!(
            "the archive takes more than the app's disk: {} by {:?}, past its {}; give it a larger --disk first (`peergrid app update NAME --disk SIZE`)",
            human(n.disk_bytes),
            at,
            human(quota_bytes)
        )
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| damaged(0, &e))?;
    for (read, entry) in (0u64..).zip(entries) {
        let mut entry = entry.map_err(|e| damaged(read, &e))?;
        let raw = entry
            .path()
            .map_err(|e| format!("an entry's name cannot be read: {e}"))?
            .into_owned();
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
            tar::EntryType::Directory => Kind::Folder,
            tar::EntryType::Symlink => Kind::Link,
            tar::EntryType::Link => {
                return Err(format!(
                    "{raw:?} is a hard link: archive its files without them (tar --hard-dereference)"
                ));
            }
            other => {
                return Err(format!(
                    "{raw:?} is a {other:?} entry: only files, folders and symbolic links can be imported"
                ));
            }
        };
        let Some(name) = inside(&raw)? else {
            if kind == Kind::Folder {
                continue;
            }
            return Err(format!("{raw:?} has no name"));
        };
        // Each parent a folder of the archive's own (made if the archive did not list it).
        let mut parent = PathBuf::new();
        let parts: Vec<_> = name.components().collect();
        for part in &parts[..parts.len() - 1] {
            parent.push(part);
            match seen.get(&parent) {
                Some(Kind::Folder) => {}
                Some(_) => {
                    return Err(format!(
                        "{name:?} is under {parent:?}, which the archive holds as a file or link"
                    ));
                }
                None => {
                    if let Some(dest) = dest {
                        std::fs::create_dir(dest.join(&parent))
                            .map_err(|e| format!("cannot make folder {parent:?}: {e}"))?;
                    }
                    seen.insert(parent.clone(), Kind::Folder);
                    n.folders += 1;
                    n.disk_bytes = n.disk_bytes.saturating_add(ENTRY_BYTES_MIN);
                }
            }
        }
        match seen.get(&name) {
            Some(Kind::Folder) if kind == Kind::Folder => continue,
            Some(_) => return Err(format!("{name:?} is in the archive twice")),
            None => {}
        }
        let size = entry.header().size().unwrap_or(0);
        let took = match kind {
            Kind::File => ENTRY_BYTES_MIN.saturating_add(peergrid_compute::data::in_blocks(size)),
            _ => ENTRY_BYTES_MIN,
        };
        n.disk_bytes = n.disk_bytes.saturating_add(took);
        if n.disk_bytes > quota_bytes && dest.is_some() {
            return Err(over(&n, &name));
        }
        seen.insert(name.clone(), kind);
        match kind {
            Kind::Folder => n.folders += 1,
            Kind::Link => n.links += 1,
            Kind::File => {
                n.files += 1;
                n.file_bytes = n.file_bytes.saturating_add(size);
            }
        }
        let Some(dest) = dest else {
            continue;
        };
        let path = dest.join(&name);
        match kind {
            Kind::Folder => std::fs::create_dir(&path)
                .map_err(|e| format!("cannot make folder {name:?}: {e}"))?,
            Kind::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("{name:?}'s link target cannot be read: {e}"))?
                    .ok_or_else(|| format!("{name:?} is a link without a target"))?;
                if target.as_os_str().is_empty() || target.as_os_str().len() > PATH_BYTES_MAX {
                    return Err(format!("{name:?} links to an empty or too long target"));
                }
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| format!("cannot make link {name:?}: {e}"))?;
            }
            Kind::File => {
                if let Some(reserve) = reserve {
                    reserve.check(dest, size, 0).map_err(|full| {
                        format!(
                            "the node's disk has no room for {name:?} ({} free, {} kept for the node itself); ask its farmer, or import to another replica",
                            human(full.free_bytes),
                            human(full.reserve_bytes)
                        )
                    })?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| format!("cannot make file {name:?}: {e}"))?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
                    .map_err(|e| format!("cannot write {name:?}: {e}"))?;
                if copied != size {
                    return Err(format!(
                        "the archive ends inside {name:?} ({copied} of its {size} bytes)"
                    ));
                }
                if let Ok(mtime) = entry.header().mtime() {
                    let at = std::time::UNIX_EPOCH + Duration::from_secs(mtime);
                    let _ = file.set_modified(at);
                }
                file.sync_all()
                    .map_err(|e| format!("cannot write {name:?}: {e}"))?;
            }
        }
    }
    if let Some(dest) = dest {
        // Folders that hold many names take more than one block: the quota's own walk has
        // the last word.
        let walked = usage(dest).map_err(|e| format!("cannot measure what was unpacked: {e}"))?;
        n.disk_bytes = n.disk_bytes.max(walked);
        if n.disk_bytes > quota_bytes {
            return Err(over(&n, Path::new("its folders")));
        }
    }
    Ok(n)
}

/// Why an archive cannot be read, after `read` entries: the tar reader's words, which may
/// quote the bytes it choked on, kept to printable text.
fn damaged(read: u64, e: &std::io::Error) -> String {
    if read == 0 {
        return "not a tar archive (or an empty one); make one with `peergrid app data export`, or `tar -cf ARCHIVE -C FOLDER .`".to_string();
    }
    let why: String = e
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(120)
        .collect();
    format!("the archive is damaged after {read} entries ({why})")
}

fn human(bytes: u64) -> String {
    peergrid_core::capacity::human_bytes(bytes)
}

// ---------------------------------------------------------------------------------------
// The node's side

/// Serve `/peergrid/data/1` for the apps of `shared` until the task is aborted.
pub fn serve(mesh: &Mesh, shared: Arc<Shared>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut incoming = mesh
        .accept_streams(DATA_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("cannot serve {DATA_PROTOCOL}: {e}"))?;
    let slots = Slots::new(STREAMS_MAX, STREAMS_PER_PEER_MAX);
    let importing: Arc<Mutex<std::collections::HashSet<ContractId>>> = Arc::default();
    Ok(tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let slot = match slots.take(peer) {
                Ok(slot) => slot,
                Err(busy) => {
                    debug!(%peer, "data stream refused: {busy}");
                    continue;
                }
            };
            let shared = shared.clone();
            let importing = importing.clone();
            tokio::spawn(async move {
                serve_one(peer, stream, &shared, &importing).await;
                drop(slot);
            });
        }
    }))
}

async fn serve_one(
    peer: PeerId,
    mut stream: peergrid_mesh::Stream,
    shared: &Shared,
    importing: &Mutex<std::collections::HashSet<ContractId>>,
) {
    let request = match read_request(&mut stream).await {
        Ok(request) => request,
        Err(e) => {
            debug!(%peer, error = %e, "data request refused");
            let _ = write_frame(&mut stream, ERROR, e.as_bytes()).await;
            let _ = stream.close().await;
            return;
        }
    };
    let contract = request.contract;
    let data = match authorize(shared, &request).await {
        Ok(data) => data,
        Err(e) => {
            warn!(%peer, contract, reason = %e, "data request refused");
            let _ = write_frame(&mut stream, ERROR, e.as_bytes()).await;
            let _ = stream.close().await;
            return;
        }
    };
    let result = match request.op {
        DataOp::Export => export_to(&mut stream, &data).await,
        DataOp::Import { bytes, hash } => {
            let first = importing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(contract);
            if !first {
                Err("an import to this app is already under way here; wait for it".to_string())
            } else {
                let reserve = shared.disk_reserve;
                let result = import_from(&mut stream, contract, &data, bytes, hash, &reserve).await;
                importing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&contract);
                result
            }
        }
    };
    if let Err(e) = result {
        warn!(%peer, contract, reason = %e, "app data transfer failed");
        let _ = write_frame(&mut stream, ERROR, e.as_bytes()).await;
    }
    let _ = stream.close().await;
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
    let body = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| Err("no request within 10 s".to_string()))?;
    // The version first, so that a newer client hears what this node speaks.
    if body.first().is_some_and(|v| *v != DATA_VERSION) {
        return Err(format!(
            "request version {} is not one this node reads (it reads {DATA_VERSION}); the node's software is older than yours",
            body[0]
        ));
    }
    peergrid_core::codec::decode("data request", &body, REQUEST_BYTES_MAX)
        .map_err(|e| format!("malformed data request: {e}"))
}

/// The app's folder, if the request is its contract owner's, recent, and the contract
/// runs here.
async fn authorize(shared: &Shared, request: &DataRequest) -> Result<Arc<DataDir>, String> {
    let contract = request.contract;
    let workload = shared
        .world
        .lock()
        .await
        .workloads
        .get(&contract)
        .cloned()
        .ok_or_else(|| format!("contract {contract} has no workload on this node"))?;
    let skew = now_ms().abs_diff(request.at_ms);
    if skew > DATA_CLOCK_SKEW_MS {
        return Err(format!(
            "the request was signed {} s away from this node's clock; check your clock",
            skew / 1000
        ));
    }
    let message = data_message(request.version, contract, &request.op, request.at_ms);
    if !request
        .signature
        .verify(&workload.owner, DATA_NAMESPACE, &message)
    {
        return Err(format!(
            "only contract {contract}'s owner {} may read or replace its /data",
            workload.owner
        ));
    }
    match workload.state {
        WorkloadState::Running => {}
        WorkloadState::Paused => {
            return Err(format!(
                "contract {contract} is in grace period: top up (`peergrid account fund`), then retry"
            ));
        }
        WorkloadState::Refused { reason } => {
            return Err(format!(
                "contract {contract} does not run here (refused: {reason})"
            ));
        }
    }
    shared.compute.data_dir(contract).ok_or_else(|| {
        format!(
            "contract {contract}'s app has no /data on this node yet: its deployment has not started here, or the node's disk for it is not mounted; see `peergrid app status`"
        )
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
        let begin_tx = sink.tx.clone();
        pack(&dir, &mut sink, |begin| {
            begin_tx
                .blocking_send((BEGIN, peergrid_core::codec::encode(&begin)))
                .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
        })?;
        let end = ExportEnd {
            bytes: sink.total,
            hash: *sink.hasher.finalize().as_bytes(),
        };
        sink.send(END, peergrid_core::codec::encode(&end))?;
        Ok::<_, std::io::Error>(end)
    });
    while let Some((tag, body)) = rx.recv().await {
        tokio::time::timeout(IDLE_TIMEOUT, write_frame(stream, tag, &body))
            .await
            .map_err(|_| format!("the peer read nothing for {} s", IDLE_TIMEOUT.as_secs()))?
            .map_err(|e| format!("the peer left: {e}"))?;
    }
    match packing.await {
        Ok(Ok(end)) => {
            debug!(folder = %data.path().display(), bytes = end.bytes, "an app's /data exported");
            Ok(())
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

async fn import_from(
    stream: &mut peergrid_mesh::Stream,
    contract: ContractId,
    data: &DataDir,
    bytes: u64,
    hash: [u8; 32],
    reserve: &DiskReserve,
) -> Result<(), String> {
    let quota = data.quota_bytes();
    // A tar takes at most a few header blocks per entry more than its files, and each
    // entry counts at least 4 KiB of the quota.
    let most = quota.saturating_mul(2).saturating_add(1 << 20);
    if bytes > most {
        return Err(format!(
            "the archive is {}, more than an app with a {} disk can hold; give it a larger --disk first (`peergrid app update NAME --disk SIZE`)",
            human(bytes),
            human(quota)
        ));
    }
    let staging = data.path().with_file_name(STAGING);
    let cleared = staging.clone();
    tokio::task::spawn_blocking(move || remove_all(&cleared))
        .await
        .map_err(|_| "the node could not prepare the import".to_string())?
        .map_err(|e| format!("the node cannot clear its earlier import: {e}"))?;
    reserve.check(data.path(), bytes, 0).map_err(|full| {
        format!(
            "the node's disk has no room for the archive's {} ({} free, {} kept for the node itself); ask its farmer, or import to another replica",
            human(bytes),
            human(full.free_bytes),
            human(full.reserve_bytes)
        )
    })?;
    std::fs::create_dir(&staging).map_err(|e| format!("the node cannot stage the import: {e}"))?;
    write_frame(stream, READY, &[])
        .await
        .map_err(|e| format!("the peer left: {e}"))?;

    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let into = staging.clone();
    let reserve_copy = *reserve;
    let mut unpacking = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            buf: Vec::new(),
            at: 0,
        };
        unpack(reader, Some(&into), quota, Some(&reserve_copy))
    });
    let mut hasher = blake3::Hasher::new();
    let mut left = bytes;
    let mut tx = Some(tx);
    let mut unpacked = None;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let received = async {
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf[..want]))
                .await
                .map_err(|_| {
                    format!(
                        "the archive stopped coming for {} s",
                        IDLE_TIMEOUT.as_secs()
                    )
                })?
                .map_err(|e| format!("the archive did not arrive whole: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "the archive ended after {} of its {} bytes",
                    bytes - left,
                    bytes
                ));
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
            if let Some(sender) = &tx
                && sender.send(buf[..n].to_vec()).await.is_err()
            {
                // The unpacking ended before the bytes did: refused, or past the
                // archive's end (its padding follows).
                tx = None;
                let result = (&mut unpacking)
                    .await
                    .map_err(|_| "the import stopped on the node; retry".to_string())?;
                unpacked = Some(result?);
            }
        }
        Ok::<_, String>(())
    };
    let result = received.await;
    drop(tx);
    let result = match (result, unpacked) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(done)) => Ok(done),
        (Ok(()), None) => unpacking
            .await
            .map_err(|_| "the import stopped on the node; retry".to_string())?,
    };
    let unpacked = match result {
        Ok(unpacked) if *hasher.finalize().as_bytes() != hash => {
            let _ = unpacked;
            Err(
                "the archive that arrived is not the one signed (its BLAKE3 differs); retry"
                    .to_string(),
            )
        }
        other => other,
    };
    let unpacked = match unpacked {
        Ok(unpacked) => unpacked,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || remove_all(&staging)).await;
            return Err(e);
        }
    };
    let folder = data.path().to_path_buf();
    let swapped = staging.clone();
    tokio::task::spawn_blocking(move || swap(&swapped, &folder))
        .await
        .map_err(|_| "the import stopped on the node; retry".to_string())?
        .map_err(|e| format!("the node cannot put the imported folder in place: {e}"))?;
    data.replaced();
    info!(
        contract,
        files = unpacked.files,
        bytes = unpacked.file_bytes,
        "an app's /data was replaced by its owner's archive"
    );
    // The old files go in the background: the owner hears at once.
    tokio::task::spawn_blocking(move || {
        if let Err(e) = remove_all(&staging) {
            warn!(folder = %staging.display(), error = %e, "cannot remove an app's /data replaced by an import; it goes with the contract");
        }
    });
    data.measure().await;
    let report = ImportReport {
        contract,
        unpacked,
        quota_bytes: quota,
    };
    let body = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
    write_frame(stream, DONE, &body)
        .await
        .map_err(|e| format!("the peer left before hearing the import was done: {e}"))?;
    Ok(())
}

/// Exchanges the unpacked folder and the app's in one rename; the app's folder (now at
/// `staging`) is then the one to remove.
fn swap(staging: &Path, folder: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    if !folder.exists() {
        return std::fs::rename(staging, folder);
    }
    renameat_with(CWD, staging, CWD, folder, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

/// Removes `path` and what it holds; nothing there is fine.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where an app's import is staged, beside its `/data` folder at `folder`: a leftover
/// from a crash is removed when the app starts.
pub fn staging_of(folder: &Path) -> PathBuf {
    folder.with_file_name(STAGING)
}

// ---------------------------------------------------------------------------------------
// The owner's side

async fn open(
    mesh: &Mesh,
    peer: PeerId,
    request: &DataRequest,
) -> Result<peergrid_mesh::Stream, DataError> {
    let mut stream = match mesh.open_stream(peer, DATA_PROTOCOL).await {
        Ok(s) => s,
        // Two first dials can race to two connections; the surviving one takes a retry.
        Err(peergrid_mesh::Error::OpenStream { .. }) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mesh.open_stream(peer, DATA_PROTOCOL)
                .await
                .map_err(|source| DataError::Mesh {
                    peer,
                    source: Box::new(source),
                })?
        }
        Err(source) => {
            return Err(DataError::Mesh {
                peer,
                source: Box::new(source),
            });
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
    let (tag, body) = read_frame(&mut stream).await.map_err(DataError::Io)?;
    let begin: ExportBegin = match tag {
        BEGIN => peergrid_core::codec::decode("export header", &body, 64)
            .map_err(|e| DataError::Io(format!("the node's answer is malformed: {e}")))?,
        ERROR => return Err(DataError::Refused(error_text(&body))),
        other => {
            return Err(DataError::Io(format!(
                "the node answered frame {other} first"
            )));
        }
    };
    let part = PathBuf::from(format!("{}.part", out.display()));
    let mut file = std::fs::File::create(&part)
        .map_err(|e| DataError::Io(format!("cannot write {}: {e}", part.display())))?;
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let received = loop {
        let (tag, body) = match read_frame(&mut stream).await {
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
    let (tag, body) = read_frame(&mut input).await.map_err(DataError::Io)?;
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
        output
            .flush()
            .await
            .map_err(|e| DataError::Io(format!("the node stopped reading: {e}")))?;
        // The node answers once it has unpacked and checked it all.
        std::future::pending::<Result<(), DataError>>().await
    };
    // The node may refuse part-way (the app's disk, its own): its answer ends the send.
    let outcome = tokio::select! {
        sent = send => Err(sent.err().unwrap_or_else(|| DataError::Io("sending stopped".to_string()))),
        answer = read_answer(&mut input) => Ok(answer),
    };
    let answer = match outcome {
        Ok(answer) => answer,
        // A send cut by the node's refusal: its answer says why.
        Err(cut) => {
            match tokio::time::timeout(Duration::from_secs(5), read_answer(&mut input)).await {
                Ok(Ok(frame)) => Ok(frame),
                _ => return Err(cut),
            }
        }
    };
    let _ = output.close().await;
    let (tag, body) = answer.map_err(DataError::Io)?;
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

    fn tree(dir: &Path) {
        std::fs::create_dir_all(dir.join("a/b")).expect("test setup");
        std::fs::create_dir(dir.join("empty")).expect("test setup");
        std::fs::write(dir.join("top.txt"), b"top").expect("test setup");
        std::fs::write(dir.join("a/b/deep.bin"), vec![7u8; 70_000]).expect("test setup");
        std::fs::write(dir.join("a/zero"), b"").expect("test setup");
        let long = "n".repeat(120);
        std::fs::write(dir.join("a").join(&long), b"long name").expect("test setup");
        std::os::unix::fs::symlink("b/deep.bin", dir.join("a/link")).expect("test setup");
    }

    fn packed(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        pack(dir, &mut out, |_| Ok(())).expect("pack");
        out
    }

    /// Every entry under `dir`: name, kind, content or target.
    fn contents(dir: &Path) -> Vec<(PathBuf, String)> {
        list(dir)
            .expect("list")
            .into_iter()
            .map(|e| {
                let path = dir.join(&e.name);
                let what = match e.kind {
                    Kind::Folder => "folder".to_string(),
                    Kind::Link => format!("link {:?}", std::fs::read_link(&path).expect("link")),
                    Kind::File => format!(
                        "file {}",
                        blake3::hash(&std::fs::read(&path).expect("read"))
                    ),
                };
                (e.name, what)
            })
            .collect()
    }

    #[test]
    fn a_folder_comes_back_as_it_was() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        let to = tempfile::tempdir().expect("test setup");
        let dest = to.path().join("data");
        std::fs::create_dir(&dest).expect("test setup");
        let n = unpack(&archive[..], Some(&dest), 1 << 30, None).expect("unpack");
        assert_eq!(contents(from.path()), contents(&dest));
        assert_eq!((n.files, n.folders, n.links), (4, 3, 1));
        assert_eq!(n.file_bytes, 3 + 70_000 + 9);
        // Counted as the quota's walk counts it.
        assert_eq!(n.disk_bytes, usage(&dest).expect("walk"));
        assert_eq!(n.disk_bytes, usage(from.path()).expect("walk"));
        // A scan without a folder counts the same.
        let scanned = unpack(&archive[..], None, u64::MAX, None).expect("scan");
        assert_eq!(scanned, n);
    }

    #[test]
    fn an_archive_past_the_quota_is_refused() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        let need = usage(from.path()).expect("walk");
        let to = tempfile::tempdir().expect("test setup");
        let dest = to.path().join("data");
        std::fs::create_dir(&dest).expect("test setup");
        let e = unpack(&archive[..], Some(&dest), need - 1, None).expect_err("past the quota");
        assert!(e.contains("more than the app's disk"), "{e}");
        let dest = to.path().join("data2");
        std::fs::create_dir(&dest).expect("test setup");
        unpack(&archive[..], Some(&dest), need, None).expect("exactly the quota fits");
    }

    fn archive_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, body, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            // Written raw: the builder itself refuses `..`.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                header.set_link_name(link).expect("test setup");
            }
            header.set_cksum();
            tar.append(&header, *body).expect("test setup");
        }
        tar.into_inner().expect("test setup")
    }

    #[test]
    fn hostile_archives_are_refused_and_write_nothing_outside() {
        use tar::EntryType::{Directory, Link, Regular, Symlink};
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                archive_of(&[("../escape", Regular, b"x", None)]),
                "leaves the folder",
            ),
            (
                archive_of(&[("/etc/escape", Regular, b"x", None)]),
                "leaves the folder",
            ),
            (
                archive_of(&[
                    ("out", Symlink, b"", Some("..")),
                    ("out/escape", Regular, b"x", None),
                ]),
                "as a file or link",
            ),
            (
                archive_of(&[("f", Regular, b"x", None), ("f", Regular, b"y", None)]),
                "twice",
            ),
            (
                archive_of(&[("f", Regular, b"x", None), ("g", Link, b"", Some("f"))]),
                "hard link",
            ),
            (
                archive_of(&[("d", Directory, b"", None), ("d", Regular, b"x", None)]),
                "twice",
            ),
            (
                archive_of(&[("fifo", tar::EntryType::Fifo, b"", None)]),
                "only files, folders and symbolic links",
            ),
        ];
        for (archive, want) in cases {
            let root = tempfile::tempdir().expect("test setup");
            let dest = root.path().join("data");
            std::fs::create_dir(&dest).expect("test setup");
            let e = unpack(&archive[..], Some(&dest), 1 << 30, None).expect_err(want);
            assert!(e.contains(want), "wanted {want:?}, got {e}");
            assert!(!root.path().join("escape").exists());
            // A scan refuses it too, before anything is sent.
            let e = unpack(&archive[..], None, u64::MAX, None).expect_err(want);
            assert!(e.contains(want), "scan: wanted {want:?}, got {e}");
        }
    }

    #[test]
    fn a_cut_archive_is_refused() {
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        // Cut inside the large file's bytes.
        let cut = &archive[..archive.len() / 2];
        let dest = tempfile::tempdir().expect("test setup");
        assert!(unpack(cut, Some(dest.path()), 1 << 30, None).is_err());
        let e = unpack(cut, None, u64::MAX, None).expect_err("cut");
        assert!(e.contains("damaged after"), "{e}");
        let e = unpack(&b"a text file\n"[..], None, u64::MAX, None).expect_err("no tar");
        assert!(e.contains("not a tar archive"), "{e}");
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_escape() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 64,
            ..Default::default()
        });
        let from = tempfile::tempdir().expect("test setup");
        tree(from.path());
        let archive = packed(from.path());
        runner
            .run(
                &(
                    0..archive.len(),
                    any::<u8>(),
                    proptest::collection::vec(any::<u8>(), 0..600),
                ),
                |(at, byte, tail)| {
                    let mut bytes = archive.clone();
                    bytes[at] = byte;
                    let root = tempfile::tempdir().expect("test setup");
                    let dest = root.path().join("data");
                    std::fs::create_dir(&dest).expect("test setup");
                    let _ = unpack(&bytes[..], Some(&dest), 1 << 30, None);
                    let _ = unpack(&tail[..], None, u64::MAX, None);
                    let outside: Vec<_> = std::fs::read_dir(root.path())
                        .expect("read")
                        .map(|e| e.expect("entry").file_name())
                        .collect();
                    prop_assert_eq!(outside, vec![std::ffi::OsString::from("data")]);
                    Ok(())
                },
            )
            .expect("no panic, nothing outside");
    }

    #[test]
    fn requests_are_bound_to_their_contract_and_archive() {
        let key = Keypair::generate().expect("test setup");
        let op = DataOp::Import {
            bytes: 10,
            hash: [1; 32],
        };
        let request = DataRequest::sign(&key, 7, op.clone());
        let message = data_message(DATA_VERSION, 7, &op, request.at_ms);
        assert!(
            request
                .signature
                .verify(&key.account(), DATA_NAMESPACE, &message)
        );
        let other = DataOp::Import {
            bytes: 10,
            hash: [2; 32],
        };
        let forged = data_message(DATA_VERSION, 7, &other, request.at_ms);
        assert!(
            !request
                .signature
                .verify(&key.account(), DATA_NAMESPACE, &forged)
        );
        let elsewhere = data_message(DATA_VERSION, 8, &op, request.at_ms);
        assert!(
            !request
                .signature
                .verify(&key.account(), DATA_NAMESPACE, &elsewhere)
        );
    }

    #[test]
    fn a_swap_exchanges_two_folders_at_once() {
        let root = tempfile::tempdir().expect("test setup");
        let (data, staging) = (
            root.path().join("data"),
            staging_of(&root.path().join("data")),
        );
        std::fs::create_dir(&data).expect("test setup");
        std::fs::write(data.join("old"), b"old").expect("test setup");
        std::fs::create_dir(&staging).expect("test setup");
        std::fs::write(staging.join("new"), b"new").expect("test setup");
        swap(&staging, &data).expect("swap");
        assert!(data.join("new").exists() && !data.join("old").exists());
        assert!(staging.join("old").exists());
    }
}
