//! Test support: small real file systems (tmpfs) that a test can fill to the last byte.
//!
//! A [`SmallDisk`] mounts a tmpfs of a given size on a fresh temporary folder and unmounts
//! it when dropped, also when the test fails, so a full disk is tested on a real kernel
//! file system rather than a mock. It needs root (or `CAP_SYS_ADMIN`); a test calls
//! [`SmallDisk::mount_or_skip`], which skips with a printed reason elsewhere and panics
//! under CI (`CI` set, as `.ci/run` does), where a skipped disk test would pass unrun.
//! A [`BindMount`] shows one folder at a second place, as a container's volume does.
//!
//! Both mount with the system call, not the `mount` program: a child process started
//! while another test holds a socket or a file open keeps a copy of it until the child
//! runs its program, and that test would see the port still taken, or the space of a
//! removed file not yet freed.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// A tmpfs mounted on a folder, unmounted on drop (and the folder removed if it was
/// made for it).
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
    /// Whether the folder was made for the mount (and is removed after it).
    made: bool,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The mount, or `None` after printing why it could not be made (a skip); under CI, a
/// panic.
fn or_skip<T>(mounted: Result<T, String>) -> Option<T> {
    match mounted {
        Ok(m) => Some(m),
        Err(reason) if in_ci() => {
            panic!("mount tests cannot run under CI: {reason}; run them as root")
        }
        Err(reason) => {
            println!("skipping: {reason}");
            eprintln!("skipping a mount test: {reason}");
            None
        }
    }
}

impl SmallDisk {
    /// Mount a tmpfs of `bytes` (rounded up to pages) on a new temporary folder; the
    /// reason when it cannot be.
    pub fn mount(bytes: u64) -> Result<SmallDisk, String> {
        let mut salt = [0u8; 8];
        let _ = getrandom::fill(&mut salt);
        let dir = std::env::temp_dir().join(format!(
            "peergrid-disk-{}-{:016x}",
            std::process::id(),
            u64::from_le_bytes(salt)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        SmallDisk::mount_with(dir, bytes, true)
    }

    /// Mount a tmpfs of `bytes` over the existing folder `dir` (what it held is hidden
    /// until the drop unmounts it; the folder itself stays).
    pub fn mount_on(dir: &Path, bytes: u64) -> Result<SmallDisk, String> {
        SmallDisk::mount_with(dir.to_path_buf(), bytes, false)
    }

    fn mount_with(dir: PathBuf, bytes: u64, made: bool) -> Result<SmallDisk, String> {
        let options = std::ffi::CString::new(format!("size={bytes}"))
            .map_err(|e| format!("mount options: {e}"))?;
        match rustix::mount::mount("tmpfs", &dir, "tmpfs", MountFlags::empty(), &*options) {
            Ok(()) => Ok(SmallDisk { dir, made }),
            Err(e) => {
                if made {
                    let _ = std::fs::remove_dir(&dir);
                }
                Err(format!("cannot mount a tmpfs (needs root): {e}"))
            }
        }
    }

    /// [`SmallDisk::mount`], or `None` after printing why (a skip); under CI, a panic.
    pub fn mount_or_skip(bytes: u64) -> Option<SmallDisk> {
        SmallDisk::or_skip(SmallDisk::mount(bytes))
    }

    /// The disk, or `None` after printing why it could not be mounted (a skip); under
    /// CI, a panic.
    pub fn or_skip(mounted: Result<SmallDisk, String>) -> Option<SmallDisk> {
        or_skip(mounted)
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write a file of filler at `name` until the disk has at most `leave_bytes` free;
    /// returns its path. Stops at the first `ENOSPC`, which is not an error here.
    pub fn fill(&self, name: &str, leave_bytes: u64) -> std::io::Result<PathBuf> {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0xa5u8; 64 * 1024];
        loop {
            let free = crate::fs::disk_space(&self.dir)?.available_bytes;
            if free <= leave_bytes {
                break;
            }
            let n = (free - leave_bytes).min(chunk.len() as u64) as usize;
            match f.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if crate::fs::is_disk_full(&e) => break,
                Err(e) => return Err(e),
            }
        }
        // tmpfs counts pages: a last partial page may leave a little less free than asked.
        f.sync_all()?;
        Ok(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy, so a file a failing test left open never keeps the mount behind.
        let _ = rustix::mount::unmount(&self.dir, UnmountFlags::DETACH);
        if self.made {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// A folder shown at a second place (`mount --bind`), unmounted on drop.
#[derive(Debug)]
pub struct BindMount {
    at: PathBuf,
}

impl BindMount {
    /// Show `from` at `at` (both folders that exist), or `None` after printing why it
    /// could not be (a skip); under CI, a panic.
    pub fn or_skip(from: &Path, at: &Path) -> Option<BindMount> {
        or_skip(
            rustix::mount::mount_bind(from, at)
                .map(|()| BindMount {
                    at: at.to_path_buf(),
                })
                .map_err(|e| format!("cannot bind-mount (needs root): {e}")),
        )
    }

    /// Where `from` is shown.
    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.at, UnmountFlags::DETACH);
    }
}
