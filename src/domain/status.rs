//! The payment status state machine, transaction statuses, payment kinds and roles.

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        sqlx_text!($name, |value| value.as_str(), |text| {
            $name::parse(text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
        });
    };
}

string_enum!(
    /// Where a payment is in its life. See API.md for the meaning of each.
    PaymentStatus {
        Rejected => "rejected",
        PendingApproval => "pending_approval",
        Authorized => "authorized",
        Queued => "queued",
        Submitted => "submitted",
        Included => "included",
        Confirmed => "confirmed",
        Failed => "failed",
        Cancelled => "cancelled",
        Expired => "expired",
    }
);

impl PaymentStatus {
    /// What the payment holds of its credential's budget, as the ledger's `budget` column keeps
    /// it (migration 0021): 2 while it commits money, 1 while it is a live hold, 0 once released.
    pub const fn budget(self) -> i64 {
        match self {
            Self::Queued | Self::Submitted | Self::Included | Self::Confirmed => 2,
            Self::PendingApproval | Self::Authorized => 1,
            Self::Rejected | Self::Failed | Self::Cancelled | Self::Expired => 0,
        }
    }

    /// Only these end a payment without money moving, and so release its budget hold.
    pub const fn releases_budget(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Confirmed | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    /// The statuses that count against a credential's budget (the complement of the releasing
    /// ones), as SQL text for `status IN (...)` clauses.
    pub const HOLDING_SQL: &'static str =
        "('pending_approval','authorized','queued','submitted','included','confirmed')";

    /// The legal edges of the state machine. Every status change goes through this check, so a
    /// bug that would move a confirmed payment back to queued fails closed instead.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match (self, next) {
            // An approved manual-capture payment becomes a hold, not a transfer.
            (PendingApproval, Queued | Authorized | Cancelled | Expired) => true,
            // An x402 hold becomes a transfer when the seller executes its authorization.
            (Authorized, Queued | Submitted | Cancelled | Expired) => true,
            (Queued, Submitted | Failed | Cancelled) => true,
            (Submitted, Included | Failed) => true,
            // A reorg can take an included transaction out of the canonical chain.
            (Included, Confirmed | Submitted | Failed) => true,
            _ => false,
        }
    }
}

string_enum!(
    /// The life of one signed transaction on chain.
    TransactionStatus {
        Signed => "signed",
        Submitted => "submitted",
        Included => "included",
        Confirmed => "confirmed",
        Failed => "failed",
        Replaced => "replaced",
        Dropped => "dropped",
    }
);

impl TransactionStatus {
    /// The slot's transaction of record: at most one per wallet and nonce is live. Replaced and
    /// dropped transactions are its history (a replaced one may still be the one a block takes).
    pub const fn is_live(self) -> bool {
        !matches!(self, Self::Replaced | Self::Dropped)
    }
}

string_enum!(
    /// Why a payment that is not final is not moving. Every wait of settlement has one; it is
    /// shown on the payment, audited when it starts, and counted in `bursar_payments_waiting`.
    WaitingReason {
        InsufficientGas => "insufficient_gas",
        FeeCapBelowBaseFee => "fee_cap_below_base_fee",
        StuckAtFeeCap => "stuck_at_fee_cap",
        NodeRefused => "node_refused",
        NonceFillerPending => "nonce_filler_pending",
        RevertAwaitingDepth => "revert_awaiting_depth",
        WalletKeyUnavailable => "wallet_key_unavailable",
        Unprocessable => "unprocessable",
    }
);

impl WaitingReason {
    /// Waits a human should hear about now (raised as alarms), not only see on the payment.
    pub const fn is_alarm(self) -> bool {
        matches!(
            self,
            Self::InsufficientGas
                | Self::FeeCapBelowBaseFee
                | Self::StuckAtFeeCap
                | Self::WalletKeyUnavailable
                | Self::Unprocessable
        )
    }
}

