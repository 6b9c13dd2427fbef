//! x402: Bursar pays sellers that answer `402 Payment Required`. The other side is independent:
//! a paid route served by the `x402-axum` middleware, settled on the devnet by
//! `x402-facilitator-local` (the x402-rs crates), against Circle's USDC on anvil.

use crate::support::{TestApp, recipient, usdc};
use alloy::primitives::{Bytes, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use bursar::domain::Address;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use x402_chain_eip155::chain::config::{Eip155ChainConfig, Eip155ChainConfigInner};
use x402_chain_eip155::chain::{
    AssetTransferMethod, Eip155ChainProvider, Eip155ChainReference, Eip155TokenDeployment,
};
use x402_chain_eip155::{V1Eip155Exact, V2Eip155Exact};
use x402_facilitator_local::FacilitatorLocal;
use x402_types::chain::{ChainId, ChainProviderOps, ChainRegistry, FromConfig};
use x402_types::scheme::{
    SchemeBlueprints, SchemeConfig, SchemeRegistry, X402SchemeFacilitator,
    X402SchemeFacilitatorBuilder,
};

/// The facilitator's chain provider, wrapped so the scheme registry can build on it.
#[derive(Clone)]
struct FacilitatorChain(Arc<Eip155ChainProvider>);

impl ChainProviderOps for FacilitatorChain {
    fn signer_addresses(&self) -> Vec<String> {
        self.0.signer_addresses()
    }
    fn chain_id(&self) -> ChainId {
        self.0.chain_id()
    }
}

impl X402SchemeFacilitatorBuilder<&FacilitatorChain> for V2Eip155Exact {
    fn build(
        &self,
        provider: &FacilitatorChain,
        config: Option<Value>,
    ) -> Result<Box<dyn X402SchemeFacilitator>, Box<dyn std::error::Error>> {
        X402SchemeFacilitatorBuilder::<Arc<Eip155ChainProvider>>::build(
            self,
            provider.0.clone(),
            config,
        )
    }
}

impl X402SchemeFacilitatorBuilder<&FacilitatorChain> for V1Eip155Exact {
    fn build(
        &self,
        provider: &FacilitatorChain,
        config: Option<Value>,
    ) -> Result<Box<dyn X402SchemeFacilitator>, Box<dyn std::error::Error>> {
        X402SchemeFacilitatorBuilder::<Arc<Eip155ChainProvider>>::build(
            self,
            provider.0.clone(),
            config,
        )
    }
}

/// The seller: `x402-axum` in front of `/report` (x402 v2) and `/report-v1` (v1) (price `price_units` of USDC base units, paid to
/// `pay_to`), settling through a local facilitator whose gas comes from an anvil dev account.
/// Returns the base URL and a counter of requests that carried a payment.
async fn x402_seller(
    app: &TestApp,
    pay_to: Address,
    price_units: u64,
) -> (String, Arc<AtomicUsize>) {
    // The facilitator refuses to start unless the contracts it may use exist at their canonical
    // addresses, as they do on Base. This test pays by EIP-3009 only, which calls none of them.
    for address in [
        x402_chain_eip155::v1_eip155_exact::facilitator::VALIDATOR_ADDRESS,
        x402_chain_eip155::chain::permit2::PERMIT2_ADDRESS,
        x402_chain_eip155::chain::permit2::EXACT_PERMIT2_PROXY_ADDRESS,
    ] {
        app.devnet
            .provider
            .anvil_set_code(address, Bytes::from_static(&[0x00]))
            .await
            .unwrap();
    }
    let key = app.devnet.anvil.keys()[7].to_bytes();
    let inner: Eip155ChainConfigInner = serde_json::from_value(json!({
        "signers": [format!("0x{}", hex::encode(key))],
        "rpc": [{"http": app.devnet.rpc_url}],
    }))
    .unwrap();
    let config = Eip155ChainConfig {
        chain_reference: Eip155ChainReference::new(8453),
        inner,
    };
    let provider = FacilitatorChain(Arc::new(
        Eip155ChainProvider::from_config(&config).await.unwrap(),
    ));
    let chains = ChainRegistry::new([(provider.chain_id(), provider)].into_iter().collect());
    let blueprints = SchemeBlueprints::new()
        .and_register(V2Eip155Exact)
        .and_register(V1Eip155Exact);
    let schemes: Vec<SchemeConfig> = serde_json::from_value(json!([
        {"id": "v2-eip155-exact", "chains": "eip155:8453"},
        {"id": "v1-eip155-exact", "chains": "eip155:8453"},
    ]))
    .unwrap();
    let facilitator = Arc::new(FacilitatorLocal::new(SchemeRegistry::build(
        chains, blueprints, &schemes,
    )));
    let token = Eip155TokenDeployment {
        chain_reference: Eip155ChainReference::new(8453),
        address: app.devnet.usdc.into_inner(),
        decimals: 6,
        transfer_method: AssetTransferMethod::Eip3009 {
            name: "USD Coin".into(),
            version: "2".into(),
        },
    };
    let x402 = x402_axum::X402Middleware::from_facilitator(facilitator);
    let paid = Arc::new(AtomicUsize::new(0));
    let counter = paid.clone();
    let router = Router::new()
        .route(
            "/report",
            get(|| async { "the quarterly report" }).layer(x402.with_price_tag(
                V2Eip155Exact::price_tag(pay_to.into_inner(), token.amount(price_units)),
            )),
        )
        .route(
            "/report-v1",
            get(|| async { "the v1 report" }).layer(x402.with_price_tag(V1Eip155Exact::price_tag(
                pay_to.into_inner(),
                token.amount(price_units),
            ))),
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                if request.headers().contains_key("payment-signature")
                    || request.headers().contains_key("x-payment")
                {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(request)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{address}"), paid)
}

async fn fetch(app: &TestApp, token: &str, key: &str, body: Value) -> crate::support::Response {
    app.request(
        Method::POST,
        "/v1/x402/fetch",
        Some(token),
        Some(body),
        Some(key),
    )
    .await
}

async fn audit_kinds(app: &TestApp, payment_id: &str) -> Vec<String> {
    let events = app
        .get(
            &format!("/v1/audit?payment_id={payment_id}&limit=500"),
            &app.admin_token,
        )
        .await
        .body;
    let mut kinds: Vec<String> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.reverse();
    kinds
}

/// An agent with `policy`, funded with 10 USDC; returns its credential and address.
async fn x402_agent(app: &TestApp, policy: Value) -> (String, Address) {
    let (agent_id, address) = app.create_agent("buyer").await;
    let token = app.credential(&agent_id, policy).await;
    app.fund(&agent_id, "10", "0.01").await;
    (token, address)
}

#[tokio::test]
async fn a_paid_endpoint_is_paid_exactly_once_and_confirms_on_chain() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, buyer) = x402_agent(&app, json!({"max_per_payment": "1"})).await;
    let seller = recipient(0x51);
    let (base, paid_requests) = x402_seller(&app, seller, 250_000).await;
    // The facilitator waits for its transaction's receipt: blocks come as transactions do.
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    let body = json!({"url": format!("{base}/report"), "max_amount": "1"});

    let response = fetch(&app, &token, "x402-report-1", body.clone()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body["response"]["status"], 200);
    assert_eq!(response.body["response"]["body"], "the quarterly report");
    let payment = &response.body["payment"];
    assert_eq!(payment["kind"], "x402");
    assert_eq!(payment["to"], seller.to_string());
    assert_eq!(payment["amount"], "0.25");
    assert_eq!(
        payment["status"], "submitted",
        "captured on the seller's PAYMENT-RESPONSE"
    );
    let id = payment["id"].as_str().unwrap().to_string();
    let tx_hash = payment["tx_hash"].as_str().unwrap().to_string();
    assert_eq!(app.usdc_balance(seller).await, usdc("0.25"));
    assert_eq!(paid_requests.load(Ordering::SeqCst), 1);

    // The chain, not the seller, decides: included, then confirmed at the required depth.
    app.devnet
        .provider
        .anvil_set_auto_mine(false)
        .await
        .unwrap();
    app.settle().await;
    let included = crate::support::payment(&app, &id).await;
    assert_eq!(included["status"], "included", "{included}");
    // One more block: counted when read, from the head the pass checked; nothing rewritten.
    app.mine(1).await;
    app.clock.advance_ms(1_000);
    app.settle().await;
    let deeper = crate::support::payment(&app, &id).await;
    assert_eq!(deeper["status"], "included", "{deeper}");
    assert_eq!(
        deeper["confirmations"].as_i64(),
        included["confirmations"].as_i64().map(|c| c + 1)
    );
    assert_eq!(deeper["updated_at"], included["updated_at"]);
    app.mine(app.config.confirmations_required - 1).await;
    app.settle().await;
    let confirmed = crate::support::payment(&app, &id).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    let (receipt, transfers) = app.usdc_transfers_of(&tx_hash).await;
    assert_eq!(
        confirmed["block_hash"],
        receipt.block_hash.unwrap().to_string()
    );
    assert_eq!(confirmed["block_number"], receipt.block_number.unwrap());
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].from, buyer.into_inner());
    assert_eq!(transfers[0].to, seller.into_inner());
    assert_eq!(transfers[0].value, U256::from(250_000u64));
    assert!(confirmed["nonce"].is_null(), "{confirmed}");
    let sent = app
        .devnet
        .provider
        .get_transaction_count(buyer.into_inner())
        .await
        .unwrap();
    assert_eq!(sent, 0, "the agent's wallet sent nothing itself");

    // The same key again: the same payment, and never a second authorization or transfer.
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    // The same key again: the seller's stored answer and the same payment; the seller is not
    // asked again and nothing is signed or paid twice.
    let replay = fetch(&app, &token, "x402-report-1", body.clone()).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.body);
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(replay.body["payment"]["id"], id.as_str(), "{}", replay.body);
    assert_eq!(replay.body["response"]["body"], "the quarterly report");
    assert_eq!(paid_requests.load(Ordering::SeqCst), 1);
    let other = fetch(
        &app,
        &token,
        "x402-report-1",
        json!({"url": format!("{base}/report-v1")}),
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
    app.mine(1).await;
    assert_eq!(app.usdc_balance(seller).await, usdc("0.25"));
    assert_eq!(app.usdc_balance(buyer).await, usdc("9.75"));

    let kinds = audit_kinds(&app, &id).await;
    for step in [
        "payment_decided",
        "x402_authorization_signed",
        "x402_seller_responded",
        "payment_captured",
        "payment_included",
        "payment_confirmed",
    ] {
        assert!(
            kinds.contains(&step.to_string()),
            "{step} missing from {kinds:?}"
        );
    }
    let decided = kinds.iter().position(|k| k == "payment_decided").unwrap();
    let signed = kinds
        .iter()
        .position(|k| k == "x402_authorization_signed")
        .unwrap();
    assert!(
        decided < signed,
        "the attempt is recorded before anything is signed"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "x402_authorization_signed")
            .count(),
        1
    );

    // Reconciliation matches the authorization's transfer like any other.
    let report = app.get("/v1/reconciliation", &app.admin_token).await.body;
    assert!(
        report["discrepancies"].as_array().unwrap().is_empty(),
        "{report}"
    );
}

