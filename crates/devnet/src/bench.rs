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
use peergrid_core::{AccountId, Amount, Keypair, Payload, SignedTx, TxHash};
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
    /// Seconds to watch the devnet idle before the load (0 skips the idle figures).
    pub idle_secs: u64,
    /// After the load, time a validator that lost its data catching up.
    pub catch_up: bool,
}

/// What an idle devnet costs, and how soon it finalizes a transfer sent while it rests.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// Seconds watched.
    pub secs: f64,
    /// Blocks finalized per second while nothing was sent.
    pub blocks_per_sec: f64,
    /// CPU used by each validator process, percent of one core.
    pub cpu_percent: Vec<f64>,
    /// Growth of what each validator keeps (finalized blocks and certificates, ledger,
    /// receipts), bytes per day at the watched rate.
    pub disk_bytes_per_day: Vec<f64>,
    /// Each validator's pruned stores at the end, bytes: simplex's vote journals and
    /// marshal's caches, pruned by view past their retention, so bounded, not growth.
    pub pruned_store_bytes: Vec<u64>,
    /// What each idle block adds to what a validator keeps, bytes (its growth over the
    /// blocks made): times `keep_blocks`, the most the blocks kept take.
    pub kept_bytes_per_block: Vec<f64>,
    /// Finality of a lone transfer sent while the chain rests, median, ms.
    pub rested_latency_p50_ms: f64,
    /// The same, the slowest of the samples, ms.
    pub rested_latency_max_ms: f64,
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
    /// The devnet at rest, before the load.
    pub idle: Option<IdleReport>,
    /// A validator that lost its data catching up from the others, after the load.
    pub catch_up: Option<CatchUpReport>,
}

/// A validator started on an empty data directory catching up from the others: what a new
/// validator does, from its start to the others' height.
#[derive(Clone, Debug, Serialize)]
pub struct CatchUpReport {
    /// Blocks it fetched and applied.
    pub blocks: u64,
    /// Transfers in them.
    pub transfers: usize,
    /// Seconds from its start to the others' height.
    pub secs: f64,
    /// Blocks per second.
    pub blocks_per_sec: f64,
    /// Transfers per second, next to the state machine's apply rate.
    pub transfers_per_sec: f64,
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

/// Wait until every validator finalizes blocks in quick succession (an idle chain's rest of
/// `rest` apart), and return the lowest height they reached. Right after start a validator
/// may not have reached all its peers yet: its views as leader then time out (a second each
/// past the rest), which is start-up, not load.
async fn wait_steady(apis: &[String], rest: Duration, timeout: Duration) -> anyhow::Result<u64> {
    /// Heights each validator must finalize within `window`: every leader's turn, twice.
    const BLOCKS: u64 = 8;
    let window = Duration::from_millis(500) + rest * BLOCKS as u32;
    let clients: Vec<Client> = apis.iter().map(|a| Client::new(vec![a.clone()])).collect();
    let start = Instant::now();
    let mut seen: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); clients.len()];
    loop {
        let now = Instant::now();
        for (client, seen) in clients.iter().zip(&mut seen) {
            if let Ok(status) = client.status().await {
                seen.push((now, status.height));
            }
            seen.retain(|(at, _)| now.duration_since(*at) <= window);
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

/// A fresh four-validator devnet in `dir` with `nodes` nodes, where each account of `funded`
/// holds a million tokens at genesis: what a benchmark starts from.
pub(crate) fn prepare_funded(
    dir: &Path,
    base_port: u16,
    nodes: usize,
    funded: impl IntoIterator<Item = AccountId>,
) -> anyhow::Result<(Options, Genesis)> {
    let extra: Vec<GenesisBalance> = funded
        .into_iter()
        .map(|account| GenesisBalance {
            account,
            amount: Amount::tokens(1_000_000),
        })
        .collect();
    let opts = Options {
        dir: dir.to_path_buf(),
        fresh: true,
        validators: 4,
        base_port,
        nodes,
        params: Vec::new(),
    };
    let genesis = crate::prepare_with(&opts, &extra)?;
    Ok((opts, genesis))
}

/// Run the benchmark in `dir` with validators started from `exe`.
pub async fn ledger(exe: &Path, dir: &Path, b: &LedgerBench) -> anyhow::Result<LedgerReport> {
    if b.accounts == 0 || b.txs == 0 || b.rate == 0 {
        bail!("accounts, transfers and rate must all be above zero");
    }
    let keys: Vec<Keypair> = (0..b.accounts).map(bench_key).collect();
    // One more account, for the lone transfers sent at rest, so the load's nonces stay its own.
    let funded = keys
        .iter()
        .map(Keypair::account)
        .chain([bench_key(b.accounts).account()]);
    let (opts, genesis) = prepare_funded(dir, b.base_port, 0, funded)?;
    let txs = presign(&keys, &genesis, b.txs);
    let apply_per_sec = apply_rate(&genesis, &txs)?;

    let mut supervisor = Supervisor::start(&opts, &genesis, exe)?;
    supervisor.wait_finalizing(Duration::from_secs(60)).await?;
    let apis = supervisor.running.apis.clone();
    let rest = Duration::from_millis(genesis.params.idle_block_ms);
    let steady = wait_steady(&apis, rest, Duration::from_secs(60)).await?;
    let idle = if b.idle_secs > 0 {
        let probe = bench_key(b.accounts);
        Some(idle(&supervisor, dir, &apis, &probe, &genesis, b.idle_secs).await?)
    } else {
        None
    };
    let from = if idle.is_some() {
        wait_steady(&apis, rest, Duration::from_secs(60)).await? + 1
    } else {
        steady + 1
    };
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
        let (submitted, apis) = (submitted.clone(), apis.clone());
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
    let catch_up = if b.catch_up {
        Some(catch_up(&mut supervisor, dir, &apis, total).await?)
    } else {
        None
    };
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
        idle,
        catch_up,
    })
}

