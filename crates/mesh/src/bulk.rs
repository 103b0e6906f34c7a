//! Bulk transfer of a byte stream with end-to-end confirmation: `/peergrid/bulk/1.0.0`.
//!
//! ```text
//! sender:   len: u64 big-endian | len bytes                 (then half-close)
//! receiver: received: u64 big-endian | blake3(received): 32 bytes
//! ```
//! The receiver refuses a declared length above its limit by closing the stream.
//! Both ends hash what they sent or received, so a user compares two BLAKE3 digests
//! to know the bytes arrived intact; the transport (TLS, Noise or QUIC's TLS) already
//! authenticates both ends by their account keys.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::{Error, Mesh};

/// The bulk protocol.
pub const BULK_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/bulk/1.0.0");
/// Size of each write and read.
const CHUNK_BYTES: usize = 256 * 1024;
/// A stream that moves no byte for this long is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Transfers received at once.
const CONCURRENT_MAX: usize = 4;
/// Completed transfers remembered for `received()`.
const HISTORY_MAX: usize = 32;

/// The outcome of a transfer, as seen by one end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transfer {
    /// The other end.
    pub peer: String,
    /// Bytes moved.
    pub bytes: u64,
    /// Wall time from the first byte to the confirmation.
    pub seconds: f64,
    /// BLAKE3 of what this end sent (sender) or received (receiver), hex.
    pub blake3: String,
    /// The receiver's count and BLAKE3, as confirmed to the sender (sender only).
    pub confirmed: Option<(u64, String)>,
}

impl Transfer {
    /// Bytes per second.
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// True when the receiver confirmed every byte with the same hash.
    pub fn confirmed_intact(&self) -> bool {
        self.confirmed
            .as_ref()
            .is_some_and(|(bytes, hash)| *bytes == self.bytes && *hash == self.blake3)
    }
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// No stream could be opened.
    #[error(transparent)]
    Mesh(#[from] Error),
    /// The stream failed or stalled.
    #[error("transfer with {peer} failed after {bytes} bytes: {source}")]
    Io {
        /// The other end.
        peer: PeerId,
        /// Bytes moved before the failure.
        bytes: u64,
        /// What failed.
        source: std::io::Error,
    },
}

/// Deterministic pseudo-random payload: cheap to make, not compressible, same on every run.
fn payload_block() -> Vec<u8> {
    let mut block = vec![0u8; CHUNK_BYTES];
    blake3::Hasher::new()
        .update(b"_PEERGRID_MESH_BULK_PAYLOAD")
        .finalize_xof()
        .fill(&mut block);
    block
}

async fn with_idle_timeout<T>(
    future: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    tokio::time::timeout(IDLE_TIMEOUT, future)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "stream stalled for 30 s"))?
}

/// Send `bytes` bytes to `peer` and wait for its confirmation; `progress` is called
/// with the bytes sent so far after each chunk.
pub async fn send(
    mesh: &Mesh,
    peer: PeerId,
    bytes: u64,
    mut progress: impl FnMut(u64),
) -> Result<Transfer, BulkError> {
    let mut stream = mesh.open_stream(peer, BULK_PROTOCOL).await?;
    let block = payload_block();
    let mut hasher = blake3::Hasher::new();
    let start = Instant::now();
    let mut sent = 0u64;
    let result: std::io::Result<(u64, [u8; 32])> = async {
        with_idle_timeout(stream.write_all(&bytes.to_be_bytes())).await?;
        while sent < bytes {
            let n = (bytes - sent).min(CHUNK_BYTES as u64) as usize;
            let chunk = &block[..n];
            hasher.update(chunk);
            with_idle_timeout(stream.write_all(chunk)).await?;
            sent += n as u64;
            progress(sent);
        }
        with_idle_timeout(stream.close()).await?;
        let mut reply = [0u8; 40];
        with_idle_timeout(stream.read_exact(&mut reply)).await?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&reply[..8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&reply[8..]);
        Ok((u64::from_be_bytes(count), hash))
    }
    .await;
    let (count, hash) = result.map_err(|source| BulkError::Io {
        peer,
        bytes: sent,
        source,
    })?;
    Ok(Transfer {
        peer: peer.to_string(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        blake3: hasher.finalize().to_hex().to_string(),
        confirmed: Some((count, blake3::Hash::from_bytes(hash).to_hex().to_string())),
    })
}

/// Receives bulk transfers and remembers the last few.
#[derive(Clone, Debug, Default)]
pub struct Receiver {
    history: Arc<Mutex<VecDeque<Transfer>>>,
}

impl Receiver {
    /// Accept bulk transfers of at most `bytes_max` bytes each on `mesh`.
    pub fn serve(mesh: &Mesh, bytes_max: u64) -> Result<Self, Error> {
        let mut incoming = mesh.accept_streams(BULK_PROTOCOL)?;
        let receiver = Self::default();
        let history = receiver.history.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(CONCURRENT_MAX));
            while let Some((peer, stream)) = incoming.next().await {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "refusing bulk transfer: {CONCURRENT_MAX} already running");
                    continue;
                };
                let history = history.clone();
                tokio::spawn(async move {
                    match receive(peer, stream, bytes_max).await {
                        Ok(transfer) => {
                            tracing::info!(
                                %peer,
                                bytes = transfer.bytes,
                                mib_per_s = transfer.throughput() / (1 << 20) as f64,
                                blake3 = %transfer.blake3,
                                "bulk transfer received"
                            );
                            if let Ok(mut h) = history.lock() {
                                if h.len() >= HISTORY_MAX {
                                    h.pop_front();
                                }
                                h.push_back(transfer);
                            }
                        }
                        Err(e) => tracing::warn!(%peer, error = %e, "bulk transfer failed"),
                    }
                    drop(permit);
                });
            }
        });
        Ok(receiver)
    }

    /// The transfers received so far (the last 32), oldest first.
    pub fn received(&self) -> Vec<Transfer> {
        self.history
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }
}

async fn receive(peer: PeerId, mut stream: Stream, bytes_max: u64) -> Result<Transfer, BulkError> {
    let mut received = 0u64;
    let mut hasher = blake3::Hasher::new();
    let mut start = Instant::now();
    let result: std::io::Result<u64> = async {
        let mut len = [0u8; 8];
        with_idle_timeout(stream.read_exact(&mut len)).await?;
        start = Instant::now();
        let len = u64::from_be_bytes(len);
        if len > bytes_max {
            let _ = stream.close().await;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("declared {len} bytes, the limit is {bytes_max}"),
            ));
        }
        let mut buf = vec![0u8; CHUNK_BYTES];
        while received < len {
            let want = (len - received).min(CHUNK_BYTES as u64) as usize;
            let n = with_idle_timeout(stream.read(&mut buf[..want])).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            hasher.update(&buf[..n]);
            received += n as u64;
        }
        let mut reply = [0u8; 40];
        reply[..8].copy_from_slice(&received.to_be_bytes());
        reply[8..].copy_from_slice(hasher.finalize().as_bytes());
        with_idle_timeout(stream.write_all(&reply)).await?;
        with_idle_timeout(stream.close()).await?;
        Ok(len)
    }
    .await;
    let bytes = result.map_err(|source| BulkError::Io {
        peer,
        bytes: received,
        source,
    })?;
    Ok(Transfer {
        peer: peer.to_string(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
        blake3: hasher.finalize().to_hex().to_string(),
        confirmed: None,
    })
}