#[tokio::test]
async fn a_price_above_the_cap_is_refused_before_anything_is_signed() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, buyer) = x402_agent(&app, json!({"max_per_payment": "0.1"})).await;
    let seller = recipient(0x52);
    let (base, paid_requests) = x402_seller(&app, seller, 250_000).await;
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();

    let response = fetch(
        &app,
        &token,
        "too-dear",
        json!({"url": format!("{base}/report")}),
    )
    .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN, "{}", response.body);
    assert_eq!(response.body["error"]["code"], "policy_denied");
    assert_eq!(response.body["error"]["rule"], "max_per_payment");
    assert_eq!(response.body["payment"]["status"], "rejected");
    let id = response.body["payment"]["id"].as_str().unwrap();
    assert_eq!(
        paid_requests.load(Ordering::SeqCst),
        0,
        "no payment reached the seller"
    );
    assert!(
        !audit_kinds(&app, id)
            .await
            .contains(&"x402_authorization_signed".to_string())
    );
    assert_eq!(app.usdc_balance(buyer).await, usdc("10"));

    // Over the caller's own max_amount: refused before the policy is even asked.
    let response = fetch(
        &app,
        &token,
        "over-max",
        json!({"url": format!("{base}/report"), "max_amount": "0.2"}),
    )
    .await;
    assert_eq!(
        response.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        response.body
    );
    assert_eq!(response.body["error"]["code"], "price_above_max_amount");
    assert_eq!(response.body["error"]["field"], "max_amount");
}

