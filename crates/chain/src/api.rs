//! The ledger HTTP API every validator serves.
//!
//! Reads answer from the latest finalized state and say which height and state root
//! they were read at. With `?proof=true`, an account, farm, node or contract comes with
//! its proof against that root (`peergrid_ledger::commitment`), which a client checks
//! without trusting this validator; the root itself it compares with another
//! validator's block at that height. `/openapi.json` describes every route.

use peergrid_core::now_ms;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::Stream;
use futures::channel::mpsc;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use peergrid_core::tx::TX_BYTES_MAX;
use peergrid_core::{AccountId, Amount, Hash, SignedTx};
use peergrid_types::TxError;
use peergrid_types::api::SnapshotInfo;
use peergrid_types::api::{
    AccountView, BatchError, BatchSubmitted, Bills, EconomyView, NodeView, Period, Receipts,
    Status, Submitted, SupplyCheck, TxAnswer, Vote,
};
use peergrid_types::certificate::StateCertificate;
use peergrid_types::proof::StateProof;
use peergrid_types::records::{Contract, Farm, Proposal, RewardReceipt, ValidatorSet};
use peergrid_types::{ApiError as ErrorBody, AtHeight, Page};

use crate::event_streams::{EventStreams, Refused};
use crate::mempool::MempoolError;
use crate::shared::{FinalizedBlock, Shared};

/// Largest body of a batch submission.
pub const BATCH_BYTES_MAX: usize = 8 << 20;
/// Most transactions in one batch submission.
pub const BATCH_TXS_MAX: usize = 10_000;

/// Largest page of a list.
pub const PAGE_MAX: usize = 500;
/// A ledger that has not finalized for this long is reported unhealthy.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often the event stream sends a keep-alive, so a follower can tell a stalled validator
/// from a quiet chain.
pub const EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// How old the last block may be before the chain counts as stalled: [`STALL_AFTER`] past
/// the longest rest of an idle chain.
fn stall_after_ms(s: &peergrid_ledger::State) -> u64 {
    STALL_AFTER.as_millis() as u64 + s.params().idle_block_ms
}

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Validator state.
    pub shared: Arc<Shared>,
    /// Accepted transactions to gossip to the other validators.
    pub gossip: Option<mpsc::UnboundedSender<SignedTx>>,
    /// The open event streams and their bounds.
    pub event_streams: EventStreams,
    /// How long a request may take to arrive whole and be answered ([`REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
    /// What became of the transactions clients sent here, for `/metrics`.
    pub submissions: Arc<Submissions>,
}

/// Transactions clients submitted to this validator's API, by what became of them.
#[derive(Debug, Default)]
pub struct Submissions {
    /// Taken into the mempool (or already there).
    pub accepted: std::sync::atomic::AtomicU64,
    /// Refused: malformed, or the ledger or the mempool's rules would not take them.
    pub refused: std::sync::atomic::AtomicU64,
    /// Refused because the mempool was full.
    pub full: std::sync::atomic::AtomicU64,
}

impl Submissions {
    fn count<T>(&self, result: &Result<T, MempoolError>) {
        let counter = match result {
            Ok(_) => &self.accepted,
            Err(MempoolError::Full { .. }) => &self.full,
            Err(_) => &self.refused,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One that did not even decode.
    fn malformed(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Api {
    /// The API over `shared`, gossiping what it accepts to `gossip`, with the default bounds.
    pub fn new(shared: Arc<Shared>, gossip: Option<mpsc::UnboundedSender<SignedTx>>) -> Self {
        Api {
            shared,
            gossip,
            event_streams: EventStreams::default(),
            request_timeout: REQUEST_TIMEOUT,
            submissions: Arc::default(),
        }
    }
}

/// How long a client refused for load should wait before asking again.
const RETRY_AFTER_SECS: u64 = 5;

/// An API error: a status, a machine-readable kind and a message that says what to do.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Seconds to wait before retrying, sent as `Retry-After`.
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} does not exist at the finalized height"),
        )
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.retry_after_secs;
        let mut response = (
            self.status,
            Json(peergrid_types::ApiError {
                error: self.kind.to_string(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// A read's answer: the value with the height and root it was read at.
type ApiResult<T> = Result<Json<AtHeight<T>>, ApiError>;

/// The API's title and version; the paths come from the handlers.
#[derive(utoipa::OpenApi)]
#[openapi(info(
    title = "peergrid ledger API",
    description = "Every validator serves it. Reads answer from the latest finalized state with the height and state root they were read at; every error is `{\"error\": kind, \"message\": what to do}`."
))]
struct Doc;

/// Every route, each registered with the handler whose `#[utoipa::path]` documents it: a
/// route cannot be served undocumented, nor documented with other parameters than its
/// handler reads.
fn api_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(Doc::openapi())
        .routes(routes!(status))
        .routes(routes!(submit).layer(DefaultBodyLimit::max(2 * TX_BYTES_MAX + 1024)))
        .routes(routes!(submit_batch).layer(DefaultBodyLimit::max(BATCH_BYTES_MAX)))
        .routes(routes!(tx_status))
        .routes(routes!(account))
        .routes(routes!(farms))
        .routes(routes!(farm))
        .routes(routes!(nodes))
        .routes(routes!(node))
        .routes(routes!(contracts))
        .routes(routes!(contract))
        .routes(routes!(bills))
        .routes(routes!(farm_receipts))
        .routes(routes!(node_receipt))
        .routes(routes!(votes))
        .routes(routes!(economy))
        .routes(routes!(proposals))
        .routes(routes!(proposal))
        .routes(routes!(block))
        .routes(routes!(certificate))
        .routes(routes!(snapshots))
        .routes(routes!(snapshot_state))
        .routes(routes!(snapshot_finalization))
        .routes(routes!(epoch_validators))
        .routes(routes!(events))
        .routes(routes!(health))
        .routes(routes!(metrics))
        .routes(routes!(openapi))
}

/// Every route with its parameters and answers, as OpenAPI 3.1, generated from the handlers.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes().into_openapi()
}

/// The router with every route.
pub fn router(api: Api) -> Router {
    let (router, _) = api_routes().split_for_parts();
    let deadline = api.request_timeout;
    router
        .fallback(unknown_route)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                request_deadline(deadline, request, next)
            },
        ))
        .layer(axum::middleware::map_response(plain_errors_as_json))
        .with_state(api)
}

/// How long a request may take to arrive whole and be answered: a client trickling its
/// body would otherwise hold a connection for good. Event streams answer at once and
/// then stream, so this does not bound them.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn request_deadline(
    deadline: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not received and answered within {} ms (was its body sent slowly?); send it again",
                deadline.as_millis()
            ),
        )
        .into_response(),
    }
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {}: the routes and their parameters are in /openapi.json",
            uri.path()
        ),
    )
}

/// axum answers a path, query or body it cannot parse in plain text, and a method a route
/// lacks with no body; every error of this API is the same JSON, with what to send instead.
async fn plain_errors_as_json(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let mut said = String::from_utf8_lossy(&body).trim().to_string();
    if said.is_empty() {
        said = status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase();
    }
    let kind = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    let hint = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route takes another method",
        StatusCode::PAYLOAD_TOO_LARGE => "send less",
        _ => "ids and heights are decimal numbers, accounts and hashes hex",
    };
    ApiError::new(
        status,
        kind,
        format!("{said}; {hint} (the routes and their parameters are in /openapi.json)"),
    )
    .into_response()
}

fn read<T>(
    api: &Api,
    f: impl FnOnce(&peergrid_ledger::State) -> Result<T, ApiError>,
) -> Result<(T, u64, Hash), ApiError> {
    api.shared
        .with_state(|s| f(s).map(|v| (v, s.height(), s.root())))
        .unwrap_or_else(|| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "ledger lock poisoned",
            ))
        })
}

/// Wrap `data` with the height and root it was read at.
fn at<T>(data: T, height: u64, root: Hash) -> Json<AtHeight<T>> {
    Json(AtHeight {
        height,
        root,
        data,
        proof: None,
    })
}

/// `?proof=true` asks for the entry's proof against the root.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WithProof {
    /// Add `proof`: the entry's binary value and its Merkle proof against `root`.
    #[serde(default)]
    proof: bool,
}

/// Like [`at`], with `proof` beside the root when one was asked for.
fn at_proven<T>(data: T, height: u64, root: Hash, proof: Option<StateProof>) -> Json<AtHeight<T>> {
    let mut answer = at(data, height, root);
    answer.0.proof = proof;
    answer
}

#[utoipa::path(get, path = "/v1/status", tag = "chain",
    summary = "Chain id, height, root, whether blocks are finalizing, the validator set and the parameters",
    responses(
        (status = 200, description = "The chain as this validator sees it", body = AtHeight<Status>),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn status(State(api): State<Api>) -> ApiResult<Status> {
    let mempool = api.shared.mempool.lock().map(|p| p.len()).unwrap_or(0);
    let (v, height, root) = read(&api, |s| {
        let g = s.globals();
        let age_ms = now_ms().saturating_sub(g.time_ms);
        Ok(Status {
            chain_id: s.chain_id().to_string(),
            genesis_hash: s.config().genesis_hash,
            time_ms: g.time_ms,
            last_block_age_ms: age_ms,
            finalizing: s.height() > 0 && age_ms < stall_after_ms(s),
            validators: s.config().validators.clone(),
            epoch: s.epoch(),
            epoch_blocks: s.epoch_blocks(),
            validator_set: s.validator_set(s.epoch()).cloned(),
            pending_validators: s.config().pending_validators.clone(),
            next_epoch_height: (s.epoch() + 1).saturating_mul(s.epoch_blocks()),
            supply: s.supply(),
            mempool,
            params: s.params().clone(),
            mesh_bootstrap: api.shared.genesis.mesh_bootstrap.clone(),
            council: Some(s.config().council.clone()),
            ledger_rules: s.config().ledger_rules,
        })
    })?;
    Ok(at(v, height, root))
}

#[derive(Deserialize)]
struct SubmitJson {
    /// The transaction's canonical bytes, hex.
    tx: String,
}

#[utoipa::path(post, path = "/v1/tx", tag = "transactions",
    summary = "Submit one signed transaction: its canonical bytes, or JSON {\"tx\": \"<hex>\"}",
    request_body(content_type = "application/octet-stream", description = "the canonical encoding"),
    responses(
        (status = 202, description = "Accepted into the mempool", body = Submitted),
        (status = 400, description = "Malformed, or rejected with the rule broken", body = ErrorBody),
        (status = 409, description = "Conflicts with a pending transaction", body = ErrorBody),
        (status = 413, description = "Larger than a transaction may be", body = ErrorBody),
        (status = 503, description = "The mempool is full; retry in a few seconds", body = ErrorBody)))]
