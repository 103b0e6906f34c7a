//! Shares of a server's concurrent streams: so many at once in all, and fewer for any one
//! peer, so that a peer which opens streams and then stalls (never reads, sends a byte a
//! second) holds its own share until its deadlines end it, never every slot.
//!
//! Peer ids cost nothing, so one machine could make up enough peers to hold every slot;
//! slots taken through [`crate::IncomingStreams::slots`] are also shared by the address a
//! peer connects from (an IPv6 address by its /64, which one host usually holds whole).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use libp2p::core::Multiaddr;
use libp2p::core::multiaddr::Protocol;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where a peer's connection comes from, for sharing slots: its IPv4 address or its IPv6
/// /64. Connections through a relay have none (the relay's address is not the peer's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a connection with remote address `remote`; loopback counts only when
    /// asked (a devnet runs every peer on it).
    pub fn of(remote: &Multiaddr, count_loopback: bool) -> Option<Source> {
        if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return None;
        }
        let ip = remote.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            }),
            _ => None,
        })?;
        if ip.is_loopback() && !count_loopback {
            return None;
        }
        Some(Source(match ip {
            // Every host of a link has an address in fe80::/64: those are told apart whole.
            IpAddr::V6(v6) if !v6.is_unicast_link_local() && !v6.is_loopback() => {
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))
            }
            other => other,
        }))
    }
}

/// Finds the source of a peer's connections.
pub type SourceOf = Arc<dyn Fn(&PeerId) -> Option<Source> + Send + Sync>;

/// Why a stream got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The peer already holds its share.
    #[error("{}", self.reason())]
    Peer,
    /// Every slot is taken.
    #[error("{}", self.reason())]
    All,
    /// Peers at the same address already hold its share.
    #[error("{}", self.reason())]
    Source,
}

impl Busy {
    /// What the refused peer is told.
    pub fn reason(self) -> &'static str {
        match self {
            Busy::Peer => "too many of your requests in progress",
            Busy::All => "too many requests in progress",
            Busy::Source => "too many requests in progress from your address",
        }
    }
}

/// The slots of one server: `all` at once, at most `per_peer` of them for one peer and,
/// when sourced, [`Slots::per_source_max`] for one source.
#[derive(Clone)]
pub struct Slots {
    all: Arc<Semaphore>,
    per_peer_max: usize,
    per_source_max: usize,
    source_of: Option<SourceOf>,
    held: Arc<Mutex<Held>>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("available", &self.all.available_permits())
            .field("per_peer_max", &self.per_peer_max)
            .field("per_source_max", &self.per_source_max)
            .finish()
    }
}

/// Slots held, by peer and by source.
#[derive(Debug, Default)]
struct Held {
    peers: HashMap<PeerId, usize>,
    sources: HashMap<Source, usize>,
}

/// Take one from a count, forgetting it at zero so refused or gone keys leave nothing.
fn give_back<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Slots {
    /// Slots for `all` streams at once, `per_peer` of them for one peer.
    pub fn new(all: usize, per_peer: usize) -> Slots {
        Slots {
            all: Arc::new(Semaphore::new(all)),
            per_peer_max: per_peer,
            per_source_max: per_peer.max(all / 4),
            source_of: None,
            held: Arc::default(),
        }
    }

    /// Share the slots by source too, as `source_of` finds a peer's: at most a quarter of
    /// them (and never less than one peer's share) for one source, so that four machines
    /// are needed to take every slot, however many peer ids each makes up.
    pub fn sourced(mut self, source_of: SourceOf) -> Slots {
        self.source_of = Some(source_of);
        self
    }

    /// The most slots the peers of one source hold at once.
    pub fn per_source_max(&self) -> usize {
        self.per_source_max
    }

    /// Where `peer`'s slots are counted, if sourced.
    pub fn source_of(&self, peer: &PeerId) -> Option<Source> {
        self.source_of.as_ref().and_then(|find| find(peer))
    }

    /// A slot for a stream of `peer`, held until dropped. The peer's and its source's
    /// shares are checked first, so a peer over either never takes a slot another peer
    /// could have had.
    pub fn take(&self, peer: PeerId) -> Result<Slot, Busy> {
        let source = self.source_of(&peer);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.peers.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer_max {
            return Err(Busy::Peer);
        }
        if let Some(source) = source
            && held.sources.get(&source).copied().unwrap_or(0) >= self.per_source_max
        {
            return Err(Busy::Source);
        }
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::All)?;
        held.peers.insert(peer, mine + 1);
        if let Some(source) = source {
            *held.sources.entry(source).or_default() += 1;
        }
        Ok(Slot {
            _permit: permit,
            held: self.held.clone(),
            peer,
            source,
        })
    }

    /// Slots `peer` holds now.
    pub fn held_by(&self, peer: &PeerId) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.peers.get(peer).copied().unwrap_or(0)
    }
}

