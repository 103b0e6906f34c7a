//! `peergrid bench ledger`: finality latency and sustained finalized transfers per second of a
//! 4-validator devnet on this machine, next to the state machine's own apply rate measured in
//! the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;

use peergrid_client::Client;
use peergrid_core::{Amount, Keypair, Payload, SignedTx, TxHash};
use peergrid_ledger::genesis::GenesisBalance;
use peergrid_ledger::{BlockContext, Genesis, Ledger, MemoryStore};

use crate::{Options, Supervisor};

/// What to measure.
#[derive(Clone, Debug)]
pub struct LedgerBench {
    /// Sending accounts (each sends `txs / accounts` transfers in nonce order).
    pub accounts: usize,
    /// Transfers to send.
    pub txs: usize,
    /// Offered load, transfers per second.
    pub rate: usize,
    /// First port of the validators.
    pub base_port: u16,
}

/// What was measured.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerReport {
    /// Transfers submitted.
    pub submitted: usize,
    /// Transfers seen finalized.
    pub finalized: usize,
    /// Finality latency, median, ms.
    pub latency_p50_ms: f64,
    /// Finality latency, 99th percentile, ms.
    pub latency_p99_ms: f64,
    /// Finalized transfers per second, first submission to last finalization.
    pub finalized_per_sec: f64,
    /// The state machine alone applying the same transfers, per second.
    pub apply_per_sec: f64,
}

