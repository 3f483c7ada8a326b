//! Fault injection for chaos tests, switched on by configuration and off by default.
//!
//! Read once at start from the environment:
//! - `ORDERFLOW_FAULT_CRASH_AFTER_WRITE` (probability 0..=1): after a batch has been processed (its writes
//!   succeeded) and BEFORE its response (the acknowledgement) is returned, the process exits abruptly with
//!   [`CRASH_EXIT_CODE`]; the whole batch is delivered again.
//! - `ORDERFLOW_FAULT_THROTTLE` (probability 0..=1): a record fails transiently with a throttling error before its
//!   handler runs (before any of its writes).
//! - `ORDERFLOW_FAULT_SEED` (optional u64): seeds the generator (else the pid and the clock do).
//!
//! Unset or `0` means off; off costs one comparison per record and per batch.
//!
//! ```
//! use orderflow_toolkit::SqsRecord;
//! use orderflow_toolkit::faults::{Faults, THROTTLE_ENV, THROTTLE_REASON};
//!
//! assert!(!Faults::from_lookup(|_| None).unwrap().is_on());
//! // A chaos run with ORDERFLOW_FAULT_THROTTLE=1: every record fails transiently before its handler runs.
//! let faults = Faults::from_lookup(|name| (name == THROTTLE_ENV).then(|| "1".to_owned())).unwrap();
//! let record =
//!     SqsRecord { message_id: "m-1".into(), body: "{}".into(), receive_count: 1, attributes: Default::default() };
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let error = faults.guard(record, |_| async { Ok(()) }).await.unwrap_err();
//! assert_eq!(error.class(), "Transient");
//! assert!(error.reason().starts_with(THROTTLE_REASON));
//! # });
//! // A value that is not a probability stops the function at start-up, naming the variable.
//! let err = Faults::from_lookup(|name| (name == THROTTLE_ENV).then(|| "often".to_owned())).unwrap_err();
//! assert_eq!(err.name, THROTTLE_ENV);
//! ```

use std::future::{Future, Ready, ready};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::Either;

use crate::batch::SqsRecord;
use crate::error::HandlerError;

pub const CRASH_AFTER_WRITE_ENV: &str = "ORDERFLOW_FAULT_CRASH_AFTER_WRITE";
pub const THROTTLE_ENV: &str = "ORDERFLOW_FAULT_THROTTLE";
pub const SEED_ENV: &str = "ORDERFLOW_FAULT_SEED";
/// The exit status of an injected crash, so a runner can tell it from a real one.
pub const CRASH_EXIT_CODE: i32 = 86;
/// The reason of an injected throttling failure starts with this.
pub const THROTTLE_REASON: &str = "injected fault: throttled";

/// A fault variable with a value that is not a probability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is invalid: {reason}")]
pub struct FaultConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// The configured faults and the generator deciding when they fire.
#[derive(Debug)]
pub struct Faults {
    crash_after_write: f64,
    throttle: f64,
    state: AtomicU64,
}

impl Default for Faults {
    /// No faults.
    fn default() -> Self {
        Self::new(0.0, 0.0, 1)
    }
}

impl Faults {
    fn new(crash_after_write: f64, throttle: f64, seed: u64) -> Self {
        // xorshift's state must not be zero.
        Self { crash_after_write, throttle, state: AtomicU64::new(seed.max(1)) }
    }

    /// The faults named by the process environment.
    pub fn from_env() -> Result<Self, FaultConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The faults named by `lookup` (variable name -> value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, FaultConfigError> {
        let probability = |name: &'static str| -> Result<f64, FaultConfigError> {
            let Some(value) = lookup(name).filter(|v| !v.trim().is_empty()) else { return Ok(0.0) };
            let invalid = |reason: &str| FaultConfigError { name, value: value.clone(), reason: reason.to_owned() };
            let p: f64 = value.trim().parse().map_err(|_| invalid("not a number"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(invalid("a probability must be between 0 and 1"));
            }
            Ok(p)
        };
        let crash_after_write = probability(CRASH_AFTER_WRITE_ENV)?;
        let throttle = probability(THROTTLE_ENV)?;
        let seed = match lookup(SEED_ENV).filter(|v| !v.trim().is_empty()) {
            Some(value) => value.trim().parse().map_err(|_| FaultConfigError {
                name: SEED_ENV,
                value: value.clone(),
                reason: "not an unsigned integer".to_owned(),
            })?,
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15
            }
        };
        let faults = Self::new(crash_after_write, throttle, seed);
        if faults.is_on() {
            tracing::warn!(crash_after_write, throttle, seed, "fault injection is ON");
        }
        Ok(faults)
    }

    /// Whether any fault may fire.
    pub fn is_on(&self) -> bool {
        self.crash_after_write > 0.0 || self.throttle > 0.0
    }

    pub fn crash_after_write_probability(&self) -> f64 {
        self.crash_after_write
    }

    pub fn throttle_probability(&self) -> f64 {
        self.throttle
    }

