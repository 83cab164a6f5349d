//! Traffic counters per database and the body of `GET /v2/redis/stats/{id}` (reference §3).
//!
//! The data plane records every command into per-minute buckets; the stats endpoint samples them
//! into 60-point series over the requested period (`?period=1h|3h|12h|1d|3d|7d|30d`, default 1h)
//! and adds daily and monthly aggregates. Tests can override any field through the control API.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::Plan;

/// Samples kept per bucket for percentile estimates.
const MAX_SAMPLES: usize = 256;
/// Minute buckets kept (a little over 30 days would be 43 200; one week of minutes is enough for the
/// periods up to 7d, older minutes live on in the daily aggregates).
const MAX_BUCKETS: usize = 7 * 24 * 60 + 60;
/// Daily aggregates kept.
const MAX_DAYS: usize = 62;
/// Points per sampled series.
const POINTS: i64 = 60;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Bucket {
    /// Unix minute.
    pub minute: i64,
    pub commands: u64,
    pub reads: u64,
    pub writes: u64,
    pub hits: u64,
    pub misses: u64,
    pub bandwidth: u64,
    pub read_lat_sum: f64,
    pub write_lat_sum: f64,
    pub read_samples: Vec<f32>,
    pub write_samples: Vec<f32>,
    /// Gauges at the end of the minute.
    pub keys: u64,
    pub bytes: u64,
    pub per_command: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Day {
    /// Unix day.
    pub day: i64,
    pub commands: u64,
    pub reads: u64,
    pub writes: u64,
    pub bandwidth: u64,
}

/// One executed command, as the data plane reports it.
#[derive(Debug, Clone)]
pub struct CommandSample<'a> {
    pub name: &'a str,
    pub write: bool,
    pub latency_ms: f64,
    pub bytes: u64,
}

/// Traffic history of one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub minutes: VecDeque<Bucket>,
    pub days: VecDeque<Day>,
    pub total_commands: u64,
}

impl Traffic {
    fn bucket(&mut self, now_ms: i64) -> &mut Bucket {
        let minute = now_ms.div_euclid(60_000);
        if self.minutes.back().is_none_or(|b| b.minute != minute) {
            let (keys, bytes) = self.minutes.back().map_or((0, 0), |b| (b.keys, b.bytes));
            self.minutes.push_back(Bucket {
                minute,
                keys,
                bytes,
                ..Default::default()
            });
            while self.minutes.len() > MAX_BUCKETS {
                self.minutes.pop_front();
            }
        }
        self.minutes.back_mut().expect("just pushed")
    }

    fn day(&mut self, now_ms: i64) -> &mut Day {
        let day = now_ms.div_euclid(86_400_000);
        if self.days.back().is_none_or(|d| d.day != day) {
            self.days.push_back(Day {
                day,
                ..Default::default()
            });
            while self.days.len() > MAX_DAYS {
                self.days.pop_front();
            }
        }
        self.days.back_mut().expect("just pushed")
    }

    /// Records one command.
    pub fn record(&mut self, now_ms: i64, s: &CommandSample<'_>) {
        self.total_commands += 1;
        let b = self.bucket(now_ms);
        b.commands += 1;
        b.bandwidth += s.bytes;
        *b.per_command.entry(s.name.to_string()).or_default() += 1;
        let lat = s.latency_ms;
        if s.write {
            b.writes += 1;
            b.write_lat_sum += lat;
            if b.write_samples.len() < MAX_SAMPLES {
                b.write_samples.push(lat as f32);
            }
        } else {
            b.reads += 1;
            b.read_lat_sum += lat;
            if b.read_samples.len() < MAX_SAMPLES {
                b.read_samples.push(lat as f32);
            }
        }
        let d = self.day(now_ms);
        d.commands += 1;
        d.bandwidth += s.bytes;
        if s.write {
            d.writes += 1;
        } else {
            d.reads += 1;
        }
    }

    /// Records the key space gauges after a request.
    pub fn record_gauges(&mut self, now_ms: i64, keys: u64, bytes: u64) {
        let b = self.bucket(now_ms);
        b.keys = keys;
        b.bytes = bytes;
    }

