//! Settlement never sticks and never lies: every nonce slot resolves from what the chain says,
//! every refused transaction is diagnosed from the chain's state, and every moved dollar ends
//! confirmed exactly once. Each test drives anvil (with Circle's USDC) step by step.

use crate::support::{TestApp, payment, recipient, usdc};
use alloy::network::TransactionBuilder;
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use bursar::domain::{Address, Amount};
use bursar::payments::PaymentsError;
use serde_json::{Value, json};

/// The payment's audit events, oldest first.
async fn events(app: &TestApp, id: &str) -> Vec<Value> {
    let body = app
        .get(
            &format!("/v1/audit?payment_id={id}&limit=500"),
            &app.admin_token,
        )
        .await
        .body;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .cloned()
        .collect()
}

async fn count_kind(app: &TestApp, id: &str, kind: &str) -> usize {
    events(app, id)
        .await
        .iter()
        .filter(|e| e["kind"] == kind)
        .count()
}

/// A funded agent (1000 USDC, 1 ETH) with an unlimited credential: `(agent_id, address, token)`.
async fn funded_agent(app: &TestApp, name: &str) -> (String, Address, String) {
    let (agent, address) = app.create_agent(name).await;
    app.fund(&agent, "1000", "1").await;
    let token = app.credential(&agent, json!({})).await;
    (agent, address, token)
}

/// Settlement signs and stores the payment's transaction, then the process dies before it is
/// broadcast; a new process starts on the same database.
async fn crash_after_sign(app: &mut TestApp) {
    app.payments().arm_fail_point("after_sign");
    let crashed = app.payments().settle_once().await;
    assert!(
        matches!(crashed, Err(PaymentsError::FailPoint("after_sign"))),
        "{crashed:?}"
    );
    app.restart().await;
}

/// Runs passes, mining a block after each, until the payment reaches `status` (at most `passes`).
async fn settle_until(app: &TestApp, id: &str, status: &str, passes: usize) -> Value {
    for _ in 0..passes {
        app.settle().await;
        let body = payment(app, id).await;
        if body["status"] == status {
            return body;
        }
        app.mine(1).await;
    }
    let body = payment(app, id).await;
    panic!(
        "payment never reached {status}: {body}\n{:#?}",
        events(app, id).await
    );
}

async fn spent_24h(app: &TestApp, agent: &str) -> Value {
    app.get(&format!("/v1/agents/{agent}"), &app.admin_token)
        .await
        .body["spent_24h"]
        .clone()
}

fn hash(value: &Value) -> B256 {
    value.as_str().unwrap().parse().unwrap()
}

