//! Erasure coding of one sealed segment into `k` data and `m` parity shards
//! (Reed-Solomon, `reed-solomon-simd`): any `k` of the `k + m` rebuild the segment.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Shard lengths are rounded up to this, as the SIMD coder works on whole blocks.
const SHARD_ALIGN: usize = 64;
/// Most shards of one segment: beyond this a segment's shards outnumber any real farm list.
pub const SHARDS_MAX: u16 = 256;

/// `k` data shards plus `m` parity shards.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct Scheme {
    /// Data shards: any `k` shards rebuild a segment.
    pub k: u16,
    /// Parity shards: how many may be lost.
    pub m: u16,
}

impl Scheme {
    /// All shards of a segment.
    pub fn n(self) -> usize {
        usize::from(self.k) + usize::from(self.m)
    }

    /// Check the scheme is usable.
    pub fn check(self) -> Result<(), String> {
        if self.k == 0 {
            return Err("a scheme needs at least one data shard (K ≥ 1)".into());
        }
        if u32::from(self.k) + u32::from(self.m) > u32::from(SHARDS_MAX) {
            return Err(format!("K+M is at most {SHARDS_MAX}"));
        }
        Ok(())
    }

    /// The default for `nodes` storage nodes: two fifths of them for parity, at most
    /// four and at least one once there are two; 3+2 on five, 6+4 on ten, 16+4 from
    /// twenty on (a large grid relies on repair, not on more parity).
    pub fn for_nodes(nodes: usize) -> Scheme {
        let n = nodes.clamp(1, 20);
        let m = if n >= 2 {
            ((n * 2 + 2) / 5).clamp(1, 4)
        } else {
            0
        };
        let k = n - m;
        Scheme {
            k: k as u16,
            m: m as u16,
        }
    }

    /// The length of each shard of a `len`-byte segment.
    pub fn shard_len(self, len: usize) -> usize {
        let k = usize::from(self.k.max(1));
        len.div_ceil(k).max(1).next_multiple_of(SHARD_ALIGN)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl FromStr for Scheme {
    type Err = String;

    /// `K+M`, e.g. `3+2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a scheme: write K+M, e.g. 3+2 (any 3 of 5 shards rebuild the data)"
            )
        };
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let scheme = Scheme {
            k: k.trim().parse().map_err(|_| bad())?,
            m: m.trim().parse().map_err(|_| bad())?,
        };
        scheme.check()?;
        Ok(scheme)
    }
}

/// Erasure coding failed (a bug or a corrupt manifest, never a normal outcome).
#[derive(Debug, thiserror::Error)]
#[error("erasure coding failed: {0}")]
pub struct ErasureError(String);

/// Split `data` into `k` data shards (zero-padded) and compute `m` parity shards.
pub fn encode(scheme: Scheme, data: &[u8]) -> Result<Vec<Vec<u8>>, ErasureError> {
    scheme.check().map_err(ErasureError)?;
    let len = scheme.shard_len(data.len());
    let k = usize::from(scheme.k);
    let mut shards: Vec<Vec<u8>> = (0..k)
        .map(|i| {
            let start = (i * len).min(data.len());
            let end = ((i + 1) * len).min(data.len());
            let mut s = Vec::with_capacity(len);
            s.extend_from_slice(&data[start..end]);
            s.resize(len, 0);
            s
        })
        .collect();
    if scheme.m > 0 {
        let parity = reed_solomon_simd::encode(k, usize::from(scheme.m), &shards)
            .map_err(|e| ErasureError(e.to_string()))?;
        shards.extend(parity);
    }
    Ok(shards)
}

/// Rebuild `data_len` bytes from any `k` shards (`shards[i]` is shard `i`, or `None`);
/// with every data shard present nothing is decoded, only joined.
pub fn decode(
    scheme: Scheme,
    shards: Vec<Option<Vec<u8>>>,
    data_len: usize,
) -> Result<Vec<u8>, ErasureError> {
    let mut out = vec![0u8; data_len];
    decode_into(scheme, shards, &mut out)?;
    Ok(out)
}

