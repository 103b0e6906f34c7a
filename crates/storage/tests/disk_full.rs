//! The node's shard store on a disk that fills: a real tmpfs of a few MiB, a real mesh
//! connection on loopback. A full disk refuses new shards with its own answer and the
//! numbers, leaves no partial file, keeps serving and proving what it holds, and takes
//! shards again once space is freed. Needs root to mount the tmpfs; skips elsewhere with
//! a printed reason and fails under CI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::AsyncWriteExt;
use peergrid_core::Keypair;
use peergrid_core::disklab::SmallDisk;
use peergrid_core::fs::DiskReserve;
use peergrid_mesh::{Config, Mesh};
use peergrid_storage::format::{Pointer, SignedPointer};
use peergrid_storage::shard::shard_id;
use peergrid_storage::store::{self, ContractAccess, ShardStore};
use peergrid_storage::wire::{self, PutOutcome, Request, Response, WireError};

/// The chain id the test's node serves, which pointers are signed for.
const GRID: &str = "peergrid-test";

/// The reserve the store keeps in these tests: the default on an 8 MiB disk would be
/// 80 KiB, too close to a page count to tell "below the reserve" from "nothing free".
const RESERVE_BYTES: u64 = 256 << 10;

struct Rig {
    disk: SmallDisk,
    node: Mesh,
    store: Arc<ShardStore>,
    owner: Keypair,
    owner_mesh: Mesh,
}

async fn rig(disk: SmallDisk) -> Rig {
    let node_key = Keypair::generate().expect("key");
    let node = Mesh::start(&node_key, Config::loopback())
        .await
        .expect("node");
    let store = Arc::new(
        ShardStore::new(disk.path().join("pointers"), GRID)
            .expect("store")
            .with_disk_reserve(DiskReserve::bytes(RESERVE_BYTES)),
    );
    store::serve(&node, store.clone()).expect("serve");
    let owner = Keypair::generate().expect("key");
    let owner_mesh = Mesh::start(&owner, Config::loopback())
        .await
        .expect("owner");
    let addrs = node.listen_addrs().await.expect("addrs");
    owner_mesh
        .connect(node.peer_id(), addrs)
        .await
        .expect("connect");
    let r = Rig {
        disk,
        node,
        store,
        owner,
        owner_mesh,
    };
    std::fs::create_dir_all(r.contract_dir()).expect("contract folder");
    r.store.set_contracts(HashMap::from([(
        1,
        ContractAccess {
            owner: r.owner.account(),
            // The contract's quota is never what stops these puts: the disk is.
            quota: 1 << 30,
            paused: false,
            dir: r.contract_dir(),
        },
    )]));
    r
}

impl Rig {
    fn contract_dir(&self) -> PathBuf {
        self.disk.path().join("workloads/1")
    }

