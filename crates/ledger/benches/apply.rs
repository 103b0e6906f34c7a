//! `cargo bench -p peergrid-ledger`: signed transfers applied per second on one core,
//! next to plain ed25519 verifications of the same transactions in the same run.
//!
//! Applying includes everything a validator does per finalized block: decoding
//! checks, the signature checks (in batches, as for a block no transaction of which was
//! seen before), nonce and balance rules, the fee burn, the state root update and (for the
//! redb line) the durable commit.

use std::time::{Duration, Instant};

use peergrid_core::tx::{Payload, SIGNATURE_BATCH_MAX, TX_NAMESPACE};
use peergrid_core::{Amount, Keypair, SignedTx, codec};
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{
    BlockContext, Council, Genesis, Ledger, MemoryStore, Params, RedbStore, Store,
};

const ACCOUNTS: usize = 2_000;
const BLOCK_TXS: usize = 1_000;
const BLOCKS: usize = 20;
const CHAIN: &str = "bench";

fn keys() -> Vec<Keypair> {
    (0..ACCOUNTS)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect()
}

fn genesis(keys: &[Keypair]) -> Genesis {
    Genesis {
        ledger_rules: peergrid_ledger::genesis::LEDGER_RULES,
        mesh_bootstrap: Vec::new(),
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        foundation: keys[0].account(),
        staking_pool: keys[1].account(),
        params: Params::production(),
        council: Council {
            members: vec![keys[0].account()],
            threshold: 1,
        },
        validators: vec![GenesisValidator {
            account: keys[0].account(),
            address: None,
            api: None,
        }],
        balances: keys
            .iter()
            .map(|k| GenesisBalance {
                account: k.account(),
                amount: Amount::tokens(1_000_000),
            })
            .collect(),
    }
}

