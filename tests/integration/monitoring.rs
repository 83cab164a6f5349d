//! CachePolicy monitoring against the real control plane and the emulator: no data-plane
//! command by default; threshold crossings become one Event each with hold time and
//! hysteresis, recoveries one Event each; the probe's client-side figures; cost in status; the
//! circuit breaker; metrics and /status; guardrails.

use std::time::{Duration, Instant};

use kube::Api;
use serde_json::{Value, json};
use upstash_operator::crd::{CacheInstance, CachePolicy};

use crate::support::{apply_manifest, events_for, policy, rest_command, start_stack};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Sets stats overrides on several databases.
async fn set_all(emulator: &testkit::emulator::Emulator, values: &[(String, Value)]) {
    for (id, stats) in values {
        emulator.set_stats(id, stats.clone()).await;
    }
}

/// Data-plane requests the emulator answered (REST and RESP), from its call log.
async fn data_plane_calls(emulator: &testkit::emulator::Emulator) -> Vec<Value> {
    reqwest::get(format!("{}/_emulator/calls?plane=data", emulator.api_url()))
        .await
        .expect("the emulator's call log")
        .json()
        .await
        .expect("a JSON call log")
}

/// The value of an unlabelled metric on `/metrics`.
fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Developer API calls the circuit breaker held back (`upstash_api_requests_total` with code
/// `circuit_open`), from `/metrics`.
async fn circuit_open(operator: &testkit::operator::Operator) -> f64 {
    operator
        .metrics()
        .await
        .lines()
        .filter(|l| {
            l.starts_with("upstash_api_requests_total{") && l.contains("code=\"circuit_open\"")
        })
        .map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("a series without a value: {l}"))
        })
        .sum()
}

/// A witnessed negative: waits until the monitor sampled database `id` (its `stats` reads in
/// the call log) `samples` more times from now, then asserts that `name` has at most `max`
/// Events with `reason`.
async fn stays_after(
    stack: &crate::support::Stack,
    client: &kube::Client,
    ns: &str,
    (name, id): (&str, &str),
    reason: &str,
    max: usize,
    samples: u64,
) {
    let mark = stack.emulator.mark().await;
    stack
        .emulator
        .wait_for_calls("stats", Some(id), mark, samples)
        .await;
    let events = events_for(client, ns, name).await;
    assert!(
        count(&events, reason) <= max,
        "{reason} on {name} after {samples} samples: {events:?}"
    );
}

