//! What this machine offers the grid: cores, memory, and the disks the farmer gave it.
//!
//! The node keeps part of the machine for itself (its own state, the OS), so what it
//! registers is the machine minus [`Reservation`]. Disks are counted once each, even
//! when several given paths live on the same file system.

use std::path::{Path, PathBuf};

use peergrid_core::Capacity;
use peergrid_core::capacity::{GIB, Size};
use serde::{Deserialize, Serialize};
use sysinfo::{DiskKind, Disks, System};

/// Whether a disk counts as SSD (sru) or HDD (hru).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskClass {
    /// Solid state: counted in `sru`.
    Ssd,
    /// Spinning: counted in `hru`.
    Hdd,
}

/// A path the farmer gives the node, and optionally how to count its disk.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DiskSpec {
    /// A directory on the disk (a mount point or any folder on it).
    pub path: PathBuf,
    /// Overrides the kind the OS reports (containers and VMs often report none).
    pub class: Option<DiskClass>,
    /// Count at most this many bytes of it (a disk shared with other uses).
    pub max_bytes: Option<u64>,
}

impl std::str::FromStr for DiskSpec {
    type Err = String;

    /// `PATH[:ssd|:hdd][:MAX]`, e.g. `/data:ssd:500GiB` or `/mnt/hdd1`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let path = parts.next().filter(|p| !p.is_empty()).ok_or_else(|| {
            format!("{s:?}: expected PATH[:ssd|:hdd][:SIZE], like /data:ssd:500GiB")
        })?;
        let mut spec = DiskSpec {
            path: PathBuf::from(path),
            class: None,
            max_bytes: None,
        };
        for part in parts {
            match part.to_ascii_lowercase().as_str() {
                "ssd" => spec.class = Some(DiskClass::Ssd),
                "hdd" => spec.class = Some(DiskClass::Hdd),
                size => {
                    let max = size.parse::<Size>().map(Size::bytes).map_err(|e| {
                        format!(
                            "{s:?}: {part:?} is neither a disk class (ssd or hdd) nor a size \
                             ({e}); expected PATH[:ssd|:hdd][:SIZE], like /data:ssd:500GiB"
                        )
                    })?;
                    if max == 0 {
                        return Err(format!(
                            "{s:?}: a size of {part} offers nothing of the disk; give the most \
                             to offer, like /data:ssd:500GiB, or leave it out to offer all it has"
                        ));
                    }
                    spec.max_bytes = Some(max);
                }
            }
        }
        Ok(spec)
    }
}

/// What the node keeps for itself, so its own work never starves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Memory kept: a tenth of the machine, at least this much.
    pub memory_min_bytes: u64,
    /// Disk kept on every disk for the node's own state, in percent.
    pub disk_percent: u8,
    /// Bytes that must stay free on every disk, whatever the contracts hold: data for
    /// others (shards, pointers, deployments, components) is refused beyond it, so the
    /// node's own state and logs always find room. `None`: 1 % of the disk, at most
    /// 256 MiB ([`peergrid_core::fs::DiskReserve`]).
    #[serde(default)]
    pub disk_free_min_bytes: Option<u64>,
}

impl Reservation {
    /// The free space the node keeps on every disk.
    pub fn disk_reserve(&self) -> peergrid_core::fs::DiskReserve {
        peergrid_core::fs::DiskReserve {
            free_min_bytes: self.disk_free_min_bytes,
        }
    }
}

impl Default for Reservation {
    /// A tenth of memory (at least 512 MiB) and 5 % of every disk, of which 1 % (at
    /// most 256 MiB) is kept free even when something else fills the disk; no core is
    /// kept, as cores are time-shared and the node's own work is light.
    fn default() -> Self {
        Reservation {
            memory_min_bytes: 512 << 20,
            disk_percent: 5,
            disk_free_min_bytes: None,
        }
    }
}

/// One disk as probed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbedDisk {
    /// Its mount point.
    pub mount: PathBuf,
    /// The folder given with `--disk` (canonical): where the node writes on it.
    #[serde(default)]
    pub path: PathBuf,
    /// Its file system's size.
    pub total_bytes: u64,
    /// Free on it when probed, for the node (root's reserved blocks left out).
    #[serde(default)]
    pub available_bytes: u64,
    /// What the node's shards already hold on it.
    #[serde(default)]
    pub held_bytes: u64,
    /// How it is counted.
    pub class: DiskClass,
    /// What the grid gets of it.
    pub offered_bytes: u64,
}

