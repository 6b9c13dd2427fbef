//! `bursar bench --rpc-url`: the bench run against a node it did not start, as a user sizing a
//! deployment on their own node would run it (the binary, its environment, a funder key file).

use alloy::network::TransactionBuilder;
use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use bursar::chain::devnet::Devnet;
use bursar::chain::usdc::IUSDC;
use bursar::domain::Amount;
use serde_json::Value;
use std::path::Path;

/// `totalSupply()`: not in the bindings Bursar needs, read by its selector.
async fn total_supply(devnet: &Devnet) -> U256 {
    let request = TransactionRequest::default()
        .with_to(devnet.usdc.into_inner())
        .with_input(alloy::hex::decode("18160ddd").unwrap());
    U256::from_be_slice(&devnet.provider.call(request).await.unwrap())
}

async fn usdc_of(devnet: &Devnet, who: alloy::primitives::Address) -> U256 {
    IUSDC::new(devnet.usdc.into_inner(), &devnet.provider)
        .balanceOf(who)
        .call()
        .await
        .unwrap()
}

/// A funder account with `micros` USDC and `ether` ETH, its key in a file under `dir`.
async fn funder(devnet: &Devnet, dir: &Path, micros: u64, ether: &str) -> PrivateKeySigner {
    let funder = PrivateKeySigner::random();
    if micros > 0 {
        devnet
            .mint(funder.address().into(), Amount::from_micros(micros))
            .await
            .unwrap();
    }
    devnet
        .set_eth_balance(funder.address().into(), ether)
        .await
        .unwrap();
    std::fs::write(
        dir.join("funder.key"),
        format!("0x{}\n", alloy::hex::encode(funder.to_bytes())),
    )
    .unwrap();
    funder
}

fn bench(devnet: &Devnet, dir: &Path, payments: &str) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"));
    command
        .args(["bench", "--agents", "2", "--clients", "4", "--json"])
        .args(["--payments", payments, "--stall-timeout-secs", "30"])
        .args(["--rpc-url", &devnet.rpc_url, "--funder-key-file"])
        .arg(dir.join("funder.key"))
        .arg("--data-dir")
        .arg(dir.join("run"))
        .env("BURSAR_USDC_ADDRESS", devnet.usdc.to_string());
    command
}

async fn run(mut command: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap()
}

/// On a node it did not start, the bench funds every wallet from the funder by plain transfers
/// (no minting: the token's supply is unchanged), runs both phases at the node's own pace, and
/// every intent ends as exactly one transfer on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_on_a_named_node_funded_by_the_funder_key() {
    let devnet = Devnet::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let funder = funder(&devnet, dir.path(), 10_000_000, "1").await;
    devnet.mine_every(1).await.unwrap();
    let supply = total_supply(&devnet).await;
    let funder_eth = devnet.provider.get_balance(funder.address()).await.unwrap();

    let output = run(bench(&devnet, dir.path(), "20")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["verification"]["transfers_on_chain"], 40, "{report}");
    assert_eq!(report["verification"]["lost"], 0);
    assert_eq!(report["verification"]["doubled"], 0);
    assert_eq!(report["settlement"]["confirmed"], 20);
    assert_eq!(report["backlog"]["confirmed"], 20);
    assert_eq!(
        report["block_time_secs"], 1,
        "measured from the node's blocks"
    );
    assert!(
        report["ceilings"]["anvil_confirmed_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    assert_eq!(total_supply(&devnet).await, supply, "nothing was minted");
    assert!(usdc_of(&devnet, funder.address()).await < U256::from(10_000_000u64));
    assert!(devnet.provider.get_balance(funder.address()).await.unwrap() < funder_eth);
    // The wallets keep what the run did not spend, so their sealed keys are kept.
    assert!(dir.path().join("run").join("bursar.db").exists());
    assert!(stderr.contains("kept in"), "{stderr}");
}

/// A funder short of USDC is refused before anything is sent, with what it holds and what the
/// run needs; a key file that holds no key is refused naming the file and nothing of its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_on_a_named_node_refuses_a_short_funder_before_sending() {
    let devnet = Devnet::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let funder = funder(&devnet, dir.path(), 0, "1").await;
    devnet.mine_every(1).await.unwrap();

    let output = run(bench(&devnet, dir.path(), "20")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    let holds = format!(
        "the funder {} holds 0 USDC",
        funder.address().to_checksum(None)
    );
    assert!(
        stderr.to_lowercase().contains(&holds.to_lowercase()),
        "{stderr}"
    );
    assert!(stderr.contains("this run needs"), "{stderr}");
    let nonce = devnet
        .provider
        .get_transaction_count(funder.address())
        .pending()
        .await
        .unwrap();
    assert_eq!(nonce, 0, "nothing was sent");

    std::fs::write(dir.path().join("funder.key"), "not-a-key-at-all\n").unwrap();
    let output = run(bench(&devnet, dir.path(), "20")).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--funder-key-file"), "{stderr}");
    assert!(!stderr.contains("not-a-key-at-all"), "{stderr}");
}
