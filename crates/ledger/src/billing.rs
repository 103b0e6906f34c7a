//! Billing of contracts in end-of-block logic, grace periods and their end.
//!
//! # Rules
//!
//! - Every live contract sits in the billing index under `(next_bill_ms, id)`. The end of
//!   each block bills the contracts due at its time, at most [`BILLS_PER_BLOCK_MAX`]
//!   (the rest stay due and go first in the next block), so a block's billing work is
//!   proportional to what is due, never to the number of contracts.
//! - A bill covers `[billed_until_ms, now)` exactly, plus the network traffic reported
//!   since the last bill. Periods of one contract never overlap and leave no gap: the
//!   bills of a contract add up to its whole life.
//! - Time its node was down is not billed: a bill leaves out what the node's down time
//!   counter ([`crate::Node::down_ms_until`]: silence beyond two uptime report intervals)
//!   gained over its period, and says how much (`node_down_ms`). The farmer is paid for
//!   the rest only, public IP hours too. Network traffic is billed as reported. This rule
//!   came after chains already ran: it has no activation height, so every validator of a
//!   chain must take it at the same height, and the blocks of a chain made before it replay
//!   to other roots wherever a node was silent (a devnet made before it: `--fresh`).
//! - Price: [`peergrid_core::economics`] units of what the contract reserves (a rent
//!   contract: the whole node; a deployment or storage contract on a node rented by its
//!   owner: only its public IPs, the rent pays the rest), the pricing policy's monthly
//!   prices, less the discount earned by the months of this contract's cost the
//!   owner's balance covers, converted at the governance token price. Each step rounds
//!   down to a µUSD; from ledger rules 1 ([`RULES_BILLS_CARRY`]) the net is worked out in
//!   pUSD (10^-12 USD) instead, and what it rounds off below a µUSD is carried to the
//!   contract's next bill (`carried_in_pusd`, `carried_out_pusd`), so the bills of a
//!   contract billed every few seconds add up to what its whole life costs rather than to
//!   nothing. A contract's last bill drops its carry (under a µUSD).
//! - Payment is all or nothing: if the owner's balance cannot pay a bill, nothing is
//!   taken and the contract enters grace. While in grace the debt is the whole unbilled
//!   period, which keeps growing; it is billed in one piece (at the prices in force
//!   then) as soon as the owner can pay: at the end of any block in which the owner
//!   received tokens, and at each billing interval. Paid, the contract is created again.
//! - After `grace_period_secs` in grace the contract is deleted (reason `out_of_funds`),
//!   releasing its node capacity, public IPs and name; the unpaid period is recorded as a
//!   written-off bill, so the bill history still covers every millisecond.
//! - Cancelling or updating a contract first settles it up to now; the fee of that
//!   transaction is kept aside. A cancel the owner cannot pay is written off; an update
//!   is refused.
//! - Bills are kept in the state for [`bills_kept_ms`] after their period ends (three
//!   minting periods, at least a day), then pruned, at most [`BILLS_PRUNED_PER_BLOCK_MAX`]
//!   per block; their count and total stay with the contract
//!   ([`crate::PrunedBills`]), and the
//!   block archive keeps every `ContractBilled` event.
//! - The split is 50 % to the payout account of the node's farm (the foundation for
//!   contracts without a node), 40 % to the foundation, 10 % plus the rounding remainder
//!   to the staking pool.

use peergrid_core::economics::{self, Billable, Split};
use peergrid_core::{AccountId, Amount, ContractId};

use crate::records::{Bill, BillStatus, Contract, ContractState, DeleteReason};
use crate::state::State;
use peergrid_types::Event;

/// The ledger rules ([`crate::genesis::LEDGER_RULES`]) from which a bill carries what it
/// rounds off below a µUSD to the contract's next bill.
pub const RULES_BILLS_CARRY: u64 = 1;

/// Most contracts billed in one block; a backlog (after a stalled chain) drains over the next blocks.
pub const BILLS_PER_BLOCK_MAX: usize = 10_000;

/// Most bills pruned in one block.
pub const BILLS_PRUNED_PER_BLOCK_MAX: usize = 1_000;

/// How long a bill stays in the state after its period ends, ms: three minting periods
/// (a farmer checking a reward can still see the bills behind it), and at least a day.
pub fn bills_kept_ms(minting_period_secs: u64) -> u64 {
    minting_period_secs
        .saturating_mul(3)
        .max(24 * 3600)
        .saturating_mul(1000)
}

