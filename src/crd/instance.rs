//! `CacheInstance`: one Upstash Redis database and its connection Secret.
// Each `printcolumn(...)` repeats `type_ = ...`; clippy mistakes that for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::instance_status::CacheInstanceStatus;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    common::{DeletionPolicy, LocalRef, ManagementPolicy, OnMissing, Plan, ReadRegion, Region},
    secret::{ConnectionSecretSpec, PasswordRotationSpec},
};

/// Annotation that requests a password rotation now: set it to a new value (a timestamp or any
/// unique string); the operator rotates once per distinct value and records it in
/// `status.rotation.lastRequest`, at most once per `--min-rotation-interval` (requests made
/// within it are served together when it has passed).
pub const ROTATE_ANNOTATION: &str = "cache.upstash-operator.dev/rotate-password";

/// Annotation that asks for a reconcile now (Flux-style): set it to a new value (a timestamp or
/// any unique string, e.g. `kubectl annotate --overwrite cacheinstance crm-cache
/// cache.upstash-operator.dev/reconcile-requested-at="$(date -Is)"`); the operator reconciles the
/// instance at once with a fresh read of its database and echoes the value in
/// `status.lastHandledReconcileAt` when that pass has run.
pub const RECONCILE_REQUEST_ANNOTATION: &str = "cache.upstash-operator.dev/reconcile-requested-at";

/// Annotation that pauses one CacheInstance: while it is `"true"` the operator makes no Upstash
/// call and no Kubernetes write for the object (a delete waits until it is removed).
pub const PAUSE_ANNOTATION: &str = "cache.upstash-operator.dev/paused";

/// Annotation the operator sets, with its finalizer, before it sends a database create call:
/// the database name, when the call started and the object's UID, as JSON. While
/// `status.databaseId` names no database, a restarted operator recognises the database of that
/// call instead of creating a second one. Once the status names the database the record has done
/// its work and is left in place (removing it would cost every new instance one more write); a
/// copy of the object with another UID (a restore) ignores it.
pub const CREATE_RECORD_ANNOTATION: &str = "cache.upstash-operator.dev/create-record";

/// The annotation earlier versions of the operator kept while a create call was in flight (read
/// like [`CREATE_RECORD_ANNOTATION`]; the operator's next metadata write removes it).
pub const LEGACY_PENDING_CREATE_ANNOTATION: &str = "cache.upstash-operator.dev/pending-create";

