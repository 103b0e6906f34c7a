//! The ledger HTTP API every validator serves.
//!
//! Reads answer from the latest finalized state and say which height and state root
//! they were read at. With `?proof=true`, an account, farm, node or contract comes with
//! its proof against that root (`peergrid_ledger::commitment`), which a client checks
//! without trusting this validator; the root itself it compares with another
//! validator's block at that height. `/openapi.json` describes every route.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use futures::channel::mpsc;
use serde::Deserialize;
use serde_json::{Value, json};

use peergrid_core::tx::TX_BYTES_MAX;
use peergrid_core::{AccountId, Amount, Hash, SignedTx};
use peergrid_ledger::commitment::StateProof;

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
}

/// An API error: a status, a machine-readable kind and a message that says what to do.
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
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
        (
            self.status,
            Json(json!({ "error": self.kind, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The router with every route.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route(
            "/v1/tx",
            post(submit).layer(DefaultBodyLimit::max(2 * TX_BYTES_MAX + 1024)),
        )
        .route(
            "/v1/txs",
            post(submit_batch).layer(DefaultBodyLimit::max(BATCH_BYTES_MAX)),
        )
        .route("/v1/tx/{hash}", get(tx_status))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/farms", get(farms))
        .route("/v1/farms/{id}", get(farm))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", get(node))
        .route("/v1/contracts", get(contracts))
        .route("/v1/contracts/{id}", get(contract))
        .route("/v1/contracts/{id}/bills", get(bills))
        .route("/v1/farms/{id}/receipts", get(farm_receipts))
        .route("/v1/nodes/{id}/receipts/{period}", get(node_receipt))
        .route("/v1/proposals/{id}/votes", get(votes))
        .route("/v1/economy", get(economy))
        .route("/v1/proposals", get(proposals))
        .route("/v1/proposals/{id}", get(proposal))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/epochs/{epoch}/validators", get(epoch_validators))
        .route("/v1/events", get(events))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(unknown_route)
        .layer(axum::middleware::map_response(plain_errors_as_json))
        .with_state(api)
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// Wrap `value` with the height and root it was read at.
fn at(value: Value, height: u64, root: Hash) -> Json<Value> {
    Json(json!({ "height": height, "root": root, "data": value }))
}

/// `?proof=true` asks for the entry's proof against the root.
#[derive(Deserialize)]
struct WithProof {
    #[serde(default)]
    proof: bool,
}

/// Like [`at`], with `proof` beside the root when one was asked for.
fn at_proven(value: Value, height: u64, root: Hash, proof: Option<StateProof>) -> Json<Value> {
    let mut answer = at(value, height, root);
    if let Some(proof) = proof {
        answer.0["proof"] = to_json(proof);
    }
    answer
}

fn to_json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn status(State(api): State<Api>) -> ApiResult {
    let mempool = api.shared.mempool.lock().map(|p| p.len()).unwrap_or(0);
    let (v, height, root) = read(&api, |s| {
        let g = s.globals();
        let age_ms = now_ms().saturating_sub(g.time_ms);
        Ok(json!({
            "chain_id": s.chain_id(),
            "genesis_hash": s.config().genesis_hash,
            "time_ms": g.time_ms,
            "last_block_age_ms": age_ms,
            "finalizing": s.height() > 0 && age_ms < stall_after_ms(s),
            "validators": s.config().validators,
            "epoch": s.epoch(),
            "epoch_blocks": s.epoch_blocks(),
            // The set that decides the next block, with the epoch it took over in.
            "validator_set": s.validator_set(s.epoch()),
            // Voted in by governance, taking over after the current epoch's last block.
            "pending_validators": s.config().pending_validators,
            "next_epoch_height": (s.epoch() + 1).saturating_mul(s.epoch_blocks()),
            "supply": { "genesis": g.genesis_supply, "minted": g.minted, "burned": g.burned },
            "mempool": mempool,
            "params": s.params(),
            "mesh_bootstrap": api.shared.genesis.mesh_bootstrap,
        }))
    })?;
    Ok(at(v, height, root))
}

#[derive(Deserialize)]
struct SubmitJson {
    /// The transaction's canonical bytes, hex.
    tx: String,
}

async fn submit(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let bytes = if is_json {
        let req: SubmitJson = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("expected {{\"tx\": \"<hex>\"}}: {e}")))?;
        hex::decode(req.tx.trim()).map_err(|_| ApiError::bad("\"tx\" is not hex"))?
    } else {
        body.to_vec()
    };
    let tx = SignedTx::decode(&bytes)
        .map_err(|e| ApiError::bad(format!("{e}; send the canonical encoding")))?;
    match api.shared.submit(tx.clone()) {
        Ok(hash) => {
            if let Some(g) = &api.gossip {
                let _ = g.unbounded_send(tx);
            }
            Ok((StatusCode::ACCEPTED, Json(json!({ "hash": hash }))).into_response())
        }
        Err(MempoolError::Full { .. }) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mempool_full",
            "the mempool is full; retry in a few seconds",
        )),
        Err(MempoolError::Rejected(e)) => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "rejected",
            message: e.to_string(),
        }),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            e.to_string(),
        )),
    }
}

