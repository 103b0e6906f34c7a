//! Crash consistency: a ledger killed at any moment reopens at its last committed block.
//!
//! A child process (this test binary, re-run with an environment variable) applies
//! deterministic blocks to a redb file as fast as it can; the parent kills it with
//! SIGKILL at varying moments, reopens the file, and checks that the state is
//! exactly what applying blocks 1..=h to genesis gives, for the height h it finds.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use peergrid_core::tx::Payload;
use peergrid_core::{Amount, Hash, SignedTx};
use peergrid_ledger::{
    BlockContext, Change, Ledger, LedgerError, MemoryStore, RedbStore, Store, StoreError,
};

const CHILD_ENV: &str = "PEERGRID_CRASH_CHILD_DB";

/// Block `h` (from 1): every funded account sends one transfer, and one farm is created.
fn block(h: u64) -> (BlockContext, Vec<SignedTx>) {
    let mut txs: Vec<SignedTx> = (1..=5u8)
        .map(|n| {
            let to = key(1 + ((n as u64 + h) % 5) as u8).account();
            SignedTx::new(
                &key(n),
                CHAIN,
                h - 1,
                Payload::Transfer {
                    to,
                    amount: Amount(1000 + h),
                },
            )
        })
        .collect();
    txs.push(SignedTx::new(
        &key(6),
        CHAIN,
        h - 1,
        Payload::CreateFarm {
            name: format!("farm-{h}"),
            public_ips: vec![],
        },
    ));
    (
        BlockContext {
            height: h,
            time_ms: GENESIS_MS + h * 1000,
        },
        txs,
    )
}

fn genesis6() -> peergrid_ledger::Genesis {
    genesis(6)
}

/// The child's work: apply blocks until killed.
#[test]
#[ignore = "run only as the child of crash_at_any_moment_reopens_at_the_last_committed_block"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(Path::new(&path)).expect("open");
    let mut ledger = Ledger::open(store, &genesis6()).expect("ledger");
    let start = ledger.state().height() + 1;
    for h in start..start + 100_000 {
        let (ctx, txs) = block(h);
        let outcome = ledger.execute_block(ctx, &txs).expect("block");
        assert!(
            outcome.receipts.iter().all(|r| r.result.is_ok()),
            "{:?}",
            outcome.receipts
        );
    }
}

fn expected_root(height: u64) -> Hash {
    let mut ledger = Ledger::open(MemoryStore::default(), &genesis6()).expect("ledger");
    for h in 1..=height {
        let (ctx, txs) = block(h);
        ledger.execute_block(ctx, &txs).expect("block");
    }
    ledger.state().root()
}

#[test]
fn crash_at_any_moment_reopens_at_the_last_committed_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let exe = std::env::current_exe().expect("test binary");
    let mut last_height = 0;
    // Kill after different delays so the kill lands in different phases of a block.
    for delay_ms in [150u64, 370, 90, 610] {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let ledger = Ledger::open(RedbStore::open(&path).expect("reopen"), &genesis6())
            .expect("ledger reopens");
        let height = ledger.state().height();
        assert!(
            height >= last_height,
            "height went back from {last_height} to {height}"
        );
        assert_eq!(
            ledger.state().root(),
            expected_root(height),
            "state at height {height} differs from a replay"
        );
        assert!(ledger.state().supply_is_conserved());
        last_height = height;
    }
    assert!(
        last_height > 0,
        "the child never committed a block; the test proved nothing"
    );
}

/// A store whose commits fail, like a disk that fills up mid-block.
struct FailingStore(RedbStore);

impl Store for FailingStore {
    fn load(&self) -> Result<Option<peergrid_ledger::Snapshot>, StoreError> {
        self.0.load()
    }
    fn commit(&mut self, _: u64, _: Hash, _: &[Change]) -> Result<(), StoreError> {
        Err(StoreError::Corrupt("injected write failure".into()))
    }
}

