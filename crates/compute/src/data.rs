//! An app's persistent folder: a host directory the guest sees as `/data`, within the
//! disk its contract reserves.
//!
//! WASI gives no hook on writes, so the quota is kept by measuring: a background task
//! walks the folder (`du`-like: allocated blocks, every entry at least
//! [`ENTRY_BYTES_MIN`]) while runs that can write are active and once after each, at
//! most every [`MEASURE_EVERY`] (or ten times the walk's own time, for a folder of many
//! files). A run that finds the folder over its quota and larger
//! than when it began is stopped at the guest's next epoch tick, so an app overshoots by
//! at most what it writes in one measuring interval. Over the quota, runs still start
//! with `/data` writable so the app can remove files; once it is
//! [`HARD_LIMIT_PERCENT`] past, it is mounted read-only until the contract reserves
//! more.

use crate::host::RunMeter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What every file, folder or link counts for at least, so that empty files cannot
/// exhaust the node's inodes for free.
pub const ENTRY_BYTES_MIN: u64 = 4096;
/// How often the folder is measured while runs that can write are active.
pub const MEASURE_EVERY: Duration = Duration::from_millis(100);
/// How far past its quota a folder may get before `/data` is mounted read-only.
pub const HARD_LIMIT_PERCENT: u64 = 10;
/// Where the guest finds its folder.
pub const GUEST_PATH: &str = "/data";

/// One app's folder on one node and the bytes it may use; cheap to share.
pub struct DataDir {
    path: PathBuf,
    quota_bytes: AtomicU64,
    /// What the last walk found; `u64::MAX` before the first.
    used_bytes: AtomicU64,
    /// Runs that can write, and the size the folder had when each began.
    runs: Mutex<Vec<(Weak<RunMeter>, u64)>>,
    /// A run ended since the last walk.
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
    measurer: AtomicBool,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.path)
            .field("quota_bytes", &self.quota_bytes())
            .field("used_bytes", &self.used_bytes())
            .finish()
    }
}

impl DataDir {
    /// The folder at `path` (created if missing) with `quota_bytes` to use.
    pub fn new(path: &Path, quota_bytes: u64) -> std::io::Result<Arc<DataDir>> {
        std::fs::create_dir_all(path)?;
        Ok(Arc::new(DataDir {
            path: path.to_path_buf(),
            quota_bytes: AtomicU64::new(quota_bytes),
            used_bytes: AtomicU64::new(u64::MAX),
            runs: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            measurer: AtomicBool::new(false),
        }))
    }

    /// The host folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes the app may use (its contract's reservation).
    pub fn quota_bytes(&self) -> u64 {
        self.quota_bytes.load(Ordering::Relaxed)
    }

    /// Follows a contract that now reserves `bytes`.
    pub fn set_quota_bytes(&self, bytes: u64) {
        self.quota_bytes.store(bytes, Ordering::Relaxed);
    }

    /// What the folder used at its last measure; `None` before the first run.
    pub fn used_bytes(&self) -> Option<u64> {
        match self.used_bytes.load(Ordering::Relaxed) {
            u64::MAX => None,
            used => Some(used),
        }
    }

    /// Past this the folder is mounted read-only.
    fn hard_limit(&self) -> u64 {
        let quota = self.quota_bytes();
        quota.saturating_add(quota / 100 * HARD_LIMIT_PERCENT)
    }

    /// Measures the folder now (a blocking walk, off the executor).
    pub async fn measure(&self) -> u64 {
        let path = self.path.clone();
        let used = tokio::task::spawn_blocking(move || usage(&path))
            .await
            .unwrap_or(u64::MAX - 1);
        self.used_bytes.store(used, Ordering::Relaxed);
        used
    }

