//! Bursar: custody and settlement that lets AI agents pay in USDC on Base without holding a key.
//! The module map and the imports each module may use are in `../shared/ARCHITECTURE.md`.

pub mod api;
pub mod app;
pub mod chain;
pub mod cli;
pub mod config;
pub mod custody;
pub mod domain;
pub mod ledger;
pub mod payments;
pub mod policy;
pub mod webhooks;
