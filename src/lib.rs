//! Bursar: custody and settlement that lets AI agents pay in USDC on Base without holding a key.
//! Each module's `//!` header says what it owns and which modules it may import: `domain` none;
//! `policy` only `domain`; `custody`, `chain`, `ledger` only `domain` (and `config`); `payments`
//! all of those; `api` only `payments`, `domain` and ledger reads; `app` everything.

pub mod api;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod console;
pub mod custody;
pub mod domain;
pub mod ledger;
pub mod payments;
pub mod policy;
pub mod x402;
