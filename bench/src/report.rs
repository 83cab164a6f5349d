//! Markdown tables of the results (pasted into `BENCHMARKS.md`).

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    chaos::{ChaosResult, OperatorPhase},
    common::histogram_percentile,
    observe::{CallPhase, ChangePhase, EventPhase, OPERATOR_MANAGERS, ProcPhase, is_mutating},
    scale::{RequestRow, ScaleResult},
    stats::mib,
};

/// Upstash calls of several phases added up.
fn calls_of(r: &BTreeMap<String, CallPhase>, phases: &[&str]) -> CallPhase {
    let mut out = CallPhase::default();
    for p in phases.iter().filter_map(|p| r.get(*p)) {
        for (k, v) in &p.by_endpoint {
            *out.by_endpoint.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &p.by_method {
            *out.by_method.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &p.by_status {
            *out.by_status.entry(k.clone()).or_default() += v;
        }
        out.faulted += p.faulted;
        out.data_plane += p.data_plane;
        out.mutating += p.mutating;
        out.creates_performed += p.creates_performed;
    }
    out
}

/// New resourceVersions of `kind` written by the operator's field managers.
fn operator_changes(r: &BTreeMap<String, ChangePhase>, phases: &[&str], kind: &str) -> u64 {
    phases
        .iter()
        .filter_map(|p| r.get(*p)?.by_manager.get(kind))
        .flat_map(|m| m.iter())
        .filter(|(manager, _)| manager.split('+').any(|m| OPERATOR_MANAGERS.contains(&m)))
        .map(|(_, v)| v)
        .sum()
}

/// All new resourceVersions of `kind` (any writer), in `phases`.
fn all_changes(r: &BTreeMap<String, ChangePhase>, phases: &[&str], kind: &str) -> u64 {
    phases
        .iter()
        .filter_map(|p| r.get(*p)?.by_manager.get(kind))
        .flat_map(|m| m.values())
        .sum()
}

/// Whether a request row is the bench's own (POST and DELETE of CacheInstances) or the
/// garbage collector's (DELETE of the owned Secrets).
fn bench_or_gc(row: &RequestRow) -> bool {
    (row.resource == "cacheinstances" && matches!(row.verb.as_str(), "POST" | "DELETE"))
        || (row.resource == "secrets" && row.verb == "DELETE")
}

/// Mutating API server requests the operator made in `phases`: everything but the bench's
/// own POST/DELETE of CacheInstances and the garbage collector's DELETE of Secrets.
fn operator_requests(
    r: &BTreeMap<String, Vec<RequestRow>>,
    phases: &[&str],
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for row in phases.iter().filter_map(|p| r.get(*p)).flatten() {
        if !is_mutating(&row.verb) || bench_or_gc(row) {
            continue;
        }
        *out.entry(format!("{} {}", row.verb, row.resource))
            .or_default() += row.count;
    }
    out
}

/// Read requests (GET, LIST, WATCH) in `phases`, by verb and resource. They include the
/// bench's own watches (one LIST and WATCH each of CacheInstances, Secrets and Events) and
/// kube-controller-manager's.
fn read_requests(r: &BTreeMap<String, Vec<RequestRow>>, phases: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for row in phases.iter().filter_map(|p| r.get(*p)).flatten() {
        if is_mutating(&row.verb) {
            continue;
        }
        *out.entry(format!("{} {}", row.verb, row.resource))
            .or_default() += row.count;
    }
    out
}

/// Requests of one verb on one resource in `phases`.
fn requests_of(
    r: &BTreeMap<String, Vec<RequestRow>>,
    phases: &[&str],
    verb: &str,
    resource: &str,
) -> f64 {
    phases
        .iter()
        .filter_map(|p| r.get(*p))
        .flatten()
        .filter(|row| row.verb == verb && row.resource == resource)
        .map(|row| row.count)
        .sum()
}

/// The operator's writes in `phases` other than Events (which are counted apart).
fn writes_without_events(r: &BTreeMap<String, Vec<RequestRow>>, phases: &[&str]) -> f64 {
    operator_requests(r, phases)
        .iter()
        .filter(|(k, _)| !k.ends_with(" events"))
        .map(|(_, v)| v)
        .sum()
}

/// Events about CacheInstances in `phases`, by reason.
fn events_of(r: &BTreeMap<String, EventPhase>, phases: &[&str]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in phases.iter().filter_map(|p| r.get(*p)) {
        for (k, v) in &p.by_reason {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    out
}

fn fmt_map(m: &BTreeMap<String, u64>, per: f64) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {}", num(*v as f64 / per)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_fmap(m: &BTreeMap<String, f64>, per: f64) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {}", num(v / per)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A number with few decimals.
fn num(v: f64) -> String {
    // Differences of equal counters give -0.
    let v = if v == 0.0 { 0.0 } else { v };
    if (v == v.trunc() && v.abs() < 1e9) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn phase<'a>(m: &'a BTreeMap<String, ProcPhase>, name: &str) -> Option<&'a ProcPhase> {
    m.get(name)
}

fn cpu(m: &BTreeMap<String, ProcPhase>, phases: &[&str]) -> f64 {
    phases
        .iter()
        .filter_map(|p| m.get(*p))
        .map(|p| p.cpu_s)
        .sum()
}

fn peak(m: &BTreeMap<String, ProcPhase>, phases: &[&str]) -> u64 {
    phases
        .iter()
        .filter_map(|p| m.get(*p))
        .map(|p| p.peak_rss)
        .max()
        .unwrap_or_default()
}

/// The operator's peak RSS while provisioning, less its RSS with no instance, per 1,000
/// instances.
pub fn rss_per_thousand(r: &ScaleResult) -> f64 {
    let base = phase(&r.processes.operator, "baseline").map_or(0, |p| p.last_rss);
    let peak = peak(&r.processes.operator, &["converge", "settle"]);
    mib(peak.saturating_sub(base)) / (r.config.n as f64 / 1000.0)
}

/// The phases of a scale run in order, as the tables name them.
const PHASES: [(&str, &str); 8] = [
    ("converge", "create (until Ready)"),
    ("settle", "settle"),
    (
        "reconfigure",
        "restart with the steady-state flags (first pass)",
    ),
    ("steady", "steady"),
    ("restart", "restart (first pass)"),
    ("provision", "provisioning during a restart"),
    ("delete", "delete"),
    ("collect", "Secrets collected"),
];

/// The scale results, one column per N.
pub fn scale_markdown(results: &[ScaleResult]) -> String {
    let mut s = String::new();
    let header: Vec<String> = results
        .iter()
        .map(|r| format!("N = {}", r.config.n))
        .collect();
    let _ = writeln!(s, "| | {} |", header.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(results.len()));
    let row = |s: &mut String, name: &str, f: &dyn Fn(&ScaleResult) -> String| {
        let cells: Vec<String> = results.iter().map(f).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    let converge = ["converge"];
    let provision = ["converge", "settle"];
    row(&mut s, "Operator flags (convergence)", &|r| {
        format!("`{}`", r.converge_flags.join(" "))
    });
    row(&mut s, "Added Upstash latency", &|r| {
        format!("{} ms", r.config.latency_ms)
    });
    if results.iter().any(|r| r.config.policies > 0) {
        row(
            &mut s,
            "CachePolicies (each selecting)",
            &|r| match r.config.policies {
                0 => "none (default thresholds)".to_string(),
                k => format!("{k} ({} instances)", r.config.n / k),
            },
        );
    }
    row(&mut s, "Bench applies all CacheInstances in", &|r| {
        format!("{:.1} s", r.apply_s)
    });
    row(&mut s, "**All Ready**", &|r| {
        format!("**{:.1} s**", r.all_ready_s)
    });
    row(&mut s, "Lower bound: latency part ⌈N/C⌉·k·L", &|r| {
        format!("{:.1} s", r.bound.latency_s)
    });
    row(&mut s, "Lower bound: rate part (N·k − B)/R", &|r| {
        format!("{:.1} s", r.bound.rate_s)
    });
    row(&mut s, "**Ratio to the lower bound**", &|r| {
        format!("**{:.2}×**", r.ratio)
    });
    row(
        &mut s,
        "**Creation → Ready p50** / p90 / p99 / max",
        &|r| {
            format!(
                "**{:.2}** / {:.2} / {:.2} / {:.2} s",
                r.ready_p50_s, r.ready_p90_s, r.ready_p99_s, r.ready_max_s
            )
        },
    );
    row(&mut s, "Upstash calls per instance until Ready", &|r| {
        let n = r.config.n as f64;
        fmt_map(&calls_of(&r.calls, &converge).by_endpoint, n)
    });
    row(&mut s, "Upstash calls per instance until settled", &|r| {
        let n = r.config.n as f64;
        let c = calls_of(&r.calls, &provision);
        format!(
            "{} (data plane {})",
            fmt_map(&c.by_endpoint, n),
            num(c.data_plane as f64 / n)
        )
    });
    row(&mut s, "Reconciles per instance until settled", &|r| {
        num(r.reconciles_per_instance)
    });
    row(
        &mut s,
        "**K8s writes per instance until Ready / until settled** (apiserver, Events apart)",
        &|r| {
            let n = r.config.n as f64;
            format!(
                "**{}** / {}",
                num(writes_without_events(&r.requests, &converge) / n),
                num(writes_without_events(&r.requests, &provision) / n)
            )
        },
    );
    row(
        &mut s,
        "K8s write requests per instance until Ready (apiserver)",
        &|r| {
            fmt_fmap(
                &operator_requests(&r.requests, &converge),
                r.config.n as f64,
            )
        },
    );
    row(
        &mut s,
        "K8s write requests per instance until settled (apiserver)",
        &|r| {
            fmt_fmap(
                &operator_requests(&r.requests, &provision),
                r.config.n as f64,
            )
        },
    );
    row(
        &mut s,
        "K8s object writes per instance until settled (watch, operator's managers)",
        &|r| {
            let n = r.config.n as f64;
            format!(
                "CacheInstance {}, Secret {}",
                num(operator_changes(&r.changes, &provision, "CacheInstance") as f64 / n),
                num(operator_changes(&r.changes, &provision, "Secret") as f64 / n)
            )
        },
    );
    row(
        &mut s,
        "**Events per instance until Ready** / until settled",
        &|r| {
            let n = r.config.n as f64;
            let ready = events_of(&r.events, &converge);
            let settled = events_of(&r.events, &provision);
            format!(
                "**{}** ({}) / {}",
                num(ready.values().sum::<u64>() as f64 / n),
                fmt_map(&ready, n),
                num(settled.values().sum::<u64>() as f64 / n)
            )
        },
    );
    row(
        &mut s,
        "K8s read requests per instance until Ready (apiserver)",
        &|r| fmt_fmap(&read_requests(&r.requests, &converge), r.config.n as f64),
    );
    row(
        &mut s,
        "K8s read requests per instance until settled (apiserver)",
        &|r| fmt_fmap(&read_requests(&r.requests, &provision), r.config.n as f64),
    );
    row(
        &mut s,
        "**Secret GETs per instance**: until Ready / settled / restart / steady per interval",
        &|r| {
            let n = r.config.n as f64;
            let per = f64::from(r.config.steady_intervals);
            let get = |p: &[&str]| requests_of(&r.requests, p, "GET", "secrets");
            format!(
                "**{}** / {} / {} / **{}**",
                num(get(&converge) / n),
                num(get(&["settle"]) / n),
                num(get(&["restart"]) / n),
                num(get(&["steady"]) / n / per)
            )
        },
    );
    row(&mut s, "Operator RSS with no instance (baseline)", &|r| {
        phase(&r.processes.operator, "baseline")
            .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.last_rss)))
    });
    row(
        &mut s,
        "**Operator peak RSS (VmHWM) while provisioning**",
        &|r| {
            phase(&r.processes.operator, "settle")
                .or(phase(&r.processes.operator, "converge"))
                .map_or("?".into(), |p| format!("**{:.1} MiB**", mib(p.hwm)))
        },
    );
    row(
        &mut s,
        "**Operator RSS per 1,000 instances** (peak − baseline)",
        &|r| format!("**{:.1} MiB**", rss_per_thousand(r)),
    );
    row(&mut s, "Operator RSS idle after convergence", &|r| {
        phase(&r.processes.operator, "idle")
            .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.last_rss)))
    });
    row(&mut s, "Operator RSS idle in steady state", &|r| {
        phase(&r.processes.operator, "steady")
            .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.last_rss)))
    });
    row(
        &mut s,
        "Peak RSS: operator / emulator with its Redis engines / control plane (whole run)",
        &|r| {
            let all: Vec<&str> = PHASES.iter().map(|(p, _)| *p).collect();
            format!(
                "{:.0} / {:.0} / {:.0} MiB",
                mib(peak(&r.processes.operator, &all)),
                mib(peak(&r.processes.emulator, &all)),
                mib(peak(&r.processes.control_plane, &all))
            )
        },
    );
    row(
        &mut s,
        "Emulator's Redis engines running at most at once",
        &|r| {
            let most = r.processes.emulator.values().map(|p| p.peak_procs).max();
            most.map_or("?".into(), |n| n.saturating_sub(1).to_string())
        },
    );
    for (p, label) in PHASES {
        row(
            &mut s,
            &format!("CPU s, {label}: operator / emulator / control plane (wall)"),
            &|r| {
                let wall = r.durations.get(p).copied().unwrap_or(0.0);
                format!(
                    "{:.1} / {:.1} / {:.1} ({:.0} s)",
                    cpu(&r.processes.operator, &[p]),
                    cpu(&r.processes.emulator, &[p]),
                    cpu(&r.processes.control_plane, &[p]),
                    wall
                )
            },
        );
    }
    row(&mut s, "Steady state: resync interval, window", &|r| {
        format!(
            "{} s × {} = {:.0} s",
            r.config.steady_resync.as_secs(),
            r.config.steady_intervals,
            r.steady_window_s
        )
    });
    row(
        &mut s,
        "Restart with the steady-state flags: first pass over every instance",
        &|r| format!("{:.1} s", r.reconfigure_first_pass_s),
    );
    row(
        &mut s,
        "**Restart** (same flags): first pass over every instance",
        &|r| format!("**{:.1} s**", r.restart_first_pass_s),
    );
    row(
        &mut s,
        "**Restart: Upstash calls per minute**, first minute / whole first pass / steady state",
        &|r| {
            let first: u64 = r.restart_first_minute.by_endpoint.values().sum();
            format!(
                "**{first}** ({}) / {:.0} / **{:.0}**",
                fmt_map(&r.restart_first_minute.by_endpoint, 1.0),
                r.restart_calls_per_min,
                r.steady_calls_per_min
            )
        },
    );
    row(
        &mut s,
        "**Provisioning during a restart**: new instances, all Ready after / creation → Ready p50 / max",
        &|r| {
            format!(
                "{}, **{:.1} s** / {:.2} / {:.2} s",
                r.config.provision_during_restart,
                r.provision_all_ready_s,
                r.provision_p50_s,
                r.provision_max_s
            )
        },
    );
    row(&mut s, "Steady: Upstash calls per resync interval", &|r| {
        let per = f64::from(r.config.steady_intervals);
        let c = calls_of(&r.calls, &["steady"]);
        format!(
            "{} (data plane {})",
            fmt_map(&c.by_endpoint, per),
            num(c.data_plane as f64 / per)
        )
    });
    row(
        &mut s,
        "**Steady: mutating Upstash calls per interval**",
        &|r| {
            let per = f64::from(r.config.steady_intervals);
            format!(
                "**{}**",
                num(calls_of(&r.calls, &["steady"]).mutating as f64 / per)
            )
        },
    );
    row(
        &mut s,
        "**Steady: K8s writes per interval (watch / apiserver)**",
        &|r| {
            let per = f64::from(r.config.steady_intervals);
            let watch = all_changes(&r.changes, &["steady"], "CacheInstance")
                + all_changes(&r.changes, &["steady"], "Secret");
            let api: f64 = operator_requests(&r.requests, &["steady"]).values().sum();
            format!("**{} / {}**", num(watch as f64 / per), num(api / per))
        },
    );
    row(
        &mut s,
        "Steady: K8s read requests per interval (apiserver)",
        &|r| {
            fmt_fmap(
                &read_requests(&r.requests, &["steady"]),
                f64::from(r.config.steady_intervals),
            )
        },
    );
    row(
        &mut s,
        "Restart (first pass): mutating calls / K8s writes",
        &|r| {
            let c = calls_of(&r.calls, &["restart"]);
            let watch = all_changes(&r.changes, &["restart"], "CacheInstance")
                + all_changes(&r.changes, &["restart"], "Secret");
            let api: f64 = operator_requests(&r.requests, &["restart"]).values().sum();
            format!("{} / {} (apiserver {})", c.mutating, watch, num(api))
        },
    );
    row(&mut s, "**Delete all, every database gone**", &|r| {
        format!(
            "**{:.1} s** (bound {:.1} s, {:.2}×)",
            r.delete_s, r.delete_bound.bound_s, r.delete_ratio
        )
    });
    row(&mut s, "Delete: Upstash calls per instance", &|r| {
        fmt_map(
            &calls_of(&r.calls, &["delete"]).by_endpoint,
            r.config.n as f64,
        )
    });
    row(
        &mut s,
        "Delete: K8s write requests per instance (operator)",
        &|r| {
            fmt_fmap(
                &operator_requests(&r.requests, &["delete"]),
                r.config.n as f64,
            )
        },
    );
    row(
        &mut s,
        "Secrets removed by the garbage collector after",
        &|r| {
            r.secrets_gone_s.map_or_else(
                || format!("not within the wait ({} left)", r.secrets_left),
                |t| format!("{t:.1} s"),
            )
        },
    );
    row(
        &mut s,
        "Credentials Secret released (in-use finalizer removed) after",
        &|r| {
            r.credentials_released_s.map_or_else(
                || "not within the wait".to_string(),
                |t| format!("{t:.1} s"),
            )
        },
    );
    row(
        &mut s,
        "Left after delete: databases / CacheInstances / Secrets",
        &|r| {
            format!(
                "{} / {} / {}",
                r.databases_left, r.instances_left, r.secrets_left
            )
        },
    );
    row(
        &mut s,
        "Circuit-breaker openings / failed reconciles",
        &|r| format!("{} / {}", num(r.breaker_openings), num(r.reconcile_errors)),
    );
    s
}

