//! The deployments this node runs: components fetched by hash, compiled, and served.
//!
//! The world ([`crate::world`]) says which deployment contracts are live here and which
//! deployment each one received; [`Compute::sync`] makes the running set match it. A
//! new deployment starts in `init`: its `deployment.bin` is decoded, each component is
//! read from the node's cache (`<data_dir>/components/<blake3 hex>`) or fetched from
//! the contract owner's peer over `/peergrid/blob/1`, checked against its hash, cached,
//! and prepared by the one [`Runtime`] of the node. Each workload then is `running` or
//! `error` with the reason; a contract in grace is `paused` (requests answered 503);
//! a cancelled contract's workloads are dropped. After a restart the world names the
//! same deployments and the components come from the cache, so workloads come back
//! without their owner.
//!
//! A job runs once per deployment: its outcome (exit code, stdout, stderr) is written to
//! `jobs/<name>.json` in its contract's folder and shown from there after a restart,
//! never run again. A service's output is kept in memory, newest bytes first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use peergrid_compute::data::SpaceCheck;
use peergrid_compute::{
    DataDir, Deployment, JobOutcome, Limits, Prepared, Runtime, RuntimeConfig, Share, WorkloadKind,
    WorkloadSpec,
};
use peergrid_core::capacity::human_bytes;
use peergrid_core::{AccountId, ContractId, Hash};
use peergrid_mesh::Mesh;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::protocol::{DeploymentStatus, LimitStops, WorkloadLogs, WorkloadStatus};
use crate::world::{WorkloadState, World, write_atomic};

/// Instances that may exist at once on this node, across all its workloads.
const INSTANCES_MAX: u32 = 64;
/// How long a job refused for lack of a free instance waits before it tries again.
const JOB_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);
/// Instances one contract's runs may hold at once: a quarter of the pool, so that one
/// tenant's burst of slow requests cannot take the instances of every other.
const INSTANCES_PER_CONTRACT: u32 = INSTANCES_MAX / 4;
/// Ceiling on one instance's memory, whatever a deployment asks (the pool reserves
/// address space for every instance up front).
pub const INSTANCE_MEMORY_BYTES_MAX: u64 = 1 << 30;

/// What one workload is doing.
#[derive(Clone)]
enum Phase {
    Init,
    Running(Prepared),
    /// A job that ended.
    Exited(Arc<JobRecord>),
    Error(String),
}

/// How a job ended, as kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The deployment it ran for: a record of another one is not this job's.
    pub deployment: String,
    /// Its exit code, if it exited by itself.
    pub exit_code: Option<i32>,
    /// Why it was stopped, if it was.
    pub error: Option<String>,
    /// Its stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// CPU time, ms.
    pub cpu_ms: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
}

impl JobRecord {
    fn new(deployment: Hash, outcome: JobOutcome) -> JobRecord {
        JobRecord {
            deployment: deployment.to_string(),
            exit_code: outcome.exit_code,
            error: outcome.error,
            stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
            cpu_ms: outcome.cpu_ms,
            wall_ms: outcome.wall_ms,
        }
    }
}

/// Most of the replaced deployments' log kept per workload, bytes.
const EARLIER_LOG_BYTES_MAX: usize = 64 * 1024;

/// Drop the oldest lines of `text` until it holds at most `max` bytes.
fn keep_newest(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    let start = text[cut..].find('\n').map_or(text.len(), |i| cut + i + 1);
    text.drain(..start);
}

/// The folder, in the node's data directory, of each contract's saved service logs
/// (`<contract>/<workload>.log`): apart from the contract's own folder, so that a save
/// racing the contract's end cannot bring that folder back.
const LOGS_DIR: &str = "app-logs";

/// How often the node saves its services' logs (a crash loses at most this much).
pub const LOG_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A cheap fingerprint of what makes up a log, to save only what changed.
fn fingerprint(parts: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher as _;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut hasher);
    hasher.finish()
}

/// The logs saved in `dir` before the node restarted, per workload, the newest
/// [`EARLIER_LOG_BYTES_MAX`] bytes of each, closed by a line saying so. Files that are
/// not a workload's log are ignored; one that cannot be read is logged and skipped.
fn load_logs(dir: &Path) -> BTreeMap<String, String> {
    let mut logs = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return logs;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = (path.file_name().and_then(|n| n.to_str()))
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| peergrid_compute::deployment::validate_name(n).is_ok())
        else {
            continue;
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mut text = String::from_utf8_lossy(&bytes).into_owned();
                keep_newest(&mut text, EARLIER_LOG_BYTES_MAX);
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str("--- the node restarted: logged before above, since below ---\n");
                logs.insert(name.to_string(), text);
            }
            Err(e) => warn!(file = %path.display(), error = %e, "cannot read a saved workload log"),
        }
    }
    logs
}

fn job_record_path(dir: &Path, workload: &str) -> PathBuf {
    dir.join("jobs").join(format!("{workload}.json"))
}

/// The outcome of `workload` under `deployment` if it already ran.
fn read_job_record(dir: &Path, workload: &str, deployment: Hash) -> Option<JobRecord> {
    let path = job_record_path(dir, workload);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<JobRecord>(&bytes) {
        Ok(r) if r.deployment == deployment.to_string() => Some(r),
        Ok(_) => None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "a job's record is unreadable; the job runs again");
            None
        }
    }
}

#[derive(Clone)]
struct Entry {
    spec: WorkloadSpec,
    phase: Phase,
}

