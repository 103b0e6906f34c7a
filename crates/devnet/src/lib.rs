//! Start a whole grid on one machine: validators on loopback, a funded demo account, a faucet.
//!
//! # Status: ALPHA
//!
//! The devnet lives in one folder (`~/.peergrid/devnet` by default): its genesis, keys,
//! one configuration per validator, their data and logs, and `devnet.json` while it
//! runs, which is how the CLI finds a running devnet and its demo account. The
//! validators are separate processes (`peergrid validator run`), exactly as on a real
//! grid; state survives restarts unless `--fresh`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub mod bench;
pub mod chaos;
mod supervise;

pub use supervise::{Backoff, Managed, ProcessStatus};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use peergrid_chain::validator::ValidatorConfig;
use peergrid_client::Client;
use peergrid_core::Keypair;
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{Devnet, Genesis};

/// What a devnet is started with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Its folder.
    pub dir: PathBuf,
    /// Start from a new genesis, deleting the old state.
    pub fresh: bool,
    /// Number of validators.
    pub validators: usize,
    /// First API port; validator `i` serves its API on `base_port + i` and its p2p on
    /// `base_port + 100 + i`; node `i` serves its health endpoint on `base_port + 200 + i`
    /// and its workloads over HTTP on `base_port + 310 + i`; the first three nodes, the
    /// mesh's bootstrap peers, listen on `base_port + 300 + i`.
    pub base_port: u16,
    /// Farmer nodes to run, spread over [`FARMS`] farms.
    pub nodes: usize,
    /// Genesis parameters to override in a new genesis, as `name=value` under `[params]`
    /// (like `billing_interval_secs=2`): tests shorten the devnet's clocks with them.
    pub params: Vec<String>,
}

/// Farms the devnet creates for its nodes, one farmer key each.
pub const FARMS: usize = 2;

/// Where the devnet's nodes say they are: distinct places, so the explorer and
/// placement have something to tell apart.
const PLACES: [(&str, &str, f64, f64); 5] = [
    ("BE", "Ghent", 51.05, 3.72),
    ("EG", "Cairo", 30.04, 31.24),
    ("AT", "Vienna", 48.21, 16.37),
    ("PT", "Lisbon", 38.72, -9.14),
    ("KE", "Nairobi", -1.29, 36.82),
];

/// Balance each devnet node account starts with, for its registration fees.
const NODE_FUNDS: u64 = 100;
/// Balance each devnet farmer starts with.
const FARMER_FUNDS: u64 = 10_000;

/// Written while a devnet runs, so other commands can find it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Running {
    /// The supervising process.
    pub pid: u32,
    /// The chain's id.
    pub chain_id: String,
    /// Every validator's API URL.
    pub apis: Vec<String>,
    /// The demo account's key file.
    pub demo_key: PathBuf,
    /// The faucet's key file.
    pub faucet_key: PathBuf,
    /// Every node's health endpoint URL.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Every node's HTTP entry for workloads (`http://127.0.0.1:<base+310+i>`).
    #[serde(default)]
    pub nodes_http: Vec<String>,
}

/// The CLI's home: `$PEERGRID_HOME`, else `~/.peergrid`; none when neither is set.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("PEERGRID_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".peergrid"))
        })
}

/// The devnet folder the CLI uses when not told: `$PEERGRID_DEVNET`, else
/// `$PEERGRID_HOME/devnet` or `~/.peergrid/devnet`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PEERGRID_DEVNET").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    home_dir()
        .unwrap_or_else(|| PathBuf::from(".peergrid"))
        .join("devnet")
}

fn running_file(dir: &Path) -> PathBuf {
    dir.join("devnet.json")
}

/// Whether process `pid` runs. A killed process stays in `/proc` as a zombie until its
/// parent (or, for an orphan, init) reaps it; a zombie runs nothing.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (command) state …`: the command may hold spaces and parentheses.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

/// The devnet running from `dir`, if any.
pub fn running(dir: &Path) -> Option<Running> {
    let text = std::fs::read_to_string(running_file(dir)).ok()?;
    let r: Running = serde_json::from_str(&text).ok()?;
    alive(r.pid).then_some(r)
}

/// Genesis, keys and validator configs in `opts.dir`: reused if present, created otherwise.
pub fn prepare(opts: &Options) -> anyhow::Result<Genesis> {
    prepare_with(opts, &[])
}

