//! `Client::send` when another process holds the key's nonce: it signs again at the
//! account's new nonce until the validator accepts, and gives up at its deadline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use peergrid_client::types::api::{Submitted, Supply, TxAnswer};
use peergrid_client::types::params::Params;
use peergrid_client::{AccountView, AtHeight, Client, ClientError, Status, TxStatus};
use peergrid_core::{AccountId, Amount, Hash, Keypair, Payload, SignedTx, TxHash};

/// What the fake validator saw and will answer.
#[derive(Default)]
struct Ledger {
    /// The account's nonce as the validator reports it.
    nonce: u64,
    /// The nonce and hash of every transaction posted.
    posted: Vec<(u64, TxHash)>,
    /// How to refuse the next posts (status, kind); accepted once none is left. A kind
    /// of `"lost"` takes the transaction and answers `stale_nonce`, as a validator does
    /// when the first one it went to took it and its answer was lost.
    refusals: VecDeque<(u16, &'static str)>,
    /// The transactions taken: final when asked after.
    taken: Vec<TxHash>,
    /// The height its status says its ledger is at.
    height: u64,
    /// The genesis its status names, when not the test's usual one.
    genesis: Option<Hash>,
}

type Shared = Arc<Mutex<Ledger>>;

fn at<T>(data: T) -> AtHeight<T> {
    AtHeight {
        height: 10,
        root: Hash([1; 32]),
        data,
        proof: None,
    }
}

async fn status(State(ledger): State<Shared>) -> Json<AtHeight<Status>> {
    let (height, genesis) = {
        let l = ledger.lock().expect("lock");
        (l.height, l.genesis)
    };
    let mut status = AtHeight {
        height,
        ..status_at()
    };
    if let Some(genesis) = genesis {
        status.data.genesis_hash = genesis;
    }
    Json(status)
}

fn status_at() -> AtHeight<Status> {
    at(Status {
        chain_id: "send-test".into(),
        genesis_hash: Hash([2; 32]),
        time_ms: 1_700_000_000_000,
        last_block_age_ms: 100,
        finalizing: true,
        validators: Vec::new(),
        epoch: 0,
        epoch_blocks: 100,
        validator_set: None,
        pending_validators: None,
        next_epoch_height: 100,
        supply: Supply {
            genesis: Amount(0),
            minted: Amount(0),
            burned: Amount(0),
        },
        mempool: 0,
        params: Params::devnet(),
        mesh_bootstrap: Vec::new(),
        council: None,
        ledger_rules: 1,
    })
}

async fn account(
    State(ledger): State<Shared>,
    Path(id): Path<AccountId>,
) -> Json<AtHeight<AccountView>> {
    let nonce = ledger.lock().expect("lock").nonce;
    Json(at(AccountView {
        account: id,
        balance: Amount(1_000),
        nonce,
        node: None,
    }))
}

async fn submit(State(ledger): State<Shared>, body: Bytes) -> Response {
    let Ok(tx) = SignedTx::decode(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut ledger = ledger.lock().expect("lock");
    ledger.posted.push((tx.body.nonce, tx.hash()));
    match ledger.refusals.pop_front() {
        Some((status, "lost")) => {
            ledger.taken.push(tx.hash());
            ledger.nonce += 1;
            let body = serde_json::json!({ "error": "stale_nonce", "message": "stale nonce" });
            (StatusCode::from_u16(status).expect("a status"), Json(body)).into_response()
        }
        Some((status, kind)) => {
            // The other process's transaction at this nonce is final by the time we look.
            ledger.nonce += 1;
            let body = serde_json::json!({ "error": kind, "message": format!("{kind} at nonce {}", tx.body.nonce) });
            (StatusCode::from_u16(status).expect("a status"), Json(body)).into_response()
        }
        None => {
            ledger.taken.push(tx.hash());
            (StatusCode::ACCEPTED, Json(Submitted { hash: tx.hash() })).into_response()
        }
    }
}

async fn tx_status(State(ledger): State<Shared>, Path(hash): Path<TxHash>) -> Json<TxAnswer> {
    let taken = ledger.lock().expect("lock").taken.contains(&hash);
    Json(TxAnswer {
        hash,
        status: match taken {
            true => TxStatus::Finalized {
                height: 11,
                events: Vec::new(),
            },
            false => TxStatus::Unknown,
        },
    })
}

/// A fake validator on a free loopback port whose account nonce starts at 5 and whose first
/// posts are refused with `refusals`.
async fn validator(refusals: &[(u16, &'static str)]) -> (String, Shared) {
    let ledger = Arc::new(Mutex::new(Ledger {
        nonce: 5,
        refusals: refusals.iter().copied().collect(),
        height: 10,
        ..Ledger::default()
    }));
    let app = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/tx", post(submit))
        .route("/v1/tx/{hash}", get(tx_status))
        .with_state(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, ledger)
}

fn transfer() -> Payload {
    Payload::Transfer {
        to: Keypair::from_seed([9; 32]).account(),
        amount: Amount(1),
    }
}

#[tokio::test]
async fn a_taken_or_stale_nonce_is_signed_again_at_the_next_one() {
    let (url, ledger) = validator(&[(409, "nonce_taken"), (400, "stale_nonce")]).await;
    let client = Client::new(vec![url]);
    let key = Keypair::from_seed([3; 32]);
    let start = Instant::now();
    let (hash, status) = client
        .send(&key, transfer(), Duration::from_secs(10))
        .await
        .expect("sent after two refusals");
    let posted = ledger.lock().expect("lock").posted.clone();
    let nonces: Vec<u64> = posted.iter().map(|(n, _)| *n).collect();
    assert_eq!(nonces, vec![5, 6, 7], "signed again at each new nonce");
    assert_eq!(
        Some(&hash),
        posted.last().map(|(_, h)| h),
        "the accepted one's hash"
    );
    assert!(
        matches!(status, TxStatus::Finalized { height: 11, .. }),
        "{status:?}"
    );
    // It waited for the other transaction each time instead of hammering the validator.
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_nonce_taken_for_ever_ends_at_the_deadline() {
    let (url, ledger) = validator(&[(409, "nonce_taken"); 100]).await;
    let client = Client::new(vec![url]);
    let key = Keypair::from_seed([3; 32]);
    let start = Instant::now();
    let answer = client.send(&key, transfer(), Duration::from_secs(1)).await;
    match answer {
        Err(ClientError::Refused { kind, .. }) => assert_eq!(kind, "nonce_taken"),
        other => panic!("expected the last refusal, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let tries = ledger.lock().expect("lock").posted.len();
    assert!(
        (2..=5).contains(&tries),
        "{tries} tries in 1 s at 250 ms apart"
    );
}

#[tokio::test]
async fn a_transaction_taken_though_its_answer_was_lost_is_waited_for_not_signed_again() {
    let (url, ledger) = validator(&[(400, "lost")]).await;
    let client = Client::new(vec![url]);
    let key = Keypair::from_seed([3; 32]);
    let (hash, status) = client
        .send(&key, transfer(), Duration::from_secs(10))
        .await
        .expect("the taken one");
    let posted = ledger.lock().expect("lock").posted.clone();
    assert_eq!(posted.len(), 1, "signed once: the payload runs once");
    assert_eq!(hash, posted[0].1);
    assert!(matches!(status, TxStatus::Finalized { .. }), "{status:?}");
}

#[tokio::test]
async fn another_refusal_is_not_retried() {
    let (url, ledger) = validator(&[(400, "rejected")]).await;
    let client = Client::new(vec![url]);
    let key = Keypair::from_seed([3; 32]);
    match client.send(&key, transfer(), Duration::from_secs(10)).await {
        Err(ClientError::Refused { kind, .. }) => assert_eq!(kind, "rejected"),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(ledger.lock().expect("lock").posted.len(), 1);
}

/// A process that takes connections and never answers, as a SIGSTOPped validator does
/// (the kernel completes the handshakes); the listener must be kept.
async fn frozen() -> (String, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    (url, listener)
}

#[tokio::test]
async fn the_client_asks_the_validator_furthest_along_and_not_a_frozen_one() {
    let (stuck, _held) = frozen().await;
    let (behind, _) = validator(&[]).await;
    let (ahead, ledger) = validator(&[]).await;
    ledger.lock().expect("lock").height = 50;
    // A URL of another chain, further along still, is not taken for this one's.
    let (other, theirs) = validator(&[]).await;
    {
        let mut theirs = theirs.lock().expect("lock");
        theirs.height = 999;
        theirs.genesis = Some(Hash([7; 32]));
    }
    // Listed first, as a CLI's first validator would be.
    let client = Client::new(vec![stuck, other, behind, ahead]);
    let started = Instant::now();
    let status = client.status().await.expect("status");
    let chosen_by = Instant::now();
    assert_eq!(status.height, 50, "the validator furthest along answers");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the frozen validator's 10 s request deadline was waited: {:?}",
        started.elapsed()
    );

    // The chosen one falls behind (frozen, then catching up): the choice holds until
    // the client is told to choose again, then the one now furthest along answers. Told
    // so within 5 s of the last choice, it keeps it: a stranger's requests can ask for
    // choices, and each holds the client's requests while it is made.
    ledger.lock().expect("lock").height = 5;
    let status = client.status().await.expect("status");
    assert_eq!(status.height, 5, "a choice holds for a while");
    client.choose_again().await;
    let status = client.status().await.expect("status");
    assert_eq!(status.height, 5, "a choice made just now is kept");
    tokio::time::sleep(
        (chosen_by + Duration::from_millis(5_100)).saturating_duration_since(Instant::now()),
    )
    .await;
    client.choose_again().await;
    let status = client.status().await.expect("status");
    assert_eq!(
        status.height, 10,
        "the validator now furthest along answers"
    );
}

#[tokio::test]
async fn a_choice_left_unpolled_does_not_hold_up_other_requests() {
    let (stuck, _held) = frozen().await;
    let (live, _) = validator(&[]).await;
    let client = Client::new(vec![stuck, live]);
    // A request whose future is polled into its choice of validator and then left, as a
    // stream's is when the loop reading it stops waiting and does something else.
    let mut left = Box::pin(client.status());
    let polled = tokio::time::timeout(Duration::from_millis(100), &mut left).await;
    assert!(
        polled.is_err(),
        "still choosing: the frozen validator holds it"
    );
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(15), client.status())
        .await
        .expect("another request is not held up by the one left")
        .expect("status");
    assert_eq!(status.height, 10);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(left);
}
