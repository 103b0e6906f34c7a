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
