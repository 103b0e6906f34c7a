//! Deterministic simulations of validators on lossy networks, with faults.

mod common;

use std::time::Duration;

use common::*;
use commonware_runtime::{Clock, Runner};
use peergrid_chain::shared::TxStatus;

#[test]
fn four_validators_finalize_transfers_and_agree_on_the_state() {
    for seed in [1u64, 2] {
        runner(seed, Duration::from_secs(120)).start(|context| async move {
            let g = genesis(4);
            let peers = participants(4);
            let oracle = network(&context, &peers).await;
            link_all(&oracle, &peers, LINK).await;
            let mut vals = Vec::new();
            for i in 0..4 {
                vals.push(start_validator(&context, &oracle, &g, i, None).await);
            }
            let refs: Vec<_> = vals.iter().collect();
            let to = user(9).account();
            let txs: Vec<_> = (0..20).map(|n| transfer(1, &to, n, 100 + n)).collect();
            for tx in &txs {
                submit_all(&refs, tx);
            }
            wait_for_height(&context, &refs, 10).await;
            // Every transfer is final by now, on every validator.
            loop {
                let done = refs.iter().all(|s| {
                    s.with_state(|st| st.account(&to).balance.0).unwrap_or(0)
                        == (0..20).map(|n| 100 + n).sum::<u64>()
                });
                if done {
                    break;
                }
                context.sleep(Duration::from_millis(100)).await;
            }
            let height = refs
                .iter()
                .map(|s| s.with_state(|st| st.height()).unwrap_or(0))
                .min()
                .unwrap_or(0);
            for h in 1..=height {
                agreed_root(&refs, h);
            }
            for tx in &txs {
                assert!(matches!(
                    vals[0].status(&tx.hash()),
                    TxStatus::Finalized { .. }
                ));
            }
        });
    }
}

#[test]
fn an_idle_chain_rests_and_wakes_for_the_first_transaction() {
    for seed in [3u64, 4] {
        runner(seed, Duration::from_secs(120)).start(|context| async move {
            let (vals, _oracle, _) = grid(&context, 4, None).await;
            let refs: Vec<_> = vals.iter().collect();
            let rest_ms = vals[0].genesis.params.idle_block_ms;
            assert_eq!(rest_ms, 1_000, "the default rest");
            wait_for_height(&context, &refs, 1).await;
            let from = min_height(&refs);
            context.sleep(Duration::from_secs(20)).await;
            let made = min_height(&refs) - from;
            // One block a second at rest; without the rest these 20 s made hundreds.
            assert!(
                (15..=21).contains(&made),
                "an idle chain made {made} blocks in 20 s, expected about one a second"
            );

            // Mid-rest, a transaction wakes the leader: final well before the rest would end.
            context.sleep(Duration::from_millis(300)).await;
            let tx = transfer(1, &user(9).account(), 0, 5);
            let start = context.current();
            submit_all(&refs, &tx);
            while !refs
                .iter()
                .all(|s| matches!(s.status(&tx.hash()), TxStatus::Finalized { .. }))
            {
                context.sleep(Duration::from_millis(5)).await;
            }
            let took = context.current().duration_since(start).unwrap_or_default();
            assert!(
                took < Duration::from_millis(300),
                "the first transaction after a rest took {took:?} to finalize everywhere"
            );
            assert_agree_up_to(&refs);
        });
    }
}

/// Run `validators` honest validators (ledgers in `dir` if given); returns them with the oracle.
async fn grid(
    context: &commonware_runtime::deterministic::Context,
    n: usize,
    dir: Option<&std::path::Path>,
) -> (
    Vec<std::sync::Arc<peergrid_chain::shared::Shared>>,
    commonware_p2p::simulated::Oracle<
        commonware_cryptography::ed25519::PublicKey,
        commonware_runtime::deterministic::Context,
    >,
    Vec<commonware_cryptography::ed25519::PublicKey>,
) {
    let g = genesis(n);
    let peers = participants(n);
    let oracle = network(context, &peers).await;
    link_all(&oracle, &peers, LINK).await;
    let mut vals = Vec::new();
    for i in 0..n {
        vals.push(start_validator(context, &oracle, &g, i, dir).await);
    }
    (vals, oracle, peers)
}

fn assert_agree_up_to(refs: &[&std::sync::Arc<peergrid_chain::shared::Shared>]) -> u64 {
    let height = min_height(refs);
    for h in 1..=height {
        agreed_root(refs, h);
    }
    height
}

