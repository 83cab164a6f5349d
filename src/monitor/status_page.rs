//! The `/status` document (pure): the fields of the guide's `/api/health` (`status`, and under
//! `cache`: `status`, `provider`, `hit_rate` as `"82.5%"`, `hits`, `misses`,
//! `total_operations`, `circuit_breaker` with `state` `CLOSED`/`OPEN`/`HALF_OPEN`, `failures`,
//! `successes`), so scripts written for the guide read it unchanged, beside richer totals, the
//! breaker's settings and one entry per instance.

use serde_json::{Value, json};

use super::report::InstanceReport;
use crate::upstash::breaker::{BreakerConfig, BreakerState};

/// The circuit breaker as the page shows it.
#[derive(Clone, Copy, Debug)]
pub struct BreakerView {
    pub state: BreakerState,
    pub failures: u32,
    pub successes: u32,
    pub config: BreakerConfig,
}

/// The guide's name of a breaker state.
fn guide_state(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "CLOSED",
        BreakerState::Open => "OPEN",
        BreakerState::HalfOpen => "HALF_OPEN",
    }
}

/// Builds the page from the instances' latest reports (sorted here).
pub fn page(
    mut reports: Vec<InstanceReport>,
    breaker: BreakerView,
    interval_stretch: f64,
    timestamp: String,
) -> Value {
    reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let hits: f64 = reports.iter().map(|r| r.hits).sum();
    let misses: f64 = reports.iter().map(|r| r.misses).sum();
    let total = hits + misses;
    let firing: usize = reports.iter().map(|r| r.alerts.len()).sum();
    let sum = |f: fn(&InstanceReport) -> Option<f64>| reports.iter().filter_map(f).sum::<f64>();
    let cache_status = match breaker.state {
        BreakerState::Open => "unhealthy",
        BreakerState::HalfOpen => "degraded",
        BreakerState::Closed if firing > 0 => "degraded",
        BreakerState::Closed => "healthy",
    };
    let hit_rate = if total > 0.0 {
        100.0 * hits / total
    } else {
        0.0
    };
    json!({
        "status": if cache_status == "healthy" { "healthy" } else { "degraded" },
        "timestamp": timestamp,
        "cache": {
            "status": cache_status,
            "provider": "upstash",
            "hit_rate": format!("{hit_rate:.1}%"),
            "hits": hits,
            "misses": misses,
            "total_operations": total,
            "circuit_breaker": {
                "state": guide_state(breaker.state),
                "failures": breaker.failures,
                "successes": breaker.successes,
            },
            "instances": reports.len(),
            "hit_rate_percent": (total > 0.0).then_some(hit_rate),
            "memory_used_bytes": sum(|r| r.memory_used_bytes),
            "month_to_date_usd": sum(|r| r.month_to_date_usd),
            "projected_month_end_usd": sum(|r| r.projected_month_end_usd),
            "probe_commands_today": reports.iter().map(|r| r.probe_commands_today).sum::<u64>(),
            "firing_alerts": firing,
            "interval_stretch": interval_stretch,
        },
        "circuitBreaker": {
            "state": breaker.state.as_str(),
            "failures": breaker.failures,
            "successes": breaker.successes,
            "failureThreshold": breaker.config.failure_threshold,
            "resetTimeoutSeconds": breaker.config.reset_timeout.as_secs(),
            "successThreshold": breaker.config.success_threshold,
        },
        "instances": reports,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker(state: BreakerState) -> BreakerView {
        BreakerView {
            state,
            failures: 2,
            successes: 0,
            config: BreakerConfig {
                failure_threshold: 5,
                reset_timeout: Duration::from_secs(60),
                success_threshold: 2,
            },
        }
    }

    fn report(name: &str, hits: f64, misses: f64, alerts: &[&str]) -> InstanceReport {
        InstanceReport {
            namespace: "crm".into(),
            name: name.into(),
            hits,
            misses,
            alerts: alerts.iter().map(|a| a.to_string()).collect(),
            month_to_date_usd: Some(1.5),
            ..Default::default()
        }
    }

    #[test]
    fn speaks_the_guides_health_format() {
        let p = page(
            vec![
                report("b", 500.0, 100.0, &[]),
                report("a", 325.0, 75.0, &[]),
            ],
            breaker(BreakerState::Closed),
            1.0,
            "now".into(),
        );
        assert_eq!(p["status"], "healthy");
        let cache = &p["cache"];
        assert_eq!(cache["status"], "healthy");
        assert_eq!(cache["provider"], "upstash");
        assert_eq!(cache["hit_rate"], "82.5%");
        assert_eq!(cache["hits"], 825.0);
        assert_eq!(cache["misses"], 175.0);
        assert_eq!(cache["total_operations"], 1000.0);
        assert_eq!(
            cache["circuit_breaker"],
            json!({"state": "CLOSED", "failures": 2, "successes": 0})
        );
        assert_eq!(cache["month_to_date_usd"], 3.0);
        assert_eq!(p["instances"][0]["name"], "a", "sorted");
        assert_eq!(p["circuitBreaker"]["state"], "closed");
    }

    #[test]
    fn alerts_and_the_breaker_degrade_it() {
        let p = page(
            vec![report("a", 0.0, 0.0, &["LatencyHigh"])],
            breaker(BreakerState::Closed),
            1.0,
            "now".into(),
        );
        assert_eq!(
            (p["status"].as_str(), p["cache"]["status"].as_str()),
            (Some("degraded"), Some("degraded"))
        );
        assert_eq!(p["cache"]["hit_rate"], "0.0%");
        let p = page(vec![], breaker(BreakerState::Open), 1.0, "now".into());
        assert_eq!(p["cache"]["status"], "unhealthy");
        assert_eq!(p["cache"]["circuit_breaker"]["state"], "OPEN");
        let p = page(vec![], breaker(BreakerState::HalfOpen), 1.0, "now".into());
        assert_eq!(p["cache"]["circuit_breaker"]["state"], "HALF_OPEN");
    }
}
