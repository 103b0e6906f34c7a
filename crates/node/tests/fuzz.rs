//! Fuzzing what a node reads from strangers on the mesh: deploy and logs requests. Proptest
//! on stable Rust, bounded cases; failing seeds are kept in `tests/fuzz.proptest-regressions`.

use peergrid_core::codec::{damaged, decode, encode};
use peergrid_core::{Hash, Keypair};
use peergrid_node::protocol::{
    DEPLOY, DEPLOY_NAMESPACE, DeployRequest, LOGS, LOGS_NAMESPACE, LogsRequest, deploy_message,
    logs_message,
};
use proptest::prelude::*;

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
        let valid = DeployRequest::sign(&owner, 7, deployment);
        let bytes = damaged(&encode(&valid), &edits, keep, &extra);
        match decode::<DeployRequest>("deployment", &bytes, DEPLOY.request_bytes_max) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(got) => {
                prop_assert_eq!(encode(&got), bytes, "one encoding per request");
                let holds = got.signature.verify(
                    &owner.account(),
                    DEPLOY_NAMESPACE,
                    &deploy_message(got.contract, &Hash::of(&got.deployment)),
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
        let valid = LogsRequest::sign(&owner, 9, &workload);
        let bytes = damaged(&encode(&valid), &edits, keep, &extra);
        match decode::<LogsRequest>("logs request", &bytes, LOGS.request_bytes_max) {
            Err(e) => prop_assert!(!e.to_string().is_empty()),
            Ok(got) => {
                prop_assert_eq!(encode(&got), bytes, "one encoding per request");
                let holds = got.signature.verify(
                    &owner.account(),
                    LOGS_NAMESPACE,
                    &logs_message(got.contract, &got.workload, got.at_ms),
                );
                prop_assert_eq!(holds, got == valid);
            }
        }
    }
}
