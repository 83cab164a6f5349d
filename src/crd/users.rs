//! Redis ACL users of a CacheInstance (`spec.users`): one user per application, scoped to its
//! key prefix, each with a Secret of its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::{DurationString, RestartTarget};

/// A Redis ACL user the operator creates in the database (paid plans only), with a generated
/// password and a Secret of its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("!(has(self.readOnly) && self.readOnly && has(self.commands))")
        .message("readOnly and commands are exclusive: readOnly: true stands for the read commands, commands lists the rules yourself")
        .field_path(".commands")
        .reason(kube::core::Reason::FieldValueForbidden),
)]
pub struct AclUser {
    /// The Redis user name (lowercase letters, digits and `-`). `default` is the database's own
    /// user and `upstash-operator` is reserved for the operator's own user. The user's Secret is
    /// `<CacheInstance name>-<name>` unless `secretName` says otherwise.
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    #[x_kube(validation = kube::core::Rule::new("self != 'default' && self != 'upstash-operator'")
        .message("default is the database's own user and upstash-operator is the operator's: choose another name")
        .reason(kube::core::Reason::FieldValueForbidden))]
    pub name: String,

    /// Key patterns the user may use (Redis glob patterns, as in `ACL SETUSER ... ~pattern`).
    /// Omit for the instance's `keyPrefix` followed by `*` (every key when no `keyPrefix` is
    /// set), so the prefix apps already use becomes a boundary Redis enforces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256), pattern(r"^\S+$")))]
    pub keys: Option<Vec<String>>,

    /// Pub/sub channel patterns the user may use (`ACL SETUSER ... &pattern`). Omit for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256), pattern(r"^\S+$")))]
    pub channels: Option<Vec<String>>,

    /// Command rules in Redis's ACL syntax, applied in order to a user that starts with no
    /// command: `+@read`, `-@dangerous`, `+get`, `-flushall`, `allcommands`. Omit for
    /// `+@all -@admin -@dangerous` (every data command; no server administration, no `FLUSHALL`,
    /// `KEYS` or other commands Redis marks dangerous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 64),
            pattern(r"^([+-]@?[a-z0-9_|-]+|allcommands|nocommands)$")
        )
    )]
    pub commands: Option<Vec<String>>,

    /// Read-only: `+@read -@dangerous` instead of the default command rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,

    /// Name of the user's Secret. Omit for `<CacheInstance name>-<name>`. A Secret of that name
    /// that the operator does not own is never overwritten: the user is then not created
    /// (`UsersReady=False`, reason `SecretConflict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,

    /// Scheduled rotation of this user's password (and REST token), on a clock of its own:
    /// rotating one user never touches another user's Secret. Omit for rotation on request
    /// only (the `cache.upstash-operator.dev/rotate-user-<name>` annotation on the
    /// CacheInstance). `status.users` shows each user's last and next rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<UserRotation>,
}

/// Rotation of one ACL user's password.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserRotation {
    /// Rotate this user's password this often, e.g. `30d` (units s, m, h, d, w; at least 1h),
    /// counted from its last rotation (or the user's creation). The operator's
    /// `--min-rotation-interval` is a floor. Omit for rotation on request only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(super::common::duration_at_least_rule(3600))
        .message("users[].rotation.every must be at least 1h: rotating more often than once an hour cuts applications off too often")
        .reason(kube::core::Reason::FieldValueInvalid))]
    pub every: Option<DurationString>,

    /// Workloads in the same namespace restarted each time this user's password is rotated
    /// (scheduled or on request), by changing the user's entry in an annotation on their pod
    /// template, so they pick up the user's new Secret. Other users' rotations and the main
    /// Secret's leave them alone. Restarts are coalesced like the main Secret's: one restart
    /// for every credentials change within the operator's restart window, at most one per its
    /// minimum restart interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub restart: Option<Vec<RestartTarget>>,
}

/// One ACL user as the operator last set it (no secret in here).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The user's name.
    pub name: String,
    /// The user's Secret.
    pub secret_name: String,
    /// When the user's password was last generated (its creation or its last rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<Time>,
    /// When its next scheduled rotation is due (none without `rotation.every`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_time: Option<Time>,
}

/// The default command rules of a user.
pub const DEFAULT_USER_COMMANDS: &[&str] = &["+@all", "-@admin", "-@dangerous"];
/// The command rules of a read-only user.
pub const READ_ONLY_USER_COMMANDS: &[&str] = &["+@read", "-@dangerous"];

impl AclUser {
    /// The command rules the user gets.
    pub fn command_rules(&self) -> Vec<String> {
        match (&self.commands, self.read_only) {
            (Some(c), _) => c.clone(),
            (None, Some(true)) => READ_ONLY_USER_COMMANDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            (None, _) => DEFAULT_USER_COMMANDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// The key patterns the user gets, given the instance's key prefix.
    pub fn key_patterns(&self, key_prefix: Option<&str>) -> Vec<String> {
        match &self.keys {
            Some(k) => k.clone(),
            None => vec![format!("{}*", key_prefix.unwrap_or_default())],
        }
    }
}

/// Whether the database's `default` user (the main Secret's password and REST token) works.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Default,
)]
pub enum DefaultUser {
    /// The `default` user is on (as every database starts).
    #[default]
    Enabled,
    /// The `default` user is off once every user in `spec.users` exists: the main Secret's
    /// password and REST token stop working.
    Disabled,
}
