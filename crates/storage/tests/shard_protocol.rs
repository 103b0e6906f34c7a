//! The node's shard store over a real mesh connection on loopback: what an owner, a
//! stranger and a reader may do, quotas, grace, corruption on disk, and crash leftovers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use peergrid_core::{Hash, Keypair};
use peergrid_mesh::{Config, Mesh};
use peergrid_storage::format::{Pointer, SignedPointer};
use peergrid_storage::shard::shard_id;
use peergrid_storage::store::{self, ContractAccess, GRACE_REFUSAL, ShardStore, StreamLimits};
use peergrid_storage::wire::{self, PutOutcome, Request, Response, WireError};

/// The chain id the test's node serves, which pointers are signed for.
const GRID: &str = "peergrid-test";

struct Rig {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    node: Mesh,
    store: Arc<ShardStore>,
    owner: Keypair,
    owner_mesh: Mesh,
}

async fn rig() -> Rig {
    rig_with(StreamLimits::default()).await
}

async fn rig_with(limits: StreamLimits) -> Rig {
    rig_on(limits, Config::loopback()).await
}

/// A rig whose node's mesh runs with `config`.
async fn rig_on(limits: StreamLimits, config: Config) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_key = Keypair::generate().expect("key");
    let node = Mesh::start(&node_key, config).await.expect("node");
    let store = Arc::new(ShardStore::new(dir.path().join("pointers"), GRID).expect("store"));
    store::serve_with(&node, store.clone(), limits).expect("serve");
    let owner = Keypair::generate().expect("key");
    let owner_mesh = Mesh::start(&owner, Config::loopback())
        .await
        .expect("owner");
    let addrs = node.listen_addrs().await.expect("addrs");
    owner_mesh
        .connect(node.peer_id(), addrs)
        .await
        .expect("connect");
    let path = dir.path().to_path_buf();
    Rig {
        _dir: dir,
        dir: path,
        node,
        store,
        owner,
        owner_mesh,
    }
}

impl Rig {
    /// Another account's mesh peer, connected to the node.
    async fn stranger(&self) -> (Keypair, Mesh) {
        let key = Keypair::generate().expect("key");
        let mesh = Mesh::start(&key, Config::loopback())
            .await
            .expect("stranger");
        mesh.connect(
            self.node.peer_id(),
            self.node.listen_addrs().await.expect("addrs"),
        )
        .await
        .expect("connect");
        (key, mesh)
    }

    /// The store serving contract 1 of the owner and contract 2 of a stranger (1 MiB
    /// each): the stranger's mesh and contract.
    async fn owner_and_stranger(&self) -> (Mesh, ContractAccess) {
        let (stranger_key, stranger) = self.stranger().await;
        let strangers = ContractAccess {
            owner: stranger_key.account(),
            ..self.contract(2, 1 << 20, false).1
        };
        self.store.set_contracts(HashMap::from([
            self.contract(1, 1 << 20, false),
            (2, strangers.clone()),
        ]));
        (stranger, strangers)
    }

    /// The store serving only contract `id` (1 MiB) with `bytes` put in it as one shard.
    async fn one_shard(&self, id: u64, bytes: &[u8]) -> Hash {
        self.store
            .set_contracts(HashMap::from([self.contract(id, 1 << 20, false)]));
        let shard = shard_id(bytes);
        wire::put(&self.owner_mesh, self.node.peer_id(), id, shard, bytes)
            .await
            .expect("put");
        shard
    }

