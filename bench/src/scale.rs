//! The scale benchmark: N CacheInstances applied at once against the release-built operator,
//! the emulator (with added latency) and the real control plane, through these phases:
//!
//! 1. `converge`: from the first POST until every instance is Ready;
//! 2. `settle`: until the follow-up work is done (every instance has the monitor's `Healthy`
//!    condition and nothing changed for 10 s);
//! 3. `idle`: 15 s of nothing, for the idle RSS;
//! 4. `restart`: the operator restarted (SIGTERM) with a short `--resync-interval`, until its
//!    first pass over every instance is over;
//! 5. `steady`: several resync intervals, where the target is zero mutating Upstash calls and
//!    zero Kubernetes writes;
//! 6. `delete`: every CacheInstance deleted, until none is left and the emulator has no
//!    database.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    common::{
        create_instances, delete_instances, install_crds, instances_api, metric_sum, secs_flag,
        wait_until,
    },
    lower_bound::{Bound, BoundInputs, lower_bound},
    observe::{CallPhase, ChangePhase, Observers, Phase, ProcPhase, Recorder, TreePhase},
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
    /// Extra operator flags.
    pub extra_args: Vec<String>,
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
    pub ready_p99_s: f64,
    pub ready_max_s: f64,
    /// Time the bench needed to POST all instances.
    pub apply_s: f64,
    pub delete_s: f64,
    pub delete_bound: Bound,
    pub delete_ratio: f64,
    /// Reconciles (controller_runtime_reconcile_total) until settled, per instance.
    pub reconciles_per_instance: f64,
    pub steady_window_s: f64,
    pub calls: BTreeMap<String, CallPhase>,
    pub changes: BTreeMap<String, ChangePhase>,
    pub requests: BTreeMap<String, Vec<RequestRow>>,
    pub operator: BTreeMap<String, ProcPhase>,
    /// Phase → the emulator's memory with its Redis engines.
    pub emulator: BTreeMap<String, TreePhase>,
    /// Phase → (emulator CPU s with its engines, control plane CPU s).
    pub other_cpu: BTreeMap<String, (f64, f64)>,
    pub durations: BTreeMap<String, f64>,
    pub databases_left: usize,
    pub instances_left: usize,
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
    let mut obs = Observers::attach(phase.clone(), &operator, emulator.clone(), client.clone());
    let api = instances_api(&client, ns.name());

    // 1. Converge.
    obs.enter(Some("converge")).await?;
    let t0 = Instant::now();
    create_instances(&api, n, cfg.client_parallelism, &recorder).await?;
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
            let (_, _, healthy) = recorder.counts();
            let quiet = recorder.quiet_for() >= Duration::from_secs(10);
            async move { healthy == n && quiet }
        },
    )
    .await;
    if let Err(e) = settled {
        eprintln!("bench: {e:#} (continuing)");
    }
    let reconciles = operator
        .metrics()
        .await
        .map(|m| metric_sum(&m, "controller_runtime_reconcile_total"))
        .unwrap_or(f64::NAN);

    // 3. Idle.
    obs.enter(Some("idle")).await?;
    tokio::time::sleep(Duration::from_secs(15)).await;

    // 4. Restart with a short resync, and let the first pass finish.
    obs.enter(Some("restart")).await?;
    operator.stop();
    operator.set_args(steady_flags.clone());
    operator.spawn()?;
    operator.wait_ready(Duration::from_secs(120)).await?;
    let resync = cfg.steady_resync.as_secs_f64();
    // One read per instance from the reconciler and about two from the monitor's first
    // samples, at the rate limit; at least one resync interval.
    let first_pass = (3.0 * n as f64 / f64::from(cfg.rate_limit)).max(resync) * 1.1 + 5.0;
    tokio::time::sleep(Duration::from_secs_f64(first_pass)).await;

    // 5. Steady state.
    obs.enter(Some("steady")).await?;
    let window = Duration::from_secs_f64(resync * f64::from(cfg.steady_intervals));
    tokio::time::sleep(window).await;
    if !operator.running() {
        bail!("the operator exited during the steady state");
    }

    // 6. Delete.
    obs.enter(Some("delete")).await?;
    let td = Instant::now();
    delete_instances(&api, n, cfg.client_parallelism).await?;
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
    obs.enter(None).await?;

    let bound_inputs = cfg.bound_inputs(1);
    let bound = lower_bound(bound_inputs);
    let delete_bound = lower_bound(cfg.bound_inputs(1));
    let databases_left = emulator.databases().await?.len();
    let instances_left = recorder.counts().0;
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
        ready_p99_s: percentile(&latencies, 99.0).context("no latencies")?,
        ready_max_s: percentile(&latencies, 100.0).context("no latencies")?,
        apply_s,
        delete_s,
        delete_bound,
        delete_ratio: delete_s / delete_bound.bound_s,
        reconciles_per_instance: reconciles / n as f64,
        steady_window_s: window.as_secs_f64(),
        calls: obs.calls.phases().await,
        changes: recorder.phases(),
        requests: obs
            .requests
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
            .collect(),
        operator: obs.operator.phases(),
        emulator: obs.emulator.phases(),
        other_cpu: obs.other_cpu.clone(),
        durations: obs.durations.clone(),
        databases_left,
        instances_left,
        logs,
        config: cfg,
    };
    // The namespace is deleted when `ns` drops.
    drop(ns);
    Ok(result)
}
