//! The consensus application: build blocks from the mempool and check the blocks of others.
//!
//! Consensus only orders blocks; the ledger applies them once finalized. So a
//! proposal takes transactions that can apply on the finalized state, minus those
//! already in the unfinalized blocks it builds on, and verification checks what
//! every validator can check without executing: height and time against the
//! parent and the local clock, limits, and every transaction's fields and signature.
//! It also refuses transactions that can never apply whatever the unfinalized blocks
//! hold (a nonce the finalized state has used, an expiry before the block's time, a
//! transaction already in an unfinalized ancestor), so a faulty leader cannot fill
//! blocks with replays of valid signatures. A transaction that then fails against the
//! state is rejected in its block with a receipt and changes nothing.

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
use peergrid_core::{SignedTx, TxHash};
use tracing::{debug, warn};

use crate::block::{BLOCK_TX_BYTES_MAX, BLOCK_TXS_MAX, Block};
use crate::shared::Shared;

/// How far ahead of a validator's clock a block's time may be.
pub const BLOCK_TIME_AHEAD_MAX: Duration = Duration::from_secs(5);
/// How many unfinalized ancestors a proposer inspects to avoid repeating their transactions.
const UNFINALIZED_DEPTH_MAX: usize = 64;

/// A change a faulty leader makes to each block it proposes, given the parent: for fault
/// simulations of a Byzantine proposer. Honest validators run without one.
pub type Tamper = Arc<dyn Fn(&Block, Block) -> Block + Send + Sync>;

/// The application handed to marshal.
#[derive(Clone)]
pub struct App {
    shared: Arc<Shared>,
    txs_per_block: usize,
    idle_block_ms: u64,
    tamper: Option<Tamper>,
}

impl App {
    /// An application over `shared`, proposing at most `txs_per_block` transactions, and an
    /// empty block only once its parent is the genesis's `idle_block_ms` old.
    pub fn new(shared: Arc<Shared>, txs_per_block: usize) -> App {
        let idle_block_ms = shared.genesis.params.idle_block_ms;
        App {
            shared,
            txs_per_block: txs_per_block.min(BLOCK_TXS_MAX),
            idle_block_ms,
            tamper: None,
        }
    }

    /// The same application, whose proposals `tamper` changes before they are sent.
    pub fn with_tamper(self, tamper: Option<Tamper>) -> App {
        App { tamper, ..self }
    }

    /// The transactions a block at `time_ms` on the finalized state would carry.
    fn select(&self, time_ms: u64, exclude: &HashSet<TxHash>) -> Option<Vec<SignedTx>> {
        let ledger = self.shared.ledger.read().ok()?;
        let pool = self.shared.mempool.lock().ok()?;
        Some(pool.select(
            ledger.state(),
            time_ms,
            self.txs_per_block,
            BLOCK_TX_BYTES_MAX,
            exclude,
        ))
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
        let exclude = self.in_flight(parent.clone(), &mut ancestry).await?;
        let parent_block = parent.inner();
        // With nothing to carry, rest until the parent is `idle_block_ms` old, waking at the
        // first admission: an idle chain then costs one block per rest, not dozens a second.
        // Consensus gives up on this proposal if the wait outlives its leader timeout, which
        // the engine lengthens by the rest.
        let rest_until = parent_block.time_ms.saturating_add(self.idle_block_ms);
        let (time_ms, txs) = loop {
            let admitted = self.shared.admitted();
            let time_ms = now_ms(&clock).max(parent_block.time_ms + 1);
            let txs = self.select(time_ms, &exclude)?;
            if !txs.is_empty() || time_ms >= rest_until {
                break (time_ms, txs);
            }
            let rest = Duration::from_millis(rest_until - time_ms);
            futures::select! {
                _ = futures::FutureExt::fuse(admitted) => {}
                _ = futures::FutureExt::fuse(clock.sleep(rest)) => {}
            }
        };
        debug!(
            height = parent_block.height + 1,
            txs = txs.len(),
            "proposing"
        );
        let mut block = Block::new(parent.digest(), parent_block.height + 1, time_ms, txs);
        if let Some(tamper) = &self.tamper {
            block = tamper(parent_block, block);
        }
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
        if !self.check_block(block.inner(), parent.inner(), now_ms(&clock)) {
            return false;
        }
        let Some(in_flight) = self.in_flight(parent, &mut ancestry).await else {
            return false;
        };
        self.check_replays(block.inner(), &in_flight)
    }
}

