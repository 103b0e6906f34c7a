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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// The fields of `self` above the same field of `limit`, in words, like
    /// `"SSD 20.0 GiB > 10.0 GiB"`, joined by ", " (empty when `self` fits within `limit`).
    pub fn excess_over(&self, limit: &Capacity) -> String {
        [
            (
                "cores",
                self.cru,
                limit.cru,
                self.cru.to_string(),
                limit.cru.to_string(),
            ),
            (
                "RAM",
                self.mru,
                limit.mru,
                human_bytes(self.mru),
                human_bytes(limit.mru),
            ),
            (
                "SSD",
                self.sru,
                limit.sru,
                human_bytes(self.sru),
                human_bytes(limit.sru),
            ),
            (
                "HDD",
                self.hru,
                limit.hru,
                human_bytes(self.hru),
                human_bytes(limit.hru),
            ),
        ]
        .into_iter()
        .filter(|(_, have, max, _, _)| have > max)
        .map(|(name, _, _, have, max)| format!("{name} {have} > {max}"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}, {} RAM, {} SSD, {} HDD",
            self.cru,
            if self.cru == 1 { "core" } else { "cores" },
            human_bytes(self.mru),
            human_bytes(self.sru),
            human_bytes(self.hru)
        )
    }
}

/// A number of bytes as people write it: parsed from `4096`, `100MiB`, `1.5GiB` or `2TB`, shown
/// in binary units (`1.5 GiB`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Size(pub u64);

impl Size {
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    /// A size with an optional binary or decimal unit: `4096`, `100MiB`, `1.5GiB`, `2TB`.
    fn from_str(text: &str) -> Result<Size, String> {
        parse_size(text).map(Size)
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB"
            ));
        }
    };
    let bad = || format!("{text:?} is not a size; write it like 100MiB or 1.5GiB");
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    // Exact integer arithmetic: 1.5GiB is 1610612736 bytes, not a float's rounding of it.
    let bytes = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_value * scale / 10u128.pow(frac.len() as u32)))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicIp {
    /// The address; dotted (`"185.1.2.3"`) in JSON.
    #[serde(with = "dotted")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "185.1.2.3"))]
    pub ip: [u8; 4],
    /// Its subnet's prefix length, 0..=32.
    pub prefix_len: u8,
    /// The subnet's gateway; dotted in JSON.
    #[serde(with = "dotted")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "185.1.2.1"))]
    pub gateway: [u8; 4],
}

/// IPv4 addresses in JSON as people and scripts write them, `"185.1.2.3"`; the four
/// numbers the grid wrote before are still read.
mod dotted {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::Ipv4Addr;

    pub fn serialize<S: Serializer>(octets: &[u8; 4], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Ipv4Addr::from(*octets))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Dotted(String),
        Octets([u8; 4]),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 4], D::Error> {
        match Written::deserialize(deserializer)? {
            Written::Octets(octets) => Ok(octets),
            Written::Dotted(text) => text.parse::<Ipv4Addr>().map(|ip| ip.octets()).map_err(|_| {
                serde::de::Error::custom(format!("{text:?} is not an IPv4 address like 185.1.2.3"))
            }),
        }
    }
}

impl fmt::Display for PublicIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.ip;
        let [g, h, i, j] = self.gateway;
        write!(f, "{a}.{b}.{c}.{d}/{} via {g}.{h}.{i}.{j}", self.prefix_len)
    }
}

impl std::str::FromStr for PublicIp {
    type Err = String;

