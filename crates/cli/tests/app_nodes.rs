//! Apps on nodes that fail, as a builder meets them on a real devnet (validators, two
//! farmer node processes with HTTP entries, real mesh, real wasmtime): a node killed and
//! restarted serves its app again without its owner, and the files the app kept in its
//! `/data` folder, wholly the old ones or wholly an archive's when killed during an
//! import; a node that stops answering is
//! given up for the next one with the reason; a node the ledger shows down is skipped
//! before any contract is paid for.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

const HELLO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/apps/hello/hello.wasm"
);
const KV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/apps/kv/kv.wasm"
);

/// A farmer's node of `farm` with its HTTP entry on `http` and the mesh on TCP `mesh`
/// (0: any port), joining the mesh through `bootstrap` if given.
fn node(
    home: &Path,
    farm: u64,
    data: &Path,
    (health, http, mesh): (u16, u16, u16),
    bootstrap: Option<&str>,
) -> Proc {
    let mut cmd = peergrid(home);
    cmd.args(["node", "run", "--farm", &farm.to_string()])
        .arg("--data-dir")
        .arg(data)
        .arg("--disk")
        .arg(format!("{}:ssd:20GiB", data.display()))
        .args(["--health", &format!("127.0.0.1:{health}")])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--listen", &format!("/ip4/127.0.0.1/tcp/{mesh}")])
        .env("RUST_LOG", "info");
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    spawn_node(cmd, data)
}

