//! A short chaos run, as `peergrid bench chaos` does it for minutes: a devnet keeps
//! finalizing transfers, storing objects and answering an app's requests while its validators and nodes are killed and
//! frozen, and ends consistent with every object readable.

mod common;

use common::*;

#[test]
fn a_minute_of_kills_and_freezes_leaves_the_ledger_consistent() {
    let home = tempfile::tempdir().expect("tempdir");
    let base = base_port(4_000).to_string();
    let (ok, out, stderr) = run(
        home.path(),
        &[
            "bench",
            "chaos",
            "--minutes",
            "1",
            "--senders",
            "8",
            "--nodes",
            "3",
            "--seed",
            "7",
            "--base-port",
            &base,
            "--app",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../examples/apps/hello/hello.wasm"
            ),
        ],
    );
    assert!(ok, "the chaos run failed: {out}\n{stderr}");
    let r = &out["report"];
    assert_eq!(out["failures"], serde_json::json!([]), "{out}");
    // Faults happened, each kind more than once, and what was killed came back.
    for fault in ["validators_killed", "validators_frozen", "nodes_killed"] {
        assert!(
            r[fault].as_u64().unwrap_or(0) >= 2,
            "too few {fault} to prove anything: {r}"
        );
    }
    assert!(
        r["restarts"].as_u64().unwrap_or(0) >= 2,
        "killed but not restarted: {r}"
    );
    assert!(r["finalized"].as_u64().unwrap_or(0) > 100, "{r}");
    assert_eq!(r["roots_agree"], true);
    assert_eq!(r["missing"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["supply_conserved"], true);
    // A storage user put and read objects through it all, and every one reads back.
    let st = &r["storage"];
    assert_eq!(st["scheme"], "2+1", "{st}");
    assert!(st["stored"].as_u64().unwrap_or(0) >= 10, "{st}");
    assert!(st["reads"].as_u64().unwrap_or(0) >= 10, "{st}");
    assert_eq!(st["unreadable"], 0, "{st}");
    assert_eq!(st["differ"], 0, "{st}");
    // An app on two nodes answered throughout, failing over while one was down.
    let app = &r["app"];
    assert_eq!(app["replicas"], 2, "{app}");
    assert!(app["answered"].as_u64().unwrap_or(0) >= 100, "{app}");
    assert_eq!(app["down_after"], 0, "{app}");
}
