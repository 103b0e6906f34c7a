//! Apps as a new user would deploy them, on a real devnet (four validators, five node
//! processes in two farms, real mesh connections, real wasmtime on the nodes): a core
//! module refused before any contract is created, hello deployed with two replicas on
//! two farms and answering on both URLs, one replica's node stopped while the other keeps
//! answering, its log read back, updated in place to a new deployment, a contract's
//! reservation changed, `app rm` ending the contracts so the URL answers 404; and jobs
//! run once whose output and exit code come back, a runaway one stopped by its limit;
//! and kv keeping its keys in its `/data` folder across requests and an update, within
//! the disk its contract reserves, exported as a tar archive and imported back.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const HELLO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/apps/hello/hello.wasm"
);
const KV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/apps/kv/kv.wasm"
);
const CPU: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/apps/cpu/cpu.wasm"
);

/// A devnet with its default five nodes, stopped when dropped; once every node is up.
fn full_devnet(home: &Path, base_port: u16) -> Proc {
    let child = peergrid(home)
        .args(["devnet", "--base-port", &base_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start devnet");
    let proc = Proc(child);
    wait_for("five nodes up", Duration::from_secs(240), || {
        let (ok, list, _) = run(home, &["node", "list"]);
        let up = list["nodes"]
            .as_array()
            .map(|n| n.iter().filter(|n| n["status"] == "up").count())
            .unwrap_or(0);
        (ok && up == 5).then_some(())
    });
    proc
}

/// The pids of the node process whose HTTP entry is `port`.
fn pids_serving(port: u16) -> Vec<i32> {
    let needle = format!("127.0.0.1:{port}");
    pids_where(|args| args.iter().any(|a| a == "--http") && args.iter().any(|a| a == &needle))
}

/// The port of a replica's URL (`http://127.0.0.1:PORT/…`): its node's HTTP entry.
fn entry_port(url: &str) -> u16 {
    (url.trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next())
    .and_then(|p| p.parse().ok())
    .expect("a replica URL's port")
}

/// Send `sig` (`-STOP`, `-CONT`) to each of `pids`.
fn signal_all(pids: &[i32], sig: &str) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
    }
}

/// The devnet's validator URLs, for a CLI whose home is elsewhere.
fn ledger(home: &Path) -> String {
    let devnet: Value =
        serde_json::from_slice(&std::fs::read(home.join("devnet/devnet.json")).expect("devnet"))
            .expect("devnet.json");
    let apis: Vec<String> = serde_json::from_value(devnet["apis"].clone()).expect("apis");
    apis.join(",")
}

fn contracts(home: &Path) -> Vec<Value> {
    let (ok, list, err) = run(home, &["contract", "list"]);
    assert!(ok, "contract list: {err}");
    list["contracts"].as_array().cloned().unwrap_or_default()
}