fn met(b: bool) -> &'static str {
    if b { "met" } else { "NOT met" }
}

/// The targets each scale run is measured against.
pub fn scale_targets(results: &[ScaleResult]) -> String {
    let mut out = String::new();
    for r in results {
        let n = r.config.n;
        let nf = n as f64;
        let raised = r.config.rate_limit >= 1000;
        let mut parts = Vec::new();
        if raised {
            if n == 1000 {
                parts.push(format!(
                    "all Ready under 15 s: {} ({:.1} s)",
                    met(r.all_ready_s < 15.0),
                    r.all_ready_s
                ));
            }
            if n == 100 {
                parts.push(format!(
                    "creation → Ready p50 ≤ 0.5 s: {} ({:.2} s)",
                    met(r.ready_p50_s <= 0.5),
                    r.ready_p50_s
                ));
            }
        } else {
            parts.push(format!(
                "all Ready ≤ 1.25× the bound: {} ({:.2}×)",
                met(r.ratio <= 1.25),
                r.ratio
            ));
        }
        let writes = writes_without_events(&r.requests, &["converge"]) / nf;
        let events: u64 = events_of(&r.events, &["converge"]).values().sum();
        let events = events as f64 / nf;
        parts.push(format!(
            "≤ 4 K8s writes and 1 Event per instance until Ready: {} ({} writes, {} Events)",
            met(writes <= 4.0 + 1e-9 && events <= 1.0 + 1e-9),
            num(writes),
            num(events)
        ));
        let hwm = r
            .processes
            .operator
            .values()
            .map(|p| p.hwm)
            .max()
            .unwrap_or_default();
        let rss_limit = match n {
            n if n >= 10_000 => Some(128),
            n if n >= 1000 => Some(32),
            _ => None,
        };
        if let Some(limit) = rss_limit {
            parts.push(format!(
                "operator RSS < {limit} MiB: {} ({:.1} MiB peak over all phases)",
                met(hwm < limit * 1024 * 1024),
                mib(hwm)
            ));
        }
        let get = |p: &[&str]| requests_of(&r.requests, p, "GET", "secrets");
        let ready_gets = get(&["converge"]) / nf;
        let steady_gets = get(&["steady"]);
        parts.push(format!(
            "Secret GETs ≤ 1 per instance until Ready and 0 in steady state: {} ({} / {})",
            met(ready_gets <= 1.0 + 1e-9 && steady_gets == 0.0),
            num(ready_gets),
            num(steady_gets)
        ));
        let steady = r.calls.get("steady").map_or(0, |c| c.mutating);
        let writes: f64 = operator_requests(&r.requests, &["steady"]).values().sum();
        parts.push(format!(
            "steady state: zero mutating calls {} ({steady}), zero writes {} ({})",
            met(steady == 0),
            met(writes == 0.0),
            num(writes)
        ));
        parts.push(format!(
            "delete all with nothing left: {} ({} databases, {} CacheInstances, {} Secrets, credentials Secret {})",
            met(r.databases_left == 0
                && r.instances_left == 0
                && r.secrets_left == 0
                && r.credentials_released_s.is_some()),
            r.databases_left,
            r.instances_left,
            r.secrets_left,
            if r.credentials_released_s.is_some() { "released" } else { "still claimed" }
        ));
        let _ = writeln!(
            out,
            "- N = {n}{}: {}",
            if raised { " (limit raised)" } else { "" },
            parts.join("; ")
        );
    }
    out
}

