//! Raw streams of our own protocols: open one to a peer, accept them by protocol.
//!
//! # Why not `libp2p-stream`
//!
//! libp2p-stream 0.5 hands inbound streams over a channel that holds one: a stream that
//! arrives before the accepting task took the previous one is reset, so under load (two
//! cores, a burst of rpcs or shard uploads) honest requests fail with a reset instead of
//! waiting a few milliseconds. It also negotiates one outbound stream at a time per
//! connection, so parallel uploads to one node wait for each other's negotiation. This
//! module keeps its shape ([`Control::open_stream`], [`Control::accept`]) and changes
//! the two limits: each protocol queues up to [`INBOUND_QUEUE_MAX`] inbound streams, at
//! most [`INBOUND_QUEUE_PER_PEER_MAX`] of them from one peer, so that a flooding peer
//! is refused while others still get in; and each connection negotiates up to
//! [`OUTBOUND_NEGOTIATING_MAX`] outbound streams at once.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use libp2p::PeerId;

use crate::slots::{Slots, Source};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::behaviour::ConnectionEstablished;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
    DialFailure, FromSwarm, NetworkBehaviour, Stream, StreamProtocol, StreamUpgradeError,
    SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// Inbound streams of one protocol waiting for the accepting task.
pub const INBOUND_QUEUE_MAX: usize = 128;

/// Of those, how many may come from one peer, so that a burst of parallel requests
/// waits instead of being reset. A queued stream holds at most its 256 KiB yamux window,
/// 8 MiB per peer and protocol.
pub const INBOUND_QUEUE_PER_PEER_MAX: usize = 32;

/// Outbound streams one connection negotiates at once; more wait their turn. Below the
/// inbound streams a peer negotiates at once on one connection
/// ([`crate::NEGOTIATING_INBOUND_STREAMS_MAX`], all protocols), leaving room for the
/// swarm's own (identify, ping, Kademlia): a stream over that cap is dropped unanswered,
/// and its opener saw "unsupported protocol" whenever the other side was slow (32 here
/// against 16 there failed bursts on a loaded machine).
pub const OUTBOUND_NEGOTIATING_MAX: usize = crate::NEGOTIATING_INBOUND_STREAMS_MAX - 4;

/// Open requests waiting for a connection's handler, per connection.
const OPEN_QUEUE_MAX: usize = 64;

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStreamError {
    /// The peer does not accept this protocol.
    #[error("the peer does not speak {0}")]
    UnsupportedProtocol(StreamProtocol),
    /// The connection failed, closed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The protocol is already being accepted by another [`IncomingStreams`].
#[derive(Debug, thiserror::Error)]
#[error("{0} is already accepted elsewhere in this process")]
pub struct AlreadyRegistered(pub StreamProtocol);

/// A request from [`Control::open_stream`] to a connection's handler.
struct NewStream {
    protocol: StreamProtocol,
    reply: oneshot::Sender<Result<Stream, OpenStreamError>>,
}

type OpenSender = mpsc::Sender<NewStream>;
type OpenReceiver = mpsc::Receiver<NewStream>;

/// The inbound streams of one protocol, waiting for its accepting task.
#[derive(Default)]
struct Queue {
    streams: VecDeque<(PeerId, Stream)>,
    per_peer: HashMap<PeerId, usize>,
    waker: Option<Waker>,
    /// The [`IncomingStreams`] was dropped: the protocol is no longer accepted.
    closed: bool,
}

/// State shared by the behaviour, its handlers and every [`Control`].
struct Shared {
    inbound: HashMap<StreamProtocol, Arc<Mutex<Queue>>>,
    /// Each connection's open-request channel and remote source, by peer.
    connections: HashMap<PeerId, Vec<(ConnectionId, OpenSender, Option<Source>)>>,
    /// Open requests for peers being dialed; the first connection takes the receiver.
    dialing: HashMap<PeerId, (OpenSender, OpenReceiver)>,
    dial: mpsc::UnboundedSender<PeerId>,
    /// Key loopback connections by their address too (tests of the shares themselves).
    count_loopback: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the mesh down with it; the state stays consistent
    // because every critical section below is a few map operations.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn supported(&mut self) -> Vec<StreamProtocol> {
        self.inbound.retain(|_, q| !lock(q).closed);
        self.inbound.keys().cloned().collect()
    }

    /// The open-request channel of a connection to `peer`, dialing it if there is none.
    fn sender(&mut self, peer: PeerId) -> OpenSender {
        if let Some((_, sender, _)) = self.connections.get(&peer).and_then(|c| c.last()) {
            return sender.clone();
        }
        let (sender, _) = self
            .dialing
            .entry(peer)
            .or_insert_with(|| mpsc::channel(OPEN_QUEUE_MAX));
        let _ = self.dial.unbounded_send(peer);
        sender.clone()
    }

    /// The open-request receiver for a new connection's handler.
    fn receiver(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remote: &Multiaddr,
    ) -> OpenReceiver {
        let source = Source::of(remote, self.count_loopback);
        let (sender, receiver) = self
            .dialing
            .remove(&peer)
            .unwrap_or_else(|| mpsc::channel(OPEN_QUEUE_MAX));
        self.connections
            .entry(peer)
            .or_default()
            .push((connection, sender, source));
        receiver
    }

    /// Where `peer`'s connections come from, if any of them is direct.
    fn source_of(&self, peer: &PeerId) -> Option<Source> {
        self.connections
            .get(peer)?
            .iter()
            .find_map(|(_, _, source)| *source)
    }

    fn on_inbound(
        &self,
        peer: PeerId,
        stream: Stream,
        protocol: &StreamProtocol,
        dropped: &AtomicU64,
    ) {
        let Some(queue) = self.inbound.get(protocol) else {
            return;
        };
        let mut q = lock(queue);
        let from_peer = q.per_peer.get(&peer).copied().unwrap_or(0);
        if q.closed
            || q.streams.len() >= INBOUND_QUEUE_MAX
            || from_peer >= INBOUND_QUEUE_PER_PEER_MAX
        {
            // Dropping the stream resets it: the opener learns at once, nothing is held here.
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %protocol, queued = q.streams.len(), from_peer, "inbound stream refused: queue full");
            return;
        }
        q.streams.push_back((peer, stream));
        *q.per_peer.entry(peer).or_default() += 1;
        if let Some(w) = q.waker.take() {
            w.wake();
        }
    }
}

