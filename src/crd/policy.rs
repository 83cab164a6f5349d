//! `CachePolicy`: monitoring thresholds and guardrails for the CacheInstances it selects.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes that for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeletionPolicy, DurationString, Plan, Region};

/// Monitoring thresholds and guardrails for the CacheInstances a policy selects. The operator
/// reads each selected database's stats from the Upstash Developer API on the evaluation
/// interval and emits a Kubernetes Event on the CacheInstance each time a threshold is crossed,
/// and one when it recovers. By default it sends the database no command at all: the error
/// rate, connection failures, evictions and client-side latency need the data-plane probe
/// (`probe.enabled: true`), whose commands Upstash bills like the application's.
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
    doc = "Monitoring thresholds (hit rate, memory, latency, daily commands, budget; with the opt-in data-plane probe also error rate, evictions and connection failures) and guardrails (regions, plans, eviction, deletion policy) for the CacheInstances it selects.",
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
    /// naming this policy in `spec.policyRef`. An instance may be selected by several policies:
    /// all of them apply, and the strictest threshold and guardrail wins. Keys and values must
    /// be valid label syntax, as in any Kubernetes selector (at most 64 `matchLabels`, 32
    /// `matchExpressions` and 64 values in one expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::label_selector_schema")]
    #[x_kube(validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn'] && has(e.values) && size(e.values) > 0) || (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))")
        .message("selector.matchExpressions: operator must be In or NotIn with at least one value, or Exists or DoesNotExist without values")
        .field_path(".matchExpressions")
        .reason(Reason::FieldValueInvalid))]
    pub selector: Option<LabelSelector>,

    /// The default maintenance window of the CacheInstances the policy applies to (an
    /// instance's own `spec.maintenanceWindow` wins). When several policies with a window apply,
    /// the one whose name sorts first is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<Box<super::window::MaintenanceWindow>>,

    /// Cache hit rate, in percent of reads that found their key. Defaults: warn below 70, target 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_rate: Option<HitRateThresholds>,

    /// Data size (Upstash's `current_storage`), in percent of the plan's limit. Default: warn
    /// above 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<UpperThreshold>,

    /// Failed commands, in percent of the probe's last `probe.minSamples` commands (Upstash
    /// reports no error figures, so this is client-side). Needs the probe. Default: warn above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<UpperThreshold>,

    /// Command latency. Default: warn when the P95 is above 50 ms, judged on Upstash's
    /// server-side figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyThresholds>,

    /// Keys evicted to make room, in percent of the writes between two samples (evictions from
    /// the probe's `INFO`, writes from Upstash's stats). Needs the probe. Default: warn above 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions: Option<EvictionThreshold>,

    /// Monthly spend, in percent of `spec.budget` of the CacheInstance: the higher of this
    /// month's spend and its projection to the month's end. Default: warn above 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetThreshold>,

    /// Commands today (Upstash's count, the probe's included), in percent of the plan's daily
    /// limit. Default: warn above 80 of the free plan's 10,000 a day; other plans have no daily
    /// limit unless `dailyLimit` sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_commands: Option<DailyCommandThreshold>,

    /// Probe rounds in a row that could not reach the database. Needs the probe. Default: warn
    /// after 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_failures: Option<ConnectionFailureThreshold>,

    /// The data-plane probe: a `PING` and an `INFO` through the database's REST API, as an
    /// application would send them. Off by default, because Upstash bills them as commands
    /// (2 per round: 2,880 a day at a 60s interval). The operator counts them
    /// (`upstash_monitor_probe_commands_total`) and leaves them out of the application's
    /// figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSettings>,

    /// How often each selected database's stats are read and judged, e.g. `60s` (the default;
    /// at least 1s). Samples are spread out with jitter so that many instances do not poll at
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::common::duration_at_least_rule(1))
        .message("evaluationInterval must be at least 1s")
        .reason(Reason::FieldValueInvalid))]
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
    /// provisioned or changed; a `PolicyCompliant` condition and an Event say why. Every
    /// policy that selects an instance applies its guardrails; `spec.policyRef` on the instance
    /// adds a policy but does not exempt it from the others.
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
    /// Warn when the 95th-percentile server-side latency is above this many milliseconds.
    /// Default 50. Upstash reports the mean and the P99 but no P95, so this is checked against
    /// the P99, which is never below the P95: a P99 under the limit proves the target is met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub p95_warning_above_ms: Option<f64>,
    /// Warn when Upstash's server-side P99 latency is above this many milliseconds. Not checked
    /// unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub p99_warning_above_ms: Option<f64>,
    /// Warn when the probe's client-side P95 (the operator's round trip, network included) is
    /// above this many milliseconds, over at least `probe.minSamples` commands. Needs the
    /// probe; not checked unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 600_000))]
    pub client_p95_warning_above_ms: Option<f64>,
}

/// Eviction threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EvictionThreshold {
    /// Set to false to stop evaluating evictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when evicted keys exceed this percentage of writes. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_above_percent: Option<f64>,
    /// Minimum writes between two samples before evictions are judged. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_writes: Option<i64>,
}

/// Daily command threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DailyCommandThreshold {
    /// Set to false to stop evaluating daily commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when today's commands pass this percentage of the daily limit. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_above_percent: Option<f64>,
    /// The daily command limit to judge against. Default: the plan's (10,000 on `free`; no
    /// limit, so no alert, on the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub daily_limit: Option<i64>,
}

/// The data-plane probe.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSettings {
    /// Probe the selected databases. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between probe rounds, e.g. `60s` (the default; at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::common::duration_at_least_rule(1))
        .message("probe.interval must be at least 1s")
        .reason(Reason::FieldValueInvalid))]
    pub interval: Option<DurationString>,
    /// Probe commands the client-side figures are computed over: the error rate and the P95
    /// are judged only once this many commands were sent, over the last this many. Default 100,
    /// so that one lost command among 100 (1%) does not pass the default 1% error threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub min_samples: Option<i32>,
}

/// Budget threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BudgetThreshold {
    /// Set to false to stop evaluating spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn when this month's spend, or its projection to the month's end, passes this
    /// percentage of the instance's budget. Default 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub warning_above_percent: Option<f64>,
}

/// Connection failure threshold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionFailureThreshold {
    /// Set to false to stop evaluating connection failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Warn after this many consecutive failed probe rounds. Default 3.
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
    /// networks. Ranges that admit every address (`0.0.0.0/0`, `::/0`, or ranges that add up to
    /// all of IPv4 or IPv6) do not satisfy it.
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