fn signal(proc: &Proc, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &proc.0.id().to_string()])
        .stdout(Stdio::null())
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_come_back_after_a_restart_and_failed_nodes_are_passed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().to_path_buf();
    let base = base_port(17_400);
    let (_validators, _client, _demo) = devnet(&home, base, &["uptime_interval_secs=2"]).await;

    let (ok, farm, err) = run(&home, &["farm", "create", "apps-farm"]);
    assert!(ok, "{err}");
    let farm = farm["farm"].as_u64().expect("farm id");
    let (ok, other, err) = run(&home, &["farm", "create", "other-farm"]);
    assert!(ok, "{err}");
    let other = other["farm"].as_u64().expect("farm id");
    let data_a = home.join("node-a");
    let data_b = home.join("node-b");
    // The validators-only devnet's genesis names no mesh bootstrap peer: node a is one,
    // for node b and for the CLI (`--mesh-bootstrap`).
    let a_ports = (base + 250, base + 260, base + 270);
    let mut a = node(&home, farm, &data_a, a_ports, None);
    let a_id = node_up(&home, farm, &data_a).await;
    let (_, shown, _) = run(&home, &["node", "show", &a_id.to_string()]);
    let a_peer = shown["node"]["account"]
        .as_str()
        .expect("account")
        .to_string();
    let boot = format!("/ip4/127.0.0.1/tcp/{}/p2p/{a_peer}", base + 270);
    let b = node(
        &home,
        other,
        &data_b,
        (base + 251, base + 261, 0),
        Some(&boot),
    );
    let b_id = node_up(&home, other, &data_b).await;
    let (a_s, b_s) = (a_id.to_string(), b_id.to_string());

    let h = home.clone();
    tokio::task::spawn_blocking(move || {
        let home = h;
        // Node b stops answering (frozen, still up on the ledger for a few seconds): the
        // deploy gives it up with the reason and runs the app on a instead.
        signal(&b, "-STOP");
        let (ok, out, err) = run(
            &home,
            &[
                "--mesh-bootstrap",
                &boot,
                "deploy",
                HELLO,
                "--name",
                "hello",
                "--node",
                &b_s,
                "--node",
                &a_s,
            ],
        );
        signal(&b, "-CONT");
        assert!(ok, "deploy: {err}");
        assert!(
            err.contains(&format!("node {b_id}:")) && err.contains("trying another node"),
            "the frozen node is named and passed over: {err}"
        );
        let replica = &out["app"]["replicas"][0];
        assert_eq!(replica["node"], a_id, "{out}");
        let url = replica["url"].as_str().expect("url").to_string();
        assert_eq!(get(&url), Some((200, "hello from peergrid\n".into())));
        let (_, list, _) = run(&home, &["contract", "list"]);
        let on_b: Vec<_> = list["contracts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["node"] == b_id && c["state"]["state"] != "deleted")
            .collect();
        assert!(
            on_b.is_empty(),
            "the given-up contract is cancelled: {list}"
        );

        // Node a is killed and started again on its data: the app answers again, nobody
        // redeployed it. Meanwhile an update pointed its contract at a new deployment the
        // node never got: the one it holds serves until the owner sends the new one.
        // The node saves its services' logs every few seconds: what hello logged is kept.
        let saved_log = data_a
            .join("app-logs")
            .join(replica["contract"].to_string())
            .join("hello.log");
        wait_for("hello's log saved", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&saved_log).ok()?;
            text.contains("GET / -> 200").then_some(())
        });
        a.kill();
        assert!(get(&url).is_none(), "nothing serves while the node is down");
        let (ok, _, err) = run(
            &home,
            &[
                "--mesh-bootstrap",
                &boot,
                "app",
                "update",
                "hello",
                HELLO,
                "--env",
                "WHO=later",
            ],
        );
        assert!(!ok, "no replica can take the update: {err}");
        assert!(err.contains("no replica of hello was updated"), "{err}");
        let (_, status, _) = run(&home, &["app", "status", "hello"]);
        assert!(
            status.to_string().contains("rather than the app's"),
            "the contract holds the update: {status}"
        );
        a = node(&home, farm, &data_a, a_ports, None);
        let back = wait_for("the app after the restart", Duration::from_secs(60), || {
            get(&url).filter(|(code, _)| *code == 200)
        });
        assert_eq!(back.1, "hello from peergrid\n");
        // Once the node has seen the update on the ledger it awaits the new deployment;
        // restarted then, it serves the one it holds rather than nothing.
        wait_for("the node awaiting the update", Duration::from_secs(30), || {
            let (_, status, _) = run(
                &home,
                &["--mesh-bootstrap", &boot, "app", "status", "hello"],
            );
            status
                .to_string()
                .contains("\"state\":\"outdated:")
                .then_some(())
        });
        a.kill();
        a = node(&home, farm, &data_a, a_ports, None);
        let back = wait_for(
            "the app after a restart while awaiting",
            Duration::from_secs(60),
            || get(&url).filter(|(code, _)| *code == 200),
        );
        assert_eq!(back.1, "hello from peergrid\n");
        // Its log still has what it logged before the restarts, and says where they were.
        let (ok, logs, err) = run(
            &home,
            &["--mesh-bootstrap", &boot, "app", "logs", "hello"],
        );
        assert!(ok, "app logs: {err}");
        let text = logs["replicas"][0]["logs"]["stdout"]
            .as_str()
            .unwrap_or_default();
        assert!(
            text.contains("GET / -> 200") && text.contains("the node restarted"),
            "{logs}"
        );
        // The node's metrics count the app's requests since its restart.
        let contract = replica["contract"].as_u64().expect("contract");
        let metrics = get(&format!("http://127.0.0.1:{}/metrics", base + 250))
            .expect("metrics")
            .1;
        let served = format!(
            "peergrid_node_app_requests_total{{contract=\"{contract}\",workload=\"hello\"}} 1"
        );
        assert!(metrics.contains(&served), "{metrics}");
        assert!(
            metrics.contains("peergrid_node_deployments{state=\"running\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("peergrid_node_instances{of=\"max\"} 64\n"),
            "{metrics}"
        );
        // The request's instance is given back as its run ends, just after its answer.
        wait_for("the instance given back", Duration::from_secs(5), || {
            get(&format!("http://127.0.0.1:{}/metrics", base + 250))
                .filter(|(_, m)| m.contains("peergrid_node_instances{of=\"in_use\"} 0\n"))
        });
        // What it served is reported to the ledger as network usage and billed.
        let c = contract.to_string();
        let billed = wait_for("the app's traffic billed", Duration::from_secs(60), || {
            let (_, bills, _) = run(&home, &["bill", "history", &c]);
            let nu: u64 = bills["bills"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["nu_bytes"].as_u64())
                .sum();
            (nu > 0).then_some(nu)
        });
        // Three answers were served, one before each kill (reported or lost with the
        // process) and one after: whole answers, never more than were served.
        let answer = "hello from peergrid\n".len() as u64;
        assert!(
            billed % answer == 0 && billed <= 3 * answer,
            "{billed} bytes billed for answers of {answer}"
        );

        // By name: a wildcard DNS name's Host reaches the same app, path unchanged.
        let port = base + 260;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "GET /env/WHO HTTP/1.1\r\nHost: hello.{contract}.grid.localhost:{port}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 404"), "hello's own 404: {answer}");
        assert!(answer.ends_with("not found\n"), "{answer}");

        // What an app keeps in /data outlives its node's restart.
        let (ok, out, err) = run(
            &home,
            &[
                "--mesh-bootstrap", &boot, "deploy", KV, "--name", "kv", "--node", &a_s,
            ],
        );
        assert!(ok, "deploy kv: {err}");
        let kv = first_url(&out);
        let key = format!("{kv}/k/kept");
        assert_eq!(request("PUT", &key, b"across restarts").map(|r| r.0), Some(201));
        a.kill();
        a = node(&home, farm, &data_a, a_ports, None);
        let back = wait_for("kv after the restart", Duration::from_secs(60), || {
            get(&key).filter(|(code, _)| *code == 200)
        });
        assert_eq!(back.1, "across restarts");

        // A node killed part-way through an import: after its restart /data is wholly the
        // files it had or wholly the archive's, and the staged copy is gone.
        let contract = kv.rsplit('/').nth(1).expect("the contract in kv's URL").to_string();
        let folder = find_folder(&data_a, &contract, "data").expect("kv's /data on node a");
        // An import unpacks beside the folder, in `data.import.<contract>.<n>`: what is
        // staged there, files counted (`None`: nothing staged).
        let staged = || {
            let beside = std::fs::read_dir(folder.parent().expect("the contract's folder"))
                .expect("read")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("data.import"))
                .map(|e| e.path())
                .collect::<Vec<_>>();
            (!beside.is_empty()).then(|| beside.iter().map(|dir| count_files(dir)).sum::<usize>())
        };
        let value = vec![b'v'; 1 << 20];
        for i in 0..60 {
            let put = request("PUT", &format!("{kv}/k/m{i}"), &value).map(|r| r.0);
            assert_eq!(put, Some(201), "m{i}");
        }
        let archive = home.join("kv-big.tar");
        let archive_s = archive.to_str().expect("utf-8");
        let export = ["--mesh-bootstrap", &boot, "app", "data", "export", "kv", archive_s];
        let (ok, _, err) = run(&home, &export);
        assert!(ok, "app data export: {err}");
        for i in 0..60 {
            let gone = request("DELETE", &format!("{kv}/k/m{i}"), b"").map(|r| r.0);
            assert_eq!(gone, Some(204), "m{i}");
        }
        assert_eq!(request("PUT", &format!("{kv}/k/after"), b"x").map(|r| r.0), Some(201));
        let keys = || get(&format!("{kv}/")).filter(|(code, _)| *code == 200).map(|r| r.1);
        let before = keys().expect("kv's keys");
        let import = ["--mesh-bootstrap", &boot, "app", "data", "import", "kv", archive_s, "--yes"];
        let mut importing = peergrid(&home)
            .arg("--json")
            .args(import)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the import");
        // Killed once the node has unpacked a few of the archive's 61 files (the folder
        // it replaces holds 2), the sender paused first so that the rest cannot arrive:
        // the unpacking is under way, the exchange not made.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let unpacking = || staged().is_some_and(|files| files >= 5);
        while !unpacking() && std::time::Instant::now() < deadline {
            if importing.try_wait().expect("the import").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let sender = importing.id().to_string();
        let pause = |sig: &str| {
            let _ = std::process::Command::new("kill").args([sig, &sender]).status();
        };
        pause("-STOP");
        assert!(unpacking(), "the import was seen unpacking on the node");
        a.kill();
        pause("-CONT");
        let imported = importing.wait().expect("the import ends");
        assert!(!imported.success(), "an import cut by its node's death fails");
        a = node(&home, farm, &data_a, a_ports, None);
        let after = wait_for("kv after the restart", Duration::from_secs(60), keys);
        let archived = |keys: &str| {
            let keys: Vec<String> = serde_json::from_str(keys).expect("kv's key list");
            keys.len() == 61 && keys.contains(&"m59".to_string()) && keys.contains(&"kept".to_string())
        };
        assert_eq!(after, before, "a cut import leaves /data as it was");
        wait_for("the staged copy removed at the restart", Duration::from_secs(10), || {
            staged().is_none().then_some(())
        });
        // Tried again, it completes.
        let (ok, out, err) = run(&home, &import);
        assert!(ok, "app data import: {err}");
        assert_eq!(out["replicas"][0]["imported"], true, "{out}");
        assert!(archived(&keys().expect("kv's keys")));
        // Once hello is removed, the node drops the log it saved for it.
        assert!(saved_log.exists(), "hello's log is saved while it runs");
        let (ok, _, err) = run(&home, &["--mesh-bootstrap", &boot, "app", "rm", "hello"]);
        assert!(ok, "app rm hello: {err}");
        wait_for("hello's saved log removed", Duration::from_secs(30), || {
            (!saved_log.exists()).then_some(())
        });

        // Node b is killed and the ledger shows it down: skipped before any contract.
        drop(b);
        wait_for("node b down on the ledger", Duration::from_secs(30), || {
            (node_status(&home, b_id) == "down").then_some(())
        });
        let (_, before, _) = run(&home, &["contract", "list"]);
        let (ok, _, err) = run(
            &home,
            &[
                "--mesh-bootstrap",
                &boot,
                "deploy",
                HELLO,
                "--name",
                "again",
                "--node",
                &b_s,
            ],
        );
        assert!(!ok);
        assert!(
            err.contains(&format!("skipping node {b_id}: it is down on the ledger")),
            "{err}"
        );
        let (_, after, _) = run(&home, &["contract", "list"]);
        assert_eq!(before, after, "no contract for a down node");
        drop(a);
    })
    .await
    .expect("the failing-nodes walk-through");
}

/// The folder named `name` whose parent is named `parent`, anywhere under `root`.
fn find_folder(root: &Path, parent: &str, name: &str) -> Option<std::path::PathBuf> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || path.is_symlink() {
                continue;
            }
            if entry.file_name() == name && dir.file_name().is_some_and(|p| p == parent) {
                return Some(path);
            }
            stack.push(path);
        }
    }
    None
}

/// The files anywhere under `dir`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}
