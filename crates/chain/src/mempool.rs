//! Transactions waiting for a block: checked at the door, ordered by nonce, bounded.
//!
//! Admission runs the ledger's stateless checks (chain id, field limits, signature)
//! and the nonce and expiry against the latest finalized state, so a user hears at
//! once, with the same [`TxError`] the ledger would give, why a transaction can never
//! apply. Selection takes each account's transactions in nonce order starting at its
//! current nonce, one account at a time in turn, so no account can starve the others.

use std::collections::{BTreeMap, HashMap, HashSet};

use peergrid_core::{AccountId, Amount, Payload, SignedTx, TxHash};
use peergrid_ledger::{State, TxError, check_stateless};

/// Limits of the pool.
#[derive(Clone, Copy, Debug)]
pub struct MempoolLimits {
    /// Most transactions held.
    pub txs_max: usize,
    /// Most encoded bytes held.
    pub bytes_max: usize,
    /// Most transactions held per account, and how far past its nonce it may queue.
    pub per_account_max: u64,
    /// How long a transaction may wait behind a nonce nobody sent before a sweep drops
    /// it ([`Mempool::sweep`]): its account's earlier transaction was lost, or never meant
    /// to come.
    pub stranded_after: std::time::Duration,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            txs_max: 100_000,
            bytes_max: 64 << 20,
            per_account_max: 256,
            stranded_after: std::time::Duration::from_secs(60),
        }
    }
}

/// Why the pool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// The ledger would reject it.
    #[error(transparent)]
    Rejected(#[from] TxError),
    /// Another transaction with this nonce is already waiting.
    #[error("nonce {nonce} of {signer} is already taken by pending transaction {pending}")]
    NonceTaken {
        /// The signer.
        signer: AccountId,
        /// The nonce.
        nonce: u64,
        /// The transaction holding it.
        pending: TxHash,
    },
    /// The nonce is too far ahead of the account's.
    #[error(
        "nonce {got} is more than {max} ahead of {signer}'s next nonce {expected}; send the earlier ones first"
    )]
    TooFarAhead {
        /// The signer.
        signer: AccountId,
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
        /// How far ahead is allowed.
        max: u64,
    },
    /// The pool is full.
    #[error("the mempool is full ({txs} transactions, {bytes} bytes); try again shortly")]
    Full {
        /// Transactions held.
        txs: usize,
        /// Bytes held.
        bytes: usize,
    },
}

struct Pending {
    tx: SignedTx,
    hash: TxHash,
    len: usize,
    /// Since when a sweep has found it behind a missing nonce.
    stranded_since: Option<std::time::Instant>,
}

/// Ledger time between two sweeps of the whole pool ([`Mempool::sweep`]).
const SWEEP_EVERY_MS: u64 = 5_000;

/// How far the ledger's time may be behind the clock before this validator counts as
/// catching up: replaying blocks, it hears of transactions ahead of its state, and
/// none of them is stranded.
const CATCHING_UP_MS: u64 = 30_000;

/// The pool.
pub struct Mempool {
    limits: MempoolLimits,
    accounts: BTreeMap<AccountId, BTreeMap<u64, Pending>>,
    hashes: HashMap<TxHash, (AccountId, u64)>,
    bytes: usize,
    /// Ledger time of the last sweep.
    swept_ms: u64,
}

impl Mempool {
    /// An empty pool.
    pub fn new(limits: MempoolLimits) -> Self {
        Mempool {
            limits,
            accounts: BTreeMap::new(),
            hashes: HashMap::new(),
            bytes: 0,
            swept_ms: 0,
        }
    }

    /// Number of waiting transactions.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `hash` is waiting.
    pub fn contains(&self, hash: &TxHash) -> bool {
        self.hashes.contains_key(hash)
    }

    /// Admit `tx` if it could apply on top of `state`; idempotent for a transaction already held.
    pub fn insert(&mut self, tx: SignedTx, state: &State) -> Result<TxHash, MempoolError> {
        let hash = tx.hash();
        if self.hashes.contains_key(&hash) {
            return Ok(hash);
        }
        check_stateless(&tx, state.chain_id())?;
        self.insert_checked(tx, hash, state)
    }