string_enum!(
    /// The kind of an audit event: one word per state change or alarm, never a free string.
    AuditKind {
        AgentCreated => "agent_created",
        AgentFrozen => "agent_frozen",
        AgentUnfrozen => "agent_unfrozen",
        TokenCreated => "token_created",
        TokenRevoked => "token_revoked",
        CredentialCreated => "credential_created",
        CredentialRevoked => "credential_revoked",
        TreasuryCreated => "treasury_created",
        WebhookCreated => "webhook_created",
        WebhookDisabled => "webhook_disabled",
        WebhookReplayed => "webhook_replayed",
        AddressDenied => "address_denied",
        AddressAllowed => "address_allowed",
        PaymentDecided => "payment_decided",
        FundingRequested => "funding_requested",
        SweepRequested => "sweep_requested",
        PaymentApproved => "payment_approved",
        ApprovalRefusedByPolicy => "approval_refused_by_policy",
        PaymentRejected => "payment_rejected",
        PaymentCaptured => "payment_captured",
        PaymentVoided => "payment_voided",
        PaymentCancelled => "payment_cancelled",
        PaymentExpired => "payment_expired",
        PaymentSubmitted => "payment_submitted",
        PaymentIncluded => "payment_included",
        PaymentConfirmed => "payment_confirmed",
        PaymentFailed => "payment_failed",
        PaymentUnincluded => "payment_unincluded",
        PaymentWaiting => "payment_waiting",
        PaymentStalled => "payment_stalled",
        SettlementParked => "settlement_parked",
        TransactionSigned => "transaction_signed",
        TransactionBroadcast => "transaction_broadcast",
        TransactionReplaced => "transaction_replaced",
        TransactionRebroadcast => "transaction_rebroadcast",
        TransactionReverted => "transaction_reverted",
        NonceFillerSigned => "nonce_filler_signed",
        NonceResynced => "nonce_resynced",
        NonceConsumedExternally => "nonce_consumed_externally",
        Reorg => "reorg",
        FinalityViolation => "finality_violation",
        FinalityRestored => "finality_restored",
        FinalityRepairFailed => "finality_repair_failed",
        CancelledPaymentExecuted => "cancelled_payment_executed",
        UnknownOutflow => "unknown_outflow",
        X402AuthorizationSigned => "x402_authorization_signed",
        X402SellerResponded => "x402_seller_responded",
        UnknownAuthorization => "unknown_authorization",
        ScopeOpened => "scope_opened",
        ScopePhaseRequested => "scope_phase_requested",
        ScopePhaseChanged => "scope_phase_changed",
        ScopeClosed => "scope_closed",
        ScopeExpired => "scope_expired",
        ConsoleSignedIn => "console_signed_in",
        ConsoleSignedOut => "console_signed_out",
    }
);

impl AuditKind {
    /// Alarms: a human should look now. They are also sent as `audit.alarm` webhooks.
    pub const fn is_alarm(self) -> bool {
        matches!(
            self,
            Self::Reorg
                | Self::FinalityViolation
                | Self::UnknownOutflow
                | Self::UnknownAuthorization
                | Self::NonceConsumedExternally
                | Self::PaymentStalled
                | Self::SettlementParked
                | Self::CancelledPaymentExecuted
                | Self::FinalityRepairFailed
        )
    }
}

string_enum!(
    /// How an allowed payment moves money: at once, or as a hold the agent captures or voids.
    CaptureMode {
        Automatic => "automatic",
        Manual => "manual",
    }
);

string_enum!(
    /// What a transaction moves: the USDC leg or an ETH leg (gas money, or a nonce filler).
    Asset {
        Usdc => "usdc",
        Eth => "eth",
    }
);

string_enum!(
    /// What a payment is for: an agent's payment, a treasury funding, or a sweep back.
    PaymentKind {
        Payment => "payment",
        Funding => "funding",
        Sweep => "sweep",
    }
);

string_enum!(
    /// The roles of API tokens. Agent credentials are a separate kind of principal.
    Role {
        Admin => "admin",
        Treasury => "treasury",
        Approver => "approver",
        Auditor => "auditor",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_text() {
        for status in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(status.as_str()), Some(*status));
        }
        assert_eq!(PaymentStatus::parse("paid"), None);
    }

    #[test]
    fn holding_sql_lists_exactly_the_non_releasing_statuses() {
        for status in PaymentStatus::ALL {
            let listed = PaymentStatus::HOLDING_SQL.contains(&format!("'{status}'"));
            assert_eq!(listed, !status.releases_budget(), "{status}");
            assert_eq!(status.budget() == 0, status.releases_budget(), "{status}");
        }
    }

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for from in PaymentStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in PaymentStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to}");
            }
        }
        assert!(PaymentStatus::Included.can_become(PaymentStatus::Submitted));
        assert!(!PaymentStatus::Queued.can_become(PaymentStatus::Confirmed));
    }
}
