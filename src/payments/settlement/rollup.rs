//! The status a payment's transactions add up to, pure. A payment has a USDC leg when it has an
//! amount and an ETH leg when it sends gas money; each leg is the live transaction of one nonce
//! slot (or, once Bursar gave the slot up, the filler that took it).

use crate::domain::{PaymentStatus, TransactionStatus};

/// One live transaction of a payment, as the roll-up sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    pub status: TransactionStatus,
    pub filler: bool,
}

/// What the payment should become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Move (one legal edge at a time) to this status.
    Status(PaymentStatus),
    /// Stay: a leg still needs a transaction, or a replacement is signed and not yet sent.
    Stay,
}

/// The least advanced leg decides (a funding is confirmed when both of its transfers are); a
/// failed leg fails the payment; a filler that reached depth fails it (its original can never
/// execute now), and a filler not yet at depth keeps it `submitted`. `missing_legs` counts legs
/// that have no live transaction (a new payment, or one whose nonce a foreign transaction took).
pub fn target(legs: &[Leg], missing_legs: usize) -> Target {
    if legs.iter().any(|leg| leg.filler) {
        let filled = legs
            .iter()
            .any(|leg| leg.filler && leg.status == TransactionStatus::Confirmed);
        return Target::Status(if filled {
            PaymentStatus::Failed
        } else {
            PaymentStatus::Submitted
        });
    }
    if legs
        .iter()
        .any(|leg| leg.status == TransactionStatus::Failed)
    {
        return Target::Status(PaymentStatus::Failed);
    }
    if legs.is_empty() || missing_legs > 0 {
        return Target::Stay;
    }
    let least = legs.iter().map(|leg| rank(leg.status)).min().unwrap_or(0);
    match least {
        0 => Target::Stay,
        1 => Target::Status(PaymentStatus::Submitted),
        2 => Target::Status(PaymentStatus::Included),
        _ => Target::Status(PaymentStatus::Confirmed),
    }
}

fn rank(status: TransactionStatus) -> u8 {
    match status {
        TransactionStatus::Submitted => 1,
        TransactionStatus::Included => 2,
        TransactionStatus::Confirmed => 3,
        _ => 0,
    }
}

/// The next legal status on the way from `current` to `target`.
pub fn next_step(current: PaymentStatus, target: PaymentStatus) -> Option<PaymentStatus> {
    use PaymentStatus::*;
    let next = match (current, target) {
        (_, Failed) if current.can_become(Failed) => Failed,
        (Queued, _) => Submitted,
        (Submitted, Included | Confirmed) => Included,
        (Included, Confirmed) => Confirmed,
        (Included, Submitted | Queued) => Submitted,
        _ => return None,
    };
    current.can_become(next).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus as P;
    use TransactionStatus as T;

    fn leg(status: T) -> Leg {
        Leg {
            status,
            filler: false,
        }
    }

    fn filler(status: T) -> Leg {
        Leg {
            status,
            filler: true,
        }
    }

    #[test]
    fn the_least_advanced_leg_decides() {
        let cases: &[(&[Leg], usize, Target)] = &[
            (&[], 1, Target::Stay),
            (&[leg(T::Signed)], 0, Target::Stay),
            (&[leg(T::Submitted)], 0, Target::Status(P::Submitted)),
            (&[leg(T::Included)], 0, Target::Status(P::Included)),
            (&[leg(T::Confirmed)], 0, Target::Status(P::Confirmed)),
            (
                &[leg(T::Confirmed), leg(T::Included)],
                0,
                Target::Status(P::Included),
            ),
            (&[leg(T::Confirmed), leg(T::Signed)], 0, Target::Stay),
            // A leg whose nonce a foreign transaction took has no live transaction yet.
            (&[leg(T::Confirmed)], 1, Target::Stay),
            (
                &[leg(T::Confirmed), leg(T::Failed)],
                0,
                Target::Status(P::Failed),
            ),
        ];
        for (legs, missing, expected) in cases {
            assert_eq!(
                target(legs, *missing),
                *expected,
                "{legs:?} missing {missing}"
            );
        }
    }

    #[test]
    fn a_filler_fails_the_payment_only_at_depth() {
        assert_eq!(
            target(&[filler(T::Signed)], 0),
            Target::Status(P::Submitted)
        );
        assert_eq!(
            target(&[filler(T::Included)], 0),
            Target::Status(P::Submitted)
        );
        assert_eq!(
            target(&[filler(T::Confirmed)], 0),
            Target::Status(P::Failed)
        );
        assert_eq!(
            target(&[leg(T::Confirmed), filler(T::Included)], 0),
            Target::Status(P::Submitted)
        );
    }

    #[test]
    fn steps_follow_the_state_machine() {
        assert_eq!(next_step(P::Queued, P::Confirmed), Some(P::Submitted));
        assert_eq!(next_step(P::Submitted, P::Confirmed), Some(P::Included));
        assert_eq!(next_step(P::Included, P::Confirmed), Some(P::Confirmed));
        assert_eq!(next_step(P::Included, P::Submitted), Some(P::Submitted));
        assert_eq!(next_step(P::Submitted, P::Failed), Some(P::Failed));
        assert_eq!(next_step(P::Queued, P::Failed), Some(P::Failed));
        assert_eq!(next_step(P::Confirmed, P::Submitted), None);
        assert_eq!(next_step(P::Cancelled, P::Failed), None);
    }
}
