//! `/peergrid/blob/1`: components fetched by hash, one blob per stream.
//!
//! ```text
//! request:  hash: [u8; 32]                    (BLAKE3 of the bytes wanted)
//! response: len: u64 LE | len bytes            (len = u64::MAX: "not held here")
//! ```
//!
//! The deploying client serves its components while it waits for its nodes; a node
//! opens a stream to the deployer for each component it does not have, checks the
//! length against [`BLOB_BYTES_MAX`] before reading, and the bytes against the hash
//! after. Bytes move on the mesh's flow-controlled streams, so a slow node slows the
//! sender instead of filling memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use peergrid_mesh::{Mesh, PeerId, StreamProtocol};
use tracing::debug;

/// The blob protocol.
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/blob/1");
/// Largest blob fetched or served.
pub const BLOB_BYTES_MAX: u64 = 64 << 20;
/// The length that says "this peer does not hold that hash".
const NOT_HELD: u64 = u64::MAX;
/// A whole fetch (open, request, every byte) that takes longer is abandoned.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A request that does not arrive within this is dropped by the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one server answers at once.
const STREAMS_MAX: usize = 16;
/// Streams one server answers at once for one peer: a deployment's node fetches its
/// components a few at a time, and a peer that asks and never reads holds only these.
const STREAMS_PER_PEER_MAX: usize = 4;

/// Why a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The stream could not be opened.
    #[error("cannot open {BLOB_PROTOCOL} to {peer}: {source}")]
    Mesh {
        /// The peer asked.
        peer: PeerId,
        /// The mesh's reason.
        source: Box<peergrid_mesh::Error>,
    },
    /// The peer does not hold the blob.
    #[error("{peer} does not hold component {hash}; deploy again from the machine that has it")]
    NotHeld {
        /// The peer asked.
        peer: PeerId,
        /// The hash, hex.
        hash: String,
    },
    /// The peer announced more bytes than allowed.
    #[error("{peer} offers {len} bytes for {hash}, more than the {BLOB_BYTES_MAX} allowed")]
    TooLarge {
        /// The peer asked.
        peer: PeerId,
        /// The hash, hex.
        hash: String,
        /// The length announced.
        len: u64,
    },
    /// The bytes received do not hash to the hash asked.
    #[error("{peer} sent bytes for {hash} that hash to {actual}")]
    HashMismatch {
        /// The peer asked.
        peer: PeerId,
        /// The hash asked, hex.
        hash: String,
        /// What the bytes hash to, hex.
        actual: String,
    },
    /// The transfer failed or timed out.
    #[error("fetching {hash} from {peer}: {reason}")]
    Io {
        /// The peer asked.
        peer: PeerId,
        /// The hash, hex.
        hash: String,
        /// What failed.
        reason: String,
    },
}

