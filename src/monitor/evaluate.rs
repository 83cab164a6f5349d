//! Judging a sample (pure): every enabled threshold against its figure, advancing each alert's
//! state with the hold time and hysteresis, and the Event notes that name value and threshold.

use std::collections::BTreeMap;

use super::{
    figures::Figures,
    thresholds::{AlertKind, AlertState, Direction, Limit, Thresholds, Transition, step},
};

/// What judging a sample changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    /// Alerts firing after the sample.
    pub firing: Vec<AlertKind>,
    /// Alerts that fired or resolved, with the Event note.
    pub transitions: Vec<(AlertKind, Transition, String)>,
}

/// `(alert, value, limit)` for every enabled threshold. A `None` value (no figure) leaves the
/// alert as it is.
pub fn limits(f: &Figures, t: &Thresholds) -> Vec<(AlertKind, Option<f64>, Limit)> {
    let mut out = Vec::new();
    let above = |value: f64| Limit {
        value,
        direction: Direction::Above,
    };
    if let Some(v) = t.hit_rate_below {
        out.push((
            AlertKind::HitRateLow,
            f.hit_rate_percent,
            Limit {
                value: v,
                direction: Direction::Below,
            },
        ));
    }
    if let Some(v) = t.memory_above_percent {
        out.push((AlertKind::MemoryHigh, f.memory_percent, above(v)));
    }
    if let Some(v) = t.error_rate_above_percent {
        out.push((
            AlertKind::ErrorRateHigh,
            f.client_error_rate_percent,
            above(v),
        ));
    }
    if let Some(latency) = latency_ratio(f, t) {
        // Several latency limits are judged as one alert: the worst figure relative to its
        // limit, on a scale where 1.0 is the limit.
        out.push((AlertKind::LatencyHigh, latency, above(1.0)));
    }
    if let Some(v) = t.evictions_above_percent {
        out.push((AlertKind::EvictionsHigh, f.evictions_percent, above(v)));
    }
    if let Some(v) = t.connection_failures_after {
        // Fires when the count of failed rounds in a row reaches the threshold.
        out.push((
            AlertKind::ConnectionFailing,
            f.consecutive_failures.map(f64::from),
            above(f64::from(v) - 0.5),
        ));
    }
    if let Some(v) = t.budget_above_percent {
        out.push((AlertKind::BudgetNearlyExhausted, f.budget_percent, above(v)));
    }
    if let Some(v) = t.daily_commands_above_percent {
        out.push((
            AlertKind::DailyCommandsHigh,
            f.daily_commands_percent,
            above(v),
        ));
    }
    out
}

/// The latency figures with a limit, as `(value, limit)`.
fn latency_pairs(f: &Figures, t: &Thresholds) -> Vec<(Option<f64>, f64)> {
    [
        (f.latency_p99_ms, t.p95_above_ms),
        (f.latency_p99_ms, t.p99_above_ms),
        (f.client_p95_ms, t.client_p95_above_ms),
    ]
    .into_iter()
    .filter_map(|(value, limit)| Some((value, limit.filter(|l| *l > 0.0)?)))
    .collect()
}

/// `None` when no latency limit is set; `Some(None)` when none of their figures is known.
fn latency_ratio(f: &Figures, t: &Thresholds) -> Option<Option<f64>> {
    let pairs = latency_pairs(f, t);
    if pairs.is_empty() {
        return None;
    }
    Some(
        pairs
            .iter()
            .filter_map(|(v, l)| v.map(|v| v / l))
            .reduce(f64::max),
    )
}

/// Advances every alert in `alerts` with the sample `f` at `now` (seconds on the monitor's
/// clock). An alert whose threshold is no longer set resolves.
pub fn judge(
    alerts: &mut BTreeMap<AlertKind, AlertState>,
    f: &Figures,
    t: &Thresholds,
    now: f64,
) -> Judgement {
    let mut out = Judgement::default();
    let checked = limits(f, t);
    for (kind, value, limit) in &checked {
        let state = alerts.get(kind).cloned().unwrap_or(AlertState::Ok);
        let (next, transition) = step(&state, *value, *limit, t.hold, t.hysteresis_percent, now);
        if let Some(tr) = transition {
            out.transitions.push((*kind, tr, describe(*kind, f, t)));
        }
        alerts.insert(*kind, next);
    }
    for (kind, state) in alerts.iter_mut() {
        if !checked.iter().any(|(k, _, _)| k == kind) {
            if matches!(state, AlertState::Firing { .. }) {
                out.transitions.push((
                    *kind,
                    Transition::Resolved,
                    format!("{} is no longer checked by the policy", kind.as_str()),
                ));
            }
            *state = AlertState::Ok;
        }
    }
    out.firing = alerts
        .iter()
        .filter(|(_, s)| matches!(s, AlertState::Firing { .. }))
        .map(|(k, _)| *k)
        .collect();
    out
}

