//! Fees: what a transaction costs, which ones are free, and burning what is paid.

use peergrid_core::{AccountId, Amount, Payload, SignedTx};

use crate::records::Account;
use crate::state::State;

use super::*;

impl State {
    /// The fee for `tx` of encoded size `len`, refused when the signer cannot pay it.
    pub(super) fn fee_for(&self, tx: &SignedTx, len: usize) -> Result<Amount, TxError> {
        let signer = tx.body.signer;
        let fee = if self.is_free(tx) {
            Amount::ZERO
        } else {
            Amount(
                self.params()
                    .fee_per_byte
                    .0
                    .checked_mul(len as u64)
                    .ok_or_else(|| TxError::Overflow("fee".into()))?,
            )
        };
        let before = self.account(&signer);
        if before.balance < fee {
            return Err(TxError::InsufficientBalance {
                needed: fee,
                fee,
                available: before.balance,
            });
        }
        Ok(fee)
    }

    /// Uptime reports by a registered node about itself cost nothing: the once-per-interval rule bounds them.
    fn is_free(&self, tx: &SignedTx) -> bool {
        match tx.body.payload {
            Payload::ReportUptime { node, .. } => {
                self.node(node).is_some_and(|n| n.account == tx.body.signer)
            }
            _ => false,
        }
    }

    /// Take the fee from the signer, bump its nonce, and count the fee as burned.
    pub(super) fn charge_fee(
        &mut self,
        signer: AccountId,
        fee: Amount,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        // The payload may have moved tokens; the fee was reserved by its own balance check.
        let account = self.account(&signer);
        let balance = account
            .balance
            .checked_sub(fee)
            .ok_or(TxError::InsufficientBalance {
                needed: fee,
                fee,
                available: account.balance,
            })?;
        let nonce = account
            .nonce
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("nonce".into()))?;
        self.accounts.insert(signer, Account { balance, nonce });
        if fee.0 > 0 {
            let g = self.globals_mut();
            g.burned = g
                .burned
                .checked_add(fee)
                .ok_or_else(|| TxError::Overflow("burned supply".into()))?;
            events.insert(
                0,
                Event::FeeBurned {
                    account: signer,
                    amount: fee,
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;

    fn transfer() -> Payload {
        Payload::Transfer {
            to: key(100).account(),
            amount: Amount::tokens(1),
        }
    }

    #[test]
    fn the_fee_is_per_encoded_byte_burned_and_listed_first() {
        let mut kit = Kit::new();
        let len = kit.tx(&key(4), transfer()).encode().len() as u64;
        let fee = Amount(kit.state.params().fee_per_byte.0 * len);
        let burned = kit.state.globals().burned;
        let before = kit.state.account(&key(4).account());
        let events = kit.ok(&key(4), transfer());
        assert_eq!(
            events[0],
            Event::FeeBurned {
                account: key(4).account(),
                amount: fee
            }
        );
        let after = kit.state.account(&key(4).account());
        assert_eq!(
            after.balance.0,
            before.balance.0 - fee.0 - Amount::tokens(1).0
        );
        assert_eq!(after.nonce, before.nonce + 1);
        assert_eq!(kit.state.globals().burned.0, burned.0 + fee.0);
    }

    #[test]
    fn uptime_is_free_only_when_a_node_reports_about_itself() {
        let mut kit = Kit::new();
        let farm = kit.farm(&key(1), "free");
        let node = kit.node(&key(1), farm, &key(40));
        let report = |kit: &Kit, signer: u8| {
            kit.tx(
                &key(signer),
                Payload::ReportUptime {
                    node,
                    uptime_secs: 10,
                    timestamp_secs: kit.ctx.time_ms / 1000,
                },
            )
        };
        assert!(kit.state.is_free(&report(&kit, 40)));
        assert!(
            !kit.state.is_free(&report(&kit, 1)),
            "the farmer is not the node"
        );
        assert!(!kit.state.is_free(&kit.tx(&key(40), transfer())));
    }

    #[test]
    fn a_signer_who_cannot_pay_the_fee_is_refused_whatever_the_payload() {
        let mut kit = Kit::new();
        let broke = key(60);
        kit.ok(
            &key(1),
            Payload::Transfer {
                to: broke.account(),
                amount: Amount(5),
            },
        );
        let err = kit.refused(
            &broke,
            Payload::Transfer {
                to: key(1).account(),
                amount: Amount(1),
            },
        );
        assert!(
            matches!(err, TxError::InsufficientBalance { available, .. } if available == Amount(5)),
            "{err}"
        );
    }
}
