//! The grid's economic formulas: capacity units, prices, discounts, the payment split and rewards.
//!
//! Every function here is pure integer arithmetic, so every validator computes the
//! same bill and the same reward, and a farmer or builder can redo each step by hand.
//! Units are counted in millionths ("µCU", "µSU") and money in µUSD. Each formula is
//! first scaled to whole integers and divided once at the end, rounding down, so the
//! only rounding is the last step's and it always favours the payer.
//!
//! Billing (reserved resources, GiB): `CU = min(max(mru/4, cru/2), max(mru/8, cru),
//! max(mru/2, cru/4))`, `SU = hru/1200 + sru/200`.
//! Rewards (offered capacity, GiB): `CU = min(cru*2, (mru-1)/4, sru/50)`,
//! `SU = hru/1200 + sru/250`.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::Amount;
use crate::amount::UNITS_PER_TOKEN;
use crate::capacity::{Capacity, GIB};
use crate::policy::{FarmingPolicy, PricingPolicy};

/// Units are counted in millionths.
pub const MICRO: u64 = 1_000_000;
/// Bytes in one GB, the unit network traffic is priced in (decimal, as traffic is metered).
pub const GB: u64 = 1_000_000_000;
/// Seconds in the month that monthly prices and rewards refer to: ThreeFold's minting
/// period (30.45 days), so a node up for a whole production period earns exactly the
/// monthly rate.
pub const MONTH_SECS: u64 = 2_630_880;
/// Share of a payment that goes to the farm hosting the contract, in percent.
pub const FARMER_PERCENT: u64 = 50;
/// Share of a payment that goes to the foundation, in percent.
pub const FOUNDATION_PERCENT: u64 = 40;
/// Share of a payment that goes to the staking pool, in percent; it also receives the rounding remainder.
pub const STAKING_PERCENT: u64 = 10;

/// Compute and storage units of some capacity, in millionths of a unit.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Units {
    /// Compute units, millionths.
    pub cu_micro: u64,
    /// Storage units, millionths.
    pub su_micro: u64,
}

impl Units {
    /// Governance weight of this capacity: `2·CU + SU`, in millionths.
    pub fn weight_micro(&self) -> u64 {
        self.cu_micro
            .saturating_mul(2)
            .saturating_add(self.su_micro)
    }
}

fn clamp(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Units billed for reserved resources.
///
/// Scaled by 8 GiB so every term is an integer: `8·GiB·CU = min(max(2·mru, 4·cru·GiB),
/// max(mru, 8·cru·GiB), max(4·mru, 2·cru·GiB))` and `1200·GiB·SU = hru + 6·sru`.
pub fn billing_units(c: &Capacity) -> Units {
    let gib = GIB as u128;
    let (cru, mru, sru, hru) = (c.cru as u128, c.mru as u128, c.sru as u128, c.hru as u128);
    let cu8 = (2 * mru)
        .max(4 * cru * gib)
        .min(mru.max(8 * cru * gib))
        .min((4 * mru).max(2 * cru * gib));
    let su1200 = hru + 6 * sru;
    Units {
        cu_micro: clamp(cu8 * MICRO as u128 / (8 * gib)),
        su_micro: clamp(su1200 * MICRO as u128 / (1200 * gib)),
    }
}

/// Units a node earns rewards for, from the capacity it offers.
///
/// Scaled by 200 GiB: `200·GiB·CU = min(400·cru·GiB, 50·(mru − GiB), 4·sru)` (the first
/// GiB of memory is the node's own); scaled by 6000 GiB: `6000·GiB·SU = 5·hru + 24·sru`.
pub fn reward_units(c: &Capacity) -> Units {
    let gib = GIB as u128;
    let (cru, mru, sru, hru) = (c.cru as u128, c.mru as u128, c.sru as u128, c.hru as u128);
    let cu200 = (400 * cru * gib)
        .min(50 * mru.saturating_sub(gib))
        .min(4 * sru);
    let su6000 = 5 * hru + 24 * sru;
    Units {
        cu_micro: clamp(cu200 * MICRO as u128 / (200 * gib)),
        su_micro: clamp(su6000 * MICRO as u128 / (6000 * gib)),
    }
}

/// What a contract holds that is billed by time.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Billable {
    /// Compute and storage units reserved.
    pub units: Units,
    /// Public IPv4 addresses held.
    pub ipv4: u32,
    /// Unique gateway names held.
    pub names: u32,
}

