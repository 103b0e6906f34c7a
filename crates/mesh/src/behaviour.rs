//! The swarm's behaviours, composed into one, and the swarm built from a key and a config.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, allow_block_list, autonat, connection_limits, dcutr, gossipsub,
    identify, identity, kad, mdns, noise, ping, relay,
};

use crate::config::{Config, GOSSIP_MESSAGE_BYTES_MAX};
use crate::error::Error;
use crate::mux;

/// The grid's own Kademlia protocol name, so the grid's DHT never mixes with IPFS's.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/peergrid/kad/1.0.0");
/// Inbound streams one connection may have in protocol negotiation at once.
pub const NEGOTIATING_INBOUND_STREAMS_MAX: usize = 16;

/// The identify protocol version string: peers of other networks are told apart by it.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/peergrid/1.0.0";

/// Every behaviour of a grid peer. Order matters for connection denial: the block
/// list and the limits come first so a refused connection costs nothing further.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Banned peers: connections to and from them are refused.
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Caps on established and pending connections.
    pub limits: connection_limits::Behaviour,
    /// Caps on incoming connections per address and subnet.
    pub addresses: crate::addresslimits::Behaviour,
    /// Relay v2 client: reservations on relays and dialing through them.
    pub relay_client: relay::client::Behaviour,
    /// Relay v2 server, when this peer relays for others.
    pub relay: Toggle<relay::Behaviour>,
    /// Hole punching over a relayed connection.
    pub dcutr: dcutr::Behaviour,
    /// Learns peers' listen addresses and our observed address.
    pub identify: identify::Behaviour,
    /// Keeps connections alive and measures round trips.
    pub ping: ping::Behaviour,
    /// Peer routing.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Whether we are reachable from outside.
    pub autonat: autonat::Behaviour,
    /// Announcements.
    pub gossipsub: gossipsub::Behaviour,
    /// LAN discovery (devnet only).
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Raw streams: request-response and bulk data.
    pub stream: crate::streams::Behaviour,
}

/// Build a swarm with QUIC ([`crate::quic`]) and TCP + TLS or Noise + Yamux ([`crate::tcp`]), the relay client, and every behaviour.
pub fn build_swarm(key: identity::Keypair, config: &Config) -> Result<Swarm<Behaviour>, Error> {
    let build = |e: &dyn std::fmt::Display| Error::Build(e.to_string());
    let tls_offered = config.tls;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            crate::quic::transport(key, crate::quic::Config::default())
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        })
        .map_err(|e| build(&e))?
        .with_other_transport(|key| crate::tcp::transport(key, tls_offered))
        .map_err(|e| build(&e))?
        .with_relay_client(noise::Config::new, mux::Config::default)
        .map_err(|e| build(&e))?
        .with_behaviour(|key, relay_client| make_behaviour(key, relay_client, config))
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(config.idle_timeout)
                // Each negotiating stream may already hold a 256 KiB yamux window; libp2p's
                // 128 per connection would let one peer pin 32 MiB before anything is read.
                .with_max_negotiating_inbound_streams(NEGOTIATING_INBOUND_STREAMS_MAX)
                .with_dial_concurrency_factor(std::num::NonZeroU8::new(4).expect("4 is not zero"))
        })
        .build();
    Ok(swarm)
}

fn make_behaviour(
    key: &identity::Keypair,
    relay_client: relay::client::Behaviour,
    config: &Config,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer = key.public().to_peer_id();

    let established = config.connections.established_cap();
    if established < config.connections.established_max {
        tracing::info!(
            established,
            "connections capped below {} to fit this host's memory",
            config.connections.established_max
        );
    }
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(established))
        .with_max_established_per_peer(Some(config.connections.established_per_peer_max))
        .with_max_pending_incoming(Some(config.connections.pending_incoming_max));

    let relay = config.relay_server.then(|| {
        let limits = config.relay;
        let relay_config = relay::Config {
            max_reservations: limits.reservations_max,
            max_circuits: limits.circuits_max,
            max_circuits_per_peer: limits.circuits_per_peer_max,
            max_circuit_duration: limits.circuit_duration_max,
            max_circuit_bytes: limits.circuit_bytes_max,
            ..relay::Config::default()
        };
        relay::Behaviour::new(peer, relay_config)
    });

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_string(), key.public())
            .with_agent_version(format!("peergrid/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true)
            .with_cache_size(256),
    );

    let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15)));

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_query_timeout(Duration::from_secs(30));
    // Without bootstrap peers (the first peer of a grid) periodic bootstraps only warn
    // that nobody is known; the routing table still fills as peers connect to us.
    let bootstrap_interval = (!config.bootstrap.is_empty()).then_some(Duration::from_secs(300));
    kad_config.set_periodic_bootstrap_interval(bootstrap_interval);
    let mut kad = kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
    // Every grid peer answers DHT queries; without it a small grid (or a test) whose
    // peers have no confirmed public address would have no routing at all.
    kad.set_mode(Some(kad::Mode::Server));

    let autonat = autonat::Behaviour::new(
        peer,
        autonat::Config {
            // Loopback and private addresses are what a devnet and the tests use.
            only_global_ips: false,
            boot_delay: Duration::from_secs(5),
            ..autonat::Config::default()
        },
    );

    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(GOSSIP_MESSAGE_BYTES_MAX)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(Duration::from_secs(1))
        .build()?;
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )?;

    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer)?)
    } else {
        None
    };

    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        addresses: crate::addresslimits::Behaviour::new(crate::addresslimits::Limits {
            per_address_max: config.connections.incoming_per_address_max as usize,
            per_subnet_max: config.connections.incoming_per_subnet_max as usize,
            limit_loopback: config.connections.limit_loopback,
        }),
        relay_client,
        relay: relay.into(),
        dcutr: dcutr::Behaviour::new(peer),
        identify,
        ping,
        kad,
        autonat,
        gossipsub,
        mdns: mdns.into(),
        stream: crate::streams::Behaviour::new().count_loopback(config.connections.limit_loopback),
    })
}
