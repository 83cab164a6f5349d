//! CachePolicy monitoring against the real control plane and the emulator: threshold crossings
//! become one Event each, recoveries one Event each; the circuit breaker; metrics and /status;
//! guardrails.

use std::time::Duration;

use kube::Api;
use serde_json::{Value, json};
use upstash_operator::crd::{CacheInstance, CachePolicy};

use crate::support::{apply_manifest, events_for, policy, start_stack};

const TIMEOUT: Duration = Duration::from_secs(60);

fn instance(name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

fn count(events: &[(String, String, String)], reason: &str) -> usize {
    events.iter().filter(|e| e.0 == reason).count()
}

async fn provisioned(api: &Api<CacheInstance>, name: &str) -> String {
    let obj = testkit::wait_for_condition(api, name, "Ready", "True", TIMEOUT).await;
    obj.status.unwrap().database_id.unwrap()
}

#[tokio::test]
async fn hit_rate_crossing_fires_once_and_recovers_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("hitrate").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy("prod", json!({"selector": {"matchLabels": {"tier": "production"}}, "evaluationInterval": "2s"})),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "crm",
            json!({"tier": "production"}),
            json!({"primaryRegion": "us-east-1"}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let id = provisioned(&api, "crm").await;
    testkit::wait_for_condition(&api, "crm", "Healthy", "True", TIMEOUT).await;

    // 45% hit rate over 1,000 reads.
    stack
        .emulator
        .set_stats(&id, json!({"hits": [450], "misses": [550]}))
        .await;
    let started = std::time::Instant::now();
    let events = testkit::wait_for("a HitRateLow Event", Duration::from_secs(15), || async {
        let events = events_for(&client, ns.name(), "crm").await;
        (count(&events, "HitRateLow") >= 1).then_some(events)
    })
    .await;
    let fired_after = started.elapsed();
    let fired = events.iter().find(|e| e.0 == "HitRateLow").unwrap();
    assert_eq!(fired.1, "Warning");
    assert!(
        fired.2.contains("45.0%") && fired.2.contains("70"),
        "note has value and threshold: {}",
        fired.2
    );
    let obj = testkit::wait_for_condition(&api, "crm", "Healthy", "False", TIMEOUT).await;
    let alerts = obj.status.unwrap().alerts;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].type_, "HitRateLow");

    // Several more intervals: still exactly one Event, and no status rewrite.
    let rv = api.get("crm").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let events = events_for(&client, ns.name(), "crm").await;
    assert_eq!(count(&events, "HitRateLow"), 1, "{events:?}");
    assert_eq!(api.get("crm").await.unwrap().metadata.resource_version, rv);

    // Back to 85%: one recovery Event.
    stack
        .emulator
        .set_stats(&id, json!({"hits": [850], "misses": [150]}))
        .await;
    testkit::wait_for(
        "a HitRateRecovered Event",
        Duration::from_secs(15),
        || async {
            let events = events_for(&client, ns.name(), "crm").await;
            (count(&events, "HitRateRecovered") == 1).then_some(())
        },
    )
    .await;
    testkit::wait_for_condition(&api, "crm", "Healthy", "True", TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events = events_for(&client, ns.name(), "crm").await;
    assert_eq!(count(&events, "HitRateLow"), 1, "{events:?}");
    assert_eq!(count(&events, "HitRateRecovered"), 1, "{events:?}");
    let recovered = events.iter().find(|e| e.0 == "HitRateRecovered").unwrap();
    assert_eq!(recovered.1, "Normal");
    assert!(
        fired_after < Duration::from_secs(2 + 8),
        "fired within one interval plus a few seconds ({fired_after:?})"
    );

    // The policy reports what it applies to.
    let policies: Api<CachePolicy> = Api::namespaced(client.clone(), ns.name());
    let status = testkit::wait_for("the policy status", TIMEOUT, || async {
        let s = policies.get("prod").await.ok()?.status?;
        (s.selected_instances == Some(1)).then_some(s)
    })
    .await;
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
}

