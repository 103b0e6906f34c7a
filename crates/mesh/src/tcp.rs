//! TCP connections: TLS 1.3 (or Noise), then the mesh's muxer ([`crate::mux`]).
//!
//! libp2p's own TCP upgrade offers every security protocol it has in one list, and
//! multistream-select then waits a round trip for the listener's answer: it proposes
//! optimistically only when it has a single protocol to propose. Here a dialer
//! proposes just TLS (or Noise, when TLS is off) and sends its first handshake
//! message with the proposal, so a connection is ready after two round trips (TCP's,
//! then the handshake's), as with Noise alone. A listener accepts both, so peers that
//! speak only Noise still reach us. A listener that refuses TLS (a Noise-only libp2p
//! peer) has already read our ClientHello as a broken proposal, so the dialer opens a
//! second TCP connection and proposes Noise on it: one extra round trip to such peers,
//! none to ours.

use std::net::SocketAddr;

use futures::future::Either;
use libp2p::core::ConnectedPoint;
use libp2p::core::multiaddr::Protocol;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, Version};
use libp2p::{Multiaddr, PeerId, identity, noise, tcp};
use multistream_select::{NegotiationError, dialer_select_proto, listener_select_proto};

use crate::{mux, tls};

/// Noise's protocol name, as libp2p-noise negotiates it.
const NOISE: &str = "/noise";

