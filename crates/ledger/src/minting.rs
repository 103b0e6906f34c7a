//! Uptime accounting per minting period, monthly minting, and reward receipts.
//!
//! # Rules
//!
//! - Minting period `p` is `[genesis + p·len, genesis + (p+1)·len)` of ledger time,
//!   `len = minting_period_secs`.
//! - Each accepted uptime report updates the node's counters at once, so minting
//!   never replays history. A node's uptime is how long its service has been running
//!   without a stop (a reboot, or its daemon stopped and started again), so a start is
//!   a "boot" here. The ledger already refused a report whose timestamp is more than
//!   `uptime_drift_secs` from ledger time. A report at ledger time `t` with uptime `u`
//!   and node clock `ts`, after a previous report at `t'` with `u'`, `ts'`, is judged on
//!   the boot times it implies, `b = ts − u` and `b' = ts' − u'`, with the tolerance
//!   `s = clock_skew_max_secs`:
//!   - `b < b' − s`: the uptime grew more than the clock did: **uptime beyond elapsed**, a
//!     violation;
//!   - `t − u > t'`: the node started after the previous report was applied: a
//!     restart, judged as a reboot below even when `b` is within `s` of `b'` (as it is
//!     for a node stopped soon after it started and started again soon after);
//!   - otherwise `|b − b'| ≤ s`: the same boot, up all along: `[t', t)` counts as up,
//!     unless `b` is more than `s` from `b₀`, the boot time implied when this boot was
//!     first seen: the node's clock and its uptime counter drifted apart, a little per
//!     report, by more than `s` over the boot: **clock skew**, a violation;
//!   - a reboot (`b > b' + s`, or a restart) with `b ≥ ts' − s`: after the previous
//!     report: the time since the boot, `[max(t', t − u), t)`, counts;
//!   - a reboot with `b < ts' − s`: the node booted before its previous report but that
//!     report showed the old boot: **hidden reboot**, a violation.
//!
//!   Whatever a report counts ends at most two report intervals after the previous
//!   report (or the registration): longer silence is time the node counts as down, and
//!   down time is neither billed to its contracts ([`crate::billing`]) nor rewarded, even
//!   when the node's uptime shows it ran (frozen, or cut off from the ledger). A node
//!   that reports in every window never reaches that bound (two reports in consecutive
//!   windows are less than two intervals apart). Like the billing rule, this came after
//!   chains already ran and has no activation height (see [`crate::billing`]).
//!
//!   A ledger that makes no block cannot hear any node. Before ledger rules 2 it counted
//!   every node down for the part of such a gap past the two intervals. From rules 2
//!   ([`RULES_LEDGER_OUTAGE`]) a gap between two blocks longer than the idle chain's rest
//!   plus [`STALL_GAP_MS`] is the ledger's **outage** for what lies beyond that, kept as a
//!   running total ([`crate::Economy::outage_ms`]). When a node's silence since its
//!   previous report (or registration), less the outage within it, is at most two
//!   intervals and one gap's head (the idle rest and [`STALL_GAP_MS`], in which no node
//!   could be heard either), its report counts the whole silence as up when it shows the
//!   same boot (and from the boot when it shows a reboot). A longer silence while the
//!   ledger ran counts as before, outage or not. Billing is unchanged: nobody is billed
//!   for the outage.
//!
//!   A node's first report counts `[max(registration, t − u), t)`. Its `b` becomes `b₀`,
//!   as does the `b` of a reboot or of any violation, so one fault is counted once.
//!   Counted time is split across period boundaries. A violation counts nothing and
//!   zeroes the reward of the period it is seen in.
//!
//!   A node's clock may be off by up to `uptime_drift_secs` either way in every accepted
//!   report, so `b` may move by twice that without any fault; genesis therefore requires
//!   `s ≥ 2 · uptime_drift_secs` (production: 120 s and 60 s), and a clock that stays
//!   within the accepted drift is never a violation by itself.
//! - Counters are kept for the current and the previous period, so a report that comes
//!   just after a period's end still credits the end of that period. Period `p` is minted
//!   from ledger time `end(p) + 2·uptime_interval_secs`, when every node that was up at
//!   the end has reported since; a report later than that credits only the new period.
//!   From rules 2, the outage after the period's end is added to that wait
//!   ([`crate::Economy::mint_outage_ms`]): nodes have two intervals of a live ledger to
//!   report the period's end (with one gap's head, which no node could report in either).
//!   A node keeps counters for two periods only: from rules 2, whatever would roll them
//!   past a period not minted yet (its report, a usage report, a bill of its public IPs)
//!   mints that node's receipts of the periods left behind first, and the batch skips them.
//! - Minting walks the nodes in id order, [`MINT_NODES_PER_BLOCK`] per block, from a
//!   cursor kept in the state: the work per period is O(nodes) and per block is bounded.
//!   Each node registered before the period's end gets a [`RewardReceipt`] (also when
//!   it earned nothing, saying why), and its reward is minted to its farm's payout
//!   account at the node's connection price.
//! - Receipts stay in the state for the last [`RECEIPT_PERIODS_KEPT`] minted periods
//!   (a year of production periods), then are pruned, oldest first, at most
//!   [`RECEIPTS_PRUNED_PER_BLOCK_MAX`] per block, so the state does not grow with every
//!   period forever. The blocks keep every `RewardMinted` event (period, node, farm,
//!   payout, µUSD and tokens), and a pruned receipt is recomputed whole by replaying
//!   the blocks up to its minting: minting is a pure function of the ledger's history.

