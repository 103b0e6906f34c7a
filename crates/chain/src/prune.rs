//! Bounded disk: a validator keeps the finalized blocks of a window below the newest, with
//! their certificates and receipts, and prunes the rest as the chain grows.
//!
//! The window is at least two epochs, so the block that ends the previous epoch (from
//! which the current epoch's consensus starts) is always kept. Each epoch's last state
//! certificate is kept for good (they are small, and light clients follow the validator
//! sets through them). Archive mode (`archive = true`) prunes nothing.

use std::sync::Arc;

use commonware_consensus::marshal;
use commonware_consensus::marshal::standard::Standard;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::types::Height;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::block::Block;
use crate::shared::Shared;

/// Prune each time the chain grows by this many blocks (or a quarter of a smaller window).
pub const PRUNE_EVERY: u64 = 256;
/// Most receipts removed in one pass, so a first pass on a long chain does not hold the
/// receipts store for long; the next passes remove the rest.
const RECEIPTS_PER_PASS: usize = 4096;

/// The window actually kept for `keep` asked: at least two epochs.
pub fn window(keep: u64, epoch_blocks: u64) -> u64 {
    keep.max(epoch_blocks.saturating_mul(2))
}

/// Prune below the window as blocks apply, until the chain stops.
pub async fn run(
    shared: Arc<Shared>,
    marshal: marshal::core::Mailbox<Scheme, Standard<Block>>,
    keep: u64,
) {
    let mut applied = shared.finalized.subscribe();
    let every = (keep / 4).clamp(1, PRUNE_EVERY);
    let mut last = 0;
    loop {
        let height = match applied.recv().await {
            Ok(block) => block.height,
            Err(RecvError::Lagged(_)) => shared.with_state(|s| s.height()).unwrap_or(0),
            Err(RecvError::Closed) => return,
        };
        if height < last + every || height <= keep {
            continue;
        }
        last = height;
        let below = height - keep;
        marshal.prune(Height::new(below));
        match shared.receipts.prune_below(below, RECEIPTS_PER_PASS) {
            Ok(0) => {}
            Ok(n) => debug!(below, receipts = n, "pruned"),
            Err(e) => warn!(below, error = %e, "cannot prune receipts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_covers_two_epochs() {
        assert_eq!(window(100_000, 10_000), 100_000);
        assert_eq!(window(1_000, 10_000), 20_000);
        assert_eq!(window(10, 20), 40);
    }
}
