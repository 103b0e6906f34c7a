//! Request-response protocols registered by name and version, one stream per request.
//!
//! A protocol is served with [`Mesh::serve`] and called with [`Mesh::request`]. Both
//! ends enforce the [`RpcProtocol`]'s limits:
//!
//! - a request or response longer than its maximum is refused from its length
//!   prefix, before the body is read;
//! - every exchange has a deadline;
//! - each peer may send `rate` requests per second with bursts, and at most
//!   `concurrent_max` requests are served at once; excess ones are answered with a
//!   refusal the caller can read ([`RpcError::Refused`]);
//! - a peer that declares a frame over the limit is banned; one that ends its request early
//!   is only refused (an interrupted client looks the same).
//!
//! The wire format is in [`protocol`].
//!
//! Why streams and not a `NetworkBehaviour` per protocol: libp2p's
//! `request_response::Behaviour` treats all its protocol names as versions of one
//! protocol, and a behaviour is fixed when the swarm is built. On raw streams ([`crate::streams`]),
//! a protocol is registered by name at run time, and what a connection handler
//! would hold per protocol (limits, rate, concurrency) lives in the server task.

pub mod protocol;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::{Semaphore, mpsc};

use crate::error::Error;
use crate::ingress::Mesh;
use crate::messages::Command;
use crate::ratelimit::{PeerRateLimiter, Rate};

use protocol::{FrameError, REASON_BYTES_MAX, Status};

/// Refusals being written at once; beyond it excess streams are simply reset.
const REFUSALS_IN_FLIGHT_MAX: usize = 256;
/// How long a peer about to be banned gets to read why.
const BAN_GRACE: Duration = Duration::from_secs(1);
/// Time allowed to write a refusal.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// A request-response protocol and its limits.
#[derive(Debug, Clone)]
pub struct RpcProtocol {
    /// Versioned name, e.g. `/peergrid/status/1.0.0`.
    pub name: StreamProtocol,
    /// Longest request body.
    pub request_bytes_max: usize,
    /// Longest response body.
    pub response_bytes_max: usize,
    /// Deadline of one exchange, connecting included.
    pub timeout: Duration,
    /// Requests each peer may make.
    pub rate: Rate,
    /// Requests served at once on this protocol, across peers.
    pub concurrent_max: usize,
    /// Requests served at once for one peer: a peer that sends slowly (a byte a second)
    /// holds at most this many slots until the deadline cuts it off, never all of them.
    pub concurrent_per_peer_max: usize,
}

