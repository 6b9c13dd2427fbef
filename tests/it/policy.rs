//! The credential is the whole of an agent's power: every policy rule, atomic budgets under
//! concurrency, exact idempotency, human approval, manual capture, expiry, revocation and the
//! kill switch, end to end through HTTP against anvil with Circle's USDC.

use crate::support::{TestApp, recipient};
use bursar::domain::Amount;
use bursar::payments::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const HOUR_MS: i64 = 60 * 60 * 1000;

fn id(response: &crate::support::Response) -> String {
    response.body["id"]
        .as_str()
        .or(response.body["payment"]["id"].as_str())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_decides_with_its_name() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("rules").await;
    let allowed = recipient(0xa1);
    let cases: Vec<(Value, Value, u16, &str, &str)> = vec![
        // (policy, payment fields, HTTP status, status, deciding rule)
        (
            json!({"total_limit": "10"}),
            json!({"amount": "10.000001"}),
            403,
            "rejected",
            "total_limit",
        ),
        (
            json!({"allowed_recipients": [allowed.to_string()]}),
            json!({"to": recipient(0xb2).to_string()}),
            403,
            "rejected",
            "allowed_recipients",
        ),
        (
            json!({"allowed_recipients": [allowed.to_string().to_lowercase()]}),
            json!({}),
            202,
            "queued",
            "policy",
        ),
        (
            json!({"require_approval_above": "5"}),
            json!({"amount": "5.000001"}),
            202,
            "pending_approval",
            "require_approval_above",
        ),
        (
            json!({"require_approval_above": "5"}),
            json!({"amount": "5"}),
            202,
            "queued",
            "policy",
        ),
        (
            json!({"min_confidence": 0.85}),
            json!({"confidence": 0.84}),
            202,
            "pending_approval",
            "min_confidence",
        ),
        (
            json!({"min_confidence": 0.85}),
            json!({}),
            202,
            "pending_approval",
            "min_confidence",
        ),
        (
            json!({"min_confidence": 0.85}),
            json!({"confidence": 0.85}),
            202,
            "queued",
            "policy",
        ),
        (
            json!({"max_per_payment": "1", "require_approval_above": "0.5"}),
            json!({"amount": "2"}),
            403,
            "rejected",
            "max_per_payment",
        ),
    ];
    for (i, (policy, fields, http, status, rule)) in cases.into_iter().enumerate() {
        let token = app.credential(&agent, policy.clone()).await;
        let mut body = json!({"to": allowed.to_string(), "amount": "1", "currency": "USDC"});
        for (key, value) in fields.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&token),
                Some(body),
                Some(&format!("k{i}")),
            )
            .await;
        assert_eq!(
            response.status.as_u16(),
            http,
            "case {i} {policy}: {}",
            response.body
        );
        let payment = if http == 403 {
            &response.body["payment"]
        } else {
            &response.body
        };
        assert_eq!(payment["status"], status, "case {i}");
        assert_eq!(payment["decision"]["rule"], rule, "case {i}");
        if http == 403 {
            assert_eq!(response.body["error"]["rule"], rule);
        }
    }

    // The rate limit counts payments of the last minute, and frees up after it.
    let token = app
        .credential(&agent, json!({"max_payments_per_minute": 2}))
        .await;
    for key in ["r1", "r2"] {
        assert_eq!(
            app.pay(&token, allowed, "1", key).await.status,
            StatusCode::ACCEPTED
        );
    }
    let limited = app.pay(&token, allowed, "1", "r3").await;
    assert_eq!(limited.body["error"]["rule"], "max_payments_per_minute");
    app.clock.advance_ms(60_001);
    assert_eq!(
        app.pay(&token, allowed, "1", "r4").await.status,
        StatusCode::ACCEPTED
    );

    // "Why was this allowed?" is answered from the audit log alone.
    let events = app
        .get(
            &format!("/v1/audit?agent_id={agent}&limit=500"),
            &app.admin_token,
        )
        .await
        .body;
    let decided: Vec<&Value> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "payment_decided")
        .collect();
    assert_eq!(decided.len(), 13);
    assert!(decided.iter().all(|e| {
        e["detail"]["decision"]["checks"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    }));
}