/// A bill the owner could not pay: what it needed.
pub(crate) struct Unpaid {
    /// Tokens the bill needed, plus any reserve kept aside.
    pub needed: Amount,
    /// The owner's balance.
    pub available: Amount,
}

impl State {
    /// What `c` is billed for by time.
    pub fn billable(&self, c: &Contract) -> Billable {
        c.billable(c.node.and_then(|id| self.node(id)))
    }

    /// The bill `c` would get if billed up to `to_ms` now, unpaid.
    pub fn price_bill(&self, c: &Contract, to_ms: u64) -> Bill {
        let params = self.params();
        let pricing = &params.pricing;
        let price = params.token_price_uusd;
        let billable = self.billable(c);
        let node = c.node.and_then(|n| self.node(n));
        let period_ms = to_ms.saturating_sub(c.billed_until_ms);
        let node_down_ms = node
            .map_or(0, |n| {
                n.down_ms_until(to_ms, params)
                    .saturating_sub(c.node_down_counter_ms)
            })
            .min(period_ms);
        let resources_pusd = economics::cost_pusd(&billable, pricing, period_ms - node_down_ms);
        let nu_pusd = economics::nu_cost_pusd(c.unbilled_nu_bytes, pricing);
        let (resources_uusd, nu_uusd) = (
            economics::whole_uusd(resources_pusd),
            economics::whole_uusd(nu_pusd),
        );
        let balance_uusd = economics::tokens_to_uusd(self.account(&c.owner).balance, price);
        let discount = economics::discount(
            balance_uusd,
            economics::monthly_cost_uusd(&billable, pricing),
            pricing,
        );
        let carries = self.config().ledger_rules >= RULES_BILLS_CARRY;
        let carried_in_pusd = if carries { c.carry_pusd } else { 0 };
        let (net_uusd, carried_out_pusd) = if carries {
            let gross = resources_pusd.saturating_add(nu_pusd);
            economics::net_carried(gross, discount.percent, carried_in_pusd)
        } else {
            let gross = resources_uusd.saturating_add(nu_uusd);
            (economics::apply_discount(gross, discount.percent), 0)
        };
        let tokens = economics::uusd_to_tokens(net_uusd, price);
        let farmer_payout = node.and_then(|n| self.farm(n.farm)).map(|f| f.payout);
        Bill {
            contract: c.id,
            owner: c.owner,
            node: c.node,
            from_ms: c.billed_until_ms,
            to_ms,
            billable,
            node_down_ms,
            nu_bytes: c.unbilled_nu_bytes,
            resources_uusd,
            nu_uusd,
            discount,
            net_uusd,
            token_price_uusd: price,
            tokens,
            split: economics::split(tokens),
            farmer_payout,
            status: BillStatus::Paid,
            carried_in_pusd,
            carried_out_pusd,
        }
    }

    /// Bill `id` up to `now_ms` if its owner can pay it and still keep `reserve`; all or nothing.
    /// `closing`: the contract is being deleted, so this is its last bill.
    pub(crate) fn try_bill(
        &mut self,
        id: ContractId,
        now_ms: u64,
        reserve: Amount,
        closing: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), Unpaid> {
        let Some(c) = self.contracts.get(&id) else {
            return Ok(());
        };
        // With no time elapsed since the last bill, usage reported since waits for the next
        // bill: a bill of no time would start where that next one starts, and bills are
        // stored by contract and start, so the next would overwrite it. A contract being
        // closed gets no next bill, so it pays its usage now.
        if now_ms <= c.billed_until_ms && (c.unbilled_nu_bytes == 0 || !closing) {
            return Ok(());
        }
        let bill = self.price_bill(c, now_ms);
        let available = self.account(&bill.owner).balance;
        let needed = bill.tokens.saturating_add(reserve);
        if available < needed {
            return Err(Unpaid { needed, available });
        }
        self.pay(&bill, events);
        self.record_bill(bill, events);
        Ok(())
    }

    fn credit(&mut self, to: AccountId, amount: Amount) {
        if amount == Amount::ZERO {
            return;
        }
        let mut a = self.account(&to);
        // Credits move tokens that exist, so the sum of balances (≤ supply ≤ u64::MAX) bounds them.
        a.balance = a.balance.saturating_add(amount);
        self.accounts.insert(to, a);
        self.mark_funded(&to);
    }

