//! A circuit breaker: stop calling a dependency that keeps failing, fail fast for a cool-down, then let one trial
//! call through to see whether it has recovered.
//!
//! - Closed: calls go through; `failure_threshold` consecutive failures open the circuit.
//! - Open: calls are refused at once ([`CircuitOpen`]) until the cool-down has passed.
//! - Half-open: one trial call goes through (others are refused while it runs); its success closes the circuit,
//!   its failure opens it for another cool-down.
//!
//! A [`Permit`] dropped without an outcome (e.g. a cancelled future) counts as a failure, so a lost trial call
//! cannot leave the circuit half-open forever. The breaker is `Sync`: one instance guards a dependency for every
//! task of a process (a Lambda instance keeps it across invocations).
//!
//! ```
//! use std::time::Duration;
//! use orderflow_toolkit::circuit::{CircuitBreaker, CircuitError, CircuitState};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let breaker = CircuitBreaker::new(2, Duration::from_secs(30));
//! for _ in 0..2 {
//!     let failed: Result<(), _> = breaker.call(|| async { Err("provider timed out") }).await;
//!     assert!(matches!(failed, Err(CircuitError::Failed("provider timed out"))));
//! }
//! assert_eq!(breaker.state(), CircuitState::Open);
//! let refused: Result<(), CircuitError<&str>> = breaker.call(|| async { Ok(()) }).await;
//! assert!(matches!(refused, Err(CircuitError::Open(_))));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The state of a circuit, as seen at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// A call refused because the circuit is open (or half-open with its trial call in flight).
///
/// A caller that retries later waits at least `retry_in` (an SQS consumer through
/// `HandlerError::transient_after`), so that its retry does not come while the circuit is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    /// How long until the circuit lets a trial call through. Zero while a trial call is in flight: nobody knows
    /// yet when the circuit closes, so a retry waits its usual backoff.
    pub retry_in: Duration,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.retry_in.is_zero() {
            f.write_str("circuit half-open: calls fail fast while its trial call is in flight")
        } else {
            write!(f, "circuit open: calls fail fast for another {:?}", self.retry_in)
        }
    }
}

impl std::error::Error for CircuitOpen {}

