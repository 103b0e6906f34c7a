//! The consensus application: build blocks from the mempool and check the blocks of others.
//!
//! Consensus only orders blocks; the ledger applies them once finalized. So a
//! proposal takes transactions that can apply on the finalized state, minus those
//! already in the unfinalized blocks it builds on, and verification checks what
//! every validator can check without executing: height and time against the
//! parent and the local clock, limits, and every transaction's fields and signature.
//! A transaction that then fails against the state is rejected in its block with a
//! receipt and changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_consensus::Heightable;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::{Digested, Digestible, ed25519::PublicKey, sha256::Digest};
use commonware_parallel::Sequential;
use commonware_runtime::Clock;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::block::{BLOCK_TX_BYTES_MAX, BLOCK_TXS_MAX, Block};
use crate::shared::Shared;

/// How far ahead of a validator's clock a block's time may be.
pub const BLOCK_TIME_AHEAD_MAX: Duration = Duration::from_secs(5);
/// How many unfinalized ancestors a proposer inspects to avoid repeating their transactions.
const UNFINALIZED_DEPTH_MAX: usize = 64;

/// The application handed to marshal.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
    txs_per_block: usize,
}

impl App {
    /// An application over `shared`, proposing at most `txs_per_block` transactions.
    pub fn new(shared: Arc<Shared>, txs_per_block: usize) -> App {
        App {
            shared,
            txs_per_block: txs_per_block.min(BLOCK_TXS_MAX),
        }
    }
}

fn now_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<E: Clock + Send + Sync + 'static> commonware_consensus::Application<E> for App {
    type SigningScheme = Scheme;
    type Context = Context<Digest, PublicKey>;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, _): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
        _: (),
    ) -> Option<Digested<Self::Block>> {
        let parent = ancestry.next().await?;
        let finalized = self.shared.with_state(|s| s.height())?;
        // Transactions in blocks between the finalized tip and the parent are already on their way.
        let mut exclude = HashSet::new();
        let mut cursor = Some(parent.clone());
        let mut depth = 0;
        while let Some(b) = cursor {
            if b.height().get() <= finalized || depth >= UNFINALIZED_DEPTH_MAX {
                break;
            }
            exclude.extend(b.inner().txs.iter().map(|t| t.hash()));
            depth += 1;
            cursor = ancestry.next().await;
        }
        let txs = {
            let ledger = self.shared.ledger.read().ok()?;
            let pool = self.shared.mempool.lock().ok()?;
            pool.select(
                ledger.state(),
                self.txs_per_block,
                BLOCK_TX_BYTES_MAX,
                &exclude,
            )
        };
        let parent_block = parent.inner();
        let time_ms = now_ms(&clock).max(parent_block.time_ms + 1);
        debug!(
            height = parent_block.height + 1,
            txs = txs.len(),
            "proposing"
        );
        let block = Block::new(parent.digest(), parent_block.height + 1, time_ms, txs);
        Some(Digested::compute(block, &Sequential).await)
    }

    async fn verify(
        &mut self,
        (clock, _): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        let Some(block) = ancestry.next().await else {
            return false;
        };
        let Some(parent) = ancestry.next().await else {
            return false;
        };
        let (b, p) = (block.inner(), parent.inner());
        if b.time_ms <= p.time_ms {
            warn!(
                height = b.height,
                "refusing block: its time is not after its parent's"
            );
            return false;
        }
        let ahead_max = now_ms(&clock) + BLOCK_TIME_AHEAD_MAX.as_millis() as u64;
        if b.time_ms > ahead_max {
            warn!(
                height = b.height,
                time_ms = b.time_ms,
                "refusing block: its time is ahead of this validator's clock"
            );
            return false;
        }
        let chain_id = self.shared.genesis.chain_id.clone();
        let mut seen = HashSet::with_capacity(b.txs.len());
        for tx in &b.txs {
            if !seen.insert(tx.hash()) {
                warn!(
                    height = b.height,
                    "refusing block: a transaction appears twice"
                );
                return false;
            }
            if let Err(e) = peergrid_ledger::check_stateless(tx, &chain_id) {
                warn!(height = b.height, error = %e, "refusing block: it carries an invalid transaction");
                return false;
            }
        }
        true
    }
}
