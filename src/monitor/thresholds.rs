//! Thresholds and their evaluation (pure): which limits apply to an instance (the strictest of
//! every applicable policy, or the guide's defaults), and how a series of samples turns into
//! alert transitions with a hold time and hysteresis.

use std::time::Duration;

use crate::crd::{CachePolicy, CachePolicySpec, Plan};

/// The alerts the monitor raises. The name is the Event reason and the `status.alerts` type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    HitRateLow,
    MemoryHigh,
    ErrorRateHigh,
    LatencyHigh,
    EvictionsHigh,
    ConnectionFailing,
    BudgetNearlyExhausted,
    DailyCommandsHigh,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::HitRateLow,
        AlertKind::MemoryHigh,
        AlertKind::ErrorRateHigh,
        AlertKind::LatencyHigh,
        AlertKind::EvictionsHigh,
        AlertKind::ConnectionFailing,
        AlertKind::BudgetNearlyExhausted,
        AlertKind::DailyCommandsHigh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::HitRateLow => "HitRateLow",
            AlertKind::MemoryHigh => "MemoryHigh",
            AlertKind::ErrorRateHigh => "ErrorRateHigh",
            AlertKind::LatencyHigh => "LatencyHigh",
            AlertKind::EvictionsHigh => "EvictionsHigh",
            AlertKind::ConnectionFailing => "ConnectionFailing",
            AlertKind::BudgetNearlyExhausted => "BudgetNearlyExhausted",
            AlertKind::DailyCommandsHigh => "DailyCommandsHigh",
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
            AlertKind::EvictionsHigh => "EvictionsRecovered",
            AlertKind::ConnectionFailing => "ConnectionRecovered",
            AlertKind::BudgetNearlyExhausted => "BudgetRecovered",
            AlertKind::DailyCommandsHigh => "DailyCommandsRecovered",
        }
    }

    /// Whether the alert's figure comes only from the data-plane probe.
    pub fn needs_probe(self) -> bool {
        matches!(
            self,
            AlertKind::ErrorRateHigh | AlertKind::EvictionsHigh | AlertKind::ConnectionFailing
        )
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

/// The data-plane probe's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbeSettings {
    pub interval: Duration,
    /// Commands the client-side figures need, and are computed over.
    pub min_samples: usize,
}

/// The thresholds in force for an instance, with the guide's defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    pub hit_rate_below: Option<f64>,
    pub hit_rate_target: f64,
    pub hit_rate_min_requests: f64,
    pub memory_above_percent: Option<f64>,
    pub error_rate_above_percent: Option<f64>,
    /// Judged on Upstash's server-side P99 (Upstash reports no P95).
    pub p95_above_ms: Option<f64>,
    pub p99_above_ms: Option<f64>,
    pub client_p95_above_ms: Option<f64>,
    pub evictions_above_percent: Option<f64>,
    pub evictions_min_writes: f64,
    pub budget_above_percent: Option<f64>,
    pub daily_commands_above_percent: Option<f64>,
    /// A daily command limit set by a policy (else the plan's).
    pub daily_command_limit: Option<f64>,
    pub connection_failures_after: Option<u32>,
    /// `None`: no data-plane commands at all.
    pub probe: Option<ProbeSettings>,
    pub interval: Duration,
    pub hold: Duration,
    pub hysteresis_percent: f64,
}

/// Shortest evaluation and probe interval honoured.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Evaluation and probe interval when a policy sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Probe commands the client-side figures need by default.
pub const DEFAULT_MIN_SAMPLES: usize = 100;
/// The guide's free tier: 10,000 commands a day.
pub const FREE_DAILY_COMMANDS: f64 = 10_000.0;

/// The daily command limit of a plan: the free tier's, none on the others.
pub fn plan_daily_command_limit(plan: Plan) -> Option<f64> {
    (plan == Plan::Free).then_some(FREE_DAILY_COMMANDS)
}

fn strictest(a: Option<f64>, b: Option<f64>, direction: Direction) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(match direction {
            Direction::Above => a.min(b),
            Direction::Below => a.max(b),
        }),
        (a, b) => a.or(b),
    }
}

impl Thresholds {
    /// The guide's thresholds: hit rate below 70% (target 80%), memory above 80%, errors above
    /// 1%, P95 above 50 ms, evictions above 1% of writes, spend above 80% of budget, daily
    /// commands above 80% of the plan's limit, 3 consecutive connection failures; no probe.
    pub fn defaults() -> Self {
        Self::from_spec(&CachePolicySpec::default())
    }

