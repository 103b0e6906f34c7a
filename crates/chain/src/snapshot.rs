//! State snapshots: each validator writes the ledger's state at every epoch's last block,
//! with that block's finalization certificate, and serves them. A validator joining a chain
//! whose early blocks are pruned starts from one instead of from genesis: it checks the
//! state's root against the block's state certificate, the certificate against the
//! validator sets followed from the genesis it holds, and the finalization against the
//! certificate's block, then lets marshal start from that block.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use borsh::{BorshDeserialize, BorshSerialize};
use peergrid_core::Hash;
use peergrid_ledger::{Change, Genesis, Store};
use peergrid_types::api::SnapshotInfo;
use tracing::{debug, info, warn};

/// What a snapshot file starts with, and its format's version.
const MAGIC: &[u8; 8] = b"PGSNAP01";
/// Snapshots a validator keeps: the newest and the one before, so one is always whole
/// while the next is written.
pub const SNAPSHOTS_KEPT: usize = 2;
/// Largest snapshot a joining validator downloads.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 << 30;
/// Largest finalization certificate accepted.
pub const FINALIZATION_BYTES_MAX: usize = 64 << 10;

/// The ledger's state at one height, as written to disk and sent to joining validators.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SnapshotFile {
    /// The chain: its genesis hash.
    pub chain: Hash,
    /// The height of the state.
    pub height: u64,
    /// Its state root.
    pub root: Hash,
    /// Every state entry: (table, key, value).
    pub entries: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

impl SnapshotFile {
    /// The file's bytes: the magic, then the borsh encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        // Writing to a Vec cannot fail.
        let _ = borsh::to_writer(&mut out, self);
        out
    }

    /// Read a snapshot file; anything else, or a damaged one, is refused with the reason.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, String> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or("not a peergrid snapshot of format 1 (its first bytes are not PGSNAP01)")?;
        borsh::from_slice(body).map_err(|e| format!("the snapshot is damaged: {e}"))
    }

    /// Write this state into `store`, which must be empty: the ledger, opened on it, checks
    /// the root against the entries and the genesis hash against its own.
    pub fn install(&self, store: &mut dyn Store, genesis: &Genesis) -> Result<(), String> {
        if self.chain != genesis.hash() {
            return Err(format!(
                "the snapshot is of chain {}, not of this genesis ({})",
                self.chain,
                genesis.hash()
            ));
        }
        if store.load().map_err(|e| e.to_string())?.is_some() {
            return Err(
                "the ledger already holds a state: start from a snapshot only on an \
                        empty data directory"
                    .into(),
            );
        }
        let changes: Vec<Change> = self
            .entries
            .iter()
            .map(|(table, key, value)| Change {
                table: *table,
                key: key.clone(),
                value: Some(value.clone()),
            })
            .collect();
        store
            .commit(self.height, self.root, &changes)
            .map_err(|e| e.to_string())
    }
}

/// Where a validator keeps the snapshots it serves; nowhere until [`Snapshots::enable`].
#[derive(Default)]
pub struct Snapshots {
    dir: OnceLock<PathBuf>,
    /// Whether a state is being written: a validator catching up crosses an epoch's end
    /// every few blocks, and a thread each holding two copies of the state would not fit.
    writing: Arc<AtomicBool>,
}

