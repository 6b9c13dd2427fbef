//! End to end through HTTP against anvil running Circle's real USDC: an agent is funded, pays,
//! and every payment ends `confirmed` with the chain's own block number and hash.

use crate::support::{TestApp, recipient};
use bursar::domain::Amount;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funded_agent_pays_three_amounts_to_confirmation() {
    let mut app = TestApp::spawn().await;
    let (agent_id, agent_address) = app.create_agent("research-bot").await;
    app.fund(&agent_id, "1000", "0.05").await;
    assert_eq!(
        app.usdc_balance(agent_address).await,
        Amount::parse_positive("1000").unwrap()
    );
    let agent = app
        .get(&format!("/v1/agents/{agent_id}"), &app.admin_token)
        .await;
    assert_eq!(agent.body["balances"]["usdc"], "1000");
    assert_eq!(agent.body["balances"]["eth"], "0.05");

    let token = app
        .credential(
            &agent_id,
            json!({"max_per_payment": "500", "daily_limit": "1000"}),
        )
        .await;
    let to = recipient(0x42);
    let amounts = ["12.5", "0.000001", "99.999999"];
    let mut ids = Vec::new();
    for (i, amount) in amounts.iter().enumerate() {
        let response = app.pay(&token, to, amount, &format!("order-{i}")).await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
        assert_eq!(response.body["status"], "queued");
        assert_eq!(response.body["amount"], *amount);
        assert_eq!(response.body["decision"]["outcome"], "allow");
        ids.push(response.body["id"].as_str().unwrap().to_string());
    }

    // One pass signs and broadcasts all three from one wallet: consecutive nonces in flight.
    let report = app.settle().await;
    assert_eq!((report.signed, report.broadcast), (3, 3));
    let mut nonces = Vec::new();
    for id in &ids {
        let payment = app.get(&format!("/v1/payments/{id}"), &token).await;
        assert_eq!(payment.body["status"], "submitted");
        nonces.push(payment.body["nonce"].as_i64().unwrap());
    }
    assert_eq!(nonces, vec![0, 1, 2]);

    // Included, but not yet confirmed: fewer than the required blocks on top.
    app.mine(1).await;
    app.settle().await;
    app.mine(app.config.confirmations_required - 1).await;
    app.settle().await;
    for id in &ids {
        let payment = app.get(&format!("/v1/payments/{id}"), &token).await;
        assert_eq!(payment.body["status"], "included", "{}", payment.body);
        assert_eq!(
            payment.body["confirmations"],
            app.config.confirmations_required - 1
        );
    }
    app.mine(1).await;
    app.settle().await;

    let mut total = Amount::ZERO;
    for (id, amount) in ids.iter().zip(amounts) {
        let payment = app.get(&format!("/v1/payments/{id}"), &token).await.body;
        assert_eq!(payment["status"], "confirmed", "{payment}");
        let (receipt, transfers) = app
            .usdc_transfers_of(payment["tx_hash"].as_str().unwrap())
            .await;
        assert!(receipt.status());
        assert_eq!(payment["block_number"].as_u64(), receipt.block_number);
        assert_eq!(
            payment["block_hash"].as_str().unwrap(),
            receipt.block_hash.unwrap().to_string()
        );
        assert_eq!(transfers.len(), 1, "exactly one Transfer per payment");
        let transfer = &transfers[0];
        assert_eq!(transfer.from, agent_address.into_inner());
        assert_eq!(transfer.to, to.into_inner());
        assert_eq!(
            transfer.value,
            alloy::primitives::U256::from(Amount::parse_positive(amount).unwrap().micros())
        );
        total = total
            .checked_add(Amount::parse_positive(amount).unwrap())
            .unwrap();
    }
    assert_eq!(app.usdc_balance(to).await, total);
    assert_eq!(total.to_string(), "112.5");

    // The audit log shows every step of every payment, and the chain verifies.
    for id in &ids {
        let events = app
            .get(&format!("/v1/audit?payment_id={id}"), &app.admin_token)
            .await
            .body;
        let kinds: Vec<&str> = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "payment_decided",
                "transaction_signed",
                "transaction_broadcast",
                "payment_submitted",
                "payment_included",
                "payment_confirmed"
            ]
        );
    }
    let verify = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(verify["ok"], true, "{verify}");

    // State survives a restart on the same database.
    let before = app
        .get(&format!("/v1/payments/{}", ids[0]), &token)
        .await
        .body;
    app.restart().await;
    let after = app
        .get(&format!("/v1/payments/{}", ids[0]), &token)
        .await
        .body;
    assert_eq!(before, after);
    let verify_after = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(verify_after["events"], verify["events"]);
    assert_eq!(verify_after["head"], verify["head"]);
    // And the wallet's nonce carries on from where it was.
    let next = app.pay(&token, to, "1", "after-restart").await;
    let id = next.body["id"].as_str().unwrap().to_string();
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    assert_eq!(
        app.get(&format!("/v1/payments/{id}"), &token).await.body["nonce"],
        3
    );
}

