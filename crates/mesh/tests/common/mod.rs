//! Helpers shared by the mesh tests.
#![allow(dead_code)]

pub mod ns;

use std::sync::atomic::{AtomicU8, Ordering};

use peergrid_core::Keypair;
use peergrid_mesh::{Config, Mesh, Multiaddr};

/// Log to the test output when RUST_LOG is set.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A distinct key per call within a test binary.
pub fn key() -> Keypair {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    Keypair::from_seed([NEXT.fetch_add(1, Ordering::Relaxed); 32])
}

/// A peer listening on loopback only.
pub async fn peer() -> Mesh {
    peer_with(Config::loopback()).await
}

/// A peer with `config`.
pub async fn peer_with(config: Config) -> Mesh {
    init_logging();
    Mesh::start(&key(), config).await.expect("mesh starts")
}

/// The peer's listen address of one transport ("quic-v1" or "tcp").
pub async fn addr(mesh: &Mesh, transport: &str) -> Multiaddr {
    mesh.listen_addrs()
        .await
        .expect("status")
        .into_iter()
        .find(|a| {
            a.iter().any(|p| match (transport, p) {
                ("quic-v1", peergrid_mesh::multiaddr::Protocol::QuicV1) => true,
                ("tcp", peergrid_mesh::multiaddr::Protocol::Tcp(_)) => !a
                    .iter()
                    .any(|p| matches!(p, peergrid_mesh::multiaddr::Protocol::P2pCircuit)),
                _ => false,
            })
        })
        .expect("listening on that transport")
}
