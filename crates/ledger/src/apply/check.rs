//! Checks that need no state: chain id, field limits, signatures (in batches).

use peergrid_core::SignedTx;

use super::*;

/// Checks that need no state beyond the chain id: fields and signature. The mempool runs these at the door.
pub fn check_stateless(tx: &SignedTx, chain_id: &str) -> Result<(), TxError> {
    check_unsigned(tx, chain_id)?;
    if !tx.verify_signature() {
        return Err(bad_signature(tx));
    }
    Ok(())
}

/// The stateless checks before the signature: chain id and fields.
fn check_unsigned(tx: &SignedTx, chain_id: &str) -> Result<(), TxError> {
    if tx.body.chain_id != chain_id {
        return Err(TxError::WrongChain {
            expected: chain_id.to_string(),
            got: tx.body.chain_id.clone(),
        });
    }
    Ok(tx.check_fields()?)
}

fn bad_signature(tx: &SignedTx) -> TxError {
    TxError::BadSignature {
        signer: tx.body.signer,
    }
}

/// [`check_stateless`] for many transactions at once, with their signatures checked in
/// batches; each answer is exactly what [`check_stateless`] gives for that transaction.
pub fn check_stateless_batch(txs: &[&SignedTx], chain_id: &str) -> Vec<Result<(), TxError>> {
    let mut results: Vec<Result<(), TxError>> =
        txs.iter().map(|tx| check_unsigned(tx, chain_id)).collect();
    // Only transactions that passed the field checks reach the signature, as in check_stateless.
    let to_verify: Vec<(usize, &SignedTx)> = txs
        .iter()
        .enumerate()
        .filter(|(i, _)| results[*i].is_ok())
        .map(|(i, tx)| (i, *tx))
        .collect();
    let signed: Vec<&SignedTx> = to_verify.iter().map(|(_, tx)| *tx).collect();
    for ((i, tx), ok) in to_verify.iter().zip(SignedTx::verify_signatures(&signed)) {
        if !ok {
            results[*i] = Err(bad_signature(tx));
        }
    }
    results
}

/// [`check_stateless_batch`] on the transactions not marked as already checked (`true`);
/// those answer `Ok`. One answer per transaction, in order.
pub fn check_stateless_unless<'a>(
    txs: impl IntoIterator<Item = (&'a SignedTx, bool)>,
    chain_id: &str,
) -> Vec<Result<(), TxError>> {
    let txs: Vec<(&SignedTx, bool)> = txs.into_iter().collect();
    let todo: Vec<usize> = (0..txs.len()).filter(|i| !txs[*i].1).collect();
    let to_check: Vec<&SignedTx> = todo.iter().map(|i| txs[*i].0).collect();
    let mut results = vec![Ok(()); txs.len()];
    for (i, result) in todo.iter().zip(check_stateless_batch(&to_check, chain_id)) {
        results[*i] = result;
    }
    results
}
