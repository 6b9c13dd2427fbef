//! No key material leaves custody: the real `bursar serve` binary runs its settlement worker at
//! debug log level through a whole payment, then its logs, every response and the database files
//! are searched for every custodied private key (as hex, with and without 0x, and as raw bytes).

use bursar::chain::devnet::{self, Devnet};
use bursar::custody::MasterKey;
use bursar::domain::Address;
use bursar::ledger::Ledger;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long the test waits for the service's worker to settle a payment while blocks are mined.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_logs_responses_or_the_database() {
    let devnet = Devnet::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let master_key_file = dir.path().join("master.key");
    MasterKey::generate_file(&master_key_file).unwrap();
    let database = dir.path().join("bursar.db");
    let admin = bursar::domain::new_secret_token("bsr_admin");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);

    let log_path = dir.path().join("bursar.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .arg("serve")
        .env("BURSAR_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "BURSAR_DATABASE_URL",
            format!("sqlite://{}", database.display()),
        )
        .env("BURSAR_RPC_URL", &devnet.rpc_url)
        .env("BURSAR_USDC_ADDRESS", devnet.usdc.to_string())
        .env("BURSAR_MASTER_KEY_FILE", &master_key_file)
        .env("BURSAR_ADMIN_TOKEN", &admin)
        .env("BURSAR_CONFIRMATIONS", "1")
        .env("BURSAR_POLL_INTERVAL_MS", "50")
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut responses = String::new();
    let deadline = Instant::now() + SETTLE_DEADLINE;
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "service did not start: {}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut call =
        async |method: reqwest::Method, path: &str, token: &str, body: Value, key: Option<&str>| {
            let mut request = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            let response = request.send().await.unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            responses.push_str(&text);
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
            )
        };

    let treasury = call(
        reqwest::Method::GET,
        "/v1/treasury",
        &admin,
        json!(null),
        None,
    )
    .await
    .1;
    let treasury_address = Address::parse(treasury["address"].as_str().unwrap()).unwrap();
    devnet
        .mint(treasury_address, devnet::TREASURY_USDC)
        .await
        .unwrap();
    devnet
        .set_eth_balance(treasury_address, "10")
        .await
        .unwrap();

    let (status, agent) = call(
        reqwest::Method::POST,
        "/v1/agents",
        &admin,
        json!({"name": "spender"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let agent_id = agent["id"].as_str().unwrap().to_string();
    let (status, funding) = call(
        reqwest::Method::POST,
        "/v1/treasury/fundings",
        &admin,
        json!({"agent_id": agent_id, "amount": "50", "gas_eth": "0.01"}),
        Some("fund-1"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, credential) = call(
        reqwest::Method::POST,
        &format!("/v1/agents/{agent_id}/credentials"),
        &admin,
        json!({"name": "c", "policy": {"max_per_payment": "20"}}),
        None,
    )
    .await;
    let agent_token = credential["token"].as_str().unwrap().to_string();

    // The service's own worker settles; the test only mines blocks and reads.
    let funding_id = funding["id"].as_str().unwrap().to_string();
    wait_confirmed(&devnet, &mut call, &funding_id, &admin, deadline).await;
    let (status, payment) = call(
        reqwest::Method::POST,
        "/v1/payments",
        &agent_token,
        json!({"to": crate::support::recipient(0x33).to_string(), "amount": "12.50", "currency": "USDC"}),
        Some("p-1"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{payment}");
    wait_confirmed(
        &devnet,
        &mut call,
        payment["id"].as_str().unwrap(),
        &agent_token,
        deadline,
    )
    .await;

    child.kill().await.unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("signed"), "the log covered signing: {logs}");

    // Read every custodied key back through custody and look for it everywhere.
    let ledger = Ledger::open(&format!("sqlite://{}", database.display()))
        .await
        .unwrap();
    let wallet_ids: Vec<String> = sqlx::query_scalar("SELECT id FROM wallets")
        .fetch_all(ledger.pool())
        .await
        .unwrap();
    assert_eq!(wallet_ids.len(), 2, "treasury and one agent");
    let custody = bursar::custody::Custody::new(MasterKey::load(&master_key_file).unwrap(), 8453);
    let mut database_bytes = std::fs::read(&database).unwrap();
    database_bytes.extend(std::fs::read(dir.path().join("bursar.db-wal")).unwrap_or_default());
    for id in wallet_ids {
        let row = bursar::ledger::wallets::get(ledger.pool(), &id)
            .await
            .unwrap();
        let sealed = bursar::custody::SealedKey {
            address: row.address().unwrap(),
            ciphertext: row.sealed_key,
            nonce: row.seal_nonce,
        };
        let key = custody.reveal_for_tests(&sealed).unwrap();
        let hex_key = hex::encode(key.as_slice());
        for haystack in [&logs, &responses] {
            assert!(
                !haystack.to_lowercase().contains(&hex_key),
                "private key of {id} leaked as hex"
            );
        }
        assert!(
            !database_bytes.windows(32).any(|w| w == key.as_slice()),
            "private key of {id} stored in clear"
        );
        assert!(
            !database_bytes
                .windows(64)
                .any(|w| w.eq_ignore_ascii_case(hex_key.as_bytes())),
            "private key of {id} stored as hex"
        );
    }
    // Nor the master key, nor bearer secrets in the logs.
    let master = std::fs::read_to_string(&master_key_file).unwrap();
    assert!(!logs.contains(master.trim()));
    assert!(!logs.contains(&admin) && !logs.contains(&agent_token));
}

async fn wait_confirmed<F>(devnet: &Devnet, call: &mut F, id: &str, token: &str, deadline: Instant)
where
    F: AsyncFnMut(reqwest::Method, &str, &str, Value, Option<&str>) -> (StatusCode, Value),
{
    loop {
        let (_, payment) = call(
            reqwest::Method::GET,
            &format!("/v1/payments/{id}"),
            token,
            json!(null),
            None,
        )
        .await;
        match payment["status"].as_str() {
            Some("confirmed") => return,
            Some("failed") => panic!("payment failed: {payment}"),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "payment not confirmed in time: {payment}"
        );
        // Mine only once the worker has broadcast, so the transaction lands in the block.
        if payment["status"] == "submitted" || payment["status"] == "included" {
            devnet.mine(1).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
