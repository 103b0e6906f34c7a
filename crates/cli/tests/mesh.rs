//! `peergrid mesh` as a user runs it: one `mesh run` process, others querying it and
//! sending it a stream.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn peergrid(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peergrid"));
    cmd.args(args)
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

/// A `mesh run` child, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_stream_sent_to_a_running_peer_arrives_intact_and_the_peer_answers_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for home in [&a, &b] {
        json(
            &peergrid(home, &["--json", "key", "new"])
                .output()
                .expect("run"),
        );
    }
    let mut child = peergrid(
        &a,
        &[
            "--json",
            "mesh",
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--control",
            "127.0.0.1:0",
        ],
    )
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
    let started: Value = serde_json::from_str(&line).expect("startup JSON");
    let peer = started["peer_id"].as_str().expect("peer id").to_string();
    let control = started["control"].as_str().expect("control").to_string();
    let quic = started["listen"]
        .as_array()
        .expect("listen")
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains("quic"))
        .expect("a QUIC address")
        .to_string();
    let account = json(
        &peergrid(&a, &["--json", "key", "show"])
            .output()
            .expect("run"),
    );
    assert_eq!(
        account["account"], peer,
        "the mesh peer id is the account id"
    );

    let sent = json(
        &peergrid(
            &b,
            &[
                "--json", "mesh", "send", &peer, "--bytes", "8MiB", "--addr", &quic,
            ],
        )
        .output()
        .expect("send"),
    );
    assert_eq!(sent["bytes"], 8 << 20);
    assert_eq!(sent["intact"], true);
    assert_eq!(sent["blake3"], sent["received_blake3"]);

    let received = json(
        &peergrid(&a, &["--json", "mesh", "received", "--control", &control])
            .output()
            .expect("received"),
    );
    assert_eq!(received["received"][0]["blake3"], sent["blake3"]);

    let status = json(
        &peergrid(&a, &["--json", "mesh", "status", "--control", &control])
            .output()
            .expect("status"),
    );
    assert_eq!(status["peer_id"], peer);

    let ping = peergrid(&a, &["mesh", "ping", &peer, "--control", &control])
        .output()
        .expect("ping");
    assert!(!ping.status.success(), "pinging oneself is an error");
    assert!(String::from_utf8_lossy(&ping.stderr).contains("own id"));
    drop(running);

    let down = peergrid(&a, &["mesh", "status", "--control", &control])
        .output()
        .expect("status");
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("is `peergrid mesh run` running?"));
}