impl Snapshots {
    /// Keep snapshots in `dir`, removing the temporary files of writes a kill cut short
    /// (each as large as the state).
    pub fn enable(&self, dir: PathBuf) -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(".tmp.") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = self.dir.set(dir);
        Ok(())
    }

    fn state_path(dir: &Path, height: u64, root: &Hash) -> PathBuf {
        dir.join(format!("{height:020}-{root}.snapshot"))
    }

    fn finalization_path(dir: &Path, height: u64) -> PathBuf {
        dir.join(format!("{height:020}.finalization"))
    }

    /// Whether this validator writes snapshots.
    pub fn enabled(&self) -> bool {
        self.dir.get().is_some()
    }

    /// Read the state `load` pins (the ledger's store as of an epoch's last block) and
    /// write it, in the background: copying a large state under the ledger's lock would
    /// hold up blocks and every read meanwhile.
    pub fn write(&self, chain: Hash, load: peergrid_ledger::store::PinnedLoad) {
        let Some(dir) = self.dir.get().cloned() else {
            return;
        };
        if self.writing.swap(true, Ordering::AcqRel) {
            debug!("a snapshot is still being written: this epoch's is skipped");
            return;
        }
        // Let go however the thread ends, a panic included.
        struct Done(Arc<AtomicBool>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let done = Done(self.writing.clone());
        std::thread::spawn(move || {
            let _done = done;
            Self::write_now(&dir, chain, load);
        });
    }

    fn write_now(dir: &Path, chain: Hash, load: peergrid_ledger::store::PinnedLoad) {
        let state = match load() {
            Ok(Some(state)) => state,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "cannot read the state for a snapshot");
                return;
            }
        };
        let file = SnapshotFile {
            chain,
            height: state.height,
            root: state.root,
            entries: state.entries,
        };
        let path = Self::state_path(dir, file.height, &file.root);
        match peergrid_core::fs::write_atomic(&path, &file.encode()) {
            Ok(()) => info!(
                height = file.height,
                entries = file.entries.len(),
                "state snapshot written"
            ),
            Err(e) => {
                warn!(height = file.height, error = %e, "cannot write the state snapshot")
            }
        }
        Self::prune(dir);
    }

    /// Keep the finalization certificate of the snapshot at `height`.
    pub fn write_finalization(&self, height: u64, bytes: &[u8]) {
        let Some(dir) = self.dir.get() else {
            return;
        };
        match peergrid_core::fs::write_atomic(&Self::finalization_path(dir, height), bytes) {
            // Ready now: the oldest one kept may go.
            Ok(()) => Self::prune(dir),
            Err(e) => warn!(height, error = %e, "cannot write the snapshot's finalization"),
        }
    }

    /// Remove all but the newest [`SNAPSHOTS_KEPT`] ready snapshots (those with their
    /// finalization) and as many newer ones still waiting for it: counting one that never
    /// gets its finalization (written just before a kill, or while catching up) would
    /// remove the last one served, and keeping every such one would fill the disk.
    fn prune(dir: &Path) {
        let mut heights: Vec<u64> = Self::scan(dir).into_iter().map(|(h, _, _)| h).collect();
        heights.sort_unstable();
        heights.dedup();
        let ready: Vec<u64> = (heights.iter().copied())
            .filter(|h| Self::finalization_path(dir, *h).exists())
            .collect();
        let newest_ready = ready.last().copied();
        let mut kept: Vec<u64> = ready.iter().rev().take(SNAPSHOTS_KEPT).copied().collect();
        kept.extend(
            (heights.iter().rev())
                .filter(|h| newest_ready.is_none_or(|r| **h > r))
                .take(SNAPSHOTS_KEPT),
        );
        for height in heights.iter().filter(|h| !kept.contains(h)) {
            for (h, _, path) in Self::scan(dir) {
                if h == *height {
                    let _ = std::fs::remove_file(path);
                }
            }
            let _ = std::fs::remove_file(Self::finalization_path(dir, *height));
        }
        // The finalizations of states never written (skipped while another was written)
        // behind the newest ready one: nothing will ever pair them.
        let Some(newest_ready) = newest_ready else {
            return;
        };
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(height) = (name.to_str())
                .and_then(|n| n.strip_suffix(".finalization"))
                .and_then(|h| h.parse::<u64>().ok())
            else {
                continue;
            };
            if height < newest_ready && !heights.contains(&height) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Every state file: height, root, path.
    fn scan(dir: &Path) -> Vec<(u64, Hash, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (height, root) = name.strip_suffix(".snapshot")?.split_once('-')?;
                Some((height.parse().ok()?, root.parse().ok()?, e.path()))
            })
            .collect()
    }

    /// The snapshots ready to serve (state and finalization written), newest first.
    pub fn list(&self) -> Vec<SnapshotInfo> {
        let Some(dir) = self.dir.get() else {
            return Vec::new();
        };
        let mut out: Vec<SnapshotInfo> = Self::scan(dir)
            .into_iter()
            .filter(|(h, _, _)| Self::finalization_path(dir, *h).exists())
            .filter_map(|(height, root, path)| {
                Some(SnapshotInfo {
                    height,
                    root,
                    bytes: std::fs::metadata(path).ok()?.len(),
                })
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.height));
        out
    }

    /// The state file of the snapshot at `height`, if it is ready.
    pub fn state_file(&self, height: u64) -> Option<PathBuf> {
        let dir = self.dir.get()?;
        if !Self::finalization_path(dir, height).exists() {
            return None;
        }
        Self::scan(dir)
            .into_iter()
            .find(|(h, _, _)| *h == height)
            .map(|(_, _, p)| p)
    }

    /// The finalization certificate of the snapshot at `height`, as marshal encodes it.
    pub fn finalization(&self, height: u64) -> Option<Vec<u8>> {
        std::fs::read(Self::finalization_path(self.dir.get()?, height)).ok()
    }
}