#[tokio::test]
async fn memory_probe_failures_and_budget_raise_their_alerts() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("alerts").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "all",
            json!({"selector": {}, "evaluationInterval": "2s", "hitRate": {"enabled": false}, "latency": {"enabled": false}}),
        ),
    )
    .await
    .unwrap();
    for (name, spec) in [
        (
            "mem",
            json!({"primaryRegion": "us-east-1", "plan": "fixed_1gb"}),
        ),
        ("conn", json!({"primaryRegion": "us-east-1"})),
        ("spend", json!({"primaryRegion": "us-east-1", "budget": 50})),
    ] {
        apply_manifest(&client, ns.name(), &instance(name, json!({}), spec))
            .await
            .unwrap();
    }
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let mem = provisioned(&api, "mem").await;
    let conn = provisioned(&api, "conn").await;
    let spend = provisioned(&api, "spend").await;

    // 85% of the 1 GB plan's data limit.
    let limit = stack.emulator.database(&mem).await.unwrap()["db_disk_threshold"]
        .as_u64()
        .unwrap();
    let used = limit * 85 / 100;
    stack
        .emulator
        .set_stats(
            &mem,
            json!({"current_storage": used, "hits": [900], "misses": [100]}),
        )
        .await;
    // The data plane of one database refuses every request.
    stack
        .emulator
        .add_fault(json!({"endpoint": "data", "database_id": conn, "status": 503}))
        .await;
    // $45 spent of a $50 budget.
    stack
        .emulator
        .set_stats(&spend, json!({"total_monthly_billing": 45.0}))
        .await;

    for (name, reason, fragment) in [
        ("mem", "MemoryHigh", "85.0%"),
        ("conn", "ConnectionFailing", "in a row"),
        ("spend", "BudgetNearlyExhausted", "90.0%"),
    ] {
        let events = testkit::wait_for(
            &format!("{reason} on {name}"),
            Duration::from_secs(30),
            || async {
                let events = events_for(&client, ns.name(), name).await;
                events.iter().any(|e| e.0 == reason).then_some(events)
            },
        )
        .await;
        let e = events.iter().find(|e| e.0 == reason).unwrap();
        assert_eq!(e.1, "Warning");
        assert!(e.2.contains(fragment), "{reason}: {}", e.2);
        let obj = testkit::wait_for_condition(&api, name, "Healthy", "False", TIMEOUT).await;
        assert!(obj.status.unwrap().alerts.iter().any(|a| a.type_ == reason));
    }
    // The data plane failing also shows as an error rate.
    let events = events_for(&client, ns.name(), "conn").await;
    assert!(events.iter().any(|e| e.0 == "ErrorRateHigh"), "{events:?}");

    // Metrics and the status page.
    let (code, metrics) = stack.operator.get("/metrics").await;
    assert_eq!(code, 200);
    for family in [
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        "upstash_api_requests_total",
        "upstash_api_request_duration_seconds_bucket",
        "upstash_api_circuit_breaker_state",
        "upstash_cache_hit_ratio",
        "upstash_cache_memory_used_bytes",
        "upstash_cache_memory_limit_bytes",
        "upstash_cache_monthly_cost_usd",
        "upstash_cache_firing_alerts",
        "upstash_cache_ready",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}");
    }
    let mem_line = format!(
        "upstash_cache_memory_used_bytes{{namespace=\"{}\",name=\"mem\"}} {used}",
        ns.name()
    );
    assert!(metrics.contains(&mem_line), "missing {mem_line}");
    assert!(!metrics.contains(&mem), "no database id in metrics");
    let (code, status) = stack.operator.get("/status").await;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["status"], "degraded");
    assert_eq!(status["circuitBreaker"]["state"], "closed");
    assert_eq!(status["cache"]["instances"], 3);
    assert!(status["cache"]["firingAlerts"].as_u64().unwrap() >= 3);
    let instances = status["instances"].as_array().unwrap();
    let mem_report = instances.iter().find(|i| i["name"] == "mem").unwrap();
    let percent = mem_report["memoryPercent"].as_f64().unwrap();
    assert!((84.9..=85.0).contains(&percent), "{percent}");
    assert_eq!(mem_report["alerts"], json!(["MemoryHigh"]));
    for field in [
        "hitRate",
        "hits",
        "misses",
        "latencyP95Ms",
        "monthlyCostUsd",
        "lastSample",
    ] {
        assert!(
            mem_report.get(field).is_some(),
            "/status instance lacks {field}"
        );
    }
}