/// A seller that answers 402 (x402 v2), then takes the signed payment and serves the content
/// without ever settling it.
async fn seller_that_never_settles(app: &TestApp, pay_to: Address) -> String {
    let requirement = json!({
        "scheme": "exact", "network": "eip155:8453", "amount": "300000",
        "asset": app.devnet.usdc.to_string(), "payTo": pay_to.to_string(),
        "maxTimeoutSeconds": 60, "extra": {"name": "USD Coin", "version": "2"},
    });
    let required = base64::engine::general_purpose::STANDARD.encode(
        json!({"x402Version": 2, "resource": {"url": "http://seller/data"}, "accepts": [requirement]})
            .to_string(),
    );
    let router = Router::new().route(
        "/data",
        get(move |headers: axum::http::HeaderMap| {
            let required = required.clone();
            async move {
                if headers.contains_key("payment-signature") {
                    (
                        axum::http::StatusCode::OK,
                        [("x-seller", "kept".to_string())],
                        "data",
                    )
                } else {
                    (
                        axum::http::StatusCode::PAYMENT_REQUIRED,
                        [("payment-required", required)],
                        "",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/data")
}

#[tokio::test]
async fn a_seller_that_never_settles_leaves_the_hold_until_valid_before_then_releases_it() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, buyer) = x402_agent(&app, json!({"daily_limit": "1"})).await;
    let url = seller_that_never_settles(&app, recipient(0x53)).await;

    let response = fetch(&app, &token, "never-settled", json!({"url": url})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body["response"]["body"], "data");
    let id = response.body["payment"]["id"].as_str().unwrap().to_string();
    assert_eq!(response.body["payment"]["status"], "authorized");

    // Still usable by the seller: the hold stays, and the agent cannot void it.
    app.mine(1).await;
    app.settle().await;
    assert_eq!(
        crate::support::payment(&app, &id).await["status"],
        "authorized"
    );
    let void = app
        .request(
            Method::POST,
            &format!("/v1/payments/{id}/void"),
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(void.status, StatusCode::CONFLICT, "{}", void.body);
    let over = app.pay(&token, recipient(0x54), "0.8", "over-daily").await;
    assert_eq!(
        over.status,
        StatusCode::FORBIDDEN,
        "the hold still counts: {}",
        over.body
    );

    // Once the chain is past validBefore with no AuthorizationUsed, the hold is released.
    app.devnet
        .provider
        .raw_request::<_, Value>("evm_increaseTime".into(), (120u64,))
        .await
        .unwrap();
    app.mine(1).await;
    app.settle().await;
    let ended = crate::support::payment(&app, &id).await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["failure_reason"], "authorization_expired");
    assert_eq!(app.usdc_balance(buyer).await, usdc("10"));
    let fits = app.pay(&token, recipient(0x54), "0.8", "fits-now").await;
    assert_eq!(fits.status, StatusCode::ACCEPTED, "{}", fits.body);
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = TestApp::spawn().await;
    let (agent_id, _) = app.create_agent("buyer").await;
    let token = app.credential(&agent_id, json!({})).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/x",
        "http://10.0.0.1/x",
    ] {
        let response = fetch(&app, &token, url, json!({"url": url})).await;
        assert_eq!(
            response.status,
            StatusCode::BAD_REQUEST,
            "{url}: {}",
            response.body
        );
        assert_eq!(response.body["error"]["field"], "url", "{url}");
    }
    let response = fetch(
        &app,
        &token,
        "leak",
        json!({"url": "https://example.com/", "headers": {"x-api-key": token}}),
    )
    .await;
    assert_eq!(
        response.status,
        StatusCode::BAD_REQUEST,
        "{}",
        response.body
    );
    assert_eq!(response.body["error"]["field"], "headers.x-api-key");
}

#[tokio::test]
async fn an_authorization_no_payment_signed_is_flagged_by_reconciliation_and_alarmed() {
    use alloy::network::TransactionBuilder;
    use alloy::signers::SignerSync;
    use alloy::sol_types::SolCall;
    let app = TestApp::spawn().await;
    let (token, buyer) = x402_agent(&app, json!({})).await;
    let _ = token;
    // Someone holding the agent's key (read here through the test-only reveal) signs an
    // EIP-3009 authorization behind Bursar's back, and anyone submits it.
    let wallet_id: String = sqlx::query_scalar("SELECT id FROM wallets WHERE address = ?")
        .bind(buyer.to_string())
        .fetch_one(&app.database().await)
        .await
        .unwrap();
    let key = app
        .payments()
        .reveal_key_for_tests(&wallet_id)
        .await
        .unwrap();
    let signer =
        alloy::signers::local::PrivateKeySigner::from_slice(&key).expect("a secp256k1 key");
    let authorization = bursar::domain::TransferAuthorization {
        from: buyer,
        to: recipient(0x77),
        value: U256::from(1_000_000u64),
        valid_after: 0,
        valid_before: u64::MAX / 2,
        nonce: alloy::primitives::B256::repeat_byte(0x42),
        domain_name: "USD Coin".into(),
        domain_version: "2".into(),
        chain_id: 8453,
        token: app.devnet.usdc,
    };
    let signature = signer
        .sign_hash_sync(&authorization.signing_hash())
        .unwrap();
    let call = bursar::chain::usdc::IUSDC::transferWithAuthorizationCall {
        from: buyer.into_inner(),
        to: recipient(0x77).into_inner(),
        value: authorization.value,
        validAfter: U256::ZERO,
        validBefore: U256::from(authorization.valid_before),
        nonce: authorization.nonce,
        v: 27 + u8::from(signature.v()),
        r: signature.r().into(),
        s: signature.s().into(),
    };
    let request = alloy::rpc::types::TransactionRequest::default()
        .with_to(app.devnet.usdc.into_inner())
        .with_input(call.abi_encode());
    let pending = app.devnet.provider.send_transaction(request).await.unwrap();
    app.mine(1).await;
    let receipt = pending.get_receipt().await.unwrap();
    assert!(receipt.status(), "the off-band authorization executed");
    let head = app.head().await;

    let report = app
        .get(
            &format!("/v1/reconciliation?from_block=0&to_block={head}"),
            &app.admin_token,
        )
        .await
        .body;
    let kinds: Vec<&str> = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"unknown_authorization"), "{report}");
    assert!(kinds.contains(&"unknown_outflow"), "{report}");

    app.mine(app.config.confirmations_required).await;
    assert_eq!(app.payments().reconcile_new_blocks().await.unwrap(), 2);
    let audit = app.get("/v1/audit?limit=500", &app.admin_token).await.body;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "unknown_authorization"
                && e["tx_hash"] == receipt.transaction_hash.to_string()),
        "{audit}"
    );
}