/// Waits for exactly `n` Events with `reason` on `name`.
async fn wait_events(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    n: usize,
) -> Vec<(String, String, String)> {
    let events = testkit::wait_for(
        &format!("{n} {reason} Event(s) on {name}"),
        TIMEOUT,
        || async {
            let events = events_for(client, ns, name).await;
            (count(&events, reason) >= n).then_some(events)
        },
    )
    .await;
    assert_eq!(count(&events, reason), n, "{reason} on {name}: {events:?}");
    events
}

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
    // Healthy samples write nothing: no `Healthy` condition until an alert fires, so a new
    // instance costs the monitor no Kubernetes write.
    testkit::wait_for("a few samples", TIMEOUT, || async {
        (stack.emulator.calls_to("stats").await.len() >= 3).then_some(())
    })
    .await;
    let obj = api.get("crm").await.unwrap();
    assert!(
        obj.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .all(|c| c.type_ != "Healthy"),
        "{:?}",
        obj.status
    );
    assert!(
        obj.metadata
            .managed_fields
            .iter()
            .flatten()
            .all(|m| m.manager.as_deref() != Some("upstash-operator/monitor")),
        "the monitor wrote a healthy instance's status"
    );

    // 45% hit rate over 1,000 reads.
    let crossed = stack.emulator.mark().await;
    stack
        .emulator
        .set_stats(&id, json!({"hits": [450], "misses": [550]}))
        .await;
    let events = testkit::wait_for("a HitRateLow Event", Duration::from_secs(15), || async {
        let events = events_for(&client, ns.name(), "crm").await;
        (count(&events, "HitRateLow") >= 1).then_some(events)
    })
    .await;
    // No hold time: it fires on the first sample that sees the low rate (the count may also
    // hold a sample under way when the stats changed, and one taken while this test looked
    // for the Event).
    let samples_until_fired = stack
        .emulator
        .calls_since(crossed, "stats", Some(&id))
        .await
        .len();
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

    // Several more intervals (witness: four samples): still exactly one Event, and no status
    // rewrite.
    let rv = api.get("crm").await.unwrap().metadata.resource_version;
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("crm", id.as_str()),
        "HitRateLow",
        1,
        4,
    )
    .await;
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
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("crm", id.as_str()),
        "HitRateRecovered",
        1,
        3,
    )
    .await;
    let events = events_for(&client, ns.name(), "crm").await;
    assert_eq!(count(&events, "HitRateLow"), 1, "{events:?}");
    assert_eq!(count(&events, "HitRateRecovered"), 1, "{events:?}");
    let recovered = events.iter().find(|e| e.0 == "HitRateRecovered").unwrap();
    assert_eq!(recovered.1, "Normal");
    assert!(
        (1..=3).contains(&samples_until_fired),
        "fired on the first sample of the low rate: {samples_until_fired} samples"
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
            json!({"selector": {}, "evaluationInterval": "2s", "hitRate": {"enabled": false}, "latency": {"enabled": false},
                   "probe": {"enabled": true, "interval": "1s", "minSamples": 4}}),
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
    // $45 spent of a $50 budget, $2 a day lately.
    stack
        .emulator
        .set_stats(
            &spend,
            json!({"total_monthly_billing": 45.0, "dailybilling": [2.0, 2.0, 2.0, 2.0, 1.0]}),
        )
        .await;

    for (name, reason, fragment) in [
        ("mem", "MemoryHigh", "85.0%"),
        ("conn", "ConnectionFailing", "in a row"),
        (
            "spend",
            "BudgetNearlyExhausted",
            "spend $45.00 this month, projected $",
        ),
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
    // The data plane failing also shows as a client-side error rate.
    let events = events_for(&client, ns.name(), "conn").await;
    let errors = events.iter().find(|e| e.0 == "ErrorRateHigh");
    assert!(
        errors.is_some_and(|e| e.2.contains("client-side error rate")),
        "{events:?}"
    );

    // Cost and its projection in status, and in the printer column kubectl shows.
    let obj = testkit::wait_for("the spend in status", TIMEOUT, || async {
        let obj = api.get("spend").await.ok()?;
        obj.status.as_ref()?.cost.is_some().then_some(obj)
    })
    .await;
    let cost = obj.status.unwrap().cost.unwrap();
    assert_eq!(cost.month_to_date_usd, "45.00");
    assert_eq!(cost.source, "Upstash");
    let as_of = cost.as_of.0.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    let elapsed = f64::from(as_of.day() - 1)
        + (f64::from(as_of.hour()) * 3600.0
            + f64::from(as_of.minute()) * 60.0
            + f64::from(as_of.second()))
            / 86_400.0;
    let expected = 45.0 + 2.0 * (f64::from(as_of.date().days_in_month()) - elapsed.max(1.0 / 24.0));
    let projected: f64 = cost.projected_month_end_usd.parse().unwrap();
    assert!(
        (projected - expected).abs() < 0.011,
        "projected {projected}, expected {expected:.2}"
    );
    let table = client
        .request_text(
            http::Request::get(format!(
                "/apis/cache.upstash-operator.dev/v1alpha1/namespaces/{}/cacheinstances/spend",
                ns.name()
            ))
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
            .body(Vec::new())
            .unwrap(),
        )
        .await
        .unwrap();
    let table: Value = serde_json::from_str(&table).unwrap();
    let column = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c["name"] == "Projected")
        .expect("a Projected column");
    assert_eq!(
        table["rows"][0]["cells"][column],
        json!(cost.projected_month_end_usd)
    );

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
        "upstash_cache_projected_monthly_cost_usd",
        "upstash_cache_client_error_ratio",
        "upstash_cache_firing_alerts",
        "upstash_cache_ready",
        "upstash_monitor_probe_commands_total",
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
    // The guide's /api/health fields.
    let cache = &status["cache"];
    assert_eq!(cache["status"], "connected", "alerts fire, Upstash answers");
    assert_eq!(cache["provider"], "upstash");
    assert_eq!(cache["hit_rate"], "90.0%", "900 hits, 100 misses: {cache}");
    // Integers, as in the guide.
    assert_eq!(cache["hits"].as_u64(), Some(900), "{cache}");
    assert_eq!(cache["misses"].as_u64(), Some(100), "{cache}");
    assert_eq!(cache["total_operations"].as_u64(), Some(1000), "{cache}");
    assert_eq!(cache["circuit_breaker"]["state"], "CLOSED");
    assert_eq!(cache["circuit_breaker"]["failures"], 0);
    assert_eq!(cache["circuit_breaker"]["successes"], 0);
    assert_eq!(cache["instances"], 3);
    assert!(cache["firing_alerts"].as_u64().unwrap() >= 3);
    assert!(cache["probe_commands_today"].as_u64().unwrap() > 0);
    let instances = status["instances"].as_array().unwrap();
    let mem_report = instances.iter().find(|i| i["name"] == "mem").unwrap();
    let percent = mem_report["memoryPercent"].as_f64().unwrap();
    assert!((84.9..=85.0).contains(&percent), "{percent}");
    assert_eq!(mem_report["alerts"], json!(["MemoryHigh"]));
    for field in [
        "hitRate",
        "hits",
        "misses",
        "latencyP99Ms",
        "clientErrorRatePercent",
        "probeSamples",
        "monthToDateUsd",
        "projectedMonthEndUsd",
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
    // Witness: passes over `b` that tried to call Upstash and were held back by the breaker.
    let held_back = circuit_open(&stack.operator).await;
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "b").await;
    let held_back_now = circuit_open(&stack.operator).await;
    assert!(
        held_back_now > held_back,
        "the passes tried Upstash: {held_back} → {held_back_now} calls held back"
    );
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
    // Witness: passes after the trial, held back again.
    let held_back = circuit_open(&stack.operator).await;
    crate::support::witness_pass(&stack.operator, &client, ns.name(), "b").await;
    assert!(circuit_open(&stack.operator).await > held_back);
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

    // Naming a lenient policy adds it; it does not escape the one that selects the instance.
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "anything",
            json!({"guardrails": {"highestPlan": "fixed_500gb"}}),
        ),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "escape",
            json!({}),
            json!({"primaryRegion": "us-west-2", "policyRef": {"name": "anything"}}),
        ),
    )
    .await
    .unwrap();
    let obj =
        testkit::wait_for_condition(&api, "escape", "PolicyCompliant", "False", TIMEOUT).await;
    let status = obj.status.unwrap();
    let cond = status
        .conditions
        .iter()
        .find(|c| c.type_ == "PolicyCompliant")
        .unwrap();
    assert_eq!(cond.reason, "PolicyViolation");
    assert!(
        cond.message.contains("CachePolicy eu-only allows"),
        "{}",
        cond.message
    );
    assert_eq!(status.policy.as_deref(), Some("anything, eu-only"));
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