/// Keep the finalization certificate of each epoch's last block beside its snapshot: the
/// floor marshal starts from on a validator that joins from it.
pub async fn keep_finalizations(
    shared: std::sync::Arc<crate::shared::Shared>,
    marshal: commonware_consensus::marshal::core::Mailbox<
        commonware_consensus::simplex::scheme::ed25519::Scheme,
        commonware_consensus::marshal::standard::Standard<crate::block::Block>,
    >,
) {
    use commonware_codec::Encode as _;
    use tokio::sync::broadcast::error::RecvError;
    let mut applied = shared.finalized.subscribe();
    let len = shared.genesis.params.epoch_blocks.max(1);
    loop {
        let height = match applied.recv().await {
            Ok(block) => block.height,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        if !(height + 1).is_multiple_of(len) {
            continue;
        }
        match marshal
            .get_finalization(commonware_consensus::types::Height::new(height))
            .await
        {
            Some(f) => shared.snapshots.write_finalization(height, &f.encode()),
            None => warn!(
                height,
                "no finalization of the epoch's last block for its snapshot"
            ),
        }
    }
}

/// A snapshot downloaded and checked, ready to install.
pub struct Fetched {
    /// The state.
    pub file: SnapshotFile,
    /// The digest of the block it is the state after, as its state certificate signs it.
    pub block: Hash,
    /// That block's finalization certificate, as consensus encodes it.
    pub finalization: Vec<u8>,
    /// The state certificate of each epoch's last block up to the snapshot's, checked: a
    /// validator keeps them so that clients asking it alone can follow the sets too.
    pub handoffs: Vec<peergrid_types::certificate::StateCertificate>,
    /// Where it came from.
    pub from: String,
}

/// Whether the ledger in `data_dir` is still empty: a snapshot may be installed there.
pub fn wanted(data_dir: &Path) -> anyhow::Result<bool> {
    let path = data_dir.join("ledger.redb");
    if !path.exists() {
        return Ok(true);
    }
    Ok(peergrid_ledger::RedbStore::open(&path)?.head()?.is_none())
}

/// Install `fetched` in the empty validator data directory `data_dir`: the floor consensus
/// starts from, the state, and the handoffs it was checked with. The state is written
/// aside and checked whole first (its entries against its root, the finalization against
/// its sets): installed unchecked, a bad one would stop every start, and a ledger that is
/// not empty is never fetched again.
pub fn install(data_dir: &Path, genesis: &Genesis, fetched: Fetched) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let installing = data_dir.join("ledger.redb.installing");
    let _ = std::fs::remove_file(&installing);
    let mut store = peergrid_ledger::RedbStore::open(&installing)?;
    let checked = (|| -> anyhow::Result<()> {
        fetched
            .file
            .install(&mut store, genesis)
            .map_err(anyhow::Error::msg)?;
        let ledger = peergrid_ledger::Ledger::open(Box::new(store) as Box<dyn Store>, genesis)?;
        checked_floor(ledger.state(), &fetched.finalization, &fetched.block)?;
        Ok(())
    })();
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&installing);
        return Err(anyhow::Error::new(Refused {
            height: fetched.file.height,
            from: fetched.from.clone(),
            reason: format!("{e:#}"),
        }));
    }
    // The floor first: a crash before the state is in place leaves an empty ledger,
    // fetched again at the next start.
    peergrid_core::fs::write_atomic(
        &data_dir.join(FLOOR_FILE),
        &[fetched.block.0.as_slice(), &fetched.finalization].concat(),
    )?;
    // Then the handoffs, before the state: once the state is in, the ledger is no longer
    // empty and nothing would fetch them again, so a crash in between would lose them.
    let receipts = crate::shared::Receipts::open(&data_dir.join("receipts.redb"))?;
    for handoff in &fetched.handoffs {
        receipts.record_certificate(handoff)?;
    }
    std::fs::rename(&installing, data_dir.join("ledger.redb"))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    info!(height = fetched.file.height, root = %fetched.file.root, from = %fetched.from,
        "ledger started from a state snapshot");
    Ok(())
}