use peergrid_core::amount::Amount;
use peergrid_core::economics::{self, RewardInputs};
use peergrid_core::{FarmId, NodeId};

use crate::records::{
    NodeUptime, PeriodUptime, RewardReceipt, STALL_GAP_MS, VIOLATIONS_KEPT, Violation,
    ViolationKind,
};
use crate::state::State;
use peergrid_types::Event;

/// The ledger rules ([`crate::genesis::LEDGER_RULES`]) from which a gap between blocks
/// beyond [`STALL_GAP_MS`] past the idle rest is the ledger's outage, not the nodes'.
pub const RULES_LEDGER_OUTAGE: u64 = 2;

/// Most nodes minted in one block.
pub const MINT_NODES_PER_BLOCK: usize = 1_000;

/// Minted periods whose receipts stay in the state.
pub const RECEIPT_PERIODS_KEPT: u64 = 12;

/// Most receipts pruned in one block: as many as a block mints, so pruning keeps pace.
pub const RECEIPTS_PRUNED_PER_BLOCK_MAX: usize = MINT_NODES_PER_BLOCK;

/// What one uptime report says, judged against the previous one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReportVerdict {
    /// Ledger time `[from_ms, to_ms)` counts as up.
    Up {
        /// Start, ledger ms.
        from_ms: u64,
        /// End, ledger ms.
        to_ms: u64,
    },
    /// The report breaks a rule.
    Violation(ViolationKind),
}

/// A node's previous accepted report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PreviousReport {
    /// Ledger time it was applied, ms.
    pub at_ms: u64,
    /// Uptime it claimed, s.
    pub uptime_secs: u64,
    /// The node's clock in it, s.
    pub timestamp_secs: u64,
    /// The boot time the current boot is held to, `b₀` (see the module rules), node clock s.
    pub boot_secs: i64,
}

/// What a report says, and the boot time `b₀` the next report is held to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Judgement {
    /// Up time to count, or the rule broken.
    pub verdict: ReportVerdict,
    /// `b₀` for the next report, node clock s.
    pub boot_secs: i64,
}

fn to_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

fn to_u64(v: i128) -> u64 {
    v.clamp(0, u64::MAX as i128) as u64
}

