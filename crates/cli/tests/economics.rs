//! The grid's money end to end, on a real devnet with a real node: a builder's contract
//! is billed while it runs, pauses when the money runs out, resumes on a top-up, and is
//! deleted after its grace period; the farmer is paid a share of every bill and a minted
//! reward whose receipt explains it; and every token is accounted for.

mod common;

use std::time::Duration;

use common::*;
use peergrid_client::{AtHeight, Client, TxStatus};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{AccountId, Amount, Capacity, Hash, Keypair, Payload};
use peergrid_ledger::{Bill, BillStatus, Contract, ContractState, Event, RewardReceipt};
use serde_json::Value;

async fn send(client: &Client, key: &Keypair, payload: Payload) -> Vec<Event> {
    let (_, status) = client
        .send(key, payload, Duration::from_secs(30))
        .await
        .expect("send");
    match status {
        TxStatus::Finalized { events, .. } => events,
        other => panic!("not applied: {other:?}"),
    }
}

async fn balance(client: &Client, who: &AccountId) -> Amount {
    client.account(who).await.expect("account").data.balance
}

/// The contract as the API shows it, checked against its proof from the block's state root.
async fn contract(client: &Client, id: u64) -> Contract {
    let shown = client
        .get::<AtHeight<Contract>>(&format!("/v1/contracts/{id}"))
        .await
        .expect("contract");
    let proven = client.proven_contract(id).await.expect("proof holds");
    if proven.height == shown.height {
        assert_eq!(
            proven.value.as_ref(),
            Some(&shown.data),
            "the proof says what the API shows"
        );
    }
    assert!(proven.confirmed_by >= 1);
    shown.data
}

