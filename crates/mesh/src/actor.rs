//! The task that owns the swarm: it serves the handle's commands and the swarm's events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, autonat, gossipsub, identify, kad, mdns, ping, relay};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::config::Config;
use crate::error::Error;
use crate::messages::{Command, GossipMessage, PeerInfo, Status, peer_of};

/// Time allowed for the listeners to report their addresses at start.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages kept for a slow gossip subscriber before it starts missing some.
const GOSSIP_BACKLOG: usize = 256;
/// Most dial waiters or lookups pending at once; beyond it new ones are refused.
const PENDING_MAX: usize = 1024;
/// How often expired bans are lifted.
const BAN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often a peer being looked up is dialed with what the lookup has learnt so far.
const LOOKUP_REDIAL_INTERVAL: Duration = Duration::from_millis(100);
/// How often the bootstrap peers are dialed again while none of them is connected: a
/// peer started before its bootstrap peer (or cut off from it) would otherwise stay
/// alone until Kademlia's next periodic bootstrap, minutes later.
const BOOTSTRAP_REDIAL_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Default)]
struct PeerState {
    connections: HashMap<libp2p::swarm::ConnectionId, Multiaddr>,
    /// The connections this peer dialed (the others came in, from an ephemeral port).
    dialed: HashSet<libp2p::swarm::ConnectionId>,
    rtt: Option<Duration>,
    agent: Option<String>,
    hole_punch: Option<String>,
}

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    config: Config,
    rx: mpsc::Receiver<Command>,
    peers: HashMap<PeerId, PeerState>,
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), Error>>>>,
    /// Lookups started to find a peer to dial (true) or for a caller of `find_peer` (false).
    lookups: HashMap<kad::QueryId, (PeerId, Lookup)>,
    bans: HashMap<PeerId, Instant>,
    gossip: HashMap<gossipsub::TopicHash, broadcast::Sender<GossipMessage>>,
    nat: String,
    reservations: HashSet<PeerId>,
    bootstrap_peers: HashSet<PeerId>,
    /// Their addresses, dialed again while none of them is connected.
    bootstrap_addrs: Vec<Multiaddr>,
    /// Callers of `close` waiting for the last connection to close.
    closing: Vec<oneshot::Sender<()>>,
}

enum Lookup {
    Dial,
    Find(oneshot::Sender<Result<Vec<Multiaddr>, Error>>),
}

impl Actor {
    /// Listen on every configured address and wait until each listener has reported.
    pub(crate) async fn start(
        mut swarm: Swarm<Behaviour>,
        config: Config,
        rx: mpsc::Receiver<Command>,
    ) -> Result<Self, Error> {
        let mut listeners = HashSet::new();
        for addr in &config.listen {
            crate::tcp::refuse_taken_port(addr).await?;
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| Error::BadAddress {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.insert(id);
        }
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !listeners.is_empty() {
            let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
                .await
                .map_err(|_| Error::Timeout {
                    what: "listening",
                    after_ms: LISTEN_TIMEOUT.as_millis(),
                })?;
            match event {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    tracing::info!(%address, "listening");
                    listeners.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    addresses, reason, ..
                } => {
                    return Err(Error::BadAddress {
                        addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                        reason: format!("listener closed: {reason:?}"),
                    });
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(Error::Build(format!("listener failed: {error}")));
                }
                _ => {}
            }
        }
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        if config.relay_server && config.external.is_empty() {
            // A relay must tell its clients where it is reachable, and a reservation
            // without addresses is refused by the client. A relay is by definition
            // publicly reachable, so its listen addresses are what it advertises.
            let listening: Vec<Multiaddr> = swarm.listeners().cloned().collect();
            for addr in listening {
                swarm.add_external_address(addr);
            }
        }
        let mut actor = Self {
            swarm,
            config,
            rx,
            peers: HashMap::new(),
            dial_waiters: HashMap::new(),
            lookups: HashMap::new(),
            bans: HashMap::new(),
            gossip: HashMap::new(),
            nat: "unknown".to_string(),
            reservations: HashSet::new(),
            bootstrap_peers: HashSet::new(),
            bootstrap_addrs: Vec::new(),
            closing: Vec::new(),
        };
        actor.join()?;
        Ok(actor)
    }

