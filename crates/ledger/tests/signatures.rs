//! Signatures checked in batches give each transaction exactly the verdict it gets alone.

mod common;

use common::*;
use peergrid_core::tx::{Payload, SIGNATURE_BATCH_MAX};
use peergrid_core::{Amount, SignedTx};
use peergrid_ledger::{BlockContext, Checked, Ledger, MemoryStore, TxError, check_stateless};

fn transfer(from: u8, nonce: u64) -> SignedTx {
    SignedTx::new(
        &key(from),
        CHAIN,
        nonce,
        Payload::Transfer {
            to: key(100).account(),
            amount: Amount(1 + nonce),
        },
    )
}

#[test]
fn batch_checks_answer_what_single_checks_answer() {
    let mut txs: Vec<SignedTx> = (0..SIGNATURE_BATCH_MAX as u64 + 5)
        .map(|n| transfer(1 + (n % 9) as u8, n / 9))
        .collect();
    txs[2].signature.0[0] ^= 1;
    txs[SIGNATURE_BATCH_MAX + 1].body.chain_id = "other".into();
    txs[7].body.payload = Payload::Transfer {
        to: key(100).account(),
        amount: Amount::ZERO,
    };
    let batch =
        peergrid_ledger::check_stateless_batch(txs.iter().map(|tx| (tx, Checked::No)), CHAIN);
    let alone: Vec<_> = txs.iter().map(|tx| check_stateless(tx, CHAIN)).collect();
    assert_eq!(batch, alone);
    assert!(matches!(batch[2], Err(TxError::BadSignature { .. })));
    assert!(matches!(
        batch[SIGNATURE_BATCH_MAX + 1],
        Err(TxError::WrongChain { .. })
    ));
    assert!(matches!(batch[7], Err(TxError::Field { .. })));
    assert_eq!(batch.iter().filter(|r| r.is_err()).count(), 3);
}

#[test]
fn a_forged_transaction_in_a_block_is_rejected_and_the_others_apply() {
    let mut ledger = Ledger::open(MemoryStore::default(), &genesis(9)).expect("ledger");
    let mut txs: Vec<SignedTx> = (0..300u64)
        .map(|n| transfer(1 + (n % 9) as u8, n / 9))
        .collect();
    // The forged one is its signer's last, so nothing after it waits on its nonce.
    let forged = 296;
    assert_eq!(txs[forged].body.signer, key(9).account());
    txs[forged].signature.0[40] ^= 1;
    let ctx = BlockContext {
        height: 1,
        time_ms: GENESIS_MS + 1,
    };
    let outcome = ledger.execute_block(ctx, &txs).expect("block");
    for (i, (r, tx)) in outcome.receipts.iter().zip(&txs).enumerate() {
        assert_eq!(r.hash, tx.hash());
        if i == forged {
            assert_eq!(
                r.result,
                Err(TxError::BadSignature {
                    signer: key(9).account()
                })
            );
        } else {
            assert!(r.result.is_ok(), "{i}: {:?}", r.result);
        }
    }
    assert_eq!(ledger.state().account(&key(9).account()).nonce, 32);
    assert_eq!(ledger.state().account(&key(1).account()).nonce, 34);
}
