//! A farmer, as a new user would: create a farm, run a node, see it up; a contract for it is
//! reconciled, survives a restart of the node, and is removed when cancelled. Real
//! validator processes, a real node process, real HTTP and a real mesh.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peergrid_client::{Client, TxStatus};
use peergrid_core::tx::ContractSpec;
use peergrid_core::{Capacity, Hash, Keypair, Payload};
use peergrid_node::DeployRequest;
use serde_json::Value;

fn peergrid(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peergrid"));
    cmd.env("PEERGRID_HOME", home)
        .env_remove("PEERGRID_LEDGER")
        .stdin(Stdio::null());
    cmd
}

fn run(home: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = peergrid(home)
        .arg("--json")
        .args(args)
        .output()
        .expect("run peergrid");
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        value,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A child process killed when the test ends, pass or fail.
struct Proc(Child);

impl Proc {
    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.interrupt();
        }
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn node_status(home: &Path, id: u64) -> String {
    let (_, v, _) = run(home, &["node", "show", &id.to_string()]);
    v["node"]["status"].as_str().unwrap_or_default().to_string()
}

fn start_node(home: &Path, farm: u64, data: &Path, health: u16) -> Proc {
    let log = std::fs::File::create(data.with_extension("log")).expect("log");
    let child = peergrid(home)
        .args(["node", "run", "--farm", &farm.to_string()])
        .arg("--data-dir")
        .arg(data)
        .arg("--disk")
        .arg(format!("{}:ssd:20GiB", data.display()))
        .args(["--health", &format!("127.0.0.1:{health}")])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--country", "BE", "--city", "Ghent"])
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start node");
    Proc(child)
}

async fn workloads(health: &str) -> Vec<Value> {
    let local = Client::new(vec![health.to_string()]);
    local
        .get::<Value>("/v1/workloads")
        .await
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

async fn wait_workloads(health: &str, what: &str, f: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = workloads(health).await;
        if f(&w) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farmer_runs_a_node_that_follows_its_contracts_across_restarts() {
    let home_dir = tempfile::tempdir().expect("tempdir");
    let home = home_dir.path().to_path_buf();
    let base_port = 31_000 + (std::process::id() % 3_000) as u16 * 3 % 9_000;
    let devnet = peergrid(&home)
        .args(["devnet", "--nodes", "0", "--uptime-interval", "2"])
        .args(["--base-port", &base_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start devnet");
    let _devnet = Proc(devnet);
    let h = home.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the devnet to finalize", Duration::from_secs(180), || {
            let (ok, _, _) = run(&h, &["devnet", "status"]);
            ok.then_some(())
        })
    })
    .await
    .expect("join");

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

    // The farmer's node registers and turns up.
    let health_port = base_port + 250;
    let health = format!("http://127.0.0.1:{health_port}");
    let mut node = start_node(&home, farm_id, &data, health_port);
    let h = home.clone();
    let node_id = tokio::task::spawn_blocking(move || {
        wait_for("the node to be listed up", Duration::from_secs(60), || {
            let (_, list, _) = run(&h, &["node", "list", "--farm", &farm_id.to_string()]);
            let n = list["nodes"].as_array()?.first()?.clone();
            (n["status"] == "up").then(|| n["id"].as_u64()).flatten()
        })
    })
    .await
    .expect("join");
    let (_, shown, _) = run(&home, &["node", "show", &node_id.to_string()]);
    let capacity = &shown["node"]["capacity"];
    assert!(capacity["cru"].as_u64().unwrap_or(0) >= 1, "{shown}");
    assert!(capacity["sru"].as_u64().unwrap_or(0) <= 20 << 30, "{shown}");
    assert_eq!(shown["node"]["location"]["city"], "Ghent");

    // A builder (the demo account) opens a deployment contract on it.
    let running: Value = serde_json::from_slice(
        &std::fs::read(home.join("devnet/devnet.json")).expect("devnet.json"),
    )
    .expect("json");
    let apis: Vec<String> = serde_json::from_value(running["apis"].clone()).expect("apis");
    let demo = Keypair::load(Path::new(running["demo_key"].as_str().expect("key"))).expect("demo");
    let client = Client::new(apis);
    let deployment = b"{\"workloads\":[{\"name\":\"hello\"}]}".to_vec();
    let resources = Capacity {
        cru: 1,
        mru: 256 << 20,
        sru: 1 << 30,
        hru: 0,
    };
    let (_, status) = client
        .send(
            &demo,
            Payload::CreateContract(ContractSpec::Deployment {
                node: node_id as u32,
                deployment_hash: Hash::of(&deployment),
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
    let contract_id = events
        .iter()
        .find_map(|e| match e {
            peergrid_ledger::Event::ContractCreated { contract, .. } => Some(*contract),
            _ => None,
        })
        .expect("contract id");
    wait_workloads(&health, "the contract to be provisioned", |w| {
        w.iter()
            .any(|x| x["contract"] == contract_id && x["state"] == "running")
    })
    .await;
    let folder = data.join("workloads").join(contract_id.to_string());
    assert!(folder.is_dir(), "its folder exists");

    // Deployments over the mesh: a wrong hash or signer is refused; the right one is stored.
    let local = Client::new(vec![health.clone()]);
    let status: Value = local.get("/v1/status").await.expect("status");
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
        .connect(node_peer, vec![addr])
        .await
        .expect("connect");
    let report = peergrid_node::protocol::status(&builder, node_peer)
        .await
        .expect("status protocol");
    assert_eq!(report.node, Some(node_id as u32));
    assert_eq!(report.workloads.running, 1);
    assert_eq!(report.used, resources);
    let wrong = DeployRequest::sign(&demo, contract_id, b"something else".to_vec());
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &wrong)
        .await
        .expect_err("hash mismatch");
    assert!(e.to_string().contains("does not match"), "{e}");
    let forged = DeployRequest::sign(
        &Keypair::generate().expect("key"),
        contract_id,
        deployment.clone(),
    );
    let e = peergrid_node::protocol::deploy(&builder, node_peer, &forged)
        .await
        .expect_err("not the owner");
    assert!(e.to_string().contains("not signed by"), "{e}");
    assert!(!folder.join("deployment.bin").exists(), "nothing stored");
    let right = DeployRequest::sign(&demo, contract_id, deployment.clone());
    peergrid_node::protocol::deploy(&builder, node_peer, &right)
        .await
        .expect("deployment accepted");
    assert_eq!(
        std::fs::read(folder.join("deployment.bin")).expect("stored"),
        deployment
    );

    // The node dies: the ledger turns it down.
    node.kill();
    let h = home.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the node to turn down", Duration::from_secs(30), || {
            (node_status(&h, node_id) == "down").then_some(())
        })
    })
    .await
    .expect("join");

    // Restarted, it is up again with its contract restored, without anyone doing anything.
    let _node = start_node(&home, farm_id, &data, health_port);
    let h = home.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the node to be up again", Duration::from_secs(60), || {
            (node_status(&h, node_id) == "up").then_some(())
        })
    })
    .await
    .expect("join");
    let w = wait_workloads(&health, "the restored workload", |w| !w.is_empty()).await;
    assert_eq!(w[0]["contract"], contract_id);
    assert_eq!(
        w[0]["deployed"],
        serde_json::to_value(Hash::of(&deployment)).expect("hash")
    );

    // The builder cancels: the node removes the workload and its data.
    let (_, status) = client
        .send(
            &demo,
            Payload::CancelContract {
                contract: contract_id,
            },
            Duration::from_secs(30),
        )
        .await
        .expect("cancel");
    assert!(matches!(status, TxStatus::Finalized { .. }), "{status:?}");
    wait_workloads(&health, "the workload to be removed", |w| w.is_empty()).await;
    assert!(!folder.exists(), "its data is gone");
}
