//! A database's spend this month and its projection to the month's end (pure).
//!
//! Upstash's stats carry this month's billing (`total_monthly_billing`) and one point per day
//! (`dailybilling`). The projection adds, for every day left, the mean of the last complete days
//! (today's point is partial), or this month's daily average when there are none. Without
//! billing figures the guide's price model estimates both: $0.20 per 100K commands and $0.25 per
//! GB-month on pay as you go, a fixed plan's monthly price spread over the month.

use k8s_openapi::jiff::{Timestamp, civil::Date, tz::TimeZone};

use crate::{crd::Plan, upstash::DatabaseStats};

/// Complete days the recent daily spend is averaged over.
const RECENT_DAYS: usize = 3;
const USD_PER_COMMAND: f64 = 0.20 / 100_000.0;
const USD_PER_GB_MONTH: f64 = 0.25;

/// Where the figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Upstash's billing.
    Upstash,
    /// The price model (Upstash reported no billing).
    PriceModel,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upstash => "Upstash",
            Source::PriceModel => "PriceModel",
        }
    }
}

/// Spend in US dollars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    pub month_to_date_usd: f64,
    pub projected_month_end_usd: f64,
    pub source: Source,
}

/// How far into its month `now` is: (days elapsed, fractional, at least one hour's worth; days in
/// the month; today's date).
fn month_position(now: Timestamp) -> (f64, f64, Date) {
    let zoned = now.to_zoned(TimeZone::UTC);
    let date = zoned.date();
    let days_in_month = f64::from(date.days_in_month());
    let seconds_today = zoned.time().hour() as f64 * 3600.0
        + zoned.time().minute() as f64 * 60.0
        + zoned.time().second() as f64;
    let elapsed = f64::from(date.day() - 1) + seconds_today / 86_400.0;
    (elapsed.max(1.0 / 24.0), days_in_month, date)
}

/// The calendar date of a stats timestamp (`2025-08-31 15:12:52.79 +0000 UTC`).
fn point_date(x: &str) -> Option<Date> {
    x.get(..10)?.parse().ok()
}

/// Mean daily spend of the last complete days in `dailybilling`, if any was positive.
fn recent_daily(stats: &DatabaseStats, today: Date) -> Option<f64> {
    let complete: Vec<f64> = stats
        .dailybilling
        .iter()
        .enumerate()
        .filter(|(i, p)| match p.x.as_deref().and_then(point_date) {
            Some(d) => d < today,
            // Undated points: every one but the last (today's) is complete.
            None => *i + 1 < stats.dailybilling.len(),
        })
        .filter_map(|(_, p)| p.y)
        .filter(|y| y.is_finite() && *y >= 0.0)
        .collect();
    let recent = &complete[complete.len().saturating_sub(RECENT_DAYS)..];
    let sum: f64 = recent.iter().sum();
    (sum > 0.0).then(|| sum / recent.len() as f64)
}

/// This month's spend and its projection, when Upstash's figures or the plan allow one.
pub fn cost(stats: Option<&DatabaseStats>, plan: Option<Plan>, now: Timestamp) -> Option<Cost> {
    let (elapsed, days_in_month, today) = month_position(now);
    let remaining = (days_in_month - elapsed).max(0.0);
    if let Some(stats) = stats
        && let Some(mtd) = stats.total_monthly_billing.filter(|v| v.is_finite())
    {
        let mtd = mtd.max(0.0);
        let daily = recent_daily(stats, today).unwrap_or(mtd / elapsed);
        return Some(Cost {
            month_to_date_usd: mtd,
            projected_month_end_usd: mtd + daily * remaining,
            source: Source::Upstash,
        });
    }
    let plan = plan?;
    let share = elapsed / days_in_month;
    let (mtd, month) = match plan.monthly_price_usd() {
        Some(price) => (price * share, price),
        None => {
            let stats = stats?;
            let commands = stats.total_monthly_requests.unwrap_or(0.0).max(0.0);
            let gb = stats.current_storage.unwrap_or(0.0).max(0.0) / 1e9;
            let storage_month = gb * USD_PER_GB_MONTH;
            let commands_mtd = commands * USD_PER_COMMAND;
            (
                commands_mtd + storage_month * share,
                commands_mtd / share + storage_month,
            )
        }
    };
    Some(Cost {
        month_to_date_usd: mtd,
        projected_month_end_usd: month.max(mtd),
        source: Source::PriceModel,
    })
}

