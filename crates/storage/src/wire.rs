//! `/peergrid/shard/1`: shards and the owner's pointer, one request per stream.
//!
//! ```text
//! request:  version: u8 = 1 | len: u32 BE | borsh(Request)   [| shard bytes, for Put after Ready]
//! response: len: u32 BE | borsh(Response)                    [| shard bytes, for Get's Data]
//! ```
//! Shard bytes stream on the mesh's flow-controlled streams, so a slow receiver slows
//! the sender instead of filling memory; both ends check every shard against its
//! address. A Put is answered `Have` before any byte moves when the node already holds
//! the shard, which is what makes a retried upload resume where it stopped.
//!
//! A node whose disk is full answers `Full` instead of `Ready` (or instead of `Stored`
//! when the disk filled while the bytes arrived, after reading them all, so the sender
//! hears why): a refusal of its own kind, so an uploader moves the shard to another node
//! and never takes it for bad bytes or a lost shard. Reads and audits go on as before.

use std::time::Duration;

use borsh::{BorshDeserialize, BorshSerialize};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use peergrid_core::{AccountId, ContractId, Hash};
use peergrid_mesh::{Mesh, PeerId, StreamProtocol};

use crate::format::SignedPointer;
use crate::shard::{LeafProof, ShardHasher};

/// The shard protocol.
pub const SHARD_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/shard/1");
/// The request header's format.
pub const WIRE_VERSION: u8 = 1;
/// Largest shard or blob a node accepts (the manifest of a 2 TiB object in 3+2 fits; a put
/// whose manifest would not is refused before it starts).
pub const SHARD_BYTES_MAX: u64 = 128 << 20;
/// Largest request or response header.
pub const HEADER_BYTES_MAX: usize = 1 << 20;
/// Most addresses in one `Has` or `Delete`.
pub const IDS_MAX: usize = 8192;
/// Bytes per read and write of shard data.
const CHUNK_BYTES: usize = 256 * 1024;
/// A header exchange that takes longer is abandoned.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer that moves no byte for this long is abandoned.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// What a peer asks of a node.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Request {
    /// Store `len` bytes addressed `id` under storage contract `contract` (its owner only).
    Put {
        /// The owner's storage contract on this node.
        contract: ContractId,
        /// The shard's address.
        id: Hash,
        /// Its length.
        len: u64,
    },
    /// Send the shard addressed `id`.
    Get {
        /// The shard's address.
        id: Hash,
    },
    /// Which of `ids` this node holds and serves.
    Has {
        /// Shard addresses.
        ids: Vec<Hash>,
    },
    /// Prove holding leaf `leaf` of shard `id`.
    Audit {
        /// The shard's address.
        id: Hash,
        /// The leaf asked for, chosen at random by the auditor.
        leaf: u64,
    },
    /// Remove shards from a contract (its owner only), except those a put relies on
    /// (see `Keep`).
    Delete {
        /// The contract.
        contract: ContractId,
        /// Shard addresses.
        ids: Vec<Hash>,
    },
    /// Bytes used and reserved in each of the asker's `contracts` here.
    Usage {
        /// The contracts.
        contracts: Vec<ContractId>,
    },
    /// Keep the owner's newest index pointer.
    PutPointer(SignedPointer),
    /// The newest index pointer of `owner` kept here.
    GetPointer {
        /// Whose.
        owner: AccountId,
    },
    /// The shards of `contract` (its owner only) with addresses above `after`, in address
    /// order, at most [`IDS_MAX`]: what the owner's garbage collection compares with what
    /// its objects name. Added last, so the variants before keep their encoding.
    List {
        /// The contract.
        contract: ContractId,
        /// Continue after this address (the last of the previous answer).
        after: Option<Hash>,
    },
    /// Remove shards from a contract (its owner only), each only if it was not written or
    /// put again within the last `older_than_secs`: garbage collection's removal, which a
    /// put that came to rely on a shard after it was listed wins. Added last.
    Collect {
        /// The contract.
        contract: ContractId,
        /// Shard addresses.
        ids: Vec<Hash>,
        /// How old a shard must be to go.
        older_than_secs: u64,
    },
    /// Which of `ids` the asker's `contract` holds, answered `Has`; those it holds are
    /// kept from deletes for a while ([`crate::store::RELIED_FOR`]): a put that found
    /// them there asks just before naming them. Added last.
    Keep {
        /// The contract.
        contract: ContractId,
        /// Shard addresses.
        ids: Vec<Hash>,
    },
}

