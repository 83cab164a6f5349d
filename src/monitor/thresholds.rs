//! Thresholds and their evaluation (pure): which limits apply to an instance, and how a series
//! of samples turns into alert transitions with a hold time and hysteresis.

use std::time::Duration;

use crate::crd::{CachePolicy, CachePolicySpec};

/// The alerts the monitor raises. The name is the Event reason and the `status.alerts` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    HitRateLow,
    MemoryHigh,
    ErrorRateHigh,
    LatencyHigh,
    ConnectionFailing,
    BudgetNearlyExhausted,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::HitRateLow,
        AlertKind::MemoryHigh,
        AlertKind::ErrorRateHigh,
        AlertKind::LatencyHigh,
        AlertKind::ConnectionFailing,
        AlertKind::BudgetNearlyExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::HitRateLow => "HitRateLow",
            AlertKind::MemoryHigh => "MemoryHigh",
            AlertKind::ErrorRateHigh => "ErrorRateHigh",
            AlertKind::LatencyHigh => "LatencyHigh",
            AlertKind::ConnectionFailing => "ConnectionFailing",
            AlertKind::BudgetNearlyExhausted => "BudgetNearlyExhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Reason of the Normal Event when the alert resolves.
    pub fn resolved_reason(self) -> &'static str {
        match self {
            AlertKind::HitRateLow => "HitRateRecovered",
            AlertKind::MemoryHigh => "MemoryRecovered",
            AlertKind::ErrorRateHigh => "ErrorRateRecovered",
            AlertKind::LatencyHigh => "LatencyRecovered",
            AlertKind::ConnectionFailing => "ConnectionRecovered",
            AlertKind::BudgetNearlyExhausted => "BudgetRecovered",
        }
    }
}

/// Which side of the threshold is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Bad when the value is below the threshold (hit rate).
    Below,
    /// Bad when the value is above the threshold.
    Above,
}

/// One threshold in force.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub value: f64,
    pub direction: Direction,
}

/// The thresholds in force for an instance, with the guide's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub hit_rate_below: Option<f64>,
    pub hit_rate_target: f64,
    pub hit_rate_min_requests: f64,
    pub memory_above_percent: Option<f64>,
    pub error_rate_above_percent: Option<f64>,
    pub p95_above_ms: Option<f64>,
    pub p99_above_ms: Option<f64>,
    pub budget_above_percent: Option<f64>,
    pub connection_failures_after: Option<u32>,
    pub interval: Duration,
    pub hold: Duration,
    pub hysteresis_percent: f64,
}

/// Shortest evaluation interval honoured.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Evaluation interval when a policy sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

impl Thresholds {
    /// The guide's thresholds: hit rate below 70% (target 80%), memory above 80%, errors above
    /// 1%, P95 above 50 ms, spend above 80% of budget, 3 consecutive connection failures.
    pub fn defaults() -> Self {
        Self::from_spec(&CachePolicySpec::default())
    }

    pub fn from_policy(policy: &CachePolicy) -> Self {
        Self::from_spec(&policy.spec)
    }

    pub fn from_spec(spec: &CachePolicySpec) -> Self {
        let on = |enabled: Option<bool>| enabled != Some(false);
        let hit = spec.hit_rate.clone().unwrap_or_default();
        let memory = spec.memory.clone().unwrap_or_default();
        let errors = spec.error_rate.clone().unwrap_or_default();
        let latency = spec.latency.clone().unwrap_or_default();
        let budget = spec.budget.clone().unwrap_or_default();
        let conn = spec.connection_failures.clone().unwrap_or_default();
        let duration = |d: &Option<crate::crd::DurationString>, default: Duration| {
            d.as_ref()
                .and_then(|d| d.duration().ok())
                .unwrap_or(default)
        };
        Self {
            hit_rate_below: on(hit.enabled).then(|| hit.warning_below.unwrap_or(70.0)),
            hit_rate_target: hit.target.unwrap_or(80.0),
            hit_rate_min_requests: hit.min_requests.unwrap_or(100).max(0) as f64,
            memory_above_percent: on(memory.enabled).then(|| memory.warning_above.unwrap_or(80.0)),
            error_rate_above_percent: on(errors.enabled)
                .then(|| errors.warning_above.unwrap_or(1.0)),
            p95_above_ms: on(latency.enabled).then(|| latency.p95_warning_above_ms.unwrap_or(50.0)),
            p99_above_ms: latency.p99_warning_above_ms.filter(|_| on(latency.enabled)),
            budget_above_percent: on(budget.enabled)
                .then(|| budget.warning_above_percent.unwrap_or(80.0)),
            connection_failures_after: on(conn.enabled)
                .then(|| conn.warning_after.unwrap_or(3).max(1) as u32),
            interval: duration(&spec.evaluation_interval, DEFAULT_INTERVAL).max(MIN_INTERVAL),
            hold: duration(&spec.hold_time, Duration::ZERO),
            hysteresis_percent: spec.hysteresis_percent.unwrap_or(5.0).clamp(0.0, 100.0),
        }
    }
}

/// Where one alert stands.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertState {
    Ok,
    /// Past the threshold since `since` (seconds on the monitor's clock), not yet for the hold time.
    Pending {
        since: f64,
    },
    /// Firing since `since`.
    Firing {
        since: f64,
    },
}

/// What an evaluation step changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Resolved,
}

