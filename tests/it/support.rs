//! Test support: `TestApp::spawn()` starts anvil with Circle's USDC on a free port, builds Bursar
//! on a SQLite file in a temp dir, funds the treasury and serves HTTP on port 0. The settlement
//! worker is not started: tests drive the chain step by step (`settle` runs one pass, `mine`
//! mines blocks) so nothing waits on a timer.

use alloy::providers::Provider;
use bursar::app::{self, Running};
use bursar::chain::devnet::{self, Devnet};
use bursar::config::Config;
use bursar::custody::MasterKey;
use bursar::domain::{Address, Amount};
use bursar::payments::settlement::PassReport;
use bursar::payments::{ManualClock, Payments};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub struct TestApp {
    pub devnet: Devnet,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub clock: Arc<ManualClock>,
    pub running: Option<Running>,
    pub base_url: String,
    pub admin_token: String,
    pub http: reqwest::Client,
}

pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// Like `spawn`, with extra `BURSAR_*` settings.
    pub async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
        let devnet = Devnet::start().await.expect("devnet starts");
        let rpc_url = devnet.rpc_url.clone();
        Self::spawn_on(devnet, rpc_url, settings).await
    }

    /// Like `spawn`, with the service reaching the devnet through an `RpcRelay`.
    pub async fn spawn_relayed() -> (TestApp, RpcRelay) {
        let devnet = Devnet::start().await.expect("devnet starts");
        let relay = RpcRelay::start(&devnet.rpc_url).await;
        (Self::spawn_on(devnet, relay.url.clone(), &[]).await, relay)
    }

    async fn spawn_on(devnet: Devnet, rpc_url: String, settings: &[(&str, &str)]) -> TestApp {
        let extra: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let master_key_file = dir.path().join("master.key");
        MasterKey::generate_file(&master_key_file).unwrap();
        let admin_token = bursar::domain::new_secret_token("bsr_admin");
        let database_url = format!("sqlite://{}", dir.path().join("bursar.db").display());
        let usdc = devnet.usdc.to_string();
        let master = master_key_file.display().to_string();
        let token = admin_token.clone();
        let config = Config::from_sources(None, move |key| match key {
            "BURSAR_LISTEN" => Some("127.0.0.1:0".into()),
            "BURSAR_DATABASE_URL" => Some(database_url.clone()),
            "BURSAR_RPC_URL" => Some(rpc_url.clone()),
            "BURSAR_USDC_ADDRESS" => Some(usdc.clone()),
            "BURSAR_MASTER_KEY_FILE" => Some(master.clone()),
            "BURSAR_ADMIN_TOKEN" => Some(token.clone()),
            other => extra
                .iter()
                .find(|(k, _)| k == other)
                .map(|(_, v)| v.clone()),
        })
        .unwrap();
        let clock = Arc::new(ManualClock::new());
        let mut test = TestApp {
            devnet,
            dir,
            config,
            clock,
            running: None,
            base_url: String::new(),
            admin_token,
            http: reqwest::Client::new(),
        };
        test.start().await;
        let treasury = test
            .payments()
            .ensure_treasury()
            .await
            .unwrap()
            .address()
            .unwrap();
        test.devnet
            .mint(treasury, devnet::TREASURY_USDC)
            .await
            .unwrap();
        test.devnet
            .set_eth_balance(treasury, devnet::TREASURY_ETH)
            .await
            .unwrap();
        test
    }

    async fn start(&mut self) {
        let payments = app::build(&self.config, self.clock.clone())
            .await
            .expect("app builds");
        let running = app::start(
            payments,
            self.config.listen,
            Duration::from_secs(3600),
            false,
            self.config.mcp_allowed_hosts.clone(),
        )
        .await
        .unwrap();
        self.base_url = format!("http://{}", running.address);
        self.running = Some(running);
    }

    /// Stops the service and starts a new one on the same database, master key and chain.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().stop().await.unwrap();
        self.start().await;
    }

    pub fn payments(&self) -> &Payments {
        &self.running.as_ref().unwrap().payments
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None, None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body), None)
            .await
    }

    /// Creates an agent (admin) and returns `(agent_id, address)`.
    pub async fn create_agent(&self, name: &str) -> (String, Address) {
        let response = self
            .post("/v1/agents", &self.admin_token, json!({"name": name}))
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        let address = Address::parse(response.body["address"].as_str().unwrap()).unwrap();
        (response.body["id"].as_str().unwrap().to_string(), address)
    }

    /// Creates an API token of `role` (admin) and returns the secret.
    pub async fn staff_token(&self, role: &str) -> String {
        let response = self
            .post(
                "/v1/tokens",
                &self.admin_token,
                json!({"role": role, "name": role}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["token"].as_str().unwrap().to_string()
    }

    /// Issues a credential with `policy` and returns its token.
    pub async fn credential(&self, agent_id: &str, policy: Value) -> String {
        let response = self
            .post(
                &format!("/v1/agents/{agent_id}/credentials"),
                &self.admin_token,
                json!({"name": "test", "policy": policy}),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
        response.body["token"].as_str().unwrap().to_string()
    }

    /// Funds an agent through the API and settles the funding to `confirmed`.
    pub async fn fund(&self, agent_id: &str, usdc: &str, gas_eth: &str) {
        let response = self
            .request(
                Method::POST,
                "/v1/treasury/fundings",
                Some(&self.admin_token),
                Some(json!({"agent_id": agent_id, "amount": usdc, "gas_eth": gas_eth})),
                Some(&format!("fund-{agent_id}-{usdc}")),
            )
            .await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.body);
        let id = response.body["id"].as_str().unwrap().to_string();
        self.settle_to_confirmed(&[id]).await;
    }

    /// Agent pays `amount` to `to` with the given idempotency key.
    pub async fn pay(&self, token: &str, to: Address, amount: &str, key: &str) -> Response {
        self.request(
            Method::POST,
            "/v1/payments",
            Some(token),
            Some(
                json!({"to": to.to_string(), "amount": amount, "currency": "USDC", "memo": "test"}),
            ),
            Some(key),
        )
        .await
    }

    /// `pay`, expecting acceptance, and returns the payment id.
    pub async fn pay_id(&self, token: &str, to: Address, amount: &str, key: &str) -> String {
        let response = self.pay(token, to, amount, key).await;
        assert!(response.status.is_success(), "{}", response.body);
        response.body["id"].as_str().unwrap().to_string()
    }

    /// What settlement signed first for a payment, from its `transaction_signed` audit event:
    /// `(max_fee_per_gas, usdc_gas_limit)`.
    pub async fn signed_fees(&self, payment_id: &str) -> (u128, u128) {
        let events = self
            .get(
                &format!("/v1/audit?payment_id={payment_id}&limit=500"),
                &self.admin_token,
            )
            .await
            .body;
        let signed = events["data"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|e| e["kind"] == "transaction_signed")
            .expect("a transaction_signed event")
            .clone();
        let max_fee = signed["detail"]["max_fee_per_gas"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let gas_limit = signed["detail"]["usdc_gas_limit"].as_u64().unwrap_or(0);
        (max_fee, u128::from(gas_limit))
    }

    /// One settlement pass.
    pub async fn settle(&self) -> PassReport {
        self.payments()
            .settle_once()
            .await
            .expect("settlement pass")
    }

    pub async fn mine(&self, blocks: u64) {
        self.devnet.mine(blocks).await.unwrap();
    }

    /// Sign and broadcast, mine the inclusion block and the confirmations, one pass each, and
    /// assert every payment ends `confirmed`.
    pub async fn settle_to_confirmed(&self, ids: &[String]) {
        self.settle().await;
        self.mine(1).await;
        self.settle().await;
        self.mine(self.config.confirmations_required).await;
        self.settle().await;
        for id in ids {
            let payment = self
                .get(&format!("/v1/payments/{id}"), &self.admin_token)
                .await;
            assert_eq!(payment.body["status"], "confirmed", "{}", payment.body);
        }
    }

    /// Mines one block and runs one pass: enough for a broadcast transaction to be included, or
    /// to fail if it reverted.
    pub async fn settle_to_included_or_failed(&self) {
        self.mine(1).await;
        self.settle().await;
    }

    /// The receipt of `tx_hash` and the USDC `Transfer` events it logged.
    pub async fn usdc_transfers_of(
        &self,
        tx_hash: &str,
    ) -> (
        alloy::rpc::types::TransactionReceipt,
        Vec<bursar::chain::usdc::IUSDC::Transfer>,
    ) {
        use alloy::sol_types::SolEvent;
        use bursar::chain::usdc::IUSDC;
        let hash: alloy::primitives::B256 = tx_hash.parse().unwrap();
        let receipt = self
            .devnet
            .provider
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .unwrap();
        let transfers = receipt
            .inner
            .logs()
            .iter()
            .filter(|log| {
                log.address() == self.devnet.usdc.into_inner()
                    && log.topic0() == Some(&IUSDC::Transfer::SIGNATURE_HASH)
            })
            .map(|log| IUSDC::Transfer::decode_log(&log.inner).unwrap().data)
            .collect();
        (receipt, transfers)
    }

    /// The USDC balance of `address`, read from the node directly (not through Bursar).
    pub async fn usdc_balance(&self, address: Address) -> Amount {
        let token =
            bursar::chain::usdc::IUSDC::new(self.devnet.usdc.into_inner(), &self.devnet.provider);
        let units = token.balanceOf(address.into_inner()).call().await.unwrap();
        Amount::from_base_units(u128::try_from(units).unwrap()).unwrap()
    }

    /// A connection pool of the test's own on the service's database file, for tests that
    /// inspect or tamper with what is stored.
    pub async fn database(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.config.database_url)
            .await
            .unwrap()
    }

    pub async fn head(&self) -> u64 {
        self.devnet.provider.get_block_number().await.unwrap()
    }

    /// The hash of the canonical block at `number`, as the API writes it.
    pub async fn canonical_hash(&self, number: u64) -> String {
        let block = self
            .devnet
            .provider
            .get_block_by_number(number.into())
            .await;
        let block = block.unwrap().expect("a block at that height");
        block.header.hash.to_string()
    }
}

/// A fresh recipient address that nobody controls.
pub fn recipient(byte: u8) -> Address {
    Address::from(alloy::primitives::Address::repeat_byte(byte))
}

/// An amount of USDC from its decimal text.
pub fn usdc(text: &str) -> Amount {
    Amount::parse_positive(text).unwrap()
}

/// A payment as the admin reads it over the API.
pub async fn payment(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/payments/{id}"), &app.admin_token)
        .await
        .body
}

/// A JSON-RPC relay between the service and the devnet: it counts the methods the service calls
/// (each call of a batch too) and, when armed, has the devnet mine a block just before it
/// forwards a chosen method, so a test can land a block at an exact point of a pass. It can also
/// answer the nonce reads at one block from a newer state, as a node that counts a block in its
/// state before it serves the block does.
pub struct RpcRelay {
    pub url: String,
    state: Arc<RelayState>,
}

struct RelayState {
    upstream: String,
    http: reqwest::Client,
    calls: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    mine_before: std::sync::Mutex<Option<String>>,
    /// `eth_getTransactionCount` at this block (hex) is asked at this tag instead.
    nonce_reads: std::sync::Mutex<Option<(String, String)>>,
    /// The next request's `eth_getLogs` calls are answered with no logs.
    hide_logs: std::sync::atomic::AtomicBool,
    /// Calls of this method are answered with a JSON-RPC error, as by a node that cannot serve
    /// them now.
    refused: std::sync::Mutex<Option<String>>,
}

impl RpcRelay {
    async fn start(upstream: &str) -> RpcRelay {
        let state = Arc::new(RelayState {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            calls: Default::default(),
            mine_before: Default::default(),
            nonce_reads: Default::default(),
            hide_logs: Default::default(),
            refused: Default::default(),
        });
        let router = axum::Router::new()
            .route("/", axum::routing::post(relay))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        RpcRelay { url, state }
    }

    /// How many times the service called `method` so far.
    pub fn calls(&self, method: &str) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Mines one block before the next request that calls `method` is forwarded.
    pub fn mine_before_next(&self, method: &str) {
        *self.state.mine_before.lock().unwrap() = Some(method.to_string());
    }

    /// Answers the `eth_getLogs` calls of the next request that has any with no logs, as a node
    /// serving a block before it stores the block's transactions does.
    pub fn hide_logs_once(&self) {
        self.state
            .hide_logs
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Until `None`, answers every call of `method` with a JSON-RPC error.
    pub fn refuse(&self, method: Option<&str>) {
        *self.state.refused.lock().unwrap() = method.map(str::to_string);
    }

    /// Until `None`, answers every `eth_getTransactionCount` at block `number` at `tag`
    /// ("latest", "pending") instead.
    pub fn nonce_reads_at(&self, at: Option<(u64, &str)>) {
        *self.state.nonce_reads.lock().unwrap() =
            at.map(|(number, tag)| (format!("{number:#x}"), tag.to_string()));
    }
}

/// `request` with its nonce reads at the relay's chosen block asked at its chosen tag.
fn retarget_nonce_reads(state: &RelayState, mut request: Value) -> Value {
    let Some((number, tag)) = state.nonce_reads.lock().unwrap().clone() else {
        return request;
    };
    let calls: Vec<&mut Value> = match &mut request {
        Value::Array(calls) => calls.iter_mut().collect(),
        call => vec![call],
    };
    for call in calls {
        if call["method"] == "eth_getTransactionCount" && call["params"][1] == number.as_str() {
            call["params"][1] = json!(tag);
        }
    }
    request
}

async fn relay(
    axum::extract::State(state): axum::extract::State<Arc<RelayState>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let methods: Vec<String> = match &request {
        Value::Array(calls) => calls.iter().collect(),
        call => vec![call],
    }
    .into_iter()
    .filter_map(|call| call["method"].as_str().map(str::to_string))
    .collect();
    for method in &methods {
        *state
            .calls
            .lock()
            .unwrap()
            .entry(method.clone())
            .or_default() += 1;
    }
    let armed = {
        let mut armed = state.mine_before.lock().unwrap();
        match armed.as_ref() {
            Some(method) if methods.contains(method) => armed.take(),
            _ => None,
        }
    };
    if armed.is_some() {
        let mine = json!({"jsonrpc": "2.0", "id": 0, "method": "evm_mine", "params": []});
        let mined = state.http.post(&state.upstream).json(&mine).send().await;
        assert!(mined.unwrap().status().is_success());
    }
    let body = serde_json::to_vec(&retarget_nonce_reads(&state, request.clone())).unwrap();
    let answer = state
        .http
        .post(&state.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let mut bytes = answer.bytes().await.unwrap();
    if methods.iter().any(|method| method == "eth_getLogs")
        && state
            .hide_logs
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    {
        bytes = rewrite_answers(&request, &bytes, "eth_getLogs", |entry| {
            entry["result"] = json!([]);
        })
        .into();
    }
    let refused = state.refused.lock().unwrap().clone();
    if let Some(refused) = refused.filter(|method| methods.contains(method)) {
        bytes = rewrite_answers(&request, &bytes, &refused, |entry| {
            let id = entry["id"].clone();
            *entry = json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32000, "message": "refused by the test relay"}});
        })
        .into();
    }
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(bytes))
        .unwrap()
}

/// The node's `answers` to `request`, with the answer to each call of `method` rewritten.
fn rewrite_answers(
    request: &Value,
    answers: &[u8],
    method: &str,
    rewrite: impl Fn(&mut Value),
) -> Vec<u8> {
    let mut answers: Value = serde_json::from_slice(answers).unwrap();
    let ids: Vec<Value> = match request {
        Value::Array(calls) => calls.iter().collect(),
        call => vec![call],
    }
    .into_iter()
    .filter(|call| call["method"] == method)
    .map(|call| call["id"].clone())
    .collect();
    let entries: Vec<&mut Value> = match &mut answers {
        Value::Array(entries) => entries.iter_mut().collect(),
        entry => vec![entry],
    };
    for entry in entries {
        if ids.contains(&entry["id"]) {
            rewrite(entry);
        }
    }
    serde_json::to_vec(&answers).unwrap()
}
