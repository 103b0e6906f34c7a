//! Erasure coding of one sealed segment into `k` data and `m` parity shards
//! (Reed-Solomon, `reed-solomon-simd`): any `k` of the `k + m` rebuild the segment.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::spare;

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

/// A segment's `k + m` shards, in two buffers: the sealed bytes zero-padded to `k`
/// shards, then the `m` parity shards. Dropped, the buffers go back for the next segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Shards {
    data: Vec<u8>,
    parity: Vec<u8>,
    len: usize,
    k: usize,
}

impl Shards {
    /// Shard `j`: data shards first, then parity.
    pub fn get(&self, j: usize) -> &[u8] {
        let (buf, i) = match j.checked_sub(self.k) {
            None => (&self.data, j),
            Some(i) => (&self.parity, i),
        };
        &buf[i * self.len..(i + 1) * self.len]
    }

    /// How many there are (`k + m`).
    pub fn count(&self) -> usize {
        (self.data.len() + self.parity.len()) / self.len
    }

    /// Each shard in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.data
            .chunks_exact(self.len)
            .chain(self.parity.chunks_exact(self.len))
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        spare::give(std::mem::take(&mut self.data));
        spare::give(std::mem::take(&mut self.parity));
    }
}

thread_local! {
    /// Each coding thread keeps its encoder, whose working space a new one would allocate
    /// (and the kernel zero) for every segment.
    static ENCODER: std::cell::RefCell<Option<reed_solomon_simd::ReedSolomonEncoder>> =
        const { std::cell::RefCell::new(None) };
}

/// Split `data` into `k` data shards (zero-padded) and compute `m` parity shards.
pub fn encode(scheme: Scheme, data: &[u8]) -> Result<Shards, ErasureError> {
    let mut owned = spare::take(usize::from(scheme.k.max(1)) * scheme.shard_len(data.len()));
    owned.extend_from_slice(data);
    encode_owned(scheme, owned)
}

/// [`encode`] `data` where it is: the buffer is padded to `k` shards (reserve the room,
/// `k × shard_len`, and nothing is copied) and becomes the data shards.
pub fn encode_owned(scheme: Scheme, mut data: Vec<u8>) -> Result<Shards, ErasureError> {
    scheme.check().map_err(ErasureError)?;
    let len = scheme.shard_len(data.len());
    let (k, m) = (usize::from(scheme.k), usize::from(scheme.m));
    data.resize(k * len, 0);
    let mut parity = Vec::new();
    if m > 0 {
        parity = spare::take(m * len);
        let failed = |e: reed_solomon_simd::Error| ErasureError(e.to_string());
        ENCODER.with_borrow_mut(|kept| -> Result<(), ErasureError> {
            let encoder = match kept {
                Some(e) => {
                    e.reset(k, m, len).map_err(failed)?;
                    e
                }
                None => kept
                    .insert(reed_solomon_simd::ReedSolomonEncoder::new(k, m, len).map_err(failed)?),
            };
            for shard in data.chunks_exact(len) {
                encoder.add_original_shard(shard).map_err(failed)?;
            }
            for shard in encoder.encode().map_err(failed)?.recovery_iter() {
                parity.extend_from_slice(shard);
            }
            Ok(())
        })?;
    }
    Ok(Shards {
        data,
        parity,
        len,
        k,
    })
}

/// Rebuild `data_len` bytes from any `k` shards (`shards[i]` is shard `i`, or `None`);
/// with every data shard present nothing is decoded, only joined.
pub fn decode(
    scheme: Scheme,
    mut shards: Vec<Option<Vec<u8>>>,
    data_len: usize,
) -> Result<Vec<u8>, ErasureError> {
    let k = usize::from(scheme.k);
    let len = scheme.shard_len(data_len);
    if shards.len() != scheme.n() {
        return Err(ErasureError(format!(
            "{} shard slots for a {scheme} scheme",
            shards.len()
        )));
    }
    let parity = shards.split_off(k);
    let mut data = vec![0u8; k * len];
    let mut present = vec![false; k];
    for (j, shard) in shards.into_iter().enumerate() {
        if let Some(shard) = shard {
            if shard.len() != len {
                return Err(ErasureError(format!(
                    "a shard of {} bytes where {len} were expected",
                    shard.len()
                )));
            }
            data[j * len..(j + 1) * len].copy_from_slice(&shard);
            present[j] = true;
        }
    }
    restore_in_place(scheme, &mut data, &present, &parity)?;
    data.truncate(data_len);
    Ok(data)
}