    /// Contract `id` of the owner, its folder made as the node makes it on provisioning.
    fn contract(&self, id: u64, quota: u64, paused: bool) -> (u64, ContractAccess) {
        let dir = self.dir.join(format!("workloads/{id}"));
        std::fs::create_dir_all(&dir).expect("contract folder");
        (
            id,
            ContractAccess {
                owner: self.owner.account(),
                quota,
                paused,
                dir,
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_store_readers_fetch_and_nothing_else_goes() {
    let r = rig().await;
    r.store
        .set_contracts(HashMap::from([r.contract(1, 1 << 20, false)]));
    let peer = r.node.peer_id();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let id = shard_id(&bytes);

    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes)
            .await
            .expect("put"),
        PutOutcome::Stored
    );
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes)
            .await
            .expect("again"),
        PutOutcome::AlreadyThere,
        "a shard already held is not sent again"
    );
    assert_eq!(
        wire::get(&r.owner_mesh, peer, id, 1 << 20)
            .await
            .expect("get"),
        bytes
    );
    let usage = wire::usage(&r.owner_mesh, peer, vec![1])
        .await
        .expect("usage");
    assert_eq!(
        (usage[0].used, usage[0].quota),
        (bytes.len() as u64, 1 << 20)
    );

    // Bytes that do not match their address are refused and nothing stays.
    let wrong = Hash::of(b"not the address");
    match wire::put(&r.owner_mesh, peer, 1, wrong, &bytes).await {
        Err(WireError::Refused { reason, .. }) => {
            assert!(reason.contains("nothing was stored"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        wire::has(&r.owner_mesh, peer, vec![id, wrong])
            .await
            .expect("has"),
        vec![true, false]
    );

    // Over the quota: refused with the numbers.
    let big = vec![7u8; 900_000];
    match wire::put(&r.owner_mesh, peer, 1, shard_id(&big), &big).await {
        Err(WireError::Refused { reason, .. }) => {
            assert!(reason.contains("reserves 1048576 bytes"), "{reason}")
        }
        other => panic!("expected a quota refusal, got {other:?}"),
    }

    // A stranger may read (shards are encrypted) but not write or delete.
    let (stranger_key, stranger) = r.stranger().await;
    assert_eq!(
        wire::get(&stranger, peer, id, 1 << 20).await.expect("read"),
        bytes
    );
    let other = b"stranger bytes".to_vec();
    match wire::put(&stranger, peer, 1, shard_id(&other), &other).await {
        Err(WireError::Refused { reason, .. }) => {
            assert!(reason.contains("not to you"), "{reason}")
        }
        other => panic!("a stranger wrote: {other:?}"),
    }
    assert!(wire::delete(&stranger, peer, 1, vec![id]).await.is_err());
    assert!(
        wire::list(&stranger, peer, 1, None).await.is_err(),
        "a stranger listed an owner's shards"
    );
    let listed = wire::list(&r.owner_mesh, peer, 1, None)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].id, listed[0].len), (id, bytes.len() as u64));
    assert!(listed[0].age_secs < 600, "{listed:?}");
    assert!(
        wire::list(&r.owner_mesh, peer, 1, Some(id))
            .await
            .expect("list after")
            .is_empty(),
        "nothing comes after the last address"
    );
    // A put that finds the shard already here makes it young again: a put resumed from
    // another machine relies on it before its index lists it, and gc leaves young shards.
    let file = r.dir.join(format!("workloads/1/shards/{id}"));
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(two_days_ago))
        .expect("age the shard");
    let age = |listed: Vec<wire::ListedShard>| listed.first().map(|s| s.age_secs);
    let listed = wire::list(&r.owner_mesh, peer, 1, None)
        .await
        .expect("list");
    assert!(age(listed) >= Some(2 * 86_400 - 60));
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes)
            .await
            .expect("again"),
        PutOutcome::AlreadyThere
    );
    let listed = wire::list(&r.owner_mesh, peer, 1, None)
        .await
        .expect("list");
    assert!(age(listed) < Some(600), "a shard put again stays old");
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(
        wire::collect(&r.owner_mesh, peer, 1, vec![id], day)
            .await
            .expect("collect"),
        0,
        "gc took a shard a put relies on since it was listed"
    );
    assert!(
        wire::usage(&stranger, peer, vec![1])
            .await
            .expect("usage")
            .is_empty()
    );

    // Audits: a proof for any leaf checks out against the address alone.
    for leaf in [0, 5, 18] {
        assert!(
            wire::audit(&r.owner_mesh, peer, id, leaf)
                .await
                .expect("audit"),
            "leaf {leaf}"
        );
    }
    let beyond = wire::audit(&r.owner_mesh, peer, id, 1 << 40)
        .await
        .expect_err("a leaf the shard does not have");
    assert!(beyond.to_string().contains("has no leaf"), "{beyond}");

    // Pointers: only signed by the owner they name, and only the newest is kept.
    let pointer = |seq| {
        SignedPointer::sign(
            &r.owner,
            GRID,
            Pointer {
                owner: r.owner.account(),
                seq,
                index: Hash::of(b"index"),
            },
        )
    };
    wire::put_pointer(&r.owner_mesh, peer, pointer(2))
        .await
        .expect("pointer");
    wire::put_pointer(&r.owner_mesh, peer, pointer(1))
        .await
        .expect("older is ignored");
    let kept = wire::get_pointer(&stranger, peer, r.owner.account(), GRID)
        .await
        .expect("get pointer");
    assert_eq!(kept.map(|p| p.pointer.seq), Some(2));
    let mut forged = pointer(9);
    forged.pointer.index = Hash::of(b"elsewhere");
    assert!(
        wire::put_pointer(&stranger, peer, forged).await.is_err(),
        "a forged pointer is refused"
    );
    // The owner's own pointer from another grid (a devnet with the same words), newer
    // there: refused, or it would name an index this grid does not have.
    let other_grid = SignedPointer::sign(
        &r.owner,
        "peergrid-other",
        Pointer {
            owner: r.owner.account(),
            seq: 50,
            index: Hash::of(b"index elsewhere"),
        },
    );
    match wire::put_pointer(&stranger, peer, other_grid).await {
        Err(WireError::Refused { reason, .. }) => assert!(reason.contains(GRID), "{reason}"),
        other => panic!("a pointer for another grid got {other:?}"),
    }
    let mut strangers = SignedPointer::sign(
        &stranger_key,
        GRID,
        Pointer {
            owner: stranger_key.account(),
            seq: 1,
            index: Hash::of(b"x"),
        },
    );
    strangers.pointer.seq = 1;
    assert!(
        wire::put_pointer(&stranger, peer, strangers).await.is_err(),
        "no pointer is kept for someone without a contract here"
    );

    // Grace: reads and writes refused, data kept; paid again, served again.
    r.store
        .set_contracts(HashMap::from([r.contract(1, 1 << 20, true)]));
    match wire::get(&r.owner_mesh, peer, id, 1 << 20).await {
        Err(WireError::Refused { reason, .. }) => assert_eq!(reason, GRACE_REFUSAL),
        other => panic!("expected the grace refusal, got {other:?}"),
    }
    r.store
        .set_contracts(HashMap::from([r.contract(1, 1 << 20, false)]));
    assert_eq!(
        wire::get(&r.owner_mesh, peer, id, 1 << 20)
            .await
            .expect("served again"),
        bytes
    );

    // The owner deletes; the space is free again.
    assert_eq!(
        wire::delete(&r.owner_mesh, peer, 1, vec![id])
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        wire::usage(&r.owner_mesh, peer, vec![1])
            .await
            .expect("usage")[0]
            .used,
        0
    );
    assert!(wire::get(&r.owner_mesh, peer, id, 1 << 20).await.is_err());
    assert!(
        wire::list(&r.owner_mesh, peer, 1, None)
            .await
            .expect("list")
            .is_empty(),
        "a deleted shard is still listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_with_more_shards_than_one_answer_lists_in_pages() {
    let r = rig().await;
    let (contract, access) = r.contract(4, 1 << 30, false);
    let shards = access.dir.join("shards");
    std::fs::create_dir_all(&shards).expect("mkdir");
    let count = wire::IDS_MAX + 5;
    let mut want: Vec<Hash> = (0..count as u32)
        .map(|i| {
            let bytes = i.to_le_bytes();
            let id = shard_id(&bytes);
            std::fs::write(shards.join(id.to_string()), bytes).expect("write");
            id
        })
        .collect();
    r.store.set_contracts(HashMap::from([(contract, access)]));
    let peer = r.node.peer_id();
    let first = wire::list(&r.owner_mesh, peer, contract, None)
        .await
        .expect("first page");
    assert_eq!(first.len(), wire::IDS_MAX);
    let last = first.last().map(|s| s.id);
    let second = wire::list(&r.owner_mesh, peer, contract, last)
        .await
        .expect("second page");
    assert_eq!(second.len(), 5);
    let got: Vec<Hash> = first.iter().chain(&second).map(|s| s.id).collect();
    want.sort_unstable();
    assert_eq!(got, want, "every shard once, in address order");
    assert!(first.iter().chain(&second).all(|s| s.len == 4));

    // Garbage collection's removal takes only shards old enough, checked by the node.
    let (old, young) = (want[0], want[1]);
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(shards.join(old.to_string()))
        .and_then(|f| f.set_modified(two_days_ago))
        .expect("age a shard");
    let day = std::time::Duration::from_secs(86_400);
    assert_eq!(
        wire::collect(&r.owner_mesh, peer, contract, vec![old, young], day)
            .await
            .expect("collect"),
        1
    );
    let left: Vec<Hash> = wire::list(&r.owner_mesh, peer, contract, None)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(!left.contains(&old) && left.contains(&young), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_shards_are_caught_and_crash_leftovers_removed() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let id = r.one_shard(3, &[9u8; 100_000]).await;

    // The disk flips a byte.
    let file = r.dir.join(format!("workloads/3/shards/{id}"));
    let mut on_disk = std::fs::read(&file).expect("read");
    on_disk[50_000] ^= 1;
    std::fs::write(&file, &on_disk).expect("write");
    match wire::get(&r.owner_mesh, peer, id, 1 << 20).await {
        Err(WireError::Corrupt { .. }) => {}
        other => panic!("the reader must catch the corruption, got {other:?}"),
    }
    assert!(
        !wire::has(&r.owner_mesh, peer, vec![id]).await.expect("has")[0],
        "the node stops serving a shard it found corrupt"
    );
    assert_eq!(r.store.stats().corrupt, 1);

    // A crash mid-write left a temporary file; a new store (a restart) removes it and
    // counts only whole shards.
    let good = vec![4u8; 10_000];
    wire::put(&r.owner_mesh, peer, 3, shard_id(&good), &good)
        .await
        .expect("put");
    let leftover = r.dir.join("workloads/3/shards/.tmp-partial-0001");
    std::fs::write(&leftover, b"half a shard").expect("leftover");
    let restarted = ShardStore::new(r.dir.join("pointers"), GRID).expect("store");
    restarted.set_contracts(HashMap::from([r.contract(3, 1 << 20, false)]));
    assert!(
        !leftover.exists(),
        "leftover of an interrupted write removed"
    );
    assert_eq!(restarted.used().get(&3).copied(), Some(good.len() as u64));
}

/// Found by a newcomer's walk: rotten shards nobody read stayed listed, so a repair
/// (which trusts what a node says it holds) left them, and each audit found a few more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_moves_aside_every_rotten_shard_and_leaves_the_whole_ones() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let mut ids = Vec::new();
    for i in 0..6u8 {
        ids.push(r.one_shard(3, &vec![i; 50_000 + usize::from(i)]).await);
    }
    // The disk flips a byte in two of them; nothing reads them.
    for id in &ids[..2] {
        let file = r.dir.join(format!("workloads/3/shards/{id}"));
        let mut on_disk = std::fs::read(&file).expect("read");
        on_disk[1_000] ^= 1;
        std::fs::write(&file, &on_disk).expect("write");
    }
    let found = r.store.scrub(u64::MAX).await;
    assert_eq!((found.whole, found.corrupt), (4, 2), "{found:?}");
    let held = wire::has(&r.owner_mesh, peer, ids.clone())
        .await
        .expect("has");
    assert_eq!(held, [false, false, true, true, true, true]);
    assert_eq!(r.store.stats().corrupt, 2);
    // The next pass finds nothing more; the whole ones still read.
    let again = r.store.scrub(u64::MAX).await;
    assert_eq!((again.whole, again.corrupt), (4, 0), "{again:?}");
    assert!(
        wire::get(&r.owner_mesh, peer, ids[2], 1 << 20)
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_in_two_contracts_is_each_ones_own() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let (stranger, strangers) = r.owner_and_stranger().await;
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let id = shard_id(&bytes);
    wire::put(&r.owner_mesh, peer, 1, id, &bytes)
        .await
        .expect("owner's put");

    // Anyone may read a shard; one who puts it in their own contract and deletes it
    // there takes nothing from the owner.
    let read = wire::get(&stranger, peer, id, 1 << 20).await.expect("read");
    assert_eq!(
        wire::put(&stranger, peer, 2, id, &read)
            .await
            .expect("stranger's put"),
        PutOutcome::Stored,
        "a copy in another contract is that contract's own"
    );
    let used = |mesh: &Mesh, contract| {
        let mesh = mesh.clone();
        async move {
            wire::usage(&mesh, peer, vec![contract])
                .await
                .expect("usage")[0]
                .used
        }
    };
    assert_eq!(used(&stranger, 2).await, bytes.len() as u64);
    assert_eq!(
        wire::delete(&stranger, peer, 2, vec![id])
            .await
            .expect("stranger's delete"),
        1
    );
    assert_eq!(used(&stranger, 2).await, 0);
    assert_eq!(used(&r.owner_mesh, 1).await, bytes.len() as u64);
    assert_eq!(
        wire::get(&r.owner_mesh, peer, id, 1 << 20)
            .await
            .expect("still served"),
        bytes
    );
    assert!(
        wire::audit(&r.owner_mesh, peer, id, 3)
            .await
            .expect("audit")
    );
    let listed = wire::list(&r.owner_mesh, peer, 1, None)
        .await
        .expect("list");
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), vec![id]);

    // One copy's contract in grace does not stop the other copy from being served; with
    // both in grace the read is refused as such.
    wire::put(&stranger, peer, 2, id, &read)
        .await
        .expect("stranger's put again");
    let owners_paused = |strangers_paused: bool| {
        HashMap::from([
            r.contract(1, 1 << 20, true),
            (
                2,
                ContractAccess {
                    paused: strangers_paused,
                    ..strangers.clone()
                },
            ),
        ])
    };
    r.store.set_contracts(owners_paused(false));
    assert_eq!(
        wire::get(&r.owner_mesh, peer, id, 1 << 20)
            .await
            .expect("served from the copy not in grace"),
        bytes
    );
    r.store.set_contracts(owners_paused(true));
    match wire::get(&r.owner_mesh, peer, id, 1 << 20).await {
        Err(WireError::Refused { reason, .. }) => assert_eq!(reason, GRACE_REFUSAL),
        other => panic!("expected the grace refusal, got {other:?}"),
    }

    // A disk that cannot take the shard (here its folder is a file) is a refusal that
    // says so, not a cut stream.
    let (contract, access) = r.contract(5, 1 << 20, false);
    std::fs::create_dir_all(&access.dir).expect("mkdir");
    std::fs::write(access.dir.join("shards"), b"in the way").expect("block");
    r.store.set_contracts(HashMap::from([(contract, access)]));
    let other = vec![3u8; 50_000];
    match wire::put(&r.owner_mesh, peer, contract, shard_id(&other), &other).await {
        Err(WireError::Refused { reason, .. }) => {
            assert!(reason.contains("cannot write shard"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_of_a_cut_shard_fails_and_uncounts_it() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let id = r.one_shard(6, &[5u8; 300_000]).await;
    let shards = r.dir.join("workloads/6/shards");
    std::fs::File::options()
        .write(true)
        .open(shards.join(id.to_string()))
        .and_then(|f| f.set_len(1000))
        .expect("cut the shard");
    assert!(
        wire::audit(&r.owner_mesh, peer, id, 0).await.is_err(),
        "a cut shard passed its audit"
    );
    assert_eq!(r.store.stats().corrupt, 1);
    assert_eq!(
        r.store.used().get(&6).copied(),
        Some(0),
        "the bytes counted for it, not what was left of it, are freed"
    );

    // Only the name the store writes is a shard: another spelling of an address is
    // neither counted nor listed.
    let good = vec![6u8; 10_000];
    let upper = shard_id(&good).to_string().to_uppercase();
    std::fs::write(shards.join(upper), &good).expect("write");
    let restarted = ShardStore::new(r.dir.join("pointers"), GRID).expect("store");
    restarted.set_contracts(HashMap::from([r.contract(6, 1 << 20, false)]));
    assert_eq!(restarted.used().get(&6).copied(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_whose_folder_is_gone_refuses_puts_and_makes_nothing() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let (id, access) = r.contract(7, 1 << 20, false);
    // The disk holding the folder is not mounted: its mount point is empty.
    std::fs::remove_dir_all(&access.dir).expect("unmount");
    r.store.set_contracts(HashMap::from([(id, access.clone())]));
    let bytes = [9u8; 50_000];
    match wire::put(&r.owner_mesh, peer, id, shard_id(&bytes), &bytes).await {
        Err(WireError::Refused { reason, .. }) => assert!(
            reason.contains("may not be mounted") && reason.contains("another node"),
            "{reason}"
        ),
        other => panic!("a put into a missing folder answered {other:?}"),
    }
    assert!(
        !access.dir.exists(),
        "the folder was made again on the disk beneath"
    );
    assert_eq!(r.store.used().get(&id).copied(), Some(0));
}

/// Long enough that the slots are taken and the first put refused within it on a loaded
/// machine.
const TRICKLE_GRACE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_trickle_make_way_when_every_slot_is_taken() {
    let r = rig_with(StreamLimits {
        all: 2,
        per_peer: 2,
        floor_bytes_per_sec: 64 << 10,
        grace: TRICKLE_GRACE,
        ..StreamLimits::default()
    })
    .await;
    trickling_streams_make_way(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_trickle_make_way_when_their_address_holds_its_share() {
    // Eight slots, a quarter of them (two) for one address: loopback counted as one.
    let config = Config {
        connections: peergrid_mesh::ConnectionLimits {
            limit_loopback: true,
            ..peergrid_mesh::ConnectionLimits::default()
        },
        ..Config::loopback()
    };
    let limits = StreamLimits {
        all: 8,
        per_peer: 2,
        floor_bytes_per_sec: 64 << 10,
        grace: TRICKLE_GRACE,
        ..StreamLimits::default()
    };
    trickling_streams_make_way(rig_on(limits, config).await).await;
}

/// A stranger holds two puts it sends nothing of: the owner's put is refused while they
/// are in their grace, then one of them makes way.
async fn trickling_streams_make_way(r: Rig) {
    let grace = TRICKLE_GRACE;
    let peer = r.node.peer_id();
    let (stranger, _) = r.owner_and_stranger().await;
    // A peer takes every slot with puts it then sends nothing of.
    let mut held = Vec::new();
    for i in 0..2u8 {
        let mut s = stranger
            .open_stream(peer, wire::SHARD_PROTOCOL)
            .await
            .expect("open");
        let put = Request::Put {
            contract: 2,
            id: shard_id(&[i]),
            len: 500_000,
        };
        wire::write_request(&mut s, &put).await.expect("request");
        assert_eq!(
            wire::read_response(&mut s).await.expect("answer"),
            Response::Ready
        );
        held.push(s);
    }
    let bytes = [3u8; 100_000];
    let id = shard_id(&bytes);
    assert!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes).await.is_err(),
        "a stream still in its grace was closed for another"
    );
    tokio::time::sleep(grace + Duration::from_millis(200)).await;
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes)
            .await
            .expect("a trickling stream makes way"),
        PutOutcome::Stored
    );
    let mut closed = 0;
    for s in &mut held {
        let mut byte = [0u8; 1];
        let ended = tokio::time::timeout(
            Duration::from_secs(2),
            futures::AsyncReadExt::read(s, &mut byte),
        )
        .await;
        if matches!(ended, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly one trickling stream was closed");
    // The closed put gave back what it reserved and left no temporary file; the other
    // does the same when its peer goes.
    let temporary = || {
        std::fs::read_dir(r.dir.join("workloads/2/shards"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(r.store.used().get(&2).copied(), Some(500_000));
    assert_eq!(temporary(), 1);
    drop(held);
    let mut waited = 0;
    while (r.store.used().get(&2).copied() != Some(0) || temporary() != 0) && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(r.store.used().get(&2).copied(), Some(0));
    assert_eq!(temporary(), 0, "no temporary file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_that_send_no_request_make_way_when_every_slot_is_taken() {
    let header_grace = Duration::from_secs(3);
    let r = rig_with(StreamLimits {
        all: 2,
        per_peer: 2,
        // Puts trickling shard bytes are not what this is about: never closed for it here.
        grace: Duration::from_secs(3600),
        header_grace,
        ..StreamLimits::default()
    })
    .await;
    let peer = r.node.peer_id();
    let (stranger, _) = r.owner_and_stranger().await;
    // A peer takes every slot with streams whose request never comes (a byte of it sent,
    // so that the node has the streams).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = stranger
            .open_stream(peer, wire::SHARD_PROTOCOL)
            .await
            .expect("open");
        futures::AsyncWriteExt::write_all(&mut s, &[1])
            .await
            .expect("a byte");
        futures::AsyncWriteExt::flush(&mut s).await.expect("flush");
        held.push(s);
    }
    let bytes = [4u8; 10_000];
    let id = shard_id(&bytes);
    assert!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes).await.is_err(),
        "the silent streams hold the slots while their request may still come"
    );
    tokio::time::sleep(header_grace + Duration::from_millis(200)).await;
    assert_eq!(
        wire::put(&r.owner_mesh, peer, 1, id, &bytes)
            .await
            .expect("a stream with no request makes way"),
        PutOutcome::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_a_put_relies_on_outlives_a_delete_for_a_while() {
    let r = rig().await;
    let peer = r.node.peer_id();
    let (stranger, _) = r.owner_and_stranger().await;
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 239) as u8).collect();
    let id = shard_id(&bytes);
    wire::put(&r.owner_mesh, peer, 1, id, &bytes)
        .await
        .expect("put");

    // A put's check before naming says which of the shards it found it still has, and
    // keeps those from deletes (another machine replacing an object that shares them);
    // only the contract's owner may ask.
    let absent = shard_id(b"never stored");
    assert_eq!(
        wire::keep(&r.owner_mesh, peer, 1, vec![id, absent])
            .await
            .expect("keep"),
        vec![true, false]
    );
    assert_eq!(
        wire::delete(&r.owner_mesh, peer, 1, vec![id])
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        wire::get(&r.owner_mesh, peer, id, 1 << 20)
            .await
            .expect("still served"),
        bytes
    );
    match wire::keep(&stranger, peer, 1, vec![id]).await {
        Err(WireError::Refused { reason, .. }) => assert!(reason.contains("not yours"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
