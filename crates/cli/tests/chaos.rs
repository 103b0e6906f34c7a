//! A short chaos run, as `peergrid bench chaos` does it for minutes: a devnet keeps
//! finalizing transfers while its validators and a node are killed and frozen, and ends
//! consistent.

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
            "1",
            "--seed",
            "7",
            "--base-port",
            &base,
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
}