/// Judge a report at ledger time `now_ms` (see the module rules); `since_ms` is the node's registration.
pub fn judge_report(
    previous: Option<PreviousReport>,
    since_ms: u64,
    now_ms: u64,
    uptime_secs: u64,
    timestamp_secs: u64,
    skew_max_secs: u64,
) -> Judgement {
    // Boot times on the node's own clock; signed and wide so a claimed boot before 1970 still compares.
    let boot = timestamp_secs as i128 - uptime_secs as i128;
    let judged = |verdict| Judgement {
        verdict,
        boot_secs: to_i64(boot),
    };
    let violation = |kind| judged(ReportVerdict::Violation(kind));
    let booted_ms = now_ms.saturating_sub(uptime_secs.saturating_mul(1000));
    let Some(p) = previous else {
        return judged(ReportVerdict::Up {
            from_ms: booted_ms.max(since_ms).min(now_ms),
            to_ms: now_ms,
        });
    };
    let previous_boot = p.timestamp_secs as i128 - p.uptime_secs as i128;
    let s = skew_max_secs as i128;
    if boot < previous_boot - s {
        return violation(ViolationKind::UptimeBeyondElapsed {
            gained_secs: uptime_secs.saturating_sub(p.uptime_secs),
            elapsed_secs: timestamp_secs.saturating_sub(p.timestamp_secs),
        });
    }
    // Within the tolerance a restart can imply a boot close to the previous one; the
    // uptime itself still shows it.
    let restarted = booted_ms > p.at_ms;
    if boot <= previous_boot + s && !restarted {
        let first_boot = p.boot_secs as i128;
        let skew = (boot - first_boot).abs();
        if skew > s {
            return violation(ViolationKind::ClockSkew {
                first_boot_secs: to_u64(first_boot),
                boot_secs: to_u64(boot),
                skew_secs: to_u64(skew),
                max_secs: skew_max_secs,
            });
        }
        return Judgement {
            verdict: ReportVerdict::Up {
                from_ms: p.at_ms,
                to_ms: now_ms,
            },
            boot_secs: p.boot_secs,
        };
    }
    if boot < p.timestamp_secs as i128 - s {
        return violation(ViolationKind::HiddenReboot {
            previous_boot_secs: to_u64(previous_boot),
            boot_secs: to_u64(boot),
            previous_report_secs: p.timestamp_secs,
        });
    }
    judged(ReportVerdict::Up {
        from_ms: booted_ms.max(p.at_ms).min(now_ms),
        to_ms: now_ms,
    })
}

impl State {
    fn period_len_ms(&self) -> u64 {
        self.params()
            .minting_period_secs
            .saturating_mul(1000)
            .max(1)
    }

    /// The minting period that ledger time `time_ms` falls in.
    pub fn period_of(&self, time_ms: u64) -> u64 {
        time_ms.saturating_sub(self.economy().genesis_ms) / self.period_len_ms()
    }

    /// Start and end (exclusive) of minting period `period`, ledger ms.
    pub fn period_bounds(&self, period: u64) -> (u64, u64) {
        let len = self.period_len_ms();
        let start = self
            .economy()
            .genesis_ms
            .saturating_add(period.saturating_mul(len));
        (start, start.saturating_add(len))
    }

    /// The node's counters rolled forward to the period of `now_ms`.
    fn uptime_now(&self, node: NodeId, now_ms: u64) -> NodeUptime {
        let period = self.period_of(now_ms);
        let mut u = self.node_uptime.get(&node).cloned().unwrap_or(NodeUptime {
            current: PeriodUptime::new(period),
            previous: PeriodUptime::new(period.saturating_sub(1)),
        });
        if u.current.period < period {
            let current = std::mem::replace(&mut u.current, PeriodUptime::new(period));
            u.previous = if current.period + 1 == period {
                current
            } else {
                PeriodUptime::new(period - 1)
            };
        }
        u
    }

