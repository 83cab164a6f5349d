//! Monitoring: samples every provisioned CacheInstance on its policy's interval (jittered, under
//! the global Upstash rate limit), derives hit rate, memory, errors, latency and cost, and turns
//! threshold crossings into Events, `status.alerts`, a `Healthy` condition and metrics.
//!
//! Status is written only when the set of firing alerts changes; the numbers themselves go to
//! Prometheus.

pub mod figures;
pub mod probe;
pub mod thresholds;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{events::EventType, reflector::ObjectRef, reflector::Store},
};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use self::{
    figures::{Figures, ProbeWindow},
    probe::{Outcome, Prober},
    thresholds::{AlertKind, AlertState, Direction, Limit, Thresholds, Transition},
};
use crate::{
    controller::{Context, conditions},
    crd::{CacheInstance, CachePolicy, FiringAlert},
    guardrails::{self, Selection},
    metrics::InstanceLabels,
    upstash::{Database, UpstashApi, breaker::BreakerState},
};

/// Field manager of the monitor's status writes (alerts and the `Healthy` condition).
pub const MONITOR_MANAGER: &str = "upstash-operator/monitor";

/// How often the scheduler looks for due instances.
const TICK: Duration = Duration::from_millis(250);
/// How often the cached database object (limits, data-plane token) is refreshed.
const DB_REFRESH: Duration = Duration::from_secs(600);
/// Samples taken at the same time, at most.
const PARALLEL_SAMPLES: usize = 16;

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// Apply the guide's thresholds to instances no policy selects.
    pub default_thresholds: bool,
    /// Upstash requests per second the monitor may use on average (a share of the operator's
    /// rate limit, so that provisioning and drift checks are never starved). When the
    /// instances' intervals would need more, every interval is stretched by the same factor.
    pub request_budget_per_s: f64,
}

/// Share of the operator's Upstash rate limit the monitor plans for.
pub const REQUEST_BUDGET_SHARE: f64 = 0.5;

/// The factor intervals are stretched by so that `demand` (samples per second at the
/// configured intervals, one Upstash call each) fits `budget` requests per second.
pub fn interval_stretch(demand_per_s: f64, budget_per_s: f64) -> f64 {
    if budget_per_s <= 0.0 || !demand_per_s.is_finite() {
        return 1.0;
    }
    (demand_per_s / budget_per_s).max(1.0)
}

/// Per-instance monitoring state.
#[derive(Default)]
struct InstanceState {
    next_due: Option<Instant>,
    in_flight: bool,
    database_id: String,
    db: Option<(Database, Instant)>,
    /// Whether `db` was ever filled (afterwards, refreshes read Upstash themselves).
    had_db: bool,
    alerts: BTreeMap<AlertKind, AlertState>,
    probe: ProbeWindow,
    report: Option<InstanceReport>,
}

/// One instance on the `/status` page.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub namespace: String,
    pub name: String,
    pub database_id: String,
    pub policy: Option<String>,
    pub hits: f64,
    pub misses: f64,
    pub hit_rate: Option<f64>,
    pub memory_used_bytes: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    pub memory_percent: Option<f64>,
    pub error_rate_percent: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub consecutive_connection_failures: u32,
    pub monthly_cost_usd: Option<f64>,
    pub budget_usd: Option<f64>,
    pub alerts: Vec<String>,
    pub last_sample: String,
}

/// What an evaluation produced: firing alerts, transitions with their notes, the figures and
/// the instance's metric labels.
type Evaluation = (
    Vec<AlertKind>,
    Vec<(AlertKind, Transition, String)>,
    Figures,
    InstanceLabels,
);

/// The monitor.
pub struct Monitor {
    ctx: Arc<Context>,
    instances: Vec<Store<CacheInstance>>,
    settings: MonitorSettings,
    prober: Prober,
    states: Mutex<HashMap<ObjectRef<CacheInstance>, InstanceState>>,
    permits: Arc<Semaphore>,
    started: Instant,
    /// The current [`interval_stretch`], as f64 bits.
    stretch: std::sync::atomic::AtomicU64,
}