impl App {
    /// The transactions in the unfinalized blocks from `parent` back to the finalized tip:
    /// already on their way, so a new block must not carry them again.
    async fn in_flight(
        &self,
        parent: Digested<Block>,
        ancestry: &mut impl Ancestry<Block>,
    ) -> Option<HashSet<TxHash>> {
        let finalized = self.shared.with_state(|s| s.height())?;
        let mut txs = HashSet::new();
        let mut cursor = Some(parent);
        let mut depth = 0;
        while let Some(b) = cursor {
            if b.height().get() <= finalized || depth >= UNFINALIZED_DEPTH_MAX {
                break;
            }
            txs.extend(b.inner().tx_hashes().iter().copied());
            depth += 1;
            cursor = ancestry.next().await;
        }
        Some(txs)
    }

    /// Whether every transaction of `b` could still apply: not already `in_flight` in an
    /// unfinalized ancestor, not expired at the block's time, and not carrying a nonce the
    /// finalized state has used. Finalized nonces only grow, so a validator whose finalized
    /// state lags behind the block's parent refuses nothing an up-to-date one would accept.
    pub fn check_replays(&self, b: &Block, in_flight: &HashSet<TxHash>) -> bool {
        let refusal = self.shared.with_state(|state| {
            b.txs.iter().zip(b.tx_hashes()).find_map(|(tx, hash)| {
                let body = &tx.body;
                if in_flight.contains(hash) {
                    Some("a transaction already in an unfinalized block before it")
                } else if body.expires_ms < b.time_ms {
                    Some("an expired transaction")
                } else if body.nonce < state.account(&body.signer).nonce {
                    Some("a transaction whose nonce is already used")
                } else {
                    None
                }
            })
        });
        match refusal {
            Some(None) => true,
            Some(Some(what)) => {
                warn!(height = b.height, "refusing block: it carries {what}");
                false
            }
            None => false,
        }
    }