#[test]
fn a_validator_cut_off_catches_up_by_backfill_and_agrees() {
    for seed in [3u64, 4] {
        runner(seed, Duration::from_secs(300)).start(|context| async move {
            let (vals, oracle, peers) = grid(&context, 4, None).await;
            let refs: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &refs, 5).await;
            for other in &peers[..3] {
                cut(&oracle, &peers[3], other).await;
            }
            let isolated_at = vals[3].with_state(|s| s.height()).unwrap_or(0);
            // Three of four are a quorum: they go on finalizing without it.
            let to = user(9).account();
            for n in 0..10 {
                submit_all(&refs[..3], &transfer(2, &to, n, 7));
            }
            wait_for_height(&context, &refs[..3], isolated_at + 25).await;
            assert!(
                vals[3].with_state(|s| s.height()).unwrap_or(0) <= isolated_at + 1,
                "the isolated validator cannot finalize alone"
            );
            link_all(&oracle, &peers, LINK).await;
            let target = min_height(&refs[..3]);
            wait_for_height(&context, &refs, target).await;
            let agreed = assert_agree_up_to(&refs);
            assert!(agreed >= target);
            assert_eq!(vals[3].with_state(|s| s.account(&to).balance.0), Some(70));
        });
    }
}

#[test]
fn a_two_two_partition_halts_finality_until_healed() {
    for seed in [5u64, 6] {
        runner(seed, Duration::from_secs(300)).start(|context| async move {
            let (vals, oracle, peers) = grid(&context, 4, None).await;
            let refs: Vec<_> = vals.iter().collect();
            wait_for_height(&context, &refs, 5).await;
            for a in &peers[..2] {
                for b in &peers[2..] {
                    cut(&oracle, a, b).await;
                }
            }
            // Let blocks already certified before the cut settle, then watch: nothing may finalize.
            context.sleep(Duration::from_secs(3)).await;
            let frozen: Vec<u64> = refs
                .iter()
                .map(|s| s.with_state(|st| st.height()).unwrap_or(0))
                .collect();
            context.sleep(Duration::from_secs(20)).await;
            let later: Vec<u64> = refs
                .iter()
                .map(|s| s.with_state(|st| st.height()).unwrap_or(0))
                .collect();
            assert_eq!(
                frozen, later,
                "a side without a quorum finalized something (safety)"
            );
            link_all(&oracle, &peers, LINK).await;
            let resumed = frozen.iter().max().copied().unwrap_or(0) + 10;
            wait_for_height(&context, &refs, resumed).await;
            assert_agree_up_to(&refs);
            // The 23 s without a block are the ledger's outage, not the nodes' down time,
            // counted alike by every validator from the blocks' own times.
            let outages: Vec<u64> = refs
                .iter()
                .map(|s| s.with_state(|st| st.economy().outage_ms).unwrap_or(0))
                .collect();
            assert!(outages[0] > 0, "{outages:?}");
            assert!(outages.iter().all(|o| *o == outages[0]), "{outages:?}");
        });
    }
}

#[test]
fn an_equivocating_validator_is_caught_and_the_others_stay_safe_and_live() {
    for seed in [7u64, 8] {
        runner(seed, Duration::from_secs(300)).start(|context| async move {
            let g = genesis(4);
            let peers = participants(4);
            let oracle = network(&context, &peers).await;
            link_all(&oracle, &peers, LINK).await;
            let mut vals = Vec::new();
            for i in 0..3 {
                vals.push(start_validator(&context, &oracle, &g, i, None).await);
            }
            start_equivocator(&context, &oracle, &peers, 3).await;
            let refs: Vec<_> = vals.iter().collect();
            let to = user(9).account();
            for n in 0..5 {
                submit_all(&refs, &transfer(3, &to, n, 11));
            }
            wait_for_height(&context, &refs, 20).await;
            assert_agree_up_to(&refs);
            let blocked = oracle.blocked().await.expect("oracle");
            assert!(
                blocked
                    .iter()
                    .any(|(by, whom)| whom == &peers[3] && peers[..3].contains(by)),
                "no honest validator blocked the equivocator: {blocked:?}"
            );
            assert!(
                !blocked.iter().any(|(_, whom)| peers[..3].contains(whom)),
                "an honest validator was blocked: {blocked:?}"
            );
        });
    }
}

#[test]
fn all_validators_crash_and_restart_without_losing_or_repeating_a_block() {
    crash_and_restart(9, false);
}