/// [`decode`] into `out`, as long as the segment: a get decodes into an aligned buffer
/// it writes to disk around the page cache.
pub fn decode_into(
    scheme: Scheme,
    shards: Vec<Option<Vec<u8>>>,
    out: &mut [u8],
) -> Result<(), ErasureError> {
    let data_len = out.len();
    let originals = restore(scheme, shards, data_len)?;
    let mut at = 0;
    for s in originals {
        let take = (data_len - at).min(s.len());
        out[at..at + take].copy_from_slice(&s[..take]);
        at += take;
    }
    Ok(())
}

/// The `k` data shards of a `data_len`-byte segment, the missing ones rebuilt from parity.
fn restore(
    scheme: Scheme,
    mut shards: Vec<Option<Vec<u8>>>,
    data_len: usize,
) -> Result<Vec<Vec<u8>>, ErasureError> {
    let k = usize::from(scheme.k);
    let len = scheme.shard_len(data_len);
    if shards.len() != scheme.n() {
        return Err(ErasureError(format!(
            "{} shard slots for a {scheme} scheme",
            shards.len()
        )));
    }
    if let Some(bad) = shards.iter().flatten().find(|s| s.len() != len) {
        return Err(ErasureError(format!(
            "a shard of {} bytes where {len} were expected",
            bad.len()
        )));
    }
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < k {
        return Err(ErasureError(format!("{have} shards, {k} needed")));
    }
    let recovered = shards.split_off(k);
    let mut originals = shards;
    if originals.iter().any(Option::is_none) {
        let present = originals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|s| (i, s)));
        let recovery = recovered
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_deref().map(|s| (i, s)));
        let restored = reed_solomon_simd::decode(k, usize::from(scheme.m), present, recovery)
            .map_err(|e| ErasureError(e.to_string()))?;
        for (i, s) in restored {
            if let Some(slot) = originals.get_mut(i) {
                *slot = Some(s);
            }
        }
    }
    originals
        .into_iter()
        .map(|s| s.ok_or_else(|| ErasureError("a data shard was not restored".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_k_shards_rebuild_the_segment() {
        let scheme: Scheme = "3+2".parse().expect("scheme");
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let shards = encode(scheme, &data).expect("encode");
        assert_eq!(shards.len(), 5);
        for lost_a in 0..5 {
            for lost_b in lost_a + 1..5 {
                let partial: Vec<Option<Vec<u8>>> = shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i != lost_a && i != lost_b).then(|| s.clone()))
                    .collect();
                assert_eq!(
                    decode(scheme, partial.clone(), data.len()).expect("decode"),
                    data
                );
                let mut into = vec![0u8; data.len()];
                decode_into(scheme, partial, &mut into).expect("decode into");
                assert_eq!(into, data);
            }
        }
        let three_lost: Vec<Option<Vec<u8>>> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i >= 3).then(|| s.clone()))
            .collect();
        assert!(decode(scheme, three_lost, data.len()).is_err());
        // More than k, as when a spare arrives too: a data shard missing is still rebuilt.
        for lost in 0..3 {
            let spare: Vec<Option<Vec<u8>>> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (i != lost).then(|| s.clone()))
                .collect();
            assert_eq!(decode(scheme, spare, data.len()).expect("decode"), data);
        }
    }

    #[test]
    fn schemes_follow_the_nodes_and_parse_with_clear_errors() {
        assert_eq!(Scheme::for_nodes(5).to_string(), "3+2");
        assert_eq!(Scheme::for_nodes(10).to_string(), "6+4");
        assert_eq!(Scheme::for_nodes(20).to_string(), "16+4");
        assert_eq!(Scheme::for_nodes(300).to_string(), "16+4");
        assert_eq!(Scheme::for_nodes(1).to_string(), "1+0");
        assert_eq!(Scheme::for_nodes(2).to_string(), "1+1");
        assert!(
            "3-2"
                .parse::<Scheme>()
                .expect_err("not a scheme")
                .contains("K+M")
        );
        assert!("0+2".parse::<Scheme>().is_err());
        let tiny = encode(Scheme { k: 2, m: 1 }, b"").expect("empty segment");
        assert_eq!(
            decode(
                Scheme { k: 2, m: 1 },
                vec![None, Some(tiny[1].clone()), Some(tiny[2].clone())],
                0
            )
            .expect("d"),
            b""
        );
    }
}