/// Like [`prepare`], funding `extra` accounts too when the genesis is new.
pub fn prepare_with(opts: &Options, extra: &[GenesisBalance]) -> anyhow::Result<Genesis> {
    if opts.fresh && opts.dir.exists() {
        if running(&opts.dir).is_some() {
            bail!(
                "a devnet is running from {}; stop it (Ctrl-C) before --fresh",
                opts.dir.display()
            );
        }
        std::fs::remove_dir_all(&opts.dir)
            .with_context(|| format!("cannot remove {}", opts.dir.display()))?;
    }
    let genesis_path = opts.dir.join("genesis.toml");
    if genesis_path.exists() {
        if !opts.params.is_empty() {
            bail!(
                "--set changes a new genesis only, and {} already has one; add --fresh to start over with it",
                opts.dir.display()
            );
        }
        return Ok(Genesis::load(&genesis_path)?);
    }
    if opts.validators == 0 {
        bail!("a devnet needs at least one validator");
    }
    std::fs::create_dir_all(opts.dir.join("keys"))?;
    let now_ms = peergrid_core::now_ms();
    // Each devnet gets its own chain id (its creation time): transactions bind the chain
    // id, so one signed for another devnet on this machine cannot apply here.
    let chain_id = format!("peergrid-devnet-{now_ms}");
    let mut devnet = Devnet::generate(&chain_id, opts.validators, now_ms)?;
    devnet.genesis.balances.extend_from_slice(extra);
    if !opts.params.is_empty() {
        devnet.genesis = with_params(&devnet.genesis, &opts.params)?;
    }
    // Farmers and nodes get their keys now, so their accounts are funded from genesis.
    for f in 1..=FARMS {
        let key = Keypair::generate()?;
        key.save(&opts.dir.join(format!("keys/farmer-{f}.json")), true)?;
        devnet.genesis.balances.push(GenesisBalance {
            account: key.account(),
            amount: peergrid_core::Amount::tokens(FARMER_FUNDS),
        });
    }
    for i in 0..opts.nodes {
        let dir = node_dir(&opts.dir, i);
        std::fs::create_dir_all(&dir)?;
        let key = Keypair::generate()?;
        key.save(&dir.join("node-key.json"), true)?;
        if i == 0 {
            devnet.genesis.mesh_bootstrap.clear();
        }
        if i < BOOTSTRAP_NODES {
            // The first nodes listen on known ports and are the mesh's entries for everyone
            // else: more than one, so that a client started while one is down still finds
            // the others (a stopped sole entry left every new command without nodes).
            devnet.genesis.mesh_bootstrap.push(format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                bootstrap_port(opts.base_port, i)?,
                key.account()
            ));
        }
        devnet.genesis.balances.push(GenesisBalance {
            account: key.account(),
            amount: peergrid_core::Amount::tokens(NODE_FUNDS),
        });
    }
    for (i, v) in devnet.genesis.validators.iter_mut().enumerate() {
        let (api, p2p) = ports(opts.base_port, i)?;
        *v = GenesisValidator {
            account: v.account,
            address: Some(format!("127.0.0.1:{p2p}")),
            api: Some(format!("http://127.0.0.1:{api}")),
        };
    }
    for (i, key) in devnet.validator_keys.iter().enumerate() {
        key.save(&opts.dir.join(format!("keys/validator-{i}.json")), true)?;
        let (api, p2p) = ports(opts.base_port, i)?;
        let config = ValidatorConfig {
            genesis: "genesis.toml".into(),
            key: format!("keys/validator-{i}.json").into(),
            data_dir: format!("data/validator-{i}").into(),
            p2p_listen: SocketAddr::from(([127, 0, 0, 1], p2p)),
            api_listen: SocketAddr::from(([127, 0, 0, 1], api)),
            txs_per_block: ValidatorConfig::TXS_PER_BLOCK_DEFAULT,
            join: false,
            keep_blocks: ValidatorConfig::KEEP_BLOCKS_DEFAULT,
            archive: false,
            snapshot_from: Vec::new(),
        };
        peergrid_core::fs::write_atomic(
            &opts.dir.join(format!("validator-{i}.toml")),
            toml::to_string(&config)?.as_bytes(),
        )?;
    }
    devnet.demo.save(&opts.dir.join("keys/demo.json"), true)?;
    devnet
        .faucet
        .save(&opts.dir.join("keys/faucet.json"), true)?;
    // The words control the demo account, as its key file does: readable by the owner only.
    peergrid_core::fs::write_private_atomic(
        &opts.dir.join("demo-mnemonic.txt"),
        format!("{}\n", devnet.demo.mnemonic().as_str()).as_bytes(),
    )?;
    // The genesis goes last: its presence means the folder is complete.
    peergrid_core::fs::write_atomic(&genesis_path, devnet.genesis.to_toml().as_bytes())?;
    Ok(devnet.genesis)
}