    /// Dial the bootstrap peers and reserve a slot on each relay.
    fn join(&mut self) -> Result<(), Error> {
        for addr in self.config.bootstrap.clone() {
            let peer = peer_of(&addr).ok_or_else(|| Error::BadAddress {
                addr: addr.clone(),
                reason: "a bootstrap address must end with /p2p/<peer id>".to_string(),
            })?;
            self.bootstrap_peers.insert(peer);
            self.bootstrap_addrs.push(addr.clone());
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        for addr in self.config.relays.clone() {
            let peer = peer_of(&addr).ok_or_else(|| Error::BadAddress {
                addr: addr.clone(),
                reason: "a relay address must end with /p2p/<relay id>".to_string(),
            })?;
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
            let circuit = addr.clone().with(Protocol::P2pCircuit);
            self.swarm
                .listen_on(circuit)
                .map_err(|e| Error::BadAddress {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }

    pub(crate) async fn run(mut self) {
        let mut sweep = tokio::time::interval(BAN_SWEEP_INTERVAL);
        let mut redial = tokio::time::interval(LOOKUP_REDIAL_INTERVAL);
        redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rejoin = tokio::time::interval(BOOTSTRAP_REDIAL_INTERVAL);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = sweep.tick() => self.lift_expired_bans(),
                _ = redial.tick(), if !self.lookups.is_empty() => self.dial_found_so_far(),
                _ = rejoin.tick(), if !self.bootstrap_addrs.is_empty() => self.rejoin(),
            }
        }
        tracing::debug!("mesh stopped: every handle was dropped");
    }

    /// Dial the bootstrap peers again when none of them is connected.
    fn rejoin(&mut self) {
        if self
            .bootstrap_peers
            .iter()
            .any(|p| self.swarm.is_connected(p))
        {
            return;
        }
        for addr in self.bootstrap_addrs.clone() {
            let Some(peer) = peer_of(&addr) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%addr, error = %e, "cannot dial bootstrap peer again");
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Connect { peer, addrs, reply } => self.connect(peer, addrs, reply),
            Command::FindPeer { peer, reply } => {
                if self.lookups.len() >= PENDING_MAX {
                    let _ = reply.send(Err(Error::PeerNotFound(peer)));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.lookups.insert(id, (peer, Lookup::Find(reply)));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_infos());
            }
            Command::Ban { peer, reason } => self.ban(peer, &reason),
            Command::Close { reply } => {
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                if peers.is_empty() {
                    let _ = reply.send(());
                    return;
                }
                for peer in peers {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                self.closing.push(reply);
            }
            Command::Subscribe { topic, reply } => {
                let hash = gossipsub::IdentTopic::new(&topic).hash();
                let result = match self.gossip.get(&hash) {
                    Some(sender) => Ok(sender.subscribe()),
                    None => self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .subscribe(&gossipsub::IdentTopic::new(&topic))
                        .map(|_| {
                            let (sender, receiver) = broadcast::channel(GOSSIP_BACKLOG);
                            self.gossip.insert(hash, sender);
                            receiver
                        })
                        .map_err(|e| Error::Gossip(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Publish { topic, data, reply } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(gossipsub::IdentTopic::new(topic), data)
                    .map(|_| ())
                    .map_err(|e| Error::Gossip(e.to_string()));
                let _ = reply.send(result);
            }
        }
    }

    fn connect(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), Error>>,
    ) {
        if self.bans.contains_key(&peer) {
            let _ = reply.send(Err(Error::Banned(peer)));
            return;
        }
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        let waiting: usize = self.dial_waiters.values().map(Vec::len).sum();
        if waiting >= PENDING_MAX {
            let _ = reply.send(Err(Error::Dial {
                peer,
                reason: "too many dials pending".to_string(),
            }));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(DialError::NoAddresses) => {
                // Nothing known locally: ask the DHT, and dial what it finds.
                tracing::debug!(%peer, "no known address, looking the peer up");
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.lookups.insert(id, (peer, Lookup::Dial));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial {
                    peer,
                    reason: e.to_string(),
                }));
                return;
            }
        }
        let waiters = self.dial_waiters.entry(peer).or_default();
        waiters.retain(|w| !w.is_closed());
        waiters.push(reply);
    }

    fn fail_dial(&mut self, peer: PeerId, error: impl Fn() -> Error) {
        for waiter in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let _ = waiter.send(Err(error()));
        }
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        tracing::warn!(%peer, reason, ban_s = self.config.ban_duration.as_secs(), "banning peer");
        self.bans
            .insert(peer, Instant::now() + self.config.ban_duration);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.fail_dial(peer, || Error::Banned(peer));
    }

    /// Dial each peer looked up to be dialed as soon as any peer asked has named it.
    ///
    /// Kademlia reports a lookup only when it ends, which waits on every peer it asked:
    /// with a few peers frozen that is longer than a caller's connect timeout, while the
    /// first answer (the bootstrap peer's) usually carries the target's address. The
    /// swarm's dial asks Kademlia for addresses, which include those of running queries.
    fn dial_found_so_far(&mut self) {
        let dialing: Vec<(kad::QueryId, PeerId)> = self
            .lookups
            .iter()
            .filter(|(_, (peer, lookup))| {
                matches!(lookup, Lookup::Dial) && !self.swarm.is_connected(peer)
            })
            .map(|(id, (peer, _))| (*id, *peer))
            .collect();
        for (id, peer) in dialing {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Err(DialError::NoAddresses) => continue,
                Ok(()) => tracing::debug!(%peer, "dialing a peer found by a running lookup"),
                Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "dial failed");
                    let reason = dial_reason(&e);
                    self.fail_dial(peer, || Error::Dial {
                        peer,
                        reason: reason.clone(),
                    });
                }
            }
            self.lookups.remove(&id);
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
        }
    }

    fn lift_expired_bans(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.bans.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            tracing::info!(%peer, "ban lifted");
        }
    }

    fn status(&mut self) -> Status {
        let routing_table_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum();
        Status {
            peer_id: self.swarm.local_peer_id().to_string(),
            listen: self.swarm.listeners().map(ToString::to_string).collect(),
            external: self
                .swarm
                .external_addresses()
                .map(ToString::to_string)
                .collect(),
            connected_peers: self.swarm.connected_peers().count(),
            routing_table_peers,
            nat: self.nat.clone(),
            relay_reservations: self.reservations.iter().map(ToString::to_string).collect(),
            relay_server: self.config.relay_server,
            banned_peers: self.bans.len(),
        }
    }

    fn peer_infos(&self) -> Vec<PeerInfo> {
        let mut infos: Vec<PeerInfo> = self
            .peers
            .iter()
            .filter(|(_, s)| !s.connections.is_empty())
            .map(|(peer, s)| PeerInfo {
                peer_id: peer.to_string(),
                connections: s.connections.values().map(ToString::to_string).collect(),
                dialed: s
                    .connections
                    .iter()
                    .filter(|(id, _)| s.dialed.contains(id))
                    .map(|(_, a)| a.to_string())
                    .collect(),
                relayed: s.connections.values().all(is_relayed),
                rtt_ms: s.rtt.map(|d| d.as_secs_f64() * 1000.0),
                agent: s.agent.clone(),
                hole_punch: s.hole_punch.clone(),
            })
            .collect();
        infos.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        infos
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let remote = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %remote, "connected");
                let state = self.peers.entry(peer_id).or_default();
                state.connections.insert(connection_id, remote);
                if endpoint.is_dialer() {
                    state.dialed.insert(connection_id);
                }
                for waiter in self.dial_waiters.remove(&peer_id).unwrap_or_default() {
                    let _ = waiter.send(Ok(()));
                }
                if self.bootstrap_peers.contains(&peer_id) {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?cause, "connection closed");
                if !self.closing.is_empty() && self.swarm.connected_peers().next().is_none() {
                    for reply in self.closing.drain(..) {
                        let _ = reply.send(());
                    }
                }
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.remove(&connection_id);
                    state.dialed.remove(&connection_id);
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    tracing::debug!(%peer, %error, "dial failed");
                    let reason = dial_reason(&error);
                    self.fail_dial(peer, || Error::Dial {
                        peer,
                        reason: reason.clone(),
                    });
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(%send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != crate::behaviour::IDENTIFY_PROTOCOL_VERSION {
                    tracing::debug!(peer = %peer_id, version = %info.protocol_version, "peer of another network");
                }
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in info.listen_addrs.iter().filter(|a| !is_relayed(a)) {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                self.peers.entry(peer_id).or_default().agent = Some(info.agent_version);
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            }) => match result {
                Ok(rtt) => {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.rtt = Some(rtt);
                    }
                }
                Err(error) => {
                    // libp2p no longer closes a connection whose pings fail; a dead
                    // link would otherwise hold a useless connection until the OS
                    // gives up, and `connect` would keep answering "connected".
                    tracing::info!(%peer, %error, "ping failed, closing the connection");
                    self.swarm.close_connection(connection);
                }
            },
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            }) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                self.on_lookup(id, peers, step.last);
            }
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                tracing::info!(status = ?new, "NAT status changed");
                self.nat = match new {
                    autonat::NatStatus::Public(_) => "public",
                    autonat::NatStatus::Private => "private",
                    autonat::NatStatus::Unknown => "unknown",
                }
                .to_string();
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                self.reservations.insert(relay_peer_id);
            }
            BehaviourEvent::RelayClient(event) => tracing::debug!(?event, "relay client"),
            BehaviourEvent::Relay(event) => tracing::debug!(?event, "relay server"),
            BehaviourEvent::Dcutr(libp2p::dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                let outcome = match &result {
                    Ok(_) => "direct connection established".to_string(),
                    Err(e) => format!("failed: {e}"),
                };
                tracing::info!(peer = %remote_peer_id, %outcome, "hole punch");
                self.peers.entry(remote_peer_id).or_default().hole_punch = Some(outcome);
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                if let Some(sender) = self.gossip.get(&message.topic) {
                    let _ = sender.send(GossipMessage {
                        source: message.source,
                        topic: message.topic.to_string(),
                        data: message.data,
                    });
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                }
            }
            _ => {}
        }
    }

    fn on_lookup(&mut self, id: kad::QueryId, found: Vec<kad::PeerInfo>, last: bool) {
        let Some((target, _)) = self.lookups.get(&id) else {
            return;
        };
        let target = *target;
        let addrs: Vec<Multiaddr> = found
            .into_iter()
            .filter(|p| p.peer_id == target)
            .flat_map(|p| p.addrs)
            .collect();
        if addrs.is_empty() && !last {
            return;
        }
        let Some((_, lookup)) = self.lookups.remove(&id) else {
            return;
        };
        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            query.finish();
        }
        match lookup {
            Lookup::Find(reply) => {
                let _ = reply.send(if addrs.is_empty() {
                    Err(Error::PeerNotFound(target))
                } else {
                    Ok(addrs)
                });
            }
            Lookup::Dial if addrs.is_empty() => {
                self.fail_dial(target, || Error::PeerNotFound(target));
            }
            Lookup::Dial => {
                let opts = DialOpts::peer_id(target).addresses(addrs).build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(peer = %target, error = %e, "dial failed");
                    let reason = dial_reason(&e);
                    self.fail_dial(target, || Error::Dial {
                        peer: target,
                        reason: reason.clone(),
                    });
                }
            }
        }
    }
}

