//! Deterministic simulations of a validator set voted in by the council taking over at an
//! epoch boundary: one engine per epoch, a dropped validator no longer needed, an added one
//! needed, and restarts on either side of the boundary.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use commonware_cryptography::ed25519::PublicKey;
use commonware_p2p::simulated::Oracle;
use commonware_runtime::{Clock, Runner, deterministic};
use peergrid_chain::shared::Shared;
use peergrid_core::tx::{GovAction, Payload, ValidatorEntry};
use peergrid_core::{AccountId, SignedTx};
use peergrid_ledger::{Event, Genesis};
use peergrid_types::certificate::{StateCertificate, set_digest};

/// Short epochs: epoch 0 ends at height 19, epoch 1 at 39.
const EPOCH_BLOCKS: u64 = 20;
/// The last block of epoch 0.
const BOUNDARY: u64 = EPOCH_BLOCKS - 1;

fn genesis_with_epochs() -> Genesis {
    let mut g = genesis(4);
    g.params.epoch_blocks = EPOCH_BLOCKS;
    g
}

/// The council (user 1, threshold 1) replaces validator 3 with validator 4.
fn rotate() -> SignedTx {
    let validators = [0usize, 1, 2, 4]
        .iter()
        .map(|&i| ValidatorEntry {
            account: validator_key(i).account(),
            address: format!("10.0.0.{i}:4000"),
        })
        .collect();
    SignedTx::new(
        &user(1),
        CHAIN,
        0,
        Payload::Propose {
            action: GovAction::SetValidators { validators },
            description: "replace validator 3 by validator 4".into(),
        },
    )
}

/// Genesis validators 0..=3 and validator 4, which starts as a follower; all linked.
async fn grid(
    context: &deterministic::Context,
    dir: Option<&Path>,
) -> (
    Vec<Arc<Shared>>,
    Oracle<PublicKey, deterministic::Context>,
    Vec<PublicKey>,
) {
    let g = genesis_with_epochs();
    let peers = participants(5);
    let oracle = network_split(context, &peers[..4], &peers[4..]).await;
    link_all(&oracle, &peers, LINK).await;
    let mut vals = Vec::new();
    for i in 0..5 {
        vals.push(start_validator(context, &oracle, &g, i, dir).await);
    }
    (vals, oracle, peers)
}

/// Remove every link to and from validator `i`.
async fn isolate(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    peers: &[PublicKey],
    i: usize,
) {
    for (j, other) in peers.iter().enumerate() {
        if j != i {
            cut(oracle, &peers[i], other).await;
        }
    }
}

fn height(v: &Shared) -> u64 {
    v.with_state(|s| s.height()).unwrap_or(0)
}

fn set_of(v: &Shared, epoch: u64) -> Option<Vec<AccountId>> {
    v.with_state(|s| s.validator_set(epoch).map(|set| set.accounts()))
        .flatten()
}

fn new_set() -> Vec<AccountId> {
    [0usize, 1, 2, 4]
        .iter()
        .map(|&i| validator_key(i).account())
        .collect()
}

/// `v`'s state certificate of `height`, waited for, checked as a light client checks it
/// against `members`, and over the root `v` applied.
async fn certified(
    context: &deterministic::Context,
    v: &Shared,
    height: u64,
    members: &[AccountId],
) -> StateCertificate {
    for _ in 0..200 {
        if let Some(c) = v.certificate(height) {
            c.verify(v.genesis.hash(), members)
                .unwrap_or_else(|e| panic!("certificate of {height}: {e}"));
            let applied = v.receipts.block(height).expect("the block applied");
            assert_eq!(c.root, applied.root, "the certified root of {height}");
            assert_eq!(c.block.to_string(), applied.digest, "the certified block");
            return c;
        }
        context.sleep(Duration::from_millis(50)).await;
    }
    panic!("no state certificate formed for height {height}");
}

/// With validators 2 and 3 cut off, only 0, 1 and 4 vote: a quorum (3 of 4) of the new set,
/// but two of four of the genesis set, which can finalize nothing. Progress here means the
/// new set decides, and needs 4's votes.
async fn progress_without_2_and_3(
    context: &deterministic::Context,
    vals: &[Arc<Shared>],
    oracle: &Oracle<PublicKey, deterministic::Context>,
    peers: &[PublicKey],
) -> u64 {
    isolate(oracle, peers, 3).await;
    isolate(oracle, peers, 2).await;
    let live: Vec<_> = [0, 1, 4].iter().map(|&i| &vals[i]).collect();
    // Blocks certified before the cut may still finalize; the target is well past them.
    let from = live.iter().map(|v| height(v)).max().unwrap_or(0);
    let target = from + 15;
    wait_for_height(context, &live, target).await;
    for h in from + 1..=target {
        agreed_root(&live, h);
    }
    target
}