#[test]
fn a_validator_whose_ledger_is_lost_rebuilds_it_from_its_block_archive() {
    crash_and_restart(10, true);
}

/// Crash all four validators mid-stream, delete validator 0's ledger file if `lose_ledger`,
/// restart them all: every ledger must hold every finalized block exactly once.
fn crash_and_restart(seed: u64, lose_ledger: bool) {
    use commonware_runtime::deterministic;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let to = user(9).account();
    let p = path.clone();
    let (before, checkpoint) =
        runner(seed, Duration::from_secs(300)).start_and_recover(|context| async move {
            let (vals, _oracle, _peers) = grid(&context, 4, Some(&p)).await;
            let refs: Vec<_> = vals.iter().collect();
            for n in 0..10 {
                submit_all(&refs, &transfer(4, &to, n, 5));
            }
            wait_for_height(&context, &refs, 12).await;
            // Returning drops every task wherever it is: a crash of all four at once.
            refs.iter()
                .map(|s| s.with_state(|st| st.height()).unwrap_or(0))
                .collect::<Vec<_>>()
        });
    if lose_ledger {
        std::fs::remove_file(path.join("ledger-0.redb")).expect("ledger file");
    }
    let p = path.clone();
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let (vals, _oracle, _peers) = grid(&context, 4, Some(&p)).await;
        let refs: Vec<_> = vals.iter().collect();
        if !lose_ledger {
            for (v, h) in vals.iter().zip(&before) {
                assert!(
                    v.with_state(|s| s.height()).unwrap_or(0) >= *h,
                    "a finalized block was lost in the crash"
                );
            }
        }
        let target = before.iter().max().copied().unwrap_or(0) + 10;
        wait_for_height(&context, &refs, target).await;
        // Each transfer applied exactly once on every validator.
        for v in &vals {
            assert_eq!(v.with_state(|s| s.account(&to).balance.0), Some(50));
        }
        let h = min_height(&refs);
        let root = agreed_root(&refs, h);
        assert!(refs.iter().all(|s| {
            s.with_state(|st| st.height() > h || st.root() == root)
                .unwrap_or(false)
        }));
    });
}

#[test]
fn a_lossy_network_with_latency_spikes_still_finalizes_every_transfer_in_agreement() {
    for seed in [11u64, 12] {
        runner(seed, Duration::from_secs(300)).start(|context| async move {
            let g = genesis(4);
            let peers = participants(4);
            let oracle = network(&context, &peers).await;
            // One message in ten lost, and slow, uneven links.
            let lossy = commonware_p2p::simulated::Link {
                latency: Duration::from_millis(40),
                jitter: Duration::from_millis(30),
                success_rate: commonware_utils::probability!(0.9),
            };
            link_all(&oracle, &peers, lossy.clone()).await;
            let mut vals = Vec::new();
            for i in 0..4 {
                vals.push(start_validator(&context, &oracle, &g, i, None).await);
            }
            let refs: Vec<_> = vals.iter().collect();
            let to = user(9).account();
            let amounts: Vec<u64> = (0..30).map(|n| 100 + n).collect();
            let txs: Vec<_> = amounts
                .iter()
                .enumerate()
                .map(|(n, a)| transfer(1, &to, n as u64, *a))
                .collect();
            for tx in &txs[..10] {
                submit_all(&refs, tx);
            }
            wait_for_height(&context, &refs, 5).await;
            // A latency spike: every link at 600 ms with more loss, for 10 s.
            let spike = commonware_p2p::simulated::Link {
                latency: Duration::from_millis(600),
                jitter: Duration::from_millis(200),
                success_rate: commonware_utils::probability!(0.8),
            };
            relink_all(&oracle, &peers, spike).await;
            for tx in &txs[10..20] {
                submit_all(&refs, tx);
            }
            context.sleep(Duration::from_secs(10)).await;
            relink_all(&oracle, &peers, lossy).await;
            for tx in &txs[20..] {
                submit_all(&refs, tx);
            }
            let expected: u64 = amounts.iter().sum();
            loop {
                let done = refs
                    .iter()
                    .all(|s| s.with_state(|st| st.account(&to).balance.0).unwrap_or(0) == expected);
                if done {
                    break;
                }
                context.sleep(Duration::from_millis(200)).await;
            }
            assert_agree_up_to(&refs);
            for tx in &txs {
                assert!(
                    matches!(vals[0].status(&tx.hash()), TxStatus::Finalized { .. }),
                    "every transfer is final exactly once"
                );
            }
        });
    }
}