#[tokio::test]
async fn the_circuit_breaker_opens_waits_and_closes() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("breaker").await;
    let ns_name = ns.name().to_string();
    let stack = start_stack(
        &ns,
        &["--breaker-reset-timeout", "6s", "--pod-namespace", &ns_name],
    )
    .await;
    let client = ns.client().await;
    stack
        .emulator
        .add_fault(json!({"endpoint": "*", "status": 500}))
        .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("b", json!({}), json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();

    // Five failed calls (each after its retries) open the breaker; then nothing reaches
    // Upstash until the reset timeout.
    testkit::wait_for("the breaker to open", TIMEOUT, || async {
        let (_, metrics) = stack.operator.get("/metrics").await;
        metrics
            .contains("upstash_api_circuit_breaker_openings_total 1")
            .then_some(())
    })
    .await;
    let opened_after = stack.emulator.calls().await;
    assert!(opened_after.len() >= 5, "{opened_after:?}");
    assert!(opened_after.iter().all(|c| c["status"] == 500));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let calls = stack.emulator.calls().await;
    assert_eq!(
        calls.len(),
        opened_after.len(),
        "no calls while the breaker is open: {calls:?}"
    );
    let (_, metrics) = stack.operator.get("/metrics").await;
    assert!(
        metrics.contains("upstash_api_circuit_breaker_state 1"),
        "gauge shows open"
    );
    let (_, status) = stack.operator.get("/status").await;
    assert!(status.contains("\"state\":\"open\""), "{status}");

    // After the reset timeout exactly one trial call goes through, once (and fails: open
    // again).
    let before = opened_after.len();
    let calls = testkit::wait_for("one trial call", Duration::from_secs(10), || async {
        let calls = stack.emulator.calls().await;
        (calls.len() > before).then_some(calls)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        stack.emulator.calls().await.len(),
        before + 1,
        "a single trial: {calls:?}"
    );

    // Upstash recovers: the next trial succeeds, a second success closes the breaker.
    stack.emulator.clear_faults().await;
    let own_events = testkit::wait_for("CircuitBreakerClosed", Duration::from_secs(30), || async {
        let pod = format!(
            "operator-{}",
            stack.operator.http_addr().rsplit(':').next().unwrap()
        );
        let events = events_for(&client, ns.name(), &pod).await;
        (count(&events, "CircuitBreakerClosed") == 1).then_some(events)
    })
    .await;
    assert_eq!(
        count(&own_events, "CircuitBreakerOpened"),
        1,
        "{own_events:?}"
    );
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for_condition(&api, "b", "Ready", "True", TIMEOUT).await;
    let (_, metrics) = stack.operator.get("/metrics").await;
    assert!(metrics.contains("upstash_api_circuit_breaker_state 0"));
}

#[tokio::test]
async fn a_guardrail_violation_creates_nothing() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("guard").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy("eu-only", json!({"selector": {}, "guardrails": {"allowedRegions": ["eu-west-1", "eu-central-1"]}})),
    )
    .await
    .unwrap();
    let policies: Api<CachePolicy> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for("the policy to be known", TIMEOUT, || async {
        policies
            .get("eu-only")
            .await
            .ok()?
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready")
            .then_some(())
    })
    .await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("us", json!({}), json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let obj = testkit::wait_for_condition(&api, "us", "PolicyCompliant", "False", TIMEOUT).await;
    let status = obj.status.unwrap();
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PolicyCompliant")
        .unwrap();
    assert_eq!(cond.reason, "PolicyViolation");
    assert!(
        cond.message.contains("spec.primaryRegion us-east-1"),
        "{}",
        cond.message
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PolicyViolation")
    );
    let events = testkit::wait_for("a PolicyViolation Event", TIMEOUT, || async {
        let events = events_for(&client, ns.name(), "us").await;
        events
            .iter()
            .any(|e| e.0 == "PolicyViolation" && e.1 == "Warning")
            .then_some(events)
    })
    .await;
    assert_eq!(count(&events, "PolicyViolation"), 1);
    assert!(
        stack.emulator.databases().await.is_empty(),
        "no database created"
    );
    assert!(stack.emulator.calls_to("create").await.is_empty());

    // Moving to an allowed region is not possible (immutable), but a new instance in one works.
    apply_manifest(
        &client,
        ns.name(),
        &instance("eu", json!({}), json!({"primaryRegion": "eu-west-1"})),
    )
    .await
    .unwrap();
    provisioned(&api, "eu").await;
    assert_eq!(stack.emulator.databases().await.len(), 1);
}