/// Kill the last validator, delete its data, and time its catch-up from the others to the
/// height they had: `transfers` is how many the chain carries by then.
async fn catch_up(
    supervisor: &mut Supervisor,
    dir: &Path,
    apis: &[String],
    transfers: usize,
) -> anyhow::Result<CatchUpReport> {
    let last = apis.len() - 1;
    let pid = supervisor.validator_pids()[last].context("the last validator is not running")?;
    crate::chaos::signal(pid, "-KILL");
    // Its death noticed, and its restart not due yet: the moment to take its data away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        supervisor.tend()?;
        if supervisor.validator_pids()[last].is_none() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the killed validator was not noticed dead within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let data = dir.join(format!("data/validator-{last}"));
    std::fs::remove_dir_all(&data).with_context(|| format!("cannot remove {}", data.display()))?;
    let target = Client::new(vec![apis[0].clone()]).status().await?.height;
    let deadline = Instant::now() + Duration::from_secs(30);
    while supervisor.validator_pids()[last].is_none() {
        if Instant::now() > deadline {
            bail!("the validator was not restarted within 30 s");
        }
        supervisor.tend()?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let newcomer = Client::new(vec![apis[last].clone()]);
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Ok(status) = newcomer.status().await
            && status.height >= target
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the validator did not catch up to height {target} within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(CatchUpReport {
        blocks: target,
        transfers,
        secs,
        blocks_per_sec: target as f64 / secs,
        transfers_per_sec: transfers as f64 / secs,
    })
}

/// Lone transfers sent at rest: enough for a median, few enough to keep the run short.
const RESTED_SAMPLES: u64 = 10;

/// Watch the devnet for `secs` with nothing sent: each validator's CPU time and data growth,
/// and blocks made; then the finality of lone transfers from `probe`, each sent while the
/// chain rests.
async fn idle(
    supervisor: &Supervisor,
    dir: &Path,
    apis: &[String],
    probe: &Keypair,
    genesis: &Genesis,
    secs: u64,
) -> anyhow::Result<IdleReport> {
    let pids = supervisor.validator_pids();
    let data: Vec<_> = (0..pids.len())
        .map(|i| dir.join(format!("data/validator-{i}")))
        .collect();
    let client = Client::new(apis.to_vec());
    let tick = clock_ticks_per_sec();
    let cpu0: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(cpu_ticks)).collect();
    let disk0: Vec<(u64, u64)> = data.iter().map(|d| dir_bytes(d)).collect();
    let h0 = client.status().await?.height;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let h1 = client.status().await?.height;
    let cpu_percent = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, before)| match (before, p.and_then(cpu_ticks)) {
            (Some(a), Some(b)) => (b.saturating_sub(*a)) as f64 / tick / elapsed * 100.0,
            _ => f64::NAN,
        })
        .collect();
    let disk1: Vec<(u64, u64)> = data.iter().map(|d| dir_bytes(d)).collect();
    let disk_bytes_per_day = disk1
        .iter()
        .zip(&disk0)
        .map(|((after, _), (before, _))| (*after as f64 - *before as f64) / elapsed * 86_400.0)
        .collect();
    let pruned_store_bytes = disk1.iter().map(|(_, pruned)| *pruned).collect();
    let blocks = h1.saturating_sub(h0).max(1) as f64;
    let kept_bytes_per_block = disk1
        .iter()
        .zip(&disk0)
        .map(|((after, _), (before, _))| (*after as f64 - *before as f64) / blocks)
        .collect();

    let rest = genesis.params.idle_block_ms;
    let mut lat = Vec::new();
    for n in 0..RESTED_SAMPLES {
        // Land at a different point of each rest: after a block, before the next is due.
        let wait = rest + rest * n / RESTED_SAMPLES;
        tokio::time::sleep(Duration::from_millis(wait.max(100))).await;
        let height = client.status().await?.height;
        let tx = SignedTx::new(
            probe,
            &genesis.chain_id,
            n,
            Payload::Transfer {
                to: probe.account(),
                amount: Amount(1),
            },
        );
        let hash = tx.hash();
        let mut events = Box::pin(client.events(height + 1));
        let sent = Instant::now();
        client.submit(&tx).await?;
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(block) = events.next().await {
                if block.txs.iter().any(|t| t.hash == hash) {
                    return true;
                }
            }
            false
        })
        .await;
        if found != Ok(true) {
            bail!("a transfer sent to the resting devnet was not finalized within 30 s");
        }
        lat.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    Ok(IdleReport {
        secs: elapsed,
        blocks_per_sec: h1.saturating_sub(h0) as f64 / elapsed,
        cpu_percent,
        disk_bytes_per_day,
        pruned_store_bytes,
        kept_bytes_per_block,
        rested_latency_p50_ms: percentile(&lat, 0.5),
        rested_latency_max_ms: lat.last().copied().unwrap_or(f64::NAN),
    })
}

/// User and system CPU time of process `pid`, all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

/// Clock ticks per second of `/proc`'s CPU times (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Bytes of the files under a validator's data folder `dir`: those kept, and those of the
/// stores pruned by view: the vote journals (`<partition>-consensus-<epoch>`, a file of
/// whole pages per view) and marshal's caches (`<partition>-cache-cache-<epoch>-…`), both
/// dropped once past their retention or their epoch.
fn dir_bytes(dir: &Path) -> (u64, u64) {
    fn walk(dir: &Path, pruned: bool, sums: &mut (u64, u64)) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    let pruned =
                        pruned || name.contains("-consensus-") || name.contains("-cache-cache-");
                    walk(&e.path(), pruned, sums);
                }
                _ => {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    if pruned {
                        sums.1 += len;
                    } else {
                        sums.0 += len;
                    }
                }
            }
        }
    }
    let mut sums = (0, 0);
    walk(dir, false, &mut sums);
    sums
}
