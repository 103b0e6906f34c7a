//! TLS 1.3 for TCP connections ([`crate::tcp`]), with AES-GCM preferred.
//!
//! libp2p's Noise is fixed to ChaCha20-Poly1305, and libp2p-tls lists ChaCha20 first
//! (rustls then follows the client's order). On a CPU with AES instructions AES-GCM
//! seals and opens several times faster, which is what lets one TCP stream come near
//! raw TCP (BENCHMARKS.md). The handshake is the libp2p TLS handshake
//! (`/tls/1.0.0`, ALPN `libp2p`, a self-signed certificate carrying the peer's
//! signed public key, built and checked by libp2p-tls), so any libp2p peer that
//! speaks TLS connects. After the handshake our own record layer moves the data
//! ([`session`]).

mod session;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p::{PeerId, identity};
use libp2p_tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::{self as provider, cipher_suite};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The protocol name multistream-select negotiates.
pub const PROTOCOL: &str = "/tls/1.0.0";
/// The ALPN value the libp2p TLS specification requires.
const ALPN: &[u8] = b"libp2p";

pub use session::TlsStream;

/// Why a TLS upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The handshake failed: the peer's certificate, its signature, or the connection.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The handshake ended without exactly one peer certificate.
    #[error("the peer did not present exactly one certificate")]
    NoCertificate,
    /// The peer's certificate is not a libp2p certificate.
    #[error("the peer's certificate is not a valid libp2p certificate: {0}")]
    BadCertificate(String),
}

/// Why TLS could not be set up for our key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The certificate for our key could not be made.
    #[error("cannot make a TLS certificate for this key: {0}")]
    Certificate(#[from] certificate::GenError),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Rustls(rustls::Error),
}

/// The TLS upgrade for one key.
#[derive(Clone)]
pub struct Config {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl Config {
    /// Certificates for `key`.
    pub fn new(key: &identity::Keypair) -> Result<Self, ConfigError> {
        let (mut client, mut server) = rustls_configs(key)?;
        // Our record layer takes the keys after the handshake (session.rs).
        client.enable_secret_extraction = true;
        server.enable_secret_extraction = true;
        Ok(Self {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }
}

/// The libp2p TLS handshake's client and server configurations for `key`, shared by
/// TCP and QUIC ([`crate::quic`]).
pub(crate) fn rustls_configs(
    key: &identity::Keypair,
) -> Result<(rustls::ClientConfig, rustls::ServerConfig), ConfigError> {
    rustls_configs_with(key, crypto_provider())
}

/// [`rustls_configs`] with the cipher suites of `provider`.
fn rustls_configs_with(
    key: &identity::Keypair,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<(rustls::ClientConfig, rustls::ServerConfig), ConfigError> {
    let (cert, private_key) = certificate::generate(key)?;
    // Built by hand: rustls' own constructors parse the certificate with webpki,
    // which refuses libp2p's critical extension.
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .map_err(ConfigError::Rustls)?;
    let ours = Arc::new(SingleCertAndKey::from(CertifiedKey::new(
        vec![cert],
        signing_key,
    )));
    let verifier = Arc::new(PeerCertificate);
    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(ours.clone());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ConfigError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(ours);
    client.alpn_protocols = vec![ALPN.to_vec()];
    server.alpn_protocols = vec![ALPN.to_vec()];
    // Peers reconnect rarely and cheaply; tickets would only be state to keep.
    client.resumption = rustls::client::Resumption::disabled();
    server.send_tls13_tickets = 0;
    Ok((client, server))
}

/// aws-lc's suites with AES-GCM first: both ends have AES instructions on any server
/// CPU of the last decade; ChaCha20 stays for peers that prefer it.
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    provider_with(vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ])
}

fn provider_with(suites: Vec<rustls::SupportedCipherSuite>) -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = provider::default_provider();
    p.cipher_suites = suites;
    Arc::new(p)
}

/// A rustls server for `key` that speaks only `suite`: a foreign peer choosing it.
#[cfg(test)]
pub(crate) fn rustls_server_with_only(
    key: &identity::Keypair,
    suite: rustls::SupportedCipherSuite,
) -> Arc<rustls::ServerConfig> {
    let (_, server) = rustls_configs_with(key, provider_with(vec![suite])).expect("configs");
    Arc::new(server)
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let (stream, certificates) = session::accept(socket, self.server)
                .await
                .map_err(UpgradeError::Handshake)?;
            Ok((peer_of(&certificates)?, stream))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, TlsStream<C>);
    type Error = UpgradeError;
    type Future = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // The specification forbids a server name: an unspecified IP sends none.
            let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into());
            let (stream, certificates) = session::connect(socket, self.client, name)
                .await
                .map_err(UpgradeError::Handshake)?;
            Ok((peer_of(&certificates)?, stream))
        }
        .boxed()
    }
}

