//! Domain values with parse constructors: money, addresses, ids, idempotency keys and the payment
//! status state machine. Pure types, no I/O; every other module may import this one, and this one
//! imports nothing of ours.

mod address;
mod amount;
mod ids;
mod status;

pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use ids::{IdempotencyKey, IdempotencyKeyError, new_id, new_secret_token};
pub use status::{PaymentKind, PaymentStatus, Role, TransactionStatus};
