//! The node's shard store and its side of `/peergrid/shard/1`.
//!
//! Shards live in a folder per storage contract (`<contract dir>/shards/<address>`),
//! so the contract's end removes them with the folder. A shard is written to a
//! temporary file while its address is computed, synced, and renamed into place only
//! when the bytes match the address: a crash leaves no partial shard visible, and
//! temporary files are removed when the contract's folder is next scanned. Every read
//! is checked against the address again; a shard that no longer matches (a failing
//! disk) is moved aside and no longer served. Shard bytes go to and from the disk
//! around the page cache where the file system allows it ([`crate::direct`]). Writes
//! are refused beyond the contract's reservation, and a contract in grace refuses reads
//! and writes but keeps the data.
//!
//! Writes are refused, too, when the disk they go to would keep less free than the
//! node's [`DiskReserve`] (the node's own state lives on these disks): the answer is
//! [`Response::Full`] with the numbers, before any byte moves. Bytes promised to puts
//! under way count as used, so concurrent puts cannot overrun the reserve together. A
//! put that still meets a full disk (another program filled it meanwhile) removes its
//! temporary file, reads the rest of the shard so the sender hears the answer, and
//! answers `Full` as well; shards already stored are untouched and served as before.
//! Reads, audits and deletes never need space, and writes are accepted again as soon
//! as space is freed: the free space is asked of the file system at every put.
//!
//! The node tells the store which contracts exist through [`ShardStore::set_contracts`];
//! the store never asks the ledger itself, and acts only for contracts it was given.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use peergrid_core::fs::{DiskFull, DiskReserve, is_disk_full};
use peergrid_core::{AccountId, ContractId, Hash};
use peergrid_mesh::{Busy, Mesh, Source};
use tracing::{debug, info, warn};

use crate::blocking;
use crate::direct::{AlignedBuf, BufferPool, DirectReader, DirectWriter};
use crate::format::{SignedPointer, decode_versioned, encode_versioned};
use crate::shard::ShardHasher;
use crate::wire::{
    self, ContractUsage, HEADER_TIMEOUT, IDLE_TIMEOUT, IDS_MAX, Request, Response, SHARD_BYTES_MAX,
    deadline,
};

/// Bytes of a shard read or written per hand-off to the blocking pool.
const BATCH_BYTES: usize = 1 << 20;
/// Shard streams served at once, from all peers.
pub const STREAMS_MAX: usize = 64;
/// Shard streams served at once for one peer.
pub const STREAMS_PER_PEER_MAX: usize = 16;
/// With every stream slot taken, a stream moving fewer bytes a second than this on
/// average makes way for a new one: 64 KiB/s, a slow home uplink's share per node when a
/// put sends to twenty nodes at once.
pub const STREAM_FLOOR_BYTES_PER_SEC: u64 = 64 << 10;
/// A stream younger than this is never closed for being slow.
pub const STREAM_GRACE: Duration = Duration::from_secs(10);
/// A stream whose request has not arrived this long after it opened can be closed for
/// another when every slot is taken: a peer sends its request as it opens the stream,
/// so one sending nothing is only holding a slot.
pub const HEADER_GRACE: Duration = Duration::from_secs(2);
/// Audits a node answers at once; more wait their turn.
pub const AUDITS_AT_ONCE: usize = 4;
/// What a read of a shard in a contract in grace answers.
pub const GRACE_REFUSAL: &str = "contract in grace period: top up";

/// What the store needs to know of one storage contract on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractAccess {
    /// Who may write and delete.
    pub owner: AccountId,
    /// Bytes reserved.
    pub quota: u64,
    /// In grace: refuse reads and writes, keep the data.
    pub paused: bool,
    /// The contract's folder.
    pub dir: PathBuf,
}

#[derive(Default)]
struct State {
    contracts: HashMap<ContractId, ContractAccess>,
    /// Bytes stored (and being written) per contract.
    used: HashMap<ContractId, u64>,
    /// Each shard here, by address: the contracts holding it, with the bytes counted in
    /// each one's `used`. Two contracts may hold the same bytes (one owner's two contracts,
    /// or anyone who read a shard and put it in their own); each keeps its own copy.
    shards: HashMap<Hash, Vec<(ContractId, u64)>>,
    /// Bytes of puts under way, not yet on disk: not free for the next put's check.
    /// One sum for every disk, so with shards on two disks it is cautious, never lax.
    promised: u64,
    /// Shards a put about to be named found here instead of sending them, as the owner's
    /// `Keep` said, and when: a delete (another machine with the same words replacing an
    /// object that shares them) leaves them for [`RELIED_FOR`].
    relied: HashMap<(ContractId, Hash), Instant>,
    /// How many `relied` may hold before those older than [`RELIED_FOR`] are dropped.
    relied_prune_at: usize,
}

/// How long a shard a put relied on is kept from deletes: longer than a put takes from
/// checking its shards to naming them in the index, and short, since the owner's own
/// removal of the object in that time leaves them for `peergrid store gc`.
pub const RELIED_FOR: Duration = Duration::from_secs(120);

impl State {
    fn holds(&self, id: &Hash, contract: ContractId) -> bool {
        self.shards
            .get(id)
            .is_some_and(|h| h.iter().any(|(c, _)| *c == contract))
    }

    /// Note `contract` holds `id`, `len` bytes; false when it already did.
    fn add(&mut self, id: Hash, contract: ContractId, len: u64) -> bool {
        let holders = self.shards.entry(id).or_default();
        if holders.iter().any(|(c, _)| *c == contract) {
            return false;
        }
        holders.push((contract, len));
        true
    }

    /// Forget that `contract` holds `id`, and uncount the bytes counted for it.
    fn remove(&mut self, id: &Hash, contract: ContractId) {
        let Some(holders) = self.shards.get_mut(id) else {
            return;
        };
        let Some(i) = holders.iter().position(|(c, _)| *c == contract) else {
            return;
        };
        let (_, len) = holders.swap_remove(i);
        if holders.is_empty() {
            self.shards.remove(id);
        }
        if let Some(u) = self.used.get_mut(&contract) {
            *u = u.saturating_sub(len);
        }
    }

    /// Note a put under way relies on `contract` keeping `id`: see [`State::relied`].
    fn rely(&mut self, contract: ContractId, id: Hash) {
        let now = Instant::now();
        if self.relied.len() >= self.relied_prune_at {
            self.relied
                .retain(|_, at| now.duration_since(*at) < RELIED_FOR);
            self.relied_prune_at = (2 * self.relied.len()).max(1024);
        }
        self.relied.insert((contract, id), now);
    }