/// Backoff percentiles (bucket bounds) and count.
fn fmt_backoff(o: &OperatorPhase) -> String {
    let count = o.backoffs();
    if count == 0.0 {
        return "none".into();
    }
    let p = |q: f64| {
        histogram_percentile(&o.backoff_buckets, q).map_or("?".to_string(), |b| {
            if b.is_infinite() {
                "> 512 s".to_string()
            } else {
                format!("≤ {} s", num(b))
            }
        })
    };
    format!(
        "{} backoffs, mean {:.1} s; p50 {}, p90 {}, max {}",
        num(count),
        o.backoff_sum_s / count,
        p(50.0),
        p(90.0),
        p(100.0)
    )
}

/// The histogram as `≤ bound: count` for the non-empty buckets.
fn fmt_buckets(o: &OperatorPhase) -> String {
    let mut parts = Vec::new();
    let mut below = 0.0;
    for (bound, cumulative) in &o.backoff_buckets {
        let here = cumulative - below;
        below = *cumulative;
        if here > 0.0 {
            let bound = if bound.is_infinite() {
                "> 512 s".to_string()
            } else {
                format!("≤ {} s", num(*bound))
            };
            parts.push(format!("{bound}: {}", num(here)));
        }
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The chaos results.
pub fn chaos_markdown(r: &ChaosResult) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Instances | {} |", c.n);
    let _ = writeln!(s, "| Operator flags | `{}` |", r.operator_flags.join(" "));
    let _ = writeln!(s, "| Added Upstash latency | {} ms |", c.latency_ms);
    let faults: Vec<String> = r
        .faults
        .iter()
        .map(|f| format!("{} {:.1}% ({} applied)", f.kind, 100.0 * f.share, f.applied))
        .collect();
    let _ = writeln!(
        s,
        "| Faults ({:.0}% of Developer API calls) | {} |",
        100.0 * c.fault_rate,
        faults.join("; ")
    );
    let fmt_times = |t: &[f64]| {
        t.iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        s,
        "| SIGKILLs while provisioning (s after start) | {} ({}) |",
        r.provision_kill_times.len(),
        fmt_times(&r.provision_kill_times)
    );
    let _ = writeln!(
        s,
        "| SIGKILLs while deleting (s after start) | {} ({}) |",
        r.delete_kill_times.len(),
        fmt_times(&r.delete_kill_times)
    );
    let _ = writeln!(s, "| Operator processes started | {} |", r.operator_starts);
    if let Some(b) = &r.baseline {
        let _ = writeln!(
            s,
            "| Fault-free run of the same N: all Ready after | {:.1} s (creation → Ready p50 {:.2} s, max {:.2} s) |",
            b.all_ready_s, b.ready_p50_s, b.ready_max_s
        );
    }
    let _ = writeln!(
        s,
        "| **Provisioning: all Ready after** | **{:.1} s**{} |",
        r.all_ready_s,
        r.baseline.as_ref().map_or(String::new(), |b| format!(
            " (**{:.2}×** the fault-free time)",
            r.all_ready_s / b.all_ready_s
        ))
    );
    let _ = writeln!(
        s,
        "| Provisioning: creation → Ready p50 / p90 / max | {:.1} / {:.1} / {:.1} s |",
        r.ready_p50_s, r.ready_p90_s, r.ready_max_s
    );
    let provision = calls_of(&r.calls, &["provision"]);
    let _ = writeln!(
        s,
        "| Provisioning: Upstash calls | {} |",
        fmt_map(&provision.by_endpoint, 1.0)
    );
    let _ = writeln!(
        s,
        "| Provisioning: answers | {} ({} faulted) |",
        fmt_map(&provision.by_status, 1.0),
        provision.faulted
    );
    let _ = writeln!(
        s,
        "| Provisioning: `create` calls / performed | {} / {} |",
        provision.by_endpoint.get("create").copied().unwrap_or(0),
        provision.creates_performed
    );
    for (p, label) in [("provision", "Provisioning"), ("delete", "Deletion")] {
        let Some(o) = r.operator.get(p) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| **{label}: circuit-breaker openings** / calls it refused | **{}** / {} |",
            num(o.breaker_openings),
            num(o.refused_by_breaker)
        );
        let _ = writeln!(
            s,
            "| {label}: failed reconciles; per-object backoff | {}; {} |",
            num(o.reconcile_errors),
            fmt_backoff(o)
        );
        let _ = writeln!(s, "| {label}: backoff distribution | {} |", fmt_buckets(o));
    }
    let _ = writeln!(
        s,
        "| **Databases while the CRs exist** | **{}** ({} distinct names) |",
        r.databases, r.distinct_names
    );
    let _ = writeln!(
        s,
        "| **Duplicate databases** | **{}** |",
        r.duplicate_databases
    );
    let _ = writeln!(s, "| **Leaked databases** | **{}** |", r.leaked_databases);
    let _ = writeln!(
        s,
        "| Instances whose status.databaseId is not their database | {} |",
        r.instances_without_database
    );
    let _ = writeln!(
        s,
        "| **Secrets correct / wrong / missing** | **{} / {} / {}** |",
        r.secrets_correct, r.secrets_wrong, r.secrets_missing
    );
    let delete = calls_of(&r.calls, &["delete"]);
    let _ = writeln!(
        s,
        "| Deletion: everything gone after | {:.1} s |",
        r.delete_s
    );
    let _ = writeln!(
        s,
        "| Deletion: Upstash calls | {} ({} faulted) |",
        fmt_map(&delete.by_endpoint, 1.0),
        delete.faulted
    );
    let _ = writeln!(
        s,
        "| **After deletion: databases / CacheInstances** | **{} / {}** |",
        r.databases_after_delete, r.instances_after_delete
    );
    let _ = writeln!(
        s,
        "| After deletion: credentials Secret released (in-use finalizer removed) | {} |",
        r.credentials_released_s.map_or_else(
            || "**not within 60 s**".to_string(),
            |t| format!("{t:.1} s after the deletes")
        )
    );
    let _ = writeln!(
        s,
        "| Verdict | {} |",
        if r.problems.is_empty() {
            "PASS".to_string()
        } else {
            fail_summary(&r.problems)
        }
    );
    s
}

