//! What the node's tasks (uptime, reconciliation, mesh protocols, health) share.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use peergrid_core::{Capacity, FarmId};
use tokio::sync::Mutex;

use crate::protocol::{DiskReport, NodeReport, WorkloadCounts};
use crate::uptime::ServiceClock;
use crate::world::{WorkloadState, World};

/// What the tasks share.
pub struct Shared {
    /// The local world.
    pub world: Mutex<World>,
    /// What the node registered.
    pub capacity: Capacity,
    /// Its farm.
    pub farm: FarmId,
    /// Its key's account.
    pub account: peergrid_core::AccountId,
    /// Uptime reports the ledger finalized.
    pub reports_ok: AtomicU64,
    /// Uptime reports that failed (ledger unreachable or rejected).
    pub reports_failed: AtomicU64,
    /// Unix ms of the last finalized uptime report.
    pub last_report_ms: AtomicU64,
    /// Deployments accepted and refused over the mesh.
    pub deploys_ok: AtomicU64,
    /// Deployments refused.
    pub deploys_refused: AtomicU64,
    /// The uptime interval from genesis, seconds.
    pub interval_secs: u64,
    /// The mesh peer's listen addresses.
    pub listen: Vec<String>,
    /// The mesh peer.
    pub mesh: peergrid_mesh::Mesh,
    /// When the service started: the uptime it reports.
    pub clock: ServiceClock,
    /// The shards of the storage contracts on this node.
    pub storage: Arc<peergrid_storage::ShardStore>,
    /// The deployments this node runs.
    pub compute: Arc<crate::compute::Compute>,
    /// The folders the node writes to: its data directory and each `--disk`.
    pub disks: Vec<std::path::PathBuf>,
    /// The free space kept on each of them; data for others is refused beyond it.
    pub disk_reserve: peergrid_core::fs::DiskReserve,
}

impl Shared {
    /// Tell the shard store which storage contracts the world holds, and in what state.
    pub fn sync_storage(&self, world: &World) {
        let contracts = world
            .workloads
            .values()
            .filter(|w| w.kind == "storage" && w.holds_capacity())
            .map(|w| {
                (
                    w.contract,
                    peergrid_storage::ContractAccess {
                        owner: w.owner,
                        quota: w.reserved.hru.saturating_add(w.reserved.sru),
                        paused: w.state == WorkloadState::Paused,
                        dir: world.shard_dir(w.contract),
                    },
                )
            })
            .collect();
        self.storage.set_contracts(contracts);
    }

    /// What `/peergrid/status/1` and `/v1/status` answer.
    pub async fn report(&self) -> NodeReport {
        let world = self.world.lock().await;
        let (starting, failed) = self.compute.counts();
        let used = world.used(None);
        let mut counts = WorkloadCounts {
            starting,
            failed,
            ..WorkloadCounts::default()
        };
        for w in world.workloads.values() {
            match w.state {
                WorkloadState::Running => counts.running += 1,
                WorkloadState::Paused => counts.paused += 1,
                WorkloadState::Refused { .. } => counts.refused += 1,
            }
        }
        NodeReport {
            version: crate::VERSION.to_string(),
            node: world.node,
            farm: self.farm,
            account: self.account,
            capacity: self.capacity,
            used,
            free: self.capacity.saturating_sub(&used),
            workloads: counts,
            uptime_secs: self.clock.uptime_secs(),
            followed_height: world.followed_height,
            http: self.compute.http.get().cloned(),
            deployment: None,
            disks: self.disk_reports(),
        }
    }

    /// Each folder's file system as it is now (one statvfs each; a folder that cannot be
    /// asked is left out).
    pub fn disk_reports(&self) -> Vec<DiskReport> {
        self.disks
            .iter()
            .filter_map(|path| {
                let space = peergrid_core::fs::disk_space(path).ok()?;
                let reserve = self.disk_reserve.reserve_bytes(space.total_bytes);
                Some(DiskReport {
                    path: path.display().to_string(),
                    free_bytes: space.available_bytes,
                    total_bytes: space.total_bytes,
                    reserve_bytes: reserve,
                    full: space.available_bytes <= reserve,
                })
            })
            .collect()
    }
}