/// One shard a node holds, as `List` answers it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ListedShard {
    /// Its address.
    pub id: Hash,
    /// Its length.
    pub len: u64,
    /// Seconds since it was written: a shard of a put still under way elsewhere is young.
    pub age_secs: u64,
}

/// One contract's use, as a node counts it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ContractUsage {
    /// The contract.
    pub contract: ContractId,
    /// Bytes of shards stored.
    pub used: u64,
    /// Bytes the contract reserves.
    pub quota: u64,
}

/// What a node answers.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Response {
    /// Put: send the bytes.
    Ready,
    /// Put: the shard is already here; send nothing.
    Have,
    /// Put: stored durably.
    Stored,
    /// Get: `len` bytes follow.
    Data {
        /// The shard's length.
        len: u64,
    },
    /// Has, Keep: one flag per address asked.
    Has(Vec<bool>),
    /// Audit: the leaf and its path.
    Audit(LeafProof),
    /// Delete, Collect: how many were removed.
    Deleted(u32),
    /// Usage: per contract asked that the asker owns here.
    Usage(Vec<ContractUsage>),
    /// GetPointer: the newest kept, if any.
    Pointer(Option<SignedPointer>),
    /// PutPointer: kept (or an equal or newer one was already kept).
    Done,
    /// Refused, with a reason for people.
    Refused(String),
    /// Put, PutPointer: the node's disk is full (a [`peergrid_core::fs::DiskFull`],
    /// said for people); nothing was stored, what it held is intact. Added after the
    /// others, so they keep their encoding.
    Full(String),
    /// List: shards in address order; fewer than [`IDS_MAX`] means the end. Added last.
    Listed(Vec<ListedShard>),
}

/// A shard request failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The mesh could not reach the node.
    #[error("cannot reach {peer}: {source}")]
    Mesh {
        /// The node.
        peer: PeerId,
        /// Why.
        source: Box<peergrid_mesh::Error>,
    },
    /// The node refused.
    #[error("{peer} refused: {reason}")]
    Refused {
        /// The node.
        peer: PeerId,
        /// Its reason.
        reason: String,
    },
    /// The node's disk is full: it stores nothing new until space is freed, and still
    /// serves what it holds. Another node should take the data.
    #[error("{peer} cannot take it: {reason}")]
    DiskFull {
        /// The node.
        peer: PeerId,
        /// Its reason, with the free space and what was needed.
        reason: String,
    },
    /// The node answered bytes that do not match the address asked for.
    #[error("{peer} sent bytes that do not match shard {id}")]
    Corrupt {
        /// The node.
        peer: PeerId,
        /// The address asked for.
        id: Hash,
    },
    /// The exchange broke or timed out.
    #[error("shard exchange with {peer} failed: {reason}")]
    Io {
        /// The node.
        peer: PeerId,
        /// What happened.
        reason: String,
        /// Whether it was a deadline that passed (the node is slow or frozen), rather than
        /// the stream breaking.
        timed_out: bool,
    },
    /// The node answered something that does not fit the request.
    #[error("{peer} answered {answer} to a {asked} request")]
    Unexpected {
        /// The node.
        peer: PeerId,
        /// The request kind.
        asked: &'static str,
        /// What came back.
        answer: String,
    },
}

impl WireError {
    /// Whether the node is out of reach (not a refusal or bad bytes).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, WireError::Mesh { .. } | WireError::Io { .. })
    }

    /// Whether the node refused because its disk is full (it stores nothing new for now).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, WireError::DiskFull { .. })
    }
}

/// Run `f` with a deadline, turning a timeout into an I/O error naming `what`.
pub async fn deadline<T>(
    after: Duration,
    what: &str,
    f: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(after, f).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {} s", after.as_secs()),
        ))
    })
}

/// Write one request header.
pub async fn write_request<S: AsyncWrite + Unpin>(
    io: &mut S,
    request: &Request,
) -> std::io::Result<()> {
    let body = peergrid_core::codec::encode(request);
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(WIRE_VERSION);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Read one request header; a wrong version or size is an `InvalidData` error.
pub async fn read_request<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Request> {
    let mut version = [0u8; 1];
    io.read_exact(&mut version).await?;
    if version[0] != WIRE_VERSION {
        return Err(invalid(format!(
            "shard protocol header version {} is not {WIRE_VERSION}",
            version[0]
        )));
    }
    let body = read_frame(io).await?;
    peergrid_core::codec::decode("shard request", &body, HEADER_BYTES_MAX)
        .map_err(|e| invalid(e.to_string()))
}

/// Write one response header.
pub async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    response: &Response,
) -> std::io::Result<()> {
    let body = peergrid_core::codec::encode(response);
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    io.flush().await
}

