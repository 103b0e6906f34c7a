//! A ledger: the state plus its store, advanced one block at a time.

use serde::{Deserialize, Serialize};

use peergrid_core::{Hash, SignedTx, TxHash};

use crate::apply::{BlockContext, Checked, Event, TxError, check_stateless_batch};
use crate::genesis::Genesis;
use crate::state::State;
use crate::store::{Store, StoreError};

/// Why a block could not be applied or the ledger opened. Unlike a [`TxError`], this is the caller's fault or the disk's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Blocks apply in order, each once.
    #[error("block height {got} does not follow the ledger's height {height}")]
    WrongHeight {
        /// The ledger's height.
        height: u64,
        /// The block's.
        got: u64,
    },
    /// Ledger time only moves forward.
    #[error("block time {got} ms is not after the previous block's {previous} ms")]
    TimeNotAfterParent {
        /// The parent's time.
        previous: u64,
        /// The block's.
        got: u64,
    },
    /// The store's data belongs to another chain.
    #[error(
        "the data directory holds chain {stored:?} (genesis {stored_genesis}), not {expected:?} (genesis {expected_genesis}); use another directory or remove it"
    )]
    WrongChain {
        /// In the store.
        stored: String,
        /// Its genesis hash.
        stored_genesis: Hash,
        /// Asked for.
        expected: String,
        /// Its genesis hash.
        expected_genesis: Hash,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A block's commit failed earlier; memory and disk may differ until the ledger is reopened.
    #[error(
        "a previous block failed to commit to disk; reopen the ledger to resume from the last committed block"
    )]
    Poisoned,
    /// The genesis breaks a rule.
    #[error(transparent)]
    Genesis(#[from] crate::genesis::GenesisError),
}

/// What a validator already knows of one transaction of a block; see
/// [`Ledger::execute_block_with`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KnownTx {
    /// [`SignedTx::hash`] of the transaction.
    pub hash: TxHash,
    /// Length of its canonical encoding.
    pub len: usize,
    /// Whether it already passed [`crate::check_stateless`] on this machine.
    pub checked: Checked,
}

/// The outcome of one transaction in a block.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TxReceipt {
    /// The transaction's hash.
    pub hash: TxHash,
    /// Its events, or why it was rejected.
    pub result: Result<Vec<Event>, TxError>,
}

/// What applying a block produced.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlockOutcome {
    /// The block's height.
    pub height: u64,
    /// Its ledger time, ms.
    pub time_ms: u64,
    /// The state root after it.
    pub root: Hash,
    /// One receipt per transaction, in block order.
    pub receipts: Vec<TxReceipt>,
    /// Events of the end-of-block logic.
    pub end_events: Vec<Event>,
}

/// What to do with a ledger file this peergrid cannot open as it is.
const OLDER_OR_DAMAGED: &str = "start it over, e.g. `peergrid devnet --fresh`; otherwise the \
     file is damaged: restore it, or remove it and a validator rebuilds it from its block archive";

/// The state machine with durable storage.
pub struct Ledger<S: Store> {
    state: State,
    store: S,
    /// Set when a commit to the store failed: the state in memory is then ahead of the disk.
    poisoned: bool,
}

impl<S: Store> Ledger<S> {
    /// Open the ledger in `store`: resume from its last committed block, or start from `genesis` if empty.
    pub fn open(mut store: S, genesis: &Genesis) -> Result<Self, LedgerError> {
        genesis.check()?;
        let state = match store.load()? {
            Some(snapshot) => {
                let state = State::from_entries(
                    snapshot
                        .entries
                        .iter()
                        .map(|(t, k, v)| (*t, k.as_slice(), v.as_slice())),
                )
                .map_err(|e| {
                    StoreError::Corrupt(format!(
                        "{e} (a ledger written by an older peergrid may hold records in an \
                         older shape: {OLDER_OR_DAMAGED})"
                    ))
                })?;
                if state.root() != snapshot.root || state.height() != snapshot.height {
                    return Err(StoreError::Corrupt(format!(
                        "stored root {} at height {} but the entries hash to {} at height {} \
                         (a ledger written by a peergrid from before 2026-11-26 has an older kind \
                         of root: {OLDER_OR_DAMAGED})",
                        snapshot.root,
                        snapshot.height,
                        state.root(),
                        state.height()
                    ))
                    .into());
                }
                let config = state.config();
                if config.genesis_hash != genesis.hash() {
                    return Err(LedgerError::WrongChain {
                        stored: config.chain_id.clone(),
                        stored_genesis: config.genesis_hash,
                        expected: genesis.chain_id.clone(),
                        expected_genesis: genesis.hash(),
                    });
                }
                state
            }
            None => {
                let mut state = State::from_genesis(genesis);
                let (root, changes) = state.commit();
                store.commit(0, root, &changes)?;
                state
            }
        };
        Ok(Ledger {
            state,
            store,
            poisoned: false,
        })
    }