/// Rebuild inside `data` (a segment's `k` data shards end to end, of one length) those
/// `present` marks missing, from the others and the `parity` shards that are there.
pub fn restore_in_place(
    scheme: Scheme,
    data: &mut [u8],
    present: &[bool],
    parity: &[Option<Vec<u8>>],
) -> Result<(), ErasureError> {
    let (k, m) = (usize::from(scheme.k), usize::from(scheme.m));
    if present.len() != k || parity.len() != m || data.is_empty() || !data.len().is_multiple_of(k) {
        return Err(ErasureError(format!(
            "{} data and {} parity shards in {} bytes for a {scheme} scheme",
            present.len(),
            parity.len(),
            data.len()
        )));
    }
    let len = data.len() / k;
    if let Some(bad) = parity.iter().flatten().find(|s| s.len() != len) {
        return Err(ErasureError(format!(
            "a shard of {} bytes where {len} were expected",
            bad.len()
        )));
    }
    if present.iter().all(|p| *p) {
        return Ok(());
    }
    let have = present.iter().filter(|p| **p).count() + parity.iter().flatten().count();
    if have < k {
        return Err(ErasureError(format!("{have} shards, {k} needed")));
    }
    let originals = data
        .chunks(len)
        .zip(present)
        .enumerate()
        .filter(|(_, (_, p))| **p)
        .map(|(i, (s, _))| (i, s));
    let recovery = parity
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_deref().map(|s| (i, s)));
    let restored = reed_solomon_simd::decode(k, m, originals, recovery)
        .map_err(|e| ErasureError(e.to_string()))?;
    for (i, s) in restored {
        if let Some(place) = data.get_mut(i * len..(i + 1) * len) {
            place.copy_from_slice(&s);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_k_shards_rebuild_the_segment() {
        let scheme: Scheme = "3+2".parse().expect("scheme");
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        let shards = encode(scheme, &data).expect("encode");
        assert_eq!(shards.count(), 5);
        assert!(
            shards
                .iter()
                .all(|s| s.len() == scheme.shard_len(data.len()))
        );
        assert_eq!(&shards.get(0)[..100], &data[..100]);
        let shards: Vec<Vec<u8>> = shards.iter().map(<[u8]>::to_vec).collect();
        for lost_a in 0..5 {
            for lost_b in lost_a + 1..5 {
                let partial: Vec<Option<Vec<u8>>> = shards
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i != lost_a && i != lost_b).then(|| s.clone()))
                    .collect();
                assert_eq!(decode(scheme, partial, data.len()).expect("decode"), data);
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
    fn missing_data_shards_are_rebuilt_in_their_places() {
        // As a get leaves its buffer: the data shards that arrived in their places, the
        // others holding whatever a failed or corrupt fetch left there.
        let scheme: Scheme = "3+2".parse().expect("scheme");
        let data: Vec<u8> = (0..100_003u32).map(|i| (i * 13 % 241) as u8).collect();
        let shards = encode(scheme, &data).expect("encode");
        let len = scheme.shard_len(data.len());
        let whole: Vec<u8> = shards.iter().take(3).flatten().copied().collect();
        let parity: Vec<Vec<u8>> = shards.iter().skip(3).map(<[u8]>::to_vec).collect();
        for lost in [vec![], vec![0], vec![2], vec![0, 1], vec![1, 2]] {
            for parity_there in [[true, true], [true, false], [false, true]] {
                let have = 3 - lost.len() + parity_there.iter().filter(|p| **p).count();
                let mut buf = whole.clone();
                for &j in &lost {
                    buf[j * len..(j + 1) * len].fill(0xa5);
                }
                let present: Vec<bool> = (0..3).map(|j| !lost.contains(&j)).collect();
                let there: Vec<Option<Vec<u8>>> = parity
                    .iter()
                    .zip(parity_there)
                    .map(|(p, t)| t.then(|| p.clone()))
                    .collect();
                let r = restore_in_place(scheme, &mut buf, &present, &there);
                if have < 3 {
                    assert!(r.is_err(), "lost {lost:?}, parity {parity_there:?}");
                } else {
                    r.expect("restore");
                    assert_eq!(buf, whole, "lost {lost:?}, parity {parity_there:?}");
                }
            }
        }
        // A parity shard of the wrong length, or shards that do not fit the scheme, are
        // refused rather than decoded into garbage.
        let mut buf = whole.clone();
        let short = vec![Some(parity[0][1..].to_vec()), None];
        assert!(restore_in_place(scheme, &mut buf, &[false, true, true], &short).is_err());
        assert!(restore_in_place(scheme, &mut buf[1..], &[true; 3], &[None, None]).is_err());
        assert!(restore_in_place(scheme, &mut buf, &[true; 2], &[None, None]).is_err());
    }

    #[test]
    fn a_kept_encoder_codes_as_a_new_one_whatever_came_before() {
        // One thread codes segments of other lengths and schemes in turn, as repair and
        // put do: each time the same parity as a coder made for that segment alone.
        for (scheme, len) in [
            ("3+2", 100_000),
            ("2+1", 64),
            ("3+2", 5_000),
            ("16+4", 1 << 20),
        ] {
            let scheme: Scheme = scheme.parse().expect("scheme");
            let data: Vec<u8> = (0..len).map(|i| (i * 13 % 249) as u8).collect();
            let shards = encode(scheme, &data).expect("encode");
            let shard_len = scheme.shard_len(len);
            let mut padded = data.clone();
            padded.resize(usize::from(scheme.k) * shard_len, 0);
            let fresh = reed_solomon_simd::encode(
                usize::from(scheme.k),
                usize::from(scheme.m),
                padded.chunks_exact(shard_len),
            )
            .expect("reference");
            let ours: Vec<&[u8]> = shards.iter().collect();
            let theirs: Vec<&[u8]> = padded
                .chunks_exact(shard_len)
                .chain(fresh.iter().map(Vec::as_slice))
                .collect();
            assert_eq!(ours, theirs, "{scheme} of {len} bytes");
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
                vec![None, Some(tiny.get(1).to_vec()), Some(tiny.get(2).to_vec())],
                0
            )
            .expect("d"),
            b""
        );
    }
}
