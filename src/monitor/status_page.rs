//! The `/status` document (pure): the fields of the guide's `/api/health` with the guide's JSON
//! types (`status`, and under `cache`: `status` `"connected"`, `provider`, `hit_rate` as
//! `"82.5%"`, the integers `hits`, `misses` and `total_operations`, `circuit_breaker` with
//! `state` `CLOSED`/`OPEN`/`HALF_OPEN`, `failures`, `successes`), so scripts and dashboards
//! written for the guide read it unchanged, beside richer totals, the breaker's settings and one
//! entry per instance.

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
    // The guide's `cache.status` says whether the cache provider answers: Upstash's Developer
    // API through the circuit breaker. Firing alerts degrade the page's `status`, not this.
    let cache_status = match breaker.state {
        BreakerState::Closed => "connected",
        BreakerState::HalfOpen => "degraded",
        BreakerState::Open => "disconnected",
    };
    let healthy = breaker.state == BreakerState::Closed && firing == 0;
    let hit_rate = if total > 0.0 {
        100.0 * hits / total
    } else {
        0.0
    };
    // Counts of commands, as the guide's integers (Upstash's stats are whole numbers; a sum of
    // floats is rounded, never shown as `825.0`).
    let count = |x: f64| x.max(0.0).round() as u64;
    let (hits, misses) = (count(hits), count(misses));
    json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "timestamp": timestamp,
        "cache": {
            "status": cache_status,
            "provider": "upstash",
            "hit_rate": format!("{hit_rate:.1}%"),
            "hits": hits,
            "misses": misses,
            "total_operations": hits + misses,
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

    /// The guide's `/api/health` document: every field it has, with its JSON type.
    fn guide_example() -> Value {
        json!({
            "status": "healthy",
            "cache": {
                "status": "connected",
                "provider": "upstash",
                "hit_rate": "82.5%",
                "hits": 825,
                "misses": 175,
                "total_operations": 1000,
                "circuit_breaker": {"state": "CLOSED", "failures": 0, "successes": 0},
            },
        })
    }

    /// The JSON type of a value, integers apart from other numbers.
    fn json_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Every field of `guide` is in `ours` with the same JSON type (recursively); returns the
    /// mismatches as `path: guide type != our type`.
    fn shape_mismatches(guide: &Value, ours: &Value, path: &str, out: &mut Vec<String>) {
        if json_type(guide) != json_type(ours) {
            out.push(format!(
                "{path}: {} != {} ({ours})",
                json_type(guide),
                json_type(ours)
            ));
            return;
        }
        if let (Value::Object(g), Value::Object(o)) = (guide, ours) {
            for (key, value) in g {
                let field = format!("{path}.{key}");
                match o.get(key) {
                    Some(v) => shape_mismatches(value, v, &field, out),
                    None => out.push(format!("{field}: missing")),
                }
            }
        }
    }

    #[test]
    fn has_the_guides_shape_and_types_field_for_field() {
        let p = page(
            vec![
                report("b", 500.0, 100.0, &[]),
                report("a", 325.0, 75.0, &[]),
            ],
            breaker(BreakerState::Closed),
            1.0,
            "now".into(),
        );
        let mut mismatches = vec![];
        shape_mismatches(&guide_example(), &p, "", &mut mismatches);
        assert!(mismatches.is_empty(), "{mismatches:#?}");
        // Field for field the same values as the guide's example for the same traffic.
        let mut ours = p.clone();
        let cache = ours["cache"].as_object_mut().unwrap();
        cache.retain(|k, _| guide_example()["cache"].get(k).is_some());
        ours["cache"]["circuit_breaker"]["failures"] = json!(0);
        let ours: serde_json::Map<String, Value> = ours
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| guide_example().get(k.as_str()).is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(Value::Object(ours), guide_example());
        // The checker itself sees a float where the guide has an integer, and a missing field.
        let mut wrong = p.clone();
        wrong["cache"]["hits"] = json!(825.0);
        wrong["cache"].as_object_mut().unwrap().remove("provider");
        let mut mismatches = vec![];
        shape_mismatches(&guide_example(), &wrong, "", &mut mismatches);
        assert_eq!(mismatches.len(), 2, "{mismatches:#?}");
        // Extra fields stay beside the guide's.
        assert_eq!(p["cache"]["instances"], 2);
        assert_eq!(p["circuitBreaker"]["state"], "closed");
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
        assert_eq!(cache["status"], "connected");
        assert_eq!(cache["provider"], "upstash");
        assert_eq!(cache["hit_rate"], "82.5%");
        assert_eq!(cache["hits"].as_u64(), Some(825));
        assert_eq!(cache["misses"].as_u64(), Some(175));
        assert_eq!(cache["total_operations"].as_u64(), Some(1000));
        assert_eq!(
            cache["circuit_breaker"],
            json!({"state": "CLOSED", "failures": 2, "successes": 0})
        );
        assert_eq!(cache["month_to_date_usd"], 3.0);
        assert_eq!(p["instances"][0]["name"], "a", "sorted");
        assert_eq!(p["circuitBreaker"]["state"], "closed");
    }

    #[test]
    fn alerts_degrade_the_page_and_the_breaker_the_connection() {
        // Firing alerts: Upstash still answers, the page is degraded.
        let p = page(
            vec![report("a", 0.0, 0.0, &["LatencyHigh"])],
            breaker(BreakerState::Closed),
            1.0,
            "now".into(),
        );
        assert_eq!(
            (p["status"].as_str(), p["cache"]["status"].as_str()),
            (Some("degraded"), Some("connected"))
        );
        assert_eq!(p["cache"]["hit_rate"], "0.0%");
        assert_eq!(p["cache"]["total_operations"].as_u64(), Some(0));
        let p = page(vec![], breaker(BreakerState::Open), 1.0, "now".into());
        assert_eq!(
            (p["status"].as_str(), p["cache"]["status"].as_str()),
            (Some("degraded"), Some("disconnected"))
        );
        assert_eq!(p["cache"]["circuit_breaker"]["state"], "OPEN");
        let p = page(vec![], breaker(BreakerState::HalfOpen), 1.0, "now".into());
        assert_eq!(
            (p["status"].as_str(), p["cache"]["status"].as_str()),
            (Some("degraded"), Some("degraded"))
        );
        assert_eq!(p["cache"]["circuit_breaker"]["state"], "HALF_OPEN");
    }
}
