//! Order transactions among BFT validators and serve the ledger.
//!
//! # Status: ALPHA

pub mod api;
pub mod app;
pub mod block;
pub mod certify;
pub mod early;
pub mod engine;
pub mod epochs;
pub mod event_streams;
pub mod finalizer;
pub mod leader;
pub mod mempool;
pub mod prune;
pub mod shared;
pub mod snapshot;
pub mod timing;
pub mod validator;
pub mod verified;
