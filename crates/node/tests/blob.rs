//! The blob server under a peer that holds requests open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use peergrid_core::Keypair;
use peergrid_mesh::{Config, Mesh};
use peergrid_node::blob::{self, BLOB_PROTOCOL};

async fn peer(seed: u8) -> Mesh {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Mesh::start(&Keypair::from_seed([seed; 32]), Config::loopback())
        .await
        .expect("mesh starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stalls_its_requests_holds_only_its_share_and_others_are_served() {
    let server = peer(1).await;
    let bytes = Arc::new(vec![7u8; 1 << 20]);
    let hash = *blake3::hash(&bytes).as_bytes();
    let _serving =
        blob::serve(&server, HashMap::from([(hash, bytes.clone())]), None).expect("serves");
    let addrs = server.listen_addrs().await.expect("addresses");
    let (hog, honest) = (peer(2).await, peer(3).await);
    for p in [&hog, &honest] {
        p.connect(server.peer_id(), addrs.clone())
            .await
            .expect("connects");
    }

    // As many requests as the server answers at once, each stalled one byte short of its
    // hash: the server holds each until its request deadline. Those beyond the hog's share
    // are refused (reset), so writing on them may fail: that is the point.
    let mut stalled = Vec::new();
    for _ in 0..16 {
        let Ok(mut s) = hog.open_stream(server.peer_id(), BLOB_PROTOCOL).await else {
            continue;
        };
        if s.write_all(&hash[..31]).await.is_ok() && s.flush().await.is_ok() {
            stalled.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let fetched = tokio::time::timeout(
        Duration::from_secs(30),
        blob::fetch(&honest, server.peer_id(), hash),
    )
    .await
    .expect("the honest fetch does not hang")
    .expect("the honest peer gets the blob while the hog stalls");
    assert_eq!(fetched.len(), bytes.len());
    drop(stalled);
}
