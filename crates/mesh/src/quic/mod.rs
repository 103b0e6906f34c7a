//! QUIC connections on quinn, with the mesh's TLS configuration and large datagrams.
//!
//! libp2p-quic builds its TLS from libp2p-tls, whose suite order makes two libp2p
//! peers agree on ChaCha20, and keeps quinn's 1,472-byte limit on UDP payloads; it
//! offers a setting for neither. On a CPU with AES instructions AES-GCM costs a
//! fraction of ChaCha20, and every datagram costs a system call's share, header
//! protection and an acknowledgement, so both limits held one stream to a sixth of
//! raw TCP on loopback (BENCHMARKS.md). Here the handshake is the libp2p TLS
//! handshake with our suite order ([`crate::tls`]), peers accept datagrams up to
//! 64 KiB, and path MTU discovery grows packets to what the path carries.
//!
//! A connection on an Ethernet-sized route sends datagrams in batches (segmentation
//! offload, one system call for up to ten); one on a route with a larger MTU, such
//! as loopback, sends 64 KiB datagrams one by one ([`GSO_DATAGRAM_MAX`] says why).
//!
//! Hole punching (DCUtR) works as with libp2p-quic: a connection to be punched is
//! dialed from the listening socket, so the peer's NAT sees the port it was told.

mod congestion;
mod connection;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::SelectAll;
use futures::{FutureExt, Stream, StreamExt};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{
    Boxed, DialOpts, ListenerId, PortUse, TransportError, TransportEvent,
};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, identity};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, MtuDiscoveryConfig};
use rustls::pki_types::CertificateDer;

pub use connection::{Connection, Stream as QuicStream};

use crate::tls;

/// What limits one QUIC connection.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// A connection that hears nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A ping goes out after this long without traffic, well inside `idle_timeout`.
    pub keep_alive: Duration,
    /// Most streams a peer may have open to us at once.
    pub streams_max: u32,
    /// Most unread bytes a peer may send on one stream: the stream's window.
    pub stream_window_bytes: u32,
    /// Most unread bytes a peer may send on one connection.
    pub connection_window_bytes: u32,
    /// Largest UDP payload path MTU discovery tries, and that we accept.
    pub datagram_bytes_max: u16,
    /// Inbound handshakes in progress on one listener beyond which a peer whose address
    /// is not validated is first sent a Retry: a spoofed Initial packet then costs a
    /// datagram instead of a handshake slot.
    pub retry_above_handshakes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
            streams_max: 256,
            // 10 MB per stream and 15 MB per connection cover a 1 Gbit/s path at
            // 80 ms and bound what one peer can make us buffer.
            stream_window_bytes: 10_000_000,
            connection_window_bytes: 15_000_000,
            // An IPv4 datagram's largest payload; MTU discovery stops at what the path
            // carries.
            datagram_bytes_max: 65_507,
            // Half the swarm's 64 pending inbound connections, which TCP shares.
            retry_above_handshakes: 32,
        }
    }
}

/// Why a QUIC connection or listener failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be opened or used.
    #[error("QUIC socket: {0}")]
    Io(#[from] std::io::Error),
    /// quinn refused to start a connection (for example an address it cannot use).
    #[error("cannot start a QUIC connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed during the handshake.
    #[error("QUIC connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The handshake took longer than [`Config::handshake_timeout`].
    #[error("the QUIC handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer's certificate does not name a libp2p peer.
    #[error(transparent)]
    Tls(#[from] tls::UpgradeError),
}

/// Why QUIC could not be set up for a key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::ConfigError),
    /// quinn refused the TLS configuration.
    #[error("QUIC cannot use this TLS configuration: {0}")]
    Crypto(String),
    /// A limit is out of quinn's range.
    #[error("QUIC configuration: {0}")]
    Quinn(String),
}

impl ConfigError {
    fn quinn(e: impl std::fmt::Display) -> Self {
        ConfigError::Quinn(e.to_string())
    }
}