/// A snapshot that failed its checks: the source's fault, not this machine's.
#[derive(Debug, thiserror::Error)]
#[error(
    "the snapshot of height {height} from {from} is refused, nothing was installed: {reason}; tell its operator"
)]
pub struct Refused {
    /// Its height.
    pub height: u64,
    /// Where it came from.
    pub from: String,
    /// What did not check.
    pub reason: String,
}

/// The file in a validator's data directory holding the floor consensus starts from: the
/// snapshot block's digest, then its finalization.
pub const FLOOR_FILE: &str = "snapshot-floor.finalization";

/// A snapshot block's finalization certificate, as consensus decodes it.
pub type Floor = commonware_consensus::simplex::types::Finalization<
    commonware_consensus::simplex::scheme::ed25519::Scheme,
    commonware_cryptography::sha256::Digest,
>;

/// Decode the finalization a snapshot came with, and check it before marshal starts from
/// it: it must finalize the certified block, signed by a quorum of its epoch's set.
pub fn floor(
    shared: &std::sync::Arc<crate::shared::Shared>,
    bytes: &[u8],
    block: &Hash,
) -> anyhow::Result<Floor> {
    shared
        .with_state(|state| checked_floor(state, bytes, block))
        .ok_or_else(|| anyhow::anyhow!("the ledger cannot be read"))?
}