/// One stream's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    held: Arc<Mutex<Held>>,
    peer: PeerId,
    source: Option<Source>,
}

impl Slot {
    /// The source it is counted for, if any.
    pub fn source(&self) -> Option<Source> {
        self.source
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        give_back(&mut held.peers, &self.peer);
        if let Some(source) = &self.source {
            give_back(&mut held.sources, source);
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
        assert_eq!(slots.held.lock().expect("lock").peers.len(), 3);
    }

    fn at(address: &str) -> Option<Source> {
        Source::of(&address.parse().expect("multiaddr"), false)
    }

    #[test]
    fn peers_made_up_at_one_address_share_its_quarter_and_others_still_get_in() {
        let one_machine = at("/ip4/203.0.113.7/tcp/4001");
        let sources: Arc<Mutex<HashMap<PeerId, Option<Source>>>> = Arc::default();
        let find = sources.clone();
        let slots = Slots::new(16, 2).sourced(Arc::new(move |peer: &PeerId| {
            find.lock().expect("lock").get(peer).copied().flatten()
        }));
        assert_eq!(slots.per_source_max(), 4);
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..10 {
            let made_up = PeerId::random();
            sources.lock().expect("lock").insert(made_up, one_machine);
            for _ in 0..2 {
                match slots.take(made_up) {
                    Ok(slot) => held.push(slot),
                    Err(busy) => {
                        assert_eq!(busy, Busy::Source);
                        refused += 1;
                    }
                }
            }
        }
        assert_eq!(
            (held.len(), refused),
            (4, 16),
            "the address's share, no more"
        );
        // A peer elsewhere, and one through a relay, are served.
        let elsewhere = PeerId::random();
        sources
            .lock()
            .expect("lock")
            .insert(elsewhere, at("/ip4/198.51.100.1/udp/4001/quic-v1"));
        let _a = slots.take(elsewhere).expect("another address");
        let _b = slots
            .take(PeerId::random())
            .expect("no source: the peer's share only");
        // Giving one back lets the machine in again, and nothing is left when all are.
        held.pop();
        let again = PeerId::random();
        sources.lock().expect("lock").insert(again, one_machine);
        held.push(slots.take(again).expect("a slot was given back"));
        drop(held);
        assert_eq!(slots.held.lock().expect("lock").sources.len(), 1);
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64_and_never_a_relay_or_loopback() {
        assert_eq!(
            at("/ip6/2001:db8:1:2:aaaa::1/tcp/1"),
            at("/ip6/2001:db8:1:2:bbbb::9/udp/7/quic-v1"),
            "one /64"
        );
        assert_ne!(
            at("/ip6/2001:db8:1:2::1/tcp/1"),
            at("/ip6/2001:db8:1:3::1/tcp/1")
        );
        assert_eq!(
            at("/ip6/::ffff:203.0.113.7/tcp/1"),
            at("/ip4/203.0.113.7/tcp/2")
        );
        assert_ne!(at("/ip4/203.0.113.7/tcp/1"), at("/ip4/203.0.113.8/tcp/1"));
        assert_eq!(
            at(
                "/ip4/203.0.113.7/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            ),
            None
        );
        assert_eq!(at("/ip4/127.0.0.1/tcp/1"), None);
        assert_eq!(at("/ip6/::1/tcp/1"), None);
        assert_ne!(
            at("/ip6/fe80::1/tcp/1"),
            at("/ip6/fe80::2/tcp/1"),
            "every host of a link is in fe80::/64"
        );
        assert!(Source::of(&"/ip4/127.0.0.1/tcp/1".parse().expect("multiaddr"), true).is_some());
        assert_eq!(at("/dns4/example.com/tcp/1"), None);
    }
}