/// `FAIL: ` and the first problems; the rest are counted (all of them are in the JSON result).
fn fail_summary(problems: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = format!(
        "FAIL: {}",
        problems
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    );
    if problems.len() > SHOWN {
        text.push_str(&format!("; and {} more", problems.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lists_the_first_problems_and_counts_the_rest() {
        let problems: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
        assert_eq!(
            fail_summary(&problems),
            "FAIL: p0; p1; p2; p3; p4; and 3 more"
        );
        assert_eq!(fail_summary(&problems[..2]), "FAIL: p0; p1");
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(num(3.0), "3");
        assert_eq!(num(2.345), "2.35");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1234.5), "1234");
    }

    #[test]
    fn bench_and_gc_requests_are_not_the_operators() {
        let rows = vec![
            RequestRow {
                verb: "POST".into(),
                resource: "cacheinstances".into(),
                count: 10.0,
            },
            RequestRow {
                verb: "APPLY".into(),
                resource: "cacheinstances/status".into(),
                count: 20.0,
            },
            RequestRow {
                verb: "DELETE".into(),
                resource: "secrets".into(),
                count: 10.0,
            },
            RequestRow {
                verb: "GET".into(),
                resource: "secrets".into(),
                count: 99.0,
            },
        ];
        let by_phase = BTreeMap::from([("p".to_string(), rows)]);
        let m = operator_requests(&by_phase, &["p"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m["APPLY cacheinstances/status"], 20.0);
        let reads = read_requests(&by_phase, &["p"]);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads["GET secrets"], 99.0);
        assert_eq!(requests_of(&by_phase, &["p"], "GET", "secrets"), 99.0);
    }

    #[test]
    fn events_are_not_counted_among_writes() {
        let rows = vec![
            RequestRow {
                verb: "APPLY".into(),
                resource: "cacheinstances/status".into(),
                count: 2.0,
            },
            RequestRow {
                verb: "POST".into(),
                resource: "events".into(),
                count: 1.0,
            },
            RequestRow {
                verb: "PATCH".into(),
                resource: "cacheinstances".into(),
                count: 1.0,
            },
        ];
        let by_phase = BTreeMap::from([("converge".to_string(), rows)]);
        assert_eq!(writes_without_events(&by_phase, &["converge"]), 3.0);
    }

    #[test]
    fn the_backoff_histogram_is_shown_by_bucket() {
        let o = OperatorPhase {
            backoff_buckets: vec![(1.0, 0.0), (2.0, 3.0), (4.0, 4.0), (f64::INFINITY, 4.0)],
            backoff_sum_s: 7.0,
            ..Default::default()
        };
        assert_eq!(fmt_buckets(&o), "≤ 2 s: 3, ≤ 4 s: 1");
        assert_eq!(
            fmt_backoff(&o),
            "4 backoffs, mean 1.8 s; p50 ≤ 2 s, p90 ≤ 4 s, max ≤ 4 s"
        );
    }
}