async fn submit(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let refused = |e: ApiError| {
        api.submissions.malformed();
        e
    };
    let bytes = if is_json {
        let req: SubmitJson = serde_json::from_slice(&body).map_err(|e| {
            refused(ApiError::bad(format!(
                "expected {{\"tx\": \"<hex>\"}}: {e}"
            )))
        })?;
        hex::decode(req.tx.trim()).map_err(|_| refused(ApiError::bad("\"tx\" is not hex")))?
    } else {
        body.to_vec()
    };
    let tx = SignedTx::decode(&bytes)
        .map_err(|e| refused(ApiError::bad(format!("{e}; send the canonical encoding"))))?;
    let result = api.shared.submit(tx.clone());
    api.submissions.count(&result);
    match result {
        Ok(hash) => {
            if let Some(g) = &api.gossip {
                let _ = g.unbounded_send(tx);
            }
            Ok((StatusCode::ACCEPTED, Json(Submitted { hash })).into_response())
        }
        Err(MempoolError::Full { .. }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mempool_full",
            format!("the mempool is full; retry in {RETRY_AFTER_SECS} s"),
        )
        .retry_after(RETRY_AFTER_SECS)),
        // A nonce already used or held by a waiting transaction is worth a retry at the
        // next nonce: the kinds say so, so a client need not read the message.
        Err(MempoolError::Rejected(e @ TxError::StaleNonce { .. })) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "stale_nonce",
            format!("{e}; sign it again with the account's current nonce"),
        )),
        Err(MempoolError::Rejected(e)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "rejected",
            e.to_string(),
        )),
        Err(e @ MempoolError::NonceTaken { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "nonce_taken",
            format!("{e}; wait for it to be final, then sign again at the next nonce"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
    }
}

/// Many transactions in one request: the canonical encoding of a list of encoded transactions.
/// Answers how many were accepted and why each other one was not.
#[utoipa::path(post, path = "/v1/txs", tag = "transactions",
    summary = "Submit up to 10,000 transactions: borsh(Vec<Vec<u8>>) of canonical encodings",
    request_body(content_type = "application/octet-stream", description = "borsh(Vec<Vec<u8>>)"),
    responses(
        (status = 200, description = "How many were accepted, and why each other one was not", body = BatchSubmitted),
        (status = 400, description = "Not a batch, or more than 10,000 transactions", body = ErrorBody),
        (status = 413, description = "Larger than a batch may be", body = ErrorBody)))]
async fn submit_batch(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> Result<Json<BatchSubmitted>, ApiError> {
    let list: Vec<Vec<u8>> =
        peergrid_core::codec::decode("transaction batch", &body, BATCH_BYTES_MAX).map_err(|e| {
            ApiError::bad(format!(
                "{e}; send borsh(Vec<Vec<u8>>) of canonical transactions"
            ))
        })?;
    if list.len() > BATCH_TXS_MAX {
        return Err(ApiError::bad(format!(
            "{} transactions in one batch; at most {BATCH_TXS_MAX}",
            list.len()
        )));
    }
    let mut errors = Vec::new();
    let mut decoded = Vec::with_capacity(list.len());
    let mut positions = Vec::with_capacity(list.len());
    for (i, bytes) in list.iter().enumerate() {
        match SignedTx::decode_hashed(bytes) {
            Ok(tx) => {
                decoded.push(tx);
                positions.push(i);
            }
            Err(e) => {
                api.submissions.malformed();
                errors.push((i, e.to_string()))
            }
        }
    }
    // Copies to gossip, taken before the mempool takes the transactions.
    let mut copies = api.gossip.as_ref().map(|_| {
        decoded
            .iter()
            .map(|(tx, _)| tx.clone())
            .collect::<Vec<_>>()
            .into_iter()
    });
    // Up to 10,000 signatures: checked off the runtime that also carries consensus, whose
    // votes and timers must not wait behind them.
    let shared = api.shared.clone();
    let results = tokio::task::spawn_blocking(move || shared.submit_batch(decoded))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the batch's checks stopped: {e}"),
            )
        })?;
    let mut accepted = 0usize;
    for (i, result) in positions.into_iter().zip(results) {
        let copy = copies.as_mut().and_then(Iterator::next);
        api.submissions.count(&result);
        match result {
            Ok(_) => {
                accepted += 1;
                if let (Some(g), Some(tx)) = (&api.gossip, copy) {
                    let _ = g.unbounded_send(tx);
                }
            }
            Err(e) => errors.push((i, e.to_string())),
        }
    }
    errors.sort_by_key(|(i, _)| *i);
    let errors = errors
        .into_iter()
        .map(|(index, message)| BatchError { index, message })
        .collect();
    Ok(Json(BatchSubmitted { accepted, errors }))
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| ApiError::bad(format!("invalid {what} {text:?}: {e}")))
}

#[utoipa::path(get, path = "/v1/tx/{hash}", tag = "transactions",
    summary = "Pending, finalized at a height with its events, rejected with the reason, or unknown",
    params(("hash" = String, Path, description = "the transaction's hash, hex")),
    responses(
        (status = 200, description = "Where the transaction is", body = TxAnswer),
        (status = 400, description = "Not a hash", body = ErrorBody)))]
async fn tx_status(
    State(api): State<Api>,
    Path(hash): Path<String>,
) -> Result<Json<TxAnswer>, ApiError> {
    let hash: Hash = parse("transaction hash", &hash)?;
    // A finalized one's receipt is decoded from its whole block (up to 4 MB): off the
    // runtime that carries consensus, which clients polling for their transactions
    // would otherwise hold up.
    let shared = api.shared.clone();
    let status = tokio::task::spawn_blocking(move || shared.status(&hash))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the transaction's status could not be read: {e}"),
            )
        })?;
    Ok(Json(TxAnswer { hash, status }))
}

#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "state",
    summary = "An account's balance, next nonce and node",
    params(("id" = String, Path, description = "the account"), WithProof),
    responses(
        (status = 200, description = "The account, with its proof when asked", body = AtHeight<AccountView>),
        (status = 400, description = "Not an account, or `proof` is not a boolean", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn account(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult<AccountView> {
    let id: AccountId = parse("account", &id)?;
    let ((v, proof), h, r) = read(&api, |s| {
        let account = s.account(&id);
        let v = AccountView {
            account: id,
            balance: account.balance,
            nonce: account.nonce,
            node: s.node_by_account(&id).map(|n| n.id),
        };
        Ok((v, q.proof.then(|| s.prove_account(&id))))
    })?;
    Ok(at_proven(v, h, r, proof))
}

/// A page of a list in id order.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The first id of the page (the previous page's `next`).
    from: Option<u64>,
    /// Most items in the page: 100 unless asked, at most 500.
    #[param(maximum = 500)]
    limit: Option<usize>,
}

/// A page of nodes, of one farm or all.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NodesQuery {
    /// The first id of the page (the previous page's `next`).
    from: Option<u64>,
    /// Most items in the page: 100 unless asked, at most 500.
    #[param(maximum = 500)]
    limit: Option<usize>,
    /// Only this farm's nodes.
    farm: Option<u32>,
}

/// A page of contracts: an owner's, a node's, both, or all.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ContractsQuery {
    /// The first id of the page (the previous page's `next`).
    from: Option<u64>,
    /// Most items in the page: 100 unless asked, at most 500.
    #[param(maximum = 500)]
    limit: Option<usize>,
    /// Only this account's contracts.
    owner: Option<String>,
    /// Only contracts on this node.
    node: Option<u32>,
}

/// A page's size: 100 unless asked, between 1 and [`PAGE_MAX`].
fn page_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).clamp(1, PAGE_MAX)
}

/// A page of items and where the next page starts.
fn page<T>(items: impl Iterator<Item = (u64, T)>, limit: usize) -> Page<T> {
    let mut out = Vec::new();
    let mut next = None;
    for (id, item) in items {
        if out.len() == limit {
            next = Some(id);
            break;
        }
        out.push(item);
    }
    Page { items: out, next }
}