/// `genesis` with `name=value` pairs set under `[params]`, checked as any genesis is.
pub fn with_params(genesis: &Genesis, params: &[String]) -> anyhow::Result<Genesis> {
    let mut doc: toml::Table = toml::from_str(&genesis.to_toml())?;
    for pair in params {
        let (name, value) = pair.split_once('=').with_context(|| {
            format!("{pair:?}: expected NAME=VALUE, like billing_interval_secs=2")
        })?;
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .map(|mut t| t.remove("v").unwrap_or(toml::Value::String(value.into())))
            .unwrap_or_else(|_| toml::Value::String(value.into()));
        let mut table = doc
            .get_mut("params")
            .and_then(toml::Value::as_table_mut)
            .context("the genesis has no [params]")?;
        let mut path: Vec<&str> = name.trim().split('.').collect();
        let last = path.pop().unwrap_or_default();
        for part in path {
            table = table
                .get_mut(part)
                .and_then(toml::Value::as_table_mut)
                .with_context(|| format!("no parameter group {part:?} in {name:?}"))?;
        }
        if !table.contains_key(last) {
            let known: Vec<&str> = table.keys().map(String::as_str).collect();
            bail!(
                "no genesis parameter {name:?}; those here are {} (`genesis new` writes them all under [params])",
                known.join(", ")
            );
        }
        table.insert(last.to_string(), value);
        // Checked one at a time, so a wrong value is named as given, not as a line of a
        // TOML file the user never wrote.
        let text = toml::to_string(&doc)?;
        if let Err(e) = toml::from_str::<Genesis>(&text) {
            bail!(
                "parameter {}: {}",
                pair.trim(),
                e.message().trim_end_matches('\n')
            );
        }
    }
    let text = toml::to_string(&doc)?;
    let out = Genesis::from_toml(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    out.check_new()?;
    Ok(out)
}

/// Record a running devnet where other commands find it, atomically: a command reading
/// it while the devnet adds its nodes must see the old or the new file, never half of one.
fn write_running(dir: &Path, running: &Running) -> anyhow::Result<()> {
    peergrid_core::fs::write_atomic(&running_file(dir), &serde_json::to_vec_pretty(running)?)?;
    Ok(())
}

/// Stop the validators and nodes of a devnet from `dir` whose supervisor died without
/// stopping them (killed with SIGKILL, say): they would hold the devnet's ports and data.
/// They are found by their command, so one started an instant before the supervisor died
/// is found too, and a reused pid never is.
fn stop_leftovers(dir: &Path) {
    let left = running_on(dir);
    if left.is_empty() {
        return;
    }
    tracing::warn!(
        processes = left.len(),
        "stopping validators and nodes left running by a devnet that did not stop cleanly"
    );
    for pid in &left {
        signal(*pid, "-INT");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !running_on(dir).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in running_on(dir) {
        signal(pid, "-KILL");
    }
}

/// The processes running `validator run` or `node run` with a path inside `dir`.
fn running_on(dir: &Path) -> Vec<u32> {
    let prefix = format!("{}/", dir.to_string_lossy());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let runs = args
                .windows(2)
                .any(|w| w[1] == "run" && (w[0] == "validator" || w[0] == "node"));
            runs && args.iter().any(|a| a.starts_with(&prefix))
        })
        .collect()
}

/// Send `sig` (`-INT`, `-KILL`) to process `pid`; one already gone is fine.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// The base port a devnet was created with: validator 0's API port, in its genesis.
fn created_base_port(genesis: &Genesis) -> Option<u16> {
    let api = genesis.validators.first()?.api.as_deref()?;
    api.rsplit_once(':')?.1.parse().ok()
}

/// Fail with what to do if `addr` (`host:port`) cannot be listened on: a validator or node
/// that finds its port taken would only exit, leaving the reason in its log.
fn ensure_free(addr: &str, what: &str) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => bail!(
            "cannot listen on {addr} for {what}: {e}; stop what uses that port, or start a \
             new devnet on other ports with `peergrid devnet --fresh --base-port N`"
        ),
    }
}

/// Devnet nodes the genesis lists as the mesh's bootstrap peers: the first ones.
const BOOTSTRAP_NODES: usize = 3;

/// The TCP port devnet bootstrap node `i` listens on for the mesh.
fn bootstrap_port(base: u16, i: usize) -> anyhow::Result<u16> {
    base.checked_add(300)
        .and_then(|p| p.checked_add(u16::try_from(i).ok()?))
        .context("--base-port too high")
}

/// Node `i`'s data directory.
pub fn node_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("nodes/node-{i}"))
}

/// Most disk a devnet node offers.
const NODE_DISK_BYTES_MAX: u64 = 100 << 30;