/// Many transactions in one request: the canonical encoding of a list of encoded transactions.
/// Answers how many were accepted and why each other one was not.
async fn submit_batch(State(api): State<Api>, body: axum::body::Bytes) -> ApiResult {
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
            Err(e) => errors.push((i, e.to_string())),
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
    let results = api.shared.submit_batch(decoded);
    let mut accepted = 0usize;
    for (i, result) in positions.into_iter().zip(results) {
        let copy = copies.as_mut().and_then(Iterator::next);
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
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(i, message)| json!({ "index": i, "message": message }))
        .collect();
    Ok(Json(json!({ "accepted": accepted, "errors": errors })))
}

fn parse<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|e| ApiError::bad(format!("invalid {what} {text:?}: {e}")))
}

async fn tx_status(State(api): State<Api>, Path(hash): Path<String>) -> ApiResult {
    let hash: Hash = parse("transaction hash", &hash)?;
    Ok(Json(
        json!({ "hash": hash, "status": to_json(api.shared.status(&hash)) }),
    ))
}

async fn account(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult {
    let id: AccountId = parse("account", &id)?;
    let ((v, proof), h, r) = read(&api, |s| {
        let node = s.node_by_account(&id).map(|n| n.id);
        let v = json!({ "account": id, "balance": s.account(&id).balance, "nonce": s.account(&id).nonce, "node": node });
        Ok((v, q.proof.then(|| s.prove_account(&id))))
    })?;
    Ok(at_proven(v, h, r, proof))
}

#[derive(Deserialize)]
struct Page {
    from: Option<u64>,
    limit: Option<usize>,
    farm: Option<u32>,
    owner: Option<String>,
    node: Option<u32>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, PAGE_MAX)
    }
}

/// A page of items and where the next page starts.
fn page<T: serde::Serialize>(items: impl Iterator<Item = (u64, T)>, limit: usize) -> Value {
    let mut out = Vec::new();
    let mut next = None;
    for (id, item) in items {
        if out.len() == limit {
            next = Some(id);
            break;
        }
        out.push(to_json(item));
    }
    json!({ "items": out, "next": next })
}

async fn farms(State(api): State<Api>, Query(p): Query<Page>) -> ApiResult {
    let from = u32::try_from(p.from.unwrap_or(1)).unwrap_or(u32::MAX);
    let (v, h, r) = read(&api, |s| {
        Ok(page(s.farms(from).map(|f| (f.id as u64, f)), p.limit()))
    })?;
    Ok(at(v, h, r))
}