    /// A uniform number in [0, 1) from a xorshift64* generator.
    fn next_unit(&self) -> f64 {
        let step = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let previous = self.state.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x))).unwrap_or(1);
        let x = step(previous).wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fires(&self, probability: f64) -> bool {
        probability > 0.0 && self.next_unit() < probability
    }

    /// The injected throttling error for this record, when the throttle fault fires.
    pub fn throttled(&self, message_id: &str) -> Option<HandlerError> {
        self.fires(self.throttle).then(|| {
            tracing::warn!(message_id, "injected fault: throttling the record before its handler");
            HandlerError::transient(format!("{THROTTLE_REASON} ({THROTTLE_ENV})"))
        })
    }

    /// Runs `handler` on `record` unless the throttle fault fires first, in which case the record fails
    /// transiently and the handler is never called.
    pub fn guard<H, Fut>(&self, record: SqsRecord, handler: H) -> Either<Ready<Result<(), HandlerError>>, Fut>
    where
        H: FnOnce(SqsRecord) -> Fut,
        Fut: Future<Output = Result<(), HandlerError>>,
    {
        match self.throttled(&record.message_id) {
            Some(error) => Either::Left(ready(Err(error))),
            None => Either::Right(handler(record)),
        }
    }

    /// Whether the crash-after-write fault fires for this batch.
    pub fn crashes_after_write(&self) -> bool {
        self.fires(self.crash_after_write)
    }

    /// Call after a batch's writes and before its response: exits the process abruptly (no response, no
    /// acknowledgement) when the crash fault fires.
    pub fn maybe_crash_after_write(&self) {
        if self.crashes_after_write() {
            tracing::warn!(exit_code = CRASH_EXIT_CODE, "injected fault: crashing after the batch's writes");
            eprintln!("injected fault: crash after write ({CRASH_AFTER_WRITE_ENV}), exiting with {CRASH_EXIT_CODE}");
            std::process::exit(CRASH_EXIT_CODE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn faults(vars: &[(&str, &str)]) -> Result<Faults, FaultConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Faults::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn faults_are_off_by_default_and_never_fire() {
        let off = faults(&[]).unwrap();
        assert!(!off.is_on());
        assert!((0..10_000).all(|_| off.throttled("m").is_none() && !off.crashes_after_write()));
        let zero = faults(&[(CRASH_AFTER_WRITE_ENV, "0"), (THROTTLE_ENV, " "), (SEED_ENV, "")]).unwrap();
        assert!(!zero.is_on());
        assert!(!Faults::default().is_on());
    }

    #[test]
    fn probabilities_and_seed_are_parsed_and_bad_values_are_rejected_naming_the_variable() {
        let on = faults(&[(CRASH_AFTER_WRITE_ENV, "0.02"), (THROTTLE_ENV, "0.05"), (SEED_ENV, "7")]).unwrap();
        assert!(on.is_on());
        assert_eq!(on.crash_after_write_probability(), 0.02);
        assert_eq!(on.throttle_probability(), 0.05);
        for (name, value) in [(THROTTLE_ENV, "1.5"), (THROTTLE_ENV, "-0.1"), (CRASH_AFTER_WRITE_ENV, "often")] {
            let err = faults(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name);
            assert!(err.to_string().contains(name), "{err}");
        }
        assert_eq!(faults(&[(SEED_ENV, "x")]).unwrap_err().name, SEED_ENV);
    }

    #[test]
    fn faults_fire_at_about_their_rate_and_deterministically_for_a_seed() {
        let rolls = |seed: &str| {
            let f = faults(&[(THROTTLE_ENV, "0.05"), (SEED_ENV, seed)]).unwrap();
            (0..20_000).map(|_| f.throttled("m").is_some()).collect::<Vec<_>>()
        };
        let first = rolls("42");
        assert_eq!(first, rolls("42"));
        let fired = first.iter().filter(|&&t| t).count();
        assert!((800..1200).contains(&fired), "{fired} of 20000 at 5%");
        let always = faults(&[(THROTTLE_ENV, "1"), (CRASH_AFTER_WRITE_ENV, "1")]).unwrap();
        assert!(always.crashes_after_write());
        let error = always.throttled("m").unwrap();
        assert_eq!(error.class(), "Transient");
        assert!(error.reason().starts_with(THROTTLE_REASON));
    }

    #[tokio::test]
    async fn a_throttled_record_never_reaches_its_handler() {
        let always = faults(&[(THROTTLE_ENV, "1")]).unwrap();
        let record = SqsRecord {
            message_id: "m".to_owned(),
            body: String::new(),
            receive_count: 1,
            attributes: Default::default(),
        };
        let called = std::cell::Cell::new(false);
        let outcome = always
            .guard(record.clone(), |_| async {
                called.set(true);
                Ok(())
            })
            .await;
        assert!(outcome.is_err());
        assert!(!called.get());
        let off = Faults::default();
        assert_eq!(off.guard(record, |_| async { Ok(()) }).await, Ok(()));
    }
}
