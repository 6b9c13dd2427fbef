//! The policy engine: a pure function from a credential's policy, the payment asked for, what the
//! credential has already spent or holds, and the time, to a `Decision` that lists every rule it
//! evaluated with the figures it compared. No I/O; imports only `domain`. A denial is a value,
//! not an error.

pub mod scope;

use crate::domain::{Address, Amount};
use serde::{Deserialize, Serialize};

/// A credential's limits. Every field is optional; an absent field does not limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "50")]
    pub max_per_payment: Option<Amount>,
    /// Rolling 24-hour window.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "500")]
    pub daily_limit: Option<Amount>,
    /// Lifetime budget of the credential.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "5000")]
    pub total_limit: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_recipients: Option<Vec<Address>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "200")]
    pub require_approval_above: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_payments_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
    /// Budget gates by payment size: payments up to each tier's `up_to` share its daily counter
    /// and may need a human approval. The decision names the tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tiers: Option<Vec<scope::Tier>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: &'static str,
    pub message: &'static str,
}

impl Policy {
    /// Checks what the types cannot: ranges of the numeric fields.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(confidence) = self.min_confidence
            && !(0.0..=1.0).contains(&confidence)
        {
            return Err(PolicyError {
                field: "policy.min_confidence",
                message: "must be between 0 and 1",
            });
        }
        if self.max_payments_per_minute == Some(0) {
            return Err(PolicyError {
                field: "policy.max_payments_per_minute",
                message: "must be at least 1 (freeze the agent to stop all payments)",
            });
        }
        if self
            .allowed_recipients
            .as_ref()
            .is_some_and(|list| list.len() > MAX_ALLOWED_RECIPIENTS)
        {
            return Err(PolicyError {
                field: "policy.allowed_recipients",
                message: "must list at most 1000 addresses",
            });
        }
        if self
            .tiers
            .as_ref()
            .is_some_and(|tiers| !scope::tiers_are_ordered(tiers))
        {
            return Err(PolicyError {
                field: "policy.tiers",
                message: "must be in increasing up_to, with at most one open-ended tier, last",
            });
        }
        Ok(())
    }
}

pub const MAX_ALLOWED_RECIPIENTS: usize = 1000;

/// What the agent asks for, as far as policy cares.
#[derive(Clone, Debug)]
pub struct PaymentRequest {
    pub to: Address,
    pub amount: Amount,
    pub confidence: Option<f64>,
}

/// What the credential already has in flight or spent, read in the same database transaction
/// that will record the decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpendSnapshot {
    /// Payments holding budget that were created in the last 24 hours.
    pub held_last_24h: Amount,
    /// Payments holding budget over the credential's life.
    pub held_total: Amount,
    /// Payments holding budget created in the last 60 seconds.
    pub payments_last_minute: u32,
    /// Payments of the request's tier (`Policy::tiers`) holding budget in the last 24 hours.
    pub tier_held_24h: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    RequireApproval,
}

/// One evaluated rule and the figures it compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

/// The engine's answer. `rule` names the rule that decided a denial or an escalation; for an
/// allowed payment it is `"policy"` (every rule passed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub outcome: Outcome,
    pub rule: String,
    pub checks: Vec<Check>,
}

/// Evaluates every rule of `policy`. Hard limits are checked first and any failure denies;
/// otherwise a failed escalation rule (`require_approval_above`, `min_confidence`) sends the
/// payment to a human; otherwise it is allowed.
pub fn evaluate(policy: &Policy, request: &PaymentRequest, spend: &SpendSnapshot) -> Decision {
    let mut hard = Vec::new();
    let mut soft = Vec::new();
    push_limit_checks(policy, request, spend, &mut hard);
    if let Some(tiers) = &policy.tiers {
        let (tier_hard, tier_soft) = scope::tier_checks(tiers, request.amount, spend.tier_held_24h);
        hard.extend(tier_hard);
        soft.extend(tier_soft);
    }
    push_escalation_checks(policy, request, &mut soft);

    let first_failed = |checks: &[Check]| checks.iter().find(|c| !c.passed).map(|c| c.rule.clone());
    let (outcome, rule) = if let Some(rule) = first_failed(&hard) {
        (Outcome::Deny, rule)
    } else if let Some(rule) = first_failed(&soft) {
        (Outcome::RequireApproval, rule)
    } else {
        (Outcome::Allow, "policy".to_string())
    };
    hard.extend(soft);
    Decision {
        outcome,
        rule,
        checks: hard,
    }
}