    /// Mounts the folder for a run metered by `meter`: writable while the folder is
    /// under its hard limit, and then watched. The returned guard ends the watch.
    pub(crate) async fn open(
        self: &Arc<Self>,
        builder: &mut WasiCtxBuilder,
        meter: &Arc<RunMeter>,
    ) -> Result<RunOnData, String> {
        let used = match self.used_bytes() {
            Some(used) => used,
            None => self.measure().await,
        };
        let writable = used < self.hard_limit();
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&self.path, GUEST_PATH, perms)
            .map_err(|e| {
                format!(
                    "cannot open the app's data folder {}: {e}",
                    self.path.display()
                )
            })?;
        if writable {
            self.runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Arc::downgrade(meter), used));
            self.start_measurer();
            self.wake.notify_one();
        }
        Ok(RunOnData {
            dir: self.clone(),
            writable,
        })
    }

    fn start_measurer(self: &Arc<Self>) {
        if self.measurer.swap(true, Ordering::AcqRel) {
            return;
        }
        let dir = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(me) = dir.upgrade() else { return };
                let busy = {
                    let mut runs = me.runs.lock().unwrap_or_else(|e| e.into_inner());
                    runs.retain(|(meter, _)| meter.strong_count() > 0);
                    !runs.is_empty()
                };
                if !busy && !me.dirty.swap(false, Ordering::AcqRel) {
                    // Woken by a run's start or end; the timeout lets the task notice
                    // that no one holds the folder any more.
                    let _ = tokio::time::timeout(Duration::from_secs(5), me.wake.notified()).await;
                    continue;
                }
                let began = std::time::Instant::now();
                let used = me.measure().await;
                me.stop_growers(used);
                drop(me);
                // A folder of many files takes long to walk: walk it at most a tenth of
                // the time, at the cost of a later stop.
                tokio::time::sleep(MEASURE_EVERY.max(began.elapsed() * 10)).await;
            }
        });
    }

    /// Stops the runs during which the folder went over its quota and grew.
    fn stop_growers(&self, used: u64) {
        let quota = self.quota_bytes();
        if used <= quota {
            return;
        }
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        for (meter, at_start) in runs.iter() {
            if used > *at_start
                && let Some(meter) = meter.upgrade()
            {
                meter.disk_used_bytes.store(used, Ordering::Relaxed);
                meter.disk_quota_bytes.store(quota, Ordering::Relaxed);
                meter.disk_exhausted.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// A run's hold on the folder: its end is measured.
pub(crate) struct RunOnData {
    dir: Arc<DataDir>,
    writable: bool,
}

impl Drop for RunOnData {
    fn drop(&mut self) {
        if self.writable {
            self.dir.dirty.store(true, Ordering::Release);
            self.dir.wake.notify_one();
        }
    }
}

/// What the folder at `path` occupies: allocated blocks, each entry at least
/// [`ENTRY_BYTES_MIN`]; links are counted, never followed.
pub fn usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add((meta.blocks() * 512).max(ENTRY_BYTES_MIN));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_entries() {
        let dir = tempfile::tempdir().expect("test setup");
        assert_eq!(usage(dir.path()), 0);
        std::fs::write(dir.path().join("empty"), b"").expect("test setup");
        assert_eq!(usage(dir.path()), ENTRY_BYTES_MIN);
        std::fs::create_dir(dir.path().join("sub")).expect("test setup");
        std::fs::write(dir.path().join("sub/big"), vec![7u8; 1 << 20]).expect("test setup");
        let used = usage(dir.path());
        assert!(
            (ENTRY_BYTES_MIN * 2 + (1 << 20)..ENTRY_BYTES_MIN * 3 + (1 << 20) + 8192)
                .contains(&used),
            "{used}"
        );
        // A sparse file takes only what it allocated.
        let sparse = std::fs::File::create(dir.path().join("sparse")).expect("test setup");
        sparse.set_len(1 << 40).expect("test setup");
        assert!(usage(dir.path()) < used + (1 << 20));
    }

    #[test]
    fn the_hard_limit_is_ten_percent_past_the_quota() {
        let dir = tempfile::tempdir().expect("test setup");
        let data = DataDir::new(&dir.path().join("d"), 100 << 20).expect("test setup");
        assert_eq!(data.hard_limit(), 110 << 20);
        assert_eq!(data.used_bytes(), None);
    }
}
