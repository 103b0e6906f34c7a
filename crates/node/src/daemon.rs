//! The node daemon: start-up, uptime reports, and the tasks that run side by side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use peergrid_client::{Client, TxStatus};
use peergrid_core::tx::Signature;
use peergrid_core::{ContractId, FarmId, Keypair, NodeId, Payload};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::lock::DataDirLock;
use crate::probe::{DiskSpec, Probe, Reservation, probe};
use crate::protocol::{self, DeployRequest};
use crate::reconcile;
use crate::register::{Consent, ensure_registered};
use crate::settings::{LocationUpdate, Settings};
pub use crate::shared::Shared;
use crate::uptime::ServiceClock;
use crate::world::{WorkloadState, World, WorldError, write_atomic};
use peergrid_core::now_ms;

/// How `peergrid node run` is configured.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the node keeps its key, its world and its workloads' data.
    pub data_dir: PathBuf,
    /// The farm it joins.
    pub farm: FarmId,
    /// Ledger API URLs.
    pub ledger: Vec<String>,
    /// Certificate authorities (PEM) trusted for `https://` ledger URLs besides the system's.
    pub ledger_ca: Option<Vec<u8>>,
    /// Disks given to the grid (default: the data directory's disk).
    pub disks: Vec<DiskSpec>,
    /// What the node keeps for itself.
    pub reserve: Reservation,
    /// Where the machine is: the fields given override those saved in the data directory.
    pub location: LocationUpdate,
    /// The local health and metrics endpoint.
    pub health_listen: SocketAddr,
    /// The HTTP entry for the workloads, if any (`--http`).
    pub http_listen: Option<SocketAddr>,
    /// The mesh peer's configuration.
    pub mesh: peergrid_mesh::Config,
    /// The farm owner's invitation, when the owner's key is not here.
    pub invitation: Option<Signature>,
    /// The farm owner's key, when it is here: signs the invitation, funds the node.
    pub owner_key: Option<PathBuf>,
}

/// The folder of this node's shards on `disk`, under the node's own name: two nodes
/// may share a disk.
fn shard_root(disk: &std::path::Path, key: &Keypair) -> PathBuf {
    disk.join("peergrid-shards").join(key.account().to_string())
}

/// The node's own key: `node-key.json` in the data directory, created on first start.
pub fn node_key(data_dir: &std::path::Path) -> anyhow::Result<Keypair> {
    let path = data_dir.join("node-key.json");
    if path.exists() {
        return Keypair::load(&path).with_context(|| format!("cannot load {}", path.display()));
    }
    let key = Keypair::generate()?;
    key.save(&path, false)
        .with_context(|| format!("cannot write {}", path.display()))?;
    info!(account = %key.account(), path = %path.display(), "created the node's key");
    Ok(key)
}

/// Probe, register, then run until `stop` resolves: uptime, reconciliation, mesh protocols,
/// health.
pub async fn run(config: NodeConfig, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let node = start(config).await?;
    stop.await;
    info!("stopping");
    node.stop().await;
    Ok(())
}

/// A running node; [`Running::stop`] ends it.
pub struct Running {
    /// What its tasks share.
    pub shared: Arc<Shared>,
    /// The node's id.
    pub node: NodeId,
    /// Where its health endpoint listens.
    pub health: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _mesh: peergrid_mesh::Mesh,
    _lock: DataDirLock,
}

impl Running {
    /// Stop every task and save the world.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.compute.save_logs().await;
        let _ = self.shared.world.lock().await.save();
    }
}

