//! `kubectl upstash`: what the plugin prints, from CacheInstances read from the Kubernetes API
//! (pure; the binary in `src/bin/kubectl-upstash.rs` reads the objects and prints this).

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::{
    controller::{conditions, instance::preview},
    crd::{CacheInstance, MaintenanceWindow},
};

/// Exit code of `plan` when something would change.
pub const CHANGES: i32 = 2;

/// What `plan -f` found for one object of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not in the cluster: applying it creates it (and a database).
    Created,
    /// In the cluster without a database yet: the database is still being created (or held),
    /// with the manifest's spec if it differs (`spec_differs`).
    Provisioning { spec_differs: bool },
    /// In the cluster: what applying it changes.
    Changed(preview::Preview),
}

impl Outcome {
    pub fn changes_anything(&self) -> bool {
        match self {
            Outcome::Created => true,
            Outcome::Provisioning { spec_differs } => *spec_differs,
            Outcome::Changed(p) => !p.is_empty(),
        }
    }
}

/// The outcome of applying `manifest` over `live` (None: not in the cluster), with the
/// maintenance window of the CachePolicies that apply to it (see [`preview::against`]).
pub fn outcome(
    manifest: &CacheInstance,
    live: Option<&CacheInstance>,
    policy_window: Option<&MaintenanceWindow>,
    now: Timestamp,
) -> Outcome {
    match live {
        None => Outcome::Created,
        Some(live) if live.status.as_ref().is_none_or(|s| s.database_id.is_none()) => {
            Outcome::Provisioning {
                spec_differs: manifest.spec != live.spec,
            }
        }
        Some(live) => Outcome::Changed(preview::against(manifest, live, policy_window, now)),
    }
}

/// The lines `plan` prints for one object: `~` a change the operator makes, `!` a change that
/// needs a new CacheInstance.
pub fn render_plan(namespace: &str, name: &str, outcome: &Outcome) -> String {
    let mut out = String::new();
    let head = format!("cacheinstance {namespace}/{name}");
    match outcome {
        Outcome::Created => {
            let _ = writeln!(
                out,
                "{head}: would be created (a new Upstash database unless it adopts one)"
            );
        }
        Outcome::Provisioning { spec_differs } => {
            let spec = if *spec_differs {
                "; the manifest changes its spec, which the new database gets"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{head}: no database yet (see its Ready condition){spec}"
            );
        }
        Outcome::Changed(p) if p.is_empty() => {
            let _ = writeln!(out, "{head}: no changes");
        }
        Outcome::Changed(p) => {
            let _ = writeln!(out, "{head}:");
            for r in &p.recreate {
                let _ = writeln!(
                    out,
                    "  ! {}: {} → {}  [recreate required: {}; the API server refuses this change, create a new CacheInstance]",
                    r.field, r.live, r.desired, r.reason
                );
            }
            for c in &p.changes {
                let marker = match &c.reason {
                    Some(why) => format!("  [disruptive: {why}]"),
                    None => String::new(),
                };
                let when = if c.when == preview::NOW {
                    String::new()
                } else {
                    format!("  (at {})", c.when)
                };
                let _ = writeln!(
                    out,
                    "  ~ {}: {} → {}{marker}{when}",
                    c.field, c.live, c.desired
                );
            }
        }
    }
    out
}

