//! Redis ACL users of a CacheInstance (`spec.users`): one user per application, scoped to its
//! key prefix, each with a Secret of its own.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

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