    fn pay(&mut self, bill: &Bill, events: &mut Vec<Event>) {
        let mut owner = self.account(&bill.owner);
        owner.balance = Amount(owner.balance.0 - bill.tokens.0);
        self.accounts.insert(bill.owner, owner);
        let config = self.config();
        let (foundation, staking) = (config.foundation, config.staking_pool);
        let Split {
            farmer,
            foundation: to_foundation,
            staking: to_staking,
        } = bill.split;
        match bill.farmer_payout {
            Some(payout) => self.credit(payout, farmer),
            None => self.credit(foundation, farmer),
        }
        self.credit(foundation, to_foundation);
        self.credit(staking, to_staking);
        let e = self.economy_mut();
        e.billed_total = e.billed_total.saturating_add(bill.tokens);
        if let Some(node) = bill.node
            && bill.billable.ipv4 > 0
        {
            let billed_ms = bill
                .to_ms
                .saturating_sub(bill.from_ms)
                .saturating_sub(bill.node_down_ms);
            let ip_secs = bill.billable.ipv4 as u64 * (billed_ms / 1000);
            self.add_ip_secs(node, bill.to_ms, ip_secs, events);
        }
    }

    fn record_bill(&mut self, bill: Bill, events: &mut Vec<Event>) {
        let node_down_ms = bill
            .node
            .and_then(|n| self.node(n))
            .map(|n| n.down_ms_until(bill.to_ms, self.params()));
        if let Some(c) = self.contracts.get_mut(&bill.contract) {
            c.billed_until_ms = bill.to_ms;
            c.unbilled_nu_bytes = 0;
            c.carry_pusd = bill.carried_out_pusd;
            if let Some(down) = node_down_ms {
                c.node_down_counter_ms = down;
            }
        }
        events.push(Event::ContractBilled {
            contract: bill.contract,
            owner: bill.owner,
            from_ms: bill.from_ms,
            to_ms: bill.to_ms,
            uusd: bill.net_uusd,
            tokens: bill.tokens,
            status: bill.status,
        });
        self.bills_by_end
            .insert((bill.to_ms, bill.contract, bill.from_ms), ());
        self.bills.insert((bill.contract, bill.from_ms), bill);
    }

