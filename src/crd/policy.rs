//! `CachePolicy`: monitoring thresholds and guardrails for the CacheInstances it selects.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes that for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, DurationString, Plan, Region};

/// Monitoring thresholds and guardrails for the CacheInstances a policy selects. The operator
/// samples each selected database on the evaluation interval and emits a Kubernetes Event on the
/// CacheInstance each time a threshold is crossed, and one when it recovers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "cache.upstash-operator.dev",
    version = "v1alpha1",
    kind = "CachePolicy",
    plural = "cachepolicies",
    singular = "cachepolicy",
    namespaced,
    status = "CachePolicyStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ucpolicy",
    category = "upstash",
    doc = "Monitoring thresholds (hit rate, memory, error rate, latency, budget, connection failures) and guardrails (regions, plans, eviction, deletion policy) for the CacheInstances it selects.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the policy is valid and applied"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.selectedInstances",
        description = "CacheInstances this policy applies to"
    ),
    printcolumn(
        name = "Firing",
        type_ = "integer",
        json_path = ".status.firingAlerts",
        description = "Alerts firing across those instances"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.hitRate) || !has(self.hitRate.warningBelow) || !has(self.hitRate.target) || self.hitRate.warningBelow <= self.hitRate.target")
        .message("hitRate.warningBelow must not be above hitRate.target")
        .field_path(".hitRate.warningBelow"),
)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicySpec {
    /// Which CacheInstances in this namespace the policy applies to, by label. An empty selector
    /// (`{}`) selects every CacheInstance in the namespace; omitting it selects none except those
    /// naming this policy in `spec.policyRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Cache hit rate, in percent of reads that found their key. Defaults: warn below 70, target 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<HitRateThresholds>,

    /// Data size, in percent of the plan's limit. Default: warn above 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<UpperThreshold>,

    /// Failed commands, in percent of commands sent by the operator's probe. Default: warn above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<UpperThreshold>,

    /// Command latency. Default: warn when P95 is above 50 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyThresholds>,

    /// Monthly spend, in percent of `spec.budget` of the CacheInstance. Default: warn above 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetThreshold>,

    /// Connection failures of the operator's probe. Default: warn after 3 consecutive failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_failures: Option<ConnectionFailureThreshold>,

    /// How often each selected database is sampled, e.g. `60s` (the default; at least 10s).
    /// Samples are spread out with jitter so that many instances do not poll at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_interval: Option<DurationString>,

    /// How long a threshold must stay crossed before the alert fires, e.g. `5m`. Default `0s`:
    /// fire on the first sample past the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<DurationString>,

    /// How far back past the threshold a value must come before a firing alert resolves, in
    /// percent of the threshold. Default 5: an alert on hit rate below 70 resolves at 73.5 or
    /// above; an alert on P95 above 50 ms resolves at 47.5 ms or below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub hysteresis_percent: Option<f64>,

    /// Rules the selected CacheInstances must follow. An instance that breaks one is not
    /// provisioned or changed; a `PolicyCompliant` condition and an Event say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<Guardrails>,
}

/// Hit-rate thresholds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HitRateThresholds {
    /// Set to false to stop evaluating this threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when the hit rate falls below this percentage. Default 70.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_below: Option<f64>,
    /// The hit rate to aim for, in percent, reported with alerts. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub target: Option<f64>,
    /// Minimum reads in the sampling window before the hit rate is judged (a cache that is barely
    /// used has a meaningless hit rate). Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_requests: Option<i64>,
}

/// A percentage that must stay below a threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpperThreshold {
    /// Set to false to stop evaluating this threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when the value rises above this percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_above: Option<f64>,
}

/// Latency thresholds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LatencyThresholds {
    /// Set to false to stop evaluating latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when the 95th percentile latency is above this many milliseconds. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub p95_warning_above_ms: Option<f64>,
    /// Warn when the 99th percentile latency is above this many milliseconds. Not checked unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub p99_warning_above_ms: Option<f64>,
}

/// Budget threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BudgetThreshold {
    /// Set to false to stop evaluating spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when this month's spend passes this percentage of the instance's budget. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_above_percent: Option<f64>,
}

/// Connection failure threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFailureThreshold {
    /// Set to false to stop probing the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn after this many consecutive failed probes. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub warning_after: Option<i32>,
}

/// Guardrails for the selected CacheInstances.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Guardrails {
    /// Regions the primary and read replicas may be in. Empty or omitted allows every region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 18))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_regions: Option<Vec<Region>>,
    /// The largest plan allowed, in the order free, payg, fixed_250mb, fixed_1gb, fixed_5gb,
    /// fixed_10gb, fixed_50gb, fixed_100gb, fixed_500gb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_plan: Option<Plan>,
    /// Require `spec.eviction: true`, so a full cache evicts instead of rejecting writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_eviction: Option<bool>,
    /// Require a non-empty `spec.allowedIPs`, so the database is reachable only from known
    /// networks.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "requireAllowedIPs"
    )]
    pub require_allowed_ips: Option<bool>,
    /// Require `spec.dailyBackup: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_daily_backup: Option<bool>,
    /// Deletion policy for selected instances that do not set `spec.deletionPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_deletion_policy: Option<DeletionPolicy>,
}

/// Observed state of a CachePolicy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CachePolicyStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the policy is valid and applied to its instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Number of CacheInstances the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_instances: Option<i32>,
    /// Number of alerts firing across those instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing_alerts: Option<i32>,
}
