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
        config_loads_or_says_why(&path)?;
    }

    /// Valid TOML with each field kept, dropped or given another value (a port past 65535,
    /// a negative or zero count, a path where an address goes, text that is not one):
    /// refused with the file named and the reason, or a configuration a validator can use.
    #[test]
    fn a_mutated_validator_config_is_refused_with_a_reason_or_usable(
        edits in prop::collection::vec(prop::option::of(config_value()), 6),
        extra in prop::option::of(("[a-z_]{1,12}", config_value())),
    ) {
        let mut doc: toml::Table = toml::from_str(CONFIG).expect("the example parses");
        let keys: Vec<String> = doc.keys().cloned().collect();
        for (key, edit) in keys.iter().zip(edits) {
            match edit {
                Some(Some(v)) => { doc.insert(key.clone(), v); }
                Some(None) => { doc.remove(key); }
                None => {}
            }
        }
        if let Some((key, Some(v))) = extra {
            doc.insert(key, v);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("validator.toml");
        std::fs::write(&path, toml::to_string(&doc).expect("TOML")).expect("write");
        config_loads_or_says_why(&path)?;
    }
}

/// Another value for a field of a validator configuration, or `None` to drop it.
fn config_value() -> impl Strategy<Value = Option<toml::Value>> {
    use toml::Value;
    prop_oneof![
        Just(None),
        prop::sample::select(vec![0i64, 1, -1, 65_536, i64::MAX, 5_000])
            .prop_map(|n| Some(Value::Integer(n))),
        prop::sample::select(vec![
            "127.0.0.1:99999",
            "127.0.0.1",
            "localhost:8700",
            "[::1]:8700",
            "0.0.0.0:0",
            "",
            "genesis.toml",
            "/etc/../etc/passwd",
            "a\u{0}b",
        ])
        .prop_map(|s| Some(Value::String(s.to_string()))),
        any::<bool>().prop_map(|b| Some(Value::Boolean(b))),
        Just(Some(Value::Array(Vec::new()))),
    ]
}

/// Load `path`: an error says what is wrong with it and names it (a file that is there and
/// readable is never reported as unreadable), or the configuration is usable.
fn config_loads_or_says_why(path: &std::path::Path) -> Result<(), TestCaseError> {
    match ValidatorConfig::load(path) {
        Err(e) => {
            let text = format!("{e:#}");
            prop_assert!(
                text.contains("validator.toml is not a valid validator config: "),
                "{}",
                text
            );
        }
        Ok(cfg) => {
            prop_assert!(
                cfg.txs_per_block >= 1,
                "a validator that proposes no transactions"
            );
            let dir = path.parent().expect("a folder");
            for p in [&cfg.genesis, &cfg.key, &cfg.data_dir] {
                prop_assert!(p.is_absolute() || p.starts_with(dir), "{}", p.display());
            }
        }
    }
    Ok(())
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

/// Found by the fuzzing above: a configuration that is not UTF-8 was reported as a file that
/// "cannot be read", and `txs_per_block = 0` was accepted, making a validator that proposes
/// only empty blocks.
#[test]
fn a_config_not_text_or_proposing_nothing_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("validator.toml");
    let mut bytes = CONFIG.as_bytes()[..10].to_vec();
    bytes.push(0xff);
    std::fs::write(&path, &bytes).expect("write");
    let e = format!("{:#}", ValidatorConfig::load(&path).expect_err("not text"));
    assert!(
        e.contains("is not a valid validator config: not UTF-8 text"),
        "{e}"
    );
    std::fs::write(&path, CONFIG.replace("5000", "0")).expect("write");
    let e = format!("{:#}", ValidatorConfig::load(&path).expect_err("zero"));
    assert!(e.contains("txs_per_block is 0"), "{e}");
}

/// Found by a newcomer's walk: `keep_block = 5` (for `keep_blocks`) started a validator
/// keeping the default, and `snapshot_from = ["not a url"]` retried forever.
#[test]
fn a_config_with_a_misspelt_key_or_a_snapshot_source_that_is_no_url_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("validator.toml");
    std::fs::write(&path, format!("{CONFIG}keep_block = 5\n")).expect("write");
    let e = format!("{:#}", ValidatorConfig::load(&path).expect_err("misspelt"));
    assert!(
        e.contains("unknown field `keep_block`") && e.contains("keep_blocks"),
        "{e}"
    );
    std::fs::write(&path, format!("{CONFIG}snapshot_from = [\"not a url\"]\n")).expect("write");
    let e = format!("{:#}", ValidatorConfig::load(&path).expect_err("no url"));
    assert!(
        e.contains("\"not a url\" is not a validator's API URL"),
        "{e}"
    );
    std::fs::write(
        &path,
        format!("{CONFIG}snapshot_from = [\"http://127.0.0.1:8700\"]\n"),
    )
    .expect("write");
    ValidatorConfig::load(&path).expect("a URL");
}
