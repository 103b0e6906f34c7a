//! The mesh's "done" criterion, as a user would run it: two `peergrid` processes in
//! different network namespaces, one behind a NAT router, exchange a 100 MiB stream
//! end to end, authenticated by their account keys, with a third `peergrid` process
//! serving as the relay. Needs root, iproute2 and iptables; skips with a printed
//! reason elsewhere, and fails under CI.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use peergrid_mesh::netlab::{Lab, skip_unless_available};
use serde_json::Value;

/// `peergrid` run inside namespace `ns` with its own home (key).
fn peergrid(ns: &str, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_peergrid")])
        .args(args)
        .env("PEERGRID_HOME", home)
        .env_remove("PEERGRID_DEVNET")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn account(home: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args(["--json", "key", "new"])
        .env("PEERGRID_HOME", home)
        .env_remove("PEERGRID_DEVNET")
        .output()
        .expect("key new");
    json(&out)["account"].as_str().expect("account").to_string()
}

/// A `mesh run` process, killed when dropped (also when the test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `mesh run` and wait for its startup line.
fn run_peer(ns: &str, home: &Path, extra: &[&str]) -> (Running, Value) {
    let mut args = vec!["--json", "mesh", "run"];
    args.extend_from_slice(extra);
    let mut child = peergrid(ns, home, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mesh run");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("startup line");
    let started = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("startup line {line:?} is not JSON: {e}"));
    (running, started)
}

#[test]
fn two_peergrid_processes_one_behind_nat_exchange_100_mib_authenticated_by_their_keys() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let relay_host = lab.public_host("relay", 11);
    let sender_host = lab.public_host("send", 12);
    let (_router, receiver_host) = lab.natted_host("nat", 254, 1);

    let dir = tempfile::tempdir().expect("tempdir");
    let home = |name: &str| -> PathBuf { dir.path().join(name) };
    let relay_id = account(&home("relay"));
    let receiver_id = account(&home("receiver"));
    let sender_id = account(&home("sender"));

    let (_relay, started) = run_peer(&relay_host.ns, &home("relay"), &["--relay-server"]);
    assert_eq!(started["peer_id"], relay_id);
    let relay_quic = format!("/ip4/{}/udp/4001/quic-v1/p2p/{relay_id}", relay_host.ip);
    let relay_tcp = format!("/ip4/{}/tcp/4001/p2p/{relay_id}", relay_host.ip);
    let (_receiver, started) = run_peer(
        &receiver_host.ns,
        &home("receiver"),
        &["--relay", &relay_quic, "--relay", &relay_tcp],
    );
    assert_eq!(started["peer_id"], receiver_id);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = json(
            &peergrid(
                &receiver_host.ns,
                &home("receiver"),
                &["--json", "mesh", "status"],
            )
            .output()
            .expect("status"),
        );
        if status["relay_reservations"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no relay reservation: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The sender knows only the relay; its circuit address reaches the NATed receiver.
    let circuit = format!("{relay_quic}/p2p-circuit/p2p/{receiver_id}");
    let sent = json(
        &peergrid(
            &sender_host.ns,
            &home("sender"),
            &[
                "--json",
                "mesh",
                "send",
                &receiver_id,
                "--bytes",
                "100MiB",
                "--addr",
                &circuit,
            ],
        )
        .output()
        .expect("send"),
    );
    assert_eq!(sent["peer"], receiver_id, "the receiver proved its key");
    assert_eq!(sent["bytes"], 100 << 20);
    assert_eq!(sent["intact"], true);
    assert_eq!(sent["blake3"], sent["received_blake3"]);
    println!(
        "100 MiB through NAT: path {}, {:.1} MiB/s",
        sent["path"],
        sent["bytes_per_second"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
    );

    let received = json(
        &peergrid(
            &receiver_host.ns,
            &home("receiver"),
            &["--json", "mesh", "received"],
        )
        .output()
        .expect("received"),
    );
    let transfer = &received["received"][0];
    assert_eq!(transfer["peer"], sender_id, "the sender proved its key");
    assert_eq!(transfer["blake3"], sent["blake3"]);
}

/// A long-running `peergrid` process (validator, node) inside `ns`, its output in `log`.
fn spawn_logged(ns: &str, home: &Path, args: &[&str], log: &Path) -> Running {
    let file = std::fs::File::create(log).expect("log file");
    let err = file.try_clone().expect("log file");
    Running(
        peergrid(ns, home, args)
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn peergrid"),
    )
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A validator operator's key, made at `key` on its own machine; its account.
fn validator_account(key: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args(["--json", "--key"])
        .arg(key)
        .args(["key", "new"])
        .env_remove("PEERGRID_DEVNET")
        .output()
        .expect("key new");
    json(&out)["account"].as_str().expect("account").to_string()
}

/// Write the configuration `docs/network.md` shows into `dir` (next to its `validator.json`;
/// `join` for one not in the genesis) and run the validator from it on `ns`, logging to `log`.
fn run_validator(ns: &str, dir: &Path, genesis: &Path, join: bool, log: &Path) -> Running {
    let config = dir.join("validator.toml");
    std::fs::write(
        &config,
        format!(
            "genesis = {genesis:?}\nkey = \"validator.json\"\ndata_dir = \"data\"\n\
             p2p_listen = \"0.0.0.0:8800\"\napi_listen = \"0.0.0.0:8700\"\n{join}",
            genesis = genesis.to_str().expect("utf-8 path"),
            join = if join { "join = true\n" } else { "" }
        ),
    )
    .expect("write config");
    spawn_logged(
        ns,
        dir,
        &[
            "validator",
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        log,
    )
}

/// `docs/network.md` as written: four validators and two nodes, each on its own host
/// (namespace) with its own address. Each validator operator makes a key; one person
/// writes the genesis from their accounts and addresses; each validator runs from its
/// own configuration; a farmer creates a farm and starts two nodes that join the mesh
/// through the bootstrap peer the genesis names. Then a transfer is final, every
/// validator agrees on the state, and both nodes are up on the ledger.
#[test]
fn a_network_of_four_validators_and_two_nodes_on_six_hosts_runs_as_docs_network_md_says() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let validators: Vec<_> = (0..4u8)
        .map(|i| lab.public_host(&format!("v{i}"), 21 + i))
        .collect();
    let nodes: Vec<_> = (0..2u8)
        .map(|i| lab.public_host(&format!("n{i}"), 31 + i))
        .collect();
    let ops = lab.public_host("ops", 40);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |p: &str| dir.path().join(p);
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();

    // Step 1: every validator operator makes a key and says its account and address.
    let mut entries = Vec::new();
    for (i, host) in validators.iter().enumerate() {
        let account = validator_account(&path(&format!("v{i}/validator.json")));
        entries.push(format!("{account}@{}:8800", host.ip));
    }
    // Node 0's key is made ahead, so the genesis can name it as the mesh's bootstrap peer.
    let n0_key = path("n0/data/node-key.json");
    let out = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args(["--json", "--key", &text(&n0_key), "key", "new"])
        .output()
        .expect("key new");
    let n0_account = json(&out)["account"].as_str().expect("account").to_string();
    let bootstrap = format!("/ip4/{}/tcp/4001/p2p/{n0_account}", nodes[0].ip);

    // Step 2: one person writes the genesis from those, and hands it to everyone.
    let genesis = path("net/genesis.toml");
    let mut args = vec![
        "--json".to_string(),
        "genesis".into(),
        "new".into(),
        "--out".into(),
        text(&genesis),
        "--chain-id".into(),
        "netns-test".into(),
        "--mesh-bootstrap".into(),
        bootstrap.clone(),
    ];
    for e in &entries {
        args.extend(["--validator".to_string(), e.clone()]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_peergrid"))
        .args(&args)
        .output()
        .expect("genesis new");
    let written = json(&out);
    assert_eq!(written["validators"].as_array().map(Vec::len), Some(4));
    let demo_key = text(&path("net/keys/demo.json"));
    let ledger = validators
        .iter()
        .map(|h| format!("http://{}:8700", h.ip))
        .collect::<Vec<_>>()
        .join(",");

    // Step 3: every validator runs from its own configuration, on its own host.
    let mut running = Vec::new();
    for (i, host) in validators.iter().enumerate() {
        running.push(run_validator(
            &host.ns,
            &path(&format!("v{i}")),
            &genesis,
            false,
            &path(&format!("v{i}.log")),
        ));
    }
    let ops_home = path("ops");
    let cli = |args: &[&str]| {
        let mut all = vec!["--json", "--key", &demo_key, "--ledger", &ledger];
        all.extend_from_slice(args);
        peergrid(&ops.ns, &ops_home, &all)
            .output()
            .expect("peergrid")
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&["validator", "status"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the network never finalized: {}\nvalidator 0's log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            tail(&path("v0.log"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Step 4: a farmer creates a farm and starts a node on each node host.
    let farm = json(&cli(&["farm", "create", "netns-farm"]))["farm"]
        .as_u64()
        .expect("farm id")
        .to_string();
    for (i, host) in nodes.iter().enumerate() {
        let data = path(&format!("n{i}/data"));
        std::fs::create_dir_all(&data).expect("data dir");
        let mut args = vec![
            "--key",
            &demo_key,
            "--ledger",
            &ledger,
            "node",
            "run",
            "--farm",
            &farm,
            "--country",
            "BE",
            "--city",
            "Ghent",
            "--latitude",
            "51.05",
            "--longitude",
            "3.72",
            "--listen",
            "/ip4/0.0.0.0/tcp/4001",
        ];
        let data_text = text(&data);
        args.extend(["--data-dir", &data_text]);
        running.push(spawn_logged(
            &host.ns,
            &path(&format!("n{i}")),
            &args,
            &path(&format!("n{i}.log")),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = json(&cli(&["node", "list", "--farm", &farm]));
        let up = list["nodes"]
            .as_array()
            .map_or(0, |n| n.iter().filter(|n| n["status"] == "up").count());
        if up == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never both came up: {list}\nnode 1's log:\n{}",
            tail(&path("n1.log"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Node 1 found the mesh through node 0, the genesis's bootstrap peer: its local
    // status endpoint (inside its host) counts a connected mesh peer.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = lab.exec(
            &nodes[1].ns,
            "bash",
            &[
                "-c",
                "exec 3<>/dev/tcp/127.0.0.1/9100; \
                 printf 'GET /v1/status HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
            ],
        );
        let answer = String::from_utf8_lossy(&out.stdout).to_string();
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let status: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        if status["mesh_connected_peers"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never joined the mesh: {answer}\n{}",
            tail(&path("n1.log"))
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Step 5: a transfer is final, and every validator agrees on the state.
    let to = entries[3].split('@').next().expect("account").to_string();
    let sent = json(&cli(&["wallet", "transfer", "--to", &to, "--amount", "3"]));
    assert_eq!(sent["status"]["status"], "finalized", "{sent}");
    let status = json(&cli(&["validator", "status"]));
    assert_eq!(status["finalizing"], true, "{status}");
    assert_eq!(status["agreement"]["agree"], true, "{status}");
    let roots = status["agreement"]["roots"].as_array().expect("roots");
    assert_eq!(
        roots.iter().filter(|r| r.is_string()).count(),
        4,
        "{status}"
    );
    assert_eq!(status["chain_id"], "netns-test");
    drop(running);
}

/// `validator status` on `ledger`, as the operator asks it from `ns`.
fn validator_status(ns: &str, home: &Path, ledger: &str) -> (bool, Value) {
    let out = peergrid(
        ns,
        home,
        &["--json", "--ledger", ledger, "validator", "status"],
    )
    .output()
    .expect("validator status");
    let status = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), status)
}

/// Wait until every validator of `ledger` answers, all finalize, they agree on the state
/// root, and the lowest epoch among them is at least `epoch`; the status then.
fn wait_for_epoch(
    ns: &str,
    home: &Path,
    ledger: &str,
    epoch: u64,
    what: &str,
    log: &Path,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, status) = validator_status(ns, home, ledger);
        let validators = status["validators"].as_array().cloned().unwrap_or_default();
        let lowest = validators
            .iter()
            .map(|v| v["epoch"].as_u64().unwrap_or(0))
            .min()
            .unwrap_or(0);
        if ok
            && status["agreement"]["agree"] == true
            && validators.iter().all(|v| v["finalizing"] == true)
            && lowest >= epoch
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within 120 s: {status}\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Validators that come and go by vote, each on its own host: the council votes a fifth
/// validator in; it starts from the genesis alone, catches up and votes; then the council
/// votes one of the first four out, which says it no longer votes. Transfers finalize
/// throughout, and with two of the original four stopped the remaining set (the newcomer
/// among them) still decides.
#[test]
fn a_validator_voted_in_catches_up_and_votes_and_one_voted_out_stops_while_transfers_finalize() {
    if skip_unless_available() {
        return;
    }
    let mut lab = Lab::new();
    let hosts: Vec<_> = (0..5u8)
        .map(|i| lab.public_host(&format!("g{i}"), 51 + i))
        .collect();
    let ops = lab.public_host("gops", 60);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |p: &str| dir.path().join(p);
    let entries: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let account = validator_account(&path(&format!("v{i}/validator.json")));
            format!("{account}@{}:8800", h.ip)
        })
        .collect();
    let api = |i: usize| format!("http://{}:8700", hosts[i].ip);

    // A genesis of the first four, with short epochs so that votes take effect in seconds.
    let genesis = path("net/genesis.toml");
    let mut args = vec![
        "--json".to_string(),
        "genesis".into(),
        "new".into(),
        "--out".into(),
        genesis.to_str().expect("utf-8 path").into(),
        "--chain-id".into(),
        "netns-gov".into(),
        "--param".into(),
        "epoch_blocks=20".into(),
        "--param".into(),
        "idle_block_ms=200".into(),
    ];
    for e in &entries[..4] {
        args.extend(["--validator".to_string(), e.clone()]);
    }
    json(
        &Command::new(env!("CARGO_BIN_EXE_peergrid"))
            .args(&args)
            .output()
            .expect("genesis new"),
    );
    let demo_key = path("net/keys/demo.json");
    let demo_key = demo_key.to_str().expect("utf-8 path");
    let mut running: Vec<Option<Running>> = (0..4)
        .map(|i| {
            Some(run_validator(
                &hosts[i].ns,
                &path(&format!("v{i}")),
                &genesis,
                false,
                &path(&format!("v{i}.log")),
            ))
        })
        .collect();
    let ops_home = path("ops");
    let first_four = (0..4).map(api).collect::<Vec<_>>().join(",");
    let all_five = (0..5).map(api).collect::<Vec<_>>().join(",");
    let cli = |ledger: &str, args: &[&str]| {
        let mut all = vec!["--json", "--key", demo_key, "--ledger", ledger];
        all.extend_from_slice(args);
        json(
            &peergrid(&ops.ns, &ops_home, &all)
                .output()
                .expect("peergrid"),
        )
    };
    let status = wait_for_epoch(
        &ops.ns,
        &ops_home,
        &first_four,
        0,
        "the genesis set finalizing",
        &path("v0.log"),
    );
    let to = entries[4].split('@').next().expect("account").to_string();
    let transfer = |ledger: &str| {
        let sent = cli(
            ledger,
            &["wallet", "transfer", "--to", &to, "--amount", "1"],
        );
        assert_eq!(sent["status"]["status"], "finalized", "{sent}");
    };
    transfer(&first_four);

    // The council (the genesis's demo account) votes validator 4 in: it takes effect at the
    // next epoch boundary. Its operator then starts it with the genesis and its key alone.
    let epoch_now = |s: &Value| {
        s["validators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["epoch"].as_u64())
            .max()
            .unwrap_or(0)
    };
    let mut add = vec!["gov", "propose", "set-validators"];
    for e in &entries {
        add.extend(["--validator", e.as_str()]);
    }
    add.extend(["--description", "add validator 4"]);
    let proposed = cli(&first_four, &add);
    let voted_in = epoch_now(&validator_status(&ops.ns, &ops_home, &first_four).1) + 1;
    assert!(proposed.is_object(), "{proposed}");
    running.push(Some(run_validator(
        &hosts[4].ns,
        &path("v4"),
        &genesis,
        true,
        &path("v4.log"),
    )));
    let status5 = wait_for_epoch(
        &ops.ns,
        &ops_home,
        &all_five,
        voted_in,
        "validator 4 caught up in the new set",
        &path("v4.log"),
    );
    assert_eq!(
        status5["agreement"]["roots"].as_array().map(Vec::len),
        Some(5),
        "{status5}"
    );
    transfer(&all_five);

    // Voted out: validator 3 leaves the set at the following boundary.
    let mut remove = vec!["gov", "propose", "set-validators"];
    for i in [0, 1, 2, 4] {
        remove.extend(["--validator", entries[i].as_str()]);
    }
    remove.extend(["--description", "remove validator 3"]);
    cli(&all_five, &remove);
    let voted_out = epoch_now(&validator_status(&ops.ns, &ops_home, &all_five).1) + 1;
    wait_for_epoch(
        &ops.ns,
        &ops_home,
        &all_five,
        voted_out,
        "validator 3 voted out",
        &path("v3.log"),
    );
    let said = std::fs::read_to_string(path("v3.log")).unwrap_or_default();
    assert!(
        said.contains("no longer votes"),
        "validator 3 did not say it left the set:\n{}",
        tail(&path("v3.log"))
    );

    // The new set is 0, 1, 2 and 4; with 2 and 3 stopped, only 0, 1 and 4 vote: a quorum
    // only because the newcomer votes.
    running[2] = None;
    running[3] = None;
    let three: String = [0, 1, 4].map(api).join(",");
    transfer(&three);
    let (_, after) = validator_status(&ops.ns, &ops_home, &three);
    assert_eq!(after["agreement"]["agree"], true, "{after}");
    assert_eq!(status["chain_id"], "netns-gov");
    drop(running);
}
