//! Applying one signed transaction: every rule, every rejection, every event.
//!
//! Rules are checked in this order: chain id, field limits, signature, nonce, then
//! the payload's own rules against the state, then the fee. A transaction that
//! breaks any of them is rejected with a [`TxError`] naming the rule and changes
//! nothing, not even the nonce: the state is rolled back to where it was before.
//!
//! The envelope (expiry, nonce, fee) is here; each payload's rules are in the file of its
//! subject: [`accounts`], [`farms`], [`nodes`], [`contracts`], [`governance`].

use serde::{Deserialize, Serialize};

use peergrid_core::{AccountId, Amount, Payload, SignedTx};

use crate::state::State;

/// What a block tells the state machine about itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlockContext {
    /// The block's height.
    pub height: u64,
    /// The block's timestamp, set by its proposer: the ledger's only clock, ms.
    pub time_ms: u64,
}

pub use peergrid_types::{Event, TxError};

mod accounts;
mod check;
mod contracts;
mod epoch;
mod farms;
mod fee;
mod governance;
mod nodes;
#[cfg(test)]
mod testkit;

pub use check::{Checked, check_stateless, check_stateless_batch};

/// Who applies a transaction, at which block, and the fee it pays: what every payload's rules read.
#[derive(Clone, Copy)]
struct Applying<'a> {
    signer: AccountId,
    fee: Amount,
    ctx: &'a BlockContext,
}

impl State {
    /// Apply one transaction at `ctx`: all or nothing.
    pub fn apply_tx(&mut self, tx: &SignedTx, ctx: &BlockContext) -> Result<Vec<Event>, TxError> {
        check_stateless(tx, self.chain_id())?;
        self.apply_checked(tx, tx.encode().len(), ctx)
    }

    /// Apply a transaction whose fields and signature were already checked; `len` is its encoded size.
    pub(crate) fn apply_checked(
        &mut self,
        tx: &SignedTx,
        len: usize,
        ctx: &BlockContext,
    ) -> Result<Vec<Event>, TxError> {
        let mark = self.mark();
        let result = self.apply_inner(tx, len, ctx);
        if result.is_err() {
            self.rollback(&mark);
        }
        self.forget_undo();
        result
    }

    /// The nonce check alone, so the mempool can tell stale from future transactions.
    pub fn check_nonce(&self, signer: &AccountId, nonce: u64) -> Result<(), TxError> {
        let expected = self.account(signer).nonce;
        match nonce.cmp(&expected) {
            std::cmp::Ordering::Less => Err(TxError::StaleNonce {
                signer: *signer,
                expected,
                got: nonce,
            }),
            std::cmp::Ordering::Greater => Err(TxError::FutureNonce {
                signer: *signer,
                expected,
                got: nonce,
            }),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    fn apply_inner(
        &mut self,
        tx: &SignedTx,
        len: usize,
        ctx: &BlockContext,
    ) -> Result<Vec<Event>, TxError> {
        let signer = tx.body.signer;
        if ctx.time_ms > tx.body.expires_ms {
            return Err(TxError::Expired {
                expires_ms: tx.body.expires_ms,
                now_ms: ctx.time_ms,
            });
        }
        self.check_nonce(&signer, tx.body.nonce)?;
        let mut events = Vec::new();
        let fee = self.fee_for(tx, len)?;
        let at = Applying { signer, fee, ctx };
        self.apply_payload(at, &tx.body.payload, &mut events)?;
        self.charge_fee(signer, fee, &mut events)?;
        Ok(events)
    }

    /// Each payload to the rules of its subject.
    fn apply_payload(
        &mut self,
        at: Applying<'_>,
        payload: &Payload,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        match payload {
            Payload::Transfer { to, amount } => self.transfer(at, to, amount, events),
            Payload::CreateFarm { name, public_ips } => {
                self.create_farm(at, name, public_ips, events)
            }
            Payload::UpdateFarm {
                farm,
                name,
                public_ips,
                payout,
            } => self.update_farm(
                at,
                farm,
                name.as_deref(),
                public_ips.as_deref(),
                payout,
                events,
            ),
            Payload::RegisterNode {
                farm,
                capacity,
                location,
                invitation,
            } => self.register_node(at, farm, capacity, location, invitation, events),
            Payload::UpdateNode {
                node,
                capacity,
                location,
            } => self.update_node(at, node, capacity.as_ref(), location.as_ref(), events),
            Payload::SetPowerTarget { node, target } => {
                self.set_power_target(at, node, target, events)
            }
            Payload::ReportUptime {
                node,
                uptime_secs,
                timestamp_secs,
            } => self.report_uptime(at, node, uptime_secs, timestamp_secs, events),
            Payload::ReportUsage { contract, nu_bytes } => {
                self.report_usage(at, contract, nu_bytes, events)
            }
            Payload::CreateContract(spec) => self.create_contract(at, spec, events),
            Payload::UpdateContract {
                contract,
                deployment_hash,
                resources,
            } => self.update_contract(at, contract, deployment_hash, resources, events),
            Payload::CancelContract { contract } => self.cancel_contract(at, contract, events),
            Payload::Propose {
                action,
                description,
            } => self.propose(at, action, description, events),
            Payload::Vote { proposal, approve } => {
                self.vote(*proposal, at.signer, *approve, at.ctx, events)
            }
            Payload::ReleaseContract { contract, reason } => {
                self.release_contract(at, contract, reason, events)
            }
        }
    }
}
