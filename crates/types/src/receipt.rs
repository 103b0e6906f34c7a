//! What clients see of finalized blocks and transactions: the ledger API's wire types.

use serde::{Deserialize, Serialize};

use peergrid_core::{AccountId, Hash, TxHash};

use crate::events::{Event, TxError};

/// How one transaction in a finalized block ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxOutcome {
    /// The transaction's hash.
    pub hash: TxHash,
    /// Its signer.
    pub signer: AccountId,
    /// Its events if it applied, or why it was rejected.
    #[cfg_attr(feature = "openapi", schema(value_type = TxResult))]
    pub result: Result<Vec<Event>, TxError>,
}

/// How serde writes [`TxOutcome::result`]: `{"Ok": events}` or `{"Err": error}`. A schema
/// only; utoipa has none for `Result`.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
enum TxResult {
    /// It applied, with these events.
    Ok(Vec<Event>),
    /// It was rejected: nothing changed.
    Err(TxError),
}

/// A finalized block as followers see it: its digest, its state root, and what each transaction did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FinalizedBlock {
    /// Height.
    pub height: u64,
    /// The block's digest, hex.
    pub digest: String,
    /// Ledger time, ms.
    pub time_ms: u64,
    /// State root after the block.
    pub root: Hash,
    /// Transactions, in order.
    pub txs: Vec<TxOutcome>,
    /// Events of end-of-block logic.
    pub end_events: Vec<Event>,
}

/// Where a transaction is, as far as this validator knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TxStatus {
    /// Waiting in the mempool.
    Pending,
    /// In a finalized block, applied.
    Finalized {
        /// Block height.
        height: u64,
        /// What it did.
        events: Vec<Event>,
    },
    /// In a finalized block, rejected: nothing changed.
    Rejected {
        /// Block height.
        height: u64,
        /// Why.
        reason: TxError,
    },
    /// Not known here: never received, or dropped from the mempool.
    Unknown,
}

impl TxStatus {
    /// The status of a transaction that ended with `result` in the block at `height`.
    pub fn of(height: u64, result: &Result<Vec<Event>, TxError>) -> TxStatus {
        match result {
            Ok(events) => TxStatus::Finalized {
                height,
                events: events.clone(),
            },
            Err(reason) => TxStatus::Rejected {
                height,
                reason: reason.clone(),
            },
        }
    }
}