/// Why [`CircuitBreaker::call`] did not return a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircuitError<E> {
    /// The call was not made.
    #[error(transparent)]
    Open(CircuitOpen),
    /// The call was made and failed (and counted as a failure).
    #[error("{0}")]
    Failed(E),
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// Guards calls to one dependency; see the module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed circuit that opens after `failure_threshold` (at least 1) consecutive failures and stays open for
    /// `cool_down`.
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            cool_down,
            inner: Mutex::new(Inner::Closed { consecutive_failures: 0 }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` valid, so a poisoned lock still holds a usable state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state now.
    pub fn state(&self) -> CircuitState {
        self.state_at(Instant::now())
    }

    /// The state at `now` (an open circuit whose cool-down has passed reads as half-open).
    pub fn state_at(&self, now: Instant) -> CircuitState {
        match *self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if now < until => CircuitState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Asks to make a call now; report its outcome on the returned permit. [`Self::call`] is this for a call that
    /// is one future; the permit is for outcomes known only later (no orderflow function needs that).
    pub fn try_acquire(&self) -> Result<Permit<'_>, CircuitOpen> {
        self.try_acquire_at(Instant::now())
    }

    /// Asks to make a call at `now`; report its outcome on the returned permit. The `_at` forms take the time, so
    /// tests of a caller's breaker need no sleeps.
    pub fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, CircuitOpen> {
        let mut inner = self.lock();
        let trial = match *inner {
            Inner::Closed { .. } => false,
            Inner::Open { until } if now < until => return Err(CircuitOpen { retry_in: until - now }),
            Inner::Open { .. } | Inner::HalfOpen { trial_in_flight: false } => {
                *inner = Inner::HalfOpen { trial_in_flight: true };
                true
            }
            Inner::HalfOpen { trial_in_flight: true } => return Err(CircuitOpen { retry_in: Duration::ZERO }),
        };
        Ok(Permit { breaker: self, trial, settled: false })
    }

    fn settle(&self, trial: bool, success: bool, now: Instant) {
        let mut inner = self.lock();
        *inner = match (*inner, success) {
            (Inner::Closed { .. }, true) => Inner::Closed { consecutive_failures: 0 },
            (Inner::Closed { consecutive_failures }, false) => {
                let consecutive_failures = consecutive_failures + 1;
                if consecutive_failures >= self.failure_threshold {
                    Inner::Open { until: now + self.cool_down }
                } else {
                    Inner::Closed { consecutive_failures }
                }
            }
            (Inner::HalfOpen { .. }, true) if trial => Inner::Closed { consecutive_failures: 0 },
            (Inner::HalfOpen { .. }, false) if trial => Inner::Open { until: now + self.cool_down },
            // A call admitted before the circuit opened finished late: the trial call decides, not this one.
            (state, _) => state,
        };
    }

    /// Makes the call `f` if the circuit allows it, and counts its outcome: `Err` is a failure.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, CircuitError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(CircuitError::Open)?;
        match f().await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(error) => {
                permit.failure();
                Err(CircuitError::Failed(error))
            }
        }
    }
}

/// Leave to make one call; report how it went. Dropped without a report, it counts as a failure.
#[derive(Debug)]
#[must_use = "report the call's outcome with success() or failure()"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    trial: bool,
    settled: bool,
}

impl Permit<'_> {
    /// Whether this is the trial call of a half-open circuit.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    pub fn success(self) {
        self.success_at(Instant::now());
    }

    pub fn failure(self) {
        self.failure_at(Instant::now());
    }

    pub fn success_at(mut self, now: Instant) {
        self.settled = true;
        self.breaker.settle(self.trial, true, now);
    }

    pub fn failure_at(mut self, now: Instant) {
        self.settled = true;
        self.breaker.settle(self.trial, false, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(self.trial, false, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL_DOWN: Duration = Duration::from_secs(10);

    fn fail(breaker: &CircuitBreaker, now: Instant) {
        breaker.try_acquire_at(now).expect("call allowed").failure_at(now);
    }

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures_and_not_before() {
        let breaker = CircuitBreaker::new(3, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        fail(&breaker, now);
        assert_eq!(breaker.state_at(now), CircuitState::Closed);
        fail(&breaker, now);
        assert_eq!(breaker.state_at(now), CircuitState::Open);
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let breaker = CircuitBreaker::new(2, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        breaker.try_acquire_at(now).unwrap().success_at(now);
        fail(&breaker, now);
        assert_eq!(breaker.state_at(now), CircuitState::Closed);
    }

    #[test]
    fn an_open_circuit_fails_fast_saying_how_long_until_a_trial() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        let later = now + Duration::from_secs(4);
        assert_eq!(breaker.try_acquire_at(later).unwrap_err(), CircuitOpen { retry_in: Duration::from_secs(6) });
    }

    #[test]
    fn after_the_cool_down_one_trial_call_goes_through_and_others_wait() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        let after = now + COOL_DOWN;
        assert_eq!(breaker.state_at(after), CircuitState::HalfOpen);
        let trial = breaker.try_acquire_at(after).unwrap();
        assert!(trial.is_trial());
        assert_eq!(breaker.try_acquire_at(after).unwrap_err(), CircuitOpen { retry_in: Duration::ZERO });
        trial.success_at(after);
        assert_eq!(breaker.state_at(after), CircuitState::Closed);
        assert!(!breaker.try_acquire_at(after).unwrap().is_trial());
    }

    #[test]
    fn a_refusal_says_how_long_the_circuit_stays_open_or_that_a_trial_is_in_flight() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        let open = breaker.try_acquire_at(now).unwrap_err();
        assert_eq!(open.to_string(), "circuit open: calls fail fast for another 10s");
        let _trial = breaker.try_acquire_at(now + COOL_DOWN).unwrap();
        let half_open = breaker.try_acquire_at(now + COOL_DOWN).unwrap_err();
        assert_eq!(half_open.to_string(), "circuit half-open: calls fail fast while its trial call is in flight");
    }

    #[test]
    fn a_failed_trial_opens_the_circuit_for_another_cool_down() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        let after = now + COOL_DOWN;
        fail(&breaker, after);
        assert_eq!(breaker.state_at(after + Duration::from_secs(9)), CircuitState::Open);
        assert_eq!(breaker.state_at(after + COOL_DOWN), CircuitState::HalfOpen);
    }

    #[test]
    fn a_dropped_trial_permit_counts_as_a_failure() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        fail(&breaker, now);
        drop(breaker.try_acquire_at(now + COOL_DOWN).unwrap());
        assert!(breaker.try_acquire_at(now + COOL_DOWN).is_err(), "the circuit is open again, not stuck half-open");
    }

    #[test]
    fn a_late_outcome_of_a_call_admitted_while_closed_does_not_close_a_half_open_circuit() {
        let breaker = CircuitBreaker::new(1, COOL_DOWN);
        let now = Instant::now();
        let slow = breaker.try_acquire_at(now).unwrap();
        fail(&breaker, now);
        let trial = breaker.try_acquire_at(now + COOL_DOWN).unwrap();
        slow.success_at(now + COOL_DOWN);
        assert_eq!(breaker.try_acquire_at(now + COOL_DOWN).unwrap_err().retry_in, Duration::ZERO);
        trial.failure_at(now + COOL_DOWN);
        assert_eq!(breaker.state_at(now + COOL_DOWN), CircuitState::Open);
    }

    #[tokio::test]
    async fn call_counts_err_as_failure_and_refuses_while_open() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(60));
        let ok: Result<u32, CircuitError<&str>> = breaker.call(|| async { Ok(7) }).await;
        assert_eq!(ok, Ok(7));
        for _ in 0..2 {
            let failed: Result<u32, _> = breaker.call(|| async { Err("boom") }).await;
            assert_eq!(failed, Err(CircuitError::Failed("boom")));
        }
        let mut called = false;
        let refused: Result<u32, CircuitError<&str>> = breaker
            .call(|| {
                called = true;
                async { Ok(1) }
            })
            .await;
        assert!(matches!(refused, Err(CircuitError::Open(_))));
        assert!(!called, "an open circuit does not make the call");
    }
}
