//! The transactions this validator has already checked statelessly, so it checks each
//! signature once rather than at admission, in block verification and again when applying.
//!
//! An entry is keyed by the transaction hash: BLAKE3 of the full signed encoding, signature
//! included. [`peergrid_ledger::check_stateless`] is a pure function of those bytes and the
//! chain id (fixed for a validator), so a hash in the set means "these exact bytes passed";
//! a transaction with the same body and another signature has another hash, and poisoning
//! an entry would take a BLAKE3 collision. Only hashes computed locally from transactions
//! that passed the check locally go in: nothing a peer says about a hash is trusted.
//!
//! Bounded ([`RecentSet`]) and also emptied as blocks finalize. Forgetting is always
//! safe: a forgotten transaction is simply checked again.

use peergrid_core::TxHash;
use peergrid_core::recent::RecentSet;

/// Hashes of transactions that passed the stateless checks on this validator.
pub type VerifiedTxs = RecentSet<TxHash>;
