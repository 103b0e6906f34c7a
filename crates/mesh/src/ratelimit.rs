//! Per-peer token buckets: each peer may burst, then is held to a steady rate.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Most peers tracked at once; beyond it, peers whose bucket has refilled are
/// forgotten (they would be treated the same as new peers anyway).
const TRACKED_PEERS_MAX: usize = 4096;

/// A rate of `per_second` requests with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct PeerRateLimiter {
    rate: Rate,
    buckets: HashMap<PeerId, Bucket>,
}

impl PeerRateLimiter {
    /// A limiter applying `rate` to each peer separately.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Take one token for `peer` at `now`; false when the peer is over its rate.
    pub fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        let burst = f64::from(self.rate.burst.max(1));
        if self.buckets.len() >= TRACKED_PEERS_MAX && !self.buckets.contains_key(&peer) {
            let rate = self.rate.per_second;
            self.buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= TRACKED_PEERS_MAX {
                // Every tracked peer is busy: refusing a newcomer bounds memory, and
                // honest newcomers retry.
                return false;
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate.per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_peer_bursts_then_is_held_to_its_rate_and_others_are_unaffected() {
        let mut limiter = PeerRateLimiter::new(Rate {
            per_second: 10.0,
            burst: 5,
        });
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        assert_eq!((0..10).filter(|_| limiter.allow(a, t0)).count(), 5);
        assert!(limiter.allow(b, t0), "another peer has its own bucket");
        assert!(!limiter.allow(a, t0 + Duration::from_millis(50)));
        assert!(limiter.allow(a, t0 + Duration::from_millis(150)));
    }
}