/// The behaviour: put it in the swarm, and take [`Control`]s from it.
pub struct Behaviour {
    shared: Arc<Mutex<Shared>>,
    dial: mpsc::UnboundedReceiver<PeerId>,
    dropped: Arc<AtomicU64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self::new()
    }
}

impl Behaviour {
    /// A behaviour accepting no protocol yet.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded();
        Behaviour {
            shared: Arc::new(Mutex::new(Shared {
                inbound: HashMap::new(),
                connections: HashMap::new(),
                dialing: HashMap::new(),
                dial: tx,
                count_loopback: false,
            })),
            dial: rx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Share slots by loopback addresses too, as [`crate::ConnectionLimits::limit_loopback`]
    /// does for connections; a devnet runs every peer on one address, so this is off.
    pub fn count_loopback(self, count: bool) -> Self {
        lock(&self.shared).count_loopback = count;
        self
    }

    /// A handle to open and accept streams.
    pub fn new_control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
            dropped: self.dropped.clone(),
        }
    }

    fn handler(&self, peer: PeerId, connection: ConnectionId, remote: &Multiaddr) -> Handler {
        Handler {
            peer,
            shared: self.shared.clone(),
            dropped: self.dropped.clone(),
            requests: lock(&self.shared).receiver(peer, connection, remote),
            negotiating: 0,
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, connection, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, connection, remote))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished { .. }) => {}
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let mut shared = lock(&self.shared);
                if let Some(list) = shared.connections.get_mut(&peer_id) {
                    list.retain(|(c, _, _)| *c != connection_id);
                    if list.is_empty() {
                        shared.connections.remove(&peer_id);
                    }
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => {
                // Only a dial that leaves no connection fails the waiting opens; one not
                // made because another to the peer is under way says nothing of it.
                if matches!(error, libp2p::swarm::DialError::DialPeerConditionFalse(_)) {
                    return;
                }
                let mut shared = lock(&self.shared);
                if shared.connections.contains_key(&peer) {
                    return;
                }
                if let Some((_, mut waiting)) = shared.dialing.remove(&peer) {
                    let reason = error.to_string();
                    while let Ok(open) = waiting.try_recv() {
                        let e = io::Error::new(io::ErrorKind::NotConnected, reason.clone());
                        let _ = open.reply.send(Err(e.into()));
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.dial.poll_next_unpin(cx) {
            Poll::Ready(Some(peer)) => Poll::Ready(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            }),
            _ => Poll::Pending,
        }
    }
}

/// A clonable handle to open streams to peers and accept them by protocol.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Mutex<Shared>>,
    dropped: Arc<AtomicU64>,
}

