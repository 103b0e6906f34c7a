//! Receipts and bills in words: every number with the formula that produced it, so a
//! farmer or a builder can recompute it by hand.

use std::fmt::Write as _;

use peergrid_core::capacity::human_bytes;
use peergrid_core::economics::{self, MONTH_SECS};
use peergrid_core::usd::Usd;

use crate::records::{Bill, BillStatus, RewardReceipt, ViolationKind};

fn usd(uusd: u64) -> String {
    Usd(uusd).exact()
}

/// pUSD (10^-12 USD) in USD, every digit.
fn pusd(pusd: u128) -> String {
    const PUSD_PER_USD: u128 = 1_000_000_000_000;
    format!("{}.{:012} USD", pusd / PUSD_PER_USD, pusd % PUSD_PER_USD)
}

const MICRO: u128 = economics::MICRO as u128;

fn units(micro: u64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

impl RewardReceipt {
    /// The receipt line by line, every number with the formula that produced it.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let s = &self.steps;
        let f = &self.farming;
        let c = &self.capacity;
        let gib = |b: u64| format!("{b} B ({})", human_bytes(b));
        // Writing to a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            writeln!(
                o,
                "reward receipt: node {} of farm {}, period {}",
                self.node, self.farm, self.period
            )?;
            writeln!(
                o,
                "period          [{} ms, {} ms) of ledger time ({} to {})",
                self.period_start_ms,
                self.period_end_ms,
                peergrid_core::utc(self.period_start_ms),
                peergrid_core::utc(self.period_end_ms)
            )?;
            writeln!(
                o,
                "counted from    {} ms (period start or registration, the later)",
                self.counted_from_ms
            )?;
            writeln!(
                o,
                "period length   ({} − {}) / 1000 = {} s",
                self.period_end_ms, self.counted_from_ms, self.period_secs
            )?;
            writeln!(
                o,
                "uptime counted  {} s over {} reports (up to two report intervals after each, \
                 longer silence is down time unless the ledger itself stalled: ledger rules 2)",
                self.up_secs, self.reports
            )?;
            writeln!(
                o,
                "uptime          {} · 1000 / {} = {} ‰",
                self.up_secs, self.period_secs, s.uptime_permille
            )?;
            writeln!(
                o,
                "capacity        {} cores, mru {}, sru {}, hru {}",
                c.cru,
                gib(c.mru),
                gib(c.sru),
                gib(c.hru)
            )?;
            writeln!(
                o,
                "CU              min(cru·2, (mru_GiB − 1)/4, sru_GiB/50) = {}",
                units(s.units.cu_micro)
            )?;
            writeln!(
                o,
                "SU              hru_GiB/1200 + sru_GiB/250 = {}",
                units(s.units.su_micro)
            )?;
            writeln!(
                o,
                "rates           CU {} and SU {} per month of {MONTH_SECS} s",
                usd(f.cu_uusd_month),
                usd(f.su_uusd_month)
            )?;
            writeln!(
                o,
                "capacity worth  ({} CU · {} + {} SU · {}) · {} s / {MONTH_SECS} s = {}",
                units(s.units.cu_micro),
                usd(f.cu_uusd_month),
                units(s.units.su_micro),
                usd(f.su_uusd_month),
                self.period_secs,
                usd(s.capacity_uusd)
            )?;
            writeln!(
                o,
                "certification   {} → ×{} % = {}",
                if self.certified { "certified" } else { "DIY" },
                s.multiplier_percent,
                usd(s.capacity_multiplied_uusd)
            )?;
            writeln!(
                o,
                "network         {} B · {} / GB = {}",
                self.nu_bytes,
                usd(f.nu_uusd_per_gb),
                usd(s.nu_uusd)
            )?;
            writeln!(
                o,
                "public IPs      {} s · {} / h = {}",
                self.ip_secs,
                usd(f.ip_uusd_hour),
                usd(s.ip_uusd)
            )?;
            writeln!(o, "full uptime     {}", usd(s.full_uptime_uusd))?;
            writeln!(
                o,
                "SLA             {} ‰ required: {} · 1000 {} {} · {} → {}",
                s.sla_permille,
                self.up_secs,
                if s.sla_met { "≥" } else { "<" },
                s.sla_permille,
                self.period_secs,
                if s.sla_met {
                    "met"
                } else {
                    "NOT met: no reward"
                }
            )?;
            if self.violation_count == 0 {
                writeln!(o, "violations      none")?;
            } else {
                writeln!(
                    o,
                    "violations      {} (any one zeroes the period)",
                    self.violation_count
                )?;
                for v in &self.violations {
                    writeln!(o, "  at {} ms     {}", v.at_ms, describe(&v.kind))?;
                }
            }
            // The product is shown only where it is what was paid: a period below the SLA
            // or with a violation pays nothing, whatever its uptime gives.
            if s.sla_met && self.violation_count == 0 {
                writeln!(
                    o,
                    "reward          {} · {} / {} = {}",
                    usd(s.full_uptime_uusd),
                    self.up_secs,
                    self.period_secs,
                    usd(s.reward_uusd)
                )?;
            } else {
                writeln!(
                    o,
                    "reward          {} ({})",
                    usd(s.reward_uusd),
                    if s.sla_met {
                        "a violation zeroes the period"
                    } else {
                        "the SLA was not met"
                    }
                )?;
            }
            writeln!(
                o,
                "price           {} per token (the node's connection price)",
                usd(self.connection_price_uusd)
            )?;
            writeln!(
                o,
                "tokens          {} µUSD · 10^7 / {} = {} units = {:?}",
                s.reward_uusd, self.connection_price_uusd, self.tokens.0, self.tokens
            )?;
            writeln!(
                o,
                "paid to         {} at {} ms",
                self.payout, self.minted_ms
            )
        })();
        o
    }
}