/// Blocks of transfers; each account sends in turn, so nonces advance by one per round.
fn blocks(keys: &[Keypair]) -> Vec<Vec<SignedTx>> {
    let mut nonces = vec![0u64; keys.len()];
    let mut sender = 0usize;
    (0..BLOCKS)
        .map(|b| {
            (0..BLOCK_TXS)
                .map(|i| {
                    let from = sender % keys.len();
                    sender += 1;
                    let to = keys[(from * 7 + b + i + 1) % keys.len()].account();
                    let tx = SignedTx::new(
                        &keys[from],
                        CHAIN,
                        nonces[from],
                        Payload::Transfer {
                            to,
                            amount: Amount(1_000 + i as u64),
                        },
                    );
                    nonces[from] += 1;
                    tx
                })
                .collect()
        })
        .collect()
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn apply_all<S: Store>(store: S, genesis: &Genesis, blocks: &[Vec<SignedTx>]) -> Duration {
    let mut ledger = Ledger::open(store, genesis).expect("open");
    let start = Instant::now();
    for (h, txs) in blocks.iter().enumerate() {
        let ctx = BlockContext {
            height: h as u64 + 1,
            time_ms: genesis.genesis_time_ms + (h as u64 + 1) * 500,
        };
        let outcome = ledger.execute_block(ctx, txs).expect("block");
        assert!(
            outcome.receipts.iter().all(|r| r.result.is_ok()),
            "every bench transfer must apply"
        );
    }
    start.elapsed()
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let keys = keys();
    let genesis = genesis(&keys);
    let mut blocks = blocks(&keys);
    if quick {
        blocks.truncate(1);
    }
    let txs: Vec<&SignedTx> = blocks.iter().flatten().collect();
    let n = txs.len();

    // Baselines: the signature checks alone, over the same signed transactions: one at a time
    // as the ledger checks a transaction it has not seen, in batches as validators check what
    // arrives together, and the strict check the ledger used before ZIP-215, for comparison.
    let prepared: Vec<_> = txs
        .iter()
        .map(|tx| {
            let msg = peergrid_core::keys::signed_bytes(TX_NAMESPACE, &codec::encode(&tx.body));
            let key = tx.body.signer.verifying_key().expect("valid key");
            (
                key,
                ed25519_dalek::Signature::from_bytes(&tx.signature.0),
                msg,
            )
        })
        .collect();
    let zebra_items: Vec<ed25519_zebra::batch::Item> = prepared
        .iter()
        .map(|(key, sig, msg)| {
            let key = ed25519_zebra::VerificationKeyBytes::from(key.to_bytes());
            let sig = ed25519_zebra::Signature::from_bytes(&sig.to_bytes());
            (key, sig, msg.as_slice()).into()
        })
        .collect();
    let mut best_verify = Duration::MAX;
    let mut best_batch = Duration::MAX;
    let mut best_strict = Duration::MAX;
    let mut best_zebra = Duration::MAX;
    let mut best_mem = Duration::MAX;
    let mut best_disk = Duration::MAX;
    let rounds = if quick { 1 } else { 3 };
    for _ in 0..rounds {
        let start = Instant::now();
        for tx in &txs {
            assert!(tx.verify_signature(), "valid signature");
        }
        best_verify = best_verify.min(start.elapsed());
        let start = Instant::now();
        for block in &blocks {
            let refs: Vec<&SignedTx> = block.iter().collect();
            assert!(
                SignedTx::verify_signatures(&refs).into_iter().all(|ok| ok),
                "valid signatures"
            );
        }
        best_batch = best_batch.min(start.elapsed());
        let start = Instant::now();
        for (key, sig, msg) in &prepared {
            key.verify_strict(msg, sig).expect("valid signature");
        }
        best_strict = best_strict.min(start.elapsed());
        let start = Instant::now();
        for chunk in zebra_items.chunks(SIGNATURE_BATCH_MAX) {
            let mut batch = ed25519_zebra::batch::Verifier::new();
            for item in chunk {
                batch.queue(item.clone());
            }
            batch.verify(rand::rng()).expect("valid signatures");
        }
        best_zebra = best_zebra.min(start.elapsed());
        best_mem = best_mem.min(apply_all(MemoryStore::default(), &genesis, &blocks));
        let dir = tempfile::tempdir().expect("tempdir");
        best_disk = best_disk.min(apply_all(
            RedbStore::open(&dir.path().join("l.redb")).expect("redb"),
            &genesis,
            &blocks,
        ));
    }

    let verify = per_sec(n, best_verify);
    let batch = per_sec(n, best_batch);
    let strict = per_sec(n, best_strict);
    let zebra = per_sec(n, best_zebra);
    let mem = per_sec(n, best_mem);
    let disk = per_sec(n, best_disk);
    println!(
        "{n} signed transfers in blocks of {BLOCK_TXS}, {ACCOUNTS} accounts, one core, best of {rounds}"
    );
    println!(
        "{:<56} {:>12} {:>16}",
        "benchmark", "per second", "cost vs verify"
    );
    println!(
        "{:<56} {:>12.0} {:>16}",
        "ed25519::verify_zip215 (baseline)", verify, "1.00x"
    );
    println!(
        "{:<56} {:>12.0} {:>15.2}x",
        format!("ed25519::verify_zip215_batch batch={SIGNATURE_BATCH_MAX}"),
        batch,
        verify / batch
    );
    println!(
        "{:<56} {:>12.0} {:>15.2}x",
        format!("ed25519-zebra batch={SIGNATURE_BATCH_MAX} (keys decompressed per batch)"),
        zebra,
        verify / zebra
    );
    println!(
        "{:<56} {:>12.0} {:>15.2}x",
        "ed25519::verify_strict (before ZIP-215)",
        strict,
        verify / strict
    );
    println!(
        "{:<56} {:>12.0} {:>15.2}x",
        format!("ledger::apply/transfers block={BLOCK_TXS} store=memory"),
        mem,
        verify / mem
    );
    println!(
        "{:<56} {:>12.0} {:>15.2}x",
        format!("ledger::apply/transfers block={BLOCK_TXS} store=redb"),
        disk,
        verify / disk
    );
    println!("target: applying costs less than 1.5x the signature checks alone");
}