/// One instance under the default thresholds (a policy that only shortens the interval to 1 s,
/// so that 20 s cover about 20 sampling cycles): the monitor reads Upstash's stats and sends the
/// database no command at all.
#[tokio::test]
async fn the_default_policy_sends_no_data_plane_command() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("quiet").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "defaults",
            json!({"selector": {}, "evaluationInterval": "1s"}),
        ),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance("app", json!({}), json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let id = provisioned(&api, "app").await;
    let db = stack.emulator.database(&id).await.unwrap();

    // Witness: a dozen samples.
    let mark = stack.emulator.mark().await;
    stack
        .emulator
        .wait_for_calls("stats", Some(&id), mark, 12)
        .await;
    let data = data_plane_calls(&stack.emulator).await;
    assert!(data.is_empty(), "data-plane commands were sent: {data:?}");
    let (_, metrics) = stack.operator.get("/metrics").await;
    assert_eq!(
        metric_value(&metrics, "upstash_monitor_probe_commands_total"),
        Some(0.0),
        "{metrics}"
    );
    let (_, status) = stack.operator.get("/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["cache"]["probe_commands_today"], 0);
    assert_eq!(status["instances"][0]["probeSamples"], Value::Null);

    // The call log does record data-plane commands: one sent here shows.
    let (code, _) = rest_command(
        db["rest_url"].as_str().unwrap(),
        db["rest_token"].as_str().unwrap(),
        stack.emulator.ca_file(),
        json!(["PING"]),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(data_plane_calls(&stack.emulator).await.len(), 1);
}

/// LatencyHigh (Upstash's server-side P99) and DailyCommandsHigh (today's commands against the
/// free plan's 10,000): a blip shorter than the hold time fires nothing, a lasting crossing
/// fires once after the hold time, a value hovering inside the hysteresis band neither
/// resolves nor fires again, and recovery is one Event.
#[tokio::test]
async fn latency_and_daily_commands_fire_once_per_crossing_with_hold_and_hysteresis() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("holds").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    let hold = Duration::from_secs(5);
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "guide",
            json!({"selector": {}, "evaluationInterval": "1s", "holdTime": "5s", "hysteresisPercent": 5}),
        ),
    )
    .await
    .unwrap();
    for (name, spec) in [
        ("lat", json!({"primaryRegion": "us-east-1"})),
        (
            "quota",
            json!({"primaryRegion": "us-east-1", "plan": "free"}),
        ),
    ] {
        apply_manifest(&client, ns.name(), &instance(name, json!({}), spec))
            .await
            .unwrap();
    }
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let lat = provisioned(&api, "lat").await;
    let quota = provisioned(&api, "quota").await;
    let (low, high, hover) = (
        [
            (
                lat.clone(),
                json!({"latency_99": [10.0], "latencymean": [2.0]}),
            ),
            (quota.clone(), json!({"daily_net_commands": 5000})),
        ],
        [
            (
                lat.clone(),
                json!({"latency_99": [80.0], "latencymean": [9.0]}),
            ),
            (quota.clone(), json!({"daily_net_commands": 8500})),
        ],
        // Back under the line, inside the 5% band (47.5-50 ms, 76-80%).
        [
            (
                lat.clone(),
                json!({"latency_99": [49.0], "latencymean": [8.0]}),
            ),
            (quota.clone(), json!({"daily_net_commands": 7800})),
        ],
    );
    let checks = [
        ("lat", "LatencyHigh", "LatencyRecovered", "80.0 ms"),
        (
            "quota",
            "DailyCommandsHigh",
            "DailyCommandsRecovered",
            "8500 commands today, 85.0%",
        ),
    ];
    let ids = [("lat", lat.as_str()), ("quota", quota.as_str())];
    let id_of = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1;
    // Waits until the monitor sampled both databases `n` more times from now.
    let emulator = &stack.emulator;
    let sampled = |n: u64| async move {
        let mark = emulator.mark().await;
        for (_, id) in ids {
            emulator.wait_for_calls("stats", Some(id), mark, n).await;
        }
    };
    set_all(&stack.emulator, &low).await;
    sampled(2).await;

    // A blip the monitor saw (two samples: the second began after the change): shorter than
    // the hold time, no alert, even after more samples than the hold time covers.
    set_all(&stack.emulator, &high).await;
    sampled(2).await;
    set_all(&stack.emulator, &low).await;
    let hold_samples = hold.as_secs() + 2;
    for (name, fired, _, _) in checks {
        stays_after(
            &stack,
            &client,
            ns.name(),
            (name, id_of(name)),
            fired,
            0,
            hold_samples,
        )
        .await;
    }

    // A lasting crossing: one Warning each, not before the hold time: after two samples of the
    // high values there is none yet, and it comes after more samples than that.
    let crossed = stack.emulator.mark().await;
    set_all(&stack.emulator, &high).await;
    sampled(2).await;
    for (name, fired, _, _) in checks {
        let events = events_for(&client, ns.name(), name).await;
        assert_eq!(
            count(&events, fired),
            0,
            "{fired} within the hold time: {events:?}"
        );
    }
    for (name, fired, _, fragment) in checks {
        let events = wait_events(&client, ns.name(), name, fired, 1).await;
        let e = events.iter().find(|e| e.0 == fired).unwrap();
        assert_eq!(e.1, "Warning");
        assert!(e.2.contains(fragment), "{fired}: {}", e.2);
        let samples = stack
            .emulator
            .calls_since(crossed, "stats", Some(id_of(name)))
            .await
            .len() as u64;
        assert!(
            samples >= hold.as_secs() - 1,
            "{fired} fired after {samples} samples of 1 s, within the {hold:?} hold time"
        );
        testkit::wait_for_condition(&api, name, "Healthy", "False", TIMEOUT).await;
    }
    // Hovering inside the band: still firing, nothing new (witness: four samples).
    set_all(&stack.emulator, &hover).await;
    for (name, fired, recovered, _) in checks {
        stays_after(
            &stack,
            &client,
            ns.name(),
            (name, id_of(name)),
            recovered,
            0,
            4,
        )
        .await;
        stays_after(&stack, &client, ns.name(), (name, id_of(name)), fired, 1, 0).await;
    }
    // Recovered: one Normal Event each, and Healthy again.
    set_all(&stack.emulator, &low).await;
    for (name, fired, recovered, _) in checks {
        let events = wait_events(&client, ns.name(), name, recovered, 1).await;
        assert_eq!(
            events.iter().find(|e| e.0 == recovered).unwrap().1,
            "Normal"
        );
        testkit::wait_for_condition(&api, name, "Healthy", "True", TIMEOUT).await;
        stays_after(&stack, &client, ns.name(), (name, id_of(name)), fired, 1, 2).await;
        stays_after(
            &stack,
            &client,
            ns.name(),
            (name, id_of(name)),
            recovered,
            1,
            0,
        )
        .await;
    }
    assert!(
        data_plane_calls(&stack.emulator).await.is_empty(),
        "both alerts need no probe"
    );
}