/// Write one response and close the stream, within [`HEADER_TIMEOUT`]: a peer that
/// stops reading cannot hold the node's stream slot with an answer it does not take.
pub async fn answer<S: AsyncWrite + Unpin>(io: &mut S, response: &Response) -> std::io::Result<()> {
    deadline(HEADER_TIMEOUT, "sending the answer", async {
        write_response(io, response).await?;
        io.close().await
    })
    .await
}

/// Read one response header.
pub async fn read_response<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Response> {
    let body = read_frame(io).await?;
    peergrid_core::codec::decode("shard response", &body, HEADER_BYTES_MAX)
        .map_err(|e| invalid(e.to_string()))
}

async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > HEADER_BYTES_MAX {
        return Err(invalid(format!(
            "a {len}-byte header is over the {HEADER_BYTES_MAX}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

fn invalid(reason: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason)
}

/// Write `bytes` in chunks, each with the idle deadline.
pub async fn write_data<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    for chunk in bytes.chunks(CHUNK_BYTES) {
        deadline(IDLE_TIMEOUT, "sending shard bytes", io.write_all(chunk)).await?;
    }
    deadline(IDLE_TIMEOUT, "flushing shard bytes", io.flush()).await
}

/// Fill `buf` from `io`, each chunk within the idle deadline.
pub async fn read_exact_idle<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut [u8],
) -> std::io::Result<()> {
    for chunk in buf.chunks_mut(CHUNK_BYTES) {
        deadline(IDLE_TIMEOUT, "receiving shard bytes", io.read_exact(chunk)).await?;
    }
    Ok(())
}

/// Read exactly `len` bytes (at most [`SHARD_BYTES_MAX`]: the caller checks the length a
/// peer announced), hashing them as they arrive; returns the bytes and their address.
pub async fn read_data<S: AsyncRead + Unpin>(
    io: &mut S,
    len: u64,
) -> std::io::Result<(Vec<u8>, Hash)> {
    // A kept buffer, not a zeroed one: every byte of it is read into.
    let mut out = crate::spare::take_len(len.min(SHARD_BYTES_MAX) as usize);
    let id = read_data_into(io, &mut out).await?;
    Ok((out, id))
}

/// Fill `out` from `io`, hashing the bytes as they arrive; returns their address.
pub async fn read_data_into<S: AsyncRead + Unpin>(
    io: &mut S,
    out: &mut [u8],
) -> std::io::Result<Hash> {
    let mut hasher = ShardHasher::default();
    for chunk in out.chunks_mut(CHUNK_BYTES) {
        read_exact_idle(io, chunk).await?;
        hasher.update(chunk);
    }
    Ok(hasher.finalize())
}

/// One exchange with `peer`: open a stream, send `request`, read the first response.
async fn exchange(
    mesh: &Mesh,
    peer: PeerId,
    request: &Request,
) -> Result<(peergrid_mesh::Stream, Response), WireError> {
    let mut stream = match mesh.open_stream(peer, SHARD_PROTOCOL).await {
        Ok(s) => s,
        // Concurrent first dials to one peer can race to two connections, and a stream
        // opened on the one that is closed fails; the surviving connection takes a retry.
        Err(peergrid_mesh::Error::OpenStream { .. }) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mesh.open_stream(peer, SHARD_PROTOCOL)
                .await
                .map_err(|source| WireError::Mesh {
                    peer,
                    source: Box::new(source),
                })?
        }
        Err(source) => {
            return Err(WireError::Mesh {
                peer,
                source: Box::new(source),
            });
        }
    };
    let io = |e: std::io::Error| WireError::Io {
        peer,
        reason: e.to_string(),
        timed_out: e.kind() == std::io::ErrorKind::TimedOut,
    };
    deadline(
        HEADER_TIMEOUT,
        "sending the request",
        write_request(&mut stream, request),
    )
    .await
    .map_err(io)?;
    let response = deadline(
        HEADER_TIMEOUT,
        "waiting for the answer",
        read_response(&mut stream),
    )
    .await
    .map_err(io)?;
    match response {
        Response::Refused(reason) => Err(WireError::Refused { peer, reason }),
        Response::Full(reason) => Err(WireError::DiskFull { peer, reason }),
        response => Ok((stream, response)),
    }
}