    /// Apply an accepted report's verdict to the node's period counters; returns the boot
    /// time `b₀` the node's next report is held to.
    pub(crate) fn account_uptime(
        &mut self,
        node: NodeId,
        previous: Option<PreviousReport>,
        now_ms: u64,
        uptime_secs: u64,
        timestamp_secs: u64,
        events: &mut Vec<Event>,
    ) -> i64 {
        // Read before the node's record takes this report: its silence so far ends there.
        let outage_ms = self.economy().outage_ms;
        let two_intervals_ms = self.params().uptime_interval_secs.saturating_mul(2000);
        let Some((registered_ms, up_until_ms)) = self.node(node).map(|n| {
            let bound_ms = n.up_until_ms(self.params());
            // The ledger's outage since the node's last report was no silence of the node's:
            // when the rest of the silence, while the ledger ran, is within the two
            // intervals, the whole silence may count. Otherwise the node fell silent while
            // the ledger could hear it, and its silence counts as before (the outages are
            // not kept one by one, so one after that bound is not told from one before).
            // The head of a stalled gap (the idle rest and `STALL_GAP_MS`) is not outage,
            // yet no node could be heard in it either: one such head is allowed for.
            let outage_since = outage_ms.saturating_sub(n.ledger_outage_ms);
            let since_ms = n.uptime.last_report_ms.unwrap_or(n.registered_ms);
            let heard_ms = now_ms.saturating_sub(since_ms).saturating_sub(outage_since);
            let allowed_ms = two_intervals_ms
                .saturating_add(STALL_GAP_MS)
                .saturating_add(self.params().idle_block_ms);
            let bound_ms = if outage_since > 0 && heard_ms <= allowed_ms {
                bound_ms.max(now_ms)
            } else {
                bound_ms
            };
            (n.registered_ms, bound_ms)
        }) else {
            return to_i64(timestamp_secs as i128 - uptime_secs as i128);
        };
        let Judgement { verdict, boot_secs } = judge_report(
            previous,
            registered_ms,
            now_ms,
            uptime_secs,
            timestamp_secs,
            self.params().clock_skew_max_secs,
        );
        // What billing counts as down, silence beyond two report intervals since the previous
        // report (or registration), is not counted up: the node's contracts were not billed
        // for it, so its farmer is not rewarded for it either. The ledger's own outage
        // (rules 2 on) is not the node's silence: nobody is billed for it, and a node that
        // shows it ran through it is rewarded for it.
        let credit = match verdict {
            ReportVerdict::Up { from_ms, to_ms } => {
                let to_ms = to_ms.min(up_until_ms);
                Some((from_ms.min(to_ms), to_ms))
            }
            ReportVerdict::Violation(_) => None,
        };
        let mut u = self.rolled_uptime(node, now_ms, credit, events);
        u.current.reports = u.current.reports.saturating_add(1);
        self.credit_slot(credit, &mut u.previous);
        self.credit_slot(credit, &mut u.current);
        match verdict {
            ReportVerdict::Up { .. } => {}
            ReportVerdict::Violation(kind) => {
                let slot = &mut u.current;
                if slot.violations.len() < VIOLATIONS_KEPT {
                    slot.violations.push(Violation {
                        at_ms: now_ms,
                        kind,
                    });
                }
                slot.violation_count = slot.violation_count.saturating_add(1);
                events.push(Event::UptimeViolation {
                    node,
                    period: slot.period,
                    violation: kind,
                });
            }
        }
        self.node_uptime.insert(node, u);
        boot_secs
    }

    /// Add the part of `credit` (ledger ms, from and to) in `slot`'s period to its up time.
    fn credit_slot(&self, credit: Option<(u64, u64)>, slot: &mut PeriodUptime) {
        if let Some((from_ms, to_ms)) = credit {
            let (start, end) = self.period_bounds(slot.period);
            let overlap = to_ms.min(end).saturating_sub(from_ms.max(start));
            slot.up_ms = slot.up_ms.saturating_add(overlap);
        }
    }

    /// The node's counters rolled forward to the period of `now_ms`, every period they
    /// leave behind unminted minted first (ledger rules 2 on; see
    /// [`State::mint_before_rolling`]). Whatever changes a node's counters goes through this.
    fn rolled_uptime(
        &mut self,
        node: NodeId,
        now_ms: u64,
        credit: Option<(u64, u64)>,
        events: &mut Vec<Event>,
    ) -> NodeUptime {
        if self.config().ledger_rules >= RULES_LEDGER_OUTAGE {
            self.mint_before_rolling(node, now_ms, credit, events);
        }
        self.uptime_now(node, now_ms)
    }

    /// Mint now each period of `node` not minted yet that its counters at `now_ms` would
    /// leave behind (they hold two periods): its own counters for the periods they hold,
    /// and for the periods between, which no counters hold, `credit` alone. After a stall
    /// as long as a period, minting waits for the nodes' reports while their reports move
    /// on. `credit`, a report's up time, is added first. At most [`RECEIPT_PERIODS_KEPT`]
    /// periods between are minted, which bounds a transaction's work; any older ones are
    /// minted by the batches, from nothing.
    fn mint_before_rolling(
        &mut self,
        node: NodeId,
        now_ms: u64,
        credit: Option<(u64, u64)>,
        events: &mut Vec<Event>,
    ) {
        let Some(kept) = self.node_uptime.get(&node).cloned() else {
            return;
        };
        let period = self.period_of(now_ms);
        let unminted = self.economy().mint_period;
        // Periods the rolled counters will not hold: before the one before `period`.
        let left_before = period.saturating_sub(1);
        let between_from = kept.current.period.saturating_add(1).max(unminted);
        let between = (between_from..left_before)
            .rev()
            .take(RECEIPT_PERIODS_KEPT as usize)
            .map(PeriodUptime::new);
        // The current slot first: in period 0 both slots name period 0.
        let slots: Vec<PeriodUptime> = [kept.current, kept.previous]
            .into_iter()
            .chain(between)
            .collect();
        for mut slot in slots {
            if slot.period >= left_before
                || slot.period < unminted
                || self.receipt(slot.period, node).is_some()
            {
                continue;
            }
            self.credit_slot(credit, &mut slot);
            let (start_ms, end_ms) = self.period_bounds(slot.period);
            if let Some(r) = self.receipt_from(slot, node, start_ms, end_ms, now_ms) {
                self.mint_receipt(r, events);
            }
        }
    }

