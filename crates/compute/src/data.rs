//! An app's persistent folder: a host directory the guest sees as `/data`, within the
//! disk its contract reserves.
//!
//! The quota is kept on every write: the `wasi:filesystem` calls that make the folder
//! grow ask [`DataDir::grant`] first (see `quota.rs`), which counts their growth on top
//! of the newest measure and refuses what would pass the quota (`quota`; "no space"
//! through a stream). Growth is counted the way the measure counts: every new entry as
//! [`ENTRY_BYTES_MIN`], and a file's length in 4 KiB blocks, holes included.
//!
//! The measure is a `du`-like walk ([`usage`]) by a background task while runs that can
//! write are active and once after each run, passes at least [`MEASURE_EVERY`] apart (ten
//! times the walk's own time for a folder of many files, at most [`MEASURE_EVERY_MAX`]).
//! Each walk replaces what was granted before it began (but for writes still in flight
//! then), so removed files give their room back at the next pass; a write refused after
//! a removal measures afresh and tries again ([`DataDir::grant_after_measure`]). What no
//! grant counts (a folder's own blocks, a contract shrunk below its files) the walk still
//! sees: a run active while the folder goes over its quota and grows is stopped at the
//! guest's next epoch tick (the app's other runs active then too: which one wrote cannot
//! be told). Over the quota, runs still start with `/data` writable so the app can
//! remove files; once it is past its quota by [`HARD_LIMIT_PERCENT`] or
//! [`HARD_LIMIT_MIN_BYTES`], whichever is more, or the folder cannot be measured, it is
//! mounted read-only until the contract reserves more: removing files needs write access
//! too. For a folder at least half full, a run's decision uses a fresh measure when a
//! run ended since the last.
//!
//! The node's own check of its disk's free space ([`SpaceCheck`]), made at every pass,
//! stops every writable run and mounts the folder read-only while the disk is down to
//! its reserve.

use crate::host::RunMeter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// What every file, folder or link counts for at least, so that empty files cannot
/// exhaust the node's inodes for free.
pub const ENTRY_BYTES_MIN: u64 = 4096;
/// How soon after one pass the next may walk the folder.
pub const MEASURE_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between passes, however long a walk takes.
pub const MEASURE_EVERY_MAX: Duration = Duration::from_secs(1);
/// How far past its quota a folder may get before `/data` is mounted read-only.
pub const HARD_LIMIT_PERCENT: u64 = 10;
/// ... or at least this far.
pub const HARD_LIMIT_MIN_BYTES: u64 = 8 << 20;
/// Where the guest finds its folder.
pub const GUEST_PATH: &str = "/data";
/// What a folder that cannot be measured counts as: past any quota.
const UNMEASURABLE: u64 = u64::MAX - 1;

/// The node's check of the free space on the disk holding a path: `Err` with why once a
/// write there would eat into the space the node keeps for itself.
pub type SpaceCheck = Arc<dyn Fn(&Path) -> Result<(), String> + Send + Sync>;

