//! The grid's money end to end, on a real devnet with a real node: a builder's contract
//! is billed while it runs, pauses when the money runs out, resumes on a top-up, and is
//! deleted after its grace period; the farmer is paid a share of every bill and a minted
//! reward whose receipt explains it; and every token is accounted for.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use peergrid_client::{Client, TxStatus};
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
        .contract(id)
        .await
        .expect("contract")
        .expect("the contract exists");
    let proven = client.proven_contract(id).await.expect("proof holds");
    if proven.height == shown.height {
        assert_eq!(
            proven.value.as_ref(),
            Some(&shown.data),
            "the proof says what the API shows"
        );
    }
    // A devnet's validators are all of epoch 0's set: a quorum of them signed the root.
    let c = &proven.certified;
    assert!(c.signatures * 3 > c.validators * 2, "{c:?}");
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

fn created_contract(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("contract id")
}

/// A contract's bills as `peergrid bill history` lists them.
fn bill_history(home: &Path, id: u64) -> Vec<Bill> {
    let (ok, history, err) = run(home, &["bill", "history", &id.to_string()]);
    assert!(ok, "{err}");
    serde_json::from_value(history["bills"].clone()).expect("bills")
}

/// A proposal's status as `peergrid gov show` says it (`open`, `executed`, `rejected`, …).
fn proposal_status(home: &Path, id: u64) -> String {
    let (ok, shown, err) = run(home, &["gov", "show", &id.to_string()]);
    assert!(ok, "{err}");
    shown["proposal"]["status"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn stdout(home: &Path, args: &[&str]) -> String {
    let out = peergrid(home).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let (ok, updated, err) = run(
        &home,
        &[
            "farm",
            "update",
            "econ-farm",
            "--payout",
            &payout.to_string(),
            "--add-ip",
            "185.1.2.3/24@185.1.2.1",
            "--add-ip",
            "185.1.2.4/24@185.1.2.1",
        ],
    );
    assert!(ok, "{err}");
    assert!(updated["hash"].is_string(), "{updated}");
    let (_, shown, _) = run(&home, &["farm", "show", "econ-farm"]);
    assert_eq!(shown["farm"]["payout"], payout.to_string(), "{shown}");
    assert_eq!(
        shown["farm"]["public_ips"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
    let (ok, _, err) = run(
        &home,
        &[
            "farm",
            "update",
            &farm_id.to_string(),
            "--remove-ip",
            "185.1.2.4/24",
        ],
    );
    assert!(ok, "{err}");
    let (_, shown, _) = run(&home, &["farm", "show", &farm_id.to_string()]);
    assert_eq!(
        shown["farm"]["public_ips"].as_array().map(Vec::len),
        Some(1),
        "{shown}"
    );
    // Mistakes are refused before anything is sent, saying what is wrong.
    for (args, says) in [
        (
            &["--remove-ip", "185.1.2.4"][..],
            "does not offer 185.1.2.4",
        ),
        (
            &["--add-ip", "185.1.2.3/24@185.1.2.1"][..],
            "already offers",
        ),
        (
            &["--add-ip", "185.1.2.5/24@185.1.9.1"][..],
            "outside the subnet",
        ),
        (&[][..], "nothing to change"),
        (&["--name", "econ-farm"][..], "nothing to change"),
        (
            &[
                "--add-ip",
                "185.1.2.8/24@185.1.2.1",
                "--add-ip",
                "185.1.2.8/24@185.1.2.1",
            ][..],
            "given twice",
        ),
        (
            &["--add-ip", "185.1.2.8/0@185.1.2.1"][..],
            "prefix length is 8 to 32",
        ),
    ] {
        let (ok, _, err) = run(
            &home,
            &[&["farm", "update", "econ-farm"][..], args].concat(),
        );
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
    let stranger = home.join("stranger.json");
    Keypair::generate()
        .expect("key")
        .save(&stranger, false)
        .expect("save key");
    let (ok, _, err) = run(
        &home,
        &[
            "--key",
            stranger.to_str().expect("utf-8 path"),
            "farm",
            "update",
            "econ-farm",
            "--name",
            "mine-now",
        ],
    );
    assert!(!ok && err.contains("does not own farm"), "{err}");
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
    let id = created_contract(&events);
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
    // Polled: under load the next bill may be finalized seconds after its interval.
    let before = balance(&client, &builder.account()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while balance(&client, &builder.account()).await >= before {
        assert!(
            std::time::Instant::now() < deadline,
            "billing takes tokens: the balance did not fall within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_state(&client, id, "grace", |s| {
        matches!(s, ContractState::GracePeriod { .. })
    })
    .await;
    wait_workloads(&health, "the workload to pause", workload_in("paused", id)).await;
    // The owner is told what is owed, by when, and how to pay.
    let text = |args: &[&str]| {
        let out = peergrid(&home).args(args).output().expect("run");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let shown = text(&["contract", "show", &id.to_string()]);
    assert!(
        shown.contains("owes") && shown.contains("unpaid so far") && shown.contains("deleted"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("--to {}", builder.account())),
        "{shown}"
    );
    let bills = text(&["bill", "history", &id.to_string()]);
    assert!(bills.contains("the contract is in grace since"), "{bills}");

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
    // A contract that never was is proven absent, not taken on one validator's word.
    let (ok, _, err) = run(&home, &["contract", "show", "999999", "--prove"]);
    assert!(!ok && err.contains("proven absent"), "{err}");

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
    // `farm income` adds up the same shares, per node, and names where they went.
    let (ok, income, err) = run(&home, &["farm", "income", "econ-farm"]);
    assert!(ok, "{err}");
    assert_eq!(
        income["tokens"],
        Amount(farmer_share).to_string(),
        "{income}"
    );
    assert_eq!(income["nodes"][0]["bills"], bills.len(), "{income}");
    assert_eq!(income["nodes"][0]["live_contracts"], 0, "deleted: {income}");
    assert_eq!(
        income["payouts"][0]["account"],
        payout.to_string(),
        "{income}"
    );
    assert_eq!(income["payouts"][0]["tokens"], income["tokens"], "{income}");

    // Cancelled with the CLI, a contract is billed up to its deletion and never again. A
    // name contract is on no node, so the farmer's share of its bills goes to the foundation
    // and the payout account below only holds the builder's contract's share.
    // Created with the CLI too, as a builder would.
    let (ok, created, err) = run(&home, &["contract", "create", "name", "cancel-me"]);
    assert!(ok, "{err}");
    let named = created["contract"].as_u64().expect("the new contract's id");
    let (ok, _, err) = run(&home, &["contract", "create", "name", "cancel-me"]);
    assert!(!ok && err.contains("taken"), "a name is unique: {err}");
    // A file that is no deployment would reserve what no node can ever run.
    let deployment = home.join("app.yaml");
    std::fs::write(&deployment, "app: hello\n").expect("deployment file");
    let (ok, _, err) = run(
        &home,
        &[
            "contract",
            "create",
            "deployment",
            "--node",
            "1",
            "--deployment",
            deployment.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!ok && err.contains("is not a deployment"), "{err}");
    let (ok, _, err) = run(
        &home,
        &[
            "contract",
            "create",
            "deployment",
            "--node",
            "9999",
            "--deployment-hash",
            &Hash::of(b"a deployment").to_string(),
            "--mru",
            "256MiB",
        ],
    );
    assert!(
        !ok && err.contains("9999"),
        "an unknown node is named: {err}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bill_history(&home, named).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no bill for {named}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ok, cancelled, err) = run(&home, &["contract", "cancel", &named.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(cancelled["contract"], named, "{cancelled}");
    let (ok, shown, err) = run(&home, &["contract", "show", &named.to_string()]);
    assert!(ok, "{err}");
    let state = &shown["contract"]["state"];
    assert_eq!(state["state"], "deleted", "{shown}");
    assert_eq!(state["reason"], "canceled_by_owner", "{shown}");
    let deleted_ms = state["at_ms"].as_u64().expect("deletion time");
    let bills = bill_history(&home, named);
    assert_eq!(bills.last().map(|b| b.to_ms), Some(deleted_ms), "{bills:?}");
    for pair in bills.windows(2) {
        assert_eq!(pair[0].to_ms, pair[1].from_ms, "bills are contiguous");
    }
    // Three billing intervals later, still no new bill; and it cannot be cancelled twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bill_history(&home, named), bills, "billing stopped");
    let (ok, _, err) = run(&home, &["contract", "cancel", &named.to_string()]);
    assert!(!ok && err.contains("is deleted"), "{err}");
    // --explain writes every bill out with the formula behind each number.
    let explained = stdout(&home, &["bill", "history", &named.to_string(), "--explain"]);
    let last = bills.last().expect("a bill");
    for line in [
        format!("bill: contract {named} of {}", demo.account()),
        format!(
            "period      [{} ms, {} ms) = {} ms",
            last.from_ms,
            last.to_ms,
            last.to_ms - last.from_ms
        ),
        "discount    balance covers".into(),
        "(today's prices)".into(),
        // A devnet runs ledger rules 2 (1 and on): what a bill rounds off below a µUSD carries on.
        "carried to the next bill".into(),
        "status      paid".into(),
    ] {
        assert!(
            explained.contains(&line),
            "{line} missing from\n{explained}"
        );
    }
    assert_eq!(
        explained.matches("bill: contract").count(),
        bills.len(),
        "{explained}"
    );
    let (ok, params, err) = run(&home, &["gov", "params"]);
    assert!(ok, "{err}");
    assert_eq!(params["ledger_rules"], 2, "{params}");

    // A minting period with the node up all along pays a reward; the payout account
    // holds exactly the farmer's share of the bills plus the rewards on its receipts.
    // Minting periods are 12 s here: five of them without a paid receipt means none is coming.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let receipts = loop {
        let receipts: Vec<RewardReceipt> = client
            .latest_receipts(farm_id as u32, 500)
            .await
            .expect("receipts")
            .data
            .items;
        if receipts.iter().any(|r| r.tokens.0 > 0) {
            let again = client
                .latest_receipts(farm_id as u32, 500)
                .await
                .expect("receipts");
            let got = balance(&client, &payout).await;
            let same: Vec<RewardReceipt> = again.data.items;
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
        assert!(
            std::time::Instant::now() < deadline,
            "no paid reward receipt for farm {farm_id} (with a stable payout balance) within 60 s \
             of 12 s minting periods; its latest receipts: {receipts:?}"
        );
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
    // The farm also given as an argument, as `bill history` and `node show` take theirs.
    let out = peergrid(&home)
        .args([
            "farm",
            "rewards",
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
    assert_eq!(status.data.params.token_price_uusd, 20);

    // A council of two: the demo account and a member with a key file of its own.
    let member = Keypair::generate().expect("key");
    let member_key = home.join("member.json");
    member.save(&member_key, false).expect("save key");
    let member_key = member_key.to_str().expect("utf-8 path").to_string();
    send(
        &client,
        &demo,
        Payload::Transfer {
            to: member.account(),
            amount: Amount::tokens(1),
        },
    )
    .await;
    let (ok, proposed, err) = run(
        &home,
        &[
            "gov",
            "propose",
            "set-council",
            "--member",
            &demo.account().to_string(),
            "--member",
            &member.account().to_string(),
            "--threshold",
            "2",
        ],
    );
    assert!(ok, "{err}");
    let council = proposed["proposal"].as_u64().expect("proposal id");
    assert_eq!(proposal_status(&home, council), "executed");

    // A pricing policy from a file: the demo account's proposal waits for the member.
    let pricing_file = home.join("pricing.toml");
    std::fs::write(
        &pricing_file,
        "cu_uusd_month = 44000000\n\
         su_uusd_month = 14000000\n\
         ipv4_uusd_month = 4000000\n\
         unique_name_uusd_month = 1000000\n\
         nu_uusd_per_gb = 50000\n\
         \n\
         [[discounts]]\n\
         min_months_milli = 1500\n\
         percent = 20\n",
    )
    .expect("write policy");
    let (ok, proposed, err) = run(
        &home,
        &[
            "gov",
            "propose",
            "set-pricing",
            "--file",
            pricing_file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(ok, "{err}");
    let pricing = proposed["proposal"].as_u64().expect("proposal id");
    // Voters see what they vote on next to what is in force.
    let out = peergrid(&home)
        .args(["gov", "show", &pricing.to_string()])
        .output()
        .expect("run");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("pricing: CU $44")
            && shown.contains("in force now")
            && shown.contains("CU $22"),
        "{shown}"
    );
    let (ok, params, err) = run(&home, &["gov", "params"]);
    assert!(ok, "{err}");
    assert_eq!(params["params"]["token_price_uusd"], 20, "{params}");
    // Who decides: the council voted in above.
    assert_eq!(params["council"]["threshold"], 2, "{params}");
    assert_eq!(
        params["council"]["members"][1],
        member.account().to_string(),
        "{params}"
    );
    let (ok, listed, err) = run(&home, &["gov", "list"]);
    assert!(ok, "{err}");
    let entry = listed["proposals"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == pricing))
        .expect("listed")
        .clone();
    assert_eq!(entry["status"]["status"], "open", "{entry}");
    assert_eq!(entry["approvals"].as_array().map(Vec::len), Some(1));
    let status = client.status().await.expect("status");
    assert_eq!(status.data.params.pricing.cu_uusd_month, 22_000_000);
    // The member's approval reaches the threshold: executed, and the price is the file's.
    let (ok, voted, err) = run(
        &home,
        &[
            "--key",
            &member_key,
            "gov",
            "vote",
            &pricing.to_string(),
            "--approve",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        voted["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == "proposal_closed")),
        "{voted}"
    );
    assert_eq!(proposal_status(&home, pricing), "executed");
    let status = client.status().await.expect("status");
    assert_eq!(status.data.params.pricing.cu_uusd_month, 44_000_000);
    assert_eq!(status.data.params.pricing.discounts.len(), 1);
    // Proposing what is in force is refused before it takes the council's time.
    let (ok, _, err) = run(
        &home,
        &[
            "gov",
            "propose",
            "set-pricing",
            "--file",
            pricing_file.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!ok && err.contains("already in force"), "{err}");

    // The member rejects a new token price: with both needed, one against closes it.
    let (ok, proposed, err) = run(
        &home,
        &["gov", "propose", "set-token-price", "--usd", "0.00005"],
    );
    assert!(ok, "{err}");
    let price = proposed["proposal"].as_u64().expect("proposal id");
    assert_eq!(proposal_status(&home, price), "open");
    let said = stdout(
        &home,
        &[
            "--key",
            &member_key,
            "gov",
            "vote",
            &price.to_string(),
            "--reject",
        ],
    );
    assert!(
        said.contains(&format!("voted against proposal {price}"))
            && said.contains("the proposal is closed: rejected"),
        "{said}"
    );
    assert_eq!(proposal_status(&home, price), "rejected");
    let status = client.status().await.expect("status");
    assert_eq!(status.data.params.token_price_uusd, 20, "unchanged");
    let (ok, _, err) = run(
        &home,
        &[
            "--key",
            &member_key,
            "gov",
            "vote",
            &price.to_string(),
            "--approve",
        ],
    );
    assert!(!ok && err.contains("closed"), "{err}");
    let listed = stdout(&home, &["gov", "list"]);
    assert!(
        listed.contains("new pricing policy") && listed.contains("rejected"),
        "{listed}"
    );
}