/// What a live deployment contract asks of this node.
#[derive(Clone)]
struct Want {
    /// The deployment to run.
    hash: Hash,
    paused: bool,
    owner: AccountId,
    /// Memory reserved (`mru`), bytes.
    memory: u64,
    /// Disk reserved (`sru`), bytes: its `/data` quota.
    disk: u64,
}

/// Where a deployment's `/data` is: in its contract's folder on the node's SSD (its
/// workload folder on a node without one), so that the contract's end removes it and its
/// grace period keeps it. `None` while that folder's disk is not mounted: made again, it
/// would hide beneath the disk.
pub fn app_data_dir(world: &World, contract: ContractId) -> Option<PathBuf> {
    let dir = world.shard_dir(contract);
    (dir.exists()).then(|| dir.join("data"))
}

/// One deployment contract's workloads.
struct App {
    deployment: Hash,
    paused: bool,
    /// What all its runs may hold together: the memory the contract reserved, and
    /// [`INSTANCES_PER_CONTRACT`] instances.
    share: Arc<Share>,
    /// The memory the contract reserves on the ledger.
    memory_reserved: u64,
    /// The folder its runs see as `/data`, within the disk (`sru`) the contract reserves;
    /// none if it could not be made (the workloads then run without one).
    data: Option<Arc<DataDir>>,
    /// Why the deployment as a whole cannot run (unreadable, undecodable).
    error: Option<String>,
    /// Empty until the deployment is decoded.
    workloads: BTreeMap<String, Entry>,
    /// Jobs running: stopped when the deployment goes.
    jobs: Vec<tokio::task::AbortHandle>,
    /// Response bytes already reported to the ledger as network usage (NU), of
    /// [`App::served`].
    reported_bytes: u64,
    /// Bytes served by the deployments this one replaced and not reported when it came,
    /// and those the previous one served before it stopped: billed with this one's.
    carried: u64,
    /// The deployment this one replaces: it serves the workloads this one has not
    /// started yet, so that an update does not leave the contract unanswered meanwhile.
    previous: Option<Box<App>>,
    /// What [`App::served`] of `previous` was when it was handed over: only what it
    /// serves after that is this one's to count.
    previous_base: u64,
    /// What the deployments this one replaced logged, per workload: an update keeps the
    /// log that may say why it was needed.
    earlier_logs: BTreeMap<String, String>,
    /// Where its services' logs are saved (`<workload>.log`), so that a restarted node
    /// still shows them.
    logs_dir: PathBuf,
}

impl App {
    /// Response bytes to bill with this deployment: its workloads', what it carried
    /// over, and what the previous one served since the handover.
    fn served(&self) -> u64 {
        let own: u64 = (self.workloads.values())
            .filter_map(|e| match &e.phase {
                Phase::Running(p) => Some(p.metrics().bytes_served),
                _ => None,
            })
            .sum();
        let previous =
            (self.previous.as_ref()).map_or(0, |p| p.served().saturating_sub(self.previous_base));
        own.saturating_add(self.carried).saturating_add(previous)
    }

    /// Whether one of its workloads serves requests.
    fn serves(&self) -> bool {
        (self.workloads.values()).any(|e| matches!(e.phase, Phase::Running(_)))
    }

    /// Stops serving through the previous deployment; what it served since the
    /// handover is carried, so it is still billed.
    fn drop_previous(&mut self) -> bool {
        let Some(previous) = self.previous.take() else {
            return false;
        };
        for name in previous.workloads.keys() {
            let text = previous.handed_over_log(name, self.deployment);
            let kept = self.earlier_logs.entry(name.clone()).or_default();
            kept.push_str(&text);
            keep_newest(kept, EARLIER_LOG_BYTES_MAX);
        }
        let since = previous.served().saturating_sub(self.previous_base);
        self.carried = self.carried.saturating_add(since);
        self.previous_base = 0;
        true
    }

    /// Follows what the contract now says: paused or not, what it reserves.
    fn follow(&mut self, w: &Want) {
        self.paused = w.paused;
        self.memory_reserved = w.memory;
        self.share_memory();
        if let Some(data) = &self.data {
            data.set_quota_bytes(w.disk);
        }
    }

    /// Sets what the share's runs may hold: the reservation, which is what is paid for
    /// and what the node's capacity counts.
    fn share_memory(&self) {
        (self.share).set_memory_bytes_max(self.memory_reserved);
    }

    /// What `workload` of this deployment logged itself, while it serves.
    fn own_log(&self, workload: &str) -> String {
        match self.workloads.get(workload).map(|e| &e.phase) {
            Some(Phase::Running(p)) => String::from_utf8_lossy(&p.logs()).into_owned(),
            _ => String::new(),
        }
    }

