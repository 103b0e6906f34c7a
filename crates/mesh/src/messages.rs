//! What the mesh handle and the swarm task say to each other, and what they report.

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use crate::error::Error;

/// A snapshot of this peer's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Our peer id (= account id).
    pub peer_id: String,
    /// Addresses we listen on (including relay circuits we reserved).
    pub listen: Vec<String>,
    /// Addresses confirmed or configured as reachable from outside.
    pub external: Vec<String>,
    /// Peers with at least one connection.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table.
    pub routing_table_peers: usize,
    /// AutoNAT's verdict: `public`, `private` or `unknown`.
    pub nat: String,
    /// Relays holding a reservation for us.
    pub relay_reservations: Vec<String>,
    /// Whether we relay for others.
    pub relay_server: bool,
    /// Peers currently banned.
    pub banned_peers: usize,
}

/// What we know about one connected peer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerInfo {
    /// The peer id (= account id).
    pub peer_id: String,
    /// The remote address of each open connection.
    pub connections: Vec<String>,
    /// Those of them this peer dialed: where the peer listens (an incoming connection's
    /// remote address is usually an ephemeral port).
    #[serde(default)]
    pub dialed: Vec<String>,
    /// True if every open connection goes through a relay.
    pub relayed: bool,
    /// Last round trip measured by ping, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The peer's software, from identify.
    pub agent: Option<String>,
    /// Outcome of the last hole punch with this peer, if one was tried.
    pub hole_punch: Option<String>,
}

/// A gossip message delivered to a subscriber.
#[derive(Debug, Clone)]
pub struct GossipMessage {
    /// The peer that signed (authored) the message.
    pub source: Option<PeerId>,
    /// The topic.
    pub topic: String,
    /// The payload.
    pub data: Vec<u8>,
}

/// Requests to the swarm task, each with its responder.
pub(crate) enum Command {
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    FindPeer {
        peer: PeerId,
        reply: oneshot::Sender<Result<Vec<Multiaddr>, Error>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Ban {
        peer: PeerId,
        reason: String,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<broadcast::Receiver<GossipMessage>, Error>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// `addr` with `/p2p/<peer>` appended unless it already ends with a peer id.
pub fn with_peer(addr: Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(_)) => addr,
        _ => addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
    }
}

/// The peer id an address ends with, if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}