/// An included payment's confirmations grow with each block a settlement pass verifies, counted
/// from that pass's head when the payment is read: no pass rewrites the payment only because one
/// more block sits on its own (its `updated_at` stays the inclusion's though the clock moves), a
/// block mined but not yet verified does not count, and `confirmed` is still a status change the
/// pass writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_included_payments_confirmations_are_counted_on_read_not_written_per_block() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("depth").await;
    app.fund(&agent_id, "10", "0.05").await;
    let token = app.credential(&agent_id, json!({})).await;
    let response = app.pay(&token, recipient(0x43), "1", "depth-1").await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
    let path = format!("/v1/payments/{}", response.body["id"].as_str().unwrap());
    app.settle().await;
    app.mine(1).await;
    app.clock.advance_ms(1_000);
    app.settle().await;
    let included = app.get(&path, &token).await.body;
    assert_eq!(included["status"], "included", "{included}");
    let first = included["confirmations"].as_u64().unwrap();
    let required = app.config.confirmations_required;
    assert!(
        first + 1 < required,
        "the test needs a block between inclusion and confirmation"
    );
    for count in first + 1..required {
        app.mine(1).await;
        let unverified = app.get(&path, &token).await.body;
        assert_eq!(unverified["confirmations"], count - 1, "{unverified}");
        app.clock.advance_ms(1_000);
        app.settle().await;
        let verified = app.get(&path, &token).await.body;
        assert_eq!(verified["status"], "included", "{verified}");
        assert_eq!(verified["confirmations"], count, "{verified}");
        assert_eq!(verified["block_hash"], included["block_hash"]);
        assert_eq!(verified["updated_at"], included["updated_at"], "{verified}");
    }
    app.mine(1).await;
    app.clock.advance_ms(1_000);
    app.settle().await;
    let confirmed = app.get(&path, &token).await.body;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    assert_eq!(confirmed["confirmations"], required);
    assert_ne!(confirmed["updated_at"], included["updated_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_caps_deny_with_the_rule_and_release_nothing() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("capped").await;
    app.fund(&agent_id, "100", "0.01").await;
    let token = app
        .credential(
            &agent_id,
            json!({"max_per_payment": "10", "daily_limit": "15"}),
        )
        .await;
    let to = recipient(0x77);

    let over_cap = app.pay(&token, to, "10.000001", "a").await;
    assert_eq!(over_cap.status, StatusCode::FORBIDDEN);
    assert_eq!(over_cap.body["error"]["code"], "policy_denied");
    assert_eq!(over_cap.body["error"]["rule"], "max_per_payment");
    assert_eq!(over_cap.body["payment"]["status"], "rejected");

    assert_eq!(
        app.pay(&token, to, "10", "b").await.status,
        StatusCode::ACCEPTED
    );
    let over_day = app.pay(&token, to, "5.000001", "c").await;
    assert_eq!(
        over_day.body["error"]["rule"], "daily_limit",
        "{}",
        over_day.body
    );
    let checks = over_day.body["payment"]["decision"]["checks"]
        .as_array()
        .unwrap();
    let daily = checks.iter().find(|c| c["rule"] == "daily_limit").unwrap();
    assert_eq!(daily["passed"], false);
    assert_eq!(
        daily["detail"],
        "held 10 in the last 24h + amount 5.000001 <= limit 15"
    );
    assert_eq!(
        app.pay(&token, to, "5", "d").await.status,
        StatusCode::ACCEPTED
    );

    // A replay of the denial is the same 403; the same key with another body is a conflict.
    let replay = app.pay(&token, to, "10.000001", "a").await;
    assert_eq!(replay.status, StatusCode::FORBIDDEN);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body["payment"]["id"], over_cap.body["payment"]["id"]);
    let reused = app.pay(&token, to, "1", "a").await;
    assert_eq!(reused.status, StatusCode::CONFLICT);
    assert_eq!(reused.body["error"]["code"], "idempotency_key_reused");

    // The rolling window: a day later the budget is free again.
    app.clock.advance_ms(24 * 60 * 60 * 1000 + 1);
    assert_eq!(
        app.pay(&token, to, "10", "e").await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_without_usdc_fails_before_signing_and_uses_no_nonce() {
    let app = TestApp::spawn().await;
    let (agent_id, address) = app.create_agent("broke").await;
    app.devnet.set_eth_balance(address, "1").await.unwrap();
    let token = app.credential(&agent_id, json!({})).await;
    let response = app.pay(&token, recipient(0x11), "5", "k").await;
    let id = response.body["id"].as_str().unwrap().to_string();
    let report = app.settle().await;
    assert_eq!(report.failed, 1);
    let payment = app.get(&format!("/v1/payments/{id}"), &token).await.body;
    assert_eq!(payment["status"], "failed");
    assert_eq!(payment["failure_reason"], "insufficient_usdc");
    assert!(payment["nonce"].is_null());
    // The failure released the hold: it no longer counts as spent.
    let agent = app
        .get(&format!("/v1/agents/{agent_id}"), &app.admin_token)
        .await
        .body;
    assert_eq!(agent["spent_24h"], "0");
}

/// A burst the wallet's USDC covers only in part: the payments the balance covers are signed,
/// in order; the one it no longer covers fails before signing (`insufficient_usdc`, no nonce)
/// instead of reverting on chain and burning gas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_balance_fails_the_uncovered_payment_before_signing() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("short").await;
    app.fund(&agent, "10", "0.05").await;
    let token = app.credential(&agent, json!({})).await;
    let mut ids = Vec::new();
    for key in ["b1", "b2", "b3"] {
        let response = app.pay(&token, recipient(0x21), "4", key).await;
        ids.push(response.body["id"].as_str().unwrap().to_string());
    }
    let report = app.settle().await;
    assert_eq!(report.signed, 2, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    let third = app
        .get(&format!("/v1/payments/{}", ids[2]), &token)
        .await
        .body;
    assert_eq!(third["status"], "failed");
    assert_eq!(third["failure_reason"], "insufficient_usdc");
    assert!(third["nonce"].is_null());
    app.mine(4).await;
    app.settle().await;
    for id in &ids[..2] {
        let payment = app.get(&format!("/v1/payments/{id}"), &token).await.body;
        assert_eq!(payment["status"], "confirmed", "{payment}");
    }
}

/// Each wallet is a lane: one pass signs a whole burst of every wallet at consecutive nonces,
/// stores it and broadcasts it, and one block takes all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_signs_and_sends_every_wallets_burst_at_consecutive_nonces() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    for name in ["lane-a", "lane-b"] {
        let (agent, _) = app.create_agent(name).await;
        app.fund(&agent, "100", "0.05").await;
        tokens.push(app.credential(&agent, json!({})).await);
    }
    let mut ids = Vec::new();
    for index in 0..24u8 {
        let token = &tokens[usize::from(index % 2)];
        let amount = format!("0.{:02}", index + 1);
        ids.push(
            app.pay_id(
                token,
                recipient(0x40 + index),
                &amount,
                &format!("burst-{index}"),
            )
            .await,
        );
    }
    let report = app.settle().await;
    assert_eq!((report.signed, report.broadcast), (24, 24), "{report:?}");
    let mut nonces: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    for (index, id) in ids.iter().enumerate() {
        let payment = crate::support::payment(&app, id).await;
        assert_eq!(payment["status"], "submitted", "{payment}");
        nonces[index % 2].push(payment["nonce"].as_i64().unwrap());
    }
    for lane in &mut nonces {
        lane.sort_unstable();
        assert_eq!(
            *lane,
            (0..12).collect::<Vec<i64>>(),
            "consecutive, none twice"
        );
    }
    app.mine(1).await;
    app.settle().await;
    let mut blocks = std::collections::BTreeSet::new();
    for id in &ids {
        let payment = crate::support::payment(&app, id).await;
        assert_eq!(payment["status"], "included", "{payment}");
        blocks.insert(payment["block_number"].as_i64().unwrap());
    }
    assert_eq!(blocks.len(), 1, "one block took the whole burst");
    app.settle_to_confirmed(&ids).await;
}

