//! JSON schemas of the types whose `Serialize` is written by hand: a derived schema would
//! describe the Rust fields (32 integers), not the text JSON carries.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::{AccountId, Amount, Hash};

/// A string schema with the pattern every serialized value matches.
fn text(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

/// The peer id form [`AccountId`]'s `Display` prints.
const ACCOUNT_ID_PATTERN: &str = "^12D3KooW[1-9A-HJ-NP-Za-km-z]{44}$";
/// Lowercase hex, as [`Hash`]'s `Display` prints it.
const HASH_PATTERN: &str = "^[0-9a-f]{64}$";
/// Decimal tokens without trailing zeros, as [`Amount`]'s `Display` prints them.
const AMOUNT_PATTERN: &str = "^[0-9]+(\\.[0-9]{0,6}[1-9])?$";

impl PartialSchema for AccountId {
    fn schema() -> RefOr<Schema> {
        text(
            "An account: its ed25519 key in the libp2p peer id form (requests also take 64 hex characters).",
            ACCOUNT_ID_PATTERN,
            "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV",
        )
    }
}

impl ToSchema for AccountId {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("AccountId")
    }
}

impl PartialSchema for Hash {
    fn schema() -> RefOr<Schema> {
        text(
            "A 32-byte BLAKE3 digest, hex.",
            HASH_PATTERN,
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        )
    }
}

impl ToSchema for Hash {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Hash")
    }
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        text(
            "Tokens (PGT) as a decimal string with at most 7 decimals; requests also take a whole number.",
            AMOUNT_PATTERN,
            "12.5",
        )
    }
}

impl ToSchema for Amount {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Amount")
    }
}