    /// Count the gap since the previous block beyond [`STALL_GAP_MS`] as the ledger's outage
    /// (ledger rules [`RULES_LEDGER_OUTAGE`] on), before the block's transactions apply.
    pub(crate) fn begin_block(&mut self, now_ms: u64) {
        // The genesis may be written long before the first block: that wait is no outage.
        if self.config().ledger_rules < RULES_LEDGER_OUTAGE || self.height() == 0 {
            return;
        }
        let outage_from_ms = self
            .time_ms()
            .saturating_add(STALL_GAP_MS)
            .saturating_add(self.params().idle_block_ms);
        if now_ms <= outage_from_ms {
            return;
        }
        let (_, mint_end_ms) = self.period_bounds(self.economy().mint_period);
        let e = self.economy_mut();
        e.outage_ms = e.outage_ms.saturating_add(now_ms - outage_from_ms);
        let after_mint_end = now_ms.saturating_sub(outage_from_ms.max(mint_end_ms));
        e.mint_outage_ms = e.mint_outage_ms.saturating_add(after_mint_end);
    }

    /// Count network traffic served by `node` in the period of `now_ms`.
    pub(crate) fn add_nu_bytes(
        &mut self,
        node: NodeId,
        now_ms: u64,
        bytes: u64,
        events: &mut Vec<Event>,
    ) {
        let mut u = self.rolled_uptime(node, now_ms, None, events);
        u.current.nu_bytes = u.current.nu_bytes.saturating_add(bytes);
        self.node_uptime.insert(node, u);
    }

    /// Count public IP seconds paid for on `node`, in the period of `now_ms`.
    pub(crate) fn add_ip_secs(
        &mut self,
        node: NodeId,
        now_ms: u64,
        secs: u64,
        events: &mut Vec<Event>,
    ) {
        let mut u = self.rolled_uptime(node, now_ms, None, events);
        u.current.ip_secs = u.current.ip_secs.saturating_add(secs);
        self.node_uptime.insert(node, u);
    }

    /// The oldest period whose receipts are kept; those of earlier periods are pruned
    /// (see the module rules).
    pub fn receipts_kept_from(&self) -> u64 {
        self.economy()
            .mint_period
            .saturating_sub(RECEIPT_PERIODS_KEPT)
    }

    /// Prune the oldest receipts of periods before [`State::receipts_kept_from`].
    pub(crate) fn prune_receipts(&mut self) {
        let before = self.receipts_kept_from();
        let old: Vec<(u64, NodeId, FarmId)> = self
            .receipts
            .range(..(before, 0))
            .take(RECEIPTS_PRUNED_PER_BLOCK_MAX)
            .map(|((period, node), r)| (*period, *node, r.farm))
            .collect();
        for (period, node, farm) in old {
            self.receipts.remove(&(period, node));
            self.farm_receipts.remove(&(farm, period, node));
        }
    }