/// Sum of `units × price per month` for everything billable, in µUSD·10^6 (not yet divided by [`MICRO`]).
fn monthly_scaled(b: &Billable, p: &PricingPolicy) -> u128 {
    b.units.cu_micro as u128 * p.cu_uusd_month as u128
        + b.units.su_micro as u128 * p.su_uusd_month as u128
        + b.ipv4 as u128 * MICRO as u128 * p.ipv4_uusd_month as u128
        + b.names as u128 * MICRO as u128 * p.unique_name_uusd_month as u128
}

/// What `b` costs for a whole month, in µUSD, rounded down.
pub fn monthly_cost_uusd(b: &Billable, p: &PricingPolicy) -> u64 {
    clamp(monthly_scaled(b, p) / MICRO as u128)
}

/// What `b` costs for `duration_ms` of ledger time, in µUSD, rounded down once.
pub fn cost_uusd(b: &Billable, p: &PricingPolicy, duration_ms: u64) -> u64 {
    whole_uusd(cost_pusd(b, p, duration_ms))
}

/// pUSD (10^-12 USD) in whole µUSD, rounded down.
pub fn whole_uusd(pusd: u128) -> u64 {
    clamp(pusd / MICRO as u128)
}

/// What `b` costs for `duration_ms` of ledger time, in pUSD (10^-12 USD), rounded down.
pub fn cost_pusd(b: &Billable, p: &PricingPolicy, duration_ms: u64) -> u128 {
    monthly_scaled(b, p) * duration_ms as u128 / (MONTH_SECS as u128 * 1000)
}

/// What `bytes` of network traffic cost, in µUSD, rounded down.
pub fn nu_cost_uusd(bytes: u64, p: &PricingPolicy) -> u64 {
    whole_uusd(nu_cost_pusd(bytes, p))
}

/// What `bytes` of network traffic cost, in pUSD (10^-12 USD), rounded down.
pub fn nu_cost_pusd(bytes: u64, p: &PricingPolicy) -> u128 {
    (bytes as u128 * p.nu_uusd_per_gb as u128).saturating_mul(MICRO as u128) / GB as u128
}

/// A bill's net in whole µUSD and what it rounds off, in pUSD, for the next: `gross_pusd`
/// less `percent` discount, plus `carried_in_pusd` that earlier bills rounded off.
pub fn net_carried(gross_pusd: u128, percent: u8, carried_in_pusd: u64) -> (u64, u64) {
    let net = (gross_pusd.saturating_mul((100 - percent.min(100)) as u128) / 100)
        .saturating_add(carried_in_pusd as u128);
    (whole_uusd(net), (net % MICRO as u128) as u64)
}

/// The value of `amount` tokens at `price_uusd` per token, in µUSD, rounded down.
pub fn tokens_to_uusd(amount: Amount, price_uusd: u64) -> u64 {
    clamp(amount.0 as u128 * price_uusd as u128 / UNITS_PER_TOKEN as u128)
}

/// `uusd` converted to tokens at `price_uusd` per token, rounded down; zero if the price is zero.
pub fn uusd_to_tokens(uusd: u64, price_uusd: u64) -> Amount {
    if price_uusd == 0 {
        return Amount::ZERO;
    }
    Amount(clamp(
        uusd as u128 * UNITS_PER_TOKEN as u128 / price_uusd as u128,
    ))
}

/// The discount a balance earns, and how many thousandths of a month it covers.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Discount {
    /// Months of the contract's cost the balance covers, thousandths; 0 when the cost is 0.
    pub months_covered_milli: u64,
    /// The discount in percent: the largest level whose threshold is met.
    pub percent: u8,
}

