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
use tracing::{error, info};

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
pub async fn run(
    shared: Arc<Shared>,
    mut blocks: mpsc::UnboundedReceiver<(Digested<Block>, Exact)>,
) {
    while let Some((block, ack)) = blocks.next().await {
        let digest = block.digest();
        match shared.apply_finalized(block.inner(), &hex::encode(digest.as_ref())) {
            Ok(Some(summary)) => {
                info!(height = summary.height, txs = summary.txs.len(), root = %summary.root, "finalized");
                ack.acknowledge();
            }
            Ok(None) => ack.acknowledge(),
            Err(e) => {
                // Not acknowledging stops marshal: a validator that cannot apply must not vote on.
                error!(height = block.inner().height, error = %e, "cannot apply finalized block; stopping");
                return;
            }
        }
    }
}