async fn farm(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult {
    let ((v, proof), h, r) = read(&api, |s| {
        let farm = match id.parse::<u32>() {
            Ok(n) => s.farm(n),
            Err(_) => s.farm_by_name(&id),
        };
        farm.map(|f| (to_json(f), q.proof.then(|| s.prove_farm(f.id))))
            .ok_or_else(|| ApiError::not_found(format!("farm {id}")))
    })?;
    Ok(at_proven(v, h, r, proof))
}

fn node_json(n: &peergrid_ledger::Node, s: &peergrid_ledger::State) -> Value {
    let mut v = to_json(n);
    v["status"] = to_json(n.status(s.time_ms(), s.params()));
    v["free"] = to_json(n.free());
    v
}

async fn nodes(State(api): State<Api>, Query(p): Query<Page>) -> ApiResult {
    let from = u32::try_from(p.from.unwrap_or(1)).unwrap_or(u32::MAX);
    let (v, h, r) = read(&api, |s| {
        let items = s
            .nodes(from)
            .filter(|n| p.farm.is_none_or(|f| n.farm == f))
            .map(|n| (n.id as u64, node_json(n, s)));
        Ok(page(items, p.limit()))
    })?;
    Ok(at(v, h, r))
}

async fn node(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult {
    let ((v, proof), h, r) = read(&api, |s| {
        let node = match id.parse::<u32>() {
            Ok(n) => s.node(n),
            Err(_) => id
                .parse::<AccountId>()
                .ok()
                .and_then(|a| s.node_by_account(&a)),
        };
        node.map(|n| (node_json(n, s), q.proof.then(|| s.prove_node(n.id))))
            .ok_or_else(|| ApiError::not_found(format!("node {id}")))
    })?;
    Ok(at_proven(v, h, r, proof))
}

async fn contracts(State(api): State<Api>, Query(p): Query<Page>) -> ApiResult {
    let owner = match &p.owner {
        Some(o) => Some(parse::<AccountId>("owner", o)?),
        None => None,
    };
    let (v, h, r) = read(&api, |s| {
        let from = p.from.unwrap_or(1);
        // Each filter reads its own index; both together filter the owner's by node.
        let all: Box<dyn Iterator<Item = &peergrid_ledger::Contract>> = match (&owner, p.node) {
            (Some(o), _) => Box::new(s.contracts_of(o, from)),
            (None, Some(n)) => Box::new(s.contracts_on(n, from)),
            (None, None) => Box::new(s.contracts(from)),
        };
        let items = all
            .filter(|c| p.node.is_none_or(|n| c.node == Some(n)))
            .map(|c| (c.id, c));
        Ok(page(items, p.limit()))
    })?;
    Ok(at(v, h, r))
}

async fn contract(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<WithProof>,
) -> ApiResult {
    let ((v, proof), h, r) = read(&api, |s| {
        let c = match id.parse::<u64>() {
            Ok(n) => s.contract(n),
            Err(_) => s.contract_by_name(&id),
        };
        c.map(|c| (to_json(c), q.proof.then(|| s.prove_contract(c.id))))
            .ok_or_else(|| ApiError::not_found(format!("contract {id}")))
    })?;
    Ok(at_proven(v, h, r, proof))
}

#[derive(Deserialize)]
struct BillsQuery {
    from_ms: Option<u64>,
    limit: Option<usize>,
}

/// A contract's bills, oldest first from `?from_ms=`; `next` is where the next page starts.
async fn bills(
    State(api): State<Api>,
    Path(id): Path<u64>,
    Query(q): Query<BillsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, PAGE_MAX);
    let (v, h, r) = read(&api, |s| {
        if s.contract(id).is_none() {
            return Err(ApiError::not_found(format!("contract {id}")));
        }
        let items = s.bills(id, q.from_ms.unwrap_or(0)).map(|b| (b.from_ms, b));
        let mut out = page(items, limit);
        // Bills past the retention left the state; what they added up to did not.
        out["pruned"] = to_json(s.pruned_bills(id));
        Ok(out)
    })?;
    Ok(at(v, h, r))
}

#[derive(Deserialize)]
struct ReceiptsQuery {
    period: Option<u64>,
    from: Option<u32>,
    limit: Option<usize>,
}

/// A farm's reward receipts. With `?period=`, that period's in node order from `?from=`
/// (a node id), paged like every list: `next` is where the next page starts. Without it,
/// the newest receipts first, one page (the first receipt names the latest period minted).
/// `kept_from_period` is the oldest period whose receipts the state still holds.
async fn farm_receipts(
    State(api): State<Api>,
    Path(id): Path<u32>,
    Query(q): Query<ReceiptsQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).clamp(1, PAGE_MAX);
    let (v, h, r) = read(&api, |s| {
        if s.farm(id).is_none() {
            return Err(ApiError::not_found(format!("farm {id}")));
        }
        let mut out = match q.period {
            Some(period) => page(
                s.receipts_of_farm_period(id, period, q.from.unwrap_or(0))
                    .map(|rc| (rc.node as u64, rc)),
                limit,
            ),
            None => {
                let items: Vec<Value> = s
                    .receipts_of_farm(id, (u64::MAX, 0))
                    .take(limit)
                    .map(to_json)
                    .collect();
                json!({ "items": items })
            }
        };
        out["current_period"] = json!(s.period_of(s.time_ms()));
        // Receipts of earlier periods are pruned from the state (their events stay in blocks).
        out["kept_from_period"] = json!(s.receipts_kept_from());
        Ok(out)
    })?;
    Ok(at(v, h, r))
}