#[test]
fn deploy_call_survive_a_node_and_remove_an_app() {
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let base = base_port(3_600);
    let _devnet = full_devnet(home, base);

    // A core module is refused here, before any contract is paid for.
    let core = home.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let (ok, _, err) = run(
        home,
        &["deploy", core.to_str().expect("utf-8"), "--name", "core"],
    );
    assert!(!ok, "a core module must be refused");
    assert!(err.contains("core WebAssembly module"), "{err}");
    assert!(
        contracts(home).is_empty(),
        "no contract for a refused component"
    );

    // Two replicas, on two farms, each answering on its URL.
    let started = Instant::now();
    let (ok, out, err) = run(
        home,
        &["deploy", HELLO, "--name", "hello", "--replicas", "2"],
    );
    assert!(ok, "deploy: {err}");
    assert!(err.contains("finalized on node"), "steps are shown: {err}");
    assert!(err.contains("running on node"), "steps are shown: {err}");
    eprintln!("deployed in {:?}", started.elapsed());
    let mut replicas = out["app"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(replicas.len(), 2, "{out}");
    let urls_of = |replicas: &[Value]| -> Vec<String> {
        replicas
            .iter()
            .map(|r| r["url"].as_str().expect("a url").to_string())
            .collect()
    };
    let mut urls = urls_of(&replicas);
    assert_ne!(replicas[0]["node"], replicas[1]["node"], "two nodes");
    for url in &urls {
        assert_eq!(
            get(url),
            Some((200, "hello from peergrid\n".to_string())),
            "{url}"
        );
    }
    let (ok, status, err) = run(home, &["app", "status", "hello"]);
    assert!(ok, "app status: {err}");
    assert_eq!(status["replicas"][0]["state"], "running", "{status}");

    // One replica's node stops; the other answers.
    let port = entry_port(&urls[0]);
    let pids = pids_serving(port);
    assert!(!pids.is_empty(), "the node serving {port} runs");
    // Stopped, not killed: a killed node would be started again by the devnet.
    let signal = |sig: &str| signal_all(&pids, sig);
    signal("-STOP");
    let other = get(&urls[1]);
    let (ok, status, _) = run(home, &["app", "status", "hello"]);
    // Repaired while it is stopped: a new replica on a third node, the old contract ended,
    // its /data restored from a backup.
    let backup = home.join("backup");
    std::fs::create_dir_all(&backup).expect("dir");
    std::fs::write(backup.join("restored.txt"), b"from the backup").expect("write");
    let archive = home.join("backup.tar");
    let tar = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&backup)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    let archive_s = archive.to_str().expect("utf-8");
    let (repaired, fixed, err) = run(
        home,
        &["app", "repair", "hello", HELLO, "--data", archive_s],
    );
    signal("-CONT");
    assert!(!ok, "a replica not answering fails the status: {status}");
    assert_eq!(status["replicas"][1]["state"], "running", "{status}");
    assert_eq!(other, Some((200, "hello from peergrid\n".to_string())));
    assert!(repaired, "app repair: {err}");
    let old = &fixed["replaced"][0]["old"];
    let new = &fixed["replaced"][0]["new"];
    assert_eq!(old["contract"], replicas[0]["contract"], "{fixed}");
    assert!(
        new["node"] != replicas[0]["node"] && new["node"] != replicas[1]["node"],
        "{fixed}"
    );
    assert_eq!(
        fixed["data_restored"].as_array().map(Vec::len),
        Some(1),
        "only the moved replica: {fixed}"
    );
    assert_eq!(fixed["data_restored"][0]["imported"], true, "{fixed}");
    assert_eq!(fixed["data_restored"][0]["node"], new["node"], "{fixed}");
    let restored = home.join("restored.tar");
    let new_node = new["node"].to_string();
    let (ok, _, err) = run(
        home,
        &[
            "app",
            "data",
            "export",
            "hello",
            restored.to_str().expect("utf-8"),
            "--node",
            &new_node,
        ],
    );
    assert!(ok, "app data export: {err}");
    let file = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&restored)
        .arg("restored.txt")
        .output()
        .expect("tar");
    assert_eq!(
        String::from_utf8_lossy(&file.stdout),
        "from the backup",
        "the moved replica's /data holds the backup's file"
    );
    replicas = fixed["app"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    urls = urls_of(&replicas);
    assert_eq!(
        get(&urls[0]),
        Some((200, "hello from peergrid\n".to_string())),
        "the new replica answers"
    );
    let (_, shown, _) = run(home, &["contract", "show", &old["contract"].to_string()]);
    assert!(
        shown["contract"]["state"].to_string().contains("deleted"),
        "{shown}"
    );
    let (ok, status, err) = run(home, &["app", "status", "hello"]);
    assert!(ok, "both replicas serve again: {err} {status}");
    let (ok, again, err) = run(home, &["app", "repair", "hello", HELLO]);
    assert!(ok, "{err}");
    assert_eq!(
        again["replaced"].as_array().map(Vec::len),
        Some(0),
        "{again}"
    );

    // Its log: what hello printed for each request, read with the owner's signature.
    assert_eq!(get(&format!("{}env/WHO", urls[1])).map(|r| r.0), Some(404));
    let (ok, logs, err) = run(home, &["app", "logs", "hello"]);
    assert!(ok, "app logs: {err}");
    let second = logs["replicas"][1]["logs"]["stdout"]
        .as_str()
        .unwrap_or_default();
    assert!(
        second.contains("GET / -> 200") && second.contains("GET /env/WHO -> 404"),
        "{logs}"
    );
    let stranger = home.join("stranger");
    std::fs::create_dir_all(&stranger).expect("dir");
    std::fs::copy(home.join("apps.json"), stranger.join("apps.json")).expect("copy");
    assert!(run(&stranger, &["key", "new"]).0, "a stranger's key");
    let (read, _, err) = run(
        &stranger,
        &["--ledger", &ledger(home), "app", "logs", "hello"],
    );
    assert!(
        !read && err.contains("belongs to account") && err.contains("--key"),
        "the record names its owner: {err}"
    );
    // A record without its owner (written before it was kept, or edited): each node
    // refuses the stranger.
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(stranger.join("apps.json")).expect("read"))
            .expect("apps.json");
    if let Some(apps) = record["apps"].as_object_mut() {
        for app in apps.values_mut() {
            app.as_object_mut().map(|a| a.remove("owner"));
        }
    }
    std::fs::write(stranger.join("apps.json"), record.to_string()).expect("write");
    let (read, theirs, _) = run(
        &stranger,
        &["--ledger", &ledger(home), "app", "logs", "hello"],
    );
    assert!(!read, "a refused read fails the command: {theirs}");
    let refused = theirs["replicas"][1]["error"].as_str().unwrap_or_default();
    assert!(
        refused.contains("owner"),
        "only the owner reads it: {theirs}"
    );

    // Updated in place: both replicas run the new deployment (a new environment), and
    // each answers throughout, the previous deployment serving until the new one runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (stop, urls) = (stop.clone(), urls.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for url in &urls {
                    seen.push(get(url).map(|(code, body)| (code, body.trim().to_string())));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let (ok, updated, err) = run(
        home,
        &["app", "update", "hello", HELLO, "--env", "WHO=peergrid"],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.join().expect("watcher");
    assert!(ok, "app update: {err}");
    assert!(seen.len() > 10, "{seen:?}");
    let refused: Vec<_> = seen
        .iter()
        .filter(|r| !matches!(r, Some((200, _))))
        .collect();
    assert!(refused.is_empty(), "answers during the update: {refused:?}");
    assert_eq!(updated["failed_nodes"].as_array().map(Vec::len), Some(0));
    for url in &urls {
        assert_eq!(
            get(&format!("{url}env/WHO")),
            Some((200, "peergrid\n".to_string())),
            "{url}"
        );
    }
    let (again, _, err) = run(
        home,
        &["app", "update", "hello", HELLO, "--env", "WHO=peergrid"],
    );
    assert!(!again && err.contains("nothing to update"), "{err}");
    // The log goes on across the update: what the previous deployment printed (the 404
    // above, before WHO was set), a line where the new one took over, then its own.
    let (ok, logs, err) = run(home, &["app", "logs", "hello"]);
    assert!(ok, "app logs: {err}");
    let second = logs["replicas"][1]["logs"]["stdout"]
        .as_str()
        .unwrap_or_default();
    let handover = second.find("--- deployment ").unwrap_or(usize::MAX);
    let before = second.find("GET /env/WHO -> 404").unwrap_or(usize::MAX);
    let after = second.rfind("GET /env/WHO -> 200").unwrap_or(0);
    assert!(before < handover && handover < after, "{logs}");

    // A contract pointed at a deployment its node has not received yet: the one it ran
    // goes on serving meanwhile (an update sends the new one right after).
    let contract = replicas[0]["contract"].to_string();
    let (_, shown, _) = run(home, &["contract", "show", &contract]);
    let hash = find_key(&shown, "deployment_hash")
        .and_then(|h| h.as_str().map(str::to_string))
        .expect("the contract's deployment hash");
    let elsewhere = "ab".repeat(32);
    let (ok, _, err) = run(
        home,
        &[
            "contract",
            "update",
            &contract,
            "--deployment-hash",
            &elsewhere,
        ],
    );
    assert!(ok, "contract update: {err}");
    // Once its node has the contract's new hash, the app still answers, for a while.
    let health = format!("http://127.0.0.1:{}", entry_port(&urls[0]) - 310 + 200);
    wait_for(
        "the node to follow the update",
        Duration::from_secs(30),
        || {
            let (_, body) = get(&format!("{health}/v1/workloads"))?;
            let items: Value = serde_json::from_str(&body).ok()?;
            (items["items"].as_array()?.iter()).find(|w| {
                w["contract"].as_u64() == contract.parse().ok()
                    && w["deployment_hash"] == elsewhere.as_str()
            })?;
            Some(())
        },
    );
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until {
        assert_eq!(
            get(&format!("{}env/WHO", urls[0])),
            Some((200, "peergrid\n".to_string())),
            "while the new deployment has not come"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, _, err) = run(
        home,
        &["contract", "update", &contract, "--deployment-hash", &hash],
    );
    assert!(ok, "contract update back: {err}");

    // A replica whose node is frozen during an update misses it: it serves the old
    // version, `app status` says so, and `app repair` sends it the new one.
    let port = entry_port(&urls[1]);
    let frozen = pids_serving(port);
    assert!(!frozen.is_empty(), "the node serving {port} runs");
    let signal = |sig: &str| signal_all(&frozen, sig);
    signal("-STOP");
    let missed = peergrid(home)
        .args([
            "--json",
            "app",
            "update",
            "hello",
            HELLO,
            "--env",
            "WHO=again",
        ])
        .output()
        .expect("app update");
    signal("-CONT");
    assert_eq!(missed.status.code(), Some(3), "{missed:?}");
    let outdated = wait_for(
        "the replica shown outdated",
        Duration::from_secs(60),
        || {
            let (ok, status, _) = run(home, &["app", "status", "hello"]);
            (!ok && status.to_string().contains("outdated")).then_some(status)
        },
    );
    assert!(
        outdated
            .to_string()
            .contains("which this node has not received"),
        "{outdated}"
    );
    assert_eq!(
        get(&format!("{}env/WHO", urls[1])),
        Some((200, "peergrid\n".to_string())),
        "the old version serves meanwhile"
    );
    let (ok, fixed, err) = run(home, &["app", "repair", "hello", HELLO]);
    assert!(ok, "app repair: {err}");
    assert_eq!(
        fixed["updated"].as_array().map(Vec::len),
        Some(1),
        "{fixed}"
    );
    assert_eq!(
        fixed["replaced"].as_array().map(Vec::len),
        Some(0),
        "{fixed}"
    );
    for url in &urls {
        assert_eq!(
            get(&format!("{url}env/WHO")),
            Some((200, "again\n".to_string())),
            "{url}"
        );
    }
    // Every replica runs the update (once the frozen node reports uptime again).
    wait_for("app status to pass", Duration::from_secs(60), || {
        run(home, &["app", "status", "hello"]).0.then_some(())
    });

    // A contract's reservation changes; the app keeps answering.
    let (ok, _, err) = run(home, &["contract", "update", &contract, "--mru", "192MiB"]);
    assert!(ok, "contract update: {err}");
    let (ok, shown, _) = run(home, &["contract", "show", &contract]);
    assert!(ok);
    assert_eq!(shown["contract"]["reserved"]["mru"], 192 << 20, "{shown}");
    assert_eq!(get(&urls[0]).map(|r| r.0), Some(200));
    let (same, _, err) = run(home, &["contract", "update", &contract]);
    assert!(!same && err.contains("nothing to change"), "{err}");

    // Removed: the contracts end and the surviving node stops serving it.
    let (ok, _, err) = run(home, &["app", "rm", "hello"]);
    assert!(ok, "app rm: {err}");
    wait_for("the app to be gone", Duration::from_secs(60), || {
        get(&urls[1])
            .is_some_and(|(code, _)| code == 404)
            .then_some(())
    });
    let (ok, list, _) = run(home, &["app", "list"]);
    assert!(ok);
    assert_eq!(list["apps"].as_array().map(Vec::len), Some(0), "{list}");

    // A job: run once on a node, its output and exit code come back, its contract ends.
    let job = |args: &[&str]| {
        peergrid(home)
            .args(["job", "run", CPU])
            .args(args)
            .output()
            .expect("job run")
    };
    let primes = job(&["--", "primes", "100"]);
    assert_eq!(
        String::from_utf8_lossy(&primes.stdout),
        "primes below 100: 25\n"
    );
    assert_eq!(primes.status.code(), Some(0), "{primes:?}");
    let bad = job(&["--", "bogus"]);
    assert_eq!(bad.status.code(), Some(2), "the job's own exit code");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("usage: cpu"));
    let spin = job(&["--cpu-ms", "300", "--", "spin"]);
    assert_eq!(spin.status.code(), Some(1), "{spin:?}");
    assert!(
        String::from_utf8_lossy(&spin.stderr).contains("CPU limit of 300 ms"),
        "{}",
        String::from_utf8_lossy(&spin.stderr)
    );
    // Stopped from outside while it runs (a script's `timeout` sends SIGTERM): its
    // contract is cancelled all the same, not left billing.
    let mut running = peergrid(home)
        .args([
            "job",
            "run",
            CPU,
            "--cpu-ms",
            "60000",
            "--wall-ms",
            "60000",
            "--",
            "spin",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("job run");
    wait_for(
        "the spinning job's contract",
        Duration::from_secs(60),
        || {
            let live = contracts(home)
                .into_iter()
                .any(|c| c["state"]["state"] != "deleted");
            live.then_some(())
        },
    );
    // Past its placement, into the wait for its end.
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let status = running.wait().expect("job run ends");
    let mut err = String::new();
    if let Some(mut stderr) = running.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
    }
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("cancelled"),
        "{err}"
    );
    let live: Vec<Value> = contracts(home)
        .into_iter()
        .filter(|c| c["state"]["state"] != "deleted")
        .collect();
    assert!(
        live.is_empty(),
        "every job's contract is cancelled: {live:?}"
    );

    // Kept: its output is read again later.
    let (ok, kept, err) = run(
        home,
        &[
            "job", "run", CPU, "--keep", "--name", "primes", "--", "primes", "1000",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(kept["logs"]["exit_code"], 0, "{kept}");
    let (ok, logs, err) = run(home, &["app", "logs", "primes"]);
    assert!(ok, "{err}");
    assert_eq!(
        logs["replicas"][0]["logs"]["stdout"], "primes below 1000: 168\n",
        "{logs}"
    );
    // Whose it is: `app list` says so, and another key sharing the home is told whose
    // key to use rather than refused by each node.
    let (_, me, _) = run(home, &["key", "show"]);
    let (_, list, _) = run(home, &["app", "list"]);
    assert_eq!(list["apps"][0]["owner"], me["account"], "{list}");
    let table = peergrid(home)
        .args(["app", "list"])
        .output()
        .expect("app list");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("OWNER")
            && table
                .lines()
                .any(|l| l.starts_with("primes") && l.contains(" you ")),
        "{table}"
    );
    let other = home.join("other-key.json");
    let (ok, _, err) = run(
        home,
        &["--key", other.to_str().expect("path"), "key", "new"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        home,
        &[
            "--key",
            other.to_str().expect("path"),
            "app",
            "logs",
            "primes",
        ],
    );
    assert!(
        !ok && err.contains("belongs to account") && err.contains("--key"),
        "{err}"
    );

    // Two replicas asked of one node: the one that runs is kept and named, and the exit
    // status (2) tells a script that the redundancy it asked for is not there.
    let node = replicas[1]["node"].to_string();
    let few = peergrid(home)
        .args([
            "--json",
            "deploy",
            HELLO,
            "--name",
            "few",
            "--replicas",
            "2",
        ])
        .args(["--node", &node])
        .output()
        .expect("deploy");
    let err = String::from_utf8_lossy(&few.stderr);
    assert_eq!(
        few.status.code(),
        Some(3),
        "partly done, not a usage error: {err}"
    );
    assert!(err.contains("only 1 of 2 replicas run"), "{err}");
    let out: Value = serde_json::from_slice(&few.stdout).unwrap_or(Value::Null);
    assert_eq!(out["replicas_asked"], 2, "{out}");
    assert_eq!(
        out["app"]["replicas"].as_array().map(Vec::len),
        Some(1),
        "{out}"
    );
    let (ok, status, err) = run(home, &["app", "status", "few"]);
    assert!(ok, "the replica that runs is kept: {err}");
    assert_eq!(status["replicas"][0]["state"], "running", "{status}");

    // kv keeps its keys in /data: each request is a fresh instance, so what a GET
    // returns was read from the folder.
    let (ok, out, err) = run(home, &["deploy", KV, "--name", "kv", "--disk", "2MiB"]);
    assert!(ok, "deploy kv: {err}");
    let kv = first_url(&out);
    // What `app status kv` prints, as a person reads it.
    let status_text = || {
        let out = peergrid(home)
            .args(["app", "status", "kv"])
            .output()
            .expect("app status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let put = |key: &str, body: &[u8]| {
        request("PUT", &format!("{kv}/k/{key}"), body).expect("kv answers")
    };
    assert_eq!(put("greeting", b"hello").0, 201);
    assert_eq!(
        get(&format!("{kv}/k/greeting")),
        Some((200, "hello".to_string()))
    );
    // The node measures the folder just after each run.
    let status = wait_for("kv's key counted", Duration::from_secs(20), || {
        let (_, status, _) = run(home, &["app", "status", "kv"]);
        (status["replicas"][0]["data_used_bytes"].as_u64() > Some(0)).then_some(status)
    });
    assert_eq!(
        status["replicas"][0]["data_quota_bytes"],
        2 << 20,
        "{status}"
    );
    let table = status_text();
    assert!(
        table.contains("/data ") && table.contains("of 2.0 MiB"),
        "{table}"
    );
    // A write that would pass the disk is refused before it lands (507), reads go on,
    // and a DELETE gives its room back.
    let big = vec![b'v'; 1000 << 10];
    assert_eq!(put("a", &big).0, 201);
    assert_eq!(put("b", &big).0, 201);
    let (code, body) = put("c", &big);
    assert_eq!(code, 507, "{body}");
    assert!(body.contains("delete keys"), "{body}");
    let full = wait_for("kv's /data nearly full", Duration::from_secs(20), || {
        let text = status_text();
        text.contains("% full").then_some(text)
    });
    assert!(
        !full.contains("OVER") && !full.contains("READ-ONLY"),
        "{full}"
    );
    assert_eq!(
        request("DELETE", &format!("{kv}/k/a"), b"").map(|r| r.0),
        Some(204)
    );
    wait_for("room after the DELETE", Duration::from_secs(10), || {
        (put("c", &big).0 == 201).then_some(())
    });
    // Files past a smaller disk (an update that shrinks it): writes that need room
    // fail, removals work; well past it (10 %, at least 8 MiB), /data is read-only.
    let update = |disk: &str| {
        let (ok, _, err) = run(home, &["app", "update", "kv", KV, "--disk", disk]);
        assert!(ok, "app update --disk {disk}: {err}");
    };
    update("16MiB");
    for i in 0..10 {
        let (code, body) = put(&format!("fill{i}"), &big);
        assert_eq!(code, 201, "fill{i}: {body}");
    }
    // Below what the files use, an update warns.
    let (ok, _, err) = run(home, &["app", "update", "kv", KV, "--disk", "8MiB"]);
    assert!(ok, "app update --disk 8MiB: {err}");
    assert!(err.contains("writes that need room fail"), "{err}");
    let over = wait_for("kv's /data over its disk", Duration::from_secs(20), || {
        let text = status_text();
        text.contains("OVER its disk").then_some(text)
    });
    assert!(!over.contains("READ-ONLY"), "{over}");
    let (code, body) = put("d", b"more");
    assert!(code == 507 && body.contains("delete keys"), "{code} {body}");
    assert_eq!(
        request("DELETE", &format!("{kv}/k/fill0"), b"").map(|r| r.0),
        Some(204),
        "removing works over the disk"
    );
    // So far below that /data would turn read-only at once (no removing either): refused
    // unless forced.
    let (ok, _, err) = run(home, &["app", "update", "kv", KV, "--disk", "1MiB"]);
    assert!(
        !ok && err.contains("--force") && err.contains("too small"),
        "{err}"
    );
    let (_, status, _) = run(home, &["app", "status", "kv"]);
    assert_eq!(
        status["replicas"][0]["data_quota_bytes"],
        8 << 20,
        "{status}"
    );
    let (ok, out, err) = run(
        home,
        &["app", "update", "kv", KV, "--disk", "1MiB", "--force"],
    );
    assert!(ok, "app update --disk 1MiB --force: {err}");
    assert_eq!(out["nodes_read_only"], 1, "{out}");
    let text = wait_for("kv's /data read-only", Duration::from_secs(20), || {
        let text = status_text();
        text.contains("READ-ONLY").then_some(text)
    });
    assert!(
        text.contains("OVER its disk and READ-ONLY") && text.contains("--disk SIZE"),
        "{text}"
    );
    let (ok, status, err) = run(home, &["app", "status", "kv"]);
    assert_eq!(status["replicas"][0]["data_read_only"], true, "{status}");
    assert!(
        !ok && err.contains("read-only /data"),
        "a monitor learns of it: {err}"
    );
    // The node's metrics say the same, for its farmer.
    let c = &status["replicas"][0]["contract"];
    let node_metrics = format!("http://127.0.0.1:{}/metrics", entry_port(&kv) - 310 + 200);
    let metrics = get(&node_metrics).expect("the node's metrics").1;
    for line in [
        format!("peergrid_node_app_data_quota_bytes{{contract=\"{c}\"}} 1048576\n"),
        format!("peergrid_node_app_data_read_only{{contract=\"{c}\"}} 1\n"),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let (code, body) = put("d", b"more");
    assert!(code == 507 && body.contains("read-only"), "{code} {body}");
    assert_eq!(
        get(&format!("{kv}/k/greeting")),
        Some((200, "hello".to_string()))
    );
    // More disk, without the component (the deployment stays): the files stay, writes
    // work again.
    let (ok, _, err) = run(home, &["app", "update", "kv", "--env", "A=1"]);
    assert!(!ok && err.contains("give the component too"), "{err}");
    let (ok, out, err) = run(home, &["app", "update", "kv", "--disk", "32MiB"]);
    assert!(ok, "app update --disk without the component: {err}");
    assert_eq!(out["failed_nodes"], json!([]), "{out}");
    assert_eq!(out["app"]["spec"]["disk_bytes"], 32 << 20, "{out}");
    assert_eq!(out["nodes_over_disk"], 0, "{out}");
    assert_eq!(
        get(&format!("{kv}/k/greeting")),
        Some((200, "hello".to_string()))
    );
    assert_eq!(put("d", b"more").0, 201);
    let (_, status, _) = run(home, &["app", "status", "kv"]);
    assert_eq!(
        status["replicas"][0]["data_quota_bytes"],
        32 << 20,
        "{status}"
    );
    let (ok, _, err) = run(home, &["app", "update", "kv", KV, "--disk", "32MiB"]);
    assert!(!ok && err.contains("nothing to update"), "{err}");
    // Disk given to the contract by hand stays through an update that does not name it.
    let (ok, _, err) = run(
        home,
        &["contract", "update", &c.to_string(), "--sru", "48MiB"],
    );
    assert!(ok, "contract update --sru: {err}");
    let (ok, _, err) = run(home, &["app", "update", "kv", KV, "--env", "B=1"]);
    assert!(ok, "app update --env: {err}");
    let (_, status, _) = run(home, &["app", "status", "kv"]);
    assert_eq!(
        status["replicas"][0]["data_quota_bytes"],
        48 << 20,
        "{status}"
    );

    // A replica's /data copied out as a tar archive and put back: a key removed since
    // comes back, one written since goes, and the app writes on.
    let archive = home.join("kv-data.tar");
    let path = archive.to_str().expect("utf-8");
    let (ok, out, err) = run(home, &["app", "data", "export", "kv", path]);
    assert!(ok, "app data export: {err}");
    let len = std::fs::metadata(&archive).expect("the archive").len();
    assert_eq!(out["archive_bytes"], len, "{out}");
    assert!(out["file_bytes"].as_u64() > Some(10 << 20), "{out}");
    let (ok, _, err) = run(home, &["app", "data", "export", "kv", path]);
    assert!(
        !ok && err.contains("--force"),
        "an archive is not overwritten unasked: {err}"
    );
    assert_eq!(
        request("DELETE", &format!("{kv}/k/greeting"), b"").map(|r| r.0),
        Some(204)
    );
    assert_eq!(put("later", b"after the export").0, 201);
    let (ok, _, err) = run(home, &["app", "data", "import", "kv", path]);
    assert!(
        !ok && err.contains("--yes"),
        "a script replaces files only when told: {err}"
    );
    let (ok, out, err) = run(home, &["app", "data", "import", "kv", path, "--yes"]);
    assert!(ok, "app data import: {err}");
    assert_eq!(out["replicas"][0]["imported"], true, "{out}");
    assert_eq!(
        get(&format!("{kv}/k/greeting")),
        Some((200, "hello".to_string()))
    );
    assert_eq!(get(&format!("{kv}/k/later")).map(|r| r.0), Some(404));
    assert_eq!(put("e", b"written after the import").0, 201);
    // What is no archive, or would not fit the app's disk, is refused before a byte is
    // sent; /data stays as it was.
    let (ok, _, err) = run(home, &["app", "data", "import", "kv", KV, "--yes"]);
    assert!(!ok && err.contains("not a tar archive"), "{err}");
    // A tar of nothing (end-of-archive blocks only) would empty the folder: only on purpose.
    let nothing = home.join("nothing.tar");
    std::fs::write(&nothing, vec![0u8; 10240]).expect("write");
    let nothing = nothing.to_str().expect("utf-8");
    let (ok, _, err) = run(home, &["app", "data", "import", "kv", nothing, "--yes"]);
    assert!(!ok && err.contains("--empty"), "{err}");
    let folder = home.join("too-big");
    std::fs::create_dir_all(&folder).expect("dir");
    std::fs::File::create(folder.join("sparse"))
        .and_then(|f| f.set_len(49 << 20))
        .expect("a sparse file");
    let big = home.join("too-big.tar");
    let tar = std::process::Command::new("tar")
        .args(["-cf", big.to_str().expect("utf-8"), "-C"])
        .arg(&folder)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tar.success());
    let (ok, _, err) = run(
        home,
        &[
            "app",
            "data",
            "import",
            "kv",
            big.to_str().expect("utf-8"),
            "--yes",
        ],
    );
    assert!(
        !ok && err.contains("more than this replica's 48.0 MiB") && err.contains("--disk 50MiB"),
        "{err}"
    );
    assert_eq!(
        get(&format!("{kv}/k/e")),
        Some((200, "written after the import".to_string()))
    );
    // Only the contract's owner reads its /data: a record without its owner lets a
    // stranger ask, and the node refuses.
    let stranger = home.join("stranger");
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(home.join("apps.json")).expect("read"))
            .expect("apps.json");
    if let Some(apps) = record["apps"].as_object_mut() {
        for app in apps.values_mut() {
            app.as_object_mut().map(|a| a.remove("owner"));
        }
    }
    std::fs::write(stranger.join("apps.json"), record.to_string()).expect("write");
    let theirs = stranger.join("theirs.tar");
    let (ok, _, err) = run(
        &stranger,
        &[
            "--ledger",
            &ledger(home),
            "app",
            "data",
            "export",
            "kv",
            theirs.to_str().expect("utf-8"),
        ],
    );
    assert!(!ok && err.contains("owner"), "{err}");
    assert!(!theirs.exists() && !stranger.join("theirs.tar.part").exists());
}

/// The first value under `key` anywhere in `v`.
fn find_key(v: &Value, key: &str) -> Option<Value> {
    match v {
        Value::Object(map) => map
            .get(key)
            .cloned()
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}