fn pct(v: Option<f64>) -> String {
    v.map_or("unknown".to_string(), |v| format!("{v:.1}%"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or("unknown".to_string(), |v| format!("{v:.1} ms"))
}

/// The Event note for an alert: the value, its source and the threshold.
pub fn describe(kind: AlertKind, f: &Figures, t: &Thresholds) -> String {
    match kind {
        AlertKind::HitRateLow => format!(
            "hit rate {} over {:.0} reads (threshold: warn below {}%, target {}%)",
            pct(f.hit_rate_percent),
            f.hits + f.misses,
            t.hit_rate_below.unwrap_or_default(),
            t.hit_rate_target
        ),
        AlertKind::MemoryHigh => format!(
            "memory {} of the plan's {:.0} MB limit (threshold: warn above {}%)",
            pct(f.memory_percent),
            f.memory_limit_bytes.unwrap_or_default() / 1e6,
            t.memory_above_percent.unwrap_or_default()
        ),
        AlertKind::ErrorRateHigh => format!(
            "client-side error rate {} of the probe's last {} commands (threshold: warn above {}%)",
            pct(f.client_error_rate_percent),
            f.probe_samples.unwrap_or_default(),
            t.error_rate_above_percent.unwrap_or_default()
        ),
        AlertKind::LatencyHigh => {
            let mut limits = Vec::new();
            if let Some(v) = t.p95_above_ms {
                limits.push(format!(
                    "P95 above {v} ms, checked on the P99 as Upstash reports no P95"
                ));
            }
            if let Some(v) = t.p99_above_ms {
                limits.push(format!("P99 above {v} ms"));
            }
            if let Some(v) = t.client_p95_above_ms {
                limits.push(format!("client-side P95 above {v} ms"));
            }
            let client = if f.client_p95_ms.is_some() {
                format!(", client-side P95 {}", ms(f.client_p95_ms))
            } else {
                String::new()
            };
            format!(
                "server-side P99 latency {} (mean {}){client} (threshold: warn when {})",
                ms(f.latency_p99_ms),
                ms(f.latency_mean_ms),
                limits.join(" or ")
            )
        }
        AlertKind::EvictionsHigh => format!(
            "{:.0} keys evicted for {:.0} writes since the last sample: {} (threshold: warn above {}%)",
            f.evicted_keys.unwrap_or_default(),
            f.writes.unwrap_or_default(),
            pct(f.evictions_percent),
            t.evictions_above_percent.unwrap_or_default()
        ),
        AlertKind::ConnectionFailing => format!(
            "{} probe rounds in a row failed to reach the database (threshold: {})",
            f.consecutive_failures.unwrap_or_default(),
            t.connection_failures_after.unwrap_or_default()
        ),
        AlertKind::BudgetNearlyExhausted => {
            let (mtd, projected) = f.cost.map_or((0.0, 0.0), |c| {
                (c.month_to_date_usd, c.projected_month_end_usd)
            });
            format!(
                "spend ${mtd:.2} this month, projected ${projected:.2} by its end: {} of the ${:.0} budget (threshold: warn above {}%)",
                pct(f.budget_percent),
                f.budget_usd.unwrap_or_default(),
                t.budget_above_percent.unwrap_or_default()
            )
        }
        AlertKind::DailyCommandsHigh => format!(
            "{:.0} commands today, {} of the daily limit of {:.0} (threshold: warn above {}%)",
            f.daily_commands.unwrap_or_default(),
            pct(f.daily_commands_percent),
            f.daily_command_limit.unwrap_or_default(),
            t.daily_commands_above_percent.unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn figures() -> Figures {
        Figures {
            hit_rate_percent: Some(90.0),
            memory_percent: Some(10.0),
            latency_p99_ms: Some(5.0),
            daily_commands_percent: Some(10.0),
            ..Default::default()
        }
    }

    #[test]
    fn each_alert_fires_once_per_crossing_and_resolves_once() {
        let t = Thresholds::defaults();
        let mut alerts = BTreeMap::new();
        let mut f = figures();
        assert!(judge(&mut alerts, &f, &t, 0.0).transitions.is_empty());
        f.latency_p99_ms = Some(62.0);
        f.daily_commands = Some(8500.0);
        f.daily_command_limit = Some(10_000.0);
        f.daily_commands_percent = Some(85.0);
        let j = judge(&mut alerts, &f, &t, 60.0);
        assert_eq!(
            j.firing,
            [AlertKind::LatencyHigh, AlertKind::DailyCommandsHigh]
        );
        assert_eq!(j.transitions.len(), 2);
        assert!(
            j.transitions[0].2.contains("62.0 ms"),
            "{}",
            j.transitions[0].2
        );
        assert!(
            j.transitions[1].2.contains("10000"),
            "{}",
            j.transitions[1].2
        );
        // Hovering within the hysteresis band: nothing new.
        f.latency_p99_ms = Some(49.0);
        f.daily_commands_percent = Some(78.0);
        assert!(judge(&mut alerts, &f, &t, 120.0).transitions.is_empty());
        f.latency_p99_ms = Some(40.0);
        f.daily_commands_percent = Some(50.0);
        let j = judge(&mut alerts, &f, &t, 180.0);
        assert!(j.firing.is_empty());
        assert!(
            j.transitions
                .iter()
                .all(|(_, tr, _)| *tr == Transition::Resolved)
        );
        assert_eq!(j.transitions.len(), 2);
    }

    #[test]
    fn probe_alerts_wait_for_probe_figures() {
        let t = Thresholds::defaults();
        let mut alerts = BTreeMap::new();
        // No probe: no error rate, evictions or connection figure; nothing fires.
        let f = figures();
        let j = judge(&mut alerts, &f, &t, 0.0);
        assert!(j.firing.is_empty());
        let f = Figures {
            client_error_rate_percent: Some(3.0),
            probe_samples: Some(100),
            evictions_percent: Some(4.0),
            evicted_keys: Some(8.0),
            writes: Some(200.0),
            consecutive_failures: Some(3),
            ..figures()
        };
        let j = judge(&mut alerts, &f, &t, 60.0);
        assert_eq!(
            j.firing,
            [
                AlertKind::ErrorRateHigh,
                AlertKind::EvictionsHigh,
                AlertKind::ConnectionFailing
            ]
        );
        assert!(j.transitions[0].2.contains("client-side error rate 3.0%"));
        assert!(j.transitions[1].2.contains("8 keys evicted for 200 writes"));
    }

    #[test]
    fn the_hold_time_applies_to_every_alert() {
        let mut t = Thresholds::defaults();
        t.hold = Duration::from_secs(10);
        let mut alerts = BTreeMap::new();
        let high = Figures {
            latency_p99_ms: Some(80.0),
            ..figures()
        };
        assert!(judge(&mut alerts, &high, &t, 0.0).firing.is_empty());
        assert!(judge(&mut alerts, &figures(), &t, 5.0).firing.is_empty());
        assert!(
            judge(&mut alerts, &high, &t, 12.0).firing.is_empty(),
            "a blip restarts the hold"
        );
        assert_eq!(
            judge(&mut alerts, &high, &t, 22.0).firing,
            [AlertKind::LatencyHigh]
        );
    }

    #[test]
    fn latency_limits_are_judged_together() {
        let mut t = Thresholds::defaults();
        t.p95_above_ms = None;
        t.client_p95_above_ms = Some(100.0);
        let f = Figures {
            latency_p99_ms: Some(500.0),
            client_p95_ms: Some(120.0),
            ..Default::default()
        };
        let (_, value, _) = limits(&f, &t)
            .into_iter()
            .find(|(k, _, _)| *k == AlertKind::LatencyHigh)
            .unwrap();
        assert_eq!(value, Some(1.2), "only the client-side limit is set");
        t.client_p95_above_ms = None;
        assert!(
            !limits(&f, &t)
                .iter()
                .any(|(k, _, _)| *k == AlertKind::LatencyHigh)
        );
    }

    #[test]
    fn an_alert_no_longer_checked_resolves() {
        let t = Thresholds::defaults();
        let mut alerts =
            BTreeMap::from([(AlertKind::HitRateLow, AlertState::Firing { since: 0.0 })]);
        let mut off = t.clone();
        off.hit_rate_below = None;
        let j = judge(&mut alerts, &figures(), &off, 1.0);
        assert_eq!(j.transitions.len(), 1);
        assert_eq!(j.transitions[0].1, Transition::Resolved);
        assert!(j.firing.is_empty());
    }
}
