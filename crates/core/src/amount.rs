//! Token amounts: integer units with 7 decimals, printed as decimal tokens.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Decimal places of the token: 1 token = 10^7 units.
pub const DECIMALS: u32 = 7;
/// Units in one whole token.
pub const UNITS_PER_TOKEN: u64 = 10u64.pow(DECIMALS);
/// The token's ticker, printed after amounts.
pub const TICKER: &str = "PGT";

/// An amount of the grid's token, in units of 10^-7 token.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct Amount(pub u64);

/// Why a string is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAmountError {
    /// Not a decimal number.
    #[error("not an amount: {0:?} (expected a number of tokens like 12 or 0.5)")]
    Format(String),
    /// Below zero.
    #[error("{0} is negative: give a number of tokens like 12 or 0.5")]
    Negative(String),
    /// More decimals than the token has.
    #[error("too many decimals in {0:?}: the token has {DECIMALS}")]
    Precision(String),
    /// Larger than the largest representable amount.
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Amount {
    /// Zero tokens.
    pub const ZERO: Amount = Amount(0);

    /// Whole tokens.
    pub const fn tokens(n: u64) -> Amount {
        Amount(n * UNITS_PER_TOKEN)
    }

    /// Sum, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// Difference, or `None` if it would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Sum, capped at the largest amount.
    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_TOKEN;
        let frac = self.0 % UNITS_PER_TOKEN;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:07}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self} {TICKER}")
    }
}

impl FromStr for Amount {
    type Err = ParseAmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let shown = || s.chars().take(40).collect::<String>();
        let number = s.strip_suffix(TICKER).map(str::trim_end).unwrap_or(s);
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (number.contains('.') && !digits(frac)) {
            let positive = number.strip_prefix('-').unwrap_or(number);
            let (w, f) = positive.split_once('.').unwrap_or((positive, ""));
            if positive.len() < number.len() && digits(w) && (f.is_empty() || digits(f)) {
                return Err(ParseAmountError::Negative(shown()));
            }
            return Err(ParseAmountError::Format(shown()));
        }
        if frac.len() > DECIMALS as usize {
            return Err(ParseAmountError::Precision(shown()));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| ParseAmountError::Overflow(shown()))?;
        let frac_units: u64 = if frac.is_empty() {
            0
        } else {
            // At most 7 ASCII digits: always fits.
            frac.parse::<u64>()
                .map_err(|_| ParseAmountError::Format(shown()))?
                * 10u64.pow(DECIMALS - frac.len() as u32)
        };
        whole
            .checked_mul(UNITS_PER_TOKEN)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(|| ParseAmountError::Overflow(shown()))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Whole(u64),
        }
        match <Either as Deserialize>::deserialize(d)? {
            Either::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Either::Whole(n) => n
                .checked_mul(UNITS_PER_TOKEN)
                .map(Amount)
                .ok_or_else(|| serde::de::Error::custom(format!("amount {n} is too large"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prints_and_parses_tokens() {
        assert_eq!(Amount(15_000_000).to_string(), "1.5");
        assert_eq!(Amount(1).to_string(), "0.0000001");
        assert_eq!("12".parse(), Ok(Amount::tokens(12)));
        assert_eq!("0.25 PGT".parse(), Ok(Amount(2_500_000)));
        assert!(matches!(
            "1.00000001".parse::<Amount>(),
            Err(ParseAmountError::Precision(_))
        ));
        assert_eq!(
            "-1.5".parse::<Amount>(),
            Err(ParseAmountError::Negative("-1.5".into()))
        );
        assert!(matches!(
            "-x".parse::<Amount>(),
            Err(ParseAmountError::Format(_))
        ));
        assert!(matches!(
            "-nan".parse::<Amount>(),
            Err(ParseAmountError::Format(_))
        ));
        assert!(matches!(
            "1.".parse::<Amount>(),
            Err(ParseAmountError::Format(_))
        ));
        assert!(matches!(
            "99999999999999999999".parse::<Amount>(),
            Err(ParseAmountError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(units in any::<u64>()) {
            prop_assert_eq!(Amount(units).to_string().parse::<Amount>(), Ok(Amount(units)));
        }
    }
}
