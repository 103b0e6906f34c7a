//! What a validator's parts share: the ledger, the mempool, receipts, and the stream of finalized blocks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::broadcast;
use tokio::sync::{Notify, futures::Notified};

use peergrid_core::{AccountId, SignedTx, TxHash};
pub use peergrid_ledger::receipt::{FinalizedBlock, TxOutcome, TxStatus};
use peergrid_ledger::{
    BlockContext, BlockOutcome, Checked, Genesis, KnownTx, Ledger, LedgerError, Store, StoreError,
    TxError,
};
use peergrid_types::certificate::StateCertificate;

use crate::block::{BLOCK_TXS_MAX, Block};
use crate::certify::Certificates;
use crate::mempool::{Mempool, MempoolError, MempoolLimits};
use crate::snapshot::Snapshots;
use crate::verified::VerifiedTxs;

/// The ledger with whatever store the validator was given.
pub type DynLedger = Ledger<Box<dyn Store + Send + Sync>>;

/// Receipts of finalized blocks, by height and by transaction hash.
///
/// In memory for tests and throwaway runs, or in a redb file. Records are written before
/// the ledger commits their block, and are idempotent, so a crash never leaves a
/// committed block without its receipts.
pub struct Receipts {
    db: Option<redb::Database>,
    memory: Mutex<MemoryReceipts>,
}

/// Blocks by height, each transaction's (height, position), and kept certificates.
type MemoryReceipts = (
    BTreeMap<u64, FinalizedBlock>,
    BTreeMap<TxHash, (u64, usize)>,
    BTreeMap<u64, StateCertificate>,
);

/// Finalized blocks by height, in CBOR. A binary format, so account ids and hashes are stored
/// as their bytes (see their `Serialize`): writing them as text (base58, hex) was a tenth of a
/// validator's CPU under load. The HTTP API still answers in JSON.
const BLOCKS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("blocks.cbor");
/// Finalized blocks recorded as JSON by earlier versions; read only.
const BLOCKS_JSON: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("blocks");
const TXS: redb::TableDefinition<&[u8; 32], (u64, u64)> = redb::TableDefinition::new("txs");
/// State certificates of each epoch's last block, by height, in CBOR.
const CERTIFICATES: redb::TableDefinition<u64, &[u8]> =
    redb::TableDefinition::new("certificates.cbor");

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("receipts: {e}"))
}

impl Receipts {
    /// Receipts kept in memory only.
    pub fn memory() -> Receipts {
        Receipts {
            db: None,
            memory: Mutex::default(),
        }
    }

    /// Receipts in the redb file at `path`.
    pub fn open(path: &Path) -> Result<Receipts, StoreError> {
        let db = redb::Database::create(path).map_err(store_err)?;
        Ok(Receipts {
            db: Some(db),
            memory: Mutex::default(),
        })
    }

