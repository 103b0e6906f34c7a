//! A tenant's share of the node's runtime: the memory and the instances all the runs of
//! one contract may hold at once.
//!
//! The runtime's instance pool and its memory are the node's, shared by every tenant.
//! Without a share, one app's burst of slow requests could take every instance of the
//! pool and make every other app on the node answer 503, and a contract that reserved
//! 64 MiB could hold a gigabyte across its concurrent requests. A [`Share`] bounds both:
//! the memory its runs have actually grown to, together, stays within what the contract
//! reserved, and at most [`Share::instances_max`] of its runs hold an instance, the
//! others waiting for one within their wall time, at most [`WAITING_PER_INSTANCE`] for
//! each instance: beyond that a run is refused at once instead of holding a connection of
//! the node's for its whole wall time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The memory and instances one contract's runs may hold together; cheap to share.
#[derive(Debug)]
pub struct Share {
    memory_bytes_max: AtomicU64,
    memory_in_use: AtomicU64,
    instances: Arc<Semaphore>,
    instances_max: u32,
    /// Runs waiting for an instance now.
    waiting: AtomicU32,
}

/// Runs that may wait for each of a share's instances.
pub const WAITING_PER_INSTANCE: u32 = 4;

impl Share {
    /// A share of `memory_bytes` in all and `instances` runs at once (at least one each).
    pub fn new(memory_bytes: u64, instances: u32) -> Arc<Share> {
        let instances = instances.max(1);
        Arc::new(Share {
            memory_bytes_max: AtomicU64::new(memory_bytes),
            memory_in_use: AtomicU64::new(0),
            instances: Arc::new(Semaphore::new(instances as usize)),
            instances_max: instances,
            waiting: AtomicU32::new(0),
        })
    }

    /// Changes the memory all runs may hold (a contract's reservation was updated); runs
    /// already above it keep what they have and cannot grow.
    pub fn set_memory_bytes_max(&self, bytes: u64) {
        self.memory_bytes_max.store(bytes, Ordering::Relaxed);
    }

    /// The memory all runs may hold together.
    pub fn memory_bytes_max(&self) -> u64 {
        self.memory_bytes_max.load(Ordering::Relaxed)
    }

    /// The memory the runs in progress have grown to, together.
    pub fn memory_in_use(&self) -> u64 {
        self.memory_in_use.load(Ordering::Relaxed)
    }

    /// How many runs may hold an instance at once.
    pub fn instances_max(&self) -> u32 {
        self.instances_max
    }

    /// Runs holding an instance now.
    pub fn instances_in_use(&self) -> u32 {
        let free = u32::try_from(self.instances.available_permits()).unwrap_or(u32::MAX);
        self.instances_max.saturating_sub(free)
    }

    /// Waits for one of the share's instances, held until the run's store is gone; `None`
    /// at once when as many runs wait already as [`WAITING_PER_INSTANCE`] allows.
    pub(crate) async fn instance(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.instances.clone().try_acquire_owned() {
            return Some(permit);
        }
        /// Counts a waiting run out however its wait ends (a timeout drops it).
        struct Waiting<'a>(&'a AtomicU32);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if before >= self.instances_max.saturating_mul(WAITING_PER_INSTANCE) {
            return None;
        }
        // The semaphore is never closed, so acquiring only ends with a permit.
        loop {
            if let Ok(permit) = self.instances.clone().acquire_owned().await {
                return Some(permit);
            }
        }
    }

    /// Takes `bytes` more for a run, or refuses if the share would go over its memory.
    pub(crate) fn grow(&self, bytes: u64) -> bool {
        let max = self.memory_bytes_max();
        self.memory_in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&wanted| wanted <= max)
            })
            .is_ok()
    }

    /// Gives back what a finished run held.
    pub(crate) fn release(&self, bytes: u64) {
        // Saturating: never below zero even if a run's count were off.
        let _ = self
            .memory_in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_shared_up_to_the_reservation_and_given_back() {
        let share = Share::new(100, 2);
        assert!(share.grow(60));
        assert!(!share.grow(50), "60 + 50 is over 100");
        assert!(share.grow(40));
        assert_eq!(share.memory_in_use(), 100);
        share.release(60);
        assert!(share.grow(50));
        share.set_memory_bytes_max(80);
        assert!(
            !share.grow(1),
            "90 in use, now above the lowered reservation"
        );
        share.release(1_000);
        assert_eq!(share.memory_in_use(), 0);
    }

    #[tokio::test]
    async fn instances_are_counted_while_held() {
        let share = Share::new(1 << 20, 2);
        let a = share.instance().await;
        let _b = share.instance().await;
        assert_eq!(share.instances_in_use(), 2);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), share.instance());
        assert!(third.await.is_err(), "a third waits while two are held");
        drop(a);
        let _c = share.instance().await;
        assert_eq!(share.instances_in_use(), 2);
    }

    #[tokio::test]
    async fn only_so_many_runs_wait_and_the_next_is_refused_at_once() {
        let share = Share::new(1 << 20, 1);
        let held = share.instance().await.expect("the free instance");
        let waiters: Vec<_> = (0..WAITING_PER_INSTANCE)
            .map(|_| {
                let share = share.clone();
                tokio::spawn(async move { share.instance().await.is_some() })
            })
            .collect();
        while share.waiting.load(Ordering::Relaxed) < WAITING_PER_INSTANCE {
            tokio::task::yield_now().await;
        }
        assert!(share.instance().await.is_none(), "one more than may wait");
        drop(held);
        for w in waiters {
            assert!(
                w.await.expect("join"),
                "each waiting run gets the instance in turn"
            );
        }
        // A wait cut short (its wall time) counts out.
        let held = share.instance().await.expect("free again");
        let cut = tokio::time::timeout(std::time::Duration::from_millis(10), share.instance());
        assert!(cut.await.is_err());
        assert_eq!(share.waiting.load(Ordering::Relaxed), 0);
        drop(held);
    }
}