    /// `IP/PREFIX@GATEWAY`, like `185.1.2.3/24@185.1.2.1`.
    fn from_str(text: &str) -> Result<Self, String> {
        let err = || format!("{text:?} is not IP/PREFIX@GATEWAY, like 185.1.2.3/24@185.1.2.1");
        let (net, gw) = text.split_once('@').ok_or_else(err)?;
        let (ip, prefix) = net.split_once('/').ok_or_else(err)?;
        let ip: std::net::Ipv4Addr = ip.trim().parse().map_err(|_| err())?;
        let gateway: std::net::Ipv4Addr = gw.trim().parse().map_err(|_| err())?;
        let prefix_len: u8 = prefix.trim().parse().map_err(|_| err())?;
        if !(8..=32).contains(&prefix_len) {
            return Err(format!(
                "{text:?}: a public subnet's prefix length is 8 to 32 (24 for a /24)"
            ));
        }
        // A /31 or /32 is routed to the host, often through a gateway outside it; in a
        // larger subnet a gateway outside it, or an address that is not a host's, is a typo
        // that a deployment would find only when its IP does not work.
        if prefix_len < 31 {
            let mask = u32::MAX << (32 - prefix_len);
            let (ip_bits, gw_bits) = (u32::from(ip), u32::from(gateway));
            if ip_bits & mask != gw_bits & mask {
                return Err(format!(
                    "{text:?}: the gateway {gateway} is outside the subnet {}/{prefix_len}",
                    std::net::Ipv4Addr::from(ip_bits & mask)
                ));
            }
            if ip_bits == gw_bits {
                return Err(format!("{text:?}: the address is its own gateway"));
            }
            if ip_bits & !mask == 0 || ip_bits & !mask == !mask {
                return Err(format!(
                    "{text:?}: {ip} is the subnet's network or broadcast address, not a host's"
                ));
            }
        }
        Ok(PublicIp {
            ip: ip.octets(),
            prefix_len,
            gateway: gateway.octets(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ips_are_dotted_in_json_and_the_old_octets_still_read() {
        let ip: PublicIp = "185.1.2.3/24@185.1.2.1".parse().expect("valid");
        let json = serde_json::to_value(ip).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"ip": "185.1.2.3", "prefix_len": 24, "gateway": "185.1.2.1"})
        );
        assert_eq!(serde_json::from_value::<PublicIp>(json).expect("reads"), ip);
        let old =
            serde_json::json!({"ip": [185, 1, 2, 3], "prefix_len": 24, "gateway": [185, 1, 2, 1]});
        assert_eq!(serde_json::from_value::<PublicIp>(old).expect("reads"), ip);
        let bad = serde_json::json!({"ip": "185.1.2", "prefix_len": 24, "gateway": "185.1.2.1"});
        let err = serde_json::from_value::<PublicIp>(bad).expect_err("refused");
        assert!(err.to_string().contains("not an IPv4 address"), "{err}");
    }

    #[test]
    fn public_ips_parse_and_bad_ones_say_the_format() {
        let ip = "185.1.2.3/24@185.1.2.1".parse::<PublicIp>().expect("valid");
        assert_eq!(ip.ip, [185, 1, 2, 3]);
        assert_eq!(ip.prefix_len, 24);
        assert_eq!(ip.gateway, [185, 1, 2, 1]);
        let e = "185.1.2.3".parse::<PublicIp>().expect_err("no gateway");
        assert!(e.to_string().contains("IP/PREFIX@GATEWAY"), "{e}");
        assert!("185.1.2.3/33@185.1.2.1".parse::<PublicIp>().is_err());
        let e = "185.1.2.3/24@185.1.3.1"
            .parse::<PublicIp>()
            .expect_err("outside");
        assert!(e.contains("outside the subnet 185.1.2.0/24"), "{e}");
        assert!("185.1.2.1/24@185.1.2.1".parse::<PublicIp>().is_err());
        assert!("185.1.2.255/24@185.1.2.1".parse::<PublicIp>().is_err());
        assert!("185.1.2.0/24@185.1.2.1".parse::<PublicIp>().is_err());
        assert!(
            "185.1.2.3/0@9.9.9.9".parse::<PublicIp>().is_err(),
            "no real subnet"
        );
        assert!("185.1.2.3/8@185.9.9.9".parse::<PublicIp>().is_ok());
        // A single address routed through a gateway elsewhere is how many hosts sell them.
        assert!("185.1.2.3/32@172.31.1.1".parse::<PublicIp>().is_ok());
    }

    #[test]
    fn excess_names_only_the_fields_above_the_limit() {
        let reserved = Capacity {
            cru: 4,
            mru: GIB,
            sru: 20 * GIB,
            hru: 0,
        };
        let offered = Capacity {
            cru: 2,
            mru: 2 * GIB,
            sru: 10 * GIB,
            hru: 0,
        };
        assert_eq!(
            reserved.excess_over(&offered),
            "cores 4 > 2, SSD 20.0 GiB > 10.0 GiB"
        );
        assert_eq!(offered.excess_over(&offered), "");
    }

    #[test]
    fn a_size_shows_in_binary_units_and_reads_back_what_it_shows() {
        let size = Size(3 << 29);
        assert_eq!(size.to_string(), "1.5 GiB");
        assert_eq!(size.to_string().parse::<Size>(), Ok(size));
        let err = "5 parsecs".parse::<Size>().expect_err("not a unit");
        assert!(err.contains("use B, KiB, MiB"), "{err}");
    }

    #[test]
    fn sizes_parse_exactly_in_binary_and_decimal_units() {
        assert_eq!("4096".parse::<Size>().map(Size::bytes), Ok(4096));
        assert_eq!("100MiB".parse::<Size>().map(Size::bytes), Ok(100 << 20));
        assert_eq!("2 KiB".parse::<Size>().map(Size::bytes), Ok(2048));
        assert_eq!("1.5GiB".parse::<Size>().map(Size::bytes), Ok(3 << 29));
        assert_eq!(
            "2TB".parse::<Size>().map(Size::bytes),
            Ok(2_000_000_000_000)
        );
        assert!("MiB".parse::<Size>().map(Size::bytes).is_err());
        assert!("lots".parse::<Size>().map(Size::bytes).is_err());
        assert!("1.2.3GiB".parse::<Size>().map(Size::bytes).is_err());
        assert!(
            "99999999999999GiB"
                .parse::<Size>()
                .map(Size::bytes)
                .is_err(),
            "beyond u64"
        );
    }
}