/// The probe's client-side error rate is judged only over `minSamples` commands: one failed
/// probe among few does not fire; a failing data plane fires ErrorRateHigh once after the hold
/// time, and its recovery is one Event.
#[tokio::test]
async fn one_failed_probe_among_few_does_not_fire_error_rate_high() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("errors").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "probed",
            json!({"selector": {}, "evaluationInterval": "1s", "holdTime": "2s",
                   "probe": {"enabled": true, "interval": "1s", "minSamples": 20},
                   "errorRate": {"warningAbove": 10}, "connectionFailures": {"enabled": false}}),
        ),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance("p", json!({}), json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let id = provisioned(&api, "p").await;

    let probe_report = || async {
        let (_, status) = stack.operator.get("/status").await;
        let status: Value = serde_json::from_str(&status).ok()?;
        status["instances"].as_array()?.first().cloned()
    };
    // One data-plane request fails among the first few commands: 1 in about 7 is far above
    // 10%, but too few commands to judge.
    testkit::wait_for("a few probe commands", TIMEOUT, || async {
        (probe_report().await?["probeSamples"].as_u64()? >= 6).then_some(())
    })
    .await;
    stack
        .emulator
        .add_fault(json!({"endpoint": "data", "database_id": id, "status": 503, "times": 1}))
        .await;
    // Witness: the probe met the failure, then more samples than the hold time covers.
    testkit::wait_for("the probe to meet the failure", TIMEOUT, || async {
        data_plane_calls(&stack.emulator)
            .await
            .iter()
            .any(|c| c["status"] == 503)
            .then_some(())
    })
    .await;
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("p", id.as_str()),
        "ErrorRateHigh",
        0,
        4,
    )
    .await;
    let report = testkit::wait_for("20 probe commands", TIMEOUT, || async {
        let (_, status) = stack.operator.get("/status").await;
        let status: Value = serde_json::from_str(&status).ok()?;
        let report = status["instances"].as_array()?.first()?.clone();
        (report["probeSamples"].as_u64()? >= 20).then_some(report)
    })
    .await;
    assert_eq!(
        report["clientErrorRatePercent"], 5.0,
        "one failure among 20: {report}"
    );
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("p", id.as_str()),
        "ErrorRateHigh",
        0,
        4,
    )
    .await;

    // The data plane fails for good: the error rate climbs past 10%.
    let fault = stack
        .emulator
        .add_fault(json!({"endpoint": "data", "database_id": id, "status": 503}))
        .await;
    let events = wait_events(&client, ns.name(), "p", "ErrorRateHigh", 1).await;
    let e = events.iter().find(|e| e.0 == "ErrorRateHigh").unwrap();
    assert!(e.2.contains("of the probe's last 20 commands"), "{}", e.2);
    assert!(
        count(&events, "ConnectionFailing") == 0,
        "disabled: {events:?}"
    );
    let sent = || async {
        let (_, metrics) = stack.operator.get("/metrics").await;
        metric_value(&metrics, "upstash_monitor_probe_commands_total").unwrap()
    };
    let before = sent().await;
    let logged = data_plane_calls(&stack.emulator).await.len() as f64;
    let after = sent().await;
    assert!(before >= 20.0, "{before}");
    assert!(
        before <= logged && logged <= after + 2.0,
        "every probe command is counted: {before}..{after} counted, {logged} answered"
    );

    // Back: the failures leave the window and the alert resolves once.
    reqwest::Client::new()
        .delete(format!(
            "{}/_emulator/faults/{fault}",
            stack.emulator.api_url()
        ))
        .send()
        .await
        .unwrap();
    wait_events(&client, ns.name(), "p", "ErrorRateRecovered", 1).await;
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("p", id.as_str()),
        "ErrorRateHigh",
        1,
        3,
    )
    .await;
}

