//! Files written so that a crash at any moment leaves the old content or the new, never
//! half of either; and the free space a node checks before it accepts data for others.
//!
//! # Disk full
//!
//! A node writes on behalf of others (shards, owners' pointers, deployments, components)
//! on the same file systems as its own state (world, keys, logs). Before it accepts such a
//! write it asks [`DiskReserve::check`] whether the file system keeps at least its
//! reserve free after the write, and refuses with [`DiskFull`] when not, so the node's
//! own files always find room. The check can race with other writers; a write that then
//! fails with `ENOSPC` is recognised by [`is_disk_full`] and reported as the same
//! [`DiskFull`], after its temporary file is removed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::capacity::human_bytes;

/// Write `bytes` to `path` atomically: a temporary file beside it, synced, renamed over it,
/// and the folder synced so the rename survives a power loss. Creates the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, None, true)
}

/// Like [`write_atomic`], but only where no file is: an existing one is left as it is and
/// the error's kind is [`std::io::ErrorKind::AlreadyExists`].
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, None, false)
}

/// Like [`write_atomic`], readable and writable by the owner only (mode 0600): for keys.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, Some(0o600), true)
}

/// Bytes kept free by default on every disk at most: 256 MiB (a ledger of state and
/// some logs), or 1 % of a smaller file system.
pub const DISK_FREE_MIN_BYTES_DEFAULT: u64 = 256 << 20;

/// The size and free space of one file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write (`f_bavail`: blocks kept for root
    /// are not counted, so a node running as root never eats them).
    pub available_bytes: u64,
    /// The file system's size.
    pub total_bytes: u64,
}

/// The bytes the files under `dir` take on its file system (allocated blocks, what
/// deleting them frees); 0 when it does not exist. Unreadable entries are skipped, and so
/// are other file systems mounted beneath: their bytes are not this disk's.
pub fn bytes_under(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else {
        return 0;
    };
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                // A mount point is a folder; files are not compared, as an overlay
                // file system gives its files the device of the layer beneath.
                if meta.dev() != device {
                    continue;
                }
                todo.push(entry.path());
            } else {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    total
}

/// The space of the file system holding `path`; a path not created yet is asked about
/// through its nearest existing ancestor, which is where it would be created.
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let mut at = path;
    let stat = loop {
        match rustix::fs::statvfs(at) {
            Ok(s) => break s,
            Err(rustix::io::Errno::NOENT) => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Err(std::io::Error::from(rustix::io::Errno::NOENT)),
            },
            Err(e) => return Err(e.into()),
        }
    };
    Ok(DiskSpace {
        available_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

/// Whether `e` says the disk (or the user's quota on it) is full.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// A write the node refused, or could not finish, because its disk is (nearly) full.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "node disk full: {} free on {}, need {} (reserve {}): the node refuses new data until space is freed",
    human_bytes(*.free_bytes),
    .path.display(),
    human_bytes(*.need_bytes),
    human_bytes(*.reserve_bytes)
)]
pub struct DiskFull {
    /// The folder written to.
    pub path: PathBuf,
    /// Bytes free on its file system (less what writes under way have been promised).
    pub free_bytes: u64,
    /// Bytes the refused write needed.
    pub need_bytes: u64,
    /// Bytes the node keeps free for itself.
    pub reserve_bytes: u64,
}

/// How much of every disk a node keeps free for its own state, whatever others send.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskReserve {
    /// Bytes kept free; `None`: 1 % of the file system, at most
    /// [`DISK_FREE_MIN_BYTES_DEFAULT`].
    pub free_min_bytes: Option<u64>,
}

impl DiskReserve {
    /// Keep exactly `bytes` free on every disk.
    pub fn bytes(bytes: u64) -> DiskReserve {
        DiskReserve {
            free_min_bytes: Some(bytes),
        }
    }

    /// The bytes kept free on a file system of `total_bytes`.
    pub fn reserve_bytes(&self, total_bytes: u64) -> u64 {
        self.free_min_bytes
            .unwrap_or_else(|| (total_bytes / 100).min(DISK_FREE_MIN_BYTES_DEFAULT))
    }

    /// `Ok` when `need_bytes` more (beyond `promised_bytes` already granted to writes
    /// under way) fit on `path`'s file system with the reserve still free. A file system
    /// that cannot be asked is not refused: its write then fails by itself, and
    /// [`DiskReserve::full`] reports it.
    pub fn check(&self, path: &Path, need_bytes: u64, promised_bytes: u64) -> Result<(), DiskFull> {
        let Ok(space) = disk_space(path) else {
            return Ok(());
        };
        let reserve = self.reserve_bytes(space.total_bytes);
        let free = space.available_bytes.saturating_sub(promised_bytes);
        if free >= need_bytes.saturating_add(reserve) {
            return Ok(());
        }
        Err(DiskFull {
            path: path.to_path_buf(),
            free_bytes: free,
            need_bytes,
            reserve_bytes: reserve,
        })
    }

