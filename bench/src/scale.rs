//! The scale benchmark: N CacheInstances applied at once against the release-built operator,
//! the emulator (with added latency) and the real control plane, through these phases:
//!
//! 0. `baseline`: 3 s of the operator with no instance, for its base memory;
//! 1. `converge`: from the first POST until every instance is Ready;
//! 2. `settle`: until the follow-up work is done (every instance has the monitor's `Healthy`
//!    condition and nothing changed for 10 s);
//! 3. `idle`: 15 s of nothing, for the idle RSS;
//! 4. `reconfigure`: the operator restarted (SIGTERM) with a short `--resync-interval`, until
//!    its first pass over every instance is over (every database read once);
//! 5. `steady`: several resync intervals, where the target is zero mutating Upstash calls and
//!    zero Kubernetes writes;
//! 6. `restart`: the operator restarted (SIGTERM) with the same flags, until its first pass is
//!    over; the Upstash calls of its first minute and of the whole pass;
//! 7. `provision`: restarted once more, and new instances applied at once, until they are
//!    Ready;
//! 8. `delete`: every CacheInstance deleted, until none is left and the emulator has no
//!    database;
//! 9. `collect`: until the garbage collector has removed the connection Secrets.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    common::{
        OperatorCounters, create_instance_range, create_instances, create_policies,
        delete_instances, delete_namespace, install_crds, instance_name, instances_api, secs_flag,
        series_sum, wait_until,
    },
    lower_bound::{Bound, BoundInputs, lower_bound},
    observe::{CallPhase, ChangePhase, EventPhase, Observers, Phase, Processes, Recorder},
    stack::{Binaries, Emulator, Operator, OperatorSpec},
    stats::percentile,
};

/// Settings of one scale run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleConfig {
    pub n: usize,
    pub latency_ms: u64,
    pub concurrency: u16,
    pub rate_limit: u32,
    /// Resync interval during convergence (the operator's default, 10m).
    pub converge_resync: Duration,
    /// Resync interval of the steady-state phase.
    pub steady_resync: Duration,
    pub steady_intervals: u32,
    /// New instances applied right after a restart (phase 7).
    pub provision_during_restart: usize,
    /// Extra operator flags.
    pub extra_args: Vec<String>,
    /// CachePolicies, each selecting an equal share of the instances (0: none, the instances
    /// get the default thresholds).
    pub policies: usize,
    /// POSTs (and DELETEs) the bench sends at a time.
    pub client_parallelism: usize,
    pub ready_timeout: Duration,
}

