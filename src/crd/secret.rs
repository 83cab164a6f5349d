//! The connection Secret of a CacheInstance: its presets and names, the read-only Secret, and
//! the password rotation with the workloads restarted after it.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::DurationString,
    validation::{LABEL_VALUE_PATTERN, QUALIFIED_NAME_RULE},
};

/// A set of keys written to the connection Secret.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum SecretPreset {
    /// `UPSTASH_REDIS_REST_URL`, `UPSTASH_REDIS_REST_TOKEN`, `REDIS_URL`, `REDIS_PASSWORD`,
    /// `REDIS_KEY_PREFIX`, `REDIS_TLS_ENABLED`.
    Env,
    /// Service Binding keys: `type`, `provider`, `host`, `port`, `username`, `password`, `uri`,
    /// `ssl`; the Secret gets type `servicebinding.io/redis`.
    ServiceBinding,
}

/// The connection Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSecretSpec {
    /// Name of the Secret, in the CacheInstance's namespace. Defaults to the CacheInstance's
    /// name. The operator never overwrites a Secret it does not own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: Option<String>,

    /// Key sets to write: `Env` (the variables apps already use: `UPSTASH_REDIS_REST_URL`,
    /// `UPSTASH_REDIS_REST_TOKEN`, `REDIS_URL`, `REDIS_PASSWORD`, `REDIS_KEY_PREFIX`,
    /// `REDIS_TLS_ENABLED`) and/or `ServiceBinding` (`type`, `provider`, `host`, `port`,
    /// `username`, `password`, `uri`, `ssl`, with Secret type `servicebinding.io/redis`).
    /// Defaults to `[Env]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub presets: Option<Vec<SecretPreset>>,

    /// Extra keys rendered from templates, for apps that expect other names. Keys are Secret data
    /// keys; values are templates with `{{ restUrl }}`, `{{ restToken }}`, `{{ readOnlyRestToken }}`,
    /// `{{ host }}`, `{{ port }}`, `{{ password }}`, `{{ redisUrl }}`, `{{ keyPrefix }}`,
    /// `{{ databaseId }}` and `{{ databaseName }}`, e.g. `CACHE_URL: "{{ redisUrl }}/0"`.
    /// Rendering is bounded (100,000 template steps, 16 nested loops or calls, 64 KiB per value,
    /// 32 MiB of memory, 5 s); a template past a bound, or one that would make the Secret larger
    /// than 1 MiB, is reported as `InvalidSpec` before any database is created or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[-._a-zA-Z0-9]+$') && size(k) <= 253)")
        .message("template keys must be valid Secret data keys (letters, digits, '-', '_' and '.')"))]
    #[schemars(extend("maxProperties" = 64))]
    pub templates: Option<BTreeMap<String, String>>,

    /// A second Secret holding only read-only credentials (`UPSTASH_REDIS_REST_URL`,
    /// `UPSTASH_REDIS_REST_TOKEN` set to the read-only REST token, and `REDIS_KEY_PREFIX`), for
    /// workloads that must not write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<ReadOnlySecretSpec>,

    /// Labels added to the Secret(s), at most 64. Keys and values follow Kubernetes' label
    /// syntax: a key is an optional DNS subdomain prefix (up to 253 characters) and `/`, then a
    /// name of up to 63 letters, digits, `-`, `_` and `.` that starts and ends with a letter or
    /// digit; a value is empty or such a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    #[x_kube(
        validation = Rule::new(format!("self.all(k, {QUALIFIED_NAME_RULE})"))
            .message("spec.secret.labels: keys must be label keys (an optional DNS subdomain prefix of up to 253 characters and '/', then a name of up to 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit)"),
        validation = Rule::new(format!("self.all(k, self[k].matches('{LABEL_VALUE_PATTERN}'))"))
            .message("spec.secret.labels: values must be empty or up to 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit"),
    )]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations added to the Secret(s), at most 64. Keys follow the label key syntax, and keys
    /// and values together hold at most 256 KiB, as Kubernetes requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 262144}))]
    #[x_kube(
        validation = Rule::new(format!("self.map(a, a.lowerAscii()).all(k, {QUALIFIED_NAME_RULE})"))
            .message("spec.secret.annotations: keys must be annotation keys (an optional DNS subdomain prefix of up to 253 characters and '/', then a name of up to 63 letters, digits, '-', '_' and '.' starting and ending with a letter or digit)"),
        validation = Rule::new("self.map(k, size(k) + size(self[k])).sum() <= 262144")
            .message("spec.secret.annotations: keys and values together may hold at most 256 KiB (262144 bytes)"),
    )]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The read-only connection Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadOnlySecretSpec {
    /// Name of the read-only Secret, in the CacheInstance's namespace. Must differ from the main
    /// Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Password rotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PasswordRotationSpec {
    /// Rotate this often, e.g. `90d` (units s, m, h, d, w; at least 1h). Omit for on-demand
    /// rotation only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(super::common::duration_at_least_rule(3600))
        .message("passwordRotation.every must be at least 1h: rotating more often than once an hour cuts applications off too often")
        .reason(Reason::FieldValueInvalid))]
    pub every: Option<DurationString>,

    /// Workloads in the same namespace restarted after each rotation (by changing an annotation
    /// on their pod template), so they pick up the new credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub restart: Option<Vec<RestartTarget>>,
}

/// Kinds of workloads that can be restarted after a rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// A workload restarted after rotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: WorkloadKind,
    /// Name of the workload, in the CacheInstance's namespace.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}