    /// Record a finalized block and its transactions.
    pub fn record(&self, block: &FinalizedBlock) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            let mut m = self.memory.lock().map_err(store_err)?;
            for (i, tx) in block.txs.iter().enumerate() {
                m.1.insert(tx.hash, (block.height, i));
            }
            m.0.insert(block.height, block.clone());
            return Ok(());
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(block, &mut bytes).map_err(store_err)?;
        let txn = db.begin_write().map_err(store_err)?;
        {
            let mut blocks = txn.open_table(BLOCKS).map_err(store_err)?;
            blocks
                .insert(block.height, bytes.as_slice())
                .map_err(store_err)?;
            let mut txs = txn.open_table(TXS).map_err(store_err)?;
            for (i, tx) in block.txs.iter().enumerate() {
                txs.insert(&tx.hash.0, (block.height, i as u64))
                    .map_err(store_err)?;
            }
        }
        txn.commit().map_err(store_err)
    }

    /// The finalized block at `height`.
    pub fn block(&self, height: u64) -> Option<FinalizedBlock> {
        let Some(db) = &self.db else {
            return self.memory.lock().ok()?.0.get(&height).cloned();
        };
        let txn = db.begin_read().ok()?;
        if let Some(bytes) = txn
            .open_table(BLOCKS)
            .ok()
            .and_then(|t| t.get(height).ok().flatten())
        {
            return ciborium::from_reader(bytes.value()).ok();
        }
        let table = txn.open_table(BLOCKS_JSON).ok()?;
        let json = table.get(height).ok()??;
        serde_json::from_slice(json.value()).ok()
    }

    /// Remove the blocks below `min` and their transactions' index, at most `most` of them;
    /// returns how many were removed.
    pub fn prune_below(&self, min: u64, most: usize) -> Result<usize, StoreError> {
        let Some(db) = &self.db else {
            let mut m = self.memory.lock().map_err(store_err)?;
            let doomed: Vec<u64> = m.0.range(..min).map(|(h, _)| *h).take(most).collect();
            for h in &doomed {
                if let Some(block) = m.0.remove(h) {
                    for tx in &block.txs {
                        // The same bytes finalized again later (a refused transaction keeps
                        // its nonce, so it may be sent again) point at the later block.
                        if m.1.get(&tx.hash).is_some_and(|(at, _)| at == h) {
                            m.1.remove(&tx.hash);
                        }
                    }
                }
            }
            return Ok(doomed.len());
        };
        let txn = db.begin_write().map_err(store_err)?;
        let mut removed = 0;
        {
            let mut txs = txn.open_table(TXS).map_err(store_err)?;
            for (table, cbor) in [(BLOCKS, true), (BLOCKS_JSON, false)] {
                let mut blocks = txn.open_table(table).map_err(store_err)?;
                let mut doomed = Vec::new();
                for entry in blocks.range(..min).map_err(store_err)? {
                    if removed + doomed.len() >= most {
                        break;
                    }
                    let (height, bytes) = entry.map_err(store_err)?;
                    let block: Option<FinalizedBlock> = if cbor {
                        ciborium::from_reader(bytes.value()).ok()
                    } else {
                        serde_json::from_slice(bytes.value()).ok()
                    };
                    doomed.push((height.value(), block));
                }
                for (height, block) in &doomed {
                    for tx in block.iter().flat_map(|b| &b.txs) {
                        // The same bytes finalized again later (a refused transaction keeps
                        // its nonce, so it may be sent again) point at the later block.
                        let here = txs
                            .get(&tx.hash.0)
                            .map_err(store_err)?
                            .is_some_and(|at| at.value().0 == *height);
                        if here {
                            txs.remove(&tx.hash.0).map_err(store_err)?;
                        }
                    }
                    blocks.remove(height).map_err(store_err)?;
                }
                removed += doomed.len();
            }
        }
        txn.commit().map_err(store_err)?;
        Ok(removed)
    }

    /// The lowest height whose block is kept, if any is.
    pub fn first_kept(&self) -> Option<u64> {
        let Some(db) = &self.db else {
            return self.memory.lock().ok()?.0.keys().next().copied();
        };
        let txn = db.begin_read().ok()?;
        [BLOCKS, BLOCKS_JSON]
            .into_iter()
            .filter_map(|t| {
                let table = txn.open_table(t).ok()?;
                let first = table.first().ok()??;
                Some(first.0.value())
            })
            .min()
    }

    /// Keep `certificate` for good: each epoch's last, which light clients follow.
    pub fn record_certificate(&self, certificate: &StateCertificate) -> Result<(), StoreError> {
        let Some(db) = &self.db else {
            let mut m = self.memory.lock().map_err(store_err)?;
            m.2.insert(certificate.height, certificate.clone());
            return Ok(());
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(certificate, &mut bytes).map_err(store_err)?;
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(CERTIFICATES)
            .map_err(store_err)?
            .insert(certificate.height, bytes.as_slice())
            .map_err(store_err)?;
        txn.commit().map_err(store_err)
    }

    /// The certificate kept for good at `height`, if any.
    pub fn certificate(&self, height: u64) -> Option<StateCertificate> {
        let Some(db) = &self.db else {
            return self.memory.lock().ok()?.2.get(&height).cloned();
        };
        let txn = db.begin_read().ok()?;
        let table = txn.open_table(CERTIFICATES).ok()?;
        let bytes = table.get(height).ok()??;
        ciborium::from_reader(bytes.value()).ok()
    }

    /// Where a transaction landed: block height and position.
    pub fn locate(&self, hash: &TxHash) -> Option<(u64, usize)> {
        let Some(db) = &self.db else {
            return self.memory.lock().ok()?.1.get(hash).copied();
        };
        let txn = db.begin_read().ok()?;
        let table = txn.open_table(TXS).ok()?;
        let (h, i) = table.get(&hash.0).ok()??.value();
        Some((h, i as usize))
    }
}