    /// Every file in the contract's shard folder, temporary ones included.
    fn files(&self) -> Vec<String> {
        files_in(&self.contract_dir().join("shards"))
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn assert_disk_full(result: Result<PutOutcome, WireError>, disk: &Path) -> String {
    match result {
        Err(e @ WireError::DiskFull { .. }) => {
            assert!(e.is_disk_full() && !e.is_unreachable());
            let WireError::DiskFull { reason, .. } = e else {
                unreachable!()
            };
            assert!(
                reason.starts_with("node disk full: ")
                    && reason.contains(&disk.display().to_string())
                    && reason.contains("reserve 256.0 KiB")
                    && reason.ends_with("the node refuses new data until space is freed"),
                "{reason}"
            );
            reason
        }
        other => panic!("expected the node to say its disk is full, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_shards_serves_the_old_ones_and_recovers_when_freed() {
    let Some(disk) = SmallDisk::mount_or_skip(8 << 20) else {
        return;
    };
    let r = rig(disk).await;
    let peer = r.node.peer_id();
    let old: Vec<Vec<u8>> = (0..2).map(|i| bytes(300_000, i)).collect();
    for b in &old {
        let put = wire::put(&r.owner_mesh, peer, 1, shard_id(b), b).await;
        assert_eq!(put.expect("room at first"), PutOutcome::Stored);
    }

    // Another program fills the disk to below the node's reserve.
    let filler = r.disk.fill("filler", 128 << 10).expect("fill");
    let new = bytes(1 << 20, 9);
    let reason = assert_disk_full(
        wire::put(&r.owner_mesh, peer, 1, shard_id(&new), &new).await,
        r.disk.path(),
    );
    assert!(reason.contains("need 1.0 MiB"), "{reason}");
    // Even a shard far below the free space is refused: the reserve is the node's.
    let small = bytes(4096, 3);
    assert_disk_full(
        wire::put(&r.owner_mesh, peer, 1, shard_id(&small), &small).await,
        r.disk.path(),
    );
    let held: Vec<String> = old.iter().map(|b| shard_id(b).to_string()).collect();
    let mut expected = held.clone();
    expected.sort();
    assert_eq!(r.files(), expected, "no temporary file, no partial shard");
    assert_eq!(
        wire::has(&r.owner_mesh, peer, vec![shard_id(&old[0]), shard_id(&new)])
            .await
            .expect("has"),
        vec![true, false]
    );
    // An owner's pointer is written for someone else too: refused the same way.
    let pointer = SignedPointer::sign(
        &r.owner,
        GRID,
        Pointer {
            owner: r.owner.account(),
            seq: 1,
            index: peergrid_core::Hash::of(b"index"),
        },
    );
    match wire::put_pointer(&r.owner_mesh, peer, pointer.clone()).await {
        Err(WireError::DiskFull { reason, .. }) => {
            assert!(reason.starts_with("node disk full: "), "{reason}")
        }
        other => panic!("expected a full disk, got {other:?}"),
    }

    // What the node holds is still read, checked and proved while it is full.
    for b in &old {
        let got = wire::get(&r.owner_mesh, peer, shard_id(b), 1 << 20)
            .await
            .expect("a full node serves its shards");
        assert_eq!(&got, b);
        assert!(
            wire::audit(&r.owner_mesh, peer, shard_id(b), 3)
                .await
                .expect("audit"),
            "a full node proves its shards"
        );
    }
    let stats = r.store.stats();
    assert_eq!((stats.full, stats.corrupt, stats.puts), (3, 0, 2));

    // Space freed: the same shard is taken and reads back.
    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, shard_id(&new), &new)
            .await
            .expect("room again"),
        PutOutcome::Stored
    );
    assert_eq!(
        wire::get(&r.owner_mesh, peer, shard_id(&new), 2 << 20)
            .await
            .expect("get"),
        new
    );
    wire::put_pointer(&r.owner_mesh, peer, pointer)
        .await
        .expect("the pointer is kept once there is room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_during_a_put_keeps_nothing_of_it_and_says_why() {
    let Some(disk) = SmallDisk::mount_or_skip(8 << 20) else {
        return;
    };
    let r = rig(disk).await;
    let peer = r.node.peer_id();
    let old = bytes(500_000, 1);
    wire::put(&r.owner_mesh, peer, 1, shard_id(&old), &old)
        .await
        .expect("room at first");

    // The node checks the disk and says Ready; then another program takes every byte
    // left before the shard's bytes arrive: the write itself meets ENOSPC.
    let new = bytes(2 << 20, 7);
    let mut stream = r
        .owner_mesh
        .open_stream(peer, wire::SHARD_PROTOCOL)
        .await
        .expect("stream");
    wire::write_request(
        &mut stream,
        &Request::Put {
            contract: 1,
            id: shard_id(&new),
            len: new.len() as u64,
        },
    )
    .await
    .expect("request");
    assert_eq!(
        wire::read_response(&mut stream).await.expect("answer"),
        Response::Ready,
        "the disk has room when the put is asked"
    );
    let filler = r.disk.fill("filler", 0).expect("fill");
    wire::write_data(&mut stream, &new)
        .await
        .expect("the node reads the whole shard even when it cannot keep it");
    match wire::read_response(&mut stream).await.expect("answer") {
        Response::Full(reason) => assert!(
            reason.starts_with("node disk full: ") && reason.contains("need 2.0 MiB"),
            "{reason}"
        ),
        other => panic!("expected Full, got {other:?}"),
    }
    let _ = stream.close().await;
    assert_eq!(
        r.files(),
        vec![shard_id(&old).to_string()],
        "the partial shard is removed, the old one stays"
    );
    assert_eq!(
        wire::get(&r.owner_mesh, peer, shard_id(&old), 1 << 20)
            .await
            .expect("the old shard reads back"),
        old
    );
    assert_eq!(
        wire::has(&r.owner_mesh, peer, vec![shard_id(&new)])
            .await
            .expect("has"),
        vec![false]
    );
    let usage = wire::usage(&r.owner_mesh, peer, vec![1])
        .await
        .expect("usage");
    assert_eq!(
        usage[0].used,
        old.len() as u64,
        "the failed put's bytes are not counted"
    );

    std::fs::remove_file(filler).expect("free the disk");
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, shard_id(&new), &new)
            .await
            .expect("room again"),
        PutOutcome::Stored
    );
    assert_eq!(
        wire::get(&r.owner_mesh, peer, shard_id(&new), 4 << 20)
            .await
            .expect("get"),
        new
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_under_way_cannot_share_the_last_free_bytes() {
    let Some(disk) = SmallDisk::mount_or_skip(8 << 20) else {
        return;
    };
    let r = rig(disk).await;
    let peer = r.node.peer_id();
    // Room for one of these two, not both: whichever asks second is told the disk is full.
    r.disk.fill("filler", 3 << 20).expect("fill");
    let a = bytes(2 << 20, 1);
    let b = bytes(2 << 20, 2);
    let (ra, rb) = tokio::join!(
        wire::put(&r.owner_mesh, peer, 1, shard_id(&a), &a),
        wire::put(&r.owner_mesh, peer, 1, shard_id(&b), &b),
    );
    let stored = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Ok(PutOutcome::Stored)))
        .count();
    let full = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(WireError::DiskFull { .. })))
        .count();
    assert_eq!((stored, full), (1, 1), "{ra:?} {rb:?}");
    assert_eq!(r.files().len(), 1, "one whole shard, nothing else");
}
