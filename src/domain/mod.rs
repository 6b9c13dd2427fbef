//! Domain values with parse constructors: money, addresses, ids, idempotency keys and the payment
//! status state machine. Pure types, no I/O; every other module may import this one, and this one
//! imports nothing of ours.

mod address;
mod amount;
mod audit_key;
mod ids;
mod status;
mod wei;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use audit_key::AuditKey;
pub use ids::{
    AgentId, CredentialId, IdempotencyKey, IdempotencyKeyError, PaymentId, new_id, new_secret_token,
};
pub use wei::{Wei, WeiError};
/// An API time: RFC 3339 UTC with milliseconds, from milliseconds since the Unix epoch.
pub fn format_time(millis: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub use status::{
    Asset, AuditKind, CaptureMode, PaymentKind, PaymentStatus, Role, TransactionStatus,
    WaitingReason,
};