/// The QUIC transport for `key`, boxed for the swarm.
pub fn transport(
    key: &identity::Keypair,
    config: Config,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, ConfigError> {
    use libp2p::core::Transport as _;
    Ok(QuicTransport::new(key, config)?
        .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        .boxed())
}

/// Stateless-reset tokens keyed by the peer's own key, so a peer restarted on the same
/// address tells old connections to end at once instead of after `idle_timeout`.
struct ResetKey(aws_lc_rs::hmac::Key);

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], out: &mut [u8]) {
        out.copy_from_slice(aws_lc_rs::hmac::sign(&self.0, data).as_ref());
    }

    fn signature_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        aws_lc_rs::hmac::verify(&self.0, data, signature).map_err(|_| quinn::crypto::CryptoError)
    }
}

/// The largest datagram sent with segmentation offload (GSO). quinn hands the kernel
/// up to ten datagrams per send, and one send carries at most 64 KiB: larger
/// datagrams in a batch of ten make the kernel refuse the whole batch, which quinn
/// takes for loss and then for a path that drops large packets.
const GSO_DATAGRAM_MAX: u16 = 6_550;

/// IPv4 and UDP headers, between a route's MTU and its largest UDP payload.
const UDP_IPV4_OVERHEAD: u16 = 28;

/// One configuration per kind of route: datagrams up to [`GSO_DATAGRAM_MAX`] sent in
/// batches, or large datagrams (loopback: 64 KiB) sent one by one, which moves more
/// per system call than a batch of small ones.
struct Routes<T, L = T> {
    small: T,
    large: L,
}

impl Routes<quinn::ClientConfig> {
    fn for_route(&self, to: SocketAddr) -> &quinn::ClientConfig {
        if large_datagram_route(to) {
            &self.large
        } else {
            &self.small
        }
    }
}

/// Whether the route to `to` carries datagrams larger than a batch allows.
fn large_datagram_route(to: SocketAddr) -> bool {
    to.ip().is_loopback()
        || route_mtu(to).is_some_and(|mtu| mtu > GSO_DATAGRAM_MAX + UDP_IPV4_OVERHEAD)
}

/// The kernel's MTU for the route to an IPv4 address.
#[cfg(target_os = "linux")]
fn route_mtu(to: SocketAddr) -> Option<u16> {
    if !to.is_ipv4() {
        return None;
    }
    // Connecting a UDP socket only looks the route up; nothing is sent.
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect(to).ok()?;
    let mtu = nix::sys::socket::getsockopt(&probe, nix::sys::socket::sockopt::IpMtu).ok()?;
    u16::try_from(mtu).ok()
}

#[cfg(not(target_os = "linux"))]
fn route_mtu(_: SocketAddr) -> Option<u16> {
    None
}

/// Limits and datagram sizes for one kind of route.
fn transport_config(
    config: &Config,
    large: bool,
) -> Result<Arc<quinn::TransportConfig>, ConfigError> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(config.streams_max.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(Some(
            config.idle_timeout.try_into().map_err(ConfigError::quinn)?,
        ))
        .allow_spin(false)
        .stream_receive_window(config.stream_window_bytes.into())
        .receive_window(config.connection_window_bytes.into())
        .send_window(u64::from(config.connection_window_bytes))
        .enable_segmentation_offload(!large)
        .congestion_controller_factory(Arc::new(congestion::TwoInFlightCubic::default()));
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(if large {
        config.datagram_bytes_max
    } else {
        config.datagram_bytes_max.min(GSO_DATAGRAM_MAX)
    });
    transport.mtu_discovery_config(Some(mtu));
    Ok(Arc::new(transport))
}

/// A connection being set up, inbound or outbound.
pub type Upgrade = BoxFuture<'static, Result<(PeerId, Connection), Error>>;

/// QUIC as a libp2p transport.
pub struct QuicTransport {
    clients: Routes<quinn::ClientConfig>,
    servers: Routes<quinn::ServerConfig, Arc<quinn::ServerConfig>>,
    endpoint: quinn::EndpointConfig,
    handshake_timeout: Duration,
    retry_above_handshakes: usize,
    listeners: SelectAll<Listener>,
    /// Client-only endpoints for dials when no listener fits, one per address family.
    dialers: HashMap<bool, Endpoint>,
    /// Woken when a listener is added, so the swarm polls it.
    waker: Option<Waker>,
}