    /// Whether a put under way relies on `contract` keeping `id`.
    fn is_relied(&self, contract: ContractId, id: &Hash) -> bool {
        self.relied
            .get(&(contract, *id))
            .is_some_and(|at| at.elapsed() < RELIED_FOR)
    }

    /// Forget every shard of `contract` (its bytes are uncounted by the caller).
    fn drop_contract(&mut self, contract: ContractId) {
        self.shards.retain(|_, holders| {
            holders.retain(|(c, _)| *c != contract);
            !holders.is_empty()
        });
    }

    /// A contract that holds `id` and may serve it, with its folder, or why none may.
    fn readable(&self, id: &Hash) -> Result<(ContractId, PathBuf), String> {
        let holders = self.shards.get(id).map(Vec::as_slice).unwrap_or_default();
        let mut in_grace = false;
        for (contract, _) in holders {
            match self.contracts.get(contract) {
                Some(c) if c.paused => in_grace = true,
                Some(c) => return Ok((*contract, c.dir.clone())),
                None => {}
            }
        }
        Err(if in_grace {
            GRACE_REFUSAL.to_string()
        } else {
            format!("no shard {id} here")
        })
    }
}

/// Counters for the node's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Shards stored since start.
    pub puts: u64,
    /// Shards served since start.
    pub gets: u64,
    /// Audits answered.
    pub audits: u64,
    /// Requests refused.
    pub refused: u64,
    /// Shards found corrupt (on read, audit or scrub) and moved aside.
    pub corrupt: u64,
    /// Shards a scrub read whole and found as written.
    pub scrubbed: u64,
    /// Writes refused because the disk was full (also counted in `refused`).
    pub full: u64,
}

/// A shard file's address and length, read from the disk rather than the page cache (a
/// cached page would hide the disk's rot), leaving no pages cached behind it.
async fn hash_from_disk(path: PathBuf) -> std::io::Result<(Hash, u64)> {
    blocking(move || {
        use rustix::fs::{Advice, fadvise};
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let _ = fadvise(&file, 0, None, Advice::DontNeed);
        let mut hasher = ShardHasher::default();
        let mut buf = vec![0u8; BATCH_BYTES];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        let _ = fadvise(&file, 0, None, Advice::DontNeed);
        Ok((hasher.finalize(), bytes))
    })
    .await
}

/// What one [`ShardStore::scrub`] pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    /// Shards found as written.
    pub whole: u64,
    /// Shards that no longer matched their address, moved aside.
    pub corrupt: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// The node's shards.
pub struct ShardStore {
    pointers: PathBuf,
    /// The grid ([`crate::format::grid_id`]): pointers signed for another are refused.
    chain: String,
    state: Mutex<State>,
    stats: Mutex<StoreStats>,
    disk: DiskReserve,
    /// Whether the last write was refused for a full disk: logged once per episode, so
    /// a full disk is not filled further by a warning per refused put.
    full: AtomicBool,
    buffers: Buffers,
    /// Held from reading an owner's kept pointer to writing a newer one, so that of two
    /// arriving at once an older one never replaces a newer.
    pointer_write: tokio::sync::Mutex<()>,
    /// Held by a put from finding its shard already here until the shard's age is
    /// refreshed, and by a delete from judging a shard's age to removing it: a gc that
    /// judged a shard old cannot remove it after a put was told it is kept.
    removing: tokio::sync::Mutex<()>,
    /// Audits reading a whole shard at once: anyone may ask for one, and each reads up to
    /// a shard's size, so their number is what keeps them from taking the disk.
    audits: tokio::sync::Semaphore,
}

/// Batch buffers given back after a shard is received or served, so that the next one
/// does not zero fresh megabytes: that zeroing was as much work as the copies.
#[derive(Default)]
struct Buffers(BufferPool);

impl Buffers {
    /// A buffer for a shard of `len` bytes: a kept one, unless the shard is small enough
    /// that a megabyte for each of many small requests would cost more than zeroing.
    fn take(&self, len: u64) -> AlignedBuf {
        if len < (BATCH_BYTES / 4) as u64 {
            return AlignedBuf::zeroed(len.max(1) as usize);
        }
        self.0.take(BATCH_BYTES)
    }

    fn give(&self, buf: AlignedBuf) {
        if buf.len() == BATCH_BYTES {
            self.0.give(buf);
        }
    }
}

fn shards_dir(contract_dir: &Path) -> PathBuf {
    contract_dir.join("shards")
}

fn shard_path(contract_dir: &Path, id: &Hash) -> PathBuf {
    shards_dir(contract_dir).join(id.to_string())
}

impl ShardStore {
    /// A store that keeps owners' pointers in `pointers_dir`, taking those signed for
    /// the grid `chain` ([`crate::format::grid_id`]).
    pub fn new(pointers_dir: PathBuf, chain: &str) -> std::io::Result<ShardStore> {
        std::fs::create_dir_all(&pointers_dir)?;
        Ok(ShardStore {
            pointers: pointers_dir,
            chain: chain.to_string(),
            state: Mutex::new(State::default()),
            stats: Mutex::new(StoreStats::default()),
            disk: DiskReserve::default(),
            full: AtomicBool::new(false),
            buffers: Buffers::default(),
            pointer_write: tokio::sync::Mutex::new(()),
            removing: tokio::sync::Mutex::new(()),
            audits: tokio::sync::Semaphore::new(AUDITS_AT_ONCE),
        })
    }

    /// Keep `reserve` free on every disk the store writes to (default: 1 % of each, at
    /// most 256 MiB).
    pub fn with_disk_reserve(mut self, reserve: DiskReserve) -> ShardStore {
        self.disk = reserve;
        self
    }

    /// Whether `need` bytes more may be written under `dir`, given the puts under way.
    fn room(&self, dir: &Path, need: u64) -> Result<(), DiskFull> {
        let promised = self.state().promised;
        self.disk.check(dir, need, promised)
    }

    /// Note a write refused for a full disk (warned once until writes succeed again).
    fn note_full(&self, full: &DiskFull) {
        self.count(|s| s.full += 1);
        if !self.full.swap(true, Ordering::Relaxed) {
            warn!(%full, "refusing new shards: the disk is full");
        }
    }

