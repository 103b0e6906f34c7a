//! `peergrid bench chaos`: transfers under load on a devnet, an app with two replicas
//! answering requests, and a storage user putting and reading objects, while validators
//! (at most f at a time) and nodes (one at a time) are killed with SIGKILL, frozen with
//! SIGSTOP and brought back; then the checks the grid must pass after any of that.
//!
//! The checks: every validator ends at the same state root at the same height; every
//! transfer a client saw finalized is in the chain exactly once; no transfer the ledger
//! refused; on every validator, genesis + minted − burned equals the sum of all
//! balances; every object stored reads back identical; every app replica answers again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Serialize;

use peergrid_client::{Client, TxStatus};
use peergrid_core::{Amount, Keypair, Payload, SignedTx, TxHash};

use crate::Supervisor;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosBench {
    /// How long the faults go on.
    pub duration: Duration,
    /// Accounts sending transfers, each one at a time.
    pub senders: usize,
    /// Nodes to run (and kill) besides the four validators.
    pub nodes: usize,
    /// Seed of the fault schedule; the same seed picks the same faults in the same order.
    pub seed: u64,
    /// First port of the devnet.
    pub base_port: u16,
    /// A `wasi:http` component to deploy on two nodes and send requests to throughout
    /// (needs 2 nodes or more); `None` for no app traffic.
    pub app: Option<std::path::PathBuf>,
}

/// What happened and what the checks found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    /// Seconds of faults.
    pub secs: f64,
    /// Transfers signed and sent.
    pub sent: usize,
    /// Transfers the clients saw finalized.
    pub finalized: usize,
    /// Transfers the ledger refused (none should be).
    pub refused: usize,
    /// Processes killed with SIGKILL: validators, nodes.
    pub validators_killed: usize,
    /// Nodes killed with SIGKILL.
    pub nodes_killed: usize,
    /// Validators frozen with SIGSTOP for a few seconds.
    pub validators_frozen: usize,
    /// Restarts the supervisor made.
    pub restarts: u32,
    /// Longest time between two consecutive blocks (their ledger times), ms: an idle chain
    /// rests 1 s, a dead leader's view costs its timeout.
    pub max_finality_gap_ms: u64,
    /// The height every validator was compared at.
    pub height: u64,
    /// Whether every validator had the same state root there.
    pub roots_agree: bool,
    /// Transfers seen finalized that are not in the chain.
    pub missing: usize,
    /// Transfers in the chain more than once.
    pub duplicated: usize,
    /// Whether the supply identity held on every validator.
    pub supply_conserved: bool,
    /// Storage traffic, when the run has nodes enough for it.
    pub storage: Option<StorageChaos>,
    /// App traffic, when the run deploys one.
    pub app: Option<AppChaos>,
}

/// What a client of an app with two replicas saw while their nodes were killed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AppChaos {
    /// Replicas deployed, each on its own node.
    pub replicas: usize,
    /// Requests answered 200 by the first replica asked or, when it failed, the other.
    pub answered: usize,
    /// Requests neither replica answered (both nodes down or restoring at that moment).
    pub unanswered: usize,
    /// Requests a replica failed and the other then answered.
    pub failed_over: usize,
    /// Replicas that did not answer within 60 s after the faults.
    pub down_after: usize,
}

/// What a storage user saw while nodes and validators were killed around it, and whether
/// every object it stored read back identical afterwards.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StorageChaos {
    /// The erasure code most objects got: a put made while a node is down gets a narrower
    /// one, by design, so this is the most frequent, not the last.
    pub scheme: String,
    /// Objects stored per erasure code.
    pub schemes: std::collections::BTreeMap<String, usize>,
    /// Objects stored (their put returned a capability).
    pub stored: usize,
    /// Puts that failed during the faults (too many nodes unreachable at that moment).
    pub puts_failed: usize,
    /// Reads during the faults that returned the object, checked byte for byte.
    pub reads: usize,
    /// Reads during the faults that failed.
    pub reads_failed: usize,
    /// Objects that did not read back after the faults (within 60 s each).
    pub unreadable: usize,
    /// Objects that read back different from what was put, during the faults or after.
    pub differ: usize,
}

