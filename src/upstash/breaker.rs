//! A circuit breaker around the Upstash API: after `failure_threshold` consecutive outage-like
//! failures it opens and refuses calls for `reset_timeout`; then it lets one trial call through
//! at a time (half-open) and closes after `success_threshold` consecutive successes.
//!
//! The client records one outcome per call, after the call's own retries, and only failures
//! that say Upstash is unavailable count (see [`super::UpstashError::counts_as_outage`]): a
//! scattered share of failing requests is absorbed by the retries and never adds up to five
//! failed calls in a row, while an outage fails every call and opens the breaker after five.
//!
//! Written here rather than taken from a crate because the operator needs the exact
//! half-open semantics of its guide (one trial at a time, N successes to close), state-change
//! notifications for metrics and Events, and `Retry-After` awareness; the small state machine is
//! easier to verify than an adapter around a general-purpose crate.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before a trial call.
    pub reset_timeout: Duration,
    /// Consecutive successful trial calls that close it again.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(60),
            success_threshold: 2,
        }
    }
}

/// The externally visible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name for logs, status pages and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// Numeric value for the metrics gauge: 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        successes: u32,
        /// When the trial call in flight started, if one is.
        trial_since: Option<Instant>,
    },
}

/// The breaker. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    state_tx: watch::Sender<BreakerState>,
}

/// Permission to make one call; report its outcome with [`CircuitBreaker::record`].
#[derive(Debug)]
#[must_use = "report the call's outcome with CircuitBreaker::record"]
pub struct Permit {
    trial: bool,
}

