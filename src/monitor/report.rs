//! What a judged sample is reported as: one Event per transition, the instance's status
//! (firing alerts, the `Healthy` condition, cost), its metrics and its `/status` entry.
//!
//! Status is written only when it would change something: a new set of firing alerts, or a
//! cost worth showing that is new or an hour old. `Healthy` is not written while it would only
//! repeat its default: an instance on which no alert ever fired has no `Healthy` condition, so
//! a new instance costs no Kubernetes write of the monitor's. The first alert writes
//! `Healthy=False`; from then on the condition follows the alerts.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde::Serialize;
use serde_json::json;

use super::{
    cost::{self, Cost},
    figures::Figures,
    thresholds::{AlertKind, Transition},
};
use crate::{
    controller::{Context, conditions},
    crd::{CacheInstance, CostStatus, FiringAlert},
    metrics::{Figure, InstanceLabels, Metrics},
};

/// Field manager of the monitor's status writes (alerts, `Healthy`, cost).
pub const MONITOR_MANAGER: &str = "upstash-operator/monitor";
/// How old the cost in status may get before a changed figure is written.
pub const COST_REFRESH: Duration = Duration::from_secs(3600);
/// Spend below this (half a cent) is not worth a status write of its own.
const COST_WORTH_SHOWING: f64 = 0.005;

/// One instance on the `/status` page. The monitor keeps each instance's latest report without
/// the instance's names and database id (it has them already); [`InstanceReport::named`] puts
/// them in when the page is written.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub namespace: String,
    pub name: String,
    pub database_id: String,
    pub policies: Option<String>,
    pub hits: f64,
    pub misses: f64,
    pub hit_rate: Option<f64>,
    pub memory_used_bytes: Option<f64>,
    pub memory_limit_bytes: Option<f64>,
    pub memory_percent: Option<f64>,
    /// Server-side, from Upstash.
    pub latency_mean_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// From the probe; absent when it is off.
    pub client_latency_p95_ms: Option<f64>,
    pub client_error_rate_percent: Option<f64>,
    pub probe_samples: Option<usize>,
    pub consecutive_connection_failures: Option<u32>,
    pub probe_commands_today: u64,
    pub evictions_percent: Option<f64>,
    /// Upstash's count of today's commands, and the application's share (without the probe's).
    pub daily_commands: Option<f64>,
    pub app_commands_today: Option<f64>,
    pub daily_command_limit: Option<f64>,
    pub month_to_date_usd: Option<f64>,
    pub projected_month_end_usd: Option<f64>,
    pub cost_source: Option<&'static str>,
    pub budget_usd: Option<f64>,
    pub alerts: Vec<String>,
    pub last_sample: Option<Timestamp>,
}

impl InstanceReport {
    /// The figures of a sample taken now (without names: see [`InstanceReport::named`]).
    pub fn new(f: &Figures, firing: &[AlertKind], probe_commands_today: u64) -> Self {
        Self {
            namespace: String::new(),
            name: String::new(),
            database_id: String::new(),
            policies: None,
            hits: f.hits,
            misses: f.misses,
            hit_rate: f.hit_rate_percent,
            memory_used_bytes: f.memory_used_bytes,
            memory_limit_bytes: f.memory_limit_bytes,
            memory_percent: f.memory_percent,
            latency_mean_ms: f.latency_mean_ms,
            latency_p99_ms: f.latency_p99_ms,
            client_latency_p95_ms: f.client_p95_ms,
            client_error_rate_percent: f.client_error_rate_percent,
            probe_samples: f.probe_samples,
            consecutive_connection_failures: f.consecutive_failures,
            probe_commands_today,
            evictions_percent: f.evictions_percent,
            daily_commands: f.daily_commands,
            app_commands_today: f
                .daily_commands
                .map(|d| (d - probe_commands_today as f64).max(0.0)),
            daily_command_limit: f.daily_command_limit,
            month_to_date_usd: f.cost.map(|c| c.month_to_date_usd),
            projected_month_end_usd: f.cost.map(|c| c.projected_month_end_usd),
            cost_source: f.cost.map(|c| c.source.as_str()),
            budget_usd: f.budget_usd,
            alerts: firing.iter().map(|k| k.as_str().to_string()).collect(),
            last_sample: Some(Timestamp::now()),
        }
    }

    /// The report as the page shows it: with the instance's names, its database and policies.
    pub fn named(
        &self,
        instance: &CacheInstance,
        database_id: &str,
        policies: Option<&str>,
    ) -> Self {
        Self {
            namespace: instance.namespace().unwrap_or_default(),
            name: instance.name_any(),
            database_id: database_id.to_string(),
            policies: policies.map(str::to_string),
            ..self.clone()
        }
    }
}

fn cost_status(c: &Cost, now: Timestamp) -> CostStatus {
    CostStatus {
        month_to_date_usd: cost::usd(c.month_to_date_usd),
        projected_month_end_usd: cost::usd(c.projected_month_end_usd),
        source: c.source.as_str().to_string(),
        as_of: Time(now),
    }
}