async fn node_receipt(State(api): State<Api>, Path((id, period)): Path<(u32, u64)>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        s.receipt(period, id).map(to_json).ok_or_else(|| {
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

async fn votes(State(api): State<Api>, Path(id): Path<u64>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        if s.proposal(id).is_none() {
            return Err(ApiError::not_found(format!("proposal {id}")));
        }
        let items: Vec<Value> = s
            .votes(id)
            .map(|(voter, vote)| {
                let mut v = to_json(vote);
                v["voter"] = to_json(voter);
                v
            })
            .collect();
        Ok(json!({ "items": items }))
    })?;
    Ok(at(v, h, r))
}

/// Minting progress, farmers' total weight, everything billed, and the current period.
async fn economy(State(api): State<Api>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        let mut v = to_json(s.economy());
        let period = s.period_of(s.time_ms());
        let (start, end) = s.period_bounds(period);
        v["current_period"] = json!({ "period": period, "start_ms": start, "end_ms": end });
        let supply = s.supply();
        let balances = api.shared.total_balances(s);
        v["supply"] = json!({
            "genesis": supply.genesis,
            "minted": supply.minted,
            "burned": supply.burned,
            // Every balance, pools included; a sum past what an amount holds is shown as the
            // largest amount, and is not conserved.
            "balances": Amount(u64::try_from(balances).unwrap_or(u64::MAX)),
            "conserved": supply.expected() == Some(balances),
        });
        Ok(v)
    })?;
    Ok(at(v, h, r))
}

async fn proposals(State(api): State<Api>, Query(p): Query<Page>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        Ok(page(
            s.proposals(p.from.unwrap_or(1)).map(|p| (p.id, p)),
            p.limit(),
        ))
    })?;
    Ok(at(v, h, r))
}

async fn proposal(State(api): State<Api>, Path(id): Path<u64>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        s.proposal(id)
            .map(to_json)
            .ok_or_else(|| ApiError::not_found(format!("proposal {id}")))
    })?;
    Ok(at(v, h, r))
}

async fn epoch_validators(State(api): State<Api>, Path(epoch): Path<u64>) -> ApiResult {
    let (v, h, r) = read(&api, |s| {
        s.validator_set(epoch).map(to_json).ok_or_else(|| {
            ApiError::not_found(format!("validator set of epoch {epoch} (not reached yet)"))
        })
    })?;
    Ok(at(v, h, r))
}

async fn block(State(api): State<Api>, Path(height): Path<u64>) -> ApiResult {
    api.shared
        .receipts
        .block(height)
        .map(|b| Json(to_json(b)))
        .ok_or_else(|| ApiError::not_found(format!("block {height}")))
}

#[derive(Deserialize)]
struct From {
    from: Option<u64>,
}