/// The discount for a balance worth `balance_uusd` against a contract costing `monthly_uusd` a month.
pub fn discount(balance_uusd: u64, monthly_uusd: u64, p: &PricingPolicy) -> Discount {
    if monthly_uusd == 0 {
        return Discount::default();
    }
    let months_covered_milli = clamp(balance_uusd as u128 * 1000 / monthly_uusd as u128);
    // Levels are strictly increasing (PricingPolicy::check), so the last one met is the largest.
    let percent = p
        .discounts
        .iter()
        .filter(|d| d.min_months_milli <= months_covered_milli)
        .map(|d| d.percent)
        .next_back()
        .unwrap_or(0);
    Discount {
        months_covered_milli,
        percent,
    }
}

/// `uusd` less `percent`, rounded down.
pub fn apply_discount(uusd: u64, percent: u8) -> u64 {
    clamp(uusd as u128 * (100 - percent.min(100)) as u128 / 100)
}

/// Where one payment goes.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Debug,
    Default,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Split {
    /// To the payout account of the farm hosting the contract (the foundation if none does).
    pub farmer: Amount,
    /// To the foundation.
    pub foundation: Amount,
    /// To the staking pool, with the rounding remainder.
    pub staking: Amount,
}

impl Split {
    /// The whole payment.
    pub fn total(&self) -> Amount {
        Amount(self.farmer.0 + self.foundation.0 + self.staking.0)
    }
}

/// Split a payment 50 / 40 / 10; the staking pool takes what rounding leaves, so the parts sum to `paid`.
pub fn split(paid: Amount) -> Split {
    let farmer = paid.0 / 100 * FARMER_PERCENT + paid.0 % 100 * FARMER_PERCENT / 100;
    let foundation = paid.0 / 100 * FOUNDATION_PERCENT + paid.0 % 100 * FOUNDATION_PERCENT / 100;
    Split {
        farmer: Amount(farmer),
        foundation: Amount(foundation),
        staking: Amount(paid.0 - farmer - foundation),
    }
}

/// What a node did in a minting period, as the reward formula needs it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RewardInputs {
    /// Capacity offered.
    pub capacity: Capacity,
    /// Certified hardware.
    pub certified: bool,
    /// Seconds of the period the node was registered: the denominator of its uptime.
    pub period_secs: u64,
    /// Seconds counted as up.
    pub up_secs: u64,
    /// Network traffic served, bytes.
    pub nu_bytes: u64,
    /// Public IP seconds used by contracts on the node.
    pub ip_secs: u64,
    /// Whether a violation zeroes the period.
    pub violation: bool,
}

/// Every step of a reward, so it can be checked by hand.
#[derive(
    Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RewardSteps {
    /// Reward units of the capacity.
    pub units: Units,
    /// `(µCU·cu_rate + µSU·su_rate) / 10^6 · period_secs / MONTH_SECS`: the capacity's worth for the period.
    pub capacity_uusd: u64,
    /// The certification multiplier applied to `capacity_uusd`, percent (100 if not certified).
    pub multiplier_percent: u16,
    /// `capacity_uusd · multiplier / 100`.
    pub capacity_multiplied_uusd: u64,
    /// `nu_bytes · nu_rate / 10^9`.
    pub nu_uusd: u64,
    /// `ip_secs · ip_rate_hour / 3600`.
    pub ip_uusd: u64,
    /// Sum of the three, before uptime.
    pub full_uptime_uusd: u64,
    /// `up_secs · 1000 / period_secs`, rounded down (for display; the SLA check is exact).
    pub uptime_permille: u64,
    /// The SLA that applies, thousandths.
    pub sla_permille: u16,
    /// Whether `up_secs · 1000 ≥ sla · period_secs`.
    pub sla_met: bool,
    /// `full_uptime_uusd · up_secs / period_secs` if the SLA is met and there is no violation, else 0.
    pub reward_uusd: u64,
}

