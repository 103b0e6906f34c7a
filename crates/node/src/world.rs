//! The node's local world: what it runs, kept equal to what the ledger says.
//!
//! [`plan`] decides, for one contract as the ledger shows it, what must change here;
//! [`World`] holds the result and persists it in the data directory. Every write is
//! atomic (temporary file, fsync, rename), and a workload's folder is created before
//! the world that names it is saved and removed only after, so a crash at any point
//! leaves at worst an orphan folder, which [`World::orphans`] finds once the ledger has
//! been read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use peergrid_client::{Contract, ContractState};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, Capacity, ContractId, Hash, NodeId};
use serde::{Deserialize, Serialize};

/// What a workload is doing here.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum WorkloadState {
    /// Provisioned and serving.
    Running,
    /// Its contract is in grace: paused, data kept.
    Paused,
    /// Refused here, with why (the contract stays on the ledger; the node retries when
    /// the reason may have gone, like capacity freed by another contract).
    Refused {
        /// Why.
        reason: String,
    },
}

/// One contract's workload on this node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Workload {
    /// The contract.
    pub contract: ContractId,
    /// `deployment`, `storage` or `rent`.
    pub kind: String,
    /// Who pays for it.
    pub owner: AccountId,
    /// What it reserves.
    pub reserved: Capacity,
    /// For deployments: the hash the ledger holds; a deployment is only accepted with it.
    pub deployment_hash: Option<Hash>,
    /// For deployments: the hash of the deployment received and stored, if any.
    pub deployed: Option<Hash>,
    /// Its state.
    #[serde(flatten)]
    pub state: WorkloadState,
    /// For storage: where its shards are, fixed when it is provisioned (absent in world
    /// files written before it was kept; filled in at the next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_at: Option<ShardsAt>,
}

/// Where a storage contract's shards are. Kept rather than worked out from the node's
/// `--disk` flags at each start, so that relabelling, reordering or adding a disk
/// neither strands a contract's shards nor removes them as no contract's.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardsAt {
    /// In the contract's workload folder: the node had no disk of its class.
    WorkloadFolder,
    /// In this folder on one of the node's disks.
    Disk(PathBuf),
}

impl Workload {
    /// Whether it holds capacity here (running or paused, not refused).
    pub fn holds_capacity(&self) -> bool {
        !matches!(self.state, WorkloadState::Refused { .. })
    }
}

/// What the node must do about one contract.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    /// Create its workload in the given state.
    Provision(Workload),
    /// Pause a running workload.
    Pause,
    /// Resume a paused workload.
    Resume,
    /// Record a refusal.
    Refuse(String),
    /// Remove the workload and its data.
    Remove,
    /// Follow an updated contract: its deployment hash and what it reserves.
    Update {
        /// The hash the ledger now holds.
        deployment_hash: Option<Hash>,
        /// What it now reserves.
        reserved: Capacity,
    },
    /// Nothing to do.
    None,
}

/// Everything this node runs, persisted in its data directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct World {
    /// The node's id on the ledger, once registered.
    pub node: Option<NodeId>,
    /// The grid the node follows (its chain id and genesis hash): a grid started anew
    /// has another, and nothing the world recorded of the old one holds there.
    #[serde(default)]
    pub chain: Option<String>,
    /// The last finalized height whose events were reconciled.
    pub followed_height: u64,
    /// Workloads by contract.
    pub workloads: BTreeMap<ContractId, Workload>,
    #[serde(skip)]
    dir: PathBuf,
    /// Where storage contracts keep their shards: on an SSD and on an HDD of the node's
    /// `--disk` paths (`None`: in their workload folder).
    #[serde(skip)]
    shard_roots: ShardRoots,
    /// Whether a whole resync from the ledger has completed since this world began. Until
    /// one has (a first start, the file removed to rebuild it, and every start after that
    /// until a resync finishes), the world may not yet name contracts whose folders are
    /// on disk, so no folder is removed as an orphan.
    #[serde(default)]
    pub synced: bool,
    /// The shard roots this node has made: one gone at a later start is a disk that is
    /// not mounted, even when no contract keeps shards on it yet.
    #[serde(default)]
    made_roots: BTreeSet<PathBuf>,
}

/// The folders storage contracts' shards go under, by the class their contract reserves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardRoots {
    /// For contracts that reserve SSD (`sru`).
    pub ssd: Option<PathBuf>,
    /// For contracts that reserve HDD (`hru`).
    pub hdd: Option<PathBuf>,
}

