//! Talk to the ledger through any validator's HTTP API: submit, wait for finality, read, follow.
//!
//! # Status: ALPHA
//!
//! A [`Client`] knows several validators and moves to the next one when one does not
//! answer, so a crashed validator costs a retry, not an error. It holds no consensus
//! code: nodes, gateways and the CLI stay light.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use peergrid_core::{AccountId, Hash, Keypair, Payload, SignedTx, TxHash};
use peergrid_types::api::{BatchSubmitted, Submitted, TxAnswer, routes};
use peergrid_types::proof::tables;

mod light;

pub use light::{Anchor, Certified};
/// The wire contract this client speaks, whole.
pub use peergrid_types as types;
/// The API's answers.
pub use peergrid_types::api::{
    AccountView, Bills, EconomyView, NodeView, Receipts, Status, SupplyCheck, Vote,
};
/// The ledger's records and events as the API serves them, so followers (nodes, the CLI)
/// read them without depending on the state machine's crate.
pub use peergrid_types::records::{
    Account, Bill, BillStatus, Contract, ContractState, DeleteReason, Farm, Node, NodeStatus,
    Proposal, ProposalStatus, PrunedBills, RewardReceipt, ValidatorSet,
};
pub use peergrid_types::{AtHeight, Event, FinalizedBlock, Page, TxError, TxOutcome, TxStatus};

/// Longest wait for a validator to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`Client::choose`] reads of a validator's status besides its height.
#[derive(serde::Deserialize)]
struct Chain {
    genesis_hash: Hash,
}

/// The most of a status answer [`Client::choose`] reads (one is a few kilobytes).
const STATUS_BYTES_MAX: usize = 256 << 10;

/// Most bytes read of any answer: a block at its limit of transaction bytes (4 MiB),
/// written out as JSON with its events, fits several times over. Past it the validator is
/// not one to trust, and memory is not given to it.
const ANSWER_BYTES_MAX: usize = 64 << 20;
/// How long an idle connection to a validator is kept for the next request.
const POOL_IDLE: Duration = Duration::from_secs(10);
/// How long the first choice of a validator waits for any to answer.
const CHOOSE_WITHIN: Duration = Duration::from_secs(3);
/// After the first validator answered, how long the others get (at least).
const CHOOSE_AFTER_FIRST: Duration = Duration::from_millis(250);
/// How long a choice holds: a long-lived client (a node's) asks again after this, since
/// the validator it chose may have fallen behind since (frozen, then catching up).
const CHOOSE_AGAIN_AFTER: Duration = Duration::from_secs(60);
/// [`Client::choose_again`] within this of the last choice keeps it: what asks for it may
/// come from outside (a request naming a contract that does not exist), and every choice
/// asks every validator.
const CHOOSE_AGAIN_MIN: Duration = Duration::from_secs(5);
/// How long a signed transaction stays valid by default.
pub const TX_LIFETIME: Duration = Duration::from_secs(300);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No validator answered.
    #[error(
        "no validator answered at {tried}: {last} (is the ledger running? check --ledger or `peergrid devnet status`)"
    )]
    Unreachable {
        /// The URLs tried.
        tried: String,
        /// The last failure.
        last: String,
    },
    /// The validator refused the request, with its reason.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine-readable kind (`rejected`, `not_found`, …).
        kind: String,
        /// What was wrong and what to do.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// Where.
        url: String,
        /// What.
        reason: String,
    },
    /// A proven answer that does not hold: its root is not certified, or its certificate
    /// is not signed by the validators the client follows.
    #[error("the answer is not proven: {reason}")]
    Unproven {
        /// What failed.
        reason: String,
    },
    /// The transaction was not finalized in time.
    #[error(
        "transaction {hash} not finalized after {waited:?}; it may still be: check with `peergrid tx status {hash}`"
    )]
    Timeout {
        /// The transaction.
        hash: TxHash,
        /// How long we waited.
        waited: Duration,
    },
}

/// Which contracts to list.
#[derive(Clone, Copy, Debug, Default)]
pub struct ContractFilter {
    /// Only this owner's.
    pub owner: Option<AccountId>,
    /// Only those on this node.
    pub node: Option<u32>,
}

/// A state entry checked against the state root of the finalized block it was read at.
#[derive(Clone, Debug)]
pub struct Proven<T> {
    /// The block's height.
    pub height: u64,
    /// Its state root.
    pub root: Hash,
    /// The entry, or `None` when it is proven absent.
    pub value: Option<T>,
    /// Who certified the root: how many of which epoch's validators.
    pub certified: Certified,
}

/// The state of [`Client::choose`].
#[derive(Clone, Copy, Debug, Default)]
struct Choice {
    /// When the validator to start from was last chosen.
    at: Option<Instant>,
    /// When the choice under way began, if one is.
    asking_since: Option<Instant>,
}

/// A choice under way for longer is taken to be abandoned (its future dropped or left
/// unpolled), and the next request chooses.
const CHOOSE_ABANDONED_AFTER: Duration = Duration::from_secs(4);

/// A client of the ledger API.
pub struct Client {
    urls: Vec<String>,
    http: reqwest::Client,
    /// For the event stream: no overall deadline, but one per read.
    streaming: reqwest::Client,
    current: AtomicUsize,
    /// Mesh bootstrap peers given by the user, tried before the genesis's.
    bootstrap: Vec<String>,
    /// The validator sets the light client verified.
    trust: Mutex<light::Trust>,
    /// Held while the anchor is asked of the validators, so that proven reads started
    /// together ask once, not each.
    anchoring: tokio::sync::Mutex<()>,
    /// When the validator to start from was last chosen, and whether a choice is under
    /// way (see [`Client::choose`]).
    chosen: Mutex<Choice>,
    /// Validators whose answer failed its proof, and when: not chosen for
    /// [`DISTRUST_FOR`], so that one faulty validator cannot stop every proven read.
    distrusted: Mutex<HashMap<usize, Instant>>,
}

/// How long a validator whose answer failed its proof is passed over.
const DISTRUST_FOR: Duration = Duration::from_secs(300);

