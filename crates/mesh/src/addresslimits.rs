//! Caps on incoming connections per remote address and per subnet (IPv4 /24, IPv6 /64).
//!
//! Peer ids are free, so libp2p's per-peer cap does not stop one machine from taking every
//! connection slot with fresh ids; each of those connections holds yamux windows and TLS
//! buffers. Counting by address makes such a flood cost one slot share per address, and by
//! subnet one share per network, while peers elsewhere still get in. Loopback is left
//! alone unless asked, because a devnet runs every peer of the grid on one machine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

/// The caps, from [`crate::ConnectionLimits`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Incoming connections (pending and established) from one address.
    pub per_address_max: usize,
    /// Incoming connections from one subnet.
    pub per_subnet_max: usize,
    /// Count loopback addresses too (tests of the limits themselves).
    pub limit_loopback: bool,
}

/// Why an incoming connection was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Exceeded {
    /// Too many from this address.
    #[error("{address} already holds {max} incoming connections")]
    Address {
        /// The remote address.
        address: IpAddr,
        /// The cap.
        max: usize,
    },
    /// Too many from this subnet.
    #[error("the subnet of {address} already holds {max} incoming connections")]
    Subnet {
        /// The remote address.
        address: IpAddr,
        /// The cap.
        max: usize,
    },
}

/// The behaviour: refuses incoming connections over the caps before their handshake.
pub struct Behaviour {
    limits: Limits,
    /// Each counted incoming connection's address.
    connections: HashMap<ConnectionId, IpAddr>,
    by_address: HashMap<IpAddr, usize>,
    by_subnet: HashMap<IpAddr, usize>,
}

impl Behaviour {
    /// Caps as given.
    pub fn new(limits: Limits) -> Self {
        Behaviour {
            limits,
            connections: HashMap::new(),
            by_address: HashMap::new(),
            by_subnet: HashMap::new(),
        }
    }

    fn release(&mut self, connection: ConnectionId) {
        let Some(address) = self.connections.remove(&connection) else {
            return;
        };
        for (map, key) in [
            (&mut self.by_address, address),
            (&mut self.by_subnet, subnet(address)),
        ] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

/// The /24 of an IPv4 address, the /64 of an IPv6 one: what one site usually holds.
fn subnet(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::from(std::net::Ipv6Addr::from(bits))
        }
    }
}

/// The IP address a multiaddr starts with, if it does (a relayed address does not count:
/// its first address is the relay's).
fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    if address.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    match address.iter().next()? {
        Protocol::Ip4(ip) => Some(ip.into()),
        Protocol::Ip6(ip) => Some(ip.into()),
        _ => None,
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(address) = ip_of(remote) else {
            return Ok(());
        };
        if address.is_loopback() && !self.limits.limit_loopback {
            return Ok(());
        }
        let held = self.by_address.get(&address).copied().unwrap_or(0);
        if held >= self.limits.per_address_max {
            return Err(ConnectionDenied::new(Exceeded::Address {
                address,
                max: self.limits.per_address_max,
            }));
        }
        let net = subnet(address);
        if self.by_subnet.get(&net).copied().unwrap_or(0) >= self.limits.per_subnet_max {
            return Err(ConnectionDenied::new(Exceeded::Subnet {
                address,
                max: self.limits.per_subnet_max,
            }));
        }
        self.connections.insert(connection, address);
        *self.by_address.entry(address).or_default() += 1;
        *self.by_subnet.entry(net).or_default() += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.release(connection_id)
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

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_a_sites_slash_24_or_slash_64() {
        assert_eq!(
            subnet("203.0.113.77".parse().expect("ip")),
            "203.0.113.0".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            subnet("2001:db8:1:2:3:4:5:6".parse().expect("ip")),
            "2001:db8:1:2::".parse::<IpAddr>().expect("ip")
        );
        let relayed: Multiaddr = "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .expect("multiaddr");
        assert_eq!(ip_of(&relayed), None, "a relayed peer is not the relay");
    }

    #[test]
    fn a_flood_from_one_address_or_subnet_is_refused_while_others_get_in() {
        let mut limits = Behaviour::new(Limits {
            per_address_max: 2,
            per_subnet_max: 3,
            limit_loopback: false,
        });
        let local: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse().expect("multiaddr");
        let from = |ip: &str| -> Multiaddr { format!("/ip4/{ip}/tcp/5000").parse().expect("ma") };
        let mut id = 0;
        let mut dial = |limits: &mut Behaviour, ip: &str| {
            id += 1;
            let c = ConnectionId::new_unchecked(id);
            limits
                .handle_pending_inbound_connection(c, &local, &from(ip))
                .map(|()| c)
                .map_err(|e| {
                    std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
                })
        };
        let first = dial(&mut limits, "203.0.113.7").expect("first");
        dial(&mut limits, "203.0.113.7").expect("second");
        let refused = dial(&mut limits, "203.0.113.7").expect_err("a third from one address");
        assert!(refused.contains("203.0.113.7 already holds 2"), "{refused}");
        dial(&mut limits, "203.0.113.8").expect("a neighbour");
        let refused = dial(&mut limits, "203.0.113.9").expect_err("a fourth from the /24");
        assert!(refused.contains("subnet"), "{refused}");
        dial(&mut limits, "198.51.100.1").expect("another network is not held up");
        dial(&mut limits, "127.0.0.1").expect("loopback is not counted unless asked");
        // A closed connection frees its place.
        limits.release(first);
        dial(&mut limits, "203.0.113.7").expect("after one closed");
    }
}