    /// Note a write that succeeded: a full disk has room again.
    fn note_room(&self) {
        if self.full.swap(false, Ordering::Relaxed) {
            info!("the disk has room again; accepting new shards");
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still consistent enough to serve.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut StoreStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The counters so far.
    pub fn stats(&self) -> StoreStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes stored per contract.
    pub fn used(&self) -> HashMap<ContractId, u64> {
        self.state().used.clone()
    }

    /// Replace the set of storage contracts this store serves. Folders of contracts new to
    /// the store are scanned (leftover temporary files removed, shards indexed).
    pub fn set_contracts(&self, contracts: HashMap<ContractId, ContractAccess>) {
        let new: Vec<(ContractId, PathBuf)> = {
            let state = self.state();
            contracts
                .iter()
                .filter(|(id, c)| state.contracts.get(id).is_none_or(|old| old.dir != c.dir))
                .map(|(id, c)| (*id, c.dir.clone()))
                .collect()
        };
        let scanned: Vec<(ContractId, Vec<(Hash, u64)>)> =
            new.into_iter().map(|(id, dir)| (id, scan(&dir))).collect();
        let mut state = self.state();
        let gone: Vec<ContractId> = state
            .contracts
            .keys()
            .filter(|id| !contracts.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            state.used.remove(&id);
            state.drop_contract(id);
        }
        for (id, shards) in scanned {
            let total = shards.iter().map(|(_, l)| l).sum();
            state.drop_contract(id);
            for (h, len) in shards {
                state.add(h, id, len);
            }
            state.used.insert(id, total);
        }
        state.contracts = contracts;
    }

    fn pointer_path(&self, owner: &AccountId) -> PathBuf {
        self.pointers.join(format!("{}.bin", hex::encode(owner.0)))
    }

    /// The newest pointer kept for `owner`, read off the async threads (a slow disk
    /// must not stall the node's mesh).
    pub async fn pointer(&self, owner: &AccountId) -> Option<SignedPointer> {
        let path = self.pointer_path(owner);
        let bytes = blocking(move || std::fs::read(path)).await.ok()?;
        decode_versioned::<SignedPointer>(&bytes).ok()
    }

    async fn handle(
        &self,
        peer: AccountId,
        stream: &mut peergrid_mesh::Stream,
        moved: &Progress,
    ) -> std::io::Result<()> {
        let request = deadline(
            HEADER_TIMEOUT,
            "reading the request",
            wire::read_request(stream),
        )
        .await?;
        moved.request_read();
        let answer = match request {
            Request::Put { contract, id, len } => {
                return self.put(peer, stream, contract, id, len, moved).await;
            }
            Request::Get { id } => return self.get(stream, id, moved).await,
            Request::Has { ids } => self.has(ids),
            Request::Audit { id, leaf } => self.audit(id, leaf).await,
            Request::Delete { contract, ids } => self.delete(peer, contract, ids, None).await,
            Request::Usage { contracts } => self.usage(peer, contracts),
            Request::PutPointer(p) => self.put_pointer(p).await,
            Request::GetPointer { owner } => Response::Pointer(self.pointer(&owner).await),
            Request::List { contract, after } => self.list(peer, contract, after).await,
            Request::Keep { contract, ids } => self.keep(peer, contract, ids).await,
            Request::Collect {
                contract,
                ids,
                older_than_secs,
            } => {
                let min = std::time::Duration::from_secs(older_than_secs);
                self.delete(peer, contract, ids, Some(min)).await
            }
        };
        if matches!(answer, Response::Refused(_) | Response::Full(_)) {
            self.count(|s| s.refused += 1);
        }
        wire::answer(stream, &answer).await
    }

    /// `peer`'s contract `contract` here, in grace or not, or the reason it is not theirs.
    fn owned(&self, peer: &AccountId, contract: ContractId) -> Result<ContractAccess, String> {
        match self.state().contracts.get(&contract) {
            Some(c) if c.owner == *peer => Ok(c.clone()),
            Some(_) => Err(format!("contract {contract} is not yours")),
            None => Err(format!(
                "contract {contract} is not a storage contract here"
            )),
        }
    }

    /// The writable contract `contract` for `peer`, or the reason it is not.
    fn writable(&self, peer: &AccountId, contract: ContractId) -> Result<ContractAccess, String> {
        let state = self.state();
        let c = state.contracts.get(&contract).ok_or_else(|| {
            format!("contract {contract} is not a storage contract on this node (check `peergrid contract show {contract}`)")
        })?;
        if c.owner != *peer {
            return Err(format!(
                "contract {contract} belongs to {}, not to you",
                c.owner
            ));
        }
        if c.paused {
            return Err(GRACE_REFUSAL.to_string());
        }
        Ok(c.clone())
    }

    async fn put(
        &self,
        peer: AccountId,
        stream: &mut peergrid_mesh::Stream,
        contract: ContractId,
        id: Hash,
        len: u64,
        moved: &Progress,
    ) -> std::io::Result<()> {
        let access = match self.writable(&peer, contract) {
            Ok(a) => a,
            Err(reason) => return self.refuse(stream, reason).await,
        };
        if len > SHARD_BYTES_MAX {
            return self
                .refuse(
                    stream,
                    format!("a shard has at most {SHARD_BYTES_MAX} bytes, not {len}"),
                )
                .await;
        }
        let len = loop {
            let removing = self.removing.lock().await;
            // Reserve the bytes before receiving them, so concurrent puts cannot overrun
            // the quota.
            let reserved: Result<Option<u64>, String> = (|| {
                let mut state = self.state();
                if state.holds(&id, contract) {
                    return Ok(None);
                }
                let used = state.used.get(&contract).copied().unwrap_or(0);
                if used.saturating_add(len) > access.quota {
                    return Err(format!(
                        "contract {contract} reserves {} bytes, {used} are used and this shard needs {len}: reserve more with `peergrid store reserve`",
                        access.quota
                    ));
                }
                state.used.insert(contract, used + len);
                Ok(Some(len))
            })();
            match reserved {
                Ok(Some(len)) => break len,
                Err(reason) => {
                    drop(removing);
                    return self.refuse(stream, reason).await;
                }
                Ok(None) => {}
            }
            // A put that finds its shard here relies on it from now: it counts as written
            // now, so the owner's gc (which leaves young shards) does not take it while
            // that put, resumed from another machine, is not yet in the index.
            let path = shard_path(&access.dir, &id);
            let touched = blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&path)?
                    .set_modified(std::time::SystemTime::now())
            })
            .await;
            drop(removing);
            match touched {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Gone from the disk behind the store's back: receive it anew.
                    warn!(%id, contract, "a shard the store listed is missing from the disk");
                    self.forget(contract, id);
                    continue;
                }
                Err(e) => debug!(%id, error = %e, "cannot refresh a kept shard's age"),
                Ok(()) => {}
            }
            return wire::answer(stream, &Response::Have).await;
        };
        // Given back however this put ends, an early return or the stream closed to make
        // way for another (which drops this future at any await).
        let mut reserved = Reserved {
            store: self,
            contract,
            len,
            promised: false,
            kept: false,
        };
        // The disk is asked and the bytes promised under one lock, so two puts cannot
        // both be granted the last free bytes.
        let room = {
            let mut state = self.state();
            let room = self.disk.check(&access.dir, len, state.promised);
            if room.is_ok() {
                state.promised = state.promised.saturating_add(len);
                reserved.promised = true;
            }
            room
        };
        if let Err(full) = room {
            drop(reserved);
            return self.refuse_full(stream, full).await;
        }
        let result = match self.receive(stream, &access.dir, id, len, moved).await {
            // The contract ended while the bytes arrived (its folder may even be back,
            // for a new contract of the same id): nothing may stay in it.
            Ok(()) if !self.serves(contract, &access.dir) => {
                let _ = tokio::fs::remove_file(shard_path(&access.dir, &id)).await;
                Err(Receive::Refused(format!(
                    "contract {contract} ended while its shard arrived: nothing was kept"
                )))
            }
            other => other,
        };
        // A failed write frees its bytes; so does a second put of the same shard.
        reserved.kept = result.is_ok() && self.state().add(id, contract, len);
        drop(reserved);
        match result {
            Ok(()) => {
                self.count(|s| s.puts += 1);
                self.note_room();
                wire::answer(stream, &Response::Stored).await
            }
            Err(e) => match e {
                Receive::Refused(reason) => self.refuse(stream, reason).await,
                Receive::Full(full) => self.refuse_full(stream, full).await,
                Receive::Io(e) => Err(e),
            },
        }
    }

    /// Receive `len` bytes into a temporary file and move it into place if they match `id`.
    ///
    /// Bytes are read from the stream straight into one of two [`BATCH_BYTES`] buffers
    /// and hashed there; a full buffer is written by a blocking thread while the other
    /// fills, so the network and the disk work at the same time and each megabyte costs
    /// one hand-off to the blocking pool, not sixteen.
    async fn receive(
        &self,
        stream: &mut peergrid_mesh::Stream,
        dir: &Path,
        id: Hash,
        len: u64,
        moved: &Progress,
    ) -> Result<(), Receive> {
        // The sender hears why its shard was not kept: a full disk with the numbers, any
        // other failure of this node's disk as a refusal it can take to another node.
        let disk = |e: std::io::Error| {
            if is_disk_full(&e) {
                Receive::Full(self.disk.full(dir, len))
            } else {
                warn!(%id, dir = %dir.display(), error = %e, "cannot write a shard: check this disk");
                Receive::Refused(format!(
                    "this node cannot write shard {id} ({e}): put it on another node"
                ))
            }
        };
        let shards = shards_dir(dir);
        let tmp = shards.join(format!(".tmp-{id}-{:016x}", rand_u64()));
        // Removed on any failure, and when the stream is closed mid-way (this future
        // dropped at an await).
        let mut leftover = TempFile(Some(tmp.clone()));
        let outcome = async {
            // Created before the sender is told to go, so a disk that cannot take even
            // the file is answered before any byte moves.
            // Only the `shards` folder is made here: the contract's own folder is made
            // when the contract is provisioned, so its absence means the disk holding it
            // is not mounted, and the shard must not land on the disk beneath.
            let (s, t) = (shards.clone(), tmp.clone());
            let file = blocking(move || {
                match std::fs::create_dir(&s) {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                DirectWriter::create(&t)
            })
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
                    warn!(%id, dir = %dir.display(), "a contract's shard folder is missing: is its disk mounted?");
                    return Receive::Refused(format!(
                        "this node's folder for the contract is missing (its disk may not be mounted): put shard {id} on another node"
                    ));
                }
                disk(e)
            })?;
            deadline(
                HEADER_TIMEOUT,
                "sending ready",
                wire::write_response(stream, &Response::Ready),
            )
            .await
            .map_err(Receive::Io)?;
            moved.moving(true);
            let mut hasher = ShardHasher::default();
            let batch = BATCH_BYTES;
            let mut spare = self.buffers.take(len);
            // The file, with the buffer it last wrote, once that write is done.
            let mut writing: Option<Writing> = None;
            let mut idle = Some((file, self.buffers.take(len)));
            let mut failed: Option<std::io::Error> = None;
            let mut left = len;
            while left > 0 {
                let fill = (left as usize).min(batch);
                wire::read_exact_idle(stream, &mut spare[..fill])
                    .await
                    .map_err(Receive::Io)?;
                moved.moved(fill);
                hasher.update(&spare[..fill]);
                left -= fill as u64;
                if failed.is_some() {
                    continue;
                }
                // The previous batch's write must finish before this one is handed over.
                if let Some(w) = writing.take() {
                    let (file, buf, result) = w.await.map_err(|e| Receive::Io(e.into()))?;
                    match result {
                        Ok(()) => idle = Some((file, buf)),
                        Err(e) => failed = Some(e),
                    }
                }
                let Some((mut file, done)) = idle.take() else {
                    // The disk filled under us: give its space back at once, and read the
                    // rest without keeping it, so the sender is not cut off and hears why.
                    let _ = tokio::fs::remove_file(&tmp).await;
                    continue;
                };
                let mut bytes = std::mem::replace(&mut spare, done);
                writing = Some(tokio::task::spawn_blocking(move || {
                    let result = file.write(&mut bytes, fill);
                    (file, bytes, result)
                }));
            }
            // Every byte is in: what follows moves the file into place, not to be cut.
            moved.moving(false);
            self.buffers.give(spare);
            let file = match writing.take() {
                Some(w) => {
                    let (file, buf, result) = w.await.map_err(|e| Receive::Io(e.into()))?;
                    self.buffers.give(buf);
                    if let Err(e) = result {
                        failed.get_or_insert(e);
                    }
                    Some(file)
                }
                None => idle.map(|(file, buf)| {
                    self.buffers.give(buf);
                    file
                }),
            };
            if let Some(e) = failed {
                drop(file);
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(disk(e));
            }
            let got = hasher.finalize();
            if got != id {
                return Err(Receive::Refused(format!(
                    "the bytes sent hash to {got}, not to {id}: nothing was stored"
                )));
            }
            let Some(file) = file else {
                return Err(Receive::Io(std::io::Error::other("shard file lost")));
            };
            let (t, to) = (tmp.clone(), shard_path(dir, &id));
            blocking(move || {
                drop(file.sync()?);
                std::fs::rename(&t, &to)?;
                if let Ok(d) = std::fs::File::open(&shards) {
                    let _ = d.sync_all();
                }
                Ok(())
            })
            .await
            .map_err(disk)?;
            Ok(())
        }
        .await;
        if outcome.is_ok() {
            leftover.0 = None;
        }
        outcome
    }

    /// Whether `contract` is still one of the store's, in `dir`.
    fn serves(&self, contract: ContractId, dir: &Path) -> bool {
        self.state()
            .contracts
            .get(&contract)
            .is_some_and(|c| c.dir == dir)
    }

    /// A contract holding `id` that may serve it, with its folder, or the reason none may.
    fn readable(&self, id: &Hash) -> Result<(ContractId, PathBuf), String> {
        self.state().readable(id)
    }

    async fn get(
        &self,
        stream: &mut peergrid_mesh::Stream,
        id: Hash,
        moved: &Progress,
    ) -> std::io::Result<()> {
        let (contract, dir) = match self.readable(&id) {
            Ok(x) => x,
            Err(reason) => return self.refuse(stream, reason).await,
        };
        let path = shard_path(&dir, &id);
        let opened = blocking(move || {
            let file = DirectReader::open(&path)?;
            let len = file.file_len()?;
            Ok((file, len))
        })
        .await;
        let (file, len) = match opened {
            Ok(x) => x,
            Err(e) => return self.refuse(stream, self.unreadable(contract, id, &e)).await,
        };
        deadline(
            HEADER_TIMEOUT,
            "sending the shard's length",
            wire::write_response(stream, &Response::Data { len }),
        )
        .await?;
        // The next batch is read from the disk while this one is hashed and sent.
        let batch = BATCH_BYTES;
        let read_next = |mut file: DirectReader, mut buf: AlignedBuf, n: usize| {
            tokio::task::spawn_blocking(move || {
                let result = file.read(&mut buf, n);
                (file, buf, result)
            })
        };
        let mut hasher = ShardHasher::default();
        let mut spare = self.buffers.take(len);
        let mut left = len;
        moved.moving(true);
        let mut reading =
            (left > 0).then(|| read_next(file, self.buffers.take(len), (left as usize).min(batch)));
        while let Some(r) = reading.take() {
            let (file, bytes, result) = r.await?;
            result?;
            let n = (left as usize).min(batch);
            left -= n as u64;
            if left > 0 {
                reading = Some(read_next(
                    file,
                    std::mem::take(&mut spare),
                    (left as usize).min(batch),
                ));
            }
            hasher.update(&bytes[..n]);
            wire::write_data(stream, &bytes[..n]).await?;
            moved.moved(n);
            self.buffers.give(std::mem::replace(&mut spare, bytes));
        }
        moved.moving(false);
        self.buffers.give(spare);
        deadline(IDLE_TIMEOUT, "flushing shard bytes", stream.flush()).await?;
        if hasher.finalize() != id {
            // The reader checks too and will use another shard; stop serving this one.
            self.quarantine(contract, &dir, id).await;
        } else {
            self.count(|s| s.gets += 1);
        }
        deadline(HEADER_TIMEOUT, "closing the stream", stream.close()).await
    }

    /// Forget that `contract` holds `id`, uncounting the bytes counted for it.
    fn forget(&self, contract: ContractId, id: Hash) {
        self.state().remove(&id, contract);
    }

    /// Why shard `id` of `contract` cannot be read, given the error opening or reading it.
    /// A shard gone from the disk is forgotten; any other error (out of file handles, a
    /// permission changed) may pass, so the shard stays listed and counted.
    fn unreadable(&self, contract: ContractId, id: Hash, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::NotFound {
            warn!(%id, contract, "a shard the store listed is missing from the disk");
            self.forget(contract, id);
            format!("shard {id} is lost here")
        } else {
            warn!(%id, contract, error = %e, "cannot read a stored shard");
            format!("shard {id} cannot be read here now ({e}): ask another node")
        }
    }

    /// Read every shard here whole and move aside each that no longer matches its
    /// address, at most `bytes_per_sec`: a failing disk's rot is otherwise found only
    /// when a get or an audit happens to read that shard, and a repair trusts what the
    /// node says it holds, so a rotten shard nobody read stayed counted as whole. What
    /// it found.
    pub async fn scrub(&self, bytes_per_sec: u64) -> Scrubbed {
        let held: Vec<(ContractId, PathBuf, Hash)> = {
            let state = self.state();
            state
                .shards
                .iter()
                .flat_map(|(id, holders)| {
                    holders.iter().filter_map(|(c, _)| {
                        let dir = state.contracts.get(c)?.dir.clone();
                        Some((*c, dir, *id))
                    })
                })
                .collect()
        };
        // Paced by what was read since `since`; a pass held up (a busy disk) starts
        // counting again rather than catching up at full speed.
        let (mut since, mut counted) = (Instant::now(), 0u64);
        let mut found = Scrubbed::default();
        for (contract, dir, id) in held {
            // Removed meanwhile (a delete, the contract's end), or unreadable: a read of
            // it says so to whoever asks, and the next pass looks again.
            let Ok((got, bytes)) = hash_from_disk(shard_path(&dir, &id)).await else {
                continue;
            };
            found.bytes += bytes;
            counted += bytes;
            if got == id {
                found.whole += 1;
                self.count(|s| s.scrubbed += 1);
            } else if self.state().holds(&id, contract)
                // Read again before it is moved aside: a get may have moved the rotten copy
                // aside meanwhile, and a repair put a whole one in its place.
                && hash_from_disk(shard_path(&dir, &id))
                    .await
                    .is_ok_and(|(again, _)| again != id)
            {
                found.corrupt += 1;
                self.quarantine(contract, &dir, id).await;
            }
            let due = Duration::from_secs_f64(counted as f64 / bytes_per_sec.max(1) as f64);
            let elapsed = since.elapsed();
            match due.checked_sub(elapsed) {
                Some(wait) => tokio::time::sleep(wait).await,
                None if elapsed > due + Duration::from_secs(1) => {
                    (since, counted) = (Instant::now(), 0);
                }
                None => {}
            }
        }
        found
    }

    async fn quarantine(&self, contract: ContractId, dir: &Path, id: Hash) {
        warn!(%id, contract, "a stored shard no longer matches its address (failing disk?); moved aside");
        self.forget(contract, id);
        self.count(|s| s.corrupt += 1);
        let _ = tokio::fs::rename(
            shard_path(dir, &id),
            shards_dir(dir).join(format!(".corrupt-{id}")),
        )
        .await;
    }

    fn has(&self, ids: Vec<Hash>) -> Response {
        if ids.len() > IDS_MAX {
            return Response::Refused(format!("at most {IDS_MAX} addresses per request"));
        }
        let state = self.state();
        Response::Has(ids.iter().map(|id| state.readable(id).is_ok()).collect())
    }

    /// Which of `ids` `peer`'s `contract` holds; those it holds are kept from deletes for
    /// [`RELIED_FOR`] (a put checks the shards it found here just before naming them).
    async fn keep(&self, peer: AccountId, contract: ContractId, ids: Vec<Hash>) -> Response {
        if ids.len() > IDS_MAX {
            return Response::Refused(format!("at most {IDS_MAX} addresses per request"));
        }
        if let Err(reason) = self.owned(&peer, contract) {
            return Response::Refused(reason);
        }
        // A delete judges and removes a shard under this lock: one it spared stays past
        // this answer, one it removed is answered missing.
        let _removing = self.removing.lock().await;
        let mut state = self.state();
        let flags = ids
            .iter()
            .map(|id| {
                let held = state.holds(id, contract);
                if held {
                    state.rely(contract, *id);
                }
                held
            })
            .collect();
        Response::Has(flags)
    }

    async fn audit(&self, id: Hash, leaf: u64) -> Response {
        let (contract, dir) = match self.readable(&id) {
            Ok(x) => x,
            Err(reason) => return Response::Refused(reason),
        };
        let path = shard_path(&dir, &id);
        // A leaf the shard does not have is answered from its length, not by reading it.
        match tokio::fs::metadata(&path).await {
            Ok(meta) if leaf >= crate::shard::leaves(meta.len()) => {
                return Response::Refused(format!("shard {id} has no leaf {leaf}"));
            }
            Ok(_) => {}
            Err(e) => return Response::Refused(self.unreadable(contract, id, &e)),
        }
        let Ok(_turn) = self.audits.acquire().await else {
            return Response::Refused("this node is stopping".into());
        };
        // Hashed as it is read, keeping only the leaf asked for: an audit costs a node a
        // megabyte of memory, not the whole shard.
        let read = blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            let at = crate::shard::leaf_range(len, leaf);
            let mut hasher = ShardHasher::default();
            let mut kept = Vec::new();
            let mut buf = vec![0u8; BATCH_BYTES];
            let mut offset = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let chunk = &buf[..n];
                hasher.update(chunk);
                let (from, to) = (offset, offset + n as u64);
                if at.start < to && from < at.end {
                    let lo = at.start.max(from) - from;
                    let hi = at.end.min(to) - from;
                    kept.extend_from_slice(&chunk[lo as usize..hi as usize]);
                }
                offset = to;
            }
            Ok(hasher.finalize_proving(leaf, kept))
        })
        .await;
        let (got, proof) = match read {
            Ok(x) => x,
            Err(e) => return Response::Refused(self.unreadable(contract, id, &e)),
        };
        self.count(|s| s.audits += 1);
        if got != id {
            self.quarantine(contract, &dir, id).await;
            return Response::Refused(format!("shard {id} is corrupt here and was moved aside"));
        }
        match proof {
            Some(proof) => Response::Audit(proof),
            None => Response::Refused(format!("shard {id} has no leaf {leaf}")),
        }
    }

    /// Remove `ids` from `contract`; with `older_than`, only those written (or put again)
    /// at least that long ago. Without, those a put relies on (see [`State::relied`]) stay.
    async fn delete(
        &self,
        peer: AccountId,
        contract: ContractId,
        ids: Vec<Hash>,
        older_than: Option<std::time::Duration>,
    ) -> Response {
        if ids.len() > IDS_MAX {
            return Response::Refused(format!("at most {IDS_MAX} addresses per request"));
        }
        let access = match self.owned(&peer, contract) {
            Ok(access) => access,
            Err(reason) => return Response::Refused(reason),
        };
        let mut removed = 0u32;
        for id in ids {
            // Per shard, so that a long gc does not hold every put on the node.
            let _removing = self.removing.lock().await;
            {
                let state = self.state();
                // gc's removal goes by age alone (a put that finds a shard makes it young):
                // `--older-than 0s` says no put is under way.
                let relied = older_than.is_none() && state.is_relied(contract, &id);
                if !state.holds(&id, contract) || relied {
                    continue;
                }
            }
            let path = shard_path(&access.dir, &id);
            if let Some(min) = older_than {
                let age = tokio::fs::metadata(&path)
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                if age < min {
                    continue;
                }
            }
            match tokio::fs::remove_file(&path).await {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Still on the disk: still listed and counted.
                    warn!(%id, contract, error = %e, "cannot remove a shard");
                    continue;
                }
            }
            self.forget(contract, id);
        }
        Response::Deleted(removed)
    }

    async fn list(&self, peer: AccountId, contract: ContractId, after: Option<Hash>) -> Response {
        let dir = match self.owned(&peer, contract) {
            Ok(access) => access.dir,
            Err(reason) => return Response::Refused(reason),
        };
        let mut ids: Vec<Hash> = self
            .state()
            .shards
            .iter()
            .filter(|(id, holders)| {
                holders.iter().any(|(c, _)| *c == contract) && after.is_none_or(|a| **id > a)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let listed = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now();
            ids.into_iter()
                .filter_map(|id| {
                    // Gone since the map was read: deleted meanwhile, nothing to list.
                    let meta = std::fs::metadata(shard_path(&dir, &id)).ok()?;
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .unwrap_or_default();
                    Some(wire::ListedShard {
                        id,
                        len: meta.len(),
                        age_secs: age.as_secs(),
                    })
                })
                .take(IDS_MAX)
                .collect()
        })
        .await;
        match listed {
            Ok(listed) => Response::Listed(listed),
            Err(e) => Response::Refused(format!("cannot list the shards: {e}")),
        }
    }

    fn usage(&self, peer: AccountId, contracts: Vec<ContractId>) -> Response {
        if contracts.len() > IDS_MAX {
            return Response::Refused(format!("at most {IDS_MAX} contracts per request"));
        }
        let state = self.state();
        Response::Usage(
            contracts
                .into_iter()
                .filter_map(|id| {
                    let c = state.contracts.get(&id).filter(|c| c.owner == peer)?;
                    Some(ContractUsage {
                        contract: id,
                        used: state.used.get(&id).copied().unwrap_or(0),
                        quota: c.quota,
                    })
                })
                .collect(),
        )
    }

    async fn put_pointer(&self, pointer: SignedPointer) -> Response {
        let owner = pointer.pointer.owner;
        let holds = self.state().contracts.values().any(|c| c.owner == owner);
        if !holds {
            return Response::Refused(format!(
                "{owner} has no storage contract on this node; pointers are kept only for owners who pay for storage here"
            ));
        }
        if !pointer.verify(&self.chain) {
            return Response::Refused(format!(
                "the pointer is not signed by the owner it names for this grid ({})",
                self.chain
            ));
        }
        let _writing = self.pointer_write.lock().await;
        // A kept pointer that does not verify for this grid (signed before pointers named
        // their grid) is not the owner's newest: it must not block a new one.
        if let Some(kept) = (self.pointer(&owner).await).filter(|k| k.verify(&self.chain))
            && kept.pointer.seq >= pointer.pointer.seq
        {
            return Response::Done;
        }
        let path = self.pointer_path(&owner);
        let bytes = encode_versioned(&pointer);
        let need = bytes.len() as u64;
        // A pointer is small, but it is written for someone else all the same.
        if let Err(full) = self.room(&self.pointers, need) {
            self.note_full(&full);
            return Response::Full(full.to_string());
        }
        match blocking(move || write_atomic(&path, &bytes)).await {
            Ok(()) => Response::Done,
            Err(e) if is_disk_full(&e) => {
                let full = self.disk.full(&self.pointers, need);
                self.note_full(&full);
                Response::Full(full.to_string())
            }
            Err(e) => Response::Refused(format!("cannot keep the pointer: {e}")),
        }
    }

    async fn refuse(
        &self,
        stream: &mut peergrid_mesh::Stream,
        reason: String,
    ) -> std::io::Result<()> {
        debug!(%reason, "shard request refused");
        self.count(|s| s.refused += 1);
        wire::answer(stream, &Response::Refused(reason)).await
    }

    async fn refuse_full(
        &self,
        stream: &mut peergrid_mesh::Stream,
        full: DiskFull,
    ) -> std::io::Result<()> {
        self.note_full(&full);
        self.count(|s| s.refused += 1);
        wire::answer(stream, &Response::Full(full.to_string())).await
    }
}

