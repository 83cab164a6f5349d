//! The figures an instance is judged by, derived from Upstash's stats, the database object and
//! the operator's own probes (pure).

use std::collections::VecDeque;

use crate::{
    crd::Plan,
    upstash::{Database, DatabaseStats},
};

/// Probe outcomes kept for percentiles and the error rate.
const WINDOW: usize = 60;

/// Recent probe results of one database.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeWindow {
    latencies_ms: VecDeque<f64>,
    outcomes: VecDeque<bool>,
    /// Failed probe rounds in a row.
    pub consecutive_failures: u32,
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

impl ProbeWindow {
    /// Records one probe round: the latencies of its successful commands and how many failed.
    /// A round with no success counts as a connection failure.
    pub fn record(&mut self, latencies_ms: &[f64], failures: usize) {
        for l in latencies_ms {
            push(&mut self.latencies_ms, *l);
            push(&mut self.outcomes, true);
        }
        for _ in 0..failures {
            push(&mut self.outcomes, false);
        }
        if latencies_ms.is_empty() && failures > 0 {
            self.consecutive_failures += 1;
        } else if !latencies_ms.is_empty() {
            self.consecutive_failures = 0;
        }
    }

    /// The `q` quantile (0–1) of recent latencies, nearest rank.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.latencies_ms.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }

    /// Failed commands in percent of recent commands.
    pub fn error_rate_percent(&self) -> Option<f64> {
        if self.outcomes.is_empty() {
            return None;
        }
        let failed = self.outcomes.iter().filter(|ok| !**ok).count();
        Some(100.0 * failed as f64 / self.outcomes.len() as f64)
    }
}

/// What one sample says about an instance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub hits: f64,
    pub misses: f64,
    /// Percent of reads that hit, when there were enough reads to judge.
    pub hit_rate_percent: Option<f64>,
    pub memory_used_bytes: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    pub memory_percent: Option<f64>,
    pub monthly_cost_usd: Option<f64>,
    pub budget_usd: Option<f64>,
    pub budget_percent: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub error_rate_percent: Option<f64>,
    pub consecutive_failures: u32,
}

fn sum(points: &[crate::upstash::types::Point]) -> f64 {
    points
        .iter()
        .filter_map(|p| p.y)
        .filter(|y| y.is_finite() && *y >= 0.0)
        .sum()
}

fn last(points: &[crate::upstash::types::Point]) -> Option<f64> {
    points
        .iter()
        .rev()
        .find_map(|p| p.y)
        .filter(|y| y.is_finite())
}

/// Derives the figures. `min_requests` is the number of reads below which the hit rate is not
/// judged; `budget` is the instance's `spec.budget`.
pub fn derive(
    stats: Option<&DatabaseStats>,
    db: Option<&Database>,
    probe: &ProbeWindow,
    budget: Option<i64>,
    min_requests: f64,
) -> Figures {
    let mut f = Figures {
        p95_ms: probe.quantile_ms(0.95),
        p99_ms: probe.quantile_ms(0.99),
        error_rate_percent: probe.error_rate_percent(),
        consecutive_failures: probe.consecutive_failures,
        ..Default::default()
    };
    let plan = db.and_then(Database::plan);
    if let Some(stats) = stats {
        f.hits = sum(&stats.hits);
        f.misses = sum(&stats.misses);
        let reads = f.hits + f.misses;
        if reads > 0.0 && reads >= min_requests {
            f.hit_rate_percent = Some(100.0 * f.hits / reads);
        }
        f.memory_used_bytes = stats.current_storage.or_else(|| last(&stats.diskusage));
        f.monthly_cost_usd = stats.total_monthly_billing;
    }
    if f.monthly_cost_usd.is_none() {
        f.monthly_cost_usd = plan.and_then(Plan::monthly_price_usd);
    }
    f.memory_limit_bytes = db
        .map(|d| d.db_disk_threshold as f64)
        .filter(|l| *l > 0.0)
        .or_else(|| plan.map(|p| p.data_limit_bytes() as f64));
    if let (Some(used), Some(limit)) = (f.memory_used_bytes, f.memory_limit_bytes) {
        f.memory_percent = Some(100.0 * used / limit);
    }
    f.budget_usd = budget.filter(|b| *b > 0).map(|b| b as f64);
    if let (Some(cost), Some(budget)) = (f.monthly_cost_usd, f.budget_usd) {
        f.budget_percent = Some(100.0 * cost / budget);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: serde_json::Value) -> DatabaseStats {
        serde_json::from_value(json).unwrap()
    }

    fn db(json: serde_json::Value) -> Database {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn hit_rate_memory_and_budget() {
        let s = stats(serde_json::json!({
            "hits": [{"x": "a", "y": 30}, {"x": "b", "y": 15}, {"x": "c", "y": null}],
            "misses": [{"x": "a", "y": 40}, {"x": "b", "y": 15}],
            "current_storage": 850_000_000u64,
            "total_monthly_billing": 45.0,
        }));
        let d = db(
            serde_json::json!({"database_id": "x", "type": "paid", "db_disk_threshold": 1_000_000_000u64}),
        );
        let f = derive(Some(&s), Some(&d), &ProbeWindow::default(), Some(50), 100.0);
        assert_eq!(f.hit_rate_percent, Some(45.0));
        assert_eq!(f.memory_percent, Some(85.0));
        assert_eq!(f.budget_percent, Some(90.0));
        assert_eq!(f.p95_ms, None);
    }

    #[test]
    fn too_few_reads_are_not_judged() {
        let s = stats(
            serde_json::json!({"hits": [{"x": "a", "y": 1}], "misses": [{"x": "a", "y": 9}]}),
        );
        let f = derive(Some(&s), None, &ProbeWindow::default(), None, 100.0);
        assert_eq!(f.hit_rate_percent, None);
        assert_eq!(f.budget_percent, None);
    }

    #[test]
    fn disk_usage_and_plan_limits_are_fallbacks() {
        let s = stats(
            serde_json::json!({"diskusage": [{"x": "a", "y": 10}, {"x": "b", "y": 200_000_000u64}]}),
        );
        let d = db(serde_json::json!({"database_id": "x", "type": "free"}));
        let f = derive(Some(&s), Some(&d), &ProbeWindow::default(), None, 100.0);
        assert_eq!(f.memory_limit_bytes, Some(256_000_000.0));
        assert_eq!(f.memory_percent, Some(100.0 * 200.0 / 256.0));
        assert_eq!(f.monthly_cost_usd, Some(0.0));
    }

    #[test]
    fn probe_window_percentiles_errors_and_failures() {
        let mut w = ProbeWindow::default();
        w.record(&(1..=100).map(f64::from).collect::<Vec<_>>(), 0);
        assert_eq!(
            w.quantile_ms(0.95),
            Some(97.0),
            "the window keeps the last 60: 41..=100"
        );
        assert_eq!(w.error_rate_percent(), Some(0.0));
        w.record(&[], 3);
        w.record(&[], 3);
        assert_eq!(w.consecutive_failures, 2);
        assert_eq!(w.error_rate_percent(), Some(10.0));
        w.record(&[5.0], 2);
        assert_eq!(w.consecutive_failures, 0);
    }
}