#[test]
fn a_voted_set_takes_over_at_the_epoch_boundary_and_decides_alone() {
    for seed in [11u64, 12] {
        runner(seed, Duration::from_secs(600)).start(|context| async move {
            let (vals, oracle, peers) = grid(&context, None).await;
            let all: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &all, 3).await;
            submit_all(&all, &rotate());
            // Everyone, the follower included, reaches the boundary and applies the same set.
            wait_for_height(&context, &all, BOUNDARY).await;
            agreed_root(&all, BOUNDARY);
            for v in &vals {
                assert_eq!(set_of(v, 1), Some(new_set()), "epoch 1's set");
                assert_eq!(
                    set_of(v, 0).map(|s| s.len()),
                    Some(4),
                    "epoch 0's set is kept"
                );
                let end = v.receipts.block(BOUNDARY).expect("boundary receipt");
                assert!(
                    end.end_events.iter().any(|e| matches!(
                        e,
                        Event::ValidatorSetChanged { epoch: 1, first_height, .. }
                            if *first_height == EPOCH_BLOCKS
                    )),
                    "the boundary block announces the change"
                );
            }
            // Epochs 1 and 2 finalize, and validator 3, now outside the set, keeps following
            // them, across the next boundary too.
            let past_next = 2 * EPOCH_BLOCKS + 2;
            wait_for_height(&context, &all, past_next).await;
            for h in BOUNDARY + 1..=past_next {
                agreed_root(&all, h);
            }
            // A light client follows the change through state certificates: epoch 0's last
            // block is signed by the genesis set and names the new one, which signs epoch 1's.
            let genesis_set = set_of(&vals[0], 0).expect("the genesis set");
            for v in &vals {
                let handoff = certified(&context, v, BOUNDARY, &genesis_set).await;
                assert_eq!(
                    handoff.next_set,
                    set_digest(&new_set()),
                    "the handoff names the new set"
                );
                let second = certified(&context, v, 2 * EPOCH_BLOCKS - 1, &new_set()).await;
                assert_eq!((second.epoch, second.next_set), (1, set_digest(&new_set())));
            }
            let target = progress_without_2_and_3(&context, &vals, &oracle, &peers).await;
            // The three alone decided 15 blocks from wherever the cut found them.
            assert!(target >= past_next + 15);
            // Validator 2, a member again once reconnected, catches up by backfill.
            link_all(&oracle, &peers[..3], LINK).await;
            for i in [0, 1, 4] {
                let _ = oracle
                    .add_link(peers[2].clone(), peers[i].clone(), LINK)
                    .await;
                let _ = oracle
                    .add_link(peers[i].clone(), peers[2].clone(), LINK)
                    .await;
            }
            let members: Vec<_> = [0, 1, 2, 4].iter().map(|&i| &vals[i]).collect();
            wait_for_height(&context, &members, target + 5).await;
            for h in BOUNDARY..=target + 5 {
                agreed_root(&members, h);
            }
        });
    }
}

#[test]
fn without_a_vote_the_genesis_set_keeps_deciding_across_boundaries() {
    runner(13, Duration::from_secs(600)).start(|context| async move {
        let (vals, oracle, peers) = grid(&context, None).await;
        // Validator 4 is in no set: the network admits it only while epoch 0's peer set
        // (where it is a follower) is the latest, so only the genesis set is followed here.
        let genesis_set: Vec<_> = vals[..4].iter().collect();
        wait_for_height(&context, &genesis_set, 2 * EPOCH_BLOCKS + 2).await;
        for h in 1..=2 * EPOCH_BLOCKS + 2 {
            agreed_root(&genesis_set, h);
        }
        for v in &vals[..4] {
            assert_eq!(set_of(v, 2).map(|s| s.len()), Some(4));
            assert_eq!(set_of(v, 2), set_of(v, 0), "no vote, no change");
        }
        // 0 and 1 are not a quorum of the genesis set, with or without validator 4.
        isolate(&oracle, &peers, 3).await;
        isolate(&oracle, &peers, 2).await;
        context.sleep(Duration::from_secs(3)).await;
        let live: Vec<_> = [0, 1].iter().map(|&i| &vals[i]).collect();
        let frozen: Vec<u64> = live.iter().map(|v| height(v)).collect();
        context.sleep(Duration::from_secs(20)).await;
        let later: Vec<u64> = live.iter().map(|v| height(v)).collect();
        assert_eq!(frozen, later, "two of the genesis set finalized alone");
    });
}

