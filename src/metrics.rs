//! Prometheus metrics, served as text on `/metrics`.
//!
//! Controller metrics use controller-runtime's names and labels so existing dashboards and
//! alerts work unchanged; Upstash and per-instance metrics use the `upstash_` prefix. Labels are
//! bounded: controller names, endpoint names, status codes, error categories, and the namespace
//! and name of CacheInstances. Never database ids, endpoints or messages.

pub mod instances;

use std::time::Instant;

pub use instances::{Figure, InstanceSeries};

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
    /// Every metric but the per-instance series (a few KB of text at any scale).
    pub registry: Registry,
    /// The per-instance series alone (about 1 KB of text per instance), written after the
    /// others.
    instance_registry: Registry,
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
    /// The per-instance gauges (`upstash_cache_*`).
    pub instances: std::sync::Arc<InstanceSeries>,
    /// Data-plane commands the monitor's probe sent (Upstash bills them).
    pub monitor_probe_commands_total: Counter,
}

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
        let instances = std::sync::Arc::new(InstanceSeries::default());
        let mut instance_registry = Registry::default();
        instance_registry.register_collector(Box::new(instances.clone()));
        let monitor_probe_commands_total = Counter::default();
        registry.register(
            "upstash_monitor_probe_commands",
            "Data-plane commands sent by the monitor's opt-in probe (Upstash bills them like the application's)",
            monitor_probe_commands_total.clone(),
        );
        Self {
            registry,
            instance_registry,
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
            instances,
            monitor_probe_commands_total,
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.encode(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn encode(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)?;
        self.encode_tail(out)
    }

    /// The per-instance series and the end of the text.
    fn encode_tail(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.instance_registry)?;
        prometheus_client::encoding::text::encode_eof(out)
    }

    /// Writes the text exposition in chunks of about [`CHUNK`] bytes to `send`, so that a
    /// scrape never holds the whole text (several MB at 10,000 instances, and twice that while
    /// a growing `String` reallocates) at once. Stops early if `send` reports the reader gone.
    pub fn render_chunks(&self, send: impl FnMut(String) -> bool) {
        let mut writer = ChunkWriter {
            buf: String::with_capacity(CHUNK),
            send,
            open: true,
        };
        // A metric family holds its lock while it is written: the small ones are written to
        // memory first, so that `send`, which may wait for the reader, is never called while
        // an update of theirs would wait. The per-instance series are written from a copy
        // of their values, without a lock. An error here only means the reader went away.
        let mut head = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut head, &self.registry);
        let _ = std::fmt::Write::write_str(&mut writer, &head)
            .and_then(|()| self.encode_tail(&mut writer));
        if writer.open && !writer.buf.is_empty() {
            (writer.send)(std::mem::take(&mut writer.buf));
        }
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
        self.instances.forget(namespace, name);
    }
}

/// Size of one chunk of the `/metrics` text.
pub const CHUNK: usize = 64 * 1024;

struct ChunkWriter<F: FnMut(String) -> bool> {
    buf: String,
    send: F,
    open: bool,
}

impl<F: FnMut(String) -> bool> std::fmt::Write for ChunkWriter<F> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if !self.open {
            return Err(std::fmt::Error);
        }
        // Sent before it would outgrow its capacity (a growing `String` reallocates to twice
        // its size); a piece longer than a chunk goes on its own.
        if !self.buf.is_empty() && self.buf.len() + s.len() > self.buf.capacity() {
            let full = std::mem::replace(&mut self.buf, String::with_capacity(CHUNK));
            self.open = (self.send)(full);
            if !self.open {
                return Err(std::fmt::Error);
            }
        }
        self.buf.push_str(s);
        Ok(())
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

    #[test]
    fn the_text_in_chunks_is_the_whole_text() {
        let m = Metrics::new();
        for i in 0..5_000 {
            m.instances.set_ready("crm", &format!("cache-{i}"), true);
        }
        let whole = m.render();
        assert!(whole.len() > 2 * CHUNK, "{}", whole.len());
        let mut chunks = Vec::new();
        m.render_chunks(|c| {
            // Sending may wait for a slow reader: never while updates would wait too.
            assert!(!m.instances.locked(), "the instance series are not locked");
            chunks.push(c);
            true
        });
        assert!(chunks.len() > 2);
        // No chunk outgrew its buffer (a reallocation would double it).
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= CHUNK && c.capacity() == CHUNK)
        );
        assert_eq!(chunks.concat(), whole);
        // A reader that went away stops the writing.
        let mut sent = 0;
        m.render_chunks(|_| {
            sent += 1;
            false
        });
        assert_eq!(sent, 1);
    }
}