impl QuicTransport {
    /// A transport authenticated by `key`.
    pub fn new(key: &identity::Keypair, config: Config) -> Result<Self, ConfigError> {
        let (client_tls, server_tls) = tls::rustls_configs(key)?;
        let client_tls = QuicClientConfig::try_from(client_tls)
            .map_err(|e| ConfigError::Crypto(e.to_string()))?;
        let server_tls = QuicServerConfig::try_from(server_tls)
            .map_err(|e| ConfigError::Crypto(e.to_string()))?;

        let small = transport_config(&config, false)?;
        let large = transport_config(&config, true)?;
        let server_tls = Arc::new(server_tls);
        let server = |transport| {
            let mut server = quinn::ServerConfig::with_crypto(server_tls.clone());
            server.transport_config(transport);
            // A migrated connection would need its address change reported to the swarm.
            server.migration(false);
            server
        };
        let client_tls = Arc::new(client_tls);
        let client = |transport| {
            let mut client = quinn::ClientConfig::new(client_tls.clone());
            client.transport_config(transport);
            client
        };
        let clients = Routes {
            small: client(small.clone()),
            large: client(large.clone()),
        };
        let servers = Routes {
            small: server(small),
            large: Arc::new(server(large)),
        };

        let reset = key
            .derive_secret(b"peergrid quic stateless reset key")
            .ok_or_else(|| ConfigError::Quinn("the key cannot derive a reset key".into()))?;
        let mut endpoint = quinn::EndpointConfig::new(Arc::new(ResetKey(
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &reset),
        )));
        endpoint
            .max_udp_payload_size(config.datagram_bytes_max)
            .map_err(ConfigError::quinn)?
            .supported_versions(vec![1]);
        Ok(QuicTransport {
            clients,
            servers,
            endpoint,
            handshake_timeout: config.handshake_timeout,
            retry_above_handshakes: config.retry_above_handshakes,
            listeners: SelectAll::new(),
            dialers: HashMap::new(),
            waker: None,
        })
    }

    fn endpoint(&self, socket: UdpSocket, server: bool) -> Result<Endpoint, Error> {
        let mut config = self.endpoint.clone();
        let local = socket.local_addr()?;
        // quinn sizes its receive buffers from this; see UDP_PAYLOAD_OFF_LOOPBACK_MAX.
        if let Some(cap) = payload_cap(local) {
            config.max_udp_payload_size(cap).map_err(|e| {
                Error::Io(std::io::Error::other(format!(
                    "cannot cap QUIC datagrams at {cap} bytes: {e}"
                )))
            })?;
        }
        Ok(Endpoint::new(
            config,
            server.then(|| self.servers.small.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?)
    }

    /// The endpoint to dial `to` from: a listener's when the port may be reused (so the
    /// peer, and its NAT, see our listening port), else a client-only one.
    fn dial_endpoint(&mut self, to: SocketAddr, port_use: PortUse) -> Result<Endpoint, Error> {
        if port_use == PortUse::Reuse {
            if let Some(l) = self.listeners.iter().find(|l| l.can_reach(to)) {
                return Ok(l.endpoint.clone());
            }
            if let Some(e) = self.dialers.get(&to.is_ipv6()) {
                return Ok(e.clone());
            }
        }
        let any: IpAddr = if to.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let endpoint = self.endpoint(bind(SocketAddr::new(any, 0))?, false)?;
        if port_use == PortUse::Reuse {
            self.dialers.insert(to.is_ipv6(), endpoint.clone());
        }
        Ok(endpoint)
    }
}

/// Largest UDP payload an endpoint not bound to loopback accepts: a 9,000-byte jumbo
/// Ethernet frame's, less the IPv4 and UDP headers. Real paths carry no more, and quinn
/// sizes each endpoint's receive buffers from this limit (a batch of datagrams of that
/// size), so 64 KiB datagrams everywhere would hold several MiB per endpoint for nothing.
pub const UDP_PAYLOAD_OFF_LOOPBACK_MAX: u16 = 8_972;

/// The payload cap for an endpoint bound to `local`: none on loopback, whose 64 KiB
/// datagrams are what make QUIC fast there ([`GSO_DATAGRAM_MAX`]).
fn payload_cap(local: SocketAddr) -> Option<u16> {
    (!local.ip().is_loopback()).then_some(UDP_PAYLOAD_OFF_LOOPBACK_MAX)
}

/// A UDP socket bound to `addr`, with buffers for bursts at high rates.
fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // The kernel caps these at net.core.[rw]mem_max; what it grants is enough.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The UDP address and peer id of a `/ip4|ip6/…/udp/…/quic-v1[/p2p/…]` address.
fn parse(addr: &Multiaddr) -> Option<(SocketAddr, Option<PeerId>)> {
    let mut parts = addr.iter();
    let ip: IpAddr = match parts.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = parts.next()? else {
        return None;
    };
    let Protocol::QuicV1 = parts.next()? else {
        return None;
    };
    let peer = match parts.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(_) => return None,
    };
    parts
        .next()
        .is_none()
        .then_some((SocketAddr::new(ip, port), peer))
}