    /// Like [`Mempool::insert`] for a transaction whose hash is `hash` and that already passed
    /// [`check_stateless`] on this machine, so that the signature is checked outside the
    /// pool's lock and only once. Admitting an unchecked transaction here lets a forged one in.
    pub fn insert_checked(
        &mut self,
        tx: SignedTx,
        hash: TxHash,
        state: &State,
    ) -> Result<TxHash, MempoolError> {
        if self.hashes.contains_key(&hash) {
            return Ok(hash);
        }
        let signer = tx.body.signer;
        let nonce = tx.body.nonce;
        let expected = state.account(&signer).nonce;
        if nonce < expected {
            return Err(TxError::StaleNonce {
                signer,
                expected,
                got: nonce,
            }
            .into());
        }
        if nonce - expected >= self.limits.per_account_max {
            return Err(MempoolError::TooFarAhead {
                signer,
                expected,
                got: nonce,
                max: self.limits.per_account_max,
            });
        }
        if tx.body.expires_ms < state.time_ms() {
            return Err(TxError::Expired {
                expires_ms: tx.body.expires_ms,
                now_ms: state.time_ms(),
            }
            .into());
        }
        // Catch the obvious overdraft at the door; pending transactions are not counted, so
        // a block may still reject one of several that together overdraw.
        let len = tx.encode().len();
        let fee = Amount(state.params().fee_per_byte.0.saturating_mul(len as u64));
        let spend = match &tx.body.payload {
            Payload::Transfer { amount, .. } => *amount,
            _ => Amount::ZERO,
        };
        let free = matches!(tx.body.payload, Payload::ReportUptime { node, .. } if state.node(node).is_some_and(|n| n.account == signer));
        let needed = if free {
            spend
        } else {
            spend.saturating_add(fee)
        };
        let available = state.account(&signer).balance;
        if available < needed {
            return Err(TxError::InsufficientBalance {
                needed,
                fee: if free { Amount::ZERO } else { fee },
                available,
            }
            .into());
        }
        if let Some(p) = self.accounts.get(&signer).and_then(|q| q.get(&nonce)) {
            return Err(MempoolError::NonceTaken {
                signer,
                nonce,
                pending: p.hash,
            });
        }
        if self.hashes.len() >= self.limits.txs_max || self.bytes + len > self.limits.bytes_max {
            return Err(MempoolError::Full {
                txs: self.hashes.len(),
                bytes: self.bytes,
            });
        }
        self.bytes += len;
        self.hashes.insert(hash, (signer, nonce));
        self.accounts.entry(signer).or_default().insert(
            nonce,
            Pending {
                tx,
                hash,
                len,
                stranded_since: None,
            },
        );
        Ok(hash)
    }

    /// Up to `txs_max` transactions and `bytes_max` bytes that can apply in order on `state`
    /// in a block at ledger time `time_ms`, skipping those in `exclude` (already in a block
    /// not yet finalized). Expiry is judged at the block's time, not the finalized state's:
    /// validators refuse a block carrying an expired transaction.
    pub fn select(
        &self,
        state: &State,
        time_ms: u64,
        txs_max: usize,
        bytes_max: usize,
        exclude: &HashSet<TxHash>,
    ) -> Vec<SignedTx> {
        // Each account's run of consecutive nonces from its current one, as a queue.
        let mut queues: Vec<Vec<&Pending>> = Vec::new();
        for (account, pending) in &self.accounts {
            let first = state.account(account).nonce;
            let mut run = Vec::new();
            for (expected, (nonce, p)) in (first..).zip(pending.range(first..)) {
                if *nonce != expected {
                    break;
                }
                // Later nonces cannot apply without this one.
                if p.tx.body.expires_ms < time_ms {
                    break;
                }
                if !exclude.contains(&p.hash) {
                    run.push(p);
                }
            }
            if !run.is_empty() {
                run.reverse();
                queues.push(run);
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        // Round-robin: one transaction per account per pass.
        while out.len() < txs_max && !queues.is_empty() {
            let mut progressed = false;
            for queue in queues.iter_mut() {
                let Some(p) = queue.last() else { continue };
                if out.len() >= txs_max || bytes + p.len > bytes_max {
                    continue;
                }
                bytes += p.len;
                out.push(p.tx.clone());
                queue.pop();
                progressed = true;
            }
            queues.retain(|q| !q.is_empty());
            if !progressed {
                break;
            }
        }
        out
    }

    /// Drop transactions a finalized block held, applied or rejected. A rejected one
    /// leaves its signer's nonce where it was, so pruning by nonce would keep it, and
    /// every later block would carry it again while it blocked that nonce for good.
    pub fn remove_finalized<'a>(&mut self, hashes: impl IntoIterator<Item = &'a TxHash>) {
        for hash in hashes {
            let Some((signer, nonce)) = self.hashes.remove(hash) else {
                continue;
            };
            if let Some(queue) = self.accounts.get_mut(&signer) {
                if let Some(p) = queue.remove(&nonce) {
                    self.bytes -= p.len;
                }
                if queue.is_empty() {
                    self.accounts.remove(&signer);
                }
            }
        }
    }

    /// Drop what can no longer apply on `state`: used nonces and expired transactions of `accounts`.
    pub fn prune<'a>(&mut self, state: &State, accounts: impl IntoIterator<Item = &'a AccountId>) {
        self.drop_where(state, accounts, |_| false);
    }

