//! Receives finalized blocks from marshal, in order, and applies them to the ledger.

use std::sync::Arc;

use commonware_actor::Feedback;
use commonware_consensus::Reporter;
use commonware_consensus::marshal::Update;
use commonware_cryptography::{Digested, Digestible};
use commonware_utils::Acknowledgement;
use commonware_utils::acknowledgement::Exact;
use futures::StreamExt;
use futures::channel::mpsc;
use tracing::{debug, error, info, warn};

use crate::block::Block;
use crate::shared::Shared;

/// The reporter marshal delivers finalized blocks to; it hands them to [`run`].
#[derive(Clone)]
pub struct Finalizer {
    sender: mpsc::UnboundedSender<(Digested<Block>, Exact)>,
}

impl Finalizer {
    /// A finalizer and the receiving end for [`run`]. Marshal bounds the blocks in flight
    /// (its `max_pending_acks`), so the channel never grows past that.
    pub fn new() -> (Finalizer, mpsc::UnboundedReceiver<(Digested<Block>, Exact)>) {
        let (sender, receiver) = mpsc::unbounded();
        (Finalizer { sender }, receiver)
    }
}

impl Reporter for Finalizer {
    type Activity = Update<Block>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match activity {
            Update::Block(block, ack) => {
                if self.sender.unbounded_send((block, ack)).is_err() {
                    return Feedback::Closed;
                }
                Feedback::Ok
            }
            Update::Tip(..) => Feedback::Ok,
        }
    }
}

/// Apply blocks as they arrive; acknowledge each only once the ledger committed it.
///
/// `archived` reads a finalized block from this validator's own archive by height. A
/// ledger behind the blocks marshal delivers (its file lost or restored from an old
/// backup, while marshal remembers having delivered them) is rebuilt from it first.
pub async fn run<F, Fut>(
    shared: Arc<Shared>,
    mut blocks: mpsc::UnboundedReceiver<(Digested<Block>, Exact)>,
    archived: F,
) where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Option<Digested<Block>>>,
{
    while let Some((block, ack)) = blocks.next().await {
        if let Err(e) = catch_up(&shared, block.inner().height, &archived).await {
            error!(height = block.inner().height, error = %e, "cannot rebuild the ledger from the archive; stopping (delete this validator's data directory to resync it from its peers)");
            shared.fail(format!(
                "cannot rebuild the ledger from the archive at height {}: {e}; delete this \
                 validator's data directory to resync it from its peers",
                block.inner().height
            ));
            return;
        }
        let digest = block.digest();
        match shared.apply_finalized(block.inner(), &hex::encode(digest.as_ref())) {
            Ok(Some(summary)) => {
                // An idle chain finalizes empty blocks many times a second: only blocks
                // that carry transactions are worth an operator's log at info.
                if summary.txs.is_empty() {
                    debug!(height = summary.height, root = %summary.root, "finalized");
                } else {
                    info!(height = summary.height, txs = summary.txs.len(), root = %summary.root, "finalized");
                }
                ack.acknowledge();
            }
            Ok(None) => ack.acknowledge(),
            Err(e) => {
                // Not acknowledging stops marshal: a validator that cannot apply must not vote on.
                error!(height = block.inner().height, error = %e, "cannot apply finalized block; stopping");
                shared.fail(format!(
                    "cannot apply finalized block {}: {e}",
                    block.inner().height
                ));
                return;
            }
        }
    }
}

/// Apply, from the archive, every finalized block between the ledger's height and `next`.
async fn catch_up<F, Fut>(shared: &Shared, next: u64, archived: &F) -> Result<(), String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Option<Digested<Block>>>,
{
    let Some(height) = shared.with_state(|s| s.height()) else {
        return Err("the ledger lock is poisoned".into());
    };
    if height + 1 >= next {
        return Ok(());
    }
    warn!(
        ledger = height,
        delivered = next,
        "the ledger is behind the finalized blocks; replaying them from the archive"
    );
    for h in height + 1..next {
        let Some(block) = archived(h).await else {
            return Err(format!("finalized block {h} is not in the archive"));
        };
        if block.inner().height != h {
            return Err(format!(
                "the archive returned block {} for height {h}",
                block.inner().height
            ));
        }
        let digest = hex::encode(block.digest().as_ref());
        shared
            .apply_finalized(block.inner(), &digest)
            .map_err(|e| e.to_string())?;
    }
    info!(height = next - 1, "ledger rebuilt from the archive");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::MempoolLimits;
    use crate::shared::Receipts;
    use commonware_cryptography::sha256::Digest;

    #[tokio::test]
    async fn a_block_that_cannot_be_applied_stops_the_validator_with_the_reason() {
        let d = peergrid_ledger::Devnet::generate("fatal", 1, 1_000).expect("keys");
        let store: Box<dyn peergrid_ledger::Store + Send + Sync> =
            Box::new(peergrid_ledger::MemoryStore::default());
        let ledger = peergrid_ledger::Ledger::open(store, &d.genesis).expect("ledger");
        let shared = Shared::new(
            d.genesis.clone(),
            ledger,
            Receipts::memory(),
            MempoolLimits::default(),
        );
        // Block 5 arrives while the ledger is at 0, and the archive lost blocks 1 to 4.
        let block = Block::new(Digest::from([9; 32]), 5, 2_000, Vec::new());
        let digest = block.digest();
        let (finalizer, blocks) = Finalizer::new();
        let (ack, _waiter) = Exact::handle();
        finalizer
            .sender
            .unbounded_send((Digested::precomputed(block, digest), ack))
            .expect("send");
        let task = tokio::spawn(run(shared.clone(), blocks, |_| async { None }));
        let why = tokio::time::timeout(std::time::Duration::from_secs(10), shared.failed())
            .await
            .expect("the finalizer gave up and said why");
        assert!(
            why.contains("finalized block 1 is not in the archive"),
            "{why}"
        );
        task.await.expect("the finalizer returned");
        shared.fail("a later reason".into());
        assert_eq!(shared.failed().await, why, "the first reason is kept");
    }
}
