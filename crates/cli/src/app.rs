//! `peergrid deploy` and `peergrid app`: WebAssembly applications on the grid's nodes.
//!
//! A deploy checks the component here first (so a core module, garbage or an import the
//! nodes do not provide is refused before any contract is paid for), builds the
//! deployment, creates one deployment contract per replica on up nodes with free
//! capacity (distinct farms first), serves the component over `/peergrid/blob/1` while
//! each node fetches it, sends the signed deployment and follows each node's status
//! until the workload runs. Every wait has a deadline and says what it waits for; a
//! replica that fails moves to another node and its contract is cancelled. Apps are
//! recorded by name in `$PEERGRID_HOME/apps.json` (the ledger knows contracts, not names).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use peergrid_client::{Client, ContractState, NodeView, TxStatus};
use peergrid_compute::{Deployment, Limits, Runtime, RuntimeConfig, WorkloadKind, WorkloadSpec};
use peergrid_core::capacity::{Capacity, Size};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, ContractId, Hash, Keypair, NodeId, Payload};
use peergrid_ledger::Event;
use peergrid_mesh::{Error as MeshError, Mesh, PeerId, RpcError};
use peergrid_node::protocol::{self, DeployRequest, LogsRequest, WorkloadLogs};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{Globals, output};

/// SSD a deployment contract reserves unless told: its `/data` folder's quota.
const SRU_BYTES: u64 = 256 << 20;
/// How long one node may take from the deploy request to a running workload.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the deploy request itself may take (dial included).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(15);
/// Lookups of a node's mesh peer before a deployment moves on to another node, 1 s apart.
const PEER_LOOKUPS: u32 = 5;
/// How long a request for a workload's output may take.
const LOGS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one status request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a contract transaction may take to finalize.
const TX_TIMEOUT: Duration = Duration::from_secs(30);

/// What a workload is.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    /// A `wasi:http/proxy` service.
    Http,
    /// A `wasi:cli/command` run to completion.
    Job,
}

impl From<Kind> for WorkloadKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Http => WorkloadKind::Http,
            Kind::Job => WorkloadKind::Job,
        }
    }
}

/// `peergrid deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// The component: a WASI 0.2 component (`cargo build --target wasm32-wasip2`).
    wasm: PathBuf,
    /// The app's name, `[a-z0-9-]{1,63}`: its workload's name in URLs [default: the file's name].
    #[arg(long)]
    name: Option<String>,
    /// How many nodes run it; fewer started exits with status 3, keeping those that run.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Run it on these nodes (repeatable) [default: chosen from the ledger].
    #[arg(long = "node", value_name = "ID")]
    nodes: Vec<NodeId>,
    /// Memory per request or run, e.g. 128MiB (at most 1GiB); also what each contract reserves.
    #[arg(long, default_value = "128MiB", value_parser = instance_memory)]
    memory: Size,
    /// CPU time per request or run, ms.
    #[arg(long, default_value_t = 1_000)]
    cpu_ms: u64,
    /// Wall time per request or run, ms.
    #[arg(long, default_value_t = 10_000)]
    wall_ms: u64,
    /// Disk for the app's `/data` folder on each replica's node, 1MiB to 1TiB: what each
    /// contract reserves (SSD) and is billed for. Each replica has its own folder.
    #[arg(long, default_value = "256MiB", value_parser = app_disk)]
    disk: Size,
    /// An environment variable the workload sees, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// A service answering HTTP, or a job run to completion.
    #[arg(long, value_enum, default_value = "http")]
    kind: Kind,
}

/// `peergrid app …`.
#[derive(Subcommand)]
pub enum AppCommand {
    /// Your apps, from `$PEERGRID_HOME/apps.json`.
    #[command(visible_alias = "ls")]
    List,
    /// An app's replicas: their contracts on the ledger and their state on their nodes.
    Status {
        /// The app's name.
        name: String,
    },
    /// What an app printed: a service's log, a job's output and exit code, per replica.
    Logs {
        /// The app's name.
        name: String,
    },
    /// Run a new version: each replica's contract takes the new deployment's hash, and
    /// its node fetches and starts it. Limits and environment stay unless given.
    Update(UpdateArgs),
    /// Replace the replicas that do not serve (node down or not answering, workload
    /// failed, contract ended) with new ones on other nodes; each replaced contract is
    /// cancelled. Give the component the app runs (checked against its hash).
    Repair {
        /// The app's name.
        name: String,
        /// The component it runs (`app list --json` shows its hash).
        wasm: PathBuf,
        /// Restore each moved replica's /data from this tar archive (one `app data
        /// export` wrote), checked before anything is placed.
        #[arg(long, value_name = "ARCHIVE")]
        data: Option<PathBuf>,
    },
    /// A replica's /data folder: copy it out as a tar archive, or replace it with one.
    #[command(subcommand)]
    Data(crate::app_data::DataCommand),
    /// Cancel an app's contracts and forget it; each replica's /data goes with its
    /// contract.
    Rm {
        /// The app's name.
        name: String,
    },
}

/// `peergrid app update`.
#[derive(Args)]
pub struct UpdateArgs {
    /// The app's name.
    name: String,
    /// The new component; without it only `--disk` may change (the deployment stays).
    wasm: Option<PathBuf>,
    /// Memory per request or run, e.g. 256MiB (at most 1GiB).
    #[arg(long, value_parser = instance_memory)]
    memory: Option<Size>,
    /// CPU time per request or run, ms.
    #[arg(long)]
    cpu_ms: Option<u64>,
    /// Wall time per request or run, ms.
    #[arg(long)]
    wall_ms: Option<u64>,
    /// Disk for the app's `/data` folder, 1MiB to 1TiB; its files stay. Give more than
    /// they use (`app status` shows it): files well past it (10 %, at least 8 MiB) make
    /// `/data` read-only, removing included, until the disk is raised again.
    #[arg(long, value_parser = app_disk)]
    disk: Option<Size>,
    /// Replace the environment with these variables, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Give a `--disk` so far below what a replica's files use (they are past it by 10 %,
    /// at least 8 MiB) that its `/data` turns read-only at once: writes and removals fail.
    #[arg(long)]
    force: bool,
}

pub(crate) fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not K=V")),
    }
}

/// One replica of an app, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replica {
    /// Its deployment contract.
    pub contract: ContractId,
    /// Its node.
    pub node: NodeId,
    /// Its URL on the node's HTTP entry, if the node has one.
    pub url: Option<String>,
}

/// An app, as recorded in `apps.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct App {
    /// Its name (= its workload's name).
    pub name: String,
    /// `http` or `job`.
    pub kind: String,
    /// BLAKE3 of its component, hex.
    pub component: String,
    /// BLAKE3 of its deployment, hex: what its contracts hold.
    pub deployment: String,
    /// Its replicas.
    pub replicas: Vec<Replica>,
    /// What it runs with, kept so `app update` changes only what it is told to.
    #[serde(default)]
    pub spec: Option<RunSpec>,
    /// The account that deployed it and owns its contracts (absent in records written
    /// before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<AccountId>,
}

impl App {
    /// Refuse to change it with another account's key: the ledger would refuse each of
    /// its contracts' transactions, after a mesh peer was started for nothing.
    pub(crate) fn check_owner(&self, key: &Keypair) -> anyhow::Result<()> {
        match self.owner {
            Some(owner) if owner != key.account() => bail!(
                "app {} belongs to account {owner}, and the key in use is account {}'s: run \
                 the command with `--key` naming the key file of {owner}",
                self.name,
                key.account()
            ),
            _ => Ok(()),
        }
    }

    /// The kind its workload was deployed as (`kind` is its text).
    fn workload_kind(&self) -> WorkloadKind {
        match self.kind.as_str() {
            "job" => WorkloadKind::Job,
            _ => WorkloadKind::Http,
        }
    }
}

/// A workload's limits, environment and arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Memory per request or run, bytes; also what each contract reserves.
    pub memory_bytes: u64,
    /// CPU time per request or run, ms.
    pub cpu_ms: u64,
    /// Wall time per request or run, ms.
    pub wall_ms: u64,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Arguments after the program name.
    pub args: Vec<String>,
    /// Disk each replica's contract reserves, bytes: its `/data` quota (records written
    /// before it was kept reserved the default).
    #[serde(default = "default_disk_bytes")]
    pub disk_bytes: u64,
}

fn default_disk_bytes() -> u64 {
    SRU_BYTES
}

impl RunSpec {
    /// The one-workload deployment running `component` as `name`, encoded.
    pub(crate) fn deployment(
        &self,
        name: &str,
        kind: WorkloadKind,
        component: [u8; 32],
    ) -> anyhow::Result<Vec<u8>> {
        let spec = WorkloadSpec {
            name: name.to_string(),
            component,
            kind,
            limits: Limits {
                memory_bytes: self.memory_bytes,
                cpu_ms: self.cpu_ms,
                wall_ms: self.wall_ms,
            },
            env: self.env.clone(),
            args: self.args.clone(),
        };
        Deployment::new(vec![spec])
            .encode()
            .context("the deployment is invalid")
    }

    /// What each replica's contract reserves.
    pub(crate) fn resources(&self) -> Capacity {
        Capacity {
            cru: 1,
            mru: self.memory_bytes,
            sru: self.disk_bytes,
            hru: 0,
        }
    }
}

/// Every app of this home, by name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Apps {
    pub(crate) apps: BTreeMap<String, App>,
}

impl Apps {
    /// Refuse a name an app of this home already has, saying what can be done about it.
    pub(crate) fn check_name_free(&self, name: &str, globals: &Globals) -> anyhow::Result<()> {
        let Some(app) = self.apps.get(name) else {
            return Ok(());
        };
        let me = globals.keypair().ok().map(|k| k.account());
        match app.owner {
            Some(owner) if Some(owner) != me => bail!(
                "an app named {name:?} exists here, deployed by account {owner}: pick another \
                 --name (only its owner's key can remove it)"
            ),
            _ => bail!(
                "an app named {name:?} exists; remove it with `peergrid app rm {name}` or pick \
                 another --name"
            ),
        }
    }

