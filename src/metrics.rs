//! Prometheus metrics, served as text on `/metrics`.
//!
//! Controller metrics use controller-runtime's names and labels so existing dashboards and
//! alerts work unchanged; Upstash and per-instance metrics use the `upstash_` prefix. Labels are
//! bounded: controller names, endpoint names, status codes, error categories, and the namespace
//! and name of CacheInstances. Never database ids, endpoints or messages.

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileResultLabels {
    pub controller: String,
    /// `success`, `error`, `requeue` or `requeue_after`, as controller-runtime reports them.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: String,
    /// The error category ([`crate::Error::metric_label`]).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// Operation name: `list`, `get`, `create`, `update-budget`, ...
    pub endpoint: String,
    /// HTTP status code, or `timeout`, `error`, `circuit_open`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub name: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    pub registry: Registry,
    pub reconcile_total: Family<ReconcileResultLabels, Counter>,
    pub reconcile_errors_total: Family<ControllerLabels, Counter>,
    pub reconcile_failures_total: Family<FailureLabels, Counter>,
    pub reconcile_time_seconds: Family<ControllerLabels, Histogram>,
    pub reconcile_backoff_seconds: Family<ControllerLabels, Histogram>,
    pub active_workers: Family<ControllerLabels, Gauge>,
    pub max_concurrent_reconciles: Family<ControllerLabels, Gauge>,
    pub leader: Gauge,
    pub api_requests_total: Family<ApiRequestLabels, Counter>,
    pub api_request_duration_seconds: Family<EndpointLabels, Histogram>,
    pub breaker_state: Gauge,
    pub breaker_openings_total: Counter,
    pub monitor_interval_stretch: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub instance_ready: Family<InstanceLabels, Gauge>,
    pub instance_hit_ratio: Family<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub instance_memory_used_bytes:
        Family<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub instance_memory_limit_bytes:
        Family<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub instance_monthly_cost_usd: FloatFamily,
    pub instance_projected_monthly_cost_usd: FloatFamily,
    pub instance_budget_usd: FloatFamily,
    pub instance_latency_p99_seconds: FloatFamily,
    pub instance_latency_mean_seconds: FloatFamily,
    pub instance_client_latency_p95_seconds: FloatFamily,
    pub instance_client_error_ratio: FloatFamily,
    pub instance_eviction_ratio: FloatFamily,
    pub instance_daily_commands: FloatFamily,
    pub instance_daily_command_limit: FloatFamily,
    pub instance_firing_alerts: Family<InstanceLabels, Gauge>,
    /// Data-plane commands the monitor's probe sent (Upstash bills them).
    pub monitor_probe_commands_total: Counter,
}

