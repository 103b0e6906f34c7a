//! Persistence of the state behind a small trait, with an in-memory and a redb implementation.
//!
//! A block's changes are written in one transaction together with its height and
//! root, so after a crash at any moment the store holds exactly the state of the
//! last committed block. On open the whole state is read back, its root recomputed
//! from the entries and compared with the stored root: a damaged file is refused
//! instead of silently producing a different chain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peergrid_core::Hash;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::table::Change;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("ledger database {path}: {reason}")]
    Database {
        /// Its file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The stored data does not decode or does not match its root.
    #[error(
        "ledger database is corrupt: {0}; restore it from a backup or resync from the validators"
    )]
    Corrupt(String),
}

/// Everything the store holds: the state entries as of `height`, whose root is `root`.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The last committed height.
    pub height: u64,
    /// Its state root.
    pub root: Hash,
    /// Every entry: (table, key, value).
    pub entries: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

/// Reads the state as it was committed when it was made, whatever is committed since.
pub type PinnedLoad = Box<dyn FnOnce() -> Result<Option<Snapshot>, StoreError> + Send>;

/// Where the ledger keeps its state between runs.
pub trait Store {
    /// The last committed state, or `None` if nothing was ever committed.
    fn load(&self) -> Result<Option<Snapshot>, StoreError>;
    /// Write one block's changes, its height and root, atomically.
    fn commit(&mut self, height: u64, root: Hash, changes: &[Change]) -> Result<(), StoreError>;
    /// [`Store::load`] later, of the state committed now: cheap to make, so a caller
    /// holding a lock that blocks commits can make it, let go, and read at leisure. By
    /// default the state is read now.
    fn pinned(&self) -> Result<PinnedLoad, StoreError> {
        let state = self.load()?;
        Ok(Box::new(move || Ok(state)))
    }
}

impl<T: Store + ?Sized> Store for Box<T> {
    fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        (**self).load()
    }

    fn commit(&mut self, height: u64, root: Hash, changes: &[Change]) -> Result<(), StoreError> {
        (**self).commit(height, root, changes)
    }

    fn pinned(&self) -> Result<PinnedLoad, StoreError> {
        (**self).pinned()
    }
}

/// A store that lives and dies with the process: for tests and throwaway runs.
#[derive(Default, Clone, Debug)]
pub struct MemoryStore {
    entries: BTreeMap<(u8, Vec<u8>), Vec<u8>>,
    head: Option<(u64, Hash)>,
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.head.map(|(height, root)| Snapshot {
            height,
            root,
            entries: self
                .entries
                .iter()
                .map(|((t, k), v)| (*t, k.clone(), v.clone()))
                .collect(),
        }))
    }

    fn commit(&mut self, height: u64, root: Hash, changes: &[Change]) -> Result<(), StoreError> {
        for c in changes {
            match &c.value {
                Some(v) => self.entries.insert((c.table, c.key.clone()), v.clone()),
                None => self.entries.remove(&(c.table, c.key.clone())),
            };
        }
        self.head = Some((height, root));
        Ok(())
    }
}

/// Keys are the table tag followed by the entry's encoded key.
const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// `height` (u64 LE) and `root` (32 bytes) of the last committed block.
const HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("head");

/// The state in a redb file: a copy-on-write B-tree whose commits are atomic and durable.
pub struct RedbStore {
    db: redb::Database,
    path: PathBuf,
}

