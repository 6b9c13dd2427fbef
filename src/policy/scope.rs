//! Spending scopes: one task's mandate inside a credential. A scope has a budget, an optional
//! recipient allowlist, ordered phases with their own limits, and tiers that give payments of a
//! size their own daily counter and, optionally, a human approval. Pure: the caller reads the
//! scope's figures in the write transaction that records the decision.

use super::{Check, Decision, Outcome, PaymentRequest};
use crate::domain::{Address, Amount};
use serde::{Deserialize, Serialize};

/// The limits of one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhaseLimits {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "0.05")]
    pub max_per_payment: Option<Amount>,
    /// What payments decided in this phase may hold in total.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "1")]
    pub budget: Option<Amount>,
}

/// A tier: payments up to `up_to` (the last tier may leave it out: everything above) share a
/// daily counter, and may need a human approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "0.10")]
    pub up_to: Option<Amount>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Amount::deserialize_non_negative"
    )]
    #[schema(value_type = Option<String>, example = "5")]
    pub daily_limit: Option<Amount>,
    #[serde(default)]
    pub require_approval: bool,
}

/// A scope's rules as the decision sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeRules {
    pub budget: Amount,
    pub allowed_recipients: Option<Vec<Address>>,
    pub phase: String,
    pub phase_limits: PhaseLimits,
    pub tiers: Vec<Tier>,
}

/// What a scope holds now (leaving out the payment being decided).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScopeSnapshot {
    /// Every payment of the scope that holds budget.
    pub held: Amount,
    /// Those decided in the current phase.
    pub held_in_phase: Amount,
    /// Those of the payment's tier in the last 24 hours (live holds always count).
    pub tier_held_24h: Amount,
}

/// The tier a payment of `amount` falls in: the first whose `up_to` it does not exceed.
pub fn tier_of(tiers: &[Tier], amount: Amount) -> Option<usize> {
    tiers
        .iter()
        .position(|t| t.up_to.is_none_or(|limit| amount <= limit))
}

/// Tiers in order of `up_to`, the open-ended one (if any) last; at most one open-ended tier.
pub fn tiers_are_ordered(tiers: &[Tier]) -> bool {
    let bounded: Vec<Amount> = tiers.iter().filter_map(|t| t.up_to).collect();
    let open = tiers.iter().filter(|t| t.up_to.is_none()).count();
    bounded.windows(2).all(|w| w[0] < w[1])
        && open <= 1
        && tiers.last().is_none_or(|t| open == 0 || t.up_to.is_none())
}

/// The credential's decision with the scope's rules added: any failed hard rule of either
/// denies; otherwise the credential's escalation, or a tier that needs a human, sends the
/// payment to approval; every check of both is recorded.
pub fn evaluate_with_scope(
    credential: Decision,
    scope: &ScopeRules,
    request: &PaymentRequest,
    snapshot: &ScopeSnapshot,
) -> Decision {
    let amount = request.amount;
    let mut hard = Vec::new();
    hard.push(cumulative(
        "scope_budget",
        snapshot.held,
        amount,
        scope.budget,
        "in the scope",
    ));
    if let Some(limit) = scope.phase_limits.max_per_payment {
        hard.push(Check {
            rule: "phase".into(),
            passed: amount <= limit,
            detail: format!(
                "amount {amount} <= {} phase's limit per payment {limit}",
                scope.phase
            ),
        });
    }
    if let Some(limit) = scope.phase_limits.budget {
        hard.push(cumulative(
            "phase",
            snapshot.held_in_phase,
            amount,
            limit,
            &format!("in the {} phase", scope.phase),
        ));
    }
    if let Some(allowed) = &scope.allowed_recipients {
        let passed = allowed.contains(&request.to);
        hard.push(Check {
            rule: "allowed_recipients".into(),
            passed,
            detail: format!(
                "recipient {} is {}on the scope's allowlist of {}",
                request.to,
                if passed { "" } else { "not " },
                allowed.len()
            ),
        });
    }
    let (tier_hard, soft) = tier_checks(&scope.tiers, amount, snapshot.tier_held_24h);
    hard.extend(tier_hard);
    let first_failed = |checks: &[Check]| checks.iter().find(|c| !c.passed).map(|c| c.rule.clone());
    let (outcome, rule) = match credential.outcome {
        Outcome::Deny => (Outcome::Deny, credential.rule.clone()),
        _ if first_failed(&hard).is_some() => {
            (Outcome::Deny, first_failed(&hard).unwrap_or_default())
        }
        Outcome::RequireApproval => (Outcome::RequireApproval, credential.rule.clone()),
        Outcome::Allow => match first_failed(&soft) {
            Some(rule) => (Outcome::RequireApproval, rule),
            None => (Outcome::Allow, credential.rule.clone()),
        },
    };
    let mut checks = credential.checks;
    checks.extend(hard);
    checks.extend(soft);
    Decision {
        outcome,
        rule,
        checks,
    }
}

