//! Economic policies that governance may change: pricing of reserved resources and farming rewards.
//!
//! Money is in integer micro-USD (µUSD) so that every validator computes the same
//! bill; the defaults follow the figures ThreeFold Grid v3 uses in production.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Most discount levels a pricing policy may list.
pub const DISCOUNT_LEVELS_MAX: usize = 8;

/// Largest price or reward rate a policy may set, µUSD (10,000 USD per unit): far above any
/// real price, and far below a price in USD mistyped as µUSD (×10^6).
pub const PRICE_UUSD_MAX: u64 = 10_000 * UUSD_PER_USD;

/// Smallest certification multiplier, percent: certified hardware never earns less than DIY.
pub const CERTIFIED_MULTIPLIER_PERCENT_MIN: u16 = 100;

/// Largest certification multiplier, percent: certification at most doubles a reward.
pub const CERTIFIED_MULTIPLIER_PERCENT_MAX: u16 = 200;

/// Why a policy cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// More levels than [`DISCOUNT_LEVELS_MAX`].
    #[error("{0} discount levels, more than the limit of {DISCOUNT_LEVELS_MAX}")]
    TooManyDiscounts(usize),
    /// A discount above 100 %.
    #[error("a discount of {0} % is above 100 %")]
    DiscountAbove100(u8),
    /// Levels must rise in both months and percent, so the largest level met is unambiguous.
    #[error(
        "discount level {index} ({months_milli} thousandths of a month, {percent} %) does not rise above the level before it in both months and percent"
    )]
    DiscountsNotIncreasing {
        /// Position of the offending level.
        index: usize,
        /// Its threshold.
        months_milli: u64,
        /// Its percent.
        percent: u8,
    },
    /// An SLA above 1000 ‰.
    #[error("an uptime threshold of {0} ‰ is above 1000 ‰")]
    SlaAbove1000(u16),
    /// A price or rate above [`PRICE_UUSD_MAX`].
    #[error(
        "{field} of {uusd} µUSD is above the limit of {PRICE_UUSD_MAX} µUSD (10,000 USD); prices are in µUSD, 1 USD = 1000000"
    )]
    PriceAboveMax {
        /// The policy field.
        field: &'static str,
        /// Its value.
        uusd: u64,
    },
    /// A certification multiplier outside [`CERTIFIED_MULTIPLIER_PERCENT_MIN`]..=[`CERTIFIED_MULTIPLIER_PERCENT_MAX`].
    #[error(
        "a certification multiplier of {0} % is outside {CERTIFIED_MULTIPLIER_PERCENT_MIN} to {CERTIFIED_MULTIPLIER_PERCENT_MAX} %"
    )]
    MultiplierOutOfRange(u16),
    /// Certified hardware held to a lower SLA than DIY hardware.
    #[error(
        "the certified uptime threshold of {certified} ‰ is below the DIY one of {diy} ‰; certified nodes are held to at least the DIY threshold"
    )]
    CertifiedSlaBelowDiy {
        /// The certified SLA.
        certified: u16,
        /// The DIY SLA.
        diy: u16,
    },
}