    /// Every [`SWEEP_EVERY_MS`] of ledger time, [`Mempool::prune`] the whole pool, and drop
    /// what sweeps found behind a missing nonce for [`MempoolLimits::stranded_after`].
    /// Pruning after a block reaches only the accounts the block held, so an account
    /// whose next transaction expired unselected would keep it, and every later nonce
    /// would wait behind it, for good; and transactions behind a gap would fill the pool
    /// without ever paying a fee.
    pub fn sweep(&mut self, state: &State) {
        let now = state.time_ms();
        if now < self.swept_ms.saturating_add(SWEEP_EVERY_MS) {
            return;
        }
        self.swept_ms = now;
        let catching_up = peergrid_core::now_ms().saturating_sub(now) > CATCHING_UP_MS;
        let accounts: Vec<AccountId> = self.accounts.keys().copied().collect();
        let found = std::time::Instant::now();
        for account in &accounts {
            let nonce = state.account(account).nonce;
            let Some(queue) = self.accounts.get_mut(account) else {
                continue;
            };
            let mut next = nonce;
            for (n, p) in queue.iter_mut() {
                let reachable = *n == next;
                if reachable {
                    next += 1;
                }
                if reachable || catching_up {
                    p.stranded_since = None;
                } else {
                    p.stranded_since.get_or_insert(found);
                }
            }
        }
        let after = self.limits.stranded_after;
        self.drop_where(state, accounts.iter(), |p| {
            p.stranded_since.is_some_and(|t| t.elapsed() >= after)
        });
    }