    /// Records what the engine counted since its previous sample (keys looked up that were
    /// there or not: Redis's `keyspace_hits` / `keyspace_misses`) and its size now.
    pub fn record_sample(&mut self, now_ms: i64, s: &crate::engine::Sample) {
        let b = self.bucket(now_ms);
        b.hits += s.hits;
        b.misses += s.misses;
        b.keys = s.keys;
        b.bytes = s.bytes;
    }

    /// Keys and stored bytes at the last sample.
    pub fn current(&self) -> (u64, u64) {
        self.minutes.back().map_or((0, 0), |b| (b.keys, b.bytes))
    }
}

/// Go's `time.Time.String()` for a UTC instant: `2025-08-31 15:12:52.799480932 +0000 UTC`
/// (fraction with trailing zeros trimmed, omitted when zero).
pub fn go_time(ms: i64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let nanos = dt.subsec_nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

fn point(ms: i64, y: f64) -> Value {
    json!({"x": go_time(ms), "y": y})
}

fn weekday(day: i64) -> &'static str {
    // 1970-01-01 was a Thursday.
    [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ][day.rem_euclid(7) as usize]
}

fn percentile(samples: &mut [f32], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
    f64::from(samples[idx])
}

/// Period length in minutes for `?period=`.
pub fn period_minutes(period: Option<&str>) -> Option<i64> {
    Some(match period.unwrap_or("1h") {
        "1h" => 60,
        "3h" => 180,
        "12h" => 720,
        "1d" => 1440,
        "3d" => 4320,
        "7d" => 10080,
        "30d" => 43200,
        _ => return None,
    })
}

/// What the stats body needs besides the traffic.
#[derive(Clone, Copy)]
pub struct StatsInput<'a> {
    pub traffic: &'a Traffic,
    pub plan: &'a Plan,
    pub prod_pack: bool,
    pub current_keys: u64,
    pub current_bytes: u64,
    pub now_ms: i64,
    pub period_minutes: i64,
    pub overrides: &'a Map<String, Value>,
}

/// Daily cost in USD of one day's traffic (§6 prices).
fn daily_cost(plan: &Plan, prod_pack: bool, commands: u64, bytes: u64) -> f64 {
    let per_day = |monthly: f64| monthly / 30.0;
    let mut cost = match plan.name {
        "free" => 0.0,
        "payg" | "pro" => {
            let storage_gb = (bytes as f64 / (1u64 << 30) as f64 - 1.0).max(0.0);
            commands as f64 * 0.20 / 100_000.0 + per_day(storage_gb * 0.25)
        }
        _ => per_day(plan.price_per_month),
    };
    if prod_pack {
        cost += per_day(200.0);
    }
    cost
}

/// This month's cost in USD, as `total_monthly_billing` reports it (an override of that field
/// included): what a budget is compared with.
pub fn monthly_billing(inp: &StatsInput<'_>) -> f64 {
    if let Some(v) = inp
        .overrides
        .get("total_monthly_billing")
        .and_then(Value::as_f64)
    {
        return v;
    }
    let now = inp.now_ms;
    let today = now.div_euclid(86_400_000);
    let zoned = jiff::Timestamp::from_millisecond(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC);
    let month_start_day = today - i64::from(zoned.day()) + 1;
    (month_start_day..=today)
        .map(|d| {
            let c = inp
                .traffic
                .days
                .iter()
                .find(|x| x.day == d)
                .map_or(0, |x| x.commands);
            daily_cost(inp.plan, inp.prod_pack, c, inp.current_bytes)
        })
        .sum()
}

/// Series fields that the overrides may give as plain numbers, and whether they are daily.
const SERIES_FIELDS: &[(&str, bool)] = &[
    ("connection_count", false),
    ("keyspace", false),
    ("throughput", false),
    ("diskusage", false),
    ("latencymean", false),
    ("latency_99", false),
    ("read_latency_mean", false),
    ("read_latency_99", false),
    ("write_latency_mean", false),
    ("write_latency_99", false),
    ("hits", false),
    ("misses", false),
    ("read", false),
    ("write", false),
    ("dailyrequests", true),
    ("dailybilling", true),
    ("bandwidths", true),
];