/// The `status` table.
pub fn render_status(objs: &[CacheInstance], all_namespaces: bool) -> String {
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "PLAN",
            "COST (MTD/PROJECTED USD)",
            "ALERTS",
            "PENDING",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for obj in objs {
        let status = obj.status.clone().unwrap_or_default();
        let ready = conditions::find(&status.conditions, conditions::READY)
            .map(|c| {
                if c.status == "True" {
                    "True".to_string()
                } else {
                    format!("{} ({})", c.status, c.reason)
                }
            })
            .unwrap_or_else(|| "-".into());
        let cost = status.cost.as_deref().map_or_else(
            || "-".to_string(),
            |c| format!("{}/{}", c.month_to_date_usd, c.projected_month_end_usd),
        );
        let alerts = if status.alerts.is_empty() {
            "-".to_string()
        } else {
            status
                .alerts
                .iter()
                .map(|a| a.type_.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let disruptive = status
            .pending_changes
            .iter()
            .filter(|c| c.disruptive)
            .count();
        let pending = match (status.pending_changes.len(), disruptive) {
            (0, _) => "0".to_string(),
            (n, 0) => n.to_string(),
            (n, d) => format!("{n} ({d} disruptive)"),
        };
        rows.push(vec![
            obj.namespace().unwrap_or_default(),
            obj.name_any(),
            ready,
            status.plan.clone().unwrap_or_else(|| "-".into()),
            cost,
            alerts,
            pending,
        ]);
    }
    let skip = usize::from(!all_namespaces);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::instance;

    fn now() -> Timestamp {
        "2026-11-02T12:00:00Z".parse().unwrap()
    }

    const LIVE: &str = r#"
spec: {primaryRegion: us-east-1, plan: payg, budget: 20}
status:
  databaseId: db-1
  databaseName: crm-orders-1
  plan: payg
  budget: 20
  conditions:
  - {type: Ready, status: "True", reason: Ready, message: ok, lastTransitionTime: "2026-11-01T00:00:00Z"}
  cost: {monthToDateUsd: "1.20", projectedMonthEndUsd: "3.40", source: Upstash, asOf: "2026-11-01T00:00:00Z"}
  alerts:
  - {type: HitRateLow, since: "2026-11-01T00:00:00Z", message: "hit rate 10%"}
"#;

    #[test]
    fn plan_marks_disruptive_and_recreate_changes() {
        let live = instance(LIVE);
        let manifest = instance("spec: {primaryRegion: eu-west-1, plan: fixed_1gb, budget: 50}");
        let outcome = outcome(&manifest, Some(&live), None, now());
        assert!(outcome.changes_anything());
        let text = render_plan("crm", "orders", &outcome);
        assert!(text.starts_with("cacheinstance crm/orders:\n"), "{text}");
        assert!(
            text.contains("  ! primaryRegion: us-east-1 → eu-west-1  [recreate required:"),
            "{text}"
        );
        assert!(
            text.contains("  ~ plan: payg → fixed_1gb  [disruptive: changing the plan"),
            "{text}"
        );
        assert!(text.contains("  ~ budget: 20 → 50\n"), "{text}");
    }

    #[test]
    fn plan_of_an_unchanged_and_a_new_object() {
        let live = instance(LIVE);
        let same = instance("spec: {primaryRegion: us-east-1, plan: payg, budget: 20}");
        let unchanged = outcome(&same, Some(&live), None, now());
        assert!(!unchanged.changes_anything());
        assert_eq!(
            render_plan("crm", "orders", &unchanged),
            "cacheinstance crm/orders: no changes\n"
        );
        let created = outcome(&same, None, None, now());
        assert!(created.changes_anything());
        assert!(render_plan("crm", "orders", &created).contains("would be created"));
        let mut unprovisioned = live.clone();
        unprovisioned.status = None;
        let waiting = outcome(&same, Some(&unprovisioned), None, now());
        assert!(!waiting.changes_anything());
        assert!(render_plan("crm", "orders", &waiting).contains("no database yet"));
        let bigger = instance("spec: {primaryRegion: us-east-1, plan: fixed_1gb, budget: 20}");
        assert!(outcome(&bigger, Some(&unprovisioned), None, now()).changes_anything());
    }

    #[test]
    fn status_table_shows_readiness_plan_cost_alerts_and_pending() {
        let mut obj = instance(LIVE);
        obj.spec.plan = Some(crate::crd::Plan::Fixed1Gb);
        obj.spec.budget = Some(50);
        let pending = preview::pending(&obj, now());
        obj.status.as_mut().unwrap().pending_changes = pending;
        let text = render_status(&[obj], true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        let row: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "crm",
                "orders",
                "True",
                "payg",
                "1.20/3.40",
                "HitRateLow",
                "2",
                "(1",
                "disruptive)"
            ]
        );
        let one_ns = render_status(&[instance(LIVE)], false);
        assert!(one_ns.starts_with("NAME"), "{one_ns}");
    }
}