impl RpcProtocol {
    /// A protocol with 64 KiB requests and responses, a 10 s deadline, 20 requests
    /// per second per peer (bursts of 40) and 64 requests served at once, 8 per peer.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name: StreamProtocol::new(name),
            request_bytes_max: 64 * 1024,
            response_bytes_max: 64 * 1024,
            timeout: Duration::from_secs(10),
            rate: Rate {
                per_second: 20.0,
                burst: 40,
            },
            concurrent_max: 64,
            concurrent_per_peer_max: 8,
        }
    }

    /// Set how many requests are served at once, in all and for one peer.
    pub const fn with_concurrency(mut self, max: usize, per_peer_max: usize) -> Self {
        self.concurrent_max = max;
        self.concurrent_per_peer_max = per_peer_max;
        self
    }

    /// Set the maximum request and response sizes.
    pub const fn with_sizes(mut self, request_bytes_max: usize, response_bytes_max: usize) -> Self {
        self.request_bytes_max = request_bytes_max;
        self.response_bytes_max = response_bytes_max;
        self
    }

    /// Set the deadline of one exchange.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set the per-peer rate.
    pub const fn with_rate(mut self, per_second: f64, burst: u32) -> Self {
        self.rate = Rate { per_second, burst };
        self
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The request is longer than the protocol allows; nothing was sent.
    #[error("request of {len} bytes exceeds the {max} byte limit of {protocol}")]
    RequestTooLarge {
        /// The protocol.
        protocol: StreamProtocol,
        /// Request length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The server refused the request.
    #[error("{peer} refused the {protocol} request ({status:?}): {reason}")]
    Refused {
        /// The server.
        peer: PeerId,
        /// The protocol.
        protocol: StreamProtocol,
        /// The refusal.
        status: Status,
        /// Its reason.
        reason: String,
    },
    /// The server's answer broke the protocol (too long, unknown status); the server is banned.
    #[error("{peer} sent a malformed {protocol} response: {reason}")]
    MalformedResponse {
        /// The server.
        peer: PeerId,
        /// The protocol.
        protocol: StreamProtocol,
        /// What was wrong.
        reason: String,
    },
    /// The exchange did not finish within the protocol's deadline.
    #[error("{protocol} request to {peer} timed out after {after_ms} ms")]
    Timeout {
        /// The server.
        peer: PeerId,
        /// The protocol.
        protocol: StreamProtocol,
        /// The deadline.
        after_ms: u128,
    },
    /// Connecting or opening the stream failed (including an unsupported protocol).
    #[error(transparent)]
    Mesh(#[from] Error),
    /// The stream failed mid-exchange.
    #[error("{protocol} request to {peer} failed: {source}")]
    Io {
        /// The server.
        peer: PeerId,
        /// The protocol.
        protocol: StreamProtocol,
        /// The IO error.
        source: std::io::Error,
    },
}

impl Mesh {
    /// Send `body` to `peer` on `protocol` and wait for the answer.
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: &RpcProtocol,
        body: &[u8],
    ) -> Result<Vec<u8>, RpcError> {
        if body.len() > protocol.request_bytes_max {
            return Err(RpcError::RequestTooLarge {
                protocol: protocol.name.clone(),
                len: body.len(),
                max: protocol.request_bytes_max,
            });
        }
        let exchange = async {
            let mut stream = self.open_stream(peer, protocol.name.clone()).await?;
            let io = |source| RpcError::Io {
                peer,
                protocol: protocol.name.clone(),
                source,
            };
            protocol::write_request(&mut stream, body)
                .await
                .map_err(io)?;
            // Half-close: tells the server the request is complete.
            stream.close().await.map_err(io)?;
            match protocol::read_response(&mut stream, protocol.response_bytes_max).await {
                Ok((Status::Ok, body)) => Ok(body),
                Ok((status, reason)) => Err(RpcError::Refused {
                    peer,
                    protocol: protocol.name.clone(),
                    status,
                    reason: String::from_utf8_lossy(&reason).into_owned(),
                }),
                Err(FrameError::Io(e)) => Err(io(e)),
                Err(e) => {
                    let reason = e.to_string();
                    let _ = self
                        .ban(
                            peer,
                            format!("malformed {} response: {reason}", protocol.name),
                        )
                        .await;
                    Err(RpcError::MalformedResponse {
                        peer,
                        protocol: protocol.name.clone(),
                        reason,
                    })
                }
            }
        };
        tokio::time::timeout(protocol.timeout, exchange)
            .await
            .map_err(|_| RpcError::Timeout {
                peer,
                protocol: protocol.name.clone(),
                after_ms: protocol.timeout.as_millis(),
            })?
    }

    /// Serve `protocol`: `handler(peer, request)` answers each request, or refuses it
    /// with a reason the caller receives. Fails if the protocol is already served.
    pub fn serve<F, Fut>(&self, protocol: RpcProtocol, handler: F) -> Result<(), Error>
    where
        F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let incoming = self.accept_streams(protocol.name.clone())?;
        let server = Server {
            protocol: Arc::new(protocol),
            handler: Arc::new(handler),
            // A weak sender: the server must not keep the mesh alive on its own.
            mesh: self.tx.downgrade(),
            stats: Arc::new(ServerStats::default()),
        };
        tokio::spawn(server.run(incoming));
        Ok(())
    }
}

#[derive(Default)]
struct ServerStats {
    refused: AtomicU64,
}

struct Server<F> {
    protocol: Arc<RpcProtocol>,
    handler: Arc<F>,
    mesh: mpsc::WeakSender<Command>,
    stats: Arc<ServerStats>,
}

