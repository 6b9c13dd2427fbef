//! Spending scopes: a research agent's task with a budget, an explore phase that gates premium
//! spending, a human-approved move to commit, tiers, compensation when the task fails, the proof
//! trace, and a scope budget that holds under concurrency.

use crate::support::{TestApp, recipient, usdc};
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn scoped_pay(
    app: &TestApp,
    token: &str,
    scope: &str,
    amount: &str,
    key: &str,
    capture: &str,
) -> crate::support::Response {
    app.request(
        Method::POST,
        "/v1/payments",
        Some(token),
        Some(
            json!({"to": recipient(0x71).to_string(), "amount": amount, "currency": "USDC",
            "scope_id": scope, "capture": capture}),
        ),
        Some(key),
    )
    .await
}

#[tokio::test]
async fn a_research_task_explores_commits_with_approval_fails_and_leaves_a_trace() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("researcher").await;
    let token = app
        .credential(
            &agent_id,
            json!({"max_per_payment": "5", "daily_limit": "100"}),
        )
        .await;
    app.fund(&agent_id, "50", "0.01").await;
    let approver = app.staff_token("approver").await;

    // A scope may only narrow its credential.
    let wider = app
        .post(
            "/v1/scopes",
            &token,
            json!({"name": "t", "budget": "3", "phases": {"explore": {"max_per_payment": "10"}}}),
        )
        .await;
    assert_eq!(wider.status, StatusCode::BAD_REQUEST, "{}", wider.body);
    assert_eq!(
        wider.body["error"]["field"],
        "phases.explore.max_per_payment"
    );
    let wider = app
        .post(
            "/v1/scopes",
            &token,
            json!({"name": "t", "budget": "3", "tiers": [{"daily_limit": "500"}]}),
        )
        .await;
    assert_eq!(
        wider.body["error"]["field"], "tiers[0].daily_limit",
        "{}",
        wider.body
    );

    let opened = app
        .post(
            "/v1/scopes",
            &token,
            json!({
                "name": "market research", "task_ref": "task-17", "budget": "3",
                "phases": {"explore": {"max_per_payment": "0.05", "budget": "1"}, "commit": {}},
                "phase_change_requires_approval": true,
                "tiers": [{"up_to": "0.10", "daily_limit": "0.5"}, {"daily_limit": "3"}],
            }),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    assert_eq!(opened.body["phase"], "explore", "{}", opened.body);
    assert_eq!(opened.body["phases"][0]["name"], "explore");
    assert_eq!(opened.body["phases"][1]["name"], "commit");
    let scope = opened.body["id"].as_str().unwrap().to_string();
    assert!(scope.starts_with("scp_"));

    // Exploration: micro-payments pass; a premium call is denied naming the phase.
    let mut paid = Vec::new();
    for i in 0..3 {
        let micro = scoped_pay(
            &app,
            &token,
            &scope,
            "0.05",
            &format!("micro-{i}"),
            "automatic",
        )
        .await;
        assert_eq!(micro.status, StatusCode::ACCEPTED, "{}", micro.body);
        paid.push(micro.body["id"].as_str().unwrap().to_string());
    }
    let decided = app
        .get(&format!("/v1/payments/{}", paid[0]), &token)
        .await
        .body;
    let checks: Vec<String> = decided["decision"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rule"].as_str().unwrap().to_string())
        .collect();
    for rule in [
        "max_per_payment",
        "daily_limit",
        "scope_budget",
        "phase",
        "tier",
    ] {
        assert!(
            checks.iter().any(|c| c == rule),
            "{rule} not among {checks:?}"
        );
    }
    let premium = scoped_pay(&app, &token, &scope, "2", "premium-1", "automatic").await;
    assert_eq!(premium.status, StatusCode::FORBIDDEN, "{}", premium.body);
    assert_eq!(premium.body["error"]["rule"], "phase");

    // Moving to commit needs a human: the agent's request waits, the approver applies it.
    let asked = app
        .post(
            &format!("/v1/scopes/{scope}/phase"),
            &token,
            json!({"phase": "commit", "reason": "plan is ready: buy the premium dataset"}),
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    assert_eq!(asked.body["phase"], "explore");
    assert_eq!(asked.body["pending_phase"], "commit");
    let still = scoped_pay(&app, &token, &scope, "2", "premium-2", "automatic").await;
    assert_eq!(still.body["error"]["rule"], "phase");
    let approved = app
        .post(
            &format!("/v1/scopes/{scope}/phase"),
            &approver,
            json!({"phase": "commit", "reason": "approved by research lead"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["phase"], "commit");
    let back = app
        .post(
            &format!("/v1/scopes/{scope}/phase"),
            &token,
            json!({"phase": "explore"}),
        )
        .await;
    assert_eq!(
        back.status,
        StatusCode::CONFLICT,
        "phases move forward only"
    );

    let premium = scoped_pay(&app, &token, &scope, "2", "premium-3", "automatic").await;
    assert_eq!(premium.status, StatusCode::ACCEPTED, "{}", premium.body);
    paid.push(premium.body["id"].as_str().unwrap().to_string());
    // Over the scope's budget (0.15 + 2 held): denied naming the scope budget.
    let over = scoped_pay(&app, &token, &scope, "0.9", "over-budget", "automatic").await;
    assert_eq!(over.body["error"]["rule"], "scope_budget", "{}", over.body);
    let hold = scoped_pay(&app, &token, &scope, "0.5", "hold-1", "manual").await;
    assert_eq!(hold.body["status"], "authorized", "{}", hold.body);
    let hold_id = hold.body["id"].as_str().unwrap().to_string();
    app.settle_to_confirmed(&paid).await;

    let view = app.get(&format!("/v1/scopes/{scope}"), &token).await.body;
    assert_eq!(view["spent"], "2.15", "{view}");
    assert_eq!(view["held"], "0.5");
    let statuses: Vec<&str> = view["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "confirmed").count(),
        4,
        "{view}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "rejected").count(),
        3,
        "{view}"
    );

    // Finance hears of the close by webhook.
    let hook = app
        .post(
            "/v1/webhooks",
            &app.admin_token,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["scope.closed"]}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let hook_id = hook.body["id"].as_str().unwrap().to_string();

    // Downstream failure: the scope closes as failed; the open hold is voided in the same step.
    let closed = app
        .post(
            &format!("/v1/scopes/{scope}/close"),
            &token,
            json!({"outcome": "failed", "reason": "the report generator crashed"}),
        )
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    assert_eq!(closed.body["scope"]["status"], "closed_failed");
    assert_eq!(closed.body["released"], json!([hold_id]));
    let wasted: Vec<String> = closed.body["spent_without_delivery"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(wasted.len(), 4);
    let after_close = app
        .get(&format!("/v1/scopes/{scope}"), &app.admin_token)
        .await
        .body;
    assert_eq!(
        after_close["spent_without_delivery"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        crate::support::payment(&app, &hold_id).await["status"],
        "cancelled"
    );
    let deliveries = app
        .get(
            &format!("/v1/webhooks/{hook_id}/deliveries"),
            &app.admin_token,
        )
        .await
        .body;
    let delivery = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "scope.closed")
        .unwrap_or_else(|| panic!("no scope.closed delivery: {deliveries}"))
        .clone();
    assert_eq!(delivery["status"], "pending");
    let capture = app
        .request(
            Method::POST,
            &format!("/v1/payments/{hold_id}/capture"),
            Some(&token),
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(capture.status, StatusCode::CONFLICT);
    let after = scoped_pay(&app, &token, &scope, "0.01", "after-close", "automatic").await;
    assert_eq!(after.status, StatusCode::CONFLICT, "{}", after.body);

    // The trace: every step in order, with figures, approvals and block hashes.
    let trace = app
        .get(&format!("/v1/scopes/{scope}/trace"), &token)
        .await
        .body;
    let events = trace["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let at = |kind: &str| {
        kinds
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_else(|| panic!("{kind} missing from {kinds:?}"))
    };
    assert_eq!(kinds[0], "scope_opened");
    assert!(at("scope_phase_requested") < at("scope_phase_changed"));
    assert_eq!(kinds.last(), Some(&"scope_closed"));
    let changed = &events[at("scope_phase_changed")];
    assert_eq!(changed["detail"]["reason"], "approved by research lead");
    assert!(
        changed["detail"]["approved_by"]
            .as_str()
            .unwrap()
            .starts_with("approver:")
    );
    let denial = events
        .iter()
        .find(|e| e["kind"] == "payment_decided" && e["detail"]["status"] == "rejected")
        .unwrap();
    assert_eq!(denial["detail"]["decision"]["rule"], "phase");
    assert!(
        denial["detail"]["decision"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["detail"].as_str().unwrap().contains("0.05"))
    );
    assert!(events.iter().any(|e| {
        e["kind"] == "payment_confirmed"
            && e["block_hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("0x"))
    }));
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");

    // The same chain is exportable from the audit log by scope.
    let export = app
        .http
        .get(format!(
            "{}/v1/audit/export?format=jsonl&scope_id={scope}",
            app.base_url
        ))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(export.lines().count(), events.len(), "{export}");
    let listed = app
        .get(
            &format!("/v1/audit?scope_id={scope}&limit=500"),
            &app.admin_token,
        )
        .await
        .body;
    assert_eq!(listed["data"].as_array().unwrap().len(), events.len());

    // Another agent's credential cannot see it.
    let (other, _) = app.create_agent("other").await;
    let other_token = app.credential(&other, json!({})).await;
    assert_eq!(
        app.get(&format!("/v1/scopes/{scope}"), &other_token)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_parallel_payments_never_overspend_a_scope_budget() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("parallel").await;
    let token = app.credential(&agent_id, json!({})).await;
    let opened = app
        .post(
            "/v1/scopes",
            &token,
            json!({"name": "burst", "budget": "1", "phases": {"run": {}}}),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let scope = opened.body["id"].as_str().unwrap().to_string();
    let requests = (0..40).map(|i| {
        let app = &app;
        let token = token.clone();
        let scope = scope.clone();
        async move {
            scoped_pay(
                app,
                &token,
                &scope,
                "0.03",
                &format!("burst-{i}"),
                "automatic",
            )
            .await
        }
    });
    let responses = futures_util::future::join_all(requests).await;
    let accepted = responses
        .iter()
        .filter(|r| r.status == StatusCode::ACCEPTED)
        .count();
    let denied = responses
        .iter()
        .filter(|r| r.status == StatusCode::FORBIDDEN && r.body["error"]["rule"] == "scope_budget")
        .count();
    assert_eq!(accepted, 33, "33 x 0.03 = 0.99 fits in 1; a 34th would not");
    assert_eq!(accepted + denied, 40);
    let view = app.get(&format!("/v1/scopes/{scope}"), &token).await.body;
    assert_eq!(view["held"], "0.99");
    assert!(usdc(view["held"].as_str().unwrap()) <= usdc("1"));
}

#[tokio::test]
async fn an_expired_scope_closes_as_failed_and_releases_its_holds() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("late").await;
    let token = app.credential(&agent_id, json!({})).await;
    use bursar::payments::Clock;
    let expires = bursar::domain::format_time(app.clock.now_ms() + 10 * 60 * 1000);
    let opened = app
        .post(
            "/v1/scopes",
            &token,
            json!({"name": "short task", "budget": "5", "expires_at": expires}),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let scope = opened.body["id"].as_str().unwrap().to_string();
    let hold = scoped_pay(&app, &token, &scope, "1", "hold", "manual").await;
    assert_eq!(hold.body["status"], "authorized", "{}", hold.body);
    let hold_id = hold.body["id"].as_str().unwrap().to_string();

    app.clock.advance_ms(20 * 60 * 1000);
    app.settle().await;
    let view = app.get(&format!("/v1/scopes/{scope}"), &token).await.body;
    assert_eq!(view["status"], "expired", "{view}");
    let held = crate::support::payment(&app, &hold_id).await;
    assert_eq!(held["status"], "cancelled");
    assert_eq!(held["failure_reason"], "scope_expired");
    let late = scoped_pay(&app, &token, &scope, "0.1", "late", "automatic").await;
    assert_eq!(late.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_credential_s_tiers_give_micro_payments_their_own_budget_and_premium_ones_a_human() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("tiered").await;
    let bad = app
        .post(
            &format!("/v1/agents/{agent_id}/credentials"),
            &app.admin_token,
            json!({"name": "x", "policy": {"tiers": [{"up_to": "1"}, {"up_to": "0.5"}]}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.body["error"]["field"], "policy.tiers");
    let token = app
        .credential(
            &agent_id,
            json!({"tiers": [{"up_to": "0.10", "daily_limit": "0.25"}, {"daily_limit": "50", "require_approval": true}]}),
        )
        .await;
    let to = recipient(0x72);
    for key in ["m1", "m2"] {
        let micro = app.pay(&token, to, "0.1", key).await;
        assert_eq!(micro.status, StatusCode::ACCEPTED, "{}", micro.body);
    }
    let third = app.pay(&token, to, "0.1", "m3").await;
    assert_eq!(third.status, StatusCode::FORBIDDEN, "{}", third.body);
    assert_eq!(third.body["error"]["rule"], "tier");
    let premium = app.pay(&token, to, "2", "p1").await;
    assert_eq!(premium.status, StatusCode::ACCEPTED, "{}", premium.body);
    assert_eq!(premium.body["status"], "pending_approval");
    assert_eq!(premium.body["decision"]["rule"], "tier");
}