impl ChaosReport {
    /// What failed, if anything.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.roots_agree {
            out.push(format!(
                "validators disagree on the state root at height {}",
                self.height
            ));
        }
        if self.missing > 0 {
            out.push(format!(
                "{} finalized transfers are missing from the chain",
                self.missing
            ));
        }
        if self.duplicated > 0 {
            out.push(format!(
                "{} transfers are in the chain twice",
                self.duplicated
            ));
        }
        if self.refused > 0 {
            out.push(format!("{} transfers were refused", self.refused));
        }
        if !self.supply_conserved {
            out.push("genesis + minted - burned differs from the sum of balances".into());
        }
        if self.finalized == 0 {
            out.push("no transfer was finalized".into());
        }
        if let Some(st) = &self.storage {
            if st.stored == 0 {
                out.push("no object was stored".into());
            }
            if st.unreadable > 0 {
                out.push(format!(
                    "{} of {} stored objects did not read back after the faults",
                    st.unreadable, st.stored
                ));
            }
            if st.differ > 0 {
                out.push(format!(
                    "{} reads returned bytes different from what was put",
                    st.differ
                ));
            }
        }
        if let Some(app) = &self.app {
            if app.answered == 0 {
                out.push("the app answered no request".into());
            }
            if app.down_after > 0 {
                out.push(format!(
                    "{} of the app's {} replicas did not answer after the faults",
                    app.down_after, app.replicas
                ));
            }
        }
        let settled = self.finalized + self.refused;
        if self.sent > settled {
            out.push(format!(
                "{} transfers were never finalized, though sent again for 30 s after the faults",
                self.sent - settled
            ));
        }
        out
    }
}

/// A small deterministic generator (xorshift64*): the fault schedule needs no more.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn sender_key(i: usize) -> Keypair {
    let mut seed = [0xc4u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Keypair::from_seed(seed)
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
}

/// Transfers seen finalized, and refused, by the senders.
#[derive(Default)]
struct Seen {
    finalized: HashSet<TxHash>,
    /// The highest block any of them was seen finalized in.
    highest: u64,
    refused: usize,
    sent: usize,
}

/// One account's transfers, each sent, followed until final, and sent again (the same
/// transaction: it can only apply once) to whichever validator answers when it goes
/// missing, until `until`.
async fn send_from(
    client: Client,
    key: Keypair,
    chain: String,
    to: peergrid_core::AccountId,
    seen: Arc<Mutex<Seen>>,
    until: Instant,
) {
    let mut nonce = 0;
    while Instant::now() < until {
        let tx = SignedTx::new(
            &key,
            &chain,
            nonce,
            Payload::Transfer {
                to,
                amount: Amount(1 + nonce),
            },
        );
        let hash = tx.hash();
        if let Ok(mut s) = seen.lock() {
            s.sent += 1;
        }
        loop {
            if Instant::now() > until + Duration::from_secs(30) {
                tracing::warn!(%hash, "a chaos transfer was not finalized 30 s after the faults");
                return;
            }
            let _ = client.submit(&tx).await;
            match client.wait(&hash, Duration::from_secs(5)).await {
                Ok(TxStatus::Finalized { height, .. }) => {
                    if let Ok(mut s) = seen.lock() {
                        s.finalized.insert(hash);
                        s.highest = s.highest.max(height);
                    }
                    break;
                }
                Ok(TxStatus::Rejected { reason, .. }) => {
                    tracing::warn!(%hash, %reason, "a chaos transfer was refused");
                    if let Ok(mut s) = seen.lock() {
                        s.refused += 1;
                    }
                    break;
                }
                // Lost with a validator that died before gossiping it, or still pending.
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        nonce += 1;
    }
}

/// Nodes needed for storage traffic: an erasure code of 2 + 1 survives one node down.
pub const STORAGE_NODES_MIN: usize = 3;

fn storage_key() -> Keypair {
    Keypair::from_seed([0x5a; 32])
}

/// `len` bytes that differ per `seed`.
fn object_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Objects a storage user put, by capability, with their hash.
#[derive(Default)]
struct Stored {
    objects: Vec<(peergrid_storage::Capability, peergrid_core::Hash)>,
    report: StorageChaos,
}

/// Read the object `cap` into `out`: whether it arrived, and whether it is `want`.
async fn read_back(
    storage: &peergrid_storage::Storage,
    cap: &peergrid_storage::Capability,
    out: &Path,
    want: &peergrid_core::Hash,
) -> Option<bool> {
    let _ = std::fs::remove_file(out);
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        storage.get(cap, out, None, &|_| {}),
    )
    .await;
    if !matches!(got, Ok(Ok(_))) {
        return None;
    }
    let bytes = tokio::fs::read(out).await.ok()?;
    Some(peergrid_core::Hash::of(&bytes) == *want)
}

/// Put objects of 16 KiB to 1 MiB one after another until `until`, reading an earlier one
/// back after each put.
async fn store_and_read(
    storage: Arc<peergrid_storage::Storage>,
    dir: std::path::PathBuf,
    stored: Arc<Mutex<Stored>>,
    seed: u64,
    until: Instant,
) {
    let mut dice = Dice::new(seed ^ 0x5707);
    let mut i = 0u64;
    while Instant::now() < until {
        let len = (16 << 10) + dice.below(1 << 20) as usize;
        let data = object_bytes(len, seed.wrapping_add(i));
        let hash = peergrid_core::Hash::of(&data);
        let input = dir.join("put.bin");
        if std::fs::write(&input, &data).is_err() {
            return;
        }
        let name = format!("chaos/{i}");
        let put = tokio::time::timeout(
            Duration::from_secs(60),
            storage.put(&input, &name, None, &|_| {}),
        )
        .await;
        // A put fails at once while a node is down: pause, so the count says how long puts
        // could not be stored rather than how fast they were retried.
        if !matches!(put, Ok(Ok(_))) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let pick = {
            let Ok(mut s) = stored.lock() else { return };
            match put {
                Ok(Ok(report)) => {
                    *s.report
                        .schemes
                        .entry(report.scheme.to_string())
                        .or_default() += 1;
                    if let Some((most, _)) = s.report.schemes.iter().max_by_key(|(_, n)| **n) {
                        s.report.scheme = most.clone();
                    }
                    s.report.stored += 1;
                    s.objects.push((report.capability, hash));
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "chaos: a put failed");
                    s.report.puts_failed += 1;
                }
                Err(_) => {
                    tracing::info!("chaos: a put took more than 60 s");
                    s.report.puts_failed += 1;
                }
            }
            (!s.objects.is_empty()).then(|| s.objects[dice.below(s.objects.len() as u64) as usize])
        };
        if let Some((cap, want)) = pick {
            let read = read_back(&storage, &cap, &dir.join("get.bin"), &want).await;
            let Ok(mut s) = stored.lock() else { return };
            match read {
                Some(true) => s.report.reads += 1,
                Some(false) => s.report.differ += 1,
                None => s.report.reads_failed += 1,
            }
        }
        i += 1;
    }
}

