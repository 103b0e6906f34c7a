//! Proven reads against validators that lie: a proof is accepted only for a root a quorum
//! of its epoch's validators certified, with the sets followed from the genesis set.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use peergrid_client::{Anchor, Client, ClientError};
use peergrid_core::tx::Signature;
use peergrid_core::{AccountId, Amount, Hash, Keypair};
use peergrid_ledger::{Devnet, Genesis, Ledger, MemoryStore};
use peergrid_types::AtHeight;
use peergrid_types::certificate::{
    NAMESPACE, StateCertificate, Statement, StatementSignature, set_digest,
};
use peergrid_types::proof::StateProof;
use peergrid_types::records::{ValidatorMember, ValidatorSet};
use serde_json::json;

/// Blocks per epoch in these fake chains: epoch 0 ends at height 1, epoch 1 at 3.
const EPOCH_BLOCKS: u64 = 2;

/// What one fake validator says.
#[derive(Clone, Default)]
struct Says {
    /// The height and root its account answer is against, and the proof it sends.
    answer: Option<(u64, Hash, StateProof)>,
    /// The certificates it serves, by height.
    certificates: BTreeMap<u64, StateCertificate>,
    /// The validator sets it serves, by epoch.
    sets: BTreeMap<u64, Vec<AccountId>>,
}

