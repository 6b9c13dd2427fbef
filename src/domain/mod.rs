//! Domain values with parse constructors: money, addresses, ids, idempotency keys and the payment
//! status state machine. Pure types, no I/O; every other module may import this one, and this one
//! imports nothing of ours.

/// Stores a domain type in SQLite as text (through sqlx and through the writer's direct handle): `$encode` turns a value into the text written, and
/// `$decode` turns the text read into a value or an error (an unknown value fails the read instead
/// of travelling on as a string). One implementation for enums, ids and addresses.
macro_rules! sqlx_text {
    ($name:ty, |$value:ident| $encode:expr, |$text:ident| $decode:expr) => {
        impl sqlx::Type<sqlx::Sqlite> for $name {
            fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
                <str as sqlx::Type<sqlx::Sqlite>>::type_info()
            }
        }

        impl sqlx::Encode<'_, sqlx::Sqlite> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let $value = self;
                <String as sqlx::Encode<sqlx::Sqlite>>::encode(String::from($encode), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for $name {
            fn decode(
                value: sqlx::sqlite::SqliteValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let $text = <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?;
                $decode
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                let $value = self;
                Ok(rusqlite::types::ToSqlOutput::from(String::from($encode)))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let $text = value.as_str()?;
                // A closure, so that `$decode` may use `?` as in the sqlx impl above.
                #[allow(clippy::redundant_closure_call)]
                let decoded: Result<Self, sqlx::error::BoxDynError> = (|| $decode)();
                decoded.map_err(rusqlite::types::FromSqlError::Other)
            }
        }
    };
}

mod address;
mod amount;
mod audit_key;
mod eip3009;
mod ids;
mod status;
mod wei;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use audit_key::AuditKey;
pub use eip3009::TransferAuthorization;
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
