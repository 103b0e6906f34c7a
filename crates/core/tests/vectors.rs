//! Known answers for keys, account ids, signatures and transaction bytes.
//!
//! The hex and text literals marked FROZEN were computed once by this code and are on-disk and
//! on-wire formats: backup phrases people wrote down, account ids in genesis files and key
//! files, the bytes validators sign, hash and store in blocks. Changing any of them breaks
//! existing keys and chains. A change that fails these tests needs a versioned format and a
//! migration, not new literals. The public vectors (BIP-39, RFC 8032) are checked as well, so
//! the frozen values rest on standards and not only on this code agreeing with itself.

use peergrid_core::tx::{ContractSpec, TX_NAMESPACE};
use peergrid_core::{AccountId, Amount, Capacity, Hash, Keypair, Payload, SignedTx};

fn unhex<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).expect("valid hex of the right length");
    out
}

/// The 256-bit entropy vectors of the BIP-39 reference (trezor/python-mnemonic `vectors.json`):
/// a peergrid phrase is BIP-39 with the entropy used as the ed25519 seed.
const BIP39_VECTORS: [(u8, &str); 4] = [
    (
        0x00,
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
         abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
         abandon art",
    ),
    (
        0x7f,
        "legal winner thank year wave sausage worth useful legal winner thank year wave sausage \
         worth useful legal winner thank year wave sausage worth title",
    ),
    (
        0x80,
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount \
         doctor acoustic avoid letter advice cage absurd amount doctor acoustic bless",
    ),
    (
        0xff,
        "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo \
         zoo vote",
    ),
];

#[test]
fn a_backup_phrase_is_the_bip39_encoding_of_the_seed() {
    for (byte, phrase) in BIP39_VECTORS {
        let key = Keypair::from_mnemonic(phrase).expect("a standard phrase");
        assert_eq!(*key.secret_seed(), [byte; 32], "{phrase}");
        assert_eq!(
            Keypair::from_seed([byte; 32]).mnemonic().as_str(),
            phrase,
            "seed {byte:#04x}"
        );
    }
}

/// RFC 8032 §7.1, TEST 1 and TEST 2: secret key → public key.
#[test]
fn an_account_id_is_the_rfc8032_public_key() {
    let vectors = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        ),
    ];
    for (secret, public) in vectors {
        let key = Keypair::from_seed(unhex(secret));
        assert_eq!(key.account(), AccountId(unhex(public)), "{secret}");
        // Through the backup phrase and back, the same account.
        let restored = Keypair::from_mnemonic(&key.mnemonic()).expect("own phrase");
        assert_eq!(restored.account(), key.account());
    }
}

/// The phrase of the `0x7f` BIP-39 vector, as a user would type it back in.
fn phrase_key() -> Keypair {
    Keypair::from_mnemonic(BIP39_VECTORS[1].1).expect("a standard phrase")
}

