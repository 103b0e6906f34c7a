//! Shares of a server's concurrent streams: so many at once in all, and fewer for any one
//! peer, so that a peer which opens streams and then stalls (never reads, sends a byte a
//! second) holds its own share until its deadlines end it, never every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a stream got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The peer already holds its share.
    #[error("{}", self.reason())]
    Peer,
    /// Every slot is taken.
    #[error("{}", self.reason())]
    All,
}

impl Busy {
    /// What the refused peer is told.
    pub fn reason(self) -> &'static str {
        match self {
            Busy::Peer => "too many of your requests in progress",
            Busy::All => "too many requests in progress",
        }
    }
}

/// The slots of one server: `all` at once, at most `per_peer` of them for one peer.
#[derive(Clone, Debug)]
pub struct Slots {
    all: Arc<Semaphore>,
    per_peer_max: usize,
    held: Arc<Mutex<HashMap<PeerId, usize>>>,
}

impl Slots {
    /// Slots for `all` streams at once, `per_peer` of them for one peer.
    pub fn new(all: usize, per_peer: usize) -> Slots {
        Slots {
            all: Arc::new(Semaphore::new(all)),
            per_peer_max: per_peer,
            held: Arc::default(),
        }
    }

    /// A slot for a stream of `peer`, held until dropped. The peer's share is checked
    /// first, so a peer over its share never takes a slot another peer could have had.
    pub fn take(&self, peer: PeerId) -> Result<Slot, Busy> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer_max {
            return Err(Busy::Peer);
        }
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::All)?;
        held.insert(peer, mine + 1);
        Ok(Slot {
            _permit: permit,
            held: self.held.clone(),
            peer,
        })
    }

    /// Slots `peer` holds now.
    pub fn held_by(&self, peer: &PeerId) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(peer).copied().unwrap_or(0)
    }
}

/// One stream's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    held: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_and_no_more_and_the_rest_stay_for_others() {
        let slots = Slots::new(5, 2);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let a1 = slots.take(a).expect("first");
        let _a2 = slots.take(a).expect("second");
        assert_eq!(slots.take(a).err(), Some(Busy::Peer));
        let _b: Vec<_> = (0..2).map(|_| slots.take(b).expect("b")).collect();
        let _c1 = slots.take(c).expect("c");
        // Five of five taken: c's second is refused for the total, not for its share.
        assert_eq!(slots.take(c).err(), Some(Busy::All));
        assert_eq!(slots.held_by(&c), 1);
        drop(a1);
        assert_eq!(slots.held_by(&a), 1);
        let _c2 = slots.take(c).expect("a slot was given back");
        assert_eq!(slots.take(PeerId::random()).err(), Some(Busy::All));
        // A refused peer leaves no entry behind.
        assert_eq!(slots.held.lock().expect("lock").len(), 3);
    }
}