    /// Its own log of `workload`, closed by a line saying that `next` took over.
    fn handed_over_log(&self, workload: &str, next: Hash) -> String {
        let mut text = self.own_log(workload);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "--- deployment {} above, {} below ---\n",
            &self.deployment.to_string()[..12],
            &next.to_string()[..12]
        ));
        text
    }

    /// The whole log of `workload` kept here: the replaced deployments', the one still
    /// serving meanwhile, then this one's.
    fn log(&self, workload: &str) -> String {
        let mut text = self.earlier_logs.get(workload).cloned().unwrap_or_default();
        if let Some(previous) = &self.previous {
            text.push_str(&previous.handed_over_log(workload, self.deployment));
        }
        text.push_str(&self.own_log(workload));
        text
    }

    /// What [`App::log`] of `workload` is made of, cheaply: it changed if this did.
    fn log_version(&self, workload: &str) -> u64 {
        let own = |app: &App| match app.workloads.get(workload).map(|e| &e.phase) {
            Some(Phase::Running(p)) => p.log_written(),
            _ => 0,
        };
        fingerprint((
            self.deployment,
            self.earlier_logs.get(workload).map(String::len),
            (self.previous.as_ref()).map(|p| (p.deployment, own(p))),
            own(self),
        ))
    }

    /// Stops its running jobs: their deployment is going.
    fn stop_jobs(&self) {
        for job in &self.jobs {
            job.abort();
        }
    }

    /// The previous deployment's `workload`, while it still serves in this one's place.
    fn previous_serving(&self, workload: &str) -> Option<Target> {
        let entry = self.previous.as_ref()?.workloads.get(workload)?;
        match &entry.phase {
            Phase::Running(prepared) if entry.spec.kind == WorkloadKind::Http => {
                Some(Target::Serve {
                    prepared: prepared.clone(),
                    env: entry.spec.env.clone(),
                    limits: entry.spec.limits,
                })
            }
            _ => None,
        }
    }
}

/// Where a request for `/<contract>/<workload>/…` goes, or why it cannot.
pub enum Target {
    /// Serve it with this component, environment and limits.
    Serve {
        /// The prepared component.
        prepared: Prepared,
        /// The workload's environment.
        env: Vec<(String, String)>,
        /// Its limits per request.
        limits: Limits,
    },
    /// No such contract or workload here.
    NotFound(String),
    /// The contract is in its grace period.
    Paused,
    /// The workload failed, or is a job that exited.
    Unavailable(String),
    /// The deployment or the workload is starting: worth a retry in a few seconds.
    Starting(String),
}

