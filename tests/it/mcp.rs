//! MCP: an agent pays from its MCP client. The client is the official Rust SDK (`rmcp`) over
//! Streamable HTTP, authenticated with the agent's credential as a Bearer token.

use crate::support::{TestApp, recipient, usdc};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn connect(app: &TestApp, token: &str) -> RunningService<RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base_url))
            .auth_header(token.to_string()),
    );
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("bursar-test-agent", "0.1.0"),
    )
    .serve(transport)
    .await
    .expect("the MCP session starts")
}

async fn call(
    client: &RunningService<RoleClient, ClientConfig>,
    tool: &str,
    args: Value,
) -> CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().cloned().unwrap()),
        )
        .await
        .expect("a tool result, never a transport error")
}

fn body(result: &CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .expect("structured content")
}

#[tokio::test]
async fn an_agent_pays_from_its_mcp_client_under_its_policy() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("mcp-agent").await;
    let token = app
        .credential(
            &agent_id,
            json!({"max_per_payment": "5", "daily_limit": "20"}),
        )
        .await;
    app.fund(&agent_id, "50", "0.01").await;
    let client = connect(&app, &token).await;

    let tools = client.list_tools(Default::default()).await.unwrap().tools;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "pay",
        "get_payment",
        "list_payments",
        "budget",
        "authorize",
        "capture",
        "void",
        "pay_x402",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let get_payment = tools.iter().find(|t| t.name == "get_payment").unwrap();
    assert_eq!(
        get_payment.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    let pay = tools.iter().find(|t| t.name == "pay").unwrap();
    assert_eq!(
        pay.annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );
    assert!(
        pay.input_schema
            .get("properties")
            .unwrap()
            .get("amount")
            .is_some()
    );

    // Pays: the payment settles on chain like any other.
    let to = recipient(0x61);
    let paid = call(
        &client,
        "pay",
        json!({"to": to.to_string(), "amount": "2.5", "memo": "dataset"}),
    )
    .await;
    assert_eq!(paid.is_error, Some(false), "{paid:?}");
    let payment = body(&paid);
    assert_eq!(payment["status"], "queued");
    let id = payment["id"].as_str().unwrap().to_string();
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    assert_eq!(app.usdc_balance(to).await, usdc("2.5"));

    // The model re-sends the same call (no key given): the same payment, nothing paid twice.
    let again = call(
        &client,
        "pay",
        json!({"to": to.to_string(), "amount": "2.5", "memo": "dataset"}),
    )
    .await;
    assert_eq!(body(&again)["id"], id.as_str());
    assert_eq!(body(&again)["replayed"], true);
    app.settle().await;
    app.mine(1).await;
    app.settle().await;
    assert_eq!(app.usdc_balance(to).await, usdc("2.5"));

    // Over the cap: a result the model can read, naming the rule; nothing is queued.
    let denied = call(&client, "pay", json!({"to": to.to_string(), "amount": "6"})).await;
    assert_eq!(denied.is_error, Some(true));
    let denial = body(&denied);
    assert_eq!(denial["error"]["code"], "policy_denied");
    assert_eq!(denial["error"]["rule"], "max_per_payment");
    assert_eq!(denial["payment"]["status"], "rejected");

    // Bad input names the field.
    let bad = call(&client, "pay", json!({"to": "0x12", "amount": "1"})).await;
    assert_eq!(body(&bad)["error"]["field"], "to");

    // Budget: what is left today and per payment.
    let budget = body(&call(&client, "budget", json!({})).await);
    assert_eq!(budget["max_per_payment"], "5");
    assert_eq!(budget["daily_limit"], "20");
    assert_eq!(budget["held_last_24h"], "2.5");
    assert_eq!(budget["daily_remaining"], "17.5");
    assert_eq!(budget["largest_payment_now"], "5");

    // Two-phase: authorize a hold, void it; the budget comes back.
    let hold = body(
        &call(
            &client,
            "authorize",
            json!({"to": to.to_string(), "amount": "4", "idempotency_key": "hold-1"}),
        )
        .await,
    );
    assert_eq!(hold["status"], "authorized");
    assert_eq!(
        body(&call(&client, "budget", json!({})).await)["daily_remaining"],
        "13.5"
    );
    let voided = body(&call(&client, "void", json!({"id": hold["id"]})).await);
    assert_eq!(voided["status"], "cancelled");
    assert_eq!(
        body(&call(&client, "budget", json!({})).await)["daily_remaining"],
        "17.5"
    );

    // Reads are the agent's own.
    let read = body(&call(&client, "get_payment", json!({"id": id})).await);
    assert_eq!(read["status"], "confirmed");
    assert!(read["block_hash"].as_str().unwrap().starts_with("0x"));
    let list = body(&call(&client, "list_payments", json!({"status": "confirmed"})).await);
    let payments: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "payment")
        .collect();
    assert_eq!(payments.len(), 1, "{list}");
    assert_eq!(payments[0]["id"], id.as_str());

    // pay_x402 goes through the same outbound guard: a loopback seller is refused here.
    let x402 = call(
        &client,
        "pay_x402",
        json!({"url": "http://127.0.0.1:9/paid"}),
    )
    .await;
    assert_eq!(body(&x402)["error"]["field"], "url");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn only_an_agent_credential_opens_the_mcp_endpoint() {
    let app = TestApp::spawn().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"}}});
    let auditor = app.staff_token("auditor").await;
    for token in [
        None,
        Some(app.admin_token.as_str()),
        Some(auditor.as_str()),
        Some("bsr_nope"),
    ] {
        let mut request = app
            .http
            .post(format!("{}/mcp", app.base_url))
            .header("accept", "application/json, text/event-stream")
            .json(&initialize);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{token:?}");
        let envelope: Value = response.json().await.unwrap();
        assert_eq!(envelope["error"]["code"], "unauthorized");
    }
    // A revoked credential is refused on its next request.
    let (agent_id, _) = app.create_agent("revoked").await;
    let created = app
        .post(
            &format!("/v1/agents/{agent_id}/credentials"),
            &app.admin_token,
            json!({"name": "mcp", "policy": {}}),
        )
        .await
        .body;
    let client = connect(&app, created["token"].as_str().unwrap()).await;
    assert!(call(&client, "budget", json!({})).await.is_error == Some(false));
    let revoked = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/credentials/{}", created["id"].as_str().unwrap()),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.body);
    let result = client
        .call_tool(CallToolRequestParams::new("budget").with_arguments(serde_json::Map::new()))
        .await;
    assert!(
        result.is_err(),
        "a revoked credential gets nothing: {result:?}"
    );
}