/// A batch being written to a shard's temporary file: the file, the buffer, the result.
type Writing = tokio::task::JoinHandle<(DirectWriter, AlignedBuf, std::io::Result<()>)>;

enum Receive {
    Refused(String),
    Full(DiskFull),
    Io(std::io::Error),
}

/// The shards in a contract folder, with their lengths; temporary files of an
/// interrupted write are removed.
fn scan(dir: &Path) -> Vec<(Hash, u64)> {
    let Ok(entries) = std::fs::read_dir(shards_dir(dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".tmp-") {
            info!(path = %e.path().display(), "removing a shard an interrupted write left");
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        // Only the name the store writes: a shard under another spelling of its
        // address (upper case, `0x`) would be counted but never found to serve.
        match (name.parse::<Hash>(), e.metadata()) {
            (Ok(id), Ok(meta)) if id.to_string() == name => out.push((id, meta.len())),
            _ => debug!(path = %e.path().display(), "not a shard; left alone"),
        }
    }
    out
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

pub use peergrid_core::fs::write_atomic;

/// How a node shares its shard streams among peers.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Streams served at once, from all peers.
    pub all: usize,
    /// Streams served at once for one peer.
    pub per_peer: usize,
    /// With every slot taken, the slowest stream older than `grace` that has moved fewer
    /// bytes a second than this on average is closed for a new one.
    pub floor_bytes_per_sec: u64,
    /// How long a stream may move nothing before it can be closed for another.
    pub grace: Duration,
    /// How long a stream may wait with no request before it can be closed for another.
    pub header_grace: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            all: STREAMS_MAX,
            per_peer: STREAMS_PER_PEER_MAX,
            floor_bytes_per_sec: STREAM_FLOOR_BYTES_PER_SEC,
            grace: STREAM_GRACE,
            header_grace: HEADER_GRACE,
        }
    }
}