#[tokio::test]
async fn an_agent_that_makes_its_own_request_gets_the_header_and_the_chain_confirms_it() {
    let app = TestApp::spawn().await;
    let (token, _) = x402_agent(&app, json!({"max_per_payment": "1"})).await;
    let seller = recipient(0x55);
    let (base, _) = x402_seller(&app, seller, 100_000).await;
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    let http = reqwest::Client::new();
    let challenge = http.get(format!("{base}/report")).send().await.unwrap();
    assert_eq!(challenge.status(), StatusCode::PAYMENT_REQUIRED);
    let required: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(challenge.headers()["payment-required"].as_bytes())
            .unwrap(),
    )
    .unwrap();

    let body = json!({"payment_required": required});
    let authorized = app
        .request(
            Method::POST,
            "/v1/x402/authorize",
            Some(&token),
            Some(body.clone()),
            Some("own-1"),
        )
        .await;
    assert_eq!(authorized.status, StatusCode::OK, "{}", authorized.body);
    assert_eq!(authorized.body["header_name"], "PAYMENT-SIGNATURE");
    assert_eq!(authorized.body["payment"]["status"], "authorized");
    let header = authorized.body["header_value"]
        .as_str()
        .unwrap()
        .to_string();
    let id = authorized.body["payment"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let again = app
        .request(
            Method::POST,
            "/v1/x402/authorize",
            Some(&token),
            Some(body),
            Some("own-1"),
        )
        .await;
    assert_eq!(
        again.body["header_value"],
        header.as_str(),
        "a replay never signs again"
    );

    let paid = http
        .get(format!("{base}/report"))
        .header("PAYMENT-SIGNATURE", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(app.usdc_balance(seller).await, usdc("0.1"));

    // Bursar learns of it from the chain alone: AuthorizationUsed and the Transfer, at depth.
    app.devnet
        .provider
        .anvil_set_auto_mine(false)
        .await
        .unwrap();
    app.settle().await;
    assert_eq!(
        crate::support::payment(&app, &id).await["status"],
        "included"
    );
    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let confirmed = crate::support::payment(&app, &id).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    assert!(confirmed["block_hash"].as_str().unwrap().starts_with("0x"));
}

#[tokio::test]
async fn an_x402_v1_seller_is_paid_through_the_same_path() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, _) = x402_agent(&app, json!({"max_per_payment": "1"})).await;
    let seller = recipient(0x56);
    let (base, paid_requests) = x402_seller(&app, seller, 120_000).await;
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    let response = fetch(
        &app,
        &token,
        "v1-report",
        json!({"url": format!("{base}/report-v1")}),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(
        response.body["response"]["status"], 200,
        "{}",
        response.body
    );
    assert_eq!(response.body["response"]["body"], "the v1 report");
    assert_eq!(response.body["payment"]["status"], "submitted");
    assert_eq!(paid_requests.load(Ordering::SeqCst), 1);
    assert_eq!(app.usdc_balance(seller).await, usdc("0.12"));
}

