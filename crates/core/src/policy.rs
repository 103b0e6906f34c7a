//! Economic policies that governance may change: pricing of reserved resources and farming rewards.
//!
//! Money is in integer micro-USD (µUSD) so that every validator computes the same
//! bill; the defaults follow the figures ThreeFold Grid v3 uses in production.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Micro-USD in one USD.
pub const UUSD_PER_USD: u64 = 1_000_000;

/// A discount for builders whose balance covers many months of their contracts.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct DiscountLevel {
    /// Months of spending the balance must cover, in thousandths of a month.
    pub min_months_milli: u64,
    /// Discount in percent.
    pub percent: u8,
}

/// What builders pay for reserved resources, per month, in µUSD.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct PricingPolicy {
    /// One compute unit for a month.
    pub cu_uusd_month: u64,
    /// One storage unit for a month.
    pub su_uusd_month: u64,
    /// One public IPv4 address for a month.
    pub ipv4_uusd_month: u64,
    /// One unique gateway name for a month.
    pub unique_name_uusd_month: u64,
    /// Network traffic, per GB.
    pub nu_uusd_per_gb: u64,
    /// Discounts by months of balance, checked from the largest.
    pub discounts: Vec<DiscountLevel>,
}

impl Default for PricingPolicy {
    fn default() -> Self {
        PricingPolicy {
            cu_uusd_month: 22 * UUSD_PER_USD,
            su_uusd_month: 14 * UUSD_PER_USD,
            ipv4_uusd_month: 4 * UUSD_PER_USD,
            unique_name_uusd_month: UUSD_PER_USD,
            nu_uusd_per_gb: 50_000,
            discounts: vec![
                DiscountLevel {
                    min_months_milli: 1_500,
                    percent: 20,
                },
                DiscountLevel {
                    min_months_milli: 3_000,
                    percent: 30,
                },
                DiscountLevel {
                    min_months_milli: 6_000,
                    percent: 40,
                },
                DiscountLevel {
                    min_months_milli: 18_000,
                    percent: 60,
                },
            ],
        }
    }
}

/// What farmers earn per month of full uptime, in µUSD, and the SLA they must meet.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct FarmingPolicy {
    /// Reward per compute unit and month.
    pub cu_uusd_month: u64,
    /// Reward per storage unit and month.
    pub su_uusd_month: u64,
    /// Reward per GB of network traffic served.
    pub nu_uusd_per_gb: u64,
    /// Reward per public IP and hour of use.
    pub ip_uusd_hour: u64,
    /// Multiplier for certified hardware, in percent.
    pub certified_multiplier_percent: u16,
    /// Minimum uptime for any reward, DIY nodes, in thousandths.
    pub sla_diy_permille: u16,
    /// Minimum uptime for any reward, certified nodes, in thousandths.
    pub sla_certified_permille: u16,
}

impl Default for FarmingPolicy {
    fn default() -> Self {
        FarmingPolicy {
            cu_uusd_month: 2_400_000,
            su_uusd_month: UUSD_PER_USD,
            nu_uusd_per_gb: 30_000,
            ip_uusd_hour: 5_000,
            certified_multiplier_percent: 125,
            sla_diy_permille: 950,
            sla_certified_permille: 980,
        }
    }
}