/// When the simulated crash hits every validator at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The vote is in, the boundary not reached.
    Before,
    /// As soon as the first validator applied the boundary block: others may not have.
    AtBoundary,
    /// Everyone is a few blocks into the new epoch.
    After,
}

/// Crash every validator at `crash`; restarted from their stored state, they must run the
/// right epoch's engine and the new set alone must decide.
fn restart_around_the_boundary(seed: u64, crash: Crash) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let p = path.clone();
    let (before, checkpoint) =
        runner(seed, Duration::from_secs(600)).start_and_recover(|context| async move {
            let (vals, _oracle, _peers) = grid(&context, Some(&p)).await;
            let all: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &all, 3).await;
            submit_all(&all, &rotate());
            match crash {
                Crash::After => wait_for_height(&context, &all, BOUNDARY + 3).await,
                Crash::AtBoundary => loop {
                    if all.iter().any(|v| height(v) >= BOUNDARY) {
                        break;
                    }
                    // Finer than block time, to land between validators applying it.
                    context.sleep(Duration::from_millis(1)).await;
                },
                Crash::Before => {
                    loop {
                        if all.iter().all(|v| {
                            v.with_state(|s| s.config().pending_validators.is_some())
                                .unwrap_or(false)
                        }) {
                            break;
                        }
                        context.sleep(Duration::from_millis(50)).await;
                    }
                    assert!(
                        all.iter().all(|v| height(v) < BOUNDARY),
                        "crash before the boundary"
                    );
                }
            }
            all.iter().map(|v| height(v)).collect::<Vec<_>>()
        });
    let p = path.clone();
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let (vals, oracle, peers) = grid(&context, Some(&p)).await;
        for (v, h) in vals.iter().zip(&before) {
            assert!(height(v) >= *h, "a finalized block was lost in the crash");
        }
        let all: Vec<_> = vals.iter().collect();
        wait_for_height(&context, &all, BOUNDARY + 3).await;
        for v in &vals {
            assert_eq!(set_of(v, 1), Some(new_set()));
        }
        progress_without_2_and_3(&context, &vals, &oracle, &peers).await;
    });
}

#[test]
fn validators_restarted_before_the_boundary_switch_sets_at_it() {
    restart_around_the_boundary(14, Crash::Before);
}

#[test]
fn validators_crashed_while_applying_the_boundary_agree_on_the_new_epoch() {
    for seed in [16, 17, 18] {
        restart_around_the_boundary(seed, Crash::AtBoundary);
    }
}

#[test]
fn validators_restarted_after_the_boundary_resume_in_the_new_epoch() {
    restart_around_the_boundary(15, Crash::After);
}

#[test]
fn the_same_seed_replays_the_same_rotation() {
    let run = || {
        runner(19, Duration::from_secs(600)).start(|context| async move {
            let (vals, _oracle, _peers) = grid(&context, None).await;
            let all: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &all, 3).await;
            submit_all(&all, &rotate());
            wait_for_height(&context, &all, BOUNDARY + 5).await;
            let root = agreed_root(&all, BOUNDARY + 5);
            (root, context.auditor().state())
        })
    };
    assert_eq!(run(), run());
}