impl ScaleConfig {
    fn operator_args(&self, resync: Duration) -> Vec<String> {
        let mut args = vec![
            "--concurrency".to_string(),
            self.concurrency.to_string(),
            "--upstash-rate-limit".to_string(),
            self.rate_limit.to_string(),
            "--resync-interval".to_string(),
            secs_flag(resync),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The convergence bound for `calls_per_instance` Upstash calls on each instance's critical
    /// path (`create` alone for a new instance).
    pub fn bound_inputs(&self, calls_per_instance: u64) -> BoundInputs {
        BoundInputs {
            instances: self.n as u64,
            calls_per_instance,
            latency_s: self.latency_ms as f64 / 1000.0,
            concurrency: u64::from(self.concurrency),
            rate_per_s: f64::from(self.rate_limit),
            // The operator's token bucket allows twice the rate as a burst.
            burst: u64::from(self.rate_limit) * 2,
        }
    }
}

/// One API server request row: verb, resource, count.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRow {
    pub verb: String,
    pub resource: String,
    pub count: f64,
}

/// Request rows per phase, from the per-phase counts of the observers.
pub fn request_rows(
    requests: &BTreeMap<String, crate::observe::RequestCounts>,
) -> BTreeMap<String, Vec<RequestRow>> {
    requests
        .iter()
        .map(|(phase, counts)| {
            (
                phase.clone(),
                counts
                    .iter()
                    .map(|((verb, resource), count)| RequestRow {
                        verb: verb.clone(),
                        resource: resource.clone(),
                        count: *count,
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Everything a scale run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub config: ScaleConfig,
    pub converge_flags: Vec<String>,
    pub steady_flags: Vec<String>,
    pub bound_inputs: BoundInputs,
    pub bound: Bound,
    /// First POST until all are Ready.
    pub all_ready_s: f64,
    pub ratio: f64,
    /// Creation (POST answered) to first seen Ready, per instance.
    pub ready_p50_s: f64,
    pub ready_p90_s: f64,
    pub ready_p99_s: f64,
    pub ready_max_s: f64,
    /// Time the bench needed to POST all instances.
    pub apply_s: f64,
    /// From the restart with the same flags until every database was read once (the first
    /// pass).
    pub restart_first_pass_s: f64,
    /// From the restart with the steady-state flags until every database was read once.
    pub reconfigure_first_pass_s: f64,
    /// Upstash calls of the first minute after the restart with the same flags.
    pub restart_first_minute: CallPhase,
    /// Upstash calls per minute over that restart's first pass, and in steady state.
    pub restart_calls_per_min: f64,
    pub steady_calls_per_min: f64,
    /// New instances applied right after a restart: all Ready after, and creation → Ready.
    pub provision_all_ready_s: f64,
    pub provision_p50_s: f64,
    pub provision_max_s: f64,
    pub delete_s: f64,
    pub delete_bound: Bound,
    pub delete_ratio: f64,
    /// From the first DELETE until the garbage collector removed every Secret (`None`: some
    /// were still there after the wait).
    pub secrets_gone_s: Option<f64>,
    /// Reconciles (controller_runtime_reconcile_total) until settled, per instance.
    pub reconciles_per_instance: f64,
    /// Circuit-breaker openings over the whole run (both operator processes).
    pub breaker_openings: f64,
    /// Failed reconciles over the whole run.
    pub reconcile_errors: f64,
    pub steady_window_s: f64,
    pub calls: BTreeMap<String, CallPhase>,
    pub changes: BTreeMap<String, ChangePhase>,
    pub events: BTreeMap<String, EventPhase>,
    pub requests: BTreeMap<String, Vec<RequestRow>>,
    /// Memory and CPU per phase of the operator, the emulator and the control plane.
    pub processes: Processes,
    pub durations: BTreeMap<String, f64>,
    pub databases_left: usize,
    pub instances_left: usize,
    pub secrets_left: usize,
    /// Seconds from the deletes to the release of the credentials Secret (its in-use
    /// finalizer removed); `None`: still claimed a minute after the Secrets were collected.
    pub credentials_released_s: Option<f64>,
    pub logs: Vec<String>,
}

pub async fn run(
    cluster: &'static testkit::Cluster,
    bins: &Binaries,
    cfg: ScaleConfig,
) -> anyhow::Result<ScaleResult> {
    let n = cfg.n;
    eprintln!("bench: scale N={n}: {cfg:?}");
    let client = cluster.client().await;
    install_crds(&client).await?;
    let ns = cluster.namespace(&format!("bench-scale-{n}")).await;
    testkit::operator::write_credentials(&client, ns.name()).await;
    create_policies(&client, ns.name(), cfg.policies).await?;
    let emulator = Arc::new(Emulator::start(&bins.emulator, cfg.latency_ms).await?);
    let converge_flags = cfg.operator_args(cfg.converge_resync);
    let steady_flags = cfg.operator_args(cfg.steady_resync);
    let mut operator = Operator::start(OperatorSpec {
        bin: bins.operator.clone(),
        kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        api_url: emulator.api_url().to_string(),
        ca_file: emulator.ca_file().to_path_buf(),
        namespace: ns.name().to_string(),
        args: converge_flags.clone(),
    })
    .await?;

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
    let api = instances_api(&client, ns.name());
    let mut counters = OperatorCounters::default();

    // 0. The operator with nothing to do, for its base memory.
    obs.enter(Some("baseline")).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Converge.
    obs.enter(Some("converge")).await?;
    let t0 = Instant::now();
    create_instances(&api, n, cfg.client_parallelism, cfg.policies, &recorder).await?;
    let apply_s = t0.elapsed().as_secs_f64();
    eprintln!("bench: {n} CacheInstances created in {apply_s:.1}s");
    let mut last_report = Instant::now();
    wait_until(&format!("{n} Ready"), cfg.ready_timeout, || {
        let (_, ready, _) = recorder.counts();
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "bench: {ready}/{n} Ready after {:.0}s",
                t0.elapsed().as_secs_f64()
            );
        }
        async move { ready == n }
    })
    .await?;
    let all_ready_s = recorder
        .last_first_ready()
        .map_or(t0.elapsed(), |t| t.saturating_sub(t0.duration_since(start)))
        .as_secs_f64();
    eprintln!("bench: all {n} Ready after {all_ready_s:.1}s");
    let latencies = recorder.ready_latencies();

    // 2. Settle.
    obs.enter(Some("settle")).await?;
    let settle_timeout = Duration::from_secs(240) + Duration::from_secs((n / 5) as u64);
    let settled = wait_until(
        "the monitor's first samples and quiet",
        settle_timeout,
        || {
            // Every database sampled once by the monitor (which writes nothing while an
            // instance is healthy), and no object changed for 10 s.
            let quiet = recorder.quiet_for() >= Duration::from_secs(10);
            let calls = obs.calls.clone();
            async move { quiet && calls.databases_sampled().await >= n }
        },
    )
    .await;
    if let Err(e) = settled {
        eprintln!("bench: {e:#} (continuing)");
    }
    let first = operator.series().await;
    let reconciles = series_sum(&first, "controller_runtime_reconcile_total");

    // 3. Idle.
    obs.enter(Some("idle")).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;

    // 4. Restart with the steady-state flags (a shorter resync), and let the first pass
    //    finish: every database read once (by the reconciler, or by the monitor's first sample).
    obs.enter(Some("reconfigure")).await?;
    counters.retire(&operator.series().await);
    let reconfigure_first_pass_s = restart_and_read_all(
        &mut operator,
        &steady_flags,
        &obs,
        "reconfigure",
        None,
        &cfg,
    )
    .await?;
    // What the pass started (status writes, monitor samples) finishes.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 5. Steady state.
    obs.enter(Some("steady")).await?;
    let resync = cfg.steady_resync.as_secs_f64();
    let window = Duration::from_secs_f64(resync * f64::from(cfg.steady_intervals));
    tokio::time::sleep(window).await;
    if !operator.running() {
        bail!("the operator exited during the steady state");
    }

    // 6. Restart with the same flags (an upgrade, a node drain): the first pass, and the
    //    Upstash calls of its first minute.
    let databases: std::collections::HashSet<String> = emulator
        .databases()
        .await?
        .iter()
        .filter_map(|d| d["database_id"].as_str().map(str::to_string))
        .collect();
    obs.enter(Some("restart")).await?;
    counters.retire(&operator.series().await);
    let tr = Instant::now();
    let calls = obs.calls.clone();
    let first_minute = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        calls
            .phases()
            .await
            .get("restart")
            .cloned()
            .unwrap_or_default()
    });
    let restart_first_pass_s = restart_and_read_all(
        &mut operator,
        &steady_flags,
        &obs,
        "restart",
        Some(&databases),
        &cfg,
    )
    .await?;
    let restart_first_minute = first_minute.await?;
    let restart_calls = obs
        .calls
        .phases()
        .await
        .get("restart")
        .cloned()
        .unwrap_or_default();
    let restart_calls_per_min = restart_calls.by_endpoint.values().sum::<u64>() as f64
        / tr.elapsed().as_secs_f64().max(1.0)
        * 60.0;

    // 7. Provisioning during a restart: the operator restarted once more and, as soon as it
    //    answers, new instances applied; until they are Ready.
    obs.enter(Some("provision")).await?;
    counters.retire(&operator.series().await);
    operator.stop();
    operator.spawn()?;
    operator.wait_ready(Duration::from_secs(120)).await?;
    let extra = cfg.provision_during_restart;
    let tp = Instant::now();
    create_instance_range(
        &api,
        n..n + extra,
        cfg.client_parallelism,
        cfg.policies,
        &recorder,
    )
    .await?;
    let extra_names: Vec<String> = (n..n + extra).map(instance_name).collect();
    wait_until(
        &format!("{extra} new instances Ready"),
        cfg.ready_timeout,
        || {
            let ready = recorder.ready_latencies_of(&extra_names).len();
            async move { ready == extra }
        },
    )
    .await?;
    let provision_all_ready_s = tp.elapsed().as_secs_f64();
    let provision_latencies = recorder.ready_latencies_of(&extra_names);
    eprintln!("bench: {extra} new instances Ready {provision_all_ready_s:.1}s after the restart");

    // 8. Delete.
    obs.enter(Some("delete")).await?;
    let td = Instant::now();
    delete_instances(
        &api,
        n + cfg.provision_during_restart,
        cfg.client_parallelism,
    )
    .await?;
    let emu = emulator.clone();
    let rec = recorder.clone();
    wait_until(
        "every CacheInstance and database gone",
        cfg.ready_timeout,
        || {
            let emu = emu.clone();
            let (instances, _, _) = rec.counts();
            async move { instances == 0 && emu.databases().await.is_ok_and(|d| d.is_empty()) }
        },
    )
    .await?;
    let delete_s = td.elapsed().as_secs_f64();
    eprintln!("bench: all {n} deleted after {delete_s:.1}s");
    obs.enter(Some("collect")).await?;
    // The garbage collector removes the Secrets (kube-controller-manager at its default
    // 20 requests/s).
    let gc_timeout = Duration::from_secs(120 + (n / 10) as u64);
    let secrets_gone = wait_until("the Secrets to be collected", gc_timeout, || {
        let left = recorder.secrets();
        async move { left == 0 }
    })
    .await;
    let secrets_gone_s = secrets_gone.is_ok().then(|| td.elapsed().as_secs_f64());
    let credentials_released_s =
        crate::common::credentials_released(&client, ns.name(), Duration::from_secs(60))
            .await
            .ok()
            .map(|_| td.elapsed().as_secs_f64());
    obs.enter(None).await?;

    let bound_inputs = cfg.bound_inputs(1);
    let bound = lower_bound(bound_inputs);
    let delete_bound = lower_bound(cfg.bound_inputs(1));
    let databases_left = emulator.databases().await?.len();
    let instances_left = recorder.counts().0;
    let secrets_left = recorder.secrets();
    let totals = counters.totals(&operator.series().await);
    let logs = operator
        .logs
        .iter()
        .chain(std::iter::once(&emulator.log_path().to_path_buf()))
        .map(|p| p.display().to_string())
        .collect();
    operator.stop();
    let result = ScaleResult {
        converge_flags,
        steady_flags,
        bound_inputs,
        bound,
        all_ready_s,
        ratio: all_ready_s / bound.bound_s,
        ready_p50_s: percentile(&latencies, 50.0).context("no latencies")?,
        ready_p90_s: percentile(&latencies, 90.0).context("no latencies")?,
        ready_p99_s: percentile(&latencies, 99.0).context("no latencies")?,
        ready_max_s: percentile(&latencies, 100.0).context("no latencies")?,
        apply_s,
        restart_first_pass_s,
        reconfigure_first_pass_s,
        restart_first_minute,
        restart_calls_per_min,
        steady_calls_per_min: obs
            .calls
            .phases()
            .await
            .get("steady")
            .map_or(0.0, |c| c.by_endpoint.values().sum::<u64>() as f64)
            / window.as_secs_f64()
            * 60.0,
        provision_all_ready_s,
        provision_p50_s: percentile(&provision_latencies, 50.0).unwrap_or(f64::NAN),
        provision_max_s: percentile(&provision_latencies, 100.0).unwrap_or(f64::NAN),
        delete_s,
        delete_bound,
        delete_ratio: delete_s / delete_bound.bound_s,
        secrets_gone_s,
        reconciles_per_instance: reconciles / n as f64,
        breaker_openings: series_sum(&totals, "upstash_api_circuit_breaker_openings_total"),
        reconcile_errors: series_sum(&totals, "controller_runtime_reconcile_errors_total"),
        steady_window_s: window.as_secs_f64(),
        calls: obs.calls.phases().await,
        changes: recorder.phases(),
        events: obs.events.phases(),
        requests: request_rows(&obs.requests),
        processes: obs.processes(),
        durations: obs.durations.clone(),
        databases_left,
        instances_left,
        secrets_left,
        credentials_released_s,
        logs,
        config: cfg,
    };
    // Delete the namespace and wait, so that the next run does not share the control plane
    // with its cleanup.
    delete_namespace(&client, ns.name(), Duration::from_secs(600)).await;
    drop(ns);
    Ok(result)
}

/// Restarts the operator (SIGTERM) with `flags` and waits until it has read every database
/// (every one of `only`, when given) in `phase`: its first pass. Returns its duration.
async fn restart_and_read_all(
    operator: &mut Operator,
    flags: &[String],
    obs: &Observers,
    phase: &str,
    only: Option<&std::collections::HashSet<String>>,
    cfg: &ScaleConfig,
) -> anyhow::Result<f64> {
    let n = only.map_or(cfg.n, |ids| ids.len());
    let tr = Instant::now();
    operator.stop();
    operator.set_args(flags.to_vec());
    operator.spawn()?;
    operator.wait_ready(Duration::from_secs(120)).await?;
    let resync = cfg.steady_resync.as_secs_f64();
    // One read per instance from the reconciler and about two from the monitor's first
    // samples, at the rate limit; or, spread by when each was last read, a resync interval.
    let estimate = (3.0 * n as f64 / f64::from(cfg.rate_limit)).max(resync);
    let first_pass_timeout = Duration::from_secs_f64(2.0 * estimate + 120.0);
    let mut last_report = Instant::now();
    let calls = obs.calls.clone();
    let first_pass = wait_until(
        &format!("the first pass after the restart ({phase})"),
        first_pass_timeout,
        || {
            let calls = calls.clone();
            let report = last_report.elapsed() > Duration::from_secs(15);
            if report {
                last_report = Instant::now();
            }
            async move {
                let read = match only {
                    Some(ids) => calls.databases_read_of(phase, ids).await,
                    None => calls.databases_read(phase).await,
                };
                if report {
                    eprintln!("bench: {phase}: {read}/{n} databases read");
                }
                read >= n
            }
        },
    )
    .await;
    if let Err(e) = first_pass {
        eprintln!("bench: {e:#} (continuing)");
    }
    let first_pass_s = tr.elapsed().as_secs_f64();
    eprintln!("bench: first pass after the restart ({phase}) over after {first_pass_s:.1}s");
    Ok(first_pass_s)
}