/// Evictions from the probe's INFO against Upstash's write count: filling a free database with
/// eviction on makes each new value evict an old one; EvictionsHigh fires once, and many
/// writes without evictions resolve it once.
#[tokio::test]
async fn evictions_above_one_percent_of_writes_fire_once_and_recover_once() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("evict").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "probed",
            json!({"selector": {}, "evaluationInterval": "1s", "holdTime": "2s",
                   "probe": {"enabled": true, "interval": "1s", "minSamples": 5},
                   "evictions": {"minWrites": 2}, "memory": {"enabled": false}}),
        ),
    )
    .await
    .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "full",
            json!({}),
            json!({"primaryRegion": "us-east-1", "plan": "free", "eviction": true}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    let id = provisioned(&api, "full").await;
    let db = stack.emulator.database(&id).await.unwrap();
    let (url, token) = (
        db["rest_url"].as_str().unwrap().to_string(),
        db["rest_token"].as_str().unwrap().to_string(),
    );
    let limit = db["db_disk_threshold"].as_u64().unwrap();
    let value = "x".repeat(8 * 1024 * 1024);
    let fills = (limit / value.len() as u64) as usize;

    // The engine's own count of evicted keys, to time the hold from the first eviction.
    let evicted = || async {
        let (code, body) = rest_command(
            &url,
            &token,
            stack.emulator.ca_file(),
            json!(["INFO", "stats"]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        body["result"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("evicted_keys:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The call log's mark when the engine first counted an eviction.
    let mut first_eviction: Option<u64> = None;

    // Fill the database, then keep writing new 8 MiB values for a while: each evicts a key.
    for i in 0..fills {
        let (code, body) = rest_command(
            &url,
            &token,
            stack.emulator.ca_file(),
            json!(["SET", format!("fill:{i}"), value]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        if first_eviction.is_none() && evicted().await > 0 {
            first_eviction = Some(stack.emulator.mark().await);
        }
    }
    let writing = Instant::now();
    let mut i = 0;
    let fired = loop {
        let (code, body) = rest_command(
            &url,
            &token,
            stack.emulator.ca_file(),
            json!(["SET", format!("new:{i}"), value]),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        i += 1;
        if first_eviction.is_none() && evicted().await > 0 {
            first_eviction = Some(stack.emulator.mark().await);
        }
        let events = events_for(&client, ns.name(), "full").await;
        if count(&events, "EvictionsHigh") > 0 {
            break events;
        }
        assert!(
            writing.elapsed() < TIMEOUT,
            "no EvictionsHigh after {i} evicting writes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let e = fired.iter().find(|e| e.0 == "EvictionsHigh").unwrap();
    assert_eq!(e.1, "Warning");
    assert!(e.2.contains("keys evicted for"), "{}", e.2);
    // The monitor sees an eviction at the earliest when it happens, and fires at the earliest
    // one hold time (2 s, two samples of 1 s) after it saw it.
    let first_eviction = first_eviction.expect("the engine counted evictions");
    let samples = stack
        .emulator
        .calls_since(first_eviction, "stats", Some(&id))
        .await
        .len();
    assert!(
        samples >= 2,
        "fired {samples} samples after the first eviction, before the 2 s hold time"
    );

    // Many small overwrites, no evictions: the rate falls to 0 and the alert resolves once.
    let started = Instant::now();
    loop {
        let pipeline: Vec<Value> = (0..50).map(|_| json!(["SET", "small", "v"])).collect();
        let http = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(stack.emulator.ca_file()).unwrap())
                    .unwrap(),
            )
            .build()
            .unwrap();
        let r = http
            .post(format!("{url}/pipeline"))
            .bearer_auth(&token)
            .json(&pipeline)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let events = events_for(&client, ns.name(), "full").await;
        if count(&events, "EvictionsRecovered") > 0 {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "EvictionsHigh did not resolve");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("full", id.as_str()),
        "EvictionsHigh",
        1,
        3,
    )
    .await;
    stays_after(
        &stack,
        &client,
        ns.name(),
        ("full", id.as_str()),
        "EvictionsRecovered",
        1,
        0,
    )
    .await;
}