/// The hard limits the policy sets, in order: the cap, the rolling and lifetime budgets, the
/// allowlist and the rate. Any that fails denies.
fn push_limit_checks(
    policy: &Policy,
    request: &PaymentRequest,
    spend: &SpendSnapshot,
    hard: &mut Vec<Check>,
) {
    let amount = request.amount;
    if let Some(limit) = policy.max_per_payment {
        hard.push(Check {
            rule: "max_per_payment".into(),
            passed: amount <= limit,
            detail: format!("amount {amount} <= limit {limit}"),
        });
    }
    if let Some(limit) = policy.daily_limit {
        hard.push(cumulative_check(
            "daily_limit",
            spend.held_last_24h,
            amount,
            limit,
            "in the last 24h",
        ));
    }
    if let Some(limit) = policy.total_limit {
        hard.push(cumulative_check(
            "total_limit",
            spend.held_total,
            amount,
            limit,
            "over the credential's life",
        ));
    }
    if let Some(allowed) = &policy.allowed_recipients {
        let passed = allowed.contains(&request.to);
        hard.push(Check {
            rule: "allowed_recipients".into(),
            passed,
            detail: if passed {
                format!(
                    "recipient {} is on the allowlist of {}",
                    request.to,
                    allowed.len()
                )
            } else {
                format!(
                    "recipient {} is not on the allowlist of {}",
                    request.to,
                    allowed.len()
                )
            },
        });
    }
    if let Some(limit) = policy.max_payments_per_minute {
        hard.push(Check {
            rule: "max_payments_per_minute".into(),
            passed: spend.payments_last_minute < limit,
            detail: format!(
                "{} payments in the last minute + 1 <= limit {limit}",
                spend.payments_last_minute
            ),
        });
    }
}

/// The rules that send a payment to a human when they fail: the approval threshold and the
/// confidence floor.
fn push_escalation_checks(policy: &Policy, request: &PaymentRequest, soft: &mut Vec<Check>) {
    let amount = request.amount;
    if let Some(threshold) = policy.require_approval_above {
        soft.push(Check {
            rule: "require_approval_above".into(),
            passed: amount <= threshold,
            detail: format!("amount {amount} <= approval threshold {threshold}"),
        });
    }
    if let Some(floor) = policy.min_confidence {
        let (passed, detail) = match request.confidence {
            Some(confidence) => (
                confidence >= floor,
                format!("confidence {confidence} >= floor {floor}"),
            ),
            None => (false, format!("no confidence given; floor {floor}")),
        };
        soft.push(Check {
            rule: "min_confidence".into(),
            passed,
            detail,
        });
    }
}