/// A node's reward for a period, step by step.
pub fn reward(i: &RewardInputs, f: &FarmingPolicy) -> RewardSteps {
    let units = reward_units(&i.capacity);
    let capacity_uusd = clamp(
        (units.cu_micro as u128 * f.cu_uusd_month as u128
            + units.su_micro as u128 * f.su_uusd_month as u128)
            * i.period_secs as u128
            / (MICRO as u128 * MONTH_SECS as u128),
    );
    let multiplier_percent = if i.certified {
        f.certified_multiplier_percent
    } else {
        100
    };
    let capacity_multiplied_uusd = clamp(capacity_uusd as u128 * multiplier_percent as u128 / 100);
    let nu_uusd = clamp(i.nu_bytes as u128 * f.nu_uusd_per_gb as u128 / GB as u128);
    let ip_uusd = clamp(i.ip_secs as u128 * f.ip_uusd_hour as u128 / 3600);
    let full_uptime_uusd = capacity_multiplied_uusd
        .saturating_add(nu_uusd)
        .saturating_add(ip_uusd);
    let up = i.up_secs.min(i.period_secs);
    let uptime_permille = (up as u128 * 1000)
        .checked_div(i.period_secs as u128)
        .map_or(0, clamp);
    let sla_permille = if i.certified {
        f.sla_certified_permille
    } else {
        f.sla_diy_permille
    };
    let sla_met =
        i.period_secs > 0 && up as u128 * 1000 >= sla_permille as u128 * i.period_secs as u128;
    let reward_uusd = if sla_met && !i.violation {
        clamp(full_uptime_uusd as u128 * up as u128 / i.period_secs as u128)
    } else {
        0
    };
    RewardSteps {
        units,
        capacity_uusd,
        multiplier_percent,
        capacity_multiplied_uusd,
        nu_uusd,
        ip_uusd,
        full_uptime_uusd,
        uptime_permille,
        sla_permille,
        sla_met,
        reward_uusd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = GIB;

    fn cap(cru: u64, mru_gib: u64, sru_gib: u64, hru_gib: u64) -> Capacity {
        Capacity {
            cru,
            mru: mru_gib * G,
            sru: sru_gib * G,
            hru: hru_gib * G,
        }
    }

    #[test]
    fn billing_units_follow_the_formula() {
        // 2 cores, 4 GiB RAM: max(4/4, 2/2) = 1, max(4/8, 2) = 2, max(4/2, 2/4) = 2 → CU = min(1, 2, 2) = 1.
        // 100 GiB SSD, 1200 GiB HDD: SU = 1200/1200 + 100/200 = 1.5.
        let u = billing_units(&cap(2, 4, 100, 1200));
        assert_eq!(
            u,
            Units {
                cu_micro: 1_000_000,
                su_micro: 1_500_000
            }
        );
        // 1 core, 16 GiB: max(4, 0.5) = 4, max(2, 1) = 2, max(8, 0.25) = 8 → CU = 2.
        assert_eq!(billing_units(&cap(1, 16, 0, 0)).cu_micro, 2_000_000);
        // 8 cores, 1 GiB: max(0.25, 4) = 4, max(0.125, 8) = 8, max(0.5, 2) = 2 → CU = 2.
        assert_eq!(billing_units(&cap(8, 1, 0, 0)).cu_micro, 2_000_000);
        // 512 MiB, no core: max(0.125, 0) = 0.125, max(0.0625, 0) = 0.0625, max(0.25, 0) → 0.0625.
        let half = Capacity {
            mru: G / 2,
            ..Capacity::ZERO
        };
        assert_eq!(billing_units(&half).cu_micro, 62_500);
        // 1 byte of SSD: 1 / (200·2^30) SU = 4.66e-12 SU, below a millionth: rounds to 0.
        let byte = Capacity {
            sru: 1,
            ..Capacity::ZERO
        };
        assert_eq!(billing_units(&byte).su_micro, 0);
    }

    #[test]
    fn reward_units_follow_the_formula() {
        // 8 cores, 32 GiB, 1024 GiB SSD, 4096 GiB HDD:
        // CU = min(8·2 = 16, (32 − 1)/4 = 7.75, 1024/50 = 20.48) = 7.75.
        // SU = 4096/1200 + 1024/250 = 3.413333 + 4.096 = 7.509333.
        let u = reward_units(&cap(8, 32, 1024, 4096));
        assert_eq!(u.cu_micro, 7_750_000);
        assert_eq!(u.su_micro, 7_509_333);
        // Weight 2·7.75 + 7.509333 = 23.009333.
        assert_eq!(u.weight_micro(), 23_009_333);
        // 1 GiB of memory leaves nothing for workloads: CU = 0.
        assert_eq!(reward_units(&cap(4, 1, 500, 0)).cu_micro, 0);
        // SSD-bound: 4 cores, 64 GiB, 100 GiB SSD → min(8, 15.75, 2) = 2.
        assert_eq!(reward_units(&cap(4, 64, 100, 0)).cu_micro, 2_000_000);
    }

    #[test]
    fn price_per_interval_is_the_monthly_price_times_the_share_of_a_month() {
        let p = PricingPolicy::default();
        // 1 CU, 1.5 SU, 1 IPv4: 22 + 1.5·14 + 4 = 47 USD a month.
        let b = Billable {
            units: Units {
                cu_micro: 1_000_000,
                su_micro: 1_500_000,
            },
            ipv4: 1,
            names: 0,
        };
        assert_eq!(monthly_cost_uusd(&b, &p), 47_000_000);
        // One hour: 47e6 · 3600 / 2,630,880 = 64,313.07 → 64,313 µUSD.
        assert_eq!(cost_uusd(&b, &p, 3_600_000), 64_313);
        // A whole month costs exactly the monthly price.
        assert_eq!(cost_uusd(&b, &p, MONTH_SECS * 1000), 47_000_000);
        // A name: 1 USD a month; ten seconds: 1e6 · 10 / 2,630,880 = 3.8 → 3 µUSD.
        let name = Billable {
            names: 1,
            ..Billable::default()
        };
        assert_eq!(cost_uusd(&name, &p, 10_000), 3);
        // 2.5 GB of traffic at 0.05 USD/GB = 0.125 USD.
        assert_eq!(nu_cost_uusd(2_500_000_000, &p), 125_000);
    }

    #[test]
    fn discounts_follow_the_months_the_balance_covers() {
        let p = PricingPolicy::default();
        // 47 USD a month; a balance worth 70.5 USD covers 1.5 months: 20 %.
        assert_eq!(
            discount(70_500_000, 47_000_000, &p),
            Discount {
                months_covered_milli: 1_500,
                percent: 20
            }
        );
        // 70.499999 USD covers 1.499 months: none.
        assert_eq!(discount(70_499_999, 47_000_000, &p).percent, 0);
        // 3 months: 30 %; 6: 40 %; 18 and beyond: 60 %.
        assert_eq!(discount(141_000_000, 47_000_000, &p).percent, 30);
        assert_eq!(discount(282_000_000, 47_000_000, &p).percent, 40);
        assert_eq!(discount(u64::MAX, 47_000_000, &p).percent, 60);
        // Nothing to pay, nothing to discount.
        assert_eq!(discount(1_000_000, 0, &p), Discount::default());
        // 64,313 µUSD less 20 % = 51,450.4 → 51,450.
        assert_eq!(apply_discount(64_313, 20), 51_450);
    }

    #[test]
    fn conversion_to_tokens_rounds_down() {
        // At 0.01 USD (10,000 µUSD) a token, 51,450 µUSD = 5.145 tokens = 51,450,000 units.
        assert_eq!(uusd_to_tokens(51_450, 10_000), Amount(51_450_000));
        // At 0.03 USD: 51,449 / 30,000 = 1.71496666… tokens → 17,149,666 units.
        assert_eq!(uusd_to_tokens(51_449, 30_000), Amount(17_149_666));
        assert_eq!(uusd_to_tokens(5, 0), Amount::ZERO);
        // 12 tokens at 0.01 USD = 0.12 USD.
        assert_eq!(tokens_to_uusd(Amount::tokens(12), 10_000), 120_000);
    }

    #[test]
    fn the_split_is_50_40_10_and_loses_nothing() {
        // 51,450,000 units: 25,725,000 / 20,580,000 / 5,145,000.
        let s = split(Amount(51_450_000));
        assert_eq!(s.farmer, Amount(25_725_000));
        assert_eq!(s.foundation, Amount(20_580_000));
        assert_eq!(s.staking, Amount(5_145_000));
        // 7 units: farmer 3 (3.5 down), foundation 2 (2.8 down), staking 7 − 5 = 2.
        let s = split(Amount(7));
        assert_eq!((s.farmer.0, s.foundation.0, s.staking.0), (3, 2, 2));
        for n in [0, 1, 99, 101, 12_345_678_901, u64::MAX] {
            assert_eq!(split(Amount(n)).total(), Amount(n));
        }
    }

    #[test]
    fn rewards_step_by_step() {
        let f = FarmingPolicy::default();
        // 8 cores, 32 GiB, 1024 GiB SSD, 4096 GiB HDD: 7.75 CU, 7.509333 SU (see above).
        // Worth per month: 7.75·2.4 + 7.509333·1.0 = 18.6 + 7.509333 = 26.109333 USD.
        // A whole period of MONTH_SECS: 26,109,333 µUSD.
        let mut i = RewardInputs {
            capacity: cap(8, 32, 1024, 4096),
            certified: false,
            period_secs: MONTH_SECS,
            up_secs: MONTH_SECS,
            nu_bytes: 10 * GB,
            ip_secs: 720 * 3600,
            violation: false,
        };
        let r = reward(&i, &f);
        assert_eq!(r.capacity_uusd, 26_109_333);
        assert_eq!(r.multiplier_percent, 100);
        // 10 GB at 0.03 USD = 0.3 USD; 720 IP hours at 0.005 USD = 3.6 USD.
        assert_eq!(r.nu_uusd, 300_000);
        assert_eq!(r.ip_uusd, 3_600_000);
        assert_eq!(r.full_uptime_uusd, 30_009_333);
        assert_eq!(r.uptime_permille, 1000);
        assert!(r.sla_met);
        assert_eq!(r.reward_uusd, 30_009_333);

        // 96 % up: 2,525,644.8 s counted (rounded to 2,525,644): 959 ‰ shown, 95 % met.
        // Reward = 30,009,333 · 2,525,644 / 2,630,880 = 28,808,950.55 → 28,808,950.
        i.up_secs = 2_525_644;
        let r = reward(&i, &f);
        assert_eq!(r.uptime_permille, 959);
        assert!(r.sla_met);
        assert_eq!(r.reward_uusd, 28_808_950);

        // Certified: ×1.25 on capacity only, and the SLA is 98 %: 96 % pays nothing.
        i.certified = true;
        let r = reward(&i, &f);
        assert_eq!(r.capacity_multiplied_uusd, 32_636_666);
        assert_eq!(r.sla_permille, 980);
        assert!(!r.sla_met);
        assert_eq!(r.reward_uusd, 0);

        // Exactly at the SLA: 95 % of 1000 s = 950 s meets it; 949 s does not.
        let short = RewardInputs {
            capacity: cap(8, 32, 1024, 4096),
            period_secs: 1000,
            up_secs: 950,
            ..RewardInputs::default()
        };
        assert!(reward(&short, &f).sla_met);
        assert!(
            !reward(
                &RewardInputs {
                    up_secs: 949,
                    ..short
                },
                &f
            )
            .sla_met
        );
        // A violation zeroes a period that met the SLA.
        let r = reward(
            &RewardInputs {
                violation: true,
                ..short
            },
            &f,
        );
        assert!(r.sla_met);
        assert_eq!(r.reward_uusd, 0);
        // A node registered for no time at all earns nothing and divides by nothing.
        let r = reward(
            &RewardInputs {
                period_secs: 0,
                ..short
            },
            &f,
        );
        assert_eq!((r.uptime_permille, r.reward_uusd), (0, 0));
    }
}