impl Control {
    /// Open a stream to `peer` speaking `protocol`, dialing it if not connected.
    pub async fn open_stream(
        &mut self,
        peer: PeerId,
        protocol: StreamProtocol,
    ) -> Result<Stream, OpenStreamError> {
        let mut sender = lock(&self.shared).sender(peer);
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::new(io::ErrorKind::ConnectionReset, "the connection closed");
        sender
            .send(NewStream { protocol, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Accept inbound streams of `protocol` until the returned [`IncomingStreams`] is dropped.
    pub fn accept(
        &mut self,
        protocol: StreamProtocol,
    ) -> Result<IncomingStreams, AlreadyRegistered> {
        let mut shared = lock(&self.shared);
        shared.supported();
        if shared.inbound.contains_key(&protocol) {
            return Err(AlreadyRegistered(protocol));
        }
        let queue = Arc::new(Mutex::new(Queue::default()));
        shared.inbound.insert(protocol, queue.clone());
        Ok(IncomingStreams {
            queue,
            shared: self.shared.clone(),
        })
    }

    /// Inbound streams refused so far because their protocol's queue was full.
    pub fn refused(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Inbound streams of one protocol, with the peer that opened each.
#[must_use = "streams wait, then are refused, unless this is polled"]
pub struct IncomingStreams {
    queue: Arc<Mutex<Queue>>,
    shared: Arc<Mutex<Shared>>,
}

impl IncomingStreams {
    /// Slots for serving these streams: `all` at once, `per_peer` for one peer, and
    /// [`Slots::per_source_max`] for one address, so that peers made up by one machine
    /// share one machine's share.
    pub fn slots(&self, all: usize, per_peer: usize) -> Slots {
        let shared = Arc::downgrade(&self.shared);
        Slots::new(all, per_peer).sourced(Arc::new(move |peer: &PeerId| {
            shared.upgrade().and_then(|s| lock(&s).source_of(peer))
        }))
    }
}

impl futures::Stream for IncomingStreams {
    type Item = (PeerId, Stream);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut q = lock(&self.queue);
        match q.streams.pop_front() {
            Some((peer, stream)) => {
                if let Some(n) = q.per_peer.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        q.per_peer.remove(&peer);
                    }
                }
                Poll::Ready(Some((peer, stream)))
            }
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for IncomingStreams {
    fn drop(&mut self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        q.streams.clear();
    }
}

/// One connection's side: negotiates what [`Control::open_stream`] asks for, hands inbound
/// streams to their protocol's queue.
pub struct Handler {
    peer: PeerId,
    shared: Arc<Mutex<Shared>>,
    dropped: Arc<AtomicU64>,
    requests: OpenReceiver,
    negotiating: usize,
}

type Reply = oneshot::Sender<Result<Stream, OpenStreamError>>;

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = (StreamProtocol, Reply);

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        let protocols = lock(&self.shared).supported();
        SubstreamProtocol::new(Upgrade(protocols), ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, (StreamProtocol, Reply), Infallible>> {
        if self.negotiating >= OUTBOUND_NEGOTIATING_MAX {
            return Poll::Pending;
        }
        loop {
            match self.requests.poll_next_unpin(cx) {
                Poll::Ready(Some(open)) if open.reply.is_canceled() => continue,
                Poll::Ready(Some(open)) => {
                    self.negotiating += 1;
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(
                            Upgrade(vec![open.protocol.clone()]),
                            (open.protocol, open.reply),
                        ),
                    });
                }
                _ => return Poll::Pending,
            }
        }
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Upgrade, Upgrade, (), (StreamProtocol, Reply)>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => lock(&self.shared).on_inbound(self.peer, stream, &protocol, &self.dropped),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info: (_, reply),
            }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (protocol, reply),
                error,
            }) => {
                self.negotiating = self.negotiating.saturating_sub(1);
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => {
                        OpenStreamError::UnsupportedProtocol(protocol)
                    }
                    StreamUpgradeError::Timeout => {
                        io::Error::new(io::ErrorKind::TimedOut, "stream negotiation timed out")
                            .into()
                    }
                    StreamUpgradeError::Io(e) => e.into(),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                let _ = reply.send(Err(error));
            }
            _ => {}
        }
    }
}

/// Negotiates one of the listed protocols; the stream is used as it is.
#[derive(Clone)]
pub struct Upgrade(Vec<StreamProtocol>);

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        ready(Ok((stream, protocol)))
    }
}