/// Everything a validator's actors and its API share.
pub struct Shared {
    /// The chain's genesis.
    pub genesis: Genesis,
    /// The ledger, advanced only by finalized blocks.
    pub ledger: RwLock<DynLedger>,
    /// Transactions waiting for a block.
    pub mempool: Mutex<Mempool>,
    /// Receipts of finalized blocks.
    pub receipts: Receipts,
    /// Finalized blocks as they are applied, for followers.
    pub finalized: broadcast::Sender<Arc<FinalizedBlock>>,
    /// State certificates formed here.
    pub certificates: Certificates,
    /// State snapshots this validator writes at each epoch's last block and serves.
    pub snapshots: Snapshots,
    /// Transactions that passed the stateless checks here; see [`crate::verified`].
    verified: Mutex<VerifiedTxs>,
    /// How many transactions this validator has run the stateless checks on.
    stateless_checks: AtomicU64,
    /// The JSON of the latest block sent to a follower, with its height.
    last_block_json: Mutex<Option<(u64, Arc<str>)>>,
    /// Woken whenever the mempool admits a transaction, so a resting proposer builds at once.
    admitted: Notify,
    /// The sum of every balance, with the height it was summed at: summing walks every
    /// account, so the API does it once per block at most.
    balances: Mutex<Option<(u64, u128)>>,
    /// Why this validator cannot go on, once a part of it found out: the process stops
    /// with it rather than serving a chain that no longer advances here.
    fatal: tokio::sync::watch::Sender<Option<String>>,
}

/// Why a finalized block could not be applied: fatal for the validator.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A block skipped ahead of the ledger.
    #[error("finalized block {got} does not follow the ledger's height {height}")]
    Gap {
        /// The ledger's height.
        height: u64,
        /// The block's.
        got: u64,
    },
    /// The ledger refused or failed to store the block.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A lock was poisoned by a panic elsewhere.
    #[error("internal lock poisoned")]
    Poisoned,
}

impl Shared {
    /// Shared state over `ledger`, with `receipts` and mempool `limits`.
    pub fn new(
        genesis: Genesis,
        ledger: DynLedger,
        receipts: Receipts,
        limits: MempoolLimits,
    ) -> Arc<Shared> {
        let (finalized, _) = broadcast::channel(1024);
        // A generation holds a full mempool and a few full blocks verified but not yet
        // finalized, so a waiting transaction is forgotten only under heavy churn.
        let generation = limits.txs_max.saturating_add(4 * BLOCK_TXS_MAX);
        Arc::new(Shared {
            genesis,
            ledger: RwLock::new(ledger),
            mempool: Mutex::new(Mempool::new(limits)),
            receipts,
            finalized,
            certificates: Certificates::default(),
            snapshots: Snapshots::default(),
            verified: Mutex::new(VerifiedTxs::new(generation)),
            stateless_checks: AtomicU64::new(0),
            last_block_json: Mutex::new(None),
            admitted: Notify::new(),
            balances: Mutex::new(None),
            fatal: tokio::sync::watch::channel(None).0,
        })
    }

