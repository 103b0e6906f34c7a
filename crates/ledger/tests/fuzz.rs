//! Fuzzing genesis files: a genesis is handed from one operator to the next, so the file
//! may be damaged or hostile. Whatever it holds, loading answers without panicking: an error
//! that names the file or the broken rule, or a genesis that saves and loads back the same
//! and that a ledger starts from and runs blocks on. Proptest on stable Rust with bounded
//! cases; failing seeds are kept in `tests/fuzz.proptest-regressions`, replayed first.

use std::path::Path;

use peergrid_core::codec::damaged;
use peergrid_ledger::{BlockContext, Genesis, GenesisError, Ledger, MemoryStore};
use proptest::prelude::*;
use toml::Value;

/// A valid genesis file, every section and list filled.
const VALID: &str = include_str!("fixtures/genesis-kat.toml");

/// Load `text` as the genesis file `genesis.toml` and check the property.
fn loads_or_says_why(text: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("genesis.toml");
    std::fs::write(&path, text).expect("write");
    match Genesis::load(&path) {
        // The file is there and readable: whatever is wrong is its content, and the error
        // says so rather than that the file cannot be accessed.
        Err(e @ GenesisError::Parse { .. }) => {
            prop_assert!(
                e.to_string().contains("genesis.toml is not valid: "),
                "{}",
                e
            );
        }
        Err(e @ GenesisError::Invalid(_)) => {
            prop_assert!(
                e.to_string().starts_with("genesis is not usable: "),
                "{}",
                e
            );
        }
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "not a parse or rule error: {e}"
            )));
        }
        Ok(genesis) => runs(&genesis, &path)?,
    }
    Ok(())
}

/// A genesis that loaded saves and loads back the same, and a ledger runs on it.
fn runs(genesis: &Genesis, path: &Path) -> Result<(), TestCaseError> {
    std::fs::write(path, genesis.to_toml()).expect("write");
    let back = Genesis::load(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, genesis);
    prop_assert_eq!(back.hash(), genesis.hash());
    let mut ledger = Ledger::open(MemoryStore::default(), genesis)
        .map_err(|e| TestCaseError::fail(format!("a checked genesis does not open: {e}")))?;
    // Blocks a second, a minting period and forty days on: every end-of-block rule
    // (uptime, billing, minting, proposals' expiry) meets the genesis's parameters.
    let start = genesis.genesis_time_ms;
    let minting_ms = genesis.params.minting_period_secs.saturating_mul(1000);
    let later = [
        start.saturating_add(1_000),
        start.saturating_add(minting_ms).saturating_add(2_000),
        start
            .saturating_add(40 * 86_400_000)
            .saturating_add(minting_ms),
    ];
    for (height, time_ms) in (1..).zip(later) {
        // A genesis at the end of time has no later block: refused, not a panic.
        let _ = ledger.execute_block(BlockContext { height, time_ms }, &[]);
    }
    Ok(())
}

/// Where a value sits in a TOML document.
type TomlPath = Vec<Step>;

