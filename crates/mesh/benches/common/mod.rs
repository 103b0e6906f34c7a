//! What the mesh benchmarks share.

use peergrid_core::Keypair;
use peergrid_mesh::{Config, Mesh};

/// Two fresh peers with `config`, keyed from `seed` and `seed + 1`.
pub async fn pair_with(seed: u8, config: Config) -> (Mesh, Mesh) {
    let a = Mesh::start(&Keypair::from_seed([seed; 32]), config.clone())
        .await
        .expect("start");
    let b = Mesh::start(&Keypair::from_seed([seed + 1; 32]), config)
        .await
        .expect("start");
    (a, b)
}