/// Why an incoming or outgoing TCP connection could not be secured and multiplexed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The peers share no security or muxer protocol, or negotiation broke off.
    #[error("protocol negotiation failed: {0}")]
    Negotiation(#[from] NegotiationError),
    /// The TLS handshake failed.
    #[error(transparent)]
    Tls(#[from] tls::UpgradeError),
    /// The Noise handshake failed.
    #[error("Noise handshake failed: {0}")]
    Noise(#[from] noise::Error),
    /// The peer refused TLS and the second connection, for Noise, could not be opened.
    #[error("the peer refused TLS, and a second connection for Noise failed: {0}")]
    Fallback(std::io::Error),
}

/// The TCP transport: authenticated by `key`, TLS first when `tls_offered`.
pub fn transport(
    key: &identity::Keypair,
    tls_offered: bool,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let tls = tls::Config::new(key)?;
    let noise = noise::Config::new(key)?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .and_then(move |socket, endpoint| upgrade(socket, endpoint, tls, noise, tls_offered))
            .boxed(),
    )
}

/// How long a listen port held by another socket is waited for before it is refused:
/// a peer of this process that was just dropped may still be closing its listener.
const TAKEN_PORT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Refuses a TCP listen address whose port another socket listens on already.
///
/// libp2p listens with `SO_REUSEPORT`, so without this a second node started on the
/// same port would start without a word and take a share of the first one's incoming
/// connections (its peers' dials then fail as reaching the wrong peer). A socket bound
/// as libp2p binds it (address reuse, IPv6 only for an IPv6 address) but without that
/// option cannot bind while anything listens there; it never listens, and is closed.
pub(crate) async fn refuse_taken_port(addr: &Multiaddr) -> Result<(), crate::Error> {
    let Some(at) = socket_addr(addr).filter(|at| at.port() != 0) else {
        return Ok(());
    };
    // Only what the TCP transport itself listens on: a /p2p-circuit after it names a
    // relay's port, not ours.
    if addr.iter().skip(2).any(|p| !matches!(p, Protocol::P2p(_))) {
        return Ok(());
    }
    let port = at.port();
    let deadline = tokio::time::Instant::now() + TAKEN_PORT_WAIT;
    loop {
        match bind_probe(at) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(crate::Error::BadAddress {
                        addr: addr.clone(),
                        reason: format!(
                            "TCP port {port} is in use by another program (another node on \
                             this machine?): stop it, or choose another port"
                        ),
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            // Anything else (an address this host does not have) is libp2p's to report.
            Err(_) => return Ok(()),
        }
    }
}

/// Bind a TCP socket to `at` as libp2p would, but without `SO_REUSEPORT`, and close it.
fn bind_probe(at: SocketAddr) -> std::io::Result<()> {
    tcp_socket(at)?.bind(&at.into())
}

/// A TCP socket for `at` with libp2p's options short of port reuse: address reuse, and
/// IPv6 only for an IPv6 address.
fn tcp_socket(at: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(at),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if at.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// Secures `socket` and puts the muxer on it.
async fn upgrade(
    socket: tcp::tokio::TcpStream,
    endpoint: ConnectedPoint,
    tls: tls::Config,
    noise: noise::Config,
    tls_offered: bool,
) -> Result<(PeerId, StreamMuxerBox), UpgradeError> {
    // A hole-punching dialer may be told to act as the listener (DCUtR).
    let (dialing, address) = match endpoint {
        ConnectedPoint::Dialer {
            role_override,
            address,
            ..
        } => (role_override.is_dialer(), Some(address)),
        ConnectedPoint::Listener { .. } => (false, None),
    };
    let (peer, secured) = if dialing {
        let proposal = if tls_offered { tls::PROTOCOL } else { NOISE };
        let (chosen, io) = dialer_select_proto(socket, [proposal], Version::V1Lazy).await?;
        if chosen == tls::PROTOCOL {
            match tls.upgrade_outbound(io, tls::PROTOCOL).await {
                Ok((peer, stream)) => (peer, Either::Left(stream)),
                Err(tls::UpgradeError::Handshake(e)) if refused_protocol(&e) => {
                    let Some(to) = address.as_ref().and_then(socket_addr) else {
                        return Err(tls::UpgradeError::Handshake(e).into());
                    };
                    tracing::debug!(%to, "the peer refused TLS; dialing again with Noise");
                    let socket = tokio::net::TcpStream::connect(to)
                        .await
                        .map_err(UpgradeError::Fallback)?;
                    socket.set_nodelay(true).map_err(UpgradeError::Fallback)?;
                    let socket = tcp::tokio::TcpStream(socket);
                    let (_, io) = dialer_select_proto(socket, [NOISE], Version::V1Lazy).await?;
                    let (peer, stream) = noise.upgrade_outbound(io, NOISE).await?;
                    (peer, Either::Right(stream))
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            let (peer, stream) = noise.upgrade_outbound(io, NOISE).await?;
            (peer, Either::Right(stream))
        }
    } else {
        let accepted: &[&'static str] = if tls_offered {
            &[tls::PROTOCOL, NOISE]
        } else {
            &[NOISE]
        };
        let (chosen, io) = listener_select_proto(socket, accepted.iter().copied()).await?;
        if chosen == tls::PROTOCOL {
            let (peer, stream) = tls.upgrade_inbound(io, tls::PROTOCOL).await?;
            (peer, Either::Left(stream))
        } else {
            let (peer, stream) = noise.upgrade_inbound(io, NOISE).await?;
            (peer, Either::Right(stream))
        }
    };
    let muxer = if dialing {
        let (_, io) = dialer_select_proto(secured, [mux::PROTOCOL], Version::V1Lazy).await?;
        mux::Config.upgrade_outbound(io, mux::PROTOCOL).await
    } else {
        let (_, io) = listener_select_proto(secured, [mux::PROTOCOL]).await?;
        mux::Config.upgrade_inbound(io, mux::PROTOCOL).await
    };
    let Ok(muxer) = muxer;
    Ok((peer, StreamMuxerBox::new(muxer)))
}

/// Whether `e` says the listener refused the protocol we proposed (its "na"), as opposed
/// to a failed handshake: only then is another protocol worth a try.
fn refused_protocol(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if matches!(
            err.downcast_ref::<NegotiationError>(),
            Some(NegotiationError::Failed)
        ) {
            return true;
        }
        // io::Error::source skips the error it wraps; look inside it too.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && refused_protocol(inner)
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// The socket address of a plain `/ip4|ip6/…/tcp/…` multiaddr.
fn socket_addr(address: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = address.iter();
    let ip: std::net::IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    match parts.next()? {
        Protocol::Tcp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener bound as libp2p binds one: address and port reuse, IPv6 only.
    fn libp2p_like_listener(at: SocketAddr) -> socket2::Socket {
        let socket = tcp_socket(at).expect("socket");
        socket.set_reuse_port(true).expect("reuse port");
        socket.bind(&at.into()).expect("bind");
        socket.listen(16).expect("listen");
        socket
    }

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[tokio::test]
    async fn a_port_taken_is_refused_and_the_same_port_on_another_family_or_a_relay_is_not() {
        let taken = libp2p_like_listener("0.0.0.0:0".parse().expect("addr"));
        let port = taken
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound")
            .port();
        for refused in [
            format!("/ip4/0.0.0.0/tcp/{port}"),
            format!("/ip4/127.0.0.1/tcp/{port}"),
        ] {
            let err = refuse_taken_port(&addr(&refused))
                .await
                .expect_err(&refused);
            assert!(
                err.to_string()
                    .contains(&format!("TCP port {port} is in use by another program")),
                "{err}"
            );
        }
        // Listening on IPv4 and IPv6 with one port is one node's own choice: libp2p's IPv6
        // socket is IPv6 only, so the two do not clash.
        let dual = format!("/ip6/::/tcp/{port}");
        assert!(refuse_taken_port(&addr(&dual)).await.is_ok(), "{dual}");
        // A relay's address (on this host, as on a devnet) is the relay's port, not ours.
        let circuit = format!(
            "/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq/p2p-circuit"
        );
        assert!(
            refuse_taken_port(&addr(&circuit)).await.is_ok(),
            "{circuit}"
        );
        // Port 0 takes any free port.
        assert!(
            refuse_taken_port(&addr("/ip4/127.0.0.1/tcp/0"))
                .await
                .is_ok()
        );
        drop(taken);
        let free = format!("/ip4/0.0.0.0/tcp/{port}");
        assert!(
            refuse_taken_port(&addr(&free)).await.is_ok(),
            "{free} once closed"
        );
    }
}
