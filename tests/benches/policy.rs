//! Criterion micro-benchmark of the policy decision, the pure step of every payment intent
//! (README "Performance"): `cargo bench --bench policy`.

use bursar::domain::{Address, Amount};
use bursar::policy::{self, PaymentRequest, Policy, SpendSnapshot};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn address(byte: u8) -> Address {
    Address::from(alloy::primitives::Address::repeat_byte(byte))
}

fn every_rule() -> Policy {
    serde_json::from_value(serde_json::json!({
        "max_per_payment": "50",
        "daily_limit": "500",
        "total_limit": "5000",
        "allowed_recipients": (1..=32u8).map(|b| address(b).to_string()).collect::<Vec<_>>(),
        "require_approval_above": "20",
        "max_payments_per_minute": 60,
        "min_confidence": 0.8,
    }))
    .expect("the policy parses")
}

fn evaluate(c: &mut Criterion) {
    let request = PaymentRequest {
        to: address(32),
        amount: Amount::from_micros(12_500_000),
        confidence: Some(0.93),
    };
    let spend = SpendSnapshot {
        tier_held_24h: Amount::from_micros(0),
        held_last_24h: Amount::from_micros(120_000_000),
        held_total: Amount::from_micros(1_200_000_000),
        payments_last_minute: 7,
    };
    let strict = every_rule();
    let open = Policy::default();
    c.bench_function("policy::evaluate, every rule set", |b| {
        b.iter(|| policy::evaluate(black_box(&strict), black_box(&request), black_box(&spend)))
    });
    c.bench_function("policy::evaluate, no rules", |b| {
        b.iter(|| policy::evaluate(black_box(&open), black_box(&request), black_box(&spend)))
    });
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
