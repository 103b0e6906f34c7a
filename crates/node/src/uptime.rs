//! How long the node's service has been running: the uptime its reports carry.
//!
//! The ledger credits the time between two reports only when both show the same start
//! (`peergrid_ledger::minting`). So the start is this service's, not the machine's
//! boot: a daemon stopped and started again, with the machine up all along, shows as a
//! restart and the time it was stopped is not credited. A machine that slept stops the
//! service too: the monotonic clock stands still during sleep while the boot clock
//! runs on, and when the two part the service counts as started again at wake-up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sleep shorter than this is not told apart from the boot clock's whole-second steps.
const SLEEP_DETECTED_SECS: u64 = 5;

/// The start of the node's service, as its uptime reports show it.
#[derive(Debug)]
pub struct ServiceClock {
    inner: Mutex<Start>,
}

#[derive(Clone, Copy, Debug)]
struct Start {
    /// Monotonic clock at the start (stands still while the machine sleeps).
    at: Instant,
    /// Boot clock at the start, s (runs on while the machine sleeps).
    boot_secs: u64,
}

impl Start {
    /// The uptime `running` after this start, when the boot clock reads `boot_secs`;
    /// `None` if the machine slept in between.
    fn uptime(&self, running: Duration, boot_secs: u64) -> Option<u64> {
        let running = running.as_secs();
        let boot_elapsed = boot_secs.saturating_sub(self.boot_secs);
        (boot_elapsed <= running + SLEEP_DETECTED_SECS).then_some(running)
    }
}

impl ServiceClock {
    /// A service starting now.
    pub fn start() -> Self {
        ServiceClock {
            inner: Mutex::new(Start {
                at: Instant::now(),
                boot_secs: sysinfo::System::uptime(),
            }),
        }
    }

    /// Seconds since the service started, or since the machine last woke from sleep.
    pub fn uptime_secs(&self) -> u64 {
        let mut start = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let boot_secs = sysinfo::System::uptime();
        match start.uptime(start.at.elapsed(), boot_secs) {
            Some(secs) => secs,
            None => {
                tracing::warn!(
                    "the machine slept; the node counts as started again now, as the ledger will see it"
                );
                *start = Start {
                    at: Instant::now(),
                    boot_secs,
                };
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_service_time_and_a_sleep_restarts_it() {
        let start = Start {
            at: Instant::now(),
            boot_secs: 1_000,
        };
        // Both clocks ran 600 s (the boot clock in whole seconds): up 600 s.
        assert_eq!(
            start.uptime(Duration::from_millis(600_900), 1_601),
            Some(600)
        );
        // The boot clock ran 60 s more than the service: the machine slept.
        assert_eq!(start.uptime(Duration::from_secs(600), 1_660), None);
        let clock = ServiceClock::start();
        assert!(
            clock.uptime_secs() < 5,
            "a new service, not the machine's boot"
        );
    }
}
