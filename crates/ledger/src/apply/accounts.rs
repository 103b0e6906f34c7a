//! Accounts: moving tokens from one to another.

use peergrid_core::{AccountId, Amount};

use crate::records::Account;
use crate::state::State;

use super::*;

impl State {
    pub(super) fn transfer(
        &mut self,
        at: Applying<'_>,
        to: &AccountId,
        amount: &Amount,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Applying { signer, fee, .. } = at;
        let from = self.account(&signer);
        let needed = amount
            .checked_add(fee)
            .ok_or_else(|| TxError::Overflow("amount".into()))?;
        if from.balance < needed {
            return Err(TxError::InsufficientBalance {
                needed,
                fee,
                available: from.balance,
            });
        }
        let left = Amount(from.balance.0 - amount.0);
        self.accounts.insert(
            signer,
            Account {
                balance: left,
                ..from
            },
        );
        let dest = self.account(to);
        let credited = dest
            .balance
            .checked_add(*amount)
            .ok_or_else(|| TxError::Overflow("balance".into()))?;
        self.accounts.insert(
            *to,
            Account {
                balance: credited,
                ..dest
            },
        );
        self.mark_funded(to);
        events.push(Event::Transferred {
            from: signer,
            to: *to,
            amount: *amount,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{Kit, key};
    use super::*;
    use peergrid_core::Payload;

    #[test]
    fn a_transfer_to_oneself_costs_only_the_fee() {
        let mut kit = Kit::new();
        let me = key(5).account();
        let before = kit.state.account(&me).balance;
        let events = kit.ok(
            &key(5),
            Payload::Transfer {
                to: me,
                amount: Amount::tokens(10),
            },
        );
        let fee = match events[0] {
            Event::FeeBurned { amount, .. } => amount,
            ref other => panic!("the fee comes first, got {other:?}"),
        };
        assert_eq!(kit.state.account(&me).balance.0, before.0 - fee.0);
    }

    #[test]
    fn a_transfer_creates_the_receiving_account() {
        let mut kit = Kit::new();
        let fresh = key(77).account();
        assert_eq!(kit.state.account(&fresh), Account::default());
        kit.ok(
            &key(5),
            Payload::Transfer {
                to: fresh,
                amount: Amount(3),
            },
        );
        let account = kit.state.account(&fresh);
        assert_eq!((account.balance, account.nonce), (Amount(3), 0));
    }

    #[test]
    fn the_amount_and_the_fee_must_both_be_covered() {
        let mut kit = Kit::new();
        let all = kit.state.account(&key(5).account()).balance;
        let err = kit.refused(
            &key(5),
            Payload::Transfer {
                to: key(6).account(),
                amount: all,
            },
        );
        assert!(
            matches!(err, TxError::InsufficientBalance { needed, fee, .. } if needed.0 == all.0 + fee.0 && fee.0 > 0),
            "{err}"
        );
    }
}
