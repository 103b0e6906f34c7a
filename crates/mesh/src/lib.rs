//! Connect every participant of the grid over an encrypted, authenticated libp2p mesh.
//!
//! # Status: ALPHA
//!
//! A [`Mesh`] is one libp2p peer whose peer id is the participant's ed25519 account
//! key ([`identity`]), run as a task that owns the swarm. Transports are QUIC (our
//! own on quinn, [`quic`]: AES-GCM first and datagrams as large as the path carries)
//! and TCP ([`tcp`]): TLS 1.3 with AES-GCM and our own record layer ([`tls`]), or Noise
//! for peers that speak only Noise, then Yamux (our own adapter, [`mux`], for its
//! large frames and bounded windows); behaviours are identify, ping, Kademlia (peer routing under
//! `/peergrid/kad/1.0.0`), AutoNAT, relay v2 (client always, server when configured,
//! with circuit limits raised so data can flow through a relay), DCUtR hole
//! punching, gossipsub, optional mDNS, connection limits and a block list.
//!
//! The grid's own protocols ride on raw streams ([`Mesh::open_stream`]):
//! [`rpc`] frames one request and one response per stream with size limits,
//! timeouts, per-peer rate limits and bans for malformed frames, and [`bulk`]
//! moves large payloads with end-to-end BLAKE3 confirmation. A local [`control`]
//! endpoint lets the CLI query a running peer, and [`netlab`] builds hosts and NAT
//! routers from network namespaces for the multi-host tests.
//!
//! Run a mesh on tokio's multi-thread runtime. On a current-thread runtime shared
//! with the stream's reader and writer, a QUIC stream that was held back by flow
//! control resumed at well under 1 MiB/s in our tests (TCP at a few MiB/s); the
//! same transfer on a multi-thread runtime runs at full speed.

// Errors carry the peer id (80 bytes) so callers can act on them; they happen on
// rare paths, so their size is not worth boxing.
#![allow(clippy::result_large_err)]

mod actor;
pub mod addresslimits;
mod behaviour;
pub mod bulk;
pub mod config;
pub mod control;
pub mod error;
pub mod identity;
pub mod ingress;
pub mod memory;
mod messages;
pub mod mux;
pub mod netlab;
pub mod quic;
pub mod ratelimit;
pub mod rpc;
pub mod slots;
pub mod streams;
pub mod tcp;
pub mod tls;

pub use behaviour::NEGOTIATING_INBOUND_STREAMS_MAX;
pub use config::{Config, ConnectionLimits, RelayLimits};
pub use error::Error;
pub use ingress::{GossipMessage, Mesh, PeerInfo, Status, peer_of, with_peer};
pub use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, multiaddr};
pub use rpc::{RpcError, RpcProtocol};
pub use slots::{Busy, Slot, Slots, Source};
pub use streams::IncomingStreams;