/// Decode `bytes` as the finalization of `block`, and check it is signed by a quorum of its
/// epoch's set as `state` knows it.
fn checked_floor(
    state: &peergrid_ledger::State,
    bytes: &[u8],
    block: &Hash,
) -> anyhow::Result<Floor> {
    use anyhow::bail;
    use commonware_codec::Decode as _;
    use commonware_consensus::simplex::scheme::ed25519::Scheme;

    let finalization = Floor::decode_cfg(
        bytes::Bytes::copy_from_slice(bytes),
        &peergrid_core::tx::VALIDATORS_MAX,
    )
    .map_err(|e| anyhow::anyhow!("the snapshot's finalization certificate does not decode: {e}"))?;
    if finalization.proposal.payload.as_ref() != block.0.as_slice() {
        bail!(
            "the snapshot's finalization certificate is of block {}, not of the certified block {block}",
            hex::encode(finalization.proposal.payload.as_ref())
        );
    }
    let epoch = finalization.proposal.round.epoch().get();
    let Some(members) = crate::epochs::members_in(state, epoch) else {
        bail!("the snapshot's state does not know the validator set of epoch {epoch}");
    };
    let participants =
        commonware_utils::ordered::Set::from_iter_dedup(members.into_iter().map(|m| m.key));
    let scheme = Scheme::verifier(crate::timing::NAMESPACE, participants);
    if !finalization.verify(&mut rand::rng(), &scheme, &commonware_parallel::Sequential) {
        bail!("the snapshot's finalization certificate is not signed by a quorum of epoch {epoch}");
    }
    Ok(finalization)
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_ledger::{Devnet, Ledger, MemoryStore};

    #[test]
    fn pruning_keeps_the_newest_ready_snapshots_whatever_waits_for_its_finalization() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = Hash::of(b"root");
        let state = |h: u64, ready: bool| {
            std::fs::write(Snapshots::state_path(dir.path(), h, &root), b"state").expect("state");
            if ready {
                std::fs::write(Snapshots::finalization_path(dir.path(), h), b"f").expect("f");
            }
        };
        let heights = || -> Vec<u64> {
            let mut h: Vec<u64> = (Snapshots::scan(dir.path()).into_iter())
                .map(|(h, _, _)| h)
                .collect();
            h.sort_unstable();
            h
        };
        // 99 and 199 ready; 299 and 399 written just before kills, never finalized.
        state(99, true);
        state(199, true);
        state(299, false);
        state(399, false);
        Snapshots::prune(dir.path());
        assert_eq!(
            heights(),
            [99, 199, 299, 399],
            "both ready ones are still served"
        );
        // Catching up, a validator writes every epoch's state and finalizes none: only
        // the newest few of those wait.
        for h in [499, 599, 699, 799] {
            state(h, false);
        }
        Snapshots::prune(dir.path());
        assert_eq!(heights(), [99, 199, 699, 799]);
        state(899, true);
        Snapshots::prune(dir.path());
        assert_eq!(
            heights(),
            [199, 899],
            "the unfinalized ones behind a ready one go"
        );
        assert!(!Snapshots::finalization_path(dir.path(), 99).exists());
        // A finalization whose state was never written (skipped while another was) goes
        // once a newer snapshot is ready; one newer than that waits for its state.
        std::fs::write(Snapshots::finalization_path(dir.path(), 950), b"f").expect("f");
        std::fs::write(Snapshots::finalization_path(dir.path(), 1_050), b"f").expect("f");
        state(999, true);
        Snapshots::prune(dir.path());
        assert!(!Snapshots::finalization_path(dir.path(), 950).exists());
        assert!(Snapshots::finalization_path(dir.path(), 1_050).exists());
        assert_eq!(heights(), [899, 999]);
    }

    #[test]
    fn a_snapshot_round_trips_installs_and_is_checked_on_open() {
        let d = Devnet::generate("snap", 1, 1_000).expect("keys");
        let ledger = Ledger::open(MemoryStore::default(), &d.genesis).expect("ledger");
        let state = ledger.store().load().expect("load").expect("a state");
        let file = SnapshotFile {
            chain: d.genesis.hash(),
            height: state.height,
            root: state.root,
            entries: state.entries,
        };
        let bytes = file.encode();
        assert_eq!(SnapshotFile::decode(&bytes), Ok(file.clone()));

        let mut store = MemoryStore::default();
        file.install(&mut store, &d.genesis).expect("install");
        let opened = Ledger::open(store.clone(), &d.genesis).expect("opens");
        assert_eq!(opened.state().root(), file.root);
        assert!(file.install(&mut store, &d.genesis).is_err(), "not twice");

        // A changed entry no longer hashes to the root: the ledger refuses to open on it.
        let mut forged = file.clone();
        if let Some(e) = forged.entries.first_mut() {
            e.2.push(0);
        }
        let mut store = MemoryStore::default();
        forged.install(&mut store, &d.genesis).expect("written");
        assert!(Ledger::open(store, &d.genesis).is_err());
        // Installed in a data directory, it is refused before anything is kept: the
        // directory stays empty, so the next start fetches a snapshot again.
        let data = tempfile::tempdir().expect("tempdir");
        let fetched = Fetched {
            file: forged,
            block: Hash::of(b"block"),
            finalization: Vec::new(),
            handoffs: Vec::new(),
            from: "http://forger".into(),
        };
        let refused = install(data.path(), &d.genesis, fetched).expect_err("refused");
        assert!(
            format!("{refused:#}").contains("http://forger"),
            "{refused:#}"
        );
        assert!(
            wanted(data.path()).expect("readable"),
            "the ledger is still empty"
        );
        assert!(!data.path().join(FLOOR_FILE).exists());
        assert!(!data.path().join("ledger.redb.installing").exists());

        // Another chain's, truncated, or not a snapshot at all.
        let other = Devnet::generate("other", 1, 1_000).expect("keys");
        assert!(
            file.install(&mut MemoryStore::default(), &other.genesis)
                .is_err()
        );
        assert!(SnapshotFile::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(SnapshotFile::decode(b"{\"json\": true}").is_err());
        assert!(SnapshotFile::decode(&[]).is_err());
    }

    #[test]
    fn only_the_newest_ready_snapshots_are_kept_and_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = Snapshots::default();
        snapshots.enable(dir.path().to_path_buf()).expect("enable");
        for h in [19u64, 39, 59] {
            let file = SnapshotFile {
                chain: Hash::ZERO,
                height: h,
                root: Hash::of(&h.to_be_bytes()),
                entries: Vec::new(),
            };
            let path = Snapshots::state_path(dir.path(), h, &file.root);
            std::fs::write(&path, file.encode()).expect("write");
            if h != 59 {
                snapshots.write_finalization(h, b"fin");
            }
        }
        // 59 has no finalization yet: not ready.
        let listed: Vec<u64> = snapshots.list().iter().map(|s| s.height).collect();
        assert_eq!(listed, vec![39, 19]);
        Snapshots::prune(dir.path());
        snapshots.write_finalization(59, b"fin");
        let listed: Vec<u64> = snapshots.list().iter().map(|s| s.height).collect();
        assert_eq!(listed, vec![59, 39]);
        assert!(snapshots.state_file(19).is_none());
        assert_eq!(snapshots.finalization(39), Some(b"fin".to_vec()));
    }
}
