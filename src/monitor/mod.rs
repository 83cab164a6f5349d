//! Monitoring: judges every provisioned CacheInstance on its policies' interval against their
//! thresholds (jittered, within half of the Upstash request rate) and turns crossings into
//! Events, `status.alerts`, a `Healthy` condition and metrics.
//!
//! By default it sends the databases no command: a sample is one Developer API stats call
//! (hits, misses, storage, latency, daily commands, billing). The data-plane probe (`PING`,
//! `INFO`) runs only for instances whose policy turns it on, on its own interval.
//!
//! - [`schedule`]: the queue of due work and the interval stretch;
//! - [`sample`]: one piece of work (a sample or a probe round) and its I/O;
//! - [`figures`], [`cost`], [`probe`]: what a sample says (pure, apart from the prober);
//! - [`thresholds`], [`evaluate`]: the limits in force and how samples become transitions;
//! - [`report`], [`status_page`]: Events, status, metrics and `/status`;
//! - [`state`]: what is remembered per instance.

pub mod cost;
pub mod evaluate;
pub mod figures;
pub mod probe;
pub mod report;
pub mod sample;
pub mod schedule;
pub mod state;
pub mod status_page;
pub mod thresholds;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{api::core::v1::ObjectReference, jiff::Timestamp};
use kube::{
    ResourceExt,
    runtime::{events::EventType, reflector::Store},
};
use tokio::sync::Semaphore;

use self::{
    probe::Prober,
    schedule::{Due, Queue, Work},
    state::Table,
    thresholds::Thresholds,
};
pub use self::{
    report::MONITOR_MANAGER,
    schedule::{REQUEST_BUDGET_SHARE, interval_stretch},
};
use crate::{
    controller::Context,
    crd::{CacheInstance, CachePolicy},
    guardrails,
    policies::status::Nudger,
    upstash::breaker::BreakerState,
};

/// How often the instance caches are compared with what the monitor knows (new, changed and
/// deleted instances, changed policies). Samples themselves wake the monitor only when due.
const DISCOVERY: Duration = Duration::from_secs(3);
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

/// The monitor.
pub struct Monitor {
    ctx: Arc<Context>,
    instances: Vec<Store<CacheInstance>>,
    settings: MonitorSettings,
    prober: Prober,
    nudger: Option<Nudger>,
    table: Mutex<Table>,
    queue: Mutex<Queue>,
    permits: Arc<Semaphore>,
    started: Instant,
    /// The current [`interval_stretch`], as f64 bits.
    stretch: AtomicU64,
}

/// A fingerprint of the policy set: changes when a policy is added, changed or deleted.
fn policies_version(policies: &[Arc<CachePolicy>]) -> u64 {
    let mut versions: Vec<(Option<&str>, Option<&str>)> = policies
        .iter()
        .map(|p| {
            (
                p.metadata.uid.as_deref(),
                p.metadata.resource_version.as_deref(),
            )
        })
        .collect();
    versions.sort();
    crate::digest::of(&versions)
}