/// The deployments of this node and the runtime they run on.
pub struct Compute {
    runtime: Result<Runtime, String>,
    components: PathBuf,
    disk: peergrid_core::fs::DiskReserve,
    mesh: Mesh,
    apps: RwLock<BTreeMap<ContractId, App>>,
    /// Where services' logs are saved ([`LOGS_DIR`]), and what each file holds (a
    /// fingerprint of what made it up), per contract and workload.
    logs_root: PathBuf,
    saved_logs: std::sync::Mutex<BTreeMap<(ContractId, String), u64>>,
    /// The HTTP entry's URL (`http://host:port`), once it listens.
    pub http: OnceLock<String>,
    /// When unused components were last looked for.
    pruned_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long a cached component no deployment uses is kept (one still starting may).
const COMPONENT_KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often unused components are looked for, at most.
const COMPONENTS_PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl Compute {
    /// Start the node's runtime, caching compiled components under `data_dir`. A runtime
    /// that cannot start is not fatal: the node keeps serving storage, and every
    /// deployment reports why it cannot run.
    pub fn new(data_dir: &Path, mesh: Mesh) -> anyhow::Result<Compute> {
        let components = data_dir.join("components");
        std::fs::create_dir_all(&components)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", components.display()))?;
        let compiled = data_dir.join("compiled");
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(compiled),
            max_instances: INSTANCES_MAX,
            max_memory_bytes: INSTANCE_MEMORY_BYTES_MAX,
            ..RuntimeConfig::default()
        })
        .map_err(|e| {
            warn!(error = %e, "the WebAssembly runtime cannot start; deployments will report it");
            format!("this node's WebAssembly runtime cannot start: {e}")
        });
        Ok(Compute {
            runtime,
            components,
            disk: peergrid_core::fs::DiskReserve::default(),
            mesh,
            apps: RwLock::new(BTreeMap::new()),
            logs_root: data_dir.join(LOGS_DIR),
            saved_logs: std::sync::Mutex::new(BTreeMap::new()),
            http: OnceLock::new(),
            pruned_at: std::sync::Mutex::new(None),
        })
    }

    /// Keep `reserve` free on the data directory's disk: a new component that would
    /// leave less is not cached and its workload fails saying so; a job's outcome that
    /// would is shown from memory only.
    pub fn with_disk_reserve(mut self, reserve: peergrid_core::fs::DiskReserve) -> Compute {
        self.disk = reserve;
        self
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, BTreeMap<(ContractId, String), u64>> {
        self.saved_logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ContractId, App>> {
        self.apps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ContractId, App>> {
        self.apps.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the running deployments match `world`: start the new ones (in the
    /// background), pause or resume, and drop those no live contract backs.
    pub fn sync(self: &Arc<Self>, world: &World) {
        let live =
            || (world.workloads.values()).filter(|w| w.kind == "deployment" && w.holds_capacity());
        let want = |w: &crate::world::Workload, hash: Hash| Want {
            hash,
            paused: w.state == WorkloadState::Paused,
            owner: w.owner,
            memory: w.reserved.mru,
            disk: w.reserved.sru,
        };
        let mut wanted: BTreeMap<ContractId, Want> = live()
            .filter_map(|w| match (w.deployed, w.deployment_hash) {
                (Some(d), Some(h)) if d == h => Some((w.contract, want(w, d))),
                _ => None,
            })
            .collect();
        // Contracts pointed at a deployment not received yet: the one they ran goes on
        // serving until the new one comes (an update sends it right after).
        let awaiting: BTreeMap<ContractId, Want> = live()
            .filter_map(|w| match (w.deployed, w.deployment_hash) {
                (Some(d), Some(h)) if d != h => Some((w.contract, want(w, d))),
                _ => None,
            })
            .collect();
        let mut apps = self.write();
        // One the node does not run yet (it restarted while awaiting): the deployment it
        // holds starts, rather than nothing serving until the owner sends the new one.
        for (contract, w) in &awaiting {
            if !apps.contains_key(contract) {
                wanted.insert(*contract, w.clone());
            }
        }
        apps.retain(|contract, app| {
            let keep = wanted.contains_key(contract)
                || (awaiting.get(contract)).is_some_and(|w| w.hash == app.deployment);
            if !keep {
                info!(
                    contract,
                    "deployment stopped: no live contract backs it here"
                );
                app.stop_jobs();
            }
            keep
        });
        for (contract, w) in awaiting {
            if let Some(app) = apps.get_mut(&contract) {
                app.follow(&w);
            }
        }
        for (contract, w) in wanted {
            if let Some(app) = apps.get_mut(&contract)
                && app.deployment == w.hash
            {
                app.follow(&w);
                continue;
            }
            let mut app = App {
                deployment: w.hash,
                paused: w.paused,
                share: Share::new(w.memory, INSTANCES_PER_CONTRACT),
                memory_reserved: w.memory,
                data: None,
                error: None,
                workloads: BTreeMap::new(),
                jobs: Vec::new(),
                reported_bytes: 0,
                carried: 0,
                previous: None,
                previous_base: 0,
                earlier_logs: BTreeMap::new(),
                logs_dir: self.logs_root.join(contract.to_string()),
            };
            if let Some(mut old) = apps.remove(&contract) {
                info!(
                    contract,
                    "deployment replaced: the previous one serves until the new one has started"
                );
                old.stop_jobs();
                // Both count in one share: the contract holds what it reserved, not twice.
                app.share = old.share.clone();
                app.share_memory();
                // And both see one /data: an update keeps the app's files.
                app.data = old.data.clone();
                app.carried = old.served().saturating_sub(old.reported_bytes);
                app.earlier_logs = std::mem::take(&mut old.earlier_logs);
                // Replaced before it started (two updates in a row): the one before it
                // goes on serving instead.
                let previous = match old.serves() {
                    true => Some(Box::new(old)),
                    false => old.previous.take(),
                };
                app.previous_base = previous.as_ref().map_or(0, |p| p.served());
                app.previous = previous;
            } else {
                // Started afresh (the node restarted): what its services logged before,
                // not saved again until they log more.
                app.earlier_logs = load_logs(&app.logs_dir);
                let mut saved = self.saved();
                for name in app.earlier_logs.keys() {
                    saved.insert((contract, name.clone()), app.log_version(name));
                }
            }
            if app.data.is_none() {
                match app_data_dir(world, contract) {
                    Some(folder) => {
                        let reserve = self.disk;
                        let space: SpaceCheck = Arc::new(move |path: &Path| {
                            reserve.check(path, 0, 0).map_err(|full| {
                                format!(
                                    "{} free, {} kept",
                                    human_bytes(full.free_bytes),
                                    human_bytes(full.reserve_bytes)
                                )
                            })
                        });
                        // What an import left when the node stopped during it: /data is
                        // wholly the old files or the new; the rest goes, off the lock.
                        let leftovers = crate::appdata::leftovers(&folder);
                        if !leftovers.is_empty() {
                            tokio::task::spawn_blocking(move || {
                                for left in leftovers {
                                    if let Err(e) = crate::appdata::remove_all(&left) {
                                        warn!(contract, folder = %left.display(), error = %e, "cannot remove what an import of an app's /data left");
                                    }
                                }
                            });
                        }
                        app.data = DataDir::new(&folder, w.disk, Some(space))
                            .inspect_err(|e| warn!(contract, folder = %folder.display(), error = %e, "cannot make the app's data folder: its workloads run without /data"))
                            .ok();
                        // Measured now, so that its status shows it before a first run.
                        if let Some(data) = app.data.clone() {
                            tokio::spawn(async move { data.measure().await });
                        }
                    }
                    None => warn!(
                        contract,
                        folder = %world.shard_dir(contract).display(),
                        "the app's folder is not here (its disk not mounted?): its workloads run without /data; mount the disk, then restart the node to give them their /data back"
                    ),
                }
            }
            app.follow(&w);
            let share = app.share.clone();
            let data = app.data.clone();
            apps.insert(contract, app);
            let file = world.workload_dir(contract).join("deployment.bin");
            let me = self.clone();
            let owner = w.owner;
            let hash = w.hash;
            tokio::spawn(async move { me.start(contract, hash, owner, (share, data), file).await });
        }
        drop(apps);
        self.prune_components();
    }

    /// Remove the cached components no deployment here uses, once unused for a while, and
    /// the temporaries a kill left: they count in no contract's reservation, so an owner
    /// updating an app in a loop would otherwise fill the farmer's disk. At most once per
    /// [`COMPONENTS_PRUNE_EVERY`].
    fn prune_components(&self) {
        {
            let mut at = self.pruned_at.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < COMPONENTS_PRUNE_EVERY) {
                return;
            }
            *at = Some(std::time::Instant::now());
        }
        let used: std::collections::HashSet<String> = (self.read().values())
            .flat_map(|app| {
                let previous = app.previous.as_deref().into_iter();
                std::iter::once(app)
                    .chain(previous)
                    .flat_map(|a| a.workloads.values().map(|e| hex::encode(e.spec.component)))
            })
            .collect();
        let dir = self.components.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return;
            };
            let mut removed = 0;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // A deployment still starting lists its workloads only once decoded: what
                // was cached lately may be its.
                let unused_for = (entry.metadata().ok())
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| m.elapsed().ok())
                    .unwrap_or_default();
                if used.contains(&name) || unused_for < COMPONENT_KEPT_FOR {
                    continue;
                }
                if std::fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            if removed > 0 {
                info!(removed, "removed cached components no deployment here uses");
            }
        });
    }

    /// Decode a deployment and prepare each workload, recording each step.
    async fn start(
        self: Arc<Self>,
        contract: ContractId,
        hash: Hash,
        owner: AccountId,
        (share, data): (Arc<Share>, Option<Arc<DataDir>>),
        file: PathBuf,
    ) {
        let deployment = match tokio::fs::read(&file).await {
            // Replaced since this start was asked for (an update right after): the start
            // of the one it holds follows.
            Ok(bytes) if Hash::of(&bytes) != hash => Err(format!(
                "{} holds deployment {}, not {}; the owner sends it again with `peergrid app \
                 repair`",
                file.display(),
                &Hash::of(&bytes).to_string()[..12],
                &hash.to_string()[..12]
            )),
            Ok(bytes) => Deployment::decode(&bytes).map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        };
        let deployment = match deployment {
            Ok(d) => d,
            Err(reason) => {
                warn!(contract, %reason, "deployment cannot start");
                self.update(contract, hash, |app| {
                    app.error = Some(reason);
                    app.drop_previous();
                });
                return;
            }
        };
        let workloads: BTreeMap<String, Entry> = deployment
            .workloads
            .iter()
            .map(|spec| {
                let entry = Entry {
                    spec: spec.clone(),
                    phase: Phase::Init,
                };
                (spec.name.clone(), entry)
            })
            .collect();
        let largest = (deployment.workloads.iter())
            .map(|w| w.limits.memory_bytes.min(INSTANCE_MEMORY_BYTES_MAX))
            .max()
            .unwrap_or(0);
        let updated = self.update(contract, hash, |app| {
            app.workloads = workloads;
            // Accepted before its reservation was lowered: its runs get what it reserves.
            if largest > app.memory_reserved {
                warn!(
                    contract,
                    reserved = app.memory_reserved,
                    limit = largest,
                    "the contract reserves less memory than one run's limit: a run that grows past the reservation fails"
                );
            }
        });
        if !updated {
            return;
        }
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        for spec in deployment.workloads {
            let mut job = None;
            let prepared = self.prepare(&spec, owner).await;
            let prepared = prepared.map(|p| match &data {
                Some(data) => p.in_share(share.clone()).with_data(data.clone()),
                None => p.in_share(share.clone()),
            });
            let phase = match prepared {
                Ok(prepared) if spec.kind == WorkloadKind::Job => {
                    match read_job_record(&dir, &spec.name, hash) {
                        Some(record) => Phase::Exited(Arc::new(record)),
                        None => {
                            info!(contract, workload = %spec.name, "job running");
                            job = Some(prepared.clone());
                            Phase::Running(prepared)
                        }
                    }
                }
                Ok(prepared) => {
                    info!(contract, workload = %spec.name, kind = %spec.kind, "workload running");
                    Phase::Running(prepared)
                }
                Err(reason) => {
                    warn!(contract, workload = %spec.name, %reason, "workload cannot start");
                    Phase::Error(reason)
                }
            };
            let me = self.clone();
            let run_dir = dir.clone();
            let still = self.update(contract, hash, |app| {
                if let Some(entry) = app.workloads.get_mut(&spec.name) {
                    entry.phase = phase;
                }
                // Started only once its phase says running, so its end is never
                // overwritten; and in the same update, so that a replacement in between
                // cannot leave it running where nothing would stop it.
                if let Some(prepared) = job {
                    let handle = tokio::spawn(async move {
                        me.run_job(contract, hash, run_dir, spec, prepared).await
                    })
                    .abort_handle();
                    app.jobs.push(handle);
                }
            });
            if !still {
                return;
            }
        }
        // Every workload has started (or failed): the previous deployment stops.
        self.update(contract, hash, |app| {
            if app.drop_previous() {
                info!(
                    contract,
                    "the previous deployment stopped: the new one has started"
                );
            }
        });
    }

    /// Run a job to its end, keep its outcome on disk, and show it.
    async fn run_job(
        self: Arc<Self>,
        contract: ContractId,
        hash: Hash,
        dir: PathBuf,
        spec: WorkloadSpec,
        prepared: Prepared,
    ) {
        let mut outcome = prepared.run_job(&spec.args, &spec.env, &spec.limits).await;
        // Refused for others' load, it has not run: it runs once an instance is free
        // (the loop ends with the deployment, whose going aborts this task).
        while outcome.refused {
            warn!(contract, workload = %spec.name, "job not started: the node's instances are all busy; trying again in {JOB_RETRY_AFTER:?}");
            tokio::time::sleep(JOB_RETRY_AFTER).await;
            outcome = prepared.run_job(&spec.args, &spec.env, &spec.limits).await;
        }
        let record = JobRecord::new(hash, outcome);
        info!(contract, workload = %spec.name, exit_code = ?record.exit_code, error = ?record.error, "job exited");
        let path = job_record_path(&dir, &spec.name);
        match serde_json::to_vec(&record) {
            Ok(bytes) => {
                let disk = self.disk;
                let written = tokio::task::spawn_blocking(move || {
                    // The outcome is the owner's data: it is not kept beyond the reserve
                    // (shown from memory until a restart, as for any failed write).
                    disk.check(&dir, bytes.len() as u64, 0)
                        .map_err(|full| full.to_string())?;
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    write_atomic(&path, &bytes).map_err(|e| e.to_string())
                })
                .await;
                if let Ok(Err(e)) = written {
                    warn!(contract, error = %e, "cannot keep a job's outcome; it runs again after a restart");
                }
            }
            Err(e) => warn!(contract, error = %e, "cannot encode a job's outcome"),
        }
        self.update(contract, hash, |app| {
            if let Some(entry) = app.workloads.get_mut(&spec.name) {
                entry.phase = Phase::Exited(Arc::new(record));
            }
        });
    }

    /// Apply `f` to the app of `contract` if it still runs deployment `hash`.
    fn update(&self, contract: ContractId, hash: Hash, f: impl FnOnce(&mut App)) -> bool {
        match self.write().get_mut(&contract) {
            Some(app) if app.deployment == hash => {
                f(app);
                true
            }
            _ => false,
        }
    }

    /// The component of `spec`, from the cache or the owner's peer, prepared.
    async fn prepare(&self, spec: &WorkloadSpec, owner: AccountId) -> Result<Prepared, String> {
        let runtime = self.runtime.as_ref().map_err(Clone::clone)?;
        let bytes = self.component(spec.component, owner).await?;
        runtime
            .prepare_async(spec.component, bytes, spec.kind)
            .await
            .map_err(|e| e.to_string())
    }

    /// Component bytes by hash: the cache, else fetched from `owner`'s peer and cached.
    async fn component(&self, hash: [u8; 32], owner: AccountId) -> Result<Vec<u8>, String> {
        let hex_hash = hex::encode(hash);
        let path = self.components.join(&hex_hash);
        if let Ok(bytes) = tokio::fs::read(&path).await {
            if blake3::hash(&bytes).as_bytes() == &hash {
                return Ok(bytes);
            }
            warn!(path = %path.display(), "a cached component does not match its hash; fetching it again");
        }
        let peer = peergrid_mesh::identity::peer_id(&owner)
            .map_err(|e| format!("cannot address the owner's peer: {e}"))?;
        let bytes = crate::blob::fetch(&self.mesh, peer, hash)
            .await
            .map_err(|e| {
                format!("component {hex_hash} is not cached here and cannot be fetched from its owner: {e}")
            })?;
        // A new component needs the disk (its cached bytes, then its compiled code): on
        // a full disk the workload is refused rather than filling what the node keeps.
        let need = bytes.len() as u64;
        self.disk
            .check(&self.components, need, 0)
            .map_err(|full| full.to_string())?;
        let to_write = bytes.clone();
        let write = tokio::task::spawn_blocking(move || write_atomic(&path, &to_write)).await;
        match write {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_disk_full() => {
                return Err(self.disk.full(&self.components, need).to_string());
            }
            Ok(Err(e)) => {
                warn!(error = %e, "cannot cache a component; it will be fetched again after a restart")
            }
            Err(e) => warn!(error = %e, "cannot cache a component"),
        }
        Ok(bytes)
    }

    /// Where a request for `contract`'s `workload` goes.
    pub fn target(&self, contract: &str, workload: &str) -> Target {
        let Ok(id) = contract.parse::<ContractId>() else {
            return Target::NotFound(format!(
                "no deployment {contract:?} here: paths are /<contract id>/<workload>/…"
            ));
        };
        let apps = self.read();
        let Some(app) = apps.get(&id) else {
            return Target::NotFound(format!("no deployment of contract {id} runs on this node"));
        };
        if app.paused {
            return Target::Paused;
        }
        if let Some(reason) = &app.error {
            return Target::Unavailable(format!("deployment of contract {id} failed: {reason}"));
        }
        if app.workloads.is_empty() {
            return app.previous_serving(workload).unwrap_or_else(|| {
                Target::Starting(format!("deployment of contract {id} is starting"))
            });
        }
        let Some(entry) = app.workloads.get(workload) else {
            let names: Vec<&str> = app.workloads.keys().map(String::as_str).collect();
            return Target::NotFound(format!(
                "contract {id} has no workload {workload:?} (it has: {})",
                names.join(", ")
            ));
        };
        match &entry.phase {
            Phase::Init => app
                .previous_serving(workload)
                .unwrap_or_else(|| Target::Starting(format!("workload {workload:?} is starting"))),
            Phase::Exited(_) => Target::Unavailable(format!(
                "workload {workload:?} is a job and has exited; read its output with `peergrid app logs`"
            )),
            Phase::Error(reason) => {
                Target::Unavailable(format!("workload {workload:?} failed: {reason}"))
            }
            Phase::Running(prepared) => Target::Serve {
                prepared: prepared.clone(),
                env: entry.spec.env.clone(),
                limits: entry.spec.limits,
            },
        }
    }

    /// The `/data` folder of `contract`'s app, once its deployment has one here.
    pub fn data_dir(&self, contract: ContractId) -> Option<Arc<DataDir>> {
        self.read().get(&contract).and_then(|app| app.data.clone())
    }

    /// What `contract`'s deployment is doing here (`absent` if it does not run here),
    /// when its contract `holds` that deployment hash: `outdated` while it still serves
    /// the one it ran and the contract's never came (an update that missed this node).
    pub fn status(&self, contract: ContractId, holds: Option<Hash>) -> DeploymentStatus {
        let apps = self.read();
        let Some(app) = apps.get(&contract) else {
            return DeploymentStatus {
                contract,
                state: "absent".into(),
                reason: None,
                workloads: Vec::new(),
                data_used_bytes: None,
                data_quota_bytes: None,
                data_read_only: false,
            };
        };
        let mut status = app_status(contract, app);
        // A pause says more.
        if let Some(holds) = holds
            && holds != app.deployment
            && status.state != "paused"
        {
            status.state = "outdated".into();
            status.reason = Some(format!(
                "runs deployment {} while contract {contract} holds {}, which this node has \
                 not received",
                &app.deployment.to_string()[..12],
                &holds.to_string()[..12]
            ));
        }
        status
    }

    /// A workload's output, for its owner.
    pub fn logs(&self, contract: ContractId, workload: &str) -> Result<WorkloadLogs, String> {
        let apps = self.read();
        let app = apps
            .get(&contract)
            .ok_or_else(|| format!("no deployment of contract {contract} runs on this node"))?;
        let status = app_status(contract, app);
        let Some(entry) = app.workloads.get(workload) else {
            let names: Vec<&str> = app.workloads.keys().map(String::as_str).collect();
            return Err(format!(
                "contract {contract} has no workload {workload:?} here (it has: {})",
                names.join(", ")
            ));
        };
        let state = status
            .workloads
            .iter()
            .find(|w| w.name == workload)
            .map(|w| (w.state.clone(), w.reason.clone()));
        let (state, reason) = state.unwrap_or_else(|| ("init".into(), None));
        let mut logs = WorkloadLogs {
            contract,
            workload: workload.to_string(),
            kind: entry.spec.kind.to_string(),
            state,
            exit_code: None,
            error: reason,
            stdout: String::new(),
            stderr: String::new(),
            cpu_ms: 0,
            wall_ms: 0,
        };
        match &entry.phase {
            Phase::Exited(r) => {
                logs.exit_code = r.exit_code;
                logs.stdout = r.stdout.clone();
                logs.stderr = r.stderr.clone();
                logs.cpu_ms = r.cpu_ms;
                logs.wall_ms = r.wall_ms;
            }
            // A service's log goes on across updates; one that cannot start shows
            // what the deployments before it logged.
            Phase::Running(_) | Phase::Init | Phase::Error(_) => logs.stdout = app.log(workload),
        }
        Ok(logs)
    }

    /// Saves each service's log, when it changed since the last save, so that a restarted
    /// node shows what its workloads logged before; then removes the saved logs of
    /// contracts that no longer run here. Skipped while the disk is down to its reserve.
    pub async fn save_logs(&self) {
        let mut writes = Vec::new();
        {
            let apps = self.read();
            let saved = self.saved();
            for (contract, app) in apps.iter() {
                for (name, entry) in &app.workloads {
                    if entry.spec.kind != WorkloadKind::Http {
                        continue;
                    }
                    let key = (*contract, name.clone());
                    let version = app.log_version(name);
                    if saved.get(&key) == Some(&version) {
                        continue;
                    }
                    let text = app.log(name);
                    if !text.is_empty() {
                        writes.push((key, version, app.logs_dir.join(format!("{name}.log")), text));
                    }
                }
            }
        }
        let bytes: u64 = writes.iter().map(|(.., text)| text.len() as u64).sum();
        if bytes > 0 && self.disk.check(&self.logs_root, bytes, 0).is_err() {
            tracing::debug!("services' logs not saved: the disk is down to its reserve");
            writes.clear();
        }
        let root = self.logs_root.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let mut saved = Vec::new();
            for (key, version, path, text) in writes {
                match peergrid_core::fs::write_atomic(&path, text.as_bytes()) {
                    Ok(()) => saved.push((key, version)),
                    Err(e) => {
                        warn!(file = %path.display(), error = %e, "cannot save a workload's log")
                    }
                }
            }
            let folders: Vec<PathBuf> = std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
                .collect();
            (saved, folders)
        })
        .await
        .unwrap_or_default();
        let (saved, folders) = saved;
        // The logs of contracts that ended (or ended while the node was down), by what
        // runs now, after the writes.
        let running: Vec<ContractId> = self.read().keys().copied().collect();
        let ended: Vec<PathBuf> = folders
            .into_iter()
            .filter(|dir| {
                (dir.file_name().and_then(|n| n.to_str()))
                    .and_then(|n| n.parse::<ContractId>().ok())
                    .is_none_or(|id| !running.contains(&id))
            })
            .collect();
        if !ended.is_empty() {
            let _ = tokio::task::spawn_blocking(move || {
                for dir in ended {
                    let _ = std::fs::remove_dir_all(dir);
                }
            })
            .await;
        }
        let mut map = self.saved();
        map.retain(|(contract, _), _| running.contains(contract));
        map.extend(saved);
    }

    /// Deployments that served bytes the ledger has not been told of: contract,
    /// deployment, bytes served so far, bytes not yet reported.
    pub fn unreported_usage(&self) -> Vec<(ContractId, Hash, u64, u64)> {
        self.read()
            .iter()
            .filter_map(|(id, app)| {
                let served = app.served();
                let new = served.saturating_sub(app.reported_bytes);
                (new > 0).then_some((*id, app.deployment, served, new))
            })
            .collect()
    }

    /// The ledger now counts `served` bytes of `contract`'s deployment `hash`.
    pub fn usage_reported(&self, contract: ContractId, hash: Hash, served: u64) {
        self.update(contract, hash, |app| {
            app.reported_bytes = app.reported_bytes.max(served)
        });
    }

    /// Every deployment here.
    pub fn list(&self) -> Vec<DeploymentStatus> {
        self.read()
            .iter()
            .map(|(id, app)| app_status(*id, app))
            .collect()
    }

    /// Deployments starting and failed.
    pub fn counts(&self) -> (usize, usize) {
        let mut starting = 0;
        let mut failed = 0;
        for (id, app) in self.read().iter() {
            match app_status(*id, app).state.as_str() {
                "init" => starting += 1,
                "error" => failed += 1,
                _ => {}
            }
        }
        (starting, failed)
    }

    /// Forget `contract`'s deployment if it failed, so the next [`Compute::sync`] starts
    /// it again (a deployment sent again is a retry).
    pub fn retry(&self, contract: ContractId) {
        let mut apps = self.write();
        if apps
            .get(&contract)
            .is_some_and(|app| app_status(contract, app).state == "error")
        {
            apps.remove(&contract);
        }
    }

    /// Runs holding one of the node's instances now, and how many it has.
    pub fn instances(&self) -> (u32, u32) {
        match &self.runtime {
            Ok(rt) => (rt.instances_in_use(), rt.config().max_instances),
            Err(_) => (0, 0),
        }
    }

    /// Where the HTTP entry listens, if it does.
    pub fn set_http(&self, addr: SocketAddr) {
        let _ = self.http.set(format!("http://{addr}"));
    }
}