    /// The strictest combination of `policies`' thresholds, or the defaults when there is none.
    pub fn for_policies<'a>(policies: impl IntoIterator<Item = &'a CachePolicy>) -> Self {
        policies
            .into_iter()
            .map(|p| Self::from_spec(&p.spec))
            .reduce(Self::strictest)
            .unwrap_or_else(Self::defaults)
    }

    pub fn from_spec(spec: &CachePolicySpec) -> Self {
        let on = |enabled: Option<bool>| enabled != Some(false);
        let hit = spec.hit_rate.clone().unwrap_or_default();
        let memory = spec.memory.clone().unwrap_or_default();
        let errors = spec.error_rate.clone().unwrap_or_default();
        let latency = spec.latency.clone().unwrap_or_default();
        let evictions = spec.evictions.clone().unwrap_or_default();
        let budget = spec.budget.clone().unwrap_or_default();
        let daily = spec.daily_commands.clone().unwrap_or_default();
        let conn = spec.connection_failures.clone().unwrap_or_default();
        let probe = spec.probe.clone().unwrap_or_default();
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
            client_p95_above_ms: latency
                .client_p95_warning_above_ms
                .filter(|_| on(latency.enabled)),
            evictions_above_percent: on(evictions.enabled)
                .then(|| evictions.warning_above_percent.unwrap_or(1.0)),
            evictions_min_writes: evictions.min_writes.unwrap_or(100).max(1) as f64,
            budget_above_percent: on(budget.enabled)
                .then(|| budget.warning_above_percent.unwrap_or(80.0)),
            daily_commands_above_percent: on(daily.enabled)
                .then(|| daily.warning_above_percent.unwrap_or(80.0)),
            daily_command_limit: daily.daily_limit.filter(|l| *l > 0).map(|l| l as f64),
            connection_failures_after: on(conn.enabled)
                .then(|| conn.warning_after.unwrap_or(3).max(1) as u32),
            probe: (probe.enabled == Some(true)).then(|| ProbeSettings {
                interval: duration(&probe.interval, DEFAULT_INTERVAL).max(MIN_INTERVAL),
                min_samples: probe
                    .min_samples
                    .map_or(DEFAULT_MIN_SAMPLES, |n| n.max(1) as usize),
            }),
            interval: duration(&spec.evaluation_interval, DEFAULT_INTERVAL).max(MIN_INTERVAL),
            hold: duration(&spec.hold_time, Duration::ZERO),
            hysteresis_percent: spec.hysteresis_percent.unwrap_or(5.0).clamp(0.0, 100.0),
        }
    }

    /// Both policies apply: every enabled threshold at its strictest, sampling and probing at
    /// the shorter interval, the shorter hold time and the wider hysteresis band.
    pub fn strictest(self, other: Self) -> Self {
        use Direction::{Above, Below};
        Self {
            hit_rate_below: strictest(self.hit_rate_below, other.hit_rate_below, Below),
            hit_rate_target: self.hit_rate_target.max(other.hit_rate_target),
            hit_rate_min_requests: self.hit_rate_min_requests.min(other.hit_rate_min_requests),
            memory_above_percent: strictest(
                self.memory_above_percent,
                other.memory_above_percent,
                Above,
            ),
            error_rate_above_percent: strictest(
                self.error_rate_above_percent,
                other.error_rate_above_percent,
                Above,
            ),
            p95_above_ms: strictest(self.p95_above_ms, other.p95_above_ms, Above),
            p99_above_ms: strictest(self.p99_above_ms, other.p99_above_ms, Above),
            client_p95_above_ms: strictest(
                self.client_p95_above_ms,
                other.client_p95_above_ms,
                Above,
            ),
            evictions_above_percent: strictest(
                self.evictions_above_percent,
                other.evictions_above_percent,
                Above,
            ),
            evictions_min_writes: self.evictions_min_writes.min(other.evictions_min_writes),
            budget_above_percent: strictest(
                self.budget_above_percent,
                other.budget_above_percent,
                Above,
            ),
            daily_commands_above_percent: strictest(
                self.daily_commands_above_percent,
                other.daily_commands_above_percent,
                Above,
            ),
            daily_command_limit: strictest(
                self.daily_command_limit,
                other.daily_command_limit,
                Above,
            ),
            connection_failures_after: match (
                self.connection_failures_after,
                other.connection_failures_after,
            ) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            probe: match (self.probe, other.probe) {
                (Some(a), Some(b)) => Some(ProbeSettings {
                    interval: a.interval.min(b.interval),
                    min_samples: a.min_samples.min(b.min_samples),
                }),
                (a, b) => a.or(b),
            },
            interval: self.interval.min(other.interval),
            hold: self.hold.min(other.hold),
            hysteresis_percent: self.hysteresis_percent.max(other.hysteresis_percent),
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

    fn spec(json: serde_json::Value) -> CachePolicySpec {
        serde_json::from_value(json).unwrap()
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
    fn defaults_are_the_guides_and_send_no_command() {
        let d = Thresholds::defaults();
        assert_eq!(d.hit_rate_below, Some(70.0));
        assert_eq!(d.hit_rate_target, 80.0);
        assert_eq!(d.memory_above_percent, Some(80.0));
        assert_eq!(d.error_rate_above_percent, Some(1.0));
        assert_eq!(d.p95_above_ms, Some(50.0));
        assert_eq!(d.p99_above_ms, None);
        assert_eq!(d.client_p95_above_ms, None);
        assert_eq!(d.evictions_above_percent, Some(1.0));
        assert_eq!(d.budget_above_percent, Some(80.0));
        assert_eq!(d.daily_commands_above_percent, Some(80.0));
        assert_eq!(d.daily_command_limit, None);
        assert_eq!(d.connection_failures_after, Some(3));
        assert_eq!(d.probe, None, "no data-plane command by default");
        assert_eq!(d.interval, Duration::from_secs(60));
        assert_eq!(d.hold, Duration::ZERO);
        assert_eq!(plan_daily_command_limit(Plan::Free), Some(10_000.0));
        assert_eq!(plan_daily_command_limit(Plan::Payg), None);
        assert!(AlertKind::EvictionsHigh.needs_probe());
        assert!(!AlertKind::LatencyHigh.needs_probe());
    }

    #[test]
    fn a_policy_can_disable_tune_and_opt_into_the_probe() {
        let t = Thresholds::from_spec(&spec(serde_json::json!({
            "hitRate": {"enabled": false},
            "memory": {"warningAbove": 90},
            "evaluationInterval": "2s",
            "holdTime": "1m",
            "probe": {"enabled": true, "interval": "30s", "minSamples": 20},
        })));
        assert_eq!(t.hit_rate_below, None);
        assert_eq!(t.memory_above_percent, Some(90.0));
        assert_eq!(t.interval, Duration::from_secs(2));
        assert_eq!(t.hold, Duration::from_secs(60));
        assert_eq!(
            t.probe,
            Some(ProbeSettings {
                interval: Duration::from_secs(30),
                min_samples: 20
            })
        );
        let default_probe =
            Thresholds::from_spec(&spec(serde_json::json!({"probe": {"enabled": true}})));
        assert_eq!(
            default_probe.probe,
            Some(ProbeSettings {
                interval: DEFAULT_INTERVAL,
                min_samples: DEFAULT_MIN_SAMPLES
            })
        );
    }

    #[test]
    fn several_policies_combine_at_their_strictest() {
        let a = Thresholds::from_spec(&spec(serde_json::json!({
            "hitRate": {"enabled": false},
            "memory": {"warningAbove": 90},
            "latency": {"p99WarningAboveMs": 200},
            "evaluationInterval": "30s",
            "holdTime": "5m",
        })));
        let b = Thresholds::from_spec(&spec(serde_json::json!({
            "hitRate": {"warningBelow": 60},
            "memory": {"warningAbove": 70},
            "dailyCommands": {"dailyLimit": 50000},
            "probe": {"enabled": true, "minSamples": 50},
            "holdTime": "1m",
            "hysteresisPercent": 10,
        })));
        let t = a.strictest(b);
        assert_eq!(t.hit_rate_below, Some(60.0), "enabled by one policy");
        assert_eq!(t.memory_above_percent, Some(70.0));
        assert_eq!(t.p99_above_ms, Some(200.0));
        assert_eq!(t.daily_command_limit, Some(50_000.0));
        assert_eq!(t.interval, Duration::from_secs(30));
        assert_eq!(t.hold, Duration::from_secs(60));
        assert_eq!(t.hysteresis_percent, 10.0);
        assert_eq!(t.probe.unwrap().min_samples, 50);
        assert_eq!(
            Thresholds::for_policies(std::iter::empty()),
            Thresholds::defaults()
        );
    }
}
