//! The chaos run: N CacheInstances provisioned and deleted while the operator is killed
//! (SIGKILL) at random moments and restarted at once, and a share of Upstash calls fail (5xx,
//! 429 with `Retry-After`, timeouts, and 5xx after the operation was performed).
//!
//! Checks: while the CacheInstances exist, exactly N databases (none duplicated, none leaked)
//! and every Secret equal to its database's current credentials; after deletion, no database
//! and no CacheInstance left.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, api::ListParams};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    common::{
        OperatorCounters, Series, create_instances, delete_instances, delete_namespace,
        histogram_buckets, install_crds, instances_api, secs_flag, series_diff, series_sum,
    },
    observe::{CallPhase, Observers, Phase, Recorder},
    stack::{Binaries, Emulator, Operator, OperatorSpec},
    stats::percentile,
};

/// Settings of the chaos run.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosConfig {
    pub n: usize,
    pub latency_ms: u64,
    pub concurrency: u16,
    pub rate_limit: u32,
    pub upstash_timeout: Duration,
    /// Share of Developer API calls that fail.
    pub fault_rate: f64,
    /// Kills while provisioning and while deleting.
    pub provision_kills: u32,
    pub delete_kills: u32,
    /// A kill comes this long (uniformly random) after the previous (re)start.
    pub kill_after_min: Duration,
    pub kill_after_max: Duration,
    pub seed: u64,
    /// Provision the same N without faults or kills first, for the ratio.
    pub baseline: bool,
    pub extra_args: Vec<String>,
    pub client_parallelism: usize,
    pub timeout: Duration,
}

/// One fault kind and its share of all calls.
#[derive(Debug, Clone, Serialize)]
pub struct FaultShare {
    pub kind: String,
    pub share: f64,
    /// The rule as sent (with its conditional probability).
    pub rule: Value,
    /// How often the emulator applied it.
    pub applied: u64,
}

/// The fault rules for a total failure share `rate`: plain 500 and 503 (not performed), 500
/// after performing the operation, 429 with `Retry-After: 1`, and timeouts. Rules are tried in
/// order and the first whose coin comes up applies, so each rule's probability is its share
/// divided by what the earlier rules left.
pub fn fault_rules(rate: f64) -> Vec<(String, f64, Value)> {
    let parts: [(&str, f64, Value); 5] = [
        ("500", 0.25, json!({"status": 500})),
        ("503", 0.15, json!({"status": 503})),
        (
            "500 after performing",
            0.10,
            json!({"status": 500, "lose_response": true}),
        ),
        ("429 Retry-After: 1", 0.25, json!({"retry_after": 1})),
        ("timeout", 0.25, json!({"timeout": true})),
    ];
    let mut left = 1.0;
    parts
        .into_iter()
        .map(|(kind, weight, mut rule)| {
            let share = rate * weight;
            let probability = (share / left).min(1.0);
            left -= share;
            rule["endpoint"] = json!("*");
            rule["probability"] = json!(probability);
            (kind.to_string(), share, rule)
        })
        .collect()
}

/// What the operator's own metrics say about one phase, summed over its processes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorPhase {
    /// Circuit-breaker openings (`upstash_api_circuit_breaker_openings_total`).
    pub breaker_openings: f64,
    /// Upstash calls the open breaker refused (`upstash_api_requests_total{code="circuit_open"}`).
    pub refused_by_breaker: f64,
    /// Failed reconciles (`controller_runtime_reconcile_errors_total`).
    pub reconcile_errors: f64,
    /// Per-object backoff chosen after each failure
    /// (`upstash_operator_reconcile_backoff_seconds`): `(upper bound, cumulative count)`.
    pub backoff_buckets: Vec<(f64, f64)>,
    /// Sum of the backoffs, in seconds.
    pub backoff_sum_s: f64,
}

impl OperatorPhase {
    fn of(series: &Series) -> Self {
        let refused = series
            .iter()
            .filter(|(k, _)| {
                k.starts_with("upstash_api_requests_total{") && k.contains("code=\"circuit_open\"")
            })
            .map(|(_, v)| v)
            .sum();
        Self {
            breaker_openings: series_sum(series, "upstash_api_circuit_breaker_openings_total"),
            refused_by_breaker: refused,
            reconcile_errors: series_sum(series, "controller_runtime_reconcile_errors_total"),
            backoff_buckets: histogram_buckets(
                series,
                "upstash_operator_reconcile_backoff_seconds",
            ),
            backoff_sum_s: series_sum(series, "upstash_operator_reconcile_backoff_seconds_sum"),
        }
    }

