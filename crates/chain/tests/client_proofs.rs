//! Proven reads against validators that lie: a proof is accepted only for a root some
//! validator vouches for, and never when any validator finalized another root there.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use peergrid_client::{Client, ClientError, FinalizedBlock};
use peergrid_core::{Amount, Hash};
use peergrid_ledger::{Devnet, Genesis, Ledger, MemoryStore};
use peergrid_types::proof::StateProof;
use serde_json::json;

/// What one fake validator says.
#[derive(Clone)]
struct Says {
    /// The root its account answer is against, and the proof it sends.
    answer: Option<(Hash, StateProof)>,
    /// The root of block 1 it reports, if it has block 1.
    block_root: Option<Hash>,
}

async fn account(State(says): State<Arc<Says>>) -> Response {
    match &says.answer {
        Some((root, proof)) => axum::Json(json!({
            "height": 1, "root": root, "data": {}, "proof": proof,
        }))
        .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn block(State(says): State<Arc<Says>>) -> Response {
    match says.block_root {
        Some(root) => axum::Json(FinalizedBlock {
            height: 1,
            digest: "00".repeat(32),
            time_ms: 1,
            root,
            txs: Vec::new(),
            end_events: Vec::new(),
        })
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn validator(says: Says) -> String {
    let app = Router::new()
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/blocks/{height}", get(block))
        .with_state(Arc::new(says));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The ledger at genesis, as a validator opens it.
fn state(genesis: &Genesis) -> Ledger<MemoryStore> {
    Ledger::open(MemoryStore::default(), genesis).expect("a ledger at genesis")
}

#[tokio::test]
async fn a_proof_counts_only_against_a_root_the_validators_finalized() {
    let devnet = Devnet::generate("proofs", 1, 1_000).expect("keys");
    let who = devnet.demo.account();
    let honest = state(&devnet.genesis);
    // The same chain where the demo account holds one token more: what a liar would claim.
    let mut richer = devnet.genesis.clone();
    for b in richer.balances.iter_mut().filter(|b| b.account == who) {
        b.amount = Amount(b.amount.0 + Amount::tokens(1).0);
    }
    let lie = state(&richer);
    assert_ne!(honest.state().root(), lie.state().root());

    // An honest validator: the entry, proven, confirmed by the one that answered.
    let good = validator(Says {
        answer: Some((honest.state().root(), honest.state().prove_account(&who))),
        block_root: Some(honest.state().root()),
    })
    .await;
    let proven = Client::new(vec![good.clone()])
        .proven_account(&who)
        .await
        .expect("an honest proven answer");
    assert_eq!(proven.confirmed_by, 1);
    assert_eq!(
        proven.value.map(|a| a.balance),
        Some(honest.state().account(&who).balance)
    );

    // A lie about the entry: its proof does not lead to the root it names.
    let entry_liar = validator(Says {
        answer: Some((honest.state().root(), lie.state().prove_account(&who))),
        block_root: Some(honest.state().root()),
    })
    .await;
    let refused = Client::new(vec![entry_liar]).proven_account(&who).await;
    assert!(
        matches!(refused, Err(ClientError::Protocol { .. })),
        "{refused:?}"
    );

    // A lie about the root that no validator finalized, not even the liar: refused.
    let unvouched = validator(Says {
        answer: Some((lie.state().root(), lie.state().prove_account(&who))),
        block_root: None,
    })
    .await;
    match Client::new(vec![unvouched]).proven_account(&who).await {
        Err(ClientError::Protocol { reason, .. }) => {
            assert!(reason.contains("no validator confirmed"), "{reason}")
        }
        other => panic!("a root nobody finalized was accepted: {other:?}"),
    }

    // A liar consistent with itself, beside an honest validator: the other root decides.
    let consistent_liar = validator(Says {
        answer: Some((lie.state().root(), lie.state().prove_account(&who))),
        block_root: Some(lie.state().root()),
    })
    .await;
    match Client::new(vec![consistent_liar, good])
        .proven_account(&who)
        .await
    {
        Err(ClientError::Protocol { reason, .. }) => {
            assert!(reason.contains("do not trust"), "{reason}")
        }
        other => panic!("a root another validator contradicts was accepted: {other:?}"),
    }
}
