//! Capacity (cores and bytes), node locations and farm public IPs.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Bytes in one GiB, the unit of the grid's capacity formulas.
pub const GIB: u64 = 1 << 30;

/// Resources of a node, or reserved by a contract: cores and bytes.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Debug,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Capacity {
    /// Logical CPU cores.
    pub cru: u64,
    /// Memory, bytes.
    pub mru: u64,
    /// SSD storage, bytes.
    pub sru: u64,
    /// HDD storage, bytes.
    pub hru: u64,
}

impl Capacity {
    /// Nothing.
    pub const ZERO: Capacity = Capacity {
        cru: 0,
        mru: 0,
        sru: 0,
        hru: 0,
    };

    /// Field-wise sum, or `None` on overflow.
    pub fn checked_add(&self, o: &Capacity) -> Option<Capacity> {
        Some(Capacity {
            cru: self.cru.checked_add(o.cru)?,
            mru: self.mru.checked_add(o.mru)?,
            sru: self.sru.checked_add(o.sru)?,
            hru: self.hru.checked_add(o.hru)?,
        })
    }

    /// Field-wise difference, floored at zero.
    pub fn saturating_sub(&self, o: &Capacity) -> Capacity {
        Capacity {
            cru: self.cru.saturating_sub(o.cru),
            mru: self.mru.saturating_sub(o.mru),
            sru: self.sru.saturating_sub(o.sru),
            hru: self.hru.saturating_sub(o.hru),
        }
    }

    /// Whether every field of `self` is at most the same field of `limit`.
    pub fn fits_within(&self, limit: &Capacity) -> bool {
        self.cru <= limit.cru
            && self.mru <= limit.mru
            && self.sru <= limit.sru
            && self.hru <= limit.hru
    }

    /// Whether all fields are zero.
    pub fn is_zero(&self) -> bool {
        *self == Capacity::ZERO
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores, {} RAM, {} SSD, {} HDD",
            self.cru,
            human_bytes(self.mru),
            human_bytes(self.sru),
            human_bytes(self.hru)
        )
    }
}

/// Bytes in binary units for people: `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Where a node is. Coordinates are integer micro-degrees so the ledger never touches floats.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Hash,
    Default,
    Debug,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Location {
    /// Country name or ISO code.
    pub country: String,
    /// City name.
    pub city: String,
    /// Latitude in millionths of a degree, −90e6..=90e6.
    pub latitude_micro: i32,
    /// Longitude in millionths of a degree, −180e6..=180e6.
    pub longitude_micro: i32,
}

/// A public IPv4 address a farm offers to deployments, with its subnet and gateway.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Debug,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct PublicIp {
    /// The address.
    pub ip: [u8; 4],
    /// Its subnet's prefix length, 0..=32.
    pub prefix_len: u8,
    /// The subnet's gateway.
    pub gateway: [u8; 4],
}

impl fmt::Display for PublicIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        let [g, h, i, j] = self.gateway;
        write!(f, "{a}.{b}.{c}.{d}/{} via {g}.{h}.{i}.{j}", self.prefix_len)
    }
}
