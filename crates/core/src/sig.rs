//! ed25519 signature checks under the ZIP-215 rules, alone or in batches, with the
//! decompressed keys of recent signers remembered.
//!
//! The rules (ZIP-215): the key `A` and the signature's `R` are any encodings that
//! decompress to curve points (non-canonical ones included), `s` is canonical (below the
//! group order `l`), and `[8][s]B = [8]R + [8][k]A` with `k = SHA-512(R ‖ A ‖ message)`.
//! The batch equation is that cofactored equation summed with random 128-bit weights, so a
//! batch of valid signatures always passes, a batch holding an invalid one fails except
//! with probability 2^-128, and grouping transactions into batches never changes a verdict.
//! On top of ZIP-215 an account key must not be of small order (a weak key).
//!
//! Why not ed25519-zebra's batch verifier, which checks the same equation: it takes keys as
//! bytes and decompresses each one again in every batch. Decompressing a point is a field
//! exponentiation, about a quarter of a batched check, and an account signs many
//! transactions; here its point is decompressed once and remembered. The tests compare every
//! verdict with ed25519-zebra's.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use crate::recent::RecentMap;

/// How many account points are remembered per generation: at most twice this are held
/// (about 13 MiB). Forgetting one only costs decompressing it again.
const KEYS_GENERATION: usize = 1 << 15;

/// Points of keys that passed the account rules, shared by every thread: a batch takes the
/// lock once for all its keys.
static KEYS: LazyLock<Mutex<RecentMap<[u8; 32], EdwardsPoint>>> =
    LazyLock::new(|| Mutex::new(RecentMap::new(KEYS_GENERATION)));

fn keys() -> MutexGuard<'static, RecentMap<[u8; 32], EdwardsPoint>> {
    // Nothing panics while holding the lock, and every entry is complete when inserted.
    KEYS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decompress `key` and apply the account rules: a curve point not of small order.
fn decompress_account(key: &[u8; 32]) -> Option<EdwardsPoint> {
    CompressedEdwardsY(*key)
        .decompress()
        .filter(|point| !point.is_small_order())
}

/// The point of a usable account key, or `None` when `key` is not one. The rules are a pure
/// function of the 32 bytes, so a remembered point is the answer.
pub(crate) fn account_point(key: &[u8; 32]) -> Option<EdwardsPoint> {
    if let Some(point) = keys().get(key) {
        return Some(*point);
    }
    let point = decompress_account(key)?;
    keys().insert(*key, point);
    Some(point)
}

/// One signature ready to check, its challenge `k` computed once, so that a batch that fails
/// can fall back to single checks without hashing again.
#[derive(Clone)]
pub(crate) struct Check {
    key: [u8; 32],
    r: [u8; 32],
    s: [u8; 32],
    k: Scalar,
}

impl Check {
    /// A check of `signature` by `key` over exactly `signed`.
    pub(crate) fn new(key: &[u8; 32], signature: &[u8; 64], signed: &[u8]) -> Check {
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&signature[..32]);
        s.copy_from_slice(&signature[32..]);
        let mut hash = [0u8; 64];
        hash.copy_from_slice(
            &Sha512::new()
                .chain_update(r)
                .chain_update(key)
                .chain_update(signed)
                .finalize(),
        );
        Check {
            key: *key,
            r,
            s,
            k: Scalar::from_bytes_mod_order_wide(&hash),
        }
    }

    /// The single check: `[8](R − ([s]B − [k]A))` is the identity.
    pub(crate) fn verify_alone(&self) -> bool {
        let (Some(a), Some(r), Some(s)) =
            (account_point(&self.key), self.r_point(), self.s_scalar())
        else {
            return false;
        };
        let r_prime = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-a, &s);
        (r - r_prime).mul_by_cofactor().is_identity()
    }

    fn r_point(&self) -> Option<EdwardsPoint> {
        CompressedEdwardsY(self.r).decompress()
    }

    fn s_scalar(&self) -> Option<Scalar> {
        Scalar::from_canonical_bytes(self.s).into_option()
    }
}

