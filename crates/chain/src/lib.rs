//! Order transactions among BFT validators and serve the ledger.
//!
//! # Status: ALPHA

pub mod block;
pub mod mempool;