async fn has_receipt(app: &TestApp, tx_hash: B256) -> bool {
    app.devnet
        .provider
        .get_transaction_receipt(tx_hash)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_original_mined_before_its_replacement_is_sent_confirms_the_payment() {
    let mut app = TestApp::spawn_with(&[("BURSAR_STUCK_AFTER_BLOCKS", "1")]).await;
    let (_, _, token) = funded_agent(&app, "race").await;
    let to = recipient(0xa1);
    let id = app.pay_id(&token, to, "6", "race").await;
    app.settle().await;
    let original = payment(&app, &id).await;
    let t1 = hash(&original["tx_hash"]);
    let raw_t1 = app
        .devnet
        .provider
        .get_raw_transaction_by_hash(t1)
        .await
        .unwrap()
        .unwrap();
    let (max_fee, _) = app.signed_fees(&id).await;

    // A base-fee spike leaves T1 stuck; the replacement T2 is stored and the process dies before
    // T2 reaches the node.
    app.devnet
        .provider
        .anvil_set_next_block_base_fee_per_gas(max_fee + 1)
        .await
        .unwrap();
    app.mine(1).await;
    app.payments().arm_fail_point("after_replace");
    let crashed = app.payments().settle_once().await;
    assert!(
        matches!(crashed, Err(PaymentsError::FailPoint("after_replace"))),
        "{crashed:?}"
    );
    let t2 = hash(&payment(&app, &id).await["tx_hash"]);
    assert_ne!(t1, t2, "the replacement is the payment's live transaction");
    app.restart().await;

    // Fees fall back and T1 is mined before T2 was ever sent.
    app.devnet
        .provider
        .anvil_set_next_block_base_fee_per_gas(1)
        .await
        .unwrap();
    let _ = app.devnet.provider.send_raw_transaction(&raw_t1).await;
    app.mine(1).await;
    assert!(has_receipt(&app, t1).await, "T1 is mined");

    app.settle().await;
    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let done = payment(&app, &id).await;
    assert_eq!(done["status"], "confirmed", "{done}");
    assert_eq!(
        hash(&done["tx_hash"]),
        t1,
        "T1 is the transaction of record"
    );
    assert!(!has_receipt(&app, t2).await);
    assert_eq!(
        app.usdc_balance(to).await,
        usdc("6"),
        "exactly one transfer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_used_outside_bursar_is_an_alarm_and_the_payment_is_signed_again() {
    let mut app = TestApp::spawn().await;
    let (agent, address, token) = funded_agent(&app, "foreign").await;
    let to = recipient(0xa2);
    let id = app.pay_id(&token, to, "7", "foreign").await;
    crash_after_sign(&mut app).await;
    let stale = hash(&payment(&app, &id).await["tx_hash"]);

    // Someone with the wallet's key sends a transaction at the nonce Bursar signed for.
    let outside = |app: &TestApp| {
        let provider = app.devnet.provider.clone();
        async move {
            provider
                .anvil_impersonate_account(address.into_inner())
                .await
                .unwrap();
            let request = alloy::rpc::types::TransactionRequest::default()
                .with_from(address.into_inner())
                .with_to(address.into_inner())
                .with_value(U256::ZERO);
            provider
                .anvil_send_impersonated_transaction(request)
                .await
                .unwrap();
        }
    };
    outside(&app).await;
    app.mine(1).await;

    let confirmed = settle_until(&app, &id, "confirmed", 12).await;
    assert_eq!(count_kind(&app, &id, "nonce_consumed_externally").await, 1);
    assert_eq!(confirmed["nonce"], 1, "signed again at a fresh nonce");
    assert!(
        !has_receipt(&app, stale).await,
        "the stale transaction never ran"
    );
    assert_eq!(
        app.usdc_balance(to).await,
        usdc("7"),
        "exactly one transfer"
    );

    // Another outside transaction while nothing is in flight: the next payment (here a sweep)
    // is signed at the chain's nonce, not at the stale counter.
    outside(&app).await;
    app.mine(1).await;
    let sweep = app
        .post(
            &format!("/v1/agents/{agent}/sweep"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(sweep.status, 202, "{}", sweep.body);
    let sweep_id = sweep.body["id"].as_str().unwrap().to_string();
    let swept = settle_until(&app, &sweep_id, "confirmed", 12).await;
    assert_eq!(swept["nonce"], 3);
    assert_eq!(count_kind(&app, &sweep_id, "nonce_resynced").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_without_gas_waits_with_a_reason_and_pays_once_it_has_gas() {
    let mut app = TestApp::spawn_with(&[("BURSAR_GAS_FLOAT_MIN_ETH", "0")]).await;
    let (agent, address, token) = funded_agent(&app, "no-gas").await;
    let to = recipient(0xa3);
    let id = app.pay_id(&token, to, "5", "no-gas").await;
    crash_after_sign(&mut app).await;
    app.devnet.set_eth_balance(address, "0").await.unwrap();

    for _ in 0..4 {
        app.settle().await;
        app.mine(1).await;
    }
    let waiting = payment(&app, &id).await;
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(waiting["waiting_reason"], "insufficient_gas");
    assert_eq!(
        count_kind(&app, &id, "payment_stalled").await,
        1,
        "alarmed once"
    );
    assert_eq!(spent_24h(&app, &agent).await, "5", "the budget stays held");
    // With the gas float off nothing tops the wallet up, and the payment is never failed early.
    let fundings = app
        .get(&format!("/v1/payments?agent_id={agent}"), &app.admin_token)
        .await
        .body;
    let topups = fundings["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "funding")
        .count();
    assert_eq!(topups, 1, "only the initial funding");

    app.devnet.set_eth_balance(address, "1").await.unwrap();
    let confirmed = settle_until(&app, &id, "confirmed", 8).await;
    assert!(confirmed["waiting_reason"].is_null());
    assert_eq!(app.usdc_balance(to).await, usdc("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gas_float_tops_up_a_wallet_whose_signed_transaction_waits_for_gas() {
    let mut app = TestApp::spawn_with(&[
        ("BURSAR_GAS_FLOAT_MIN_ETH", "0.001"),
        ("BURSAR_GAS_FLOAT_TOPUP_ETH", "0.01"),
    ])
    .await;
    let (agent, address, token) = funded_agent(&app, "float").await;
    let to = recipient(0xa4);
    let id = app.pay_id(&token, to, "5", "float").await;
    crash_after_sign(&mut app).await;
    app.devnet.set_eth_balance(address, "0").await.unwrap();

    app.settle().await;
    assert_eq!(
        payment(&app, &id).await["waiting_reason"],
        "insufficient_gas"
    );
    let confirmed = settle_until(&app, &id, "confirmed", 12).await;
    assert_eq!(app.usdc_balance(to).await, usdc("5"), "paid once");
    let fundings = app
        .get(&format!("/v1/payments?agent_id={agent}"), &app.admin_token)
        .await
        .body;
    let topup = fundings["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "funding" && p["gas_wei"] == "10000000000000000")
        .cloned()
        .expect("a gas top-up");
    assert_eq!(topup["status"], "confirmed");
    assert!(
        confirmed["nonce"] == 0,
        "the signed bytes ran as they were: {confirmed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_the_node_keeps_refusing_has_its_slot_filled_then_fails() {
    let mut app = TestApp::spawn_with(&[("BURSAR_UNSENDABLE_AFTER_BLOCKS", "3")]).await;
    let (agent, _, token) = funded_agent(&app, "refused").await;
    let to = recipient(0xa5);
    let id = app.pay_id(&token, to, "4", "refused").await;
    crash_after_sign(&mut app).await;
    // A lasting refusal that is neither gas nor price: the block gas limit falls below the
    // transfer's gas limit (a plain 21,000-gas transfer still fits).
    let limit = app.devnet.provider.anvil_set_block_gas_limit(30_000).await;
    assert!(limit.unwrap());

    app.settle().await;
    let refused = payment(&app, &id).await;
    assert_eq!(refused["waiting_reason"], "node_refused", "{refused}");
    app.mine(1).await;
    app.settle().await;
    assert_eq!(
        count_kind(&app, &id, "nonce_filler_signed").await,
        0,
        "not before the bound"
    );
    app.mine(2).await;
    app.settle().await;
    assert_eq!(count_kind(&app, &id, "nonce_filler_signed").await, 1);
    app.mine(1).await;
    app.settle().await;
    let filling = payment(&app, &id).await;
    assert_eq!(
        filling["status"], "submitted",
        "not failed before the filler's depth: {filling}"
    );
    assert_eq!(
        filling["waiting_reason"],
        "nonce_filler_pending",
        "{:#?}",
        events(&app, &id).await
    );
    assert_eq!(spent_24h(&app, &agent).await, "4", "still held");

    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let failed = payment(&app, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["failure_reason"], "unsendable");
    assert_eq!(
        spent_24h(&app, &agent).await,
        "0",
        "released at final failure"
    );

    app.devnet
        .provider
        .anvil_set_block_gas_limit(30_000_000)
        .await
        .unwrap();
    assert_eq!(app.usdc_balance(to).await, Amount::ZERO);
    let next = app.pay_id(&token, to, "1", "after").await;
    let confirmed = settle_until(&app, &next, "confirmed", 8).await;
    assert_eq!(
        confirmed["nonce"], 1,
        "the filler took nonce 0; nothing is blocked"
    );
    assert_eq!(app.usdc_balance(to).await, usdc("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revert_undone_by_a_reorg_before_depth_is_not_final_and_confirms() {
    let app = TestApp::spawn().await;
    let (agent, _, token) = funded_agent(&app, "revert").await;
    let to = recipient(0xa6);
    let id = app.pay_id(&token, to, "3", "revert").await;
    app.settle().await;
    let tx_hash = hash(&payment(&app, &id).await["tx_hash"]);
    app.devnet
        .provider
        .anvil_drop_transaction(tx_hash)
        .await
        .unwrap();
    app.devnet.blacklist(to).await.unwrap();
    app.settle().await; // rebroadcast, into a chain where the recipient is blacklisted
    app.mine(1).await;
    app.settle().await;
    let reverted = payment(&app, &id).await;
    assert_eq!(reverted["status"], "included", "{reverted}");
    assert_eq!(reverted["waiting_reason"], "revert_awaiting_depth");
    assert_eq!(
        spent_24h(&app, &agent).await,
        "3",
        "the budget is not released early"
    );

    // The block with the revert leaves the chain, the blacklisting is lifted, and the same
    // bytes succeed on the new chain.
    app.devnet.reorg(1).await.unwrap();
    app.devnet.unblacklist(to).await.unwrap();
    let confirmed = settle_until(&app, &id, "confirmed", 10).await;
    assert_eq!(hash(&confirmed["tx_hash"]), tx_hash);
    assert!(confirmed["failure_reason"].is_null());
    assert_eq!(count_kind(&app, &id, "payment_failed").await, 0);
    assert_eq!(app.usdc_balance(to).await, usdc("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_reorg_of_a_confirmed_payment_is_alarmed_and_repaired() {
    let app = TestApp::spawn().await;
    let (_, _, token) = funded_agent(&app, "deep").await;
    let to = recipient(0xa7);
    let id = app.pay_id(&token, to, "2", "deep").await;
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    let before = payment(&app, &id).await;

    app.devnet
        .reorg(app.config.confirmations_required + 1)
        .await
        .unwrap();
    assert_eq!(
        app.usdc_balance(to).await,
        Amount::ZERO,
        "the reorg undid it"
    );
    assert_eq!(app.settle().await.alarms, 1);
    assert_eq!(count_kind(&app, &id, "finality_violation").await, 1);
    let repaired = settle_until(&app, &id, "confirmed", 1).await;
    assert_eq!(
        repaired["orphaned_blocks"][0]["block_hash"],
        before["block_hash"]
    );
    for _ in 0..(app.config.confirmations_required + 2) {
        app.mine(1).await;
        app.settle().await;
    }
    let after = payment(&app, &id).await;
    assert_eq!(after["status"], "confirmed");
    assert_eq!(after["tx_hash"], before["tx_hash"], "the same signed bytes");
    assert_ne!(after["block_hash"], before["block_hash"], "{after}");
    assert_eq!(count_kind(&app, &id, "finality_restored").await, 1);
    assert_eq!(
        count_kind(&app, &id, "finality_violation").await,
        1,
        "alarmed once"
    );
    assert_eq!(app.usdc_balance(to).await, usdc("2"), "paid exactly once");

    let next = app.pay_id(&token, to, "1", "next").await;
    let confirmed = settle_until(&app, &next, "confirmed", 8).await;
    assert_eq!(confirmed["nonce"], 1);
    assert_eq!(app.usdc_balance(to).await, usdc("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_cancels_a_signed_unsent_payment_and_the_wallet_works_after_unfreeze() {
    let mut app = TestApp::spawn().await;
    let (agent, _, token) = funded_agent(&app, "freeze").await;
    let to = recipient(0xa8);
    let id = app.pay_id(&token, to, "9", "freeze").await;
    crash_after_sign(&mut app).await;
    assert!(!payment(&app, &id).await["tx_hash"].is_null(), "signed");

    let frozen = app
        .post(
            &format!("/v1/agents/{agent}/freeze"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(frozen.status, 200, "{}", frozen.body);
    let cancelled = payment(&app, &id).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["failure_reason"], "agent_frozen");
    for _ in 0..(app.config.confirmations_required + 2) {
        app.settle().await;
        app.mine(1).await;
    }
    assert_eq!(count_kind(&app, &id, "nonce_filler_signed").await, 1);
    assert_eq!(payment(&app, &id).await["status"], "cancelled");
    assert_eq!(app.usdc_balance(to).await, Amount::ZERO, "nothing moved");

    let unfrozen = app
        .post(
            &format!("/v1/agents/{agent}/unfreeze"),
            &app.admin_token,
            json!({}),
        )
        .await;
    assert_eq!(unfrozen.status, 200);
    let next = app.pay_id(&token, to, "1", "after").await;
    let confirmed = settle_until(&app, &next, "confirmed", 8).await;
    assert_eq!(confirmed["nonce"], 1, "the filler took nonce 0");
    assert_eq!(app.usdc_balance(to).await, usdc("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_whose_key_cannot_be_unsealed_is_parked_and_others_keep_settling() {
    let app = TestApp::spawn().await;
    let (broken_agent, broken_address, broken) = funded_agent(&app, "broken").await;
    let (_, _, healthy) = funded_agent(&app, "healthy").await;
    let pool = sqlx::SqlitePool::connect(&app.config.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE wallets SET sealed_key = zeroblob(length(sealed_key)) WHERE address = ?")
        .bind(broken_address.to_string())
        .execute(&pool)
        .await
        .unwrap();
    let stuck = app.pay_id(&broken, recipient(0xa9), "1", "broken").await;
    let fine = app.pay_id(&healthy, recipient(0xaa), "1", "healthy").await;

    let report = app.settle().await;
    assert_eq!(report.parked, 1, "{report:?}");
    app.settle_to_confirmed(std::slice::from_ref(&fine)).await;
    let parked = payment(&app, &stuck).await;
    assert_eq!(parked["status"], "queued");
    assert_eq!(parked["waiting_reason"], "wallet_key_unavailable");
    assert_eq!(
        count_kind(&app, &stuck, "payment_stalled").await,
        1,
        "alarmed once"
    );
    let _ = broken_agent;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gas_already_in_flight_is_counted_before_signing_more() {
    let app = TestApp::spawn().await;
    let (_, address, token) = funded_agent(&app, "in-flight").await;
    let to = recipient(0xab);
    let first = app.pay_id(&token, to, "1", "first").await;
    app.settle().await;
    let (_, gas_limit) = app.signed_fees(&first).await;
    app.settle_to_confirmed(std::slice::from_ref(&first)).await;

    // Enough ETH for one more transfer (to a fresh recipient, like the first) at the fee cap
    // the next pass will sign with, not for two.
    // The fee cap the next pass will sign with: the node's estimate, as settlement reads it.
    let max_fee = app
        .devnet
        .provider
        .estimate_eip1559_fees()
        .await
        .unwrap()
        .max_fee_per_gas;
    app.devnet
        .provider
        .anvil_set_balance(
            address.into_inner(),
            U256::from(gas_limit * max_fee * 3 / 2),
        )
        .await
        .unwrap();
    let second = app.pay_id(&token, recipient(0xac), "1", "second").await;
    let third = app.pay_id(&token, recipient(0xad), "1", "third").await;
    let report = app.settle().await;
    assert_eq!(report.signed, 1, "{report:?}");
    assert_eq!(payment(&app, &second).await["status"], "submitted");
    let waiting = payment(&app, &third).await;
    assert_eq!(waiting["status"], "queued");
    assert!(
        waiting["tx_hash"].is_null(),
        "nothing signed the node would refuse"
    );
    assert_eq!(waiting["waiting_reason"], "insufficient_gas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_under_a_base_fee_spike_is_re_signed_to_clear_it() {
    let app = TestApp::spawn().await;
    let (_, _, token) = funded_agent(&app, "spike").await;
    let to = recipient(0xae);
    let id = app.pay_id(&token, to, "8", "spike").await;
    app.settle().await;
    let original = payment(&app, &id).await;
    let t1 = hash(&original["tx_hash"]);
    let (max_fee, _) = app.signed_fees(&id).await;

    // The base fee jumps far above the fee cap and stays there; the node drops the transaction
    // and refuses its stored bytes. Waiting would not help (the default stuck bound is 5 blocks).
    app.devnet
        .provider
        .anvil_set_next_block_base_fee_per_gas(max_fee * 4)
        .await
        .unwrap();
    let raw_t1 = app
        .devnet
        .provider
        .get_raw_transaction_by_hash(t1)
        .await
        .unwrap()
        .unwrap();
    app.mine(1).await;
    app.devnet
        .provider
        .anvil_drop_transaction(t1)
        .await
        .unwrap();
    assert!(
        app.devnet
            .provider
            .send_raw_transaction(&raw_t1)
            .await
            .is_err(),
        "the node refuses the stored bytes"
    );

    app.settle().await;
    let replacement = events(&app, &id)
        .await
        .into_iter()
        .find(|e| e["kind"] == "transaction_replaced")
        .expect("re-signed in the first pass");
    assert_eq!(replacement["detail"]["why"], "underpriced");
    let new_fee: u128 = replacement["detail"]["max_fee_per_gas"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(new_fee > max_fee * 4, "clears the next base fee: {new_fee}");
    let resigned = payment(&app, &id).await;
    assert_eq!(resigned["nonce"], original["nonce"], "same nonce");
    assert_eq!(resigned["status"], "submitted");

    let confirmed = settle_until(&app, &id, "confirmed", 8).await;
    assert_ne!(hash(&confirmed["tx_hash"]), t1);
    assert_eq!(
        app.usdc_balance(to).await,
        usdc("8"),
        "exactly one transfer"
    );
}