impl Monitor {
    pub fn new(
        ctx: Arc<Context>,
        instances: Vec<Store<CacheInstance>>,
        settings: MonitorSettings,
        prober: Prober,
        nudger: Option<Nudger>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            instances,
            settings,
            prober,
            nudger,
            table: Mutex::default(),
            queue: Mutex::default(),
            permits: Arc::new(Semaphore::new(PARALLEL_SAMPLES)),
            started: Instant::now(),
            stretch: AtomicU64::new(1f64.to_bits()),
        })
    }

    /// Seconds on the monitor's clock (for hold times).
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The factor evaluation intervals are currently stretched by.
    pub fn stretch(&self) -> f64 {
        f64::from_bits(self.stretch.load(Ordering::Relaxed))
    }

    /// Runs until `shutdown` resolves: sleeps until the next due work or discovery pass.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut next_discovery = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_discovery {
                self.discover(now);
                next_discovery = now + DISCOVERY;
            }
            self.dispatch(Instant::now());
            // Work left due means every sampling slot is taken: wait for one to free up (or
            // for the next discovery), not for a time already past.
            let backlog = self.queue().has_due(Instant::now());
            let wake = match self.queue().next_at() {
                Some(at) if !backlog => at.min(next_discovery),
                _ => next_discovery,
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = self.permits.acquire(), if backlog => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Brings the table in line with the caches: new instances get their first samples
    /// queued, changed ones (labels, spec, policies) their thresholds recomputed, gone ones are
    /// forgotten. Linear in instances; policies are matched only for instances or policies
    /// that changed.
    fn discover(&self, now: Instant) {
        let instances: Vec<Arc<CacheInstance>> =
            self.instances.iter().flat_map(|s| s.state()).collect();
        let policies = self.ctx.policies.all();
        let version = policies_version(&policies);
        let mut table = self.table();
        let mut queue = self.queue();
        let mut live = HashSet::with_capacity(instances.len());
        let mut demand = 0.0;
        // First samples, queued once the stretch of all instances' intervals is known: at a
        // start with many instances they are spread over the stretched interval, not over
        // the configured one at a rate beyond the budget.
        let mut first_samples: Vec<(u64, Duration, u64)> = Vec::new();
        // The distinct thresholds of this pass: instances under the same policies (or none)
        // share one copy.
        let mut distinct: Vec<Arc<Thresholds>> = Vec::new();
        for instance in instances {
            let Some(database_id) = instance.status.as_ref().and_then(|s| s.database_id.clone())
            else {
                continue;
            };
            // Deleted or paused objects get no Upstash call at all, and neither does an
            // instance whose status names a database that another instance manages.
            if instance.metadata.deletion_timestamp.is_some()
                || crate::controller::instance::paused(&instance)
                || self.ctx.claims.held_by_other(&instance)
            {
                continue;
            }
            let key = crate::controller::object_key(&instance);
            let id = match table.id_of(&key) {
                Some(id) => id,
                None => table.insert(key, instance.clone()),
            };
            live.insert(id);
            let state = table.states.get_mut(&id).expect("just looked up");
            if state.database_id != database_id {
                // A new database: forget what was learnt about the old one.
                let epoch = state.epoch;
                **state = state::InstanceState::restore(id, instance.clone());
                state.epoch = epoch;
            }
            // Only whether it changed matters.
            let seen = Some(crate::digest::of(&instance.metadata.resource_version));
            if state.seen_version.is_none()
                || state.seen_version != seen
                || state.policies_version != version
            {
                let applicable = guardrails::applicable(&instance, &policies);
                let thresholds = if applicable.policies.is_empty() {
                    self.settings.default_thresholds.then(Thresholds::defaults)
                } else {
                    Some(Thresholds::for_policies(applicable.iter()))
                };
                let thresholds =
                    thresholds.map(|t| match distinct.iter().find(|shared| ***shared == t) {
                        Some(shared) => shared.clone(),
                        None => {
                            let shared = Arc::new(t);
                            distinct.push(shared.clone());
                            shared
                        }
                    });
                let schedule_of = |t: &Option<Arc<Thresholds>>| {
                    t.as_ref()
                        .map(|t| (t.interval, t.probe.map(|p| p.interval)))
                };
                let reschedule = state.seen_version.is_none()
                    || schedule_of(&state.thresholds) != schedule_of(&thresholds);
                state.thresholds = thresholds;
                state.policies = applicable.names();
                state.seen_version = seen;
                state.policies_version = version;
                state.instance = instance.clone();
                if reschedule {
                    state.epoch += 1;
                    if let Some(t) = &state.thresholds {
                        tracing::debug!(object = %instance.name_any(), policies = ?state.policies, "monitoring");
                        first_samples.push((id, t.interval, state.epoch));
                        if let Some(p) = t.probe {
                            queue.push(Due {
                                at: schedule::first_due(now, p.interval),
                                id,
                                work: Work::Probe,
                                epoch: state.epoch,
                            });
                        }
                    }
                }
            }
            if let Some(t) = &state.thresholds {
                demand += 1.0 / t.interval.as_secs_f64().max(1.0);
            }
        }
        table.retain(|id| live.contains(&id));
        drop(queue);
        drop(table);
        let stretch = self.stretch();
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
            self.stretch.store(next.to_bits(), Ordering::Relaxed);
            self.ctx.metrics.monitor_interval_stretch.set(next);
        }
        if !first_samples.is_empty() {
            let stretch = self.stretch().max(1.0);
            let mut queue = self.queue();
            for (id, interval, epoch) in first_samples {
                queue.push(Due {
                    at: schedule::first_due(now, interval.mul_f64(stretch)),
                    id,
                    work: Work::Sample,
                    epoch,
                });
            }
        }
    }

    /// Starts the work that is due, as far as sampling slots are free ([`PARALLEL_SAMPLES`]),
    /// and queues each instance's next round of it. Work beyond the free slots stays queued
    /// (a few bytes each) rather than waiting as a task of its own.
    fn dispatch(self: &Arc<Self>, now: Instant) {
        if !self.queue().has_due(now) {
            return;
        }
        let stretch = self.stretch();
        let mut table = self.table();
        let mut queue = self.queue();
        loop {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                break;
            };
            let Some(d) = queue.pop_one_due(now) else {
                break;
            };
            let Some(state) = table.states.get_mut(&d.id) else {
                continue;
            };
            if d.epoch != state.epoch {
                continue;
            }
            let Some(t) = &state.thresholds else {
                continue;
            };
            let (interval, busy) = match d.work {
                Work::Sample => (
                    Some(t.interval.mul_f64(stretch)),
                    std::mem::replace(&mut state.sampling, true),
                ),
                Work::Probe => (
                    t.probe.map(|p| p.interval),
                    std::mem::replace(&mut state.probing, true),
                ),
            };
            let Some(interval) = interval else {
                continue;
            };
            queue.push(Due {
                at: schedule::next_due(now, interval, 1.0),
                ..d
            });
            if busy {
                // The previous round is still running: skip this one.
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                this.run_work(d.id, d.work).await;
            });
        }
    }

    /// The `/status` document (see [`status_page`]).
    pub fn status_page(&self) -> serde_json::Value {
        let reports = self
            .table()
            .states
            .values()
            .filter_map(|s| {
                let report = s.report.as_ref()?;
                Some(report.named(&s.instance, &s.database_id, s.policies.as_deref()))
            })
            .collect();
        let breaker = self.ctx.upstash.breaker();
        let (failures, successes) = breaker.counts();
        status_page::page(
            reports,
            status_page::BreakerView {
                state: breaker.state(),
                failures,
                successes,
                config: breaker.config(),
            },
            self.stretch(),
            Timestamp::now().to_string(),
        )
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
        if let Err(e) = ctx
            .events
            .publish(&own, type_, reason, "CallUpstash", &note)
            .await
        {
            tracing::warn!(err = %e, "could not publish the circuit breaker Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(uid: &str, rv: &str) -> Arc<CachePolicy> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "cache.upstash-operator.dev/v1alpha1",
                "kind": "CachePolicy",
                "metadata": {"name": uid, "namespace": "crm", "uid": uid, "resourceVersion": rv},
                "spec": {},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_policy_fingerprint_changes_with_any_policy() {
        let a = [policy("a", "1"), policy("b", "1")];
        let reordered = [policy("b", "1"), policy("a", "1")];
        assert_eq!(policies_version(&a), policies_version(&reordered));
        assert_ne!(
            policies_version(&a),
            policies_version(&[policy("a", "2"), policy("b", "1")])
        );
        assert_ne!(policies_version(&a), policies_version(&a[..1]));
    }
}