/// Fetch the blob `hash` from `peer`, checked against the hash.
// One error per fetch at most, never on a hot path: its size does not matter.
#[allow(clippy::result_large_err)]
pub async fn fetch(mesh: &Mesh, peer: PeerId, hash: [u8; 32]) -> Result<Vec<u8>, BlobError> {
    let hex_hash = hex::encode(hash);
    let io = |reason: String| BlobError::Io {
        peer,
        hash: hex_hash.clone(),
        reason,
    };
    let mut stream = match mesh.open_stream(peer, BLOB_PROTOCOL).await {
        Ok(s) => s,
        // Two first dials can race to two connections; the surviving one takes a retry.
        Err(peergrid_mesh::Error::OpenStream { .. }) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            mesh.open_stream(peer, BLOB_PROTOCOL)
                .await
                .map_err(|source| BlobError::Mesh {
                    peer,
                    source: Box::new(source),
                })?
        }
        Err(source) => {
            return Err(BlobError::Mesh {
                peer,
                source: Box::new(source),
            });
        }
    };
    let transfer = async {
        stream
            .write_all(&hash)
            .await
            .map_err(|e| io(format!("sending the request: {e}")))?;
        stream
            .flush()
            .await
            .map_err(|e| io(format!("sending the request: {e}")))?;
        let mut len = [0u8; 8];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| io(format!("reading the length: {e}")))?;
        let len = u64::from_le_bytes(len);
        if len == NOT_HELD {
            return Err(BlobError::NotHeld {
                peer,
                hash: hex_hash.clone(),
            });
        }
        if len > BLOB_BYTES_MAX {
            return Err(BlobError::TooLarge {
                peer,
                hash: hex_hash.clone(),
                len,
            });
        }
        let mut bytes = vec![0u8; len as usize];
        stream
            .read_exact(&mut bytes)
            .await
            .map_err(|e| io(format!("reading {len} bytes: {e}")))?;
        let actual = blake3::hash(&bytes);
        if actual.as_bytes() != &hash {
            return Err(BlobError::HashMismatch {
                peer,
                hash: hex_hash.clone(),
                actual: actual.to_hex().to_string(),
            });
        }
        let _ = stream.close().await;
        Ok(bytes)
    };
    tokio::time::timeout(FETCH_TIMEOUT, transfer)
        .await
        .unwrap_or_else(|_| {
            Err(io(format!(
                "no complete answer within {} s",
                FETCH_TIMEOUT.as_secs()
            )))
        })
}

/// Serve `blobs` (by their BLAKE3) on `/peergrid/blob/1` until the task is aborted;
/// each blob sent whole is told on `sent` (dropped when the channel is full).
pub fn serve(
    mesh: &Mesh,
    blobs: HashMap<[u8; 32], Arc<Vec<u8>>>,
    sent: Option<tokio::sync::mpsc::Sender<(PeerId, [u8; 32])>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut incoming = mesh
        .accept_streams(BLOB_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("cannot serve {BLOB_PROTOCOL}: {e}"))?;
    let blobs = Arc::new(blobs);
    // Not shared by address: the peers here are the nodes a deploy chose, and a farm's nodes
    // behind one NAT fetch a component at once.
    let slots = peergrid_mesh::Slots::new(STREAMS_MAX, STREAMS_PER_PEER_MAX);
    Ok(tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let slot = match slots.take(peer) {
                Ok(slot) => slot,
                Err(busy) => {
                    debug!(%peer, "blob stream refused: {busy}");
                    continue;
                }
            };
            let blobs = blobs.clone();
            let sent = sent.clone();
            tokio::spawn(async move {
                // The fetcher gives up after FETCH_TIMEOUT: a peer that has not read the
                // whole blob by then gets nothing more, and its slot is freed.
                let answer = serve_one(peer, stream, &blobs, sent.as_ref());
                if tokio::time::timeout(FETCH_TIMEOUT, answer).await.is_err() {
                    debug!(%peer, "blob stream ended: not read within {} s", FETCH_TIMEOUT.as_secs());
                }
                drop(slot);
            });
        }
    }))
}

/// Answer one blob request on `stream`.
async fn serve_one(
    peer: PeerId,
    mut stream: peergrid_mesh::Stream,
    blobs: &HashMap<[u8; 32], Arc<Vec<u8>>>,
    sent: Option<&tokio::sync::mpsc::Sender<(PeerId, [u8; 32])>>,
) {
    let mut hash = [0u8; 32];
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut hash)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let held = blobs.get(&hash);
    let result = match held {
        Some(bytes) => {
            debug!(%peer, hash = hex::encode(hash), len = bytes.len(), "serving a blob");
            let len = (bytes.len() as u64).to_le_bytes();
            match stream.write_all(&len).await {
                Ok(()) => stream.write_all(bytes).await,
                Err(e) => Err(e),
            }
        }
        None => stream.write_all(&NOT_HELD.to_le_bytes()).await,
    };
    if result.is_ok() {
        let _ = stream.flush().await;
        let _ = stream.close().await;
        if let (Some(sent), Some(_)) = (sent, held) {
            let _ = sent.try_send((peer, hash));
        }
    }
}