    /// Mint the next batch of nodes of the oldest unminted period, if it has settled by `now_ms`.
    pub(crate) fn end_block_minting(&mut self, now_ms: u64, events: &mut Vec<Event>) {
        let economy = *self.economy();
        let period = economy.mint_period;
        let (start_ms, end_ms) = self.period_bounds(period);
        let len_ms = self.period_len_ms();
        let settle_ms = self.params().uptime_interval_secs.saturating_mul(2000);
        // Nodes get two intervals of a live ledger to report the period's end (a report
        // that would roll a node's counters past the period mints its receipt first). The
        // head of a stalled gap is not outage, yet no node could report in it: one head is
        // added when there was an outage. Only one: a chain that keeps stalling for a
        // little over the head still mints.
        let head_ms = match economy.mint_outage_ms {
            0 => 0,
            _ => STALL_GAP_MS.saturating_add(self.params().idle_block_ms),
        };
        let settled_ms = end_ms
            .saturating_add(settle_ms)
            .saturating_add(economy.mint_outage_ms)
            .saturating_add(head_ms);
        if now_ms < settled_ms {
            return;
        }
        let batch: Vec<NodeId> = self
            .nodes
            .range(economy.mint_cursor..)
            .take(MINT_NODES_PER_BLOCK)
            .map(|(id, _)| *id)
            .collect();
        for &node in &batch {
            // Minted already when a report would have rolled its counters past the period.
            if self.receipt(period, node).is_some() {
                continue;
            }
            if let Some(receipt) = self.reward_receipt(period, node, start_ms, end_ms, now_ms) {
                self.mint_receipt(receipt, events);
            }
        }
        let e = self.economy_mut();
        match batch.last() {
            Some(&last) if batch.len() == MINT_NODES_PER_BLOCK => e.mint_cursor = last + 1,
            _ => {
                e.mint_period = period + 1;
                e.mint_cursor = 1;
                // The outage after the next period's end, if it ended already: at most what
                // lies after it of the outage counted so far (erring towards waiting longer).
                e.mint_outage_ms = e
                    .mint_outage_ms
                    .min(now_ms.saturating_sub(end_ms.saturating_add(len_ms)));
                events.push(Event::MintingPeriodClosed { period });
            }
        }
    }

    /// The receipt `node` earns for `period`, or `None` if it was registered after the period.
    pub fn reward_receipt(
        &self,
        period: u64,
        node: NodeId,
        start_ms: u64,
        end_ms: u64,
        now_ms: u64,
    ) -> Option<RewardReceipt> {
        let counters = self
            .node_uptime
            .get(&node)
            .and_then(|u| {
                [&u.current, &u.previous]
                    .into_iter()
                    .find(|s| s.period == period)
                    .cloned()
            })
            .unwrap_or_else(|| PeriodUptime::new(period));
        self.receipt_from(counters, node, start_ms, end_ms, now_ms)
    }

    /// The receipt `node` earns for the period of `counters`, or `None` if it was
    /// registered after the period.
    fn receipt_from(
        &self,
        counters: PeriodUptime,
        node: NodeId,
        start_ms: u64,
        end_ms: u64,
        now_ms: u64,
    ) -> Option<RewardReceipt> {
        let period = counters.period;
        let n = self.node(node)?;
        if n.registered_ms >= end_ms {
            return None;
        }
        let farm = self.farm(n.farm)?;
        let counted_from_ms = start_ms.max(n.registered_ms);
        let period_secs = (end_ms - counted_from_ms) / 1000;
        let up_secs = (counters.up_ms / 1000).min(period_secs);
        let farming = self.params().farming.clone();
        let steps = economics::reward(
            &RewardInputs {
                capacity: n.capacity,
                certified: n.certified,
                period_secs,
                up_secs,
                nu_bytes: counters.nu_bytes,
                ip_secs: counters.ip_secs,
                violation: counters.violation_count > 0,
            },
            &farming,
        );
        let tokens = economics::uusd_to_tokens(steps.reward_uusd, n.connection_price_uusd);
        Some(RewardReceipt {
            period,
            node,
            farm: n.farm,
            payout: farm.payout,
            period_start_ms: start_ms,
            period_end_ms: end_ms,
            counted_from_ms,
            period_secs,
            up_secs,
            reports: counters.reports,
            capacity: n.capacity,
            certified: n.certified,
            nu_bytes: counters.nu_bytes,
            ip_secs: counters.ip_secs,
            violations: counters.violations,
            violation_count: counters.violation_count,
            farming,
            steps,
            connection_price_uusd: n.connection_price_uusd,
            tokens,
            minted_ms: now_ms,
        })
    }