/// A violation in words.
pub fn describe(v: &ViolationKind) -> String {
    match v {
        ViolationKind::UptimeBeyondElapsed {
            gained_secs,
            elapsed_secs,
        } => {
            format!("uptime grew {gained_secs} s while the node's clock advanced {elapsed_secs} s")
        }
        ViolationKind::HiddenReboot {
            previous_boot_secs,
            boot_secs,
            previous_report_secs,
        } => format!(
            "(re)started at {boot_secs} s, before the previous report at {previous_report_secs} s which showed a start at {previous_boot_secs} s"
        ),
        ViolationKind::ClockSkew {
            first_boot_secs,
            boot_secs,
            skew_secs,
            max_secs,
        } => format!(
            "clock skew: implies a boot at {boot_secs} s, {skew_secs} s from the boot at {first_boot_secs} s first seen, more than {max_secs} s"
        ),
    }
}

impl Bill {
    /// The bill line by line, every number with the formula that produced it.
    pub fn render(&self) -> String {
        self.render_priced(None)
    }

    /// [`Bill::render`], with the resources' and traffic's price worked out from `pricing`
    /// (today's policy: a bill does not keep the prices it used) where that gives the
    /// amounts billed, or said to come from an earlier policy where it does not.
    pub fn render_priced(&self, pricing: Option<&peergrid_core::policy::PricingPolicy>) -> String {
        let units = |m: u64| format!("{}.{:06}", m / 1_000_000, m % 1_000_000);
        let b = &self.billable;
        let mut o = String::new();
        // Writing to a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            writeln!(o, "bill: contract {} of {}", self.contract, self.owner)?;
            writeln!(
                o,
                "period      [{} ms, {} ms) = {} ms ({} to {})",
                self.from_ms,
                self.to_ms,
                self.to_ms.saturating_sub(self.from_ms),
                peergrid_core::utc(self.from_ms),
                peergrid_core::utc(self.to_ms)
            )?;
            writeln!(
                o,
                "billed      {} CU, {} SU, {} IPv4, {} names (per month of {} s)",
                units(b.units.cu_micro),
                units(b.units.su_micro),
                b.ipv4,
                b.names,
                economics::MONTH_SECS
            )?;
            if self.node_down_ms > 0 {
                writeln!(
                    o,
                    "node down   {} ms of the period: not billed (node {} sent no uptime report \
                     for more than two report intervals); {} ms billed",
                    self.node_down_ms,
                    self.node.map_or_else(|| "?".into(), |n| n.to_string()),
                    self.to_ms
                        .saturating_sub(self.from_ms)
                        .saturating_sub(self.node_down_ms)
                )?;
            }
            let billed_ms =
                (self.to_ms.saturating_sub(self.from_ms)).saturating_sub(self.node_down_ms);
            // Worked out in whole µUSD (ledger rules 0), or in pUSD with a carry (rules 1 on:
            // told by a carry, or by a net the µUSD steps do not give). The bill does not
            // keep the prices: pUSD terms are shown only when today's give this bill's net.
            let total = self.net_uusd as u128 * MICRO + self.carried_out_pusd as u128;
            let discounted = total.saturating_sub(self.carried_in_pusd as u128);
            let off = |pusd: u128| {
                pusd.saturating_mul(100 - self.discount.percent.min(100) as u128) / 100
            };
            let carried = self.carried_in_pusd != 0
                || self.carried_out_pusd != 0
                || economics::apply_discount(
                    self.resources_uusd.saturating_add(self.nu_uusd),
                    self.discount.percent,
                ) != self.net_uusd;
            let exact = pricing
                .map(|p| {
                    (
                        economics::cost_pusd(b, p, billed_ms),
                        economics::nu_cost_pusd(self.nu_bytes, p),
                    )
                })
                .filter(|(r, n)| off(r.saturating_add(*n)) == discounted);
            match pricing {
                Some(p) if economics::cost_uusd(b, p, billed_ms) == self.resources_uusd => {
                    writeln!(
                        o,
                        "resources   ({} CU · {} + {} SU · {} + {} IPv4 · {} + {} names · {}) \
                         per month · {billed_ms} ms / {} ms = {} (today's prices)",
                        units(b.units.cu_micro),
                        usd(p.cu_uusd_month),
                        units(b.units.su_micro),
                        usd(p.su_uusd_month),
                        b.ipv4,
                        usd(p.ipv4_uusd_month),
                        b.names,
                        usd(p.unique_name_uusd_month),
                        MONTH_SECS * 1000,
                        match exact {
                            Some((r, _)) if carried => pusd(r),
                            _ => usd(self.resources_uusd),
                        }
                    )?;
                }
                Some(p) => writeln!(
                    o,
                    "resources   {} (under an earlier pricing policy: today's would give {})",
                    usd(self.resources_uusd),
                    usd(economics::cost_uusd(b, p, billed_ms))
                )?,
                None => writeln!(o, "resources   {}", usd(self.resources_uusd))?,
            }
            match pricing {
                Some(p) if economics::nu_cost_uusd(self.nu_bytes, p) == self.nu_uusd => writeln!(
                    o,
                    "network     {} B · {} per GB = {}",
                    self.nu_bytes,
                    usd(p.nu_uusd_per_gb),
                    usd(self.nu_uusd)
                )?,
                _ => writeln!(o, "network     {} B = {}", self.nu_bytes, usd(self.nu_uusd))?,
            }
            writeln!(
                o,
                "discount    balance covers {}.{:03} months → {} %",
                self.discount.months_covered_milli / 1000,
                self.discount.months_covered_milli % 1000,
                self.discount.percent
            )?;
            if carried {
                let costs = match exact {
                    Some((r, n)) => format!("({} + {})", pusd(r), pusd(n)),
                    None => "(resources + network, to the pUSD, at the prices then)".into(),
                };
                writeln!(
                    o,
                    "net         {costs} · (100 − {}) / 100 = {}, plus {} \
                     that earlier bills rounded off = {}: {} billed, {} carried to the next bill",
                    self.discount.percent,
                    pusd(discounted),
                    pusd(self.carried_in_pusd as u128),
                    pusd(total),
                    usd(self.net_uusd),
                    pusd(self.carried_out_pusd as u128),
                )?;
            } else {
                writeln!(
                    o,
                    "net         ({} + {}) · (100 − {}) / 100 = {}",
                    usd(self.resources_uusd),
                    usd(self.nu_uusd),
                    self.discount.percent,
                    usd(self.net_uusd)
                )?;
            }
            // A written-off bill was priced as any other, then nobody paid it.
            let priced = match self.status {
                BillStatus::Paid => self.tokens,
                BillStatus::WrittenOff => {
                    economics::uusd_to_tokens(self.net_uusd, self.token_price_uusd)
                }
            };
            writeln!(
                o,
                "tokens      {} µUSD · 10^7 / {} = {} units = {:?}",
                self.net_uusd, self.token_price_uusd, priced.0, priced
            )?;
            let farmer = self
                .farmer_payout
                .map_or_else(|| "the foundation (no node)".to_string(), |a| a.to_string());
            writeln!(
                o,
                "split       farmer {:?} to {farmer}, foundation {:?}, staking {:?}",
                self.split.farmer, self.split.foundation, self.split.staking
            )?;
            writeln!(
                o,
                "status      {}",
                match self.status {
                    BillStatus::Paid => "paid",
                    BillStatus::WrittenOff =>
                        "written off: the contract was deleted unpaid, or released by its node, 0 PGT taken",
                }
            )
        })();
        o
    }
}
