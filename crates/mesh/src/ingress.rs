//! The mesh handle: a cloneable mailbox to the task that owns the swarm.

use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use peergrid_core::{AccountId, Keypair};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::actor::Actor;
use crate::behaviour::build_swarm;
use crate::config::Config;
use crate::error::Error;
use crate::identity;
use crate::messages::Command;
pub use crate::messages::{GossipMessage, PeerInfo, Status, peer_of, with_peer};

/// Commands queued to the swarm task; bounded so callers feel backpressure.
pub(crate) const MAILBOX_CAPACITY: usize = 256;
/// On-demand ping. Not libp2p's `/ipfs/ping/1.0.0`: its handler keeps one inbound
/// stream per connection and drops it for the next, so an extra ping stream races
/// the periodic one and may be cut off.
pub const PING_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/ping/1.0.0");
/// Pings answered at once.
const PINGS_IN_FLIGHT_MAX: usize = 16;
/// libp2p ping's payload size.
const PING_BYTES: usize = 32;
/// Limit on one on-demand ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A running mesh peer. Clones share the same swarm; it stops when every clone is dropped.
#[derive(Clone)]
pub struct Mesh {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) control: crate::streams::Control,
    peer_id: PeerId,
    dial_timeout: Duration,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl Mesh {
    /// Start a peer with the account `key`: listen, dial the bootstrap peers, reserve
    /// on the relays. Returns once every listener reported its first address.
    pub async fn start(key: &Keypair, config: Config) -> Result<Self, Error> {
        let swarm = build_swarm(identity::libp2p_keypair(key), &config)?;
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (tx, rx) = mpsc::channel(MAILBOX_CAPACITY);
        let dial_timeout = config.dial_timeout;
        let actor = Actor::start(swarm, config, rx).await?;
        tokio::spawn(actor.run());
        answer_pings(
            control
                .clone()
                .accept(PING_PROTOCOL)
                .map_err(|_| Error::AlreadyRegistered(PING_PROTOCOL))?,
        );
        Ok(Self {
            tx,
            control,
            peer_id,
            dial_timeout,
        })
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Our account id (the same key as the peer id).
    pub fn account(&self) -> AccountId {
        identity::account_id(&self.peer_id).expect("the mesh key is an ed25519 account key")
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)
    }

    /// Our listen addresses, each ending in `/p2p/<our id>` so it can be handed to others.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        let status = self.status().await?;
        Ok(status
            .listen
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| with_peer(a, self.peer_id))
            .collect())
    }

    /// Connect to `peer`: at `addrs` if given, else at addresses already known, else
    /// at addresses found through Kademlia. Returns once a connection is established.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), Error> {
        if peer == self.peer_id {
            return Ok(());
        }
        let timeout = self.dial_timeout * 3;
        tokio::time::timeout(timeout, async {
            self.ask(|reply| Command::Connect { peer, addrs, reply })
                .await?
        })
        .await
        .map_err(|_| Error::Timeout {
            what: "connect",
            after_ms: timeout.as_millis(),
        })?
    }

    /// Find the addresses of `peer` through Kademlia.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, Error> {
        self.ask(|reply| Command::FindPeer { peer, reply }).await?
    }

    /// A snapshot of this peer's state.
    pub async fn status(&self) -> Result<Status, Error> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// Close every connection with `peer` and refuse it for the configured ban duration.
    pub async fn ban(&self, peer: PeerId, reason: impl Into<String>) -> Result<(), Error> {
        let reason = reason.into();
        self.tx
            .send(Command::Ban { peer, reason })
            .await
            .map_err(|_| Error::Shutdown)
    }

    /// Measure one round trip to `peer` (connecting first if needed).
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, Error> {
        let mut stream = self.open_stream(peer, PING_PROTOCOL).await?;
        let payload: [u8; PING_BYTES] = *blake3::hash(
            format!("{:?}{:?}", Instant::now(), std::thread::current().id()).as_bytes(),
        )
        .as_bytes();
        let exchange = async {
            let start = Instant::now();
            stream.write_all(&payload).await?;
            stream.flush().await?;
            let mut echo = [0u8; PING_BYTES];
            stream.read_exact(&mut echo).await?;
            let rtt = start.elapsed();
            if echo != payload {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "ping echo differs from what was sent",
                ));
            }
            let _ = stream.close().await;
            Ok(rtt)
        };
        tokio::time::timeout(PING_TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout {
                what: "ping",
                after_ms: PING_TIMEOUT.as_millis(),
            })?
            .map_err(Error::Io)
    }

    /// Open a raw bidirectional stream to `peer` speaking `protocol`, connecting first
    /// if needed. Writes block while the peer does not read (flow control of the
    /// Yamux or QUIC stream), so a fast sender cannot swamp a slow receiver.
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, Error> {
        if peer == self.peer_id {
            return Err(Error::OpenStream {
                peer,
                protocol,
                reason: "that is this peer's own id".to_string(),
            });
        }
        self.connect(peer, Vec::new()).await?;
        let mut control = self.control.clone();
        let open = control.open_stream(peer, protocol.clone());
        let result = tokio::time::timeout(self.dial_timeout, open)
            .await
            .map_err(|_| Error::Timeout {
                what: "open stream",
                after_ms: self.dial_timeout.as_millis(),
            })?;
        result.map_err(|e| match e {
            crate::streams::OpenStreamError::UnsupportedProtocol(protocol) => {
                Error::UnsupportedProtocol { peer, protocol }
            }
            other => Error::OpenStream {
                peer,
                protocol,
                reason: other.to_string(),
            },
        })
    }

    /// Accept inbound streams of `protocol`. Up to [`crate::streams::INBOUND_QUEUE_MAX`]
    /// wait for the caller to take them, at most
    /// [`crate::streams::INBOUND_QUEUE_PER_PEER_MAX`] from one peer; more are refused
    /// (reset), which bounds memory and keeps one peer from crowding out the others.
    pub fn accept_streams(
        &self,
        protocol: StreamProtocol,
    ) -> Result<crate::streams::IncomingStreams, Error> {
        self.control
            .clone()
            .accept(protocol.clone())
            .map_err(|_| Error::AlreadyRegistered(protocol))
    }

    /// Subscribe to a gossip topic; messages beyond the receiver's backlog are dropped
    /// (the receiver sees `Lagged`) rather than queued without bound.
    pub async fn subscribe(
        &self,
        topic: &str,
    ) -> Result<broadcast::Receiver<GossipMessage>, Error> {
        let topic = topic.to_string();
        self.ask(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    /// Close every connection and wait (at most 2 s) until they are closed, so that the
    /// peers learn it now. A process that exits without this leaves QUIC connections that
    /// its peers count against their per-peer limit until they time out, which refuses
    /// the next process with the same key for that long.
    pub async fn close(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.ask(|reply| Command::Close { reply }),
        )
        .await;
    }

    /// Publish `data` on a gossip topic.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), Error> {
        let topic = topic.to_string();
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }
}

/// Echo one ping payload per stream, a bounded number at once.
fn answer_pings(mut incoming: crate::streams::IncomingStreams) {
    use futures::StreamExt;
    tokio::spawn(async move {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(PINGS_IN_FLIGHT_MAX));
        while let Some((_, mut stream)) = incoming.next().await {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue;
            };
            tokio::spawn(async move {
                let _ = tokio::time::timeout(PING_TIMEOUT, async {
                    let mut payload = [0u8; PING_BYTES];
                    stream.read_exact(&mut payload).await?;
                    stream.write_all(&payload).await?;
                    stream.close().await
                })
                .await;
                drop(permit);
            });
        }
    });
}
