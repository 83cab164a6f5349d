//! What a tenant with nothing but the right to create CacheInstances in its own namespace cannot
//! do to the operator, to other tenants or to the bill: hostile Secret templates stay within
//! their bounds, a Secret that cannot be written creates no database, `requireAllowedIPs` is
//! not satisfied by a range that admits every address, the in-use finalizer goes only where a
//! cleanup needs it, and on-demand rotations have a floor.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use upstash_operator::{
    crd::CacheInstance,
    credentials::usage::{CLAIM_LABEL, IN_USE_FINALIZER},
};

use crate::support::{
    TEST_MANAGER, apply_manifest, install_crds, instance, policy, start_operator, start_stack,
};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The chart's memory limit for the operator's container.
const CHART_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;

/// `Ready`'s status, reason and message.
fn ready(obj: &CacheInstance) -> Option<(String, String, String)> {
    condition(obj, "Ready")
}

fn condition(obj: &CacheInstance, type_: &str) -> Option<(String, String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name`'s `Ready` has `reason`, and returns its message.
async fn wait_for_reason(api: &Api<CacheInstance>, name: &str, reason: &str) -> String {
    testkit::wait_for(&format!("{name} to report {reason}"), TIMEOUT, || async {
        let obj = api.get(name).await.map_err(|e| e.to_string())?;
        match ready(&obj) {
            Some((_, r, message)) if r == reason => Ok(message),
            other => Err(format!("Ready: {other:?}")),
        }
    })
    .await
}

/// A `/proc/<pid>/status` figure in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The operator's child processes (its template render workers), started by any of its threads.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test]
async fn hostile_templates_are_invalid_for_their_instance_alone_and_the_operator_stays_well() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("hostile").await;
    let calm = cluster.namespace("calm").await;
    let mut stack = start_stack(&ns, &["--watch-namespaces", calm.name()]).await;
    let client = ns.client().await;
    let pid = stack.operator.process().id();
    let started_hwm = proc_status_bytes(pid, "VmHWM").expect("the operator's VmHWM");

    // /readyz and /metrics are polled throughout, each answer within 5 s; the render workers'
    // memory is sampled on the way.
    let stop = Arc::new(AtomicBool::new(false));
    let polls = Arc::new(AtomicU64::new(0));
    let worker_peak = Arc::new(AtomicU64::new(0));
    let poller = {
        let (stop, polls, worker_peak) = (stop.clone(), polls.clone(), worker_peak.clone());
        let base = format!("http://{}", stack.operator.http_addr());
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                for path in ["/readyz", "/metrics"] {
                    let asked = Instant::now();
                    let answer = http
                        .get(format!("{base}{path}"))
                        .send()
                        .await
                        .map(|r| r.status().as_u16());
                    slowest = slowest.max(asked.elapsed());
                    assert_eq!(
                        answer.as_ref().ok(),
                        Some(&200),
                        "{path} did not answer 200 within 5 s: {answer:?}"
                    );
                }
                polls.fetch_add(1, Ordering::Relaxed);
                for child in children(pid) {
                    if let Some(rss) = proc_status_bytes(child, "VmHWM") {
                        worker_peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            slowest
        })
    };

    let nested: String = (0..4)
        .map(|i| format!("{{% for v{i} in range(1000) %}}"))
        .chain((0..4).map(|_| "{% endfor %}".to_string()))
        .collect();
    let deep: String = (0..64)
        .map(|i| format!("{{% for d{i} in [1] %}}"))
        .chain((0..64).map(|_| "{% endfor %}".to_string()))
        .collect();
    let hostile = [
        (
            "huge",
            r#"{{ "x" * 100000000 }}"#.to_string(),
            "MiB of memory",
        ),
        (
            "doubling",
            r#"{% set a = "x" * 10000000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}"#
                .to_string(),
            "MiB of memory",
        ),
        ("nested", nested, "template steps"),
        (
            "long",
            "{% for i in range(100000) %}{% endfor %}".to_string(),
            "template steps",
        ),
        (
            "output",
            "{% for i in range(30000) %}xxxxxxxx{% endfor %}".to_string(),
            "bytes",
        ),
        ("deep", deep, "recursion"),
    ];
    let started = Instant::now();
    let calm_client = calm.client().await;
    let unrelated = instance(
        "unrelated",
        json!({"primaryRegion": "us-east-1", "secret": {"templates": {"CACHE_URL": "{{ redisUrl }}/0"}}}),
    );
    let (unrelated_applied, results) = tokio::join!(
        apply_manifest(&calm_client, calm.name(), &unrelated),
        futures::future::join_all(hostile.iter().map(|(name, template, _)| {
            let client = client.clone();
            let ns = ns.name().to_string();
            async move {
                apply_manifest(
                    &client,
                    &ns,
                    &instance(
                        name,
                        json!({"primaryRegion": "us-east-1", "secret": {"templates": {"EVIL": template}}}),
                    ),
                )
                .await
            }
        }))
    );
    unrelated_applied.unwrap();
    for r in results {
        r.unwrap();
    }

    // The unrelated instance, in another namespace, becomes Ready (with its template).
    let calm_api: Api<CacheInstance> = Api::namespaced(calm_client.clone(), calm.name());
    testkit::wait_for_condition(&calm_api, "unrelated", "Ready", "True", TIMEOUT).await;
    let calm_ready_after = started.elapsed();
    let secret = Api::<Secret>::namespaced(calm_client.clone(), calm.name())
        .get("unrelated")
        .await
        .unwrap();
    let data = crate::support::secret_data(&secret);
    assert_eq!(data["CACHE_URL"], format!("{}/0", data["REDIS_URL"]));

    // Each hostile instance is InvalidSpec, naming its template and the bound it hit.
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    for (name, _, bound) in &hostile {
        let message = wait_for_reason(&api, name, "InvalidSpec").await;
        assert!(
            message.starts_with("spec.secret.templates.EVIL:") && message.contains(bound),
            "{name}: {message}"
        );
    }
    // The hostile instances are tried again (with backoff) while /readyz is polled: each is
    // rendered at least three times.
    let failures = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("upstash_operator_reconcile_failures_total{")
                    && l.contains(r#"controller="cacheinstance""#)
                    && l.contains(r#"reason="InvalidSpec""#)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let wanted = 3 * hostile.len() as u64;
    testkit::wait_for(
        "the hostile instances to be tried again",
        TIMEOUT,
        || async {
            let (_, metrics) = stack.operator.get("/metrics").await;
            let n = failures(&metrics);
            if n >= wanted {
                Ok(n)
            } else {
                Err(format!("{n} InvalidSpec reconciles"))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let slowest = poller.await.expect("/readyz answered throughout");

    // Nothing was created for them: the only database is the unrelated instance's.
    let creates = stack.emulator.calls_to("create").await;
    assert_eq!(creates.len(), 1, "{creates:?}");
    let databases = stack.emulator.databases().await;
    assert_eq!(databases.len(), 1);
    assert!(
        databases[0]["database_name"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("{}-unrelated-", calm.name()))),
        "{databases:?}"
    );

    let peak = proc_status_bytes(pid, "VmHWM").expect("the operator's VmHWM");
    let workers = worker_peak.load(Ordering::Relaxed);
    eprintln!(
        "hostile templates: operator peak RSS (VmHWM) {:.1} MiB (at start {:.1} MiB); render workers' peak RSS {:.1} MiB each at most; /readyz and /metrics answered {} polls, slowest {slowest:?}; the unrelated instance was Ready after {calm_ready_after:?}",
        mib(peak),
        mib(started_hwm),
        mib(workers),
        polls.load(Ordering::Relaxed),
    );
    assert!(polls.load(Ordering::Relaxed) > 0);
    assert!(
        peak + upstash_operator::templates::WORKERS as u64 * workers < CHART_MEMORY_LIMIT / 2,
        "the operator ({:.1} MiB) and its render workers ({:.1} MiB each) are not well under the chart's 256 Mi",
        mib(peak),
        mib(workers)
    );
}

#[tokio::test]
async fn a_secret_that_cannot_be_written_creates_no_database() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("undeliverable").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;

    // A Secret of the name, not the operator's.
    let theirs = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        data: Some([("KEEP".to_string(), ByteString(b"mine".to_vec()))].into()),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns.name());
    secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "wants-taken",
            json!({"primaryRegion": "us-east-1", "secret": {"name": "taken"}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    // The witness: the operator looked and says why.
    let message = wait_for_reason(&api, "wants-taken", "SecretConflict").await;
    assert!(
        message.contains("Secret taken already exists and is not owned by this CacheInstance"),
        "{message}"
    );
    let obj = api.get("wants-taken").await.unwrap();
    let (status, reason, message) = condition(&obj, "Provisioned").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "SecretConflict")
    );
    assert!(message.contains("no database is created"), "{message}");
    assert!(
        stack.emulator.calls_to("create").await.is_empty(),
        "a database was created for a Secret that cannot be written"
    );
    assert!(obj.status.unwrap().database_id.is_none());
    assert_eq!(
        crate::support::secret_data(&secrets.get("taken").await.unwrap())["KEEP"],
        "mine"
    );

    // Labels and annotations the API server would refuse on the Secret are refused at
    // admission, naming the field.
    let long_value = "v".repeat(64);
    let big = "a".repeat(256 * 1024);
    for (secret, field) in [
        (json!({"labels": {"bad key": "x"}}), "spec.secret.labels"),
        (
            json!({"labels": {"team": long_value}}),
            "spec.secret.labels",
        ),
        (json!({"labels": {"-team": "x"}}), "spec.secret.labels"),
        (json!({"labels": {"team": "-x"}}), "spec.secret.labels"),
        (
            json!({"annotations": {"example.com/bad key": "x"}}),
            "spec.secret.annotations",
        ),
        (
            json!({"annotations": {"note": big}}),
            "spec.secret.annotations",
        ),
    ] {
        let manifest = instance(
            "refused",
            json!({"primaryRegion": "us-east-1", "secret": secret}),
        );
        let Err(kube::Error::Api(status)) = apply_manifest(&client, ns.name(), &manifest).await
        else {
            panic!("admission accepted {secret}");
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(
            status.message.contains(field),
            "{secret}: {}",
            status.message
        );
    }
    // What the API server accepts on a Secret is accepted.
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "labelled",
            json!({"primaryRegion": "us-east-1", "secret": {
                "labels": {"app.kubernetes.io/part-of": "crm", "tier": ""},
                "annotations": {"Example.com/Owner": "team crm", "note": "a".repeat(200 * 1024)}}}),
        ),
    )
    .await
    .unwrap();
    testkit::wait_for_condition(&api, "labelled", "Ready", "True", TIMEOUT).await;
    let written = secrets.get("labelled").await.unwrap();
    assert_eq!(
        written.metadata.labels.unwrap()["app.kubernetes.io/part-of"],
        "crm"
    );
}

#[tokio::test]
async fn required_allowed_ips_are_not_satisfied_by_a_range_that_admits_every_address() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("open-ips").await;
    let stack = start_stack(&ns, &[]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &policy(
            "locked",
            json!({"selector": {}, "guardrails": {"requireAllowedIPs": true}}),
        ),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    for (name, ips) in [
        ("v4", json!(["0.0.0.0/0"])),
        ("v6", json!(["10.0.0.0/8", "::/0"])),
        ("halves", json!(["0.0.0.0/1", "128.0.0.0/1"])),
    ] {
        apply_manifest(
            &client,
            ns.name(),
            &instance(
                name,
                json!({"primaryRegion": "us-east-1", "allowedIPs": ips}),
            ),
        )
        .await
        .unwrap();
        let message = wait_for_reason(&api, name, "PolicyViolation").await;
        assert!(
            message.contains("CachePolicy locked requires spec.allowedIPs")
                && message.contains("admits every address"),
            "{name}: {message}"
        );
    }
    assert!(stack.emulator.calls_to("create").await.is_empty());

    // A list of real networks passes.
    apply_manifest(
        &client,
        ns.name(),
        &instance(
            "closed",
            json!({"primaryRegion": "us-east-1", "allowedIPs": ["10.0.0.0/8", "203.0.113.7"]}),
        ),
    )
    .await
    .unwrap();
    testkit::wait_for_condition(&api, "closed", "Ready", "True", TIMEOUT).await;
    assert_eq!(stack.emulator.calls_to("create").await.len(), 1);
}

/// Whether `secret` carries the in-use claim (finalizer or label).
fn claimed(secret: &Secret) -> bool {
    secret
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == IN_USE_FINALIZER)
        || secret
            .metadata
            .labels
            .iter()
            .flatten()
            .any(|(k, _)| k == CLAIM_LABEL)
}

#[tokio::test]
async fn the_in_use_finalizer_goes_only_on_credentials_that_worked_and_never_on_the_operators() {
    let cluster = testkit::cluster().await;
    // The operator's own namespace, holding the operator-wide Secret, and a tenant namespace.
    let ops = cluster.namespace("claims-ops").await;
    let tenant = cluster.namespace("claims-tenant").await;
    let admin = ops.client().await;
    install_crds(&admin).await;
    let emulator = testkit::emulator::Emulator::start().await;
    testkit::operator::write_credentials(&admin, ops.name()).await;
    // The tenant's own credentials, with a key Upstash refuses.
    testkit::operator::write_credentials_with(
        &admin,
        tenant.name(),
        testkit::operator::CREDENTIALS_SECRET,
        testkit::emulator::EMAIL,
        "not-the-key",
    )
    .await;
    let _operator = start_operator(&ops, &emulator, &["--watch-namespaces", tenant.name()]).await;

    // An instance in the operator's own namespace finds the operator-wide Secret as its
    // namespace's Secret: it is Ready, and the Secret carries no claim.
    apply_manifest(
        &admin,
        ops.name(),
        &instance("own", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let own: Api<CacheInstance> = Api::namespaced(admin.clone(), ops.name());
    testkit::wait_for_condition(&own, "own", "Ready", "True", TIMEOUT).await;
    let ops_secrets: Api<Secret> = Api::namespaced(admin.clone(), ops.name());
    // The witness: the operator marked it with the account it learned (its one write to it).
    let operator_secret = testkit::wait_for("the account mark", TIMEOUT, || async {
        let s = ops_secrets
            .get(testkit::operator::CREDENTIALS_SECRET)
            .await
            .ok()?;
        s.metadata
            .annotations
            .as_ref()?
            .contains_key("cache.upstash-operator.dev/account")
            .then_some(s)
    })
    .await;
    assert!(
        !claimed(&operator_secret),
        "the operator-wide Secret was claimed: {:?}",
        operator_secret.metadata
    );

    // Refused credentials: the instance says so, and their Secret is not claimed.
    let tenant_api: Api<CacheInstance> = Api::namespaced(admin.clone(), tenant.name());
    apply_manifest(
        &admin,
        tenant.name(),
        &instance("refused", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    wait_for_reason(&tenant_api, "refused", "UpstashUnauthorized").await;
    let tenant_secrets: Api<Secret> = Api::namespaced(admin.clone(), tenant.name());
    let refused = tenant_secrets
        .get(testkit::operator::CREDENTIALS_SECRET)
        .await
        .unwrap();
    assert!(
        !claimed(&refused),
        "a Secret whose credentials were refused was claimed: {:?}",
        refused.metadata
    );
    assert!(emulator.calls_to("create").await.len() == 1, "only `own`'s");

    // Once the credentials work, the Secret is claimed (a cleanup will need it).
    tenant_secrets
        .patch(
            testkit::operator::CREDENTIALS_SECRET,
            &PatchParams::apply(TEST_MANAGER),
            &Patch::Merge(json!({"stringData": {"apiKey": testkit::emulator::API_KEY}})),
        )
        .await
        .unwrap();
    testkit::wait_for_condition(&tenant_api, "refused", "Ready", "True", TIMEOUT).await;
    testkit::wait_for("the working Secret to be claimed", TIMEOUT, || async {
        claimed(
            &tenant_secrets
                .get(testkit::operator::CREDENTIALS_SECRET)
                .await
                .ok()?,
        )
        .then_some(())
    })
    .await;
    assert!(!claimed(
        &ops_secrets
            .get(testkit::operator::CREDENTIALS_SECRET)
            .await
            .unwrap()
    ));
}

#[tokio::test]
async fn on_demand_rotations_have_a_floor_and_requests_within_it_are_served_together() {
    let cluster = testkit::cluster().await;
    let ns = cluster.namespace("rotation-floor").await;
    let floor = Duration::from_secs(15);
    let stack = start_stack(&ns, &["--min-rotation-interval", "15s"]).await;
    let client = ns.client().await;
    apply_manifest(
        &client,
        ns.name(),
        &instance("r", json!({"primaryRegion": "us-east-1"})),
    )
    .await
    .unwrap();
    let api: Api<CacheInstance> = Api::namespaced(client.clone(), ns.name());
    testkit::wait_for_condition(&api, "r", "Ready", "True", TIMEOUT).await;
    stack.emulator.clear_calls().await;
    let request = |value: String| {
        let api = api.clone();
        async move {
            api.patch(
                "r",
                &PatchParams::apply(TEST_MANAGER),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "cache.upstash-operator.dev/rotate-password": value}}})),
            )
            .await
            .unwrap();
        }
    };
    let served = |value: &'static str| {
        let api = api.clone();
        async move {
            testkit::wait_for(&format!("request {value} served"), TIMEOUT, || async {
                let rotation = api.get("r").await.ok()?.status?.rotation?;
                (rotation.last_request.as_deref() == Some(value)).then_some(*rotation)
            })
            .await
        }
    };

    // The first request is served at once.
    request("first".into()).await;
    let first = served("first").await;
    assert_eq!(stack.emulator.calls_to("reset-password").await.len(), 1);
    let first_at = first.last_request_time.expect("lastRequestTime").0;

    // Five more in quick succession wait for the floor.
    for i in 0..5 {
        request(format!("burst-{i}")).await;
    }
    request("last".into()).await;
    // The witness: the operator saw them and says when they will be served.
    let waiting = testkit::wait_for("the waiting request to be scheduled", TIMEOUT, || async {
        let rotation = api.get("r").await.ok()?.status?.rotation?;
        let next = rotation.next_rotation_time.as_ref()?.0;
        (next == first_at + floor).then_some(*rotation)
    })
    .await;
    assert_eq!(waiting.last_request.as_deref(), Some("first"));
    assert_eq!(
        stack.emulator.calls_to("reset-password").await.len(),
        1,
        "a request within the floor was served at once"
    );

    // After the floor, one rotation serves them all.
    let last = served("last").await;
    let last_at = last.last_request_time.unwrap().0;
    assert!(
        last_at >= first_at + floor,
        "served at {last_at}, the floor ends at {}",
        first_at + floor
    );
    assert_eq!(
        stack.emulator.calls_to("reset-password").await.len(),
        2,
        "the requests within the floor were not served by one rotation"
    );
}