/// What a world file or workload folder operation failed on.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct WorldError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl WorldError {
    /// Whether the disk (or the quota on it) was full.
    pub fn is_disk_full(&self) -> bool {
        peergrid_core::fs::is_disk_full(&self.source)
    }

    pub(crate) fn new(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        WorldError {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A data directory kept for one grid, given a ledger of another.
#[derive(Debug, thiserror::Error)]
#[error(
    "the data directory {} belongs to grid {followed}, and the ledger is of grid {ledger} (chain id / genesis hash): check --ledger, or, to join that grid, start the node with a new --data-dir (move the old one away once the old grid's data is no longer needed)",
    data_dir.display()
)]
pub struct OtherChain {
    followed: String,
    ledger: String,
    data_dir: PathBuf,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorldError {
    let path = path.to_path_buf();
    move |source| WorldError { what, path, source }
}

/// Make a storage contract's folder on a disk, never its parents: the shard store takes
/// a missing folder for a disk that is not mounted.
fn make_shard_dir(dir: &Path) -> Result<(), WorldError> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(io_err("cannot create (is its disk mounted?)", dir)(e))
        }
        _ => Ok(()),
    }
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WorldError> {
    peergrid_core::fs::write_atomic(path, bytes).map_err(io_err("cannot write", path))
}

/// Removes a contract's folder, again if files appeared meanwhile: an app's runs may
/// still be writing in it as its contract ends.
fn remove_dir_all(path: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            done => return done,
        }
    }
}

/// Whether a workload keeps files on a disk of its class: a storage contract's shards,
/// a deployment's `/data`.
fn keeps_files(w: &Workload) -> bool {
    matches!(w.kind.as_str(), "storage" | "deployment")
}

impl World {
    fn file(dir: &Path) -> PathBuf {
        dir.join("world.json")
    }

    /// The folder of a workload's data.
    pub fn workload_dir(&self, contract: ContractId) -> PathBuf {
        self.dir.join("workloads").join(contract.to_string())
    }

    /// Where a storage contract's shards, or a deployment's files, live: where they were
    /// placed when it was provisioned ([`ShardsAt`]).
    pub fn shard_dir(&self, contract: ContractId) -> PathBuf {
        let at = self
            .workloads
            .get(&contract)
            .and_then(|w| w.shards_at.clone().or_else(|| self.place_shards(w)));
        match at {
            Some(ShardsAt::Disk(dir)) => dir,
            Some(ShardsAt::WorkloadFolder) | None => self.workload_dir(contract),
        }
    }

    /// Where a new storage workload's shards, or a deployment's `/data`, go: its folder
    /// on a disk of the class it reserves (HDD for `hru`, SSD for `sru`), else its
    /// workload folder.
    fn place_shards(&self, w: &Workload) -> Option<ShardsAt> {
        if !keeps_files(w) {
            return None;
        }
        Some(match self.shard_root(w) {
            Some(root) => ShardsAt::Disk(root.join(w.contract.to_string())),
            None => ShardsAt::WorkloadFolder,
        })
    }

    fn shard_root(&self, w: &Workload) -> Option<&PathBuf> {
        if !keeps_files(w) {
            return None;
        }
        if w.reserved.hru > 0 {
            self.shard_roots.hdd.as_ref()
        } else {
            self.shard_roots.ssd.as_ref()
        }
    }