/// The bytes a put reserved in its contract and promised on the disk, given back when
/// the put ends unless the shard was kept.
struct Reserved<'a> {
    store: &'a ShardStore,
    contract: ContractId,
    len: u64,
    promised: bool,
    kept: bool,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut state = self.store.state();
        if self.promised {
            state.promised = state.promised.saturating_sub(self.len);
        }
        if !self.kept
            && let Some(u) = state.used.get_mut(&self.contract)
        {
            *u = u.saturating_sub(self.len);
        }
    }
}

/// A temporary file removed when dropped, unless it was moved into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Bytes a stream under way has moved, for telling a slow stream from one that works.
struct Progress {
    started: Instant,
    bytes: AtomicU64,
    /// Only while shard bytes move may the stream be closed: closing a removal between
    /// its unlink and its count, or a put while it moves its file into place, would
    /// leave the store's counts wrong.
    closable: AtomicBool,
    /// Whether the stream's request is still awaited.
    awaiting_request: AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            closable: AtomicBool::new(false),
            awaiting_request: AtomicBool::new(true),
        }
    }

    /// The request arrived: the stream works from now.
    fn request_read(&self) {
        self.awaiting_request.store(false, Ordering::Relaxed);
    }

    fn moved(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Mark whether shard bytes are moving now (the stream may be closed if slow).
    fn moving(&self, now: bool) {
        self.closable.store(now, Ordering::Relaxed);
    }

    /// Its average rate, when it moves shard bytes, is old enough and below `limits`'
    /// floor.
    fn too_slow(&self, limits: &StreamLimits, now: Instant) -> Option<f64> {
        let age = now.saturating_duration_since(self.started);
        if self.awaiting_request.load(Ordering::Relaxed) {
            return (age >= limits.header_grace).then_some(0.0);
        }
        if !self.closable.load(Ordering::Relaxed) {
            return None;
        }
        let rate = self.bytes.load(Ordering::Relaxed) as f64 / age.as_secs_f64().max(1e-3);
        (age >= limits.grace && rate < limits.floor_bytes_per_sec as f64).then_some(rate)
    }
}