fn cumulative_check(
    rule: &str,
    used: Amount,
    amount: Amount,
    limit: Amount,
    window: &str,
) -> Check {
    // An overflowing sum can only mean "far above any limit".
    let passed = used.checked_add(amount).is_some_and(|total| total <= limit);
    Check {
        rule: rule.into(),
        passed,
        detail: format!("held {used} {window} + amount {amount} <= limit {limit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usdc(text: &str) -> Amount {
        Amount::parse_non_negative(text).unwrap()
    }

    fn address(byte: u8) -> Address {
        Address::from(alloy::primitives::Address::repeat_byte(byte))
    }

    fn request(amount: &str) -> PaymentRequest {
        PaymentRequest {
            to: address(1),
            amount: usdc(amount),
            confidence: Some(0.9),
        }
    }

    fn snapshot(day: &str, total: &str, minute: u32) -> SpendSnapshot {
        SpendSnapshot {
            tier_held_24h: Amount::from_micros(0),
            held_last_24h: usdc(day),
            held_total: usdc(total),
            payments_last_minute: minute,
        }
    }

    #[test]
    fn empty_policy_allows_with_no_checks() {
        let decision = evaluate(
            &Policy::default(),
            &request("1000000"),
            &SpendSnapshot::default(),
        );
        assert_eq!(decision.outcome, Outcome::Allow);
        assert_eq!(decision.rule, "policy");
        assert!(decision.checks.is_empty());
    }

    /// Every rule of the engine, each set so the cases below sit at its boundary.
    fn full_policy() -> Policy {
        Policy {
            max_per_payment: Some(usdc("50")),
            daily_limit: Some(usdc("100")),
            total_limit: Some(usdc("1000")),
            allowed_recipients: Some(vec![address(1)]),
            require_approval_above: Some(usdc("40")),
            max_payments_per_minute: Some(3),
            min_confidence: Some(0.8),
            tiers: None,
        }
    }

    /// Each case (request, snapshot, outcome, deciding rule) under `full_policy`, which reports
    /// every one of its seven rules whatever the outcome.
    fn assert_decisions(cases: Vec<(PaymentRequest, SpendSnapshot, Outcome, &str)>) {
        for (i, (req, snap, outcome, rule)) in cases.into_iter().enumerate() {
            let decision = evaluate(&full_policy(), &req, &snap);
            assert_eq!(
                (decision.outcome, decision.rule.as_str()),
                (outcome, rule),
                "case {i}"
            );
            assert_eq!(decision.checks.len(), 7, "every rule is reported, case {i}");
        }
    }

    #[test]
    fn each_hard_limit_at_its_boundary() {
        let other_recipient = PaymentRequest {
            to: address(2),
            ..request("1")
        };
        assert_decisions(vec![
            (
                request("40"),
                snapshot("60", "60", 2),
                Outcome::Allow,
                "policy",
            ),
            (
                request("50.000001"),
                snapshot("0", "0", 0),
                Outcome::Deny,
                "max_per_payment",
            ),
            (
                request("40"),
                snapshot("60.000001", "61", 0),
                Outcome::Deny,
                "daily_limit",
            ),
            (
                request("40"),
                snapshot("0", "960.000001", 0),
                Outcome::Deny,
                "total_limit",
            ),
            (
                request("40"),
                snapshot("0", "960", 0),
                Outcome::Allow,
                "policy",
            ),
            (
                other_recipient,
                snapshot("0", "0", 0),
                Outcome::Deny,
                "allowed_recipients",
            ),
            (
                request("1"),
                snapshot("0", "0", 3),
                Outcome::Deny,
                "max_payments_per_minute",
            ),
        ]);
    }

    #[test]
    fn each_escalation_at_its_boundary_and_below_the_hard_limits() {
        let low_confidence = PaymentRequest {
            confidence: Some(0.79),
            ..request("1")
        };
        let no_confidence = PaymentRequest {
            confidence: None,
            ..request("1")
        };
        assert_decisions(vec![
            (
                request("40.000001"),
                snapshot("0", "0", 0),
                Outcome::RequireApproval,
                "require_approval_above",
            ),
            (
                low_confidence,
                snapshot("0", "0", 0),
                Outcome::RequireApproval,
                "min_confidence",
            ),
            (
                no_confidence,
                snapshot("0", "0", 0),
                Outcome::RequireApproval,
                "min_confidence",
            ),
            // A hard limit wins over an escalation.
            (
                request("60"),
                snapshot("0", "0", 0),
                Outcome::Deny,
                "max_per_payment",
            ),
        ]);
    }

    #[test]
    fn checks_carry_the_figures_compared() {
        let policy = Policy {
            daily_limit: Some(usdc("100")),
            ..Policy::default()
        };
        let decision = evaluate(&policy, &request("12.5"), &snapshot("90", "90", 0));
        assert_eq!(decision.outcome, Outcome::Deny);
        assert_eq!(
            decision.checks[0].detail,
            "held 90 in the last 24h + amount 12.5 <= limit 100"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let bad = Policy {
            min_confidence: Some(1.5),
            ..Policy::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "policy.min_confidence");
        let bad = Policy {
            max_payments_per_minute: Some(0),
            ..Policy::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().field,
            "policy.max_payments_per_minute"
        );
    }

    proptest::proptest! {
        /// Whatever sequence of amounts is asked for, the allowed ones never sum above a cap.
        #[test]
        fn no_sequence_exceeds_the_caps(amounts in proptest::collection::vec(1u64..200_000_000, 1..60)) {
            let policy = Policy {
                max_per_payment: Some(usdc("150")),
                daily_limit: Some(usdc("500")),
                total_limit: Some(usdc("700")),
                ..Policy::default()
            };
            let mut held = Amount::ZERO;
            for micros in amounts {
                let spend = SpendSnapshot { held_last_24h: held, held_total: held, payments_last_minute: 0, ..Default::default() };
                let req = PaymentRequest { to: address(1), amount: Amount::from_micros(micros), confidence: None };
                if evaluate(&policy, &req, &spend).outcome == Outcome::Allow {
                    held = held.checked_add(req.amount).unwrap();
                    proptest::prop_assert!(req.amount <= usdc("150"));
                }
                proptest::prop_assert!(held <= usdc("500"));
            }
        }
    }
}
