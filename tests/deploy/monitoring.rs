//! The PrometheusRule alerts and the Grafana dashboard: every query parses as PromQL and uses
//! only metrics the operator exports, under the names its `/metrics` endpoint uses; the rules
//! pass `promtool check rules` and `promtool test rules` (Prometheus's own evaluation).

use std::collections::BTreeSet;

use promql_parser::{
    parser::{self, Expr},
    util::{ExprVisitor, walk_expr},
};
use serde_json::Value;

use crate::support::{of_kind, one, render};

/// Metric names the operator serves on `/metrics` (counters with `_total`, histograms with
/// `_bucket`, `_sum` and `_count`), plus the `up` series Prometheus adds to every target.
fn exported_metrics() -> BTreeSet<String> {
    use upstash_operator::metrics::{ApiRequestLabels, EndpointLabels, Metrics};
    // Families without a series are not rendered: give every family one.
    let m = Metrics::new();
    drop(m.reconcile_started("cacheinstance"));
    m.reconcile_finished("cacheinstance", "success");
    m.reconcile_failed("cacheinstance", "Upstash");
    m.max_concurrent_reconciles
        .get_or_create(&upstash_operator::metrics::ControllerLabels {
            controller: "cacheinstance".into(),
        })
        .set(8);
    m.leader.set(1);
    m.breaker_state.set(0);
    m.api_requests_total
        .get_or_create(&ApiRequestLabels {
            endpoint: "list".into(),
            code: "200".into(),
        })
        .inc();
    m.api_request_duration_seconds
        .get_or_create(&EndpointLabels {
            endpoint: "list".into(),
        })
        .observe(0.1);
    m.instances.set_ready("ns", "cache", true);
    m.instances.set_figures(
        "ns",
        "cache",
        upstash_operator::metrics::instances::FIGURES.map(|(figure, _, _)| (figure, Some(1.0))),
        0,
    );
    m.monitor_probe_commands_total.inc();
    let text = m.render();
    let mut names = BTreeSet::from(["up".to_string()]);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    assert!(
        names.contains("upstash_cache_hit_ratio")
            && names.contains("controller_runtime_reconcile_total"),
        "unexpected /metrics names: {names:?}"
    );
    names
}

struct MetricNames(BTreeSet<String>);

impl ExprVisitor for MetricNames {
    type Error = ();
    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, ()> {
        match expr {
            Expr::VectorSelector(vs) => self.0.extend(vs.name.clone()),
            Expr::MatrixSelector(ms) => self.0.extend(ms.vs.name.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// Parses a query and returns the metric names it selects.
fn metrics_of(query: &str) -> BTreeSet<String> {
    let expr = parser::parse(query).unwrap_or_else(|e| panic!("invalid PromQL {query:?}: {e}"));
    let mut names = MetricNames(BTreeSet::new());
    walk_expr(&mut names, &expr).unwrap();
    assert!(!names.0.is_empty(), "{query:?} selects no metric");
    names.0
}

#[test]
fn prometheus_rule_queries_parse_and_use_exported_metrics() {
    let exported = exported_metrics();
    let docs = render("uo", "ops", &["ci/monitoring-values.yaml"], &[]);
    let rule = one(&docs, "PrometheusRule");
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().expect("alert rules only").to_string();
            let expr = r["expr"].as_str().unwrap();
            for name in metrics_of(expr) {
                assert!(exported.contains(&name), "{alert}: unknown metric {name}");
            }
            assert!(r["annotations"]["summary"].is_string(), "{alert}");
            assert!(r["annotations"]["description"].is_string(), "{alert}");
            assert!(r["labels"]["severity"].is_string(), "{alert}");
            alerts.insert(alert);
        }
    }
    for expected in [
        "UpstashCacheHitRateLow",
        "UpstashCacheMemoryHigh",
        "UpstashCacheLatencyHigh",
        "UpstashCacheErrorRateHigh",
        "UpstashCacheEvictionsHigh",
        "UpstashCacheDailyCommandsHigh",
        "UpstashCacheBudgetNearlyExhausted",
        "UpstashCacheAlertsFiring",
        "UpstashOperatorDown",
        "UpstashOperatorNoLeader",
        "UpstashApiCircuitOpen",
    ] {
        assert!(alerts.contains(expected), "missing alert {expected}");
    }
    // The thresholds come from the values (the ci file sets the hit rate to 75).
    let hit = rule["spec"]["groups"][0]["rules"][0]["expr"]
        .as_str()
        .unwrap();
    assert!(hit.ends_with("< 75"), "{hit}");
    // Without leader election there is no leader metric to alert on.
    let single = render(
        "uo",
        "ops",
        &[],
        &[
            "prometheusRule.enabled=true",
            "leaderElection.enabled=false",
        ],
    );
    let text = serde_json::to_string(one(&single, "PrometheusRule")).unwrap();
    assert!(!text.contains("UpstashOperatorNoLeader"));
}

/// The `promtool` binary (`$PROMTOOL_BIN`, which `scripts/test.sh` sets from
/// `tools/promtool/build.sh`).
fn promtool_bin() -> std::path::PathBuf {
    let path = std::env::var_os("PROMTOOL_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "PROMTOOL_BIN is not set: run the deploy tests through scripts/test.sh, or export \
                 PROMTOOL_BIN=$(tools/promtool/build.sh | tail -n1)"
            )
        });
    assert!(
        path.is_file(),
        "PROMTOOL_BIN={} does not exist",
        path.display()
    );
    path
}