/// One app's folder on one node and the bytes it may use; cheap to share.
pub struct DataDir {
    path: PathBuf,
    quota_bytes: AtomicU64,
    /// The newest walk's figure and what writes were granted since.
    ledger: Mutex<Grants>,
    /// Files the app opened: one it removed while holding it open still takes room that
    /// no walk of the folder sees.
    open_files: Mutex<Vec<Weak<std::fs::File>>>,
    /// One measure at a time for writes that wait for one.
    remeasure: tokio::sync::Mutex<()>,
    /// Runs that can write, each with the folder's size at the first pass after it began.
    runs: Mutex<Vec<(Weak<RunMeter>, Option<u64>)>>,
    /// A run ended since the last walk.
    dirty: AtomicBool,
    wake: tokio::sync::Notify,
    measurer: AtomicBool,
    space: Option<SpaceCheck>,
    /// The disk was down to the node's reserve at the last pass.
    disk_low: AtomicBool,
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
    /// The folder at `path` (created if missing) with `quota_bytes` to use, its disk's
    /// free space watched by `space` if given.
    pub fn new(
        path: &Path,
        quota_bytes: u64,
        space: Option<SpaceCheck>,
    ) -> std::io::Result<Arc<DataDir>> {
        std::fs::create_dir_all(path)?;
        Ok(Arc::new(DataDir {
            path: path.to_path_buf(),
            quota_bytes: AtomicU64::new(quota_bytes),
            ledger: Mutex::new(Grants {
                used: u64::MAX,
                ..Grants::default()
            }),
            open_files: Mutex::new(Vec::new()),
            remeasure: tokio::sync::Mutex::new(()),
            runs: Mutex::new(Vec::new()),
            dirty: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            measurer: AtomicBool::new(false),
            space,
            disk_low: AtomicBool::new(false),
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

    /// What the folder used at its newest measure; `None` before the first, or when it
    /// could not be measured.
    pub fn used_bytes(&self) -> Option<u64> {
        match self.grants().used {
            u64::MAX | UNMEASURABLE => None,
            used => Some(used),
        }
    }

    /// What the folder uses as its writes are counted: the newest measure and what was
    /// granted since (the figure a write is checked against); `None` before the first
    /// measure, or when the folder could not be measured.
    pub fn in_use_bytes(&self) -> Option<u64> {
        let g = self.grants();
        match g.used {
            u64::MAX | UNMEASURABLE => None,
            used => Some(used.saturating_add(g.granted.saturating_sub(g.settled_at_walk))),
        }
    }

    /// Past this the folder is mounted read-only.
    fn hard_limit(&self) -> u64 {
        read_only_at(self.quota_bytes())
    }

    /// Whether runs see `/data` read-only now: past the hard limit, not measurable, or
    /// its disk down to the node's reserve.
    pub fn read_only(&self) -> bool {
        let used = self.grants().used;
        (used != u64::MAX && used >= self.hard_limit()) || self.disk_low.load(Ordering::Relaxed)
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, Grants> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Measures the folder now (a blocking walk, off the executor). A folder that cannot
    /// be walked counts as past any quota.
    pub async fn measure(&self) -> u64 {
        let began = std::time::Instant::now();
        let (ticket, settled, shrinks, in_flight, moves) = {
            // Under the lock, so that a later ticket never carries an earlier count.
            let mut g = self.grants();
            g.last_walk_began = Some(began);
            g.walks += 1;
            // Grants whose write has not returned may land after the walk has passed
            // their file: they stay counted until a later walk.
            (
                g.walks,
                g.granted.saturating_sub(g.in_flight),
                g.shrinks,
                g.in_flight > 0,
                g.moves,
            )
        };
        let path = self.path.clone();
        let open = self.open_files();
        let walk =
            move || Ok::<_, std::io::Error>(usage(&path)?.saturating_add(removed_but_open(&open)));
        let used = match tokio::task::spawn_blocking(walk).await {
            Ok(Ok(used)) => used,
            Ok(Err(e)) => {
                tracing::warn!(folder = %self.path.display(), error = %e, "cannot measure an app's /data folder: it is read-only until it can");
                UNMEASURABLE
            }
            Err(_) => UNMEASURABLE,
        };
        let mut g = self.grants();
        g.last_walk_took = began.elapsed();
        // A walk that a rename overlapped may have missed what moved (from a folder it had
        // not reached into one it had left): it may not lower the figure.
        let overlapped = g.moves != moves && g.used != u64::MAX && used < g.used;
        if ticket > g.stored_walk && !overlapped {
            let hard = self.hard_limit();
            let (was, now) = (g.used != u64::MAX && g.used >= hard, used >= hard);
            if was != now {
                // The farmer's view of a tenant whose app cannot write any more.
                let what = if now {
                    "turned read-only"
                } else {
                    "is writable again"
                };
                tracing::info!(folder = %self.path.display(), used, quota = self.quota_bytes(), "an app's /data {what}");
            }
            g.stored_walk = ticket;
            g.used = used;
            g.settled_at_walk = settled;
            g.shrinks_at_walk = shrinks;
            g.in_flight_at_walk = in_flight;
        }
        used
    }

    /// Lets a write make the folder grow by `bytes` if the newest measure plus what was
    /// granted since stays within the quota, and counts it; `None` refuses it. The grant
    /// is in flight until the returned token is dropped, once the write has returned. A
    /// write that then fails keeps its grant until the next walk: the count errs high.
    pub fn grant(self: &Arc<Self>, bytes: u64) -> Option<Grant> {
        let quota = self.quota_bytes();
        let mut g = self.grants();
        // A run opens the folder only after a first measure; an unmeasurable folder is
        // read-only.
        if matches!(g.used, u64::MAX | UNMEASURABLE) && bytes > 0 {
            return None;
        }
        let since = g.granted.saturating_sub(g.settled_at_walk);
        if g.used.saturating_add(since).saturating_add(bytes) > quota && bytes > 0 {
            return None;
        }
        g.granted = g.granted.saturating_add(bytes);
        g.in_flight = g.in_flight.saturating_add(bytes);
        Some(Grant {
            dir: self.clone(),
            bytes,
        })
    }

    /// [`DataDir::grant`], and when it is refused, [`DataDir::remeasure_if_stale`] and a
    /// second try: a DELETE makes room for the next write.
    pub async fn grant_after_measure(self: &Arc<Self>, bytes: u64) -> Option<Grant> {
        if let Some(grant) = self.grant(bytes) {
            return Some(grant);
        }
        if !self.remeasure_if_stale().await {
            return None;
        }
        self.grant(bytes)
    }

    /// When the newest figure may count too much (files were removed, cut or replaced
    /// since its walk began, or writes then in flight are counted twice), measures the
    /// folder afresh and says so; `false` when no room can have come back. One such
    /// measure at a time, spaced like the background passes (at least [`MEASURE_EVERY`],
    /// ten times the last walk's time, at most [`MEASURE_EVERY_MAX`]): the callers wait.
    pub async fn remeasure_if_stale(&self) -> bool {
        let stale = |g: &Grants| g.shrinks > g.shrinks_at_walk || g.in_flight_at_walk;
        if !stale(&self.grants()) {
            return false;
        }
        let _one = self.remeasure.lock().await;
        let wait = {
            let g = self.grants();
            if !stale(&g) {
                // Measured while this one waited.
                return true;
            }
            let every = (g.last_walk_took * 10).clamp(MEASURE_EVERY, MEASURE_EVERY_MAX);
            g.last_walk_began
                .map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed()))
        };
        tokio::time::sleep(wait).await;
        // A walk begun meanwhile may have settled it already.
        if stale(&self.grants()) {
            self.measure().await;
        }
        true
    }

    /// Keeps `file` in sight: removed while open, it still counts.
    pub(crate) fn track(&self, file: &Arc<std::fs::File>) {
        let mut files = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        if files.len() >= 64 && files.len().is_power_of_two() {
            files.retain(|f| f.strong_count() > 0);
        }
        files.push(Arc::downgrade(file));
    }

    /// The files the app holds open now.
    fn open_files(&self) -> Vec<Arc<std::fs::File>> {
        let mut files = self.open_files.lock().unwrap_or_else(|e| e.into_inner());
        files.retain(|f| f.strong_count() > 0);
        files.iter().filter_map(Weak::upgrade).collect()
    }

    /// Notes a rename or removal about to happen, and [`DataDir::moved`] once it is
    /// over: a walk that either overlaps may miss what moved.
    pub(crate) fn moving(&self) {
        let mut g = self.grants();
        g.moves = g.moves.saturating_add(1);
    }

    /// Notes a rename or removal that is over; `done` when it happened, and room may have
    /// come back.
    pub(crate) fn moved(&self, done: bool) {
        let mut g = self.grants();
        g.moves = g.moves.saturating_add(1);
        if done {
            g.shrinks = g.shrinks.saturating_add(1);
        }
    }

    /// Notes that the folder's contents were replaced whole (its owner's import): the next
    /// measure may lower the figure, and writes refused meanwhile measure afresh.
    pub fn replaced(&self) {
        self.moved(true);
    }

    /// Notes that a file was removed, cut or replaced: room may have come back that the
    /// newest walk does not know of.
    pub(crate) fn shrank(&self) {
        let mut g = self.grants();
        g.shrinks = g.shrinks.saturating_add(1);
    }

    /// Why the node's disk has no room for more, if it has none.
    fn disk_full(&self) -> Option<String> {
        self.space
            .as_ref()
            .and_then(|check| check(&self.path).err())
    }

    /// Mounts the folder for a run metered by `meter`: writable while the folder is
    /// under its hard limit and the disk has room, and then watched. The returned guard
    /// has the folder measured after the run.
    pub(crate) async fn open(
        self: &Arc<Self>,
        builder: &mut WasiCtxBuilder,
        meter: &Arc<RunMeter>,
    ) -> Result<RunOnData, String> {
        // A folder at least half full, and a run ended since the last walk: that run's
        // writes may well be what decides, so the figure is taken afresh (a walk per
        // run only for apps near their disk).
        let stored = self.grants().used;
        let used = match stored {
            u64::MAX => self.measure().await,
            used if used >= self.quota_bytes() / 2 && self.dirty.swap(false, Ordering::AcqRel) => {
                self.measure().await
            }
            used => used,
        };
        if self.disk_low.load(Ordering::Relaxed) && self.disk_full().is_none() {
            self.disk_low.store(false, Ordering::Relaxed);
        }
        let writable = used < self.hard_limit() && !self.disk_low.load(Ordering::Relaxed);
        let perms = if writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&self.path, GUEST_PATH, perms)
            .map_err(|e| {
                // The node's paths are the operator's business, not the tenant's.
                tracing::warn!(folder = %self.path.display(), error = %e, "cannot open an app's /data folder");
                "the node cannot open the app's /data folder; retry later, or report it to the node's farmer".to_string()
            })?;
        if writable {
            self.runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Arc::downgrade(meter), None));
        }
        self.start_measurer();
        self.wake.notify_one();
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
                let full = me.disk_full();
                me.disk_low.store(full.is_some(), Ordering::Relaxed);
                me.check_runs(used, full);
                drop(me);
                let pause = (began.elapsed() * 10).clamp(MEASURE_EVERY, MEASURE_EVERY_MAX);
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Stops the writable runs when the disk is full, or when the folder is over its
    /// quota and grew since they began; notes the size each new run began at.
    fn check_runs(&self, used: u64, full: Option<String>) {
        let quota = self.quota_bytes();
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        for (meter, began_at) in runs.iter_mut() {
            let Some(meter) = meter.upgrade() else {
                continue;
            };
            let why = if let Some(full) = &full {
                format!(
                    "stopped: the node's disk is down to the space it keeps for itself ({full}); /data is read-only until there is room"
                )
            } else {
                match *began_at {
                    None => {
                        *began_at = Some(used);
                        continue;
                    }
                    Some(at) if used > quota && used > at => {
                        let then = if used >= self.hard_limit() {
                            "/data is read-only until the contract reserves more (a larger --disk)"
                        } else {
                            "give it a larger --disk"
                        };
                        let used = match used {
                            UNMEASURABLE => "a size that cannot be measured".to_string(),
                            used => crate::deployment::readable_bytes(used),
                        };
                        format!(
                            "stopped: the app's /data folder grew to {used} during the run, past the {} its contract reserves; {then}",
                            crate::deployment::readable_bytes(quota)
                        )
                    }
                    Some(_) => continue,
                }
            };
            meter.stop_for_disk(why);
        }
    }
}

/// The grant arithmetic of one folder, under one lock so that a write's decision never
/// mixes two walks.
#[derive(Default)]
struct Grants {
    /// Walks started, and the ticket of the walk whose figure is stored: an older walk
    /// that ends later does not overwrite a newer figure.
    walks: u64,
    stored_walk: u64,
    /// That walk's figure; `u64::MAX` before the first.
    used: u64,
    /// Growth granted since the folder was opened (it only rises), and what of it had
    /// settled (its write returned) when the stored walk began: the rest is not in the
    /// figure for sure.
    granted: u64,
    settled_at_walk: u64,
    /// Granted, its write not returned yet.
    in_flight: u64,
    /// Removals, truncations and replacements so far, and when the stored walk began.
    shrinks: u64,
    shrinks_at_walk: u64,
    /// Writes were in flight when the stored walk began: what it saw of them is counted
    /// twice, until the next walk.
    in_flight_at_walk: bool,
    /// Renames and removals of entries so far.
    moves: u64,
    /// How long the newest walk took.
    last_walk_took: Duration,
    last_walk_began: Option<std::time::Instant>,
}

/// Room granted to one write: in flight until dropped.
pub struct Grant {
    dir: Arc<DataDir>,
    bytes: u64,
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut g = self.dir.grants();
        g.in_flight = g.in_flight.saturating_sub(self.bytes);
    }
}