/// An Upstash Redis database provisioned and kept in line with this spec, plus a connection
/// Secret with the variables applications read.
///
/// Every database setting follows one rule: a field you set is enforced on the live database, a
/// field you leave out is left as it is (a new database starts with the default the field
/// documents), and `status` shows the live value of every setting under the spec's field name,
/// so it can be copied into the spec. An explicit empty list (`readRegions: []`,
/// `allowedIPs: []`) means "none".
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cache.upstash-operator.dev",
    version = "v1alpha1",
    kind = "CacheInstance",
    plural = "cacheinstances",
    singular = "cacheinstance",
    namespaced,
    status = "CacheInstanceStatus",
    derive = "PartialEq",
    shortname = "ucache",
    category = "upstash",
    validation = Rule::new("!has(self.spec.secret) || !has(self.spec.secret.readOnly) || self.spec.secret.readOnly.name != (has(self.spec.secret.name) ? self.spec.secret.name : self.metadata.name)")
        .message("spec.secret.readOnly.name must differ from the main Secret's name (spec.secret.name, or the CacheInstance's name when that is not set)")
        .field_path(".spec.secret.readOnly.name")
        .reason(Reason::FieldValueInvalid),
    doc = "An Upstash Redis database managed from Kubernetes: the operator creates it through the Upstash Developer API, keeps plan, budget, regions and eviction in line with the spec, and writes a connection Secret for applications.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the database is usable and its Secret is written"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Why the instance is or is not ready"
    ),
    printcolumn(
        name = "Region",
        type_ = "string",
        json_path = ".spec.primaryRegion",
        description = "Primary region"
    ),
    printcolumn(
        name = "Plan",
        type_ = "string",
        json_path = ".status.plan",
        description = "Plan the database is on"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.binding.name",
        description = "Connection Secret"
    ),
    printcolumn(
        name = "Projected",
        type_ = "string",
        json_path = ".status.cost.projectedMonthEndUsd",
        description = "Projected spend by the end of the month, in US dollars"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Spend",
        type_ = "string",
        json_path = ".status.cost.monthToDateUsd",
        priority = 1,
        description = "Spend this month so far, in US dollars"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoint",
        priority = 1,
        description = "Database endpoint host"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.databaseId",
        priority = 1,
        description = "Upstash database id"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.readRegions) || !self.readRegions.exists(r, r == self.primaryRegion)")
        .message("readRegions must not contain the primaryRegion: the primary already serves reads")
        .field_path(".readRegions")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.plan) || self.plan != 'free' || !has(self.readRegions) || size(self.readRegions) <= 1")
        .message("the free plan allows at most one read region")
        .field_path(".readRegions")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.readRegions) || size(self.readRegions) == 0 || !(self.primaryRegion in ['us-central1', 'us-east4', 'europe-west1', 'asia-northeast1'])")
        .message("readRegions: read replicas are available for AWS primary regions only; a GCP primaryRegion (us-central1, us-east4, europe-west1, asia-northeast1) has none")
        .field_path(".readRegions")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.budget) || self.budget == 0 || !has(self.plan) || self.plan != 'free'")
        .message("the free plan has no budget and Upstash refuses one: set plan: payg, or leave budget out (or 0)")
        .field_path(".budget")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.defaultUser) || self.defaultUser != 'Disabled' || (has(self.users) && size(self.users) > 0)")
        .message("defaultUser: Disabled needs at least one user in spec.users: otherwise nothing could use the database")
        .field_path(".defaultUser")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.users) || size(self.users) == 0 || !has(self.plan) || self.plan != 'free'")
        .message("users: Redis ACL users need a paid plan and the free plan has none: set plan: payg (or a fixed plan), or remove users")
        .field_path(".users")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.adopt) || !has(self.adopt.byName) || !self.adopt.byName || has(self.databaseName)")
        .message("adopt.byName: true adopts the database named spec.databaseName: set it")
        .field_path(".databaseName")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("has(self.databaseName) == has(oldSelf.databaseName) && (!has(self.databaseName) || self.databaseName == oldSelf.databaseName)")
        .message("databaseName is immutable: it identifies the Upstash database. To use another name, create a new CacheInstance and delete this one (set deletionPolicy: Retain first to keep the old database)")
        .field_path(".databaseName")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("has(self.adopt) == has(oldSelf.adopt) && (!has(self.adopt) || self.adopt == oldSelf.adopt)")
        .message("adopt is immutable: adoption is decided when the CacheInstance is created. To adopt another database, create a new CacheInstance")
        .field_path(".adopt")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
// Groups that most objects leave out are boxed: the operator caches every CacheInstance, and an
// absent box costs one pointer where the inline group would cost its full size.
pub struct CacheInstanceSpec {
    /// Name of the Upstash database. When omitted the operator derives one from the namespace, the
    /// CacheInstance name and the cluster's identity (`<namespace>-<name>-<8 hex digits>`), so the
    /// same object applied again (after a delete with `deletionPolicy: Retain`, or restored by a
    /// backup tool without its status) takes back its database instead of creating a second one.
    /// A name you choose here that an existing database already has is reported (`NameTaken`),
    /// never taken over: use `adopt.byName` for that. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub database_name: Option<String>,