/// The multiaddr of a UDP address.
fn multiaddr(addr: SocketAddr) -> Multiaddr {
    Multiaddr::empty()
        .with(addr.ip().into())
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// The peer a finished handshake authenticated.
fn peer_of(conn: &quinn::Connection) -> Result<PeerId, Error> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(tls::UpgradeError::NoCertificate)?;
    Ok(tls::peer_of(&certs)?)
}

/// Waits for a handshake, at most `timeout`.
async fn established(
    connecting: quinn::Connecting,
    timeout: Duration,
) -> Result<(PeerId, Connection), Error> {
    let conn = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))??;
    let peer = peer_of(&conn)?;
    Ok((peer, Connection::new(conn)))
}

impl libp2p::core::Transport for QuicTransport {
    type Output = (PeerId, Connection);
    type Error = Error;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        let Some((socket_addr, None)) = parse(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let socket = bind(socket_addr).map_err(|e| TransportError::Other(e.into()))?;
        let local = socket
            .local_addr()
            .map_err(|e| TransportError::Other(e.into()))?;
        let endpoint = self.endpoint(socket, true).map_err(TransportError::Other)?;
        let large = self.servers.large.clone();
        let limits = (self.handshake_timeout, self.retry_above_handshakes);
        let listener =
            Listener::new(id, endpoint, local, large, limits).map_err(TransportError::Other)?;
        self.listeners.push(listener);
        // Dials now go out from the listening port; the client-only endpoint ends with
        // its last connection.
        self.dialers.remove(&local.is_ipv6());
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.iter_mut().find(|l| l.id == id) {
            Some(l) => {
                l.close();
                true
            }
            None => false,
        }
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Upgrade, TransportError<Error>> {
        let Some((to, _)) = parse(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if to.port() == 0 || to.ip().is_unspecified() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        // A hole punch (DCUtR) dials with the listener role: both peers dial at once
        // from their listening ports, which opens each NAT for the other's packets.
        let endpoint = self
            .dial_endpoint(to, opts.port_use)
            .map_err(TransportError::Other)?;
        let client = self.clients.for_route(to).clone();
        let timeout = self.handshake_timeout;
        Ok(async move {
            // The libp2p TLS specification forbids a server name; an IP sends none.
            let connecting = endpoint.connect_with(client, to, "0.0.0.0")?;
            established(connecting, timeout).await
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Upgrade, Error>> {
        if let Poll::Ready(Some(event)) = self.listeners.poll_next_unpin(cx) {
            return Poll::Ready(event);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// One listening UDP socket.
struct Listener {
    id: ListenerId,
    endpoint: Endpoint,
    local: SocketAddr,
    /// The server configuration for peers on a route with large datagrams.
    large_routes: Arc<quinn::ServerConfig>,
    handshake_timeout: Duration,
    /// Interface changes, when listening on every interface.
    interfaces: Option<if_watch::tokio::IfWatcher>,
    /// The addresses we listen on, for choosing a listener to dial from.
    ips: HashSet<IpAddr>,
    accept: BoxFuture<'static, Option<quinn::Incoming>>,
    events: VecDeque<TransportEvent<Upgrade, Error>>,
    closed: bool,
    /// Inbound handshakes handed to the swarm and not yet over.
    handshaking: Arc<AtomicUsize>,
    /// See [`Config::retry_above_handshakes`].
    retry_above: usize,
    /// Retries sent so far.
    retries: u64,
}

/// One inbound handshake counted while it lasts.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Listener {
    fn new(
        id: ListenerId,
        endpoint: Endpoint,
        local: SocketAddr,
        large_routes: Arc<quinn::ServerConfig>,
        (handshake_timeout, retry_above): (Duration, usize),
    ) -> Result<Self, Error> {
        let mut events = VecDeque::new();
        let mut ips = HashSet::new();
        let interfaces = if local.ip().is_unspecified() {
            Some(if_watch::tokio::IfWatcher::new()?)
        } else {
            ips.insert(local.ip());
            events.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: multiaddr(local),
            });
            None
        };
        Ok(Listener {
            id,
            accept: accept(endpoint.clone()),
            endpoint,
            local,
            large_routes,
            handshake_timeout,
            interfaces,
            ips,
            events,
            closed: false,
            handshaking: Arc::new(AtomicUsize::new(0)),
            retry_above,
            retries: 0,
        })
    }

    /// Whether packets from this socket reach `to`: a socket bound to one address
    /// reaches loopback only from loopback, and other hosts only from elsewhere.
    fn can_reach(&self, to: SocketAddr) -> bool {
        if self.closed || self.local.is_ipv6() != to.is_ipv6() {
            return false;
        }
        let loopback = to.ip().is_loopback();
        self.ips.iter().any(|ip| ip.is_loopback() == loopback)
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.endpoint.close(0u32.into(), b"");
        self.events.push_back(TransportEvent::ListenerClosed {
            listener_id: self.id,
            reason: Ok(()),
        });
    }

    /// An interface's address came or went.
    fn interface_event(
        &mut self,
        event: if_watch::IfEvent,
    ) -> Option<TransportEvent<Upgrade, Error>> {
        let (ip, up) = match event {
            if_watch::IfEvent::Up(net) => (net.addr(), true),
            if_watch::IfEvent::Down(net) => (net.addr(), false),
        };
        if ip.is_ipv6() != self.local.is_ipv6() {
            return None;
        }
        let listen_addr = multiaddr(SocketAddr::new(ip, self.local.port()));
        if up {
            self.ips.insert(ip).then_some(TransportEvent::NewAddress {
                listener_id: self.id,
                listen_addr,
            })
        } else {
            self.ips
                .remove(&ip)
                .then_some(TransportEvent::AddressExpired {
                    listener_id: self.id,
                    listen_addr,
                })
        }
    }

    fn incoming(&self, incoming: quinn::Incoming) -> TransportEvent<Upgrade, Error> {
        let local_ip = incoming.local_ip().unwrap_or(self.local.ip());
        let send_back_addr = multiaddr(incoming.remote_address());
        let timeout = self.handshake_timeout;
        let large = self.large_routes.clone();
        let counted = Handshaking::start(&self.handshaking);
        // Run only for attempts the swarm lets through (a dropped `Incoming` is refused),
        // so a flood of first packets costs no route lookups.
        let upgrade = async move {
            let _counted = counted;
            let connecting = if large_datagram_route(incoming.remote_address()) {
                incoming.accept_with(large)?
            } else {
                incoming.accept()?
            };
            established(connecting, timeout).await
        }
        .boxed();
        TransportEvent::Incoming {
            listener_id: self.id,
            upgrade,
            local_addr: multiaddr(SocketAddr::new(local_ip, self.local.port())),
            send_back_addr,
        }
    }
}

fn accept(endpoint: Endpoint) -> BoxFuture<'static, Option<quinn::Incoming>> {
    async move { endpoint.accept().await }.boxed()
}

impl Stream for Listener {
    type Item = TransportEvent<Upgrade, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.events.pop_front() {
                return Poll::Ready(Some(event));
            }
            if this.closed {
                return Poll::Ready(None);
            }
            if let Some(interfaces) = this.interfaces.as_mut()
                && let Poll::Ready(event) = interfaces.poll_if_event(cx)
            {
                match event {
                    Ok(event) => {
                        if let Some(event) = this.interface_event(event) {
                            this.events.push_back(event);
                        }
                    }
                    Err(error) => this.events.push_back(TransportEvent::ListenerError {
                        listener_id: this.id,
                        error: error.into(),
                    }),
                }
                continue;
            }
            match this.accept.poll_unpin(cx) {
                Poll::Ready(Some(incoming)) => {
                    this.accept = accept(this.endpoint.clone());
                    // Under load, a peer must first prove it receives at its address.
                    if !incoming.remote_address_validated()
                        && incoming.may_retry()
                        && this.handshaking.load(Ordering::Relaxed) >= this.retry_above
                    {
                        if incoming.retry().is_ok() {
                            this.retries += 1;
                        }
                        continue;
                    }
                    return Poll::Ready(Some(this.incoming(incoming)));
                }
                Poll::Ready(None) => {
                    // The endpoint ended under us: report the listener closed.
                    this.close();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::Endpoint as Role;
    use libp2p::core::Transport as _;
    use libp2p::core::muxing::StreamMuxerExt;

    #[test]
    fn quic_addresses_parse_and_others_do_not() {
        let peer = PeerId::random();
        let with_peer: Multiaddr = format!("/ip4/10.0.0.2/udp/4001/quic-v1/p2p/{peer}")
            .parse()
            .expect("valid address");
        assert_eq!(
            parse(&with_peer),
            Some(("10.0.0.2:4001".parse().expect("socket"), Some(peer)))
        );
        let v6: Multiaddr = "/ip6/::1/udp/9/quic-v1".parse().expect("valid address");
        assert_eq!(parse(&v6), Some(("[::1]:9".parse().expect("socket"), None)));
        for other in [
            "/ip4/10.0.0.2/tcp/4001",
            "/ip4/10.0.0.2/udp/4001/quic",
            "/ip4/10.0.0.2/udp/4001/quic-v1/webtransport",
            "/dns4/example.com/udp/4001/quic-v1",
        ] {
            let addr: Multiaddr = other.parse().expect("valid address");
            assert_eq!(parse(&addr), None, "{other}");
        }
    }

    #[test]
    fn datagrams_are_capped_at_a_jumbo_frame_off_loopback_only() {
        let at = |a: &str| payload_cap(a.parse().expect("socket address"));
        assert_eq!(at("127.0.0.1:4001"), None);
        assert_eq!(at("[::1]:4001"), None);
        assert_eq!(at("0.0.0.0:4001"), Some(UDP_PAYLOAD_OFF_LOOPBACK_MAX));
        assert_eq!(at("10.77.0.21:4001"), Some(UDP_PAYLOAD_OFF_LOOPBACK_MAX));
        assert_eq!(at("[::]:4001"), Some(UDP_PAYLOAD_OFF_LOOPBACK_MAX));
        assert!(UDP_PAYLOAD_OFF_LOOPBACK_MAX < Config::default().datagram_bytes_max);
    }

    async fn next_event(t: &mut QuicTransport) -> TransportEvent<Upgrade, Error> {
        futures::future::poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
    }

    /// A transport listening on loopback, and its address.
    async fn listening(key: &identity::Keypair) -> (QuicTransport, Multiaddr) {
        let mut t = QuicTransport::new(key, Config::default()).expect("config");
        t.listen_on(
            ListenerId::next(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"),
        )
        .expect("listen");
        match next_event(&mut t).await {
            TransportEvent::NewAddress { listen_addr, .. } => (t, listen_addr),
            _ => panic!("the listener reported no address"),
        }
    }

    fn dial(t: &mut QuicTransport, addr: Multiaddr) -> Upgrade {
        let opts = DialOpts {
            role: Role::Dialer,
            port_use: PortUse::New,
        };
        t.dial(addr, opts).expect("dial")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_load_a_peer_proves_its_address_with_a_retry_and_still_connects() {
        let (ka, kb) = (keypair(), keypair());
        // Any handshake in progress counts as load: every unvalidated peer gets a Retry.
        let config = Config {
            retry_above_handshakes: 0,
            ..Config::default()
        };
        let mut b = QuicTransport::new(&kb, config).expect("config");
        b.listen_on(
            ListenerId::next(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("addr"),
        )
        .expect("listen");
        let TransportEvent::NewAddress { listen_addr, .. } = next_event(&mut b).await else {
            panic!("the listener reported no address");
        };
        let mut a = QuicTransport::new(&ka, Config::default()).expect("config");
        let dialing = dial(&mut a, listen_addr);
        let server = tokio::spawn(async move {
            let TransportEvent::Incoming { upgrade, .. } = next_event(&mut b).await else {
                panic!("no incoming connection");
            };
            let (peer, _conn) = upgrade.await.expect("inbound handshake");
            let retries: u64 = b.listeners.iter().map(|l| l.retries).sum();
            (peer, retries)
        });
        let (peer, _conn) = dialing.await.expect("outbound handshake after the retry");
        assert_eq!(peer, kb.public().to_peer_id());
        let (inbound, retries) = server.await.expect("server");
        assert_eq!(inbound, ka.public().to_peer_id());
        // A client may send its Initial again before the Retry reaches it; each copy from
        // an unproven address is answered with one, and the client follows the first.
        assert!(retries >= 1, "the first Initial was answered with a Retry");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loopback_stream_grows_its_datagrams_past_ethernet_size() {
        let (ka, kb) = (keypair(), keypair());
        let (mut b, addr) = listening(&kb).await;
        let mut a = QuicTransport::new(&ka, Config::default()).expect("config");
        let dialing = dial(&mut a, addr);
        let server = tokio::spawn(async move {
            let TransportEvent::Incoming { upgrade, .. } = next_event(&mut b).await else {
                panic!("no incoming connection");
            };
            let (peer, mut conn) = upgrade.await.expect("inbound handshake");
            let mut stream = futures::future::poll_fn(|cx| conn.poll_inbound_unpin(cx))
                .await
                .expect("inbound stream");
            let mut received = Vec::new();
            stream.read_to_end(&mut received).await.expect("read");
            stream.write_all(b"ok").await.expect("answer");
            stream.close().await.expect("close");
            (peer, received.len(), conn)
        });
        let (peer, mut conn) = dialing.await.expect("outbound handshake");
        assert_eq!(peer, kb.public().to_peer_id());
        let mut stream = futures::future::poll_fn(|cx| conn.poll_outbound_unpin(cx))
            .await
            .expect("open");
        let chunk = vec![7u8; 256 << 10];
        for _ in 0..64 {
            stream.write_all(&chunk).await.expect("write");
        }
        stream.close().await.expect("finish");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("answer");
        let path = conn.stats().path;
        let (inbound_peer, received, _conn) = server.await.expect("server");
        assert_eq!(inbound_peer, ka.public().to_peer_id());
        assert_eq!((received, answer.as_slice()), (16 << 20, &b"ok"[..]));
        // Loopback carries 64 KiB datagrams; 1,452 bytes would mean discovery stopped.
        assert!(path.current_mtu > 1500, "{path:?}");
        assert_eq!(path.black_holes_detected, 0, "{path:?}");
    }

    #[tokio::test]
    async fn garbage_datagrams_leave_the_listener_serving() {
        let (ka, kb) = (keypair(), keypair());
        let (mut b, addr) = listening(&kb).await;
        let (to, _) = parse(&addr).expect("quic address");
        let junk = UdpSocket::bind("127.0.0.1:0").expect("socket");
        for len in [0usize, 1, 20, 1200, 1500, 65_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
            junk.send_to(&bytes, to).expect("send");
        }
        let mut a = QuicTransport::new(&ka, Config::default()).expect("config");
        let dialing = dial(&mut a, addr);
        let accepting = async {
            loop {
                if let TransportEvent::Incoming { upgrade, .. } = next_event(&mut b).await
                    && let Ok((peer, _)) = upgrade.await
                {
                    return peer;
                }
            }
        };
        let (dialed, accepted) = tokio::join!(dialing, accepting);
        assert_eq!(dialed.expect("handshake").0, kb.public().to_peer_id());
        assert_eq!(accepted, ka.public().to_peer_id());
    }

    #[test]
    fn loopback_routes_take_large_datagrams() {
        assert!(large_datagram_route(
            "127.0.0.1:4001".parse().expect("socket")
        ));
        assert!(large_datagram_route("[::1]:4001".parse().expect("socket")));
    }

    fn keypair() -> identity::Keypair {
        identity::Keypair::generate_ed25519()
    }
}
