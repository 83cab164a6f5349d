//! The per-CacheInstance gauges (`upstash_cache_*`): one row of values per instance, encoded
//! when Prometheus scrapes.
//!
//! prometheus-client's `Family` keeps, per metric, its own copy of every instance's labels and
//! a shared gauge for each; with sixteen per-instance metrics that came to about 2 KB per
//! instance, the largest cost of the operator's memory after its caches. Here an instance costs
//! one row (its labels once, its values inline), and a [`Collector`] writes the same series in
//! the same text format at scrape time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::InstanceLabels;

/// A per-instance figure exported as a floating-point gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    HitRatio,
    MemoryUsedBytes,
    MemoryLimitBytes,
    MonthlyCostUsd,
    ProjectedMonthlyCostUsd,
    BudgetUsd,
    LatencyP99Seconds,
    LatencyMeanSeconds,
    ClientLatencyP95Seconds,
    ClientErrorRatio,
    EvictionRatio,
    DailyCommands,
    DailyCommandLimit,
}

/// Every figure with its metric name and help, in export order.
pub const FIGURES: [(Figure, &str, &str); 13] = [
    (
        Figure::HitRatio,
        "upstash_cache_hit_ratio",
        "Cache hit ratio (0-1) over the last sampling window",
    ),
    (
        Figure::MemoryUsedBytes,
        "upstash_cache_memory_used_bytes",
        "Data stored in the database, in bytes",
    ),
    (
        Figure::MemoryLimitBytes,
        "upstash_cache_memory_limit_bytes",
        "Data size limit of the database's plan, in bytes",
    ),
    (
        Figure::MonthlyCostUsd,
        "upstash_cache_monthly_cost_usd",
        "Spend of the database this month so far, in US dollars (Upstash's billing, else the price model)",
    ),
    (
        Figure::ProjectedMonthlyCostUsd,
        "upstash_cache_projected_monthly_cost_usd",
        "Spend of the database projected to the end of this month, in US dollars",
    ),
    (
        Figure::BudgetUsd,
        "upstash_cache_budget_usd",
        "Monthly budget of the CacheInstance (spec.budget), in US dollars",
    ),
    (
        Figure::LatencyP99Seconds,
        "upstash_cache_latency_p99_seconds",
        "Server-side 99th percentile command latency as Upstash reports it, in seconds",
    ),
    (
        Figure::LatencyMeanSeconds,
        "upstash_cache_latency_mean_seconds",
        "Server-side mean command latency as Upstash reports it, in seconds",
    ),
    (
        Figure::ClientLatencyP95Seconds,
        "upstash_cache_client_latency_p95_seconds",
        "Client-side 95th percentile latency of the operator's data-plane probe (network included), in seconds; only with the probe on",
    ),
    (
        Figure::ClientErrorRatio,
        "upstash_cache_client_error_ratio",
        "Failed share (0-1) of the probe's recent commands; only with the probe on",
    ),
    (
        Figure::EvictionRatio,
        "upstash_cache_eviction_ratio",
        "Keys evicted per write (0-1) between the last two samples; only with the probe on",
    ),
    (
        Figure::DailyCommands,
        "upstash_cache_daily_commands",
        "Commands the database executed today, as Upstash counts them (the probe's included)",
    ),
    (
        Figure::DailyCommandLimit,
        "upstash_cache_daily_command_limit",
        "Daily command limit the CacheInstance is judged against (the plan's or the policy's)",
    ),
];

const READY: (&str, &str) = (
    "upstash_cache_ready",
    "1 when the CacheInstance is Ready, 0 otherwise",
);
const FIRING: (&str, &str) = (
    "upstash_cache_firing_alerts",
    "Monitoring alerts currently firing for the CacheInstance",
);

const RECONCILES: (&str, &str) = (
    "upstash_cache_reconciles",
    "Reconciles of the CacheInstance this replica started, whatever their result (a rate of zero: the operator is not looking at it; a high rate: it is reconciled in a loop)",
);

/// One instance's values; `None` (for figures NaN, which no figure is) leaves no series.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    ready: Option<bool>,
    firing: Option<u32>,
    reconciles: u64,
    figures: [f64; FIGURES.len()],
}

impl Default for Row {
    fn default() -> Self {
        Self {
            ready: None,
            firing: None,
            reconciles: 0,
            figures: [f64::NAN; FIGURES.len()],
        }
    }
}

impl Row {
    fn figure(&self, slot: usize) -> Option<f64> {
        Some(self.figures[slot]).filter(|v| !v.is_nan())
    }
}

/// The per-instance gauges of every CacheInstance, registered as one collector.
#[derive(Debug, Default)]
pub struct InstanceSeries {
    /// The labels are shared with the copy a scrape writes from.
    rows: Mutex<HashMap<Arc<InstanceLabels>, Row>>,
}

impl InstanceSeries {
    fn update(&self, namespace: &str, name: &str, change: impl FnOnce(&mut Row)) {
        let mut rows = self.rows.lock().expect("instance series lock");
        let key = InstanceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        match rows.get_mut(&key) {
            Some(row) => change(row),
            None => change(rows.entry(Arc::new(key)).or_default()),
        }
    }