#[test]
fn a_validator_voted_in_after_several_epochs_catches_up_from_genesis_and_votes() {
    for seed in [21u64, 22] {
        runner(seed, Duration::from_secs(900)).start(|context| async move {
            let g = genesis_with_epochs();
            let peers = participants(5);
            let oracle = network_split(&context, &peers[..4], &peers[4..]).await;
            link_all(&oracle, &peers, LINK).await;
            let mut vals = Vec::new();
            for i in 0..4 {
                vals.push(start_validator(&context, &oracle, &g, i, None).await);
            }
            // Several epochs pass before validator 4 runs at all.
            let genesis_set: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &genesis_set, 8 * EPOCH_BLOCKS + 2).await;
            submit_all(&genesis_set, &rotate());
            while !genesis_set.iter().all(|v| {
                v.with_state(|s| s.config().pending_validators.is_some())
                    .unwrap_or(false)
            }) {
                context.sleep(Duration::from_millis(50)).await;
            }
            // The vote is final: its operator starts it with nothing but the genesis.
            let voted_at = genesis_set.iter().map(|v| height(v)).max().unwrap_or(0);
            let switch = (voted_at / EPOCH_BLOCKS + 1) * EPOCH_BLOCKS;
            assert!(
                switch >= 9 * EPOCH_BLOCKS,
                "the new set starts epochs after genesis"
            );
            vals.push(start_validator(&context, &oracle, &g, 4, None).await);
            let all: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &all, switch + 3).await;
            // It applied every block from genesis to the same state as the others.
            for h in 1..=switch + 3 {
                agreed_root(&all, h);
            }
            assert_eq!(set_of(&vals[4], switch / EPOCH_BLOCKS), Some(new_set()));
            // The validators that were there keep each epoch's handoff: a light client
            // trusting only the genesis set follows them to the new set.
            let mut trusted = set_of(&vals[0], 0).expect("the genesis set");
            for epoch in 0..switch / EPOCH_BLOCKS {
                let last = (epoch + 1) * EPOCH_BLOCKS - 1;
                let handoff = certified(&context, &vals[0], last, &trusted).await;
                let next = set_of(&vals[0], epoch + 1).expect("the next set");
                assert_eq!(
                    handoff.next_set,
                    set_digest(&next),
                    "epoch {epoch}'s handoff"
                );
                trusted = next;
            }
            assert_eq!(trusted, new_set());
            // The newcomer, caught up, certifies new blocks with the others.
            certified(&context, &vals[4], switch + 2, &trusted).await;
            // And it votes: without 2 and 3, the new set decides only with it.
            progress_without_2_and_3(&context, &vals, &oracle, &peers).await;
        });
    }
}

/// Blocks a pruning validator keeps in [`validators_prune_below_their_window_and_restart`]:
/// two epochs, the least a window may be.
const KEEP: u64 = 2 * EPOCH_BLOCKS;

/// Sections of validator `i`'s finalized block archive on the simulated disk.
async fn archive_sections(context: &deterministic::Context, i: usize) -> usize {
    use commonware_runtime::Storage as _;
    context
        .scan(&format!("validator-{i}-finalized-blocks-value"))
        .await
        .map_or(0, |blobs| blobs.len())
}

/// Four validators of which the first three keep [`KEEP`] blocks and the last all of them,
/// as an archive does.
async fn pruning_grid(context: &deterministic::Context, path: &Path) -> Vec<Arc<Shared>> {
    let g = genesis_with_epochs();
    let peers = participants(4);
    let oracle = network(context, &peers).await;
    link_all(&oracle, &peers, LINK).await;
    let mut vals = Vec::new();
    for i in 0..4 {
        let keep = (i < 3).then_some(KEEP);
        vals.push(start_validator_keeping(context, &oracle, &g, i, Some(path), keep).await);
    }
    vals
}

#[test]
fn validators_prune_below_their_window_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let p = path.clone();
    let (reached, checkpoint) =
        runner(31, Duration::from_secs(600)).start_and_recover(|context| async move {
            let vals = pruning_grid(&context, &p).await;
            let all: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &all, 12 * EPOCH_BLOCKS).await;
            let tip = all.iter().map(|v| height(v)).min().unwrap_or(0);
            for (i, v) in vals.iter().enumerate() {
                let kept = v.receipts.first_kept().expect("blocks are kept");
                if i < 3 {
                    assert!(
                        kept > 5 * EPOCH_BLOCKS && kept + 2 * KEEP > tip,
                        "validator {i} keeps from {kept} at {tip}"
                    );
                } else {
                    assert_eq!(kept, 1, "the archive keeps every block");
                }
                assert!(v.receipts.block(tip - KEEP + 1).is_some());
            }
            // The block archives shrink with them, a section at a time.
            let archive = archive_sections(&context, 3).await;
            assert!(archive as u64 >= 12 * EPOCH_BLOCKS / SIM_ARCHIVE_SECTION);
            for i in 0..3 {
                let sections = archive_sections(&context, i).await as u64;
                assert!(
                    sections <= 2 * KEEP / SIM_ARCHIVE_SECTION + 2,
                    "validator {i} holds {sections} sections, the archive {archive}"
                );
            }
            // Each epoch's handoff outlives the blocks: light clients follow the sets.
            assert!(vals[0].certificate(EPOCH_BLOCKS - 1).is_some());
            tip
        });
    // Restarted on what they kept, they start the current epoch's consensus (its first
    // block's parent is kept) and go on deciding.
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let vals = pruning_grid(&context, &path).await;
        let all: Vec<_> = vals.iter().collect();
        wait_for_height(&context, &all, reached + 2 * EPOCH_BLOCKS).await;
        for h in reached + 1..=reached + 2 * EPOCH_BLOCKS {
            agreed_root(&all, h);
        }
    });
}