    /// The app named `name`, or an error that says where the names are.
    pub(crate) fn find(&self, name: &str) -> anyhow::Result<App> {
        self.apps
            .get(name)
            .cloned()
            .with_context(|| format!("no app named {name:?}; `peergrid app list` shows yours"))
    }
}

pub(crate) fn apps_file(globals: &Globals) -> anyhow::Result<PathBuf> {
    let key_file = globals.home_key_file()?;
    let home = key_file
        .parent()
        .context("cannot tell the peergrid home folder")?;
    Ok(home.join("apps.json"))
}

pub(crate) fn load_apps(file: &Path) -> anyhow::Result<Apps> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is corrupt; fix or remove it (your contracts stay on the ledger: \
                 `peergrid contract list`)",
                file.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Apps::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

pub(crate) fn save_apps(file: &Path, apps: &Apps) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    peergrid_core::fs::write_atomic(file, &serde_json::to_vec_pretty(apps)?)
        .with_context(|| format!("cannot write {}", file.display()))
}

/// A name from a file name: lowercase, `[a-z0-9-]`, at most 63 bytes.
pub(crate) fn default_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() { "app".into() } else { name }
}

/// Memory beyond what a component starts with below which `deploy` warns: requests grow
/// their instance's memory (hello needs about 400 KiB more for a small answer).
const REQUEST_MEMORY_HEADROOM_BYTES: u64 = 1 << 20;

/// Check the component locally the way a node will, before anything is paid for.
pub(crate) fn check_component(
    hash: &[u8; 32],
    bytes: &[u8],
    kind: WorkloadKind,
    memory_bytes: u64,
) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        max_instances: 1,
        max_memory_bytes: 64 << 20,
        ..RuntimeConfig::default()
    })
    .context("cannot start a WebAssembly runtime to check the component")?;
    runtime.prepare(hash, bytes, kind)?;
    // A component whose memory starts larger than its instances may have would be
    // "running" and fail every request: said here, before any contract is paid for.
    let needs = peergrid_compute::memory_at_start(bytes)?;
    let suggested = (needs.saturating_add(REQUEST_MEMORY_HEADROOM_BYTES))
        .div_ceil(1 << 20)
        .max(1);
    if needs > memory_bytes {
        bail!(
            "it needs {} KiB of memory as it starts, more than the {} KiB its instances may have: give --memory {suggested}MiB or more (its requests need room beyond that)",
            needs.div_ceil(1 << 10),
            memory_bytes / (1 << 10)
        );
    }
    if kind == WorkloadKind::Http && memory_bytes - needs < REQUEST_MEMORY_HEADROOM_BYTES {
        eprintln!(
            "warning: --memory {} leaves {} KiB beyond the {} KiB the component starts with; requests that need more answer 503 (`peergrid app logs` shows them): {suggested}MiB or more is safer",
            Size(memory_bytes),
            (memory_bytes - needs) / (1 << 10),
            needs.div_ceil(1 << 10)
        );
    }
    Ok(())
}

/// One step, live on stderr (also with `--json`, whose one object goes to stdout).
pub(crate) fn say(_json: bool, line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// A mesh peer with `key`, bootstrapped from the ledger's genesis; dials wait 3 s at most.
pub(crate) async fn mesh_peer(client: &Client, key: &Keypair) -> anyhow::Result<Mesh> {
    let bootstrap = client
        .mesh_bootstrap()
        .await?
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    let config = peergrid_mesh::Config::client(bootstrap);
    Mesh::start(key, config)
        .await
        .context("cannot start a mesh peer to reach the nodes")
}

/// Why no node can take `need`: how many are not up, how many are too small, and the
/// roomiest, so that the user knows whether to wait, ask for less or ask a farmer.
pub(crate) fn none_fits(nodes: &[NodeView], need: &Capacity, asked: &[NodeId]) -> String {
    let among: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| asked.is_empty() || asked.contains(&n.node.id))
        .collect();
    let whom = if asked.is_empty() {
        ""
    } else {
        " among those asked with --node"
    };
    if among.is_empty() {
        return match asked.is_empty() {
            true => {
                "no node is on the ledger yet: a farmer adds one with `peergrid node run`".into()
            }
            false => {
                "none of the nodes asked with --node is on the ledger; see `peergrid node list`"
                    .into()
            }
        };
    }
    let up: Vec<&&NodeView> = among
        .iter()
        .filter(|n| n.status == peergrid_ledger::NodeStatus::Up)
        .collect();
    let not_up = among.len() - up.len();
    let mut why = Vec::new();
    if not_up > 0 {
        why.push(format!(
            "{not_up} of the {} nodes {} not up on the ledger (a node is up while its uptime reports \
             arrive; one just started, or a ledger that was stalled, is up again after its next \
             report)",
            among.len(),
            if not_up == 1 { "is" } else { "are" }
        ));
    }
    if let Some(roomiest) = up.iter().max_by_key(|n| (n.free.cru, n.free.mru)) {
        why.push(format!(
            "{} up with too little free (the roomiest, node {}, has {})",
            match up.len() {
                1 => "1 is".to_string(),
                n => format!("{n} are"),
            },
            roomiest.node.id,
            roomiest.free
        ));
    }
    format!(
        "no up node has {need} free{whom}: {}; see `peergrid node list`",
        why.join(", ")
    )
}