    fn mint_receipt(&mut self, r: RewardReceipt, events: &mut Vec<Event>) {
        if r.tokens > Amount::ZERO {
            let mut a = self.account(&r.payout);
            a.balance = a.balance.saturating_add(r.tokens);
            self.accounts.insert(r.payout, a);
            let g = self.globals_mut();
            g.minted = g.minted.saturating_add(r.tokens);
            self.mark_funded(&r.payout);
        }
        events.push(Event::RewardMinted {
            period: r.period,
            node: r.node,
            farm: r.farm,
            payout: r.payout,
            uusd: r.steps.reward_uusd,
            tokens: r.tokens,
        });
        self.farm_receipts.insert((r.farm, r.period, r.node), ());
        self.receipts.insert((r.period, r.node), r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    /// A previous report at `at_secs` on a clock in step with the ledger, its boot first seen there.
    fn prev(at_secs: u64, uptime_secs: u64) -> Option<PreviousReport> {
        let timestamp_secs = T / 1000 + at_secs;
        Some(PreviousReport {
            at_ms: T + at_secs * 1000,
            uptime_secs,
            timestamp_secs,
            boot_secs: timestamp_secs as i64 - uptime_secs as i64,
        })
    }

    fn judge_full(
        previous: Option<PreviousReport>,
        at_secs: u64,
        uptime: u64,
        ts_off: i64,
    ) -> Judgement {
        let ts = (T / 1000 + at_secs).saturating_add_signed(ts_off);
        judge_report(previous, T, T + at_secs * 1000, uptime, ts, 120)
    }

    fn judge(
        previous: Option<PreviousReport>,
        at_secs: u64,
        uptime: u64,
        ts_off: i64,
    ) -> ReportVerdict {
        judge_full(previous, at_secs, uptime, ts_off).verdict
    }

    #[test]
    fn continuous_uptime_counts_the_time_between_reports() {
        // Previous report at 2400 s with uptime 5000 s (boot at −2600); now 4800 s with 7400 s:
        // boot at −2600 again, so [2400 s, 4800 s) is up.
        assert_eq!(
            judge(prev(2400, 5000), 4800, 7400, 0),
            ReportVerdict::Up {
                from_ms: T + 2_400_000,
                to_ms: T + 4_800_000
            }
        );
        // A clock 100 s fast moves the boot 100 s later: still the same boot within 120 s.
        assert!(
            matches!(judge(prev(2400, 5000), 4800, 7400, 100), ReportVerdict::Up { from_ms, .. } if from_ms == T + 2_400_000)
        );
    }

    #[test]
    fn a_reboot_after_the_previous_report_counts_the_time_since_boot() {
        // Previous at 2400 s; now at 4800 s with uptime 600 s: booted at 4200 s, after 2400 s.
        assert_eq!(
            judge(prev(2400, 5000), 4800, 600, 0),
            ReportVerdict::Up {
                from_ms: T + 4_200_000,
                to_ms: T + 4_800_000
            }
        );
    }

    #[test]
    fn a_restart_soon_after_the_previous_start_counts_only_since_the_restart() {
        // Previous at 2400 s, 30 s after the node started (at 2370 s). It stops, starts
        // again at 2460 s and reports at 2470 s with uptime 10 s: a start 90 s after the
        // previous one, within the 120 s tolerance, but after the previous report, so the
        // stop is not counted, and the new start is the boot later reports are held to.
        let j = judge_full(prev(2400, 30), 2470, 10, 0);
        assert_eq!(
            j.verdict,
            ReportVerdict::Up {
                from_ms: T + 2_460_000,
                to_ms: T + 2_470_000
            }
        );
        assert_eq!(j.boot_secs, (T / 1000) as i64 + 2460);
        // Stopped 2 s after it started (at 2398 s), started again at 2460 s and up 10 s:
        // the uptime even grew, yet the start is after the previous report: only the
        // 10 s count.
        assert_eq!(
            judge(prev(2400, 2), 2470, 10, 0),
            ReportVerdict::Up {
                from_ms: T + 2_460_000,
                to_ms: T + 2_470_000
            }
        );
        // Uptime that grew with the clock is the same boot: the time between reports counts.
        assert_eq!(
            judge(prev(2400, 30), 2410, 40, 0),
            ReportVerdict::Up {
                from_ms: T + 2_400_000,
                to_ms: T + 2_410_000
            }
        );
    }

    #[test]
    fn more_uptime_than_elapsed_is_a_violation() {
        // Uptime grew 5000 → 9000 (4000 s) while the clock advanced 2400 s: boot moved 1600 s earlier.
        assert_eq!(
            judge(prev(2400, 5000), 4800, 9000, 0),
            ReportVerdict::Violation(ViolationKind::UptimeBeyondElapsed {
                gained_secs: 4000,
                elapsed_secs: 2400
            })
        );
    }

    #[test]
    fn a_reboot_hidden_from_the_previous_report_is_a_violation() {
        // Previous at 2400 s claimed boot at −2600 s; now at 4800 s uptime 3000 s claims boot at
        // 1800 s: before the previous report, which should then have shown uptime ≤ 600 s.
        assert_eq!(
            judge(prev(2400, 5000), 4800, 3000, 0),
            ReportVerdict::Violation(ViolationKind::HiddenReboot {
                previous_boot_secs: T / 1000 - 2600,
                boot_secs: T / 1000 + 1800,
                previous_report_secs: T / 1000 + 2400
            })
        );
    }

    #[test]
    fn a_clock_within_the_accepted_drift_is_never_a_violation() {
        // Boot first seen at −2600 s with the clock 60 s slow; now 60 s fast: the boot
        // implied moves 120 s, the most two accepted reports (±60 s) allow, and is the same boot.
        let mut p = prev(2400, 5000);
        if let Some(p) = p.as_mut() {
            p.timestamp_secs -= 60;
            p.boot_secs -= 60;
        }
        let j = judge_full(p, 4800, 7400, 60);
        assert_eq!(
            j.verdict,
            ReportVerdict::Up {
                from_ms: T + 2_400_000,
                to_ms: T + 4_800_000
            }
        );
        // The boot it is held to stays the first one seen.
        assert_eq!(j.boot_secs, (T / 1000) as i64 - 2660);
    }

    #[test]
    fn clock_skew_accumulated_over_a_boot_is_a_violation() {
        // The boot was first seen at −2600 s; since then the uptime counter ran slow and the
        // previous report already implied a boot 100 s later (−2500 s). Now it gains 2370 s
        // while 2400 s pass: −2470 s, 30 s from the previous report (the same boot) but 130 s
        // from the first: more than 120 s.
        let p = prev(2400, 4900).map(|p| PreviousReport {
            boot_secs: (T / 1000) as i64 - 2600,
            ..p
        });
        let j = judge_full(p, 4800, 7270, 0);
        assert_eq!(
            j.verdict,
            ReportVerdict::Violation(ViolationKind::ClockSkew {
                first_boot_secs: T / 1000 - 2600,
                boot_secs: T / 1000 - 2470,
                skew_secs: 130,
                max_secs: 120
            })
        );
        // The fault is counted once: later reports are held to the boot this one implies.
        assert_eq!(j.boot_secs, (T / 1000) as i64 - 2470);
        // The same drift the other way (a fast counter): −2730 s, 130 s earlier.
        let p = prev(2400, 5100).map(|p| PreviousReport {
            boot_secs: (T / 1000) as i64 - 2600,
            ..p
        });
        assert!(matches!(
            judge(p, 4800, 7530, 0),
            ReportVerdict::Violation(ViolationKind::ClockSkew { skew_secs: 130, .. })
        ));
        // 120 s from the first boot is still within the limit.
        let p = prev(2400, 4900).map(|p| PreviousReport {
            boot_secs: (T / 1000) as i64 - 2600,
            ..p
        });
        assert!(matches!(judge(p, 4800, 7280, 0), ReportVerdict::Up { .. }));
    }

    #[test]
    fn a_first_report_counts_since_boot_but_not_before_registration() {
        // Registered at T; booted at 300 s.
        assert_eq!(
            judge(None, 600, 300, 0),
            ReportVerdict::Up {
                from_ms: T + 300_000,
                to_ms: T + 600_000
            }
        );
        assert_eq!(
            judge(None, 600, 90_000, 0),
            ReportVerdict::Up {
                from_ms: T,
                to_ms: T + 600_000
            }
        );
        // Its boot is the one later reports are held to; a reboot starts a new one.
        assert_eq!(
            judge_full(None, 600, 300, 0).boot_secs,
            (T / 1000) as i64 + 300
        );
        assert_eq!(
            judge_full(prev(2400, 5000), 4800, 600, 0).boot_secs,
            (T / 1000) as i64 + 4200
        );
    }
}