/// Refuse the first of `prices` above [`PRICE_UUSD_MAX`].
fn check_prices(prices: &[(&'static str, u64)]) -> Result<(), PolicyError> {
    match prices.iter().find(|(_, uusd)| *uusd > PRICE_UUSD_MAX) {
        Some(&(field, uusd)) => Err(PolicyError::PriceAboveMax { field, uusd }),
        None => Ok(()),
    }
}

/// Micro-USD in one USD.
pub const UUSD_PER_USD: u64 = 1_000_000;

/// A discount for builders whose balance covers many months of their contracts.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiscountLevel {
    /// Months of spending the balance must cover, in thousandths of a month.
    pub min_months_milli: u64,
    /// Discount in percent.
    pub percent: u8,
}

/// What builders pay for reserved resources, per month, in µUSD.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl PricingPolicy {
    /// Check every price is at most [`PRICE_UUSD_MAX`], and the discount levels: at most
    /// [`DISCOUNT_LEVELS_MAX`], each at most 100 %, strictly increasing.
    pub fn check(&self) -> Result<(), PolicyError> {
        check_prices(&[
            ("cu_uusd_month", self.cu_uusd_month),
            ("su_uusd_month", self.su_uusd_month),
            ("ipv4_uusd_month", self.ipv4_uusd_month),
            ("unique_name_uusd_month", self.unique_name_uusd_month),
            ("nu_uusd_per_gb", self.nu_uusd_per_gb),
        ])?;
        if self.discounts.len() > DISCOUNT_LEVELS_MAX {
            return Err(PolicyError::TooManyDiscounts(self.discounts.len()));
        }
        for (index, d) in self.discounts.iter().enumerate() {
            if d.percent > 100 {
                return Err(PolicyError::DiscountAbove100(d.percent));
            }
            if let Some(prev) = index.checked_sub(1).map(|i| self.discounts[i])
                && (d.min_months_milli <= prev.min_months_milli || d.percent <= prev.percent)
            {
                return Err(PolicyError::DiscountsNotIncreasing {
                    index,
                    months_milli: d.min_months_milli,
                    percent: d.percent,
                });
            }
        }
        Ok(())
    }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl FarmingPolicy {
    /// Check every rate is at most [`PRICE_UUSD_MAX`], the certification multiplier is within
    /// its bounds, and the SLA thresholds are at most 1000 ‰ with the certified one at least
    /// the DIY one.
    pub fn check(&self) -> Result<(), PolicyError> {
        check_prices(&[
            ("cu_uusd_month", self.cu_uusd_month),
            ("su_uusd_month", self.su_uusd_month),
            ("nu_uusd_per_gb", self.nu_uusd_per_gb),
            ("ip_uusd_hour", self.ip_uusd_hour),
        ])?;
        let m = self.certified_multiplier_percent;
        if !(CERTIFIED_MULTIPLIER_PERCENT_MIN..=CERTIFIED_MULTIPLIER_PERCENT_MAX).contains(&m) {
            return Err(PolicyError::MultiplierOutOfRange(m));
        }
        for sla in [self.sla_diy_permille, self.sla_certified_permille] {
            if sla > 1000 {
                return Err(PolicyError::SlaAbove1000(sla));
            }
        }
        if self.sla_certified_permille < self.sla_diy_permille {
            return Err(PolicyError::CertifiedSlaBelowDiy {
                certified: self.sla_certified_permille,
                diy: self.sla_diy_permille,
            });
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discount_levels_must_rise_strictly() {
        assert_eq!(PricingPolicy::default().check(), Ok(()));
        let mut p = PricingPolicy::default();
        p.discounts.swap(1, 2);
        assert!(matches!(
            p.check(),
            Err(PolicyError::DiscountsNotIncreasing { index: 2, .. })
        ));
        let mut p = PricingPolicy::default();
        p.discounts[1].min_months_milli = p.discounts[0].min_months_milli;
        assert!(p.check().is_err(), "equal thresholds are ambiguous");
        let mut p = PricingPolicy::default();
        p.discounts[1].percent = p.discounts[0].percent;
        assert!(p.check().is_err(), "a longer cover must earn more");
        let mut p = PricingPolicy::default();
        p.discounts[3].percent = 101;
        assert_eq!(p.check(), Err(PolicyError::DiscountAbove100(101)));
        let p = PricingPolicy {
            discounts: (1..=9)
                .map(|i| DiscountLevel {
                    min_months_milli: i * 1000,
                    percent: i as u8,
                })
                .collect(),
            ..PricingPolicy::default()
        };
        assert_eq!(p.check(), Err(PolicyError::TooManyDiscounts(9)));
        let f = FarmingPolicy {
            sla_certified_permille: 1001,
            ..FarmingPolicy::default()
        };
        assert_eq!(f.check(), Err(PolicyError::SlaAbove1000(1001)));
    }

    #[test]
    fn prices_rates_and_multipliers_stay_in_sane_bounds() {
        assert_eq!(FarmingPolicy::default().check(), Ok(()));
        // 10,000 USD a unit is the most; 22 USD typed as µUSD twice is refused.
        let p = PricingPolicy {
            cu_uusd_month: PRICE_UUSD_MAX,
            ..PricingPolicy::default()
        };
        assert_eq!(p.check(), Ok(()));
        let p = PricingPolicy {
            su_uusd_month: 14 * UUSD_PER_USD * UUSD_PER_USD,
            ..PricingPolicy::default()
        };
        assert_eq!(
            p.check(),
            Err(PolicyError::PriceAboveMax {
                field: "su_uusd_month",
                uusd: 14_000_000_000_000
            })
        );
        let f = FarmingPolicy {
            ip_uusd_hour: PRICE_UUSD_MAX + 1,
            ..FarmingPolicy::default()
        };
        assert!(matches!(
            f.check(),
            Err(PolicyError::PriceAboveMax {
                field: "ip_uusd_hour",
                ..
            })
        ));
        // Certification earns ×1 to ×2.
        for (m, ok) in [(99, false), (100, true), (200, true), (201, false)] {
            let f = FarmingPolicy {
                certified_multiplier_percent: m,
                ..FarmingPolicy::default()
            };
            assert_eq!(f.check().is_ok(), ok, "{m}");
        }
        // Certified nodes are held to at least the DIY uptime.
        let f = FarmingPolicy {
            sla_certified_permille: 940,
            ..FarmingPolicy::default()
        };
        assert_eq!(
            f.check(),
            Err(PolicyError::CertifiedSlaBelowDiy {
                certified: 940,
                diy: 950
            })
        );
    }
}
