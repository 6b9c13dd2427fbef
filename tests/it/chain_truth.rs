//! Chain truth, driven through anvil's own methods: reorgs, crashes between every step of
//! settlement, dropped and stuck transactions, the token's pause and blacklist, and a node that
//! stops mining. Every payment ends paid exactly once.

use crate::support::{RpcRelay, TestApp, payment, recipient, usdc};
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::sol_types::SolCall;
use bursar::domain::Amount;
use bursar::payments::PaymentsError;
use serde_json::json;

async fn audit_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let events = app
        .get(&format!("/v1/audit?payment_id={id}"), &app.admin_token)
        .await
        .body;
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// A funded agent with an unlimited credential: `(agent_id, token)`.
async fn funded_agent(app: &TestApp) -> (String, String) {
    let (agent, _) = app.create_agent("chain").await;
    app.fund(&agent, "1000", "1").await;
    let token = app.credential(&agent, json!({})).await;
    (agent, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_sends_an_included_payment_back_and_it_confirms_once_on_the_canonical_chain() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x91);
    let id = app.pay_id(&token, to, "3.5", "r").await;
    app.settle().await;
    app.mine(1).await;
    app.settle().await;
    let included = payment(&app, &id).await;
    assert_eq!(included["status"], "included");

    app.devnet.reorg(1).await.unwrap();
    app.settle().await;
    let reorged = payment(&app, &id).await;
    assert_eq!(reorged["status"], "submitted", "{reorged}");
    assert!(audit_kinds(&app, &id).await.contains(&"reorg".to_string()));

    // The same signed transaction (same hash, same nonce) confirms on the new chain.
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    let confirmed = payment(&app, &id).await;
    assert_eq!(confirmed["tx_hash"], included["tx_hash"]);
    let number = confirmed["block_number"].as_u64().unwrap();
    assert_eq!(
        confirmed["block_hash"].as_str().unwrap(),
        app.canonical_hash(number).await
    );
    assert_ne!(confirmed["block_hash"], included["block_hash"]);
    assert_eq!(app.usdc_balance(to).await, usdc("3.5"));
    let verify = app.get("/v1/audit/verify", &app.admin_token).await.body;
    assert_eq!(verify["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_deeper_than_the_confirmations_is_a_finality_alarm() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let id = app.pay_id(&token, recipient(0x92), "1", "f").await;
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    let depth = app.config.confirmations_required + 1;
    app.devnet.reorg(depth).await.unwrap();
    let report = app.settle().await;
    assert_eq!(report.alarms, 1);
    assert!(
        audit_kinds(&app, &id)
            .await
            .contains(&"finality_violation".to_string())
    );
    // Never rewritten silently: the payment stays as recorded, and the alarm is raised once.
    assert_eq!(payment(&app, &id).await["status"], "confirmed");
    assert_eq!(app.settle().await.alarms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_fail_point_every_payment_is_paid_exactly_once() {
    let mut app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x93);
    let mut expected = Amount::ZERO;
    for (i, point) in ["before_sign", "after_sign", "after_broadcast"]
        .into_iter()
        .enumerate()
    {
        let id = app.pay_id(&token, to, "2", &format!("crash-{point}")).await;
        app.payments().arm_fail_point(point);
        let crashed = app.payments().settle_once().await;
        assert!(
            matches!(crashed, Err(PaymentsError::FailPoint(p)) if p == point),
            "{point}: {crashed:?}"
        );
        // The process dies here; a new one starts on the same database.
        app.restart().await;
        app.settle_to_confirmed(std::slice::from_ref(&id)).await;
        expected = expected.checked_add(usdc("2")).unwrap();
        assert_eq!(
            app.usdc_balance(to).await,
            expected,
            "paid exactly once after a crash at {point}"
        );
        assert_eq!(
            payment(&app, &id).await["nonce"],
            i as i64,
            "nonces never skip"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_mined_while_the_pass_signs_is_recorded_included_in_that_pass() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let id = app.pay_id(&token, recipient(0x95), "3", "m").await;
    // The node mines each transaction as it takes it: mined before the pass reads receipts,
    // after it read the wallet's nonce to sign.
    app.devnet.provider.anvil_set_auto_mine(true).await.unwrap();
    app.settle().await;
    let paid = payment(&app, &id).await;
    assert_eq!(paid["status"], "included", "{paid}");
    assert_eq!(paid["block_number"].as_u64(), Some(app.head().await));
}

/// A service reaching the devnet through an `RpcRelay`, with one payment signed and sent.
async fn submitted_through_relay(to: u8, key: &str) -> (TestApp, RpcRelay, String) {
    let (app, relay) = TestApp::spawn_relayed().await;
    let (_, token) = funded_agent(&app).await;
    let id = app.pay_id(&token, recipient(to), "2", key).await;
    app.settle().await;
    assert_eq!(payment(&app, &id).await["status"], "submitted");
    (app, relay, id)
}

/// A pass that could not check every open transaction (the node refused its reads of the
/// wallet's nonce, so the slot was skipped) does not advance the head an included payment's
/// confirmations are counted from: a block no complete pass verified never counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_that_skipped_a_slot_counts_no_new_confirmation() {
    let (app, relay, id) = submitted_through_relay(0x9a, "s").await;
    app.mine(1).await;
    app.settle().await;
    let included = payment(&app, &id).await;
    assert_eq!(included["status"], "included", "{included}");
    let counted = included["confirmations"].as_u64().unwrap();
    assert!(
        counted + 1 < app.config.confirmations_required,
        "the test needs a block between inclusion and confirmation"
    );
    app.mine(1).await;
    relay.refuse(Some("eth_getTransactionCount"));
    app.settle().await;
    let skipped = payment(&app, &id).await;
    assert_eq!(skipped["status"], "included", "{skipped}");
    assert_eq!(skipped["confirmations"], counted, "{skipped}");
    relay.refuse(None);
    app.settle().await;
    let checked = payment(&app, &id).await;
    assert_eq!(checked["confirmations"], counted + 1, "{checked}");
}

/// The payment is included at `block`, and no receipt was read since the relay counted
/// `receipts`.
async fn assert_included_unread(
    app: &TestApp,
    relay: &RpcRelay,
    id: &str,
    block: u64,
    receipts: usize,
) {
    let paid = payment(app, id).await;
    assert_eq!(paid["status"], "included", "{paid}");
    assert_eq!(paid["block_number"].as_u64(), Some(block));
    assert_eq!(relay.calls("eth_getTransactionReceipt"), receipts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_mined_during_a_pass_is_read_by_its_transfers_next_pass_not_by_receipts() {
    let (app, relay, id) = submitted_through_relay(0x96, "b").await;
    // A block holding the transfer lands after the pass read its head, just before it reads
    // the wallet's nonce. The pass judges by its head, where the nonce is still unused: it
    // does not read the transaction's receipt (for a node, a copy of the whole block).
    let head = app.head().await;
    let (receipts, logs) = (
        relay.calls("eth_getTransactionReceipt"),
        relay.calls("eth_getLogs"),
    );
    relay.mine_before_next("eth_getTransactionCount");
    app.settle().await;
    assert_eq!(app.head().await, head + 1, "the relay mined one block");
    assert_eq!(payment(&app, &id).await["status"], "submitted");
    // The next pass reads that block's USDC transfers and finds the payment among them.
    app.settle().await;
    assert_included_unread(&app, &relay, &id, head + 1, receipts).await;
    assert!(relay.calls("eth_getLogs") > logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_served_before_its_logs_is_read_again_not_by_receipts() {
    let (app, relay, id) = submitted_through_relay(0x99, "e").await;
    app.mine(1).await;
    // The node answers for the new block before it holds the block's transactions: no logs.
    // The pass reads the block again before it reads any receipt.
    let head = app.head().await;
    let (receipts, logs) = (
        relay.calls("eth_getTransactionReceipt"),
        relay.calls("eth_getLogs"),
    );
    relay.hide_logs_once();
    app.settle().await;
    assert_included_unread(&app, &relay, &id, head, receipts).await;
    assert!(relay.calls("eth_getLogs") >= logs + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_counted_past_the_head_is_found_in_the_block_since_not_by_receipts() {
    let (app, relay, id) = submitted_through_relay(0x97, "c").await;
    // A block holding the transfer lands just before the pass reads the wallet's nonce, and the
    // node answers that read from its newest state: the nonce is used, but no block the pass
    // read holds the transfer. The pass reads the block mined since its head, not the receipt.
    let head = app.head().await;
    let receipts = relay.calls("eth_getTransactionReceipt");
    relay.nonce_reads_at(Some((head, "latest")));
    relay.mine_before_next("eth_getTransactionCount");
    app.settle().await;
    assert_included_unread(&app, &relay, &id, head + 1, receipts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_counted_before_any_block_holds_it_waits_a_pass_unread() {
    let (app, relay, id) = submitted_through_relay(0x98, "d").await;
    let sent = payment(&app, &id).await;
    // The node counts the transfer in its state at the head while no block it serves holds it
    // (anvil does, while it stores a block). The slot waits for the next pass: no receipt read,
    // nothing signed again, no alarm.
    let head = app.head().await;
    let receipts = relay.calls("eth_getTransactionReceipt");
    relay.nonce_reads_at(Some((head, "pending")));
    app.settle().await;
    let waiting = payment(&app, &id).await;
    assert_eq!(waiting["status"], "submitted", "{waiting}");
    assert_eq!(waiting["tx_hash"], sent["tx_hash"]);
    assert_eq!(relay.calls("eth_getTransactionReceipt"), receipts);
    assert!(
        !audit_kinds(&app, &id)
            .await
            .contains(&"nonce_consumed_externally".to_string())
    );
    relay.nonce_reads_at(None);
    app.mine(1).await;
    app.settle().await;
    assert_included_unread(&app, &relay, &id, head + 1, receipts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_from_the_pool_is_rebroadcast() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x94);
    let id = app.pay_id(&token, to, "4", "d").await;
    app.settle().await;
    let hash: B256 = payment(&app, &id).await["tx_hash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        app.devnet
            .provider
            .anvil_drop_transaction(hash)
            .await
            .unwrap(),
        Some(hash)
    );
    assert!(
        app.devnet
            .provider
            .get_transaction_by_hash(hash)
            .await
            .unwrap()
            .is_none()
    );
    app.settle().await;
    assert!(
        audit_kinds(&app, &id)
            .await
            .contains(&"transaction_rebroadcast".to_string())
    );
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    assert_eq!(
        payment(&app, &id).await["tx_hash"].as_str().unwrap(),
        hash.to_string()
    );
    assert_eq!(app.usdc_balance(to).await, usdc("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_fee_spike_leads_to_a_same_nonce_replacement() {
    let app = TestApp::spawn_with(&[("BURSAR_STUCK_AFTER_BLOCKS", "1")]).await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x95);
    let id = app.pay_id(&token, to, "6", "s").await;
    app.settle().await;
    let original = payment(&app, &id).await;
    let (max_fee, _) = app.signed_fees(&id).await;

    // The next block's base fee is above our fee cap: the block comes and goes without us.
    app.devnet
        .provider
        .anvil_set_next_block_base_fee_per_gas(max_fee + 1)
        .await
        .unwrap();
    app.mine(1).await;
    app.settle().await;
    let replaced = payment(&app, &id).await;
    eprintln!(
        "DEBUG kinds {:?} head {}",
        audit_kinds(&app, &id).await,
        app.head().await
    );
    assert_eq!(replaced["status"], "submitted");
    assert_eq!(replaced["nonce"], original["nonce"], "same nonce");
    assert_ne!(
        replaced["tx_hash"], original["tx_hash"],
        "the payment reports its latest hash"
    );
    let events = app
        .get(&format!("/v1/audit?payment_id={id}"), &app.admin_token)
        .await
        .body;
    let replacement = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "transaction_replaced")
        .unwrap()
        .clone();
    let new_fee: u128 = replacement["detail"]["max_fee_per_gas"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let new_tip: u128 = replacement["detail"]["max_priority_fee_per_gas"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let old_tip: u128 = replacement["detail"]["old_max_priority_fee_per_gas"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        new_fee * 8 >= max_fee * 9 && new_tip * 8 >= old_tip * 9,
        "both raised by at least 12.5%"
    );
    assert_eq!(
        replacement["detail"]["replaced_tx_hash"],
        original["tx_hash"]
    );

    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    let done = payment(&app, &id).await;
    assert_eq!(done["tx_hash"], replaced["tx_hash"]);
    assert_eq!(
        app.usdc_balance(to).await,
        usdc("6"),
        "one transfer, not two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_token_and_a_blacklisted_recipient_fail_without_using_a_nonce() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x96);

    app.devnet.set_paused(true).await.unwrap();
    let paused = app.pay_id(&token, to, "1", "paused").await;
    assert_eq!(app.settle().await.failed, 1);
    let body = payment(&app, &paused).await;
    assert_eq!(
        (body["status"].as_str(), body["failure_reason"].as_str()),
        (Some("failed"), Some("token_paused"))
    );
    assert!(body["nonce"].is_null());
    app.devnet.set_paused(false).await.unwrap();

    app.devnet.blacklist(to).await.unwrap();
    let blocked = app.pay_id(&token, to, "1", "blocked").await;
    app.settle().await;
    let body = payment(&app, &blocked).await;
    assert_eq!(body["failure_reason"], "recipient_blacklisted");

    // The budget came back and the next payment takes nonce 0: nothing was used.
    let agent = app
        .get(
            &format!("/v1/agents/{}", body["agent_id"].as_str().unwrap()),
            &app.admin_token,
        )
        .await
        .body;
    assert_eq!(agent["spent_24h"], "0");
    let ok = app.pay_id(&token, recipient(0x97), "1", "ok").await;
    app.settle_to_confirmed(std::slice::from_ref(&ok)).await;
    assert_eq!(payment(&app, &ok).await["nonce"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_mining_leaves_payments_waiting_and_they_resume() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x98);
    let id = app.pay_id(&token, to, "5", "n").await;
    app.settle().await;
    // No blocks for a long time: nothing is finalized by a timeout, nothing is sent twice.
    for _ in 0..5 {
        app.clock.advance_ms(60 * 60 * 1000);
        app.settle().await;
    }
    let waiting = payment(&app, &id).await;
    assert_eq!(waiting["status"], "submitted");
    assert!(
        !audit_kinds(&app, &id)
            .await
            .contains(&"transaction_replaced".to_string())
    );
    app.settle_to_confirmed(std::slice::from_ref(&id)).await;
    assert_eq!(payment(&app, &id).await["tx_hash"], waiting["tx_hash"]);
    assert_eq!(app.usdc_balance(to).await, usdc("5"));

    // While the node is unreachable a pass fails (and the worker backs off) and changes nothing.
    let mut app = app;
    let queued = app.pay_id(&token, to, "1", "n2").await;
    app.devnet.anvil.child_mut().kill().unwrap();
    app.devnet.anvil.child_mut().wait().unwrap();
    assert!(
        matches!(app.payments().settle_once().await, Err(PaymentsError::Chain(e)) if e.is_retryable())
    );
    assert_eq!(payment(&app, &queued).await["status"], "queued");
    let _ = &mut app;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outflow_behind_bursars_back_is_an_unknown_outflow_and_an_alarm() {
    let app = TestApp::spawn().await;
    let (agent, token) = funded_agent(&app).await;
    let address = bursar::domain::Address::parse(
        app.get(&format!("/v1/agents/{agent}"), &app.admin_token)
            .await
            .body["address"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let paid = app.pay_id(&token, recipient(0x99), "10", "legit").await;
    app.settle_to_confirmed(std::slice::from_ref(&paid)).await;

    // Someone with the agent's key (here: anvil impersonation) moves USDC without Bursar.
    use alloy::network::TransactionBuilder;
    let theft = bursar::chain::usdc::IUSDC::transferCall {
        to: recipient(0x66).into_inner(),
        value: alloy::primitives::U256::from(25_000_000u64),
    };
    app.devnet
        .provider
        .anvil_impersonate_account(address.into_inner())
        .await
        .unwrap();
    let request = alloy::rpc::types::TransactionRequest::default()
        .with_from(address.into_inner())
        .with_to(app.devnet.usdc.into_inner())
        .with_input(theft.abi_encode());
    let stolen = app
        .devnet
        .provider
        .anvil_send_impersonated_transaction(request)
        .await
        .unwrap();
    app.mine(1).await;
    let head = app.head().await;

    let report = app
        .get(
            &format!("/v1/reconciliation?from_block=0&to_block={head}"),
            &app.admin_token,
        )
        .await
        .body;
    let discrepancies = report["discrepancies"].as_array().unwrap();
    assert_eq!(discrepancies.len(), 1, "{report}");
    assert_eq!(discrepancies[0]["kind"], "unknown_outflow");
    assert_eq!(
        discrepancies[0]["tx_hash"].as_str().unwrap(),
        stolen.to_string()
    );
    assert_eq!(discrepancies[0]["onchain"]["amount"], "25");
    // The funding (treasury to agent) and the payment match; the treasury's mint is an inflow.
    assert_eq!(report["matched"], 2, "{report}");
    assert!(
        report["inflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["amount"] == "1000000")
    );
    let bad = app
        .get(
            "/v1/reconciliation?from_block=10&to_block=5",
            &app.admin_token,
        )
        .await;
    assert_eq!(bad.body["error"]["field"], "from_block");

    // The background pass raises the alarm once the block is deep enough, and only once.
    assert_eq!(
        app.payments().reconcile_new_blocks().await.unwrap(),
        0,
        "not yet at the confirmation depth"
    );
    app.mine(app.config.confirmations_required).await;
    assert_eq!(app.payments().reconcile_new_blocks().await.unwrap(), 1);
    assert_eq!(app.payments().reconcile_new_blocks().await.unwrap(), 0);
    let alarms = app.get("/v1/audit?limit=500", &app.admin_token).await.body;
    let alarm = alarms["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "unknown_outflow")
        .unwrap()
        .clone();
    assert_eq!(alarm["tx_hash"].as_str().unwrap(), stolen.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_reverts_on_chain_fails_with_a_named_reason_and_the_node_text_audited() {
    let app = TestApp::spawn().await;
    let (_, token) = funded_agent(&app).await;
    let to = recipient(0x9a);
    let id = app.pay_id(&token, to, "3", "rv").await;
    app.settle().await;
    assert_eq!(payment(&app, &id).await["status"], "submitted");

    // Every check passed before signing; the blacklister acts while the transaction is out of
    // the pool, and the watcher's rebroadcast then lands after the blacklisting.
    let hash: B256 = payment(&app, &id).await["tx_hash"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    app.devnet
        .provider
        .anvil_drop_transaction(hash)
        .await
        .unwrap();
    app.devnet.blacklist(to).await.unwrap();
    app.settle().await;
    app.settle_to_included_or_failed().await;
    // A revert is final only at the required depth: until then the payment is included and
    // its budget stays held.
    let reverted = payment(&app, &id).await;
    assert_eq!(reverted["status"], "included", "{reverted}");
    assert_eq!(reverted["waiting_reason"], "revert_awaiting_depth");
    assert!(reverted["failure_reason"].is_null());
    app.mine(app.config.confirmations_required).await;
    app.settle().await;
    let failed = payment(&app, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["waiting_reason"].is_null());
    // The agent sees a named reason; the node's sentence is in the audit log only.
    assert_eq!(failed["failure_reason"], "reverted");
    let events = app
        .get(&format!("/v1/audit?payment_id={id}"), &app.admin_token)
        .await
        .body;
    let reverted = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "transaction_reverted")
        .unwrap()
        .clone();
    let node_reason = reverted["detail"]["revert_reason"].as_str().unwrap();
    assert!(node_reason.contains("blacklisted"), "{node_reason}");
    assert_eq!(app.usdc_balance(to).await, Amount::ZERO);
    // The budget is released, and the nonce was used on chain: the next payment takes the next one.
    let next = app.pay_id(&token, recipient(0x9b), "1", "after").await;
    app.settle_to_confirmed(std::slice::from_ref(&next)).await;
    assert_eq!(
        payment(&app, &next).await["nonce"],
        failed["nonce"].as_i64().unwrap() + 1
    );
}