impl Monitor {
    pub fn new(
        ctx: Arc<Context>,
        instances: Vec<Store<CacheInstance>>,
        settings: MonitorSettings,
        prober: Prober,
    ) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            instances,
            settings,
            prober,
            states: Mutex::default(),
            permits: Arc::new(Semaphore::new(PARALLEL_SAMPLES)),
            started: Instant::now(),
            stretch: std::sync::atomic::AtomicU64::new(1f64.to_bits()),
        })
    }

    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut last_policy_pass = Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            self.schedule();
            if last_policy_pass.elapsed() >= Duration::from_secs(2) {
                last_policy_pass = Instant::now();
                self.update_policy_statuses().await;
            }
        }
    }

    fn all_instances(&self) -> Vec<Arc<CacheInstance>> {
        self.instances.iter().flat_map(|s| s.state()).collect()
    }

    /// Starts a sample for every instance that is due.
    fn schedule(self: &Arc<Self>) {
        let policies = self.ctx.policies.all();
        let instances = self.all_instances();
        let stretch = self.stretch();
        let mut demand = 0.0;
        let mut live = HashSet::new();
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        for instance in instances {
            let key = ObjectRef::from_obj(instance.as_ref());
            live.insert(key.clone());
            let Some(id) = instance.status.as_ref().and_then(|s| s.database_id.clone()) else {
                continue;
            };
            if instance.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let selection = guardrails::select(&instance, policies.iter().map(|p| p.as_ref()));
            let Some(thresholds) = self.thresholds_for(&selection) else {
                tracing::trace!(object = %key, "not monitored: no policy applies");
                continue;
            };
            demand += 1.0 / thresholds.interval.as_secs_f64().max(1.0);
            let interval = thresholds.interval.mul_f64(stretch);
            let state = states
                .entry(key.clone())
                .or_insert_with(|| restore(&instance));
            if state.database_id != id {
                // A new database: forget what was learnt about the old one.
                *state = restore(&instance);
                state.database_id = id.clone();
            }
            let now = Instant::now();
            let due = *state.next_due.get_or_insert_with(|| {
                // Spread the first samples over one interval.
                now + crate::controller::jitter(interval / 2, 1.0)
            });
            if state.in_flight || now < due {
                continue;
            }
            state.in_flight = true;
            tracing::debug!(object = %key, policy = ?selection.policy().map(|p| p.name_any()), "sampling");
            state.next_due = Some(now + crate::controller::jitter(interval, 0.1));
            let this = self.clone();
            let permits = self.permits.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                this.sample(instance, key, selection, thresholds).await;
            });
        }
        states.retain(|k, _| live.contains(k));
        drop(states);
        let next = interval_stretch(demand, self.settings.request_budget_per_s);
        if (next - stretch).abs() > 0.01 {
            if next > 1.0 {
                tracing::info!(
                    stretch = format!("{next:.2}"),
                    samples_per_s = format!("{demand:.1}"),
                    budget_per_s = self.settings.request_budget_per_s,
                    "monitoring intervals stretched to stay within the Upstash request budget"
                );
            }
            self.stretch
                .store(next.to_bits(), std::sync::atomic::Ordering::Relaxed);
            self.ctx.metrics.monitor_interval_stretch.set(next);
        }
    }

    /// The factor evaluation intervals are currently stretched by.
    pub fn stretch(&self) -> f64 {
        f64::from_bits(self.stretch.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn thresholds_for(&self, selection: &Selection) -> Option<Thresholds> {
        match selection {
            Selection::One(p) => Some(Thresholds::from_policy(p)),
            Selection::None if self.settings.default_thresholds => Some(Thresholds::defaults()),
            _ => None,
        }
    }

    async fn sample(
        &self,
        instance: Arc<CacheInstance>,
        key: ObjectRef<CacheInstance>,
        selection: Selection,
        thresholds: Thresholds,
    ) {
        let result = self
            .sample_inner(&instance, &key, &selection, &thresholds)
            .await;
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(&key) {
            state.in_flight = false;
        }
        drop(states);
        if let Err(e) = result {
            tracing::debug!(object = %key, err = %e, "sample failed");
        }
    }

    async fn sample_inner(
        &self,
        instance: &CacheInstance,
        key: &ObjectRef<CacheInstance>,
        selection: &Selection,
        thresholds: &Thresholds,
    ) -> crate::Result<()> {
        let id = instance
            .status
            .as_ref()
            .and_then(|s| s.database_id.clone())
            .unwrap_or_default();
        let upstash = match self
            .ctx
            .credentials
            .bind(&self.ctx.upstash, instance)
            .await?
        {
            crate::credentials::Binding::Bound(bound) => bound.api,
            crate::credentials::Binding::AccountChanged(why) => {
                // The reconciler reports this as `AccountChanged`; sampling with the wrong
                // account would only raise connection alerts on top.
                tracing::debug!(object = %key, reason = %why, "not sampled");
                return Ok(());
            }
        };

        let (cached, had_db) = {
            let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            let state = states.get(key);
            (
                state
                    .and_then(|s| s.db.clone())
                    .filter(|(db, at)| db.database_id == id && at.elapsed() < DB_REFRESH)
                    .map(|(db, _)| db),
                state.is_some_and(|s| s.had_db),
            )
        };
        let db = match cached {
            Some(db) => Some(db),
            // The first view of a database comes from the reconciler's last read when that is
            // recent: a new database costs no extra call.
            None => match self
                .ctx
                .recent
                .peek(instance, &id)
                .filter(|(_, age)| !had_db && *age < DB_REFRESH)
            {
                Some((db, age)) => {
                    let read_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                    let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(state) = states.get_mut(key) {
                        state.db = Some((db.clone(), read_at));
                        state.had_db = true;
                    }
                    Some(db)
                }
                None => self.fetch_db(&upstash, key, &id).await,
            },
        };
        let stats = match upstash.stats(&id).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(object = %key, err = %e, "stats unavailable");
                None
            }
        };

        // Probe the data plane.
        let mut info = None;
        let probe_round = match db.as_ref().and_then(data_plane) {
            Some((url, token)) => {
                let outcomes = self.prober.ping(&url, &token).await;
                if outcomes.contains(&Outcome::Unauthorized) {
                    // Rotated since the cache was filled: refresh and judge next time.
                    self.forget_db(key);
                    None
                } else {
                    if outcomes.iter().any(|o| matches!(o, Outcome::Ok(_))) {
                        info = self.prober.info(&url, &token).await;
                    }
                    Some(outcomes)
                }
            }
            None => None,
        };

        let now = self.now();
        let Some((firing, transitions, figures, labels)) = self.evaluate(
            instance,
            key,
            &id,
            selection,
            thresholds,
            db.as_ref(),
            stats.as_ref(),
            probe_round,
            info,
            now,
        ) else {
            return Ok(());
        };
        self.export_metrics(&labels, &figures, firing.len());
        for (kind, transition, note) in &transitions {
            match transition {
                Transition::Fired => {
                    self.ctx
                        .publish(instance, EventType::Warning, kind.as_str(), "Monitor", note)
                }
                Transition::Resolved => self.ctx.publish(
                    instance,
                    EventType::Normal,
                    kind.resolved_reason(),
                    "Monitor",
                    note,
                ),
            }
        }
        self.write_status(instance, &firing, &transitions).await
    }

    /// Records a sample in the instance's state and evaluates every threshold.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        instance: &CacheInstance,
        key: &ObjectRef<CacheInstance>,
        id: &str,
        selection: &Selection,
        thresholds: &Thresholds,
        db: Option<&Database>,
        stats: Option<&crate::upstash::DatabaseStats>,
        probe_round: Option<Vec<Outcome>>,
        info: Option<probe::InfoFigures>,
        now: f64,
    ) -> Option<Evaluation> {
        let mut states_guard = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let state = states_guard.get_mut(key)?;
        if let Some(outcomes) = &probe_round {
            let latencies: Vec<f64> = outcomes
                .iter()
                .filter_map(|o| {
                    if let Outcome::Ok(ms) = o {
                        Some(*ms)
                    } else {
                        None
                    }
                })
                .collect();
            let failures = outcomes
                .iter()
                .filter(|o| matches!(o, Outcome::Failed(_)))
                .count();
            state.probe.record(&latencies, failures);
        }
        let mut figures = figures::derive(
            stats,
            db,
            &state.probe,
            instance.spec.budget,
            thresholds.hit_rate_min_requests,
        );
        if figures.memory_used_bytes.is_none() {
            figures.memory_used_bytes = info.as_ref().and_then(|i| i.used_memory);
            if let (Some(u), Some(l)) = (figures.memory_used_bytes, figures.memory_limit_bytes) {
                figures.memory_percent = Some(100.0 * u / l);
            }
        }

        // Evaluate.
        let mut transitions = Vec::new();
        for (kind, value, limit) in limits(&figures, thresholds) {
            let current = state.alerts.get(&kind).cloned().unwrap_or(AlertState::Ok);
            let (next, transition) = thresholds::step(
                &current,
                value,
                limit,
                thresholds.hold,
                thresholds.hysteresis_percent,
                now,
            );
            state.alerts.insert(kind, next);
            if let Some(t) = transition {
                transitions.push((kind, t, describe(kind, &figures, thresholds)));
            }
        }
        // Alerts whose threshold was disabled resolve.
        let enabled: HashSet<AlertKind> = limits(&figures, thresholds)
            .iter()
            .map(|(k, _, _)| *k)
            .collect();
        for (kind, st) in state.alerts.iter_mut() {
            if !enabled.contains(kind) && matches!(st, AlertState::Firing { .. }) {
                *st = AlertState::Ok;
                transitions.push((
                    *kind,
                    Transition::Resolved,
                    "the threshold is no longer evaluated".into(),
                ));
            }
        }
        let firing: Vec<AlertKind> = state
            .alerts
            .iter()
            .filter(|(_, s)| matches!(s, AlertState::Firing { .. }))
            .map(|(k, _)| *k)
            .collect();
        state.report = Some(report(instance, id, selection, &figures, &firing));
        let labels = InstanceLabels {
            namespace: instance.namespace().unwrap_or_default(),
            name: instance.name_any(),
        };
        Some((firing, transitions, figures, labels))
    }

    async fn fetch_db(
        &self,
        upstash: &UpstashApi,
        key: &ObjectRef<CacheInstance>,
        id: &str,
    ) -> Option<Database> {
        match upstash.get_database(id).await {
            Ok(Some(db)) => {
                let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(state) = states.get_mut(key) {
                    state.db = Some((db.clone(), Instant::now()));
                    state.had_db = true;
                }
                Some(db)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(object = %key, err = %e, "database unavailable for monitoring");
                None
            }
        }
    }

    fn forget_db(&self, key: &ObjectRef<CacheInstance>) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(key) {
            state.db = None;
        }
    }

    fn export_metrics(&self, labels: &InstanceLabels, f: &Figures, firing: usize) {
        let m = &self.ctx.metrics;
        if let Some(h) = f.hit_rate_percent {
            m.instance_hit_ratio.get_or_create(labels).set(h / 100.0);
        }
        if let Some(v) = f.memory_used_bytes {
            m.instance_memory_used_bytes.get_or_create(labels).set(v);
        }
        if let Some(v) = f.memory_limit_bytes {
            m.instance_memory_limit_bytes.get_or_create(labels).set(v);
        }
        if let Some(v) = f.monthly_cost_usd {
            m.instance_monthly_cost_usd.get_or_create(labels).set(v);
        }
        if let Some(v) = f.p95_ms {
            m.instance_latency_p95_seconds
                .get_or_create(labels)
                .set(v / 1000.0);
        }
        m.instance_firing_alerts
            .get_or_create(labels)
            .set(firing as i64);
    }

    /// Writes `status.alerts` and the `Healthy` condition when the firing set differs from
    /// what the object shows.
    async fn write_status(
        &self,
        instance: &CacheInstance,
        firing: &[AlertKind],
        transitions: &[(AlertKind, Transition, String)],
    ) -> crate::Result<()> {
        let status = instance.status.clone().unwrap_or_default();
        let shown: Vec<&str> = status.alerts.iter().map(|a| a.type_.as_str()).collect();
        let wanted: Vec<&str> = firing.iter().map(|k| k.as_str()).collect();
        let has_healthy = conditions::find(&status.conditions, conditions::HEALTHY).is_some();
        if shown == wanted && has_healthy {
            return Ok(());
        }
        let now = Time(Timestamp::now());
        let alerts: Vec<FiringAlert> = firing
            .iter()
            .map(|k| {
                let previous = status.alerts.iter().find(|a| a.type_ == k.as_str());
                let fresh = transitions.iter().find(|(t, _, _)| t == k);
                FiringAlert {
                    type_: k.as_str().to_string(),
                    since: previous
                        .map(|a| a.since.clone())
                        .unwrap_or_else(|| now.clone()),
                    message: previous
                        .map(|a| a.message.clone())
                        .or_else(|| fresh.map(|(_, _, m)| m.clone()))
                        .unwrap_or_default(),
                }
            })
            .collect();
        let healthy = if firing.is_empty() {
            conditions::Cond::new(
                conditions::HEALTHY,
                true,
                "NoAlerts",
                "no monitoring threshold is crossed",
            )
        } else {
            conditions::Cond::new(
                conditions::HEALTHY,
                false,
                "AlertsFiring",
                alerts
                    .iter()
                    .map(|a| a.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        let merged = conditions::merge(
            &status.conditions,
            &[healthy],
            &[],
            instance.metadata.generation,
            Timestamp::now(),
        );
        let body = json!({
            "apiVersion": CacheInstance::api_version(&()),
            "kind": CacheInstance::kind(&()),
            "status": {"alerts": alerts, "conditions": merged},
        });
        let api: Api<CacheInstance> = Api::namespaced(
            self.ctx.client.clone(),
            &instance.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &instance.name_any(),
            &PatchParams::apply(MONITOR_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// Keeps each CachePolicy's status (selected instances, firing alerts, Ready) current.
    async fn update_policy_statuses(&self) {
        let instances = self.all_instances();
        let policies = self.ctx.policies.all();
        let states = {
            let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            states
                .iter()
                .map(|(k, s)| {
                    let firing = s
                        .alerts
                        .values()
                        .filter(|a| matches!(a, AlertState::Firing { .. }))
                        .count();
                    (k.clone(), firing)
                })
                .collect::<HashMap<_, _>>()
        };
        for policy in &policies {
            let mut selected = 0;
            let mut firing = 0;
            for instance in &instances {
                if guardrails::select(instance, policies.iter().map(|p| p.as_ref()))
                    .policy()
                    .is_some_and(|p| {
                        p.name_any() == policy.name_any() && p.namespace() == policy.namespace()
                    })
                {
                    selected += 1;
                    firing += states
                        .get(&ObjectRef::from_obj(instance.as_ref()))
                        .copied()
                        .unwrap_or(0);
                }
            }
            if let Err(e) = self
                .write_policy_status(policy, selected, firing as i32)
                .await
            {
                tracing::debug!(policy = %policy.name_any(), err = %e, "could not write CachePolicy status");
            }
        }
    }

    async fn write_policy_status(
        &self,
        policy: &CachePolicy,
        selected: i32,
        firing: i32,
    ) -> crate::Result<()> {
        let status = policy.status.clone().unwrap_or_default();
        let ready = conditions::Cond::new(
            conditions::READY,
            true,
            "Applied",
            format!("applies to {selected} CacheInstance(s)"),
        );
        let merged = conditions::merge(
            &status.conditions,
            &[ready],
            &[],
            policy.metadata.generation,
            Timestamp::now(),
        );
        let mut next = status.clone();
        next.conditions = merged;
        next.observed_generation = policy.metadata.generation;
        next.selected_instances = Some(selected);
        next.firing_alerts = Some(firing);
        if next == status {
            return Ok(());
        }
        let body = json!({
            "apiVersion": CachePolicy::api_version(&()),
            "kind": CachePolicy::kind(&()),
            "status": next,
        });
        let api: Api<CachePolicy> = Api::namespaced(
            self.ctx.client.clone(),
            &policy.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &policy.name_any(),
            &PatchParams::apply(crate::controller::FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }

    /// The `/status` document, in the shape of the guide's `/api/health`.
    pub fn status_page(&self) -> serde_json::Value {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports: Vec<InstanceReport> =
            states.values().filter_map(|s| s.report.clone()).collect();
        drop(states);
        reports.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let hits: f64 = reports.iter().map(|r| r.hits).sum();
        let misses: f64 = reports.iter().map(|r| r.misses).sum();
        let firing: usize = reports.iter().map(|r| r.alerts.len()).sum();
        let breaker = self.ctx.upstash.breaker();
        let healthy = firing == 0 && breaker.state() == BreakerState::Closed;
        json!({
            "status": if healthy { "healthy" } else { "degraded" },
            "timestamp": Timestamp::now().to_string(),
            "cache": {
                "instances": reports.len(),
                "hits": hits,
                "misses": misses,
                "hitRate": if hits + misses > 0.0 { Some(100.0 * hits / (hits + misses)) } else { None },
                "memoryUsedBytes": reports.iter().filter_map(|r| r.memory_used_bytes).sum::<f64>(),
                "monthlyCostUsd": reports.iter().filter_map(|r| r.monthly_cost_usd).sum::<f64>(),
                "firingAlerts": firing,
                "intervalStretch": self.stretch(),
            },
            "circuitBreaker": {
                "state": breaker.state().as_str(),
                "failureThreshold": breaker.config().failure_threshold,
                "resetTimeoutSeconds": breaker.config().reset_timeout.as_secs(),
                "successThreshold": breaker.config().success_threshold,
            },
            "instances": reports,
        })
    }
}

/// A fresh state, with alerts the object already shows as firing (so a restarted operator does
/// not announce them again).
fn restore(instance: &CacheInstance) -> InstanceState {
    let mut state = InstanceState {
        database_id: instance
            .status
            .as_ref()
            .and_then(|s| s.database_id.clone())
            .unwrap_or_default(),
        ..Default::default()
    };
    for alert in instance.status.iter().flat_map(|s| s.alerts.iter()) {
        if let Some(kind) = AlertKind::parse(&alert.type_) {
            state.alerts.insert(kind, AlertState::Firing { since: 0.0 });
        }
    }
    state
}

fn data_plane(db: &Database) -> Option<(String, SecretString)> {
    if db.endpoint.is_empty() {
        return None;
    }
    Some((format!("https://{}", db.endpoint), db.rest_token.clone()?))
}

/// `(alert, value, limit)` for every enabled threshold.
fn limits(f: &Figures, t: &Thresholds) -> Vec<(AlertKind, Option<f64>, Limit)> {
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
        out.push((AlertKind::ErrorRateHigh, f.error_rate_percent, above(v)));
    }
    if let Some(v) = t.p95_above_ms {
        // P99, when configured, is judged against its own limit by scaling it onto P95's.
        let value = match (t.p99_above_ms, f.p99_ms, f.p95_ms) {
            (Some(p99_limit), Some(p99), Some(p95)) => Some(p95.max(p99 * v / p99_limit)),
            _ => f.p95_ms,
        };
        out.push((AlertKind::LatencyHigh, value, above(v)));
    }
    if let Some(v) = t.budget_above_percent {
        out.push((AlertKind::BudgetNearlyExhausted, f.budget_percent, above(v)));
    }
    if let Some(v) = t.connection_failures_after {
        // Fires when the count of failed rounds in a row reaches the threshold.
        out.push((
            AlertKind::ConnectionFailing,
            Some(f.consecutive_failures as f64),
            above(f64::from(v) - 0.5),
        ));
    }
    out
}

/// The Event note for an alert: the value and the threshold.
fn describe(kind: AlertKind, f: &Figures, t: &Thresholds) -> String {
    let pct = |v: Option<f64>| v.map_or("unknown".to_string(), |v| format!("{v:.1}%"));
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
            "error rate {} of probe commands (threshold: warn above {}%)",
            pct(f.error_rate_percent),
            t.error_rate_above_percent.unwrap_or_default()
        ),
        AlertKind::LatencyHigh => format!(
            "P95 latency {} ms, P99 {} ms (threshold: warn when P95 is above {} ms{})",
            f.p95_ms.map_or("unknown".into(), |v| format!("{v:.1}")),
            f.p99_ms.map_or("unknown".into(), |v| format!("{v:.1}")),
            t.p95_above_ms.unwrap_or_default(),
            t.p99_above_ms
                .map(|v| format!(" or P99 above {v} ms"))
                .unwrap_or_default()
        ),
        AlertKind::ConnectionFailing => format!(
            "{} probe rounds in a row failed to reach the database (threshold: {})",
            f.consecutive_failures,
            t.connection_failures_after.unwrap_or_default()
        ),
        AlertKind::BudgetNearlyExhausted => format!(
            "spend ${:.2} this month is {} of the ${:.0} budget (threshold: warn above {}%)",
            f.monthly_cost_usd.unwrap_or_default(),
            pct(f.budget_percent),
            f.budget_usd.unwrap_or_default(),
            t.budget_above_percent.unwrap_or_default()
        ),
    }
}

fn report(
    instance: &CacheInstance,
    id: &str,
    selection: &Selection,
    f: &Figures,
    firing: &[AlertKind],
) -> InstanceReport {
    InstanceReport {
        namespace: instance.namespace().unwrap_or_default(),
        name: instance.name_any(),
        database_id: id.to_string(),
        policy: selection.policy().map(|p| p.name_any()),
        hits: f.hits,
        misses: f.misses,
        hit_rate: f.hit_rate_percent,
        memory_used_bytes: f.memory_used_bytes,
        memory_limit_bytes: f.memory_limit_bytes,
        memory_percent: f.memory_percent,
        error_rate_percent: f.error_rate_percent,
        latency_p95_ms: f.p95_ms,
        latency_p99_ms: f.p99_ms,
        consecutive_connection_failures: f.consecutive_failures,
        monthly_cost_usd: f.monthly_cost_usd,
        budget_usd: f.budget_usd,
        alerts: firing.iter().map(|k| k.as_str().to_string()).collect(),
        last_sample: Timestamp::now().to_string(),
    }
}

/// Publishes an Event about the operator itself whenever the circuit breaker opens or closes,
/// and keeps the breaker gauge current.
pub async fn watch_breaker(ctx: Arc<Context>, own: ObjectReference) {
    let mut rx = ctx.upstash.breaker().subscribe();
    while rx.changed().await.is_ok() {
        let state = *rx.borrow_and_update();
        ctx.metrics.breaker_state.set(state.as_gauge());
        let config = ctx.upstash.breaker().config();
        let (type_, reason, note) = match state {
            BreakerState::Open => (
                EventType::Warning,
                "CircuitBreakerOpened",
                format!(
                    "Upstash API calls paused for {}s after {} consecutive failures",
                    config.reset_timeout.as_secs(),
                    config.failure_threshold
                ),
            ),
            BreakerState::Closed => (
                EventType::Normal,
                "CircuitBreakerClosed",
                format!(
                    "Upstash API calls resumed after {} successful trial calls",
                    config.success_threshold
                ),
            ),
            BreakerState::HalfOpen => continue,
        };
        tracing::warn!(
            state = state.as_str(),
            "circuit breaker around the Upstash API changed state"
        );
        let event = kube::runtime::events::Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: "CallUpstash".to_string(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &own).await {
            tracing::warn!(err = %e, "could not publish the circuit breaker Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interval_stretch;

    #[test]
    fn intervals_stretch_only_beyond_the_budget() {
        // 100 instances every 60 s against 10 requests/s: within budget.
        assert_eq!(interval_stretch(100.0 / 60.0, 10.0), 1.0);
        // 1,000 instances every 60 s need 16.7 requests/s: intervals grow 1.67 times.
        let s = interval_stretch(1000.0 / 60.0, 10.0);
        assert!((s - 1000.0 / 600.0).abs() < 1e-9, "{s}");
        // No budget configured: as configured.
        assert_eq!(interval_stretch(50.0, 0.0), 1.0);
    }
}