/// A per-instance gauge of floating-point values.
pub type FloatFamily = Family<InstanceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// 1 s to 512 s: per-object backoff is seconds to minutes.
fn backoff_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconcile_total = Family::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconcile_total.clone(),
        );
        let reconcile_errors_total = Family::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors_total.clone(),
        );
        let reconcile_failures_total = Family::default();
        registry.register(
            "upstash_operator_reconcile_failures",
            "Reconciliation errors per controller and error category",
            reconcile_failures_total.clone(),
        );
        let reconcile_time_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            reconcile_time_seconds.clone(),
        );
        let reconcile_backoff_seconds = Family::<ControllerLabels, Histogram>::new_with_constructor(
            backoff_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstash_operator_reconcile_backoff_seconds",
            "Delay before an object is reconciled again after a failed reconciliation (its per-object backoff), per controller",
            reconcile_backoff_seconds.clone(),
        );
        let active_workers = Family::default();
        registry.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            active_workers.clone(),
        );
        let max_concurrent_reconciles = Family::default();
        registry.register(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            max_concurrent_reconciles.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader_election_master_status",
            "1 while this replica holds the leader Lease, 0 otherwise",
            leader.clone(),
        );
        let api_requests_total = Family::default();
        registry.register(
            "upstash_api_requests",
            "Upstash Developer API requests by endpoint and HTTP status (or timeout, error, circuit_open)",
            api_requests_total.clone(),
        );
        let api_request_duration_seconds =
            Family::<EndpointLabels, Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "upstash_api_request_duration_seconds",
            "Latency of Upstash Developer API requests by endpoint",
            api_request_duration_seconds.clone(),
        );
        let breaker_state = Gauge::default();
        registry.register(
            "upstash_api_circuit_breaker_state",
            "Circuit breaker around the Upstash API: 0 closed, 1 open, 2 half-open",
            breaker_state.clone(),
        );
        let breaker_openings_total = Counter::default();
        registry.register(
            "upstash_api_circuit_breaker_openings",
            "Times the circuit breaker around the Upstash API opened (after consecutive failed calls, or a failed trial call)",
            breaker_openings_total.clone(),
        );
        let monitor_interval_stretch = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        monitor_interval_stretch.set(1.0);
        registry.register(
            "upstash_monitor_interval_stretch",
            "Factor the monitor stretches evaluation intervals by to stay within its share of the Upstash request rate (1 = as configured)",
            monitor_interval_stretch.clone(),
        );
        let instance_ready = Family::default();
        registry.register(
            "upstash_cache_ready",
            "1 when the CacheInstance is Ready, 0 otherwise",
            instance_ready.clone(),
        );
        let instance_hit_ratio = Family::default();
        registry.register(
            "upstash_cache_hit_ratio",
            "Cache hit ratio (0-1) over the last sampling window",
            instance_hit_ratio.clone(),
        );
        let instance_memory_used_bytes = Family::default();
        registry.register(
            "upstash_cache_memory_used_bytes",
            "Data stored in the database, in bytes",
            instance_memory_used_bytes.clone(),
        );
        let instance_memory_limit_bytes = Family::default();
        registry.register(
            "upstash_cache_memory_limit_bytes",
            "Data size limit of the database's plan, in bytes",
            instance_memory_limit_bytes.clone(),
        );
        let instance_monthly_cost_usd = Family::default();
        registry.register(
            "upstash_cache_monthly_cost_usd",
            "Spend of the database this month so far, in US dollars (Upstash's billing, else the price model)",
            instance_monthly_cost_usd.clone(),
        );
        let float = |registry: &mut Registry, name: &str, help: &str| {
            let family = FloatFamily::default();
            registry.register(name, help, family.clone());
            family
        };
        let instance_projected_monthly_cost_usd = float(
            &mut registry,
            "upstash_cache_projected_monthly_cost_usd",
            "Spend of the database projected to the end of this month, in US dollars",
        );
        let instance_budget_usd = float(
            &mut registry,
            "upstash_cache_budget_usd",
            "Monthly budget of the CacheInstance (spec.budget), in US dollars",
        );
        let instance_latency_p99_seconds = float(
            &mut registry,
            "upstash_cache_latency_p99_seconds",
            "Server-side 99th percentile command latency as Upstash reports it, in seconds",
        );
        let instance_latency_mean_seconds = float(
            &mut registry,
            "upstash_cache_latency_mean_seconds",
            "Server-side mean command latency as Upstash reports it, in seconds",
        );
        let instance_client_latency_p95_seconds = float(
            &mut registry,
            "upstash_cache_client_latency_p95_seconds",
            "Client-side 95th percentile latency of the operator's data-plane probe (network included), in seconds; only with the probe on",
        );
        let instance_client_error_ratio = float(
            &mut registry,
            "upstash_cache_client_error_ratio",
            "Failed share (0-1) of the probe's recent commands; only with the probe on",
        );
        let instance_eviction_ratio = float(
            &mut registry,
            "upstash_cache_eviction_ratio",
            "Keys evicted per write (0-1) between the last two samples; only with the probe on",
        );
        let instance_daily_commands = float(
            &mut registry,
            "upstash_cache_daily_commands",
            "Commands the database executed today, as Upstash counts them (the probe's included)",
        );
        let instance_daily_command_limit = float(
            &mut registry,
            "upstash_cache_daily_command_limit",
            "Daily command limit the CacheInstance is judged against (the plan's or the policy's)",
        );
        let instance_firing_alerts = Family::default();
        registry.register(
            "upstash_cache_firing_alerts",
            "Monitoring alerts currently firing for the CacheInstance",
            instance_firing_alerts.clone(),
        );
        let monitor_probe_commands_total = Counter::default();
        registry.register(
            "upstash_monitor_probe_commands",
            "Data-plane commands sent by the monitor's opt-in probe (Upstash bills them like the application's)",
            monitor_probe_commands_total.clone(),
        );
        Self {
            registry,
            reconcile_total,
            reconcile_errors_total,
            reconcile_failures_total,
            reconcile_time_seconds,
            reconcile_backoff_seconds,
            active_workers,
            max_concurrent_reconciles,
            leader,
            api_requests_total,
            api_request_duration_seconds,
            breaker_state,
            breaker_openings_total,
            monitor_interval_stretch,
            instance_ready,
            instance_hit_ratio,
            instance_memory_used_bytes,
            instance_memory_limit_bytes,
            instance_monthly_cost_usd,
            instance_projected_monthly_cost_usd,
            instance_budget_usd,
            instance_latency_p99_seconds,
            instance_latency_mean_seconds,
            instance_client_latency_p95_seconds,
            instance_client_error_ratio,
            instance_eviction_ratio,
            instance_daily_commands,
            instance_daily_command_limit,
            instance_firing_alerts,
            monitor_probe_commands_total,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Starts timing a reconcile; the returned guard records duration and worker count.
    pub fn reconcile_started(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.active_workers.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            started: Instant::now(),
        }
    }

    /// Counts a finished reconcile by result.
    pub fn reconcile_finished(&self, controller: &str, result: &str) {
        self.reconcile_total
            .get_or_create(&ReconcileResultLabels {
                controller: controller.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a failed reconcile with its error category.
    pub fn reconcile_failed(&self, controller: &str, reason: &str) {
        self.reconcile_finished(controller, "error");
        self.reconcile_errors_total
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .inc();
        self.reconcile_failures_total
            .get_or_create(&FailureLabels {
                controller: controller.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Forgets the per-instance series of a deleted CacheInstance.
    pub fn forget_instance(&self, namespace: &str, name: &str) {
        let labels = InstanceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.instance_ready.remove(&labels);
        self.instance_hit_ratio.remove(&labels);
        self.instance_memory_used_bytes.remove(&labels);
        self.instance_memory_limit_bytes.remove(&labels);
        for family in [
            &self.instance_monthly_cost_usd,
            &self.instance_projected_monthly_cost_usd,
            &self.instance_budget_usd,
            &self.instance_latency_p99_seconds,
            &self.instance_latency_mean_seconds,
            &self.instance_client_latency_p95_seconds,
            &self.instance_client_error_ratio,
            &self.instance_eviction_ratio,
            &self.instance_daily_commands,
            &self.instance_daily_command_limit,
        ] {
            family.remove(&labels);
        }
        self.instance_firing_alerts.remove(&labels);
    }
}

/// Records the duration of a reconcile when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_time_seconds
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .active_workers
            .get_or_create(&self.labels)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_controller_runtime_names() {
        let m = Metrics::new();
        {
            let _t = m.reconcile_started("cacheinstance");
        }
        m.reconcile_finished("cacheinstance", "success");
        m.reconcile_failed("cacheinstance", "Upstash");
        m.breaker_openings_total.inc();
        m.reconcile_backoff_seconds
            .get_or_create(&ControllerLabels {
                controller: "cacheinstance".into(),
            })
            .observe(3.0);
        let text = m.render();
        for family in [
            "controller_runtime_reconcile_total{controller=\"cacheinstance\",result=\"success\"} 1",
            "controller_runtime_reconcile_errors_total{controller=\"cacheinstance\"} 1",
            "controller_runtime_reconcile_time_seconds_count{controller=\"cacheinstance\"} 1",
            "controller_runtime_active_workers{controller=\"cacheinstance\"} 0",
            "upstash_operator_reconcile_failures_total{controller=\"cacheinstance\",reason=\"Upstash\"} 1",
            "upstash_api_circuit_breaker_openings_total 1",
            "upstash_operator_reconcile_backoff_seconds_bucket{le=\"4.0\",controller=\"cacheinstance\"} 1",
            "upstash_operator_reconcile_backoff_seconds_count{controller=\"cacheinstance\"} 1",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
