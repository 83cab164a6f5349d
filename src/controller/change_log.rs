//! The change log: every mutating Developer API call the reconciler makes is one structured log
//! line (target `changelog`: the object, the database, what, old → new, and why: a spec change,
//! drift, a schedule, a request, a recovery), beside the Event that announces it; and a drift
//! Event names who made the change and from where, from Upstash's audit log (read once per
//! detected drift, never per resync).
//!
//! Everything here but the log line itself is pure.

use k8s_openapi::jiff::Timestamp;

use crate::{
    controller::{desired::Change, developer_api::DeveloperApi},
    crd::CacheInstance,
    upstash::{AuditLogEntry, Database},
};

/// Why a mutating call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The spec asks for a value the database does not have.
    Spec,
    /// The database was changed outside Kubernetes and is set back.
    Drift,
    /// A password rotation on `passwordRotation.every`.
    Schedule,
    /// A requested action (the rotate annotation).
    Request,
    /// Credentials lost while Upstash keeps no copy (Credential Protection).
    Recovery,
}

impl Why {
    /// A settings change: drift set back, or the spec's new value.
    pub fn of(drift: bool) -> Self {
        if drift { Why::Drift } else { Why::Spec }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Why::Spec => "spec change",
            Why::Drift => "drift",
            Why::Schedule => "schedule",
            Why::Request => "request",
            Why::Recovery => "recovery",
        }
    }
}

/// One structured log line for a mutating call: `what` on the database, `old` → `new`, `why`.
pub fn log_call(
    obj: &CacheInstance,
    database_id: &str,
    what: &str,
    old: &str,
    new: &str,
    why: Why,
) {
    tracing::info!(
        target: "changelog",
        namespace = obj.metadata.namespace.as_deref().unwrap_or_default(),
        name = obj.metadata.name.as_deref().unwrap_or_default(),
        database_id,
        what,
        old,
        new,
        why = why.as_str(),
        "changing {what} of database {database_id}: {old} → {new} ({})",
        why.as_str()
    );
}

/// The log line of a once-only request (`backup`, `restore`) served for `request_id`.
pub fn log_request(obj: &CacheInstance, database_id: &str, what: &str, request_id: &str) {
    log_call(obj, database_id, what, "", request_id, Why::Request);
}

/// The log line of a password reset, requested or on schedule.
pub fn log_rotation(obj: &CacheInstance, database_id: &str, requested: bool) {
    let why = if requested {
        Why::Request
    } else {
        Why::Schedule
    };
    log_call(obj, database_id, "password", "current", "new", why);
}

/// For a detected drift (`drift`), what the Event says about who made each change: one read of
/// the account's audit log. `None` (and no call) when nothing drifted.
pub async fn drift_attribution(
    api: &impl DeveloperApi,
    db: &Database,
    changes: &[Change],
    drift: bool,
) -> Option<String> {
    if !drift {
        return None;
    }
    let read = api.audit_logs().await.map_err(|e| e.to_string());
    Some(attribution(
        match &read {
            Ok(entries) => Ok(entries.as_slice()),
            Err(e) => Err(e.clone()),
        },
        db,
        changes,
    ))
}

/// One log line per settings change, with the live value `db` has before the call.
pub fn log_changes(obj: &CacheInstance, db: &Database, changes: &[Change], why: Why) {
    for change in changes {
        log_call(
            obj,
            &db.database_id,
            change.field(),
            &change.live(db),
            &change.wanted(),
            why,
        );
    }
}

/// The audit log's action strings of the calls that change `field` (compared without case,
/// spaces or punctuation).
fn actions_for(field: &str) -> &'static [&'static str] {
    match field {
        "budget" => &["updatebudget"],
        "plan" => &["changeplan", "updateplan"],
        "eviction" => &["enableeviction", "disableeviction"],
        "autoUpgrade" => &["enableautoupgrade", "disableautoupgrade"],
        "prodPack" => &["enableprodpack", "disableprodpack"],
        "readRegions" => &["updateregions"],
        "allowedIPs" => &["updateallowlist"],
        "dailyBackup" => &["enabledailybackup", "disabledailybackup"],
        _ => &[],
    }
}