fn promtool(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = std::process::Command::new(promtool_bin())
        .args(args)
        .output()
        .expect("running promtool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The chart's rules with the default thresholds, checked and unit-tested by Prometheus itself
/// (`tests/deploy/fixtures/prometheusrule-test.yaml`: every cache alert quiet before its `for`,
/// firing after it with the labels and annotations a receiver gets, quiet once the value
/// recovers; the probe's alerts; the operator's own alerts).
#[test]
fn promtool_tests_the_prometheus_rule() {
    let docs = render("uo", "ops", &[], &["prometheusRule.enabled=true"]);
    let rule = one(&docs, "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_json::to_vec_pretty(&serde_json::json!({"groups": rule["spec"]["groups"]})).unwrap(),
    )
    .unwrap();
    let (ok, out) = promtool(&["check".as_ref(), "rules".as_ref(), rules.as_os_str()]);
    assert!(ok, "promtool check rules:\n{out}");
    let test = dir.path().join("prometheusrule-test.yaml");
    std::fs::copy(
        crate::support::repo_path("tests/deploy/fixtures/prometheusrule-test.yaml"),
        &test,
    )
    .unwrap();
    let (ok, out) = promtool(&["test".as_ref(), "rules".as_ref(), test.as_os_str()]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    // The test fails when a rule breaks: a hit-rate threshold of 50 misses the 60% it expects.
    let lowered = render(
        "uo",
        "ops",
        &[],
        &[
            "prometheusRule.enabled=true",
            "prometheusRule.thresholds.hitRateBelowPercent=50",
        ],
    );
    std::fs::write(
        &rules,
        serde_json::to_vec(
            &serde_json::json!({"groups": one(&lowered, "PrometheusRule")["spec"]["groups"]}),
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, out) = promtool(&["test".as_ref(), "rules".as_ref(), test.as_os_str()]);
    assert!(!ok, "the rule test cannot fail:\n{out}");
    assert!(out.contains("UpstashCacheHitRateLow"), "{out}");
}

#[test]
fn dashboard_queries_parse_and_use_exported_metrics() {
    let exported = exported_metrics();
    let docs = render("uo", "ops", &[], &["grafanaDashboard.enabled=true"]);
    let cm = of_kind(&docs, "ConfigMap")[0];
    let dashboard: Value =
        serde_json::from_str(cm["data"]["upstash-operator.json"].as_str().unwrap()).unwrap();
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        titles.push(panel["title"].as_str().unwrap().to_string());
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            // Grafana's variables, as Grafana substitutes them.
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*");
            used.extend(metrics_of(&expr));
        }
    }
    for name in &used {
        assert!(
            exported.contains(name),
            "the dashboard queries unknown metric {name}"
        );
    }
    // Hit rate, memory, cost, alerts, reconcile and Upstash API rates are all on it.
    for metric in [
        "upstash_cache_hit_ratio",
        "upstash_cache_memory_used_bytes",
        "upstash_cache_monthly_cost_usd",
        "upstash_cache_firing_alerts",
        "controller_runtime_reconcile_total",
        "upstash_api_requests_total",
    ] {
        assert!(
            used.contains(metric),
            "the dashboard does not show {metric}"
        );
    }
    let unique: BTreeSet<_> = titles.iter().collect();
    assert_eq!(
        unique.len(),
        titles.len(),
        "duplicate panel titles: {titles:?}"
    );
}