/// A storage user with room on every node, or why not.
async fn storage_user(
    apis: &[String],
    nodes: usize,
    duration: Duration,
) -> anyhow::Result<Arc<peergrid_storage::Storage>> {
    // Room for every put of the run: a few a second of half a MiB on average, a shard of
    // each on every node; what runs out is then never the reservation.
    let minutes = duration.as_secs().div_ceil(60).max(1);
    let bytes = (minutes << 28).max(1 << 30);
    let storage =
        peergrid_storage::Storage::connect(Client::new(apis.to_vec()), storage_key()).await?;
    // Nodes count as up once their first uptime report is final.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match storage
            .reserve(bytes, peergrid_storage::NodeChoice::Count(nodes))
            .await
        {
            Ok(_) => return Ok(Arc::new(storage)),
            Err(e) if Instant::now() > deadline => {
                bail!("could not reserve storage on {nodes} nodes within 90 s: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Deploy `component` on two nodes as the storage user, the way a builder does
/// (`peergrid deploy`); returns the replicas' URLs. A deployment placed on fewer nodes
/// (one did not start it in time) is tried again under another name, three times at most.
fn deploy_app(
    exe: &Path,
    dir: &Path,
    apis: &[String],
    component: &Path,
) -> anyhow::Result<Vec<String>> {
    let home = dir.join("chaos-app");
    std::fs::create_dir_all(&home)?;
    let key = home.join("key.json");
    storage_key().save(&key, true)?;
    let mut last = String::new();
    for attempt in 1..=3 {
        let out = std::process::Command::new(exe)
            .env("PEERGRID_HOME", &home)
            .args(["--ledger", &apis.join(",")])
            .arg("--key")
            .arg(&key)
            .args(["--json", "deploy"])
            .arg(component)
            .args([
                "--name",
                &format!("chaos-hello-{attempt}"),
                "--replicas",
                "2",
            ])
            .output()
            .context("cannot run peergrid deploy")?;
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let urls: Vec<String> = deployed["app"]["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["url"].as_str().map(str::to_string))
            .collect();
        if out.status.success() && urls.len() == 2 {
            return Ok(urls);
        }
        last = format!("{} replicas ({said})", urls.len());
        tracing::warn!(
            attempt,
            "chaos: the app was not deployed on two nodes: {last}"
        );
    }
    bail!(
        "deploying {} on two nodes failed three times; the last gave {last}",
        component.display()
    )
}

/// Wait until the ledger has `count` nodes up (each counts once its first uptime report
/// is final), for at most 90 s.
async fn wait_nodes_up(apis: &[String], count: usize) -> anyhow::Result<()> {
    let client = Client::new(apis.to_vec());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up = match client.nodes(None).await {
            Ok((_, nodes)) => nodes
                .iter()
                .filter(|n| n.status == peergrid_ledger::NodeStatus::Up)
                .count(),
            Err(_) => 0,
        };
        if up >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {up} of {count} nodes were up on the ledger after 90 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the replica at `url` answers 200 within 2 s.
async fn answers(http: &reqwest::Client, url: &str) -> bool {
    matches!(
        http.get(url).timeout(Duration::from_secs(2)).send().await,
        Ok(r) if r.status() == reqwest::StatusCode::OK
    )
}

/// Ask the app ten times a second until `until`, each time one replica in turn and the
/// other if it fails.
async fn request_app(urls: Vec<String>, app: Arc<Mutex<AppChaos>>, until: Instant) {
    let http = reqwest::Client::new();
    let mut turn = 0usize;
    while Instant::now() < until {
        let first = &urls[turn % urls.len()];
        let second = &urls[(turn + 1) % urls.len()];
        let outcome = if answers(&http, first).await {
            Some(false)
        } else if answers(&http, second).await {
            Some(true)
        } else {
            None
        };
        if let Ok(mut a) = app.lock() {
            match outcome {
                Some(failed_over) => {
                    a.answered += 1;
                    a.failed_over += usize::from(failed_over);
                }
                None => a.unanswered += 1,
            }
        }
        turn += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run the chaos benchmark in `dir` with processes started from `exe`.
pub async fn chaos(exe: &Path, dir: &Path, b: &ChaosBench) -> anyhow::Result<ChaosReport> {
    if b.senders == 0 {
        bail!("--senders must be above zero");
    }
    let keys: Vec<Keypair> = (0..b.senders).map(sender_key).collect();
    let funded = keys
        .iter()
        .map(Keypair::account)
        .chain([storage_key().account()]);
    let (opts, genesis) = crate::bench::prepare_funded(dir, b.base_port, b.nodes, funded)?;
    let mut supervisor = Supervisor::start(&opts, &genesis, exe)?;
    let result = run(exe, dir, &mut supervisor, &genesis, &keys, b).await;
    // Nothing stays frozen: a stopped process would not hear the request to stop.
    let pids = supervisor
        .validator_pids()
        .into_iter()
        .chain(supervisor.node_pids());
    for pid in pids.flatten() {
        signal(pid, "-CONT");
    }
    supervisor.stop();
    result
}

async fn run(
    exe: &Path,
    dir: &Path,
    supervisor: &mut Supervisor,
    genesis: &peergrid_ledger::Genesis,
    keys: &[Keypair],
    b: &ChaosBench,
) -> anyhow::Result<ChaosReport> {
    supervisor.wait_finalizing(Duration::from_secs(60)).await?;
    if b.nodes > 0 {
        let farms = supervisor.ensure_farms().await?;
        supervisor
            .start_nodes(exe, &farms, b.nodes, Duration::from_secs(60))
            .await?;
    }
    let apis = supervisor.running.apis.clone();
    let storage = if b.nodes >= STORAGE_NODES_MIN {
        Some(storage_user(&apis, b.nodes, b.duration).await?)
    } else {
        None
    };
    let storage_dir = dir.join("chaos-storage");
    std::fs::create_dir_all(&storage_dir)?;
    let app_urls = match &b.app {
        Some(component) if b.nodes >= 2 => {
            wait_nodes_up(&apis, b.nodes).await?;
            Some(deploy_app(exe, dir, &apis, component)?)
        }
        _ => None,
    };
    let start_height = Client::new(apis.clone()).status().await?.height;

    // A follower measures the longest gap between consecutive blocks' times: how long the
    // ledger went without finalizing, whichever validator the follower happens to read.
    let gap = Arc::new(Mutex::new(0u64));
    let follower = {
        let (gap, apis) = (gap.clone(), apis.clone());
        tokio::spawn(async move {
            let client = Client::new(apis);
            let mut blocks = client.events(start_height + 1);
            let mut previous = None;
            while let Some(block) = blocks.next().await {
                if let (Some(p), Ok(mut g)) = (previous, gap.lock()) {
                    *g = (*g).max(block.time_ms.saturating_sub(p));
                }
                previous = Some(block.time_ms);
            }
        })
    };

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let start = Instant::now();
    let until = start + b.duration;
    let senders: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            // Each sender starts at another validator, so the load is spread.
            let mut urls = apis.clone();
            urls.rotate_left(i % apis.len());
            tokio::spawn(send_from(
                Client::new(urls),
                key.clone(),
                genesis.chain_id.clone(),
                keys[(i + 1) % keys.len()].account(),
                seen.clone(),
                until,
            ))
        })
        .collect();
    let stored: Arc<Mutex<Stored>> = Arc::default();
    let storer = storage.clone().map(|storage| {
        tokio::spawn(store_and_read(
            storage,
            storage_dir.clone(),
            stored.clone(),
            b.seed,
            until,
        ))
    });
    let app: Arc<Mutex<AppChaos>> = Arc::default();
    let requester = app_urls
        .clone()
        .map(|urls| tokio::spawn(request_app(urls, app.clone(), until)));

    let mut report = ChaosReport::default();
    let mut dice = Dice::new(b.seed);
    // A validator counts as down from its fault until its API answers again.
    let mut frozen: Vec<(u32, Instant)> = Vec::new();
    let mut hit: HashMap<String, Instant> = HashMap::new();
    let mut next_fault = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for line in supervisor.tend()? {
            tracing::info!("{line}");
        }
        let now = Instant::now();
        frozen.retain(|(pid, thaw)| {
            if now >= *thaw {
                signal(*pid, "-CONT");
                false
            } else {
                true
            }
        });
        if now >= next_fault {
            fault(
                supervisor,
                &apis,
                &mut dice,
                &mut frozen,
                &mut hit,
                &mut report,
            )
            .await;
            next_fault = now + Duration::from_millis(2_000 + dice.below(3_000));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (pid, _) in frozen.drain(..) {
        signal(pid, "-CONT");
    }
    report.secs = start.elapsed().as_secs_f64();
    for s in senders {
        let _ = s.await;
    }
    if let Some(storer) = storer {
        let _ = storer.await;
    }
    if let Some(requester) = requester {
        let _ = requester.await;
    }

    // Let every process come back and catch up to the highest block a sender saw its transfer
    // finalized in, then compare the validators there: one restarted late may still be
    // applying blocks, and comparing below that height would miss the last transfers.
    let highest = seen.lock().map(|s| s.highest).unwrap_or(0);
    let settle = Instant::now() + Duration::from_secs(60);
    let height = loop {
        for line in supervisor.tend()? {
            tracing::info!("{line}");
        }
        let mut heights = Vec::new();
        for api in &apis {
            if let Ok(s) = Client::new(vec![api.clone()]).status().await {
                heights.push(s.height);
            }
        }
        let low = heights.iter().copied().min().unwrap_or(0);
        if heights.len() == apis.len() && low > start_height && low >= highest {
            break low;
        }
        if Instant::now() > settle {
            bail!(
                "60 s after the faults, {} of {} validators answered, the lowest at height {low} \
                 (transfers were seen final up to {highest})",
                heights.len(),
                apis.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    follower.abort();
    report.height = height;
    report.restarts = supervisor.processes().iter().map(|p| p.restarts).sum();
    report.max_finality_gap_ms = gap.lock().map(|g| *g).unwrap_or(0);

    let mut roots = HashSet::new();
    let mut conserved = true;
    for api in &apis {
        let client = Client::new(vec![api.clone()]);
        roots.insert(client.block(height).await?.root);
        conserved &= client.economy().await?.data.supply.conserved;
    }
    report.roots_agree = roots.len() == 1;
    report.supply_conserved = conserved;

    // Every transfer of the run, counted in every block from genesis to the compared height.
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let senders: HashSet<_> = keys.iter().map(Keypair::account).collect();
    let mut counts: HashMap<TxHash, usize> = HashMap::new();
    let client = Client::new(apis.clone());
    let mut blocks = client.events(1);
    while let Some(block) = tokio::time::timeout(Duration::from_secs(30), blocks.next())
        .await
        .context("the chain's blocks could not be read back within 30 s")?
    {
        for tx in block.txs.iter().filter(|t| senders.contains(&t.signer)) {
            *counts.entry(tx.hash).or_default() += 1;
        }
        if block.height >= height {
            break;
        }
    }
    report.sent = seen.sent;
    report.finalized = seen.finalized.len();
    report.refused = seen.refused;
    let missing: Vec<&TxHash> = seen
        .finalized
        .iter()
        .filter(|h| !counts.contains_key(h))
        .collect();
    for hash in missing.iter().take(10) {
        tracing::warn!(%hash, height, "a transfer seen finalized is not in the chain");
    }
    report.missing = missing.len();
    report.duplicated = counts.values().filter(|&&n| n > 1).count();

    // Every object stored during the faults reads back, byte for byte, now that all is up.
    if let Some(storage) = storage {
        let mut s = std::mem::take(&mut *stored.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        for (cap, want) in &s.objects {
            match read_back(&storage, cap, &storage_dir.join("check.bin"), want).await {
                Some(true) => {}
                Some(false) => s.report.differ += 1,
                None => s.report.unreadable += 1,
            }
        }
        storage.close().await;
        report.storage = Some(s.report);
    }
    // Every replica serves again once its node is back: the node restores its workloads.
    if let Some(urls) = app_urls {
        let mut a = app.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        a.replicas = urls.len();
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for url in &urls {
            while !answers(&http, url).await {
                if Instant::now() > deadline {
                    a.down_after += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        report.app = Some(a);
    }
    Ok(report)
}

/// The next fault in turn: kill a validator, freeze one (each only while none is down: f = 1
/// of 4), or kill a node.
/// A process hit in the last 10 s is left alone, so the supervisor's backoff, not the
/// schedule, decides when it returns.
async fn fault(
    supervisor: &Supervisor,
    apis: &[String],
    dice: &mut Dice,
    frozen: &mut Vec<(u32, Instant)>,
    hit: &mut HashMap<String, Instant>,
    report: &mut ChaosReport,
) {
    let now = Instant::now();
    let rested = |name: &str, hit: &HashMap<String, Instant>| {
        hit.get(name)
            .is_none_or(|t| now.duration_since(*t) > Duration::from_secs(10))
    };
    let nodes = supervisor.node_pids();
    // The kinds take turns, so even a short run has each; targets and lengths are random.
    let kinds = if nodes.is_empty() { 2 } else { 3 };
    let kind = (report.validators_killed + report.validators_frozen + report.nodes_killed) % kinds;
    if kind == 2 {
        // One node down at a time: the storage traffic's erasure code survives one.
        if nodes.iter().any(Option::is_none) {
            return;
        }
        let i = dice.below(nodes.len() as u64) as usize;
        let name = format!("node {i}");
        if let (Some(pid), true) = (nodes[i], rested(&name, hit)) {
            tracing::info!("chaos: SIGKILL {name}");
            signal(pid, "-KILL");
            hit.insert(name, now);
            report.nodes_killed += 1;
        }
        return;
    }
    // At most one validator down: every one must answer, none frozen, before the next.
    if !frozen.is_empty() {
        return;
    }
    for api in apis {
        let answered = tokio::time::timeout(
            Duration::from_secs(1),
            Client::new(vec![api.clone()]).status(),
        )
        .await;
        if !matches!(answered, Ok(Ok(_))) {
            return;
        }
    }
    let pids = supervisor.validator_pids();
    let i = dice.below(pids.len() as u64) as usize;
    let name = format!("validator {i}");
    let Some(pid) = pids[i] else {
        return;
    };
    if !rested(&name, hit) {
        return;
    }
    if kind == 0 {
        tracing::info!("chaos: SIGKILL {name}");
        signal(pid, "-KILL");
        report.validators_killed += 1;
    } else {
        let secs = 2 + dice.below(4);
        tracing::info!("chaos: SIGSTOP {name} for {secs} s");
        signal(pid, "-STOP");
        frozen.push((pid, now + Duration::from_secs(secs)));
        report.validators_frozen += 1;
    }
    hit.insert(name, now);
}

/// A seed from the clock, for runs not told one.
pub fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
