//! The account audit log, as Upstash documents it (`GET /v2/auditlogs`): one entry per change
//! made with an API key (source `API_KEY - <key name>`) or in the console (source `CONSOLE`;
//! here the control API's console path), with `log_id`, `customer_id`, `actor`, `timestamp`
//! (unix seconds), `action` (a number), `action_string` (e.g. "Update Budget"), `entity` (the
//! database's name), `secondary_entity` (its id), `third_entity` and `readable_format`. An
//! account sees the entries of its retention: 7 days on the free tier, 30 days once it has a
//! paid database.

use serde::Serialize;

/// Source of a change made in the console.
pub const CONSOLE: &str = "CONSOLE";

/// Retention of the free tier, in seconds.
pub const FREE_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// Retention of pay-as-you-go accounts, in seconds.
pub const PAYG_RETENTION_SECS: i64 = 30 * 24 * 3600;

/// The actions recorded, in the order of their numbers.
const ACTIONS: &[&str] = &[
    "create",
    "delete",
    "rename",
    "reset-password",
    "enable-tls",
    "enable-eviction",
    "disable-eviction",
    "enable-autoupgrade",
    "disable-autoupgrade",
    "change-plan",
    "update-budget",
    "update-regions",
    "move-to-team",
    "create-backup",
    "delete-backup",
    "restore-backup",
    "enable-dailybackup",
    "disable-dailybackup",
    "enable-prodpack",
    "disable-prodpack",
    "update-allowlist",
    "create-team",
    "delete-team",
    "add-team-member",
    "remove-team-member",
];

/// One entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    pub log_id: String,
    pub customer_id: String,
    pub actor: String,
    pub timestamp: i64,
    pub action: i64,
    pub action_string: String,
    pub source: String,
    pub entity: String,
    pub secondary_entity: String,
    pub third_entity: String,
    pub readable_format: String,
}

/// Every account's entries, oldest first.
#[derive(Debug, Default)]
pub struct AuditLog {
    entries: Vec<AuditEntry>,
    next: u64,
}

/// What a change was: the operation's name (`update-budget`, ...), the database's name and id.
pub struct Change<'a> {
    pub op: &'a str,
    pub entity: &'a str,
    pub secondary_entity: &'a str,
}

/// `API_KEY - <name>`: the source of a change made with an API key.
pub fn api_key_source(key_name: &str) -> String {
    format!("API_KEY - {key_name}")
}

/// The action's number and display string ("update-budget" → "Update Budget").
pub fn action_of(op: &str) -> (i64, String) {
    let number = ACTIONS
        .iter()
        .position(|a| *a == op)
        .map_or(-1, |i| i as i64 + 1);
    let words: Vec<String> = op
        .split('-')
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_uppercase().collect::<String>() + chars.as_str()
            })
        })
        .collect();
    (number, words.join(" "))
}

impl AuditLog {
    /// Records a change of `customer_id`'s account by `actor` from `source`, at `now` (seconds).
    pub fn record(
        &mut self,
        customer_id: &str,
        actor: &str,
        source: &str,
        change: &Change<'_>,
        now: i64,
    ) {
        if !ACTIONS.contains(&change.op) {
            return;
        }
        self.next += 1;
        let (action, action_string) = action_of(change.op);
        let readable_format = format!("{actor} ({source}): {action_string} {}", change.entity);
        self.entries.push(AuditEntry {
            log_id: format!("{:016x}", self.next),
            customer_id: customer_id.to_string(),
            actor: actor.to_string(),
            timestamp: now,
            action,
            action_string,
            source: source.to_string(),
            entity: change.entity.to_string(),
            secondary_entity: change.secondary_entity.to_string(),
            third_entity: String::new(),
            readable_format,
        });
    }

    /// The entries of `customer_id` within `retention` seconds before `now`, newest first.
    pub fn of(&self, customer_id: &str, retention: i64, now: i64) -> Vec<AuditEntry> {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.customer_id == customer_id && e.timestamp >= now - retention)
            .cloned()
            .collect()
    }

    /// Forgets everything (the control API's reset).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(entity: &str) -> Change<'_> {
        Change {
            op: "update-budget",
            entity,
            secondary_entity: "id-1",
        }
    }

    #[test]
    fn entries_name_actor_source_and_action_and_reads_skip_nothing_but_other_accounts() {
        let mut log = AuditLog::default();
        log.record("a@x", "alice@x", &api_key_source("ci"), &budget("db"), 100);
        log.record("b@x", "bob@x", CONSOLE, &budget("other"), 101);
        log.record(
            "a@x",
            "a@x",
            CONSOLE,
            &Change {
                op: "get",
                entity: "db",
                secondary_entity: "id-1",
            },
            102,
        );
        let mine = log.of("a@x", FREE_RETENTION_SECS, 200);
        assert_eq!(
            mine.len(),
            1,
            "reads are not recorded, other accounts not shown"
        );
        assert_eq!(mine[0].actor, "alice@x");
        assert_eq!(mine[0].source, "API_KEY - ci");
        assert_eq!(mine[0].action_string, "Update Budget");
        assert!(mine[0].action > 0);
        assert_eq!(
            (mine[0].entity.as_str(), mine[0].secondary_entity.as_str()),
            ("db", "id-1")
        );
    }

    #[test]
    fn retention_hides_older_entries_and_the_newest_come_first() {
        let mut log = AuditLog::default();
        log.record("a@x", "a@x", CONSOLE, &budget("old"), 0);
        log.record(
            "a@x",
            "a@x",
            CONSOLE,
            &budget("new"),
            FREE_RETENTION_SECS + 10,
        );
        let seen = log.of("a@x", FREE_RETENTION_SECS, FREE_RETENTION_SECS + 20);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].entity, "new");
        let seen = log.of("a@x", PAYG_RETENTION_SECS, FREE_RETENTION_SECS + 20);
        assert_eq!(seen[0].entity, "new");
        assert_eq!(seen[1].entity, "old");
    }
}
