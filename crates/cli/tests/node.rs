//! A farmer, as a new user would: create a farm, run a node, see it up; a contract for it is
//! reconciled, survives a restart of the node, and is removed when cancelled. Real
//! validator processes, a real node process, real HTTP and a real mesh.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use peergrid_client::types::api::node_routes;
use peergrid_client::{RewardReceipt, TxStatus};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{Capacity, Hash, Keypair, Payload};
use peergrid_node::DeployRequest;
use serde_json::Value;

/// The demo account's deployment contract on `node`: its id once finalized.
async fn create_deployment(
    client: &peergrid_client::Client,
    demo: &Keypair,
    node: u64,
    deployment: &[u8],
    resources: Capacity,
) -> u64 {
    let (_, status) = client
        .send(
            demo,
            Payload::CreateContract(ContractSpec::Deployment {
                node: node as u32,
                deployment_hash: Hash::of(deployment),
                resources,
                public_ips: 0,
            }),
            Duration::from_secs(30),
        )
        .await
        .expect("create contract");
    let TxStatus::Finalized { events, .. } = status else {
        panic!("contract not created: {status:?}");
    };
    events
        .iter()
        .find_map(|e| match e {
            peergrid_ledger::Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("contract id")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmer_runs_a_node_that_follows_its_contracts_across_restarts() {
    let home_dir = tempfile::tempdir().expect("tempdir");
    let home = home_dir.path().to_path_buf();
    let base_port = base_port(16_400);
    // Minting periods of 20 s, so that the period holding the node's downtime is minted
    // (and its receipt read) while the test runs.
    let (mut validators, client, demo) = devnet(
        &home,
        base_port,
        &["uptime_interval_secs=2", "minting_period_secs=20"],
    )
    .await;

    // Errors a farmer meets first: an unknown farm, and no consent from the owner.
    let data: PathBuf = home.join("node-a");
    let (ok, _, err) = run(
        &home,
        &[
            "node",
            "run",
            "--farm",
            "999",
            "--data-dir",
            data.to_str().expect("utf8"),
        ],
    );
    assert!(!ok);
    assert!(err.contains("farm 999 does not exist"), "{err}");

    let (ok, _, err) = run(&home, &["node", "list", "--farm", "99"]);
    assert!(!ok);
    assert!(err.contains("farm 99 does not exist"), "{err}");
    let (ok, _, err) = run(&home, &["node", "show", "abc"]);
    assert!(!ok);
    assert!(err.contains("an id must be a number"), "{err}");
    let out = peergrid(&home)
        .args(["node", "run", "--farm", "1", "--disk"])
        .arg(format!("{}:fast", home.display()))
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("(ssd or hdd)") && err.contains("PATH[:ssd|:hdd][:SIZE]"),
        "{err}"
    );

    let (ok, farm, err) = run(&home, &["farm", "create", "my-farm"]);
    assert!(ok, "{err}");
    let farm_id = farm["farm"].as_u64().expect("farm id");
    // A taken name is refused with the reason, and the chain goes on.
    let (ok, _, err) = run(&home, &["farm", "create", "MY-FARM"]);
    assert!(!ok);
    assert!(err.contains("is taken"), "{err}");

    let stranger = home.join("stranger.json");
    Keypair::generate()
        .expect("key")
        .save(&stranger, true)
        .expect("save");
    let out = peergrid(&home)
        .arg("--key")
        .arg(&stranger)
        .args(["node", "run", "--farm", &farm_id.to_string()])
        .arg("--data-dir")
        .arg(home.join("node-b"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not own farm"), "{err}");

    // A port in use stops the start before the node registers: no node is left on the
    // ledger that will never run.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let port = taken.local_addr().expect("addr").port();
    let out = node_command(&home, farm_id, &home.join("node-c"), port)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pick another with --health"), "{err}");
    let (ok, listed, err) = run(&home, &["node", "list", "--farm", &farm_id.to_string()]);
    assert!(ok, "{err}");
    assert_eq!(
        listed["nodes"].as_array().map(Vec::len),
        Some(0),
        "no node registered: {listed}"
    );
    drop(taken);

    // The farmer's node registers and turns up.
    let health_port = base_port + 250;
    let health = format!("http://127.0.0.1:{health_port}");
    let mut node = start_node(&home, farm_id, &data, health_port);
    let node_id = node_up(&home, farm_id, &data).await;

    // A second node on the same data directory refuses to start, naming the first.
    let mut second = node_command(&home, farm_id, &data, base_port + 251);
    second.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut second = Proc(second.spawn().expect("start a second node"));
    let exited = wait_for("the second node to exit", Duration::from_secs(20), || {
        second.0.try_wait().ok().flatten()
    });
    assert!(!exited.success());
    let mut err = String::new();
    second
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let holder = format!("in use by another node (process {})", node.0.id());
    assert!(err.contains(&holder), "{err}");
    let (_, shown, _) = run(&home, &["node", "show", &node_id.to_string()]);
    let capacity = &shown["node"]["capacity"];
    assert!(capacity["cru"].as_u64().unwrap_or(0) >= 1, "{shown}");
    assert!(capacity["sru"].as_u64().unwrap_or(0) <= 20 << 30, "{shown}");
    assert_eq!(shown["node"]["location"]["city"], "Ghent");

    // A builder (the demo account) opens a deployment contract on it.
    // The node decodes what it is sent: a real deployment of the hello component (which
    // this test does not serve, so the workload's state is not what it checks).
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/apps/hello/hello.wasm"
    ))
    .expect("examples/apps/hello/hello.wasm");
    let deployment = peergrid_compute::Deployment::new(vec![peergrid_compute::WorkloadSpec {
        name: "hello".into(),
        component: *blake3::hash(&hello).as_bytes(),
        kind: peergrid_compute::WorkloadKind::Http,
        limits: peergrid_compute::Limits::default(),
        env: Vec::new(),
        args: Vec::new(),
    }])
    .encode()
    .expect("a valid deployment");
    let resources = Capacity {
        cru: 1,
        mru: 256 << 20,
        sru: 1 << 30,
        hru: 0,
    };
    let contract_id = create_deployment(&client, &demo, node_id, &deployment, resources).await;
    wait_workloads(&health, "the contract to be provisioned", |w| {
        w.iter()
            .any(|x| x["contract"] == contract_id && x["state"] == "running")
    })
    .await;
    let folder = data.join("workloads").join(contract_id.to_string());
    assert!(folder.is_dir(), "its folder exists");
    // Anyone lists the contracts on a node, whoever owns them.
    let out = peergrid(&home)
        .arg("--key")
        .arg(&stranger)
        .args(["--json", "contract", "list", "--node", &node_id.to_string()])
        .output()
        .expect("run");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(listed["contracts"][0]["id"], contract_id, "{listed}");

    // Deployments over the mesh: a wrong hash or signer is refused; the right one is stored.
    let status = common::node_api(&health, node_routes::STATUS)
        .await
        .expect("status");
    let addr: peergrid_mesh::Multiaddr = status["mesh_listen"][0]
        .as_str()
        .expect("listen addr")
        .parse()
        .expect("multiaddr");
    let node_peer = peergrid_mesh::peer_of(&addr).expect("peer id in addr");
    let builder = peergrid_mesh::Mesh::start(&demo, peergrid_mesh::Config::loopback())
        .await
        .expect("mesh");
    builder
        .connect(node_peer, vec![addr.clone()])
        .await
        .expect("connect");
    let report = peergrid_node::protocol::status(&builder, node_peer)
        .await
        .expect("status protocol");
    assert_eq!(report.node, Some(node_id as u32));
    assert_eq!(report.workloads.running, 1);
    assert_eq!(report.used, resources);
    let ledger = client.status().await.expect("ledger status").data;
    let grid = peergrid_storage::format::grid_id(&ledger.chain_id, &ledger.genesis_hash);
    let wrong = DeployRequest::sign(&demo, &grid, contract_id, b"something else".to_vec());
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &wrong)
        .await
        .expect_err("hash mismatch");
    assert!(e.to_string().contains("does not match"), "{e}");
    let forged = DeployRequest::sign(
        &Keypair::generate().expect("key"),
        &grid,
        contract_id,
        deployment.clone(),
    );
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &forged)
        .await
        .expect_err("not the owner");
    assert!(e.to_string().contains("not signed by"), "{e}");
    // The owner's own request, signed for another grid the same key is used on.
    let elsewhere = DeployRequest::sign(
        &demo,
        &peergrid_storage::format::grid_id(&ledger.chain_id, &Hash::of(b"another genesis")),
        contract_id,
        deployment.clone(),
    );
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &elsewhere)
        .await
        .expect_err("another grid");
    assert!(e.to_string().contains("for this grid"), "{e}");
    assert!(!folder.join("deployment.bin").exists(), "nothing stored");
    // A run's memory comes out of the contract's reservation: a deployment whose runs may
    // use more than it reserves (128 MiB a run, 1 MiB reserved) is refused with both.
    let small = Capacity {
        mru: 1 << 20,
        ..resources
    };
    let stingy = create_deployment(&client, &demo, node_id, &deployment, small).await;
    let greedy = DeployRequest::sign(&demo, &grid, stingy, deployment.clone());
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &greedy)
        .await
        .expect_err("more memory than reserved");
    assert!(
        e.to_string()
            .contains("128.0 MiB of memory per run, more than contract"),
        "{e}"
    );
    let (_, cancelled) = client
        .send(
            &demo,
            Payload::CancelContract { contract: stingy },
            Duration::from_secs(30),
        )
        .await
        .expect("cancel");
    assert!(
        matches!(cancelled, TxStatus::Finalized { .. }),
        "{cancelled:?}"
    );
    let right = DeployRequest::sign(&demo, &grid, contract_id, deployment.clone());
    peergrid_node::protocol::deploy(&builder, node_peer, &right)
        .await
        .expect("deployment accepted");
    assert_eq!(
        std::fs::read(folder.join("deployment.bin")).expect("stored"),
        deployment
    );

    // The node's daemon dies (the machine keeps running): the ledger turns it down.
    node.kill();
    let stopped_ms = now_ms();
    // While it is down, no command of this test (each a mesh peer on a random port) may
    // take the port it gets again below.
    let hold = addr.iter().find_map(|p| match p {
        peergrid_mesh::multiaddr::Protocol::Tcp(port) => {
            std::net::TcpListener::bind(("0.0.0.0", port))
                .ok()
                .map(|l| Box::new(l) as Box<dyn std::any::Any>)
        }
        peergrid_mesh::multiaddr::Protocol::Udp(port) => {
            std::net::UdpSocket::bind(("0.0.0.0", port))
                .ok()
                .map(|s| Box::new(s) as Box<dyn std::any::Any>)
        }
        _ => None,
    });
    let h = home.clone();
    eventually(
        "the node to turn down",
        Duration::from_secs(30),
        move || (node_status(&h, node_id) == "down").then_some(()),
    )
    .await;
    // Switched off on purpose by its farmer, it is listed standby rather than down. Only
    // the farm's owner may say so, and anyone else is told whose key it takes.
    let (ok, _, err) = run(
        &home,
        &[
            "--key",
            stranger.to_str().expect("utf8"),
            "node",
            "power",
            &node_id.to_string(),
            "down",
        ],
    );
    assert!(!ok && err.contains("the farm owner's key"), "{err}");
    let (ok, _, err) = run(&home, &["node", "power", &node_id.to_string(), "down"]);
    assert!(ok, "{err}");
    assert_eq!(node_status(&home, node_id), "standby");
    // Down for more than two report intervals, and then some.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Restarted, it is up again with its contract restored, without anyone doing anything.
    // Given only a new city, it keeps the country it was given on its first start. Given a
    // disk smaller than its contract reserves, it starts anyway, keeps the SSD capacity
    // the contract reserves on the ledger, and says so. Without -v or RUST_LOG, it says what it does.
    let restarted_ms = now_ms();
    let mut moved = node_command(&home, farm_id, &data, health_port);
    moved
        .env_remove("RUST_LOG")
        .arg("--disk")
        .arg(format!("{}:ssd:512MiB", data.display()))
        .args(["--city", "Antwerp"]);
    drop(hold);
    let _node = spawn_node(moved, &data);
    let h = home.clone();
    eventually(
        "the node to be up again",
        Duration::from_secs(60),
        move || (node_status(&h, node_id) == "up").then_some(()),
    )
    .await;
    let (ok, _, err) = run(&home, &["node", "power", &node_id.to_string(), "up"]);
    assert!(ok, "{err}");
    // On the mesh port of its last start, so peers that knew it reach it at once.
    let again = common::node_api(&health, node_routes::STATUS)
        .await
        .expect("status");
    assert_eq!(
        again["mesh_listen"][0].as_str(),
        Some(addr.to_string().as_str()),
        "{again}"
    );
    let (_, shown, _) = run(&home, &["node", "show", &node_id.to_string()]);
    assert_eq!(shown["node"]["location"]["city"], "Antwerp", "{shown}");
    assert_eq!(shown["node"]["location"]["country"], "BE", "{shown}");
    // What the contract reserves, not the old disk's figure: none of it is free for more.
    assert_eq!(shown["node"]["capacity"]["sru"], 1u64 << 30, "{shown}");
    assert!(capacity["sru"].as_u64() > Some(1 << 30), "{capacity}");
    let log = std::fs::read_to_string(data.with_extension("log")).expect("node log");
    assert!(
        log.contains("less than the contracts on node") && log.contains("SSD 1.0 GiB > 512.0 MiB"),
        "{log}"
    );
    let w = wait_workloads(&health, "the restored workload", |w| !w.is_empty()).await;
    assert_eq!(w[0]["contract"], contract_id);
    assert_eq!(
        w[0]["deployed"],
        serde_json::to_value(Hash::of(&deployment)).expect("hash")
    );

    // The builder cancels, and at once (one batch, before the node can lower what it
    // offers) creates another contract of the same size there: the ledger still offers the
    // 1 GiB of SSD the first contract kept, so it is accepted, though the machine now has
    // 512 MiB.
    let sent = client
        .send_all(
            &demo,
            vec![
                Payload::CancelContract {
                    contract: contract_id,
                },
                Payload::CreateContract(ContractSpec::Deployment {
                    node: node_id as u32,
                    deployment_hash: Hash::of(&deployment),
                    resources,
                    public_ips: 0,
                }),
            ],
            Duration::from_secs(30),
        )
        .await
        .expect("cancel and create");
    let refused_id = match &sent[..] {
        [
            (_, TxStatus::Finalized { .. }),
            (_, TxStatus::Finalized { events, .. }),
        ] => events
            .iter()
            .find_map(|e| match e {
                peergrid_ledger::Event::ContractCreated { contract, .. } => Some(*contract),
                _ => None,
            })
            .expect("contract id"),
        other => panic!("cancel and create: {other:?}"),
    };
    // The node removes the cancelled workload and its data.
    wait_workloads(&health, "the workload to be removed", |w| w.is_empty()).await;
    assert!(!folder.exists(), "its data is gone");
    let log = std::fs::read_to_string(data.with_extension("log")).expect("node log");
    let removed = log.lines().any(|l| {
        l.contains("removed with its data")
            && l.contains(&format!("contract={contract_id}"))
            && l.contains("cancelled by its owner")
    });
    assert!(removed, "{log}");
    assert!(log.contains("restored the workloads"), "{log}");

    // The node refuses the new one and gives it back: the contract is deleted, and its
    // owner pays no more for it.
    let h = home.clone();
    let shown = eventually(
        "the refused contract to be released",
        Duration::from_secs(30),
        move || {
            let (_, shown, _) = run(&h, &["contract", "show", &refused_id.to_string()]);
            shown["contract"]["state"]
                .to_string()
                .contains("released_by_node")
                .then_some(shown)
        },
    )
    .await;
    assert!(
        shown["contract"]["state"].to_string().contains("deleted"),
        "{shown}"
    );
    let out = peergrid(&home)
        .args(["contract", "show", &refused_id.to_string()])
        .output()
        .expect("run");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("deleted (released by its node)"), "{table}");
    wait_workloads(&health, "the released workload to be gone", |w| {
        w.is_empty()
    })
    .await;
    let log = std::fs::read_to_string(data.with_extension("log")).expect("node log");
    let released = log.lines().any(|l| {
        l.contains("released:")
            && l.contains(&format!("contract={refused_id}"))
            && l.contains("free")
    });
    assert!(released, "{log}");
    // With no contract keeping more, the ledger offers what the machine has, so no builder
    // is sent here for room it does not have.
    let h = home.clone();
    eventually(
        "the ledger to offer what the machine has",
        Duration::from_secs(30),
        move || {
            let (_, shown, _) = run(&h, &["node", "show", &node_id.to_string()]);
            (shown["node"]["capacity"]["sru"].as_u64() < Some(1 << 30)).then_some(())
        },
    )
    .await;
    let (_, shown, _) = run(&home, &["node", "show", &node_id.to_string()]);
    let offered = common::node_api(&health, node_routes::STATUS)
        .await
        .expect("status");
    assert_eq!(
        shown["node"]["capacity"]["sru"], offered["capacity"]["sru"],
        "{shown} {offered}"
    );
    let log = std::fs::read_to_string(data.with_extension("log")).expect("node log");
    assert!(
        log.contains("the capacity registered follows what the machine offers"),
        "{log}"
    );

    // The node's account pays fees for its usage reports, capacity updates and releases:
    // spent down, it is topped up from the farm owner's key the node runs with.
    let node_key = Keypair::load(&data.join("node-key.json")).expect("node key");
    let balance = client
        .account(&node_key.account())
        .await
        .expect("account")
        .data
        .balance;
    let (_, status) = client
        .send(
            &node_key,
            Payload::Transfer {
                to: demo.account(),
                amount: peergrid_core::Amount(balance.0 - 10_000),
            },
            Duration::from_secs(30),
        )
        .await
        .expect("spend");
    assert!(matches!(status, TxStatus::Finalized { .. }), "{status:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = client.account(&node_key.account()).await.expect("account");
        if now.data.balance.0 >= 1_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node's account was not topped up: {}",
            now.data.balance
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = std::fs::read_to_string(data.with_extension("log")).expect("node log");
    assert!(log.contains("topped up the node's account"), "{log}");

    // The time the daemon was stopped is not credited as uptime: the minted receipts of
    // the periods it spans miss at least that much.
    let receipts = loop {
        let items = client
            .latest_receipts(farm_id as u32, 500)
            .await
            .expect("receipts")
            .data
            .items;
        let minted = |r: &RewardReceipt| r.period_end_ms > restarted_ms;
        if items.iter().any(minted) {
            break items;
        }
        assert!(
            now_ms() < restarted_ms + 60_000,
            "the period of the restart was not minted: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let spanned = receipts.iter().filter(|r| {
        u64::from(r.node) == node_id
            && r.period_start_ms < restarted_ms
            && r.period_end_ms > stopped_ms
    });
    let uncredited_secs: u64 = spanned
        .map(|r| r.period_secs - r.up_secs.min(r.period_secs))
        .sum();
    let stopped_secs = (restarted_ms - stopped_ms) / 1000;
    // Two seconds for the receipts' rounding to whole seconds.
    assert!(
        uncredited_secs + 2 >= stopped_secs,
        "stopped {stopped_secs} s (from {stopped_ms} ms to {restarted_ms} ms), yet only \
         {uncredited_secs} s are not credited: {receipts:#?}"
    );

    // The whole ledger goes away: the node says so on its health endpoint, keeps running,
    // and its reports resume by themselves when the ledger is back.
    validators.interrupt();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::node_api(&health, node_routes::HEALTH)
        .await
        .is_some()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed ok without a ledger"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_validators, _, _) = devnet(&home, base_port, &[]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::node_api(&health, node_routes::HEALTH)
        .await
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "uptime reports did not resume"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(node_status(&home, node_id), "up");
}