/// The machine as probed, and what it offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Logical cores.
    pub cores: u64,
    /// Physical memory.
    pub memory_bytes: u64,
    /// Disks counted.
    pub disks: Vec<ProbedDisk>,
    /// `--disk` paths (canonical) left out as not mounted: their folder is there, the
    /// disk is not.
    #[serde(default)]
    pub unmounted: Vec<PathBuf>,
    /// What is registered on the ledger.
    pub offered: Capacity,
}

/// Probe this machine: cores, memory and the disks under `disks`, minus `reserve`. A disk
/// whose (canonical) path `unmounted` says is a mount point without its disk is left out
/// before disks are counted once each: its path is on the file system beneath. `held`
/// gives the bytes the node's own shards take under a disk's (canonical) path: a disk
/// offers what is free on it plus those, never space that other files already use.
pub fn probe(
    disks: &[DiskSpec],
    reserve: &Reservation,
    unmounted: impl Fn(&Path) -> bool,
    held: impl Fn(&Path) -> u64,
) -> Result<Probe, String> {
    let mut system = System::new();
    system.refresh_memory();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1);
    let memory_bytes = system.total_memory();
    let listing = Disks::new_with_refreshed_list();
    let kinds: Vec<(PathBuf, DiskKind)> = (listing.iter())
        .map(|d| (d.mount_point().to_path_buf(), d.kind()))
        .collect();
    let device_of = |mount: &Path| {
        (listing.iter())
            .find(|d| d.mount_point() == mount)
            .map(|d| d.name().to_string_lossy().into_owned())
    };
    let mut probed: Vec<ProbedDisk> = Vec::new();
    // Each disk counted, with the path that counted it.
    let mut counted: Vec<(String, PathBuf)> = Vec::new();
    let mut left_out = Vec::new();
    for spec in disks {
        let path = spec.path.canonicalize().map_err(|e| {
            format!(
                "disk path {} cannot be used: {e}; if it is on a disk, is that disk mounted? Otherwise create it or give another with --disk",
                spec.path.display()
            )
        })?;
        if unmounted(&path) {
            left_out.push(path);
            continue;
        }
        // Checked before anything is offered: the node would register the disk, then
        // fail to make its shard folder in a file.
        if !path.is_dir() {
            return Err(format!(
                "disk path {} is not a folder: give a folder on the disk (or its mount point) with --disk",
                spec.path.display()
            ));
        }
        let cannot =
            |e: std::io::Error| format!("cannot measure disk path {}: {e}", path.display());
        let space = peergrid_core::fs::disk_space(&path).map_err(cannot)?;
        let total = space.total_bytes;
        // The longest mount the OS lists above the path is its file system when it
        // measures the same (a folder, or a btrfs subvolume, on it). The list leaves some
        // out (tmpfs, network file systems, mounts under /run): such a path is measured
        // where it is, its mount point found by device, its kind unknown.
        let listed = mount_of(&path, &kinds).filter(|(m, _)| {
            peergrid_core::fs::disk_space(m).is_ok_and(|s| s.total_bytes == total)
        });
        let (mount, kind, device) = match listed {
            Some((m, kind)) => (m.clone(), *kind, device_of(m)),
            None => (
                mount_point(&path).map_err(cannot)?,
                DiskKind::Unknown(-1),
                None,
            ),
        };
        // Two paths on one disk: count the disk once.
        let key = disk_key(&mount, device.as_deref());
        if let Some((_, first)) = counted.iter().find(|(k, _)| *k == key) {
            tracing::warn!(
                path = %spec.path.display(),
                counted_as = %first.display(),
                "this --disk path is on the same disk as an earlier one: the disk is counted once, with the earlier path's class and size limit; give one path per disk"
            );
            continue;
        }
        counted.push((key, path.clone()));
        let class = spec.class.unwrap_or(match kind {
            DiskKind::SSD => DiskClass::Ssd,
            // Unknown kinds (common in VMs and containers) are counted as HDD, the
            // cheaper class, so a node never claims more than it can serve.
            _ => DiskClass::Hdd,
        });
        let kept = total / 100 * u64::from(reserve.disk_percent);
        let held_bytes = held(&path);
        // Writes beyond the free reserve are refused (`DiskReserve::check`): offering
        // them would sell space a contract then cannot use.
        let usable = (space.available_bytes.saturating_add(held_bytes))
            .saturating_sub(reserve.disk_reserve().reserve_bytes(total));
        let offered = total
            .saturating_sub(kept)
            .min(usable)
            .min(spec.max_bytes.unwrap_or(u64::MAX));
        probed.push(ProbedDisk {
            mount,
            path,
            total_bytes: total,
            available_bytes: space.available_bytes,
            held_bytes,
            class,
            offered_bytes: offered,
        });
    }
    let memory_kept = (memory_bytes / 10).max(reserve.memory_min_bytes);
    let mut offered = Capacity {
        cru: cores,
        mru: memory_bytes.saturating_sub(memory_kept),
        sru: 0,
        hru: 0,
    };
    for d in &probed {
        match d.class {
            DiskClass::Ssd => offered.sru = offered.sru.saturating_add(d.offered_bytes),
            DiskClass::Hdd => offered.hru = offered.hru.saturating_add(d.offered_bytes),
        }
    }
    if offered.mru < GIB / 2 {
        return Err(format!(
            "this machine has {} of memory; a node needs more than {} after its own reservation",
            peergrid_core::capacity::human_bytes(memory_bytes),
            peergrid_core::capacity::human_bytes(GIB / 2)
        ));
    }
    Ok(Probe {
        cores,
        memory_bytes,
        disks: probed,
        unmounted: left_out,
        offered,
    })
}