async fn account(State(says): State<Arc<Says>>) -> Response {
    match &says.answer {
        Some((height, root, proof)) => axum::Json(json!({
            "height": height, "root": root, "data": {}, "proof": proof,
        }))
        .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn certificate(State(says): State<Arc<Says>>, Path(height): Path<u64>) -> Response {
    match says.certificates.get(&height) {
        Some(c) => axum::Json(c.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not_found", "message": "no certificate"})),
        )
            .into_response(),
    }
}

async fn set(State(says): State<Arc<Says>>, Path(epoch): Path<u64>) -> Response {
    match says.sets.get(&epoch) {
        Some(members) => axum::Json(AtHeight {
            height: 5,
            root: Hash::ZERO,
            data: ValidatorSet {
                epoch,
                first_height: epoch * EPOCH_BLOCKS,
                members: members
                    .iter()
                    .map(|m| ValidatorMember {
                        account: *m,
                        address: None,
                    })
                    .collect(),
            },
            proof: None,
        })
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn validator(says: Says) -> String {
    let app = Router::new()
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/blocks/{height}/certificate", get(certificate))
        .route("/v1/epochs/{epoch}/validators", get(set))
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

fn keys(seeds: std::ops::Range<u8>) -> Vec<Keypair> {
    seeds.map(|i| Keypair::from_seed([i; 32])).collect()
}

fn accounts(keys: &[Keypair]) -> Vec<AccountId> {
    keys.iter().map(Keypair::account).collect()
}

/// A certificate of `height` over `root`, signed by `signers`, naming `next` as the next set.
fn certify(
    signers: &[Keypair],
    chain: Hash,
    height: u64,
    root: Hash,
    next: &[AccountId],
) -> StateCertificate {
    let next_set = set_digest(next);
    let message = Statement {
        chain,
        height,
        block: Hash::of(&height.to_be_bytes()),
        root,
        next_set,
    }
    .message();
    StateCertificate {
        height,
        epoch: height / EPOCH_BLOCKS,
        block: Hash::of(&height.to_be_bytes()),
        root,
        next_set,
        signatures: signers
            .iter()
            .map(|k| StatementSignature {
                signer: k.account(),
                signature: Signature(k.sign(NAMESPACE, &message)),
            })
            .collect(),
    }
}

fn client(urls: Vec<String>, chain: Hash, genesis_set: &[AccountId]) -> Client {
    Client::new(urls).with_anchor(Anchor {
        chain,
        epoch_blocks: EPOCH_BLOCKS,
        validators: genesis_set.to_vec(),
    })
}

fn unproven(result: Result<impl std::fmt::Debug, ClientError>, why: &str) -> String {
    match result {
        Err(ClientError::Unproven { reason }) => reason,
        other => panic!("{why}: accepted or refused otherwise: {other:?}"),
    }
}

#[tokio::test]
async fn a_proof_counts_only_against_a_root_a_quorum_of_its_epoch_certified() {
    let devnet = Devnet::generate("proofs", 1, 1_000).expect("keys");
    let chain = devnet.genesis.hash();
    let who = devnet.demo.account();
    let honest = state(&devnet.genesis);
    // The same chain where the demo account holds one token more: what a liar would claim.
    let mut richer = devnet.genesis.clone();
    for b in richer.balances.iter_mut().filter(|b| b.account == who) {
        b.amount = Amount(b.amount.0 + Amount::tokens(1).0);
    }
    let lie = state(&richer);
    let (root, lie_root) = (honest.state().root(), lie.state().root());
    assert_ne!(root, lie_root);
    let genesis_keys = keys(1..5);
    let genesis_set = accounts(&genesis_keys);
    let honest_certificate = certify(&genesis_keys[..3], chain, 1, root, &genesis_set);
    let says = |root: Hash, proof: StateProof, c: &StateCertificate| Says {
        answer: Some((1, root, proof)),
        certificates: [(1, c.clone())].into(),
        ..Says::default()
    };

    // An honest validator: the entry, proven, its root certified by 3 of the 4.
    let good = validator(says(
        root,
        honest.state().prove_account(&who),
        &honest_certificate,
    ))
    .await;
    let proven = client(vec![good.clone()], chain, &genesis_set)
        .proven_account(&who)
        .await
        .expect("an honest proven answer");
    assert_eq!(
        (proven.certified.signatures, proven.certified.validators),
        (3, 4)
    );
    assert_eq!(
        proven.value.map(|a| a.balance),
        Some(honest.state().account(&who).balance)
    );

    // A lie about the entry: its proof does not lead to the root it names.
    let entry_liar = validator(says(
        root,
        lie.state().prove_account(&who),
        &honest_certificate,
    ))
    .await;
    let refused = client(vec![entry_liar], chain, &genesis_set)
        .proven_account(&who)
        .await;
    assert!(
        matches!(refused, Err(ClientError::Protocol { .. })),
        "{refused:?}"
    );

    // A lie about the root, with the honest certificate: the certified root differs.
    let root_liar = validator(says(
        lie_root,
        lie.state().prove_account(&who),
        &honest_certificate,
    ))
    .await;
    let reason = unproven(
        client(vec![root_liar], chain, &genesis_set)
            .proven_account(&who)
            .await,
        "a root the validators did not certify",
    );
    assert!(reason.contains("do not trust"), "{reason}");

    // A liar consistent with itself, certifying its root with keys of its own: refused, as
    // is a certificate with a single member's signature, or a forged one's.
    let stranger = keys(9..12);
    let forged = [
        (
            certify(&stranger, chain, 1, lie_root, &genesis_set),
            "not a validator",
        ),
        (
            certify(&genesis_keys[..1], chain, 1, lie_root, &genesis_set),
            "1 valid signatures",
        ),
        (
            {
                let mut c = honest_certificate.clone();
                c.root = lie_root;
                c
            },
            "does not check",
        ),
    ];
    for (certificate, expected) in forged {
        let liar = validator(says(
            lie_root,
            lie.state().prove_account(&who),
            &certificate,
        ))
        .await;
        let reason = unproven(
            client(vec![liar], chain, &genesis_set)
                .proven_account(&who)
                .await,
            expected,
        );
        assert!(reason.contains(expected), "{reason}");
    }

    // A root nobody certified at all: the honest validator has no certificate to give.
    let uncertified = validator(Says {
        answer: Some((1, root, honest.state().prove_account(&who))),
        ..Says::default()
    })
    .await;
    let refused = client(vec![uncertified], chain, &genesis_set)
        .proven_account(&who)
        .await;
    assert!(
        matches!(refused, Err(ClientError::Refused { status: 404, .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_client_follows_the_sets_through_each_epoch_s_handoff() {
    let devnet = Devnet::generate("handoffs", 1, 1_000).expect("keys");
    let chain = devnet.genesis.hash();
    let who = devnet.demo.account();
    let honest = state(&devnet.genesis);
    let root = honest.state().root();
    let proof = honest.state().prove_account(&who);
    // Epoch 0: validators 1–4. Epoch 1's set is voted to 3–6 and signs from then on.
    let (old, new) = (keys(1..5), keys(3..7));
    let (old_set, new_set) = (accounts(&old), accounts(&new));
    let handoff = certify(&old[..3], chain, 1, Hash::of(b"h1"), &new_set);
    let epoch_1_end = certify(&new[1..], chain, 3, Hash::of(b"h3"), &new_set);
    let answer = certify(&new[..3], chain, 5, root, &new_set);
    let honest_chain = Says {
        answer: Some((5, root, proof.clone())),
        certificates: [
            (1, handoff.clone()),
            (3, epoch_1_end.clone()),
            (5, answer.clone()),
        ]
        .into(),
        sets: [
            (0, old_set.clone()),
            (1, new_set.clone()),
            (2, new_set.clone()),
        ]
        .into(),
    };

    // A validator that kept no handoff, then one that did: the client asks on.
    let forgetful = validator(Says {
        certificates: [(5, answer.clone())].into(),
        ..honest_chain.clone()
    })
    .await;
    let good = validator(honest_chain.clone()).await;
    let proven = client(vec![forgetful, good.clone()], chain, &old_set)
        .proven_account(&who)
        .await
        .expect("a root certified by epoch 2's set, followed from genesis");
    assert_eq!(proven.certified.epoch, 2);

    // A client keeping what it verified: a later run needs no handoff, so a validator
    // that kept none is enough; a cache followed from another genesis set is not used.
    let cache = tempfile::tempdir().expect("tempdir");
    let cached = |urls: Vec<String>, genesis_set: &[AccountId]| {
        Client::new(urls)
            .with_trust_cache(cache.path().to_path_buf())
            .with_anchor(Anchor {
                chain,
                epoch_blocks: EPOCH_BLOCKS,
                validators: genesis_set.to_vec(),
            })
    };
    let forgetful = validator(Says {
        certificates: [(5, answer.clone())].into(),
        ..honest_chain.clone()
    })
    .await;
    let reason = unproven(
        cached(vec![forgetful.clone()], &old_set)
            .proven_account(&who)
            .await,
        "nothing cached yet, and no handoff served",
    );
    assert!(
        reason.contains("cannot follow the validator sets"),
        "{reason}"
    );
    cached(vec![good.clone()], &old_set)
        .proven_account(&who)
        .await
        .expect("followed once, and kept");
    let proven = cached(vec![forgetful.clone()], &old_set)
        .proven_account(&who)
        .await
        .expect("the sets come from the cache");
    assert_eq!(proven.certified.epoch, 2);
    // The cache given after the anchor is taken up the same.
    client(vec![forgetful.clone()], chain, &old_set)
        .with_trust_cache(cache.path().to_path_buf())
        .proven_account(&who)
        .await
        .expect("the cache given after the anchor");
    let reason = unproven(
        cached(vec![forgetful], &new_set).proven_account(&who).await,
        "the cache was followed from another genesis set",
    );
    assert!(
        reason.contains("cannot follow the validator sets"),
        "{reason}"
    );

    // The same answer signed by the old set, which no longer decides: refused.
    let stale = validator(Says {
        certificates: [
            (1, handoff.clone()),
            (3, epoch_1_end.clone()),
            (5, certify(&old[..3], chain, 5, root, &old_set)),
        ]
        .into(),
        ..honest_chain.clone()
    })
    .await;
    let reason = unproven(
        client(vec![stale], chain, &old_set)
            .proven_account(&who)
            .await,
        "signed by a set voted out",
    );
    assert!(reason.contains("not a validator of epoch 2"), "{reason}");

    // A validator serving another set for epoch 1 than the handoff names.
    let mut swapped = honest_chain.clone();
    swapped.sets.insert(1, accounts(&keys(20..24)));
    let swapped = validator(swapped).await;
    let reason = unproven(
        client(vec![swapped], chain, &old_set)
            .proven_account(&who)
            .await,
        "a set the handoff does not name",
    );
    assert!(reason.contains("not the one epoch 0's"), "{reason}");

    // A handoff signed by the new set alone, which the client cannot yet trust.
    let mut self_appointed = honest_chain;
    self_appointed
        .certificates
        .insert(1, certify(&new[2..], chain, 1, Hash::of(b"h1"), &new_set));
    let self_appointed = validator(self_appointed).await;
    let reason = unproven(
        client(vec![self_appointed], chain, &old_set)
            .proven_account(&who)
            .await,
        "a handoff its epoch's set did not sign",
    );
    assert!(reason.contains("epoch 0's handoff"), "{reason}");
}