fn normalized(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The newest audit-log entry that changed `field` of `db`, if the log has one.
pub fn who_changed<'a>(
    entries: &'a [AuditLogEntry],
    db: &Database,
    field: &str,
) -> Option<&'a AuditLogEntry> {
    let actions = actions_for(field);
    entries
        .iter()
        .filter(|e| {
            e.secondary_entity == db.database_id
                || e.entity == db.database_id
                || (!db.database_name.is_empty() && e.entity == db.database_name)
        })
        .filter(|e| actions.contains(&normalized(&e.action_string).as_str()))
        .max_by(|a, b| (a.timestamp, a.log_id.as_str()).cmp(&(b.timestamp, b.log_id.as_str())))
}

/// What the drift Event adds about who changed each drifted field: from the entries read, or
/// the reason the audit log could not be read.
pub fn attribution(
    entries: Result<&[AuditLogEntry], String>,
    db: &Database,
    changes: &[Change],
) -> String {
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => return format!("the Upstash audit log could not be read ({e})"),
    };
    let parts: Vec<String> = changes
        .iter()
        .map(|c| match who_changed(entries, db, c.field()) {
            Some(e) => format!(
                "{} was changed by {} ({}) at {}",
                c.field(),
                if e.actor.is_empty() {
                    "an unknown actor"
                } else {
                    &e.actor
                },
                if e.source.is_empty() {
                    "unknown source"
                } else {
                    &e.source
                },
                i64::try_from(e.timestamp)
                    .ok()
                    .and_then(|t| Timestamp::from_second(t).ok())
                    .map_or_else(|| e.timestamp.to_string(), |t| t.to_string()),
            ),
            None => format!(
                "the Upstash audit log has no entry for the change of {}",
                c.field()
            ),
        })
        .collect();
    format!("{}, per the Upstash audit log", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Database {
        serde_json::from_value(serde_json::json!({
            "database_id": "id-1", "database_name": "crm-db", "budget": 5000
        }))
        .unwrap()
    }

    fn entry(id: &str, ts: u64, action: &str, actor: &str, entity: &str) -> AuditLogEntry {
        AuditLogEntry {
            log_id: id.into(),
            actor: actor.into(),
            timestamp: ts,
            action_string: action.into(),
            source: "API_KEY - ci-key".into(),
            entity: entity.into(),
            secondary_entity: String::new(),
        }
    }

    #[test]
    fn the_newest_entry_of_the_drifted_field_on_this_database_names_the_actor() {
        let entries = vec![
            entry("1", 100, "Update Budget", "operator@x", "crm-db"),
            entry("2", 200, "Update Budget", "alice@x", "crm-db"),
            entry("3", 300, "Update Budget", "bob@x", "other-db"),
            entry("4", 400, "Enable Eviction", "carol@x", "crm-db"),
        ];
        let found = who_changed(&entries, &db(), "budget").unwrap();
        assert_eq!(found.actor, "alice@x");
        let note = attribution(Ok(&entries), &db(), &[Change::Budget(50)]);
        assert!(
            note.contains(
                "budget was changed by alice@x (API_KEY - ci-key) at 1970-01-01T00:03:20Z"
            ),
            "{note}"
        );
    }

    #[test]
    fn an_empty_or_unreadable_log_is_said_so() {
        let note = attribution(Ok(&[]), &db(), &[Change::Budget(50)]);
        assert!(
            note.contains("the Upstash audit log has no entry for the change of budget"),
            "{note}"
        );
        let note = attribution(Err("HTTP 403".into()), &db(), &[Change::Budget(50)]);
        assert!(note.contains("could not be read (HTTP 403)"), "{note}");
    }

    #[test]
    fn reasons_read_as_words() {
        assert_eq!(Why::Drift.as_str(), "drift");
        assert_eq!(Why::Spec.as_str(), "spec change");
        assert_eq!(Why::Schedule.as_str(), "schedule");
    }
}