    /// Stop the validator because of `why` (the first reason given is kept).
    pub fn fail(&self, why: String) {
        self.fatal.send_if_modified(|fatal| {
            let first = fatal.is_none();
            if first {
                *fatal = Some(why);
            }
            first
        });
    }

    /// Resolves with the reason once [`Shared::fail`] was called.
    pub async fn failed(&self) -> String {
        let mut fatal = self.fatal.subscribe();
        match fatal.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The sender lives in `self`: it cannot be gone while this waits.
            Err(_) => std::future::pending().await,
        }
    }

    /// `block` as the JSON the event stream sends. Followers at the head all ask for the same
    /// block, so the latest one is built once and shared: a node, gateway or wallet each
    /// following would otherwise cost a serialization of every block.
    pub fn block_json(&self, block: &FinalizedBlock) -> Arc<str> {
        let build = || Arc::<str>::from(serde_json::to_string(block).unwrap_or_default());
        let Ok(mut last) = self.last_block_json.lock() else {
            return build();
        };
        match &*last {
            Some((height, json)) if *height == block.height => json.clone(),
            // Followers replaying old blocks do not evict the head's JSON.
            Some((height, _)) if *height > block.height => build(),
            _ => {
                // Built under the lock, so followers arriving meanwhile wait for it instead of
                // building it again.
                let json = build();
                *last = Some((block.height, json.clone()));
                json
            }
        }
    }

    /// Run the ledger's stateless checks (chain id, fields, signature) on the transactions not
    /// already checked here, their signatures in batches, counted; `hashes[i]` is `txs[i]`'s.
    /// One answer per transaction, in order; those checked before answer `Ok`.
    pub fn check_unverified<'a>(
        &self,
        txs: impl IntoIterator<Item = &'a SignedTx>,
        hashes: &[TxHash],
    ) -> Vec<Result<(), TxError>> {
        let known = self.verified(hashes);
        let unchecked = known.iter().filter(|k| **k == Checked::No).count() as u64;
        self.stateless_checks
            .fetch_add(unchecked, Ordering::Relaxed);
        peergrid_ledger::check_stateless_batch(txs.into_iter().zip(known), &self.genesis.chain_id)
    }

    /// How many transactions this validator has run the stateless checks on, at admission, in
    /// block verification and when applying.
    pub fn stateless_checks(&self) -> u64 {
        self.stateless_checks.load(Ordering::Relaxed)
    }

    /// Which of `hashes` already passed the stateless checks here. A poisoned lock answers
    /// "none", which only costs checking again.
    pub fn verified(&self, hashes: &[TxHash]) -> Vec<Checked> {
        let checked = |yes| if yes { Checked::Yes } else { Checked::No };
        match self.verified.lock() {
            Ok(set) => hashes.iter().map(|h| checked(set.contains(h))).collect(),
            Err(_) => vec![Checked::No; hashes.len()],
        }
    }

    /// Remember that the transactions with `hashes` passed the stateless checks here. Only for
    /// hashes computed here from transactions checked here.
    pub fn mark_verified(&self, hashes: impl IntoIterator<Item = TxHash>) {
        if let Ok(mut set) = self.verified.lock() {
            for h in hashes {
                set.insert(h);
            }
        }
    }

    /// How many transaction hashes are remembered as verified.
    pub fn verified_len(&self) -> usize {
        self.verified.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Read the ledger state.
    pub fn with_state<T>(&self, f: impl FnOnce(&peergrid_ledger::State) -> T) -> Option<T> {
        let ledger = self.ledger.read().ok()?;
        Some(f(ledger.state()))
    }

    /// Admit a transaction to the mempool.
    pub fn submit(&self, tx: SignedTx) -> Result<TxHash, MempoolError> {
        let hash = tx.hash();
        self.submit_batch(vec![(tx, hash)])
            .pop()
            .unwrap_or(Err(MempoolError::Full { txs: 0, bytes: 0 }))
    }

    /// Admit transactions that arrived together (an API batch, a gossip message), each with
    /// its hash; one answer per transaction, in order, each what [`Shared::submit`] would say.
    ///
    /// The signatures not yet checked here are checked together in batches, before taking any
    /// lock: the signature is the costly part, and neither block proposal nor the finalizer
    /// should wait for it.
    pub fn submit_batch(&self, txs: Vec<(SignedTx, TxHash)>) -> Vec<Result<TxHash, MempoolError>> {
        let hashes: Vec<TxHash> = txs.iter().map(|(_, h)| *h).collect();
        let stateless = self.check_unverified(txs.iter().map(|(tx, _)| tx), &hashes);
        let (Ok(ledger), Ok(mut pool)) = (self.ledger.read(), self.mempool.lock()) else {
            return txs
                .iter()
                .map(|_| Err(MempoolError::Full { txs: 0, bytes: 0 }))
                .collect();
        };
        let mut admitted = Vec::with_capacity(txs.len());
        let results: Vec<Result<TxHash, MempoolError>> = txs
            .into_iter()
            .zip(stateless)
            .map(|((tx, hash), checked)| {
                checked?;
                let hash = pool.insert_checked(tx, hash, ledger.state())?;
                admitted.push(hash);
                Ok(hash)
            })
            .collect();
        drop(pool);
        // Under the ledger's read lock, so that finalizing these transactions, which forgets
        // them, cannot happen before they are remembered.
        let any = !admitted.is_empty();
        self.mark_verified(admitted);
        drop(ledger);
        if any {
            self.admitted.notify_waiters();
        }
        results
    }

    /// The sum of every balance in `state` (pools included), summed once per height.
    pub fn total_balances(&self, state: &peergrid_ledger::State) -> u128 {
        let height = state.height();
        let Ok(mut cache) = self.balances.lock() else {
            return state.total_balances();
        };
        match *cache {
            Some((h, sum)) if h == height => sum,
            _ => {
                let sum = state.total_balances();
                *cache = Some((height, sum));
                sum
            }
        }
    }

    /// Resolves at the next admission to the mempool; it counts from this call, not from the
    /// first poll, so an admission between a check and the wait is not missed.
    pub fn admitted(&self) -> Notified<'_> {
        self.admitted.notified()
    }

    /// Where `hash` is.
    pub fn status(&self, hash: &TxHash) -> TxStatus {
        if let Some((height, index)) = self.receipts.locate(hash)
            && let Some(tx) = self
                .receipts
                .block(height)
                .and_then(|b| b.txs.into_iter().nth(index))
        {
            return TxStatus::of(height, &tx.result);
        }
        if self
            .mempool
            .lock()
            .map(|p| p.contains(hash))
            .unwrap_or(false)
        {
            TxStatus::Pending
        } else {
            TxStatus::Unknown
        }
    }

    /// The state certificate of `height`: formed lately, or an epoch's last kept for good.
    pub fn certificate(&self, height: u64) -> Option<StateCertificate> {
        self.certificates
            .recent(height)
            .or_else(|| self.receipts.certificate(height))
    }

    /// Apply a finalized block exactly once: a block the ledger already holds is skipped.
    pub fn apply_finalized(
        &self,
        block: &Block,
        digest: &str,
    ) -> Result<Option<Arc<FinalizedBlock>>, ApplyError> {
        let mut ledger = self.ledger.write().map_err(|_| ApplyError::Poisoned)?;
        let height = ledger.state().height();
        if block.height <= height {
            return Ok(None);
        }
        if block.height != height + 1 {
            return Err(ApplyError::Gap {
                height,
                got: block.height,
            });
        }
        let ctx = BlockContext {
            height: block.height,
            time_ms: block.time_ms,
        };
        let hashes = block.tx_hashes();
        // Transactions checked here at admission or in block verification apply without a
        // second signature check; any other (a block received by backfill, say) is checked
        // by the ledger, in batches.
        let known: Vec<KnownTx> = self
            .verified(hashes)
            .into_iter()
            .zip(hashes)
            .zip(block.tx_lens())
            .map(|((checked, hash), len)| KnownTx {
                hash: *hash,
                len,
                checked,
            })
            .collect();
        let unchecked = known.iter().filter(|k| k.checked == Checked::No).count() as u64;
        self.stateless_checks
            .fetch_add(unchecked, Ordering::Relaxed);
        let mut summary = None;
        ledger.execute_block_with(ctx, &block.txs, &known, |outcome: &BlockOutcome| {
            let finalized = FinalizedBlock {
                height: outcome.height,
                digest: digest.to_string(),
                time_ms: outcome.time_ms,
                root: outcome.root,
                txs: outcome
                    .receipts
                    .iter()
                    .zip(&block.txs)
                    .map(|(r, tx)| TxOutcome {
                        hash: r.hash,
                        signer: tx.body.signer,
                        result: r.result.clone(),
                    })
                    .collect(),
                end_events: outcome.end_events.clone(),
            };
            self.receipts.record(&finalized)?;
            summary = Some(Arc::new(finalized));
            Ok(())
        })?;
        // The state at an epoch's last block, for validators that join once the blocks
        // before it are pruned: pinned now, while no later block can change it, and read
        // after the lock is let go.
        let len = self.genesis.params.epoch_blocks.max(1);
        if self.snapshots.enabled() && (block.height + 1).is_multiple_of(len) {
            match ledger.store().pinned() {
                Ok(load) => self.snapshots.write(self.genesis.hash(), load),
                Err(e) => {
                    tracing::warn!(height = block.height, error = %e, "cannot read the state for a snapshot")
                }
            }
        }
        if let Ok(mut pool) = self.mempool.lock() {
            if let Some(f) = &summary {
                pool.remove_finalized(f.txs.iter().map(|t| &t.hash));
            }
            let signers: Vec<AccountId> = block.txs.iter().map(|t| t.body.signer).collect();
            pool.prune(ledger.state(), signers.iter());
            pool.sweep(ledger.state());
        }
        // A finalized transaction's nonce is used: it can only appear again to be rejected.
        if let Ok(mut set) = self.verified.lock() {
            for h in hashes {
                set.remove(h);
            }
        }
        drop(ledger);
        if let Some(s) = &summary {
            // Nobody listening is fine.
            let _ = self.finalized.send(s.clone());
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::{Amount, Hash, Keypair};
    use peergrid_ledger::Event;

    fn sample(height: u64) -> FinalizedBlock {
        let a = Keypair::from_seed([1; 32]).account();
        let b = Keypair::from_seed([2; 32]).account();
        FinalizedBlock {
            height,
            digest: "ab".repeat(32),
            time_ms: 1_000 + height,
            root: Hash::of(b"root"),
            txs: vec![
                TxOutcome {
                    hash: Hash::of(b"one"),
                    signer: a,
                    result: Ok(vec![
                        Event::FeeBurned {
                            account: a,
                            amount: Amount(1_234),
                        },
                        Event::Transferred {
                            from: a,
                            to: b,
                            amount: Amount::tokens(5),
                        },
                    ]),
                },
                TxOutcome {
                    hash: Hash::of(b"two"),
                    signer: b,
                    result: Err(TxError::BadSignature { signer: b }),
                },
            ],
            end_events: Vec::new(),
        }
    }

    #[test]
    fn receipts_round_trip_in_binary_and_earlier_json_ones_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let receipts = Receipts::open(&dir.path().join("r.redb")).expect("open");
        let block = sample(2);
        receipts.record(&block).expect("record");
        assert_eq!(receipts.block(2), Some(block.clone()));
        assert_eq!(receipts.locate(&Hash::of(b"two")), Some((2, 1)));
        assert_eq!(receipts.block(3), None);

        // A block an earlier version stored as JSON.
        let old = sample(1);
        let db = receipts.db.as_ref().expect("redb");
        let txn = db.begin_write().expect("write");
        {
            let mut table = txn.open_table(BLOCKS_JSON).expect("table");
            let json = serde_json::to_vec(&old).expect("json");
            table.insert(1, json.as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
        assert_eq!(receipts.block(1), Some(old));
        assert_eq!(receipts.block(2), Some(block));
    }

    #[test]
    fn pruning_removes_old_blocks_and_their_transactions_and_keeps_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.redb");
        let receipts = Receipts::open(&path).expect("open");
        let with_tx = |height: u64| {
            let mut b = sample(height);
            b.txs.truncate(1);
            b.txs[0].hash = Hash::of(&height.to_be_bytes());
            b
        };
        for h in 1..=10 {
            receipts.record(&with_tx(h)).expect("record");
        }
        // A transaction refused in block 2 keeps its nonce: the same bytes sent again are
        // finalized in block 8.
        let mut again = with_tx(8);
        again.txs.push(with_tx(2).txs[0].clone());
        receipts.record(&again).expect("record");
        let handoff = StateCertificate {
            height: 3,
            epoch: 0,
            block: Hash::of(b"block"),
            root: Hash::of(b"root"),
            next_set: Hash::ZERO,
            signatures: Vec::new(),
        };
        receipts.record_certificate(&handoff).expect("certificate");
        // At most `most` per pass: two passes to reach 6.
        assert_eq!(receipts.prune_below(6, 3).expect("prune"), 3);
        assert_eq!(receipts.first_kept(), Some(4));
        assert_eq!(receipts.prune_below(6, 3).expect("prune"), 2);
        assert_eq!(receipts.prune_below(6, 3).expect("prune"), 0);
        drop(receipts);
        let receipts = Receipts::open(&path).expect("reopen");
        assert_eq!(receipts.first_kept(), Some(6));
        for h in 1..=10 {
            let kept = h >= 6;
            assert_eq!(receipts.block(h).is_some(), kept, "block {h}");
            let located = receipts.locate(&Hash::of(&h.to_be_bytes()));
            assert_eq!(
                located.is_some(),
                kept || h == 2,
                "transaction of block {h}"
            );
        }
        assert_eq!(
            receipts.locate(&Hash::of(&2u64.to_be_bytes())),
            Some((8, 1)),
            "a transaction finalized again is found where it was last"
        );
        assert_eq!(receipts.certificate(3), Some(handoff));
    }

    #[test]
    fn followers_at_the_head_share_one_json_of_a_block() {
        let d = peergrid_ledger::Devnet::generate("json", 1, 1_000).expect("keys");
        let store: Box<dyn peergrid_ledger::Store + Send + Sync> =
            Box::new(peergrid_ledger::MemoryStore::default());
        let ledger: DynLedger = peergrid_ledger::Ledger::open(store, &d.genesis).expect("ledger");
        let shared = Shared::new(
            d.genesis.clone(),
            ledger,
            Receipts::memory(),
            MempoolLimits::default(),
        );
        let (head, old) = (sample(5), sample(2));
        let first = shared.block_json(&head);
        assert_eq!(*first, serde_json::to_string(&head).expect("json"));
        assert!(Arc::ptr_eq(&first, &shared.block_json(&head)), "built once");
        let replayed = shared.block_json(&old);
        assert_eq!(*replayed, serde_json::to_string(&old).expect("json"));
        assert!(
            Arc::ptr_eq(&first, &shared.block_json(&head)),
            "a follower replaying an older block leaves the head's JSON in place"
        );
        let next = sample(6);
        assert_eq!(
            *shared.block_json(&next),
            serde_json::to_string(&next).expect("json")
        );
    }

    #[test]
    fn the_api_still_sees_account_ids_hashes_and_amounts_as_text() {
        let block = sample(2);
        let json = serde_json::to_value(&block).expect("json");
        let a = Keypair::from_seed([1; 32]).account();
        assert_eq!(json["txs"][0]["signer"], a.to_string());
        assert_eq!(json["txs"][0]["hash"], Hash::of(b"one").to_string());
        assert_eq!(json["txs"][0]["result"]["Ok"][0]["amount"], "0.0001234");
    }
}