/// What each of `count` devnet nodes gets of the one disk they share, beyond the shards
/// it holds: an equal part of what is free on it beyond what the nodes keep free (each
/// node alone would offer all of it, and the devnet would sell the disk `count` times).
fn node_disk_part(dir: &Path, count: usize) -> anyhow::Result<(u64, u64)> {
    let space = peergrid_core::fs::disk_space(dir)
        .with_context(|| format!("cannot measure the disk of {}", dir.display()))?;
    let kept = peergrid_core::fs::DiskReserve::default().reserve_bytes(space.total_bytes);
    let free = space.available_bytes.saturating_sub(kept);
    Ok((
        free / u64::try_from(count.max(1)).unwrap_or(1),
        space.available_bytes,
    ))
}

/// What devnet node `i` offers: the shards it holds and its `part` of the free space, at
/// most [`NODE_DISK_BYTES_MAX`].
fn node_disk_bytes(dir: &Path, i: usize, (part, free): (u64, u64)) -> u64 {
    let held = peergrid_core::fs::bytes_under(&node_dir(dir, i).join("peergrid-shards"));
    let bytes = held.saturating_add(part).min(NODE_DISK_BYTES_MAX);
    if bytes < 1 << 30 {
        tracing::warn!(
            node = i,
            offered = %peergrid_core::capacity::human_bytes(bytes),
            free = %peergrid_core::capacity::human_bytes(free),
            "little disk is free for the devnet's nodes: storage and apps need room; free some space"
        );
    }
    bytes
}

fn ports(base: u16, i: usize) -> anyhow::Result<(u16, u16)> {
    let i = u16::try_from(i)?;
    let api = base.checked_add(i).context("--base-port too high")?;
    let p2p = base.checked_add(100 + i).context("--base-port too high")?;
    Ok((api, p2p))
}

/// A devnet whose validators run as child processes of `exe`; they stop when this is dropped.
pub struct Supervisor {
    validators: Vec<Managed>,
    nodes: Vec<Managed>,
    base_port: u16,
    dir: PathBuf,
    /// What other commands see.
    pub running: Running,
}

impl Supervisor {
    /// Start `validators` processes of `exe validator run` from the prepared folder.
    pub fn start(opts: &Options, genesis: &Genesis, exe: &Path) -> anyhow::Result<Supervisor> {
        if let Some(r) = running(&opts.dir) {
            bail!(
                "a devnet already runs from {} (process {}); `peergrid devnet status` shows it",
                opts.dir.display(),
                r.pid
            );
        }
        stop_leftovers(&opts.dir);
        if let Some(base) = created_base_port(genesis)
            && base != opts.base_port
        {
            // The genesis fixes the validators' ports and the mesh bootstrap address.
            tracing::warn!(
                "this devnet was created with --base-port {base} and keeps those ports; \
                 add --fresh to start a new one on {}",
                opts.base_port
            );
        }
        for (i, v) in genesis.validators.iter().enumerate() {
            if let Some(api) = &v.api {
                ensure_free(
                    api.trim_start_matches("http://"),
                    &format!("validator {i}'s API"),
                )?;
            }
            if let Some(p2p) = &v.address {
                ensure_free(p2p, &format!("validator {i}'s network"))?;
            }
        }
        std::fs::create_dir_all(opts.dir.join("logs"))?;
        let mut validators = Vec::new();
        let mut apis = Vec::new();
        for (i, v) in genesis.validators.iter().enumerate() {
            let mut cmd = Command::new(exe);
            cmd.args(["validator", "run", "--config"])
                .arg(opts.dir.join(format!("validator-{i}.toml")));
            validators.push(Managed::start(
                format!("validator {i}"),
                cmd,
                &opts.dir.join(format!("logs/validator-{i}.log")),
                Backoff::default(),
            )?);
            apis.push(v.api.clone().unwrap_or_default());
        }
        let running = Running {
            pid: std::process::id(),
            chain_id: genesis.chain_id.clone(),
            apis,
            demo_key: opts.dir.join("keys/demo.json"),
            faucet_key: opts.dir.join("keys/faucet.json"),
            nodes: Vec::new(),
            nodes_http: Vec::new(),
        };
        write_running(&opts.dir, &running)?;
        let supervisor = Supervisor {
            validators,
            nodes: Vec::new(),
            base_port: created_base_port(genesis).unwrap_or(opts.base_port),
            dir: opts.dir.clone(),
            running,
        };
        supervisor.write_processes();
        Ok(supervisor)
    }

    /// Each validator's process id, while it runs.
    pub fn validator_pids(&self) -> Vec<Option<u32>> {
        self.validators.iter().map(Managed::pid).collect()
    }

    /// Each node's process id, while it runs.
    pub fn node_pids(&self) -> Vec<Option<u32>> {
        self.nodes.iter().map(Managed::pid).collect()
    }

