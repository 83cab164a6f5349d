//! The figures an instance is judged by (pure). Server-side figures come from Upstash's stats
//! and the database object; client-side ones from the opt-in probe, named as such and given
//! only once the probe's window holds enough commands.

use k8s_openapi::jiff::Timestamp;

use super::{
    cost::{self, Cost},
    probe::ProbeWindow,
    thresholds::{self, Thresholds},
};
use crate::{
    crd::Plan,
    upstash::{Database, DatabaseStats, types::Point},
};

/// Trailing points searched for the latest server-side latency (the newest may be partial or
/// empty: a latency of 0 means no command in that interval).
const LATENCY_LOOKBACK: usize = 3;

/// Cumulative counters an eviction rate is computed from, read at one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteCounters {
    /// `evicted_keys` from the probe's `INFO`.
    pub evicted_keys: f64,
    /// Writes this month (Upstash's `total_monthly_write_requests`, else today's).
    pub writes: f64,
}

impl WriteCounters {
    /// The counters of a sample, when both the probe and the stats have them.
    pub fn read(stats: Option<&DatabaseStats>, evicted_keys: Option<f64>) -> Option<Self> {
        let stats = stats?;
        Some(Self {
            evicted_keys: evicted_keys?,
            writes: stats
                .total_monthly_write_requests
                .or(stats.daily_write_requests)?,
        })
    }

    /// Evictions and writes since `earlier`; `None` when a counter went backwards (a restart,
    /// a new month).
    pub fn since(self, earlier: Self) -> Option<(f64, f64)> {
        let evicted = self.evicted_keys - earlier.evicted_keys;
        let writes = self.writes - earlier.writes;
        (evicted >= 0.0 && writes >= 0.0).then_some((evicted, writes))
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
    /// Server-side latency from Upstash, in milliseconds.
    pub latency_mean_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Client-side figures of the probe (its round trip includes the network).
    pub client_p95_ms: Option<f64>,
    pub client_p99_ms: Option<f64>,
    pub client_error_rate_percent: Option<f64>,
    /// Commands in the probe's window; `None` when the probe is off.
    pub probe_samples: Option<usize>,
    /// Failed probe rounds in a row; `None` when the probe is off.
    pub consecutive_failures: Option<u32>,
    /// Keys evicted and writes since the previous sample, and the evictions in percent of the
    /// writes when there were enough writes to judge.
    pub evicted_keys: Option<f64>,
    pub writes: Option<f64>,
    pub evictions_percent: Option<f64>,
    /// Commands today (Upstash's count, the probe's included) and the limit they count against.
    pub daily_commands: Option<f64>,
    pub daily_command_limit: Option<f64>,
    pub daily_commands_percent: Option<f64>,
    pub cost: Option<Cost>,
    pub budget_usd: Option<f64>,
    /// The higher of this month's spend and its projection, in percent of the budget.
    pub budget_percent: Option<f64>,
}

/// What a sample knows.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub stats: Option<&'a DatabaseStats>,
    pub db: Option<&'a Database>,
    /// `spec.plan`, when the database object is not known.
    pub spec_plan: Option<Plan>,
    /// `spec.budget`, US dollars a month.
    pub budget_usd: Option<i64>,
    /// The probe's window; `None` when the probe is off.
    pub probe: Option<&'a ProbeWindow>,
    /// Evictions and writes since the previous sample.
    pub evictions: Option<(f64, f64)>,
}

fn sum(points: &[Point]) -> f64 {
    points
        .iter()
        .filter_map(|p| p.y)
        .filter(|y| y.is_finite() && *y >= 0.0)
        .sum()
}

fn last(points: &[Point]) -> Option<f64> {
    points
        .iter()
        .rev()
        .find_map(|p| p.y)
        .filter(|y| y.is_finite())
}

/// The newest positive value among the last few points.
fn recent_positive(points: &[Point]) -> Option<f64> {
    points
        .iter()
        .rev()
        .take(LATENCY_LOOKBACK)
        .find_map(|p| p.y.filter(|y| y.is_finite() && *y > 0.0))
}

fn percent(part: Option<f64>, whole: Option<f64>) -> Option<f64> {
    match (part, whole) {
        (Some(p), Some(w)) if w > 0.0 => Some(100.0 * p / w),
        _ => None,
    }
}