impl<F, Fut> Server<F>
where
    F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
{
    async fn run(self, mut incoming: crate::streams::IncomingStreams) {
        let mut limiter = PeerRateLimiter::new(self.protocol.rate);
        let slots = incoming.slots(
            self.protocol.concurrent_max,
            self.protocol.concurrent_per_peer_max,
        );
        let refusing = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX));
        while let Some((peer, stream)) = incoming.next().await {
            if !limiter.allow(peer, Instant::now()) {
                self.refuse(
                    peer,
                    stream,
                    Status::RateLimited,
                    "request rate exceeded",
                    &refusing,
                );
                continue;
            }
            match slots.take(peer) {
                Ok(slot) => {
                    let protocol = self.protocol.clone();
                    let handler = self.handler.clone();
                    let mesh = self.mesh.clone();
                    tokio::spawn(async move {
                        serve_one(protocol, handler, mesh, peer, stream).await;
                        drop(slot);
                    });
                }
                Err(busy) => self.refuse(peer, stream, Status::Busy, busy.reason(), &refusing),
            }
        }
        tracing::debug!(protocol = %self.protocol.name, "rpc server stopped");
    }

    fn refuse(
        &self,
        peer: PeerId,
        mut stream: Stream,
        status: Status,
        reason: &'static str,
        refusing: &Arc<Semaphore>,
    ) {
        let count = self.stats.refused.fetch_add(1, Ordering::Relaxed);
        // One line for the first refusal and then one per thousand: a flood must not
        // also flood the log.
        if count.is_multiple_of(1000) {
            tracing::warn!(%peer, protocol = %self.protocol.name, ?status, refused_total = count + 1, "refusing request");
        }
        let Ok(permit) = refusing.clone().try_acquire_owned() else {
            return; // dropping the stream resets it
        };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
                protocol::write_response(&mut stream, status, reason.as_bytes()).await?;
                stream.close().await
            })
            .await;
            drop(permit);
        });
    }
}

async fn serve_one<F, Fut>(
    protocol: Arc<RpcProtocol>,
    handler: Arc<F>,
    mesh: mpsc::WeakSender<Command>,
    peer: PeerId,
    mut stream: Stream,
) where
    F: Fn(PeerId, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
{
    let name = protocol.name.clone();
    let exchange = async {
        let request =
            match protocol::read_request_len(&mut stream, protocol.request_bytes_max).await {
                Ok(len) => protocol::read_body(&mut stream, len)
                    .await
                    .map_err(FrameError::Io),
                Err(e) => Err(e),
            };
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                // Only a declared length over the limit is a peer's own doing. A request
                // that ends early is what an honest client leaves when it is interrupted
                // (Ctrl-C, a killed process, a lost link), and a client's peer id is its
                // account: banning it would lock the owner out of every node for minutes.
                let (status, bannable) = match &error {
                    FrameError::TooLarge { .. } => (Status::RequestTooLarge, true),
                    _ => (Status::Malformed, false),
                };
                let reason = error.to_string();
                if bannable {
                    tracing::warn!(%peer, protocol = %name, %reason, "rejecting request");
                } else {
                    tracing::debug!(%peer, protocol = %name, %reason, "rejecting request");
                }
                let _ = protocol::write_response(&mut stream, status, truncate(&reason)).await;
                let _ = stream.close().await;
                if bannable {
                    // Closing the connection at once could discard the refusal still
                    // queued in the muxer; give the peer a moment to read it.
                    tokio::time::sleep(BAN_GRACE).await;
                }
                if bannable && let Some(mesh) = mesh.upgrade() {
                    let _ = mesh
                        .send(Command::Ban {
                            peer,
                            reason: format!("malformed {name} request: {reason}"),
                        })
                        .await;
                }
                return;
            }
        };
        let (status, body) = match handler(peer, request).await {
            Ok(body) if body.len() > protocol.response_bytes_max => {
                tracing::error!(protocol = %name, len = body.len(), max = protocol.response_bytes_max, "handler answer exceeds the protocol's response limit");
                (Status::HandlerError, b"response too large".to_vec())
            }
            Ok(body) => (Status::Ok, body),
            Err(reason) => (Status::HandlerError, truncate(&reason).to_vec()),
        };
        if let Err(e) = protocol::write_response(&mut stream, status, &body).await {
            tracing::debug!(%peer, protocol = %name, error = %e, "cannot send response");
        }
        let _ = stream.close().await;
    };
    if tokio::time::timeout(protocol.timeout, exchange)
        .await
        .is_err()
    {
        tracing::debug!(%peer, protocol = %name, "request timed out");
    }
}

/// At most [`REASON_BYTES_MAX`] bytes of `reason`, cut on a character boundary.
fn truncate(reason: &str) -> &[u8] {
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason.as_bytes()[..end]
}