/// A wallet keeps at most `BURSAR_LANE_WINDOW` transactions in the node's pool: a burst beyond
/// it waits queued, in order, and each block that takes some makes room for as many more. Every
/// payment is still paid once, at consecutive nonces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_keeps_at_most_its_lane_window_in_the_pool() {
    let app = TestApp::spawn_with(&[("BURSAR_LANE_WINDOW", "2")]).await;
    let (agent, _) = app.create_agent("windowed").await;
    app.fund(&agent, "100", "0.05").await;
    let token = app.credential(&agent, json!({})).await;
    let mut ids = Vec::new();
    for index in 0..5u8 {
        let key = format!("window-{index}");
        ids.push(
            app.pay_id(&token, recipient(0x60 + index), "0.25", &key)
                .await,
        );
    }
    let report = app.settle().await;
    assert_eq!((report.signed, report.broadcast), (2, 2), "{report:?}");
    assert_eq!(
        statuses(&app, &ids).await,
        ["submitted", "submitted", "queued", "queued", "queued"]
    );
    // Nothing was mined: the pool still holds two, so nothing more is signed.
    assert_eq!(app.settle().await.signed, 0);
    app.mine(1).await;
    let report = app.settle().await;
    assert_eq!(report.signed, 2, "{report:?}");
    assert_eq!(
        statuses(&app, &ids).await,
        ["included", "included", "submitted", "submitted", "queued"]
    );
    app.mine(1).await;
    assert_eq!(app.settle().await.signed, 1);
    app.mine(1).await;
    app.settle().await;
    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let mut nonces = Vec::new();
    for id in &ids {
        let payment = crate::support::payment(&app, id).await;
        assert_eq!(payment["status"], "confirmed", "{payment}");
        nonces.push(payment["nonce"].as_i64().unwrap());
    }
    assert_eq!(nonces, [0, 1, 2, 3, 4], "in queue order, none twice");
}

/// The status of each payment, in order.
async fn statuses(app: &TestApp, ids: &[String]) -> Vec<String> {
    let mut statuses = Vec::new();
    for id in ids {
        let payment = crate::support::payment(app, id).await;
        statuses.push(payment["status"].as_str().unwrap().to_string());
    }
    statuses
}
