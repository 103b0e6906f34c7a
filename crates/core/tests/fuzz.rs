//! Fuzzing the decoders of what other parties send: transactions, transaction batches, key
//! files and backup phrases. Proptest on stable Rust with a bounded number of cases, so CI runs it; a
//! failing input's seed is saved in `tests/fuzz.proptest-regressions`, committed as the
//! corpus that is replayed first on every run.

use peergrid_core::codec::{self, damaged};
use peergrid_core::tx::TX_BYTES_MAX;
use peergrid_core::{Amount, KeyError, Keypair, Payload, SignedTx};
use proptest::prelude::*;

fn transfer(seed: u8, nonce: u64, amount: u64) -> SignedTx {
    SignedTx::new(
        &Keypair::from_seed([seed; 32]),
        "fuzz",
        nonce,
        Payload::Transfer {
            to: Keypair::from_seed([seed ^ 0xff; 32]).account(),
            amount: Amount(amount),
        },
    )
}

/// Edits, a cut and a tail for [`damaged`].
fn damage() -> impl Strategy<Value = (Vec<(usize, u8)>, Option<usize>, Vec<u8>)> {
    (
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        prop::option::of(0usize..300),
        prop::collection::vec(any::<u8>(), 0..4),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever the bytes, decoding answers without panicking, and what decodes is the
    /// canonical encoding of what it decodes to: the ledger hashes received bytes as the
    /// transaction's hash, so two encodings of one transaction would be two hashes.
    #[test]
    fn a_transaction_decodes_only_from_its_one_encoding(
        seed in any::<u8>(),
        nonce in any::<u64>(),
        amount in any::<u64>(),
        (edits, keep, extra) in damage(),
        noise in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let valid = transfer(seed, nonce, amount).encode();
        for bytes in [damaged(&valid, &edits, keep, &extra), noise] {
            if let Ok((tx, hash)) = SignedTx::decode_hashed(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
                prop_assert_eq!(tx.hash(), hash);
            }
        }
    }

    /// A batch as `POST /v1/txs` reads it: a list of encoded transactions, each decoded on
    /// its own; neither level panics or accepts a second encoding.
    #[test]
    fn a_batch_decodes_only_from_its_one_encoding(
        count in 0usize..4,
        (edits, keep, extra) in damage(),
    ) {
        let list: Vec<Vec<u8>> = (0..count).map(|i| transfer(i as u8, i as u64, 1).encode()).collect();
        let bytes = damaged(&codec::encode(&list), &edits, keep, &extra);
        if let Ok(back) = codec::decode::<Vec<Vec<u8>>>("batch", &bytes, 4 * TX_BYTES_MAX) {
            prop_assert_eq!(codec::encode(&back), bytes);
            for tx in back {
                let _ = SignedTx::decode(&tx);
            }
        }
    }

    /// A key file that is not exactly a key file written by `Keypair::save` is refused with
    /// an error naming the file, never a panic and never a different key.
    #[test]
    fn a_damaged_key_file_is_refused_or_is_the_same_key(
        seed in any::<[u8; 32]>(),
        (edits, keep, extra) in damage(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.json");
        let key = Keypair::from_seed(seed);
        key.save(&path, true).expect("save");
        let text = std::fs::read(&path).expect("read");
        std::fs::write(&path, damaged(&text, &edits, keep, &extra)).expect("write");
        key_file_loads_or_says_why(&path, &key)?;
    }

    /// A key file as JSON with fields dropped, mistyped or given other values (another
    /// version, another account, a secret of the wrong length or not hex), or fields added.
    #[test]
    fn a_mutated_key_file_is_refused_or_is_the_same_key(
        seed in any::<[u8; 32]>(),
        edits in prop::collection::vec(prop::option::of(prop::option::of(key_field())), 3),
        extra in prop::option::of(("[a-z_]{1,12}", key_field())),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.json");
        let key = Keypair::from_seed(seed);
        key.save(&path, true).expect("save");
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        let Some(fields) = doc.as_object_mut() else {
            return Err(TestCaseError::fail("a key file is a JSON object"));
        };
        for (name, edit) in ["version", "account", "secret_key"].into_iter().zip(edits) {
            match edit {
                Some(Some(v)) => { fields.insert(name.to_string(), v); }
                Some(None) => { fields.remove(name); }
                None => {}
            }
        }
        if let Some((name, v)) = extra {
            fields.insert(name, v);
        }
        std::fs::write(&path, serde_json::to_vec(&doc).expect("JSON")).expect("write");
        key_file_loads_or_says_why(&path, &key)?;
    }

    /// A backup phrase typed, pasted or damaged any way: refused as a phrase, never a panic;
    /// and the words of the right phrase in any case and spacing give back the same key.
    #[test]
    fn a_damaged_phrase_is_refused_or_restores_a_key(
        seed in any::<[u8; 32]>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), phrase_edit()), 0..4),
        noise in "\\PC{0,300}",
    ) {
        let key = Keypair::from_seed(seed);
        let phrase = key.mnemonic();
        let mut words: Vec<String> = phrase.split(' ').map(str::to_string).collect();
        let mut same_words = true;
        for (at, edit) in &edits {
            if words.is_empty() {
                break;
            }
            let i = at.index(words.len());
            match edit {
                PhraseEdit::Upper => words[i] = words[i].to_uppercase(),
                PhraseEdit::Space(space) => words[i] = format!("{space}{}{space}", words[i]),
                PhraseEdit::Drop => { words.remove(i); same_words = false; }
                PhraseEdit::Repeat => { let w = words[i].clone(); words.insert(i, w); same_words = false; }
                PhraseEdit::Replace(w) => { words[i] = w.clone(); same_words = false; }
            }
        }
        let damaged = words.join(" ");
        match Keypair::from_mnemonic(&damaged) {
            Ok(restored) if same_words => prop_assert_eq!(restored.account(), key.account()),
            // Another valid phrase (a swapped word can keep the checksum): another key.
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!same_words, "the right words refused: {}", e);
                prop_assert!(e.to_string().starts_with("invalid mnemonic: "), "{}", e);
            }
        }
        if let Err(e) = Keypair::from_mnemonic(&noise) {
            prop_assert!(e.to_string().starts_with("invalid mnemonic: "), "{}", e);
        }
    }
}