struct Served {
    progress: Arc<Progress>,
    task: tokio::task::JoinHandle<()>,
    /// The address its slot is counted for.
    source: Option<Source>,
}

/// Serve `/peergrid/shard/1` from `store` on `mesh` until the mesh stops, with the
/// default [`StreamLimits`].
#[allow(clippy::result_large_err)] // the mesh's own error, returned once at start
pub fn serve(
    mesh: &Mesh,
    store: Arc<ShardStore>,
) -> Result<tokio::task::JoinHandle<()>, peergrid_mesh::Error> {
    serve_with(mesh, store, StreamLimits::default())
}

/// Serve `/peergrid/shard/1` from `store` on `mesh` until the mesh stops: streams are
/// accepted as fast as they arrive and handled concurrently, up to `limits.all` in all
/// and `limits.per_peer` per peer. A stream beyond a peer's share is closed at once. With
/// every slot taken, the slowest stream that has moved less than the floor rate since
/// its grace ended makes way for the new one (peer ids cost nothing, so slots held by
/// streams trickling a byte at a time would otherwise shut everyone out); with none that
/// slow, the new stream is closed.
#[allow(clippy::result_large_err)] // the mesh's own error, returned once at start
pub fn serve_with(
    mesh: &Mesh,
    store: Arc<ShardStore>,
    limits: StreamLimits,
) -> Result<tokio::task::JoinHandle<()>, peergrid_mesh::Error> {
    let mut incoming = mesh.accept_streams(wire::SHARD_PROTOCOL)?;
    Ok(tokio::spawn(async move {
        let slots = incoming.slots(limits.all, limits.per_peer);
        let mut served: HashMap<u64, Served> = HashMap::new();
        let mut next = 0u64;
        while let Some((peer, mut stream)) = incoming.next().await {
            served.retain(|_, s| !s.task.is_finished());
            let slot = match slots.take(peer) {
                Ok(slot) => slot,
                Err(busy @ (Busy::All | Busy::Source)) => {
                    // Full, in all or for the peer's address: the slowest stream holding a
                    // slot the new one needs makes way, if one is below the floor.
                    let closed = match (busy, slots.source_of(&peer)) {
                        (Busy::Source, None) => false,
                        (Busy::Source, from) => close_slowest(&mut served, &limits, from).await,
                        _ => close_slowest(&mut served, &limits, None).await,
                    };
                    if !closed {
                        debug!(%peer, "shard stream refused: {busy}");
                        continue;
                    }
                    match slots.take(peer) {
                        Ok(slot) => slot,
                        Err(busy) => {
                            debug!(%peer, "shard stream refused: {busy}");
                            continue;
                        }
                    }
                }
                Err(busy) => {
                    debug!(%peer, "shard stream refused: {busy}");
                    continue;
                }
            };
            let Ok(account) = peergrid_mesh::identity::account_id(&peer) else {
                continue;
            };
            let source = slot.source();
            let store = store.clone();
            let progress = Arc::new(Progress::new());
            let moved = progress.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = store.handle(account, &mut stream, &moved).await {
                    debug!(%peer, error = %e, "shard stream ended with an error");
                }
                drop(slot);
            });
            served.insert(
                next,
                Served {
                    progress,
                    task,
                    source,
                },
            );
            next += 1;
        }
    }))
}