/// What a folder with `quota_bytes` may reach before it is mounted read-only: 10 % past
/// its quota, at least 8 MiB past.
pub fn read_only_at(quota_bytes: u64) -> u64 {
    quota_bytes.saturating_add((quota_bytes / 100 * HARD_LIMIT_PERCENT).max(HARD_LIMIT_MIN_BYTES))
}

/// What a file of `bytes` occupies in whole blocks, as the walk counts it.
pub fn in_blocks(bytes: u64) -> u64 {
    bytes
        .div_ceil(ENTRY_BYTES_MIN)
        .saturating_mul(ENTRY_BYTES_MIN)
}

/// A run's hold on the folder: its end has the folder measured.
pub(crate) struct RunOnData {
    dir: Arc<DataDir>,
    writable: bool,
}

impl RunOnData {
    /// The folder whose grants the run's writes ask for, if it may write.
    pub(crate) fn grants(&self) -> Option<Arc<DataDir>> {
        self.writable.then(|| self.dir.clone())
    }
}

impl Drop for RunOnData {
    fn drop(&mut self) {
        self.dir.dirty.store(true, Ordering::Release);
        self.dir.wake.notify_one();
    }
}

/// What the folder at `path` occupies, as writes are granted: a file [`ENTRY_BYTES_MIN`]
/// for its entry and its length in whole blocks (holes included: a guest cannot tell a
/// hole from written zeros, and a grant counts the length), other entries their
/// allocated blocks, at least [`ENTRY_BYTES_MIN`]; a file's further names (hard links)
/// count as entries only. Links are never followed. An entry removed during the walk is
/// skipped; any other error (a tree too deep to name, a folder it cannot read) fails the
/// walk, so that nothing the app wrote goes uncounted.
pub fn usage(path: &Path) -> std::io::Result<u64> {
    use std::io::ErrorKind::NotFound;
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut linked = std::collections::HashSet::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.path().symlink_metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == NotFound => continue,
                Err(e) => return Err(e),
            };
            let size = if meta.is_file() {
                if meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
                    ENTRY_BYTES_MIN
                } else {
                    ENTRY_BYTES_MIN.saturating_add(in_blocks(meta.len()))
                }
            } else {
                meta.blocks().saturating_mul(512).max(ENTRY_BYTES_MIN)
            };
            total = total.saturating_add(size);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// What the `open` files that were removed (no name left) take, each once.