/// 40 concurrent payments of 5 USDC against a cap of 100 accept exactly 20, whatever the timing.
async fn race(app: &TestApp, token: &str, prefix: &str) -> Vec<String> {
    let to = recipient(0xc3);
    let requests = (0..40).map(|i| {
        let key = format!("{prefix}-{i}");
        async move { app.pay(token, to, "5", &key).await }
    });
    let responses = futures_util::future::join_all(requests).await;
    let accepted: Vec<String> = responses
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .map(id)
        .collect();
    let denied = responses
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((accepted.len(), denied), (20, 20), "{prefix}");
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_never_exceed_a_cap() {
    let app = TestApp::spawn().await;
    // The daily cap, settled on chain: exactly 100 USDC arrives.
    let (agent, address) = app.create_agent("daily-racer").await;
    app.fund(&agent, "300", "0.1").await;
    let daily = app.credential(&agent, json!({"daily_limit": "100"})).await;
    let accepted = race(&app, &daily, "daily").await;
    app.settle_to_confirmed(&accepted).await;
    assert_eq!(
        app.usdc_balance(recipient(0xc3)).await,
        Amount::parse_positive("100").unwrap()
    );
    assert_eq!(
        app.usdc_balance(address).await,
        Amount::parse_positive("200").unwrap()
    );

    // The lifetime budget and the rate limit hold under the same race.
    let (other, _) = app.create_agent("total-racer").await;
    let total = app.credential(&other, json!({"total_limit": "100"})).await;
    race(&app, &total, "total").await;
    let rate = app
        .credential(&other, json!({"max_payments_per_minute": 20}))
        .await;
    race(&app, &rate, "rate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_payment() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("retry-loop").await;
    let token = app.credential(&agent, json!({"daily_limit": "1000"})).await;
    let to = recipient(0xd4);
    let responses =
        futures_util::future::join_all((0..20).map(|_| app.pay(&token, to, "7", "same-key"))).await;
    let ids: std::collections::HashSet<String> = responses.iter().map(id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        responses
            .iter()
            .filter(|r| r.status == StatusCode::ACCEPTED)
            .count(),
        1
    );
    assert!(
        responses
            .iter()
            .filter(|r| r.status == StatusCode::OK)
            .all(|r| r.headers["idempotent-replayed"] == "true")
    );
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments")
        .fetch_one(&app.database().await)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let agent_view = app
        .get(&format!("/v1/agents/{agent}"), &app.admin_token)
        .await
        .body;
    assert_eq!(agent_view["spent_24h"], "7");
    // Same key, different body.
    let changed = app.pay(&token, to, "8", "same-key").await;
    assert_eq!(
        (changed.status, changed.body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_key_reused"))
    );
    // Keys are scoped to the agent: another agent may use the same key.
    let (other, _) = app.create_agent("other").await;
    let other_token = app.credential(&other, json!({})).await;
    assert_eq!(
        app.pay(&other_token, to, "8", "same-key").await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn humans_approve_and_reject_and_time_expires() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("needs-a-human").await;
    app.fund(&agent, "100", "0.01").await;
    let token = app
        .credential(
            &agent,
            json!({"require_approval_above": "10", "daily_limit": "100"}),
        )
        .await;
    let approver = app
        .post(
            "/v1/tokens",
            &app.admin_token,
            json!({"role": "approver", "name": "cfo"}),
        )
        .await;
    let approver_id = approver.body["id"].as_str().unwrap().to_string();
    let approver = approver.body["token"].as_str().unwrap().to_string();
    let to = recipient(0xe5);

    let big = app.pay(&token, to, "40", "big").await;
    assert_eq!(big.body["status"], "pending_approval");
    let big_id = id(&big);
    // It holds budget while it waits: 70 more would exceed the daily 100.
    assert_eq!(
        app.pay(&token, to, "70", "too-much").await.body["error"]["rule"],
        "daily_limit"
    );

    // Approvers see it; an agent can never approve.
    let pending = app.get("/v1/payments", &approver).await.body;
    assert_eq!(pending["data"][0]["id"], big_id.as_str());
    let by_agent = app
        .post(&format!("/v1/payments/{big_id}/approve"), &token, json!({}))
        .await;
    assert_eq!(by_agent.status, StatusCode::FORBIDDEN);
    let auditor = app.staff_token("auditor").await;
    assert_eq!(
        app.post(
            &format!("/v1/payments/{big_id}/approve"),
            &auditor,
            json!({})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );

    let approved = app
        .post(
            &format!("/v1/payments/{big_id}/approve"),
            &approver,
            json!({"note": "invoice 77 checked"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "queued");
    let again = app
        .post(
            &format!("/v1/payments/{big_id}/approve"),
            &approver,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    app.settle_to_confirmed(std::slice::from_ref(&big_id)).await;
    assert_eq!(
        app.usdc_balance(to).await,
        Amount::parse_positive("40").unwrap()
    );
    let events = app
        .get(&format!("/v1/audit?payment_id={big_id}"), &app.admin_token)
        .await
        .body;
    let approval = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "payment_approved")
        .unwrap()
        .clone();
    assert_eq!(approval["actor"], format!("approver:{approver_id}"));
    assert_eq!(approval["detail"]["note"], "invoice 77 checked");

    // Rejection cancels and releases the hold.
    let second = id(&app.pay(&token, to, "50", "second").await);
    let rejected = app
        .post(
            &format!("/v1/payments/{second}/reject"),
            &approver,
            json!({"reason": "unknown vendor"}),
        )
        .await;
    assert_eq!(rejected.body["status"], "cancelled");
    assert_eq!(
        app.get(&format!("/v1/agents/{agent}"), &app.admin_token)
            .await
            .body["spent_24h"],
        "40"
    );

    // An approval nobody acts on expires after 24 hours (the injectable clock, not a sleep).
    let third = id(&app.pay(&token, to, "20", "third").await);
    app.clock.advance_ms(24 * HOUR_MS - 1);
    assert_eq!(app.settle().await.expired, 0);
    app.clock.advance_ms(1);
    assert_eq!(app.settle().await.expired, 1);
    assert_eq!(
        app.get(&format!("/v1/payments/{third}"), &token).await.body["status"],
        "expired"
    );
    assert_eq!(
        app.post(
            &format!("/v1/payments/{third}/approve"),
            &approver,
            json!({})
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_capture_holds_then_sends_part_or_releases() {
    let app = TestApp::spawn().await;
    let (agent, address) = app.create_agent("two-phase").await;
    app.fund(&agent, "100", "0.01").await;
    let token = app.credential(&agent, json!({"daily_limit": "30"})).await;
    let to = recipient(0xf6);
    let hold = |key: &'static str, amount: &'static str| {
        let body = json!({"to": to.to_string(), "amount": amount, "currency": "USDC", "capture": "manual"});
        app.request(
            Method::POST,
            "/v1/payments",
            Some(&token),
            Some(body),
            Some(key),
        )
    };

    let first = hold("h1", "20").await;
    assert_eq!(
        (first.status, first.body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("authorized"))
    );
    let first = id(&first);
    // The hold counts against the budget, and nothing is sent.
    assert_eq!(hold("h2", "11").await.body["error"]["rule"], "daily_limit");
    assert_eq!(app.settle().await.signed, 0);

    // Capture more than authorized is refused; a partial capture sends exactly that.
    let over = app
        .post(
            &format!("/v1/payments/{first}/capture"),
            &token,
            json!({"amount": "20.000001"}),
        )
        .await;
    assert_eq!(
        (over.status, over.body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("amount"))
    );
    let (other_agent, _) = app.create_agent("stranger").await;
    let stranger = app.credential(&other_agent, json!({})).await;
    assert_eq!(
        app.post(
            &format!("/v1/payments/{first}/capture"),
            &stranger,
            json!({})
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let captured = app
        .post(
            &format!("/v1/payments/{first}/capture"),
            &token,
            json!({"amount": "7.25"}),
        )
        .await;
    assert_eq!(
        (
            captured.body["status"].as_str(),
            captured.body["amount"].as_str()
        ),
        (Some("queued"), Some("7.25"))
    );
    app.settle_to_confirmed(std::slice::from_ref(&first)).await;
    assert_eq!(
        app.usdc_balance(to).await,
        Amount::parse_positive("7.25").unwrap()
    );
    assert_eq!(
        app.usdc_balance(address).await,
        Amount::parse_positive("92.75").unwrap()
    );
    // The uncaptured remainder was released: 22.75 fits under 30 now.
    let second = hold("h3", "22.75").await;
    assert_eq!(second.body["status"], "authorized", "{}", second.body);

    // Void releases the hold; a voided hold cannot be captured.
    let second = id(&second);
    let voided = app
        .post(&format!("/v1/payments/{second}/void"), &token, json!({}))
        .await;
    assert_eq!(voided.body["status"], "cancelled");
    assert_eq!(
        app.post(&format!("/v1/payments/{second}/capture"), &token, json!({}))
            .await
            .status,
        StatusCode::CONFLICT
    );

    // An uncaptured hold expires after an hour.
    let third = id(&hold("h4", "5").await);
    app.clock.advance_ms(HOUR_MS);
    let late = app
        .post(&format!("/v1/payments/{third}/capture"), &token, json!({}))
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert_eq!(
        app.get(&format!("/v1/payments/{third}"), &token).await.body["status"],
        "expired"
    );
    assert_eq!(
        app.usdc_balance(to).await,
        Amount::parse_positive("7.25").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_revocation_and_freeze_refuse_the_next_request() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("short-lived").await;
    let expires = bursar::api::time(app.clock.now_ms() + HOUR_MS);
    let created = app
        .post(
            &format!("/v1/agents/{agent}/credentials"),
            &app.admin_token,
            json!({"name": "1h", "expires_at": expires}),
        )
        .await;
    let token = created.body["token"].as_str().unwrap().to_string();
    let to = recipient(0x17);
    assert_eq!(
        app.pay(&token, to, "1", "a").await.status,
        StatusCode::ACCEPTED
    );
    app.clock.advance_ms(HOUR_MS);
    assert_eq!(
        app.pay(&token, to, "1", "b").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/payments", &token).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Freeze: queued, pending and authorized payments are cancelled and every credential is refused.
    let token = app
        .credential(&agent, json!({"require_approval_above": "50"}))
        .await;
    let second = app.credential(&agent, json!({})).await;
    let queued = id(&app.pay(&token, to, "1", "q").await);
    let pending = id(&app.pay(&token, to, "60", "p").await);
    let frozen = app
        .post(
            &format!("/v1/agents/{agent}/freeze"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(frozen.body["status"], "frozen");
    for payment in [&queued, &pending] {
        let body = app
            .get(&format!("/v1/payments/{payment}"), &app.admin_token)
            .await
            .body;
        assert_eq!(body["status"], "cancelled");
    }
    for credential in [&token, &second] {
        let refused = app.pay(credential, to, "1", "after-freeze").await;
        assert_eq!(
            (refused.status, refused.body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("agent_frozen"))
        );
    }
    assert_eq!(
        app.settle().await.signed,
        0,
        "nothing of a frozen agent is signed"
    );
    let unfrozen = app
        .post(
            &format!("/v1/agents/{agent}/unfreeze"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(unfrozen.body["status"], "active");
    assert_eq!(
        app.pay(&second, to, "1", "after-unfreeze").await.status,
        StatusCode::ACCEPTED
    );
    let kinds: Vec<String> = app
        .get(&format!("/v1/audit?agent_id={agent}"), &app.admin_token)
        .await
        .body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.contains(&"agent_frozen".to_string())
            && kinds.contains(&"agent_unfrozen".to_string())
    );
}

/// `POST /v1/payments` with a manual capture and extra fields.
async fn pay_with(
    app: &TestApp,
    token: &str,
    key: &str,
    fields: Value,
) -> crate::support::Response {
    let mut body = json!({"to": recipient(0xc1).to_string(), "amount": "10", "currency": "USDC"});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.request(
        Method::POST,
        "/v1/payments",
        Some(token),
        Some(body),
        Some(key),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_manual_capture_becomes_a_hold_timed_from_the_approval() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("approve-hold").await;
    app.fund(&agent, "100", "1").await;
    let token = app
        .credential(&agent, json!({"require_approval_above": "5"}))
        .await;
    let approver = app.staff_token("approver").await;
    let created = pay_with(&app, &token, "m1", json!({"capture": "manual"})).await;
    assert_eq!(
        created.body["status"], "pending_approval",
        "{}",
        created.body
    );
    let id = id(&created);

    // Approved 50 minutes later; the hold lives an hour from the approval, not from creation.
    app.clock.advance_ms(50 * 60 * 1000);
    let approved = app
        .post(
            &format!("/v1/payments/{id}/approve"),
            &approver,
            json!({"note": "ok"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "authorized");
    app.clock.advance_ms(30 * 60 * 1000);
    let captured = app
        .post(
            &format!("/v1/payments/{id}/capture"),
            &token,
            json!({"amount": "8"}),
        )
        .await;
    assert_eq!(captured.status, StatusCode::OK, "{}", captured.body);
    assert_eq!(captured.body["status"], "queued");
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;

    // A second approval of the same payment is a conflict, never a 500.
    let again = app
        .post(
            &format!("/v1/payments/{id}/approve"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_window_counts_money_from_when_it_was_committed() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("window").await;
    let token = app.credential(&agent, json!({"daily_limit": "10"})).await;

    // A full daily limit held at T0 and captured at T0+59m counts until T0+24h59m.
    let held = pay_with(&app, &token, "w1", json!({"capture": "manual"})).await;
    assert_eq!(held.body["status"], "authorized", "{}", held.body);
    app.clock.advance_ms(59 * 60 * 1000);
    let captured = app
        .post(
            &format!("/v1/payments/{}/capture", id(&held)),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(captured.status, StatusCode::OK, "{}", captured.body);
    app.clock
        .advance_ms(24 * HOUR_MS - 59 * 60 * 1000 + 60 * 1000); // T0+24h01m
    let early = pay_with(&app, &token, "w2", json!({"amount": "1"})).await;
    assert_eq!(early.status, StatusCode::FORBIDDEN, "{}", early.body);
    assert_eq!(early.body["error"]["rule"], "daily_limit");
    app.clock.advance_ms(HOUR_MS);
    let later = pay_with(&app, &token, "w3", json!({"amount": "1"})).await;
    assert_eq!(later.status, StatusCode::ACCEPTED, "{}", later.body);

    // An approval that lands 20 hours late counts from the approval.
    let approvals = app
        .credential(
            &agent,
            json!({"daily_limit": "10", "require_approval_above": "5"}),
        )
        .await;
    let waiting = pay_with(&app, &approvals, "w4", json!({"amount": "9"})).await;
    assert_eq!(waiting.body["status"], "pending_approval");
    app.clock.advance_ms(20 * HOUR_MS);
    let approved = app
        .post(
            &format!("/v1/payments/{}/approve", id(&waiting)),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    app.clock.advance_ms(5 * HOUR_MS);
    let over = pay_with(&app, &approvals, "w5", json!({"amount": "2"})).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN, "{}", over.body);
    assert_eq!(over.body["error"]["rule"], "daily_limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_rechecks_the_hard_rules_and_a_revocation_cancels_holds() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("recheck").await;
    let token = app
        .credential(
            &agent,
            json!({"max_payments_per_minute": 2, "require_approval_above": "5"}),
        )
        .await;
    let waiting = pay_with(&app, &token, "r1", json!({"amount": "10"})).await;
    assert_eq!(waiting.body["status"], "pending_approval");
    // Two minutes later the agent makes two payments in one minute: the rate the approval
    // would exceed if it sent the held payment now.
    app.clock.advance_ms(2 * 60 * 1000);
    for key in ["r2", "r3"] {
        let small = pay_with(&app, &token, key, json!({"amount": "1"})).await;
        assert_eq!(small.status, StatusCode::ACCEPTED, "{}", small.body);
    }
    let refused = app
        .post(
            &format!("/v1/payments/{}/approve", id(&waiting)),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "policy_denied");
    assert_eq!(refused.body["error"]["rule"], "max_payments_per_minute");
    let still = app
        .get(&format!("/v1/payments/{}", id(&waiting)), &app.admin_token)
        .await;
    assert_eq!(still.body["status"], "pending_approval");

    // Revoking the credential cancels its live holds at once, releasing their budget.
    app.clock.advance_ms(2 * 60 * 1000);
    let hold = pay_with(
        &app,
        &token,
        "r4",
        json!({"amount": "0.5", "capture": "manual"}),
    )
    .await;
    assert_eq!(hold.body["status"], "authorized", "{}", hold.body);
    let credential_id = hold.body["credential_id"].as_str().unwrap().to_string();
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/v1/credentials/{credential_id}"),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.body);
    for cancelled in [id(&waiting), id(&hold)] {
        let body = app
            .get(&format!("/v1/payments/{cancelled}"), &app.admin_token)
            .await
            .body;
        assert_eq!(body["status"], "cancelled", "{body}");
        assert_eq!(body["failure_reason"], "credential_revoked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_credential_releases_its_holds_and_keys_are_scoped_to_the_credential() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("expiry").await;
    let expires = chrono::DateTime::from_timestamp_millis(app.clock.now_ms() + HOUR_MS / 2)
        .unwrap()
        .to_rfc3339();
    let created = app
        .post(
            &format!("/v1/agents/{agent}/credentials"),
            &app.admin_token,
            json!({"name": "short", "policy": {}, "expires_at": expires}),
        )
        .await;
    let token = created.body["token"].as_str().unwrap().to_string();
    let other = app.credential(&agent, json!({})).await;
    let hold = pay_with(&app, &token, "same-key", json!({"capture": "manual"})).await;
    assert_eq!(hold.body["status"], "authorized");
    // The same key under another credential of the same agent is a different payment.
    let separate = pay_with(&app, &other, "same-key", json!({"amount": "3"})).await;
    assert_eq!(separate.status, StatusCode::ACCEPTED, "{}", separate.body);
    assert_ne!(id(&separate), id(&hold));

    // Still before the hold timeout (1 h), but after the credential's expiry (30 min).
    app.clock.advance_ms(HOUR_MS / 2 + 60 * 1000);
    app.settle().await;
    let body = app
        .get(&format!("/v1/payments/{}", id(&hold)), &app.admin_token)
        .await
        .body;
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(body["failure_reason"], "credential_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_and_treasury_read_only_their_rows() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("rows").await;
    app.fund(&agent, "50", "0.1").await;
    let token = app
        .credential(&agent, json!({"require_approval_above": "5"}))
        .await;
    let plain = pay_with(&app, &token, "p1", json!({"amount": "1"})).await;
    let waiting = pay_with(&app, &token, "p2", json!({"amount": "9"})).await;
    let approver = app.staff_token("approver").await;
    let treasury = app.staff_token("treasury").await;

    let get = |token: String, id: String| {
        let app = &app;
        async move { app.get(&format!("/v1/payments/{id}"), &token).await.status }
    };
    assert_eq!(get(approver.clone(), id(&waiting)).await, StatusCode::OK);
    assert_eq!(
        get(approver.clone(), id(&plain)).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(treasury.clone(), id(&plain)).await,
        StatusCode::NOT_FOUND
    );
    let listed = app.get("/v1/payments", &treasury).await.body;
    let kinds: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| *k == "funding" || *k == "sweep"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_denied_writes_is_rate_limited_per_credential() {
    let app = TestApp::spawn_with(&[
        ("BURSAR_WRITE_RATE_PER_SECOND", "1"),
        ("BURSAR_WRITE_RATE_BURST", "3"),
    ])
    .await;
    let (agent, _) = app.create_agent("flood").await;
    let flooder = app
        .credential(&agent, json!({"max_per_payment": "1"}))
        .await;
    let other = app.credential(&agent, json!({})).await;
    for i in 0..3 {
        let denied = pay_with(&app, &flooder, &format!("f{i}"), json!({"amount": "5"})).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    }
    let limited = pay_with(&app, &flooder, "f3", json!({"amount": "5"})).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1, "{retry}");
    // The limited request stored nothing; the denials before it are audited.
    let stored = app
        .get(
            &format!("/v1/payments?agent_id={agent}&status=rejected"),
            &app.admin_token,
        )
        .await;
    assert_eq!(stored.body["data"].as_array().unwrap().len(), 3);
    // Reads are not limited, and another credential has its own budget of requests.
    let read = app.get("/v1/payments", &flooder).await;
    assert_eq!(read.status, StatusCode::OK);
    let fine = pay_with(&app, &other, "o1", json!({"amount": "1"})).await;
    assert_eq!(fine.status, StatusCode::ACCEPTED, "{}", fine.body);
}
