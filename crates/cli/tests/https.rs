//! `peergrid validator status` against `https://` validators: it trusts the certificate
//! authorities of `--ledger-ca` as every other command does, and without them says that
//! the certificate was refused.

mod common;

use std::sync::Arc;

use peergrid_client::types::api::Supply;
use peergrid_client::types::params::Params;
use peergrid_client::{AtHeight, FinalizedBlock, Status};
use peergrid_core::{Amount, Hash};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The height every stand-in has finalized, and its state root there.
const HEIGHT: u64 = 7;
const ROOT: Hash = Hash([3; 32]);

fn status() -> AtHeight<Status> {
    AtHeight {
        height: HEIGHT,
        root: ROOT,
        data: Status {
            chain_id: "https-test".into(),
            genesis_hash: Hash([2; 32]),
            time_ms: 1_700_000_000_000,
            last_block_age_ms: 100,
            finalizing: true,
            validators: Vec::new(),
            epoch: 0,
            epoch_blocks: 100,
            validator_set: None,
            pending_validators: None,
            next_epoch_height: 100,
            supply: Supply {
                genesis: Amount(0),
                minted: Amount(0),
                burned: Amount(0),
            },
            mempool: 0,
            params: Params::devnet(),
            mesh_bootstrap: Vec::new(),
            council: None,
            ledger_rules: 1,
        },
        proof: None,
    }
}

/// The answer to a request whose first line is `line`.
fn answer(line: &str) -> String {
    let path = line.split(' ').nth(1).unwrap_or("");
    let body = if path.starts_with("/v1/status") {
        serde_json::to_string(&status()).expect("a status as JSON")
    } else if path.starts_with(&format!("/v1/blocks/{HEIGHT}")) {
        serde_json::to_string(&FinalizedBlock {
            height: HEIGHT,
            digest: format!("{HEIGHT:064x}"),
            time_ms: 1_700_000_000_000,
            root: ROOT,
            txs: Vec::new(),
            end_events: Vec::new(),
        })
        .expect("a block as JSON")
    } else {
        let body = r#"{"error":"not_found","message":"no such route"}"#;
        return format!(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A validator stand-in on a free loopback port, over TLS with a self-signed certificate;
/// its URL and that certificate as PEM.
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
                let text = String::from_utf8_lossy(&request);
                let line = text.lines().next().unwrap_or("");
                let _ = tls.write_all(answer(line).as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), pem)
}

/// `peergrid --json validator status --ledger <urls>` with `extra` arguments: whether it
/// succeeded, its JSON and its stderr.
fn validator_status(
    home: &std::path::Path,
    urls: &[String],
    extra: &[&str],
) -> (bool, Value, String) {
    let out = common::peergrid(home)
        .env_remove("PEERGRID_LEDGER_CA")
        .args(["--json", "validator", "status", "--ledger", &urls.join(",")])
        .args(extra)
        .output()
        .expect("run peergrid");
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validator_status_trusts_the_ledger_ca_for_https_validators() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let (a, pem_a) = runtime.block_on(https_validator());
    let (b, pem_b) = runtime.block_on(https_validator());
    let urls = vec![a, b];
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, format!("{pem_a}{pem_b}")).expect("write the CA file");
    let ca = ca.to_str().expect("a UTF-8 path");

    let (ok, health, stderr) = validator_status(&home, &urls, &["--ledger-ca", ca]);
    assert!(
        ok,
        "validator status failed with --ledger-ca: {stderr}\n{health}"
    );
    assert_eq!(health["finalizing"], true, "{health}");
    for v in health["validators"].as_array().expect("validators") {
        assert_eq!(v["height"], HEIGHT, "{v}");
        assert_eq!(v["finalizing"], true, "{v}");
    }
    // The block at the common height was read over TLS too, to compare the roots.
    assert_eq!(health["agreement"]["agree"], true, "{health}");
    assert_eq!(health["agreement"]["height"], HEIGHT, "{health}");

    // Without it: both are down, and each says its certificate was refused.
    let (ok, health, stderr) = validator_status(&home, &urls, &[]);
    assert!(
        !ok,
        "validator status passed without trusting the certificates: {health}"
    );
    assert!(stderr.contains("not finalizing"), "{stderr}");
    for v in health["validators"].as_array().expect("validators") {
        let error = v["error"].as_str().unwrap_or_default().to_lowercase();
        assert!(error.contains("certificate"), "{v}");
    }

    // A CA file that holds no certificate is refused by name.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let (ok, _, stderr) = validator_status(
        &home,
        &urls,
        &["--ledger-ca", junk.to_str().expect("utf-8")],
    );
    assert!(!ok);
    assert!(stderr.contains("--ledger-ca"), "{stderr}");
}