    /// The [`DiskFull`] to report for a write of `need_bytes` to `path` that failed
    /// with `ENOSPC`, with the space as it is now.
    pub fn full(&self, path: &Path, need_bytes: u64) -> DiskFull {
        let space = disk_space(path).unwrap_or(DiskSpace {
            available_bytes: 0,
            total_bytes: 0,
        });
        DiskFull {
            path: path.to_path_buf(),
            free_bytes: space.available_bytes,
            need_bytes,
            reserve_bytes: self.reserve_bytes(space.total_bytes),
        }
    }
}

fn write(path: &Path, bytes: &[u8], mode: Option<u32>, replace: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process and call: two writers of one file never share a temporary.
    let mut salt = [0u8; 8];
    let _ = getrandom::fill(&mut salt);
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{:016x}",
        std::process::id(),
        u64::from_le_bytes(salt)
    ));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut f = options.open(&tmp)?;
        if let Some(mode) = mode {
            // The mode above is masked by the umask; set it explicitly as well.
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            // A link fails where a file already is, so nothing is ever replaced.
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("sub/file.json");
        write_atomic(&path, b"old").expect("first write");
        write_atomic(&path, b"new content").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new content");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["file.json"], "only the file, no temporary");
    }

    #[test]
    fn a_new_file_never_replaces_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("genesis.toml");
        write_new_atomic(&path, b"first").expect("no file yet");
        let again = write_new_atomic(&path, b"second").expect_err("a file is there");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).expect("list").count(),
            1,
            "no temporary"
        );
    }

    #[test]
    fn a_private_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("key.json");
        write_private_atomic(&path, b"secret").expect("write");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_full_disk_refuses_before_and_during_a_write_and_keeps_what_it_had() {
        let Some(disk) = crate::disklab::SmallDisk::mount_or_skip(4 << 20) else {
            return;
        };
        let path = disk.path().join("state.json");
        write_atomic(&path, b"old").expect("room at first");
        let reserve = DiskReserve::bytes(64 << 10);
        reserve
            .check(disk.path(), 1 << 20, 0)
            .expect("1 MiB fits in 4 MiB");
        let full = reserve
            .check(disk.path(), 1 << 20, 3 << 20)
            .expect_err("3 MiB promised elsewhere leave no room");
        assert_eq!(full.need_bytes, 1 << 20);
        let filler = disk.fill("filler", 0).expect("fill");
        let full = reserve
            .check(disk.path(), 4096, 0)
            .expect_err("nothing fits now");
        let message = full.to_string();
        assert!(
            message.starts_with("node disk full: ")
                && message.contains(&disk.path().display().to_string())
                && message.contains("reserve 64.0 KiB")
                && message.contains("refuses new data until space is freed"),
            "{message}"
        );

        // The check raced: the write itself meets ENOSPC, leaves no temporary, and the
        // file it would have replaced is whole.
        let e = write_atomic(&path, &vec![1u8; 1 << 20]).expect_err("no room");
        assert!(is_disk_full(&e), "{e:?}");
        assert_eq!(fs::read(&path).expect("read"), b"old");
        let names: Vec<_> = fs::read_dir(disk.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "the file and the filler only: {names:?}");

        fs::remove_file(&filler).expect("free the disk");
        reserve
            .check(disk.path(), 1 << 20, 0)
            .expect("room again once freed");
        write_atomic(&path, b"new").expect("writes again");
        assert_eq!(fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn the_default_reserve_is_one_percent_up_to_256_mib() {
        let r = DiskReserve::default();
        assert_eq!(r.reserve_bytes(8 << 20), (8 << 20) / 100);
        assert_eq!(r.reserve_bytes(1 << 40), DISK_FREE_MIN_BYTES_DEFAULT);
        assert_eq!(DiskReserve::bytes(5).reserve_bytes(1 << 40), 5);
        let space = disk_space(Path::new("/surely/not/here/at/all")).expect("an ancestor");
        assert!(space.total_bytes > 0);
    }

    #[test]
    fn a_failed_write_leaves_the_old_content() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("file");
        write_atomic(&path, b"old").expect("write");
        // A folder where the file's folder should be: the write fails, the old file stays.
        let blocked = path.join("inside");
        assert!(write_atomic(&blocked, b"x").is_err());
        assert_eq!(fs::read(&path).expect("read"), b"old");
    }
}