/// Derives the figures at `now`.
pub fn derive(inp: &Inputs<'_>, t: &Thresholds, now: Timestamp) -> Figures {
    let plan = inp.db.and_then(Database::plan).or(inp.spec_plan);
    let mut f = Figures::default();
    if let Some(stats) = inp.stats {
        f.hits = sum(&stats.hits);
        f.misses = sum(&stats.misses);
        let reads = f.hits + f.misses;
        if reads > 0.0 && reads >= t.hit_rate_min_requests {
            f.hit_rate_percent = Some(100.0 * f.hits / reads);
        }
        f.memory_used_bytes = stats.current_storage.or_else(|| last(&stats.diskusage));
        f.latency_mean_ms = recent_positive(&stats.latencymean);
        f.latency_p99_ms = recent_positive(&stats.latency_99);
        f.daily_commands = stats
            .daily_net_commands
            .or_else(|| last(&stats.dailyrequests));
    }
    f.memory_limit_bytes = inp
        .db
        .map(|d| d.db_disk_threshold as f64)
        .filter(|l| *l > 0.0)
        .or_else(|| plan.map(|p| p.data_limit_bytes() as f64));
    f.memory_percent = percent(f.memory_used_bytes, f.memory_limit_bytes);
    if let Some(window) = inp.probe {
        f.client_p95_ms = window.quantile_ms(0.95);
        f.client_p99_ms = window.quantile_ms(0.99);
        f.client_error_rate_percent = window.error_rate_percent();
        f.probe_samples = Some(window.samples());
        f.consecutive_failures = Some(window.consecutive_failures);
    }
    if let Some((evicted, writes)) = inp.evictions {
        f.evicted_keys = Some(evicted);
        f.writes = Some(writes);
        if writes >= t.evictions_min_writes {
            f.evictions_percent = percent(Some(evicted), Some(writes));
        }
    }
    f.daily_command_limit = t
        .daily_command_limit
        .or_else(|| plan.and_then(thresholds::plan_daily_command_limit));
    f.daily_commands_percent = percent(f.daily_commands, f.daily_command_limit);
    f.cost = cost::cost(inp.stats, plan, now);
    f.budget_usd = inp.budget_usd.filter(|b| *b > 0).map(|b| b as f64);
    f.budget_percent = percent(
        f.cost
            .map(|c| c.month_to_date_usd.max(c.projected_month_end_usd)),
        f.budget_usd,
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::probe::Outcome;

    fn stats(json: serde_json::Value) -> DatabaseStats {
        serde_json::from_value(json).unwrap()
    }

    fn db(json: serde_json::Value) -> Database {
        serde_json::from_value(json).unwrap()
    }

    fn noon() -> Timestamp {
        "2026-04-11T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn hit_rate_memory_latency_and_budget_from_upstash() {
        let s = stats(serde_json::json!({
            "hits": [{"x": "a", "y": 30}, {"x": "b", "y": 15}, {"x": "c", "y": null}],
            "misses": [{"x": "a", "y": 40}, {"x": "b", "y": 15}],
            "current_storage": 850_000_000u64,
            "latencymean": [{"x": "a", "y": 2.5}, {"x": "b", "y": 0}],
            "latency_99": [{"x": "a", "y": 9}, {"x": "b", "y": 61}, {"x": "c", "y": 0}],
            "total_monthly_billing": 45.0,
        }));
        let d = db(
            serde_json::json!({"database_id": "x", "type": "paid", "db_disk_threshold": 1_000_000_000u64}),
        );
        let inp = Inputs {
            stats: Some(&s),
            db: Some(&d),
            budget_usd: Some(50),
            ..Default::default()
        };
        let f = derive(&inp, &Thresholds::defaults(), noon());
        assert_eq!(f.hit_rate_percent, Some(45.0));
        assert_eq!(f.memory_percent, Some(85.0));
        assert_eq!(f.latency_p99_ms, Some(61.0), "the newest non-empty point");
        assert_eq!(f.latency_mean_ms, Some(2.5));
        // $45 by the 11th projects far past the budget: the projection is judged.
        assert!(f.budget_percent.unwrap() > 90.0, "{f:?}");
        assert_eq!(
            (f.probe_samples, f.consecutive_failures, f.client_p95_ms),
            (None, None, None),
            "no client-side figure without the probe"
        );
    }

    #[test]
    fn too_few_reads_or_writes_are_not_judged() {
        let s = stats(
            serde_json::json!({"hits": [{"x": "a", "y": 1}], "misses": [{"x": "a", "y": 9}]}),
        );
        let t = Thresholds::defaults();
        let inp = Inputs {
            stats: Some(&s),
            evictions: Some((5.0, 50.0)),
            ..Default::default()
        };
        let f = derive(&inp, &t, noon());
        assert_eq!(f.hit_rate_percent, None);
        assert_eq!(f.budget_percent, None);
        assert_eq!(f.evictions_percent, None, "50 writes are fewer than 100");
        assert_eq!(f.evicted_keys, Some(5.0));
        let inp = Inputs {
            evictions: Some((5.0, 250.0)),
            ..inp
        };
        assert_eq!(derive(&inp, &t, noon()).evictions_percent, Some(2.0));
    }

    #[test]
    fn disk_usage_and_plan_limits_are_fallbacks() {
        let s = stats(
            serde_json::json!({"diskusage": [{"x": "a", "y": 10}, {"x": "b", "y": 200_000_000u64}]}),
        );
        let d = db(serde_json::json!({"database_id": "x", "type": "free"}));
        let inp = Inputs {
            stats: Some(&s),
            db: Some(&d),
            ..Default::default()
        };
        let f = derive(&inp, &Thresholds::defaults(), noon());
        assert_eq!(f.memory_limit_bytes, Some(256_000_000.0));
        assert_eq!(f.memory_percent, Some(100.0 * 200.0 / 256.0));
        assert_eq!(f.cost.unwrap().projected_month_end_usd, 0.0);
    }

    #[test]
    fn daily_commands_against_the_plans_or_the_policys_limit() {
        let s = stats(serde_json::json!({"daily_net_commands": 8500}));
        let inp = Inputs {
            stats: Some(&s),
            spec_plan: Some(Plan::Free),
            ..Default::default()
        };
        let t = Thresholds::defaults();
        let f = derive(&inp, &t, noon());
        assert_eq!(f.daily_command_limit, Some(10_000.0));
        assert_eq!(f.daily_commands_percent, Some(85.0));
        let payg = Inputs {
            spec_plan: Some(Plan::Payg),
            ..inp
        };
        assert_eq!(derive(&payg, &t, noon()).daily_commands_percent, None);
        let mut limited = t.clone();
        limited.daily_command_limit = Some(17_000.0);
        assert_eq!(
            derive(&payg, &limited, noon()).daily_commands_percent,
            Some(50.0)
        );
    }

    #[test]
    fn client_side_figures_come_from_a_full_probe_window() {
        let mut w = ProbeWindow::new(4);
        w.record(&[Outcome::Ok(5.0), Outcome::Ok(7.0)]);
        let inp = Inputs {
            probe: Some(&w),
            ..Default::default()
        };
        let t = Thresholds::defaults();
        let f = derive(&inp, &t, noon());
        assert_eq!(f.probe_samples, Some(2));
        assert_eq!(f.client_error_rate_percent, None);
        w.record(&[Outcome::Ok(9.0), Outcome::Failed("503".into())]);
        let f = derive(
            &Inputs {
                probe: Some(&w),
                ..Default::default()
            },
            &t,
            noon(),
        );
        assert_eq!(f.client_error_rate_percent, Some(25.0));
        assert_eq!(f.consecutive_failures, Some(0));
    }

    #[test]
    fn eviction_counters_going_backwards_are_no_figure() {
        let a = WriteCounters {
            evicted_keys: 10.0,
            writes: 1000.0,
        };
        let b = WriteCounters {
            evicted_keys: 15.0,
            writes: 1400.0,
        };
        assert_eq!(b.since(a), Some((5.0, 400.0)));
        assert_eq!(a.since(b), None);
        let s = stats(
            serde_json::json!({"total_monthly_write_requests": 7, "daily_write_requests": 3}),
        );
        assert_eq!(
            WriteCounters::read(Some(&s), Some(2.0)),
            Some(WriteCounters {
                evicted_keys: 2.0,
                writes: 7.0
            })
        );
        assert_eq!(WriteCounters::read(Some(&s), None), None);
    }
}