    /// Whether `b`, on `p`, is acceptable to this validator whose clock reads `now_ms`.
    ///
    /// A transaction that already passed the stateless checks here (admitted to this
    /// validator's mempool, or in a block it verified before) is not checked again; every
    /// other one is, and once the whole block passes, all of its transactions are remembered
    /// as checked so that applying it does not check them again.
    pub fn check_block(&self, b: &Block, p: &Block, now_ms: u64) -> bool {
        if b.time_ms <= p.time_ms {
            warn!(
                height = b.height,
                "refusing block: its time is not after its parent's"
            );
            return false;
        }
        let ahead_max = now_ms + BLOCK_TIME_AHEAD_MAX.as_millis() as u64;
        if b.time_ms > ahead_max {
            warn!(
                height = b.height,
                time_ms = b.time_ms,
                "refusing block: its time is ahead of this validator's clock"
            );
            return false;
        }
        let hashes = b.tx_hashes();
        let mut seen = HashSet::with_capacity(hashes.len());
        if !hashes.iter().all(|h| seen.insert(*h)) {
            warn!(
                height = b.height,
                "refusing block: a transaction appears twice"
            );
            return false;
        }
        if let Some(Err(e)) = self
            .shared
            .check_unverified(&b.txs, hashes)
            .into_iter()
            .find(Result::is_err)
        {
            warn!(height = b.height, error = %e, "refusing block: it carries an invalid transaction");
            return false;
        }
        self.shared.mark_verified(hashes.iter().copied());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::{MempoolError, MempoolLimits};
    use crate::shared::{DynLedger, Receipts};
    use peergrid_core::{Amount, Keypair, Payload, SignedTx};
    use peergrid_ledger::{Devnet, Ledger, MemoryStore, Store, TxError};

    const GENESIS_MS: u64 = 1_000;

    fn setup() -> (Devnet, Arc<Shared>, App) {
        let d = Devnet::generate("app", 1, GENESIS_MS).expect("keys");
        let store: Box<dyn Store + Send + Sync> = Box::new(MemoryStore::default());
        let ledger: DynLedger = Ledger::open(store, &d.genesis).expect("ledger");
        let shared = Shared::new(
            d.genesis.clone(),
            ledger,
            Receipts::memory(),
            MempoolLimits::default(),
        );
        let app = App::new(shared.clone(), 100);
        (d, shared, app)
    }

    fn transfer(key: &Keypair, nonce: u64) -> SignedTx {
        SignedTx::new(
            key,
            "app",
            nonce,
            Payload::Transfer {
                to: key.account(),
                amount: Amount(1 + nonce),
            },
        )
    }

    fn forge(tx: &SignedTx) -> SignedTx {
        let mut forged = tx.clone();
        forged.signature.0[3] ^= 1;
        forged
    }

    fn first_block(d: &Devnet, txs: Vec<SignedTx>) -> (Block, Block) {
        let parent = Block::genesis(&d.genesis.hash(), GENESIS_MS);
        let block = Block::new(parent.digest(), 1, GENESIS_MS + 1, txs);
        (block, parent)
    }

    #[test]
    fn a_forged_transaction_is_refused_and_never_applies_even_beside_cached_ones() {
        let (d, shared, app) = setup();
        let good = transfer(&d.demo, 0);
        shared.submit(good.clone()).expect("admitted");
        // Same body as a cached transaction, another signature: another hash, so not vouched for.
        let twin = forge(&good);
        let unseen = forge(&transfer(&d.demo, 1));
        for txs in [
            vec![good.clone(), unseen.clone()],
            vec![twin.clone()],
            vec![unseen.clone()],
        ] {
            let (block, parent) = first_block(&d, txs);
            assert!(!app.check_block(&block, &parent, GENESIS_MS));
        }

        // A block this validator never verified (received by backfill, say) still has its
        // transactions checked when applied.
        let (block, _) = first_block(&d, vec![twin, good, unseen]);
        let applied = shared
            .apply_finalized(&block, "backfilled")
            .expect("apply")
            .expect("new block");
        let results: Vec<_> = applied.txs.iter().map(|t| &t.result).collect();
        assert!(matches!(results[0], Err(TxError::BadSignature { .. })));
        assert!(results[1].is_ok());
        assert!(matches!(results[2], Err(TxError::BadSignature { .. })));
        let nonce = shared
            .with_state(|s| s.account(&d.demo.account()).nonce)
            .expect("state");
        assert_eq!(nonce, 1, "only the genuine transaction applied");
    }

    #[test]
    fn a_block_that_replays_used_expired_or_in_flight_transactions_is_refused() {
        let (d, shared, app) = setup();
        let used = transfer(&d.demo, 0);
        let (block, _) = first_block(&d, vec![used.clone()]);
        shared
            .apply_finalized(&block, "finalized")
            .expect("apply")
            .expect("new block");
        let none = HashSet::new();
        let next = |txs| Block::new(block.digest(), 2, GENESIS_MS + 10, txs);

        // A valid signature on a nonce the finalized state has used can never apply again.
        assert!(!app.check_replays(&next(vec![used]), &none));

        let fresh = transfer(&d.demo, 1);
        assert!(app.check_replays(&next(vec![fresh.clone()]), &none));
        // Nonces ahead of the finalized state may be taken by unfinalized blocks: allowed.
        assert!(app.check_replays(&next(vec![transfer(&d.demo, 5)]), &none));

        let in_flight: HashSet<TxHash> = [fresh.hash()].into();
        assert!(!app.check_replays(&next(vec![fresh]), &in_flight));

        let expiring = |at| {
            let pay = Payload::Transfer {
                to: d.demo.account(),
                amount: Amount(1),
            };
            SignedTx::expiring(&d.faucet, "app", 0, at, pay)
        };
        assert!(!app.check_replays(&next(vec![expiring(GENESIS_MS + 9)]), &none));
        let last_moment = expiring(GENESIS_MS + 10);
        assert!(app.check_replays(&next(vec![last_moment]), &none));
    }

    #[test]
    fn a_batch_with_one_forged_transaction_admits_the_others() {
        let (d, shared, _) = setup();
        let mut txs: Vec<SignedTx> = (0..40).map(|n| transfer(&d.demo, n)).collect();
        txs[17] = forge(&txs[17]);
        let batch: Vec<(SignedTx, TxHash)> = txs.iter().map(|t| (t.clone(), t.hash())).collect();
        let results = shared.submit_batch(batch);
        assert_eq!(results.len(), 40);
        for (i, r) in results.iter().enumerate() {
            if i == 17 {
                assert_eq!(
                    r,
                    &Err(MempoolError::Rejected(TxError::BadSignature {
                        signer: d.demo.account()
                    }))
                );
            } else {
                assert_eq!(r, &Ok(txs[i].hash()), "{i}");
            }
        }
        assert_eq!(shared.stateless_checks(), 40);
        assert_eq!(shared.mempool.lock().expect("pool").len(), 39);
        assert_eq!(
            shared.verified_len(),
            39,
            "the forged one is not remembered"
        );
        // The genuine transaction 17 is still welcome, and resubmitting the others costs no check.
        let again: Vec<(SignedTx, TxHash)> = (0..40)
            .map(|n| transfer(&d.demo, n))
            .map(|t| {
                let h = t.hash();
                (t, h)
            })
            .collect();
        assert!(shared.submit_batch(again).iter().all(Result::is_ok));
        assert_eq!(shared.stateless_checks(), 41);
    }

    #[test]
    fn a_large_block_carrying_one_forged_transaction_is_refused() {
        let (d, _, app) = setup();
        let txs: Vec<SignedTx> = (0..300).map(|n| transfer(&d.demo, n)).collect();
        let (block, parent) = first_block(&d, txs.clone());
        assert!(app.check_block(&block, &parent, GENESIS_MS));
        let (_, shared, app) = setup();
        let mut forged = txs;
        forged[280] = forge(&forged[280]);
        let (block, parent) = first_block(&d, forged);
        assert!(!app.check_block(&block, &parent, GENESIS_MS));
        assert_eq!(
            shared.verified_len(),
            0,
            "nothing of a refused block is remembered"
        );
    }

    #[test]
    fn a_transaction_checked_here_is_not_checked_again() {
        let (d, shared, app) = setup();
        let mine = transfer(&d.demo, 0);
        shared.submit(mine.clone()).expect("admitted");
        shared.submit(mine.clone()).expect("gossiped back");
        assert_eq!(shared.stateless_checks(), 1, "admission checks once");

        let theirs = transfer(&d.faucet, 0);
        let (block, parent) = first_block(&d, vec![mine, theirs]);
        assert!(app.check_block(&block, &parent, GENESIS_MS));
        assert_eq!(
            shared.stateless_checks(),
            2,
            "only the unseen one is checked"
        );
        assert!(app.check_block(&block, &parent, GENESIS_MS));
        assert_eq!(shared.stateless_checks(), 2, "a block verified twice");

        let applied = shared
            .apply_finalized(&block, "verified")
            .expect("apply")
            .expect("new block");
        assert!(applied.txs.iter().all(|t| t.result.is_ok()));
        assert_eq!(
            shared.stateless_checks(),
            2,
            "applying checks nothing again"
        );
        assert_eq!(
            shared.verified_len(),
            0,
            "finalized transactions are forgotten"
        );

        let parent = block;
        let later = Block::new(
            parent.digest(),
            2,
            GENESIS_MS + 2,
            vec![transfer(&d.demo, 1)],
        );
        shared
            .apply_finalized(&later, "backfilled")
            .expect("apply")
            .expect("new block");
        assert_eq!(
            shared.stateless_checks(),
            3,
            "an unverified block is checked"
        );
    }
}