    /// Backoffs observed.
    pub fn backoffs(&self) -> f64 {
        self.backoff_buckets.last().map_or(0.0, |b| b.1)
    }
}

/// The same N provisioned without faults or kills, for the ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub all_ready_s: f64,
    pub ready_p50_s: f64,
    pub ready_max_s: f64,
}

/// What the chaos run found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosResult {
    pub config: ChaosConfig,
    pub operator_flags: Vec<String>,
    pub faults: Vec<FaultShare>,
    pub baseline: Option<Baseline>,
    /// Kill times (seconds after the phase started).
    pub provision_kill_times: Vec<f64>,
    pub delete_kill_times: Vec<f64>,
    pub all_ready_s: f64,
    pub ready_p50_s: f64,
    pub ready_p90_s: f64,
    pub ready_max_s: f64,
    /// The slowest instances: name, creation and Ready (seconds after the first POST).
    pub slowest: Vec<(String, f64, f64)>,
    pub delete_s: f64,
    // While the CacheInstances exist.
    pub databases: usize,
    pub distinct_names: usize,
    pub duplicate_databases: usize,
    pub leaked_databases: usize,
    pub instances_without_database: usize,
    pub secrets_correct: usize,
    pub secrets_wrong: usize,
    pub secrets_missing: usize,
    // After deletion.
    pub databases_after_delete: usize,
    pub instances_after_delete: usize,
    /// Seconds from the deletes to the release of the credentials Secret.
    pub credentials_released_s: Option<f64>,
    pub calls: BTreeMap<String, CallPhase>,
    /// The operator's metrics per phase (`provision`, `delete`).
    pub operator: BTreeMap<String, OperatorPhase>,
    pub operator_starts: u32,
    pub logs: Vec<String>,
    pub problems: Vec<String>,
    /// Every Developer API call of the run (written next to the result).
    #[serde(skip)]
    pub raw_calls: Vec<Value>,
}

