//! The README's first command for real: 4 validator processes on loopback, used through the CLI.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{peergrid, wait_for};
use peergrid_client::types::api::node_routes;
use serde_json::Value;

/// One devnet at a time: two would share the machine's two cores with every process of
/// both, and their deadlines are set for one.
static ONE_DEVNET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn json(home: &Path, args: &[&str]) -> (bool, Value) {
    let (ok, value, err) = common::run(home, args);
    if !ok {
        eprintln!("peergrid {}: {err}", args.join(" "));
    }
    (ok, value)
}

/// Stops the devnet (Ctrl-C) even if the test fails.
struct Devnet(Child);

impl Devnet {
    fn start(home: &Path, base_port: u16) -> Devnet {
        Devnet::start_with(home, base_port, &[])
    }

    /// Start a devnet with `extra` arguments (`--set NAME=VALUE` for a new one).
    fn start_with(home: &Path, base_port: u16, extra: &[&str]) -> Devnet {
        // Kept so that a failure can show why the supervisor gave up.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("supervisor.log"))
            .expect("supervisor log");
        let child = peergrid(home)
            .args(["devnet", "--base-port", &base_port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start devnet");
        Devnet(child)
    }

    fn interrupt(&mut self) -> std::process::ExitStatus {
        self.signal("-INT")
    }

    /// Send `sig` (`-INT`, `-TERM`) and wait for the devnet to stop.
    fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "devnet did not stop on Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.interrupt();
        }
    }
}