/// The checks of a tier set for a payment of `amount`, whose tier holds `tier_held` in the last
/// 24 hours: `(hard, soft)`. A payment above every tier is refused.
pub fn tier_checks(tiers: &[Tier], amount: Amount, tier_held: Amount) -> (Vec<Check>, Vec<Check>) {
    let mut hard = Vec::new();
    let mut soft = Vec::new();
    match tier_of(tiers, amount) {
        Some(index) => {
            let tier = &tiers[index];
            if let Some(limit) = tier.daily_limit {
                hard.push(cumulative(
                    "tier",
                    tier_held,
                    amount,
                    limit,
                    &format!("in tier {index} in the last 24h"),
                ));
            }
            if tier.require_approval {
                soft.push(Check {
                    rule: "tier".into(),
                    passed: false,
                    detail: format!("tier {index} payments need a human approval"),
                });
            }
        }
        None if !tiers.is_empty() => hard.push(Check {
            rule: "tier".into(),
            passed: false,
            detail: format!("amount {amount} is above every tier"),
        }),
        None => {}
    }
    (hard, soft)
}

fn cumulative(rule: &str, used: Amount, amount: Amount, limit: Amount, window: &str) -> Check {
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
    use crate::policy::{Policy, SpendSnapshot, evaluate};

    fn usdc(text: &str) -> Amount {
        Amount::parse_non_negative(text).unwrap()
    }

    fn rules() -> ScopeRules {
        ScopeRules {
            budget: usdc("10"),
            allowed_recipients: None,
            phase: "explore".into(),
            phase_limits: PhaseLimits {
                max_per_payment: Some(usdc("0.05")),
                budget: Some(usdc("1")),
            },
            tiers: vec![
                Tier {
                    up_to: Some(usdc("0.10")),
                    daily_limit: Some(usdc("5")),
                    require_approval: false,
                },
                Tier {
                    up_to: None,
                    daily_limit: Some(usdc("20")),
                    require_approval: true,
                },
            ],
        }
    }

    fn decide(amount: &str, snapshot: ScopeSnapshot, scope: &ScopeRules) -> Decision {
        let request = PaymentRequest {
            to: Address::ZERO,
            amount: usdc(amount),
            confidence: None,
        };
        let credential = evaluate(&Policy::default(), &request, &SpendSnapshot::default());
        evaluate_with_scope(credential, scope, &request, &snapshot)
    }

    #[test]
    fn the_phase_limits_a_premium_payment_and_names_itself() {
        let decision = decide("0.5", ScopeSnapshot::default(), &rules());
        assert_eq!(decision.outcome, Outcome::Deny);
        assert_eq!(decision.rule, "phase");
        let micro = decide("0.05", ScopeSnapshot::default(), &rules());
        assert_eq!(micro.outcome, Outcome::Allow, "{micro:?}");
    }

    #[test]
    fn budgets_count_what_is_held() {
        let full = ScopeSnapshot {
            held: usdc("9.99"),
            ..Default::default()
        };
        assert_eq!(decide("0.05", full, &rules()).rule, "scope_budget");
        let phase_full = ScopeSnapshot {
            held_in_phase: usdc("0.96"),
            ..Default::default()
        };
        assert_eq!(decide("0.05", phase_full, &rules()).rule, "phase");
        let tier_full = ScopeSnapshot {
            tier_held_24h: usdc("4.99"),
            ..Default::default()
        };
        assert_eq!(decide("0.05", tier_full, &rules()).rule, "tier");
    }

    #[test]
    fn a_tier_that_needs_approval_escalates_and_hard_rules_still_deny() {
        let mut scope = rules();
        scope.phase_limits = PhaseLimits::default();
        let big = decide("3", ScopeSnapshot::default(), &scope);
        assert_eq!(
            (big.outcome, big.rule.as_str()),
            (Outcome::RequireApproval, "tier")
        );
        assert_eq!(tier_of(&scope.tiers, usdc("0.10")), Some(0));
        assert_eq!(tier_of(&scope.tiers, usdc("0.11")), Some(1));
        let over = decide("11", ScopeSnapshot::default(), &scope);
        assert_eq!(
            (over.outcome, over.rule.as_str()),
            (Outcome::Deny, "scope_budget")
        );
    }

    #[test]
    fn tier_order_is_checked() {
        let scope = rules();
        assert!(tiers_are_ordered(&scope.tiers));
        let mut reversed = scope.tiers.clone();
        reversed.reverse();
        assert!(!tiers_are_ordered(&reversed));
    }
}