fn unexpected(peer: PeerId, asked: &'static str, answer: &Response) -> WireError {
    let answer = format!("{answer:?}");
    WireError::Unexpected {
        peer,
        asked,
        answer: answer.chars().take(80).collect(),
    }
}

/// What a put did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes were sent and stored.
    Stored,
    /// The node already had them.
    AlreadyThere,
}

/// Store `bytes` (addressed `id`) on `peer` under `contract`.
pub async fn put(
    mesh: &Mesh,
    peer: PeerId,
    contract: ContractId,
    id: Hash,
    bytes: &[u8],
) -> Result<PutOutcome, WireError> {
    let request = Request::Put {
        contract,
        id,
        len: bytes.len() as u64,
    };
    let (mut stream, first) = exchange(mesh, peer, &request).await?;
    match first {
        Response::Have => return Ok(PutOutcome::AlreadyThere),
        Response::Ready => {}
        other => return Err(unexpected(peer, "put", &other)),
    }
    let io = |e: std::io::Error| WireError::Io {
        peer,
        reason: e.to_string(),
        timed_out: e.kind() == std::io::ErrorKind::TimedOut,
    };
    if let Err(e) = write_data(&mut stream, bytes).await {
        // A node that stopped reading may have said why before it did.
        let said = tokio::time::timeout(Duration::from_secs(2), read_response(&mut stream)).await;
        return Err(match said {
            Ok(Ok(Response::Full(reason))) => WireError::DiskFull { peer, reason },
            Ok(Ok(Response::Refused(reason))) => WireError::Refused { peer, reason },
            _ => io(e),
        });
    }
    // The node hashes and syncs the shard before it answers.
    match deadline(
        IDLE_TIMEOUT,
        "waiting for the node to store the shard",
        read_response(&mut stream),
    )
    .await
    .map_err(io)?
    {
        Response::Stored => {
            let _ = stream.close().await;
            Ok(PutOutcome::Stored)
        }
        Response::Refused(reason) => Err(WireError::Refused { peer, reason }),
        Response::Full(reason) => Err(WireError::DiskFull { peer, reason }),
        other => Err(unexpected(peer, "put", &other)),
    }
}

/// Fetch the shard addressed `id` from `peer`, checked against its address.
pub async fn get(mesh: &Mesh, peer: PeerId, id: Hash, len_max: u64) -> Result<Vec<u8>, WireError> {
    let (stream, len) = start_get(mesh, peer, id, len_max).await?;
    let mut out = crate::spare::take_len(len as usize);
    finish_get(stream, peer, id, &mut out).await?;
    Ok(out)
}

/// [`get`] into `out`, which the shard must fill exactly: a get receives each data shard
/// straight into its place in the segment.
pub async fn get_into(
    mesh: &Mesh,
    peer: PeerId,
    id: Hash,
    out: &mut [u8],
) -> Result<(), WireError> {
    let (stream, len) = start_get(mesh, peer, id, out.len() as u64).await?;
    if len != out.len() as u64 {
        return Err(WireError::Unexpected {
            peer,
            asked: "get",
            answer: format!("a {len}-byte shard where {} were expected", out.len()),
        });
    }
    finish_get(stream, peer, id, out).await
}

/// Ask `peer` for shard `id`: the stream, at the shard's bytes, and how many there are
/// (at most `len_max`).
async fn start_get(
    mesh: &Mesh,
    peer: PeerId,
    id: Hash,
    len_max: u64,
) -> Result<(peergrid_mesh::Stream, u64), WireError> {
    let (stream, first) = exchange(mesh, peer, &Request::Get { id }).await?;
    let Response::Data { len } = first else {
        return Err(unexpected(peer, "get", &first));
    };
    if len > len_max.min(SHARD_BYTES_MAX) {
        return Err(WireError::Unexpected {
            peer,
            asked: "get",
            answer: format!("a {len}-byte shard where at most {len_max} were expected"),
        });
    }
    Ok((stream, len))
}

/// Read shard `id`'s bytes from `stream` into `out` and check they are that shard.
async fn finish_get(
    mut stream: peergrid_mesh::Stream,
    peer: PeerId,
    id: Hash,
    out: &mut [u8],
) -> Result<(), WireError> {
    let got = read_data_into(&mut stream, out)
        .await
        .map_err(|e| WireError::Io {
            peer,
            reason: e.to_string(),
            timed_out: e.kind() == std::io::ErrorKind::TimedOut,
        })?;
    if got != id {
        return Err(WireError::Corrupt { peer, id });
    }
    Ok(())
}