/// Start a node: everything [`run`] does, returning once it is registered and serving.
pub async fn start(config: NodeConfig) -> anyhow::Result<Running> {
    let clock = ServiceClock::start();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    // Before anything in the directory is read or written.
    let lock = DataDirLock::acquire(&config.data_dir)?;
    let key = node_key(&config.data_dir)?;
    let health_listener = crate::health::listen(config.health_listen).await?;
    let http_listener = match config.http_listen {
        Some(addr) => Some(crate::entry::listen(addr).await?),
        None => None,
    };
    let disks = if config.disks.is_empty() {
        vec![DiskSpec {
            path: config.data_dir.clone(),
            class: None,
            max_bytes: None,
        }]
    } else {
        config.disks.clone()
    };
    let mut world = World::load(&config.data_dir)?;
    // A disk that is not mounted leaves an empty mount point on another file system:
    // neither its space nor its folder is the disk's.
    let probe: Probe = probe(
        &disks,
        &config.reserve,
        |path| world.is_unmounted(&shard_root(path, &key)),
        |path| peergrid_core::fs::bytes_under(&shard_root(path, &key)),
    )
    .map_err(anyhow::Error::msg)?;
    for path in &probe.unmounted {
        tracing::error!(
            disk = %path.display(),
            folder = %shard_root(path, &key).display(),
            "this node's shard folder on the disk is gone: is the disk mounted? It is not offered to the grid until it is back (if the disk was replaced and its data is lost, create the folder and restart)"
        );
    }
    for d in &probe.disks {
        let human = peergrid_core::capacity::human_bytes;
        info!(
            disk = %d.path.display(),
            size = human(d.total_bytes),
            free = human(d.available_bytes),
            shards = human(d.held_bytes),
            offered = human(d.offered_bytes),
            "disk probed: offers what is free plus its shards, less what the node keeps"
        );
    }
    info!(capacity = %probe.offered, "probed");
    write_atomic(
        &config.data_dir.join("probe.json"),
        &serde_json::to_vec_pretty(&probe)?,
    )
    .map_err(|e: WorldError| anyhow::anyhow!(e))?;
    if !world.workloads.is_empty() {
        info!(
            workloads = world.workloads.len(),
            "restored the workloads kept in the data directory"
        );
    }
    let mut settings = Settings::load(&config.data_dir)?;
    let location = config.location.clone().or(settings.location.as_ref());
    // Contracts are read proven; the sets verified for that survive a restart.
    let client = Client::new(config.ledger.clone()).with_trust_cache(config.data_dir.join("trust"));
    let client = Arc::new(match &config.ledger_ca {
        Some(pem) => client.with_root_certificates(pem)?,
        None => client,
    });
    let owner = match &config.owner_key {
        Some(p) => Some(Keypair::load(p).with_context(|| format!("cannot load {}", p.display()))?),
        None => None,
    };
    let consent = match (&config.invitation, &owner) {
        (Some(sig), _) => Consent::Invitation(*sig),
        (None, Some(k)) => Consent::OwnerKey(k),
        (None, None) => Consent::None,
    };
    // A machine booting while the ledger is out of reach waits for it rather than exiting.
    // The grid is checked first: a data directory of another grid stops the start before
    // the node registers there.
    let (chain, (id, location)) = loop {
        let registered = async {
            let status = client.status().await?.data;
            let chain = peergrid_storage::format::grid_id(&status.chain_id, &status.genesis_hash);
            world.follow_chain(&chain, &config.data_dir)?;
            let registered = ensure_registered(
                &client,
                &key,
                config.farm,
                probe.offered,
                &location,
                consent,
            )
            .await?;
            anyhow::Ok((chain, registered))
        };
        match registered.await {
            Ok(registered) => break registered,
            Err(e) if unreachable(&e) => {
                warn!(
                    error = format!("{e:#}"),
                    "the ledger is unreachable; retrying in 5 s"
                );
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if world.node.is_some_and(|n| n != id) {
        warn!(old = ?world.node, new = id, "the data directory belonged to another node id; resyncing");
        world.workloads.clear();
        world.followed_height = 0;
        world.synced = false;
    }
    world.node = Some(id);
    world.save()?;
    // Shards go on the node's disks by the class their contract reserves.
    let root_for = |class: crate::probe::DiskClass| {
        (probe.disks.iter())
            .find(|d| d.class == class && !d.path.as_os_str().is_empty())
            .map(|d| shard_root(&d.path, &key))
    };
    world.set_shard_roots(crate::world::ShardRoots {
        ssd: root_for(crate::probe::DiskClass::Ssd),
        hdd: root_for(crate::probe::DiskClass::Hdd),
    })?;
    if settings.location.as_ref() != Some(&location) {
        settings.location = Some(location);
        settings.save(&config.data_dir)?;
    }
    let status = client.status().await?;
    let interval_secs = status.data.params.uptime_interval_secs;

    let mut mesh_config = config.mesh.clone();
    if mesh_config.bootstrap.is_empty() {
        // The genesis names the grid's bootstrap peers; ourselves among them is no help.
        let me = key.account().to_string();
        mesh_config.bootstrap = status
            .data
            .mesh_bootstrap
            .iter()
            .filter(|a| !a.ends_with(&me))
            .filter_map(|a| match a.parse() {
                Ok(addr) => Some(addr),
                Err(e) => {
                    warn!(addr = a, error = %e, "ignoring a bootstrap peer the genesis lists");
                    None
                }
            })
            .collect();
    }
    // The ports of the last start, so peers and port forwarding keep finding the node.
    let kept = crate::ports::Ports::load(&config.data_dir);
    let asked = std::mem::take(&mut mesh_config.listen);
    mesh_config.listen = kept.apply(&asked);
    let mesh = match peergrid_mesh::Mesh::start(&key, mesh_config.clone()).await {
        Ok(mesh) => mesh,
        // A kept port taken between its check and the bind: any free one, as asked.
        Err(e) if mesh_config.listen != asked => {
            warn!(error = %e, "cannot listen on the mesh ports of the last start; taking others");
            mesh_config.listen = asked;
            peergrid_mesh::Mesh::start(&key, mesh_config)
                .await
                .context("cannot start the mesh peer")?
        }
        Err(e) => return Err(e).context("cannot start the mesh peer"),
    };
    let bound = mesh.listen_addrs().await.unwrap_or_default();
    let ports = crate::ports::Ports::of(&bound);
    if ports != kept
        && ports != crate::ports::Ports::default()
        && let Err(e) = ports.save(&config.data_dir)
    {
        warn!(error = %e, "cannot keep the mesh ports for the next start");
    }
    let listen: Vec<String> = bound.iter().map(ToString::to_string).collect();
    let disk_reserve = config.reserve.disk_reserve();
    let storage = Arc::new(
        peergrid_storage::ShardStore::new(config.data_dir.join("storage-pointers"), &chain)
            .context("cannot create the storage pointers folder")?
            .with_disk_reserve(disk_reserve),
    );
    let compute = Arc::new(
        crate::compute::Compute::new(&config.data_dir, mesh.clone())?
            .with_disk_reserve(disk_reserve),
    );
    let mut disk_paths = vec![config.data_dir.clone()];
    for d in &probe.disks {
        if !d.path.as_os_str().is_empty() && !disk_paths.contains(&d.path) {
            disk_paths.push(d.path.clone());
        }
    }
    let shared = Arc::new(Shared {
        compute: compute.clone(),
        storage: storage.clone(),
        world: Mutex::new(world),
        capacity: probe.offered,
        farm: config.farm,
        account: key.account(),
        reports_ok: AtomicU64::new(0),
        reports_failed: AtomicU64::new(0),
        last_report_ms: AtomicU64::new(0),
        deploys_ok: AtomicU64::new(0),
        deploys_refused: AtomicU64::new(0),
        interval_secs,
        listen,
        mesh: mesh.clone(),
        clock,
        disks: disk_paths,
        disk_reserve,
        grid: chain.clone(),
        read_all: std::sync::atomic::AtomicBool::new(false),
        fee_balance: AtomicU64::new(u64::MAX),
    });
    shared.sync_storage(&*shared.world.lock().await);
    compute.sync(&*shared.world.lock().await);
    serve_protocols(&mesh, shared.clone(), client.clone())?;
    let shard_task =
        peergrid_storage::store::serve(&mesh, storage).context("cannot serve /peergrid/shard/1")?;
    let data_task = crate::appdata::serve(&mesh, shared.clone())?;
    let (health, health_task) = crate::health::serve(health_listener, shared.clone()).await?;
    let mut tasks = Vec::new();
    if let Some(listener) = http_listener {
        let (http, http_task) = crate::entry::serve(listener, compute.clone()).await?;
        info!(%http, "serving workloads over HTTP");
        tasks.push(http_task);
    }
    tasks.extend([
        tokio::spawn(report_uptime(
            shared.clone(),
            client.clone(),
            key.clone(),
            id,
        )),
        tokio::spawn(reconcile::follow(shared.clone(), client.clone())),
        tokio::spawn(give_back(
            shared.clone(),
            client.clone(),
            key.clone(),
            id,
            owner,
        )),
        tokio::spawn(save_logs(compute.clone())),
        tokio::spawn(scrub_shards(shared.storage.clone())),
        health_task,
        shard_task,
        data_task,
    ]);
    info!(node = id, farm = config.farm, %health, "node running");
    Ok(Running {
        shared,
        node: id,
        health,
        tasks,
        _mesh: mesh,
        _lock: lock,
    })
}

/// First scrub this long after a start: a node catching up after a restart has more
/// pressing reads.
const SCRUB_FIRST: Duration = Duration::from_secs(10 * 60);
/// Rest between scrub passes: every shard is read whole about four times a day.
const SCRUB_PAUSE: Duration = Duration::from_secs(6 * 3600);
/// A scrub's pace: a terabyte of shards in about nine hours, a small share of a disk.
const SCRUB_BYTES_PER_SEC: u64 = 32 << 20;

/// Reads every shard whole now and then and moves aside those a failing disk changed,
/// so that the owners' repairs see them missing and rebuild them.
async fn scrub_shards(storage: Arc<peergrid_storage::ShardStore>) {
    tokio::time::sleep(SCRUB_FIRST).await;
    loop {
        let found = storage.scrub(SCRUB_BYTES_PER_SEC).await;
        if found.corrupt > 0 {
            warn!(
                corrupt = found.corrupt,
                whole = found.whole,
                "shards no longer matching their address were moved aside (failing disk?); their owners' repairs rebuild them elsewhere"
            );
        } else {
            debug!(
                shards = found.whole,
                bytes = found.bytes,
                "every shard read back as written"
            );
        }
        tokio::time::sleep(SCRUB_PAUSE).await;
    }
}

/// Saves the services' logs now and then, so that a restart, even a crash, keeps them.
async fn save_logs(compute: Arc<crate::compute::Compute>) {
    loop {
        tokio::time::sleep(crate::compute::LOG_SAVE_EVERY).await;
        compute.save_logs().await;
    }
}

/// Whether `e` only says that no validator answered (worth waiting for).
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<peergrid_client::ClientError>(),
            Some(peergrid_client::ClientError::Unreachable { .. })
        )
    })
}

