//! What every epoch's engine shares with the validator that starts it: the signature
//! namespace and consensus timing.

use std::time::Duration;

/// Namespace of every consensus signature.
pub const NAMESPACE: &[u8] = b"_PEERGRID_CHAIN";

/// Timing of consensus, tuned for validators a few milliseconds apart.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How long to wait for a leader's proposal before voting to skip it.
    pub leader_timeout: Duration,
    /// How long to wait for a notarized block to certify.
    pub certification_timeout: Duration,
    /// How often to rebroadcast when stuck.
    pub timeout_retry: Duration,
    /// How long a silent leader is tolerated before its views are skipped outright.
    pub skip_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(2),
            skip_timeout: Duration::from_secs(3),
        }
    }
}

impl Timing {
    /// This timing on a chain whose leaders rest up to `idle` before an empty proposal: every
    /// deadline counted from a view's start moves that much later, so a resting leader is
    /// not skipped (simplex wants leader < certification < skip).
    pub fn resting(self, idle: Duration) -> Timing {
        Timing {
            leader_timeout: self.leader_timeout + idle,
            certification_timeout: self.certification_timeout + idle,
            skip_timeout: self.skip_timeout + idle,
            ..self
        }
    }
}