/// Close the slowest stream below the floor rate, if any; whether one was closed (its
/// slot is free when this returns).
async fn close_slowest(
    served: &mut HashMap<u64, Served>,
    limits: &StreamLimits,
    from: Option<Source>,
) -> bool {
    let now = Instant::now();
    let slowest = served
        .iter()
        .filter(|(_, s)| from.is_none() || s.source == from)
        .filter_map(|(k, s)| Some((*k, s.progress.too_slow(limits, now)?)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    let Some((key, rate)) = slowest else {
        return false;
    };
    let Some(s) = served.remove(&key) else {
        return false;
    };
    info!(
        bytes_per_sec = rate as u64,
        floor = limits.floor_bytes_per_sec,
        "every shard stream slot is taken: closing the slowest stream for a new one"
    );
    s.task.abort();
    // Aborting drops the task's future, and with it the slot, before the join returns.
    let _ = s.task.await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stream_past_its_grace_and_below_the_floor_is_too_slow() {
        let limits = StreamLimits {
            grace: Duration::from_secs(10),
            floor_bytes_per_sec: 64 << 10,
            ..StreamLimits::default()
        };
        let at = |age_secs: u64, bytes: u64| {
            let p = Progress::new();
            p.request_read();
            p.moving(true);
            p.bytes.store(bytes, Ordering::Relaxed);
            p.too_slow(&limits, p.started + Duration::from_secs(age_secs))
        };
        let silent = Progress::new();
        assert_eq!(
            silent.too_slow(&limits, silent.started + Duration::from_secs(1)),
            None,
            "a request is given a moment to arrive"
        );
        assert_eq!(
            silent.too_slow(&limits, silent.started + limits.header_grace),
            Some(0.0),
            "a stream that sends no request only holds a slot: it goes first"
        );
        let idle = Progress::new();
        idle.request_read();
        assert_eq!(
            idle.too_slow(&limits, idle.started + Duration::from_secs(60)),
            None,
            "a stream not moving shard bytes (a removal, an audit) is never closed"
        );
        assert_eq!(at(5, 0), None, "young streams are left alone");
        assert_eq!(at(20, 0), Some(0.0));
        assert_eq!(at(20, 20 * 1024), Some(1024.0));
        assert_eq!(at(20, 20 * (64 << 10)), None, "at the floor is fast enough");
        assert_eq!(at(20, 100 << 20), None);
    }
}