/// The peer id in the one certificate the verifier already accepted.
pub(crate) fn peer_of(certs: &[CertificateDer<'static>]) -> Result<PeerId, UpgradeError> {
    let [cert] = certs else {
        return Err(UpgradeError::NoCertificate);
    };
    certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| UpgradeError::BadCertificate(e.to_string()))
}

/// Accepts exactly one self-signed libp2p certificate, and handshake signatures made
/// with its key. Which peer it names is checked by the swarm against the dialed id.
#[derive(Debug)]
struct PeerCertificate;

impl PeerCertificate {
    fn check(
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p peer presents exactly one certificate".into(),
            ));
        }
        certificate::parse(end_entity)
            .map(|_| ())
            .map_err(cert_error)
    }

    fn signature(
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)
            .map_err(cert_error)?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|e| rustls::Error::General(format!("bad handshake signature: {e}")))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    /// The schemes libp2p-tls can check, elliptic curves first as the specification asks.
    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
        ]
    }
}

fn cert_error(e: certificate::ParseError) -> rustls::Error {
    rustls::Error::General(format!("not a valid libp2p certificate: {e}"))
}

/// Only TLS 1.3 is configured, so rustls never asks for a TLS 1.2 signature check.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General("TLS 1.2 is not allowed".into()))
}

impl ServerCertVerifier for PeerCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

#[cfg(test)]
mod tests {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::tcp::tokio::TcpStream;

    use super::*;

    /// Both ends of one real TCP connection after the TLS upgrade, as (dialer, listener).
    async fn upgraded(
        dialer: &identity::Keypair,
        listener: &identity::Keypair,
    ) -> (
        (PeerId, TlsStream<TcpStream>),
        (PeerId, TlsStream<TcpStream>),
    ) {
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let server = Config::new(listener).expect("config");
        let accepted = tokio::spawn(async move {
            let (s, _) = socket.accept().await.expect("accept");
            server.upgrade_inbound(TcpStream(s), PROTOCOL).await
        });
        let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let client = Config::new(dialer).expect("config");
        let dialed = client
            .upgrade_outbound(TcpStream(s), PROTOCOL)
            .await
            .expect("dialer upgrades");
        let accepted = accepted.await.expect("task").expect("listener upgrades");
        (dialed, accepted)
    }

    #[tokio::test]
    async fn both_ends_learn_each_others_peer_id_and_agree_on_aes_gcm() {
        let (a, b) = (
            identity::Keypair::generate_ed25519(),
            identity::Keypair::generate_ed25519(),
        );
        let ((b_seen, mut to_b), (a_seen, mut to_a)) = upgraded(&a, &b).await;
        assert_eq!(b_seen, b.public().to_peer_id());
        assert_eq!(a_seen, a.public().to_peer_id());
        for end in [&to_a, &to_b] {
            assert_eq!(
                end.cipher_suite(),
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            );
        }

        // Many records and several socket reads, in both directions.
        let data: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            to_b.write_all(&sent).await.expect("write");
            to_b.flush().await.expect("flush");
            let mut echo = vec![0; sent.len()];
            to_b.read_exact(&mut echo).await.expect("read echo");
            echo
        });
        let mut got = vec![0; data.len()];
        to_a.read_exact(&mut got).await.expect("read");
        assert!(got == data, "the listener read other bytes than were sent");
        to_a.write_all(&got).await.expect("echo");
        to_a.flush().await.expect("flush");
        assert!(writer.await.expect("task") == data, "the echo differs");
    }
}