/// Finalized blocks as server-sent events, from `?from=H` (or the `Last-Event-ID` + 1) onward:
/// stored blocks first, then live ones, so a follower that reconnects misses nothing.
async fn events(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<From>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|h| h + 1);
    let start = q.from.or(resume);
    // Subscribe before reading the height, so no block falls between replay and live.
    let live = api.shared.finalized.subscribe();
    let head = api.shared.with_state(|s| s.height()).unwrap_or(0);
    let next = start.unwrap_or(head + 1).max(1);
    let state = (api.shared.clone(), live, next);
    let stream = futures::stream::unfold(state, |(shared, mut live, next)| async move {
        let head = shared.with_state(|s| s.height()).unwrap_or(0);
        let block: Arc<FinalizedBlock> = if next <= head {
            Arc::new(shared.receipts.block(next)?)
        } else {
            loop {
                match live.recv().await {
                    Ok(b) if b.height == next => break b,
                    Ok(b) if b.height < next => continue,
                    // Skipped ahead (lagged): fall back to the stored copy.
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        break Arc::new(shared.receipts.block(next)?);
                    }
                    Err(_) => return None,
                }
            }
        };
        let event = SseEvent::default()
            .id(block.height.to_string())
            .event("block")
            .data(shared.block_json(&block));
        Some((Ok(event), (shared, live, next + 1)))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(EVENTS_KEEP_ALIVE))
}

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