impl Client {
    /// A client of the validators at `urls` (like `http://127.0.0.1:8700`), tried in turn.
    pub fn new(urls: Vec<String>) -> Client {
        let urls = urls
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        let (http, streaming) = http_clients(Vec::new()).unwrap_or_else(|e| {
            // Only TLS set-up can fail, and without roots it has nothing to load; should it
            // fail anyway, plain HTTP must still work.
            warn!("cannot set up TLS for https:// validators: {}", causes(&e));
            let plain = || {
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .pool_idle_timeout(POOL_IDLE)
            };
            (
                plain()
                    .timeout(Duration::from_secs(10))
                    .tls_certs_only(Vec::new())
                    .build()
                    .unwrap_or_else(|_| reqwest::Client::new()),
                plain()
                    .read_timeout(EVENTS_SILENCE_MAX)
                    .tls_certs_only(Vec::new())
                    .build()
                    .unwrap_or_else(|_| reqwest::Client::new()),
            )
        });
        Client {
            urls,
            http,
            streaming,
            current: AtomicUsize::new(0),
            bootstrap: Vec::new(),
            trust: Mutex::default(),
            anchoring: tokio::sync::Mutex::new(()),
            chosen: Mutex::default(),
            distrusted: Mutex::default(),
        }
    }

    /// The same client, with mesh bootstrap peers (multiaddr text ending in `/p2p/<id>`)
    /// that [`Client::mesh_bootstrap`] gives before the genesis's.
    pub fn with_mesh_bootstrap(mut self, peers: Vec<String>) -> Client {
        self.bootstrap = peers;
        self
    }