/// What tells disks apart: the block device when the mount names one (two bind mounts,
/// or two mounted btrfs subvolumes, of one disk name the same), else the mount point
/// (tmpfs, network and pool file systems name no device of their own).
fn disk_key(mount: &Path, device: Option<&str>) -> String {
    match device {
        Some(dev) if dev.starts_with("/dev/") => dev.to_string(),
        _ => mount.to_string_lossy().into_owned(),
    }
}

/// The mount holding `path`: the longest listed mount point that is a prefix of it.
fn mount_of<'a>(path: &Path, mounts: &'a [(PathBuf, DiskKind)]) -> Option<&'a (PathBuf, DiskKind)> {
    mounts
        .iter()
        .filter(|(m, _)| path.starts_with(m))
        .max_by_key(|(m, _)| m.components().count())
}

/// The mount point of the file system holding `path` (canonical): the highest folder
/// above it on the same device.
fn mount_point(path: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(path)?.dev();
    let mut at = path;
    while let Some(parent) = at.parent() {
        if std::fs::metadata(parent)?.dev() != device {
            break;
        }
        at = parent;
    }
    Ok(at.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs_parse_with_class_and_cap() {
        let d: DiskSpec = "/data:ssd:500GiB".parse().expect("valid");
        assert_eq!(d.path, PathBuf::from("/data"));
        assert_eq!(d.class, Some(DiskClass::Ssd));
        assert_eq!(d.max_bytes, Some(500 << 30));
        let d: DiskSpec = "/mnt/hdd1".parse().expect("valid");
        assert_eq!((d.class, d.max_bytes), (None, None));
        assert!("".parse::<DiskSpec>().is_err());
        let e = "/data:fast"
            .parse::<DiskSpec>()
            .expect_err("neither class nor size");
        assert!(
            e.contains("disk class (ssd or hdd)") && e.contains("PATH[:ssd|:hdd][:SIZE]"),
            "{e}"
        );
        let e = "/data:ssd:0".parse::<DiskSpec>().expect_err("nothing");
        assert!(
            e.contains("offers nothing") && e.contains("leave it out"),
            "{e}"
        );
    }

    #[test]
    fn a_disk_path_that_is_a_file_is_refused_before_anything_is_offered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("passwd");
        std::fs::write(&file, b"not a folder").expect("file");
        let spec = DiskSpec {
            path: file,
            class: Some(DiskClass::Ssd),
            max_bytes: None,
        };
        let err = probe(&[spec], &Reservation::default(), |_| false, |_| 0)
            .expect_err("a file offered as a disk");
        assert!(err.contains("is not a folder"), "{err}");
    }

    #[test]
    fn mounts_of_one_block_device_are_one_disk() {
        let (a, b) = (Path::new("/srv/d1"), Path::new("/srv/d2"));
        assert_eq!(
            disk_key(a, Some("/dev/sda1")),
            disk_key(b, Some("/dev/sda1"))
        );
        assert_ne!(
            disk_key(a, Some("/dev/sda1")),
            disk_key(b, Some("/dev/sdb1"))
        );
        assert_ne!(disk_key(a, Some("tmpfs")), disk_key(b, Some("tmpfs")));
        assert_ne!(disk_key(a, None), disk_key(b, None));
    }

    #[test]
    fn two_bind_mounts_of_one_disk_are_counted_once() {
        // As in a container given two folders of the host's disk (`-v /srv/a:/d1 ...`).
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().expect("canonical");
        let listing = Disks::new_with_refreshed_list();
        let kinds: Vec<(PathBuf, DiskKind)> = (listing.iter())
            .map(|d| (d.mount_point().to_path_buf(), d.kind()))
            .collect();
        let on_device = mount_of(&base, &kinds).is_some_and(|(m, _)| {
            (listing.iter())
                .any(|d| d.mount_point() == m && d.name().to_string_lossy().starts_with("/dev/"))
        });
        if !on_device {
            println!("not run: the temporary folder is on no block device the OS lists");
            return;
        }
        let mut bound = Vec::new();
        for name in ["a", "b"] {
            let (from, to) = (
                base.join(format!("srv-{name}")),
                base.join(format!("d-{name}")),
            );
            std::fs::create_dir_all(&from).expect("source");
            std::fs::create_dir_all(&to).expect("target");
            let Some(mount) = peergrid_core::disklab::BindMount::or_skip(&from, &to) else {
                return;
            };
            bound.push(mount);
        }
        let spec = |path: &Path| DiskSpec {
            path: path.to_path_buf(),
            class: None,
            max_bytes: None,
        };
        let p = probe(
            &[spec(bound[0].path()), spec(bound[1].path())],
            &Reservation::default(),
            |_| false,
            |_| 0,
        )
        .expect("probe");
        assert_eq!(p.disks.len(), 1, "one disk: {p:?}");
    }

    #[test]
    fn longest_mount_prefix_wins() {
        let mounts = vec![
            (PathBuf::from("/"), DiskKind::HDD),
            (PathBuf::from("/data"), DiskKind::SSD),
        ];
        let m = mount_of(Path::new("/data/peergrid"), &mounts).expect("found");
        assert_eq!(m.0, PathBuf::from("/data"));
        let m = mount_of(Path::new("/var/lib"), &mounts).expect("found");
        assert_eq!(m.0, PathBuf::from("/"));
    }

    #[test]
    fn a_disk_the_os_does_not_list_is_measured_itself_not_as_the_disk_above_it() {
        // The OS's list of disks leaves tmpfs out: the longest listed mount above this
        // one is a larger file system.
        let Some(disk) = peergrid_core::disklab::SmallDisk::mount_or_skip(64 << 20) else {
            return;
        };
        let inner = disk.path().join("peergrid");
        std::fs::create_dir_all(&inner).expect("folder");
        let spec = |path: &Path| DiskSpec {
            path: path.to_path_buf(),
            class: None,
            max_bytes: None,
        };
        let p = probe(
            &[spec(&inner), spec(disk.path())],
            &Reservation::default(),
            |_| false,
            |_| 0,
        )
        .expect("probe");
        assert_eq!(p.disks.len(), 1, "one disk, counted once: {p:?}");
        let d = &p.disks[0];
        assert_eq!(d.mount, disk.path().canonicalize().expect("canonical"));
        assert_eq!(d.total_bytes, 64 << 20, "{d:?}");
        assert_eq!(d.class, DiskClass::Hdd, "of a kind the OS does not say");
        assert_eq!(p.offered.hru, d.offered_bytes);
        assert!(d.offered_bytes < 64 << 20 && d.offered_bytes > 60 << 20);
    }

    #[test]
    fn a_disk_offers_what_is_free_and_its_own_shards_not_what_others_fill() {
        let Some(disk) = peergrid_core::disklab::SmallDisk::mount_or_skip(64 << 20) else {
            return;
        };
        let spec = DiskSpec {
            path: disk.path().to_path_buf(),
            class: Some(DiskClass::Ssd),
            max_bytes: None,
        };
        let shards = disk.path().join("shards");
        std::fs::create_dir_all(shards.join("contract-7")).expect("shards folder");
        let probed = || {
            probe(
                std::slice::from_ref(&spec),
                &Reservation::default(),
                |_| false,
                |_| peergrid_core::fs::bytes_under(&shards),
            )
            .expect("probe")
        };
        let empty = probed();
        assert!(empty.offered.sru > 60 << 20, "an empty disk: {empty:?}");

        // Another program's 32 MiB are not the grid's to sell.
        std::fs::write(disk.path().join("theirs.bin"), vec![1u8; 32 << 20]).expect("fill");
        let filled = probed();
        assert!(
            filled.offered.sru <= 32 << 20 && filled.offered.sru > 30 << 20,
            "{filled:?}"
        );
        assert_eq!(filled.disks[0].held_bytes, 0);

        // The node's own 16 MiB of shards are still its to offer.
        std::fs::write(shards.join("contract-7/a"), vec![2u8; 16 << 20]).expect("shard");
        let holding = probed();
        assert_eq!(holding.disks[0].held_bytes, 16 << 20, "{holding:?}");
        let gap = filled.offered.sru.abs_diff(holding.offered.sru);
        assert!(gap < 1 << 20, "{filled:?} vs {holding:?}");

        // Another disk mounted inside the shards folder is not this disk's.
        let inner = shards.join("contract-8");
        std::fs::create_dir_all(&inner).expect("mount point");
        let Some(other) = peergrid_core::disklab::SmallDisk::or_skip(
            peergrid_core::disklab::SmallDisk::mount_on(&inner, 8 << 20),
        ) else {
            return;
        };
        std::fs::write(other.path().join("b"), vec![3u8; 4 << 20]).expect("write");
        assert_eq!(peergrid_core::fs::bytes_under(&shards), 16 << 20);
    }

    #[test]
    fn the_real_machine_probes_with_a_reservation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DiskSpec {
            path: dir.path().to_path_buf(),
            class: Some(DiskClass::Ssd),
            max_bytes: Some(10 << 30),
        };
        // Twice the same disk: counted once.
        let p = probe(
            &[spec.clone(), spec],
            &Reservation::default(),
            |_| false,
            |_| 0,
        )
        .expect("probe");
        assert_eq!(p.disks.len(), 1);
        assert!(p.offered.cru >= 1);
        assert!(p.offered.mru < p.memory_bytes, "memory is reserved");
        assert!(p.offered.sru <= 10 << 30, "the cap applies");
        assert!(p.offered.sru > 0 && p.offered.hru == 0);
    }

    #[test]
    fn an_unmounted_disk_is_left_out_before_disks_are_counted_once() {
        // Both folders are on one file system: the unmounted disk's mount point, and a
        // disk given after it, which must not be taken for the same disk and dropped.
        let dir = tempfile::tempdir().expect("tempdir");
        let (gone, kept) = (dir.path().join("mnt-hdd1"), dir.path().join("data"));
        std::fs::create_dir_all(&gone).expect("mount point");
        std::fs::create_dir_all(&kept).expect("data");
        let spec = |path: &Path| DiskSpec {
            path: path.to_path_buf(),
            class: Some(DiskClass::Hdd),
            max_bytes: None,
        };
        let gone = gone.canonicalize().expect("canonical");
        let p = probe(
            &[spec(&gone), spec(&kept)],
            &Reservation::default(),
            |p| p == gone,
            |_| 0,
        )
        .expect("probe");
        assert_eq!(p.unmounted, vec![gone.clone()]);
        assert_eq!(p.disks.len(), 1, "{p:?}");
        assert_eq!(p.disks[0].path, kept.canonicalize().expect("canonical"));
        assert_eq!(p.offered.hru, p.disks[0].offered_bytes);
    }
}