#[tokio::test]
async fn an_x402_price_that_needs_a_human_is_signed_only_after_approval() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, _) = x402_agent(&app, json!({"require_approval_above": "0.1"})).await;
    let approver = app.staff_token("approver").await;
    let seller = recipient(0x57);
    let (base, paid_requests) = x402_seller(&app, seller, 250_000).await;
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    let body = json!({"url": format!("{base}/report")});

    let waiting = fetch(&app, &token, "needs-human", body.clone()).await;
    assert_eq!(waiting.status, StatusCode::ACCEPTED, "{}", waiting.body);
    assert!(waiting.body["response"].is_null());
    assert_eq!(waiting.body["payment"]["status"], "pending_approval");
    let id = waiting.body["payment"]["id"].as_str().unwrap().to_string();
    assert_eq!(paid_requests.load(Ordering::SeqCst), 0);
    // Asking again before the approval signs nothing.
    let again = fetch(&app, &token, "needs-human", body.clone()).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(paid_requests.load(Ordering::SeqCst), 0);

    let approved = app
        .post(
            &format!("/v1/payments/{id}/approve"),
            &approver,
            json!({"note": "ok"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.body);
    assert_eq!(approved.body["status"], "authorized");

    let paid = fetch(&app, &token, "needs-human", body).await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    assert_eq!(paid.body["response"]["status"], 200);
    assert_eq!(paid.body["payment"]["id"], id.as_str());
    assert_eq!(paid.body["payment"]["status"], "submitted");
    assert_eq!(paid_requests.load(Ordering::SeqCst), 1);
    assert_eq!(app.usdc_balance(seller).await, usdc("0.25"));
}

#[tokio::test]
async fn a_deep_reorg_under_a_confirmed_x402_payment_is_an_alarm_not_a_silent_lie() {
    let app = TestApp::spawn_with(&[("BURSAR_X402_ALLOW_PRIVATE_TARGETS", "true")]).await;
    let (token, _) = x402_agent(&app, json!({})).await;
    let (base, _) = x402_seller(&app, recipient(0x58), 100_000).await;
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    let paid = fetch(
        &app,
        &token,
        "reorged",
        json!({"url": format!("{base}/report")}),
    )
    .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.body);
    let id = paid.body["payment"]["id"].as_str().unwrap().to_string();
    app.devnet
        .provider
        .anvil_set_auto_mine(false)
        .await
        .unwrap();
    app.settle().await;
    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let confirmed = crate::support::payment(&app, &id).await;
    assert_eq!(confirmed["status"], "confirmed", "{confirmed}");
    let tx_hash = confirmed["tx_hash"].as_str().unwrap().to_string();
    let raw: Bytes = app
        .devnet
        .provider
        .raw_request("eth_getRawTransactionByHash".into(), (tx_hash.clone(),))
        .await
        .unwrap();

    // The blocks from the one that held the transfer on are replaced by empty ones.
    app.devnet
        .reorg(app.config.confirmations_required + 1)
        .await
        .unwrap();
    let report = app.settle().await;
    assert!(report.alarms >= 1, "{report:?}");
    let after = crate::support::payment(&app, &id).await;
    assert!(
        after["block_hash"].is_null(),
        "no longer claims a block: {after}"
    );
    assert!(
        audit_kinds(&app, &id)
            .await
            .contains(&"finality_violation".to_string())
    );

    // The seller's transfer lands again (the node may still hold it): once at depth, the payment
    // claims its canonical block again, and no second alarm is raised.
    let _ = app.devnet.provider.send_raw_transaction(&raw).await;
    app.mine(app.config.confirmations_required + 1).await;
    let report = app.settle().await;
    assert_eq!(report.alarms, 0, "{report:?}");
    let restored = crate::support::payment(&app, &id).await;
    assert_eq!(restored["status"], "confirmed", "{restored}");
    assert_eq!(restored["tx_hash"], tx_hash.as_str(), "{restored}");
    let number = restored["block_number"].as_u64().expect("a block again");
    let canonical = app.canonical_hash(number).await;
    assert_eq!(restored["block_hash"], canonical.as_str(), "{restored}");
    let kinds = audit_kinds(&app, &id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "finality_restored").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "finality_violation").count(),
        1,
        "{kinds:?}"
    );
}