/// Up nodes that can hold `need`, the asked ones in order, else distinct farms first.
pub(crate) fn candidates(
    nodes: Vec<NodeView>,
    asked: &[NodeId],
    need: &Capacity,
    json: bool,
) -> VecDeque<NodeView> {
    let usable = |n: &NodeView| {
        if n.status != peergrid_ledger::NodeStatus::Up {
            return Err(format!("it is {} on the ledger", n.status));
        }
        if !need.fits_within(&n.free) {
            return Err(format!("it has {} free, the app needs {need}", n.free));
        }
        Ok(())
    };
    if !asked.is_empty() {
        let mut out = VecDeque::new();
        for id in asked {
            match nodes.iter().find(|n| n.node.id == *id) {
                None => say(json, format!("skipping node {id}: it is not on the ledger")),
                Some(n) => match usable(n) {
                    Ok(()) => out.push_back(n.clone()),
                    Err(why) => say(json, format!("skipping node {id}: {why}")),
                },
            }
        }
        return out;
    }
    let mut by_farm: BTreeMap<u32, Vec<NodeView>> = BTreeMap::new();
    for n in nodes.into_iter().filter(|n| usable(n).is_ok()) {
        by_farm.entry(n.node.farm).or_default().push(n);
    }
    for list in by_farm.values_mut() {
        // Most free memory first within a farm.
        list.sort_by(|a, b| b.free.mru.cmp(&a.free.mru).then(a.node.id.cmp(&b.node.id)));
        list.reverse();
    }
    // One node of each farm in turn, so replicas land on distinct farms first.
    let mut out = VecDeque::new();
    loop {
        let mut any = false;
        for list in by_farm.values_mut() {
            if let Some(n) = list.pop() {
                out.push_back(n);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

/// What the replicas share while they are placed.
pub(crate) struct Placement {
    client: Client,
    key: Keypair,
    mesh: Mesh,
    deployment: Vec<u8>,
    deployment_hash: Hash,
    resources: Capacity,
    name: String,
    json: bool,
    /// Nodes not tried yet.
    queue: Mutex<VecDeque<NodeView>>,
    /// One transaction at a time: they share the account's nonce.
    tx: Mutex<()>,
    /// Peers the component was sent to.
    sent: Mutex<HashMap<PeerId, bool>>,
    /// The deployment has a service, so each replica has a URL.
    serves_http: bool,
    /// Why the account cannot pay for a contract, once the ledger said so: every other
    /// node would say the same, so none is tried after it.
    unpaid: std::sync::Mutex<Option<String>>,
    /// Contracts this placement created and did not cancel, to undo an interrupted one.
    created: std::sync::Mutex<Vec<ContractId>>,
    /// Set when the user interrupts: no new node is tried, no start waited for.
    stop: tokio::sync::watch::Sender<bool>,
}

/// The component served to the nodes while a placement lasts; stops when dropped.
pub(crate) struct Serving {
    server: tokio::task::JoinHandle<()>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.server.abort();
        self.watcher.abort();
    }
}

impl Placement {
    /// Start a mesh peer that serves `component` to the nodes in `queue`.
    pub(crate) async fn open(
        globals: &Globals,
        name: &str,
        deployment: Vec<u8>,
        component: ([u8; 32], Vec<u8>),
        resources: Capacity,
        queue: VecDeque<NodeView>,
    ) -> anyhow::Result<(Arc<Placement>, Serving)> {
        let client = globals.client()?;
        let key = globals.keypair()?;
        say(
            globals.json,
            "starting a mesh peer to serve the component …",
        );
        let mesh = mesh_peer(&client, &key).await?;
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel(64);
        let blobs = HashMap::from([(component.0, Arc::new(component.1))]);
        let server = peergrid_node::blob::serve(&mesh, blobs, Some(sent_tx))
            .context("cannot serve /peergrid/blob/1")?;
        let serves_http = Deployment::decode(&deployment)
            .is_ok_and(|d| d.workloads.iter().any(|w| w.kind == WorkloadKind::Http));
        let placement = Arc::new(Placement {
            serves_http,
            client,
            key,
            mesh,
            deployment_hash: Hash::of(&deployment),
            deployment,
            resources,
            name: name.to_string(),
            json: globals.json,
            queue: Mutex::new(queue),
            tx: Mutex::new(()),
            sent: Mutex::new(HashMap::new()),
            unpaid: std::sync::Mutex::new(None),
            created: std::sync::Mutex::new(Vec::new()),
            stop: tokio::sync::watch::channel(false).0,
        });
        let p = placement.clone();
        let watcher = tokio::spawn(async move {
            while let Some((peer, _)) = sent_rx.recv().await {
                p.sent.lock().await.insert(peer, true);
            }
        });
        Ok((placement, Serving { server, watcher }))
    }

    /// Nodes to try next, after those queued.
    pub(crate) async fn queue(&self, nodes: VecDeque<NodeView>) {
        self.queue.lock().await.extend(nodes);
    }

    /// The mesh peer placing the replicas.
    pub(crate) fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Stop placing: what is under way ends at its next step.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Resolves once [`Placement::stop`] was called.
    async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|s| *s).await;
    }

    /// The contracts created and not cancelled so far.
    pub(crate) fn created(&self) -> Vec<ContractId> {
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn note_created(&self, contract: ContractId, kept: bool) {
        let mut created = self.created.lock().unwrap_or_else(|p| p.into_inner());
        created.retain(|c| *c != contract);
        if kept {
            created.push(contract);
        }
    }

    /// Why the account could not pay for a contract, if the ledger said it cannot.
    pub(crate) fn unpaid(&self) -> Option<String> {
        self.unpaid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The deployment's hash, which each contract holds.
    pub(crate) fn deployment_hash(&self) -> Hash {
        self.deployment_hash
    }

    async fn create_contract(&self, node: NodeId) -> anyhow::Result<ContractId> {
        let _one = self.tx.lock().await;
        // Interrupted while this one waited its turn: no new contract.
        if *self.stop.borrow() {
            bail!("the deploy was interrupted");
        }
        let spec = ContractSpec::Deployment {
            node,
            deployment_hash: self.deployment_hash,
            resources: self.resources,
            public_ips: 0,
        };
        let (hash, status) = self
            .client
            .send(&self.key, Payload::CreateContract(spec), TX_TIMEOUT)
            .await?;
        match status {
            TxStatus::Finalized { events, .. } => events
                .iter()
                .find_map(|e| match e {
                    Event::ContractCreated { contract, .. } => Some(*contract),
                    _ => None,
                })
                .context("the ledger finalized the contract but reported no id"),
            TxStatus::Rejected { reason, .. } => bail!("the ledger refused the contract: {reason}"),
            _ => bail!(
                "the contract was not final within {} s; check it with `peergrid tx status {hash}`",
                TX_TIMEOUT.as_secs()
            ),
        }
    }

    /// Point `contract` at this placement's deployment, reserving `resources`.
    async fn update_contract(
        &self,
        contract: ContractId,
        resources: Capacity,
    ) -> anyhow::Result<()> {
        let _one = self.tx.lock().await;
        let payload = Payload::UpdateContract {
            contract,
            deployment_hash: self.deployment_hash,
            resources,
        };
        let (hash, status) = self.client.send(&self.key, payload, TX_TIMEOUT).await?;
        match status {
            TxStatus::Finalized { .. } => Ok(()),
            TxStatus::Rejected { reason, .. } => bail!("the ledger refused the update: {reason}"),
            _ => bail!(
                "the update was not final within {} s; check it with `peergrid tx status {hash}`",
                TX_TIMEOUT.as_secs()
            ),
        }
    }

    pub(crate) async fn cancel(&self, contract: ContractId) {
        let _one = self.tx.lock().await;
        match self
            .client
            .send(&self.key, Payload::CancelContract { contract }, TX_TIMEOUT)
            .await
        {
            Ok((_, TxStatus::Finalized { .. })) => {
                say(self.json, format!("contract {contract} cancelled"))
            }
            Ok((_, other)) => say(
                self.json,
                format!(
                    "warning: contract {contract} could not be cancelled ({other:?}); \
                     cancel it with `peergrid contract cancel {contract}`"
                ),
            ),
            Err(e) => say(
                self.json,
                format!(
                    "warning: contract {contract} could not be cancelled ({e}); \
                     cancel it with `peergrid contract cancel {contract}`"
                ),
            ),
        }
    }

    /// Place one replica: take nodes from the queue until one runs it.
    pub(crate) async fn place(&self) -> Option<Replica> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let node = self.queue.lock().await.pop_front()?;
            let id = node.node.id;
            let contract = match self.create_contract(id).await {
                Ok(c) => c,
                Err(e) if format!("{e:#}").contains("insufficient balance") => {
                    self.queue.lock().await.clear();
                    let mut unpaid = self.unpaid.lock().unwrap_or_else(|p| p.into_inner());
                    if unpaid.is_none() {
                        say(
                            self.json,
                            format!("your account cannot pay for another contract: {e:#}"),
                        );
                        *unpaid = Some(format!("{e:#}"));
                    }
                    return None;
                }
                Err(_) if *self.stop.borrow() => return None,
                Err(e) => {
                    say(self.json, format!("node {id}: {e:#}; trying another node"));
                    continue;
                }
            };
            self.note_created(contract, true);
            say(
                self.json,
                format!("contract {contract} finalized on node {id}"),
            );
            let started = tokio::select! {
                started = self.start_on(&node, contract) => started,
                // Left to whoever stopped the placement, which cancels what it created.
                () = self.stopped() => return None,
            };
            match started {
                Ok(url) => {
                    return Some(Replica {
                        contract,
                        node: id,
                        url,
                    });
                }
                Err(e) => {
                    say(self.json, format!("node {id}: {e:#}; trying another node"));
                    self.cancel(contract).await;
                    self.note_created(contract, false);
                }
            }
        }
    }

    /// [`Placement::start_on`] for an existing replica, its node looked up on the ledger.
    async fn start_on_replica(&self, r: &Replica) -> anyhow::Result<Option<String>> {
        let view = (self.client.node(r.node).await?)
            .with_context(|| format!("node {} is not on the ledger", r.node))?;
        self.start_on(&view.data, r.contract).await
    }

    /// Send the deployment to `node` and follow it until it runs (a job: runs or has
    /// already exited); the URL, if any.
    pub(crate) async fn start_on(
        &self,
        node: &NodeView,
        contract: ContractId,
    ) -> anyhow::Result<Option<String>> {
        let id = node.node.id;
        let peer = peergrid_mesh::identity::peer_id(&node.node.account)
            .map_err(|e| anyhow::anyhow!("its account is not a mesh peer id: {e}"))?;
        let grid = grid(&self.client).await?;
        let request = DeployRequest::sign(&self.key, grid, contract, self.deployment.clone());
        say(self.json, format!("sending the deployment to node {id} …"));
        let send = async {
            let (mut lookups, mut opens) = (1, 1);
            loop {
                match protocol::deploy(&self.mesh, peer, &request).await {
                    // The mesh peer this command started may not know the grid yet, and its
                    // first lookups come back empty while the node is there: ask again.
                    Err(RpcError::Mesh(MeshError::PeerNotFound(_))) if lookups < PEER_LOOKUPS => {
                        lookups += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // Two first dials can race to two connections, and the stream opened on
                    // the one that closes fails before the request is sent: the surviving
                    // connection takes a retry.
                    Err(RpcError::Mesh(MeshError::OpenStream { .. })) if opens < 2 => {
                        opens += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(DEPLOY_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("the deployment was not accepted: {e}"),
            Err(_) => bail!(
                "no answer to the deployment within {} s",
                DEPLOY_TIMEOUT.as_secs()
            ),
        }
        say(
            self.json,
            format!(
                "node {id} accepted the deployment; waiting for it to fetch and start the component …"
            ),
        );
        let deadline = Instant::now() + START_TIMEOUT;
        let mut told_sent = false;
        let mut last_error = String::new();
        loop {
            if !told_sent && self.sent.lock().await.get(&peer).copied().unwrap_or(false) {
                told_sent = true;
                say(self.json, format!("component sent to node {id}"));
            }
            match tokio::time::timeout(
                STATUS_TIMEOUT,
                protocol::status_of(&self.mesh, peer, Some(contract)),
            )
            .await
            {
                Ok(Ok(report)) => {
                    let status = report.deployment.clone();
                    match status.as_ref().map(|d| d.state.as_str()) {
                        Some(state @ ("running" | "exited")) => {
                            if !told_sent {
                                say(self.json, format!("component already cached on node {id}"));
                            }
                            if state == "exited" {
                                say(self.json, format!("ran on node {id}"));
                            } else {
                                say(self.json, format!("running on node {id}"));
                            }
                            if !self.serves_http {
                                return Ok(None);
                            }
                            return Ok(report
                                .http
                                .map(|h| format!("{h}/{contract}/{}/", self.name)));
                        }
                        Some("error") => bail!(
                            "the workload cannot start there: {}",
                            status.and_then(|s| s.reason).unwrap_or_default()
                        ),
                        _ => {}
                    }
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "its status did not answer within 5 s".into(),
            }
            if Instant::now() > deadline {
                bail!(
                    "not running after {} s{}",
                    START_TIMEOUT.as_secs(),
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" (last status error: {last_error})")
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a deploy interrupted twice may leave: the contracts it knows of, and any whose
/// transaction was under way.
fn left_behind(placement: &Placement) -> String {
    let created = placement.created();
    let made = match created.as_slice() {
        [] => "no contract was created yet, but one under way may still be".to_string(),
        ids => format!(
            "contract{} {} {} left, and one under way may still be created",
            if ids.len() == 1 { "" } else { "s" },
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            if ids.len() == 1 { "is" } else { "are" },
        ),
    };
    format!(
        "interrupted again: {made}; see `peergrid contract list` and cancel what this deploy \
         made with `peergrid contract cancel ID`"
    )
}

/// `peergrid deploy`.
pub fn deploy(globals: &Globals, args: DeployArgs) -> anyhow::Result<()> {
    let json = globals.json;
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let bytes = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read {}", args.wasm.display()))?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.wasm));
    let kind = WorkloadKind::from(args.kind);
    let component = *blake3::hash(&bytes).as_bytes();
    let spec = RunSpec {
        memory_bytes: args.memory.bytes(),
        cpu_ms: args.cpu_ms,
        wall_ms: args.wall_ms,
        env: args.env.clone(),
        args: Vec::new(),
        disk_bytes: args.disk.bytes(),
    };
    let deployment = spec.deployment(&name, kind, component)?;
    let file = apps_file(globals)?;
    load_apps(&file)?.check_name_free(&name, globals)?;
    say(
        json,
        format!("checking {} ({} bytes) …", args.wasm.display(), bytes.len()),
    );
    check_component(&component, &bytes, kind, spec.memory_bytes)
        .with_context(|| format!("{} cannot be deployed", args.wasm.display()))?;
    say(
        json,
        format!(
            "component {} is a valid {kind} component",
            &hex::encode(component)[..16]
        ),
    );

    let client = globals.client()?;
    let resources = spec.resources();
    crate::runtime()?.block_on(async {
        let (_, nodes) = client.nodes(None).await?;
        let queue = candidates(nodes.clone(), &args.nodes, &resources, json);
        if queue.is_empty() {
            bail!("{}", none_fits(&nodes, &resources, &args.nodes));
        }
        if queue.len() < args.replicas {
            say(
                json,
                format!(
                    "warning: only {} nodes can take it; asked for {} replicas",
                    queue.len(),
                    args.replicas
                ),
            );
        }
        let (placement, serving) = Placement::open(
            globals,
            &name,
            deployment,
            (component, bytes),
            resources,
            queue,
        )
        .await?;
        let placing = futures::future::join_all((0..args.replicas).map(|_| {
            let p = placement.clone();
            async move { p.place().await }
        }));
        tokio::pin!(placing);
        let placed = tokio::select! {
            placed = &mut placing => placed,
            _ = crate::stop_requested() => {
                // A contract is paid for from its creation: an interrupted deploy undoes
                // what it made rather than leave contracts no `app` command knows.
                say(json, "interrupted: finishing the transactions under way, then cancelling the contracts this deploy made (Ctrl-C again leaves them)");
                placement.stop();
                tokio::select! {
                    _ = &mut placing => {}
                    _ = crate::stop_requested() => bail!("{}", left_behind(&placement)),
                }
                let cancelling = async {
                    for contract in placement.created() {
                        placement.cancel(contract).await;
                        placement.note_created(contract, false);
                    }
                };
                tokio::select! {
                    () = cancelling => {}
                    _ = crate::stop_requested() => bail!("{}", left_behind(&placement)),
                }
                drop(serving);
                placement.mesh().close().await;
                bail!("interrupted: {name} was not deployed");
            }
        };
        let replicas: Vec<Replica> = placed.into_iter().flatten().collect();
        drop(serving);
        placement.mesh().close().await;
        if replicas.is_empty() {
            if let Some(reason) = placement.unpaid() {
                bail!("no node runs {name}: your account cannot pay for its contract: {reason}");
            }
            bail!("no node runs {name}: every node tried failed (see above)");
        }
        let app = App {
            name: name.clone(),
            kind: kind.to_string(),
            component: hex::encode(component),
            deployment: placement.deployment_hash.to_string(),
            replicas: replicas.clone(),
            spec: Some(spec),
            owner: Some(placement.key.account()),
        };
        let mut apps = load_apps(&file)?;
        apps.apps.insert(name.clone(), app.clone());
        save_apps(&file, &apps)?;
        let short = replicas.len() < args.replicas;
        if short {
            eprintln!(
                "warning: only {} of {} replicas run; the app is kept with them (exit status 3)",
                replicas.len(),
                args.replicas
            );
        }
        if json {
            output::json(&json!({ "app": app, "replicas_asked": args.replicas }))?;
            return partly_done(short);
        }
        outln!("{name} runs on {} node(s):", replicas.len());
        for r in &replicas {
            match &r.url {
                Some(url) => outln!("{url}"),
                None => outln!(
                    "node {} (contract {}) has no HTTP entry (`node run --http`)",
                    r.node,
                    r.contract
                ),
            }
        }
        outln!("\nstatus: peergrid app status {name}\nremove: peergrid app rm {name}");
        partly_done(short)
    })
}

/// A deployment that runs fewer replicas than asked exits 3 (2 is a usage error), so a
/// script that asked for redundancy does not take it for done; what runs is kept and
/// was printed.
fn partly_done(short: bool) -> anyhow::Result<()> {
    if short {
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(3);
    }
    Ok(())
}

/// The grid the ledger runs ([`peergrid_storage::format::grid_id`]), which requests to its
/// nodes are signed for; asked once per command.
pub(crate) async fn grid(client: &Client) -> anyhow::Result<&'static str> {
    static GRID: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    GRID.get_or_try_init(|| peergrid_storage::client::grid_of(client))
        .await
        .map(String::as_str)
        .map_err(Into::into)
}

/// A node's mesh peer, and how the ledger sees it.
pub(crate) async fn node_peer(client: &Client, node: NodeId) -> anyhow::Result<(PeerId, NodeView)> {
    let view = client
        .node(node)
        .await?
        .with_context(|| format!("node {node} is not on the ledger"))?;
    let peer = peergrid_mesh::identity::peer_id(&view.data.node.account)
        .map_err(|e| anyhow::anyhow!("node {node}'s account is not a mesh peer id: {e}"))?;
    Ok((peer, view.data))
}

/// A workload's output from the node of one replica.
pub(crate) async fn replica_logs(
    client: &Client,
    mesh: &Mesh,
    key: &Keypair,
    node: NodeId,
    contract: ContractId,
    workload: &str,
) -> anyhow::Result<WorkloadLogs> {
    let (peer, view) = node_peer(client, node).await?;
    let request = LogsRequest::sign(key, grid(client).await?, contract, workload);
    match tokio::time::timeout(LOGS_TIMEOUT, protocol::logs(mesh, peer, &request)).await {
        Ok(Ok(logs)) => Ok(logs),
        // The mesh's own words are about addresses and transports: first say what it means.
        Ok(Err(e @ RpcError::Mesh(_))) => Err(anyhow::anyhow!(
            "node {node} cannot be reached (it is {} on the ledger; see `peergrid node list`): {e}",
            view.status
        )),
        Ok(Err(e)) => Err(anyhow::anyhow!("node {node}: {e}")),
        Err(_) => bail!(
            "node {node} did not answer within {} s",
            LOGS_TIMEOUT.as_secs()
        ),
    }
}

/// Print one replica's output: a job's stdout, stderr and ending; a service's log.
fn print_logs(logs: &WorkloadLogs) {
    out!("{}", logs.stdout);
    if !logs.stdout.is_empty() && !logs.stdout.ends_with('\n') {
        outln!();
    }
    if logs.kind == "job" {
        if !logs.stderr.is_empty() {
            outln!("-- stderr --");
            out!("{}", logs.stderr);
            if !logs.stderr.ends_with('\n') {
                outln!();
            }
        }
        match (logs.exit_code, &logs.error) {
            (Some(code), _) => outln!(
                "-- exited with code {code} ({} ms CPU, {} ms wall) --",
                logs.cpu_ms,
                logs.wall_ms
            ),
            // The node's reason starts with "stopped:" itself.
            (None, Some(e)) => outln!(
                "-- {} ({} ms CPU, {} ms wall) --",
                if e.starts_with("stopped") {
                    e.clone()
                } else {
                    format!("stopped: {e}")
                },
                logs.cpu_ms,
                logs.wall_ms
            ),
            (None, None) => outln!("-- {} --", logs.state),
        }
    } else if logs.stdout.is_empty() {
        outln!("(nothing printed yet; state {})", logs.state);
    }
}

/// `peergrid app update`.
fn update(globals: &Globals, file: &Path, mut apps: Apps, args: UpdateArgs) -> anyhow::Result<()> {
    let json = globals.json;
    let name = args.name.clone();
    let app = apps.find(&name)?;
    app.check_owner(&globals.keypair()?)?;
    let kind = app.workload_kind();
    let Some(wasm) = args.wasm.clone() else {
        return update_disk(globals, file, apps, args);
    };
    let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let component = *blake3::hash(&bytes).as_bytes();
    // Apps deployed before their spec was recorded ran with `deploy`'s defaults.
    let mut spec = app.spec.clone().unwrap_or(RunSpec {
        memory_bytes: 128 << 20,
        cpu_ms: 1_000,
        wall_ms: 10_000,
        env: Vec::new(),
        args: Vec::new(),
        disk_bytes: SRU_BYTES,
    });
    // The disk the contracts hold now: `contract update --sru` may have changed it since
    // the app's settings were recorded, and an update must not take it back unasked.
    let client = globals.client()?;
    let held = crate::runtime()?.block_on(contract_reservations(&client, &app.replicas));
    // Without --disk each contract keeps its own; the record keeps the largest.
    let disk_before = held
        .values()
        .map(|c| c.sru)
        .max()
        .unwrap_or(spec.disk_bytes);
    spec.disk_bytes = args.disk.map_or(disk_before, Size::bytes);
    spec.memory_bytes = args.memory.map_or(spec.memory_bytes, Size::bytes);
    spec.cpu_ms = args.cpu_ms.unwrap_or(spec.cpu_ms);
    spec.wall_ms = args.wall_ms.unwrap_or(spec.wall_ms);
    if !args.env.is_empty() {
        spec.env = args.env.clone();
    }
    let deployment = spec.deployment(&name, kind, component)?;
    if Hash::of(&deployment).to_string() == app.deployment && spec.disk_bytes == disk_before {
        bail!(
            "{name} already runs this component with these settings; nothing to update (a \
             replica that missed it is shown by `peergrid app status {name}`, and `peergrid \
             app repair {name} {}` sends it the update)",
            wasm.display()
        );
    }
    check_component(&component, &bytes, kind, spec.memory_bytes)
        .with_context(|| format!("{} cannot be deployed", wasm.display()))?;
    if kind == WorkloadKind::Job && Hash::of(&deployment).to_string() == app.deployment {
        say(json, JOB_NOT_RUN_AGAIN);
    }
    let mut updated = app.clone();
    let (failures, fit) = crate::runtime()?.block_on(async {
        let (placement, serving) = Placement::open(
            globals,
            &name,
            deployment,
            (component, bytes),
            spec.resources(),
            VecDeque::new(),
        )
        .await?;
        let mut fit = DiskFit::default();
        if args.disk.is_some() {
            let states = replica_states(&client, placement.mesh(), &app).await;
            match check_disk(&states, spec.disk_bytes, args.force, json) {
                Ok(found) => fit = found,
                Err(e) => {
                    drop(serving);
                    placement.mesh().close().await;
                    return Err(e);
                }
            }
        }
        // One replica at a time: the others keep answering with the old version.
        let mut failures = Vec::new();
        for r in &mut updated.replicas {
            say(
                json,
                format!("updating contract {} on node {} …", r.contract, r.node),
            );
            let resources = reservation(
                placement.resources,
                held.get(&r.contract).copied(),
                (args.disk.is_some(), args.memory.is_some()),
            );
            let step = async {
                placement.update_contract(r.contract, resources).await?;
                say(
                    json,
                    format!("contract {} now holds the new deployment", r.contract),
                );
                placement.start_on_replica(r).await
            };
            match step.await {
                Ok(url) => r.url = url.or(r.url.take()),
                Err(e) => {
                    say(json, format!("node {}: {e:#}", r.node));
                    failures.push(r.node);
                }
            }
        }
        drop(serving);
        placement.mesh().close().await;
        anyhow::Ok((failures, fit))
    })?;
    if failures.len() == updated.replicas.len() {
        bail!(
            "no replica of {name} was updated (see above why); once that is dealt with, run \
             the same `peergrid app update` again"
        );
    }
    updated.component = hex::encode(component);
    updated.deployment = Hash::of(&spec.deployment(&name, kind, component)?).to_string();
    updated.spec = Some(spec);
    apps.apps.insert(name.clone(), updated.clone());
    save_apps(file, &apps)?;
    if !failures.is_empty() {
        // Recorded as updated. A replica whose contract took the new deployment but whose
        // node did not start it serves the old one meanwhile; one whose contract the
        // ledger refused still holds the old one. `app repair` points the contract at
        // the app's deployment where needed, and sends it.
        eprintln!(
            "warning: the replicas on nodes {failures:?} do not run the new version (exit \
             status 3); `peergrid app status {name}` shows them, and `peergrid app repair \
             {name} {}` sends it to those that missed it and replaces those that do not serve",
            wasm.display()
        );
    }
    if json {
        output::json(&fit.json(&updated, &failures))?;
    } else {
        outln!(
            "{name} updated on {} node(s){}",
            updated.replicas.len() - failures.len(),
            fit.caveat(&name)
        );
    }
    partly_done(!failures.is_empty())
}

/// `used` of `quota`, precise enough to tell them apart: "2.0 MiB of 2.0 MiB" next to
/// "98 % full" or "OVER" would say nothing.
fn used_of(used: u64, quota: u64) -> String {
    let (u, q) = (Size(used).to_string(), Size(quota).to_string());
    if u != q || used == quota {
        format!("{u} of {q}")
    } else if used / 1024 != quota / 1024 {
        format!("{} KiB of {} KiB", used / 1024, quota / 1024)
    } else {
        format!("{used} B of {quota} B")
    }
}

/// The disk each of `replicas`' contracts reserves now, for those that can be updated
/// (live, not in their grace period); those the ledger did not answer for are left out.
pub(crate) async fn contract_disks(
    client: &Client,
    replicas: &[Replica],
) -> BTreeMap<ContractId, u64> {
    let held = contract_reservations(client, replicas).await;
    held.into_iter().map(|(id, c)| (id, c.sru)).collect()
}

/// What a contract that holds `held` reserves once it holds a deployment that needs
/// `need`: a reservation raised by hand (`contract update`) stays, its disk unless a new
/// one is asked for, its memory and cores unless new memory is.
fn reservation(
    need: Capacity,
    held: Option<Capacity>,
    (new_disk, new_memory): (bool, bool),
) -> Capacity {
    let Some(held) = held else {
        return need;
    };
    Capacity {
        sru: if new_disk { need.sru } else { held.sru },
        mru: if new_memory {
            need.mru
        } else {
            need.mru.max(held.mru)
        },
        cru: if new_memory {
            need.cru
        } else {
            need.cru.max(held.cru)
        },
        hru: need.hru,
    }
}

/// How many live deployment contracts the key in use owns, when the ledger answers.
fn unnamed_deployments(globals: &Globals) -> Option<usize> {
    let owner = globals.keypair().ok()?.account();
    let client = globals.client().ok()?;
    let filter = peergrid_client::ContractFilter {
        owner: Some(owner),
        node: None,
    };
    let (_, contracts) = crate::runtime()
        .ok()?
        .block_on(client.contracts(filter))
        .ok()?;
    let live = contracts
        .iter()
        .filter(|c| c.state == ContractState::Created && c.deployment_hash().is_some())
        .count();
    (live > 0).then_some(live)
}

/// What each live contract of `replicas` reserves now.
async fn contract_reservations(
    client: &Client,
    replicas: &[Replica],
) -> BTreeMap<ContractId, Capacity> {
    let mut held = BTreeMap::new();
    for r in replicas {
        if let Ok(Some(c)) = client.contract(r.contract).await
            && c.data.state == ContractState::Created
        {
            held.insert(r.contract, c.data.reserved);
        }
    }
    held
}

/// `peergrid app update NAME --disk SIZE` without a component: each live contract
/// reserves the new disk (`UpdateContract` with the deployment it holds), and the nodes
/// follow; the app runs on, its files kept.
fn update_disk(
    globals: &Globals,
    file: &Path,
    mut apps: Apps,
    args: UpdateArgs,
) -> anyhow::Result<()> {
    let json = globals.json;
    let name = args.name.clone();
    let app = apps.find(&name)?.clone();
    if args.memory.is_some()
        || args.cpu_ms.is_some()
        || args.wall_ms.is_some()
        || !args.env.is_empty()
    {
        bail!(
            "--memory, --cpu-ms, --wall-ms and --env make a new deployment, which the nodes \
             fetch from you: give the component too (`peergrid app update {name} APP.wasm …`)"
        );
    }
    let Some(disk) = args.disk.map(Size::bytes) else {
        bail!(
            "nothing to update: give the new component (`peergrid app update {name} APP.wasm \
             …`), or only a new disk (`peergrid app update {name} --disk SIZE`)"
        );
    };
    if app.workload_kind() == WorkloadKind::Job {
        say(json, JOB_NOT_RUN_AGAIN);
    }
    let key = globals.keypair()?;
    let client = globals.client()?;
    let (done, failed, fit) = crate::runtime()?.block_on(async {
        let disks = contract_disks(&client, &app.replicas).await;
        if disks.is_empty() {
            bail!(
                "none of {name}'s contracts can be updated: each is ended, in its grace period \
                 (top the account up first) or unknown to the ledger (`peergrid app status \
                 {name}`)"
            );
        }
        if disks.values().all(|d| *d == disk) {
            bail!(
                "{name}'s contracts already reserve {}; nothing to update",
                Size(disk)
            );
        }
        let mesh = mesh_peer(&client, &key).await?;
        let states = replica_states(&client, &mesh, &app).await;
        mesh.close().await;
        let fit = check_disk(&states, disk, args.force, json)?;
        let (mut done, mut failed) = (0, Vec::new());
        for r in &app.replicas {
            match disks.get(&r.contract) {
                Some(d) if *d == disk => {
                    done += 1;
                    continue;
                }
                Some(_) => {}
                None => {
                    say(
                        json,
                        format!(
                            "contract {} on node {} is not live (ended, or in its grace period: \
                             top the account up first): skipped",
                            r.contract, r.node
                        ),
                    );
                    failed.push(r.node);
                    continue;
                }
            }
            let contract = match client.contract(r.contract).await {
                Ok(Some(c)) => c.data,
                Ok(None) => {
                    say(
                        json,
                        format!("contract {} is not on the ledger", r.contract),
                    );
                    failed.push(r.node);
                    continue;
                }
                Err(e) => {
                    say(json, format!("contract {}: {e}", r.contract));
                    failed.push(r.node);
                    continue;
                }
            };
            let Some(deployment_hash) = contract.deployment_hash() else {
                say(
                    json,
                    format!("contract {} is not a deployment contract", r.contract),
                );
                failed.push(r.node);
                continue;
            };
            let payload = Payload::UpdateContract {
                contract: r.contract,
                deployment_hash,
                resources: Capacity {
                    sru: disk,
                    ..contract.reserved
                },
            };
            let refused = match client.send(&key, payload, TX_TIMEOUT).await {
                Ok((_, TxStatus::Finalized { .. })) => {
                    say(
                        json,
                        format!(
                            "contract {} on node {} now reserves {} of disk",
                            r.contract,
                            r.node,
                            Size(disk)
                        ),
                    );
                    done += 1;
                    continue;
                }
                Ok((hash, TxStatus::Rejected { reason, .. })) => {
                    format!("the ledger refused it ({reason}; tx {hash})")
                }
                Ok((hash, _)) => format!(
                    "not final within {} s; check `peergrid tx status {hash}`",
                    TX_TIMEOUT.as_secs()
                ),
                Err(e) => format!("{e:#}"),
            };
            say(json, format!("contract {}: {refused}", r.contract));
            failed.push(r.node);
        }
        anyhow::Ok((done, failed, fit))
    })?;
    if done == 0 {
        bail!("no contract of {name} was updated (see above why); run the same command again");
    }
    let updated = apps.apps.get_mut(&name).map(|a| {
        if let Some(spec) = a.spec.as_mut() {
            spec.disk_bytes = disk;
        }
        a.clone()
    });
    save_apps(file, &apps)?;
    if json {
        output::json(&fit.json(&updated, &failed))?;
    } else {
        outln!(
            "{name}'s /data may now use {} on {done} of {} node(s); its files stay and the \
             app runs on{}",
            Size(disk),
            app.replicas.len(),
            fit.caveat(&name)
        );
    }
    partly_done(!failed.is_empty())
}

/// `peergrid app repair`: each replica that does not serve gets a new one on another node
/// (up, with room, not running the app yet), then its contract is cancelled.
fn repair(
    globals: &Globals,
    file: &Path,
    mut apps: Apps,
    (name, wasm): (&str, &Path),
    data: Option<&Path>,
) -> anyhow::Result<()> {
    let json = globals.json;
    let app = apps.find(name)?;
    app.check_owner(&globals.keypair()?)?;
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let component = *blake3::hash(&bytes).as_bytes();
    if hex::encode(component) != app.component {
        bail!(
            "{} is not the component {name} runs (its BLAKE3 is {}, {name} runs {}); give that \
             one, or run a new one with `peergrid app update {name} {}`",
            wasm.display(),
            hex::encode(component),
            app.component,
            wasm.display()
        );
    }
    let kind = app.workload_kind();
    let spec = app.spec.clone().with_context(|| {
        format!("{name} was deployed before its settings were recorded; run `peergrid app update {name} {}` once", wasm.display())
    })?;
    let deployment = spec.deployment(name, kind, component)?;
    if Hash::of(&deployment).to_string() != app.deployment {
        bail!(
            "{name}'s recorded settings do not make the deployment its contracts hold; \
             run `peergrid app update {name} {}` first",
            wasm.display()
        );
    }
    // The archive is checked as a node will check it, before any contract is made.
    let restore = match data {
        Some(path) => {
            let (unpacked, bytes, hash) =
                peergrid_node::appdata::scan(path).map_err(anyhow::Error::msg)?;
            if unpacked.disk_bytes > spec.disk_bytes {
                bail!(
                    "{}: the archive takes {} of disk as /data counts it, more than {name}'s {}; \
                     first `peergrid app update {name} --disk {}`",
                    path.display(),
                    Size(unpacked.disk_bytes),
                    Size(spec.disk_bytes),
                    disk_flag(unpacked.disk_bytes)
                );
            }
            Some((path, bytes, hash))
        }
        None => None,
    };
    let client = globals.client()?;
    let resources = spec.resources();
    let mut repaired = app.clone();
    let (replaced, left, resent, restored) = crate::runtime()?.block_on(async {
        let mut resent = Vec::new();
        let (placement, serving) = Placement::open(
            globals,
            name,
            deployment,
            (component, bytes),
            resources,
            VecDeque::new(),
        )
        .await?;
        let mut broken = Vec::new();
        for r in &app.replicas {
            let state = replica_state(&client, placement.mesh(), r, &app.deployment).await;
            // A replica whose contract or node missed an update (its node down, frozen or
            // restarted meanwhile, or the contract's transaction not through) gets the
            // app's deployment where it is; placed elsewhere only if that fails.
            let live = state.contract_state == "live" || state.holds_another;
            let missed = state.state.starts_with("outdated") || state.state == "absent";
            if live && (missed || state.holds_another) {
                say(
                    json,
                    format!(
                        "contract {} on node {} does not run the app's deployment ({}): sending it …",
                        r.contract,
                        r.node,
                        if state.holds_another { &state.contract_state } else { &state.state }
                    ),
                );
                let sent = async {
                    if state.holds_another {
                        // With what it holds: a disk or memory set by hand stays.
                        let held = contract_reservations(&client, std::slice::from_ref(r)).await;
                        let resources = reservation(
                            placement.resources,
                            held.get(&r.contract).copied(),
                            (false, false),
                        );
                        placement.update_contract(r.contract, resources).await?;
                    }
                    placement.start_on_replica(r).await
                };
                match sent.await {
                    Ok(url) => {
                        say(json, format!("node {} runs the app's deployment", r.node));
                        let mut now = r.clone();
                        now.url = url.or(now.url);
                        resent.push(now);
                        continue;
                    }
                    Err(e) => say(json, format!("node {}: {e:#}; placing it elsewhere", r.node)),
                }
            }
            if !state.serves() {
                say(
                    json,
                    format!(
                        "contract {} on node {} does not serve: contract {}, workload {}",
                        r.contract, r.node, state.contract_state, state.state
                    ),
                );
                // A contract still on the ledger is cancelled once it is replaced.
                let cancellable = !(state.contract_state.starts_with("deleted")
                    || state.contract_state == "missing");
                broken.push((r.clone(), cancellable));
            }
        }
        if broken.is_empty() {
            drop(serving);
            placement.mesh().close().await;
            return anyhow::Ok((Vec::new(), Vec::new(), resent, (Vec::new(), false)));
        }
        // Not on a node that runs the app or failed it.
        let (_, nodes) = client.nodes(None).await?;
        let taken: Vec<NodeId> = app.replicas.iter().map(|r| r.node).collect();
        let queue: VecDeque<NodeView> = candidates(nodes, &[], &resources, json)
            .into_iter()
            .filter(|n| !taken.contains(&n.node.id))
            .collect();
        placement.queue(queue).await;
        let mut replaced = Vec::new();
        let mut left = Vec::new();
        for (old, live) in broken {
            let placed = tokio::select! {
                placed = placement.place() => placed,
                _ = crate::stop_requested() => {
                    say(json, "interrupted: cancelling the contracts this repair made");
                    placement.stop();
                    for contract in placement.created() {
                        placement.cancel(contract).await;
                    }
                    bail!("interrupted: the replicas repaired so far are not recorded; run the repair again");
                }
            };
            let Some(new) = placed else {
                left.push(old);
                continue;
            };
            if live {
                placement.cancel(old.contract).await;
            }
            if let Some(slot) = repaired
                .replicas
                .iter_mut()
                .find(|r| r.contract == old.contract)
            {
                *slot = new.clone();
            }
            replaced.push((old, new));
        }
        // Restored through this mesh peer, which already reaches the new nodes.
        let restored = match restore {
            Some((path, bytes, hash)) if !replaced.is_empty() => {
                let moved: Vec<Replica> = replaced.iter().map(|(_, new)| new.clone()).collect();
                let mesh = placement.mesh();
                let how = (&client, mesh, &placement.key);
                crate::app_data::send_to(globals, how, path, (bytes, hash), &moved).await
            }
            _ => (Vec::new(), false),
        };
        drop(serving);
        placement.mesh().close().await;
        anyhow::Ok((replaced, left, resent, restored))
    })?;
    let (replaced, left, resent, (restored, stopped)) = (replaced, left, resent, restored);
    for r in &resent {
        if let Some(slot) = (repaired.replicas.iter_mut()).find(|x| x.contract == r.contract) {
            *slot = r.clone();
        }
    }
    if !replaced.is_empty() || !resent.is_empty() {
        apps.apps.insert(name.to_string(), repaired.clone());
        save_apps(file, &apps)?;
    }
    let unrestored: Vec<NodeId> = (restored.iter())
        .filter(|(_, o)| !matches!(o, crate::app_data::Outcome::Replaced(_)))
        .map(|(r, _)| r.node)
        .collect();
    if json {
        output::json(&json!({
            "app": repaired,
            "replaced": replaced
                .iter()
                .map(|(old, new)| json!({ "old": old, "new": new }))
                .collect::<Vec<_>>(),
            "updated": resent,
            "not_replaced": left,
            "data_restored": restored.iter().map(|(r, o)| o.json(r)).collect::<Vec<_>>(),
        }))?;
    } else if replaced.is_empty() && left.is_empty() && resent.is_empty() {
        outln!(
            "every replica of {name} serves ({}); nothing to repair",
            app.replicas.len()
        );
    } else {
        for r in &resent {
            outln!(
                "node {} (contract {}) now runs the app's current deployment",
                r.node,
                r.contract
            );
        }
        for (old, new) in &replaced {
            outln!(
                "node {} (contract {}) replaced by node {} (contract {}){}",
                old.node,
                old.contract,
                new.node,
                new.contract,
                new.url
                    .as_ref()
                    .map(|u| format!(": {u}"))
                    .unwrap_or_default()
            );
        }
        for (r, outcome) in &restored {
            use crate::app_data::Outcome;
            let what = match outcome {
                Outcome::Replaced(_) => "restored",
                Outcome::Unsure(_) => "MAYBE restored",
                Outcome::Kept(_) => "NOT restored",
            };
            outln!(
                "node {}: /data {what} from the archive: {}",
                r.node,
                outcome.text()
            );
        }
        if data.is_some() && replaced.is_empty() {
            outln!("no replica moved: --data restored nothing");
        }
        if let Some((_, new)) = replaced.first()
            && data.is_none()
        {
            // Nothing carries a folder from a node that is gone.
            outln!(
                "a moved replica's /data starts empty: restore a backup with `peergrid app data \
                 import {name} ARCHIVE --node {}` (an archive from `app data export`), or \
                 repair with --data ARCHIVE",
                new.node
            );
        }
    }
    if let Some(path) = data
        && !unrestored.is_empty()
    {
        let flags: Vec<String> = unrestored.iter().map(|n| format!("--node {n}")).collect();
        let also = match left.is_empty() {
            true => String::new(),
            false => format!(
                "; no other node could take the replicas on nodes {:?}: run the repair again later",
                left.iter().map(|r| r.node).collect::<Vec<_>>()
            ),
        };
        bail!(
            "{}the /data of moved replicas on nodes {unrestored:?} was not restored (see above); \
             retry with `peergrid app data import {name} {} {} --yes`{also}",
            if stopped { "stopped: " } else { "" },
            path.display(),
            flags.join(" ")
        );
    }
    if !left.is_empty() {
        let nodes: Vec<NodeId> = left.iter().map(|r| r.node).collect();
        if replaced.is_empty() && resent.is_empty() {
            bail!(
                "no other node could take the replicas on nodes {nodes:?} (see above); \
                 they are kept, run the repair again later"
            );
        }
        eprintln!(
            "warning: no other node could take the replicas on nodes {nodes:?} (see above); \
             they are kept, run the repair again later"
        );
        return partly_done(true);
    }
    Ok(())
}

/// One replica as `app status` shows it: its contract on the ledger, its workload on its node.
#[derive(Serialize)]
struct ReplicaState {
    contract: ContractId,
    node: NodeId,
    contract_state: String,
    state: String,
    url: Option<String>,
    /// What its `/data` folder uses on its node, bytes (unknown from older nodes, or
    /// before the first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    data_used_bytes: Option<u64>,
    /// What its `/data` folder may use, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_quota_bytes: Option<u64>,
    /// Its `/data` is read-only (well past its disk, or the node's disk full).
    data_read_only: bool,
    /// Its contract is live but holds another deployment than the app's (an update
    /// whose transaction did not go through, or a hand edit).
    #[serde(skip)]
    holds_another: bool,
}

/// How a new disk suits what the replicas' files use.
#[derive(Default)]
struct DiskFit {
    /// Replicas whose files use more: their writes that need room fail.
    over: usize,
    /// Replicas whose files are well past it: their `/data` turns read-only.
    read_only: usize,
}

impl DiskFit {
    /// What `app update --json` prints: the app as recorded, the nodes that did not take
    /// the update, and how the disk fits.
    fn json(&self, app: &impl Serialize, failed_nodes: &[NodeId]) -> serde_json::Value {
        json!({
            "app": app,
            "failed_nodes": failed_nodes,
            "nodes_over_disk": self.over,
            "nodes_read_only": self.read_only,
        })
    }

    /// What the update's last line adds: nothing when the disk suits every replica.
    fn caveat(&self, name: &str) -> String {
        match (self.over, self.read_only) {
            (0, 0) => String::new(),
            (over, 0) => format!(
                "; on {over} node(s) its files use more, so its writes that need room fail \
                 until files are removed (`peergrid app status {name}`)"
            ),
            (over, read_only) => format!(
                "; on {read_only} node(s) its /data is READ-ONLY, its files well past the disk{} \
                 (`peergrid app status {name}`)",
                if over > 0 {
                    format!(", and on {over} more they use more than it")
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Whether a disk of `disk` bytes suits what each replica's files use: refused (unless
/// `force`) where it would make `/data` read-only at once, since the app could then not
/// even remove files; a warning where writes that need room would fail.
fn check_disk(
    states: &[ReplicaState],
    disk: u64,
    force: bool,
    json: bool,
) -> anyhow::Result<DiskFit> {
    let read_only_at = peergrid_compute::data::read_only_at(disk);
    let mut fit = DiskFit::default();
    let mut locked = Vec::new();
    for s in states {
        // A disk no smaller than the replica has makes nothing worse there.
        let raising = s.data_quota_bytes.is_some_and(|quota| disk >= quota);
        match s.data_used_bytes {
            Some(used) if used >= read_only_at && raising => {
                fit.read_only += 1;
                say(
                    json,
                    format!(
                        "warning: on node {} the app's files use {}: with --disk {} its /data \
                         stays read-only (give at least {} to write again)",
                        s.node,
                        Size(used),
                        Size(disk),
                        Size(used.div_ceil(1 << 20) << 20)
                    ),
                );
            }
            Some(used) if used >= read_only_at => locked.push((s.node, used)),
            Some(used) if used > disk => {
                fit.over += 1;
                say(
                    json,
                    format!(
                        "warning: on node {} the app's files use {}, more than --disk {}: its \
                         writes that need room fail until files are removed",
                        s.node,
                        Size(used),
                        Size(disk)
                    ),
                )
            }
            Some(_) => {}
            None if raising => {}
            None => say(
                json,
                format!(
                    "warning: node {} did not say what the app's files use ({}); past {} its \
                     /data turns read-only",
                    s.node,
                    s.state,
                    Size(read_only_at)
                ),
            ),
        }
    }
    let Some(&(_, most)) = locked.iter().max_by_key(|(_, used)| *used) else {
        return Ok(fit);
    };
    fit.read_only += locked.len();
    let nodes: Vec<String> = locked
        .iter()
        .map(|(node, used)| format!("node {node}: {}", Size(*used)))
        .collect();
    if force {
        say(
            json,
            format!(
                "warning: --force: /data turns read-only at once where its files use {} or more \
                 ({}): writes and removals fail until the disk is raised again",
                Size(read_only_at),
                nodes.join(", ")
            ),
        );
        return Ok(fit);
    }
    bail!(
        "--disk {} is too small for the app's files ({}): past {} its /data would turn \
         read-only at once, and the app could neither write nor remove files. Give --disk \
         at least {}, remove files first, or pass --force",
        Size(disk),
        nodes.join(", "),
        Size(read_only_at),
        disk_flag(most)
    )
}

/// A `--disk` value that holds `bytes`, as it is typed: whole MiB, rounded up (a figure
/// rounded down would leave it over).
pub(crate) fn disk_flag(bytes: u64) -> String {
    format!("{}MiB", bytes.div_ceil(1 << 20))
}

/// What an update that changes only the disk tells a job's owner.
const JOB_NOT_RUN_AGAIN: &str = "only the disk changes, which is not part of the deployment: \
                                 the job is not run again (a new deployment, such as a \
                                 changed --env, runs it again)";

/// Every replica of `app` as [`replica_state`] finds it, in order.
async fn replica_states(client: &Client, mesh: &Mesh, app: &App) -> Vec<ReplicaState> {
    let mut states = Vec::new();
    for r in &app.replicas {
        states.push(replica_state(client, mesh, r, &app.deployment).await);
    }
    states
}

/// A replica's contract on the ledger and its workload on its node, asked now.
async fn replica_state(
    client: &Client,
    mesh: &Mesh,
    r: &Replica,
    deployment: &str,
) -> ReplicaState {
    let mut holds_another = false;
    let ledger = match client.contract(r.contract).await {
        Ok(Some(c)) => match c.data.state {
            ContractState::Created => match c.data.deployment_hash() {
                Some(h) if h.to_string() != deployment => {
                    holds_another = true;
                    format!(
                        "live, holding deployment {} rather than the app's {}",
                        &h.to_string()[..12],
                        &deployment[..12.min(deployment.len())]
                    )
                }
                _ => "live".to_string(),
            },
            ContractState::GracePeriod { .. } => "grace".to_string(),
            ContractState::Deleted { reason, .. } => format!("deleted ({reason})"),
        },
        Ok(None) => "missing".into(),
        Err(e) => format!("unknown ({e})"),
    };
    let mut data = (None, None, false);
    let on_node = match client.node(r.node).await {
        Ok(Some(n)) => match peergrid_mesh::identity::peer_id(&n.data.node.account) {
            Ok(peer) => match tokio::time::timeout(
                STATUS_TIMEOUT,
                protocol::status_of(mesh, peer, Some(r.contract)),
            )
            .await
            {
                Ok(Ok(report)) => {
                    if let Some(d) = &report.deployment {
                        data = (d.data_used_bytes, d.data_quota_bytes, d.data_read_only);
                    }
                    let state = report
                        .deployment
                        .map(|d| match d.reason {
                            Some(reason) => format!("{}: {reason}", d.state),
                            None => d.state,
                        })
                        .unwrap_or_else(|| "unknown (old node)".into());
                    // It answers, yet does not report to the ledger: it may not follow
                    // the ledger either (contract changes, cancellations).
                    if n.data.status == peergrid_ledger::NodeStatus::Up {
                        state
                    } else {
                        format!(
                            "{state} (node {} answers but is {} on the ledger)",
                            r.node, n.data.status
                        )
                    }
                }
                Ok(Err(e)) => format!(
                    "unreachable (node {} is {} on the ledger): {e}",
                    r.node, n.data.status
                ),
                Err(_) => "no answer within 5 s".into(),
            },
            Err(e) => format!("unknown ({e})"),
        },
        Ok(None) => "node missing from the ledger".into(),
        Err(e) => format!("unknown ({e})"),
    };
    ReplicaState {
        contract: r.contract,
        node: r.node,
        contract_state: ledger,
        state: on_node,
        url: r.url.clone(),
        data_used_bytes: data.0,
        data_quota_bytes: data.1,
        data_read_only: data.2,
        holds_another,
    }
}

impl ReplicaState {
    /// Whether it serves: its contract is live and its workload runs (or, a job, ran).
    fn serves(&self) -> bool {
        self.contract_state == "live"
            && (self.state == "running" || self.state.starts_with("exited"))
    }
}

/// `peergrid app …`.
pub fn app(globals: &Globals, cmd: AppCommand) -> anyhow::Result<()> {
    let file = apps_file(globals)?;
    let mut apps = load_apps(&file)?;
    match cmd {
        AppCommand::Update(args) => update(globals, &file, apps, args),
        AppCommand::Repair { name, wasm, data } => {
            repair(globals, &file, apps, (&name, &wasm), data.as_deref())
        }
        AppCommand::Data(cmd) => crate::app_data::data(globals, &apps, cmd),
        AppCommand::Logs { name } => {
            let app = apps.find(&name)?;
            let client = globals.client()?;
            let key = globals.keypair()?;
            app.check_owner(&key)?;
            crate::runtime()?.block_on(async {
                let mesh = mesh_peer(&client, &key).await?;
                let mut rows = Vec::new();
                let mut unread = 0;
                for r in &app.replicas {
                    let logs =
                        replica_logs(&client, &mesh, &key, r.node, r.contract, &app.name).await;
                    unread += usize::from(logs.is_err());
                    if globals.json {
                        rows.push(match logs {
                            Ok(l) => json!({ "node": r.node, "logs": l }),
                            Err(e) => json!({
                                "node": r.node,
                                "contract": r.contract,
                                "error": format!("{e:#}"),
                            }),
                        });
                        continue;
                    }
                    outln!("== node {} (contract {}) ==", r.node, r.contract);
                    match logs {
                        Ok(l) => print_logs(&l),
                        Err(e) => outln!("cannot read its output: {e:#}"),
                    }
                }
                mesh.close().await;
                if globals.json {
                    output::json(&json!({ "app": app.name, "replicas": rows }))?;
                }
                if unread > 0 {
                    bail!(
                        "the output of {unread} of {} replicas could not be read (see above)",
                        app.replicas.len()
                    );
                }
                Ok(())
            })
        }
        AppCommand::List => {
            if globals.json {
                return output::json(&json!({ "apps": apps.apps.values().collect::<Vec<_>>() }));
            }
            if apps.apps.is_empty() {
                // Apps are named in this home's apps.json only; after `key import` on a new
                // machine the contracts are still live (and billed) on the ledger.
                if let Some(live) = unnamed_deployments(globals) {
                    outln!(
                        "no apps recorded in this home, but your account has {live} live deployment contract(s) on the ledger (billed while live): `peergrid contract list` lists them, `peergrid contract cancel ID` ends one"
                    );
                    return Ok(());
                }
                outln!("no apps; deploy one with `peergrid deploy APP.wasm`");
                return Ok(());
            }
            // Several keys may share one home: each app says whose it is.
            let me = globals.keypair().ok().map(|k| k.account());
            let rows: Vec<Vec<String>> = apps
                .apps
                .values()
                .map(|app| {
                    let contracts: Vec<String> = app
                        .replicas
                        .iter()
                        .map(|r| r.contract.to_string())
                        .collect();
                    let urls: Vec<&str> = app
                        .replicas
                        .iter()
                        .filter_map(|r| r.url.as_deref())
                        .collect();
                    let owner = match app.owner {
                        None => "-".to_string(),
                        Some(o) if Some(o) == me => "you".to_string(),
                        Some(o) => o.short(),
                    };
                    vec![
                        app.name.clone(),
                        app.kind.clone(),
                        owner,
                        contracts.join(","),
                        urls.join(" "),
                    ]
                })
                .collect();
            output::table(&["NAME", "KIND", "OWNER", "CONTRACTS", "URLS"], &rows);
            Ok(())
        }
        AppCommand::Status { name } => {
            let app = apps.find(&name)?;
            let client = globals.client()?;
            let key = globals.keypair()?;
            crate::runtime()?.block_on(async {
                let mesh = mesh_peer(&client, &key).await?;
                let rows = replica_states(&client, &mesh, &app).await;
                mesh.close().await;
                // A script (or a monitor) learns from the status whether every replica serves.
                let failing = rows.iter().filter(|r| !r.serves()).count();
                // Serving, but unable to write: as much an alarm for a monitor.
                let locked = rows.iter().filter(|r| r.serves() && r.data_read_only).count();
                let failed = || {
                    if failing > 0 {
                        anyhow::anyhow!(
                            "{failing} of {} replicas of {} do not serve its deployment (see above)",
                            rows.len(),
                            app.name
                        )
                    } else {
                        anyhow::anyhow!(
                            "{locked} of {} replicas of {} serve with a read-only /data (see \
                             above): `peergrid app update {} --disk SIZE`, or where the node's \
                             own disk is full, its farmer must free room",
                            rows.len(),
                            app.name,
                            app.name
                        )
                    }
                };
                let fails = failing > 0 || locked > 0;
                if globals.json {
                    output::json(&json!({ "app": app.name, "replicas": rows }))?;
                    return if fails { Err(failed()) } else { Ok(()) };
                }
                outln!("{} ({}), component {}", app.name, app.kind, app.component);
                // The most a read-only replica's files use: the disk to ask for.
                let mut read_only: Option<Option<u64>> = None;
                for row in &rows {
                    let mut data = match (row.data_used_bytes, row.data_quota_bytes) {
                        (Some(used), Some(quota)) if used > quota && !row.data_read_only => {
                            format!(
                                ", /data {}, OVER its disk (writes that need room fail, \
                                 and past {} it turns read-only: remove files)",
                                used_of(used, quota),
                                Size(peergrid_compute::data::read_only_at(quota))
                            )
                        }
                        // Writes that need room fail at the quota: say so before the
                        // app's own errors do.
                        (Some(used), Some(quota))
                            if used <= quota
                                && used.saturating_mul(10) >= quota.saturating_mul(9) =>
                        {
                            format!(
                                ", /data {} ({} % full)",
                                used_of(used, quota),
                                used.saturating_mul(100) / quota.max(1)
                            )
                        }
                        (Some(used), Some(quota)) if used > quota => {
                            format!(", /data {}, OVER its disk", used_of(used, quota))
                        }
                        (Some(used), Some(quota)) => format!(", /data {}", used_of(used, quota)),
                        (None, Some(quota)) => format!(", /data of {}", Size(quota)),
                        _ => String::new(),
                    };
                    if row.data_read_only {
                        data.push_str(" and READ-ONLY");
                        read_only = Some(read_only.flatten().max(row.data_used_bytes));
                    }
                    outln!(
                        "  contract {} on node {}: contract {}, workload {}{}{data}",
                        row.contract,
                        row.node,
                        row.contract_state,
                        row.state,
                        row.url
                            .as_ref()
                            .map(|u| format!(", {u}"))
                            .unwrap_or_default()
                    );
                }
                if let Some(used) = read_only {
                    let more = match used {
                        Some(used) => format!("more disk than its files use ({})", Size(used)),
                        None => "more disk".to_string(),
                    };
                    outln!(
                        "  READ-ONLY: those files are well past the disk their contract reserves \
                         (or their node's disk is full); writes and removals fail until the disk \
                         is raised near them, and writes that need room until the app has \
                         {more}: `peergrid app update {} --disk SIZE`",
                        app.name
                    );
                }
                if fails {
                    return Err(failed());
                }
                Ok(())
            })
        }
        AppCommand::Rm { name } => {
            let app = apps.find(&name)?;
            app.check_owner(&globals.keypair()?)?;
            let mut left = Vec::new();
            crate::runtime()?.block_on(async {
                for r in &app.replicas {
                    match globals
                        .send(Payload::CancelContract {
                            contract: r.contract,
                        })
                        .await
                    {
                        Ok(_) => say(globals.json, format!("contract {} cancelled", r.contract)),
                        Err(e) => {
                            let gone = matches!(
                                globals.client()?.contract(r.contract).await,
                                Ok(Some(c)) if matches!(c.data.state, ContractState::Deleted { .. })
                            );
                            if gone {
                                say(
                                    globals.json,
                                    format!("contract {} was already ended", r.contract),
                                );
                            } else {
                                say(
                                    globals.json,
                                    format!("contract {} not cancelled: {e:#}", r.contract),
                                );
                                left.push(r.clone());
                            }
                        }
                    }
                }
                anyhow::Ok(())
            })?;
            if left.is_empty() {
                apps.apps.remove(&name);
            } else if let Some(a) = apps.apps.get_mut(&name) {
                a.replicas = left.clone();
            }
            save_apps(&file, &apps)?;
            if !left.is_empty() {
                bail!(
                    "{} contract(s) of {name} are still live; run `peergrid app rm {name}` again",
                    left.len()
                );
            }
            if globals.json {
                return output::json(&json!({ "removed": name }));
            }
            outln!(
                "{name} removed: its contracts are ended (no more bills) and its nodes stop \
                 serving it, and delete its /data folders with their files, as they follow the \
                 ledger, within seconds"
            );
            Ok(())
        }
    }
}

/// An app's `/data` disk: at least 1 MiB, at most 1 TiB.
pub fn app_disk(s: &str) -> Result<Size, String> {
    let size: Size = s.parse()?;
    let (min, max) = (1u64 << 20, 1u64 << 40);
    if size.bytes() < min {
        return Err(format!("{s} ({size}) is less than 1 MiB: ask for more"));
    }
    if size.bytes() > max {
        return Err(format!(
            "{s} is more than 1 TiB, the most one node gives an app"
        ));
    }
    Ok(size)
}

/// `--memory`: what one instance may use, within what a node gives one instance.
pub fn instance_memory(s: &str) -> Result<Size, String> {
    let size: Size = s.parse()?;
    let (min, max) = (
        peergrid_compute::deployment::MEMORY_BYTES_MIN,
        peergrid_node::compute::INSTANCE_MEMORY_BYTES_MAX,
    );
    if size.bytes() < min {
        return Err(format!(
            "{size} is less than one WebAssembly page: ask for {} or more",
            Size(min)
        ));
    }
    if size.bytes() > max {
        return Err(format!(
            "{size} is more than a node gives one instance: ask for {} or less",
            Size(max)
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_keeps_a_reservation_raised_by_hand_unless_told_otherwise() {
        const MIB: u64 = 1 << 20;
        let need = Capacity {
            cru: 1,
            mru: 128 * MIB,
            sru: 256 * MIB,
            hru: 0,
        };
        let raised = Capacity {
            cru: 2,
            mru: 512 * MIB,
            sru: 1024 * MIB,
            hru: 0,
        };
        assert_eq!(
            reservation(need, None, (false, false)),
            need,
            "no contract read"
        );
        assert_eq!(reservation(need, Some(raised), (false, false)), raised);
        let new_memory = reservation(need, Some(raised), (false, true));
        assert_eq!(
            (new_memory.cru, new_memory.mru, new_memory.sru),
            (1, 128 * MIB, 1024 * MIB)
        );
        let new_disk = reservation(need, Some(raised), (true, false));
        assert_eq!((new_disk.mru, new_disk.sru), (512 * MIB, 256 * MIB));
        // A deployment that needs more than the contract held gets it.
        let lower = Capacity {
            mru: 64 * MIB,
            ..raised
        };
        assert_eq!(
            reservation(need, Some(lower), (false, false)).mru,
            128 * MIB
        );
    }
    use peergrid_ledger::NodeStatus;

    fn node(id: NodeId, status: NodeStatus, cores: u64) -> NodeView {
        NodeView {
            node: peergrid_ledger::Node {
                id,
                farm: 1,
                account: Keypair::from_seed([id as u8; 32]).account(),
                capacity: Capacity::default(),
                used: Capacity::default(),
                location: Default::default(),
                registered_ms: 0,
                certified: false,
                power_target: Default::default(),
                connection_price_uusd: 0,
                uptime: Default::default(),
                contracts: 0,
                rented_by: None,
                down_ms: 0,
                ledger_outage_ms: 0,
            },
            status,
            free: Capacity {
                cru: cores,
                mru: cores << 30,
                ..Capacity::default()
            },
        }
    }

    #[test]
    fn no_node_fitting_says_whether_to_wait_or_ask_for_less() {
        let need = Capacity {
            cru: 2,
            mru: 1 << 30,
            ..Capacity::default()
        };
        let down = vec![node(1, NodeStatus::Down, 4), node(2, NodeStatus::Down, 4)];
        let said = none_fits(&down, &need, &[]);
        assert!(
            said.contains("2 of the 2 nodes are not up on the ledger"),
            "{said}"
        );
        assert!(said.contains("after its next report"), "{said}");

        let small = vec![node(1, NodeStatus::Up, 1), node(2, NodeStatus::Down, 4)];
        let said = none_fits(&small, &need, &[]);
        assert!(said.contains("1 of the 2 nodes is not up"), "{said}");
        assert!(said.contains("1 is up with too little free"), "{said}");
        assert!(said.contains("node 1"), "{said}");

        let said = none_fits(&small, &need, &[7]);
        assert!(
            said.contains("none of the nodes asked with --node"),
            "{said}"
        );
        assert!(none_fits(&[], &need, &[]).contains("no node is on the ledger"));
    }

    #[test]
    fn used_and_quota_are_told_apart() {
        assert_eq!(used_of(1 << 20, 2 << 20), "1.0 MiB of 2.0 MiB");
        assert_eq!(used_of(2 << 20, 2 << 20), "2.0 MiB of 2.0 MiB");
        assert_eq!(used_of((2 << 20) - 40960, 2 << 20), "2008 KiB of 2048 KiB");
        assert_eq!(used_of((2 << 20) + 4096, 2 << 20), "2052 KiB of 2048 KiB");
        assert_eq!(used_of(1000, 1001), "1000 B of 1001 B");
    }
}