/// Advances `state` with a new sample `value` at time `now` (seconds). `None` values (no data)
/// leave the state as it is.
pub fn step(
    state: &AlertState,
    value: Option<f64>,
    limit: Limit,
    hold: Duration,
    hysteresis_percent: f64,
    now: f64,
) -> (AlertState, Option<Transition>) {
    let Some(value) = value.filter(|v| v.is_finite()) else {
        return (state.clone(), None);
    };
    let breached = match limit.direction {
        Direction::Below => value < limit.value,
        Direction::Above => value > limit.value,
    };
    let margin = limit.value.abs() * hysteresis_percent / 100.0;
    let recovered = match limit.direction {
        Direction::Below => value >= limit.value + margin,
        Direction::Above => value <= limit.value - margin,
    };
    match state {
        AlertState::Ok | AlertState::Pending { .. } if breached => {
            let since = match state {
                AlertState::Pending { since } => *since,
                _ => now,
            };
            if now - since >= hold.as_secs_f64() {
                (AlertState::Firing { since: now }, Some(Transition::Fired))
            } else {
                (AlertState::Pending { since }, None)
            }
        }
        AlertState::Ok | AlertState::Pending { .. } => (AlertState::Ok, None),
        AlertState::Firing { .. } if recovered => (AlertState::Ok, Some(Transition::Resolved)),
        AlertState::Firing { since } => (AlertState::Firing { since: *since }, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BELOW_70: Limit = Limit {
        value: 70.0,
        direction: Direction::Below,
    };
    const ABOVE_80: Limit = Limit {
        value: 80.0,
        direction: Direction::Above,
    };

    fn run(
        values: &[Option<f64>],
        limit: Limit,
        hold: Duration,
        hysteresis: f64,
    ) -> Vec<Option<Transition>> {
        let mut state = AlertState::Ok;
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (next, t) = step(&state, *v, limit, hold, hysteresis, i as f64 * 60.0);
                state = next;
                t
            })
            .collect()
    }

    #[test]
    fn fires_once_and_resolves_once() {
        let t = run(
            &[
                Some(85.0),
                Some(45.0),
                Some(45.0),
                Some(40.0),
                Some(85.0),
                Some(85.0),
            ],
            BELOW_70,
            Duration::ZERO,
            5.0,
        );
        assert_eq!(
            t,
            [
                None,
                Some(Transition::Fired),
                None,
                None,
                Some(Transition::Resolved),
                None
            ]
        );
    }

    #[test]
    fn hysteresis_keeps_a_hovering_value_quiet() {
        // 69 fires; 71 and 72 are above 70 but below 73.5, so the alert stays; 74 resolves.
        let t = run(
            &[
                Some(69.0),
                Some(71.0),
                Some(69.5),
                Some(72.0),
                Some(74.0),
                Some(69.9),
            ],
            BELOW_70,
            Duration::ZERO,
            5.0,
        );
        assert_eq!(
            t,
            [
                Some(Transition::Fired),
                None,
                None,
                None,
                Some(Transition::Resolved),
                Some(Transition::Fired)
            ]
        );
        let t = run(
            &[Some(81.0), Some(79.0), Some(75.0)],
            ABOVE_80,
            Duration::ZERO,
            5.0,
        );
        assert_eq!(
            t,
            [Some(Transition::Fired), None, Some(Transition::Resolved)]
        );
    }

    #[test]
    fn hold_time_requires_a_persistent_breach() {
        let hold = Duration::from_secs(120);
        // Samples are 60 s apart: a blip is ignored, three bad samples in a row fire.
        let t = run(
            &[Some(50.0), Some(90.0), Some(50.0), Some(50.0), Some(50.0)],
            BELOW_70,
            hold,
            5.0,
        );
        assert_eq!(t, [None, None, None, None, Some(Transition::Fired)]);
    }

    #[test]
    fn missing_data_changes_nothing() {
        let t = run(
            &[Some(45.0), None, None, Some(45.0)],
            BELOW_70,
            Duration::ZERO,
            5.0,
        );
        assert_eq!(t, [Some(Transition::Fired), None, None, None]);
    }

    #[test]
    fn defaults_are_the_guides() {
        let d = Thresholds::defaults();
        assert_eq!(d.hit_rate_below, Some(70.0));
        assert_eq!(d.hit_rate_target, 80.0);
        assert_eq!(d.memory_above_percent, Some(80.0));
        assert_eq!(d.error_rate_above_percent, Some(1.0));
        assert_eq!(d.p95_above_ms, Some(50.0));
        assert_eq!(d.budget_above_percent, Some(80.0));
        assert_eq!(d.connection_failures_after, Some(3));
        assert_eq!(d.interval, Duration::from_secs(60));
        assert_eq!(d.hold, Duration::ZERO);
    }

    #[test]
    fn a_policy_can_disable_and_tune() {
        let spec: CachePolicySpec = serde_json::from_value(serde_json::json!({
            "hitRate": {"enabled": false},
            "memory": {"warningAbove": 90},
            "evaluationInterval": "2s",
            "holdTime": "1m",
        }))
        .unwrap();
        let t = Thresholds::from_spec(&spec);
        assert_eq!(t.hit_rate_below, None);
        assert_eq!(t.memory_above_percent, Some(90.0));
        assert_eq!(t.interval, Duration::from_secs(2));
        assert_eq!(t.hold, Duration::from_secs(60));
    }
}
