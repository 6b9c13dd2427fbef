//! Criterion micro-benchmark of custody signing, the CPU-heavy step of settlement (README
//! "Performance"): a chunk of 32 USDC transfers signed with one wallet key, unsealed once, as
//! settlement's lanes do. `cargo bench --bench signing`.

use alloy::consensus::TxEip1559;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use bursar::custody::{Custody, MasterKey};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

const CHUNK: u64 = 32;

fn transfer(nonce: u64) -> TxEip1559 {
    // transfer(address,uint256) with a recipient and an amount, as settlement builds it.
    let mut input = vec![0xa9, 0x05, 0x9c, 0xbb];
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(Address::repeat_byte(0x42).as_slice());
    input.extend_from_slice(&U256::from(10_000u64).to_be_bytes::<32>());
    TxEip1559 {
        chain_id: 8453,
        nonce,
        gas_limit: 60_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000,
        to: TxKind::Call(Address::repeat_byte(0x83)),
        value: U256::ZERO,
        input: Bytes::from(input),
        ..Default::default()
    }
}

fn sign(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("master.key");
    MasterKey::generate_file(&path).expect("a master key");
    let custody = Custody::new(MasterKey::load(&path).expect("it loads"), 8453);
    let sealed = custody.generate_wallet().expect("a wallet");
    let chunk: Vec<TxEip1559> = (0..CHUNK).map(transfer).collect();
    c.bench_function("custody::sign_all, 32 USDC transfers", |b| {
        b.iter(|| {
            custody
                .sign_all(black_box(&sealed), black_box(chunk.clone()))
                .expect("it signs")
        })
    });
}

criterion_group!(benches, sign);
criterion_main!(benches);
