//! A deterministic grid of validators on a simulated network.
#![allow(dead_code)]

pub mod equivocator;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use commonware_codec::DecodeExt;
use commonware_cryptography::Signer;
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_p2p::TrackedPeers;
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_p2p::utils::mux::Muxer;
use commonware_runtime::{Clock, Quota, Supervisor, deterministic};
use commonware_utils::ordered::Set;
use commonware_utils::{NZU32, NZUsize};
use peergrid_chain::app::Tamper;
use peergrid_chain::engine::{self, Channels, Config, Timing};
use peergrid_chain::epochs::{Member, PeerSets};
use peergrid_chain::mempool::MempoolLimits;
use peergrid_chain::shared::{Receipts, Shared};
use peergrid_core::tx::Payload;
use peergrid_core::{AccountId, Amount, Keypair, SignedTx};
use peergrid_ledger::genesis::{GenesisBalance, GenesisValidator};
use peergrid_ledger::{Council, Genesis, Ledger, MemoryStore, Params, RedbStore, Store};

pub const CHAIN: &str = "sim";
pub const START_SECS: u64 = 1_700_000_000;

pub fn runner(seed: u64, timeout: Duration) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_start_time(UNIX_EPOCH + Duration::from_secs(START_SECS))
            .with_timeout(Some(timeout)),
    )
}

pub fn validator_key(i: usize) -> Keypair {
    Keypair::from_seed([100 + i as u8; 32])
}

pub fn consensus_key(key: &Keypair) -> PrivateKey {
    PrivateKey::decode(bytes::Bytes::copy_from_slice(key.secret_seed().as_slice()))
        .expect("32-byte seed")
}

pub fn user(i: u8) -> Keypair {
    Keypair::from_seed([i; 32])
}

pub fn genesis(validators: usize) -> Genesis {
    Genesis {
        ledger_rules: peergrid_ledger::genesis::LEDGER_RULES,
        mesh_bootstrap: Vec::new(),
        chain_id: CHAIN.into(),
        genesis_time_ms: START_SECS * 1000 - 1000,
        foundation: user(200).account(),
        staking_pool: user(201).account(),
        params: Params::devnet(),
        council: Council {
            members: vec![user(1).account()],
            threshold: 1,
        },
        validators: (0..validators)
            .map(|i| GenesisValidator {
                account: validator_key(i).account(),
                address: None,
                api: None,
            })
            .collect(),
        balances: (1..=4)
            .map(|n| GenesisBalance {
                account: user(n).account(),
                amount: Amount::tokens(1_000_000),
            })
            .collect(),
    }
}

pub const LINK: Link = Link {
    latency: Duration::from_millis(10),
    jitter: Duration::from_millis(3),
    success_rate: commonware_utils::probability!(1.0),
};

pub async fn network(
    context: &deterministic::Context,
    peers: &[PublicKey],
) -> Oracle<PublicKey, deterministic::Context> {
    network_split(context, peers, &[]).await
}

