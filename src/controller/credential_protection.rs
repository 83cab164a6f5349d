//! Upstash's Credential Protection (Prod Pack): once it is on, Upstash keeps no copy of a
//! database's password and REST tokens; a Get answers none (or empty ones), and only
//! reset-password shows new ones, once. The connection Secret is then the only copy.
//!
//! So a database read without credentials never reaches the Secrets: while they are in place
//! they are kept exactly as they are (no value is ever replaced by an empty one), the instance
//! says so (`status.credentialsProtected`, and one Event when it starts), and when a Secret is
//! gone the operator makes one reset-password call and writes the new credentials (with a
//! Warning Event: the old credentials are revoked) instead of writing an empty Secret.
//!
//! The decision is pure ([`plan`]); the reconciler carries it out.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::{
    controller::{Context, secret},
    crd::CacheInstance,
    error::Result,
    upstash::Database,
};

/// Reason of the Normal Event when Upstash starts withholding the credentials.
pub const PROTECTED_REASON: &str = "CredentialsProtected";
/// Reason of the Warning Event when a lost Secret is recovered by a password reset.
pub const RESET_REASON: &str = "CredentialsReset";

/// What to do with the connection Secrets, given what Upstash answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsPlan {
    /// The database came with its credentials: write the Secrets as usual.
    Publish,
    /// Upstash withholds them and every Secret is in place: keep the Secrets as they are.
    Keep,
    /// Upstash withholds them and these Secrets are gone: reset the password once, then write.
    Recover { missing: Vec<String> },
    /// As `Recover`, but the instance may not change the database (`managementPolicy:
    /// Observe`): report it and write nothing.
    Unrecoverable { missing: Vec<String> },
}

/// The plan for a database read with (`has_credentials`) or without credentials, given each
/// Secret the spec names and whether it exists.
pub fn plan(
    has_credentials: bool,
    secrets: &[(String, bool)],
    observe_only: bool,
) -> CredentialsPlan {
    if has_credentials {
        return CredentialsPlan::Publish;
    }
    let missing: Vec<String> = secrets
        .iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name.clone())
        .collect();
    match (missing.is_empty(), observe_only) {
        (true, _) => CredentialsPlan::Keep,
        (false, false) => CredentialsPlan::Recover { missing },
        (false, true) => CredentialsPlan::Unrecoverable { missing },
    }
}

/// Whether the status should say the credentials are protected: the database was read without
/// them. `None` clears the field (the credentials are available again).
pub fn status_value(withheld: bool) -> Option<bool> {
    withheld.then_some(true)
}

/// Whether protection has just started for this instance (the Event fires on this transition
/// only).
pub fn started(previous: Option<bool>, withheld: bool) -> bool {
    withheld && previous != Some(true)
}

/// The note of the [`PROTECTED_REASON`] Event when protection has just started for `obj`.
pub fn started_note(
    obj: &CacheInstance,
    database_id: &str,
    previous: Option<bool>,
    withheld: bool,
) -> Option<String> {
    if !started(previous, withheld) {
        return None;
    }
    let mut names = vec![secret::secret_name(obj)];
    names.extend(secret::read_only_secret_name(obj));
    Some(protected_note(database_id, &names))
}

/// The note of the [`PROTECTED_REASON`] Event.
pub fn protected_note(database_id: &str, secrets: &[String]) -> String {
    format!(
        "Upstash keeps no copy of the credentials of database {database_id} (Credential Protection): Secret {} holds the only copy; the operator keeps it as it is and never empties it. If it is deleted, the operator resets the password (revoking the old credentials)",
        secrets.join(", ")
    )
}

/// The note of the [`RESET_REASON`] Event.
pub fn reset_note(database_id: &str, missing: &[String]) -> String {
    format!(
        "Secret {} is gone and Upstash keeps no copy of the credentials of database {database_id} (Credential Protection): reset the password to write new credentials; the old password and REST tokens are revoked",
        missing.join(", ")
    )
}

/// The message of the failure when the credentials cannot be recovered in Observe mode.
pub fn unrecoverable_message(database_id: &str, missing: &[String]) -> String {
    format!(
        "Secret {} is gone and Upstash keeps no copy of the credentials of database {database_id} (Credential Protection); managementPolicy is Observe, so the operator does not reset the password: reset it in the Upstash console, or switch to Full",
        missing.join(", ")
    )
}

/// `db` without its credentials: what a Get of a protected database answers, to be reused by
/// the next pass instead of the credentials a reset showed once.
pub fn without_credentials(db: &Database) -> Database {
    let mut db = db.clone();
    db.password = None;
    db.rest_token = None;
    db.read_only_rest_token = None;
    db
}

/// The Secrets the spec names, each with whether it exists. The operator's cache of its own
/// Secrets answers first (no read in steady state); a Secret it lacks is read from the API
/// server, so a reset is never made for a Secret that only the cache has not seen yet. Nothing
/// is looked at when the database came with its credentials (`has_credentials`).
pub async fn secrets_present(
    ctx: &Context,
    obj: &CacheInstance,
    has_credentials: bool,
) -> Result<Vec<(String, bool)>> {
    if has_credentials {
        return Ok(Vec::new());
    }
    let namespace = obj.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut out = Vec::new();
    for name in std::iter::once(secret::secret_name(obj)).chain(secret::read_only_secret_name(obj))
    {
        let present = ctx.owned_secrets.get(&namespace, &name).is_some()
            || api.get_opt(&name).await?.is_some();
        out.push((name, present));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(present: &[(&str, bool)]) -> Vec<(String, bool)> {
        present.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn credentials_at_hand_are_published() {
        assert_eq!(
            plan(true, &secrets(&[("crm-redis", false)]), false),
            CredentialsPlan::Publish
        );
    }

    #[test]
    fn withheld_credentials_keep_the_secrets_in_place() {
        assert_eq!(
            plan(
                false,
                &secrets(&[("crm-redis", true), ("crm-ro", true)]),
                false
            ),
            CredentialsPlan::Keep
        );
        assert_eq!(
            plan(false, &secrets(&[("crm-redis", true)]), true),
            CredentialsPlan::Keep
        );
    }

    #[test]
    fn a_lost_secret_is_recovered_by_a_reset_unless_only_observing() {
        let s = secrets(&[("crm-redis", true), ("crm-ro", false)]);
        assert_eq!(
            plan(false, &s, false),
            CredentialsPlan::Recover {
                missing: vec!["crm-ro".into()]
            }
        );
        assert_eq!(
            plan(false, &s, true),
            CredentialsPlan::Unrecoverable {
                missing: vec!["crm-ro".into()]
            }
        );
    }

    #[test]
    fn the_event_fires_when_protection_starts_only() {
        assert!(started(None, true));
        assert!(!started(Some(true), true));
        assert!(!started(None, false));
        assert_eq!(status_value(true), Some(true));
        assert_eq!(status_value(false), None);
    }

    #[test]
    fn notes_name_the_secret_and_say_what_a_reset_does() {
        let note = protected_note("db-1", &["crm-redis".into()]);
        assert!(note.contains("Secret crm-redis holds the only copy"));
        let note = reset_note("db-1", &["crm-redis".into()]);
        assert!(note.contains("revoked") && note.contains("crm-redis"));
    }

    #[test]
    fn a_copy_without_credentials_has_none() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "database_id": "db-1", "password": "p", "rest_token": "t", "read_only_rest_token": "r"
        }))
        .unwrap();
        assert!(db.has_credentials());
        let stripped = without_credentials(&db);
        assert!(!stripped.has_credentials());
        assert_eq!(stripped.database_id, "db-1");
    }
}