/// The status patch a judged sample calls for, or `None` when status would not change (pure).
pub fn status_update(
    instance: &CacheInstance,
    firing: &[AlertKind],
    transitions: &[(AlertKind, Transition, String)],
    cost: Option<&Cost>,
    now: Timestamp,
) -> Option<serde_json::Value> {
    let status = instance.status.clone().unwrap_or_default();
    let shown: Vec<&str> = status.alerts.iter().map(|a| a.type_.as_str()).collect();
    let wanted: Vec<&str> = firing.iter().map(|k| k.as_str()).collect();
    let healthy_shown = conditions::find(&status.conditions, conditions::HEALTHY);
    let healthy_wrong = healthy_shown.is_some_and(|c| (c.status == "True") != firing.is_empty());
    let alerts_change = shown != wanted || healthy_wrong;

    let fresh = cost.map(|c| cost_status(c, now));
    let cost_due = match (&status.cost, &fresh) {
        (_, None) => false,
        (None, Some(_)) => cost.is_some_and(|c| {
            c.month_to_date_usd.max(c.projected_month_end_usd) >= COST_WORTH_SHOWING
        }),
        (Some(old), Some(new)) => {
            let changed = old.month_to_date_usd != new.month_to_date_usd
                || old.projected_month_end_usd != new.projected_month_end_usd
                || old.source != new.source;
            let age = now.duration_since(old.as_of.0).unsigned_abs();
            changed && age >= COST_REFRESH
        }
    };
    if !alerts_change && !cost_due {
        return None;
    }

    let stamp = Time(now);
    let alerts: Vec<FiringAlert> = firing
        .iter()
        .map(|k| {
            let previous = status.alerts.iter().find(|a| a.type_ == k.as_str());
            let fresh = transitions.iter().find(|(t, _, _)| t == k);
            FiringAlert {
                type_: k.as_str().to_string(),
                since: previous
                    .map(|a| a.since.clone())
                    .unwrap_or_else(|| stamp.clone()),
                message: previous
                    .map(|a| a.message.clone())
                    .or_else(|| fresh.map(|(_, _, m)| m.clone()))
                    .unwrap_or_default(),
            }
        })
        .collect();
    // `Healthy` once an alert has fired (its default, True with no alert, is never written
    // on its own).
    let healthy = (!firing.is_empty() || healthy_shown.is_some() || !shown.is_empty()).then(|| {
        let cond = if firing.is_empty() {
            conditions::Cond::new(
                conditions::HEALTHY,
                true,
                "NoAlerts",
                "no monitoring threshold is crossed",
            )
        } else {
            conditions::Cond::new(
                conditions::HEALTHY,
                false,
                "AlertsFiring",
                alerts
                    .iter()
                    .map(|a| a.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        conditions::merge(
            &status.conditions,
            &[cond],
            &[],
            instance.metadata.generation,
            now,
        )
    });
    // Server-side apply: this manager owns exactly these fields, so every write carries all
    // of them (an omitted one would be removed).
    let mut body = json!({
        "apiVersion": CacheInstance::api_version(&()),
        "kind": CacheInstance::kind(&()),
        "status": {},
    });
    let out = body["status"].as_object_mut().expect("an object");
    if !alerts.is_empty() {
        out.insert("alerts".into(), json!(alerts));
    }
    if let Some(conds) = healthy {
        out.insert("conditions".into(), json!(conds));
    }
    // A write happens anyway: it refreshes the cost too.
    if let Some(cost) = fresh.or(status.cost.map(|c| *c)) {
        out.insert("cost".into(), json!(cost));
    }
    Some(body)
}

/// Writes a status patch built by [`status_update`].
pub async fn write_status(
    ctx: &Context,
    instance: &CacheInstance,
    body: &serde_json::Value,
) -> crate::Result<()> {
    let api: Api<CacheInstance> = Api::namespaced(
        ctx.client.clone(),
        &instance.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &instance.name_any(),
        &PatchParams::apply(MONITOR_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

/// One Event per transition: Warning when an alert fires, Normal when it resolves.
pub fn publish_transitions(
    ctx: &Context,
    instance: &CacheInstance,
    transitions: &[(AlertKind, Transition, String)],
) {
    for (kind, transition, note) in transitions {
        match transition {
            Transition::Fired => {
                ctx.publish(instance, EventType::Warning, kind.as_str(), "Monitor", note)
            }
            Transition::Resolved => ctx.publish(
                instance,
                EventType::Normal,
                kind.resolved_reason(),
                "Monitor",
                note,
            ),
        }
    }
}

/// Exports the figures as the instance's gauges; figures that are unknown leave no series.
pub fn export_metrics(metrics: &Metrics, labels: &InstanceLabels, f: &Figures, firing: usize) {
    let ratio = |percent: Option<f64>| percent.map(|p| p / 100.0);
    let seconds = |ms: Option<f64>| ms.map(|v| v / 1000.0);
    metrics.instances.set_figures(
        &labels.namespace,
        &labels.name,
        [
            (Figure::HitRatio, ratio(f.hit_rate_percent)),
            (Figure::MemoryUsedBytes, f.memory_used_bytes),
            (Figure::MemoryLimitBytes, f.memory_limit_bytes),
            (Figure::LatencyP99Seconds, seconds(f.latency_p99_ms)),
            (Figure::LatencyMeanSeconds, seconds(f.latency_mean_ms)),
            (Figure::ClientLatencyP95Seconds, seconds(f.client_p95_ms)),
            (Figure::ClientErrorRatio, ratio(f.client_error_rate_percent)),
            (Figure::EvictionRatio, ratio(f.evictions_percent)),
            (Figure::DailyCommands, f.daily_commands),
            (Figure::DailyCommandLimit, f.daily_command_limit),
            (Figure::MonthlyCostUsd, f.cost.map(|c| c.month_to_date_usd)),
            (
                Figure::ProjectedMonthlyCostUsd,
                f.cost.map(|c| c.projected_month_end_usd),
            ),
            (Figure::BudgetUsd, f.budget_usd),
        ],
        firing,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::cost::Source;

    fn instance(status: serde_json::Value) -> CacheInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "a", "namespace": "crm", "generation": 2},
            "spec": {"primaryRegion": "us-east-1"},
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-04-11T12:00:00Z".parse().unwrap()
    }

    fn cost(mtd: f64, projected: f64) -> Cost {
        Cost {
            month_to_date_usd: mtd,
            projected_month_end_usd: projected,
            source: Source::Upstash,
        }
    }

    #[test]
    fn a_healthy_new_instance_costs_no_write() {
        let i = instance(serde_json::json!({"databaseId": "x"}));
        assert_eq!(status_update(&i, &[], &[], None, now()), None);
        assert_eq!(
            status_update(&i, &[], &[], Some(&cost(0.0, 0.0)), now()),
            None,
            "no spend is not worth a write"
        );
    }

    #[test]
    fn an_alert_writes_alerts_and_healthy_and_recovery_keeps_healthy() {
        let i = instance(serde_json::json!({"databaseId": "x"}));
        let note = "P99 62 ms".to_string();
        let body = status_update(
            &i,
            &[AlertKind::LatencyHigh],
            &[(AlertKind::LatencyHigh, Transition::Fired, note.clone())],
            None,
            now(),
        )
        .unwrap();
        let status = &body["status"];
        assert_eq!(status["alerts"][0]["type"], "LatencyHigh");
        assert_eq!(status["alerts"][0]["message"], note);
        assert_eq!(status["conditions"][0]["type"], "Healthy");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert!(status.get("cost").is_none());

        // Written: nothing to do while the same alert fires.
        let mut written = i.clone();
        written.status = serde_json::from_value(serde_json::json!({
            "databaseId": "x",
            "alerts": status["alerts"],
            "conditions": status["conditions"],
        }))
        .unwrap();
        assert_eq!(
            status_update(&written, &[AlertKind::LatencyHigh], &[], None, now()),
            None
        );
        // Recovered: alerts go, Healthy turns True and stays from then on.
        let body = status_update(&written, &[], &[], None, now()).unwrap();
        assert!(body["status"].get("alerts").is_none());
        assert_eq!(body["status"]["conditions"][0]["status"], "True");
        assert_eq!(body["status"]["conditions"][0]["reason"], "NoAlerts");
    }

    #[test]
    fn cost_is_written_when_new_then_at_most_hourly() {
        let i = instance(serde_json::json!({"databaseId": "x"}));
        let body = status_update(&i, &[], &[], Some(&cost(12.5, 31.25)), now()).unwrap();
        let c = &body["status"]["cost"];
        assert_eq!(c["monthToDateUsd"], "12.50");
        assert_eq!(c["projectedMonthEndUsd"], "31.25");
        assert_eq!(c["source"], "Upstash");
        assert!(
            body["status"].get("conditions").is_none(),
            "no Healthy of its own"
        );

        let mut written = i.clone();
        written.status =
            serde_json::from_value(serde_json::json!({"databaseId": "x", "cost": c})).unwrap();
        let later = |mins: i64| {
            now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(mins))
                .unwrap()
        };
        assert_eq!(
            status_update(&written, &[], &[], Some(&cost(12.9, 31.5)), later(30)),
            None,
            "changed, but not an hour old"
        );
        assert_eq!(
            status_update(&written, &[], &[], Some(&cost(12.5, 31.25)), later(90)),
            None,
            "an hour old, but unchanged"
        );
        let body = status_update(&written, &[], &[], Some(&cost(12.9, 31.5)), later(61)).unwrap();
        assert_eq!(body["status"]["cost"]["monthToDateUsd"], "12.90");
        // An alert write carries the cost it owns along.
        let body = status_update(
            &written,
            &[AlertKind::BudgetNearlyExhausted],
            &[],
            Some(&cost(12.9, 31.5)),
            later(5),
        )
        .unwrap();
        assert_eq!(body["status"]["cost"]["monthToDateUsd"], "12.90");
    }
}