#[test]
fn a_failed_commit_leaves_the_previous_block_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let mut ledger =
        Ledger::open(RedbStore::open(&path).expect("open"), &genesis6()).expect("ledger");
    for h in 1..=3 {
        let (ctx, txs) = block(h);
        ledger.execute_block(ctx, &txs).expect("block");
    }
    let root = ledger.state().root();
    drop(ledger);
    let mut failing = Ledger::open(
        FailingStore(RedbStore::open(&path).expect("open")),
        &genesis6(),
    )
    .expect("ledger");
    let (ctx, txs) = block(4);
    assert!(matches!(
        failing.execute_block(ctx, &txs),
        Err(LedgerError::Store(_))
    ));
    drop(failing);
    // What a validator's start reads to tell an empty data directory, without the state.
    assert_eq!(
        RedbStore::open(&path).expect("open").head().expect("head"),
        Some((3, root))
    );
    let never = dir.path().join("never-committed.redb");
    assert_eq!(
        RedbStore::open(&never).expect("open").head().expect("head"),
        None
    );
    let reopened =
        Ledger::open(RedbStore::open(&path).expect("open"), &genesis6()).expect("ledger");
    assert_eq!(
        (reopened.state().height(), reopened.state().root()),
        (3, root)
    );
}

#[test]
fn a_damaged_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    let mut ledger =
        Ledger::open(RedbStore::open(&path).expect("open"), &genesis6()).expect("ledger");
    let (ctx, txs) = block(1);
    ledger.execute_block(ctx, &txs).expect("block");
    drop(ledger);
    // Flip a balance behind the ledger's back, as a bad disk or a meddling operator might.
    {
        let db = redb::Database::create(&path).expect("raw open");
        let txn = db.begin_write().expect("write");
        {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("state");
            let mut table = txn.open_table(def).expect("table");
            let mut k = vec![3u8];
            k.extend_from_slice(key(1).account().as_bytes());
            let forged = borsh::to_vec(&peergrid_ledger::Account {
                balance: Amount::tokens(1_000_000),
                nonce: 1,
            })
            .expect("encode");
            table
                .insert(k.as_slice(), forged.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let err = Ledger::open(RedbStore::open(&path).expect("open"), &genesis6())
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn a_data_directory_of_another_chain_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    drop(Ledger::open(RedbStore::open(&path).expect("open"), &genesis6()).expect("ledger"));
    let mut other = genesis6();
    other.chain_id = "other-chain".into();
    let err = Ledger::open(RedbStore::open(&path).expect("open"), &other)
        .err()
        .expect("must refuse");
    assert!(matches!(err, LedgerError::WrongChain { .. }), "{err}");
}

#[test]
fn blocks_apply_in_order_with_advancing_time() {
    let mut ledger = Ledger::open(MemoryStore::default(), &genesis6()).expect("ledger");
    let (ctx, txs) = block(1);
    ledger.execute_block(ctx, &txs).expect("block");
    let err = ledger
        .execute_block(ctx, &txs)
        .expect_err("same height twice");
    assert!(matches!(
        err,
        LedgerError::WrongHeight { height: 1, got: 1 }
    ));
    let stale = BlockContext {
        height: 2,
        time_ms: ctx.time_ms,
    };
    assert!(matches!(
        ledger.execute_block(stale, &[]),
        Err(LedgerError::TimeNotAfterParent { .. })
    ));
}

#[test]
fn after_a_failed_commit_the_ledger_refuses_more_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.redb");
    drop(Ledger::open(RedbStore::open(&path).expect("open"), &genesis6()).expect("ledger"));
    let mut failing = Ledger::open(
        FailingStore(RedbStore::open(&path).expect("open")),
        &genesis6(),
    )
    .expect("ledger");
    let (ctx, txs) = block(1);
    assert!(matches!(
        failing.execute_block(ctx, &txs),
        Err(LedgerError::Store(_))
    ));
    let (ctx, txs) = block(2);
    assert!(matches!(
        failing.execute_block(ctx, &txs),
        Err(LedgerError::Poisoned)
    ));
}

#[test]
fn the_first_block_cannot_predate_genesis() {
    let mut ledger = Ledger::open(MemoryStore::default(), &genesis6()).expect("ledger");
    let early = BlockContext {
        height: 1,
        time_ms: GENESIS_MS - 1,
    };
    assert!(matches!(
        ledger.execute_block(early, &[]),
        Err(LedgerError::TimeNotAfterParent { .. })
    ));
}