fn removed_but_open(open: &[Arc<std::fs::File>]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    open.iter()
        .filter_map(|f| f.metadata().ok())
        .filter(|m| m.nlink() == 0 && seen.insert((m.dev(), m.ino())))
        .map(|m| ENTRY_BYTES_MIN.saturating_add(in_blocks(m.len())))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_entries() {
        let dir = tempfile::tempdir().expect("test setup");
        assert_eq!(usage(dir.path()).expect("walk"), 0);
        std::fs::write(dir.path().join("empty"), b"").expect("test setup");
        assert_eq!(usage(dir.path()).expect("walk"), ENTRY_BYTES_MIN);
        std::fs::write(dir.path().join("small"), b"x").expect("test setup");
        assert_eq!(
            usage(dir.path()).expect("walk"),
            3 * ENTRY_BYTES_MIN,
            "entry and block"
        );
        std::fs::create_dir(dir.path().join("sub")).expect("test setup");
        std::fs::write(dir.path().join("sub/big"), vec![7u8; 1 << 20]).expect("test setup");
        let used = usage(dir.path()).expect("walk");
        // The two small files, the folder's own blocks (a file system may give it more
        // than one) and the file's entry and length.
        assert!(
            (ENTRY_BYTES_MIN * 5 + (1 << 20)..ENTRY_BYTES_MIN * 8 + (1 << 20)).contains(&used),
            "{used}"
        );
        // A hard link is one more entry, not a second copy.
        std::fs::hard_link(dir.path().join("sub/big"), dir.path().join("again"))
            .expect("test setup");
        assert_eq!(usage(dir.path()).expect("walk"), used + ENTRY_BYTES_MIN);
        // A sparse file counts its length, as its writes were granted.
        let sparse = std::fs::File::create(dir.path().join("sparse")).expect("test setup");
        sparse.set_len(64 << 20).expect("test setup");
        assert_eq!(
            usage(dir.path()).expect("walk"),
            used + 2 * ENTRY_BYTES_MIN + (64 << 20),
            "the link's entry, the sparse file's entry and its length"
        );
    }

    #[tokio::test]
    async fn grants_add_up_on_the_newest_measure_until_the_quota() {
        let dir = tempfile::tempdir().expect("test setup");
        let data = DataDir::new(&dir.path().join("d"), 64 << 10, None).expect("test setup");
        let ok = |bytes| data.grant(bytes).is_some();
        assert!(!ok(1), "nothing before a first measure");
        assert_eq!(data.measure().await, 0);
        assert!(ok(56 << 10));
        assert!(!ok(12 << 10), "68 KiB would pass 64");
        assert!(ok(8 << 10));
        assert!(!ok(1));
        assert!(ok(0), "no growth needs no room");
        // A walk replaces what was granted before it: here only 16 KiB was written.
        std::fs::write(data.path().join("f"), vec![1u8; 16 << 10]).expect("test setup");
        assert_eq!(data.measure().await, ENTRY_BYTES_MIN + (16 << 10));
        assert!(ok(44 << 10));
        assert!(!ok(4 << 10));
        // A write still in flight when a walk begins stays counted after it.
        data.set_quota_bytes(128 << 10);
        let in_flight = data.grant(32 << 10).expect("room");
        assert_eq!(data.measure().await, 20 << 10);
        assert!(ok(76 << 10));
        assert!(!ok(4 << 10), "the 32 KiB in flight still counts");
        drop(in_flight);
        // A write refused after such a walk measures afresh: that walk may have seen what
        // it kept counting as in flight.
        assert!(data.grant_after_measure(100 << 10).await.is_some());
        assert!(!ok(12 << 10));
        assert!(
            data.grant_after_measure(12 << 10).await.is_none(),
            "nothing new to measure"
        );
        // Removed files give their room back at the next walk, or at once to a write
        // refused after a removal was noted.
        std::fs::remove_file(data.path().join("f")).expect("test setup");
        data.shrank();
        assert!(data.grant_after_measure(120 << 10).await.is_some());
        // A larger reservation makes room at once.
        data.set_quota_bytes(1 << 20);
        assert!(ok(512 << 10));
        assert_eq!(in_blocks(1), ENTRY_BYTES_MIN);
        assert_eq!(in_blocks(ENTRY_BYTES_MIN + 1), 2 * ENTRY_BYTES_MIN);
    }

    #[test]
    fn the_hard_limit_is_ten_percent_or_8_mib_past_the_quota() {
        let dir = tempfile::tempdir().expect("test setup");
        let data = DataDir::new(&dir.path().join("d"), 1 << 30, None).expect("test setup");
        assert_eq!(data.hard_limit(), (1 << 30) + (1 << 30) / 100 * 10);
        data.set_quota_bytes(4 << 20);
        assert_eq!(data.hard_limit(), 12 << 20);
        assert_eq!(data.used_bytes(), None);
        assert!(!data.read_only(), "not before a first measure");
    }
}
