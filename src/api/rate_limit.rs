//! The write-rate limit in front of the write path: every credential and staff token may make
//! at most `per_second` write requests a second (bursts up to `burst`), counted before the
//! request reaches a use case, so a flood of requests that would be denied never takes the
//! database's write lock. Reads are not limited here. Uses `governor` (GCRA).

use super::ApiError;
use crate::payments::Principal;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct WriteLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for WriteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteLimiter")
    }
}

impl WriteLimiter {
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> WriteLimiter {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        WriteLimiter {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one write by `principal`; `429 rate_limited` with the seconds to wait when over.
    pub fn check(&self, principal: &Principal) -> Result<(), ApiError> {
        let key = match principal {
            Principal::Agent { credential_id, .. } => credential_id.to_string(),
            Principal::Staff {
                token_id: Some(id), ..
            } => id.clone(),
            Principal::Staff { token_id: None, .. } => "bootstrap-admin".into(),
        };
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            metrics::counter!("bursar_rate_limited_total").increment(1);
            ApiError::RateLimited {
                retry_after_secs: seconds.max(1),
            }
        })
    }
}