/// Wait until `v` serves a snapshot (state and finalization written) at `height` or later.
async fn served_snapshot(
    context: &deterministic::Context,
    v: &Shared,
    height: u64,
) -> peergrid_types::api::SnapshotInfo {
    for _ in 0..400 {
        if let Some(s) = v.snapshots.list().into_iter().find(|s| s.height >= height) {
            return s;
        }
        context.sleep(Duration::from_millis(50)).await;
    }
    panic!("no snapshot at {height} or later");
}

#[test]
fn a_validator_joins_from_a_snapshot_after_the_others_pruned_the_blocks_before_it() {
    use peergrid_chain::snapshot::{self, SnapshotFile};
    runner(41, Duration::from_secs(600)).start(|context| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = genesis_with_epochs();
        let peers = participants(4);
        let oracle = network(&context, &peers).await;
        link_all(&oracle, &peers, LINK).await;
        // Three validators, a quorum of four, prune and write snapshots; the fourth is away.
        let mut vals = Vec::new();
        for i in 0..3 {
            let extras = Extras {
                keep_blocks: Some(KEEP),
                snapshots: Some(dir.path().join(format!("snapshots-{i}"))),
                ..Extras::default()
            };
            vals.push(
                start_validator_full(&context, &oracle, &g, i, Some(dir.path()), extras).await,
            );
        }
        // Past the 256 views consensus caches keep too: only a snapshot can start a
        // validator now.
        let three: Vec<_> = vals.iter().collect();
        wait_for_height(&context, &three, 16 * EPOCH_BLOCKS).await;
        assert!(
            vals.iter()
                .all(|v| v.receipts.first_kept() > Some(12 * EPOCH_BLOCKS)),
            "the early blocks are pruned: nobody can replay the chain from genesis"
        );

        // Its operator takes validator 0's newest snapshot, checks it as `validator run`
        // does, and starts from it.
        let info = served_snapshot(&context, &vals[0], 15 * EPOCH_BLOCKS - 1).await;
        let path = vals[0]
            .snapshots
            .state_file(info.height)
            .expect("the state file");
        let file = SnapshotFile::decode(&std::fs::read(path).expect("read")).expect("decodes");
        let certificate = certified(
            &context,
            &vals[0],
            file.height,
            &set_of(&vals[0], 0).expect("set"),
        )
        .await;
        assert_eq!((certificate.root, file.root), (info.root, info.root));
        let mut store = ledger_store(Some(dir.path()), 3);
        file.install(store.as_mut(), &g).expect("installs");
        drop(store);
        let bytes = vals[0]
            .snapshots
            .finalization(file.height)
            .expect("its finalization");
        let floor = snapshot::floor(&vals[0], &bytes, &certificate.block)
            .expect("the finalization of the certified block");
        // A finalization of another block is refused before consensus sees it.
        assert!(snapshot::floor(&vals[0], &bytes, &file.root).is_err());
        // An epoch ends while its operator is at it.
        wait_for_height(&context, &three, file.height + EPOCH_BLOCKS + 10).await;
        let extras = Extras {
            keep_blocks: Some(KEEP),
            floor: Some(floor),
            ..Extras::default()
        };
        vals.push(start_validator_full(&context, &oracle, &g, 3, Some(dir.path()), extras).await);
        assert_eq!(
            height(&vals[3]),
            file.height,
            "the ledger starts at the snapshot"
        );

        // It follows from there, to the others' state, and never applied the early blocks.
        let all: Vec<_> = vals.iter().collect();
        let target = vals.iter().map(|v| height(v)).max().unwrap_or(0) + 5;
        wait_for_height(&context, &all, target).await;
        for h in file.height + 1..=target {
            agreed_root(&all, h);
        }
        assert_eq!(vals[3].receipts.first_kept(), Some(file.height + 1));
        // The epochs that ended while it was away: it asks its peers for their handoffs, so
        // a client asking it alone can follow the sets too.
        let genesis_set = set_of(&vals[0], 0).expect("the genesis set");
        certified(&context, &vals[3], file.height + EPOCH_BLOCKS, &genesis_set).await;
        // And it votes: without validator 2, nothing is final unless it signs.
        isolate(&oracle, &peers, 2).await;
        let live: Vec<_> = [0, 1, 3].iter().map(|&i| &vals[i]).collect();
        let from = live.iter().map(|v| height(v)).max().unwrap_or(0);
        wait_for_height(&context, &live, from + 10).await;
        agreed_root(&live, from + 10);
    });
}
