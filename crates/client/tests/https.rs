//! An `https://` validator: reached through TLS when its certificate authority is trusted,
//! refused with the reason when it is not.

use std::sync::Arc;

use peergrid_client::{AccountView, AtHeight, Client, ClientError};
use peergrid_core::{AccountId, Amount, Hash, Keypair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The one account the stand-in validator knows, the same in every call.
fn account() -> AccountId {
    Keypair::from_seed([7; 32]).account()
}

/// A validator stand-in on a free loopback port that answers every request over TLS with
/// one status document; its URL and its certificate as PEM.
async fn https_validator() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let pem = cert.cert.pem();
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a server configuration");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to answer.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = serde_json::to_string(&AtHeight {
                    height: 7,
                    root: Hash([0; 32]),
                    data: AccountView {
                        account: account(),
                        balance: Amount(5),
                        nonce: 3,
                        node: None,
                    },
                    proof: None,
                })
                .expect("an account as JSON");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), pem)
}

#[tokio::test]
async fn an_https_validator_is_reached_when_its_authority_is_trusted() {
    let (url, pem) = https_validator().await;

    let trusting = Client::new(vec![url.clone()])
        .with_root_certificates(pem.as_bytes())
        .expect("a PEM certificate is accepted");
    let shown = trusting
        .account(&account())
        .await
        .expect("the account over TLS");
    assert_eq!((shown.height, shown.data.nonce), (7, 3));

    // The same validator, its certificate not trusted: an error that names the certificate.
    let wary = Client::new(vec![url]);
    match wary.account(&account()).await {
        Err(ClientError::Unreachable { last, .. }) => {
            assert!(last.to_lowercase().contains("certificate"), "{last}");
        }
        other => panic!("an untrusted certificate was not refused: {other:?}"),
    }

    let garbage = Client::new(Vec::new()).with_root_certificates(b"not a certificate");
    assert!(garbage.is_err(), "garbage accepted as a certificate");
}