/// Kills the operator at random moments until `done` holds or `kills` are spent; restarts it
/// at once each time. Each process's metrics are read just before it is killed. Returns the
/// kill times.
async fn kill_randomly<F: FnMut() -> bool>(
    operator: &mut Operator,
    counters: &mut OperatorCounters,
    rng: &mut StdRng,
    cfg: &ChaosConfig,
    kills: u32,
    mut done: F,
) -> anyhow::Result<Vec<f64>> {
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < kills as usize {
        let after = rng.random_range(cfg.kill_after_min..=cfg.kill_after_max);
        let until = Instant::now() + after;
        while Instant::now() < until {
            if done() {
                return Ok(times);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counters.retire(&operator.series().await);
        operator.kill();
        times.push(started.elapsed().as_secs_f64());
        eprintln!(
            "bench: SIGKILL the operator at {:.1}s (kill {}/{kills})",
            started.elapsed().as_secs_f64(),
            times.len()
        );
        operator.spawn()?;
    }
    Ok(times)
}

/// Provisions `n` instances in a namespace of their own with no fault and no kill, then
/// deletes them: the fault-free time the chaos run is compared with.
async fn baseline(
    cluster: &'static testkit::Cluster,
    client: &Client,
    emulator: &Emulator,
    cfg: &ChaosConfig,
) -> anyhow::Result<Baseline> {
    let n = cfg.n;
    let ns = cluster.namespace(&format!("bench-chaos-base-{n}")).await;
    testkit::operator::write_credentials(client, ns.name()).await;
    let start = Instant::now();
    let recorder = Recorder::start(client.clone(), ns.name(), start, Phase::default()).await?;
    let api = instances_api(client, ns.name());
    create_instances(&api, n, cfg.client_parallelism, 0, &recorder).await?;
    crate::common::wait_until(&format!("{n} Ready (fault-free)"), cfg.timeout, || {
        let ready = recorder.counts().1;
        async move { ready == n }
    })
    .await?;
    let all_ready_s = recorder
        .last_first_ready()
        .unwrap_or_else(|| start.elapsed())
        .as_secs_f64();
    let latencies = recorder.ready_latencies();
    eprintln!("bench: fault-free: all {n} Ready after {all_ready_s:.1}s");
    delete_instances(&api, n, cfg.client_parallelism).await?;
    crate::common::wait_until("the fault-free run deleted", cfg.timeout, || {
        let instances = recorder.counts().0;
        async move { instances == 0 && emulator.databases().await.is_ok_and(|d| d.is_empty()) }
    })
    .await?;
    delete_namespace(client, ns.name(), Duration::from_secs(300)).await;
    drop(ns);
    Ok(Baseline {
        all_ready_s,
        ready_p50_s: percentile(&latencies, 50.0).unwrap_or(f64::NAN),
        ready_max_s: percentile(&latencies, 100.0).unwrap_or(f64::NAN),
    })
}

pub async fn run(
    cluster: &'static testkit::Cluster,
    bins: &Binaries,
    cfg: ChaosConfig,
) -> anyhow::Result<ChaosResult> {
    let n = cfg.n;
    eprintln!("bench: chaos N={n}: {cfg:?}");
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let client = cluster.client().await;
    install_crds(&client).await?;
    let ns = cluster.namespace(&format!("bench-chaos-{n}")).await;
    testkit::operator::write_credentials(&client, ns.name()).await;
    let emulator = Arc::new(Emulator::start(&bins.emulator, cfg.latency_ms).await?);
    let mut operator_flags = vec![
        "--concurrency".to_string(),
        cfg.concurrency.to_string(),
        "--upstash-rate-limit".to_string(),
        cfg.rate_limit.to_string(),
        "--upstash-timeout".to_string(),
        secs_flag(cfg.upstash_timeout),
    ];
    operator_flags.extend(cfg.extra_args.iter().cloned());
    let mut operator = Operator::start(OperatorSpec {
        bin: bins.operator.clone(),
        kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        api_url: emulator.api_url().to_string(),
        ca_file: emulator.ca_file().to_path_buf(),
        namespace: ns.name().to_string(),
        args: operator_flags.clone(),
    })
    .await?;

    let baseline = if cfg.baseline {
        Some(baseline(cluster, &client, &emulator, &cfg).await?)
    } else {
        None
    };
    // The chaos run starts from a fresh operator process.
    operator.stop();
    operator.spawn()?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let mut counters = OperatorCounters::default();

    let mut faults = Vec::new();
    for (kind, share, rule) in fault_rules(cfg.fault_rate) {
        let stored = emulator.add_fault(rule.clone()).await?;
        faults.push((kind, share, rule, stored["id"].clone()));
    }

    let start = Instant::now();
    let phase = Phase::default();
    let recorder = Recorder::start(client.clone(), ns.name(), start, phase.clone()).await?;
    let mut obs = Observers::attach(
        phase.clone(),
        &operator,
        emulator.clone(),
        client.clone(),
        ns.name(),
    );
    obs.calls.keep_raw().await;
    let api = instances_api(&client, ns.name());

    // Provisioning with kills.
    obs.enter(Some("provision")).await?;
    let before = counters.totals(&operator.series().await);
    let t0 = Instant::now();
    let creating = {
        let api = api.clone();
        let recorder = recorder.clone();
        let parallel = cfg.client_parallelism;
        tokio::spawn(async move { create_instances(&api, n, parallel, 0, &recorder).await })
    };
    let rec = recorder.clone();
    let provision_kill_times = kill_randomly(
        &mut operator,
        &mut counters,
        &mut rng,
        &cfg,
        cfg.provision_kills,
        || rec.counts().1 == n,
    )
    .await?;
    creating.await??;
    let mut problems = Vec::new();
    let mut last_report = Instant::now();
    let ready = crate::common::wait_until(&format!("{n} Ready"), cfg.timeout, || {
        let (_, ready, _) = recorder.counts();
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            eprintln!(
                "bench: {ready}/{n} Ready after {:.0}s",
                t0.elapsed().as_secs_f64()
            );
        }
        async move { ready == n }
    })
    .await;
    if let Err(e) = ready {
        problems.push(format!("{e:#}"));
    }
    let all_ready_s = recorder
        .last_first_ready()
        .map_or(t0.elapsed(), |t| t.saturating_sub(t0.duration_since(start)))
        .as_secs_f64();
    let latencies = recorder.ready_latencies();
    let slowest = recorder.slowest(10);
    eprintln!("bench: provisioning over after {all_ready_s:.1}s");
    let after = counters.totals(&operator.series().await);
    let mut operator_phases = BTreeMap::new();
    operator_phases.insert(
        "provision".to_string(),
        OperatorPhase::of(&series_diff(&before, &after)),
    );

    // Checks while the CacheInstances exist.
    obs.enter(Some("check")).await?;
    let check = check_provisioned(&client, ns.name(), &emulator, n).await?;
    problems.extend(check.problems.iter().cloned());

    // Deletion with kills.
    obs.enter(Some("delete")).await?;
    let before = counters.totals(&operator.series().await);
    let td = Instant::now();
    delete_instances(&api, n, cfg.client_parallelism).await?;
    let emu = emulator.clone();
    let rec = recorder.clone();
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let gone = gone.clone();
        let emu = emu.clone();
        tokio::spawn(async move {
            loop {
                let instances = rec.counts().0;
                if instances == 0 && emu.databases().await.is_ok_and(|d| d.is_empty()) {
                    gone.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let g = gone.clone();
    let delete_kill_times = kill_randomly(
        &mut operator,
        &mut counters,
        &mut rng,
        &cfg,
        cfg.delete_kills,
        || g.load(std::sync::atomic::Ordering::Relaxed),
    )
    .await?;
    let finished = tokio::time::timeout(cfg.timeout, watcher).await;
    if finished.is_err() {
        problems.push(format!(
            "CacheInstances or databases still there {:?} after deletion",
            cfg.timeout
        ));
    }
    let delete_s = td.elapsed().as_secs_f64();
    // The credentials Secret must be released by whichever operator process runs now.
    let credentials_released_s =
        crate::common::credentials_released(&client, ns.name(), Duration::from_secs(60))
            .await
            .ok()
            .map(|_| td.elapsed().as_secs_f64());
    if credentials_released_s.is_none() {
        problems.push("the credentials Secret was still claimed 60 s after deletion".into());
    }
    let after = counters.totals(&operator.series().await);
    operator_phases.insert(
        "delete".to_string(),
        OperatorPhase::of(&series_diff(&before, &after)),
    );
    obs.enter(None).await?;
    let databases_after_delete = emulator.databases().await?.len();
    let instances_after_delete = api.list(&ListParams::default()).await?.items.len();
    if databases_after_delete > 0 {
        problems.push(format!("{databases_after_delete} databases leaked"));
    }
    if instances_after_delete > 0 {
        problems.push(format!(
            "{instances_after_delete} CacheInstances never went away"
        ));
    }

    let applied: HashMap<String, u64> = emulator
        .faults()
        .await?
        .into_iter()
        .map(|f| (f["id"].to_string(), f["applied"].as_u64().unwrap_or(0)))
        .collect();
    let faults = faults
        .into_iter()
        .map(|(kind, share, rule, id)| FaultShare {
            applied: applied.get(&id.to_string()).copied().unwrap_or(0),
            kind,
            share,
            rule,
        })
        .collect();
    emulator.clear_faults().await?;
    let logs = operator
        .logs
        .iter()
        .chain(std::iter::once(&emulator.log_path().to_path_buf()))
        .map(|p| p.display().to_string())
        .collect();
    operator.stop();
    let raw_calls = obs.calls.raw().await;
    let result = ChaosResult {
        operator_flags,
        faults,
        baseline,
        provision_kill_times,
        delete_kill_times,
        all_ready_s,
        ready_p50_s: percentile(&latencies, 50.0).unwrap_or(f64::NAN),
        ready_p90_s: percentile(&latencies, 90.0).unwrap_or(f64::NAN),
        ready_max_s: percentile(&latencies, 100.0).unwrap_or(f64::NAN),
        slowest,
        delete_s,
        databases: check.databases,
        distinct_names: check.distinct_names,
        duplicate_databases: check.duplicates,
        leaked_databases: check.leaked,
        instances_without_database: check.without_database,
        secrets_correct: check.secrets_correct,
        secrets_wrong: check.secrets_wrong,
        secrets_missing: check.secrets_missing,
        databases_after_delete,
        instances_after_delete,
        credentials_released_s,
        calls: obs.calls.phases().await,
        operator: operator_phases,
        operator_starts: operator.starts,
        logs,
        problems,
        raw_calls,
        config: cfg,
    };
    delete_namespace(&client, ns.name(), Duration::from_secs(300)).await;
    drop(ns);
    Ok(result)
}

#[derive(Debug, Default)]
struct Check {
    databases: usize,
    distinct_names: usize,
    duplicates: usize,
    leaked: usize,
    without_database: usize,
    secrets_correct: usize,
    secrets_wrong: usize,
    secrets_missing: usize,
    problems: Vec<String>,
}

/// What the connection Secret must hold for database `db` (the default `Env` preset).
fn expected_secret(db: &Value) -> BTreeMap<&'static str, String> {
    let endpoint = db["endpoint"].as_str().unwrap_or_default();
    let password = db["password"].as_str().unwrap_or_default();
    let host = endpoint.split(':').next().unwrap_or_default();
    // The Redis protocol port Upstash reports (6379 for global databases; the emulator's listener).
    let port = db["port"].as_u64().filter(|p| *p != 0).unwrap_or(6379);
    BTreeMap::from([
        ("UPSTASH_REDIS_REST_URL", format!("https://{endpoint}")),
        (
            "UPSTASH_REDIS_REST_TOKEN",
            db["rest_token"].as_str().unwrap_or_default().to_string(),
        ),
        ("REDIS_PASSWORD", password.to_string()),
        (
            "REDIS_URL",
            format!("rediss://default:{password}@{host}:{port}"),
        ),
    ])
}

async fn check_provisioned(
    client: &Client,
    namespace: &str,
    emulator: &Emulator,
    n: usize,
) -> anyhow::Result<Check> {
    let mut check = Check::default();
    let databases = emulator.databases().await?;
    check.databases = databases.len();
    let mut by_name: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for db in &databases {
        by_name
            .entry(db["database_name"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(db);
    }
    check.distinct_names = by_name.len();
    check.duplicates = by_name.values().map(|v| v.len() - 1).sum();
    for (name, dbs) in &by_name {
        if dbs.len() > 1 {
            check
                .problems
                .push(format!("{} databases named {name}", dbs.len()));
        }
    }
    let instances = instances_api(client, namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut wanted_names = std::collections::BTreeSet::new();
    for inst in &instances {
        let name = inst.metadata.name.clone().unwrap_or_default();
        // The operator records the name it derived (from the cluster identity, the namespace
        // and the name) in the status.
        let derived = inst
            .data
            .pointer("/status/databaseName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        wanted_names.insert(derived.clone());
        let id = inst
            .data
            .pointer("/status/databaseId")
            .and_then(Value::as_str);
        let db = by_name.get(&derived).and_then(|v| {
            v.iter()
                .find(|d| Some(d["database_id"].as_str().unwrap_or("")) == id)
        });
        let Some(db) = db else {
            check.without_database += 1;
            check.problems.push(format!(
                "{name}: status.databaseId {id:?} is not the database named {derived}"
            ));
            continue;
        };
        let Some(secret) = secrets.get_opt(&name).await? else {
            check.secrets_missing += 1;
            check.problems.push(format!("{name}: no Secret"));
            continue;
        };
        let data: BTreeMap<String, String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        let wrong: Vec<&str> = expected_secret(db)
            .into_iter()
            .filter(|(k, v)| data.get(*k) != Some(v))
            .map(|(k, _)| k)
            .collect();
        if wrong.is_empty() {
            check.secrets_correct += 1;
        } else {
            check.secrets_wrong += 1;
            // Key names only: never a value.
            check.problems.push(format!(
                "{name}: Secret keys differ from the database: {wrong:?}"
            ));
        }
    }
    check.leaked = databases
        .iter()
        .filter(|d| !wanted_names.contains(d["database_name"].as_str().unwrap_or_default()))
        .count();
    if check.leaked > 0 {
        check.problems.push(format!(
            "{} databases belong to no CacheInstance",
            check.leaked
        ));
    }
    if instances.len() != n {
        check
            .problems
            .push(format!("{} CacheInstances instead of {n}", instances.len()));
    }
    if check.databases != n {
        check
            .problems
            .push(format!("{} databases instead of {n}", check.databases));
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_shares_add_up() {
        let rules = fault_rules(0.2);
        let total: f64 = rules.iter().map(|(_, s, _)| s).sum();
        assert!((total - 0.2).abs() < 1e-9);
        // The chance that some rule applies equals the total share.
        let mut pass = 1.0;
        for (_, _, rule) in &rules {
            pass *= 1.0 - rule["probability"].as_f64().unwrap();
        }
        assert!((1.0 - pass - 0.2).abs() < 1e-9);
        assert!(rules.iter().all(|(_, _, r)| r["endpoint"] == "*"));
    }

    #[test]
    fn redis_url_takes_the_host_of_the_endpoint_and_the_database_port() {
        let db = json!({"endpoint": "localhost:8443", "port": 36379, "password": "p", "rest_token": "t"});
        let s = expected_secret(&db);
        assert_eq!(s["UPSTASH_REDIS_REST_URL"], "https://localhost:8443");
        assert_eq!(s["REDIS_URL"], "rediss://default:p@localhost:36379");
        let upstash =
            json!({"endpoint": "eu1-fine-fox-1.upstash.io", "port": 6379, "password": "p"});
        assert_eq!(
            expected_secret(&upstash)["REDIS_URL"],
            "rediss://default:p@eu1-fine-fox-1.upstash.io:6379"
        );
    }
}