    /// Wait until blocks finalize, or fail after `timeout` with the validators' logs named.
    pub async fn wait_finalizing(&mut self, timeout: Duration) -> anyhow::Result<u64> {
        let client = Client::new(self.running.apis.clone());
        let start = Instant::now();
        loop {
            if let Some(i) = self.exited() {
                bail!(
                    "validator {i} exited; see {} (a devnet made by an older peergrid cannot \
                     be opened: start over with `peergrid devnet --fresh`)",
                    self.dir.join(format!("logs/validator-{i}.log")).display()
                );
            }
            if let Ok(s) = client.status().await
                && s.data.finalizing
            {
                return Ok(s.height);
            }
            if start.elapsed() > timeout {
                bail!(
                    "no block finalized within {timeout:?}; see the logs in {}",
                    self.dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Create the devnet's farms if they do not exist yet; returns their ids.
    pub async fn ensure_farms(&self) -> anyhow::Result<Vec<peergrid_core::FarmId>> {
        let client = Client::new(self.running.apis.clone());
        let mut ids = Vec::new();
        for f in 1..=FARMS {
            let name = format!("devnet-farm-{f}");
            if let Ok(found) = client.farm(&name).await {
                ids.push(found.data.id);
                continue;
            }
            let key = Keypair::load(&self.dir.join(format!("keys/farmer-{f}.json")))?;
            let (hash, status) = client
                .send(
                    &key,
                    peergrid_core::Payload::CreateFarm {
                        name: name.clone(),
                        public_ips: Vec::new(),
                    },
                    Duration::from_secs(30),
                )
                .await?;
            let id = match status {
                peergrid_client::TxStatus::Finalized { events, .. } => {
                    events.iter().find_map(|e| match e {
                        peergrid_ledger::Event::FarmCreated { farm, .. } => Some(*farm),
                        _ => None,
                    })
                }
                other => bail!("creating farm {name} ({hash}) ended as {other:?}"),
            };
            ids.push(id.context("farm creation finalized without a farm")?);
        }
        Ok(ids)
    }

    /// Start the devnet's nodes (`exe node run`), spread over `farms`, each joining with
    /// its farmer's key; returns once each serves its health endpoint.
    pub async fn start_nodes(
        &mut self,
        exe: &Path,
        farms: &[peergrid_core::FarmId],
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        if farms.is_empty() {
            bail!("no farm to start nodes in");
        }
        let mut urls = Vec::new();
        let mut http_urls = Vec::new();
        let part = node_disk_part(&self.dir, count)?;
        for i in 0..count {
            let disk_mib = node_disk_bytes(&self.dir, i, part) >> 20;
            let farm_index = i % farms.len();
            let (country, city, lat, lon) = PLACES[i % PLACES.len()];
            let health_port = self
                .base_port
                .checked_add(200)
                .and_then(|p| p.checked_add(u16::try_from(i).ok()?))
                .context("--base-port too high")?;
            ensure_free(
                &format!("127.0.0.1:{health_port}"),
                &format!("node {i}'s health endpoint"),
            )?;
            let http_port = self
                .base_port
                .checked_add(310)
                .and_then(|p| p.checked_add(u16::try_from(i).ok()?))
                .context("--base-port too high")?;
            ensure_free(
                &format!("127.0.0.1:{http_port}"),
                &format!("node {i}'s workload HTTP entry"),
            )?;
            let dir = node_dir(&self.dir, i);
            std::fs::create_dir_all(&dir)?;
            let tcp_port = if i < BOOTSTRAP_NODES {
                let port = bootstrap_port(self.base_port, i)?;
                ensure_free(
                    &format!("127.0.0.1:{port}"),
                    &format!("node {i}, a mesh bootstrap node"),
                )?;
                port
            } else {
                0
            };
            let tcp_listen = format!("/ip4/127.0.0.1/tcp/{tcp_port}");
            let mut cmd = Command::new(exe);
            cmd.args(["node", "run", "--farm", &farms[farm_index].to_string()])
                .arg("--data-dir")
                .arg(&dir)
                .arg("--disk")
                .arg(format!("{}:ssd:{disk_mib}MiB", dir.display()))
                .arg("--key")
                .arg(
                    self.dir
                        .join(format!("keys/farmer-{}.json", farm_index + 1)),
                )
                .args(["--ledger", &self.running.apis.join(",")])
                .args(["--health", &format!("127.0.0.1:{health_port}")])
                .args(["--http", &format!("127.0.0.1:{http_port}")])
                .args([
                    "--listen",
                    "/ip4/127.0.0.1/udp/0/quic-v1",
                    "--listen",
                    &tcp_listen,
                ])
                .args(["--country", country, "--city", city])
                .arg(format!("--latitude={lat}"))
                .arg(format!("--longitude={lon}"));
            self.nodes.push(Managed::start(
                format!("node {i}"),
                cmd,
                &self.dir.join(format!("logs/node-{i}.log")),
                Backoff::default(),
            )?);
            urls.push(format!("http://127.0.0.1:{health_port}"));
            http_urls.push(format!("http://127.0.0.1:{http_port}"));
        }
        let http = wait_listening(&urls, timeout, &mut self.nodes, &self.dir).await;
        self.running.nodes = urls;
        self.running.nodes_http = http_urls;
        write_running(&self.dir, &self.running)?;
        self.write_processes();
        http
    }

    /// The index of a validator that is not running, if any (while starting, a
    /// validator that exits has a problem a restart will not fix).
    pub fn exited(&mut self) -> Option<usize> {
        self.validators.iter_mut().position(|m| !m.running())
    }

    /// Restart what died (after a backoff) and say so; fails only when more validators
    /// than the ledger tolerates keep dying at every start, so nothing can finalize.
    pub fn tend(&mut self) -> anyhow::Result<Vec<String>> {
        let lines: Vec<String> = self
            .validators
            .iter_mut()
            .chain(self.nodes.iter_mut())
            .filter_map(Managed::tend)
            .collect();
        if !lines.is_empty() {
            self.write_processes();
        }
        let failed: Vec<&Managed> = self.validators.iter().filter(|m| m.failed()).collect();
        let tolerated = self.validators.len().saturating_sub(1) / 3;
        if failed.len() > tolerated {
            let names: Vec<String> = failed
                .iter()
                .map(|m| format!("{} ({})", m.name(), m.log().display()))
                .collect();
            bail!(
                "{} keep failing at start: more than the {tolerated} validator(s) the \
                 ledger can lose, so it cannot finalize; see their logs",
                names.join(", ")
            );
        }
        Ok(lines)
    }

    /// Each process's state, restarts and last exit.
    pub fn processes(&self) -> Vec<ProcessStatus> {
        self.validators
            .iter()
            .chain(&self.nodes)
            .map(Managed::status)
            .collect()
    }

    fn write_processes(&self) {
        let file = processes_file(&self.dir);
        let written = serde_json::to_vec_pretty(&self.processes())
            .map_err(std::io::Error::other)
            .and_then(|bytes| peergrid_core::fs::write_atomic(&file, &bytes));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record the devnet's processes for `devnet status`");
        }
    }

    /// Stop every process: SIGINT first so they close cleanly, then kill what remains.
    pub fn stop(&mut self) {
        // Nodes first: they follow the validators and would only log errors.
        for m in self.nodes.iter().chain(&self.validators) {
            m.interrupt();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for m in self.nodes.iter_mut().chain(self.validators.iter_mut()) {
            m.finish(deadline);
        }
        self.validators.clear();
        self.nodes.clear();
        let _ = std::fs::remove_file(running_file(&self.dir));
        let _ = std::fs::remove_file(processes_file(&self.dir));
    }
}

fn processes_file(dir: &Path) -> PathBuf {
    dir.join("processes.json")
}

/// The processes of the devnet running from `dir`, as its supervisor last recorded them
/// and as the OS sees them now (stopped, or exited before the supervisor noticed).
pub fn processes(dir: &Path) -> Vec<ProcessStatus> {
    let recorded: Vec<ProcessStatus> = std::fs::read(processes_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    recorded.into_iter().map(supervise::as_seen_now).collect()
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The demo key of the devnet running from `dir`.
pub fn demo_key(dir: &Path) -> Option<Keypair> {
    running(dir).and_then(|r| Keypair::load(&r.demo_key).ok())
}

/// Wait until every node's health endpoint answers (a node answers once it is
/// registered), or fail naming the node's log.
async fn wait_listening(
    urls: &[String],
    timeout: Duration,
    nodes: &mut [Managed],
    dir: &Path,
) -> anyhow::Result<()> {
    let start = Instant::now();
    for (i, url) in urls.iter().enumerate() {
        let addr = url.trim_start_matches("http://").to_string();
        loop {
            if !nodes[i].running() {
                bail!(
                    "node {i} exited; see {}",
                    dir.join(format!("logs/node-{i}.log")).display()
                );
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            if start.elapsed() > timeout {
                bail!(
                    "node {i} did not start within {timeout:?}; see {}",
                    dir.join(format!("logs/node-{i}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_parameters_are_set_by_name_and_checked() {
        let base = Devnet::generate("t", 1, 1_000).expect("keys").genesis;
        let g = with_params(
            &base,
            &[
                "billing_interval_secs=2".into(),
                "pricing.cu_uusd_month=5".into(),
            ],
        )
        .expect("valid");
        assert_eq!(g.params.billing_interval_secs, 2);
        assert_eq!(g.params.pricing.cu_uusd_month, 5);
        let e = with_params(&base, &["billing_interval=2".into()]).expect_err("unknown");
        assert!(e.to_string().contains("no genesis parameter"), "{e}");
        let e = with_params(&base, &["billing_interval_secs=0".into()]).expect_err("checked");
        assert!(e.to_string().contains("above zero"), "{e}");
        assert!(with_params(&base, &["nonsense".into()]).is_err());
        let e = with_params(&base, &["minting_period_secs=20".into()]).expect_err("short");
        assert!(
            e.to_string()
                .contains("at least three uptime intervals (30 s)"),
            "{e}"
        );
        let e = with_params(&base, &["uptime_interval_secs=-5".into()]).expect_err("negative");
        let said = e.to_string();
        assert!(
            said.starts_with("parameter uptime_interval_secs=-5: ")
                && said.contains("expected u64")
                && !said.contains("line"),
            "{said}"
        );
    }

    #[test]
    fn a_killed_process_is_not_alive_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert!(alive(child.id()));
        child.kill().expect("kill");
        // Not waited for yet: a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(child.id()) {
            assert!(Instant::now() < deadline, "a zombie counts as alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            Path::new(&format!("/proc/{}", child.id())).exists(),
            "still a zombie"
        );
        let _ = child.wait();
        assert!(!alive(child.id()));
        assert!(alive(std::process::id()));
    }

    #[test]
    fn leftovers_are_found_by_their_command_even_when_no_file_names_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inside = dir.path().join("nodes/node-4");
        // `sleep; true` keeps bash from replacing itself with sleep, so its command line
        // stays as given: a stand-in for `peergrid node run --data-dir …`.
        let spawn = |args: &[&str]| {
            let child = std::process::Command::new("bash")
                .args(["-c", "sleep 30; true"])
                .args(args)
                .spawn()
                .expect("bash");
            // spawn() can return before /proc shows the new command line.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !std::fs::read(format!("/proc/{}/cmdline", child.id()))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("sleep 30"))
            {
                assert!(Instant::now() < deadline, "bash did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            child
        };
        let inside_text = inside.to_string_lossy().into_owned();
        let mut node = spawn(&["node", "run", "--data-dir", &inside_text]);
        let mut reader = spawn(&["tail", &inside_text]);
        let mut elsewhere = spawn(&["node", "run", "--data-dir", "/var/lib/peergrid"]);
        let found = running_on(dir.path());
        for c in [&mut node, &mut reader, &mut elsewhere] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(
            found,
            vec![node.id()],
            "only the node running on the devnet's folder"
        );

        // With no devnet.json at all, the next start still stops it.
        let mut orphan = spawn(&["node", "run", "--data-dir", &inside_text]);
        stop_leftovers(dir.path());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(orphan.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "the orphan was not stopped");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn two_devnets_have_their_own_chain_ids_and_a_transaction_for_one_fails_on_the_other() {
        let dirs = [
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        ];
        let genesis: Vec<Genesis> = dirs
            .iter()
            .map(|d| {
                std::thread::sleep(Duration::from_millis(2));
                let opts = Options {
                    dir: d.path().to_path_buf(),
                    fresh: false,
                    validators: 1,
                    base_port: 1,
                    nodes: 0,
                    params: Vec::new(),
                };
                prepare(&opts).expect("prepare")
            })
            .collect();
        assert_ne!(genesis[0].chain_id, genesis[1].chain_id);
        let demo = Keypair::load(&dirs[0].path().join("keys/demo.json")).expect("demo");
        let pay = peergrid_core::Payload::Transfer {
            to: demo.account(),
            amount: peergrid_core::Amount(1),
        };
        let tx = peergrid_core::SignedTx::new(&demo, &genesis[0].chain_id, 0, pay);
        let mut other = peergrid_ledger::State::from_genesis(&genesis[1]);
        let ctx = peergrid_ledger::BlockContext {
            height: 1,
            time_ms: genesis[1].genesis_time_ms + 1,
        };
        assert!(matches!(
            other.apply_tx(&tx, &ctx),
            Err(peergrid_ledger::TxError::WrongChain { .. })
        ));
    }
}

/// One validator as its API answers.
#[derive(Clone, Debug, Serialize)]
pub struct ValidatorHealth {
    /// Its API's URL.
    pub api: String,
    /// Its finalized height, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Its epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Its state root at that height.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<peergrid_core::Hash>,
    /// How long ago its last block was, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_block_age_ms: Option<u64>,
    /// Whether it is finalizing blocks.
    pub finalizing: bool,
    /// Why it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A running devnet's health: every validator's view, and whether a quorum finalizes.
#[derive(Clone, Debug, Serialize)]
pub struct Health {
    /// The chain's id.
    pub chain_id: String,
    /// Whether a quorum of validators is finalizing.
    pub finalizing: bool,
    /// Each validator.
    pub validators: Vec<ValidatorHealth>,
    /// The highest height every answering validator has finalized, and whether they all
    /// hold the same state root there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<Agreement>,
    /// Each supervised process, with its restarts and last exit.
    pub processes: Vec<ProcessStatus>,
}

/// Whether validators agree on the state at the highest height they all finalized.
#[derive(Clone, Debug, Serialize)]
pub struct Agreement {
    /// That height.
    pub height: u64,
    /// Each answering validator's state root there, in the order of [`Health::validators`]
    /// (none where it could not answer).
    pub roots: Vec<Option<peergrid_core::Hash>>,
    /// Whether every root given is the same.
    pub agree: bool,
}

impl Health {
    /// How many validators are finalizing.
    pub fn finalizing_count(&self) -> usize {
        self.validators.iter().filter(|v| v.finalizing).count()
    }
}

/// Ask every validator of the devnet running from `running` how it is doing.
pub async fn health(dir: &Path, running: &Running) -> Health {
    // A devnet's validators speak plain http: no certificate authority to add.
    let clients = running.apis.iter().map(|a| Client::new(vec![a.clone()]));
    let mut health = validators_health(&running.apis, clients.collect()).await;
    health.processes = processes(dir);
    if health.chain_id.is_empty() {
        health.chain_id = running.chain_id.clone();
    }
    health
}

/// Ask every validator at `apis` how it is doing, and whether they agree on the state at
/// the highest height all of them finalized: what an operator checks on any network.
/// `ledger_ca` (PEM) is trusted besides the system's authorities for `https://` validators;
/// refused when it holds no certificate.
pub async fn network_health(
    apis: &[String],
    ledger_ca: Option<&[u8]>,
) -> Result<Health, peergrid_client::ClientError> {
    let mut clients = Vec::with_capacity(apis.len());
    for api in apis {
        let client = Client::new(vec![api.clone()]);
        clients.push(match ledger_ca {
            Some(pem) => client.with_root_certificates(pem)?,
            None => client,
        });
    }
    Ok(validators_health(apis, clients).await)
}

/// How long a health check waits for one validator's answer.
const HEALTH_WITHIN: Duration = Duration::from_secs(5);

/// [`network_health`] through `clients`, one per API of `apis`, in the same order.
async fn validators_health(apis: &[String], clients: Vec<Client>) -> Health {
    // All at once, each within HEALTH_WITHIN: a stopped validator whose socket still
    // accepts would otherwise hold the report up by the client's whole timeout, in turn.
    let statuses = futures::future::join_all(clients.iter().map(|c| async move {
        match tokio::time::timeout(HEALTH_WITHIN, c.status()).await {
            Ok(status) => status.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} s", HEALTH_WITHIN.as_secs())),
        }
    }))
    .await;
    let mut validators = Vec::new();
    let mut chain_id = String::new();
    for (api, status) in apis.iter().zip(statuses) {
        validators.push(match status {
            Ok(s) => ValidatorHealth {
                api: {
                    chain_id = s.data.chain_id.clone();
                    api.clone()
                },
                height: Some(s.height),
                epoch: Some(s.data.epoch),
                root: Some(s.root),
                last_block_age_ms: Some(s.data.last_block_age_ms),
                finalizing: s.data.finalizing,
                error: None,
            },
            Err(e) => ValidatorHealth {
                api: api.clone(),
                height: None,
                epoch: None,
                root: None,
                last_block_age_ms: None,
                finalizing: false,
                error: Some(e),
            },
        });
    }
    let quorum = apis.len() * 2 / 3 + 1;
    let finalizing = validators.iter().filter(|v| v.finalizing).count();
    let agreement = agreement(&validators, &clients).await;
    Health {
        chain_id,
        finalizing: finalizing >= quorum.min(apis.len()),
        validators,
        agreement,
        processes: Vec::new(),
    }
}

/// The state roots of `validators` at the highest height all that answered have finalized,
/// asked through `clients`, one per validator.
async fn agreement(validators: &[ValidatorHealth], clients: &[Client]) -> Option<Agreement> {
    let height = validators.iter().filter_map(|v| v.height).min()?;
    if height == 0 {
        return None;
    }
    let roots: Vec<_> = futures::future::join_all(validators.iter().zip(clients).map(
        |(v, client)| async move {
            v.height?;
            let block = tokio::time::timeout(HEALTH_WITHIN, client.block(height)).await;
            block.ok()?.ok().map(|b| b.root)
        },
    ))
    .await;
    let mut given = roots.iter().flatten();
    let first = given.next().copied();
    let agree = first.is_some() && given.all(|r| Some(*r) == first);
    Some(Agreement {
        height,
        roots,
        agree,
    })
}