    /// Every row as it is now; the lock is held only while copying (a scrape may write its
    /// text as slowly as its reader reads).
    fn snapshot(&self) -> Vec<(Arc<InstanceLabels>, Row)> {
        let rows = self.rows.lock().expect("instance series lock");
        rows.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Whether the rows are locked right now (for tests of the scrape).
    #[cfg(test)]
    pub(crate) fn locked(&self) -> bool {
        self.rows.try_lock().is_err()
    }

    /// `upstash_cache_ready` of the instance.
    pub fn set_ready(&self, namespace: &str, name: &str, ready: bool) {
        self.update(namespace, name, |row| row.ready = Some(ready));
    }

    /// Counts a reconcile of the instance as it starts (`upstash_cache_reconciles_total`).
    pub fn count_reconcile(&self, namespace: &str, name: &str) {
        self.update(namespace, name, |row| {
            row.reconciles = row.reconciles.saturating_add(1);
        });
    }

    /// The monitor's figures of the instance (a `None` removes that series) and the number of
    /// its firing alerts.
    pub fn set_figures(
        &self,
        namespace: &str,
        name: &str,
        figures: impl IntoIterator<Item = (Figure, Option<f64>)>,
        firing: usize,
    ) {
        self.update(namespace, name, |row| {
            for (figure, value) in figures {
                let slot = FIGURES
                    .iter()
                    .position(|(f, _, _)| *f == figure)
                    .expect("every figure is listed");
                row.figures[slot] = value.unwrap_or(f64::NAN);
            }
            row.firing = Some(u32::try_from(firing).unwrap_or(u32::MAX));
        });
    }

    /// Forgets the series of a deleted instance.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut rows = self.rows.lock().expect("instance series lock");
        rows.remove(&InstanceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    /// The value of one figure of one instance (for tests and the status page's checks).
    pub fn figure(&self, namespace: &str, name: &str, figure: Figure) -> Option<f64> {
        let rows = self.rows.lock().expect("instance series lock");
        let slot = FIGURES.iter().position(|(f, _, _)| *f == figure)?;
        rows.get(&InstanceLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?
        .figure(slot)
    }
}

/// Writes one gauge with a series per instance that has a value (help ends with a full stop,
/// as the registry writes it for registered metrics).
fn encode_gauge<N: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    rows: &[(Arc<InstanceLabels>, Row)],
    (name, help): (&str, &str),
    value: impl Fn(&Row) -> Option<N>,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let mut metric = encoder.encode_descriptor(name, &help, None, MetricType::Gauge)?;
    for (labels, row) in rows {
        if let Some(v) = value(row) {
            ConstGauge::new(v).encode(metric.encode_family(labels.as_ref())?)?;
        }
    }
    Ok(())
}

/// Writes one counter with a series per instance whose count is not zero.
fn encode_counter(
    encoder: &mut DescriptorEncoder,
    rows: &[(Arc<InstanceLabels>, Row)],
    (name, help): (&str, &str),
    value: impl Fn(&Row) -> u64,
) -> Result<(), std::fmt::Error> {
    let help = format!("{help}.");
    let mut metric = encoder.encode_descriptor(name, &help, None, MetricType::Counter)?;
    for (labels, row) in rows {
        let v = value(row);
        if v > 0 {
            ConstCounter::new(v).encode(metric.encode_family(labels.as_ref())?)?;
        }
    }
    Ok(())
}

impl Collector for InstanceSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.snapshot();
        encode_gauge(&mut encoder, &rows, READY, |r| r.ready.map(i64::from))?;
        for (slot, (_, name, help)) in FIGURES.iter().enumerate() {
            encode_gauge(&mut encoder, &rows, (name, help), |r| r.figure(slot))?;
        }
        encode_gauge(&mut encoder, &rows, FIRING, |r| r.firing.map(i64::from))?;
        encode_counter(&mut encoder, &rows, RECONCILES, |r| r.reconciles)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::{encoding::text::encode, registry::Registry};

    #[test]
    fn each_instance_gets_its_series_and_unknown_figures_none() {
        let series = std::sync::Arc::new(InstanceSeries::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(series.clone()));
        series.set_ready("crm", "cache", true);
        series.set_figures(
            "crm",
            "cache",
            [
                (Figure::HitRatio, Some(0.825)),
                (Figure::MemoryUsedBytes, Some(1_048_576.0)),
                (Figure::ClientErrorRatio, None),
            ],
            2,
        );
        series.set_ready("web", "sessions", false);
        series.count_reconcile("crm", "cache");
        series.count_reconcile("crm", "cache");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for line in [
            "# TYPE upstash_cache_ready gauge",
            "upstash_cache_ready{namespace=\"crm\",name=\"cache\"} 1",
            "upstash_cache_ready{namespace=\"web\",name=\"sessions\"} 0",
            "# HELP upstash_cache_hit_ratio Cache hit ratio (0-1) over the last sampling window.",
            "upstash_cache_hit_ratio{namespace=\"crm\",name=\"cache\"} 0.825",
            "upstash_cache_memory_used_bytes{namespace=\"crm\",name=\"cache\"} 1048576.0",
            "upstash_cache_firing_alerts{namespace=\"crm\",name=\"cache\"} 2",
            "# TYPE upstash_cache_reconciles counter",
            "upstash_cache_reconciles_total{namespace=\"crm\",name=\"cache\"} 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("upstash_cache_client_error_ratio{"));
        assert!(!text.contains("upstash_cache_hit_ratio{namespace=\"web\""));
        assert!(!text.contains("upstash_cache_reconciles_total{namespace=\"web\""));

        // A figure that becomes unknown leaves no series; a deleted instance none at all.
        series.set_figures("crm", "cache", [(Figure::HitRatio, None)], 0);
        assert_eq!(series.figure("crm", "cache", Figure::HitRatio), None);
        series.forget("crm", "cache");
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(!text.contains("name=\"cache\""), "{text}");
    }
}