    /// The same client, also trusting the certificate authorities in `pem` (PEM text, one or
    /// more certificates) for `https://` validators, besides the system's.
    pub fn with_root_certificates(mut self, pem: &[u8]) -> Result<Client, ClientError> {
        let refused = |reason: String| ClientError::Refused {
            status: 0,
            kind: "certificate".into(),
            message: reason,
        };
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
            refused(format!(
                "the certificate authorities given are not PEM certificates: {e}"
            ))
        })?;
        if certs.is_empty() {
            return Err(refused(
                "no certificate in the PEM given (expected -----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        (self.http, self.streaming) = http_clients(certs)
            .map_err(|e| refused(format!("cannot use the certificate authorities given: {e}")))?;
        Ok(self)
    }

    /// The validator URLs.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Before the first request, choose the validator to start from: all are asked at
    /// once how far their ledger is, and the one furthest along among those answering
    /// soon is taken (the first listed of equals). A frozen validator still takes TCP
    /// connections and would hold every request for its whole timeout, and one catching
    /// up after a pause answers with a ledger tens of seconds old: neither is chosen.
    /// The choice is made again a minute later, at the next request.
    async fn choose(&self) {
        if self.urls.len() < 2 {
            return;
        }
        // No lock is held while the validators are asked: the future asking may be left
        // unpolled (a stream's, behind a timeout) and must not hold up every request.
        loop {
            let choice = *self.chosen.lock().unwrap_or_else(|e| e.into_inner());
            if choice
                .at
                .is_some_and(|at| at.elapsed() < CHOOSE_AGAIN_AFTER)
            {
                return;
            }
            match choice.asking_since {
                // Another request is choosing: one that follows an earlier choice goes on
                // with it; a first one waits for the choice, a while at most.
                Some(since) if since.elapsed() < CHOOSE_ABANDONED_AFTER => {
                    if choice.at.is_some() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => break,
            }
        }
        let asked = Instant::now();
        self.chosen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .asking_since = Some(asked);
        // None answering is not a choice: the next request asks again.
        let choice = async {
            let started = Instant::now();
            let mut asks: futures::stream::FuturesUnordered<_> = (self.urls.iter())
                .enumerate()
                .map(|(index, url)| async move {
                    let height = async {
                        let mut r = (self.http.get(format!("{url}{}", routes::STATUS)))
                            .send()
                            .await
                            .ok()?;
                        if !r.status().is_success() {
                            return None;
                        }
                        // Read within a bound: what answers at that URL may not be a
                        // validator, and may never stop sending.
                        let mut body = Vec::new();
                        while let Some(chunk) = r.chunk().await.ok()? {
                            body.extend_from_slice(&chunk);
                            if body.len() > STATUS_BYTES_MAX {
                                return None;
                            }
                        }
                        let read: AtHeight<Chain> = serde_json::from_slice(&body).ok()?;
                        Some((read.height, read.data.genesis_hash))
                    }
                    .await;
                    (index, height)
                })
                .collect();
            let mut answers: Vec<(usize, u64, Hash)> = Vec::new();
            let mut until = started + CHOOSE_WITHIN;
            while let Ok(Some((index, answer))) =
                tokio::time::timeout_at(until.into(), asks.next()).await
            {
                let Some((height, genesis)) = answer else {
                    continue;
                };
                if answers.is_empty() {
                    // The others get as long again as the first took, or a moment.
                    until = Instant::now() + CHOOSE_AFTER_FIRST.max(started.elapsed());
                }
                answers.push((index, height, genesis));
            }
            // One whose answer failed its proof lately is passed over, unless it is all
            // there is.
            let distrusted = self.distrusted_now();
            if answers.iter().any(|(i, _, _)| !distrusted.contains(i)) {
                answers.retain(|(i, _, _)| !distrusted.contains(i));
            }
            // A URL of another chain (a mistake in --ledger) must not win by its height:
            // the genesis most of those answering share (the first listed's, if tied).
            answers.sort_by_key(|(index, _, _)| *index);
            let count = |g: &Hash| answers.iter().filter(|(_, _, h)| h == g).count();
            let genesis = (answers.iter())
                .map(|(_, _, g)| (count(g), *g))
                .reduce(|a, b| if b.0 > a.0 { b } else { a })
                .map(|(_, g)| g)
                .ok_or(())?;
            let (index, height) = (answers.iter())
                .filter(|(_, _, g)| *g == genesis)
                .map(|(i, h, _)| (*i, *h))
                .reduce(|a, b| if b.1 > a.1 { b } else { a })
                .ok_or(())?;
            debug!(url = %self.urls[index], height, "validator chosen: the furthest along of those answering");
            self.current.store(index, Ordering::Relaxed);
            Ok::<(), ()>(())
        };
        let chose = choice.await.is_ok();
        let mut chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        // A later request took over an abandoned choice: its own end is what counts.
        if chosen.asking_since == Some(asked) {
            chosen.asking_since = None;
        }
        if chose {
            chosen.at = Some(Instant::now());
        }
    }

    /// Chooses the validator furthest along again now, as the first request does: for an
    /// answer that may come from a validator behind the caller's knowledge (a contract
    /// the caller was just told of, said not to exist).
    /// A choice made less than [`CHOOSE_AGAIN_MIN`] ago is kept.
    pub async fn choose_again(&self) {
        {
            let mut chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
            if chosen.at.is_some_and(|at| at.elapsed() < CHOOSE_AGAIN_MIN) {
                return;
            }
            chosen.at = None;
        }
        self.choose().await;
    }

    /// Send `build(url)` to one validator after another until one answers.
    async fn call<T: DeserializeOwned>(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.choose().await;
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::from("no validator configured");
        for i in 0..self.urls.len() {
            let index = (start + i) % self.urls.len();
            let url = &self.urls[index];
            let response = match build(&self.http, url).send().await {
                Ok(r) => r,
                Err(e) => {
                    debug!(%url, error = %e, "validator unreachable, trying the next");
                    last = causes(&e);
                    continue;
                }
            };
            let status = response.status();
            // A validator that fails internally may be the only broken one: try another.
            if status.is_server_error() && status.as_u16() != 503 {
                last = format!("{url} answered {status}");
                continue;
            }
            self.current.store(index, Ordering::Relaxed);
            // Not retried elsewhere once an answer has begun: a transaction this validator
            // took must not be sent again through another.
            let body = read_bounded(response, ANSWER_BYTES_MAX)
                .await
                .map_err(|reason| ClientError::Protocol {
                    url: url.clone(),
                    reason,
                })?;
            if !status.is_success() {
                let (kind, message) = api_error(url, status, &body);
                return Err(ClientError::Refused {
                    status: status.as_u16(),
                    kind,
                    message,
                });
            }
            return serde_json::from_slice(&body).map_err(|e| ClientError::Protocol {
                url: url.clone(),
                reason: e.to_string(),
            });
        }
        Err(ClientError::Unreachable {
            tried: self.urls.join(", "),
            last,
        })
    }

    /// GET `path` (like `/v1/farms?limit=10`) as JSON.
    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(|http, url| http.get(format!("{url}{path}")))
            .await
    }

    /// A finalized block with its state root and what each transaction did.
    pub async fn block(&self, height: u64) -> Result<FinalizedBlock, ClientError> {
        self.get(&routes::fill(routes::BLOCK, &[&height])).await
    }

    /// An account (or its absence) proven against a finalized block's state root.
    pub async fn proven_account(&self, id: &AccountId) -> Result<Proven<Account>, ClientError> {
        let key = peergrid_core::codec::encode(id);
        self.proven(&proof_of(routes::ACCOUNT, id), tables::ACCOUNTS, &key)
            .await
    }

    /// A farm (or its absence) proven against a finalized block's state root.
    pub async fn proven_farm(&self, id: u32) -> Result<Proven<Farm>, ClientError> {
        let key = peergrid_core::codec::encode(&id);
        self.proven(&proof_of(routes::FARM, &id), tables::FARMS, &key)
            .await
    }

    /// A node (or its absence) proven against a finalized block's state root.
    pub async fn proven_node(&self, id: u32) -> Result<Proven<Node>, ClientError> {
        let key = peergrid_core::codec::encode(&id);
        self.proven(&proof_of(routes::NODE, &id), tables::NODES, &key)
            .await
    }

    /// A contract (or its absence) proven against a finalized block's state root.
    pub async fn proven_contract(&self, id: u64) -> Result<Proven<Contract>, ClientError> {
        let key = peergrid_core::codec::encode(&id);
        self.proven(&proof_of(routes::CONTRACT, &id), tables::CONTRACTS, &key)
            .await
    }

    /// Read `path` with its proof for `key` of `table`, check the proof against the root
    /// the answer names, and that root against its state certificate: a validator lying
    /// about the entry or the root is caught here, whichever validator answered.
    async fn proven<T: borsh::BorshDeserialize>(
        &self,
        path: &str,
        table: u8,
        key: &[u8],
    ) -> Result<Proven<T>, ClientError> {
        let mut tries = self.urls.len().max(1);
        loop {
            tries -= 1;
            match self.proven_once(path, table, key).await {
                Ok(read) => return Ok(read),
                Err((e, Some(answered))) if tries > 0 => self.distrust(answered, &e),
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Validators passed over now: see [`Client::distrusted`].
    fn distrusted_now(&self) -> Vec<usize> {
        let mut distrusted = self.distrusted.lock().unwrap_or_else(|e| e.into_inner());
        distrusted.retain(|_, at| at.elapsed() < DISTRUST_FOR);
        distrusted.keys().copied().collect()
    }

    /// Pass over the validator at `index`, whose answer failed its proof as `e` says, for
    /// [`DISTRUST_FOR`], and go on with the next one.
    fn distrust(&self, index: usize, e: &ClientError) {
        let n = self.urls.len().max(1);
        let current = index % n;
        warn!(url = %self.urls.get(current).map_or("", String::as_str), error = %e, "a validator's answer failed its proof; asking another, and passing it over for five minutes");
        self.distrusted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(current, Instant::now());
        let distrusted = self.distrusted_now();
        let next = (1..n)
            .map(|i| (current + i) % n)
            .find(|i| !distrusted.contains(i))
            .unwrap_or((current + 1) % n);
        self.current.store(next, Ordering::Relaxed);
        // The next request keeps this choice for a while instead of choosing the furthest
        // along again, which may be the same validator.
        self.chosen.lock().unwrap_or_else(|e| e.into_inner()).at = Some(Instant::now());
    }

    /// One try of [`Client::proven`], from the validator in use; an error names the
    /// validator (its index) when its own answer failed the proof, not the way to it.
    async fn proven_once<T: borsh::BorshDeserialize>(
        &self,
        path: &str,
        table: u8,
        key: &[u8],
    ) -> Result<Proven<T>, (ClientError, Option<usize>)> {
        let answer: AtHeight<serde::de::IgnoredAny> =
            self.get(path).await.map_err(|e| (e, None))?;
        let answered = Some(self.current.load(Ordering::Relaxed));
        let bad = |reason: String| {
            let e = ClientError::Protocol {
                url: path.to_string(),
                reason,
            };
            (e, answered)
        };
        let proof = answer.proof.ok_or_else(|| {
            bad("the answer has no proof (is the validator older than this client?)".into())
        })?;
        let bytes = proof
            .check(table, key, &answer.root)
            .map_err(|e| bad(e.to_string()))?;
        let value = bytes
            .map(|b| peergrid_core::codec::decode::<T>("state entry", &b, 1 << 20))
            .transpose()
            .map_err(|e| bad(format!("the proven entry does not decode: {e}")))?;
        let (root, certified) = self
            .certified_root(answer.height)
            .await
            .map_err(|e| (e, None))?;
        // A proof against a root no quorum signed proves nothing: the answering validator
        // could have made the root up along with the entry.
        if root != answer.root {
            let e = ClientError::Unproven {
                reason: format!(
                    "the answer's proof is against state root {} at height {}, but the \
                     validators certified {root} there: do not trust this answer, and tell the \
                     validators' operators",
                    answer.root, answer.height
                ),
            };
            return Err((e, answered));
        }
        Ok(Proven {
            height: answer.height,
            root,
            value,
            certified,
        })
    }

    /// Every item of a paged list: `path(from)` is fetched from `first` on, following
    /// each page's `next`; returns the items and the highest height they were read at.
    async fn pages<T: DeserializeOwned>(
        &self,
        path: impl Fn(u64) -> String,
        first: u64,
    ) -> Result<(u64, Vec<T>), ClientError> {
        let mut items = Vec::new();
        let mut height = 0;
        let mut from = first;
        loop {
            let page: AtHeight<Page<T>> = self.get(&path(from)).await?;
            height = height.max(page.height);
            items.extend(page.data.items);
            match page.data.next {
                Some(n) => from = forward(&path(from), from, n)?,
                None => return Ok((height, items)),
            }
        }
    }

    /// Chain status: id, height, root, whether it is finalizing, the validators, the params.
    pub async fn status(&self) -> Result<AtHeight<Status>, ClientError> {
        self.get(routes::STATUS).await
    }

    /// An account's balance and next nonce.
    pub async fn account(&self, id: &AccountId) -> Result<AtHeight<AccountView>, ClientError> {
        self.get(&routes::fill(routes::ACCOUNT, &[id])).await
    }

    /// Every farm, with the height they were read at.
    pub async fn farms(&self) -> Result<(u64, Vec<Farm>), ClientError> {
        self.pages(|from| format!("{}?from={from}&limit=500", routes::FARMS), 1)
            .await
    }

    /// One farm by id or name; refused (`not_found`, 404) when there is none.
    pub async fn farm(&self, id_or_name: &str) -> Result<AtHeight<Farm>, ClientError> {
        self.get(&routes::fill(routes::FARM, &[&Segment(id_or_name)]))
            .await
    }

    /// Every node, or a farm's: its record, status and free capacity.
    pub async fn nodes(&self, farm: Option<u32>) -> Result<(u64, Vec<NodeView>), ClientError> {
        let filter = farm.map(|f| format!("&farm={f}")).unwrap_or_default();
        self.pages(
            |from| format!("{}?from={from}&limit=500{filter}", routes::NODES),
            1,
        )
        .await
    }

    /// One node by id; `None` when the ledger has no such node.
    pub async fn node(&self, id: u32) -> Result<Option<AtHeight<NodeView>>, ClientError> {
        found(self.get(&routes::fill(routes::NODE, &[&id])).await)
    }

    /// One node by id or account; refused (`not_found`, 404) when there is none.
    pub async fn node_by(&self, id_or_account: &str) -> Result<AtHeight<NodeView>, ClientError> {
        self.get(&routes::fill(routes::NODE, &[&Segment(id_or_account)]))
            .await
    }

    /// Every contract matching `filter`, with the height they were read at.
    pub async fn contracts(
        &self,
        filter: ContractFilter,
    ) -> Result<(u64, Vec<Contract>), ClientError> {
        let mut query = String::new();
        if let Some(o) = filter.owner {
            query.push_str(&format!("&owner={o}"));
        }
        if let Some(n) = filter.node {
            query.push_str(&format!("&node={n}"));
        }
        self.pages(
            |from| format!("{}?from={from}&limit=500{query}", routes::CONTRACTS),
            1,
        )
        .await
    }

    /// One contract by id; `None` when the ledger has no such contract.
    pub async fn contract(&self, id: u64) -> Result<Option<AtHeight<Contract>>, ClientError> {
        found(self.get(&routes::fill(routes::CONTRACT, &[&id])).await)
    }

    /// A contract's bills from ledger time `from_ms` on, every page, with what the bills
    /// pruned from the state added up to.
    pub async fn bills(&self, contract: u64, from_ms: u64) -> Result<AtHeight<Bills>, ClientError> {
        let route = routes::fill(routes::BILLS, &[&contract]);
        let mut all: AtHeight<Bills> = self
            .get(&format!("{route}?from_ms={from_ms}&limit=500"))
            .await?;
        let mut from = from_ms;
        while let Some(next) = all.data.next.take() {
            from = forward(&route, from, next)?;
            let page: AtHeight<Bills> = self
                .get(&format!("{route}?from_ms={next}&limit=500"))
                .await?;
            all.height = all.height.max(page.height);
            all.root = page.root;
            all.data.items.extend(page.data.items);
            all.data.next = page.data.next;
            all.data.pruned = page.data.pruned;
        }
        Ok(all)
    }

    /// A farm's reward receipts of `period`, every page, in node order.
    pub async fn receipts(
        &self,
        farm: u32,
        period: u64,
    ) -> Result<AtHeight<Receipts>, ClientError> {
        let route = routes::fill(routes::FARM_RECEIPTS, &[&farm]);
        let mut all: AtHeight<Receipts> = self
            .get(&format!("{route}?period={period}&limit=500"))
            .await?;
        let mut from = 0;
        while let Some(next) = all.data.next.take() {
            from = forward(&route, from, next)?;
            let page: AtHeight<Receipts> = self
                .get(&format!("{route}?period={period}&from={next}&limit=500"))
                .await?;
            all.height = all.height.max(page.height);
            all.root = page.root;
            all.data.items.extend(page.data.items);
            all.data.next = page.data.next;
        }
        Ok(all)
    }

    /// A farm's newest `limit` reward receipts, newest first: the first names the latest
    /// period minted.
    pub async fn latest_receipts(
        &self,
        farm: u32,
        limit: usize,
    ) -> Result<AtHeight<Receipts>, ClientError> {
        let route = routes::fill(routes::FARM_RECEIPTS, &[&farm]);
        self.get(&format!("{route}?limit={limit}")).await
    }

    /// One node's reward receipt of one period; refused (`not_found`) when there is none.
    pub async fn node_receipt(
        &self,
        node: u32,
        period: u64,
    ) -> Result<AtHeight<RewardReceipt>, ClientError> {
        self.get(&routes::fill(routes::NODE_RECEIPT, &[&node, &period]))
            .await
    }

    /// Every governance proposal, with the height they were read at.
    pub async fn proposals(&self) -> Result<(u64, Vec<Proposal>), ClientError> {
        self.pages(
            |from| format!("{}?from={from}&limit=500", routes::PROPOSALS),
            1,
        )
        .await
    }

    /// One proposal; refused (`not_found`) when there is none.
    pub async fn proposal(&self, id: u64) -> Result<AtHeight<Proposal>, ClientError> {
        self.get(&routes::fill(routes::PROPOSAL, &[&id])).await
    }

    /// A proposal's votes, with who cast each and the weight it carried.
    pub async fn votes(&self, proposal: u64) -> Result<AtHeight<Vec<Vote>>, ClientError> {
        let page: AtHeight<Page<Vote>> =
            self.get(&routes::fill(routes::VOTES, &[&proposal])).await?;
        Ok(AtHeight {
            height: page.height,
            root: page.root,
            data: page.data.items,
            proof: None,
        })
    }

    /// Minting progress, everything billed, the current period and the supply identity.
    pub async fn economy(&self) -> Result<AtHeight<EconomyView>, ClientError> {
        self.get(routes::ECONOMY).await
    }

    /// The validator set that decides the blocks of `epoch`.
    pub async fn epoch_validators(
        &self,
        epoch: u64,
    ) -> Result<AtHeight<ValidatorSet>, ClientError> {
        self.get(&routes::fill(routes::EPOCH_VALIDATORS, &[&epoch]))
            .await
    }

    /// The mesh bootstrap peers: those given with [`Client::with_mesh_bootstrap`], then
    /// those the genesis names, as multiaddr text.
    pub async fn mesh_bootstrap(&self) -> Result<Vec<String>, ClientError> {
        let status = self.status().await?;
        let mut peers = self.bootstrap.clone();
        for genesis in status.data.mesh_bootstrap {
            if !peers.contains(&genesis) {
                peers.push(genesis);
            }
        }
        Ok(peers)
    }

    /// Submit a signed transaction; returns its hash once a validator accepted it into its mempool.
    pub async fn submit(&self, tx: &SignedTx) -> Result<TxHash, ClientError> {
        let bytes = tx.encode();
        let accepted: Submitted = self
            .call(|http, url| {
                http.post(format!("{url}{}", routes::TX))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone())
            })
            .await?;
        Ok(accepted.hash)
    }

    /// Submit many transactions in one request; returns how many were accepted and the other ones' errors.
    pub async fn submit_batch(
        &self,
        txs: &[SignedTx],
    ) -> Result<(usize, Vec<(usize, String)>), ClientError> {
        let body =
            peergrid_core::codec::encode(&txs.iter().map(SignedTx::encode).collect::<Vec<_>>());
        let answer: BatchSubmitted = self
            .call(|http, url| {
                http.post(format!("{url}{}", routes::TXS))
                    .header("content-type", "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        Ok((
            answer.accepted,
            answer
                .errors
                .into_iter()
                .map(|f| (f.index, f.message))
                .collect(),
        ))
    }

    /// Where a transaction is.
    pub async fn tx_status(&self, hash: &TxHash) -> Result<TxStatus, ClientError> {
        let answer: TxAnswer = self.get(&routes::fill(routes::TX_STATUS, &[hash])).await?;
        Ok(answer.status)
    }

    /// Wait until `hash` is finalized (applied or rejected), up to `timeout`: see
    /// [`Client::wait_all`].
    pub async fn wait(&self, hash: &TxHash, timeout: Duration) -> Result<TxStatus, ClientError> {
        let mut all = self.wait_all(std::slice::from_ref(hash), timeout).await?;
        all.pop().ok_or(ClientError::Timeout {
            hash: *hash,
            waited: Duration::ZERO,
        })
    }

    /// Wait until every one of `hashes` is finalized (applied or rejected), up to `timeout`;
    /// their outcomes, in order. Follows the finalized blocks as the validators send them,
    /// and asks for the ones still pending once a second in case the stream is stuck.
    pub async fn wait_all(
        &self,
        hashes: &[TxHash],
        timeout: Duration,
    ) -> Result<Vec<TxStatus>, ClientError> {
        let start = Instant::now();
        let mut done: Vec<Option<TxStatus>> = vec![None; hashes.len()];
        let timed_out = |done: &[Option<TxStatus>]| {
            let pending = hashes.iter().zip(done).find(|(_, d)| d.is_none());
            ClientError::Timeout {
                hash: pending.map_or(Hash([0; 32]), |(h, _)| *h),
                waited: start.elapsed(),
            }
        };
        // The height before asking: whatever finalizes after the answers is in a later block.
        let head = loop {
            match self.status().await {
                Ok(s) => break s.height,
                Err(ClientError::Unreachable { .. }) if start.elapsed() < timeout => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut poll = tokio::time::interval(WAIT_POLL);
        let mut blocks = self.events(head + 1);
        loop {
            if done.iter().all(Option::is_some) {
                return Ok(done.into_iter().flatten().collect());
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(timed_out(&done));
            }
            tokio::select! {
                block = blocks.next() => {
                    let Some(block) = block else { continue };
                    for outcome in &block.txs {
                        if let Some(i) = hashes.iter().position(|h| *h == outcome.hash) {
                            done[i] = Some(TxStatus::of(block.height, &outcome.result));
                        }
                    }
                }
                _ = poll.tick() => {
                    let pending = done.iter().enumerate().filter(|(_, d)| d.is_none());
                    let ask: Vec<usize> = pending.map(|(i, _)| i).take(WAIT_POLL_MAX).collect();
                    for i in ask {
                        match self.tx_status(&hashes[i]).await {
                            Ok(s @ (TxStatus::Finalized { .. } | TxStatus::Rejected { .. })) => {
                                done[i] = Some(s);
                            }
                            Ok(_) | Err(ClientError::Unreachable { .. }) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                _ = tokio::time::sleep(left) => return Err(timed_out(&done)),
            }
        }
    }

    /// Sign `payload` with `key` at its next nonce, valid for [`TX_LIFETIME`].
    pub async fn sign(&self, key: &Keypair, payload: Payload) -> Result<SignedTx, ClientError> {
        let chain_id = self.status().await?.data.chain_id;
        let nonce = self.account(&key.account()).await?.data.nonce;
        let now_ms = peergrid_core::now_ms();
        Ok(SignedTx::expiring(
            key,
            &chain_id,
            nonce,
            now_ms + TX_LIFETIME.as_millis() as u64,
            payload,
        ))
    }

    /// Sign, submit and wait for finality: the one call most tools need. When another
    /// process signing with the same key holds the nonce (two nodes of one farmer funding
    /// themselves at once), it waits for that transaction and signs again at the next
    /// nonce, until `timeout`.
    pub async fn send(
        &self,
        key: &Keypair,
        payload: Payload,
        timeout: Duration,
    ) -> Result<(TxHash, TxStatus), ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Every transaction this call submitted: a submit that failed may have been taken
        // all the same (its answer lost to a timeout, then another validator saying the
        // nonce is used), and one a validator holds is waited for, never signed again, or
        // its payload would run twice.
        let mut sent: Vec<TxHash> = Vec::new();
        loop {
            let tx = self.sign(key, payload.clone()).await?;
            sent.push(tx.hash());
            let failed = match self.submit(&tx).await {
                Ok(hash) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    return Ok((hash, self.wait(&hash, left).await?));
                }
                Err(e) => e,
            };
            if let Some(hash) = self.held_of(&sent, deadline).await? {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return Ok((hash, self.wait(&hash, left).await?));
            }
            match failed {
                ClientError::Refused { kind, .. }
                    if (kind == "nonce_taken" || kind == "stale_nonce")
                        && tokio::time::Instant::now() + NONCE_RETRY < deadline =>
                {
                    debug!(%kind, "the nonce is taken; signing again after the other transaction");
                    tokio::time::sleep(NONCE_RETRY).await;
                }
                e => return Err(e),
            }
        }
    }

    /// The first of `sent` a validator holds (pending or final), if any. A status that
    /// cannot be read is asked again a few times (before `deadline`), then is an error:
    /// "cannot tell" is not "not ours".
    async fn held_of(
        &self,
        sent: &[TxHash],
        deadline: tokio::time::Instant,
    ) -> Result<Option<TxHash>, ClientError> {
        for hash in sent {
            let mut tries = 0;
            loop {
                tries += 1;
                match self.tx_status(hash).await {
                    Ok(TxStatus::Unknown) => break,
                    Ok(_) => return Ok(Some(*hash)),
                    Err(_) if tries < 3 && tokio::time::Instant::now() + NONCE_RETRY < deadline => {
                        tokio::time::sleep(NONCE_RETRY).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(None)
    }

    /// Sign `payloads` with `key` at consecutive nonces, submit them in one request and
    /// wait for each to be final; the outcome of each, in order.
    pub async fn send_all(
        &self,
        key: &Keypair,
        payloads: Vec<Payload>,
        timeout: Duration,
    ) -> Result<Vec<(TxHash, TxStatus)>, ClientError> {
        let Some(first) = payloads.first().cloned() else {
            return Ok(Vec::new());
        };
        let head = self.sign(key, first).await?;
        let (chain_id, nonce, expires) = (
            head.body.chain_id.clone(),
            head.body.nonce,
            head.body.expires_ms,
        );
        let mut txs = vec![head];
        for (i, p) in payloads.into_iter().enumerate().skip(1) {
            txs.push(SignedTx::expiring(
                key,
                &chain_id,
                nonce + i as u64,
                expires,
                p,
            ));
        }
        let (_, errors) = self.submit_batch(&txs).await?;
        if let Some((index, message)) = errors.into_iter().next() {
            return Err(ClientError::Refused {
                status: 400,
                kind: "rejected".into(),
                message: format!("transaction {} of {}: {message}", index + 1, txs.len()),
            });
        }
        let hashes: Vec<TxHash> = txs.iter().map(SignedTx::hash).collect();
        let outcomes = self.wait_all(&hashes, timeout).await?;
        Ok(hashes.into_iter().zip(outcomes).collect())
    }

    /// Finalized blocks from height `from` on, following new ones as they come, each once
    /// and in order. After a disconnect, a validator silent for [`EVENTS_SILENCE_MAX`] or a
    /// block it cannot read, that skips a height or that repeats old blocks, it resumes where
    /// it was from the next validator, and logs why.
    pub fn events(&self, from: u64) -> impl Stream<Item = FinalizedBlock> + '_ {
        // The stream's state: the height due, the open stream, the height of the last block
        // already yielded that this stream repeated, whether it has sent a block yet, and
        // the troubles in a row (how many of those because a stream started past `next`).
        futures::stream::unfold(
            (from, None::<EventStream>, None::<u64>, true, (0usize, 0usize)),
            move |(mut next, mut events, mut repeated, mut fresh, mut troubles)| async move {
                loop {
                    let Some(stream) = events.as_mut() else {
                        events = Some(self.open_events(next).await);
                        (repeated, fresh) = (None, true);
                        continue;
                    };
                    let trouble = match stream.next().await {
                        Some(Ok(event)) if event.event != "block" => continue,
                        Some(Ok(event)) => match serde_json::from_str::<FinalizedBlock>(&event.data)
                        {
                            Ok(block) if block.height == next => {
                                next += 1;
                                let state = (next, events, repeated, false, (0, 0));
                                return Some((block, state));
                            }
                            // A validator that no longer keeps block `next` starts at the first
                            // it keeps. When every one does, and one of them twice (a single
                            // stream could be garbled), those before are gone for good:
                            // followed from there (the caller sees the jump in the heights).
                            Ok(block)
                                if block.height > next
                                    && fresh
                                    && troubles.1 + 1 >= self.urls.len().max(2) =>
                            {
                                warn!(
                                    from = next,
                                    to = block.height,
                                    "no validator keeps the blocks before this one any more; following from it"
                                );
                                next = block.height + 1;
                                let state = (next, events, repeated, false, (0, 0));
                                return Some((block, state));
                            }
                            Ok(block) if block.height > next && fresh => {
                                troubles.1 += 1;
                                format!(
                                    "it started at block {} while block {next} was due (not kept there?)",
                                    block.height
                                )
                            }
                            // Already yielded: a validator resumed a little early. Only rising
                            // heights, though: one replaying old blocks for ever would keep the
                            // client from ever seeing a new one.
                            Ok(block)
                                if block.height < next
                                    && repeated.is_none_or(|r| block.height > r) =>
                            {
                                (repeated, fresh) = (Some(block.height), false);
                                continue;
                            }
                            Ok(block) if block.height < next => format!(
                                "it sent block {} again after block {}, while block {next} was due",
                                block.height,
                                repeated.unwrap_or_default()
                            ),
                            Ok(block) => format!(
                                "it sent block {} while block {next} was due",
                                block.height
                            ),
                            Err(e) => format!("it sent block {next} in a form not understood: {e}"),
                        },
                        Some(Err(e)) => format!("the stream broke: {e}"),
                        None => "it closed the stream".into(),
                    };
                    let url = &self.urls[self.current.load(Ordering::Relaxed)];
                    warn!(%url, height = next, "following finalized blocks: {trouble}; resuming from the next validator");
                    self.rotate();
                    events = None;
                    troubles.0 += 1;
                    // Every validator in trouble twice in a row: not asked again at once, as
                    // fast as they answer, but after a growing pause (100 ms to 3.2 s).
                    let rounds = troubles.0 / self.urls.len().max(1);
                    if rounds >= 2 {
                        let exp = (rounds - 2).min(5) as u32;
                        tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(exp)).await;
                    }
                }
            },
        )
        .boxed()
    }

    /// Move on to the next validator.
    fn rotate(&self) {
        if !self.urls.is_empty() {
            let next = (self.current.load(Ordering::Relaxed) + 1) % self.urls.len();
            self.current.store(next, Ordering::Relaxed);
        }
    }

    /// The event stream from height `next`, from the first validator that opens it; waits
    /// and tries them all again while none does.
    async fn open_events(&self, next: u64) -> EventStream {
        self.choose().await;
        let mut pause = Duration::from_millis(100);
        loop {
            // A validator that refuses for load says when to come back (Retry-After).
            let mut hint: Option<Duration> = None;
            for _ in 0..self.urls.len() {
                let index = self.current.load(Ordering::Relaxed);
                let url = format!("{}{}?from={next}", self.urls[index], routes::EVENTS);
                let opened =
                    tokio::time::timeout(EVENTS_SILENCE_MAX, self.streaming.get(&url).send()).await;
                match opened {
                    Ok(Ok(r)) if r.status().is_success() => {
                        return bounded(r.bytes_stream()).eventsource().boxed();
                    }
                    Ok(Ok(r)) => {
                        let retry = retry_after(r.headers().get(reqwest::header::RETRY_AFTER));
                        if let Some(retry) = retry {
                            hint = Some(hint.map_or(retry, |h| h.min(retry)));
                        }
                        debug!(%url, status = %r.status(), ?retry, "event stream refused");
                    }
                    Ok(Err(e)) => debug!(%url, error = %e, "event stream unreachable"),
                    Err(_) => debug!(%url, "event stream not opened in time"),
                }
                self.rotate();
            }
            // Never less than the backoff: a validator answering `Retry-After: 0` to every
            // request would otherwise have the client ask again at once, as fast as it answers.
            tokio::time::sleep(hint.map_or(pause, |h| h.max(pause))).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}
/// The next page's start after one that started at `from`: only forward, or a validator
/// answering with a loop would keep the client collecting for good.
fn forward<N: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    from: N,
    next: N,
) -> Result<N, ClientError> {
    if next > from {
        return Ok(next);
    }
    Err(ClientError::Protocol {
        url: what.to_string(),
        reason: format!(
            "the page from {from} names {next} as the next, not a later one: a validator's list goes only forward"
        ),
    })
}

/// The body of `response`, or why not: cut off, or more than `max` bytes.
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("an answer of more than {max} bytes was refused"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| causes(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("an answer of more than {max} bytes was refused"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes, `outer: inner: innermost`: reqwest's own message alone says
/// only "error sending request", when the cause is a refused certificate or a reset.
/// The kind and message of a refusal's body, or what to say when it has none.
fn api_error(url: &str, status: reqwest::StatusCode, body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<peergrid_types::ApiError>(body) {
        Ok(e) => (e.error, e.message),
        Err(_) => ("http".into(), format!("{url} answered {status}")),
    }
}

fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The HTTP clients for calls (each with a deadline) and for the event stream (a deadline per
/// read), trusting `roots` besides the system's certificate authorities. Where the system
/// has none to load (a minimal container), only `roots` are trusted, with a warning: plain
/// `http://` validators must still work there.
fn http_clients(
    roots: Vec<reqwest::Certificate>,
) -> Result<(reqwest::Client, reqwest::Client), reqwest::Error> {
    let with = |roots: Vec<reqwest::Certificate>, only: bool| {
        let tls = |b: reqwest::ClientBuilder| {
            if only {
                b.tls_certs_only(roots.clone())
            } else {
                b.tls_certs_merge(roots.clone())
            }
        };
        // Idle connections are dropped before a validator's 15-s idle close (see
        // `peergrid_core::http`), so no request is sent on one it is closing.
        let calls = tls(reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(POOL_IDLE))
        .build()?;
        let streaming = tls(reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(EVENTS_SILENCE_MAX))
        .build()?;
        Ok((calls, streaming))
    };
    with(roots.clone(), false).or_else(|e: reqwest::Error| {
        warn!(
            "the system's certificate authorities cannot be used ({}): https:// validators \
             are trusted only through --ledger-ca",
            causes(&e)
        );
        with(roots, true)
    })
}

/// How long [`Client::send`] waits before signing again when its nonce was taken.
const NONCE_RETRY: Duration = Duration::from_millis(250);
/// Longest `Retry-After` the event stream honours: a validator cannot park a client longer.
const RETRY_AFTER_MAX_SECS: u64 = 30;
/// The wait a `Retry-After` header asks for, capped at [`RETRY_AFTER_MAX_SECS`]: whole
/// seconds as the API sends them, or an HTTP date as a proxy in front of it may (a date
/// already past is no wait); none when absent or neither.
fn retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let at = httpdate::parse_http_date(text).ok()?;
        let wait = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO);
        return Some(wait.min(Duration::from_secs(RETRY_AFTER_MAX_SECS)));
    }
    // Digits too many for a u64 still mean "long": the cap, not the short backoff.
    let secs = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs.min(RETRY_AFTER_MAX_SECS)))
}

/// How often [`Client::wait_all`] asks for the transactions still pending, besides following
/// the blocks.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Most transactions [`Client::wait_all`] asks about in one round.
const WAIT_POLL_MAX: usize = 64;

/// A path segment from a user (a farm's name, a node's account), percent-encoded so it
/// stays one segment.
struct Segment<'a>(&'a str);

impl std::fmt::Display for Segment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// An entry's route with its proof asked for.
fn proof_of(route: &str, id: &(dyn std::fmt::Display + Sync)) -> String {
    format!("{}?proof=true", routes::fill(route, &[id]))
}

/// A 404 as `None`: the ledger has no such entry.
fn found<T>(answer: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Longest silence on the event stream before the validator counts as stalled: the API sends
/// a keep-alive every 2 s, so this is three missed in a row.
pub const EVENTS_SILENCE_MAX: Duration = Duration::from_secs(6);

/// Most bytes of one server-sent event (a block): ten times the largest block the chain
/// makes. The event parser buffers an event whole, so without a bound a validator sending one
/// endless line, or data lines with no blank line between, would grow the client's memory
/// until it is killed.
pub const EVENT_BYTES_MAX: usize = 32 << 20;

/// Server-sent events as parsed from one validator's stream.
type EventStream = futures::stream::BoxStream<
    'static,
    Result<eventsource_stream::Event, eventsource_stream::EventStreamError<StreamBroke>>,
>;

/// Why reading a validator's event stream stopped.
#[derive(Debug)]
enum StreamBroke {
    /// The connection failed.
    Http(reqwest::Error),
    /// An event grew past [`EVENT_BYTES_MAX`] without ending.
    EventTooLarge,
}

impl std::fmt::Display for StreamBroke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamBroke::Http(e) => write!(f, "{}", causes(e)),
            StreamBroke::EventTooLarge => {
                write!(
                    f,
                    "an event ran past {EVENT_BYTES_MAX} bytes without ending"
                )
            }
        }
    }
}

/// `bytes` of a server-sent event stream cut into whole lines, broken off once one event
/// passes [`EVENT_BYTES_MAX`]. Whole lines also keep the event parser linear: it parses its
/// buffer again from the start on every read, so a long line arriving in many reads would
/// cost time in the square of its length.
fn bounded<B: AsRef<[u8]>>(
    bytes: impl Stream<Item = Result<B, reqwest::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Vec<u8>, StreamBroke>> + Send + 'static {
    let mut lines = Lines::default();
    bytes
        .map(move |chunk| match chunk {
            Ok(chunk) => lines.read(chunk.as_ref()),
            Err(e) => vec![Err(StreamBroke::Http(e))],
        })
        .flat_map(futures::stream::iter)
}

/// Server-sent event text cut into lines (ending in LF, CRLF or CR), and the size of the
/// event being received: bytes since the last blank line, which ends an event.
#[derive(Default)]
struct Lines {
    /// The line being received.
    line: Vec<u8>,
    /// Whether it ends in a CR that an LF may yet follow.
    after_cr: bool,
    /// Bytes of the event so far, line ends left out.
    event_len: usize,
    /// Whether a line was handed on already: only the stream's first may carry a BOM.
    started: bool,
}

/// UTF-8 byte order mark, which an event stream may begin with.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl Lines {
    /// The lines `bytes` completes, then an error if the event grew past its bound.
    fn read(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, StreamBroke>> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    self.line.push(b);
                    self.end_line(&mut out);
                    continue;
                }
                self.end_line(&mut out);
            }
            self.line.push(b);
            match b {
                b'\r' => self.after_cr = true,
                b'\n' => self.end_line(&mut out),
                _ => self.event_len += 1,
            }
            if self.event_len > EVENT_BYTES_MAX {
                out.push(Err(StreamBroke::EventTooLarge));
                return out;
            }
        }
        out
    }

    fn end_line(&mut self, out: &mut Vec<Result<Vec<u8>, StreamBroke>>) {
        // The stream may start with a byte order mark, which the event parser would slice
        // at its first byte (inside the three-byte character) and panic: drop it here, as
        // the SSE standard says to ignore it.
        if !std::mem::replace(&mut self.started, true) && self.line.starts_with(&BOM) {
            self.line.drain(..BOM.len());
        }
        if self.line.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            self.event_len = 0;
        }
        out.push(Ok(std::mem::take(&mut self.line)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let read = |v: &'static str| retry_after(Some(&HeaderValue::from_static(v)));
        assert_eq!(read("1"), Some(Duration::from_secs(1)));
        assert_eq!(read(" 7 "), Some(Duration::from_secs(7)));
        // A validator cannot park a client for an hour, nor for ever.
        let cap = Some(Duration::from_secs(RETRY_AFTER_MAX_SECS));
        assert_eq!(read("3600"), cap);
        assert_eq!(read("18446744073709551615"), cap);
        assert_eq!(read("99999999999999999999999"), cap);
        // An HTTP date: the time until then, capped; one already past is no wait.
        assert_eq!(read("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(10));
        let wait = retry_after(Some(&HeaderValue::from_str(&soon).expect("header")));
        assert!(
            wait.is_some_and(|w| w > Duration::from_secs(7) && w <= Duration::from_secs(10)),
            "{wait:?}"
        );
        let later =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(
            retry_after(Some(&HeaderValue::from_str(&later).expect("header"))),
            cap
        );
        // Neither seconds nor a date (a negative number, words): the client's own backoff.
        assert_eq!(read("-1"), None);
        assert_eq!(read("soon"), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn events_are_cut_into_lines_and_measured_from_the_last_blank_line() {
        let lines = |reads: &[&str]| {
            let mut l = Lines::default();
            let mut out = Vec::new();
            for r in reads {
                for line in l.read(r.as_bytes()) {
                    out.push(String::from_utf8(line.expect("a line")).expect("utf-8"));
                }
            }
            out
        };
        assert_eq!(
            lines(&["data: a\r", "\ndata: b\rdat", "a: c\n\r", "\n"]),
            ["data: a\r\n", "data: b\r", "data: c\n", "\r\n"]
        );
        // An event just under the bound passes whole.
        let big = format!("data: {}\n\n", "x".repeat(EVENT_BYTES_MAX - 6));
        assert!(
            Lines::default()
                .read(big.as_bytes())
                .iter()
                .all(Result::is_ok)
        );
        for end in ["\n", "\r\n", "\r"] {
            // Short events, however many, never add up.
            let mut l = Lines::default();
            let event = format!("data: {}{end}{end}", "x".repeat(1000));
            for _ in 0..(EVENT_BYTES_MAX / 1000 + 10) {
                assert!(
                    l.read(event.as_bytes()).iter().all(Result::is_ok),
                    "{end:?}"
                );
            }
            // One event of many lines does, split across reads anywhere.
            let mut l = Lines::default();
            let line = format!("data: {}{end}", "x".repeat(1000));
            let (a, b) = line.as_bytes().split_at(line.len() - 1);
            let refused = (0..(EVENT_BYTES_MAX / 1000 + 10))
                .any(|_| l.read(a).into_iter().chain(l.read(b)).any(|r| r.is_err()));
            assert!(refused, "{end:?}: an endless event was not refused");
        }
    }

    #[test]
    fn a_byte_order_mark_opening_the_stream_is_dropped_and_only_there() {
        let mut l = Lines::default();
        let lines: Vec<Vec<u8>> = l
            .read("\u{feff}data: a\n\u{feff}data: b\n".as_bytes())
            .into_iter()
            .map(|r| r.expect("a line"))
            .collect();
        assert_eq!(lines[0], b"data: a\n");
        assert_eq!(lines[1], "\u{feff}data: b\n".as_bytes());
        // Split across reads, and alone on its line: what crashed the event parser.
        let mut l = Lines::default();
        assert!(l.read(&BOM[..1]).is_empty());
        let first: Vec<_> = l.read(&[BOM[1], BOM[2], b'\n']).into_iter().collect();
        assert!(matches!(&first[..], [Ok(line)] if line == b"\n"));
    }
}