/// True for an address through a relay (`…/p2p-circuit/…`).
fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// What a failed dial says to a person: for each address tried, the cause in a few words
/// (libp2p nests it several errors deep, behind "Failed to negotiate transport
/// protocol(s)"), the same causes said once.
fn dial_reason(error: &DialError) -> String {
    let DialError::Transport(tries) = error else {
        return error.to_string();
    };
    let mut causes: Vec<(String, Vec<String>)> = Vec::new();
    for (addr, e) in tries {
        let cause = transport_cause(e);
        match causes.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, addrs)) => addrs.push(addr.to_string()),
            None => causes.push((cause, vec![addr.to_string()])),
        }
    }
    if causes.is_empty() {
        return error.to_string();
    }
    let said: Vec<String> = causes
        .into_iter()
        .map(|(cause, addrs)| format!("{cause} at {}", addrs.join(", ")))
        .collect();
    let refused_everywhere = said.len() == 1 && said[0].starts_with("connection refused");
    let mut text = said.join("; ");
    if refused_everywhere {
        text.push_str(" (nothing listens there: the peer may be down or restarting)");
    }
    text
}

/// The innermost cause of one address's failure, in a few words when it is a common one.
fn transport_cause(error: &(dyn std::error::Error + 'static)) -> String {
    use std::io::ErrorKind;
    let mut level = Some(error);
    let mut innermost = error.to_string();
    let mut all = String::new();
    while let Some(e) = level {
        let io = e.downcast_ref::<std::io::Error>();
        if let Some(io) = io {
            match io.kind() {
                ErrorKind::ConnectionRefused => return "connection refused".into(),
                ErrorKind::TimedOut => return "timed out".into(),
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                    return "no route to it".into();
                }
                ErrorKind::ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        let text = e.to_string();
        all.push_str(&text.to_lowercase());
        all.push('\n');
        if !text.trim().is_empty() {
            innermost = text;
        }
        // An io::Error wrapping another error hands out that error's source, not the
        // error itself: step into what it wraps.
        level = match io.and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    // A layer that keeps its cause in its text only.
    let text = all;
    if text.contains("connection refused") {
        return "connection refused".into();
    }
    if text.contains("timed out") {
        return "timed out".into();
    }
    innermost
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::TransportError;

    #[test]
    fn a_failed_dial_says_why_in_a_few_words() {
        let refused = |port: u16| {
            (
                format!("/ip4/127.0.0.1/tcp/{port}")
                    .parse::<Multiaddr>()
                    .expect("address"),
                TransportError::Other(std::io::Error::other(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
            )
        };
        let said = dial_reason(&DialError::Transport(vec![refused(4001), refused(4002)]));
        assert_eq!(
            said,
            "connection refused at /ip4/127.0.0.1/tcp/4001, /ip4/127.0.0.1/tcp/4002 (nothing \
             listens there: the peer may be down or restarting)"
        );
        let odd = (
            "/ip4/10.0.0.1/tcp/1".parse::<Multiaddr>().expect("address"),
            TransportError::Other(std::io::Error::other("handshake failed: bad key")),
        );
        // A cause kept only in a layer's text.
        let worded = (
            "/ip4/10.0.0.2/tcp/1".parse::<Multiaddr>().expect("address"),
            TransportError::Other(std::io::Error::other(
                "dial: Connection refused (os error 111)",
            )),
        );
        assert!(
            dial_reason(&DialError::Transport(vec![worded])).starts_with("connection refused at"),
        );
        let said = dial_reason(&DialError::Transport(vec![odd, refused(4001)]));
        assert!(
            said.starts_with(
                "handshake failed: bad key at /ip4/10.0.0.1/tcp/1; connection refused at"
            ),
            "{said}"
        );
        assert_eq!(
            dial_reason(&DialError::NoAddresses),
            DialError::NoAddresses.to_string()
        );
    }
}