async fn metrics(State(api): State<Api>) -> Response {
    let mempool = api.shared.mempool.lock().map(|p| p.len()).unwrap_or(0);
    let (height, time_ms, burned) = api
        .shared
        .with_state(|s| (s.height(), s.time_ms(), s.globals().burned.0))
        .unwrap_or_default();
    let body = format!(
        "# HELP peergrid_ledger_height Height of the last finalized block applied.\n\
         # TYPE peergrid_ledger_height gauge\npeergrid_ledger_height {height}\n\
         # HELP peergrid_ledger_last_block_age_seconds Seconds since the last finalized block's time.\n\
         # TYPE peergrid_ledger_last_block_age_seconds gauge\npeergrid_ledger_last_block_age_seconds {:.3}\n\
         # HELP peergrid_mempool_transactions Transactions waiting for a block.\n\
         # TYPE peergrid_mempool_transactions gauge\npeergrid_mempool_transactions {mempool}\n\
         # HELP peergrid_ledger_burned_units Token units burned as fees.\n\
         # TYPE peergrid_ledger_burned_units counter\npeergrid_ledger_burned_units {burned}\n",
        now_ms().saturating_sub(time_ms) as f64 / 1000.0
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Every route with its parameters and answers, as OpenAPI 3.1.
pub fn openapi_document() -> Value {
    let at_height = |what: &str| json!({ "description": format!("{what}, with the finalized height and state root it was read at") });
    let list = |what: &str| {
        json!({
            "parameters": [
                { "name": "from", "in": "query", "schema": { "type": "integer" }, "description": "first id of the page" },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": PAGE_MAX } }
            ],
            "responses": { "200": at_height(&format!("a page of {what} and the id where the next page starts")) }
        })
    };
    let by_id = |what: &str| {
        json!({
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": { "200": at_height(what), "404": { "description": format!("no such {what}") } }
        })
    };
    let proven = |what: &str| {
        json!({
            "parameters": [
                { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "proof", "in": "query", "required": false, "schema": { "type": "boolean" },
                  "description": "add `proof`: the entry's binary value and its Merkle proof against `root`" }
            ],
            "responses": { "200": at_height(what), "404": { "description": format!("no such {what}") } }
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": { "title": "peergrid ledger API", "version": env!("CARGO_PKG_VERSION") },
        "paths": {
            "/v1/status": { "get": { "summary": "chain id, height, root, whether blocks are finalizing", "responses": { "200": at_height("status") } } },
            "/v1/tx": { "post": {
                "summary": "submit a signed transaction (canonical bytes, or JSON {\"tx\": hex})",
                "responses": {
                    "202": { "description": "accepted into the mempool: {\"hash\"}" },
                    "400": { "description": "malformed or rejected, with the rule broken" },
                    "409": { "description": "conflicts with a pending transaction" },
                    "503": { "description": "mempool full" }
                } } },
            "/v1/txs": { "post": {
                "summary": "submit up to 10,000 transactions: borsh(Vec<Vec<u8>>) of canonical encodings",
                "responses": { "200": { "description": "{\"accepted\": n, \"errors\": [{\"index\", \"message\"}]}" } } } },
            "/v1/tx/{hash}": { "get": {
                "summary": "pending, finalized at a height with its events, rejected with the reason, or unknown",
                "parameters": [{ "name": "hash", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "200": { "description": "the status" } } } },
            "/v1/accounts/{id}": { "get": proven("account") },
            "/v1/farms": { "get": list("farms") },
            "/v1/farms/{id}": { "get": proven("farm (id or name)") },
            "/v1/nodes": { "get": list("nodes (filter with ?farm=)") },
            "/v1/nodes/{id}": { "get": proven("node (id or account)") },
            "/v1/contracts": { "get": list("contracts (filter with ?owner= and ?node=)") },
            "/v1/contracts/{id}/bills": { "get": list("a contract's bills, oldest first (?from_ms=, ?limit=)") },
            "/v1/farms/{id}/receipts": { "get": list("a farm's reward receipts: of one ?period= in node order, paged by ?from= (node id) and next; or the newest first (?limit=)") },
            "/v1/nodes/{id}/receipts/{period}": { "get": by_id("reward receipt of one node and period") },
            "/v1/proposals/{id}/votes": { "get": by_id("proposal's votes, with council flag and farmer weight") },
            "/v1/economy": { "get": { "summary": "minting progress, farmers' total weight, total billed, current period, and the supply: genesis + minted − burned against the sum of all balances", "responses": { "200": at_height("economy") } } },
            "/v1/contracts/{id}": { "get": proven("contract (id or gateway name)") },
            "/v1/proposals": { "get": list("governance proposals") },
            "/v1/proposals/{id}": { "get": by_id("proposal") },
            "/v1/blocks/{height}": { "get": {
                "summary": "a finalized block's digest, root and transaction outcomes",
                "parameters": [{ "name": "height", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": { "200": { "description": "the block" }, "404": { "description": "not finalized yet" } } } },
            "/v1/epochs/{epoch}/validators": { "get": {
                "summary": "the validator set that decides an epoch's blocks, with the epoch it took over in; any epoch up to the next block's",
                "parameters": [{ "name": "epoch", "in": "path", "required": true, "schema": { "type": "integer" } }],
                "responses": { "200": at_height("validator set"), "404": { "description": "epoch not reached yet" } } } },
            "/v1/events": { "get": {
                "summary": "finalized blocks as server-sent events; resume with ?from=H or Last-Event-ID",
                "responses": { "200": { "description": "text/event-stream of `block` events" } } } },
            "/health": { "get": { "summary": "200 while blocks finalize, 503 when stalled", "responses": { "200": { "description": "finalizing" }, "503": { "description": "stalled" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "this document", "responses": { "200": { "description": "OpenAPI 3.1" } } } }
        }
    })
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::MempoolLimits;
    use crate::shared::{DynLedger, Receipts};
    use peergrid_core::tx::{Payload, sign_invitation};
    use peergrid_core::{Amount, Capacity, Keypair, Location};
    use peergrid_ledger::{BlockContext, Devnet, Ledger, MemoryStore, RewardReceipt, Store};

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
        // Past period 0 and its settle delay, so every node has its receipt.
        let period_ms = d.genesis.params.minting_period_secs * 1000;
        let blocks = [(1_000, txs), (2_000, register), (2 * period_ms, vec![])];
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

    /// The API over `shared` on a free loopback port; its base URL.
    async fn serve(shared: Arc<Shared>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = router(Api {
            shared,
            gossip: None,
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
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
}