#[tokio::test]
async fn an_agent_runs_a_task_in_a_scope_from_its_mcp_client() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("mcp-scoped").await;
    let token = app
        .credential(&agent_id, json!({"max_per_payment": "5"}))
        .await;
    let client = connect(&app, &token).await;
    let names: Vec<String> = client
        .list_tools(Default::default())
        .await
        .unwrap()
        .tools
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    for tool in ["open_scope", "set_phase", "close_scope"] {
        assert!(names.iter().any(|n| n == tool), "{tool} missing");
    }
    let wider = call(
        &client,
        "open_scope",
        json!({"name": "t", "budget": "2",
        "phases": {"explore": {"max_per_payment": "9"}}}),
    )
    .await;
    assert_eq!(
        body(&wider)["error"]["field"],
        "phases.explore.max_per_payment"
    );

    let scope = body(
        &call(
            &client,
            "open_scope",
            json!({"name": "crawl", "budget": "2",
        "phases": {"explore": {"max_per_payment": "0.05"}, "commit": {}}}),
        )
        .await,
    );
    assert_eq!(scope["phase"], "explore", "{scope}");
    let scope_id = scope["id"].as_str().unwrap();
    let to = recipient(0x62).to_string();
    let small = call(
        &client,
        "pay",
        json!({"to": to, "amount": "0.05", "scope_id": scope_id}),
    )
    .await;
    assert_eq!(body(&small)["status"], "queued", "{small:?}");
    let big = body(
        &call(
            &client,
            "pay",
            json!({"to": to, "amount": "1", "scope_id": scope_id}),
        )
        .await,
    );
    assert_eq!(big["error"]["rule"], "phase");
    let moved = body(
        &call(
            &client,
            "set_phase",
            json!({"scope_id": scope_id, "phase": "commit", "reason": "plan ready"}),
        )
        .await,
    );
    assert_eq!(moved["phase"], "commit");
    let hold = body(
        &call(
            &client,
            "authorize",
            json!({"to": to, "amount": "1", "scope_id": scope_id}),
        )
        .await,
    );
    assert_eq!(hold["status"], "authorized", "{hold}");
    let closed = body(
        &call(
            &client,
            "close_scope",
            json!({"scope_id": scope_id, "outcome": "failed", "reason": "downstream error"}),
        )
        .await,
    );
    assert_eq!(closed["scope"]["status"], "closed_failed");
    assert_eq!(
        closed["released"].as_array().unwrap().len(),
        2,
        "the queued payment and the hold: {closed}"
    );
    client.cancel().await.unwrap();
}
