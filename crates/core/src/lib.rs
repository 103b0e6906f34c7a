//! The grid's vocabulary: account ids and keys, amounts, capacity, and signed transactions.
//!
//! # Status: ALPHA
//!
//! Everything the ledger records and every participant signs is defined here, with
//! one canonical binary encoding (borsh) and one readable form for people (JSON and
//! the strings printed by the CLI). Nothing in this crate does IO except the key
//! file helpers in [`keys`], atomic writes and free space in [`fs`], the test
//! support in [`disklab`], and, with the `http` feature, the HTTP serving loop that
//! the validator's API and the node's entry share (`http`).

pub mod account;
pub mod amount;
pub mod capacity;
pub mod codec;
pub mod disklab;
pub mod economics;
pub mod fs;
pub mod hash;
#[cfg(feature = "http")]
pub mod http;
pub mod keys;
#[cfg(feature = "openapi")]
mod openapi;
pub mod policy;
pub mod recent;
mod sig;
pub mod tx;
pub mod usd;

pub use account::{AccountId, ParseAccountError};
pub use amount::{Amount, ParseAmountError};
pub use capacity::{Capacity, Location, PublicIp};
pub use hash::Hash;
pub use keys::{KeyError, Keypair};
pub use tx::{Payload, SignedTx, TxBody, TxHash};

/// Farm identifier, assigned by the ledger in creation order starting at 1.
pub type FarmId = u32;
/// Node identifier, assigned by the ledger in registration order starting at 1.
pub type NodeId = u32;
/// Contract identifier, assigned by the ledger in creation order starting at 1.
pub type ContractId = u64;
/// Governance proposal identifier, assigned in creation order starting at 1.
pub type ProposalId = u64;

/// Wall-clock Unix time in ms; 0 if the clock is before 1970. Only for what leaves the
/// ledger (timeouts, reports, ages): the ledger's own clock is each block's time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A Unix time in ms as a UTC date and time to the second: `2026-12-06 16:10:00 UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date, in 400-year eras of 146,097 days that
    // start on 1 March, so that the leap day is the last of its year.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod utc_tests {
    use super::utc;

    #[test]
    fn unix_times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(951_868_799_999), "2000-02-29 23:59:59 UTC");
        assert_eq!(utc(1_798_761_599_000), "2026-12-31 23:59:59 UTC");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01 00:00:00 UTC");
    }
}