/// Load the key file at `path`, written from `key` and then damaged: the same key, or an
/// error that names the file and says it is not a valid key file (it is there and readable,
/// so never that it cannot be accessed).
fn key_file_loads_or_says_why(path: &std::path::Path, key: &Keypair) -> Result<(), TestCaseError> {
    match Keypair::load(path) {
        Ok(loaded) => prop_assert_eq!(loaded.account(), key.account()),
        Err(e @ KeyError::Invalid { .. }) => {
            prop_assert!(
                e.to_string().contains("key.json is not a valid key file: "),
                "{}",
                e
            );
        }
        Err(e) => return Err(TestCaseError::fail(format!("not an invalid key file: {e}"))),
    }
    Ok(())
}

/// Another value for a key file's field.
fn key_field() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        prop::sample::select(vec![
            json!(null),
            json!(0),
            json!(1),
            json!(2),
            json!(-1),
            json!(u64::MAX),
            json!(1.0),
            json!(""),
            json!([]),
            json!({}),
            json!(Keypair::from_seed([1; 32]).account()),
            json!("12D3KooW"),
            json!("00".repeat(31)),
            json!("00".repeat(33)),
            json!("zz".repeat(32)),
            json!("AB".repeat(32)),
            json!(format!(" {} ", "ab".repeat(32))),
        ]),
        "[ -~]{0,70}".prop_map(serde_json::Value::String),
        "[0-9a-f]{64}".prop_map(serde_json::Value::String),
    ]
}

/// A change to one word of a phrase.
#[derive(Clone, Debug)]
enum PhraseEdit {
    /// In capitals.
    Upper,
    /// With other whitespace around it.
    Space(&'static str),
    /// Left out.
    Drop,
    /// Typed twice.
    Repeat,
    /// Another word, or not a word.
    Replace(String),
}

fn phrase_edit() -> impl Strategy<Value = PhraseEdit> {
    prop_oneof![
        Just(PhraseEdit::Upper),
        prop::sample::select(vec!["  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}"])
            .prop_map(PhraseEdit::Space),
        Just(PhraseEdit::Drop),
        Just(PhraseEdit::Repeat),
        prop::sample::select(vec![
            "abandon", "zoo", "abandonn", "", "ǅ", "İ", "ß", "\u{0}"
        ])
        .prop_map(|w| PhraseEdit::Replace(w.to_string())),
        "\\PC{1,12}".prop_map(PhraseEdit::Replace),
    ]
}

/// Found by the fuzzing above: a key file that is not UTF-8 was reported as one that "cannot
/// be accessed", sending its owner to check permissions.
#[test]
fn a_key_file_that_is_not_text_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("key.json");
    std::fs::write(&path, b"{\"version\": 1,\xff}").expect("write");
    let e = Keypair::load(&path).expect_err("not text");
    assert!(matches!(e, KeyError::Invalid { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("not UTF-8 text (the byte at offset 14"),
        "{e}"
    );
}