/// The ways the Byzantine leader below breaks its blocks, one per proposal in turn.
const TAMPERINGS: [&str; 7] = [
    "a forged signature",
    "a transaction twice",
    "a time ahead of every clock",
    "a time not after its parent's",
    "an expired transaction",
    "a replayed transaction",
    "a height that skips one",
];

#[test]
fn a_leader_proposing_invalid_blocks_is_outvoted_and_none_of_its_blocks_is_finalized() {
    use commonware_cryptography::Digestible;
    use peergrid_chain::block::Block;
    use std::sync::{Arc, Mutex};

    for seed in [21u64, 22] {
        runner(seed, Duration::from_secs(300)).start(|context| async move {
            let g = genesis(4);
            let peers = participants(4);
            let oracle = network(&context, &peers).await;
            link_all(&oracle, &peers, LINK).await;
            let mut vals = Vec::new();
            for i in 0..3 {
                vals.push(start_validator(&context, &oracle, &g, i, None).await);
            }
            let refs: Vec<_> = vals.iter().collect();
            let to = user(9).account();
            // A transfer finalized before the faulty leader starts: its replay is invalid.
            let first = transfer(1, &to, 0, 7);
            submit_all(&refs, &first);
            while !refs
                .iter()
                .all(|s| matches!(s.status(&first.hash()), TxStatus::Finalized { .. }))
            {
                context.sleep(Duration::from_millis(50)).await;
            }

            let proposed: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
            let tamper = {
                let proposed = proposed.clone();
                let genesis_ms = g.genesis_time_ms;
                move |parent: &Block, b: Block| {
                    let mut log = proposed.lock().expect("lock");
                    let kind = log.len() % TAMPERINGS.len();
                    // A valid transfer of a fresh sender, far from any nonce in use.
                    let valid = transfer(2, &user(9).account(), 1_000 + log.len() as u64, 1);
                    let mut txs = b.txs.clone();
                    let (mut height, mut time_ms) = (b.height, b.time_ms);
                    match kind {
                        0 => {
                            let mut forged = valid;
                            forged.signature.0[5] ^= 1;
                            txs.push(forged);
                        }
                        1 => txs.extend([valid.clone(), valid]),
                        2 => time_ms += 60_000,
                        3 => time_ms = parent.time_ms,
                        4 => {
                            let mut body = valid.body;
                            body.expires_ms = genesis_ms;
                            txs.push(body.sign(&user(2)));
                        }
                        5 => txs.push(first.clone()),
                        _ => height += 1,
                    }
                    let bad = Block::new(b.parent, height, time_ms, txs);
                    log.push((kind, hex::encode(bad.digest().as_ref())));
                    bad
                }
            };
            start_validator_with(&context, &oracle, &g, 3, None, Some(Arc::new(tamper))).await;

            // Honest traffic keeps flowing while the faulty leader takes its turns.
            for n in 1..40 {
                submit_all(&refs, &transfer(1, &to, n, 7));
                context.sleep(Duration::from_millis(200)).await;
            }
            loop {
                let tampered = proposed.lock().expect("lock").len() >= 2 * TAMPERINGS.len();
                let paid = refs
                    .iter()
                    .all(|s| s.with_state(|st| st.account(&to).balance.0).unwrap_or(0) == 40 * 7);
                if tampered && paid {
                    break;
                }
                context.sleep(Duration::from_millis(200)).await;
            }
            let height = assert_agree_up_to(&refs);
            let finalized: std::collections::HashSet<String> = (1..=height)
                .filter_map(|h| vals[0].receipts.block(h).map(|b| b.digest))
                .collect();
            assert_eq!(finalized.len() as u64, height, "every height has one block");
            let proposed = proposed.lock().expect("lock").clone();
            for (kind, digest) in &proposed {
                assert!(
                    !finalized.contains(digest),
                    "a block with {} was finalized",
                    TAMPERINGS[*kind]
                );
            }
            // Every honest transfer is final (the loop waited for it), and nothing of the faulty
            // leader's applied.
            assert_eq!(
                vals[0]
                    .with_state(|st| st.account(&user(2).account()).nonce)
                    .unwrap_or(u64::MAX),
                0,
                "a transaction only the faulty leader carried was applied"
            );
            let blocked = oracle.blocked().await.expect("oracle");
            assert!(
                !blocked.iter().any(|(_, whom)| peers[..3].contains(whom)),
                "an honest validator was blocked: {blocked:?}"
            );
        });
    }
}