fn app_status(contract: ContractId, app: &App) -> DeploymentStatus {
    let workloads: Vec<WorkloadStatus> = app
        .workloads
        .values()
        .map(|e| {
            let (state, reason) = match (&e.phase, app.paused) {
                (Phase::Error(r), _) => ("error", Some(r.clone())),
                (Phase::Exited(r), _) => ("exited", r.error.clone()),
                (_, true) => ("paused", None),
                (Phase::Init, false) => ("init", None),
                (Phase::Running(_), false) => ("running", None),
            };
            let metrics = match &e.phase {
                Phase::Running(p) => Some(p.metrics()),
                _ => None,
            };
            WorkloadStatus {
                name: e.spec.name.clone(),
                kind: e.spec.kind.to_string(),
                state: state.into(),
                reason,
                requests: metrics.map(|m| m.requests).unwrap_or(0),
                cpu_us: metrics.map(|m| m.cpu_us).unwrap_or(0),
                bytes_served: metrics.map(|m| m.bytes_served).unwrap_or(0),
                errors: metrics.map(|m| m.errors).unwrap_or(0),
                stopped: metrics
                    .map(|m| LimitStops {
                        cpu: m.cpu_limit_exceeded,
                        memory: m.memory_limit_exceeded,
                        wall_time: m.wall_time_exceeded,
                        disk: m.disk_limit_exceeded,
                    })
                    .unwrap_or_default(),
                exit_code: match &e.phase {
                    Phase::Exited(r) => r.exit_code,
                    _ => None,
                },
            }
        })
        .collect();
    let failed = workloads.iter().find(|w| w.state == "error");
    let (state, reason) = if let Some(reason) = &app.error {
        ("error", Some(reason.clone()))
    } else if let Some(w) = failed {
        (
            "error",
            Some(format!(
                "workload {}: {}",
                w.name,
                w.reason.clone().unwrap_or_default()
            )),
        )
    } else if app.paused {
        ("paused", None)
    } else if workloads.is_empty() || workloads.iter().any(|w| w.state == "init") {
        ("init", None)
    } else if workloads.iter().all(|w| w.state == "exited") {
        ("exited", None)
    } else {
        ("running", None)
    };
    DeploymentStatus {
        contract,
        state: state.into(),
        reason,
        workloads,
        data_used_bytes: app.data.as_ref().and_then(|d| d.in_use_bytes()),
        data_quota_bytes: app.data.as_ref().map(|d| d.quota_bytes()),
        data_read_only: app.data.as_ref().is_some_and(|d| d.read_only()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(carried: u64, reported: u64) -> App {
        App {
            deployment: Hash::of(b"d"),
            paused: false,
            share: Share::new(1 << 20, 1),
            memory_reserved: 1 << 20,
            data: None,
            error: None,
            workloads: BTreeMap::new(),
            jobs: Vec::new(),
            reported_bytes: reported,
            carried,
            previous: None,
            previous_base: 0,
            earlier_logs: BTreeMap::new(),
            logs_dir: PathBuf::new(),
        }
    }

    #[test]
    fn the_oldest_lines_of_a_carried_log_go_first() {
        let mut text = "one\ntwo\nthree\n".to_string();
        keep_newest(&mut text, 100);
        assert_eq!(text, "one\ntwo\nthree\n");
        keep_newest(&mut text, 10);
        assert_eq!(text, "three\n", "whole lines only");
        let mut wide = "é".repeat(10);
        keep_newest(&mut wide, 5);
        assert!(wide.is_empty(), "no line end left: nothing half kept");
    }

    #[test]
    fn bytes_served_through_a_previous_deployment_are_billed_once() {
        // The new deployment takes over 60 unreported bytes; the previous one had served
        // 100 when handed over and serves 30 more before it stops.
        let mut new = app(60, 0);
        new.previous = Some(Box::new(app(100, 0)));
        new.previous_base = 100;
        assert_eq!(new.served(), 60);
        if let Some(p) = new.previous.as_mut() {
            p.carried += 30;
        }
        assert_eq!(new.served(), 90, "what the previous one serves now counts");
        new.reported_bytes = 90;
        assert!(new.drop_previous());
        assert_eq!(
            new.served(),
            90,
            "stopping it neither loses nor repeats a byte"
        );
        assert!(!new.drop_previous());
    }
}