impl RedbStore {
    /// Open or create the database at `path`.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database {
                path: path.to_path_buf(),
                reason: format!("cannot create its directory: {e}"),
            })?;
        }
        let db = redb::Database::create(path).map_err(|e| StoreError::Database {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        db_err(&self.path, e)
    }

    /// The height and root of the last committed block, `None` while nothing was
    /// committed: what a start needs to know without reading the whole state.
    pub fn head(&self) -> Result<Option<(u64, Hash)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        Self::head_of(&txn, &self.path)
    }

    fn head_of(
        txn: &redb::ReadTransaction,
        path: &Path,
    ) -> Result<Option<(u64, Hash)>, StoreError> {
        let err = |e: &dyn std::fmt::Display| db_err(path, e);
        let head = match txn.open_table(HEAD) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&e)),
        };
        let height = head.get("height").map_err(|e| err(&e))?;
        let root = head.get("root").map_err(|e| err(&e))?;
        let (Some(height), Some(root)) = (height, root) else {
            return Ok(None);
        };
        let height = u64::from_le_bytes(
            height
                .value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("height is not 8 bytes".into()))?,
        );
        let root = Hash(
            root.value()
                .try_into()
                .map_err(|_| StoreError::Corrupt("root is not 32 bytes".into()))?,
        );
        Ok(Some((height, root)))
    }

    /// The state `txn` sees.
    fn read_state(
        txn: &redb::ReadTransaction,
        path: &Path,
    ) -> Result<Option<Snapshot>, StoreError> {
        let err = |e: &dyn std::fmt::Display| db_err(path, e);
        let Some((height, root)) = Self::head_of(txn, path)? else {
            return Ok(None);
        };
        let state = txn.open_table(STATE).map_err(|e| err(&e))?;
        let mut entries = Vec::with_capacity(state.len().map_err(|e| err(&e))? as usize);
        for item in state.iter().map_err(|e| err(&e))? {
            let (k, v) = item.map_err(|e| err(&e))?;
            let k = k.value();
            let Some((&tag, key)) = k.split_first() else {
                return Err(StoreError::Corrupt("an empty state key".into()));
            };
            entries.push((tag, key.to_vec(), v.value().to_vec()));
        }
        Ok(Some(Snapshot {
            height,
            root,
            entries,
        }))
    }
}

/// An error of the database at `path`.
fn db_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Option<Snapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        Self::read_state(&txn, &self.path)
    }

    /// A read transaction: redb keeps the pages it sees until it ends, so commits go on.
    fn pinned(&self) -> Result<PinnedLoad, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let path = self.path.clone();
        Ok(Box::new(move || Self::read_state(&txn, &path)))
    }

    fn commit(&mut self, height: u64, root: Hash, changes: &[Change]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut state = txn.open_table(STATE).map_err(|e| self.err(e))?;
            let mut key = Vec::new();
            for c in changes {
                key.clear();
                key.push(c.table);
                key.extend_from_slice(&c.key);
                match &c.value {
                    Some(v) => {
                        state
                            .insert(key.as_slice(), v.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        state.remove(key.as_slice()).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut head = txn.open_table(HEAD).map_err(|e| self.err(e))?;
            head.insert("height", height.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            head.insert("root", root.0.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> Change {
        Change {
            table: 1,
            key: key.to_vec(),
            value: Some(value.to_vec()),
        }
    }

    #[test]
    fn a_pinned_load_reads_the_state_of_its_day_while_commits_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = RedbStore::open(&dir.path().join("ledger.redb")).expect("open");
        store
            .commit(1, Hash::of(b"one"), &[put(b"a", b"1")])
            .expect("commit");
        let pinned = store.pinned().expect("pin");
        store
            .commit(2, Hash::of(b"two"), &[put(b"a", b"2"), put(b"b", b"2")])
            .expect("a commit while a load is pinned");
        let then = pinned().expect("load").expect("a state");
        assert_eq!(then.height, 1);
        assert_eq!(then.root, Hash::of(b"one"));
        assert_eq!(then.entries, vec![(1, b"a".to_vec(), b"1".to_vec())]);
        let now = store.load().expect("load").expect("a state");
        assert_eq!(now.height, 2);
        assert_eq!(now.entries.len(), 2);
        let mut memory = MemoryStore::default();
        memory
            .commit(1, Hash::of(b"one"), &[put(b"a", b"1")])
            .expect("commit");
        let pinned = memory.pinned().expect("pin");
        memory
            .commit(2, Hash::of(b"two"), &[put(b"a", b"2")])
            .expect("commit");
        assert_eq!(pinned().expect("load").expect("state").height, 1);
    }
}
