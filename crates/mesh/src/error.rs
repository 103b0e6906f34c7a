//! What can go wrong in the mesh, named after what a caller can act on.

use libp2p::{Multiaddr, PeerId, StreamProtocol};

/// An error of the mesh handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer id does not carry an ed25519 key, so it is no grid account.
    #[error("{0} is not an ed25519 account id")]
    NotAnAccount(String),
    /// A listen, bootstrap or relay address could not be used.
    #[error("bad address {addr}: {reason}")]
    BadAddress {
        /// The address as given.
        addr: Multiaddr,
        /// Why it was refused.
        reason: String,
    },
    /// The transport stack could not be built.
    #[error("cannot build the swarm: {0}")]
    Build(String),
    /// The mesh task has stopped; the handle is useless.
    #[error("the mesh has shut down")]
    Shutdown,
    /// No connection could be made to the peer.
    #[error("cannot connect to {peer}: {reason}")]
    Dial {
        /// The peer dialed.
        peer: PeerId,
        /// The transport's explanation.
        reason: String,
    },
    /// Kademlia found no address for the peer.
    #[error("peer {0} not found in the DHT")]
    PeerNotFound(PeerId),
    /// The peer is banned (it sent malformed messages).
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// An operation took longer than its limit.
    #[error("{what} timed out after {after_ms} ms")]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// The limit.
        after_ms: u128,
    },
    /// A stream could not be opened.
    #[error("cannot open a {protocol} stream to {peer}: {reason}")]
    OpenStream {
        /// The peer.
        peer: PeerId,
        /// The protocol asked for.
        protocol: StreamProtocol,
        /// The reason.
        reason: String,
    },
    /// The remote does not speak the protocol (or that version of it).
    #[error("{peer} does not support {protocol}")]
    UnsupportedProtocol {
        /// The peer.
        peer: PeerId,
        /// The protocol asked for.
        protocol: StreamProtocol,
    },
    /// A protocol is registered twice in this process.
    #[error("protocol {0} is already registered")]
    AlreadyRegistered(StreamProtocol),
    /// Gossipsub refused a subscription or a message.
    #[error("gossip: {0}")]
    Gossip(String),
    /// Reading or writing a stream failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
