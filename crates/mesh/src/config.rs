//! How a mesh peer is set up: addresses, discovery, relaying, and its limits.

use std::time::Duration;

use libp2p::Multiaddr;

/// Largest gossip message accepted or published: announcements, not data.
pub const GOSSIP_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Configuration of a [`crate::Mesh`]; [`Config::default`] documents the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/udp/4001/quic-v1` and `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Vec<Multiaddr>,
    /// Addresses others should use for us, when known (a public IP behind port forwarding).
    pub external: Vec<Multiaddr>,
    /// Bootstrap peers, each ending in `/p2p/<peer id>`: the entry into Kademlia.
    pub bootstrap: Vec<Multiaddr>,
    /// Relays to hold a reservation on (each ending in `/p2p/<relay id>`), so that
    /// peers who cannot dial us directly reach us through them.
    pub relays: Vec<Multiaddr>,
    /// Serve as a relay v2 for others.
    pub relay_server: bool,
    /// Limits of the relay server's circuits.
    pub relay: RelayLimits,
    /// Discover peers on the local network with mDNS (devnet; off on the open grid,
    /// where it would announce us to every machine on the LAN).
    pub mdns: bool,
    /// Connection limits.
    pub connections: ConnectionLimits,
    /// Close a connection after this long without any stream on it.
    pub idle_timeout: Duration,
    /// How long a peer that sent malformed data stays banned.
    pub ban_duration: Duration,
    /// Time allowed to establish a connection (dial, handshake, upgrade).
    pub dial_timeout: Duration,
    /// TCP security: on, dial with TLS 1.3 (AES-GCM first) and accept TLS or Noise;
    /// off, Noise only both ways (to reach peers that speak only Noise). See [`crate::tcp`].
    pub tls: bool,
}

/// What one connection can make a peer hold before its application reads a byte: every
/// stream the muxer lets live gets yamux's initial 256 KiB window (128 × 256 KiB = 32 MiB);
/// a QUIC connection's window is smaller (15 MB). Windows grow only as the application
/// reads, so this is what peers that send and never wait for an answer can pin.
pub const CONNECTION_UNREAD_BYTES_MAX: u64 =
    crate::mux::STREAMS_MAX as u64 * yamux::DEFAULT_CREDIT as u64;
/// The share of the host's memory that connections may pin: the rest is the node's, and
/// the apps' it runs.
pub const CONNECTION_MEMORY_SHARE: f64 = 0.25;
/// The fewest established connections a host is given however small its memory: a peer
/// with fewer cannot take part in the mesh.
pub const ESTABLISHED_MIN: u32 = 16;

/// Caps on connections, so a flood of dials cannot exhaust memory or file descriptors.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Established connections in total, at most: the cap in force is lower on a host
    /// whose memory cannot hold this many (see [`ConnectionLimits::established_cap`]).
    pub established_max: u32,
    /// Established connections with one peer. A client's peer id is its account key, so
    /// every command one account runs at once, from one machine or several, holds a
    /// connection under the same id: four refused the fifth `store put` of a script.
    pub established_per_peer_max: u32,
    /// Incoming connections still in their handshake.
    pub pending_incoming_max: u32,
    /// Incoming connections, pending and established, from one IP address: peer ids are
    /// free, so one machine could otherwise take every slot.
    pub incoming_per_address_max: u32,
    /// Incoming connections from one subnet (IPv4 /24, IPv6 /64).
    pub incoming_per_subnet_max: u32,
    /// Apply the two caps above to loopback too (devnets run every peer on one machine).
    pub limit_loopback: bool,
    /// Memory to size the connection cap by, bytes; `None` for the host's total memory.
    pub memory_bytes: Option<u64>,
}

impl ConnectionLimits {
    /// The established connections allowed: [`Self::established_max`], lowered so that
    /// that many connections each holding [`CONNECTION_UNREAD_BYTES_MAX`] fit in
    /// [`CONNECTION_MEMORY_SHARE`] of the memory, but never below [`ESTABLISHED_MIN`].
    pub fn established_cap(&self) -> u32 {
        let memory = self.memory_bytes.unwrap_or_else(host_memory_bytes);
        let fit = (memory as f64 * CONNECTION_MEMORY_SHARE) as u64 / CONNECTION_UNREAD_BYTES_MAX;
        let fit = u32::try_from(fit).unwrap_or(u32::MAX).max(ESTABLISHED_MIN);
        self.established_max.min(fit)
    }
}

/// The host's total memory; if it cannot be read, as much as allows the default cap.
fn host_memory_bytes() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory();
    match system.total_memory() {
        0 => u64::MAX,
        bytes => bytes,
    }
}

/// Limits of the relay v2 server. libp2p's defaults (128 KiB and 2 minutes per
/// circuit) only suit hole-punch coordination; the grid also moves data over relays
/// when a direct connection cannot be made, so they are raised.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Bytes per direction a circuit may carry before the relay closes it.
    pub circuit_bytes_max: u64,
    /// How long a circuit may stay open.
    pub circuit_duration_max: Duration,
    /// Circuits relayed at once.
    pub circuits_max: usize,
    /// Circuits relayed at once for one source peer.
    pub circuits_per_peer_max: usize,
    /// Reservations held at once.
    pub reservations_max: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            circuit_bytes_max: 1 << 30,
            circuit_duration_max: Duration::from_secs(30 * 60),
            circuits_max: 64,
            circuits_per_peer_max: 8,
            reservations_max: 256,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            established_max: 512,
            established_per_peer_max: 16,
            pending_incoming_max: 64,
            incoming_per_address_max: 16,
            incoming_per_subnet_max: 64,
            limit_loopback: false,
            memory_bytes: None,
        }
    }
}

impl Default for Config {
    /// Listen on all IPv4 interfaces on random ports (QUIC and TCP), no bootstrap
    /// peers, no relaying, mDNS off, 512 connections (fewer on a host without the memory
    /// for them), a 10 minute ban, TLS on TCP (Noise accepted).
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
            ],
            external: Vec::new(),
            bootstrap: Vec::new(),
            relays: Vec::new(),
            relay_server: false,
            relay: RelayLimits::default(),
            mdns: false,
            connections: ConnectionLimits::default(),
            idle_timeout: Duration::from_secs(120),
            ban_duration: Duration::from_secs(600),
            dial_timeout: Duration::from_secs(10),
            tls: true,
        }
    }
}

impl Config {
    /// A peer listening on loopback only (QUIC and TCP, random ports): for tests and benches.
    pub fn loopback() -> Self {
        Self {
            listen: vec![
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
            ],
            ..Self::default()
        }
    }

    /// A short-lived client peer (a CLI command): random ports on every interface,
    /// `bootstrap` to find the grid, and dials that give up after 3 s so that a node that
    /// does not answer is skipped for another instead of holding the user up.
    pub fn client(bootstrap: Vec<Multiaddr>) -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
            ],
            bootstrap,
            dial_timeout: Duration::from_secs(3),
            ..Self::default()
        }
    }
}
