//! Checks that need no state: chain id, field limits, signatures (in batches).

use peergrid_core::SignedTx;

use super::*;

/// Whether a transaction already passed [`check_stateless`] on this machine. Only mark what was
/// checked here from these very bytes: a transaction marked `Yes` is applied without its
/// signature being checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Checked {
    /// Not yet: check it.
    #[default]
    No,
    /// Checked before, here.
    Yes,
}

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

/// [`check_stateless`] for many transactions at once, those not already [`Checked`], with their
/// signatures checked in batches. One answer per transaction, in order: exactly what
/// [`check_stateless`] gives for it, or `Ok` for one checked before.
pub fn check_stateless_batch<'a>(
    txs: impl IntoIterator<Item = (&'a SignedTx, Checked)>,
    chain_id: &str,
) -> Vec<Result<(), TxError>> {
    let txs: Vec<(&SignedTx, Checked)> = txs.into_iter().collect();
    let mut results: Vec<Result<(), TxError>> = txs
        .iter()
        .map(|(tx, checked)| match checked {
            Checked::Yes => Ok(()),
            Checked::No => check_unsigned(tx, chain_id),
        })
        .collect();
    // Only transactions that passed the field checks reach the signature, as in check_stateless.
    let to_verify: Vec<(usize, &SignedTx)> = txs
        .iter()
        .enumerate()
        .filter(|(i, (_, checked))| *checked == Checked::No && results[*i].is_ok())
        .map(|(i, (tx, _))| (i, *tx))
        .collect();
    let signed: Vec<&SignedTx> = to_verify.iter().map(|(_, tx)| *tx).collect();
    for ((i, tx), ok) in to_verify.iter().zip(SignedTx::verify_signatures(&signed)) {
        if !ok {
            results[*i] = Err(bad_signature(tx));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{CHAIN, key};
    use super::*;
    use peergrid_core::{Amount, Payload};

    fn transfer(n: u8) -> SignedTx {
        let payload = Payload::Transfer {
            to: key(100).account(),
            amount: Amount(1),
        };
        SignedTx::new(&key(n), CHAIN, 0, payload)
    }

    #[test]
    fn only_transactions_not_checked_before_are_checked() {
        let mut forged = transfer(1);
        forged.signature.0[0] ^= 1;
        let mut elsewhere = transfer(2);
        elsewhere.body.chain_id = "other".into();
        let txs = [
            (&forged, Checked::No),
            (&forged, Checked::Yes),
            (&elsewhere, Checked::No),
            (&elsewhere, Checked::Yes),
        ];
        let results = check_stateless_batch(txs, CHAIN);
        assert!(matches!(results[0], Err(TxError::BadSignature { .. })));
        assert_eq!(results[1], Ok(()), "a transaction checked here is trusted");
        assert!(matches!(results[2], Err(TxError::WrongChain { .. })));
        assert_eq!(results[3], Ok(()));
        assert_eq!(results[0], check_stateless(&forged, CHAIN));
    }

    #[test]
    fn a_field_error_is_reported_before_a_bad_signature() {
        let mut tx = transfer(1);
        tx.body.chain_id = "other".into();
        tx.signature.0[0] ^= 1;
        let alone = check_stateless(&tx, CHAIN);
        assert!(
            matches!(alone, Err(TxError::WrongChain { .. })),
            "{alone:?}"
        );
        assert_eq!(
            check_stateless_batch([(&tx, Checked::No)], CHAIN),
            vec![alone]
        );
    }
}
