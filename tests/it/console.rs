//! The operator console in a real headless browser: Debian's `chromium` driven through
//! `chromium-driver` (WebDriver) by `fantoccini`. Screenshots of each page go to
//! `target/console-screenshots/`.

use crate::support::{TestApp, recipient};
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

/// Starts chromedriver on a free port and a headless Chromium session through it.
async fn browser() -> Browser {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver is installed (.ci/run installs Debian's chromium-driver)");
    // The driver is ready once it accepts connections.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "chromedriver did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1000"]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    Browser {
        client,
        _driver: driver,
    }
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(client: &Client, app: &TestApp, token: &str) {
    client
        .goto(&format!("{}/console", app.base_url))
        .await
        .unwrap();
    client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    client
        .find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Signed in once the page with the sign-out form has loaded.
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("form[action='/console/logout']"))
        .await
        .expect("signed in");
}

async fn text(client: &Client, css: &str) -> String {
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn session_cookie(client: &Client) -> String {
    client
        .get_named_cookie("bursar_session")
        .await
        .unwrap()
        .value()
        .to_string()
}

async fn csrf(client: &Client) -> String {
    client
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap()
}

/// A POST to the console as a browser would send it, with `cookie` and the form `fields`.
async fn forged_post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.base_url))
        .header("cookie", format!("bursar_session={cookie}"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn pending_payment(app: &TestApp) -> (String, String) {
    let (agent_id, _) = app.create_agent("console-agent").await;
    let token = app
        .credential(
            &agent_id,
            json!({"require_approval_above": "1", "daily_limit": "100"}),
        )
        .await;
    app.fund(&agent_id, "20", "0.01").await;
    let response = app.pay(&token, recipient(0x81), "5", "needs-a-human").await;
    assert_eq!(
        response.body["status"], "pending_approval",
        "{}",
        response.body
    );
    (response.body["id"].as_str().unwrap().to_string(), agent_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_approves_in_the_browser_and_watches_the_payment_confirm() {
    let app = TestApp::spawn().await;
    let approver = app.staff_token("approver").await;
    let browser = browser().await;
    let client = &browser.client;
    sign_in(client, &app, &approver).await;
    assert!(
        client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/approvals")
    );

    let hook = app
        .post(
            "/v1/webhooks",
            &app.admin_token,
            json!({"url": "http://127.0.0.1:9/hook", "events": ["payment.approval_required"]}),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);

    // A payment created over the API appears in the open page without a reload.
    let (id, agent_id) = pending_payment(&app).await;
    let deliveries = app
        .get(
            &format!(
                "/v1/webhooks/{}/deliveries",
                hook.body["id"].as_str().unwrap()
            ),
            &app.admin_token,
        )
        .await
        .body;
    assert_eq!(
        deliveries["data"][0]["type"], "payment.approval_required",
        "{deliveries}"
    );
    let database = app.database().await;
    let data: String = sqlx::query_scalar(
        "SELECT data FROM webhook_deliveries WHERE event_type = 'payment.approval_required'",
    )
    .fetch_one(&database)
    .await
    .unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["console_path"], format!("/console/payments/{id}"));
    let row = client
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!("#row-{id}")))
        .await
        .expect("the queue shows the new payment");
    let row_text = row.text().await.unwrap();
    assert!(row_text.contains("5"), "{row_text}");
    assert!(
        row_text.contains("require_approval_above"),
        "the decision's checks: {row_text}"
    );
    screenshot(client, "approvals").await;
    // At a phone's width the table becomes cards and nothing runs off the screen.
    client.set_window_size(390, 844).await.unwrap();
    let overflow: Value = client
        .execute("return document.documentElement.scrollWidth", vec![])
        .await
        .unwrap();
    assert!(
        overflow.as_u64().unwrap() <= 390,
        "the page fits a phone: {overflow}"
    );
    screenshot(client, "approvals-phone").await;
    client.set_window_size(1280, 1000).await.unwrap();

    client
        .find(Locator::Css(&format!("#row-{id} button.approve")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(client, "#status").await, "queued");
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    client.refresh().await.unwrap();
    assert_eq!(text(client, "#status").await, "confirmed");
    screenshot(client, "payment").await;
    let audit = app
        .get(&format!("/v1/audit?payment_id={id}"), &app.admin_token)
        .await
        .body;
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "payment_approved"
                && e["actor"].as_str().unwrap().starts_with("approver:"))
    );

    // Finance sees it in the spend page: the chart, the totals and the same numbers as CSV.
    client.delete_all_cookies().await.unwrap();
    sign_in(client, &app, &app.admin_token).await;
    client
        .goto(&format!("{}/console/spend", app.base_url))
        .await
        .unwrap();
    assert_eq!(text(client, "#total").await, "5 USDC");
    assert_eq!(
        client
            .find_all(Locator::Css("svg.chart rect"))
            .await
            .unwrap()
            .len(),
        1
    );
    screenshot(client, "spend").await;
    let cookie = session_cookie(client).await;
    let csv = app
        .http
        .get(format!("{}/console/spend.csv", app.base_url))
        .header("cookie", format!("bursar_session={cookie}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "day,agent_id,usdc");
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].ends_with(&format!("{agent_id},5")), "{csv}");
    browser.client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_csrf_and_revocation_hold_in_the_console() {
    let app = TestApp::spawn().await;
    let (id, _) = pending_payment(&app).await;
    let browser = browser().await;
    let client = &browser.client;

    // An auditor sees the queue but has no button, and a forged approval is refused.
    let auditor = app.staff_token("auditor").await;
    sign_in(client, &app, &auditor).await;
    client
        .goto(&format!("{}/console/approvals", app.base_url))
        .await
        .unwrap();
    client
        .find(Locator::Css(&format!("#row-{id}")))
        .await
        .unwrap();
    let buttons = client
        .find_all(Locator::Css("button.approve"))
        .await
        .unwrap();
    assert!(buttons.is_empty(), "an auditor has no approve button");
    let cookie = session_cookie(client).await;
    let token = csrf(client).await;
    let forged = forged_post(
        &app,
        &format!("/console/payments/{id}/approve"),
        &cookie,
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        forged
            .text()
            .await
            .unwrap()
            .contains("Your role may not do this")
    );
    for page in ["alarms", "agents"] {
        client
            .goto(&format!("{}/console/{page}", app.base_url))
            .await
            .unwrap();
        screenshot(client, page).await;
    }
    assert!(text(client, "#treasury").await.contains("USDC"));
    let headers = app
        .http
        .get(format!("{}/console/alarms", app.base_url))
        .header("cookie", format!("bursar_session={cookie}"))
        .send()
        .await
        .unwrap();
    let csp = headers.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));

    // An approver's cross-site POST without the session's CSRF token is refused.
    let approver_token = app
        .post(
            "/v1/tokens",
            &app.admin_token,
            json!({"role": "approver", "name": "console"}),
        )
        .await
        .body;
    client.delete_all_cookies().await.unwrap();
    sign_in(client, &app, approver_token["token"].as_str().unwrap()).await;
    let cookie = session_cookie(client).await;
    let cross_site = forged_post(
        &app,
        &format!("/console/payments/{id}/approve"),
        &cookie,
        &[("note", "x")],
    )
    .await;
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let wrong = forged_post(
        &app,
        &format!("/console/payments/{id}/approve"),
        &cookie,
        &[("csrf", "csrf_guess")],
    )
    .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let payment: Value = app
        .get(&format!("/v1/payments/{id}"), &app.admin_token)
        .await
        .body;
    assert_eq!(
        payment["status"], "pending_approval",
        "nothing was approved"
    );

    // Revoking the token ends its session at once.
    let revoked = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/tokens/{}", approver_token["id"].as_str().unwrap()),
            Some(&app.admin_token),
            None,
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.body);
    client
        .goto(&format!("{}/console/approvals", app.base_url))
        .await
        .unwrap();
    client
        .find(Locator::Id("login"))
        .await
        .expect("back at sign-in");
    let after = forged_post(
        &app,
        &format!("/console/payments/{id}/approve"),
        &cookie,
        &[],
    )
    .await;
    assert_eq!(after.url().path(), "/console", "sent back to sign in");
    let payment: Value = app
        .get(&format!("/v1/payments/{id}"), &app.admin_token)
        .await
        .body;
    assert_eq!(payment["status"], "pending_approval");
    browser.client.close().await.unwrap();
}