#[test]
fn a_fixed_phrase_gives_a_frozen_account_id() {
    // FROZEN: the text form of an account (a libp2p Ed25519 peer id), in genesis files,
    // key files and every API answer.
    const ACCOUNT: &str = "12D3KooWMqnSBLeXmKrhaGGiH4wN6wRa58pkxE3aFawQ2GwhJ4Bc";
    let account = phrase_key().account();
    assert_eq!(account.to_string(), ACCOUNT);
    assert_eq!(ACCOUNT.parse::<AccountId>().expect("parses"), account);
    let zero = Keypair::from_mnemonic(BIP39_VECTORS[0].1).expect("a standard phrase");
    assert_eq!(
        zero.account(),
        AccountId(unhex(
            "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
        )),
        "the ed25519 public key of the all-zero seed"
    );
    // FROZEN, as above.
    assert_eq!(
        zero.account().to_string(),
        "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    );
}

#[test]
fn a_signature_covers_the_namespace_length_the_namespace_and_the_message() {
    let key = phrase_key();
    let message = b"known answer";
    let signature = key.sign(TX_NAMESPACE, message);
    // FROZEN: ed25519 signatures are deterministic, so a fixed key and message give fixed bytes.
    assert_eq!(
        hex::encode(signature),
        "08c70dcca225a94943bf95e8609274891593851fd55acbcd65fc00cfe8ee5be607900b77f3418aa025985b50aef4c0efbc4adf51fb18d10756629498c29b8c03"
    );
    // The signed bytes are written out here by hand from the documented layout, so a
    // change to `signed_bytes` that still signs and verifies with itself fails.
    let mut signed = vec![TX_NAMESPACE.len() as u8];
    signed.extend_from_slice(TX_NAMESPACE);
    signed.extend_from_slice(message);
    let verifying =
        ed25519_zebra::VerificationKey::try_from(*key.account().as_bytes()).expect("valid key");
    verifying
        .verify(&ed25519_zebra::Signature::from(signature), &signed)
        .expect("the signature is over len ‖ namespace ‖ message");
}

fn fixed_transfer() -> SignedTx {
    SignedTx::expiring(
        &phrase_key(),
        "kat-chain",
        7,
        1_750_000_000_000,
        Payload::Transfer {
            to: Keypair::from_seed([0x80; 32]).account(),
            amount: Amount(123_456_789),
        },
    )
}

fn fixed_deployment() -> SignedTx {
    SignedTx::new(
        &phrase_key(),
        "kat-chain",
        8,
        Payload::CreateContract(ContractSpec::Deployment {
            node: 3,
            deployment_hash: Hash::of(b"deployment"),
            resources: Capacity {
                cru: 2,
                mru: 4 << 30,
                sru: 50 << 30,
                hru: 0,
            },
            public_ips: 1,
        }),
    )
}

#[test]
fn fixed_transactions_encode_and_hash_to_frozen_bytes() {
    // FROZEN: the canonical encoding is what blocks carry and what the signature covers; its
    // BLAKE3 is the transaction's id in receipts, explorers and wallets.
    let vectors = [
        (
            fixed_transfer(),
            "090000006b61742d636861696eb2a942ff4c98718bed76e255987f6d59b1a72d3b2cd2510003e6170ac63a9ffb070000000000000000dc20749701000000e5687b6d11ccfb632abbafe844f8f1693d160aa582156ed66eea38ab5e7d1e1215cd5b0700000000adde3171c0b128cf37ca974ea99d6e5da474b330598c6c0e0110c1caa825862309836b36cb298cd11f8c3ad302d9014c2db997b6b5931049ed49b58b34be4308",
            "a36cece66132bce9554ee52eb0ca255ea700bdf96ea4cc8ee4b865bafea7127d",
        ),
        (
            fixed_deployment(),
            "090000006b61742d636861696eb2a942ff4c98718bed76e255987f6d59b1a72d3b2cd2510003e6170ac63a9ffb0800000000000000ffffffffffffffff080003000000d5e793427d9d35cf26d95967cb08f99f542baf8aa0e8d7843abf2bdb1d04aaf902000000000000000000000001000000000000800c00000000000000000000000100000036717df22fb23f2833589dae85deeaaeecbc42be85d8f60e01b74bba1cf320600e8d94a84352c00ffcb8bda59040d59aad42dd29a60764b3e5bb08664d558d05",
            "e0f4736a2955b67f7239267ad8f76603ed6232865c9da4ab4eac66d58f12e8f8",
        ),
    ];
    for (tx, encoding, hash) in vectors {
        let bytes = tx.encode();
        assert_eq!(hex::encode(&bytes), encoding, "{:?}", tx.body.payload);
        assert_eq!(tx.hash().to_string(), hash, "{:?}", tx.body.payload);
        assert_eq!(tx.hash().0, *blake3::hash(&bytes).as_bytes());
        let decoded = SignedTx::decode(&hex::decode(encoding).expect("hex")).expect("decodes");
        assert_eq!(decoded, tx);
        assert!(decoded.verify_signature());
    }
}