/// Which of `ids` `peer` holds.
pub async fn has(mesh: &Mesh, peer: PeerId, ids: Vec<Hash>) -> Result<Vec<bool>, WireError> {
    let n = ids.len();
    let (_, answer) = exchange(mesh, peer, &Request::Has { ids }).await?;
    match answer {
        Response::Has(flags) if flags.len() == n => Ok(flags),
        other => Err(unexpected(peer, "has", &other)),
    }
}

/// Ask `peer` to prove it holds leaf `leaf` of shard `id`; `Ok(true)` when the proof holds.
pub async fn audit(mesh: &Mesh, peer: PeerId, id: Hash, leaf: u64) -> Result<bool, WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::Audit { id, leaf }).await?;
    match answer {
        Response::Audit(proof) => Ok(crate::shard::verify(&id, leaf, &proof)),
        other => Err(unexpected(peer, "audit", &other)),
    }
}

/// Remove `ids` from `contract` on `peer`.
pub async fn delete(
    mesh: &Mesh,
    peer: PeerId,
    contract: ContractId,
    ids: Vec<Hash>,
) -> Result<u32, WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::Delete { contract, ids }).await?;
    match answer {
        Response::Deleted(n) => Ok(n),
        other => Err(unexpected(peer, "delete", &other)),
    }
}

/// Used and reserved bytes of `contracts` on `peer`.
pub async fn usage(
    mesh: &Mesh,
    peer: PeerId,
    contracts: Vec<ContractId>,
) -> Result<Vec<ContractUsage>, WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::Usage { contracts }).await?;
    match answer {
        Response::Usage(u) => Ok(u),
        other => Err(unexpected(peer, "usage", &other)),
    }
}

/// Give `peer` the owner's newest pointer.
pub async fn put_pointer(
    mesh: &Mesh,
    peer: PeerId,
    pointer: SignedPointer,
) -> Result<(), WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::PutPointer(pointer)).await?;
    match answer {
        Response::Done => Ok(()),
        other => Err(unexpected(peer, "put pointer", &other)),
    }
}

/// The newest pointer of `owner` that `peer` keeps (checked: signed by `owner` for the
/// grid `chain`, [`crate::format::grid_id`]; one signed for another counts as none).
pub async fn get_pointer(
    mesh: &Mesh,
    peer: PeerId,
    owner: AccountId,
    chain: &str,
) -> Result<Option<SignedPointer>, WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::GetPointer { owner }).await?;
    match answer {
        Response::Pointer(p) => Ok(p.filter(|p| p.pointer.owner == owner && p.verify(chain))),
        other => Err(unexpected(peer, "get pointer", &other)),
    }
}

/// The shards of `contract` on `peer` with addresses above `after` (a page of at most
/// [`IDS_MAX`]).
pub async fn list(
    mesh: &Mesh,
    peer: PeerId,
    contract: ContractId,
    after: Option<Hash>,
) -> Result<Vec<ListedShard>, WireError> {
    let (_, answer) = exchange(mesh, peer, &Request::List { contract, after }).await?;
    match answer {
        Response::Listed(shards) if shards.len() <= IDS_MAX => Ok(shards),
        other => Err(unexpected(peer, "list", &other)),
    }
}

/// Which of `ids` `contract` on `peer` holds, each kept from deletes for a while.
pub async fn keep(
    mesh: &Mesh,
    peer: PeerId,
    contract: ContractId,
    ids: Vec<Hash>,
) -> Result<Vec<bool>, WireError> {
    let n = ids.len();
    let (_, answer) = exchange(mesh, peer, &Request::Keep { contract, ids }).await?;
    match answer {
        Response::Has(flags) if flags.len() == n => Ok(flags),
        other => Err(unexpected(peer, "keep", &other)),
    }
}

/// Remove those of `ids` from `contract` on `peer` that are at least `older_than` old.
pub async fn collect(
    mesh: &Mesh,
    peer: PeerId,
    contract: ContractId,
    ids: Vec<Hash>,
    older_than: Duration,
) -> Result<u32, WireError> {
    let request = Request::Collect {
        contract,
        ids,
        older_than_secs: older_than.as_secs(),
    };
    let (_, answer) = exchange(mesh, peer, &request).await?;
    match answer {
        Response::Deleted(n) => Ok(n),
        other => Err(unexpected(peer, "collect", &other)),
    }
}
