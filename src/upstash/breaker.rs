//! A circuit breaker around the Upstash API: after `failure_threshold` consecutive outage-like
//! failures it opens and refuses calls for `reset_timeout`; then it lets one trial call through
//! at a time (half-open) and closes after `success_threshold` consecutive successes.
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
        trial_in_flight: bool,
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
                        trial_in_flight: true,
                    };
                    drop(inner);
                    self.publish(BreakerState::HalfOpen);
                    Ok(Permit { trial: true })
                } else {
                    Err(*until - now)
                }
            }
            Inner::HalfOpen {
                trial_in_flight, ..
            } => {
                if *trial_in_flight {
                    Err(Duration::from_secs(1))
                } else {
                    *trial_in_flight = true;
                    Ok(Permit { trial: true })
                }
            }
        }
    }

    /// Reports the outcome of a permitted call: `success` is false only for outage-like
    /// failures (5xx, timeouts, broken connections, 429), not for refused requests.
    pub fn record(&self, permit: Permit, success: bool) {
        self.record_at(permit, success, Instant::now());
    }

    fn record_at(&self, permit: Permit, success: bool, now: Instant) {
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
                trial_in_flight,
            } => {
                if permit.trial {
                    *trial_in_flight = false;
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
