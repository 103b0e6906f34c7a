//! Fuzzing what a validator reads from others and from its operator: blocks from peers,
//! its configuration file, the genesis file. Proptest on stable Rust, bounded cases; failing
//! seeds are kept in `tests/fuzz.proptest-regressions` and replayed first.

use commonware_codec::{Decode, Encode};
use commonware_cryptography::sha256::Digest;
use peergrid_chain::block::Block;
use peergrid_chain::validator::ValidatorConfig;
use peergrid_core::codec::damaged;
use peergrid_core::{Amount, Keypair, Payload, SignedTx};
use peergrid_ledger::Genesis;
use peergrid_ledger::genesis::Devnet;
use proptest::prelude::*;

fn block(txs: usize, height: u64) -> Block {
    let key = Keypair::from_seed([3; 32]);
    let txs = (0..txs as u64)
        .map(|n| {
            SignedTx::new(
                &key,
                "fuzz",
                n,
                Payload::Transfer {
                    to: key.account(),
                    amount: Amount(n + 1),
                },
            )
        })
        .collect();
    Block::new(Digest::from([9; 32]), height, 1_000 + height, txs)
}

fn damage() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(0usize..2_000),
        prop::collection::vec(any::<u8>(), 0..4),
    )
}

const CONFIG: &str = r#"genesis = "genesis.toml"
key = "keys/validator-0.json"
data_dir = "data/validator-0"
p2p_listen = "127.0.0.1:8800"
api_listen = "127.0.0.1:8700"
txs_per_block = 5000
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    /// A block from a peer decodes without panicking, and only from its one encoding, whose
    /// digest and transaction hashes are those of the block it decodes to.
    #[test]
    fn a_block_decodes_only_from_its_one_encoding(
        txs in 0usize..4,
        height in any::<u64>(),
        (edits, keep, extra) in damage(),
        noise in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let valid = block(txs, height).encode().to_vec();
        for bytes in [damaged(&valid, &edits, keep, &extra), noise] {
            if let Ok(b) = Block::decode_cfg(bytes::Bytes::from(bytes.clone()), &()) {
                prop_assert_eq!(b.encode().to_vec(), bytes);
                let again = Block::new(b.parent, b.height, b.time_ms, b.txs.clone());
                prop_assert_eq!(again.tx_hashes(), b.tx_hashes());
            }
        }
    }

    /// A damaged validator configuration is an error that names the file, not a panic.
    #[test]
    fn a_damaged_validator_config_is_refused_with_the_file_named(
        (edits, keep, extra) in damage(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("validator.toml");
        std::fs::write(&path, damaged(CONFIG.as_bytes(), &edits, keep, &extra)).expect("write");
        if let Err(e) = ValidatorConfig::load(&path) {
            prop_assert!(format!("{e:#}").contains("validator.toml"), "{:#}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A damaged genesis parses to an error or to a genesis whose checks then run to an
    /// answer: no panic, whatever the operator's editor did to it.
    #[test]
    fn a_damaged_genesis_is_refused_or_checked(
        (edits, keep, extra) in damage(),
    ) {
        let devnet = Devnet::generate("fuzz", 2, 1_000).expect("keys");
        let text = devnet.genesis.to_toml();
        let damaged = damaged(text.as_bytes(), &edits, keep.map(|k| k * 4), &extra);
        if let Ok(g) = Genesis::from_toml(&String::from_utf8_lossy(&damaged)) {
            let _ = g.check();
            let _ = g.hash();
        }
    }
}