    /// Place new storage contracts' shards under `roots` from now on, and note where the
    /// storage contracts of an older world file keep theirs.
    pub fn set_shard_roots(&mut self, roots: ShardRoots) -> Result<(), WorldError> {
        self.shard_roots = roots;
        let unplaced: Vec<(ContractId, ShardsAt)> = (self.workloads.values())
            .filter(|w| w.holds_capacity() && w.shards_at.is_none())
            .filter_map(|w| Some((w.contract, self.place_shards(w)?)))
            .collect();
        for (id, at) in &unplaced {
            if let Some(w) = self.workloads.get_mut(id) {
                w.shards_at = Some(at.clone());
            }
        }
        if !unplaced.is_empty() {
            self.save()?;
        }
        // After placing an older world's contracts (their folders are where the roots
        // say): a root that is gone while this node made it or contracts keep shards
        // under it is a disk that is not mounted. No new contract goes there, and its
        // contracts refuse puts.
        let roots = [self.shard_roots.ssd.take(), self.shard_roots.hdd.take()];
        let [ssd, hdd] = roots.map(|root| {
            let root = root?;
            if self.is_unmounted(&root) {
                tracing::error!(
                    folder = %root.display(),
                    "the folder of storage contracts' shards is gone: is its disk mounted? Until it is back their puts are refused and new contracts are not placed on it (if the disk was replaced and its data is lost, create the folder and restart)"
                );
                return None;
            }
            Some(root)
        });
        self.shard_roots = ShardRoots { ssd, hdd };
        let made: Vec<PathBuf> = [&self.shard_roots.ssd, &self.shard_roots.hdd]
            .into_iter()
            .flatten()
            .filter(|r| !self.made_roots.contains(*r))
            .cloned()
            .collect();
        if !made.is_empty() {
            for root in &made {
                std::fs::create_dir_all(root).map_err(io_err("cannot create", root))?;
            }
            self.made_roots.extend(made);
            self.save()?;
        }
        for root in [&self.shard_roots.ssd, &self.shard_roots.hdd]
            .into_iter()
            .flatten()
        {
            let entries = std::fs::read_dir(root).map_err(io_err("cannot list", root))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let backed = self.workloads.values().any(|w| {
                    w.holds_capacity()
                        && w.shards_at.as_ref() == Some(&ShardsAt::Disk(path.clone()))
                });
                if backed {
                    continue;
                }
                // The folder of a live storage contract whose recorded folder is gone: the
                // disk was mounted elsewhere, or its data copied to a new disk.
                let moved = (entry.file_name().to_str())
                    .and_then(|n| n.parse::<ContractId>().ok())
                    .filter(|id| {
                        self.workloads.get(id).is_some_and(|w| {
                            w.holds_capacity()
                                && matches!(&w.shards_at, Some(ShardsAt::Disk(old)) if !old.exists())
                        })
                    });
                if let Some(id) = moved {
                    tracing::warn!(contract = id, path = %path.display(), "a storage contract's shards are found in a new place; using it");
                    if let Some(w) = self.workloads.get_mut(&id) {
                        w.shards_at = Some(ShardsAt::Disk(path));
                    }
                    self.save()?;
                }
            }
        }
        let roots = [&self.shard_roots.ssd, &self.shard_roots.hdd];
        for w in self.workloads.values().filter(|w| w.holds_capacity()) {
            let Some(ShardsAt::Disk(dir)) = &w.shards_at else {
                continue;
            };
            if dir.exists() {
                continue;
            }
            if roots.iter().any(|r| r.as_deref() == dir.parent()) {
                // On a disk that is here: the folder was never made (a contract no shard
                // reached yet, from before folders were made on provisioning) or removed
                // by hand; its puts may land again.
                make_shard_dir(dir)?;
            } else {
                tracing::warn!(contract = w.contract, folder = %dir.display(), "a storage contract's shards are not here: mount the disk holding them; its puts are refused until then");
            }
        }
        Ok(())
    }

    /// Whether the shard root `root` is gone while this node made it or keeps shards
    /// under it: its disk is not mounted. Making it again would put shards on the disk
    /// beneath, hidden once the disk is back.
    pub fn is_unmounted(&self, root: &Path) -> bool {
        let holds_shards = self.workloads.values().any(|w| {
            w.holds_capacity()
                && matches!(&w.shards_at, Some(ShardsAt::Disk(p)) if p.starts_with(root))
        });
        (holds_shards || self.made_roots.contains(root)) && !root.exists()
    }

    /// Load the world from `dir` (an empty one the first time), and recreate the folders
    /// of its workloads that are missing.
    pub fn load(dir: &Path) -> Result<World, WorldError> {
        let file = Self::file(dir);
        let mut world: World = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WorldError {
                what: "corrupt world file (restore it from a backup, or remove it: the node then rebuilds it from the ledger and keeps the data of the contracts it still has)",
                path: file.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => World::default(),
            Err(e) => return Err(io_err("cannot read", &file)(e)),
        };
        world.dir = dir.to_path_buf();
        let root = dir.join("workloads");
        std::fs::create_dir_all(&root).map_err(io_err("cannot create", &root))?;
        for (id, w) in &world.workloads {
            if w.holds_capacity() {
                let d = world.workload_dir(*id);
                std::fs::create_dir_all(&d).map_err(io_err("cannot create", &d))?;
            }
        }
        world.recover_deployed();
        Ok(world)
    }

    /// The workload and shard folders no contract here backs (a crash between a
    /// contract's end and its folder's removal leaves one), except those of the contracts
    /// in `keep`: those the ledger lists on this node, and those not read yet. Asked once
    /// a resync of this run has read the ledger, never at load: a world file older than
    /// the folders (restored from a backup, or saved before a crash) would take the data
    /// of the contracts that came after it for orphans.
    pub fn orphans(&self, keep: &BTreeSet<ContractId>) -> Vec<PathBuf> {
        if !self.synced {
            return Vec::new();
        }
        let backed = |id: Option<ContractId>| {
            id.is_some_and(|id| {
                keep.contains(&id)
                    || self
                        .workloads
                        .get(&id)
                        .is_some_and(Workload::holds_capacity)
            })
        };
        let mut orphans = Vec::new();
        let workloads = self.dir.join("workloads");
        let roots = [&self.shard_roots.ssd, &self.shard_roots.hdd];
        for root in std::iter::once(&workloads).chain(roots.into_iter().flatten()) {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let id = (entry.file_name().to_str()).and_then(|n| n.parse::<ContractId>().ok());
                let in_use = self.workloads.values().any(|w| {
                    w.holds_capacity()
                        && w.shards_at.as_ref() == Some(&ShardsAt::Disk(path.clone()))
                });
                if !in_use && !backed(id) {
                    orphans.push(path);
                }
            }
        }
        orphans
    }

    /// Make each deployment's `deployed` name the `deployment.bin` its folder holds. A
    /// deployment is written, then the world saved: a crash or a full disk between the two
    /// leaves the new file under the old hash, and the node would run it as the old one.
    fn recover_deployed(&mut self) {
        let dirs: Vec<(ContractId, PathBuf)> = (self.workloads.iter())
            .filter(|(_, w)| w.kind == "deployment" && w.deployed.is_some())
            .map(|(id, _)| (*id, self.workload_dir(*id).join("deployment.bin")))
            .collect();
        for (id, file) in dirs {
            let held = match std::fs::read(&file) {
                Ok(bytes) => Some(Hash::of(&bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                // Unreadable now: the start says so rather than the record being lost.
                Err(_) => continue,
            };
            if let Some(w) = self.workloads.get_mut(&id)
                && w.deployed != held
            {
                tracing::warn!(contract = id, file = %file.display(), "the deployment on disk is not the one recorded (a crash between writing it and saving the world): running what is on disk");
                w.deployed = held;
            }
        }
    }

    /// Follow the ledger of grid `chain` from now on. A world that followed another
    /// chain is refused, not dropped: its folders hold the old chain's data, which a
    /// ledger pointed at by mistake must not cost, and whose contract ids a new chain
    /// would reuse.
    pub fn follow_chain(&mut self, chain: &str, data_dir: &Path) -> Result<(), OtherChain> {
        match &self.chain {
            Some(old) if old != chain => Err(OtherChain {
                followed: old.clone(),
                ledger: chain.to_string(),
                data_dir: data_dir.to_path_buf(),
            }),
            _ => {
                self.chain = Some(chain.to_string());
                Ok(())
            }
        }
    }

    /// Persist the world atomically.
    pub fn save(&self) -> Result<(), WorldError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| WorldError {
            what: "cannot encode",
            path: Self::file(&self.dir),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&Self::file(&self.dir), &bytes)
    }

    /// Capacity held by workloads other than `except`.
    pub fn used(&self, except: Option<ContractId>) -> Capacity {
        self.workloads
            .values()
            .filter(|w| w.holds_capacity() && Some(w.contract) != except)
            .fold(Capacity::ZERO, |acc, w| {
                acc.checked_add(&w.reserved).unwrap_or(acc)
            })
    }

    /// Apply `action` for `contract`: folders first on creation, world first on removal.
    pub fn apply(&mut self, contract: ContractId, action: Action) -> Result<(), WorldError> {
        match action {
            Action::None => return Ok(()),
            Action::Provision(mut w) => {
                if w.holds_capacity() {
                    let d = self.workload_dir(contract);
                    std::fs::create_dir_all(&d).map_err(io_err("cannot create", &d))?;
                    w.shards_at = self.place_shards(&w);
                    if let Some(ShardsAt::Disk(dir)) = &w.shards_at {
                        make_shard_dir(dir)?;
                    }
                }
                self.workloads.insert(contract, w);
                self.save()?;
            }
            Action::Pause | Action::Resume => {
                if let Some(w) = self.workloads.get_mut(&contract) {
                    w.state = if action == Action::Pause {
                        WorkloadState::Paused
                    } else {
                        WorkloadState::Running
                    };
                }
                self.save()?;
            }
            Action::Refuse(reason) => {
                let shards = self.shard_dir(contract);
                if let Some(w) = self.workloads.get_mut(&contract) {
                    w.state = WorkloadState::Refused { reason };
                }
                self.save()?;
                if shards != self.workload_dir(contract) {
                    let _ = std::fs::remove_dir_all(shards);
                }
                let d = self.workload_dir(contract);
                let _ = std::fs::remove_dir_all(d);
            }
            Action::Update {
                deployment_hash,
                reserved,
            } => {
                if let Some(w) = self.workloads.get_mut(&contract) {
                    w.deployment_hash = deployment_hash;
                    w.reserved = reserved;
                }
                self.save()?;
            }
            Action::Remove => {
                let shards = self.shard_dir(contract);
                self.workloads.remove(&contract);
                self.save()?;
                if shards != self.workload_dir(contract) {
                    match remove_dir_all(&shards) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("cannot remove", &shards)(e)),
                    }
                }
                let d = self.workload_dir(contract);
                match remove_dir_all(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("cannot remove", &d)(e)),
                }
            }
        }
        Ok(())
    }
}

