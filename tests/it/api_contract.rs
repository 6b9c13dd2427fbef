//! The HTTP contract: bad input is a precise `400` naming the field, auth is enforced, service
//! routes answer, and the OpenAPI document lists every route.

use crate::support::{TestApp, recipient};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payment_input_names_the_field() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("validator").await;
    let token = app.credential(&agent_id, json!({})).await;
    let to = recipient(0x10).to_string();
    let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let bad_checksum = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"to": to, "amount": 12.5, "currency": "USDC"}),
            "amount",
        ),
        (
            json!({"to": to, "amount": "-1", "currency": "USDC"}),
            "amount",
        ),
        (
            json!({"to": to, "amount": "0", "currency": "USDC"}),
            "amount",
        ),
        (
            json!({"to": to, "amount": "0.0000001", "currency": "USDC"}),
            "amount",
        ),
        (
            json!({"to": to, "amount": "1e3", "currency": "USDC"}),
            "amount",
        ),
        (
            json!({"to": to, "amount": "1000000000.000001", "currency": "USDC"}),
            "amount",
        ),
        (json!({"to": to, "currency": "USDC"}), "amount"),
        (
            json!({"to": "0x1234", "amount": "1", "currency": "USDC"}),
            "to",
        ),
        (
            json!({"to": bad_checksum, "amount": "1", "currency": "USDC"}),
            "to",
        ),
        (
            json!({"to": to, "amount": "1", "currency": "EURC"}),
            "currency",
        ),
        (
            json!({"to": to, "amount": "1", "currency": "USDC", "confidence": 1.5}),
            "confidence",
        ),
        (
            json!({"to": to, "amount": "1", "currency": "USDC", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"to": to, "amount": "1", "currency": "USDC", "colour": "red"}),
            "colour",
        ),
        (
            json!({"to": to, "amount": "1", "currency": "USDC", "capture": "later"}),
            "capture",
        ),
    ];
    for (i, (body, field)) in cases.into_iter().enumerate() {
        let response = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&token),
                Some(body.clone()),
                Some(&format!("k{i}")),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            response.body
        );
        assert_eq!(response.body["error"]["code"], "invalid_request");
        assert_eq!(
            response.body["error"]["field"], field,
            "{body}: {}",
            response.body
        );
    }
    // Checksummed and lower-case addresses are both accepted; responses use EIP-55.
    for (i, address) in [checksummed.to_string(), checksummed.to_lowercase()]
        .iter()
        .enumerate()
    {
        let response = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&token),
                Some(json!({"to": address, "amount": "1", "currency": "USDC"})),
                Some(&format!("ok{i}")),
            )
            .await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
        assert_eq!(response.body["to"], checksummed);
    }
    // The Idempotency-Key header is required and bounded.
    let body = json!({"to": to, "amount": "1", "currency": "USDC"});
    let missing = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&token),
            Some(body.clone()),
            None,
        )
        .await;
    assert_eq!(
        (missing.status, missing.body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Idempotency-Key"))
    );
    let long = "k".repeat(256);
    let too_long = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&token),
            Some(body),
            Some(&long),
        )
        .await;
    assert_eq!(too_long.body["error"]["field"], "Idempotency-Key");

    // Malformed JSON and oversized bodies.
    let malformed = app
        .http
        .post(format!("{}/v1/payments", app.base_url))
        .bearer_auth(&token)
        .header("Idempotency-Key", "m")
        .header("content-type", "application/json")
        .body("{\"to\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let huge =
        json!({"to": to, "amount": "1", "currency": "USDC", "memo": "x".repeat(1024 * 1024 + 1)});
    let too_big = app
        .request(
            Method::POST,
            "/v1/payments",
            Some(&token),
            Some(huge),
            Some("big"),
        )
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Other resources name their fields too.
    let admin = app.admin_token.clone();
    let credentials = format!("/v1/agents/{agent_id}/credentials");
    let checks: Vec<(&str, Value, &str)> = vec![
        ("/v1/agents", json!({"name": ""}), "name"),
        ("/v1/agents", json!({}), "name"),
        ("/v1/tokens", json!({"role": "god", "name": "x"}), "role"),
        (
            credentials.as_str(),
            json!({"name": "c", "policy": {"daily_limit": 5}}),
            "policy.daily_limit",
        ),
        (
            credentials.as_str(),
            json!({"name": "c", "policy": {"min_confidence": 2.0}}),
            "policy.min_confidence",
        ),
        (
            credentials.as_str(),
            json!({"name": "c", "policy": {"allowed_recipients": ["0x12"]}}),
            "policy.allowed_recipients[0]",
        ),
        (
            credentials.as_str(),
            json!({"name": "c", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            credentials.as_str(),
            json!({"name": "c", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ];
    for (path, body, field) in checks {
        let response = app.post(path, &admin, body.clone()).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            response.body
        );
        assert_eq!(
            response.body["error"]["field"], field,
            "{path} {body}: {}",
            response.body
        );
    }
    let funding = app
        .request(
            Method::POST,
            "/v1/treasury/fundings",
            Some(&admin),
            Some(json!({"agent_id": agent_id, "amount": "1", "gas_eth": "1e18"})),
            Some("f"),
        )
        .await;
    assert_eq!(funding.body["error"]["field"], "gas_eth");
    let list = app.get("/v1/payments?limit=501", &admin).await;
    assert_eq!(list.body["error"]["field"], "limit");
    let list = app.get("/v1/payments?from=yesterday", &admin).await;
    assert_eq!(list.body["error"]["field"], "from");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_enforced_and_tokens_revoke_at_once() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/v1/payments"),
        (Method::POST, "/v1/agents"),
        (Method::GET, "/v1/audit"),
        (Method::GET, "/v1/treasury"),
    ] {
        let none = app
            .request(method.clone(), path, None, Some(json!({})), None)
            .await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(none.body["error"]["code"], "unauthorized");
        let wrong = app
            .request(method, path, Some("bsr_not_a_token"), Some(json!({})), None)
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // A created token works, only its hash is stored, and revoking it refuses the next request.
    let created = app
        .post(
            "/v1/tokens",
            &app.admin_token,
            json!({"role": "auditor", "name": "finance"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let auditor = created.body["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/v1/audit", &auditor).await.status, StatusCode::OK);
    assert_eq!(
        app.post("/v1/agents", &auditor, json!({"name": "x"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&app.database().await)
        .await
        .unwrap();
    assert!(!stored.contains(&auditor));
    let id = created.body["id"].as_str().unwrap();
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/v1/tokens/{id}"),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/audit", &auditor).await.status,
        StatusCode::UNAUTHORIZED
    );

    // An agent credential pays for its own agent only and sees only its own payments.
    let (a, _) = app.create_agent("a").await;
    let (b, _) = app.create_agent("b").await;
    let token_a = app.credential(&a, json!({})).await;
    let token_b = app.credential(&b, json!({})).await;
    let paid = app.pay(&token_a, recipient(1), "1", "k").await;
    let id = paid.body["id"].as_str().unwrap();
    assert_eq!(
        app.get(&format!("/v1/payments/{id}"), &token_a)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/v1/payments/{id}"), &token_b)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/payments", &token_b).await.body["data"],
        json!([])
    );
    assert_eq!(
        app.get("/v1/payments", &token_a).await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get("/v1/audit", &token_a).await.status,
        StatusCode::FORBIDDEN
    );

    // Revoking the credential refuses its very next request.
    let credential_id = paid.body["credential_id"].as_str().unwrap();
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/v1/credentials/{credential_id}"),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.pay(&token_a, recipient(1), "1", "k2").await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_routes_and_openapi() {
    let app = TestApp::spawn().await;
    let health = app.request(Method::GET, "/healthz", None, None, None).await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = app.request(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(ready.status, StatusCode::OK);
    app.request(Method::GET, "/v1/payments", None, None, None)
        .await;
    let metrics = app.request(Method::GET, "/metrics", None, None, None).await;
    assert!(
        metrics
            .body
            .as_str()
            .unwrap()
            .contains("bursar_http_requests_total")
    );
    let unknown = app
        .request(Method::GET, "/v2/nothing", None, None, None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let doc = app
        .request(Method::GET, "/openapi.json", None, None, None)
        .await
        .body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/tokens", "post"),
        ("/v1/tokens/{id}", "delete"),
        ("/v1/agents", "post"),
        ("/v1/agents", "get"),
        ("/v1/agents/{id}", "get"),
        ("/v1/agents/{id}/credentials", "post"),
        ("/v1/credentials/{id}", "get"),
        ("/v1/credentials/{id}", "delete"),
        ("/v1/payments", "post"),
        ("/v1/payments", "get"),
        ("/v1/payments/{id}", "get"),
        ("/v1/treasury", "get"),
        ("/v1/treasury/fundings", "post"),
        ("/v1/audit", "get"),
        ("/v1/audit/verify", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
    }

    // Readiness names the node when it stops answering.
    let mut app = app;
    let port = app.devnet.anvil.port();
    app.devnet.anvil.child_mut().kill().unwrap();
    app.devnet.anvil.child_mut().wait().unwrap();
    let down = app.request(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "node on {port} is down"
    );
    assert_eq!(down.body["failing"], json!(["rpc"]));
    let _ = &mut app;
}

/// Every route with every role, against the Roles table of API.md. Routes that change things
/// name ids that do not exist, so an allowed role gets `404` and a refused one `403`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_follows_the_roles_table() {
    let app = TestApp::spawn().await;
    let mut tokens = std::collections::HashMap::new();
    tokens.insert("admin", app.admin_token.clone());
    for role in ["treasury", "approver", "auditor"] {
        tokens.insert(role, app.staff_token(role).await);
    }
    let (agent, _) = app.create_agent("matrix").await;
    tokens.insert("agent", app.credential(&agent, json!({})).await);
    let own = app.pay_id(&tokens["agent"], recipient(9), "1", "own").await;

    const ALL: &[&str] = &["admin", "treasury", "approver", "auditor", "agent"];
    let routes: Vec<(Method, String, Value, &[&str])> = vec![
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({"role": "auditor", "name": "x"}),
            &["admin"],
        ),
        (
            Method::DELETE,
            "/v1/tokens/tok_nope".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            "/v1/agents".into(),
            json!({"name": "x"}),
            &["admin"],
        ),
        (
            Method::GET,
            "/v1/agents".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::GET,
            format!("/v1/agents/{agent}"),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::POST,
            "/v1/agents/agt_nope/freeze".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            "/v1/agents/agt_nope/unfreeze".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            format!("/v1/agents/{agent}/credentials"),
            json!({"name": "x"}),
            &["admin"],
        ),
        (
            Method::GET,
            "/v1/credentials/cred_nope".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::DELETE,
            "/v1/credentials/cred_nope".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            "/v1/payments".into(),
            json!({"to": recipient(9).to_string(), "amount": "1", "currency": "USDC"}),
            &["agent"],
        ),
        (
            Method::GET,
            "/v1/payments".into(),
            json!(null),
            &["admin", "treasury", "approver", "auditor", "agent"],
        ),
        (
            Method::GET,
            format!("/v1/payments/{own}"),
            json!(null),
            &["admin", "treasury", "approver", "auditor", "agent"],
        ),
        (
            Method::POST,
            "/v1/payments/pay_nope/approve".into(),
            json!({}),
            &["admin", "approver"],
        ),
        (
            Method::POST,
            "/v1/payments/pay_nope/reject".into(),
            json!({}),
            &["admin", "approver"],
        ),
        (
            Method::POST,
            "/v1/payments/pay_nope/capture".into(),
            json!({}),
            &["admin", "agent"],
        ),
        (
            Method::POST,
            "/v1/payments/pay_nope/void".into(),
            json!(null),
            &["admin", "agent"],
        ),
        (
            Method::POST,
            "/v1/scopes".into(),
            json!({"name": "matrix", "budget": "1"}),
            &["admin", "agent"],
        ),
        (
            Method::GET,
            "/v1/scopes".into(),
            json!(null),
            &["admin", "auditor", "approver", "agent"],
        ),
        (
            Method::GET,
            "/v1/scopes/scp_nope".into(),
            json!(null),
            &["admin", "auditor", "approver", "agent"],
        ),
        (
            Method::GET,
            "/v1/scopes/scp_nope/trace".into(),
            json!(null),
            &["admin", "auditor", "approver", "agent"],
        ),
        (
            Method::POST,
            "/v1/scopes/scp_nope/phase".into(),
            json!({"phase": "commit"}),
            &["admin", "approver", "agent"],
        ),
        (
            Method::POST,
            "/v1/scopes/scp_nope/close".into(),
            json!({"outcome": "failed"}),
            &["admin", "agent"],
        ),
        (
            Method::POST,
            "/v1/x402/fetch".into(),
            json!({"url": "http://127.0.0.1:9/paid"}),
            &["agent"],
        ),
        (
            Method::POST,
            "/v1/x402/authorize".into(),
            json!({"payment_required": {"x402Version": 2, "accepts": []}}),
            &["agent"],
        ),
        (
            Method::GET,
            "/v1/treasury".into(),
            json!(null),
            &["admin", "treasury", "auditor"],
        ),
        (
            Method::POST,
            "/v1/treasury/fundings".into(),
            json!({"agent_id": "agt_nope", "amount": "1"}),
            &["admin", "treasury"],
        ),
        (
            Method::GET,
            "/v1/audit".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::GET,
            "/v1/audit/verify".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::GET,
            "/v1/audit/export?format=jsonl".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::POST,
            "/v1/agents/agt_nope/sweep".into(),
            json!(null),
            &["admin", "treasury"],
        ),
        (
            Method::GET,
            "/v1/reports/spend".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::GET,
            "/v1/reports/balances".into(),
            json!(null),
            &["admin", "auditor", "treasury"],
        ),
        (
            Method::GET,
            "/v1/reconciliation".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::POST,
            "/v1/webhooks".into(),
            json!({"url": "http://127.0.0.1:9/hook", "events": ["audit.alarm"]}),
            &["admin"],
        ),
        (Method::GET, "/v1/webhooks".into(), json!(null), &["admin"]),
        (
            Method::DELETE,
            "/v1/webhooks/whk_nope".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::GET,
            "/v1/webhooks/whk_nope/deliveries".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            "/v1/webhook-deliveries/whd_nope/replay".into(),
            json!(null),
            &["admin"],
        ),
        (
            Method::POST,
            "/v1/deny-list".into(),
            json!({"address": recipient(0x77).to_string(), "reason": "matrix"}),
            &["admin"],
        ),
        (
            Method::GET,
            "/v1/deny-list".into(),
            json!(null),
            &["admin", "auditor"],
        ),
        (
            Method::DELETE,
            format!("/v1/deny-list/{}", recipient(0x78)),
            json!(null),
            &["admin"],
        ),
    ];
    // Every documented route that needs a token has a row here: a new route without one fails.
    let doc = app
        .request(Method::GET, "/openapi.json", None, None, None)
        .await
        .body;
    let documented: std::collections::HashSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .filter(|(_, path)| path.starts_with("/v1/"))
        .collect();
    let shape = |path: &str| -> String {
        path.split('?')
            .next()
            .unwrap()
            .split('/')
            .map(|segment| {
                let id = segment.starts_with("agt_")
                    || segment.starts_with("pay_")
                    || segment.starts_with("tok_")
                    || segment.starts_with("cred_")
                    || segment.starts_with("whk_")
                    || segment.starts_with("whd_")
                    || segment.starts_with("scp_");
                if id {
                    "{id}"
                } else if segment.starts_with("0x") {
                    "{address}"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let covered: std::collections::HashSet<(String, String)> = routes
        .iter()
        .map(|(method, path, _, _)| (method.to_string(), shape(path)))
        .collect();
    assert!(documented.len() >= 33, "{documented:?}");
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without a role-matrix row: {missing:?}"
    );
    for (i, (method, path, body, allowed)) in routes.iter().enumerate() {
        for role in ALL {
            let body = (!body.is_null()).then(|| body.clone());
            let key = format!("matrix-{i}-{role}");
            let response = app
                .request(method.clone(), path, Some(&tokens[role]), body, Some(&key))
                .await;
            assert!(
                !response.status.is_server_error(),
                "{role} {method} {path}: {} {}",
                response.status,
                response.body
            );
            if allowed.contains(role) {
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&response.status),
                    "{role} must be allowed {method} {path}: {} {}",
                    response.status,
                    response.body
                );
            } else {
                assert_eq!(
                    response.status,
                    StatusCode::FORBIDDEN,
                    "{role} must be refused {method} {path}: {}",
                    response.body
                );
                assert_eq!(response.body["error"]["code"], "forbidden");
            }
        }
    }
    // Approvers only ever list what waits for them.
    let listed = app
        .get("/v1/payments?status=queued", &tokens["approver"])
        .await;
    assert_eq!(listed.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_no_payment_may_go_to_are_refused_before_anything_is_stored() {
    let app = TestApp::spawn().await;
    let (agent, own) = app.create_agent("screened").await;
    let token = app.credential(&agent, json!({})).await;
    let sanctioned = recipient(0x5a);
    let added = app
        .post(
            "/v1/deny-list",
            &app.admin_token,
            json!({"address": sanctioned.to_string(), "reason": "sanctions list 2026-11"}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
    let auditor = app.staff_token("auditor").await;
    let listed = app.get("/v1/deny-list", &auditor).await;
    assert_eq!(listed.body["data"][0]["address"], sanctioned.to_string());
    let forged = app
        .post(
            "/v1/deny-list",
            &auditor,
            json!({"address": recipient(0x5b).to_string(), "reason": "x"}),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let refused = [
        "0x0000000000000000000000000000000000000000".to_string(),
        app.devnet.usdc.to_string(),
        own.to_string(),
        sanctioned.to_string(),
    ];
    for (i, to) in refused.iter().enumerate() {
        let response = app
            .request(
                Method::POST,
                "/v1/payments",
                Some(&token),
                Some(json!({"to": to, "amount": "1", "currency": "USDC"})),
                Some(&format!("screen-{i}")),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{to}: {}",
            response.body
        );
        assert_eq!(response.body["error"]["field"], "to", "{to}");
    }
    let stored = app
        .get(&format!("/v1/payments?agent_id={agent}"), &app.admin_token)
        .await;
    assert_eq!(
        stored.body["data"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );

    let removed = app
        .request(
            Method::DELETE,
            &format!("/v1/deny-list/{sanctioned}"),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let allowed = app.pay(&token, sanctioned, "1", "after-removal").await;
    assert_eq!(allowed.status, StatusCode::ACCEPTED, "{}", allowed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amounts_are_judged_by_their_own_digits_and_zero_limits_mean_nothing() {
    let app = TestApp::spawn().await;
    let (agent, _) = app.create_agent("digits").await;
    let token = app.credential(&agent, json!({})).await;
    let long_zeros = format!("1.{}", "0".repeat(10_000));
    for (i, amount) in [
        "1.00000000000000000000000000001",
        "0.0100000",
        long_zeros.as_str(),
        "10000000000",
    ]
    .iter()
    .enumerate()
    {
        let response = app
            .pay(&token, recipient(0x61), amount, &format!("digits-{i}"))
            .await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST, "{amount:.40}");
        assert_eq!(response.body["error"]["field"], "amount");
    }

    // A limit of zero is a real limit: nothing may be spent.
    let nothing = app.credential(&agent, json!({"daily_limit": "0"})).await;
    let denied = app.pay(&nothing, recipient(0x62), "0.000001", "zero").await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.body["error"]["rule"], "daily_limit");
    let all_approved = app
        .credential(&agent, json!({"require_approval_above": "0"}))
        .await;
    let waiting = app
        .pay(&all_approved, recipient(0x62), "0.000001", "zero-2")
        .await;
    assert_eq!(
        waiting.body["status"], "pending_approval",
        "{}",
        waiting.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_is_complete_and_every_error_has_the_envelope() {
    let app = TestApp::spawn().await;
    let doc = app
        .request(Method::GET, "/openapi.json", None, None, None)
        .await
        .body;
    let mut ids = std::collections::HashSet::new();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let id = operation["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "operationId {id} repeats");
            for name in &names {
                let declared = operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == *name && p["in"] == "path"));
                assert!(declared, "{method} {path} does not declare {name}");
            }
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(!description.trim().is_empty(), "{method} {path} {status}");
                if status.starts_with('4') || status.starts_with('5') {
                    assert!(
                        response["content"]["application/json"].is_object(),
                        "{method} {path} {status} has no error envelope"
                    );
                }
            }
            // The router serves what the document lists: no 404 or 405 for a listed route.
            let concrete = path
                .replace("{id}", "unknown")
                .replace("{address}", "0x0000000000000000000000000000000000000001");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let answer = app
                .request(method.clone(), &concrete, None, None, None)
                .await;
            assert_ne!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            if !["/healthz", "/readyz", "/metrics", "/openapi.json"].contains(&path.as_str()) {
                assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
        }
    }
    assert!(operations >= 35, "{operations}");

    let docs = app
        .http
        .get(format!("{}/docs", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = docs.text().await.unwrap();
    assert!(page.contains("/v1/payments/{id}/approve") && !page.contains("<script"));

    let envelope = |response: &crate::support::Response, code: &str| {
        assert_eq!(response.body["error"]["code"], code, "{}", response.body);
    };
    let wrong_method = app
        .request(
            Method::DELETE,
            "/v1/payments",
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    envelope(&wrong_method, "method_not_allowed");
    let nowhere = app.get("/v9/nowhere", &app.admin_token).await;
    envelope(&nowhere, "not_found");
    let not_utf8 = app.get("/v1/payments/%FF%FE", &app.admin_token).await;
    assert_eq!(
        not_utf8.status,
        StatusCode::BAD_REQUEST,
        "{}",
        not_utf8.body
    );
    envelope(&not_utf8, "invalid_request");
    let replay = app
        .post(
            "/v1/webhook-deliveries/whd_unknown/replay",
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(replay.status, StatusCode::NOT_FOUND, "{}", replay.body);
    envelope(&replay, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_ranges_are_bounded_by_the_chain_head() {
    let app = TestApp::spawn().await;
    let head = app.head().await;
    for (query, field) in [
        (format!("to_block={}", u64::MAX), "to_block"),
        (format!("from_block=0&to_block={}", head + 1), "to_block"),
        (format!("from_block={}", u64::MAX), "from_block"),
        ("to_block=-1".to_string(), "to_block"),
    ] {
        let response = app
            .get(&format!("/v1/reconciliation?{query}"), &app.admin_token)
            .await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            response.body
        );
        assert_eq!(response.body["error"]["field"], field, "{query}");
    }
    let fine = app
        .get(
            &format!("/v1/reconciliation?to_block={head}"),
            &app.admin_token,
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
}
