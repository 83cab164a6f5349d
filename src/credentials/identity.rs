//! Which Upstash account a set of credentials acts for.
//!
//! An email is not an account: the same person's personal API key and a key created inside a
//! team (same email) see different databases. Upstash names the account in every Database
//! object (`customer_id`: the owner's email for personal databases, the team's id for team
//! databases), so the operator records that in `status.account` and learns, from every
//! Database answer, which account each key belongs to. What it learned is kept in memory and
//! on the credentials Secret itself ([`ACCOUNT_ANNOTATION`], with a digest of the credentials
//! it was learned with in [`ACCOUNT_KEY_ANNOTATION`], so that changed credentials are never
//! taken for the old account), which survives restarts.
//!
//! A recorded database that the credentials cannot see is *missing* only when the credentials
//! are known to act for the recorded account; otherwise it is *not visible* and is never
//! recreated.

use std::{collections::HashMap, sync::Mutex};

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::upstash::{Credentials, Database, ListedDatabase};

/// Annotation on a credentials Secret: the Upstash account its credentials act for.
pub const ACCOUNT_ANNOTATION: &str = "cache.upstash-operator.dev/account";
/// Annotation on a credentials Secret: digest of the credentials [`ACCOUNT_ANNOTATION`] was
/// learned with (a one-way digest, never the key).
pub const ACCOUNT_KEY_ANNOTATION: &str = "cache.upstash-operator.dev/account-key-digest";

/// A one-way digest of the credentials, to tell whether the credentials a Secret holds now are
/// the ones an account was learned with. 96 bits of SHA-256 over a domain-separated encoding.
pub fn key_digest(credentials: &Credentials) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"upstash-operator/account-key/v1\0");
    hasher.update(credentials.email.trim().to_ascii_lowercase().as_bytes());
    hasher.update(b"\0");
    hasher.update(credentials.api_key.expose_secret().as_bytes());
    hasher
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The account a database belongs to, as Upstash names it.
pub fn account_of(db: &Database) -> Option<&str> {
    account_in(&db.customer_id, &db.user_email)
}

/// The account a listed database belongs to, as Upstash names it.
pub fn listed_account_of(db: &ListedDatabase) -> Option<&str> {
    account_in(&db.customer_id, &db.user_email)
}

/// The account named by a database's `customer_id`, or else by its older `user_email`.
fn account_in<'a>(customer_id: &'a str, user_email: &'a str) -> Option<&'a str> {
    [customer_id, user_email]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
}

/// Whether two account names are the same account (emails compare case-insensitively).
pub fn same_account(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

/// Accounts learned per credentials digest.
#[derive(Default)]
pub struct Identities {
    by_key: Mutex<HashMap<String, String>>,
}

impl Identities {
    /// The account learned for `digest`, if any.
    pub fn get(&self, digest: &str) -> Option<String> {
        self.by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// Records that `digest` acts for `account`; returns whether that is new.
    pub fn learn(&self, digest: &str, account: &str) -> bool {
        let mut map = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(digest) {
            Some(known) if same_account(known, account) => false,
            _ => {
                map.insert(digest.to_string(), account.to_string());
                true
            }
        }
    }
}

/// What looking a recorded database up with a set of credentials found.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The database exists and these credentials see it.
    Found(Box<Database>),
    /// The credentials act for the database's account, which no longer has it.
    Missing,
    /// The credentials cannot see the database and may act for another account; the message
    /// says which and what to do. It must not be recreated.
    NotVisible(String),
}

/// Decides between [`Lookup::Missing`] and [`Lookup::NotVisible`] for a database `id` that the
/// credentials (from `origin`) did not find. `recorded` is the account `status.account`
/// records, `current` the account the credentials are known to act for (`None`: unknown, for
/// example an account with no database to learn it from).
pub fn judge_absence(
    id: &str,
    recorded: Option<&str>,
    current: Option<&str>,
    origin: &str,
) -> Lookup {
    match (recorded, current) {
        // A status written before accounts were recorded: nothing to compare with.
        (None, _) => Lookup::Missing,
        (Some(r), Some(c)) if same_account(r, c) => Lookup::Missing,
        (Some(r), Some(c)) => Lookup::NotVisible(format!(
            "database {id} belongs to Upstash account {r}, but the credentials from {origin} act for account {c}; the database is not read, changed, recreated or deleted until credentials for {r} are back"
        )),
        (Some(r), None) => Lookup::NotVisible(format!(
            "database {id} (Upstash account {r}) is not visible to the credentials from {origin}, and their account has no database that tells which account they act for; the database is not recreated, in case those credentials belong to another account. Put credentials for {r} back, or, if the database is gone for good, delete this CacheInstance and create it again"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn creds(email: &str, key: &str) -> Credentials {
        Credentials {
            email: email.into(),
            api_key: SecretString::from(key.to_string()),
        }
    }

    #[test]
    fn digests_tell_keys_apart_and_hide_them() {
        let a = key_digest(&creds("Ops@Example.com", "key-1"));
        assert_eq!(a, key_digest(&creds("ops@example.com ", "key-1")));
        assert_ne!(a, key_digest(&creds("ops@example.com", "key-2")));
        assert_eq!(a.len(), 24);
        assert!(!a.contains("key-1"));
    }

    #[test]
    fn the_account_is_the_customer_id() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "database_id": "1", "customer_id": "team-42", "user_email": "team-42"
        }))
        .unwrap();
        assert_eq!(account_of(&db), Some("team-42"));
        let legacy: Database = serde_json::from_value(serde_json::json!({
            "database_id": "1", "user_email": "ops@example.com"
        }))
        .unwrap();
        assert_eq!(account_of(&legacy), Some("ops@example.com"));
        let none: Database =
            serde_json::from_value(serde_json::json!({"database_id": "1"})).unwrap();
        assert_eq!(account_of(&none), None);
    }

    #[test]
    fn learning_reports_only_news() {
        let ids = Identities::default();
        assert!(ids.learn("d1", "ops@example.com"));
        assert!(!ids.learn("d1", "OPS@example.com"));
        assert!(ids.learn("d1", "team-1"));
        assert_eq!(ids.get("d1").as_deref(), Some("team-1"));
        assert_eq!(ids.get("d2"), None);
    }

    #[test]
    fn absence_is_missing_only_for_the_same_account() {
        let origin = "Secret crm/upstash-credentials";
        assert!(matches!(
            judge_absence(
                "db1",
                Some("ops@example.com"),
                Some("OPS@example.com"),
                origin
            ),
            Lookup::Missing
        ));
        assert!(matches!(
            judge_absence("db1", None, None, origin),
            Lookup::Missing
        ));
        let Lookup::NotVisible(why) =
            judge_absence("db1", Some("ops@example.com"), Some("team-1"), origin)
        else {
            panic!("another account must not look missing");
        };
        assert_eq!(
            why,
            "database db1 belongs to Upstash account ops@example.com, but the credentials from Secret crm/upstash-credentials act for account team-1; the database is not read, changed, recreated or deleted until credentials for ops@example.com are back"
        );
        assert!(matches!(
            judge_absence("db1", Some("ops@example.com"), None, origin),
            Lookup::NotVisible(_)
        ));
    }
}