/// Longest wait for one of the node's transactions to be final before it is sent again:
/// a validator that restarts loses what waited in its mempool, and waiting a whole
/// interval (40 minutes in production) for a lost report would leave its window empty.
const TX_WAIT_MAX: Duration = Duration::from_secs(30);

/// Pause before sending again after a send that failed at once (no validator answered).
const TX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Report uptime in every window of the ledger's, forever: a report that is not final is
/// sent again within its window while there is time, and a failure is logged.
async fn report_uptime(shared: Arc<Shared>, client: Arc<Client>, key: Keypair, node: NodeId) {
    let interval = Duration::from_secs(shared.interval_secs.max(1));
    let interval_ms = shared.interval_secs.max(1) * 1000;
    let per_try = interval.min(TX_WAIT_MAX);
    // The window of the last report sent.
    let mut sent_in: Option<u64> = None;
    loop {
        // The ledger accepts one report per window of ledger time (interval-aligned);
        // report a quarter into each window, so finality latency and clock drift never
        // push two reports into one window and leave the next one empty. The first report
        // goes out at once, so a new node is up within seconds. The next window is aimed
        // at from the last one reported, not from now: a report (and the usage reports
        // after it) that took most of an interval must not skip a window, which would
        // leave two reports two intervals apart and the node counted down between them.
        if let Some(window) = sent_in {
            let target = (window + 1) * interval_ms + interval_ms / 4;
            let now = now_ms();
            if target > now {
                // At most an interval: a clock stepped back must not hold reports for as
                // long as it stepped.
                let wait = (target - now).min(interval_ms);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        let window = now_ms() / interval_ms;
        sent_in = Some(window);
        let window_end_ms = (window + 1) * interval_ms;
        let time_for_another = || now_ms() + per_try.as_millis() as u64 <= window_end_ms;
        let mut failed_once = false;
        // A report still waiting in a mempool is waited for, not sent again: only one
        // that no validator holds any more (a restart lost it) is.
        let mut waiting: Option<peergrid_core::TxHash> = None;
        loop {
            let sent = match waiting.take() {
                Some(hash) => client.wait(&hash, per_try).await.map(|s| (hash, s)),
                None => {
                    let payload = Payload::ReportUptime {
                        node,
                        // Seconds since this service started: a restart shows as uptime
                        // going down, and the ledger does not credit the time the node
                        // was stopped.
                        uptime_secs: shared.clock.uptime_secs(),
                        timestamp_secs: now_ms() / 1000,
                    };
                    client.send(&key, payload, per_try).await
                }
            };
            let why = match sent {
                Ok((_, TxStatus::Finalized { height, .. })) => {
                    shared.reports_ok.fetch_add(1, Ordering::Relaxed);
                    shared.last_report_ms.store(now_ms(), Ordering::Relaxed);
                    debug!(height, "uptime reported");
                    break;
                }
                Ok((_, TxStatus::Rejected { reason, .. })) => {
                    shared.reports_failed.fetch_add(1, Ordering::Relaxed);
                    // Most often a second report in one window (an earlier try was final
                    // after all); the next is in the next window.
                    debug!(%reason, "uptime report rejected");
                    break;
                }
                Ok((hash, other)) => format!("{hash} is not final: {other:?}"),
                // Not final in time: waited for again while a validator holds it, sent
                // again only once none does.
                Err(peergrid_client::ClientError::Timeout { hash, .. }) => {
                    match client.tx_status(&hash).await {
                        Ok(TxStatus::Unknown) => {}
                        _ => waiting = Some(hash),
                    }
                    format!("{hash} is not final after {} s", per_try.as_secs())
                }
                Err(e) => {
                    tokio::time::sleep(TX_RETRY_PAUSE).await;
                    e.to_string()
                }
            };
            if !time_for_another() {
                shared.reports_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %why, "cannot report uptime in this window; reporting in the next");
                break;
            }
            if !failed_once {
                failed_once = true;
                warn!(error = %why, "cannot report uptime yet; sending it again");
            } else {
                debug!(error = %why, "cannot report uptime yet; sending it again");
            }
        }
        report_usage(&shared, &client, &key, per_try).await;
    }
}

/// Give back to the ledger, every report interval, what this node cannot serve: capacity
/// that ended contracts kept registered above what the machine offers
/// ([`follow_capacity`]), and each contract this node has refused for at least an
/// interval and still refuses when it reads the contract again: its owner would pay for
/// nothing, since a refused contract holds no workload and no data here.
/// Its own task, so that neither the world's lock nor a slow release delays an uptime
/// report. A refusal the next reading clears (capacity freed by another contract's end)
/// costs nothing, and none is released before the node's first full reading of its
/// contracts, nor from a reading older than what the node follows.
async fn give_back(
    shared: Arc<Shared>,
    client: Arc<Client>,
    key: Keypair,
    node: NodeId,
    owner: Option<Keypair>,
) {
    let interval = Duration::from_secs(shared.interval_secs.max(1));
    // Contracts refused here, when each was first seen refused, and whether its release
    // failed already (the next failure is logged at debug level only).
    let mut seen: BTreeMap<ContractId, (Instant, bool)> = BTreeMap::new();
    let mut rules_told = false;
    let mut capacity_failed = false;
    let mut low_told = false;
    loop {
        tokio::time::sleep(interval).await;
        if !shared.read_all.load(Ordering::Relaxed) {
            continue;
        }
        keep_funded(
            &shared,
            &client,
            &key,
            owner.as_ref(),
            &mut low_told,
            interval,
        )
        .await;
        match follow_capacity(&shared, &client, &key, node, interval).await {
            Ok(_) => capacity_failed = false,
            Err(why) if capacity_failed => {
                debug!(%why, "cannot update the capacity registered yet")
            }
            Err(why) => {
                capacity_failed = true;
                warn!(%why, "cannot update the capacity registered; trying again every interval");
            }
        }
        let refused: Vec<ContractId> = {
            let world = shared.world.lock().await;
            (world.workloads.values())
                .filter(|w| !w.holds_capacity())
                .map(|w| w.contract)
                .collect()
        };
        seen.retain(|id, _| refused.contains(id));
        let due: Vec<ContractId> = refused
            .into_iter()
            .filter(|id| {
                let (since, _) = seen.entry(*id).or_insert((Instant::now(), false));
                since.elapsed() >= interval
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        match client.status().await {
            Ok(s) if s.data.ledger_rules < peergrid_client::types::records::RULES_RELEASE => {
                if !rules_told {
                    rules_told = true;
                    warn!(
                        contracts = ?due,
                        rules = s.data.ledger_rules,
                        "this node refuses contracts it cannot serve, but this chain's ledger \
                         rules are too old for it to give them back; their owners are billed \
                         until they cancel them"
                    );
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "cannot read the ledger's status; releases wait");
                continue;
            }
        }
        for id in due {
            let failed_before = seen.get(&id).is_some_and(|(_, failed)| *failed);
            match release_one(&shared, &client, &key, id, interval).await {
                Ok(true) => {
                    seen.remove(&id);
                }
                Ok(false) => {}
                Err(why) => {
                    if failed_before {
                        debug!(contract = id, %why, "cannot release a refused contract yet");
                    } else {
                        warn!(contract = id, %why, "cannot release a refused contract; trying again every interval");
                    }
                    if let Some(entry) = seen.get_mut(&id) {
                        entry.1 = true;
                    }
                }
            }
        }
    }
}

/// Keep the node's account able to pay its fees: usage reports, capacity updates and
/// releases each pay one (uptime reports are free), and a busy node spends its start-up
/// float within weeks. Topped up from the farm owner's key when the node has it; said
/// once otherwise, until the balance is back.
async fn keep_funded(
    shared: &Shared,
    client: &Client,
    key: &Keypair,
    owner: Option<&Keypair>,
    told: &mut bool,
    timeout: Duration,
) {
    let me = key.account();
    let balance = match client.account(&me).await {
        Ok(a) => a.data.balance,
        Err(e) => {
            debug!(error = %e, "cannot read the node's balance");
            return;
        }
    };
    shared.fee_balance.store(balance.0, Ordering::Relaxed);
    let low = peergrid_core::Amount(crate::register::FEE_FLOAT.0 / 10);
    if balance >= low {
        *told = false;
        return;
    }
    let Some(owner) = owner else {
        if !*told {
            *told = true;
            warn!(
                %balance,
                "the node's account {me} is low on tokens for its fees: its usage reports \
                 (what its apps' traffic earns), capacity updates and releases fail once it \
                 is empty. Send it some: `peergrid wallet transfer --to {me} --amount 1`"
            );
        }
        return;
    };
    let payload = Payload::Transfer {
        to: me,
        amount: crate::register::FEE_FLOAT,
    };
    match client.send(owner, payload, timeout).await {
        Ok((_, TxStatus::Finalized { .. })) => {
            *told = false;
            info!(amount = %crate::register::FEE_FLOAT, "topped up the node's account for its fees from the farm owner's key");
        }
        other => {
            if !*told {
                *told = true;
                warn!(outcome = ?other.map(|(_, s)| s), "cannot top up the node's account from the farm owner's key; its fees fail once it is empty");
            }
        }
    }
}

/// Bring the capacity the ledger holds for `node` back to what this machine offers as far
/// as its contracts allow ([`crate::register::acceptable_capacity`]): a node started on
/// less than its contracts reserve keeps their figure registered, and once they end that
/// figure would offer builders room the machine does not have, so their new contracts
/// would be refused here. Whether it sent an update.
async fn follow_capacity(
    shared: &Shared,
    client: &Client,
    key: &Keypair,
    node: NodeId,
    timeout: Duration,
) -> Result<bool, String> {
    let record = crate::register::node(client, node)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let target = crate::register::settled(
        crate::register::acceptable_capacity(shared.capacity, &record.capacity, &record.used),
        &record.capacity,
    );
    if target == record.capacity {
        return Ok(false);
    }
    let payload = Payload::UpdateNode {
        node,
        capacity: Some(target),
        location: None,
    };
    match client.send(key, payload, timeout).await {
        Ok((_, TxStatus::Finalized { .. })) => {
            info!(
                node,
                was = %record.capacity,
                now = %target,
                "the capacity registered follows what the machine offers, now that the \
                 contracts that kept more on the ledger have ended"
            );
            Ok(true)
        }
        Ok((_, TxStatus::Rejected { reason, .. })) => {
            Err(format!("the ledger refused {target}: {reason}"))
        }
        Ok((hash, other)) => Err(format!("not final yet ({hash}: {other:?})")),
        Err(e) => Err(e.to_string()),
    }
}

/// Read contract `id` again and, when this node still refuses it, release it; whether it
/// was released.
async fn release_one(
    shared: &Shared,
    client: &Client,
    key: &Keypair,
    id: ContractId,
    timeout: Duration,
) -> Result<bool, String> {
    // Planned against a world at the reading's height: an older reading could undo what
    // the node did since (the owner shrank the contract), and a world behind it could miss
    // a block between (another contract's end, freeing room).
    let deadline = Instant::now() + timeout;
    let contract = loop {
        let read = client
            .proven_contract(id)
            .await
            .map_err(|e| format!("cannot read it: {e}"))?;
        let followed = loop {
            let followed = shared.world.lock().await.followed_height;
            if followed >= read.height || Instant::now() > deadline {
                break followed;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if followed == read.height {
            break read.value;
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let Some(contract) = contract else {
        return Ok(false);
    };
    reconcile::reconcile_one(shared, &contract).await;
    let reason = match shared
        .world
        .lock()
        .await
        .workloads
        .get(&id)
        .map(|w| &w.state)
    {
        Some(WorkloadState::Refused { reason }) => reason.clone(),
        _ => return Ok(false),
    };
    let payload = Payload::ReleaseContract {
        contract: id,
        reason: release_reason(&reason),
    };
    match client.send(key, payload, timeout).await {
        Ok((_, TxStatus::Finalized { .. })) => {
            info!(
                contract = id,
                %reason,
                "released: the ledger deleted the contract this node could not serve, and its \
                 owner is not billed for it any more"
            );
            Ok(true)
        }
        Ok((_, TxStatus::Rejected { reason, .. })) => {
            Err(format!("the ledger refused it: {reason}"))
        }
        Ok((hash, other)) => Err(format!("not final yet ({hash}: {other:?})")),
        Err(e) => Err(e.to_string()),
    }
}

/// A refusal's reason as the ledger takes it: one line, within its size limit.
fn release_reason(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| {
            if peergrid_core::tx::hides_text(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut cut = line.trim().to_string();
    if cut.is_empty() {
        cut = "this node cannot serve it".into();
    }
    while cut.len() > peergrid_core::tx::RELEASE_REASON_BYTES_MAX {
        cut.pop();
    }
    cut
}

/// Report the bytes each deployment served since the last report (NU, billed to its
/// contract). Counters live in memory: what was served but not reported when the node
/// stops is not billed, never billed twice.
async fn report_usage(shared: &Shared, client: &Client, key: &Keypair, timeout: Duration) {
    for (contract, hash, served, new) in shared.compute.unreported_usage() {
        let payload = Payload::ReportUsage {
            contract,
            nu_bytes: new,
        };
        match client.send(key, payload, timeout).await {
            Ok((_, TxStatus::Finalized { .. })) => {
                shared.compute.usage_reported(contract, hash, served);
                debug!(contract, bytes = new, "network usage reported");
            }
            Ok((_, TxStatus::Rejected { reason, .. })) => {
                // The contract ended meanwhile: its bytes are not billable any more.
                shared.compute.usage_reported(contract, hash, served);
                debug!(contract, %reason, "network usage report rejected");
            }
            Ok((hash, other)) => {
                debug!(%hash, status = ?other, "network usage report not final; retrying next interval")
            }
            Err(e) => {
                warn!(contract, error = %e, "cannot report network usage; retrying next interval")
            }
        }
    }
}

fn serve_protocols(
    mesh: &peergrid_mesh::Mesh,
    shared: Arc<Shared>,
    client: Arc<Client>,
) -> anyhow::Result<()> {
    let s = shared.clone();
    mesh.serve(protocol::STATUS, move |_peer, body| {
        let s = s.clone();
        async move {
            let mut report = s.report().await;
            // A request may name one contract (u64 LE) to hear about its deployment.
            if let Ok(id) = <[u8; 8]>::try_from(body.as_slice()) {
                let contract = u64::from_le_bytes(id);
                // Read under the world's lock (world, then compute, as a deploy takes
                // them): a deployment accepted meanwhile is seen whole or not at all.
                let world = s.world.lock().await;
                let holds = (world.workloads.get(&contract)).and_then(|w| w.deployment_hash);
                report.deployment = Some(s.compute.status(contract, holds));
                drop(world);
            }
            serde_json::to_vec(&report).map_err(|e| e.to_string())
        }
    })?;
    let s = shared.clone();
    mesh.serve(protocol::LOGS, move |_peer, body| {
        let s = s.clone();
        async move {
            let logs = workload_logs(&s, &body).await?;
            serde_json::to_vec(&logs).map_err(|e| e.to_string())
        }
    })?;
    mesh.serve(protocol::DEPLOY, move |peer, body| {
        let shared = shared.clone();
        let client = client.clone();
        async move {
            let result = accept_deployment(&shared, &client, &body).await;
            match &result {
                Ok(contract) => {
                    shared.deploys_ok.fetch_add(1, Ordering::Relaxed);
                    info!(%peer, contract, "deployment accepted");
                }
                Err(reason) => {
                    shared.deploys_refused.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, %reason, "deployment refused");
                }
            }
            result.map(|_| b"ok".to_vec())
        }
    })?;
    Ok(())
}

/// A workload's output, if the request is its contract owner's and recent.
async fn workload_logs(shared: &Shared, body: &[u8]) -> Result<protocol::WorkloadLogs, String> {
    let request: protocol::LogsRequest =
        peergrid_core::codec::decode("logs request", body, protocol::LOGS.request_bytes_max)
            .map_err(|e| format!("malformed logs request: {e}"))?;
    let owner = shared
        .world
        .lock()
        .await
        .workloads
        .get(&request.contract)
        .map(|w| w.owner)
        .ok_or_else(|| format!("contract {} has no workload on this node", request.contract))?;
    let skew = now_ms().abs_diff(request.at_ms);
    if skew > protocol::LOGS_CLOCK_SKEW_MS {
        return Err(format!(
            "the request was signed {} s away from this node's clock; check your clock",
            skew / 1000
        ));
    }
    let message = protocol::logs_message(
        &shared.grid,
        request.contract,
        &request.workload,
        request.at_ms,
    );
    if !request
        .signature
        .verify(&owner, protocol::LOGS_NAMESPACE, &message)
    {
        return Err(format!(
            "only contract {}'s owner {owner} may read its output, on this grid ({}; a peergrid \
             older than this node's signs otherwise: update it)",
            request.contract, shared.grid
        ));
    }
    shared.compute.logs(request.contract, &request.workload)
}

/// How many more times a deployment's contract is read when it does not match yet.
const DEPLOY_READS_AGAIN: usize = 6;

/// Check a deployment against its contract on the ledger, then store it with its workload.
async fn accept_deployment(
    shared: &Shared,
    client: &Client,
    body: &[u8],
) -> Result<peergrid_core::ContractId, String> {
    let request: DeployRequest =
        peergrid_core::codec::decode("deployment", body, protocol::DEPLOY.request_bytes_max)
            .map_err(|e| format!("malformed deployment request: {e}"))?;
    let read = || async {
        reconcile::contract(client, request.contract)
            .await
            .map_err(|e| {
                format!(
                    "cannot check contract {} on the ledger: {e}",
                    request.contract
                )
            })?
            .ok_or_else(|| format!("contract {} does not exist on the ledger", request.contract))
    };
    let mut contract = read().await?;
    let me = shared.world.lock().await.node;
    if contract.node != me || me.is_none() {
        return Err(format!(
            "contract {} is for node {:?}, not this node ({me:?})",
            contract.id, contract.node
        ));
    }
    let hash = peergrid_core::Hash::of(&request.deployment);
    // The owner never changes: checked first, so a stranger's request costs no waiting.
    if !request.signature.verify(
        &contract.owner,
        protocol::DEPLOY_NAMESPACE,
        &protocol::deploy_message(&shared.grid, contract.id, &hash),
    ) {
        return Err(format!(
            "the deployment is not signed by contract {}'s owner {} for this grid ({}; a \
             peergrid older than this node's signs otherwise: update it)",
            contract.id, contract.owner, shared.grid
        ));
    }
    // The validator asked may be a block behind the update the owner just made (a new
    // hash, and the memory with it): asked again, and another, for a few seconds before
    // refusing.
    for _ in 0..DEPLOY_READS_AGAIN {
        if contract.deployment_hash().is_none_or(|h| h == hash) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.choose_again().await;
        contract = read().await?;
    }
    let expected = contract
        .deployment_hash()
        .ok_or_else(|| format!("contract {} is not a deployment contract", contract.id))?;
    if hash != expected {
        return Err(format!(
            "the deployment's hash {hash} does not match contract {}'s hash {expected}; \
             update the contract first",
            contract.id
        ));
    }
    let deployment = peergrid_compute::Deployment::decode(&request.deployment).map_err(|e| {
        format!("the deployment cannot be decoded: {e}; build it with `peergrid deploy`")
    })?;
    // A run's memory comes out of what the contract reserves, which is what the node's
    // capacity counts and the owner pays for.
    // As much as a run here may hold: an instance never gets more.
    let largest = (deployment.workloads.iter())
        .max_by_key(|w| w.limits.memory_bytes)
        .map(|w| {
            let most = crate::compute::INSTANCE_MEMORY_BYTES_MAX;
            (w.name.as_str(), w.limits.memory_bytes.min(most))
        });
    if let Some((name, bytes)) = largest.filter(|(_, bytes)| *bytes > contract.reserved.mru) {
        return Err(format!(
            "workload {name} may use {} of memory per run, more than contract {} reserves \
             ({}): reserve at least that (`peergrid contract update {} --mru …`) or lower \
             its limit",
            peergrid_core::capacity::human_bytes(bytes),
            contract.id,
            peergrid_core::capacity::human_bytes(contract.reserved.mru),
            contract.id
        ));
    }
    if !contract.is_live() {
        return Err(format!("contract {} is deleted", contract.id));
    }
    // Checked once the request is known to be the owner's, so strangers learn nothing;
    // the deployment is small, but its components follow and are checked again.
    let dir = shared.world.lock().await.workload_dir(contract.id);
    shared
        .disk_reserve
        .check(&dir, request.deployment.len() as u64, 0)
        .map_err(|full| full.to_string())?;
    reconcile::reconcile_one(shared, &contract).await;
    let mut world = shared.world.lock().await;
    let refused = match world.workloads.get(&contract.id).map(|w| &w.state) {
        Some(WorkloadState::Refused { reason }) => Some(reason.clone()),
        Some(_) => None,
        None => Some("not provisioned here".into()),
    };
    if let Some(reason) = refused {
        return Err(format!(
            "contract {} is refused on this node: {reason}",
            contract.id
        ));
    }
    let file = world.workload_dir(contract.id).join("deployment.bin");
    let need = request.deployment.len() as u64;
    let full = |e: WorldError| {
        if e.is_disk_full() {
            shared.disk_reserve.full(&dir, need).to_string()
        } else {
            e.to_string()
        }
    };
    write_atomic(&file, &request.deployment).map_err(full)?;
    let before = (world.workloads.get_mut(&contract.id)).map(|w| w.deployed.replace(hash));
    if let Err(e) = world.save() {
        // Not recorded: the next start reads which deployment the folder holds.
        if let (Some(before), Some(w)) = (before, world.workloads.get_mut(&contract.id)) {
            w.deployed = before;
        }
        return Err(full(e));
    }
    shared.compute.retry(contract.id);
    shared.compute.sync(&world);
    Ok(contract.id)
}

#[cfg(test)]
mod tests {
    use super::release_reason;
    use peergrid_core::tx::RELEASE_REASON_BYTES_MAX;

    #[test]
    fn a_refusal_is_given_to_the_ledger_as_one_line_within_its_limit() {
        assert_eq!(
            release_reason("needs 1 GiB\nbut has 0"),
            "needs 1 GiB but has 0"
        );
        assert_eq!(release_reason(" \t "), "this node cannot serve it");
        let long = release_reason(&"ü".repeat(RELEASE_REASON_BYTES_MAX));
        assert!(long.len() <= RELEASE_REASON_BYTES_MAX && long.chars().all(|c| c == 'ü'));
        for reason in ["x\u{7}y", "a\u{202E}b", &"ü".repeat(300)] {
            let payload = peergrid_core::Payload::ReleaseContract {
                contract: 1,
                reason: release_reason(reason),
            };
            assert!(payload.check().is_ok(), "{reason:?}");
        }
    }
}
