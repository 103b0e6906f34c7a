//! Prices and rewards in micro-USD: parsed from what people type, shown as people read them.

use std::fmt;

use crate::policy::UUSD_PER_USD;

/// An amount of micro-USD (µUSD): `Usd(50_000)` is five cents.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default, Hash)]
pub struct Usd(pub u64);

impl Usd {
    /// Every digit, for receipts recomputed by hand: `0.050000 USD`.
    pub fn exact(self) -> String {
        format!("{}.{:06} USD", self.0 / UUSD_PER_USD, self.0 % UUSD_PER_USD)
    }
}

impl fmt::Display for Usd {
    /// Dollars as people read them: `$22`, `$0.05`, `$0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UUSD_PER_USD;
        let frac = self.0 % UUSD_PER_USD;
        if frac == 0 {
            return write!(f, "${whole}");
        }
        let digits = format!("{frac:06}");
        let digits = digits.trim_end_matches('0');
        // Cents always shown in pairs: $0.5 reads oddly, $0.50 does not.
        if digits.len() == 1 {
            write!(f, "${whole}.{digits}0")
        } else {
            write!(f, "${whole}.{digits}")
        }
    }
}

impl std::str::FromStr for Usd {
    type Err = String;

    /// `0.05`, `$22` or `1.000001`: dollars with at most six decimals.
    fn from_str(text: &str) -> Result<Self, String> {
        let err = || format!("{text:?} is not an amount of USD, like 0.05 (at most 6 decimals)");
        let trimmed = text.trim().trim_start_matches('$');
        let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        if frac.len() > 6 || (whole.is_empty() && frac.is_empty()) {
            return Err(err());
        }
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(frac) {
            return Err(err());
        }
        let frac_uusd: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| err())?
        };
        let too_large = || {
            format!(
                "{text:?} is more than the largest amount of USD, {}",
                Usd(u64::MAX)
            )
        };
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        whole
            .checked_mul(UUSD_PER_USD)
            .and_then(|w| w.checked_add(frac_uusd))
            .map(Usd)
            .ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_amounts_parse_to_micro_usd() {
        let parse = |t: &str| t.parse::<Usd>().map(|u| u.0);
        assert_eq!(parse("0.05"), Ok(50_000));
        assert_eq!(parse("$22"), Ok(22_000_000));
        assert_eq!(parse("1.000001"), Ok(1_000_001));
        assert_eq!(parse(".5"), Ok(500_000));
        assert!(parse("0.0000001").is_err(), "below a micro-dollar");
        assert!(parse("lots").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1").is_err(), "no negative prices");
        for huge in ["99999999999999999", "99999999999999999999"] {
            assert!(
                parse(huge).is_err_and(|e| e.contains("more than the largest amount")),
                "too large for µUSD in a u64: {huge}"
            );
        }
    }

    #[test]
    fn usd_amounts_print_as_people_read_them_and_exactly() {
        assert_eq!(Usd(22_000_000).to_string(), "$22");
        assert_eq!(Usd(50_000).to_string(), "$0.05");
        assert_eq!(Usd(500_000).to_string(), "$0.50");
        assert_eq!(Usd(1).to_string(), "$0.000001");
        assert_eq!(Usd(50_000).exact(), "0.050000 USD");
        for text in ["$22", "$0.05", "$0.50", "$0.000001"] {
            assert_eq!(
                text.parse::<Usd>().map(|u| u.to_string()).as_deref(),
                Ok(text)
            );
        }
    }
}