    /// Region of the primary replica, where writes go: one of the 14 AWS regions (`us-east-1`,
    /// `eu-west-1`, ...) or 4 GCP regions (`us-central1`, `us-east4`, `europe-west1`,
    /// `asia-northeast1`). Immutable: Upstash cannot move a primary; to change it, create a new
    /// CacheInstance and delete this one (set deletionPolicy: Retain first to keep the data).
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("primaryRegion is immutable: Upstash cannot move a database's primary. To change it, create a new CacheInstance in the new region and delete this one (set deletionPolicy: Retain first to keep the old database)")
        .reason(Reason::FieldValueForbidden))]
    pub primary_region: Region,

    /// Regions holding read replicas (AWS regions except `af-south-1`), each listed once. Must
    /// not contain the primary region. Changing the list adds or removes replicas on the live
    /// database; `[]` removes every replica. Omit to leave the replicas as they are (a new
    /// database gets none); `status.readRegions` shows the live list. The list is replaced as a
    /// whole on apply (server-side apply included), so `[]` stays an explicit "none".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 13))]
    #[x_kube(
        validation = Rule::new("self.all(r, self.exists_one(s, s == r))")
            .message("Duplicate value: each read region may be listed once"),
        merge_strategy = ListMerge::Atomic
    )]
    pub read_regions: Option<Vec<ReadRegion>>,

    /// Upstash plan: `free`, `payg` (pay as you go), or a fixed plan from `fixed_250mb` to
    /// `fixed_500gb`. Changing it changes the plan of the live database. Omit to leave the plan
    /// as it is (a new database starts on `payg`); `status.plan` shows the live plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,

    /// Monthly budget in whole US dollars (`50` is $50 a month) that Upstash enforces for
    /// pay-as-you-go databases: past it the database is throttled instead of billed further.
    /// `0` means no budget: spend is not capped (a database without a budget shows `0` in
    /// `status.budget`). The free plan has no budget: with `plan: free` only `0` is accepted.
    /// Upstash's API and console count it in cents; the operator converts. Omit to leave the
    /// budget as it is (a new database gets Upstash's default); `status.budget` shows the live
    /// budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub budget: Option<i64>,

    /// Evict keys when the database reaches its data limit instead of rejecting writes. Omit to
    /// leave the setting as it is (new databases start without eviction); `status.eviction`
    /// shows the live setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction: Option<bool>,

    /// Let Upstash move the database to the next plan when it outgrows the current one. Omit to
    /// leave the setting as it is (new databases start without it); `status.autoUpgrade` shows
    /// the live setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_upgrade: Option<bool>,

    /// Enable Upstash's Prod Pack add-on (uptime SLA, monitoring, role-based access; billed per
    /// database). Omit to leave the setting as it is (new databases start without it);
    /// `status.prodPack` shows the live setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prod_pack: Option<bool>,

    /// Prefix applications put in front of every key, published as `REDIS_KEY_PREFIX` in the
    /// connection Secret (for example `unite-hub:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub key_prefix: Option<String>,

    /// The connection Secret written next to the CacheInstance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Box<ConnectionSecretSpec>>,

    /// Scheduled and on-demand rotation of the database password and REST tokens. Annotate the
    /// CacheInstance with `cache.upstash-operator.dev/rotate-password=<new value>` to rotate now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rotation: Option<Box<PasswordRotationSpec>>,

    /// What happens to the Upstash database when this CacheInstance is deleted: `Delete` removes
    /// it, `Retain` keeps it (and its data) in the Upstash account. When omitted, the selecting
    /// CachePolicy's `guardrails.defaultDeletionPolicy` applies, else the operator's default
    /// (`Delete` unless configured otherwise), except for an adopted database (`adopt`), which
    /// is kept unless this field says `Delete`. Setting `Retain` on an object that is already
    /// being deleted lets it go at once without calling Upstash: the way out when its cleanup
    /// cannot run (for example because the Upstash account is gone). With
    /// `managementPolicy: Observe` the database is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,

    /// While `true`, the API server refuses to delete this CacheInstance (`kubectl delete`, a
    /// GitOps prune, a namespace delete), so its database cannot be removed by accident. The
    /// refusal comes from the ValidatingAdmissionPolicy
    /// `upstash-operator-deletion-protection` that is installed with the CRDs. To delete the
    /// object, first set this to `false` (`kubectl patch cacheinstance <name> --type merge -p
    /// '{"spec":{"deletionProtection":false}}'`). A namespace being deleted waits on a protected
    /// object, with its database in place, until protection is turned off. Omitted or `false`:
    /// no protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_protection: Option<bool>,

    /// Take over an existing Upstash database instead of creating one. Without this block the
    /// operator never touches a database it did not create. An adopted database is kept when
    /// this CacheInstance is deleted unless `deletionPolicy: Delete` is set here (no default
    /// deletes it). A database another CacheInstance manages, in any namespace, is not adopted
    /// (`AlreadyManaged`). Through the operator-wide credentials, adoption works only in the
    /// namespaces the platform team allows (`AdoptionNotAllowed` elsewhere); with the namespace's
    /// own credentials Secret or `credentials`, within that account. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Box<AdoptSpec>>,

    /// IP addresses or CIDR ranges allowed to connect to the database (for example
    /// `10.0.0.0/8`, `203.0.113.7`), each listed once. `[]` removes the allow-list, so that
    /// every address may connect. Omit to leave the allow-list as it is (a new database accepts
    /// every address); `status.allowedIPs` shows the live list. The list is replaced as a whole
    /// on apply (server-side apply included), so `[]` stays an explicit "every address".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(max = 64)))]
    #[x_kube(
        validation = Rule::new("self.all(c, isCIDR(c) || isIP(c))")
            .message("allowedIPs entries must be IP addresses or CIDR ranges such as 10.0.0.0/8"),
        validation = Rule::new("self.all(c, self.exists_one(d, d == c))")
            .message("Duplicate value: each address or range may be listed once"),
        merge_strategy = ListMerge::Atomic
    )]
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Option<Vec<String>>,

    /// Let Upstash take a backup every day. Omit to leave the setting as it is (new databases
    /// start without it); `status.dailyBackup` shows the live setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_backup: Option<bool>,

    /// An on-demand backup: set `requestId` to a new value to take one backup named after it.
    /// It runs once per request id; the result is in `status.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Box<BackupRequest>>,

    /// An on-demand restore: set `requestId` to a new value to restore the named backup once,
    /// replacing the data in the database. The result is in `status.restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<Box<RestoreRequest>>,

    /// When changes that disrupt clients may be made (see `MaintenanceWindow`). Omit to use
    /// the window of the CachePolicy that applies (`spec.maintenanceWindow` there), or, with
    /// none, to make every change at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<Box<super::window::MaintenanceWindow>>,

    /// Upstash account credentials for this instance. Omit to use the namespace's
    /// `upstash-credentials` Secret if it exists, else the operator-wide credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Box<CredentialsRef>>,

    /// A CachePolicy (same namespace) to apply to this instance in addition to every policy
    /// whose selector matches its labels. A reference adds a policy; it never exempts the
    /// instance from the guardrails of a policy that selects it (the strictest rule wins). With
    /// no policy at all, the operator's default thresholds apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<LocalRef>,

    /// How far the operator manages the database. `Full` (the default) creates, changes,
    /// rotates, backs up, restores and deletes it as the spec says. `Observe` only reads it: the
    /// operator writes the connection Secret for the database this instance already has (recorded
    /// in `status.databaseId`, taken back by its derived name, or named in `adopt`), shows the
    /// live settings in `status`, reports every setting that differs from the spec on the
    /// `Synced` condition (reason `Drifted`, naming each field with the spec's and the live value,
    /// and one Event per new difference), and never creates, changes, rotates, backs up, restores
    /// or deletes anything in Upstash, whatever `deletionPolicy` says. Switching to `Full` makes
    /// exactly the calls that bring the differing settings in line. To stop all work on one
    /// object instead, annotate it with `cache.upstash-operator.dev/paused: "true"`: no Upstash
    /// call and no Kubernetes write happens until the annotation is removed, and a delete waits
    /// for that too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_policy: Option<ManagementPolicy>,

    /// What to do when a database this instance created is no longer in Upstash. `Recreate` (the
    /// default) creates a new, empty database with new credentials and rewrites the Secret: it is
    /// a cache. `Report` only reports it (`Provisioned=False`, reason `DatabaseMissing`). Upstash
    /// archives free databases after 30 days without use and keeps a backup that can be restored
    /// from the Upstash console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_missing: Option<OnMissing>,

    /// Redis ACL users, one per application, each limited to its keys (by default the
    /// `keyPrefix` followed by `*`) and commands (by default no `@admin` and no `@dangerous`
    /// command), with a generated password and a Secret of its own holding the same variables as
    /// the main Secret (`REDIS_URL` with the user's name, `REDIS_PASSWORD`,
    /// `UPSTASH_REDIS_REST_URL`, `UPSTASH_REDIS_REST_TOKEN` acting as the user,
    /// `REDIS_KEY_PREFIX`, `REDIS_TLS_ENABLED`). Paid plans only. The operator creates the users,
    /// sets them back when they are changed or deleted outside Kubernetes (one `DriftCorrected`
    /// Event), re-creates them after a restore or a database re-creation (both drop ACL users),
    /// and deletes a user and its Secret when it leaves this list. Users this list never named
    /// are left alone. Rotate one user's password by setting the annotation
    /// `cache.upstash-operator.dev/rotate-user-<name>` to a new value. State: the `UsersReady`
    /// condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub users: Option<Vec<super::AclUser>>,

    /// The database's `default` user, whose password and REST token the main Secret holds.
    /// `Disabled` turns it off once every user in `users` exists, so that the all-powerful
    /// password stops working (apps still on the main Secret get authentication errors: move them
    /// to a user of their own first); the operator then manages the users with an ACL user of its
    /// own (`upstash-operator`, allowed only `ACL` commands), whose credentials it keeps in the
    /// Secret `<CacheInstance name>-upstash-operator`. `Enabled` turns it back on. Omit to leave
    /// it as it is. A restore turns it back on (Upstash drops ACL settings); the operator turns it
    /// off again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<super::DefaultUser>,
}