    /// Drop the used nonces and expired transactions of `accounts`, and those `also` says.
    fn drop_where<'a>(
        &mut self,
        state: &State,
        accounts: impl IntoIterator<Item = &'a AccountId>,
        also: impl Fn(&Pending) -> bool,
    ) {
        for account in accounts {
            let Some(queue) = self.accounts.get_mut(account) else {
                continue;
            };
            let nonce = state.account(account).nonce;
            let stale: Vec<u64> = queue
                .iter()
                .filter(|(n, p)| **n < nonce || p.tx.body.expires_ms < state.time_ms() || also(p))
                .map(|(n, _)| *n)
                .collect();
            for n in stale {
                if let Some(p) = queue.remove(&n) {
                    self.bytes -= p.len;
                    self.hashes.remove(&p.hash);
                }
            }
            if queue.is_empty() {
                self.accounts.remove(account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peergrid_core::tx::Payload;
    use peergrid_core::{Amount, Keypair};
    use peergrid_ledger::{Devnet, Ledger, MemoryStore};

    fn setup() -> (Devnet, Ledger<MemoryStore>) {
        let devnet = Devnet::generate("pool", 1, 1_000).expect("keys");
        let ledger = Ledger::open(MemoryStore::default(), &devnet.genesis).expect("ledger");
        (devnet, ledger)
    }

    fn transfer(key: &Keypair, nonce: u64) -> SignedTx {
        SignedTx::new(
            key,
            "pool",
            nonce,
            Payload::Transfer {
                to: key.account(),
                amount: Amount(1 + nonce),
            },
        )
    }

    /// Everything `pool` would propose on `state` now, without limits.
    fn select_all(pool: &Mempool, state: &State) -> Vec<SignedTx> {
        pool.select(state, state.time_ms(), 100, usize::MAX, &HashSet::new())
    }

    #[test]
    fn admits_valid_and_refuses_with_the_ledgers_reason() {
        let (d, ledger) = setup();
        let mut pool = Mempool::new(MempoolLimits::default());
        let tx = transfer(&d.demo, 0);
        let hash = pool.insert(tx.clone(), ledger.state()).expect("valid");
        assert_eq!(
            pool.insert(tx, ledger.state()),
            Ok(hash),
            "resubmitting is harmless"
        );
        let mut forged = transfer(&d.demo, 1);
        forged.signature.0[3] ^= 1;
        assert!(matches!(
            pool.insert(forged, ledger.state()),
            Err(MempoolError::Rejected(TxError::BadSignature { .. }))
        ));
        let other = SignedTx::new(
            &d.demo,
            "pool",
            0,
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        assert!(matches!(
            pool.insert(other, ledger.state()),
            Err(MempoolError::NonceTaken { nonce: 0, .. })
        ));
        let far = transfer(&d.demo, 10_000);
        assert!(matches!(
            pool.insert(far, ledger.state()),
            Err(MempoolError::TooFarAhead { .. })
        ));
        let wrong_chain = SignedTx::new(
            &d.demo,
            "other",
            1,
            Payload::Vote {
                proposal: 1,
                approve: true,
            },
        );
        assert!(matches!(
            pool.insert(wrong_chain, ledger.state()),
            Err(MempoolError::Rejected(TxError::WrongChain { .. }))
        ));
    }

    #[test]
    fn a_transaction_expiring_before_the_block_is_not_selected_nor_the_nonces_behind_it() {
        let (d, ledger) = setup();
        let mut pool = Mempool::new(MempoolLimits::default());
        let now = ledger.state().time_ms();
        let pay = || Payload::Transfer {
            to: d.faucet.account(),
            amount: Amount(1),
        };
        let soon = SignedTx::expiring(&d.demo, "pool", 0, now + 100, pay());
        pool.insert(soon, ledger.state()).expect("valid now");
        pool.insert(transfer(&d.demo, 1), ledger.state())
            .expect("next");
        let none = HashSet::new();
        assert_eq!(
            pool.select(ledger.state(), now + 100, 10, usize::MAX, &none)
                .len(),
            2
        );
        assert!(
            pool.select(ledger.state(), now + 101, 10, usize::MAX, &none)
                .is_empty(),
            "expired at the block's time, though not at the finalized state's"
        );
    }

    #[test]
    fn selects_consecutive_nonces_fairly_and_prunes_after_finality() {
        let (d, mut ledger) = setup();
        let mut pool = Mempool::new(MempoolLimits::default());
        for n in [0, 1, 2, 4] {
            pool.insert(transfer(&d.demo, n), ledger.state())
                .expect("demo");
        }
        for n in 0..3 {
            pool.insert(transfer(&d.faucet, n), ledger.state())
                .expect("faucet");
        }
        let picked = pool.select(
            ledger.state(),
            ledger.state().time_ms(),
            4,
            usize::MAX,
            &HashSet::new(),
        );
        let from = |tx: &SignedTx| (tx.body.signer == d.demo.account(), tx.body.nonce);
        let order: Vec<_> = picked.iter().map(from).collect();
        // Alternating accounts, in nonce order, never past the gap at demo's nonce 3.
        assert_eq!(order.len(), 4);
        assert!(order.contains(&(true, 0)) && order.contains(&(true, 1)));
        assert!(order.contains(&(false, 0)) && order.contains(&(false, 1)));
        let all = select_all(&pool, ledger.state());
        assert_eq!(all.len(), 6, "demo's nonce 4 waits for 3");
        let exclude: HashSet<_> = all.iter().take(2).map(SignedTx::hash).collect();
        assert_eq!(
            pool.select(
                ledger.state(),
                ledger.state().time_ms(),
                100,
                usize::MAX,
                &exclude
            )
            .len(),
            4
        );

        let block: Vec<_> = all.into_iter().filter(|t| t.body.nonce < 2).collect();
        let ctx = peergrid_ledger::BlockContext {
            height: 1,
            time_ms: 2_000,
        };
        ledger.execute_block(ctx, &block).expect("block");
        pool.prune(
            ledger.state(),
            [d.demo.account(), d.faucet.account()].iter(),
        );
        assert_eq!(pool.len(), 3);
        assert_eq!(select_all(&pool, ledger.state()).len(), 2);
    }

    #[test]
    fn an_expired_head_and_transactions_stranded_behind_a_gap_are_swept() {
        let (d, mut ledger) = setup();
        let mut pool = Mempool::new(MempoolLimits {
            stranded_after: std::time::Duration::from_millis(200),
            ..MempoolLimits::default()
        });
        // Blocks at the clock's time: a ledger far behind it is a validator catching up.
        let start = peergrid_core::now_ms();
        // The demo's next transaction expires unselected (a stall, a full block); the
        // faucet's nonces 1 and 2 wait for a nonce 0 that never comes.
        let soon = SignedTx::expiring(
            &d.demo,
            "pool",
            0,
            start + 1_000,
            Payload::Transfer {
                to: d.faucet.account(),
                amount: Amount(1),
            },
        );
        pool.insert(soon, ledger.state()).expect("valid now");
        for n in [1, 2] {
            pool.insert(transfer(&d.faucet, n), ledger.state())
                .expect("ahead");
        }
        let block = |ledger: &mut Ledger<MemoryStore>, height, time_ms| {
            let ctx = peergrid_ledger::BlockContext { height, time_ms };
            ledger.execute_block(ctx, &[]).expect("block");
        };
        // Empty blocks: nothing to prune after them, and the demo is wedged.
        block(&mut ledger, 1, start + 2_000);
        pool.prune(ledger.state(), std::iter::empty());
        assert!(matches!(
            pool.insert(transfer(&d.demo, 0), ledger.state()),
            Err(MempoolError::NonceTaken { nonce: 0, .. })
        ));
        block(&mut ledger, 2, start + SWEEP_EVERY_MS + 2_000);
        pool.sweep(ledger.state());
        pool.insert(transfer(&d.demo, 0), ledger.state())
            .expect("the expired one is gone, its nonce free");
        assert_eq!(pool.len(), 3, "the stranded ones wait a while");
        std::thread::sleep(std::time::Duration::from_millis(300));
        block(&mut ledger, 3, start + 2 * SWEEP_EVERY_MS + 2_000);
        pool.sweep(ledger.state());
        let left: Vec<_> = select_all(&pool, ledger.state());
        assert_eq!(pool.len(), 1, "the stranded ones are gone");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].body.signer, d.demo.account());
        // Once sent, a nonce 0 frees the faucet to queue again.
        for n in [0, 1] {
            pool.insert(transfer(&d.faucet, n), ledger.state())
                .expect("faucet");
        }
        assert_eq!(select_all(&pool, ledger.state()).len(), 3);
        // A validator whose ledger is far behind the clock is catching up: what it hears
        // ahead of its state is not stranded, however long it waits.
        let (d, mut behind) = setup();
        let mut pool = Mempool::new(MempoolLimits {
            stranded_after: std::time::Duration::ZERO,
            ..MempoolLimits::default()
        });
        pool.insert(transfer(&d.faucet, 5), behind.state())
            .expect("ahead");
        block(&mut behind, 1, 1_000 + SWEEP_EVERY_MS);
        pool.sweep(behind.state());
        assert_eq!(pool.len(), 1, "kept while catching up");
    }

    #[test]
    fn a_transaction_rejected_in_a_block_leaves_the_pool_and_frees_its_nonce() {
        let (d, mut ledger) = setup();
        let mut pool = Mempool::new(MempoolLimits::default());
        let farm = |nonce, name: &str| {
            SignedTx::new(
                &d.demo,
                "pool",
                nonce,
                Payload::CreateFarm {
                    name: name.into(),
                    public_ips: Vec::new(),
                },
            )
        };
        let first = farm(0, "alpha");
        pool.insert(first.clone(), ledger.state()).expect("first");
        let ctx = |height| peergrid_ledger::BlockContext {
            height,
            time_ms: 2_000 + height,
        };
        ledger
            .execute_block(ctx(1), std::slice::from_ref(&first))
            .expect("block");
        pool.remove_finalized([first.hash()].iter());
        // Same name again: admitted (the pool does not run the payload), rejected in a block.
        let dup = farm(1, "ALPHA");
        let hash = pool.insert(dup.clone(), ledger.state()).expect("admitted");
        let out = ledger.execute_block(ctx(2), &[dup]).expect("block");
        assert!(out.receipts[0].result.is_err(), "name taken");
        pool.remove_finalized([hash].iter());
        pool.prune(ledger.state(), [d.demo.account()].iter());
        assert_eq!(pool.len(), 0, "the rejected transaction is gone");
        assert!(
            select_all(&pool, ledger.state()).is_empty(),
            "and is never proposed again"
        );
        pool.insert(farm(1, "beta"), ledger.state())
            .expect("its nonce is free for the next transaction");
    }
}
