//! Reconnect timing, without I/O: exponential backoff with full jitter, and the plan a close
//! code calls for. The caller supplies the randomness and the clock, so tests need neither.

use std::time::Duration;

use crate::codes::Reconnect;
use crate::v1::{CloseCode, Disconnect};

/// Exponential backoff with full jitter: attempt `n` waits a uniformly random time in
/// `[0, min(cap, base * 2^n))`, so that many clients dropped at once spread their returns.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// The protocol's recommended defaults: 500 ms base, 30 s cap.
    pub fn recommended() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    /// A backoff with the given base and cap.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The wait before the next attempt; `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.cap)
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Attempts made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// What a client does after its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectPlan {
    /// Reconnect after this delay.
    After(Duration),
    /// Get a fresh token first, then reconnect.
    RefreshTokenFirst,
    /// Do not reconnect; tell the app.
    Stop,
}

/// The plan for a close with `disconnect` (or `None` when the connection dropped without one:
/// a network failure, treated like an internal error: backoff and resume).
pub fn plan_after_close(
    disconnect: Option<&Disconnect>,
    backoff: &mut Backoff,
    unit: f64,
) -> ReconnectPlan {
    let code = disconnect
        .and_then(|d| CloseCode::try_from(d.code).ok())
        .unwrap_or(CloseCode::InternalError);
    match code.reconnect() {
        Reconnect::Never => ReconnectPlan::Stop,
        Reconnect::AfterTokenRefresh => ReconnectPlan::RefreshTokenFirst,
        Reconnect::Immediately => ReconnectPlan::After(Duration::ZERO),
        Reconnect::AfterAdvisedDelay => {
            let advised = disconnect.map_or(0, |d| d.reconnect_after_ms);
            if advised > 0 {
                // Spread the advised delay a little, so a drained node's clients do not return
                // in one instant.
                let advised = Duration::from_millis(u64::from(advised));
                ReconnectPlan::After(advised + advised.mul_f64(unit.clamp(0.0, 1.0) * 0.5))
            } else {
                ReconnectPlan::After(backoff.next_delay(unit))
            }
        }
        _ => ReconnectPlan::After(backoff.next_delay(unit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_stop_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings: Vec<Duration> = (0..10).map(|_| b.next_delay(0.999_999)).collect();
        assert!(ceilings[0] < Duration::from_millis(500));
        assert!(ceilings[1] > Duration::from_millis(900) && ceilings[1] < Duration::from_secs(1));
        assert!(ceilings.windows(2).all(|w| w[0] <= w[1]));
        assert!(ceilings[9] <= Duration::from_secs(30) && ceilings[9] > Duration::from_secs(29));
        assert_eq!(
            b.next_delay(0.0),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        b.reset();
        assert_eq!(b.attempts(), 0);
        for _ in 0..100 {
            b.next_delay(0.5);
        }
        assert!(
            b.next_delay(1.0) <= Duration::from_secs(30),
            "no overflow after many attempts"
        );
    }

    #[test]
    fn close_codes_choose_the_plan() {
        let mut b = Backoff::recommended();
        let d = |code: CloseCode, ms: u32| Disconnect {
            reconnect_after_ms: ms,
            ..code.disconnect("x")
        };
        assert_eq!(
            plan_after_close(Some(&d(CloseCode::Banned, 0)), &mut b, 0.5),
            ReconnectPlan::Stop
        );
        assert_eq!(
            plan_after_close(Some(&d(CloseCode::AuthInvalid, 0)), &mut b, 0.5),
            ReconnectPlan::Stop
        );
        assert_eq!(
            plan_after_close(Some(&d(CloseCode::AuthExpired, 0)), &mut b, 0.5),
            ReconnectPlan::RefreshTokenFirst
        );
        assert_eq!(
            plan_after_close(Some(&d(CloseCode::SlowConsumer, 0)), &mut b, 0.5),
            ReconnectPlan::After(Duration::ZERO)
        );
        assert_eq!(
            plan_after_close(Some(&d(CloseCode::GoingAway, 1000)), &mut b, 0.0),
            ReconnectPlan::After(Duration::from_millis(1000))
        );
        assert!(matches!(
            plan_after_close(None, &mut b, 0.5),
            ReconnectPlan::After(_)
        ));
    }
}