    /// The state as of the last committed block.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Apply a block's transactions in order, run end-of-block logic, and commit durably;
    /// every transaction is checked in full. [`Ledger::execute_block_with`] is the same with
    /// what the caller already knows of the transactions.
    pub fn execute_block(
        &mut self,
        ctx: BlockContext,
        txs: &[SignedTx],
    ) -> Result<BlockOutcome, LedgerError> {
        self.execute_block_with(ctx, txs, &[], |_| Ok(()))
    }

    /// Like [`Ledger::execute_block`], where `known[i]` is what the caller already knows of
    /// `txs[i]` (its hash and encoded length, so that they are not computed again, and whether it
    /// already passed [`crate::check_stateless`] here, so that its signature is not checked
    /// again), and calling `before_commit` with the outcome before the block is committed, so
    /// that records derived from it (receipts, indexes) are never missing for a committed block.
    ///
    /// Every transaction not in `known` (including any beyond its length) is checked in full. A
    /// wrong hash or length gives wrong receipts and fees, and marking an unchecked transaction
    /// [`Checked::Yes`] lets a forged one apply: only pass what was computed here from these
    /// transactions. `before_commit` must be idempotent: after a crash it runs again.
    pub fn execute_block_with(
        &mut self,
        ctx: BlockContext,
        txs: &[SignedTx],
        known: &[KnownTx],
        before_commit: impl FnOnce(&BlockOutcome) -> Result<(), StoreError>,
    ) -> Result<BlockOutcome, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let height = self.state.height();
        if ctx.height != height + 1 {
            return Err(LedgerError::WrongHeight {
                height,
                got: ctx.height,
            });
        }
        let previous = self.state.time_ms();
        if ctx.time_ms <= previous {
            return Err(LedgerError::TimeNotAfterParent {
                previous,
                got: ctx.time_ms,
            });
        }
        self.state.begin_block(ctx.time_ms);
        // The stateless checks depend on nothing the block changes, so those not done before
        // are all done up front, their signatures in batches.
        let checked = txs
            .iter()
            .enumerate()
            .map(|(i, tx)| (tx, known.get(i).map_or(Checked::No, |k| k.checked)));
        let stateless = check_stateless_batch(checked, self.state.chain_id());
        let receipts = txs
            .iter()
            .zip(stateless)
            .enumerate()
            .map(|(i, (tx, stateless))| {
                let (hash, len) = match known.get(i) {
                    Some(k) => (k.hash, k.len),
                    None => (tx.hash(), tx.encode().len()),
                };
                TxReceipt {
                    hash,
                    result: stateless.and_then(|()| self.state.apply_checked(tx, len, &ctx)),
                }
            })
            .collect();
        let end_events = self.finish_block(&ctx);
        // Every token is accounted for: a rule that creates or destroys one without counting
        // it as minted or burned is caught at the block that did it, in debug builds (tests
        // and debug devnets), where summing every balance per block is affordable.
        debug_assert!(
            self.state.supply_is_conserved(),
            "supply identity broken at height {}: {:?} against balances summing to {}",
            ctx.height,
            self.state.supply(),
            self.state.total_balances()
        );
        let (root, changes) = self.state.commit();
        let outcome = BlockOutcome {
            height: ctx.height,
            time_ms: ctx.time_ms,
            root,
            receipts,
            end_events,
        };
        if let Err(e) =
            before_commit(&outcome).and_then(|()| self.store.commit(ctx.height, root, &changes))
        {
            // The state in memory already holds the block; only reopening can resync it with disk.
            self.poisoned = true;
            return Err(e.into());
        }
        Ok(outcome)
    }

    fn finish_block(&mut self, ctx: &BlockContext) -> Vec<Event> {
        let events = self.state.end_block(ctx.height, ctx.time_ms);
        let g = self.state.globals_mut();
        g.height = ctx.height;
        g.time_ms = ctx.time_ms;
        events
    }
}