fn wait_finalizing(home: &Path, devnet: &mut Devnet) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(Some(exit)) = devnet.0.try_wait() {
            panic!(
                "the devnet stopped ({exit}) before it finalized\n{}",
                logs(home)
            );
        }
        let (ok, status) = json(home, &["devnet", "status"]);
        let all = status["validators"]
            .as_array()
            .is_some_and(|v| v.iter().all(|v| v["finalizing"] == true));
        if ok && all {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "devnet never finalized: {status}\n{}",
            logs(home)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last lines of the supervisor's and each validator's log, for a failure message.
fn logs(home: &Path) -> String {
    let mut files = vec![home.join("supervisor.log")];
    files.extend((0..4).map(|i| home.join(format!("devnet/logs/validator-{i}.log"))));
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {} (last 40 lines)\n", f.display()));
        for l in &lines[lines.len().saturating_sub(40)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The health URLs of the devnet's nodes, once it has started them.
fn wait_nodes(home: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running: Option<Value> = std::fs::read(home.join("devnet/devnet.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let nodes: Vec<String> = running
            .and_then(|r| serde_json::from_value(r["nodes"].clone()).ok())
            .unwrap_or_default();
        if !nodes.is_empty() {
            return nodes;
        }
        assert!(
            Instant::now() < deadline,
            "the devnet never started its nodes"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn pids(home: &Path, what: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("{}/devnet/{what}", home.display())])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Kills whatever still runs from a test's devnet when the test ends, so that a failure
/// leaves no validator or node holding ports (and a CI job's lock) behind.
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("{}/devnet/", self.0.display())])
            .status();
    }
}

/// Most memory a devnet validator may hold once it finalizes blocks.
const VALIDATOR_RSS_MAX_KIB: u64 = 768 * 1024;

/// Whether `devnet status` (`s`) shows the process `name` following the ledger.
fn following(s: &Value, name: &str) -> bool {
    (s["processes"].as_array().into_iter().flatten()).any(|p| {
        p["name"] == name && p["following"] == true && p["followed_height"].as_u64() > Some(0)
    })
}

/// Wait until `devnet status` shows the node process `name` following the ledger.
fn wait_following(home: &Path, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = json(home, &["devnet", "status"]);
        if following(&s, name) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not following: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Send `sig` (`-STOP`, `-CONT`) to the devnet's node 2, which must be running.
fn signal_node_2(home: &Path, sig: &str) {
    let pids = pids(home, "nodes/node-2 ");
    assert_eq!(pids.len(), 1, "node 2: {pids:?}");
    let _ = Command::new("kill")
        .args([sig, &pids[0].to_string()])
        .status();
}

fn processes(home: &Path, what: &str) -> usize {
    pids(home, what).len()
}

#[test]
fn a_newcomer_runs_a_devnet_and_sends_a_transfer_that_finalizes() {
    let _one = ONE_DEVNET.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let _reaper = Reaper(home.to_path_buf());
    let base_port = common::base_port(10_000);
    let (stopped, _) = json(home, &["devnet", "status"]);
    assert!(!stopped, "status must fail while no devnet runs");

    // A port already taken is named, with what to do, before anything starts.
    let taken = std::net::TcpListener::bind(("127.0.0.1", base_port + 101)).expect("bind");
    let out = peergrid(home)
        .args(["devnet", "--base-port", &base_port.to_string()])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{}", base_port + 101))
            && err.contains("validator 1's network")
            && err.contains("--base-port"),
        "{err}"
    );
    drop(taken);

    let mut devnet = Devnet::start(home, base_port);
    let status = wait_finalizing(home, &mut devnet);
    let validators = status["validators"].as_array().expect("validators");
    assert_eq!(validators.len(), 4);
    let root = &validators[0]["root"];
    assert!(validators.iter().all(|v| v["finalizing"] == true));

    // Four validators must fit beside everything else on a laptop: their p2p mailboxes,
    // sized for every peer's burst, once took 1.7 GB each.
    let running = pids(home, "validator-");
    assert_eq!(running.len(), 4, "validator processes: {running:?}");
    for pid in running {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        assert!(
            rss_kib < VALIDATOR_RSS_MAX_KIB,
            "validator process {pid} holds {} MiB after start",
            rss_kib / 1024
        );
    }

    // Five nodes in two farms, in distinct places, all up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let nodes = loop {
        let (_, list) = json(home, &["node", "list"]);
        let nodes = list["nodes"].as_array().cloned().unwrap_or_default();
        if nodes.len() == 5 && nodes.iter().all(|n| n["status"] == "up") {
            break nodes;
        }
        assert!(
            Instant::now() < deadline,
            "devnet nodes never all up: {list}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let farms: std::collections::BTreeSet<_> =
        nodes.iter().map(|n| n["farm"].to_string()).collect();
    let cities: std::collections::BTreeSet<_> = nodes
        .iter()
        .map(|n| n["location"]["city"].to_string())
        .collect();
    assert_eq!((farms.len(), cities.len()), (2, 5), "{nodes:?}");

    // The nodes find each other on the mesh through the bootstrap peer the genesis names.
    let running: Value = serde_json::from_slice(
        &std::fs::read(home.join("devnet/devnet.json")).expect("devnet.json"),
    )
    .expect("json");
    let health: Vec<String> = serde_json::from_value(running["nodes"].clone()).expect("nodes");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in &health {
        loop {
            let known = rt
                .block_on(common::node_api(url, node_routes::STATUS))
                .and_then(|s| s["mesh_routing_table_peers"].as_u64())
                .unwrap_or(0);
            if known == 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} knows {known} of its 4 mesh peers"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    // `devnet status` says whether each node follows the ledger, by asking the node.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = json(home, &["devnet", "status"]);
        if (0..5).all(|i| following(&s, &format!("node {i}"))) {
            assert!(
                !s["processes"]
                    .as_array()
                    .expect("processes")
                    .iter()
                    .any(|p| p["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("validator"))
                        && p.get("following").is_some()),
                "only nodes follow: {s}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "nodes not following: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A node frozen (SIGSTOP) does not follow; thawed, it catches up and the status says so.
    let signal = |sig: &str| signal_node_2(home, sig);
    signal("-STOP");
    let (_, s) = json(home, &["devnet", "status"]);
    signal("-CONT");
    let node_2 = (s["processes"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "node 2")
        .cloned()
        .unwrap_or_default();
    assert_eq!(node_2["following"], false, "{s}");
    assert_eq!(node_2["state"], "stopped", "{s}");
    wait_following(home, "node 2");

    // No key of one's own: the CLI uses the devnet's demo account.
    let (ok, balance) = json(home, &["wallet", "balance"]);
    assert!(ok, "{balance}");
    assert_eq!(balance["balance"], "1000000");
    // From another home, PEERGRID_DEVNET names the devnet's folder.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let found = peergrid(elsewhere.path())
        .args(["--json", "wallet", "balance"])
        .env("PEERGRID_DEVNET", home.join("devnet"))
        .output()
        .expect("run");
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let lost = peergrid(elsewhere.path())
        .args(["wallet", "balance"])
        .output()
        .expect("run");
    assert!(
        !lost.status.success(),
        "no devnet in the other home's folder"
    );
    let receiver = "12D3KooWRmPNRfMQCwudpSaD9LiwwbXP4EEKUCGHxnFSr435we14";
    let (ok, sent) = json(
        home,
        &["wallet", "transfer", "--to", receiver, "--amount", "2.5"],
    );
    assert!(ok, "{sent}");
    assert_eq!(sent["status"]["status"], "finalized", "{sent}");
    let hash = sent["hash"].as_str().expect("hash").to_string();
    let (ok, st) = json(home, &["tx", "status", &hash]);
    assert!(ok && st["status"]["status"] == "finalized", "{st}");
    // A hash the ledger never saw fails, so a script waiting on it does not go on.
    let never = "00".repeat(32);
    let (ok, st) = json(home, &["tx", "status", &never]);
    assert!(!ok && st["status"]["status"] == "unknown", "{st}");
    let out = peergrid(home)
        .args(["tx", "status", &never])
        .output()
        .expect("tx status");
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !out.status.success() && said.is_empty() && err.contains(&never),
        "an unknown transaction is said once, with its hash: {said}{err}"
    );
    let (_, got) = json(home, &["wallet", "balance", receiver]);
    assert_eq!(got["balance"], "2.5");
    // The same balance, proven against the block's state root, and that root certified by
    // a quorum of the validators.
    let (ok, proven) = json(home, &["wallet", "balance", receiver, "--prove"]);
    assert!(ok, "{proven}");
    assert_eq!(proven["balance"], "2.5");
    assert_eq!(proven["proof"]["checked"], true);
    assert_eq!(proven["exists"], true);
    let certified_by = proven["proof"]["certified_by"].as_u64().unwrap_or(0);
    let validators = proven["proof"]["validators"].as_u64().unwrap_or(0);
    assert!(
        validators >= 1 && certified_by * 3 > validators * 2,
        "{proven}"
    );
    let (ok, nobody) = json(
        home,
        &[
            "wallet",
            "balance",
            "12D3KooWQMS4bwo6CGUV6gVz6N49AzZhdvgGw25AcfLfjHqaZ9zo",
            "--prove",
        ],
    );
    assert!(
        ok && nobody["balance"] == "0" && nobody["exists"] == false,
        "an unknown account is proven absent: {nobody}"
    );

    // A transfer that cannot apply is refused with the reason, and nothing moves.
    let out = peergrid(home)
        .args([
            "wallet", "transfer", "--to", receiver, "--amount", "5000000",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("insufficient balance"), "{said}");
    assert!(
        said.contains("an account gets tokens by a transfer from a funded one"),
        "says how to get tokens: {said}"
    );
    let (_, got) = json(home, &["wallet", "balance", receiver]);
    assert_eq!(got["balance"], "2.5");

    // Every validator answers, and all finalized the same state root at the height they
    // all reached.
    let (_, s) = json(home, &["devnet", "status"]);
    let heights: Vec<_> = s["validators"]
        .as_array()
        .expect("v")
        .iter()
        .map(|v| v["height"].as_u64())
        .collect();
    assert!(heights.iter().all(|h| h.is_some()));
    assert_ne!(&s["validators"][0]["root"], root, "the state moved on");
    let low = heights.iter().flatten().min().copied().expect("a height");
    let roots: std::collections::HashSet<String> = (0..4)
        .map(|i| {
            let url = format!("http://127.0.0.1:{}/v1/blocks/{low}", base_port + i);
            let (code, body) = common::get(&url).expect("validator answers");
            assert_eq!(code, 200, "{url}: {body}");
            let block: Value = serde_json::from_str(&body).expect("a block");
            block["root"].to_string()
        })
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "validators disagree at height {low}: {roots:?}"
    );

    // A validator and a node killed outright (SIGKILL): the devnet starts them again and
    // finalizes meanwhile, three validators of four being a quorum.
    let victims: Vec<u32> = pids(home, "validator-3.toml")
        .into_iter()
        .chain(pids(home, "nodes/node-1 "))
        .collect();
    assert_eq!(victims.len(), 2, "validator 3 and node 1: {victims:?}");
    for pid in &victims {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let (ok, sent) = json(
        home,
        &["wallet", "transfer", "--to", receiver, "--amount", "1"],
    );
    assert!(ok, "a transfer while a validator is gone: {sent}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let restarted = loop {
        let (_, s) = json(home, &["devnet", "status"]);
        let back = |name: &str| {
            s["processes"].as_array().into_iter().flatten().any(|p| {
                p["name"] == name
                    && p["state"] == "running"
                    && p["restarts"] == 1
                    && p["last_exit"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("was killed (SIGKILL)"))
            })
        };
        if back("validator 3") && back("node 1") {
            break s;
        }
        assert!(Instant::now() < deadline, "not restarted: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        matches!(devnet.0.try_wait(), Ok(None)),
        "the devnet kept running: {restarted}"
    );
    // Each node process names its id on the ledger, which `node` commands take.
    let listed = restarted["processes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ledger_node = |name: &str| {
        (listed.iter())
            .find(|p| p["name"] == name)
            .map(|p| p["ledger_node"].clone())
    };
    assert!(
        ledger_node("node 1").is_some_and(|id| id.as_u64().is_some()),
        "{restarted}"
    );
    assert_eq!(ledger_node("validator 3"), Some(Value::Null), "{restarted}");
    // The restarted node catches up with the ledger, and the status says so.
    wait_following(home, "node 1");
    assert!(
        victims.iter().all(|p| !pids(home, "validator-3.toml")
            .into_iter()
            .chain(pids(home, "nodes/node-1 "))
            .any(|q| q == *p)),
        "new processes"
    );
    let (_, got) = json(home, &["wallet", "balance", receiver]);
    assert_eq!(got["balance"], "3.5");

    // The time a node is down is not billed: a contract on node 2, the node frozen until a
    // bill left some of that time out, then thawed and billed in full again.
    let (_, s) = json(home, &["devnet", "status"]);
    let node_2 = (s["processes"].as_array().into_iter().flatten())
        .find(|p| p["name"] == "node 2")
        .and_then(|p| p["ledger_node"].as_u64())
        .expect("node 2's ledger id")
        .to_string();
    let (ok, made) = json(
        home,
        &[
            "contract", "create", "storage", "--node", &node_2, "--bytes", "1GiB",
        ],
    );
    assert!(ok, "{made}");
    let contract = made["contract"].as_u64().expect("contract id").to_string();
    // Its transaction, for the record.
    let tx = made["hash"].as_str().expect("the transaction's hash");
    let (ok, st) = json(home, &["tx", "status", tx]);
    assert!(ok && st["status"]["status"] == "finalized", "{st}");
    let bills = || {
        let (ok, b) = json(home, &["bill", "history", &contract]);
        assert!(ok, "{b}");
        b["bills"].as_array().cloned().unwrap_or_default()
    };
    let down_ms = |b: &Value| b["node_down_ms"].as_u64().unwrap_or(0);
    let signal = |sig: &str| signal_node_2(home, sig);
    signal("-STOP");
    let stopped = Instant::now();
    // Two report intervals (20 s) after its last report the ledger counts it down, and
    // the next bill leaves that time out.
    wait_for(
        "a bill leaving out node down time",
        Duration::from_secs(90),
        || bills().iter().any(|b| down_ms(b) > 0).then_some(()),
    );
    let shown = peergrid(home)
        .args(["node", "show", &node_2])
        .output()
        .expect("node show");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("down")
            && shown.contains("since")
            && shown.contains("not billed to its contracts"),
        "node show says since when it is down: {shown}"
    );
    let shown = peergrid(home)
        .args(["contract", "show", &contract])
        .output()
        .expect("contract show");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("{node_2} (down since")) && shown.contains("not billed"),
        "contract show says its node is down: {shown}"
    );
    let listed = peergrid(home)
        .args(["contract", "list"])
        .output()
        .expect("contract list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&format!("{node_2} (down)")),
        "contract list marks it: {listed}"
    );
    signal("-CONT");
    let frozen_ms = stopped.elapsed().as_millis() as u64;
    wait_following(home, "node 2");
    // Back up, it is billed in full again.
    let after = wait_for(
        "a full bill after the node is back",
        Duration::from_secs(60),
        || {
            let all = bills();
            let last_down = all.iter().rposition(|b| down_ms(b) > 0)?;
            all[last_down + 1..]
                .iter()
                .any(|b| down_ms(b) == 0)
                .then_some(all)
        },
    );
    // At most the freeze, and the report interval the thawed node may take to report.
    let left_out: u64 = after.iter().map(down_ms).sum();
    assert!(
        left_out > 0 && left_out < frozen_ms + 10_000,
        "{left_out} ms left out of a {frozen_ms} ms freeze: {after:?}"
    );
    for pair in after.windows(2) {
        assert_eq!(pair[0]["to_ms"], pair[1]["from_ms"], "bills leave no gap");
    }
    let text = peergrid(home)
        .args(["bill", "history", &contract])
        .output()
        .expect("bill history");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("node down, not billed"), "{text}");
    let (ok, _) = json(home, &["contract", "cancel", &contract]);
    assert!(ok);

    // Ctrl-C stops every validator; restarting keeps the state.
    assert!(devnet.interrupt().success());
    assert_eq!(
        processes(home, "validator-"),
        0,
        "validators left running after Ctrl-C"
    );
    assert_eq!(
        processes(home, "nodes/"),
        0,
        "nodes left running after Ctrl-C"
    );
    let mut again = Devnet::start(home, base_port);
    wait_finalizing(home, &mut again);
    let (_, got) = json(home, &["wallet", "balance", receiver]);
    assert_eq!(got["balance"], "3.5", "state must survive a restart");

    // A supervisor killed outright (SIGKILL) leaves its validators and nodes running,
    // holding the devnet's ports; the next start stops them instead of failing on those
    // ports. It is killed while its nodes start, before they listen: those must be found too.
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes(home, "nodes/") == 0 {
        assert!(Instant::now() < deadline, "the devnet never started a node");
        std::thread::sleep(Duration::from_millis(20));
    }
    again.0.kill().expect("kill");
    let _ = again.0.wait();
    let orphans = pids(home, "validator-");
    assert_eq!(orphans.len(), 4);
    let orphan_nodes = pids(home, "nodes/");
    assert!(!orphan_nodes.is_empty());
    // Another --base-port on an existing devnet keeps the ports its genesis fixed.
    let mut third = Devnet::start(home, base_port + 7);
    wait_finalizing(home, &mut third);
    let nodes = wait_nodes(home);
    assert_eq!(nodes[0], format!("http://127.0.0.1:{}", base_port + 200));
    let now = pids(home, "validator-");
    assert_eq!(now.len(), 4, "one set of validators runs: {now:?}");
    assert!(
        orphans.iter().all(|p| !now.contains(p)),
        "the orphans were stopped: {orphans:?} {now:?}"
    );
    let now_nodes = pids(home, "nodes/");
    assert_eq!(now_nodes.len(), 5, "one set of nodes runs: {now_nodes:?}");
    assert!(
        orphan_nodes.iter().all(|p| !now_nodes.contains(p)),
        "the orphan nodes were stopped: {orphan_nodes:?} {now_nodes:?}"
    );
    let (_, got) = json(home, &["wallet", "balance", receiver]);
    assert_eq!(
        got["balance"], "3.5",
        "state must survive the orphans being stopped"
    );
    // SIGTERM (kill, systemd, timeout) stops the devnet as Ctrl-C does, children included.
    assert!(third.signal("-TERM").success());
    assert_eq!(
        processes(home, "validator-"),
        0,
        "validators left running after SIGTERM"
    );
    assert_eq!(
        processes(home, "nodes/"),
        0,
        "nodes left running after SIGTERM"
    );
}

/// `path` of validator `i`'s API as JSON, or `None` while it does not answer 200.
fn api_json(base_port: u16, i: u16, path: &str) -> Option<Value> {
    let url = format!("http://127.0.0.1:{}{path}", base_port + i);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let response = reqwest::get(url).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    })
}

#[test]
fn a_validator_that_lost_its_data_starts_again_from_a_snapshot() {
    let _one = ONE_DEVNET.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let _reaper = Reaper(home.to_path_buf());
    let base_port = common::base_port(4_000);
    // Short epochs and a quick idle pace: a snapshot every 20 blocks, a block every 50 ms.
    let fast = ["--set", "epoch_blocks=20", "--set", "idle_block_ms=50"];
    let mut devnet = Devnet::start_with(home, base_port, &fast);
    wait_finalizing(home, &mut devnet);
    let deadline = Instant::now() + Duration::from_secs(120);
    let snapshot = loop {
        let listed = api_json(base_port, 0, "/v1/snapshots").unwrap_or_default();
        if let Some(s) = listed
            .as_array()
            .and_then(|l| l.iter().find(|s| s["height"].as_u64() >= Some(59)))
        {
            break s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot served: {listed}\n{}",
            logs(home)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    devnet.interrupt();

    // Validator 3's disk is lost; its operator points it at validator 0 for a snapshot.
    let dir = home.join("devnet");
    std::fs::remove_dir_all(dir.join("data/validator-3")).expect("remove its data");
    let config = dir.join("validator-3.toml");
    let mut text = std::fs::read_to_string(&config).expect("its config");
    text.push_str(&format!(
        "snapshot_from = [\"http://127.0.0.1:{base_port}\"]\n"
    ));
    std::fs::write(&config, text).expect("write its config");

    let mut devnet = Devnet::start_with(home, base_port, &[]);
    wait_finalizing(home, &mut devnet);
    let log = std::fs::read_to_string(dir.join("logs/validator-3.log")).unwrap_or_default();
    assert!(
        log.contains("ledger started from a state snapshot"),
        "{}",
        logs(home)
    );
    // It agrees with the others from there on, and never had the blocks before it.
    let height = |i| api_json(base_port, i, "/v1/status").and_then(|s| s["height"].as_u64());
    let target = height(0).expect("validator 0's height") + 5;
    let deadline = Instant::now() + Duration::from_secs(60);
    while height(3).is_none_or(|h| h < target) {
        assert!(
            Instant::now() < deadline,
            "validator 3 did not catch up\n{}",
            logs(home)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let block = |i, h: u64| api_json(base_port, i, &format!("/v1/blocks/{h}"));
    assert_eq!(
        block(3, target).map(|b| b["root"].clone()),
        block(0, target).map(|b| b["root"].clone())
    );
    let first = snapshot["height"].as_u64().expect("a height");
    assert!(block(3, first).is_none() && block(0, first).is_some());
    // And a transfer still finalizes through it.
    let to = "12D3KooWAKUKNV3HrN46wTdG8bp7WHb9ZbQ5RLsenaB7S4VbYbAq";
    let ledger = format!("http://127.0.0.1:{}", base_port + 3);
    let (ok, sent) = json(
        home,
        &[
            "--ledger", &ledger, "wallet", "transfer", "--to", to, "--amount", "1",
        ],
    );
    assert!(ok && sent["status"]["status"] == "finalized", "{sent}");

    // Its answers are proven against certificates like the others': a farm that exists,
    // and a farm and a node that do not, proven absent rather than taken on its word.
    let client = peergrid_client::Client::new(vec![ledger]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let farm = client.proven_farm(1).await.expect("farm 1, proven");
        assert!(farm.value.is_some(), "farm 1 exists");
        let nobody = client.proven_farm(999).await.expect("farm 999, proven");
        assert!(nobody.value.is_none(), "farm 999 is proven absent");
        let node = client.proven_node(999).await.expect("node 999, proven");
        assert!(node.value.is_none(), "node 999 is proven absent");
        assert!(node.certified.signatures >= 3, "{:?}", node.certified);
    });
}

#[test]
fn a_devnet_whose_reader_left_stops_every_process_it_started() {
    let _one = ONE_DEVNET.lock().unwrap_or_else(|e| e.into_inner());
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let _reaper = Reaper(home.to_path_buf());
    let base_port = common::base_port(10_000);
    // `peergrid devnet | true`: the reader is gone before the devnet prints its banner.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = peergrid(home)
        .args(["devnet", "--base-port", &base_port.to_string()])
        .stdout(writer)
        .stderr(Stdio::null())
        .spawn()
        .expect("start devnet");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "the devnet did not stop");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        status.code(),
        Some(141),
        "ended as Unix tools end on SIGPIPE"
    );
    // 141 comes from the banner, printed once every process is up: all were started.
    assert_eq!(
        processes(home, "validator-"),
        0,
        "no validator left running"
    );
    assert_eq!(processes(home, "nodes/"), 0, "no node left running");
    let (running, _) = json(home, &["devnet", "status"]);
    assert!(!running, "the devnet is not said to run");
}