/// Dollars as status shows them: two decimals.
pub fn usd(v: f64) -> String {
    format!("{v:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: serde_json::Value) -> DatabaseStats {
        serde_json::from_value(json).unwrap()
    }

    /// 2026-04-11 12:00 UTC: 10.5 of April's 30 days are over.
    fn april_11_noon() -> Timestamp {
        "2026-04-11T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn projection_adds_the_recent_daily_spend_for_each_remaining_day() {
        let s = stats(serde_json::json!({
            "total_monthly_billing": 12.0,
            "dailybilling": [
                {"x": "2026-04-07 00:00:00 +0000 UTC", "y": 5.0},
                {"x": "2026-04-08 00:00:00 +0000 UTC", "y": 1.0},
                {"x": "2026-04-09 00:00:00 +0000 UTC", "y": 1.0},
                {"x": "2026-04-10 00:00:00 +0000 UTC", "y": 1.0},
                {"x": "2026-04-11 00:00:00 +0000 UTC", "y": 0.2},
            ],
        }));
        let c = cost(Some(&s), Some(Plan::Payg), april_11_noon()).unwrap();
        assert_eq!(c.source, Source::Upstash);
        assert_eq!(c.month_to_date_usd, 12.0);
        // The last three complete days average $1; 19.5 days remain.
        assert!((c.projected_month_end_usd - 31.5).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn without_daily_figures_the_months_average_is_projected() {
        let s = stats(serde_json::json!({"total_monthly_billing": 10.5}));
        let c = cost(Some(&s), None, april_11_noon()).unwrap();
        // $1 a day over 10.5 days, 19.5 days to go.
        assert!((c.projected_month_end_usd - 30.0).abs() < 1e-9, "{c:?}");
        assert_eq!(usd(c.projected_month_end_usd), "30.00");
    }

    #[test]
    fn the_price_model_fills_in_without_billing() {
        // A fixed plan: its price, spread over the month.
        let c = cost(None, Some(Plan::Fixed1Gb), april_11_noon()).unwrap();
        assert_eq!(c.source, Source::PriceModel);
        assert!((c.month_to_date_usd - 20.0 * 10.5 / 30.0).abs() < 1e-9);
        assert_eq!(c.projected_month_end_usd, 20.0);
        // Pay as you go: 1M commands so far ($2) and 2 GB stored ($0.50 a month).
        let s =
            stats(serde_json::json!({"total_monthly_requests": 1_000_000, "current_storage": 2e9}));
        let c = cost(Some(&s), Some(Plan::Payg), april_11_noon()).unwrap();
        assert!(
            (c.month_to_date_usd - (2.0 + 0.5 * 10.5 / 30.0)).abs() < 1e-9,
            "{c:?}"
        );
        assert!(
            (c.projected_month_end_usd - (2.0 * 30.0 / 10.5 + 0.5)).abs() < 1e-9,
            "{c:?}"
        );
        assert_eq!(
            cost(None, Some(Plan::Free), april_11_noon())
                .unwrap()
                .projected_month_end_usd,
            0.0
        );
        assert_eq!(cost(None, None, april_11_noon()), None);
        assert_eq!(cost(None, Some(Plan::Payg), april_11_noon()), None);
    }

    #[test]
    fn the_first_hour_of_a_month_does_not_explode() {
        let s = stats(serde_json::json!({"total_monthly_billing": 0.01}));
        let c = cost(Some(&s), None, "2026-05-01T00:00:10Z".parse().unwrap()).unwrap();
        assert!(
            c.projected_month_end_usd < 0.01 * 24.0 * 31.0 + 0.02,
            "{c:?}"
        );
    }
}