/// Whether every check passes, in one multi-scalar multiplication:
/// `[8](−[Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢkᵢ]Aᵢ)` is the identity for random 128-bit `zᵢ`.
/// Signatures by one key share one term for it. `false` says some check fails (or, with
/// probability 2^-128, that none does): check them one at a time to find which.
pub(crate) fn verify_all(checks: &[&Check]) -> bool {
    // Each distinct key's point and summed weight, in first-seen order.
    let mut slot: HashMap<[u8; 32], usize> = HashMap::with_capacity(checks.len());
    let mut points: Vec<Option<EdwardsPoint>> = Vec::with_capacity(checks.len());
    let mut a_weights: Vec<Scalar> = Vec::with_capacity(checks.len());
    let mut r_points = Vec::with_capacity(checks.len());
    let mut r_weights = Vec::with_capacity(checks.len());
    let mut b_weight = Scalar::ZERO;
    {
        let remembered = keys();
        for check in checks {
            slot.entry(check.key).or_insert_with(|| {
                points.push(remembered.get(&check.key).copied());
                a_weights.push(Scalar::ZERO);
                points.len() - 1
            });
        }
    }
    // Keys not remembered are decompressed outside the lock.
    let mut learned = Vec::new();
    for (key, &i) in &slot {
        if points[i].is_none() {
            let Some(point) = decompress_account(key) else {
                return false;
            };
            points[i] = Some(point);
            learned.push((*key, point));
        }
    }
    if !learned.is_empty() {
        let mut remembered = keys();
        for (key, point) in learned {
            remembered.insert(key, point);
        }
    }
    // The multi-scalar multiplication needs exact lengths.
    let a_points: Vec<EdwardsPoint> = points.into_iter().flatten().collect();
    for check in checks {
        let (Some(r), Some(s)) = (check.r_point(), check.s_scalar()) else {
            return false;
        };
        let z = Scalar::from(rand::random::<u128>());
        b_weight -= z * s;
        a_weights[slot[&check.key]] += z * check.k;
        r_points.push(r);
        r_weights.push(z);
    }
    let sum = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(&b_weight)
            .chain(&a_weights)
            .chain(&r_weights),
        std::iter::once(&ED25519_BASEPOINT_POINT)
            .chain(&a_points)
            .chain(&r_points),
    );
    sum.mul_by_cofactor().is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;

    /// ed25519-zebra's verdict (ZIP-215) plus the account rule against weak keys.
    fn reference(key: &[u8; 32], sig: &[u8; 64], signed: &[u8]) -> bool {
        let weak = CompressedEdwardsY(*key)
            .decompress()
            .is_some_and(|p| p.is_small_order());
        !weak
            && ed25519_zebra::VerificationKey::try_from(*key).is_ok_and(|vk| {
                vk.verify(&ed25519_zebra::Signature::from_bytes(sig), signed)
                    .is_ok()
            })
    }

    /// A signature by secret scalar `a` (plus a torsion component `t` on the key and `u` on
    /// `R`), valid under the cofactored equation.
    fn sign(a: u64, t: usize, u: usize, signed: &[u8]) -> ([u8; 32], [u8; 64]) {
        let a_s = Scalar::from(a);
        let r_s = Scalar::from(a.wrapping_mul(31).wrapping_add(7));
        let key = (a_s * ED25519_BASEPOINT_POINT + EIGHT_TORSION[t]).compress();
        let r = (r_s * ED25519_BASEPOINT_POINT + EIGHT_TORSION[u]).compress();
        let mut hash = [0u8; 64];
        hash.copy_from_slice(
            &Sha512::new()
                .chain_update(r.as_bytes())
                .chain_update(key.as_bytes())
                .chain_update(signed)
                .finalize(),
        );
        let s = r_s + Scalar::from_bytes_mod_order_wide(&hash) * a_s;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        (key.to_bytes(), sig)
    }

    /// `s + l`: the same scalar, not canonically encoded.
    fn non_canonical_s(sig: &mut [u8; 64]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (byte, l) in sig[32..].iter_mut().zip(L) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }

    #[test]
    fn every_verdict_matches_ed25519_zebra_alone_and_in_batches() {
        let mut cases = Vec::new();
        for a in 1..40u64 {
            let signed = a.to_le_bytes().repeat(3);
            let (t, u) = ((a % 8) as usize, (a / 8 % 8) as usize);
            let (key, sig) = sign(a, if a % 3 == 0 { t } else { 0 }, u, &signed);
            cases.push((key, sig, signed.clone(), "valid"));
            let mut bad = sig;
            bad[5] ^= 1;
            cases.push((key, bad, signed.clone(), "R altered"));
            let mut bad = sig;
            bad[40] ^= 4;
            cases.push((key, bad, signed.clone(), "s altered"));
            cases.push((
                key,
                sig,
                [signed.as_slice(), b"x"].concat(),
                "message altered",
            ));
            let mut high = sig;
            non_canonical_s(&mut high);
            cases.push((key, high, signed.clone(), "non-canonical s"));
            let (torsion_key, torsion_sig) = sign(0, (a % 8) as usize, 0, &signed);
            cases.push((torsion_key, torsion_sig, signed.clone(), "weak key"));
        }
        // The identity encoded with y = p + 1, a non-canonical encoding ZIP-215 accepts as R.
        let mut y_above_p = [0xffu8; 32];
        y_above_p[0] = 0xee;
        y_above_p[31] = 0x7f;
        let (key, mut sig) = sign(5, 0, 0, b"m");
        sig[..32].copy_from_slice(&y_above_p);
        cases.push((key, sig, b"m".to_vec(), "non-canonical R"));
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        cases.push((not_a_point, sig, b"m".to_vec(), "key not a point"));

        let mut agree_valid = 0;
        for (key, sig, signed, what) in &cases {
            let expected = reference(key, sig, signed);
            let check = Check::new(key, sig, signed);
            assert_eq!(check.verify_alone(), expected, "{what}, alone");
            assert_eq!(verify_all(&[&check]), expected, "{what}, in a batch of one");
            agree_valid += usize::from(expected);
        }
        assert!(
            agree_valid >= 39,
            "the valid ones, mixed-order included, pass"
        );

        let valid: Vec<Check> = cases
            .iter()
            .filter(|(key, sig, signed, _)| reference(key, sig, signed))
            .map(|(key, sig, signed, _)| Check::new(key, sig, signed))
            .collect();
        let mut batch: Vec<&Check> = valid.iter().collect();
        // A key signing twice in one batch shares one term.
        batch.push(&valid[0]);
        assert!(verify_all(&batch), "a batch of valid signatures passes");
        for (key, sig, signed, what) in &cases {
            if !reference(key, sig, signed) {
                let bad = Check::new(key, sig, signed);
                let mut with_bad = batch.clone();
                with_bad.insert(with_bad.len() / 2, &bad);
                assert!(!verify_all(&with_bad), "a batch with one {what} fails");
            }
        }
    }

    #[test]
    fn remembered_points_are_the_decompressed_ones() {
        let (key, sig) = sign(77, 0, 0, b"remember");
        let fresh = CompressedEdwardsY(key).decompress().expect("point");
        assert_eq!(account_point(&key), Some(fresh));
        assert_eq!(account_point(&key), Some(fresh), "from memory");
        assert!(Check::new(&key, &sig, b"remember").verify_alone());
        let (weak, _) = sign(0, 3, 0, b"");
        assert_eq!(account_point(&weak), None);
        assert_eq!(
            account_point(&weak),
            None,
            "a refused key is never remembered as usable"
        );
    }
}