/// Builds the stats body.
pub fn stats_body(inp: &StatsInput<'_>) -> Value {
    let now = inp.now_ms;
    let width = (inp.period_minutes / POINTS).max(1);
    let now_minute = now.div_euclid(60_000);
    let t = inp.traffic;
    let mut series: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut cmd_series: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let names: std::collections::BTreeSet<String> = t
        .minutes
        .iter()
        .filter(|b| b.minute > now_minute - inp.period_minutes)
        .flat_map(|b| b.per_command.keys().cloned())
        .collect();
    // Gauge carried forward from before the window.
    let first_minute = now_minute - (POINTS - 1) * width - width;
    // Buckets are in minute order: skip to the window once instead of scanning per point.
    let lo = t.minutes.partition_point(|b| b.minute <= first_minute);
    let mut gauge = lo
        .checked_sub(1)
        .and_then(|i| t.minutes.get(i))
        .map_or((0, 0), |b| (b.keys, b.bytes));
    let mut next = lo;
    for i in 0..POINTS {
        let end = now_minute - (POINTS - 1 - i) * width;
        let x_ms = if i == POINTS - 1 { now } else { end * 60_000 };
        let mut agg = Bucket::default();
        let mut per_cmd: BTreeMap<&str, u64> = BTreeMap::new();
        let first = next;
        while next < t.minutes.len() && t.minutes[next].minute <= end {
            next += 1;
        }
        for b in t.minutes.range(first..next) {
            agg.commands += b.commands;
            agg.reads += b.reads;
            agg.writes += b.writes;
            agg.hits += b.hits;
            agg.misses += b.misses;
            agg.read_lat_sum += b.read_lat_sum;
            agg.write_lat_sum += b.write_lat_sum;
            agg.read_samples.extend_from_slice(&b.read_samples);
            agg.write_samples.extend_from_slice(&b.write_samples);
            gauge = (b.keys, b.bytes);
            for (k, v) in &b.per_command {
                *per_cmd.entry(k.as_str()).or_default() += v;
            }
        }
        if i == POINTS - 1 {
            gauge = (inp.current_keys, inp.current_bytes);
        }
        let secs = (width * 60) as f64;
        let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
        let mut all: Vec<f32> = agg
            .read_samples
            .iter()
            .chain(agg.write_samples.iter())
            .copied()
            .collect();
        let mut push = |k: &'static str, y: f64| series.entry(k).or_default().push(point(x_ms, y));
        push("connection_count", 0.0);
        push("keyspace", gauge.0 as f64);
        push("diskusage", gauge.1 as f64);
        push("throughput", agg.commands as f64 / secs);
        push("hits", agg.hits as f64);
        push("misses", agg.misses as f64);
        push("read", agg.reads as f64 / secs);
        push("write", agg.writes as f64 / secs);
        push(
            "latencymean",
            mean(agg.read_lat_sum + agg.write_lat_sum, agg.reads + agg.writes),
        );
        push("latency_99", percentile(&mut all, 0.99));
        push("read_latency_mean", mean(agg.read_lat_sum, agg.reads));
        push("read_latency_99", percentile(&mut agg.read_samples, 0.99));
        push("write_latency_mean", mean(agg.write_lat_sum, agg.writes));
        push("write_latency_99", percentile(&mut agg.write_samples, 0.99));
        for n in &names {
            let y = per_cmd.get(n.as_str()).copied().unwrap_or(0) as f64;
            cmd_series
                .entry(n.clone())
                .or_default()
                .push(point(x_ms, y));
        }
    }

    // Daily aggregates: the last 5 days including today.
    let today = now.div_euclid(86_400_000);
    let day_of = |d: i64| {
        t.days
            .iter()
            .find(|x| x.day == d)
            .cloned()
            .unwrap_or_default()
    };
    let mut dailyrequests = vec![];
    let mut dailybilling = vec![];
    let mut bandwidths = vec![];
    let mut days = vec![];
    for d in (today - 4)..=today {
        let agg = day_of(d);
        let x = d * 86_400_000;
        dailyrequests.push(point(x, agg.commands as f64));
        dailybilling.push(point(
            x,
            daily_cost(inp.plan, inp.prod_pack, agg.commands, inp.current_bytes),
        ));
        bandwidths.push(point(x, agg.bandwidth as f64));
        days.push(weekday(d));
    }
    let today_agg = day_of(today);

    // Month to date.
    let zoned = jiff::Timestamp::from_millisecond(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned(jiff::tz::TimeZone::UTC);
    let month_start_day = today - i64::from(zoned.day()) + 1;
    let month: Vec<&Day> = t.days.iter().filter(|d| d.day >= month_start_day).collect();
    let sum = |f: fn(&Day) -> u64| month.iter().map(|d| f(d)).sum::<u64>();
    let billing = monthly_billing(&StatsInput {
        overrides: &Map::new(),
        ..*inp
    });

    let mut body = Map::new();
    for (k, v) in series {
        body.insert(k.to_string(), Value::Array(v));
    }
    body.insert("monitor_count".into(), point(now, 0.0));
    body.insert("daily_net_commands".into(), json!(today_agg.commands));
    body.insert("daily_read_requests".into(), json!(today_agg.reads));
    body.insert("daily_write_requests".into(), json!(today_agg.writes));
    body.insert("dailyrequests".into(), Value::Array(dailyrequests));
    body.insert("days".into(), json!(days));
    body.insert("dailybilling".into(), Value::Array(dailybilling));
    body.insert("dailybandwidth".into(), json!(today_agg.bandwidth));
    body.insert("bandwidths".into(), Value::Array(bandwidths));
    body.insert(
        "total_monthly_bandwidth".into(),
        json!(sum(|d| d.bandwidth)),
    );
    body.insert("total_monthly_requests".into(), json!(sum(|d| d.commands)));
    body.insert(
        "total_monthly_read_requests".into(),
        json!(sum(|d| d.reads)),
    );
    body.insert(
        "total_monthly_write_requests".into(),
        json!(sum(|d| d.writes)),
    );
    body.insert("total_monthly_script_requests".into(), json!(0));
    body.insert("total_monthly_storage".into(), json!(inp.current_bytes));
    body.insert("current_storage".into(), json!(inp.current_bytes));
    body.insert("total_monthly_billing".into(), json!(billing));
    body.insert("queue_optimized".into(), json!(false));
    body.insert(
        "command_counts".into(),
        Value::Array(
            cmd_series
                .into_iter()
                .map(|(k, v)| json!({"metric_identifier": k, "data_points": v}))
                .collect(),
        ),
    );
    for legacy in [
        "produce_throughput",
        "consume_throughput",
        "latencymax",
        "latencymin",
        "dailyproduce",
        "dailyconsume",
    ] {
        body.insert(legacy.into(), Value::Null);
    }
    body.insert("total_monthly_produce".into(), json!(0));
    body.insert("total_monthly_consume".into(), json!(0));

    apply_overrides(&mut body, inp.overrides, now, width);
    Value::Object(body)
}

/// Applies control-API overrides: a series given as numbers becomes points ending now (one per
/// sample width, or per day for daily series); anything else replaces the field verbatim.
fn apply_overrides(
    body: &mut Map<String, Value>,
    overrides: &Map<String, Value>,
    now: i64,
    width: i64,
) {
    let today = now.div_euclid(86_400_000);
    for (k, v) in overrides {
        let daily = SERIES_FIELDS.iter().find(|(n, _)| n == k).map(|(_, d)| *d);
        let value = match (daily, v) {
            (Some(daily), Value::Array(items))
                if items.iter().all(|i| i.is_number() || i.is_null()) =>
            {
                let n = items.len() as i64;
                let pts: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, y)| {
                        let back = n - 1 - i as i64;
                        let x = if daily {
                            (today - back) * 86_400_000
                        } else if back == 0 {
                            now
                        } else {
                            now - back * width * 60_000
                        };
                        json!({"x": go_time(x), "y": y})
                    })
                    .collect();
                if daily && k == "dailyrequests" && !overrides.contains_key("days") {
                    let days: Vec<&str> = (0..n).map(|i| weekday(today - (n - 1 - i))).collect();
                    body.insert("days".into(), json!(days));
                }
                Value::Array(pts)
            }
            _ => v.clone(),
        };
        body.insert(k.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::plan_by_name;

    #[test]
    fn go_time_format() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_time(1_693_494_772_799),
            "2023-08-31 15:12:52.799 +0000 UTC"
        );
        assert_eq!(
            go_time(1_693_494_772_500),
            "2023-08-31 15:12:52.5 +0000 UTC"
        );
    }

    #[test]
    fn windows_bucket_older_traffic() {
        let mut t = Traffic::default();
        let now = 1_700_000_000_000;
        for (ago_min, hits) in [(150, 100), (30, 10), (5, 1)] {
            t.record(
                now - ago_min * 60_000,
                &CommandSample {
                    name: "GET",
                    write: false,
                    latency_ms: 1.0,
                    bytes: 1,
                },
            );
            t.record_sample(
                now - ago_min * 60_000,
                &crate::engine::Sample {
                    hits,
                    keys: hits,
                    bytes: hits,
                    ..Default::default()
                },
            );
        }
        let plan = crate::model::plan_by_name("payg", false).unwrap();
        let overrides = Map::new();
        let body = |minutes| {
            stats_body(&StatsInput {
                traffic: &t,
                plan,
                prod_pack: false,
                current_keys: 7,
                current_bytes: 7,
                now_ms: now,
                period_minutes: minutes,
                overrides: &overrides,
            })
        };
        let ys = |b: &Value, k: &str| {
            b[k].as_array()
                .unwrap()
                .iter()
                .map(|p| p["y"].as_f64().unwrap())
                .collect::<Vec<_>>()
        };
        let hour = body(60);
        assert_eq!(ys(&hour, "hits").iter().sum::<f64>(), 11.0);
        // Gauges carry forward: 100 before the window, 10 from 30 minutes ago, now 7.
        let keys = ys(&hour, "keyspace");
        assert_eq!(keys[0], 100.0);
        assert_eq!(keys[45], 10.0);
        assert_eq!(keys[59], 7.0);
        let three = body(180);
        assert_eq!(ys(&three, "hits").iter().sum::<f64>(), 111.0);
        assert_eq!(three["hits"].as_array().unwrap().len(), 60);
    }

    #[test]
    fn weekdays() {
        assert_eq!(weekday(0), "Thursday");
        assert_eq!(weekday(3), "Sunday");
    }

    #[test]
    fn body_reflects_traffic_and_overrides() {
        let mut t = Traffic::default();
        let now = 1_700_000_000_000;
        for (hits, misses) in [(1, 0), (0, 1), (1, 0)] {
            t.record(
                now - 1000,
                &CommandSample {
                    name: "GET",
                    write: false,
                    latency_ms: 2.0,
                    bytes: 10,
                },
            );
            t.record_sample(
                now - 1000,
                &crate::engine::Sample {
                    hits,
                    misses,
                    keys: 3,
                    bytes: 30,
                    ..Default::default()
                },
            );
        }
        let overrides = Map::new();
        let plan = plan_by_name("payg", false).unwrap();
        let inp = StatsInput {
            traffic: &t,
            plan,
            prod_pack: false,
            current_keys: 3,
            current_bytes: 30,
            now_ms: now,
            period_minutes: 60,
            overrides: &overrides,
        };
        let b = stats_body(&inp);
        let sum = |k: &str| {
            b[k].as_array()
                .unwrap()
                .iter()
                .map(|p| p["y"].as_f64().unwrap())
                .sum::<f64>()
        };
        assert_eq!(b["hits"].as_array().unwrap().len(), 60);
        assert_eq!(sum("hits"), 2.0);
        assert_eq!(sum("misses"), 1.0);
        assert_eq!(b["current_storage"], json!(30));
        assert_eq!(b["daily_net_commands"], json!(3));
        assert!(b["monitor_count"].is_object());
        assert_eq!(b["days"].as_array().unwrap().len(), 5);
        assert_eq!(b["dailyrequests"].as_array().unwrap().len(), 5);
        assert!(b["hits"][0]["x"].as_str().unwrap().ends_with("+0000 UTC"));
        assert_eq!(b["command_counts"][0]["metric_identifier"], json!("GET"));

        let mut overrides = Map::new();
        overrides.insert("hits".into(), json!([5, 6]));
        overrides.insert("current_storage".into(), json!(999));
        let inp = StatsInput {
            overrides: &overrides,
            ..inp
        };
        let b = stats_body(&inp);
        assert_eq!(b["hits"].as_array().unwrap().len(), 2);
        assert_eq!(b["hits"][1]["y"], json!(6));
        assert_eq!(b["current_storage"], json!(999));
    }
}
