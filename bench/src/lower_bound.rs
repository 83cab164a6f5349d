//! The lower bound on convergence time implied by the configured Upstash latency, the
//! operator's Upstash concurrency (`--concurrency`: requests in flight) and its global Upstash
//! rate limit.
//!
//! Each instance needs a chain of `k` Upstash calls before it can be Ready, and each call takes
//! at least the added latency `L`. For a new instance with a derived database name `k = 1`:
//! `create`, whose answer carries the credentials (the operator lists the account first only
//! when a create attempt is already recorded, the name was chosen by the user, or the object is
//! old enough to have lost its status). Deleting takes `k = 1` (`delete`). With `C` requests in
//! flight at a time, `N` instances take at least `ceil(N / C)` rounds of `k × L`:
//!
//! ```text
//! T_latency = ceil(N / C) × k × L
//! ```
//!
//! The operator also sends at most `R` calls per second after an initial burst of `B` (a
//! token bucket), so the `N × k` calls take at least
//!
//! ```text
//! T_rate = max(0, N × k − B) / R
//! ```
//!
//! The bound is the larger of the two. Kubernetes requests (status, Secret) are not counted:
//! they have no configured latency.

use serde::Serialize;

/// Inputs of the bound.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BoundInputs {
    pub instances: u64,
    /// Upstash calls on each instance's critical path.
    pub calls_per_instance: u64,
    pub latency_s: f64,
    pub concurrency: u64,
    pub rate_per_s: f64,
    pub burst: u64,
}

/// The bound and its two parts, in seconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bound {
    pub latency_s: f64,
    pub rate_s: f64,
    pub bound_s: f64,
}

pub fn lower_bound(i: BoundInputs) -> Bound {
    let rounds = i.instances.div_ceil(i.concurrency.max(1));
    let latency_s = rounds as f64 * i.calls_per_instance as f64 * i.latency_s;
    let calls = i.instances * i.calls_per_instance;
    let rate_s = calls.saturating_sub(i.burst) as f64 / i.rate_per_s.max(f64::MIN_POSITIVE);
    Bound {
        latency_s,
        rate_s,
        bound_s: latency_s.max(rate_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(n: u64, c: u64, r: f64) -> BoundInputs {
        BoundInputs {
            instances: n,
            calls_per_instance: 2,
            latency_s: 0.05,
            concurrency: c,
            rate_per_s: r,
            burst: (2.0 * r) as u64,
        }
    }

    #[test]
    fn the_defaults_are_rate_bound() {
        let b = lower_bound(inputs(1000, 8, 20.0));
        assert!((b.latency_s - 12.5).abs() < 1e-9);
        assert!((b.rate_s - 98.0).abs() < 1e-9);
        assert_eq!(b.bound_s, b.rate_s);
    }

    #[test]
    fn few_instances_are_latency_bound() {
        let b = lower_bound(inputs(10, 8, 20.0));
        assert!((b.latency_s - 0.2).abs() < 1e-9);
        assert_eq!(b.rate_s, 0.0);
        assert_eq!(b.bound_s, b.latency_s);
    }
}