impl Permit {
    /// Whether this is the half-open breaker's trial call (which is made once, not retried:
    /// it only has to tell whether Upstash is back).
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        let (state_tx, _) = watch::channel(BreakerState::Closed);
        Self {
            config,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            state_tx,
        }
    }

    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        *self.state_tx.borrow()
    }

    /// What the breaker counts now, as `(failures, successes)`: consecutive failures while
    /// closed (the threshold once open), successful trial calls while half-open.
    pub fn counts(&self) -> (u32, u32) {
        match &*self.inner.lock().unwrap_or_else(|e| e.into_inner()) {
            Inner::Closed { failures } => (*failures, 0),
            Inner::Open { .. } => (self.config.failure_threshold, 0),
            Inner::HalfOpen { successes, .. } => (0, *successes),
        }
    }

    /// While the breaker is open: how long until it lets a trial call through.
    pub fn reopens_in(&self) -> Option<Duration> {
        self.reopens_in_at(Instant::now())
    }

    fn reopens_in_at(&self, now: Instant) -> Option<Duration> {
        match &*self.inner.lock().unwrap_or_else(|e| e.into_inner()) {
            Inner::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// Notifications of state changes.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.state_tx.subscribe()
    }

    /// Asks to make a call now. `Err(wait)` means the breaker is open (or a trial call is
    /// already in flight) and says how long until a call may be allowed.
    pub fn try_acquire(&self) -> Result<Permit, Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<Permit, Duration> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *inner {
            Inner::Closed { .. } => Ok(Permit { trial: false }),
            Inner::Open { until } => {
                if now >= *until {
                    *inner = Inner::HalfOpen {
                        successes: 0,
                        trial_since: Some(now),
                    };
                    drop(inner);
                    self.publish(BreakerState::HalfOpen);
                    Ok(Permit { trial: true })
                } else {
                    Err(*until - now)
                }
            }
            Inner::HalfOpen { trial_since, .. } => {
                // A trial whose outcome never came back (its task was cancelled) does not
                // hold the breaker half-open for ever.
                let lost = trial_since
                    .is_some_and(|since| now.duration_since(since) > self.config.reset_timeout);
                if trial_since.is_some() && !lost {
                    Err(Duration::from_secs(1))
                } else {
                    *trial_since = Some(now);
                    Ok(Permit { trial: true })
                }
            }
        }
    }

    /// Reports the outcome of a permitted call: `success` is false only for outage-like
    /// failures (5xx, timeouts, broken connections), not for answers that refuse a request
    /// (4xx, 429 included). Returns the new state when this outcome changed it.
    pub fn record(&self, permit: Permit, success: bool) -> Option<BreakerState> {
        self.record_at(permit, success, Instant::now())
    }

    fn record_at(&self, permit: Permit, success: bool, now: Instant) -> Option<BreakerState> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = None;
        match &mut *inner {
            Inner::Closed { failures } => {
                if success {
                    *failures = 0;
                } else {
                    *failures += 1;
                    if *failures >= self.config.failure_threshold {
                        *inner = Inner::Open {
                            until: now + self.config.reset_timeout,
                        };
                        changed = Some(BreakerState::Open);
                    }
                }
            }
            Inner::Open { .. } => {
                // A call that started before the breaker opened; its outcome changes nothing.
            }
            Inner::HalfOpen {
                successes,
                trial_since,
            } => {
                if permit.trial {
                    *trial_since = None;
                }
                if success {
                    *successes += 1;
                    if *successes >= self.config.success_threshold {
                        *inner = Inner::Closed { failures: 0 };
                        changed = Some(BreakerState::Closed);
                    }
                } else {
                    *inner = Inner::Open {
                        until: now + self.config.reset_timeout,
                    };
                    changed = Some(BreakerState::Open);
                }
            }
        }
        drop(inner);
        if let Some(state) = changed {
            self.publish(state);
        }
        changed
    }

    fn publish(&self, state: BreakerState) {
        self.state_tx.send_replace(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig::default())
    }

    #[test]
    fn opens_after_five_failures_and_refuses_calls() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..4 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, false, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let p = b.try_acquire_at(t0).unwrap();
        b.record_at(p, false, t0);
        assert_eq!(b.state(), BreakerState::Open);
        let wait = b.try_acquire_at(t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(
            b.reopens_in_at(t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(breaker().reopens_in_at(t0), None);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = breaker();
        let t0 = Instant::now();
        for i in 0..12 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, i % 4 == 3, t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_allows_one_trial_at_a_time_and_closes_after_two_successes() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..5 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, false, t0);
        }
        let later = t0 + Duration::from_secs(60);
        let trial = b.try_acquire_at(later).unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(
            b.try_acquire_at(later).is_err(),
            "second concurrent trial refused"
        );
        b.record_at(trial, true, later);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.try_acquire_at(later).unwrap();
        b.record_at(trial, true, later);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire_at(later).is_ok());
    }

    #[test]
    fn a_failed_trial_reopens() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..5 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, false, t0);
        }
        let later = t0 + Duration::from_secs(61);
        let trial = b.try_acquire_at(later).unwrap();
        b.record_at(trial, false, later);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire_at(later + Duration::from_secs(59)).is_err());
        assert!(b.try_acquire_at(later + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_lost_trial_does_not_block_for_ever() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..5 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, false, t0);
        }
        let later = t0 + Duration::from_secs(60);
        let _lost = b.try_acquire_at(later).unwrap();
        assert!(b.try_acquire_at(later + Duration::from_secs(30)).is_err());
        let trial = b.try_acquire_at(later + Duration::from_secs(61)).unwrap();
        assert!(trial.is_trial());
    }

    #[test]
    fn record_reports_transitions() {
        let b = breaker();
        let t0 = Instant::now();
        for _ in 0..4 {
            let p = b.try_acquire_at(t0).unwrap();
            assert_eq!(b.record_at(p, false, t0), None);
        }
        let p = b.try_acquire_at(t0).unwrap();
        assert!(!p.is_trial());
        assert_eq!(b.record_at(p, false, t0), Some(BreakerState::Open));
        let later = t0 + Duration::from_secs(60);
        let trial = b.try_acquire_at(later).unwrap();
        assert_eq!(b.record_at(trial, true, later), None);
        let trial = b.try_acquire_at(later).unwrap();
        assert_eq!(b.record_at(trial, true, later), Some(BreakerState::Closed));
    }

    #[test]
    fn state_changes_are_published() {
        let b = breaker();
        let mut rx = b.subscribe();
        let t0 = Instant::now();
        for _ in 0..5 {
            let p = b.try_acquire_at(t0).unwrap();
            b.record_at(p, false, t0);
        }
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), BreakerState::Open);
    }
}
