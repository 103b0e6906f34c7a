//! What the mesh benchmarks share.

use peergrid_core::Keypair;
use peergrid_mesh::{Config, Mesh};

/// Two fresh peers listening on loopback (QUIC and TCP), keyed from `seed` and `seed + 1`.
pub async fn pair(seed: u8) -> (Mesh, Mesh) {
    let a = Mesh::start(&Keypair::from_seed([seed; 32]), Config::loopback())
        .await
        .expect("start");
    let b = Mesh::start(&Keypair::from_seed([seed + 1; 32]), Config::loopback())
        .await
        .expect("start");
    (a, b)
}