async fn wait_state(client: &Client, id: u64, what: &str, f: impl Fn(&ContractState) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let c = contract(client, id).await;
        if f(&c.state) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            c.state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn workload_in(state: &'static str, contract: u64) -> impl Fn(&[Value]) -> bool {
    move |w| {
        w.iter()
            .any(|x| x["contract"] == contract && x["state"] == state)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_is_billed_paused_resumed_and_deleted_and_the_farmer_can_explain_every_token() {
    let home_dir = tempfile::tempdir().expect("tempdir");
    let home = home_dir.path().to_path_buf();
    let base_port = base_port(22_800);
    // Seconds instead of hours and months; one token is worth $0.00001 so that a few
    // tokens last a few seconds of a contract.
    let (_devnet, client, demo) = devnet(
        &home,
        base_port,
        &[
            "uptime_interval_secs=2",
            "billing_interval_secs=1",
            "grace_period_secs=6",
            "minting_period_secs=12",
            "token_price_uusd=10",
        ],
    )
    .await;

    // The farmer (the demo account) creates a farm paid out to an account of its own.
    let (ok, farm, err) = run(&home, &["farm", "create", "econ-farm"]);
    assert!(ok, "{err}");
    let farm_id = farm["farm"].as_u64().expect("farm id");
    let payout = Keypair::generate().expect("key").account();
    send(
        &client,
        &demo,
        Payload::UpdateFarm {
            farm: farm_id as u32,
            name: None,
            public_ips: None,
            payout: Some(payout),
        },
    )
    .await;
    let health = format!("http://127.0.0.1:{}", base_port + 250);
    let data = home.join("node");
    let _node = start_node(&home, farm_id, &data, base_port + 250);
    let node_id = node_up(&home, farm_id, &data).await;

    // A builder with 3 tokens opens a contract on the node.
    let builder = Keypair::generate().expect("key");
    let top_up = Amount::tokens(3);
    send(
        &client,
        &demo,
        Payload::Transfer {
            to: builder.account(),
            amount: top_up,
        },
    )
    .await;
    let events = send(
        &client,
        &builder,
        Payload::CreateContract(ContractSpec::Deployment {
            node: node_id as u32,
            deployment_hash: Hash::of(b"app"),
            resources: Capacity {
                cru: 1,
                mru: 1 << 30,
                sru: 1 << 30,
                hru: 0,
            },
            public_ips: 0,
        }),
    )
    .await;
    let fees: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::FeeBurned { amount, .. } => Some(amount.0),
            _ => None,
        })
        .sum();
    let id = events
        .iter()
        .find_map(|e| match e {
            Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("contract id");
    wait_workloads(&health, "the workload to run", workload_in("running", id)).await;
    let (ok, listed, err) = run(
        &home,
        &[
            "contract",
            "list",
            "--owner",
            &builder.account().to_string(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(listed["contracts"][0]["id"], id, "{listed}");

    // While it runs the builder's balance falls; when it cannot pay, the workload pauses.
    let before = balance(&client, &builder.account()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        balance(&client, &builder.account()).await < before,
        "billing takes tokens"
    );
    wait_state(&client, id, "grace", |s| {
        matches!(s, ContractState::GracePeriod { .. })
    })
    .await;
    wait_workloads(&health, "the workload to pause", workload_in("paused", id)).await;

    // A top-up pays the debt and resumes it.
    send(
        &client,
        &demo,
        Payload::Transfer {
            to: builder.account(),
            amount: top_up,
        },
    )
    .await;
    wait_state(&client, id, "resumed", |s| *s == ContractState::Created).await;
    wait_workloads(
        &health,
        "the workload to resume",
        workload_in("running", id),
    )
    .await;

    // It runs out again and, after the grace period, is deleted and removed from the node.
    wait_state(&client, id, "deleted", |s| {
        matches!(s, ContractState::Deleted { .. })
    })
    .await;
    wait_workloads(&health, "the workload to be removed", |w| w.is_empty()).await;

    // The CLI shows it deleted, checked against its proof.
    let (ok, shown, err) = run(&home, &["contract", "show", &id.to_string(), "--prove"]);
    assert!(ok, "{err}");
    assert_eq!(shown["proof"]["checked"], true, "{shown}");
    assert_eq!(shown["contract"]["id"], id, "{shown}");
    let (ok, _, err) = run(&home, &["contract", "show", "999999", "--prove"]);
    assert!(!ok && err.contains("does not exist"), "{err}");

    // The bills cover the contract's life without a gap or an overlap, and are exactly
    // what the builder paid.
    let (ok, history, err) = run(&home, &["bill", "history", &id.to_string()]);
    assert!(ok, "{err}");
    let bills: Vec<Bill> = serde_json::from_value(history["bills"].clone()).expect("bills");
    assert!(bills.len() >= 3, "{bills:?}");
    for pair in bills.windows(2) {
        assert_eq!(pair[0].to_ms, pair[1].from_ms, "bills are contiguous");
    }
    let paid: u64 = bills.iter().map(|b| b.tokens.0).sum();
    let left = balance(&client, &builder.account()).await;
    assert_eq!(
        2 * top_up.0 - left.0,
        paid + fees,
        "every token the builder spent is on a bill or a fee"
    );
    assert!(bills.iter().any(|b| b.status == BillStatus::Paid));
    let farmer_share: u64 = bills.iter().map(|b| b.split.farmer.0).sum();
    assert!(farmer_share > 0);

    // A minting period with the node up all along pays a reward; the payout account
    // holds exactly the farmer's share of the bills plus the rewards on its receipts.
    let receipts = loop {
        let page: AtHeight<Value> = client
            .get(&format!("/v1/farms/{farm_id}/receipts?limit=1000"))
            .await
            .expect("receipts");
        let receipts: Vec<RewardReceipt> =
            serde_json::from_value(page.data["items"].clone()).expect("receipts");
        if receipts.iter().any(|r| r.tokens.0 > 0) {
            let again: AtHeight<Value> = client
                .get(&format!("/v1/farms/{farm_id}/receipts?limit=1000"))
                .await
                .expect("receipts");
            let got = balance(&client, &payout).await;
            let same: Vec<RewardReceipt> =
                serde_json::from_value(again.data["items"].clone()).expect("receipts");
            // Only compare when no period was minted between the two reads.
            if same == receipts {
                let rewards: u64 = receipts.iter().map(|r| r.tokens.0).sum();
                assert_eq!(
                    got.0,
                    farmer_share + rewards,
                    "payout = bill shares + rewards"
                );
                break receipts;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // The farmer reads the receipt and finds the numbers the ledger paid.
    let paid_receipt = receipts.iter().find(|r| r.tokens.0 > 0).expect("a reward");
    let (ok, text, err) = run(
        &home,
        &[
            "farm",
            "rewards",
            "--farm",
            &farm_id.to_string(),
            "--period",
            &paid_receipt.period.to_string(),
        ],
    );
    assert!(ok, "{err}");
    let printed: Vec<RewardReceipt> =
        serde_json::from_value(text["receipts"].clone()).expect("receipts");
    assert_eq!(printed.first(), Some(paid_receipt));
    let out = peergrid(&home)
        .args([
            "farm",
            "rewards",
            "--farm",
            &farm_id.to_string(),
            "--period",
            &paid_receipt.period.to_string(),
        ])
        .output()
        .expect("run");
    let human = String::from_utf8_lossy(&out.stdout);
    assert!(human.contains(&paid_receipt.tokens.to_string()), "{human}");

    // Governance: the council (the demo account, also the only farmer here) changes the
    // token price; with every farmer's weight cast, it executes at once.
    let (ok, proposed, err) = run(
        &home,
        &[
            "gov",
            "propose",
            "set-token-price",
            "--usd",
            "0.00002",
            "--description",
            "test",
        ],
    );
    assert!(ok, "{err}");
    let proposal = proposed["proposal"].as_u64().expect("proposal id");
    let (_, shown, _) = run(&home, &["gov", "show", &proposal.to_string()]);
    assert_eq!(shown["proposal"]["status"]["status"], "executed", "{shown}");
    let status = client.status().await.expect("status");
    assert_eq!(status.data["params"]["token_price_uusd"], 20);
}