#[utoipa::path(get, path = "/v1/farms", tag = "state", summary = "Farms in id order, a page at a time",
    params(ListQuery), responses(
        (status = 200, description = "A page of farms", body = AtHeight<Page<Farm>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn farms(State(api): State<Api>, Query(p): Query<ListQuery>) -> ApiResult<Page<Farm>> {
    let from = u32::try_from(p.from.unwrap_or(1)).unwrap_or(u32::MAX);
    let (v, h, r) = read(&api, |s| {
        Ok(page(
            s.farms(from).map(|f| (f.id as u64, f.clone())),
            page_limit(p.limit),
        ))
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/farms/{id}", tag = "state", summary = "One farm",
    params(("id" = String, Path, description = "the farm's id or name"), WithProof),
    responses(
        (status = 200, description = "The farm, with its proof when asked; with `?proof=true`, an id that does not exist answers `data: null` and the proof of its absence", body = AtHeight<Option<Farm>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such farm", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn farm(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult<Option<Farm>> {
    let ((v, proof), h, r) = read(&api, |s| {
        let number = id.parse::<u32>().ok();
        let farm = match number {
            Some(n) => s.farm(n),
            None => s.farm_by_name(&id),
        };
        match (farm, number) {
            (Some(f), _) => Ok((Some(f.clone()), q.proof.then(|| s.prove_farm(f.id)))),
            // Absence is proven too when asked for by id: no one validator's word.
            (None, Some(n)) if q.proof => Ok((None, Some(s.prove_farm(n)))),
            (None, _) => Err(ApiError::not_found(format!("farm {id}"))),
        }
    })?;
    Ok(at_proven(v, h, r, proof))
}

fn node_view(n: &peergrid_ledger::Node, s: &peergrid_ledger::State) -> NodeView {
    NodeView {
        node: n.clone(),
        status: n.status(s.time_ms(), s.params()),
        free: n.free(),
    }
}

#[utoipa::path(get, path = "/v1/nodes", tag = "state",
    summary = "Nodes in id order with status and free capacity, a page at a time",
    params(NodesQuery), responses(
        (status = 200, description = "A page of nodes", body = AtHeight<Page<NodeView>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn nodes(State(api): State<Api>, Query(p): Query<NodesQuery>) -> ApiResult<Page<NodeView>> {
    let from = u32::try_from(p.from.unwrap_or(1)).unwrap_or(u32::MAX);
    let (v, h, r) = read(&api, |s| {
        // A farm's from its own index: filtering every node for a small farm would walk
        // the whole grid on each request.
        let all: Box<dyn Iterator<Item = &peergrid_types::records::Node>> = match p.farm {
            Some(f) => Box::new(s.nodes_of(f).skip_while(move |n| n.id < from)),
            None => Box::new(s.nodes(from)),
        };
        let items = all.map(|n| (n.id as u64, node_view(n, s)));
        Ok(page(items, page_limit(p.limit)))
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "state", summary = "One node with status and free capacity",
    params(("id" = String, Path, description = "the node's id or account"), WithProof),
    responses(
        (status = 200, description = "The node, with its proof when asked; with `?proof=true`, an id that does not exist answers `data: null` and the proof of its absence", body = AtHeight<Option<NodeView>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn node(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult<Option<NodeView>> {
    let ((v, proof), h, r) = read(&api, |s| {
        let number = id.parse::<u32>().ok();
        let node = match number {
            Some(n) => s.node(n),
            None => id
                .parse::<AccountId>()
                .ok()
                .and_then(|a| s.node_by_account(&a)),
        };
        match (node, number) {
            (Some(n), _) => Ok((Some(node_view(n, s)), q.proof.then(|| s.prove_node(n.id)))),
            (None, Some(n)) if q.proof => Ok((None, Some(s.prove_node(n)))),
            (None, _) => Err(ApiError::not_found(format!("node {id}"))),
        }
    })?;
    Ok(at_proven(v, h, r, proof))
}

#[utoipa::path(get, path = "/v1/contracts", tag = "state",
    summary = "Contracts in id order, an owner's or a node's, a page at a time",
    params(ContractsQuery), responses(
        (status = 200, description = "A page of contracts", body = AtHeight<Page<Contract>>),
        (status = 400, description = "`owner` is not an account, or a parameter is malformed", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn contracts(
    State(api): State<Api>,
    Query(p): Query<ContractsQuery>,
) -> ApiResult<Page<Contract>> {
    let owner = match &p.owner {
        Some(o) => Some(parse::<AccountId>("owner", o)?),
        None => None,
    };
    let (v, h, r) = read(&api, |s| {
        let from = p.from.unwrap_or(1);
        // Each filter reads its own index; both together filter the owner's by node.
        let all: Box<dyn Iterator<Item = &Contract>> = match (&owner, p.node) {
            (Some(o), _) => Box::new(s.contracts_of(o, from)),
            (None, Some(n)) => Box::new(s.contracts_on(n, from)),
            (None, None) => Box::new(s.contracts(from)),
        };
        let items = all
            .filter(|c| p.node.is_none_or(|n| c.node == Some(n)))
            .map(|c| (c.id, c.clone()));
        Ok(page(items, page_limit(p.limit)))
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/contracts/{id}", tag = "state", summary = "One contract",
    params(("id" = String, Path, description = "the contract's id, or its gateway name"), WithProof),
    responses(
        (status = 200, description = "The contract, with its proof when asked; with `?proof=true`, an id that does not exist answers `data: null` and the proof of its absence", body = AtHeight<Option<Contract>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such contract", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn contract(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult<Option<Contract>> {
    let ((v, proof), h, r) = read(&api, |s| {
        let number = id.parse::<u64>().ok();
        let c = match number {
            Some(n) => s.contract(n),
            None => s.contract_by_name(&id),
        };
        match (c, number) {
            (Some(c), _) => Ok((Some(c.clone()), q.proof.then(|| s.prove_contract(c.id)))),
            // A node removes a workload whose contract is gone: that must be proven too,
            // not one validator's word.
            (None, Some(n)) if q.proof => Ok((None, Some(s.prove_contract(n)))),
            (None, _) => Err(ApiError::not_found(format!("contract {id}"))),
        }
    })?;
    Ok(at_proven(v, h, r, proof))
}

/// A page of a contract's bills.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BillsQuery {
    /// The first bill's start, ledger ms (the previous page's `next`).
    from_ms: Option<u64>,
    /// Most bills in the page: 100 unless asked, at most 500.
    #[param(maximum = 500)]
    limit: Option<usize>,
}

/// A contract's bills, oldest first from `?from_ms=`; `next` is where the next page starts.
#[utoipa::path(get, path = "/v1/contracts/{id}/bills", tag = "economy",
    summary = "A contract's bills, oldest first, and what the pruned ones added up to",
    params(("id" = u64, Path, description = "the contract's id"), BillsQuery),
    responses(
        (status = 200, description = "A page of the contract's bills", body = AtHeight<Bills>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such contract", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn bills(
    State(api): State<Api>,
    Path(id): Path<u64>,
    Query(q): Query<BillsQuery>,
) -> ApiResult<Bills> {
    let limit = page_limit(q.limit);
    let (v, h, r) = read(&api, |s| {
        if s.contract(id).is_none() {
            return Err(ApiError::not_found(format!("contract {id}")));
        }
        let items = s
            .bills(id, q.from_ms.unwrap_or(0))
            .map(|b| (b.from_ms, b.clone()));
        let Page { items, next } = page(items, limit);
        Ok(Bills {
            items,
            next,
            pruned: s.pruned_bills(id).cloned(),
        })
    })?;
    Ok(at(v, h, r))
}

/// Which of a farm's receipts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReceiptsQuery {
    /// Only this minting period's, in node order; without it, the newest first.
    period: Option<u64>,
    /// With `period`: the first node id of the page (the previous page's `next`).
    from: Option<u32>,
    /// Most receipts in the page: 100 unless asked, at most 500.
    #[param(maximum = 500)]
    limit: Option<usize>,
}

/// A farm's reward receipts. With `?period=`, that period's in node order from `?from=`
/// (a node id), paged like every list: `next` is where the next page starts. Without it,
/// the newest receipts first, one page (the first receipt names the latest period minted).
/// `kept_from_period` is the oldest period whose receipts the state still holds.
#[utoipa::path(get, path = "/v1/farms/{id}/receipts", tag = "economy",
    summary = "A farm's reward receipts: of one period in node order, paged; or the newest first",
    params(("id" = u32, Path, description = "the farm's id"), ReceiptsQuery),
    responses(
        (status = 200, description = "The farm's receipts", body = AtHeight<Receipts>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such farm", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn farm_receipts(
    State(api): State<Api>,
    Path(id): Path<u32>,
    Query(q): Query<ReceiptsQuery>,
) -> ApiResult<Receipts> {
    let limit = page_limit(q.limit);
    let (v, h, r) = read(&api, |s| {
        if s.farm(id).is_none() {
            return Err(ApiError::not_found(format!("farm {id}")));
        }
        let Page { items, next } = match q.period {
            Some(period) => page(
                s.receipts_of_farm_period(id, period, q.from.unwrap_or(0))
                    .map(|rc| (rc.node as u64, rc.clone())),
                limit,
            ),
            None => Page {
                items: s
                    .receipts_of_farm(id, (u64::MAX, 0))
                    .take(limit)
                    .cloned()
                    .collect(),
                next: None,
            },
        };
        Ok(Receipts {
            items,
            next,
            current_period: s.period_of(s.time_ms()),
            // Receipts of earlier periods are pruned from the state (their events stay in blocks).
            kept_from_period: s.receipts_kept_from(),
        })
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/nodes/{id}/receipts/{period}", tag = "economy",
    summary = "One node's reward receipt of one minting period, every step written out",
    params(("id" = u32, Path, description = "the node's id"), ("period" = u64, Path, description = "the minting period")),
    responses(
        (status = 200, description = "The receipt, every step written out", body = AtHeight<RewardReceipt>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "Not minted yet, or pruned", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn node_receipt(
    State(api): State<Api>,
    Path((id, period)): Path<(u32, u64)>,
) -> ApiResult<RewardReceipt> {
    let (v, h, r) = read(&api, |s| {
        s.receipt(period, id).cloned().ok_or_else(|| {
            let kept = s.receipts_kept_from();
            if period < kept {
                ApiError::not_found(format!(
                    "receipt of node {id} for period {period} (receipts before period {kept} are pruned; their RewardMinted events stay in the blocks)"
                ))
            } else {
                ApiError::not_found(format!("receipt of node {id} for period {period}"))
            }
        })
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/proposals/{id}/votes", tag = "governance",
    summary = "A proposal's votes, with council flag and farmer weight",
    params(("id" = u64, Path, description = "the proposal's id")),
    responses(
        (status = 200, description = "Every vote on the proposal, in one page", body = AtHeight<Page<Vote>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such proposal", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn votes(State(api): State<Api>, Path(id): Path<u64>) -> ApiResult<Page<Vote>> {
    let (v, h, r) = read(&api, |s| {
        if s.proposal(id).is_none() {
            return Err(ApiError::not_found(format!("proposal {id}")));
        }
        let items = s
            .votes(id)
            .map(|(voter, vote)| Vote {
                voter: *voter,
                vote: *vote,
            })
            .collect();
        Ok(Page { items, next: None })
    })?;
    Ok(at(v, h, r))
}

/// Minting progress, farmers' total weight, everything billed, and the current period.
#[utoipa::path(get, path = "/v1/economy", tag = "economy",
    summary = "Minting progress, farmers' total weight, total billed, the current period, and the supply: genesis + minted - burned against the sum of all balances",
    responses(
        (status = 200, description = "The economy and the supply identity", body = AtHeight<EconomyView>),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn economy(State(api): State<Api>) -> ApiResult<EconomyView> {
    let (v, h, r) = read(&api, |s| {
        let period = s.period_of(s.time_ms());
        let (start_ms, end_ms) = s.period_bounds(period);
        let supply = s.supply();
        let balances = api.shared.total_balances(s);
        Ok(EconomyView {
            economy: *s.economy(),
            current_period: Period {
                period,
                start_ms,
                end_ms,
            },
            supply: SupplyCheck {
                genesis: supply.genesis,
                minted: supply.minted,
                burned: supply.burned,
                balances: Amount(u64::try_from(balances).unwrap_or(u64::MAX)),
                conserved: supply.expected() == Some(balances),
            },
        })
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/proposals", tag = "governance", summary = "Governance proposals in id order, a page at a time",
    params(ListQuery), responses(
        (status = 200, description = "A page of proposals", body = AtHeight<Page<Proposal>>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn proposals(
    State(api): State<Api>,
    Query(p): Query<ListQuery>,
) -> ApiResult<Page<Proposal>> {
    let (v, h, r) = read(&api, |s| {
        Ok(page(
            s.proposals(p.from.unwrap_or(1)).map(|p| (p.id, p.clone())),
            page_limit(p.limit),
        ))
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/proposals/{id}", tag = "governance", summary = "One proposal",
    params(("id" = u64, Path, description = "the proposal's id")),
    responses(
        (status = 200, description = "The proposal", body = AtHeight<Proposal>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No such proposal", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn proposal(State(api): State<Api>, Path(id): Path<u64>) -> ApiResult<Proposal> {
    let (v, h, r) = read(&api, |s| {
        s.proposal(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("proposal {id}")))
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/epochs/{epoch}/validators", tag = "chain",
    summary = "The validator set that decides an epoch's blocks; any epoch up to the next block's",
    params(("epoch" = u64, Path, description = "the epoch")),
    responses(
        (status = 200, description = "The validator set in force in that epoch", body = AtHeight<ValidatorSet>),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "Epoch not reached yet", body = ErrorBody),
        (status = 500, description = "The ledger state could not be read (a poisoned lock)", body = ErrorBody)))]
async fn epoch_validators(
    State(api): State<Api>,
    Path(epoch): Path<u64>,
) -> ApiResult<ValidatorSet> {
    let (v, h, r) = read(&api, |s| {
        s.validator_set(epoch).cloned().ok_or_else(|| {
            ApiError::not_found(format!("validator set of epoch {epoch} (not reached yet)"))
        })
    })?;
    Ok(at(v, h, r))
}

#[utoipa::path(get, path = "/v1/blocks/{height}", tag = "chain",
    summary = "A finalized block's digest, state root and transaction outcomes",
    params(("height" = u64, Path, description = "the block's height")),
    responses(
        (status = 200, description = "The finalized block", body = FinalizedBlock),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "Not finalized yet", body = ErrorBody)))]
async fn block(
    State(api): State<Api>,
    Path(height): Path<u64>,
) -> Result<Json<FinalizedBlock>, ApiError> {
    let receipts = &api.shared.receipts;
    receipts
        .block(height)
        .map(Json)
        .ok_or_else(|| match receipts.first_kept() {
            Some(first) if height < first => ApiError::new(
                StatusCode::NOT_FOUND,
                "pruned",
                format!(
                    "block {height} is pruned here: this validator keeps blocks from {first} \
                     on; ask a validator running with `archive = true`"
                ),
            ),
            _ => ApiError::not_found(format!("block {height}")),
        })
}

/// How long a request for a certificate still forming waits for it.
const CERTIFICATE_WAIT: Duration = Duration::from_secs(3);

#[utoipa::path(get, path = "/v1/blocks/{height}/certificate", tag = "chain",
    summary = "The state certificate of a finalized block: a quorum of its epoch's validators signing the state root after it. Recent heights and every epoch's last block; a height just finalized is waited for up to 3 s",
    params(("height" = u64, Path, description = "the block's height")),
    responses(
        (status = 200, description = "The certificate", body = StateCertificate),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No certificate for that height here", body = ErrorBody)))]
async fn certificate(
    State(api): State<Api>,
    Path(height): Path<u64>,
) -> Result<Json<StateCertificate>, ApiError> {
    let shared = &api.shared;
    let mut formed = shared.certificates.watch();
    let deadline = tokio::time::Instant::now() + CERTIFICATE_WAIT;
    loop {
        if let Some(c) = shared.certificate(height) {
            return Ok(Json(c));
        }
        let tip = shared.with_state(|s| s.height()).unwrap_or(0);
        // Only a block finalized lately (or about to be) may still gather its quorum.
        let forming = height <= tip + 1 && height + 64 >= tip;
        if !forming
            || tokio::time::timeout_at(deadline, formed.changed())
                .await
                .is_err()
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no state certificate for height {height} here (finalized height {tip}): \
                     a validator keeps those of the last {} blocks and of each epoch's last \
                     block, and one forms once a quorum signed; ask for a recent height, or \
                     another validator",
                    crate::certify::CERTIFICATES_KEPT
                ),
            ));
        }
    }
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "chain",
    summary = "The state snapshots this validator serves (the state at an epoch's last block), newest first: a validator joining after the blocks before them are pruned starts from one",
    responses(
        (status = 200, description = "The snapshots ready to download", body = Vec<SnapshotInfo>)))]
async fn snapshots(State(api): State<Api>) -> Json<Vec<SnapshotInfo>> {
    Json(api.shared.snapshots.list())
}

fn no_snapshot(height: u64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no snapshot at height {height} here: GET {} lists those this validator keeps",
            peergrid_types::api::routes::SNAPSHOTS
        ),
    )
}

#[utoipa::path(get, path = "/v1/snapshots/{height}", tag = "chain",
    summary = "A snapshot's state file: the entries whose root the block's state certificate signs",
    params(("height" = u64, Path, description = "the snapshot's height")),
    responses(
        (status = 200, description = "The state file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No snapshot at that height here", body = ErrorBody)))]
async fn snapshot_state(
    State(api): State<Api>,
    Path(height): Path<u64>,
) -> Result<Response, ApiError> {
    let path = api
        .shared
        .snapshots
        .state_file(height)
        .ok_or_else(|| no_snapshot(height))?;
    // Sent as it is read, a few at a time: a state of a few hundred MB read whole for
    // each of many downloads at once would run the validator out of memory.
    let permit = SNAPSHOT_DOWNLOADS
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{SNAPSHOT_DOWNLOADS_MAX} snapshots are being sent already; retry in \
                 {RETRY_AFTER_SECS} s"
                ),
            )
            .retry_after(RETRY_AFTER_SECS)
        })?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| no_snapshot(height))?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    // The place is held while the file is sent, at most as long as the floor's pace
    // takes: four trickling downloads must not keep every joining validator waiting.
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let slowest =
        Duration::from_secs(SNAPSHOT_GRACE_SECS + len.unwrap_or(0) / SNAPSHOT_FLOOR_BYTES_PER_SEC);
    tokio::spawn(async move {
        let _place = permit;
        tokio::select! {
            _ = tokio::time::sleep(slowest) => {}
            _ = ended => {}
        }
    });
    let chunks = futures::stream::unfold((file, done), |(mut file, done)| async move {
        use tokio::io::AsyncReadExt;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(bytes::Bytes::from(chunk)), (file, done)))
            }
            Err(e) => Some((Err(e), (file, done))),
        }
    });
    let mut response = axum::body::Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    }
    Ok(response)
}

/// Snapshot files sent at once; more are asked to retry.
const SNAPSHOT_DOWNLOADS_MAX: usize = 4;

/// How much of a snapshot file is read at a time.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Seconds a snapshot download holds its place beyond what the floor's pace takes.
const SNAPSHOT_GRACE_SECS: u64 = 60;

/// The slowest pace a snapshot download holds its place at: a few minutes for a state
/// of a few hundred MB on any link fit for a validator. A slower one goes on, without it.
const SNAPSHOT_FLOOR_BYTES_PER_SEC: u64 = 256 << 10;

static SNAPSHOT_DOWNLOADS: LazyLock<Arc<tokio::sync::Semaphore>> =
    LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_DOWNLOADS_MAX)));

#[utoipa::path(get, path = "/v1/snapshots/{height}/finalization", tag = "chain",
    summary = "A snapshot's block's finalization certificate, as consensus encodes it: the floor a joining validator's consensus starts from",
    params(("height" = u64, Path, description = "the snapshot's height")),
    responses(
        (status = 200, description = "The finalization certificate", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 404, description = "No snapshot at that height here", body = ErrorBody)))]
async fn snapshot_finalization(
    State(api): State<Api>,
    Path(height): Path<u64>,
) -> Result<Response, ApiError> {
    let bytes = api
        .shared
        .snapshots
        .finalization(height)
        .ok_or_else(|| no_snapshot(height))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// Where the event stream starts.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// The first height to send; without it, `Last-Event-ID` + 1, else the next block.
    from: Option<u64>,
}

/// Finalized blocks as server-sent events, from `?from=H` (or the `Last-Event-ID` + 1) onward:
/// stored blocks first, then live ones, so a follower that reconnects misses nothing.
#[utoipa::path(get, path = "/v1/events", tag = "chain",
    summary = "Finalized blocks as server-sent events (`block`, id = height, data = FinalizedBlock); resume with ?from= or Last-Event-ID; a keep-alive every 2 s",
    params(EventsQuery),
    responses(
        (status = 200, description = "A stream of `block` events: each one's id is the height and its data one FinalizedBlock as JSON", body = FinalizedBlock, content_type = "text/event-stream"),
        (status = 400, description = "A parameter is malformed", body = ErrorBody),
        (status = 429, description = "This address holds its maximum of event streams; `Retry-After` says when to try again", body = ErrorBody),
        (status = 503, description = "The validator serves its maximum of event streams; retry after `Retry-After` seconds or ask another validator", body = ErrorBody)))]
async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(q): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let address = extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let slot = api.event_streams.open(address).map_err(|refused| match refused {
        Refused::AddressFull { max } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this address already follows {max} event streams; close one, or retry in {RETRY_AFTER_SECS} s"
            ),
        )
        .retry_after(RETRY_AFTER_SECS),
        Refused::Full { max } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!(
                "this validator serves its maximum of {max} event streams; retry in {RETRY_AFTER_SECS} s or follow another validator"
            ),
        )
        .retry_after(RETRY_AFTER_SECS),
    })?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|h| h.saturating_add(1));
    let start = q.from.or(resume);
    let head = api.shared.with_state(|s| s.height()).unwrap_or(0);
    // A follower resuming below what is kept starts at the first kept block: the pruned ones
    // are gone, and waiting for them would stall it for good. (A node resyncs its contracts
    // whenever it reconnects, so it misses nothing that matters.)
    let first = api.shared.receipts.first_kept().unwrap_or(1);
    let next = start.unwrap_or(head + 1).max(1).max(first.min(head + 1));
    // The slot travels with the stream: it is freed when the client goes away. The live
    // blocks are subscribed to only once the stored ones are sent: a receiver that does
    // not read keeps every block sent since in memory, and a replay reads for a while.
    let state = (api.shared.clone(), None, next, slot);
    let stream = futures::stream::unfold(state, |(shared, mut live, next, slot)| async move {
        let block: Arc<FinalizedBlock> = loop {
            let head = shared.with_state(|s| s.height()).unwrap_or(0);
            if next <= head {
                let stored = shared.clone();
                let block = tokio::task::spawn_blocking(move || stored.receipts.block(next))
                    .await
                    .ok()??;
                break Arc::new(block);
            }
            let Some(receiver) = live.as_mut() else {
                // Subscribed before the height is read again, so no block falls between.
                live = Some(shared.finalized.subscribe());
                continue;
            };
            match receiver.recv().await {
                Ok(b) if b.height == next => break b,
                Ok(b) if b.height < next => continue,
                // Skipped ahead (lagged): the stored copies are read until caught up again.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => live = None,
                Err(_) => return None,
            }
        };
        let event = SseEvent::default()
            .id(block.height.to_string())
            .event("block")
            .data(shared.block_json(&block));
        Some((Ok(event), (shared, live, next + 1, slot)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(EVENTS_KEEP_ALIVE)))
}

#[utoipa::path(get, path = "/health", tag = "operations",
    summary = "200 while blocks finalize, 503 when stalled",
    responses(
        (status = 200, description = "Finalizing", body = String, content_type = "text/plain"),
        (status = 503, description = "Stalled", body = String, content_type = "text/plain")))]
async fn health(State(api): State<Api>) -> Response {
    let (age, stall) = api
        .shared
        .with_state(|s| (now_ms().saturating_sub(s.time_ms()), stall_after_ms(s)))
        .unwrap_or((u64::MAX, 0));
    if age < stall {
        (StatusCode::OK, "ok: finalizing\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: no block finalized for {} s\n", age / 1000),
        )
            .into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(api): State<Api>) -> Response {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    #[derive(Default)]
    struct Ledger {
        height: u64,
        time_ms: u64,
        finalizing: bool,
        epoch: u64,
        validators: usize,
        rules: u64,
        outage_ms: u64,
        minted: u64,
        burned: u64,
    }
    let mempool = api.shared.mempool.lock().map(|p| p.len()).unwrap_or(0);
    let l = api
        .shared
        .with_state(|s| {
            let age_ms = now_ms().saturating_sub(s.time_ms());
            Ledger {
                height: s.height(),
                time_ms: s.time_ms(),
                finalizing: s.height() > 0 && age_ms < stall_after_ms(s),
                epoch: s.epoch(),
                validators: s
                    .validator_set(s.epoch())
                    .map_or(s.config().validators.len(), |set| set.members.len()),
                rules: s.config().ledger_rules,
                outage_ms: s.economy().outage_ms,
                minted: s.globals().minted.0,
                burned: s.globals().burned.0,
            }
        })
        .unwrap_or_default();
    let age_s = now_ms().saturating_sub(l.time_ms) as f64 / 1000.0;
    let mut body = String::new();
    let mut series = |name: &str, kind: &str, help: &str, lines: &[(&str, String)]| {
        let _ = writeln!(body, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in lines {
            let _ = writeln!(body, "{name}{labels} {value}");
        }
    };
    let single: [(&str, &str, &str, String); 10] = [
        (
            "peergrid_ledger_height",
            "gauge",
            "Height of the last finalized block applied.",
            l.height.to_string(),
        ),
        (
            "peergrid_ledger_last_block_age_seconds",
            "gauge",
            "Seconds since the last finalized block's time.",
            format!("{age_s:.3}"),
        ),
        (
            "peergrid_ledger_finalizing",
            "gauge",
            "1 while blocks are finalized, 0 when the ledger stalls (as /health says).",
            u8::from(l.finalizing).to_string(),
        ),
        (
            "peergrid_ledger_outage_seconds_total",
            "counter",
            "Time the ledger made no block beyond its idle rest and 10 s, which ledger rules 2 do not count as the nodes' down time.",
            format!("{:.3}", l.outage_ms as f64 / 1000.0),
        ),
        (
            "peergrid_ledger_epoch",
            "gauge",
            "The epoch in force.",
            l.epoch.to_string(),
        ),
        (
            "peergrid_ledger_validators",
            "gauge",
            "Validators in the epoch's set.",
            l.validators.to_string(),
        ),
        (
            "peergrid_ledger_rules",
            "gauge",
            "The ledger rules version of the chain's genesis.",
            l.rules.to_string(),
        ),
        (
            "peergrid_ledger_minted_units",
            "counter",
            "Token units minted as rewards.",
            l.minted.to_string(),
        ),
        (
            "peergrid_ledger_burned_units",
            "counter",
            "Token units burned as fees.",
            l.burned.to_string(),
        ),
        (
            "peergrid_mempool_transactions",
            "gauge",
            "Transactions waiting for a block.",
            mempool.to_string(),
        ),
    ];
    for (name, kind, help, value) in single {
        series(name, kind, help, &[("", value)]);
    }
    let s = &api.submissions;
    series(
        "peergrid_api_transactions_total",
        "counter",
        "Transactions clients submitted here, by what became of them.",
        &[
            (
                "{result=\"accepted\"}",
                s.accepted.load(Relaxed).to_string(),
            ),
            ("{result=\"refused\"}", s.refused.load(Relaxed).to_string()),
            (
                "{result=\"mempool_full\"}",
                s.full.load(Relaxed).to_string(),
            ),
        ],
    );
    series(
        "peergrid_validator_signature_checks_total",
        "counter",
        "Transaction signatures this validator checked: one it took is not checked again, whether it came from a client, gossip or a block.",
        &[("", api.shared.stateless_checks().to_string())],
    );
    series(
        "peergrid_api_event_streams",
        "gauge",
        "Clients following blocks (/v1/events) now.",
        &[("", api.event_streams.open_count().to_string())],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object)))]
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(openapi_document);
    Json(&DOC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::MempoolLimits;
    use crate::shared::{DynLedger, Receipts};
    use peergrid_core::tx::{Payload, sign_invitation};
    use peergrid_core::{Amount, Capacity, Keypair, Location};
    use peergrid_ledger::{BlockContext, Devnet, Ledger, MemoryStore, RewardReceipt, Store};
    use serde_json::{Value, json};

    const GENESIS_MS: u64 = 1_700_000_000_000;

    /// A validator's shared state holding farm 1 with `nodes` nodes, each minted a receipt for period 0.
    fn big_farm(nodes: u16) -> Arc<Shared> {
        let d = Devnet::generate("api", 1, GENESIS_MS).expect("keys");
        let store: Box<dyn Store + Send + Sync> = Box::new(MemoryStore::default());
        let mut ledger: DynLedger = Ledger::open(store, &d.genesis).expect("ledger");
        let keys: Vec<Keypair> = (0..nodes)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..2].copy_from_slice(&i.to_le_bytes());
                Keypair::from_seed(seed)
            })
            .collect();
        let chain = d.genesis.chain_id.clone();
        let mut txs = vec![SignedTx::new(
            &d.demo,
            &chain,
            0,
            Payload::CreateFarm {
                name: "big".into(),
                public_ips: vec![],
            },
        )];
        txs.extend(keys.iter().enumerate().map(|(i, k)| {
            SignedTx::new(
                &d.demo,
                &chain,
                1 + i as u64,
                Payload::Transfer {
                    to: k.account(),
                    amount: Amount::tokens(1),
                },
            )
        }));
        let register: Vec<SignedTx> = keys
            .iter()
            .map(|k| {
                SignedTx::new(
                    k,
                    &chain,
                    0,
                    Payload::RegisterNode {
                        farm: 1,
                        capacity: Capacity {
                            cru: 4,
                            mru: 16 << 30,
                            sru: 500 << 30,
                            hru: 0,
                        },
                        location: Location {
                            country: "BE".into(),
                            city: "Ghent".into(),
                            latitude_micro: 0,
                            longitude_micro: 0,
                        },
                        invitation: sign_invitation(&d.demo, &chain, 1, &k.account()),
                    },
                )
            })
            .collect();
        // Past period 0 and its settle delay, so every node has its receipt. The jump is
        // the ledger's outage, so minting waits for two report intervals and a gap's head
        // of blocks after it (period 1 waits longer, not reached here).
        let period_ms = d.genesis.params.minting_period_secs * 1000;
        let blocks = [
            (1_000, txs),
            (2_000, register),
            (2 * period_ms, vec![]),
            (2 * period_ms + 10_000, vec![]),
            (2 * period_ms + 20_000, vec![]),
            (2 * period_ms + 30_000, vec![]),
            (2 * period_ms + 40_000, vec![]),
        ];
        for (height, (after_ms, txs)) in blocks.into_iter().enumerate() {
            let ctx = BlockContext {
                height: height as u64 + 1,
                time_ms: GENESIS_MS + after_ms,
            };
            let out = ledger.execute_block(ctx, &txs).expect("block");
            assert!(out.receipts.iter().all(|r| r.result.is_ok()), "{out:?}");
        }
        Shared::new(
            d.genesis.clone(),
            ledger,
            Receipts::memory(),
            MempoolLimits::default(),
        )
    }

    #[tokio::test]
    async fn a_request_whose_body_trickles_is_answered_408() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (shared, _, _) = busy_chain();
        let mut api = Api::new(shared, None);
        api.request_timeout = Duration::from_millis(300);
        let base = serve_api(api).await;
        let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .expect("connect");
        // 100 bytes promised, 5 sent, and nothing more.
        tcp.write_all(
            b"POST /v1/tx HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":",
        )
        .await
        .expect("send");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("answered before the client gave up")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("request_timeout") && answer.contains("send it again"),
            "{answer}"
        );
    }

    /// The API over `shared` on a free loopback port; its base URL.
    async fn serve(shared: Arc<Shared>) -> String {
        serve_api(Api::new(shared, None)).await
    }

    /// `api` on a free loopback port, told each client's address as a validator is; its base URL.
    async fn serve_api(api: Api) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let limits = peergrid_core::http::Limits::default();
        tokio::spawn(peergrid_core::http::serve(listener, router(api), limits));
        base
    }

    /// The names between braces in `path`, like `id` and `period`.
    fn path_params(path: &str) -> std::collections::BTreeSet<String> {
        path.split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_document_names_every_route_with_the_parameters_its_handler_reads() {
        let doc = serde_json::to_value(openapi_document()).expect("the document as JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        // The routes the typed client uses are all served and documented, and no other.
        let served: Vec<&str> = paths.keys().map(String::as_str).collect();
        for route in peergrid_types::api::routes::ALL {
            assert!(served.contains(route), "{route} is not served: {served:?}");
        }
        for path in served.iter().filter(|p| p.starts_with("/v1/")) {
            assert!(
                peergrid_types::api::routes::ALL.contains(path),
                "{path} is served but not in peergrid_types::api::routes"
            );
        }
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("operations") {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let declared = |place: &str| -> std::collections::BTreeSet<String> {
                    params
                        .iter()
                        .filter(|p| p["in"] == place)
                        .filter_map(|p| p["name"].as_str().map(str::to_string))
                        .collect()
                };
                assert_eq!(
                    declared("path"),
                    path_params(path),
                    "{method} {path}: path parameters"
                );
                assert!(op["summary"].is_string(), "{method} {path} has no summary");
            }
        }
        // What a reader of the old, hand-written document was told wrong.
        let query = |path: &str| -> Vec<String> {
            paths[path]["get"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        };
        assert_eq!(query("/v1/contracts/{id}/bills"), ["from_ms", "limit"]);
        assert_eq!(
            query("/v1/farms/{id}/receipts"),
            ["period", "from", "limit"]
        );
        assert_eq!(query("/v1/contracts"), ["from", "limit", "owner", "node"]);
        assert_eq!(query("/v1/accounts/{id}"), ["proof"]);
    }

    /// Every `$ref` anywhere under `value`, with where it is.
    fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push((at.clone(), r)),
                        _ => refs(v, format!("{at}/{key}"), out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_answer_has_a_schema_and_every_ref_resolves() {
        let doc = serde_json::to_value(openapi_document()).expect("the document as JSON");
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(
            found.len() > 100,
            "{} refs: too few to be the API",
            found.len()
        );
        for (at, r) in found {
            let name = r.strip_prefix("#/components/schemas/");
            assert!(
                name.is_some_and(|n| schemas.contains_key(n)),
                "{at}: $ref {r} names no schema of components.schemas"
            );
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                let responses = op["responses"].as_object().expect("responses");
                let success = responses
                    .keys()
                    .find(|s| s.starts_with('2'))
                    .unwrap_or_else(|| panic!("{method} {path} documents no success"));
                let content = responses[success]["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} {success} has no content"));
                for (media, body) in content {
                    assert!(
                        body["schema"].is_object(),
                        "{method} {path} {success} {media} has no schema"
                    );
                }
                // Every refusal of the API is the one JSON error.
                for (status, answer) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
                    if path == "/health" {
                        continue;
                    }
                    assert_eq!(
                        answer["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ApiError",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        // Ids, keys and amounts are text on the wire, whatever the Rust type holds.
        for (name, pattern) in [
            ("AccountId", "12D3KooW"),
            ("Hash", "[0-9a-f]{64}"),
            ("Amount", "[0-9]"),
        ] {
            assert_eq!(schemas[name]["type"], "string", "{name}");
            let p = schemas[name]["pattern"].as_str().unwrap_or_default();
            assert!(p.contains(pattern), "{name}: {p}");
        }
    }

    /// A validator's shared state after blocks made through its own apply path (so blocks and
    /// transaction statuses are recorded): a farm with a public IP, a node, a deployment and a
    /// name contract billed, receipts minted, proposals executed and open, a rejected
    /// transaction and one pending. Its devnet too, for its keys.
    fn busy_chain() -> (Arc<Shared>, Devnet, Keypair) {
        use crate::block::Block;
        use commonware_cryptography::Digestible;
        use peergrid_core::policy::PricingPolicy;
        use peergrid_core::tx::{ContractSpec, GovAction, ValidatorEntry};
        use peergrid_core::{PublicIp, TxHash};

        let d = Devnet::generate("api", 1, GENESIS_MS).expect("keys");
        let store: Box<dyn Store + Send + Sync> = Box::new(MemoryStore::default());
        let ledger: DynLedger = Ledger::open(store, &d.genesis).expect("ledger");
        let shared = Shared::new(
            d.genesis.clone(),
            ledger,
            Receipts::memory(),
            MempoolLimits::default(),
        );
        let node = Keypair::from_seed([9; 32]);
        let chain = d.genesis.chain_id.clone();
        let demo = |nonce, payload| SignedTx::new(&d.demo, &chain, nonce, payload);
        let by_node = |nonce, payload| SignedTx::new(&node, &chain, nonce, payload);
        let ip = PublicIp {
            ip: [185, 1, 2, 3],
            prefix_len: 24,
            gateway: [185, 1, 2, 1],
        };
        let validator = ValidatorEntry {
            account: d.genesis.validators[0].account,
            address: "203.0.113.7:4000".into(),
        };
        let period_ms = d.genesis.params.minting_period_secs * 1000;
        let blocks = [
            (
                1_000,
                vec![
                    demo(
                        0,
                        Payload::CreateFarm {
                            name: "big".into(),
                            public_ips: vec![ip],
                        },
                    ),
                    demo(
                        1,
                        Payload::Transfer {
                            to: node.account(),
                            amount: Amount::tokens(1),
                        },
                    ),
                    demo(
                        2,
                        Payload::Propose {
                            action: GovAction::SetPricingPolicy(PricingPolicy::default()),
                            description: "the defaults".into(),
                        },
                    ),
                    demo(
                        3,
                        Payload::Propose {
                            action: GovAction::SetValidators {
                                validators: vec![validator],
                            },
                            description: "a validator with an address".into(),
                        },
                    ),
                ],
            ),
            (
                2_000,
                vec![
                    by_node(
                        0,
                        Payload::RegisterNode {
                            farm: 1,
                            capacity: Capacity {
                                cru: 4,
                                mru: 16 << 30,
                                sru: 500 << 30,
                                hru: 0,
                            },
                            location: Location {
                                country: "BE".into(),
                                city: "Ghent".into(),
                                latitude_micro: 51_050_000,
                                longitude_micro: 3_720_000,
                            },
                            invitation: sign_invitation(&d.demo, &chain, 1, &node.account()),
                        },
                    ),
                    // Refused: the council's proposals pass as they are made, and the faucet
                    // is no council member.
                    SignedTx::new(
                        &d.faucet,
                        &chain,
                        0,
                        Payload::Vote {
                            proposal: 2,
                            approve: false,
                        },
                    ),
                ],
            ),
            (
                3_000,
                vec![
                    demo(
                        4,
                        Payload::CreateContract(ContractSpec::Deployment {
                            node: 1,
                            deployment_hash: Hash::of(b"deployment"),
                            resources: Capacity {
                                cru: 1,
                                mru: 2 << 30,
                                sru: 50 << 30,
                                hru: 0,
                            },
                            public_ips: 1,
                        }),
                    ),
                    demo(
                        5,
                        Payload::CreateContract(ContractSpec::Name {
                            name: "gateway-one".into(),
                        }),
                    ),
                ],
            ),
            // Past period 0 and its settle delay: the contracts are billed, the node has its
            // receipt (the jump is the ledger's outage: minting waits for two report
            // intervals and a gap's head of blocks after it).
            (2 * period_ms, vec![]),
            (2 * period_ms + 10_000, vec![]),
            (2 * period_ms + 20_000, vec![]),
            (2 * period_ms + 30_000, vec![]),
            (2 * period_ms + 40_000, vec![]),
        ];
        let mut parent = Block::genesis(&d.genesis.hash(), GENESIS_MS);
        for (height, (after_ms, txs)) in blocks.into_iter().enumerate() {
            let block = Block::new(
                parent.digest(),
                height as u64 + 1,
                GENESIS_MS + after_ms,
                txs,
            );
            let applied = shared
                .apply_finalized(&block, &hex::encode(block.digest().as_ref()))
                .expect("apply")
                .expect("a new block");
            let refused: Vec<_> = applied.txs.iter().filter(|t| t.result.is_err()).collect();
            // Only the faucet's vote is refused.
            assert!(
                refused.iter().all(|t| t.signer == d.faucet.account()),
                "{refused:?}"
            );
            parent = block;
        }
        let pending: TxHash = shared
            .submit(demo(
                6,
                Payload::Transfer {
                    to: node.account(),
                    amount: Amount::tokens(1),
                },
            ))
            .expect("into the mempool");
        assert!(matches!(
            shared.status(&pending),
            peergrid_types::TxStatus::Pending
        ));
        (shared, d, node)
    }

    /// Every object schema under `schema` refuses properties it does not name, except the
    /// parts of an `allOf` (a `#[serde(flatten)]`), whose whole checks them instead; so an
    /// answer with a field the document does not describe fails too.
    fn closed(schema: &mut Value, in_all_of: bool) {
        let Value::Object(map) = schema else { return };
        for (key, v) in map.iter_mut() {
            match key.as_str() {
                "properties" | "$defs" => {
                    if let Value::Object(children) = v {
                        children.values_mut().for_each(|c| closed(c, false));
                    }
                }
                "allOf" => {
                    if let Value::Array(parts) = v {
                        parts.iter_mut().for_each(|c| closed(c, true));
                    }
                }
                "oneOf" | "anyOf" | "prefixItems" => {
                    if let Value::Array(parts) = v {
                        parts.iter_mut().for_each(|c| closed(c, false));
                    }
                }
                "items" => closed(v, false),
                _ => {}
            }
        }
        if !in_all_of && (map.contains_key("properties") || map.contains_key("allOf")) {
            map.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
    }

    /// Checks answers against the document's own schemas, with a JSON Schema 2020-12
    /// validator (OpenAPI 3.1's schema dialect).
    struct Schemas {
        doc: Value,
        /// The components, closed by [`closed`], except those flattened into another.
        components: Value,
    }

    impl Schemas {
        fn new() -> Schemas {
            let doc = serde_json::to_value(openapi_document()).expect("the document as JSON");
            let mut components = doc["components"].clone();
            let mut all = Vec::new();
            refs(&doc, String::new(), &mut all);
            // A component flattened into another is checked by that one's whole.
            let flattened: std::collections::BTreeSet<String> = all
                .iter()
                .filter(|(at, _)| {
                    at.rsplit_once('/')
                        .is_some_and(|(parent, _)| parent.ends_with("/allOf"))
                })
                .filter_map(|(_, r)| r.rsplit('/').next().map(str::to_string))
                .collect();
            if let Some(schemas) = components["schemas"].as_object_mut() {
                for (name, schema) in schemas.iter_mut() {
                    if flattened.contains(name) {
                        // Its nested objects still close; the top stays open.
                        if let Some(props) = schema.get_mut("properties") {
                            props
                                .as_object_mut()
                                .into_iter()
                                .flat_map(|p| p.values_mut())
                                .for_each(|c| closed(c, false));
                        }
                    } else {
                        closed(schema, false);
                    }
                }
            }
            Schemas { doc, components }
        }

        /// The schema the document gives `method path` for `status` in `media`.
        fn schema(&self, method: &str, path: &str, status: u16, media: &str) -> Value {
            let schema = &self.doc["paths"][path][method]["responses"][status.to_string()]["content"]
                [media]["schema"];
            assert!(
                schema.is_object(),
                "{method} {path} documents no {media} schema for {status}"
            );
            let mut root = schema.clone();
            closed(&mut root, false);
            root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            root["components"] = self.components.clone();
            root
        }

        /// Panic with every place `answer` breaks the schema of `method path` for `status`.
        fn check(&self, method: &str, path: &str, status: u16, media: &str, answer: &Value) {
            let schema = self.schema(method, path, status, media);
            let validator = jsonschema::draft202012::new(&schema)
                .unwrap_or_else(|e| panic!("{method} {path} {status}: the schema: {e}"));
            let errors: Vec<String> = validator
                .iter_errors(answer)
                .map(|e| format!("at {}: {e}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path} answered {status} with what its schema refuses:\n{}\n{answer:#}",
                errors.join("\n")
            );
        }

        /// Whether `answer` passes, for the checks that the checker itself refuses what it must.
        fn passes(&self, method: &str, path: &str, status: u16, answer: &Value) -> bool {
            let schema = self.schema(method, path, status, "application/json");
            jsonschema::draft202012::new(&schema)
                .map(|v| v.is_valid(answer))
                .unwrap_or(false)
        }
    }

    #[tokio::test]
    async fn every_json_answer_matches_its_schema_in_the_document() {
        let (shared, d, node) = busy_chain();
        let demo = d.demo.account();
        let finalized = shared.receipts.block(1).expect("block 1").txs[0].hash;
        let refused = &shared.receipts.block(2).expect("block 2").txs[1];
        assert!(refused.result.is_err(), "the faucet's vote is refused");
        let rejected = refused.hash;
        shared.certificates.keep(StateCertificate {
            height: 1,
            epoch: 0,
            block: Hash::ZERO,
            root: shared.receipts.block(1).expect("block 1").root,
            next_set: Hash::ZERO,
            signatures: vec![peergrid_types::certificate::StatementSignature {
                signer: demo,
                signature: peergrid_core::tx::Signature([1; 64]),
            }],
        });
        let base = serve(shared.clone()).await;
        let schemas = Schemas::new();
        let http = reqwest::Client::new();

        // (documented route, request path, status)
        let gets: Vec<(&str, String, u16)> = vec![
            ("/v1/status", "/v1/status".into(), 200),
            ("/v1/accounts/{id}", format!("/v1/accounts/{demo}"), 200),
            (
                "/v1/accounts/{id}",
                format!("/v1/accounts/{}?proof=true", node.account()),
                200,
            ),
            ("/v1/accounts/{id}", "/v1/accounts/nobody".into(), 400),
            ("/v1/farms", "/v1/farms".into(), 200),
            ("/v1/farms/{id}", "/v1/farms/1?proof=true".into(), 200),
            ("/v1/farms/{id}", "/v1/farms/big".into(), 200),
            ("/v1/farms/{id}", "/v1/farms/999".into(), 404),
            ("/v1/farms/{id}", "/v1/farms/999?proof=true".into(), 200),
            ("/v1/nodes", "/v1/nodes?farm=1".into(), 200),
            ("/v1/nodes/{id}", "/v1/nodes/1?proof=true".into(), 200),
            ("/v1/nodes/{id}", "/v1/nodes/999?proof=true".into(), 200),
            (
                "/v1/nodes/{id}",
                format!("/v1/nodes/{}", node.account()),
                200,
            ),
            ("/v1/contracts", format!("/v1/contracts?owner={demo}"), 200),
            (
                "/v1/contracts/{id}",
                "/v1/contracts/1?proof=true".into(),
                200,
            ),
            (
                "/v1/contracts/{id}",
                "/v1/contracts/gateway-one".into(),
                200,
            ),
            (
                "/v1/contracts/{id}",
                "/v1/contracts/4242?proof=true".into(),
                200,
            ),
            ("/v1/contracts/{id}", "/v1/contracts/4242".into(), 404),
            (
                "/v1/contracts/{id}/bills",
                "/v1/contracts/1/bills".into(),
                200,
            ),
            (
                "/v1/contracts/{id}/bills",
                "/v1/contracts/2/bills".into(),
                200,
            ),
            (
                "/v1/farms/{id}/receipts",
                "/v1/farms/1/receipts".into(),
                200,
            ),
            (
                "/v1/farms/{id}/receipts",
                "/v1/farms/1/receipts?period=0".into(),
                200,
            ),
            (
                "/v1/nodes/{id}/receipts/{period}",
                "/v1/nodes/1/receipts/0".into(),
                200,
            ),
            ("/v1/proposals", "/v1/proposals".into(), 200),
            ("/v1/proposals/{id}", "/v1/proposals/1".into(), 200),
            ("/v1/proposals/{id}", "/v1/proposals/2".into(), 200),
            (
                "/v1/proposals/{id}/votes",
                "/v1/proposals/1/votes".into(),
                200,
            ),
            ("/v1/economy", "/v1/economy".into(), 200),
            ("/v1/blocks/{height}", "/v1/blocks/1".into(), 200),
            ("/v1/blocks/{height}", "/v1/blocks/2".into(), 200),
            ("/v1/blocks/{height}", "/v1/blocks/3".into(), 200),
            ("/v1/blocks/{height}", "/v1/blocks/4".into(), 200),
            ("/v1/blocks/{height}", "/v1/blocks/abc".into(), 400),
            ("/v1/blocks/{height}", "/v1/blocks/99".into(), 404),
            (
                "/v1/blocks/{height}/certificate",
                "/v1/blocks/1/certificate".into(),
                200,
            ),
            (
                "/v1/blocks/{height}/certificate",
                "/v1/blocks/abc/certificate".into(),
                400,
            ),
            (
                "/v1/blocks/{height}/certificate",
                "/v1/blocks/99/certificate".into(),
                404,
            ),
            ("/v1/snapshots", "/v1/snapshots".into(), 200),
            ("/v1/snapshots/{height}", "/v1/snapshots/19".into(), 404),
            (
                "/v1/epochs/{epoch}/validators",
                "/v1/epochs/0/validators".into(),
                200,
            ),
            ("/v1/tx/{hash}", format!("/v1/tx/{finalized}"), 200),
            ("/v1/tx/{hash}", format!("/v1/tx/{rejected}"), 200),
            (
                "/v1/tx/{hash}",
                format!("/v1/tx/{}", Hash::of(b"never sent")),
                200,
            ),
            ("/v1/tx/{hash}", "/v1/tx/0x12".into(), 400),
            ("/openapi.json", "/openapi.json".into(), 200),
        ];
        let mut answered = std::collections::BTreeSet::new();
        let mut seen = std::collections::BTreeMap::new();
        for (route, path, status) in &gets {
            let r = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("an answer");
            assert_eq!(r.status().as_u16(), *status, "GET {path}");
            let answer: Value = r.json().await.expect("JSON");
            schemas.check("get", route, *status, "application/json", &answer);
            answered.insert(("get", route.to_string()));
            seen.insert(path.clone(), answer);
        }
        // The answers hold what the schemas are meant to be checked on, not empty lists.
        let data = |path: &str| seen[path]["data"].clone();
        assert!(data("/v1/status")["pending_validators"].is_array());
        let proof = &data(&format!("/v1/accounts/{}?proof=true", node.account()));
        assert!(proof["node"].is_number(), "{proof}");
        assert!(seen[&format!("/v1/accounts/{}?proof=true", node.account())]["proof"].is_object());
        assert_eq!(
            data("/v1/farms/1?proof=true")["public_ips"][0]["contract"],
            1
        );
        assert_eq!(
            data("/v1/contracts/1?proof=true")["spec"]["kind"],
            "deployment"
        );
        for list in [
            "/v1/contracts/1/bills",
            "/v1/farms/1/receipts?period=0",
            "/v1/proposals/1/votes",
        ] {
            assert!(data(list)["items"][0].is_object(), "{list}: {}", data(list));
        }
        assert!(seen["/v1/blocks/4"]["end_events"][0].is_object());
        assert_eq!(
            seen[&format!("/v1/tx/{rejected}")]["status"]["status"],
            "rejected"
        );

        // Submissions: one taken, and a batch with one taken and one refused.
        let tx = |nonce| {
            SignedTx::new(
                &d.demo,
                &shared.genesis.chain_id,
                nonce,
                Payload::Transfer {
                    to: node.account(),
                    amount: Amount::tokens(1),
                },
            )
        };
        let r = http
            .post(format!("{base}/v1/tx"))
            .body(tx(7).encode())
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        schemas.check(
            "post",
            "/v1/tx",
            202,
            "application/json",
            &r.json().await.expect("JSON"),
        );
        let r = http
            .post(format!("{base}/v1/tx"))
            .body(vec![1u8, 2, 3])
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        schemas.check(
            "post",
            "/v1/tx",
            400,
            "application/json",
            &r.json().await.expect("JSON"),
        );
        let batch = peergrid_core::codec::encode(&vec![tx(8).encode(), vec![0u8; 3]]);
        let r = http
            .post(format!("{base}/v1/txs"))
            .body(batch)
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), StatusCode::OK);
        let answer: Value = r.json().await.expect("JSON");
        assert_eq!(answer["accepted"], 1, "{answer}");
        schemas.check("post", "/v1/txs", 200, "application/json", &answer);
        answered.insert(("post", "/v1/tx".into()));
        answered.insert(("post", "/v1/txs".into()));

        // The event stream: the first block's data is a FinalizedBlock.
        let mut stream = http
            .get(format!("{base}/v1/events?from=1"))
            .send()
            .await
            .expect("an answer");
        let mut text = String::new();
        while !text.contains("\n\n") {
            let chunk = stream.chunk().await.expect("a chunk").expect("not closed");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .expect("a data line");
        let block: Value = serde_json::from_str(data.trim()).expect("JSON data");
        assert_eq!(block["height"], 1);
        schemas.check("get", "/v1/events", 200, "text/event-stream", &block);
        answered.insert(("get", "/v1/events".into()));

        // Every route that answers JSON was checked with a real answer.
        for (path, item) in schemas.doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("operations") {
                let json = op["responses"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .any(|(s, r)| {
                        s.starts_with('2') && r["content"]["application/json"].is_object()
                    });
                if json {
                    assert!(
                        answered.contains(&(method.as_str(), path.clone())),
                        "{method} {path} answers JSON but no real answer of it is checked here"
                    );
                }
            }
        }

        // The checker refuses what it must: an id as a number, a missing field, an extra one.
        let url = format!("{base}/v1/accounts/{demo}");
        let real: Value = http
            .get(url)
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        let route = "/v1/accounts/{id}";
        assert!(schemas.passes("get", route, 200, &real));
        let mut numeric = real.clone();
        numeric["data"]["account"] = json!(7);
        assert!(
            !schemas.passes("get", route, 200, &numeric),
            "an id as a number"
        );
        let mut units = real.clone();
        units["data"]["balance"] = json!(1_000_000_000_000u64);
        assert!(
            !schemas.passes("get", route, 200, &units),
            "an amount as units"
        );
        let mut missing = real.clone();
        missing["data"]
            .as_object_mut()
            .expect("data")
            .remove("nonce");
        assert!(
            !schemas.passes("get", route, 200, &missing),
            "a field missing"
        );
        let mut extra = real;
        extra["data"]["renamed_nonce"] = json!(1);
        assert!(
            !schemas.passes("get", route, 200, &extra),
            "a field not in the schema"
        );
    }

    #[tokio::test]
    async fn every_documented_route_is_served() {
        let base = serve(big_farm(1)).await;
        let doc = serde_json::to_value(openapi_document()).expect("the document as JSON");
        let http = reqwest::Client::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let url = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            for method in item.as_object().expect("operations").keys() {
                let request = match method.as_str() {
                    "get" => http.get(format!("{base}{url}")),
                    "post" => http.post(format!("{base}{url}")).body(vec![0u8]),
                    other => panic!("{other} {path}: a method the API does not use"),
                };
                let answer = request.send().await.expect("an answer");
                let status = answer.status();
                if status.is_success() {
                    continue;
                }
                // Errors of the handler are fine (a stalled chain's 503 on /health is text);
                // the fallback's "no route" is not.
                let body = answer.text().await.expect("an answer's body");
                assert!(
                    !body.contains("no route") && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} ({url}) is documented but not served: {status} {body}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_farms_receipts_of_a_period_are_paged_past_the_default_limit() {
        let shared = big_farm(250);
        let base = serve(shared).await;
        let get = |path: String| {
            let url = format!("{base}{path}");
            async move {
                let v: Value = reqwest::get(url)
                    .await
                    .expect("get")
                    .json()
                    .await
                    .expect("json");
                v["data"].clone()
            }
        };

        // The newest receipt names the latest period.
        let newest = get("/v1/farms/1/receipts?limit=1".into()).await;
        assert_eq!(newest["items"][0]["period"], 0, "{newest}");
        assert_eq!(newest["current_period"], 2);
        assert_eq!(newest["kept_from_period"], 0);

        // A page holds the default 100; `next` leads through the other 150, in node order.
        let mut receipts: Vec<RewardReceipt> = Vec::new();
        let mut from = Some(0u64);
        let mut pages = 0;
        while let Some(f) = from {
            let page = get(format!("/v1/farms/1/receipts?period=0&from={f}")).await;
            let items: Vec<RewardReceipt> =
                serde_json::from_value(page["items"].clone()).expect("receipts");
            assert!(items.len() <= 100);
            receipts.extend(items);
            from = page["next"].as_u64();
            pages += 1;
        }
        assert_eq!(pages, 3);
        let nodes: Vec<u32> = receipts.iter().map(|r| r.node).collect();
        assert_eq!(nodes, (1..=250).collect::<Vec<u32>>());
        assert!(receipts.iter().all(|r| r.period == 0 && r.farm == 1));

        // Another period has none.
        let none = get("/v1/farms/1/receipts?period=1".into()).await;
        assert_eq!(none["items"], json!([]));
        assert_eq!(none["next"], Value::Null);
    }

    #[tokio::test]
    async fn every_error_is_json_that_says_what_to_send_and_the_supply_adds_up() {
        let shared = big_farm(3);
        let base = serve(shared).await;
        let http = reqwest::Client::new();
        let cases = [
            ("GET", "/v1/blocks/abc", 400, "bad_request", "abc"),
            ("GET", "/v1/farms?from=x", 400, "bad_request", "from"),
            (
                "GET",
                "/v1/nodes/1/receipts/soon",
                400,
                "bad_request",
                "soon",
            ),
            ("GET", "/v1/nothing", 404, "not_found", "/v1/nothing"),
            ("DELETE", "/v1/status", 405, "method_not_allowed", "method"),
            ("GET", "/v1/farms/999", 404, "not_found", "farm 999"),
        ];
        for (method, path, status, kind, mentions) in cases {
            let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let r = http
                .request(method, format!("{base}{path}"))
                .send()
                .await
                .expect("an answer");
            assert_eq!(r.status().as_u16(), status, "{path}");
            let body: Value = r.json().await.expect("a JSON error");
            assert_eq!(body["error"], kind, "{path}: {body}");
            let message = body["message"].as_str().expect("a message");
            assert!(message.contains(mentions), "{path}: {message}");
        }

        // Fees were burned and periods minted: every token is still accounted for.
        let economy: Value = http
            .get(format!("{base}/v1/economy"))
            .send()
            .await
            .expect("economy")
            .json()
            .await
            .expect("json");
        let supply = &economy["data"]["supply"];
        let amount = |field: &str| {
            serde_json::from_value::<Amount>(supply[field].clone())
                .unwrap_or_else(|e| panic!("supply.{field}: {e}: {supply}"))
                .0
        };
        let (genesis, minted, burned) = (amount("genesis"), amount("minted"), amount("burned"));
        assert!(burned > 0, "the transfers burned fees: {supply}");
        assert_eq!(amount("balances"), genesis + minted - burned, "{supply}");
        assert_eq!(supply["conserved"], true);
    }

    #[tokio::test]
    async fn metrics_say_what_an_operator_watches() {
        let (shared, d, _) = busy_chain();
        let chain = shared.genesis.chain_id.clone();
        let (height, nonce) = shared
            .with_state(|s| (s.height(), s.account(&d.demo.account()).nonce))
            .expect("state");
        // The fixture leaves one of the demo's transactions waiting, at `nonce`.
        let waiting = shared.mempool.lock().expect("mempool").len();
        let base = serve(shared).await;
        let http = reqwest::Client::new();
        // One accepted, one that is not a transaction, one signed far ahead of its nonce.
        let transfer = |nonce| {
            SignedTx::new(
                &d.demo,
                &chain,
                nonce,
                Payload::Transfer {
                    to: d.faucet.account(),
                    amount: Amount::tokens(1),
                },
            )
            .encode()
        };
        for (body, status) in [
            (transfer(nonce + 1), StatusCode::ACCEPTED),
            (vec![1u8, 2, 3], StatusCode::BAD_REQUEST),
            (transfer(nonce + 1_000_000), StatusCode::CONFLICT),
        ] {
            let r = http
                .post(format!("{base}/v1/tx"))
                .body(body)
                .send()
                .await
                .expect("an answer");
            assert_eq!(r.status(), status, "{}", r.text().await.unwrap_or_default());
        }
        let r = reqwest::get(format!("{base}/metrics")).await.expect("get");
        assert_eq!(r.status(), StatusCode::OK);
        let text = r.text().await.expect("text");
        let text = text.as_str();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("no {series} in {text}"))
        };
        assert_eq!(value("peergrid_ledger_height"), height as f64);
        assert_eq!(value("peergrid_ledger_validators"), 1.0);
        assert_eq!(
            value("peergrid_ledger_rules"),
            peergrid_ledger::genesis::LEDGER_RULES as f64
        );
        // The fixture's chain jumps two periods ahead: the ledger's outage.
        assert!(
            value("peergrid_ledger_outage_seconds_total") > 1000.0,
            "{text}"
        );
        // Its last block is from 2023: the ledger is not finalizing now.
        assert_eq!(value("peergrid_ledger_finalizing"), 0.0);
        assert_eq!(value("peergrid_mempool_transactions"), (waiting + 1) as f64);
        assert_eq!(
            value("peergrid_api_transactions_total{result=\"accepted\"}"),
            1.0
        );
        assert_eq!(
            value("peergrid_api_transactions_total{result=\"refused\"}"),
            2.0
        );
        assert_eq!(
            value("peergrid_api_transactions_total{result=\"mempool_full\"}"),
            0.0
        );
        assert_eq!(value("peergrid_api_event_streams"), 0.0);
        // Every series says what it is, once.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}: {text}"
            );
        }
    }

    #[tokio::test]
    async fn status_and_the_epoch_route_show_the_validator_set_in_force() {
        let shared = big_farm(1);
        let validator = shared.genesis.validators[0].account;
        let base = serve(shared).await;
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move { reqwest::get(url).await.expect("get") }
        };
        let status: Value = get("/v1/status").await.json().await.expect("json");
        let d = &status["data"];
        // Three blocks of devnet's 100-block epochs: epoch 0, the next from height 100.
        assert_eq!(d["epoch"], 0, "{d}");
        assert_eq!(d["epoch_blocks"], 100);
        assert_eq!(d["next_epoch_height"], 100);
        assert_eq!(d["pending_validators"], Value::Null);
        assert_eq!(d["validator_set"]["epoch"], 0);
        assert_eq!(
            d["validator_set"]["members"][0]["account"],
            json!(validator)
        );
        let set: Value = get("/v1/epochs/0/validators")
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(set["data"], d["validator_set"]);
        let later = get("/v1/epochs/1/validators").await;
        assert_eq!(later.status(), 404, "epoch 1 is not reached yet");
    }

    #[tokio::test]
    async fn event_streams_are_bounded_with_a_retry_hint_and_freed_when_a_client_leaves() {
        let open = |base: String| async move {
            reqwest::get(format!("{base}/v1/events"))
                .await
                .expect("an answer")
        };
        let refusal = |r: reqwest::Response| async move {
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let status = r.status().as_u16();
            let body: ErrorBody = r.json().await.expect("an ApiError");
            (status, body.error, retry)
        };
        // Two per address, three in all: every request here comes from 127.0.0.1.
        let mut api = Api::new(big_farm(1), None);
        api.event_streams = EventStreams::new(3, 2);
        let streams = api.event_streams.clone();
        let base = serve_api(api).await;
        let first = open(base.clone()).await;
        let second = open(base.clone()).await;
        assert_eq!(
            (first.status().as_u16(), second.status().as_u16()),
            (200, 200)
        );
        let (status, kind, retry) = refusal(open(base.clone()).await).await;
        assert_eq!(
            (status, kind.as_str(), retry.as_deref()),
            (429, "too_many_streams", Some("5"))
        );
        drop(first);
        // The server learns that a client left when its next keep-alive cannot be sent.
        let deadline = std::time::Instant::now() + EVENTS_KEEP_ALIVE * 3;
        while streams.open_count() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "a closed stream still holds its slot"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let third = open(base.clone()).await;
        assert_eq!(third.status(), 200);

        // One in all: the validator is full whoever asks.
        let mut api = Api::new(big_farm(1), None);
        api.event_streams = EventStreams::new(1, 5);
        let base = serve_api(api).await;
        let _only = open(base.clone()).await;
        let (status, kind, retry) = refusal(open(base).await).await;
        assert_eq!(
            (status, kind.as_str(), retry.as_deref()),
            (503, "busy", Some("5"))
        );
        drop((second, third));
    }
}
