//! Markdown tables of the results (pasted into `BENCHMARKS.md`).

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    chaos::ChaosResult,
    observe::{CallPhase, ChangePhase, OPERATOR_MANAGERS, is_mutating},
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

/// Mutating API server requests the operator made in `phases`: everything but the bench's
/// own POST/DELETE of CacheInstances and the garbage collector's DELETE of Secrets.
fn operator_requests(
    r: &BTreeMap<String, Vec<RequestRow>>,
    phases: &[&str],
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for row in phases.iter().filter_map(|p| r.get(*p)).flatten() {
        if !is_mutating(&row.verb) {
            continue;
        }
        let bench_or_gc = (row.resource == "cacheinstances"
            && matches!(row.verb.as_str(), "POST" | "DELETE"))
            || (row.resource == "secrets" && row.verb == "DELETE");
        if bench_or_gc {
            continue;
        }
        *out.entry(format!("{} {}", row.verb, row.resource))
            .or_default() += row.count;
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
    row(&mut s, "Creation → Ready p50 / p99 / max", &|r| {
        format!(
            "{:.1} / {:.1} / {:.1} s",
            r.ready_p50_s, r.ready_p99_s, r.ready_max_s
        )
    });
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
        "K8s object writes per instance (watch, operator's managers)",
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
        "K8s write requests per instance (apiserver)",
        &|r| {
            fmt_fmap(
                &operator_requests(&r.requests, &provision),
                r.config.n as f64,
            )
        },
    );
    row(
        &mut s,
        "Operator peak RSS (VmHWM) during convergence",
        &|r| {
            r.operator
                .get("settle")
                .or(r.operator.get("converge"))
                .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.hwm)))
        },
    );
    row(&mut s, "Operator CPU until Ready / until settled", &|r| {
        let c = r.operator.get("converge").map_or(0.0, |p| p.cpu_s);
        let st = r.operator.get("settle").map_or(0.0, |p| p.cpu_s);
        format!("{c:.1} / {:.1} s", c + st)
    });
    row(&mut s, "Emulator / control plane CPU until Ready", &|r| {
        r.other_cpu
            .get("converge")
            .map_or("?".into(), |(e, k)| format!("{e:.1} / {k:.1} s"))
    });
    row(
        &mut s,
        "Emulator CPU over the whole run (with its Redis engines)",
        &|r| format!("{:.1} s", r.other_cpu.values().map(|(e, _)| e).sum::<f64>()),
    );
    row(
        &mut s,
        "Emulator peak RSS: process / with its Redis engines (engines at once)",
        &|r| {
            let own = r.emulator.values().map(|p| p.peak_rss).max().unwrap_or(0);
            let total = r
                .emulator
                .values()
                .map(|p| p.peak_total_rss)
                .max()
                .unwrap_or(0);
            let engines = r
                .emulator
                .values()
                .map(|p| p.peak_children)
                .max()
                .unwrap_or(0);
            format!("{:.1} / {:.1} MiB ({engines})", mib(own), mib(total))
        },
    );
    row(
        &mut s,
        "Emulator RSS with all databases, idle (engines running)",
        &|r| {
            r.emulator.get("idle").map_or("?".into(), |p| {
                format!(
                    "{:.1} / {:.1} MiB ({})",
                    mib(p.last_rss),
                    mib(p.last_total_rss),
                    p.last_children
                )
            })
        },
    );
    row(&mut s, "Operator RSS idle after convergence", &|r| {
        r.operator
            .get("idle")
            .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.last_rss)))
    });
    row(&mut s, "Steady state: resync interval, window", &|r| {
        format!(
            "{} s × {} = {:.0} s",
            r.config.steady_resync.as_secs(),
            r.config.steady_intervals,
            r.steady_window_s
        )
    });
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
        "Restart (first pass): mutating calls / K8s writes",
        &|r| {
            let c = calls_of(&r.calls, &["restart"]);
            let watch = all_changes(&r.changes, &["restart"], "CacheInstance")
                + all_changes(&r.changes, &["restart"], "Secret");
            let api: f64 = operator_requests(&r.requests, &["restart"]).values().sum();
            format!("{} / {} (apiserver {})", c.mutating, watch, num(api))
        },
    );
    row(&mut s, "Operator RSS idle in steady state", &|r| {
        r.operator
            .get("steady")
            .map_or("?".into(), |p| format!("{:.1} MiB", mib(p.last_rss)))
    });
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
        "Left after delete: databases / CacheInstances",
        &|r| format!("{} / {}", r.databases_left, r.instances_left),
    );
    s
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
    let provision = calls_of(&r.calls, &["provision"]);
    let _ = writeln!(
        s,
        "| Provisioning: all Ready after | {:.1} s |",
        r.all_ready_s
    );
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
        let m = operator_requests(&BTreeMap::from([("p".to_string(), rows)]), &["p"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m["APPLY cacheinstances/status"], 20.0);
    }
}
