//! The mesh ports a node got, asked for again after a restart.
//!
//! A listen address with port 0 takes any free port. A node given a new port at every
//! start leaves peers dialing the addresses they knew, and an operator's firewall rule
//! or port forwarding pointing at nothing, until the new one spreads. So the ports a
//! node got are kept in its data directory (`mesh-ports.json`) and asked for again at
//! the next start, when they are still free; a port given explicitly is never changed.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use peergrid_mesh::Multiaddr;
use peergrid_mesh::multiaddr::Protocol;
use serde::{Deserialize, Serialize};

/// The file in the data directory.
pub const PORTS_FILE: &str = "mesh-ports.json";

/// The ports a node listened on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Its TCP port.
    pub tcp: Option<u16>,
    /// Its UDP (QUIC) port.
    pub udp: Option<u16>,
}

impl Ports {
    /// The ports this node used last time (none when unknown or unreadable).
    pub fn load(data_dir: &Path) -> Ports {
        std::fs::read(data_dir.join(PORTS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The ports of the mesh's listen addresses (relayed ones aside).
    pub fn of(bound: &[Multiaddr]) -> Ports {
        let mut ports = Ports::default();
        for addr in bound {
            if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
                continue;
            }
            for p in addr.iter() {
                match p {
                    Protocol::Tcp(port) if port != 0 => {
                        ports.tcp.get_or_insert(port);
                    }
                    Protocol::Udp(port) if port != 0 => {
                        ports.udp.get_or_insert(port);
                    }
                    _ => {}
                }
            }
        }
        ports
    }

    /// Keep these ports for the next start.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        peergrid_core::fs::write_atomic(&data_dir.join(PORTS_FILE), &bytes)
    }

    /// `listen` with each port 0 replaced by the port kept for its transport, where that
    /// port can be bound now; other addresses are returned as they are.
    pub fn apply(&self, listen: &[Multiaddr]) -> Vec<Multiaddr> {
        listen.iter().map(|addr| self.apply_one(addr)).collect()
    }

    fn apply_one(&self, addr: &Multiaddr) -> Multiaddr {
        let mut ip = None;
        let mut wanted = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(IpAddr::V6(a)),
                Protocol::Tcp(0) => wanted = self.tcp.map(|port| (port, false)),
                Protocol::Udp(0) => wanted = self.udp.map(|port| (port, true)),
                _ => {}
            }
        }
        let (Some(ip), Some((port, udp))) = (ip, wanted) else {
            return addr.clone();
        };
        let at = SocketAddr::new(ip, port);
        let free = if udp {
            std::net::UdpSocket::bind(at).is_ok()
        } else {
            std::net::TcpListener::bind(at).is_ok()
        };
        if !free {
            return addr.clone();
        }
        addr.iter()
            .map(|p| match p {
                Protocol::Tcp(0) if !udp => Protocol::Tcp(port),
                Protocol::Udp(0) if udp => Protocol::Udp(port),
                p => p,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn kept_ports_replace_port_zero_only_while_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Ports::load(dir.path()),
            Ports::default(),
            "nothing kept yet"
        );
        // Ports known free a moment ago, then kept as if the mesh had listened on them.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (t, u) = (
            tcp.local_addr().expect("addr").port(),
            udp.local_addr().expect("addr").port(),
        );
        let bound = [
            addr(&format!("/ip4/127.0.0.1/tcp/{t}")),
            addr(&format!("/ip4/127.0.0.1/udp/{u}/quic-v1")),
            addr(
                "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ),
        ];
        let kept = Ports::of(&bound);
        assert_eq!(
            kept,
            Ports {
                tcp: Some(t),
                udp: Some(u)
            }
        );
        kept.save(dir.path()).expect("save");
        let kept = Ports::load(dir.path());
        let listen = [
            addr("/ip4/127.0.0.1/tcp/0"),
            addr("/ip4/127.0.0.1/udp/0/quic-v1"),
            addr("/ip4/127.0.0.1/tcp/7000"),
        ];
        // Still taken by someone else: port 0 stays, so the node starts anyway.
        assert_eq!(kept.apply(&listen), listen.to_vec());
        drop((tcp, udp));
        // A process another test spawns at that moment holds copies of the sockets until
        // it runs its program: give them a moment to be closed everywhere.
        let mut applied = kept.apply(&listen);
        for _ in 0..100 {
            if applied[..2] != listen[..2] {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            applied = kept.apply(&listen);
        }
        assert_eq!(
            applied,
            vec![
                addr(&format!("/ip4/127.0.0.1/tcp/{t}")),
                addr(&format!("/ip4/127.0.0.1/udp/{u}/quic-v1")),
                addr("/ip4/127.0.0.1/tcp/7000"),
            ],
            "free again: asked for again; an explicit port is left alone"
        );
        std::fs::write(dir.path().join(PORTS_FILE), b"{not json").expect("write");
        assert_eq!(
            Ports::load(dir.path()),
            Ports::default(),
            "a broken file is ignored"
        );
    }
}
