//! Finance and treasury: spend reports that match the chain, audit exports and tamper detection,
//! sweeps, the gas float, and signed webhooks delivered at least once.

use crate::support::{TestApp, recipient};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use bursar::domain::Amount;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// `first_bad_seq` of `GET /v1/audit/verify`, checking that `ok` agrees with it.
async fn first_bad(app: &TestApp) -> Option<i64> {
    let report = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(report["ok"], report["first_bad_seq"].is_null(), "{report}");
    report["first_bad_seq"].as_i64()
}

/// The USDC moved by a payment, read from the `Transfer` logs of its transaction's receipt.
async fn transferred(app: &TestApp, tx_hash: &str) -> Amount {
    let (_, transfers) = app.usdc_transfers_of(tx_hash).await;
    transfers.iter().fold(Amount::ZERO, |total, transfer| {
        total
            .checked_add(Amount::from_micros(u64::try_from(transfer.value).unwrap()))
            .unwrap()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_report_matches_the_chain_and_balances_show_holds() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("spender").await;
    let (other, _) = app.create_agent("other").await;
    app.fund(&agent, "500", "0.05").await;
    app.fund(&other, "50", "0.05").await;
    let token = app
        .credential(
            &agent,
            json!({"max_per_payment": "100", "require_approval_above": "90"}),
        )
        .await;
    let other_token = app.credential(&other, json!({})).await;

    let mut confirmed = Vec::new();
    for (i, amount) in ["12.5", "0.000001", "33.333333"].iter().enumerate() {
        let body = json!({"to": recipient(0x51).to_string(), "amount": amount, "currency": "USDC",
            "memo": format!("call {i}"), "reference": format!("PO-{i}")});
        let response = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&token),
                Some(body),
                Some(&format!("p{i}")),
            )
            .await;
        confirmed.push(response.body["id"].as_str().unwrap().to_string());
    }
    let other_paid = app.pay_id(&other_token, recipient(0x52), "7", "o1").await;
    confirmed.push(other_paid);
    app.settle_to_confirmed(&confirmed).await;
    // Neither a denial, nor a payment still waiting, nor a funding counts as spend.
    assert_eq!(
        app.pay(&token, recipient(0x51), "100.5", "denied")
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.pay(&token, recipient(0x51), "95", "waiting").await.body["status"],
        "pending_approval"
    );
    let queued = app.pay(&token, recipient(0x51), "1", "queued").await;
    assert_eq!(queued.body["status"], "queued");

    let report = app
        .get(
            &format!("/v1/reports/spend?agent_id={agent}"),
            &app.admin_token,
        )
        .await
        .body;
    assert_eq!(report["currency"], "USDC");
    assert_eq!(report["count"], 3);
    assert_eq!(report["total_spend"], "45.833334");
    let mut on_chain = Amount::ZERO;
    for row in report["payments"].as_array().unwrap() {
        let moved = transferred(&app, row["tx_hash"].as_str().unwrap()).await;
        assert_eq!(moved.to_string(), row["amount"].as_str().unwrap());
        assert!(
            row["block_hash"].as_str().unwrap().starts_with("0x") && row["block_number"].is_u64()
        );
        assert!(row["reference"].as_str().unwrap().starts_with("PO-"));
        on_chain = on_chain.checked_add(moved).unwrap();
    }
    assert_eq!(
        on_chain.to_string(),
        report["total_spend"].as_str().unwrap()
    );
    let everyone = app.get("/v1/reports/spend", &app.admin_token).await.body;
    assert_eq!(
        (everyone["count"].as_i64(), everyone["total_spend"].as_str()),
        (Some(4), Some("52.833334"))
    );
    let empty = app
        .get(
            &format!("/v1/reports/spend?agent_id={agent}&from=2100-01-01T00:00:00Z"),
            &app.admin_token,
        )
        .await
        .body;
    assert_eq!(
        (empty["count"].as_i64(), empty["total_spend"].as_str()),
        (Some(0), Some("0"))
    );

    // The float view: on-chain USDC, what is held (waiting approval + queued), 24-hour spend.
    let balances = app.get("/v1/reports/balances", &app.admin_token).await.body;
    let row = balances["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["agent_id"] == agent.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["usdc"], "454.166666");
    assert_eq!(row["held"], "96");
    assert_eq!(row["spent_24h"], "141.833334");
    let treasury = app.get("/v1/treasury", &app.admin_token).await.body;
    assert_eq!(treasury["agents_usdc"], "497.166666");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_parse_and_tampering_is_caught() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("audited").await;
    app.fund(&agent, "10", "0.01").await;
    let token = app.credential(&agent, json!({})).await;
    let id = app.pay_id(&token, recipient(0x61), "1", "a").await;
    app.settle_to_confirmed(&[id]).await;
    let verify = app.get("/v1/audit/verify", &app.admin_token).await.body;
    let events = verify["events"].as_u64().unwrap() as usize;
    assert!(events >= 10);

    let response = app
        .http
        .get(format!("{}/v1/audit/export?format=csv", app.base_url))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv_text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().next(), Some("seq"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), events);
    let seqs: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(seqs, (1..=events).collect::<Vec<_>>());
    // The detail column holds JSON with commas and quotes, and survives CSV quoting.
    assert!(
        rows.iter()
            .all(|r| serde_json::from_str::<Value>(&r[7]).is_ok())
    );

    let jsonl = app
        .http
        .get(format!("{}/v1/audit/export?format=jsonl", app.base_url))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), events);
    assert_eq!(lines.last().unwrap()["hash"], verify["head"]);
    let bad = app
        .get("/v1/audit/export?format=xml", &app.admin_token)
        .await;
    assert_eq!(bad.body["error"]["field"], "format");

    // Tamper with the database directly (the triggers that forbid it go first) and verify.
    let pool = app.database().await;
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_events_no_delete")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first_bad(&app).await, None);

    // An edited event.
    let original: String = sqlx::query_scalar("SELECT detail FROM audit_events WHERE seq = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET detail = '{\"amount\":\"1000\"}' WHERE seq = 5")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first_bad(&app).await, Some(5));
    sqlx::query("UPDATE audit_events SET detail = ? WHERE seq = 5")
        .bind(&original)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first_bad(&app).await, None);

    // Two events swapped (contents exchanged between their sequence numbers).
    let columns = "at, kind, agent_id, credential_id, payment_id, actor, detail, tx_hash, block_number, block_hash, prev_hash, hash";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE saved AS SELECT seq, {columns} FROM audit_events WHERE seq IN (3, 6)"
    )))
    .execute(&pool)
    .await
    .unwrap();
    for (target, source) in [(3, 6), (6, 3)] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM saved WHERE seq = {source}) WHERE seq = {target}"
        )))
        .execute(&pool).await.unwrap();
    }
    assert_eq!(first_bad(&app).await, Some(3));
    for seq in [3, 6] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE audit_events SET ({columns}) = (SELECT {columns} FROM saved WHERE seq = {seq}) WHERE seq = {seq}"
        )))
        .execute(&pool).await.unwrap();
    }
    assert_eq!(first_bad(&app).await, None);

    // A deleted event, in the middle and at the end.
    sqlx::query("CREATE TABLE deleted AS SELECT * FROM audit_events WHERE seq IN (4, ?)")
        .bind(events as i64)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first_bad(&app).await, Some(4));
    sqlx::query("INSERT INTO audit_events SELECT * FROM deleted WHERE seq = 4")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = ?")
        .bind(events as i64)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(first_bad(&app).await, Some(events as i64));

    // The CLI reads the same database offline: verify names the event and exits 1; export writes
    // the same rows.
    let database = app.config.database_url.clone();
    let verify_cli = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["audit", "verify"])
        .env("BURSAR_DATABASE_URL", &database)
        .output()
        .unwrap();
    assert_eq!(verify_cli.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&verify_cli.stdout).unwrap();
    assert_eq!(printed["first_bad_seq"], events as i64);
    sqlx::query("INSERT INTO audit_events SELECT * FROM deleted WHERE seq = ?")
        .bind(events as i64)
        .execute(&pool)
        .await
        .unwrap();
    let out = app.dir.path().join("audit.csv");
    let export_cli = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["audit", "export", "--format", "csv", "--out"])
        .arg(&out)
        .env("BURSAR_DATABASE_URL", &database)
        .output()
        .unwrap();
    assert!(
        export_cli.status.success(),
        "{}",
        String::from_utf8_lossy(&export_cli.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), csv_text);
    let verify_cli = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["audit", "verify"])
        .env("BURSAR_DATABASE_URL", &database)
        .output()
        .unwrap();
    assert!(verify_cli.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_return_free_usdc_and_the_gas_float_refills() {
    let app = TestApp::spawn().await;
    let (agent, address) = app.create_agent("sweepable").await;
    app.fund(&agent, "80", "0.05").await;
    let treasury: bursar::domain::Address = bursar::domain::Address::parse(
        app.get("/v1/treasury", &app.admin_token).await.body["address"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let treasury_before = app.usdc_balance(treasury).await;

    // A manual hold of 5 stays with the agent; the rest goes back.
    let token = app.credential(&agent, json!({})).await;
    let hold = app.request(Method::POST, "/v1/payments", Some(&token),
        Some(json!({"to": recipient(0x71).to_string(), "amount": "5", "currency": "USDC", "capture": "manual"})), Some("h")).await;
    assert_eq!(hold.body["status"], "authorized");
    let treasurer = app.staff_token("treasury").await;
    let sweep = app
        .post(&format!("/v1/agents/{agent}/sweep"), &treasurer, json!({}))
        .await;
    assert_eq!(sweep.status, StatusCode::ACCEPTED, "{}", sweep.body);
    assert_eq!(
        (sweep.body["kind"].as_str(), sweep.body["amount"].as_str()),
        (Some("sweep"), Some("75"))
    );
    // A second sweep finds nothing free: the first one holds the rest.
    assert_eq!(
        app.post(&format!("/v1/agents/{agent}/sweep"), &treasurer, json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    app.settle_to_confirmed(&[sweep.body["id"].as_str().unwrap().to_string()])
        .await;
    assert_eq!(
        app.usdc_balance(address).await,
        Amount::parse_positive("5").unwrap()
    );
    assert_eq!(
        app.usdc_balance(treasury).await,
        treasury_before
            .checked_add(Amount::parse_positive("75").unwrap())
            .unwrap()
    );

    // Freezing with a sweep voids the hold and brings the agent's wallet to zero.
    let frozen = app
        .post(
            &format!("/v1/agents/{agent}/freeze"),
            &app.admin_token,
            json!({"sweep": true}),
        )
        .await;
    assert_eq!(
        frozen.body["cancelled_payments"].as_array().unwrap().len(),
        1
    );
    assert_eq!(frozen.body["sweep"]["amount"], "5", "{}", frozen.body);
    app.settle_to_confirmed(&[frozen.body["sweep"]["id"].as_str().unwrap().to_string()])
        .await;
    assert_eq!(app.usdc_balance(address).await, Amount::ZERO);
    assert_eq!(
        app.usdc_balance(treasury).await,
        treasury_before
            .checked_add(Amount::parse_positive("80").unwrap())
            .unwrap()
    );
    app.post(
        &format!("/v1/agents/{agent}/unfreeze"),
        &app.admin_token,
        json!({}),
    )
    .await;

    // The gas float: the agent holds USDC again and its ETH is drained; one top-up is queued
    // (not two), audited, and lands.
    app.devnet
        .mint(address, Amount::parse_positive("1").unwrap())
        .await
        .unwrap();
    app.devnet
        .provider
        .anvil_set_balance(address.into_inner(), alloy::primitives::U256::ZERO)
        .await
        .unwrap();
    assert_eq!(app.payments().top_up_gas().await.unwrap(), 1);
    assert_eq!(
        app.payments().top_up_gas().await.unwrap(),
        0,
        "one top-up in flight at a time"
    );
    let fundings = app
        .get(
            &format!("/v1/payments?agent_id={agent}&status=queued"),
            &app.admin_token,
        )
        .await
        .body;
    let topup = fundings["data"][0].clone();
    assert_eq!(
        (topup["kind"].as_str(), topup["amount"].as_str()),
        (Some("funding"), Some("0"))
    );
    app.settle_to_confirmed(&[topup["id"].as_str().unwrap().to_string()])
        .await;
    let eth = app
        .devnet
        .provider
        .get_balance(address.into_inner())
        .await
        .unwrap();
    assert_eq!(eth, alloy::primitives::utils::parse_ether("0.01").unwrap());
    assert_eq!(
        app.payments().top_up_gas().await.unwrap(),
        0,
        "above the floor now"
    );
    let audit = app
        .get(
            &format!("/v1/audit?payment_id={}", topup["id"].as_str().unwrap()),
            &app.admin_token,
        )
        .await
        .body;
    let requested = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "funding_requested")
        .unwrap()
        .clone();
    assert_eq!(requested["actor"], "system:gas_float");
}

/// A webhook receiver: records what it gets; can be started late on a chosen port.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

impl Receiver {
    async fn serve(&self, listener: tokio::net::TcpListener) {
        let received = self.received.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push((headers, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    }
}

fn verify_signature(secret: &str, headers: &axum::http::HeaderMap, body: &str) {
    let header = headers["bursar-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let timestamp: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1.strip_prefix("v1=").unwrap()).unwrap())
        .expect("valid signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_every_status_change_signed_even_after_downtime() {
    let app = TestApp::spawn().await;
    // The receiver is down at first: its port is reserved, then released with nothing on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let created = app
        .post(
            "/v1/webhooks",
            &app.admin_token,
            json!({"url": url, "events": ["payment.status_changed", "audit.alarm"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.body["secret"].as_str().unwrap().to_string();
    let webhook_id = created.body["id"].as_str().unwrap().to_string();
    let bad = app
        .post(
            "/v1/webhooks",
            &app.admin_token,
            json!({"url": "ftp://x", "events": ["payment.status_changed"]}),
        )
        .await;
    assert_eq!(bad.body["error"]["field"], "url");
    let bad = app
        .post(
            "/v1/webhooks",
            &app.admin_token,
            json!({"url": url, "events": ["payment.paid"]}),
        )
        .await;
    assert_eq!(bad.body["error"]["field"], "events");

    let (agent, _) = app.create_agent("hooked").await;
    app.fund(&agent, "10", "0.01").await;
    let token = app.credential(&agent, json!({})).await;
    let payment = app.pay_id(&token, recipient(0x81), "2.5", "w").await;
    app.settle_to_confirmed(std::slice::from_ref(&payment))
        .await;

    let deliverer = app.payments().deliverer();
    assert_eq!(
        deliverer.deliver_once().await.unwrap(),
        0,
        "receiver is down"
    );
    let pending = app
        .get(
            &format!("/v1/webhooks/{webhook_id}/deliveries?status=pending"),
            &app.admin_token,
        )
        .await
        .body;
    assert!(
        pending["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["attempts"] == 1 && d["last_error"] == "could not connect")
    );

    let receiver = Receiver::default();
    receiver
        .serve(
            tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap(),
        )
        .await;
    assert_eq!(
        deliverer.deliver_once().await.unwrap(),
        0,
        "not due before the backoff"
    );
    app.clock
        .advance_ms(bursar::payments::delivery::FIRST_BACKOFF_MS);
    let delivered = deliverer.deliver_once().await.unwrap();
    assert!(delivered >= 4);

    let received = receiver.received.lock().unwrap().clone();
    assert_eq!(received.len(), delivered);
    let mut statuses = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (headers, body) in &received {
        verify_signature(&secret, headers, body);
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            headers["bursar-event-id"].to_str().unwrap(),
            event["id"].as_str().unwrap()
        );
        assert!(
            ids.insert(event["id"].as_str().unwrap().to_string()),
            "one delivery per event"
        );
        if event["data"]["payment_id"] == payment.as_str() {
            statuses.push(event["data"]["status"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(statuses, ["queued", "submitted", "included", "confirmed"]);
    let confirmed = received
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap())
        .find(|e| e["data"]["payment_id"] == payment.as_str() && e["data"]["status"] == "confirmed")
        .unwrap();
    assert!(
        confirmed["data"]["block_hash"]
            .as_str()
            .unwrap()
            .starts_with("0x")
    );
    assert_eq!(
        deliverer.deliver_once().await.unwrap(),
        0,
        "nothing is sent twice once delivered"
    );

    // A reorg is an audit alarm, and reaches the receiver as one.
    let second = app.pay_id(&token, recipient(0x81), "1", "w2").await;
    app.settle().await;
    app.mine(1).await;
    app.settle().await;
    assert_eq!(
        app.get(&format!("/v1/payments/{second}"), &token)
            .await
            .body["status"],
        "included"
    );
    app.devnet.reorg(1).await.unwrap();
    app.settle().await;
    let events = app
        .get(&format!("/v1/audit?payment_id={second}"), &app.admin_token)
        .await
        .body;
    assert!(
        events["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reorg"),
        "{events}"
    );
    deliverer.deliver_once().await.unwrap();
    let alarms: Vec<Value> = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_str::<Value>(b).unwrap())
        .filter(|e| e["type"] == "audit.alarm")
        .collect();
    assert_eq!(alarms.len(), 1);
    assert_eq!(
        (
            alarms[0]["data"]["kind"].as_str(),
            alarms[0]["data"]["payment_id"].as_str()
        ),
        (Some("reorg"), Some(second.as_str()))
    );

    // Failed deliveries are visible and can be replayed: an endpoint that never answers.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = app.post("/v1/webhooks", &app.admin_token,
        json!({"url": format!("http://127.0.0.1:{dead_port}/hook"), "events": ["payment.status_changed"]})).await;
    let dead_id = dead.body["id"].as_str().unwrap().to_string();
    app.pay(&token, recipient(0x81), "1", "w3").await;
    for attempt in 0..bursar::payments::delivery::MAX_ATTEMPTS {
        deliverer.deliver_once().await.unwrap();
        app.clock
            .advance_ms(bursar::payments::delivery::backoff_ms(attempt));
    }
    let failed = app
        .get(
            &format!("/v1/webhooks/{dead_id}/deliveries?status=failed"),
            &app.admin_token,
        )
        .await
        .body;
    let failed = failed["data"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0]["attempts"],
        bursar::payments::delivery::MAX_ATTEMPTS
    );
    let replayed = app
        .post(
            &format!(
                "/v1/webhook-deliveries/{}/replay",
                failed[0]["id"].as_str().unwrap()
            ),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(
        (replayed.status, replayed.body["status"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gas_float_tops_up_only_wallets_that_have_a_use_for_gas() {
    let app = TestApp::spawn().await;
    let (idle, _) = app.create_agent("idle").await;
    let (holder, address) = app.create_agent("holder").await;
    let _ = idle;
    // Both wallets have no ETH; only the one that holds USDC can use gas.
    app.devnet
        .mint(address, Amount::parse_positive("5").unwrap())
        .await
        .unwrap();
    assert_eq!(app.payments().top_up_gas().await.unwrap(), 1);
    let fundings = app
        .get(&format!("/v1/payments?agent_id={holder}"), &app.admin_token)
        .await
        .body;
    assert_eq!(fundings["data"][0]["kind"], "funding");
    assert_eq!(
        app.payments().top_up_gas().await.unwrap(),
        0,
        "one in flight at a time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rewritten_with_database_access_alone_fails_the_signed_checkpoints() {
    use bursar::ledger::audit::{self, AuditEvent};
    let app = TestApp::spawn().await;
    for name in ["a", "b", "c"] {
        app.create_agent(name).await;
    }
    // An export signs the head it covers.
    let export = app
        .get("/v1/audit/export?format=jsonl", &app.admin_token)
        .await;
    assert_eq!(export.status, reqwest::StatusCode::OK);
    let before = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(before["ok"], true, "{before}");
    assert!(before["checkpoints"].as_i64().unwrap() >= 1, "{before}");

    // Someone who can write the database file drops the triggers and rewrites an event, then
    // recomputes every hash after it so that the chain is consistent again.
    let pool = sqlx::SqlitePool::connect(&app.config.database_url)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER audit_events_no_update")
        .execute(&pool)
        .await
        .unwrap();
    let mut events: Vec<AuditEvent> = sqlx::query_as("SELECT * FROM audit_events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    events[1].detail = r#"{"forged":true}"#.into();
    let mut prev = events[0].hash.clone();
    for event in events.iter_mut().skip(1) {
        event.prev_hash = prev.clone();
        event.hash = event.expected_hash();
        prev = event.hash.clone();
        sqlx::query("UPDATE audit_events SET detail = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&event.detail)
            .bind(&event.prev_hash)
            .bind(&event.hash)
            .bind(event.seq)
            .execute(&pool)
            .await
            .unwrap();
    }
    let chain_only = audit::verify(&pool).await.unwrap();
    assert!(chain_only.ok, "the rewrite is consistent: {chain_only:?}");

    let after = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(after["ok"], false, "{after}");
    assert!(
        after["reason"].as_str().unwrap().contains("checkpoint"),
        "{after}"
    );
    // Offline, with the master key, the CLI says the same and exits 1.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_bursar"))
        .args(["audit", "verify"])
        .env("BURSAR_DATABASE_URL", &app.config.database_url)
        .env("BURSAR_MASTER_KEY_FILE", app.dir.path().join("master.key"))
        .output()
        .unwrap();
    assert_eq!(
        cli.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
}