    /// Prune bills whose period ended more than [`bills_kept_ms`] before `now_ms`, oldest
    /// first, carrying their count and total into the contract's [`PrunedBills`].
    fn prune_bills(&mut self, now_ms: u64) {
        let Some(cutoff) = now_ms.checked_sub(bills_kept_ms(self.params().minting_period_secs))
        else {
            return;
        };
        let old: Vec<(u64, ContractId, u64)> = self
            .bills_by_end
            .range(..(cutoff, 0, 0))
            .take(BILLS_PRUNED_PER_BLOCK_MAX)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            let (_, contract, from_ms) = key;
            self.bills_by_end.remove(&key);
            let Some(bill) = self.bills.get(&(contract, from_ms)).cloned() else {
                continue;
            };
            self.bills.remove(&(contract, from_ms));
            let mut pruned = self
                .pruned_bills
                .get(&contract)
                .copied()
                .unwrap_or_default();
            pruned.until_ms = pruned.until_ms.max(bill.to_ms);
            pruned.count += 1;
            pruned.tokens = Amount(pruned.tokens.0.saturating_add(bill.tokens.0));
            self.pruned_bills.insert(contract, pruned);
        }
    }

    /// Mark `account` for a grace re-check at the end of the block, if it has contracts in grace.
    pub(crate) fn mark_funded(&mut self, account: &AccountId) {
        if self.grace_contracts_of(account).next().is_some() && !self.funded.contains(account) {
            self.funded.insert(*account, ());
        }
    }

    /// Put `id` in the billing index at `due_ms`, replacing its previous entry.
    pub(crate) fn schedule_bill(&mut self, id: ContractId, due_ms: u64) {
        let Some(c) = self.contracts.get_mut(&id) else {
            return;
        };
        let old = c.next_bill_ms;
        c.next_bill_ms = due_ms;
        self.billing_due.remove(&(old, id));
        self.billing_due.insert((due_ms, id), ());
    }

    /// Settle `id` up to `now_ms` keeping `reserve`, writing off what the owner cannot pay.
    pub(crate) fn settle_or_write_off(
        &mut self,
        id: ContractId,
        now_ms: u64,
        reserve: Amount,
        events: &mut Vec<Event>,
    ) {
        if self.try_bill(id, now_ms, reserve, true, events).is_ok() {
            return;
        }
        self.write_off(id, now_ms, events);
    }

    /// Close `id`'s bills up to `now_ms` with one for nothing: written off, so its history
    /// still covers every millisecond and says what was not paid.
    pub(crate) fn write_off(&mut self, id: ContractId, now_ms: u64, events: &mut Vec<Event>) {
        let Some(c) = self.contracts.get(&id) else {
            return;
        };
        // Billed up to now already (created, updated or resumed in this block): nothing to say.
        if now_ms <= c.billed_until_ms && c.unbilled_nu_bytes == 0 {
            return;
        }
        let mut bill = self.price_bill(c, now_ms);
        bill.status = BillStatus::WrittenOff;
        bill.tokens = Amount::ZERO;
        bill.split = Split::default();
        self.record_bill(bill, events);
    }

    /// Settle `id` and delete it for `reason`, releasing everything it holds.
    pub(crate) fn close_contract(
        &mut self,
        id: ContractId,
        reason: DeleteReason,
        now_ms: u64,
        reserve: Amount,
        events: &mut Vec<Event>,
    ) {
        self.settle_or_write_off(id, now_ms, reserve, events);
        self.delete_contract(id, reason, now_ms, events);
    }

    fn enter_grace(&mut self, id: ContractId, now_ms: u64, events: &mut Vec<Event>) {
        let Some(c) = self.contracts.get_mut(&id) else {
            return;
        };
        c.state = ContractState::GracePeriod { since_ms: now_ms };
        let (owner, node) = (c.owner, c.node);
        self.grace_by_owner.insert((owner, id), ());
        events.push(Event::ContractGraceStarted {
            contract: id,
            owner,
            node,
            since_ms: now_ms,
        });
    }

    /// Try to pay the debt of `id`, in grace; on success it is created again.
    fn try_resume(&mut self, id: ContractId, now_ms: u64, events: &mut Vec<Event>) -> bool {
        if self
            .try_bill(id, now_ms, Amount::ZERO, false, events)
            .is_err()
        {
            return false;
        }
        let Some(c) = self.contracts.get_mut(&id) else {
            return false;
        };
        let ContractState::GracePeriod { since_ms } = c.state else {
            return true;
        };
        c.state = ContractState::Created;
        let (owner, node) = (c.owner, c.node);
        self.grace_by_owner.remove(&(owner, id));
        events.push(Event::ContractGraceEnded {
            contract: id,
            owner,
            node,
            since_ms,
        });
        let interval_ms = self.params().billing_interval_secs.saturating_mul(1000);
        self.schedule_bill(id, now_ms.saturating_add(interval_ms));
        true
    }

    /// Bill one due contract, moving it into, out of or past grace.
    fn bill_due(&mut self, id: ContractId, now_ms: u64, events: &mut Vec<Event>) {
        let Some(state) = self.contract(id).map(|c| c.state) else {
            return;
        };
        let params = self.params();
        let interval_ms = params.billing_interval_secs.saturating_mul(1000);
        let grace_ms = params.grace_period_secs.saturating_mul(1000);
        let next = now_ms.saturating_add(interval_ms);
        match state {
            ContractState::Created => {
                if self
                    .try_bill(id, now_ms, Amount::ZERO, false, events)
                    .is_ok()
                {
                    self.schedule_bill(id, next);
                } else {
                    self.enter_grace(id, now_ms, events);
                    self.schedule_bill(
                        id,
                        next.min(now_ms.saturating_add(grace_ms).max(now_ms + 1)),
                    );
                }
            }
            ContractState::GracePeriod { since_ms } => {
                let ends_ms = since_ms.saturating_add(grace_ms);
                if now_ms >= ends_ms {
                    self.close_contract(id, DeleteReason::OutOfFunds, now_ms, Amount::ZERO, events);
                } else if !self.try_resume(id, now_ms, events) {
                    self.schedule_bill(id, next.min(ends_ms));
                }
            }
            ContractState::Deleted { .. } => {}
        }
    }

    /// End-of-block billing: contracts due, then owners in grace who received funds.
    pub(crate) fn end_block_billing(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        let due: Vec<(u64, ContractId)> = self
            .billing_due
            .range(..(now_ms.saturating_add(1), 0))
            .take(BILLS_PER_BLOCK_MAX)
            .map(|(k, _)| *k)
            .collect();
        for (_, id) in due {
            self.bill_due(id, now_ms, events);
        }
        self.prune_bills(now_ms);
        // Owners funded during this block, including by the bills and rewards above. Funds that
        // arrive while this runs are re-checked at the end of the next block.
        let funded: Vec<AccountId> = self.funded.iter().map(|(a, _)| *a).collect();
        for owner in funded {
            self.funded.remove(&owner);
            let in_grace: Vec<ContractId> = self.grace_contracts_of(&owner).map(|c| c.id).collect();
            for id in in_grace {
                self.try_resume(id, now_ms, events);
            }
        }
    }
}
