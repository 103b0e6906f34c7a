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
    /// The grid ([`peergrid_storage::format::grid_id`]) that owners' requests must be
    /// signed for.
    pub grid: String,
    /// Whether this run has read every contract on the node once (the world's `synced`
    /// is kept on disk, so it says nothing about this run).
    pub read_all: std::sync::atomic::AtomicBool,
    /// The node's account balance at its last check, token units (`u64::MAX` before one).
    pub fee_balance: AtomicU64,
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
            disks: disk_reports(&self.disks, self.disk_reserve),
        }
    }
}

/// Each folder's file system as it is now, with the reserve kept there (one statvfs
/// each; a folder that cannot be asked is left out).
pub fn disk_reports(
    paths: &[std::path::PathBuf],
    reserve: peergrid_core::fs::DiskReserve,
) -> Vec<DiskReport> {
    paths
        .iter()
        .filter_map(|path| {
            let space = peergrid_core::fs::disk_space(path).ok()?;
            let reserve_bytes = reserve.reserve_bytes(space.total_bytes);
            Some(DiskReport {
                path: path.display().to_string(),
                free_bytes: space.available_bytes,
                total_bytes: space.total_bytes,
                reserve_bytes,
                full: space.available_bytes <= reserve_bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::disklab::SmallDisk;
    use peergrid_core::fs::DiskReserve;

    #[test]
    fn a_disk_is_reported_full_below_its_reserve_and_not_once_freed() {
        let Some(disk) = SmallDisk::mount_or_skip(8 << 20) else {
            return;
        };
        let paths = vec![disk.path().to_path_buf()];
        let reserve = DiskReserve::bytes(1 << 20);
        let [report] = disk_reports(&paths, reserve).try_into().expect("one disk");
        assert_eq!(report.total_bytes, 8 << 20);
        assert_eq!(report.reserve_bytes, 1 << 20);
        assert!(!report.full && report.free_bytes > 7 << 20, "{report:?}");
        let filler = disk.fill("filler", 512 << 10).expect("fill");
        let [report] = disk_reports(&paths, reserve).try_into().expect("one disk");
        assert!(report.full && report.free_bytes <= 512 << 10, "{report:?}");
        std::fs::remove_file(filler).expect("free");
        let [report] = disk_reports(&paths, reserve).try_into().expect("one disk");
        assert!(!report.full, "{report:?}");
    }
}