#[derive(Clone, Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// Every value's path in `value`, tables and arrays included.
fn paths(value: &Value, at: &mut TomlPath, out: &mut Vec<TomlPath>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                at.push(Step::Key(k.clone()));
                out.push(at.clone());
                paths(v, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                at.push(Step::Index(i));
                out.push(at.clone());
                paths(v, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The value at `path`'s parent, and the last step.
fn parent<'a>(root: &'a mut Value, path: &'a [Step]) -> Option<(&'a mut Value, &'a Step)> {
    let (last, init) = path.split_last()?;
    let mut at = root;
    for step in init {
        at = match (step, at) {
            (Step::Key(k), Value::Table(t)) => t.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some((at, last))
}

/// What a structured mutation does at a path.
#[derive(Clone, Debug)]
enum Edit {
    /// Replace the value with another of its type: a number with an extreme one, a string
    /// with another amount, account or name, a list with fewer entries (the `usize` picks).
    Retype(usize),
    /// Replace the value with anything at all.
    Set(Value),
    /// Remove it (a missing field, a shorter list).
    Remove,
    /// Repeat it in its list (a validator, council member or balance listed twice).
    Repeat,
}

/// Numbers at the edges of what the fields hold.
const NUMBERS: &[i64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    99,
    1 << 32,
    1 << 53,
    i64::MAX - 1,
    i64::MAX,
    -1,
];

/// Amounts of every size, for a field that holds an amount.
const AMOUNTS: &[&str] = &[
    "0",
    "0.000001",
    "0.0000001",
    "1",
    "1000000000",
    "18446744073709551615",
    "340282366920938463463.374607431768211455",
    "340282366920938463463.374607431768211456",
    "-1",
    "1e3",
    "",
];

/// Accounts, some already used elsewhere in the file, for a field that holds an account.
const ACCOUNTS: &[&str] = &[
    "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
    "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
    "12D3KooWDppFJRtLJuN27vrUcFsMVwF12CU9KsSwivLuGnqGygf5",
    "12D3KooWL3hwtanTFomj8bT4KQEHukZW7QxNMqtopYFKae2cJ7Nr",
    "12D3KooWNMLWt6k12idUdnSNcfxsa2ZFFj1NL5Ro9koDmgVFDkxt",
    "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH6",
    "12D3KooW",
];

/// Other text: chain ids and addresses, good and bad.
const NAMES: &[&str] = &[
    "kat-chain-2",
    "",
    "has space",
    "a-chain-name-longer-than-32-bytes",
    "10.0.0.1:4000",
    "http://10.0.0.1:8700",
    "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
    "/ip4/1.2.3.4",
];

fn apply(root: &mut Value, path: &[Step], edit: &Edit) {
    let Some((parent, last)) = parent(root, path) else {
        return;
    };
    match (parent, last, edit) {
        (Value::Table(t), Step::Key(k), Edit::Remove) => {
            t.remove(k);
        }
        (Value::Array(a), Step::Index(i), Edit::Remove) if *i < a.len() => {
            a.remove(*i);
        }
        (Value::Array(a), Step::Index(i), Edit::Repeat) if *i < a.len() => {
            let v = a[*i].clone();
            a.push(v);
        }
        (Value::Table(t), Step::Key(k), Edit::Set(v)) => {
            t.insert(k.clone(), v.clone());
        }
        (Value::Array(a), Step::Index(i), Edit::Set(v)) if *i < a.len() => a[*i] = v.clone(),
        (Value::Table(t), Step::Key(k), Edit::Retype(pick)) => {
            if let Some(slot) = t.get_mut(k) {
                retype(slot, *pick);
            }
        }
        (Value::Array(a), Step::Index(i), Edit::Retype(pick)) => {
            if let Some(slot) = a.get_mut(*i) {
                retype(slot, *pick);
            }
        }
        _ => {}
    }
}

/// `slot` replaced by another value of its type, picked by `pick`.
fn retype(slot: &mut Value, pick: usize) {
    match slot {
        Value::Integer(n) => *n = NUMBERS[pick % NUMBERS.len()],
        Value::String(s) => {
            // Mostly text of the same kind, so the file gets past the parser to the checks.
            let kind = if pick.is_multiple_of(8) {
                [AMOUNTS, ACCOUNTS, NAMES][pick / 8 % 3]
            } else if s.starts_with("12D3KooW") {
                ACCOUNTS
            } else if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                AMOUNTS
            } else {
                NAMES
            };
            *s = kind[pick / 24 % kind.len()].to_string();
        }
        Value::Array(a) if !a.is_empty() => a.truncate(pick % a.len()),
        _ => {}
    }
}

/// Values a damaged or hostile genesis holds where another belongs.
fn weird_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        prop::sample::select(vec![0.5f64, -0.0, 1e300, f64::INFINITY, f64::NAN])
            .prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
        "[ -~]{0,20}".prop_map(Value::String),
        (1usize..5_000).prop_map(|n| Value::String("9".repeat(n))),
        Just(Value::Array(Vec::new())),
        Just(Value::Table(toml::Table::new())),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        8 => any::<usize>().prop_map(Edit::Retype),
        1 => weird_value().prop_map(Edit::Set),
        2 => Just(Edit::Remove),
        3 => Just(Edit::Repeat),
    ]
}

/// Edits, a cut and a tail for [`damaged`].
fn damage() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(0usize..4_000),
        prop::collection::vec(any::<u8>(), 0..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The valid file with bytes overwritten, cut short or extended: mostly a TOML error
    /// with its line, sometimes a different genesis that must still be checked or usable.
    #[test]
    fn a_damaged_genesis_file_is_refused_with_a_reason_or_runs((edits, keep, extra) in damage()) {
        loads_or_says_why(&damaged(VALID.as_bytes(), &edits, keep, &extra))?;
    }

    /// Valid TOML with values swapped for huge, negative, empty or mistyped ones, fields
    /// dropped and list entries repeated: past the TOML parser, into the checks.
    #[test]
    fn a_mutated_genesis_is_refused_with_a_reason_or_runs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), edit()), 1..4),
    ) {
        let mut doc: Value = toml::from_str(VALID).expect("the fixture parses");
        for (at, edit) in &edits {
            let mut all = Vec::new();
            paths(&doc, &mut Vec::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let path = at.get(&all).clone();
            apply(&mut doc, &path, edit);
        }
        let text = toml::to_string(&doc).unwrap_or_default();
        loads_or_says_why(text.as_bytes())?;
    }

    /// Bytes that are not TOML or not text at all.
    #[test]
    fn noise_is_refused_as_a_genesis(noise in prop::collection::vec(any::<u8>(), 0..300)) {
        loads_or_says_why(&noise)?;
    }
}

/// The fuzzing starts from a file that loads, and through the same TOML round trip as the
/// structured mutations: otherwise every case would stop at the first error.
#[test]
fn the_undamaged_file_loads_and_runs() {
    let doc: Value = toml::from_str(VALID).expect("the fixture parses");
    for text in [VALID.to_string(), toml::to_string(&doc).expect("TOML")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("genesis.toml");
        std::fs::write(&path, &text).expect("write");
        let genesis = Genesis::load(&path).expect("the valid genesis loads");
        runs(&genesis, &path).expect("and runs");
    }
}

/// Found by the fuzzing above: a genesis file that is not UTF-8 was reported as a file that
/// "cannot be accessed", sending its operator to check permissions.
#[test]
fn a_genesis_that_is_not_text_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("genesis.toml");
    let mut bytes = VALID.as_bytes()[..40].to_vec();
    bytes.push(0x80);
    std::fs::write(&path, &bytes).expect("write");
    let e = Genesis::load(&path).expect_err("not text");
    assert!(matches!(e, GenesisError::Parse { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("not UTF-8 text (the byte at offset 40"),
        "{e}"
    );
}
