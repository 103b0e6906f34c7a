//! Fuzzing what a node reads from strangers on the mesh (deploy and logs requests) and the
//! settings file it keeps on disk. Proptest on stable Rust, bounded cases; failing seeds are
//! kept in `tests/fuzz.proptest-regressions`.

use peergrid_core::Location;
use peergrid_core::codec::{damaged, decode, encode};
use peergrid_core::{Hash, Keypair};
use peergrid_node::Settings;
use peergrid_node::protocol::{
    DEPLOY, DEPLOY_NAMESPACE, DeployRequest, LOGS, LOGS_NAMESPACE, LogsRequest, deploy_message,
    logs_message,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The grid the requests are signed for.
const GRID: &str = "peergrid-devnet/0123";

fn damage() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(0usize..400),
        prop::collection::vec(any::<u8>(), 0..4),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A damaged deploy request is refused with a reason, or decodes to a request whose
    /// signature no longer holds unless the damage changed nothing: nobody can deploy on a
    /// contract by altering another owner's request.
    #[test]
    fn a_damaged_deploy_request_is_refused_or_fails_its_signature(
        deployment in prop::collection::vec(any::<u8>(), 0..200),
        (edits, keep, extra) in damage(),
    ) {
        let owner = Keypair::from_seed([5; 32]);
        let valid = DeployRequest::sign(&owner, GRID, 7, deployment);
        let bytes = damaged(&encode(&valid), &edits, keep, &extra);
        match decode::<DeployRequest>("deployment", &bytes, DEPLOY.request_bytes_max) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(got) => {
                prop_assert_eq!(encode(&got), bytes, "one encoding per request");
                let holds = got.signature.verify(
                    &owner.account(),
                    DEPLOY_NAMESPACE,
                    &deploy_message(GRID, got.contract, &Hash::of(&got.deployment)),
                );
                prop_assert_eq!(holds, got == valid);
            }
        }
    }

    /// The same for a request to read a workload's output.
    #[test]
    fn a_damaged_logs_request_is_refused_or_fails_its_signature(
        workload in "[a-z0-9-]{1,20}",
        (edits, keep, extra) in damage(),
    ) {
        let owner = Keypair::from_seed([6; 32]);
        let valid = LogsRequest::sign(&owner, GRID, 9, &workload);
        let bytes = damaged(&encode(&valid), &edits, keep, &extra);
        match decode::<LogsRequest>("logs request", &bytes, LOGS.request_bytes_max) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(got) => {
                prop_assert_eq!(encode(&got), bytes, "one encoding per request");
                let holds = got.signature.verify(
                    &owner.account(),
                    LOGS_NAMESPACE,
                    &logs_message(GRID, got.contract, &got.workload, got.at_ms),
                );
                prop_assert_eq!(holds, got == valid);
            }
        }
    }
}

fn settings() -> Settings {
    Settings {
        location: Some(Location {
            country: "BE".into(),
            city: "Ghent".into(),
            latitude_micro: 51_050_000,
            longitude_micro: 3_720_000,
        }),
    }
}

/// Load `bytes` as `settings.json`: refused with the file named and what to do, or settings
/// that save and load back the same.
fn settings_load_or_say_why(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("settings.json"), bytes).expect("write");
    match Settings::load(dir.path()) {
        Err(e) => {
            let e = e.to_string();
            prop_assert!(
                e.contains("settings.json") && e.contains("--country"),
                "{}",
                e
            );
        }
        Ok(loaded) => {
            loaded.save(dir.path()).expect("save");
            prop_assert_eq!(Settings::load(dir.path()).expect("load again"), loaded);
        }
    }
    Ok(())
}

/// Values a damaged settings file holds where another belongs.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop::sample::select(vec![
            json!(0),
            json!(-1),
            json!(i64::from(i32::MAX) + 1),
            json!(i64::from(i32::MIN) - 1),
            json!(u64::MAX),
            json!(1.5),
            json!(1e300),
            json!(""),
            json!("BE"),
            json!([]),
            json!({}),
            json!(true),
        ]),
        "[ -~]{0,30}".prop_map(Value::String),
        (1usize..10_000).prop_map(|n| Value::String("é".repeat(n))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The node's settings file, damaged byte by byte.
    #[test]
    fn a_damaged_settings_file_is_refused_with_what_to_do((edits, keep, extra) in damage()) {
        let valid = serde_json::to_vec_pretty(&settings()).expect("JSON");
        settings_load_or_say_why(&damaged(&valid, &edits, keep, &extra))?;
    }

    /// Valid JSON with fields dropped, replaced by other types or out-of-range numbers, or
    /// added.
    #[test]
    fn a_mutated_settings_file_is_refused_with_what_to_do(
        edits in prop::collection::vec(prop::option::of(prop::option::of(json_value())), 5),
        extra in prop::option::of(("[a-z_]{1,12}", json_value())),
    ) {
        let mut doc = serde_json::to_value(settings()).expect("JSON");
        let fields = ["country", "city", "latitude_micro", "longitude_micro"];
        for (i, edit) in edits.into_iter().enumerate() {
            // Four edits inside the location, the fifth on the location itself.
            let (holder, key) = match fields.get(i) {
                Some(f) => (&mut doc["location"], *f),
                None => (&mut doc, "location"),
            };
            let Some(holder) = holder.as_object_mut() else { continue };
            match edit {
                Some(Some(v)) => { holder.insert(key.to_string(), v); }
                Some(None) => { holder.remove(key); }
                None => {}
            }
        }
        if let (Some((key, v)), Some(holder)) = (extra, doc.as_object_mut()) {
            holder.insert(key, v);
        }
        settings_load_or_say_why(&serde_json::to_vec(&doc).expect("JSON"))?;
    }
}
