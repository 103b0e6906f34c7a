//! Fuzzing the decoders of what other parties send: transactions, transaction batches and
//! key files. Proptest on stable Rust with a bounded number of cases, so CI runs it; a
//! failing input's seed is saved in `tests/fuzz.proptest-regressions`, committed as the
//! corpus that is replayed first on every run.

use peergrid_core::codec::{self, damaged};
use peergrid_core::tx::TX_BYTES_MAX;
use peergrid_core::{Amount, Keypair, Payload, SignedTx};
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
        match Keypair::load(&path) {
            Ok(loaded) => prop_assert_eq!(loaded.account(), key.account()),
            Err(e) => prop_assert!(e.to_string().contains("key.json"), "{}", e),
        }
    }
}
