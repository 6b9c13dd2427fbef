//! Bursar's end-to-end tests: one binary with a module per capability, so the support code
//! (anvil with Circle's USDC, a Bursar on a temp SQLite file) compiles once.

#![allow(dead_code)]

mod support;

mod api_contract;
mod bench;
mod chain_truth;
mod console;
mod finance;
mod mcp;
mod never_stuck;
mod policy;
mod scopes;
mod secrets;
mod settlement;
mod x402;
