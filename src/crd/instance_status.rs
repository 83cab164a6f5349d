//! The observed state of a CacheInstance: conditions, the database it works with, the live value
//! of every setting, the connection Secrets and the bookkeeping of rotations, backups, restores
//! and create calls.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a CacheInstance. Fast-moving figures (hit rate, memory) are Prometheus
/// metrics, not status, so status changes only when something changes state.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
// Groups that many objects leave out are boxed, as in the spec: every status is cached.
pub struct CacheInstanceStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises the others: `Provisioned` (the database exists), `Synced` (its settings
    /// match the spec), `SecretReady` (the connection Secret is written), `PolicyCompliant`
    /// (guardrails allow the spec) and `Healthy` (no monitoring alert is firing; written once an
    /// alert first fires, so its absence means no alert has fired).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::common::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Upstash database id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_id: Option<String>,

    /// Upstash database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,

    /// Upstash account that owns the database, as Upstash names it (`customer_id`: the owner's
    /// email for a personal account, the team's id for a team database). The operator reads,
    /// changes and deletes the database only with credentials of this account: if the
    /// credentials later act for another account (another email, or a team key of the same
    /// person), the instance reports `AccountChanged` and leaves the database alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,

    /// Endpoint host of the database; the REST URL is `https://<endpoint>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Database state as Upstash reports it (`active`, `suspended`, `passive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,

    /// Plan the database is on (the live value of `spec.plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,

    /// Regions holding read replicas (the live value of `spec.readRegions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_regions: Option<Vec<String>>,

    /// Monthly budget in USD (the live value of `spec.budget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<i64>,

    /// Whether keys are evicted at the data limit (the live value of `spec.eviction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<bool>,

    /// Whether Upstash upgrades the plan automatically (the live value of `spec.autoUpgrade`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_upgrade: Option<bool>,

    /// Whether the Prod Pack add-on is on (the live value of `spec.prodPack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prod_pack: Option<bool>,

    /// The connection Secret, as the Service Binding specification expects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,

    /// The read-only connection Secret, when one is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_secret: Option<Binding>,

    /// Password rotation bookkeeping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Box<RotationStatus>>,

    /// The value of the annotation `cache.upstash-operator.dev/reconcile-requested-at` that the
    /// operator last served: a new value of the annotation was reconciled (with a fresh read of
    /// the database) once this shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,

    /// `true` while Upstash keeps no copy of the database's password and REST tokens (Upstash's
    /// Credential Protection, switched on in the Upstash console): the connection Secret holds
    /// the only copy. The operator never empties or overwrites it with missing values; if the
    /// Secret is deleted it resets the password once (the old credentials stop working) and
    /// writes the new ones. Back the Secret up if applications outside Kubernetes use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_protected: Option<bool>,

    /// The ACL users of `spec.users`: each user's Secret and its rotation clock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub users: Vec<super::UserStatus>,

    /// Monitoring alerts currently firing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub alerts: Vec<FiringAlert>,

    /// This month's spend and its projection to the month's end, refreshed at most hourly
    /// (and whenever an alert changes); Prometheus has the minute-by-minute figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Box<CostStatus>>,

    /// The CachePolicies applied to this instance, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,

    /// IP ranges the database accepts connections from; empty means every address (the live
    /// value of `spec.allowedIPs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Option<Vec<String>>,

    /// Whether Upstash takes a daily backup (the live value of `spec.dailyBackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_backup: Option<bool>,

    /// The last on-demand backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<RequestResult>>,

    /// The last on-demand restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RequestResult>>,

    /// A database create call in flight, as recorded by earlier versions of the operator (the
    /// record is now the `cache.upstash-operator.dev/create-record` annotation). Read and
    /// cleared once the database is found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<Box<PendingCreate>>,

    /// Changes the operator would make to the database and has not made yet: a spec value that
    /// differs from the live one (a call that failed, a setting waiting for its turn), a due
    /// password rotation, a new restore request. Empty when the database matches the spec.
    /// `kubectl upstash plan -f` shows the same list for a manifest not applied yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub pending_changes: Vec<PendingChange>,

    /// The last value of the `cache.upstash-operator.dev/approve-pending` annotation the
    /// operator acted on: a different value approves the changes waiting for the maintenance
    /// window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_approval: Option<String>,
}

/// A change the operator would make to the database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingChange {
    /// The spec field the change serves (`plan`, `readRegions`, `budget`, ...), or `password`
    /// for a rotation and `restore` for a restore request.
    pub field: String,
    /// The live value, as `status` shows it (`-` when there is none).
    pub live: String,
    /// The value the spec asks for.
    pub desired: String,
    /// Whether the change interrupts clients or loses data.
    pub disruptive: bool,
    /// Why the change is disruptive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the change is made: `Now` (on the next pass), or the time it waits for (the
    /// opening of the maintenance window, or, for a rotation request within the minimum
    /// interval after the previous one, the end of that interval).
    pub when: String,
}

/// Name of the Secret holding connection details.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Binding {
    /// Secret name, in the same namespace.
    pub name: String,
}

/// Password rotation bookkeeping.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// When the password was last rotated (or the database created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When the next scheduled rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
    /// The last value of the rotate-password annotation that was acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<String>,
    /// When the last rotate-password request was served. The next request waits until the
    /// operator's minimum interval between on-demand rotations (`--min-rotation-interval`) has
    /// passed since then (`nextRotationTime` says when); requests made meanwhile are served
    /// together, by one rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<Time>,
}

/// A firing monitoring alert.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FiringAlert {
    /// Alert type: `HitRateLow`, `MemoryHigh`, `ErrorRateHigh`, `LatencyHigh`,
    /// `EvictionsHigh`, `ConnectionFailing`, `BudgetNearlyExhausted` or `DailyCommandsHigh`.
    #[serde(rename = "type")]
    pub type_: String,
    /// When the alert started firing.
    pub since: Time,
    /// The value and threshold when the alert fired.
    pub message: String,
}

/// Spend of the database in US dollars.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CostStatus {
    /// Spend this month so far, e.g. `12.34`.
    pub month_to_date_usd: String,
    /// Projected spend by the end of the month: this month's spend plus the recent daily spend
    /// for each remaining day.
    pub projected_month_end_usd: String,
    /// `Upstash` when the figures are Upstash's billing, `PriceModel` when Upstash reported
    /// none and they are estimated from the plan and usage ($0.20 per 100K commands, $0.25 per
    /// GB-month, a fixed plan's monthly price).
    pub source: String,
    /// When the figures were read.
    pub as_of: Time,
}

/// The outcome of an on-demand backup or restore.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestResult {
    /// The request id acted on.
    pub request_id: String,
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// Upstash id of the backup taken or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Name of the backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_name: Option<String>,
    /// What happened.
    pub message: String,
    /// When it finished.
    pub time: Time,
}

/// A database create call the operator sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingCreate {
    /// Database name sent to Upstash.
    pub database_name: String,
    /// When the create call started.
    pub started: Time,
    /// UID of the object that sent the call: a copy of the object restored with a new UID does
    /// not take the record for its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}