/// What must change here so that this node matches `contract` as the ledger shows it.
/// `capacity` is what this node registered.
pub fn plan(world: &World, me: NodeId, capacity: &Capacity, contract: &Contract) -> Action {
    let local = world.workloads.get(&contract.id);
    if contract.node != Some(me) {
        // Not ours (any more): never act on it; drop anything we had.
        return if local.is_some() {
            Action::Remove
        } else {
            Action::None
        };
    }
    let paused = match contract.state {
        ContractState::Deleted { .. } => {
            return if local.is_some() {
                Action::Remove
            } else {
                Action::None
            };
        }
        ContractState::GracePeriod { .. } => true,
        ContractState::Created => false,
    };
    match local {
        Some(w) if w.holds_capacity() => {
            if w.deployment_hash != contract.deployment_hash() || w.reserved != contract.reserved {
                return Action::Update {
                    deployment_hash: contract.deployment_hash(),
                    reserved: contract.reserved,
                };
            }
            match (&w.state, paused) {
                (WorkloadState::Running, true) => Action::Pause,
                (WorkloadState::Paused, false) => Action::Resume,
                _ => Action::None,
            }
        }
        // New, or refused before: check again (capacity may have been freed).
        _ => {
            let free = capacity.saturating_sub(&world.used(Some(contract.id)));
            if !contract.reserved.fits_within(&free) {
                let reason = format!(
                    "needs {} but this node has {} free",
                    contract.reserved, free
                );
                return match local {
                    Some(Workload {
                        state: WorkloadState::Refused { reason: old },
                        ..
                    }) if *old == reason => Action::None,
                    Some(_) => Action::Refuse(reason),
                    None => {
                        Action::Provision(workload(contract, WorkloadState::Refused { reason }))
                    }
                };
            }
            let state = if paused {
                WorkloadState::Paused
            } else {
                WorkloadState::Running
            };
            Action::Provision(workload(contract, state))
        }
    }
}