/// Adoption of an existing Upstash database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.databaseId) != (has(self.byName) && self.byName)")
    .message("set exactly one of adopt.databaseId or adopt.byName: true"))]
pub struct AdoptSpec {
    /// Id of the Upstash database to adopt (the UUID shown in the Upstash console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9-]+$"))]
    pub database_id: Option<String>,

    /// Adopt the database whose name equals `spec.databaseName` (which must then be set);
    /// adoption stops with a condition if no database or more than one has that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_name: Option<bool>,
}

/// An on-demand backup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupRequest {
    /// A new value takes a new backup, named after this id.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub request_id: String,
}

/// An on-demand restore.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.backupName) != has(self.backupId)")
    .message("set exactly one of restore.backupName or restore.backupId"))]
pub struct RestoreRequest {
    /// A new value restores once.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"))]
    pub request_id: String,
    /// Name of the backup to restore (an on-demand backup is named after its request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub backup_name: Option<String>,
    /// Upstash id of the backup to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub backup_id: Option<String>,
}

/// Where to read Upstash credentials from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Secret in the CacheInstance's namespace holding the account email and Developer API key.
    pub secret_ref: CredentialsSecretRef,
}

/// A Secret holding Upstash credentials.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key holding the Upstash account email. Defaults to `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub email_key: Option<String>,
    /// Key holding the Developer API key. Defaults to `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub api_key_key: Option<String>,
}