fn bench_key(i: usize) -> Keypair {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

fn presign(keys: &[Keypair], genesis: &Genesis, txs: usize) -> Vec<SignedTx> {
    let rounds = txs.div_ceil(keys.len());
    let mut out = Vec::with_capacity(rounds * keys.len());
    for round in 0..rounds {
        for (i, k) in keys.iter().enumerate() {
            let to = keys[(i + 1) % keys.len()].account();
            out.push(SignedTx::new(
                k,
                &genesis.chain_id,
                round as u64,
                Payload::Transfer {
                    to,
                    amount: Amount(1 + round as u64),
                },
            ));
        }
    }
    out.truncate(txs);
    out
}

/// The state machine alone: the same transfers applied in blocks of 1,000 on one core.
fn apply_rate(genesis: &Genesis, txs: &[SignedTx]) -> anyhow::Result<f64> {
    let mut ledger = Ledger::open(MemoryStore::default(), genesis)?;
    let start = Instant::now();
    for (h, block) in txs.chunks(1000).enumerate() {
        let ctx = BlockContext {
            height: h as u64 + 1,
            time_ms: genesis.genesis_time_ms + (h as u64 + 1) * 100,
        };
        ledger.execute_block(ctx, block)?;
    }
    Ok(txs.len() as f64 / start.elapsed().as_secs_f64())
}

/// Wait until every validator finalizes blocks in quick succession, and return the lowest
/// height they reached. Right after start a validator may not have reached all its peers yet:
/// its views as leader then time out (a second each), which is start-up, not load.
async fn wait_steady(apis: &[String], timeout: Duration) -> anyhow::Result<u64> {
    /// Heights each validator must finalize within [`WINDOW`]: every leader's turn, twice.
    const BLOCKS: u64 = 8;
    const WINDOW: Duration = Duration::from_millis(500);
    let clients: Vec<Client> = apis.iter().map(|a| Client::new(vec![a.clone()])).collect();
    let start = Instant::now();
    let mut seen: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); clients.len()];
    loop {
        let now = Instant::now();
        for (client, seen) in clients.iter().zip(&mut seen) {
            if let Ok(status) = client.status().await {
                seen.push((now, status.height));
            }
            seen.retain(|(at, _)| now.duration_since(*at) <= WINDOW);
        }
        let steady = seen.iter().all(|s| match (s.first(), s.last()) {
            (Some((_, low)), Some((_, high))) => high - low >= BLOCKS,
            _ => false,
        });
        if steady {
            return Ok(seen
                .iter()
                .filter_map(|s| s.last().map(|(_, h)| *h))
                .min()
                .unwrap_or(0));
        }
        if start.elapsed() > timeout {
            bail!("the validators did not settle into finalizing blocks within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Run the benchmark in `dir` with validators started from `exe`.
pub async fn ledger(exe: &Path, dir: &Path, b: &LedgerBench) -> anyhow::Result<LedgerReport> {
    if b.accounts == 0 || b.txs == 0 || b.rate == 0 {
        bail!("accounts, transfers and rate must all be above zero");
    }
    let keys: Vec<Keypair> = (0..b.accounts).map(bench_key).collect();
    let extra: Vec<GenesisBalance> = keys
        .iter()
        .map(|k| GenesisBalance {
            account: k.account(),
            amount: Amount::tokens(1_000_000),
        })
        .collect();
    let opts = Options {
        dir: dir.to_path_buf(),
        fresh: true,
        validators: 4,
        base_port: b.base_port,
        nodes: 0,
        params: Vec::new(),
    };
    let genesis = crate::prepare_with(&opts, &extra)?;
    let txs = presign(&keys, &genesis, b.txs);
    let apply_per_sec = apply_rate(&genesis, &txs)?;

    let mut supervisor = Supervisor::start(&opts, &genesis, exe)?;
    supervisor.wait_finalizing(Duration::from_secs(60)).await?;
    let apis = supervisor.running.apis.clone();
    let from = wait_steady(&apis, Duration::from_secs(60)).await? + 1;
    let follower = Client::new(apis.clone());

    let submitted: Arc<Mutex<HashMap<TxHash, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let last_final: Arc<Mutex<Option<Instant>>> = Arc::default();
    let total = txs.len();
    let watch = {
        let (submitted, latencies, last_final) =
            (submitted.clone(), latencies.clone(), last_final.clone());
        async move {
            let mut events = follower.events(from);
            while let Some(block) = events.next().await {
                let now = Instant::now();
                let mut lat = latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let sent = submitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                for tx in &block.txs {
                    if let Some(t) = sent.get(&tx.hash) {
                        lat.push(now.duration_since(*t).as_secs_f64() * 1000.0);
                    }
                }
                if !block.txs.is_empty() {
                    *last_final.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(now);
                }
                if lat.len() >= total {
                    break;
                }
            }
            anyhow::Ok(())
        }
    };
    let send = {
        let submitted = submitted.clone();
        async move {
            let clients: Vec<Client> = apis.iter().map(|a| Client::new(vec![a.clone()])).collect();
            let batch = (b.rate / 10).clamp(1, 5_000);
            let start = Instant::now();
            for (i, chunk) in txs.chunks(batch).enumerate() {
                // Pace the offered load: chunk i leaves at i * batch / rate seconds.
                let due = Duration::from_secs_f64((i * batch) as f64 / b.rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let at = Instant::now();
                {
                    let mut sent = submitted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    for tx in chunk {
                        sent.insert(tx.hash(), at);
                    }
                }
                let (accepted, errors) = clients[i % clients.len()].submit_batch(chunk).await?;
                if accepted != chunk.len() {
                    bail!(
                        "{} of {} transfers refused, first: {:?}",
                        chunk.len() - accepted,
                        chunk.len(),
                        errors.first()
                    );
                }
            }
            anyhow::Ok(start)
        }
    };
    let (watched, sent) =
        tokio::time::timeout(Duration::from_secs(120), futures::future::join(watch, send))
            .await
            .context("the devnet did not finalize every transfer within 120 s")?;
    watched?;
    let started = sent?;
    supervisor.stop();
    let mut lat = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let end = last_final
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .unwrap_or_else(Instant::now);
    Ok(LedgerReport {
        submitted: total,
        finalized: lat.len(),
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        finalized_per_sec: lat.len() as f64 / end.duration_since(started).as_secs_f64(),
        apply_per_sec,
    })
}