fn workload(contract: &Contract, state: WorkloadState) -> Workload {
    let kind = match contract.spec {
        ContractSpec::Deployment { .. } => "deployment",
        ContractSpec::Storage { .. } => "storage",
        ContractSpec::Rent { .. } => "rent",
        ContractSpec::Name { .. } => "name",
    };
    Workload {
        contract: contract.id,
        kind: kind.into(),
        owner: contract.owner,
        reserved: contract.reserved,
        deployment_hash: contract.deployment_hash(),
        deployed: None,
        state,
        shards_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_client::DeleteReason;
    use peergrid_core::Keypair;

    const ME: NodeId = 7;

    fn capacity() -> Capacity {
        Capacity {
            cru: 4,
            mru: 8 << 30,
            sru: 100 << 30,
            hru: 0,
        }
    }

    fn contract(id: ContractId, node: NodeId, mru: u64, state: ContractState) -> Contract {
        let resources = Capacity {
            cru: 1,
            mru,
            sru: 1 << 30,
            hru: 0,
        };
        Contract {
            id,
            owner: Keypair::from_seed([1; 32]).account(),
            spec: ContractSpec::Deployment {
                node,
                deployment_hash: Hash::of(b"deployment"),
                resources,
                public_ips: 0,
            },
            node: Some(node),
            reserved: resources,
            public_ips: Vec::new(),
            state,
            created_ms: 0,
            billed_until_ms: 0,
            next_bill_ms: 0,
            unbilled_nu_bytes: 0,
            node_down_counter_ms: 0,
            carry_pusd: 0,
        }
    }

    fn world() -> (tempfile::TempDir, World) {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = World::load(dir.path()).expect("load");
        (dir, w)
    }

    fn reconcile(w: &mut World, c: &Contract) -> Action {
        let a = plan(w, ME, &capacity(), c);
        w.apply(c.id, a.clone()).expect("apply");
        a
    }

    #[test]
    fn a_restart_runs_the_deployment_the_folder_holds() {
        let (dir, mut w) = world();
        let c = contract(1, ME, 1 << 30, ContractState::Created);
        reconcile(&mut w, &c);
        let file = w.workload_dir(1).join("deployment.bin");
        std::fs::write(&file, b"old").expect("write");
        if let Some(x) = w.workloads.get_mut(&1) {
            x.deployed = Some(Hash::of(b"old"));
        }
        w.save().expect("save");
        // The new deployment written, then a crash before the world was saved.
        std::fs::write(&file, b"new").expect("write");
        let w = World::load(dir.path()).expect("load");
        assert_eq!(w.workloads[&1].deployed, Some(Hash::of(b"new")));
        std::fs::remove_file(&file).expect("rm");
        let w = World::load(dir.path()).expect("load");
        assert_eq!(
            w.workloads[&1].deployed, None,
            "nothing held, nothing to run"
        );
    }

    #[test]
    fn the_life_of_a_contract_is_followed_and_survives_a_restart() {
        let (dir, mut w) = world();
        let c = contract(1, ME, 1 << 30, ContractState::Created);
        assert!(matches!(reconcile(&mut w, &c), Action::Provision(_)));
        assert!(w.workload_dir(1).is_dir());
        assert_eq!(reconcile(&mut w, &c), Action::None, "idempotent");

        let grace = contract(1, ME, 1 << 30, ContractState::GracePeriod { since_ms: 5 });
        assert_eq!(reconcile(&mut w, &grace), Action::Pause);
        assert!(w.workload_dir(1).is_dir(), "data is kept in grace");

        let restored = World::load(dir.path()).expect("reload");
        assert_eq!(restored.workloads[&1].state, WorkloadState::Paused);

        assert_eq!(reconcile(&mut w, &c), Action::Resume);
        let deleted = contract(
            1,
            ME,
            1 << 30,
            ContractState::Deleted {
                at_ms: 9,
                reason: DeleteReason::CanceledByOwner,
            },
        );
        assert_eq!(reconcile(&mut w, &deleted), Action::Remove);
        assert!(!w.workload_dir(1).exists());
        assert!(
            World::load(dir.path())
                .expect("reload")
                .workloads
                .is_empty()
        );
    }

    #[test]
    fn an_update_of_resources_alone_updates_what_the_workload_reserves() {
        let (_dir, mut w) = world();
        let c = contract(1, ME, 1 << 30, ContractState::Created);
        reconcile(&mut w, &c);
        let bigger = contract(1, ME, 2 << 30, ContractState::Created);
        assert!(matches!(reconcile(&mut w, &bigger), Action::Update { .. }));
        assert_eq!(w.workloads[&1].reserved.mru, 2 << 30);
        assert_eq!(w.used(None).mru, 2 << 30);
        assert_eq!(reconcile(&mut w, &bigger), Action::None, "idempotent");
    }

    #[test]
    fn a_contract_for_another_node_is_never_provisioned() {
        let (_dir, mut w) = world();
        let c = contract(2, ME + 1, 1 << 30, ContractState::Created);
        assert_eq!(reconcile(&mut w, &c), Action::None);
        assert!(w.workloads.is_empty());
        assert!(!w.workload_dir(2).exists());
    }

    #[test]
    fn work_beyond_free_capacity_is_refused_with_the_reason_and_retried_later() {
        let (_dir, mut w) = world();
        let big = contract(1, ME, 6 << 30, ContractState::Created);
        let other = contract(2, ME, 4 << 30, ContractState::Created);
        assert!(matches!(reconcile(&mut w, &big), Action::Provision(_)));
        match reconcile(&mut w, &other) {
            Action::Provision(Workload {
                state: WorkloadState::Refused { reason },
                ..
            }) => assert!(reason.contains("free"), "{reason}"),
            a => panic!("expected a refusal, got {a:?}"),
        }
        assert!(!w.workload_dir(2).exists(), "nothing provisioned");
        assert_eq!(w.used(None).mru, 6 << 30, "a refusal holds no capacity");
        // The big one goes; the refused one now fits.
        let gone = contract(
            1,
            ME,
            6 << 30,
            ContractState::Deleted {
                at_ms: 1,
                reason: DeleteReason::CanceledByOwner,
            },
        );
        reconcile(&mut w, &gone);
        assert!(matches!(reconcile(&mut w, &other), Action::Provision(_)));
        assert_eq!(w.workloads[&2].state, WorkloadState::Running);
    }

    #[test]
    fn an_orphan_folder_from_a_crash_is_removed_once_the_ledger_was_read() {
        let (dir, w) = world();
        std::fs::create_dir_all(w.workload_dir(42)).expect("mkdir");
        std::fs::create_dir_all(w.workload_dir(43)).expect("mkdir");
        let fresh = World::load(dir.path()).expect("load");
        assert_eq!(
            fresh.orphans(&BTreeSet::new()),
            Vec::<PathBuf>::new(),
            "before a resync from the ledger has finished once nothing is known to be an orphan"
        );
        assert!(fresh.workload_dir(42).exists());
        let mut w = w;
        w.synced = true;
        w.save().expect("save");
        let w = World::load(dir.path()).expect("load");
        assert!(
            w.workload_dir(42).exists(),
            "never at load: the world file may be older than the folders"
        );
        // The ledger lists 43 on this node: a world file older than it (restored from a
        // backup) does not name it, and its data is kept for the resync to find.
        assert_eq!(w.orphans(&BTreeSet::from([43])), vec![w.workload_dir(42)]);
    }

    #[test]
    fn an_apps_files_go_to_the_ssd_and_leave_with_its_contract() {
        let (_dir, mut w) = world();
        let disks = tempfile::tempdir().expect("disks");
        w.set_shard_roots(ShardRoots {
            ssd: Some(disks.path().join("ssd")),
            hdd: Some(disks.path().join("hdd")),
        })
        .expect("roots");
        let app = Workload {
            contract: 7,
            kind: "deployment".into(),
            owner: Keypair::from_seed([1; 32]).account(),
            reserved: Capacity {
                cru: 1,
                mru: 1 << 27,
                sru: 1 << 28,
                hru: 0,
            },
            deployment_hash: Some(Hash::of(b"d")),
            deployed: None,
            state: WorkloadState::Running,
            shards_at: None,
        };
        w.apply(7, Action::Provision(app)).expect("provision");
        assert_eq!(w.shard_dir(7), disks.path().join("ssd/7"));
        assert!(w.shard_dir(7).is_dir(), "made when provisioned");
        std::fs::create_dir_all(w.shard_dir(7).join("data")).expect("data");
        // Paused in its grace period: kept.
        w.apply(7, Action::Pause).expect("pause");
        assert!(disks.path().join("ssd/7/data").is_dir());
        w.apply(7, Action::Remove).expect("remove");
        assert!(
            !disks.path().join("ssd/7").exists(),
            "gone with its contract"
        );
    }

    #[test]
    fn shards_go_to_a_disk_of_their_class_and_leave_with_their_contract() {
        let (dir, mut w) = world();
        let disks = tempfile::tempdir().expect("disks");
        let roots = ShardRoots {
            ssd: Some(disks.path().join("ssd")),
            hdd: Some(disks.path().join("hdd")),
        };
        let storage = |contract, reserved| Workload {
            contract,
            kind: "storage".into(),
            owner: Keypair::from_seed([1; 32]).account(),
            reserved,
            deployment_hash: None,
            deployed: None,
            state: WorkloadState::Running,
            shards_at: None,
        };
        let on_hdd = Capacity {
            hru: 1 << 30,
            ..Capacity::ZERO
        };
        let on_ssd = Capacity {
            sru: 1 << 30,
            ..Capacity::ZERO
        };
        // Contract 3 was provisioned before the node had any disk of its class.
        w.apply(3, Action::Provision(storage(3, on_ssd)))
            .expect("provision");
        assert_eq!(w.shard_dir(3), w.workload_dir(3));
        w.set_shard_roots(roots.clone()).expect("roots");
        w.apply(1, Action::Provision(storage(1, on_hdd)))
            .expect("provision");
        w.apply(2, Action::Provision(storage(2, on_ssd)))
            .expect("provision");
        assert_eq!(w.shard_dir(1), disks.path().join("hdd/1"));
        assert_eq!(w.shard_dir(2), disks.path().join("ssd/2"));
        assert_eq!(
            w.shard_dir(3),
            w.workload_dir(3),
            "a disk added later does not strand the shards kept before it"
        );
        // A folder left by a contract that ended while the node was down.
        std::fs::create_dir_all(disks.path().join("hdd/9/shards")).expect("orphan");
        w.synced = true;
        w.save().expect("save");
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert!(
            disks.path().join("hdd/9").exists(),
            "kept until the ledger is read"
        );
        assert_eq!(
            w.orphans(&BTreeSet::new()),
            vec![disks.path().join("hdd/9")],
            "the orphan, and only it"
        );
        assert!(w.shard_dir(1).exists() && w.shard_dir(2).exists());
        std::fs::create_dir_all(w.shard_dir(1).join("shards")).expect("shards");
        std::fs::write(w.shard_dir(1).join("shards/x"), b"shard").expect("write");

        // The operator swaps the disks' classes: every contract keeps its folder and data.
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(ShardRoots {
            ssd: Some(disks.path().join("hdd")),
            hdd: Some(disks.path().join("ssd")),
        })
        .expect("roots");
        assert_eq!(w.shard_dir(1), disks.path().join("hdd/1"));
        assert!(disks.path().join("hdd/1/shards/x").exists(), "data kept");
        assert_eq!(w.shard_dir(2), disks.path().join("ssd/2"));

        // The HDD is mounted elsewhere: its contract's folder is found there, not removed.
        let moved = disks.path().join("hdd-moved");
        std::fs::rename(disks.path().join("hdd"), &moved).expect("remount");
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(ShardRoots {
            ssd: Some(disks.path().join("ssd")),
            hdd: Some(moved.clone()),
        })
        .expect("roots");
        assert_eq!(w.shard_dir(1), moved.join("1"));
        assert!(moved.join("1/shards/x").exists(), "data kept");
        std::fs::rename(&moved, disks.path().join("hdd")).expect("back");
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert_eq!(w.shard_dir(1), disks.path().join("hdd/1"), "and back");

        // The HDD is not mounted at a start: nothing is made in its place, and a new HDD
        // contract goes to its workload folder, not onto the disk beneath.
        let unmounted = disks.path().join("hdd-unmounted");
        std::fs::rename(disks.path().join("hdd"), &unmounted).expect("unmount");
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert!(
            !disks.path().join("hdd").exists(),
            "nothing made in its place"
        );
        assert_eq!(
            w.shard_dir(1),
            disks.path().join("hdd/1"),
            "kept where its data is"
        );
        w.apply(4, Action::Provision(storage(4, on_hdd)))
            .expect("provision");
        assert_eq!(w.shard_dir(4), w.workload_dir(4));
        std::fs::rename(&unmounted, disks.path().join("hdd")).expect("mount");
        let mut w = World::load(dir.path()).expect("restart");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert!(disks.path().join("hdd/1/shards/x").exists(), "data kept");
        w.apply(5, Action::Provision(storage(5, on_hdd)))
            .expect("provision");
        assert!(
            disks.path().join("hdd/5").is_dir(),
            "a contract's folder is made when it is provisioned"
        );

        w.apply(1, Action::Remove).expect("remove");
        assert!(
            !disks.path().join("hdd/1").exists(),
            "its shards left with it"
        );

        // The world file removed to resync: nothing the node had is an orphan yet.
        std::fs::create_dir_all(disks.path().join("ssd/2/shards")).expect("shards");
        std::fs::write(disks.path().join("ssd/2/shards/y"), b"shard").expect("write");
        std::fs::remove_file(dir.path().join("world.json")).expect("rm world");
        let mut fresh = World::load(dir.path()).expect("fresh");
        fresh.set_shard_roots(roots).expect("roots");
        assert!(
            disks.path().join("ssd/2/shards/y").exists(),
            "a resync from the ledger finds its data again"
        );
        assert!(fresh.workload_dir(3).exists(), "workload folders kept too");
    }

    #[test]
    fn a_disk_whose_folder_was_made_once_is_not_made_again_nor_offered_while_unmounted() {
        use crate::probe::{DiskClass, DiskSpec, Probe, Reservation, probe};
        let (dir, mut w) = world();
        let disks = tempfile::tempdir().expect("disks");
        let hdd = disks.path().join("hdd");
        std::fs::create_dir_all(&hdd).expect("mount point");
        let hdd = hdd.canonicalize().expect("canonical");
        let root = hdd.join("peergrid-shards");
        let probed = |w: &World| -> Probe {
            let spec = DiskSpec {
                path: hdd.clone(),
                class: Some(DiskClass::Hdd),
                max_bytes: None,
            };
            probe(
                &[spec],
                &Reservation::default(),
                |p| w.is_unmounted(&p.join("peergrid-shards")),
                |_| 0,
            )
            .expect("probe")
        };
        let roots = ShardRoots {
            ssd: None,
            hdd: Some(root.clone()),
        };
        let p = probed(&w);
        assert!(p.unmounted.is_empty() && p.offered.hru > 0, "a first start");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert!(root.is_dir());

        // Unmounted before any contract came: the empty mount point is another disk.
        std::fs::remove_dir_all(&hdd).expect("unmount");
        std::fs::create_dir_all(&hdd).expect("empty mount point");
        let mut w = World::load(dir.path()).expect("restart");
        let p = probed(&w);
        assert_eq!(p.unmounted, vec![hdd.clone()], "the disk is named");
        assert!(p.disks.is_empty() && p.offered.hru == 0, "{p:?}");
        w.set_shard_roots(roots.clone()).expect("roots");
        assert!(!root.exists(), "nothing made in its place");
        let on_hdd = Capacity {
            hru: 1 << 30,
            ..Capacity::ZERO
        };
        w.apply(
            1,
            Action::Provision(Workload {
                contract: 1,
                kind: "storage".into(),
                owner: Keypair::from_seed([1; 32]).account(),
                reserved: on_hdd,
                deployment_hash: None,
                deployed: None,
                state: WorkloadState::Running,
                shards_at: None,
            }),
        )
        .expect("provision");
        assert_eq!(w.shard_dir(1), w.workload_dir(1), "not on the disk beneath");

        // The operator replaced the disk and made the folder, as the error says.
        std::fs::create_dir_all(&root).expect("made by hand");
        let mut w = World::load(dir.path()).expect("restart");
        let p = probed(&w);
        assert!(p.unmounted.is_empty() && p.offered.hru > 0, "{p:?}");
        w.set_shard_roots(roots).expect("roots");
    }

    #[test]
    fn a_world_of_another_grid_is_refused_with_what_to_do() {
        use peergrid_storage::format::grid_id;
        let first = grid_id("peergrid", &peergrid_core::Hash::of(b"genesis a"));
        // Started anew under the same chain id: another genesis, another grid.
        let anew = grid_id("peergrid", &peergrid_core::Hash::of(b"genesis b"));
        let (dir, mut w) = world();
        w.follow_chain(&first, dir.path()).expect("first grid");
        let c = contract(1, ME, 1 << 30, ContractState::Created);
        assert!(matches!(reconcile(&mut w, &c), Action::Provision(_)));
        let mut w = World::load(dir.path()).expect("restart");
        w.follow_chain(&first, dir.path()).expect("same grid");
        let e = w.follow_chain(&anew, dir.path()).expect_err("another grid");
        let text = e.to_string();
        assert!(
            text.contains(&first) && text.contains("--data-dir"),
            "{text}"
        );
        assert!(w.workloads.contains_key(&1), "nothing of the old grid lost");
    }

    #[test]
    fn a_corrupt_world_file_is_an_error_that_says_what_to_do() {
        let (dir, _w) = world();
        std::fs::write(dir.path().join("world.json"), b"{not json").expect("write");
        let e = World::load(dir.path()).expect_err("corrupt");
        assert!(e.to_string().contains("rebuilds it from the ledger"), "{e}");
    }
}
