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
                vals.push(start_validator(&context, &oracle, &g, &peers, i, None).await);
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