/// A network whose first peer set has `primary` validators and `secondary` followers.
pub async fn network_split(
    context: &deterministic::Context,
    primary: &[PublicKey],
    secondary: &[PublicKey],
) -> Oracle<PublicKey, deterministic::Context> {
    let (network, oracle) = Network::new_with_split_peers(
        context.child("network"),
        simulated::Config {
            max_size: engine::MESSAGE_BYTES_MAX,
            max_peers_per_set: NZUsize!(primary.len() + secondary.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        primary.to_vec(),
        secondary.to_vec(),
    )
    .await;
    network.start();
    oracle
}

/// The simulated network's peer sets, tracked from each epoch's validators as the ledger
/// names them. The network is one for all validators: the first to track an epoch sets it.
pub struct SimPeers(pub simulated::Manager<PublicKey, deterministic::Context>);

impl PeerSets for SimPeers {
    fn track(&mut self, epoch: u64, primary: &[Member], secondary: &[Member]) {
        use commonware_p2p::Manager as _;
        let keys = |ms: &[Member]| Set::from_iter_dedup(ms.iter().map(|m| m.key.clone()));
        let _ = self
            .0
            .track(epoch, TrackedPeers::new(keys(primary), keys(secondary)));
    }
}

/// Every ordered pair of distinct peers.
fn pairs(peers: &[PublicKey]) -> impl Iterator<Item = (&PublicKey, &PublicKey)> {
    peers
        .iter()
        .flat_map(move |a| peers.iter().filter(move |b| *b != a).map(move |b| (a, b)))
}

pub async fn link_all(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    peers: &[PublicKey],
    link: Link,
) {
    for (a, b) in pairs(peers) {
        let _ = oracle.add_link(a.clone(), b.clone(), link.clone()).await;
    }
}

/// Replace every link between `peers` with `link` (a change of conditions mid-run).
pub async fn relink_all(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    peers: &[PublicKey],
    link: Link,
) {
    for (a, b) in pairs(peers) {
        let _ = oracle.remove_link(a.clone(), b.clone()).await;
    }
    link_all(oracle, peers, link).await;
}

pub async fn cut(oracle: &Oracle<PublicKey, deterministic::Context>, a: &PublicKey, b: &PublicKey) {
    let _ = oracle.remove_link(a.clone(), b.clone()).await;
    let _ = oracle.remove_link(b.clone(), a.clone()).await;
}

/// Where a validator keeps its ledger: in memory, or a redb file that survives simulated restarts.
pub fn ledger_store(dir: Option<&Path>, i: usize) -> Box<dyn Store + Send + Sync> {
    match dir {
        Some(d) => Box::new(RedbStore::open(&d.join(format!("ledger-{i}.redb"))).expect("redb")),
        None => Box::new(MemoryStore::default()),
    }
}

/// Start validator `i`; its ledger lives in `dir` if given. Which epochs it votes in, if
/// any, its ledger says.
pub async fn start_validator(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    genesis: &Genesis,
    i: usize,
    dir: Option<&Path>,
) -> Arc<Shared> {
    start_validator_with(context, oracle, genesis, i, dir, None).await
}

/// Start validator `i` whose own proposals `tamper` changes: a Byzantine leader.
pub async fn start_validator_with(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    genesis: &Genesis,
    i: usize,
    dir: Option<&Path>,
    tamper: Option<Tamper>,
) -> Arc<Shared> {
    let extras = Extras {
        tamper,
        ..Extras::default()
    };
    start_validator_full(context, oracle, genesis, i, dir, extras).await
}

/// Blocks per section of the finalized archives in simulations: small, so pruning shows.
pub const SIM_ARCHIVE_SECTION: u64 = 16;

/// What a validator runs with besides the defaults of [`start_validator`].
#[derive(Default)]
pub struct Extras {
    /// Its own proposals changed: a Byzantine leader.
    pub tamper: Option<Tamper>,
    /// Finalized blocks kept (`None`: all of them).
    pub keep_blocks: Option<u64>,
    /// Where it writes state snapshots (`None`: it writes none).
    pub snapshots: Option<std::path::PathBuf>,
    /// The finalization its consensus starts from: a validator started from a snapshot.
    pub floor: Option<Floor>,
}

/// A finalization marshal may start from.
pub type Floor = commonware_consensus::simplex::types::Finalization<
    commonware_consensus::simplex::scheme::ed25519::Scheme,
    commonware_cryptography::sha256::Digest,
>;

/// Start validator `i` keeping `keep_blocks` finalized blocks (`None`: all of them).
pub async fn start_validator_keeping(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    genesis: &Genesis,
    i: usize,
    dir: Option<&Path>,
    keep_blocks: Option<u64>,
) -> Arc<Shared> {
    let extras = Extras {
        keep_blocks,
        ..Extras::default()
    };
    start_validator_full(context, oracle, genesis, i, dir, extras).await
}

/// Start validator `i` with `extras`.
pub async fn start_validator_full(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    genesis: &Genesis,
    i: usize,
    dir: Option<&Path>,
    extras: Extras,
) -> Arc<Shared> {
    let signer = consensus_key(&validator_key(i));
    let me = signer.public_key();
    let ledger = Ledger::open(ledger_store(dir, i), genesis).expect("ledger opens");
    let shared = Shared::new(
        genesis.clone(),
        ledger,
        Receipts::memory(),
        MempoolLimits::default(),
    );
    if let Some(snapshots) = extras.snapshots {
        shared
            .snapshots
            .enable(snapshots)
            .expect("a snapshots folder");
    }
    let control = oracle.control(me.clone());
    let quota = Quota::per_second(NZU32!(10_000));
    let mut ch = Vec::new();
    for c in 0..6u64 {
        ch.push(control.register(c, quota).await.expect("register"));
    }
    let mut ch = ch.into_iter();
    let channels = Channels::take(&mut ch).expect("five channels");
    let states = ch.next().expect("the state channel");
    engine::start(
        context.child("validator").with_attribute("index", i),
        Config {
            signer,
            partition: format!("validator-{i}"),
            shared: shared.clone(),
            blocker: oracle.control(me),
            peers: oracle.manager(),
            peer_sets: SimPeers(oracle.manager()),
            txs_per_block: 1000,
            timing: Timing::default(),
            tamper: extras.tamper,
            keep_blocks: extras.keep_blocks,
            archive_section: std::num::NonZeroU64::new(SIM_ARCHIVE_SECTION)
                .expect("a section holds blocks"),
            floor: extras.floor,
        },
        channels,
        states,
    )
    .await
    .expect("a validator's archives open");
    shared
}

/// Start validator `i` as an [`equivocator`]: it votes for two proposals in every view.
pub async fn start_equivocator(
    context: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    participants: &[PublicKey],
    i: usize,
) {
    use commonware_consensus::simplex::scheme::ed25519::Scheme;
    let signer = consensus_key(&validator_key(i));
    let control = oracle.control(signer.public_key());
    let quota = Quota::per_second(NZU32!(10_000));
    let votes = control
        .register(engine::CHANNEL_VOTES, quota)
        .await
        .expect("register");
    let certificates = control
        .register(engine::CHANNEL_CERTIFICATES, quota)
        .await
        .expect("register");
    // Consensus messages carry their epoch as a subchannel; the equivocator lives in epoch 0.
    let (mux, mut votes) = Muxer::new(context.child("equivocator_votes"), votes.0, votes.1);
    mux.start();
    let votes = votes.register(0).await.expect("subchannel");
    let (mux, mut certificates) = Muxer::new(
        context.child("equivocator_certificates"),
        certificates.0,
        certificates.1,
    );
    mux.start();
    let certificates = certificates.register(0).await.expect("subchannel");
    let set = commonware_utils::ordered::Set::from_iter_dedup(participants.iter().cloned());
    let scheme = Scheme::signer(engine::NAMESPACE, set, signer).expect("a member");
    equivocator::start(context.child("equivocator"), scheme, votes, certificates);
}

/// The height every validator in `shared` has reached.
pub fn min_height(shared: &[&Arc<Shared>]) -> u64 {
    shared
        .iter()
        .map(|s| s.with_state(|st| st.height()).unwrap_or(0))
        .min()
        .unwrap_or(0)
}

pub fn participants(n: usize) -> Vec<PublicKey> {
    (0..n)
        .map(|i| consensus_key(&validator_key(i)).public_key())
        .collect()
}

/// Wait (in simulated time) until every validator in `shared` has applied `height`.
pub async fn wait_for_height(
    context: &deterministic::Context,
    shared: &[&Arc<Shared>],
    height: u64,
) {
    loop {
        if shared
            .iter()
            .all(|s| s.with_state(|st| st.height()).unwrap_or(0) >= height)
        {
            return;
        }
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// The state root every validator recorded at `height`; panics if they disagree.
pub fn agreed_root(shared: &[&Arc<Shared>], height: u64) -> peergrid_core::Hash {
    let roots: BTreeMap<_, Vec<usize>> =
        shared
            .iter()
            .enumerate()
            .fold(BTreeMap::new(), |mut m, (i, s)| {
                let root = s.receipts.block(height).map(|b| b.root);
                m.entry(root).or_default().push(i);
                m
            });
    assert_eq!(
        roots.len(),
        1,
        "validators disagree at height {height}: {roots:?}"
    );
    roots
        .into_keys()
        .next()
        .flatten()
        .expect("a root at that height")
}

/// A transfer from user `from` with its `nonce`.
pub fn transfer(from: u8, to: &AccountId, nonce: u64, amount: u64) -> SignedTx {
    SignedTx::new(
        &user(from),
        CHAIN,
        nonce,
        Payload::Transfer {
            to: *to,
            amount: Amount(amount),
        },
    )
}

/// Give every validator the transaction, as gossip would.
pub fn submit_all(shared: &[&Arc<Shared>], tx: &SignedTx) {
    for s in shared {
        let _ = s.submit(tx.clone());
    }
}
