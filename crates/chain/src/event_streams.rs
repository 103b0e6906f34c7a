//! A bound on the API's open event streams, in all and per client address, so that a
//! client opening thousands of them is refused with a retry hint instead of holding a
//! validator's memory and tasks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Event streams one validator serves at once by default.
pub const EVENT_STREAMS_MAX: usize = 4096;
/// Event streams one client address may hold at once by default: a node follows one, a
/// CLI one per command, a machine behind NAT a few dozen.
pub const EVENT_STREAMS_PER_ADDRESS_MAX: usize = 64;

/// The open event streams.
#[derive(Clone)]
pub struct EventStreams {
    inner: Arc<Inner>,
}

struct Inner {
    total_max: usize,
    per_address_max: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The validator serves its maximum.
    Full {
        /// That maximum.
        max: usize,
    },
    /// This address holds its maximum.
    AddressFull {
        /// That maximum.
        max: usize,
    },
}

impl Default for EventStreams {
    fn default() -> Self {
        Self::new(EVENT_STREAMS_MAX, EVENT_STREAMS_PER_ADDRESS_MAX)
    }
}

impl EventStreams {
    /// At most `total_max` streams, `per_address_max` of them from one address.
    pub fn new(total_max: usize, per_address_max: usize) -> Self {
        EventStreams {
            inner: Arc::new(Inner {
                total_max,
                per_address_max,
                open: Mutex::new(Open::default()),
            }),
        }
    }

    /// A slot for one stream from `address` (unknown when the server was not given the
    /// peer's address), held until the slot is dropped.
    pub fn open(&self, address: Option<IpAddr>) -> Result<Slot, Refused> {
        let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.inner.total_max {
            return Err(Refused::Full {
                max: self.inner.total_max,
            });
        }
        if let Some(ip) = address {
            let held = open.by_address.entry(ip).or_default();
            if *held >= self.inner.per_address_max {
                return Err(Refused::AddressFull {
                    max: self.inner.per_address_max,
                });
            }
            *held += 1;
        }
        open.total += 1;
        Ok(Slot {
            streams: self.clone(),
            address,
        })
    }

    /// Streams open now.
    pub fn open_count(&self) -> usize {
        self.inner
            .open
            .lock()
            .map(|o| o.total)
            .unwrap_or_else(|e| e.into_inner().total)
    }
}

/// One open stream's place; dropping it frees the place.
pub struct Slot {
    streams: EventStreams,
    address: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .inner
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.address
            && let Some(held) = open.by_address.get_mut(&ip)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_address.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_address_and_come_back_when_dropped() {
        let streams = EventStreams::new(3, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = streams.open(Some(a)).expect("first");
        let _second = streams.open(Some(a)).expect("second");
        assert_eq!(
            streams.open(Some(a)).err(),
            Some(Refused::AddressFull { max: 2 })
        );
        let _third = streams.open(Some(b)).expect("another address");
        assert_eq!(streams.open(Some(b)).err(), Some(Refused::Full { max: 3 }));
        drop(first);
        assert_eq!(streams.open_count(), 2);
        let _again = streams.open(Some(a)).expect("a dropped slot is free again");
        assert_eq!(streams.open_count(), 3);
    }
}
