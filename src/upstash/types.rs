//! Wire types of the Developer API, tolerant of its quirks: numbers beyond `i64`, booleans sent
//! as strings, fields that come and go between API generations. Only the fields the operator
//! reads are typed; everything else is ignored.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use crate::crd::Plan;

/// An Upstash Redis database as get, list, create and reset-password return it.
///
/// `Debug` leaves the password and tokens out.
#[derive(Clone, Deserialize, Default)]
pub struct Database {
    pub database_id: String,
    #[serde(default)]
    pub database_name: String,
    /// Plan family: `free`, `payg`, `pro` or `paid`.
    #[serde(default, rename = "type")]
    pub plan_type: String,
    #[serde(default)]
    pub primary_region: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub read_regions: Vec<String>,
    /// The account the database belongs to: the owner's email for a personal account, the
    /// team's id for a team database.
    #[serde(default, deserialize_with = "null_as_default")]
    pub customer_id: String,
    /// Owner email, or the team id for team databases (older field, same meaning).
    #[serde(default, deserialize_with = "null_as_default")]
    pub user_email: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub port: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub creation_time: u64,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub tls: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub eviction: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub auto_upgrade: bool,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub prod_pack_enabled: bool,
    /// Monthly budget (`0`: none).
    #[serde(default)]
    pub budget: Budget,
    /// Data size limit in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub db_disk_threshold: u64,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub daily_backup_enabled: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_ip_ranges: Vec<String>,
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<SecretString>,
    #[serde(default, deserialize_with = "secret")]
    pub rest_token: Option<SecretString>,
    #[serde(default, deserialize_with = "secret")]
    pub read_only_rest_token: Option<SecretString>,
}

/// A database as the operator keeps it from the account's list: its id and name (to find a
/// database by name) and its account (to learn whose account credentials act for).
///
/// The list's answer carries every field of every database, credentials included; only these
/// are kept, so that listing an account of thousands of databases holds a few hundred bytes
/// per database for the moment it is read, and no database's password.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
pub struct ListedDatabase {
    pub database_id: String,
    #[serde(default)]
    pub database_name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub customer_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub user_email: String,
}

impl From<&Database> for ListedDatabase {
    fn from(db: &Database) -> Self {
        Self {
            database_id: db.database_id.clone(),
            database_name: db.database_name.clone(),
            customer_id: db.customer_id.clone(),
            user_email: db.user_email.clone(),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("database_id", &self.database_id)
            .field("database_name", &self.database_name)
            .field("plan_type", &self.plan_type)
            .field("primary_region", &self.primary_region)
            .field("customer_id", &self.customer_id)
            .field("read_regions", &self.read_regions)
            .field("endpoint", &self.endpoint)
            .field("state", &self.state)
            .field("eviction", &self.eviction)
            .field("auto_upgrade", &self.auto_upgrade)
            .field("prod_pack_enabled", &self.prod_pack_enabled)
            .field("budget", &self.budget)
            .field("credentials", &"<redacted>")
            .finish()
    }
}

impl Database {
    /// The plan the database is on. Upstash reports only the family (`free`, `payg`, `paid`);
    /// fixed plans are told apart by their data limit.
    pub fn plan(&self) -> Option<Plan> {
        match self.plan_type.as_str() {
            "free" => Some(Plan::Free),
            "payg" | "pro" => Some(Plan::Payg),
            "paid" => {
                let limit = self.db_disk_threshold as f64;
                if limit <= 0.0 {
                    return None;
                }
                Plan::ALL
                    .iter()
                    .copied()
                    .filter(|p| p.monthly_price_usd().is_some_and(|price| price > 0.0))
                    .min_by(|a, b| {
                        let da = (a.data_limit_bytes() as f64 / limit).ln().abs();
                        let db = (b.data_limit_bytes() as f64 / limit).ln().abs();
                        da.total_cmp(&db)
                    })
            }
            _ => None,
        }
    }

    /// Whether all three credentials are present (get without `credentials=hide`, create,
    /// reset-password).
    pub fn has_credentials(&self) -> bool {
        [&self.password, &self.rest_token, &self.read_only_rest_token]
            .iter()
            .all(|s| {
                s.as_ref()
                    .is_some_and(|s| !s.expose_secret().is_empty() && s.expose_secret() != "***")
            })
    }

    /// Host of the endpoint, without a port if the endpoint carries one.
    pub fn host(&self) -> &str {
        split_host_port(&self.endpoint).0
    }
}

/// Splits `host[:port]`, tolerating IPv6 literals in brackets.
pub fn split_host_port(endpoint: &str) -> (&str, Option<u16>) {
    if let Some(rest) = endpoint.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port);
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (endpoint, None),
        },
        _ => (endpoint, None),
    }
}

/// Body of `POST /v2/redis/database`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CreateDatabase {
    pub database_name: String,
    pub platform: String,
    pub primary_region: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub read_regions: Vec<String>,
    pub plan: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_upgrade: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prod_pack_enabled: Option<bool>,
    pub tls: bool,
}

/// A database's monthly spending limit, where Upstash rate-limits the database instead of
/// billing more.
///
/// The operator speaks US dollars (`spec.budget: 50` is $50 a month); the Developer API's
/// `budget` field carries US **cents**. This type is the one place that converts: it is
/// (de)serialized as cents and built from dollars with [`Budget::from_usd`].
///
/// Why cents: Upstash's own CLI (2026, `redis update-budget`) documents the option as "Monthly
/// budget in cents" and sends it unchanged, and Upstash's agent docs write
/// `upstash redis update-budget --budget $BUDGET_CENTS`. The Terraform provider (2025) describes
/// its `budget` as dollars ("default $20") and the OpenAPI spec says only "integer" (example
/// 360); the newer first-party sources win.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Budget {
    cents: i64,
}

impl Budget {
    /// A budget of `usd` whole US dollars a month.
    pub const fn from_usd(usd: i64) -> Self {
        Self {
            cents: usd.saturating_mul(100),
        }
    }

    /// A budget as the Developer API writes it, in US cents.
    pub const fn from_cents(cents: i64) -> Self {
        Self { cents }
    }

    /// The value the Developer API carries, in US cents.
    pub const fn cents(self) -> i64 {
        self.cents
    }

    /// The budget in US dollars.
    pub fn usd(self) -> f64 {
        self.cents as f64 / 100.0
    }

    /// The budget in whole US dollars, as `spec.budget` writes it (rounded to the nearest dollar
    /// when Upstash holds cents the operator did not set).
    pub fn whole_usd(self) -> i64 {
        (self.cents + 50).div_euclid(100)
    }

    /// The budget in US dollars as a spec would write it: `50`, or `3.60` when it is not a whole
    /// number of dollars.
    pub fn usd_text(self) -> String {
        if self.cents % 100 == 0 {
            (self.cents / 100).to_string()
        } else {
            format!("{:.2}", self.usd())
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.2}", self.usd())
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.cents)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        lenient_i64(d).map(Budget::from_cents)
    }
}

/// A backup as `list-backup` returns it.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct Backup {
    pub backup_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub state: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub creation_time: u64,
}

/// An entry of the account's audit log (`GET /v2/auditlogs`): who changed what, from where.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct AuditLogEntry {
    #[serde(default, deserialize_with = "null_as_default")]
    pub log_id: String,
    /// Who made the change (an email).
    #[serde(default, deserialize_with = "null_as_default")]
    pub actor: String,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub timestamp: u64,
    /// What was done, e.g. "Update Budget".
    #[serde(default, deserialize_with = "null_as_default")]
    pub action_string: String,
    /// Where from: `API_KEY - <key name>`, or the console.
    #[serde(default, deserialize_with = "null_as_default")]
    pub source: String,
    /// What it was done to (a database's name).
    #[serde(default, deserialize_with = "null_as_default")]
    pub entity: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub secondary_entity: String,
}

/// One point of a stats series.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct Point {
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub y: Option<f64>,
}

/// `GET /v2/redis/stats/{id}`: the fields the operator's monitoring reads.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct DatabaseStats {
    #[serde(default, deserialize_with = "null_as_default")]
    pub hits: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub misses: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub diskusage: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub keyspace: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub latencymean: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub latency_99: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub read_latency_99: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub write_latency_99: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dailyrequests: Vec<Point>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dailybilling: Vec<Point>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub current_storage: Option<f64>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub total_monthly_billing: Option<f64>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub total_monthly_requests: Option<f64>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub daily_net_commands: Option<f64>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub daily_write_requests: Option<f64>,
    #[serde(default, deserialize_with = "lenient_opt_f64")]
    pub total_monthly_write_requests: Option<f64>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f.clamp(0.0, u64::MAX as f64) as u64))
            .unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .map(|f| f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
            })
            .unwrap_or(0),
        serde_json::Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.trim().eq_ignore_ascii_case("true"),
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    })
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|s| !s.is_empty())
        .map(SecretString::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_EXAMPLE: &str = r#"{
        "database_id": "96ad0856-03b1-4ee7-9666-e81abd0349e1",
        "database_name": "MyRedis",
        "database_type": "Pay as You Go",
        "region": "global",
        "type": "paid",
        "port": 6379,
        "creation_time": 1752649602,
        "state": "active",
        "password": "038a8e27c45e43068d5f186085399884",
        "user_email": "example@upstash.com",
        "endpoint": "eu2-sought-mollusk-30143.upstash.io",
        "tls": true,
        "rest_token": "AXsXAAIjcDE",
        "read_only_rest_token": "AnsXAAIgcDE",
        "eviction": false,
        "auto_upgrade": "false",
        "budget": 100,
        "primary_region": "eu-central-1",
        "read_regions": null,
        "db_disk_threshold": 1073741824,
        "db_request_limit": 9223372036854775808,
        "db_acl_enabled": "false",
        "securityAddons": {"ipWhitelisting": false}
    }"#;

    #[test]
    fn tolerates_the_quirks() {
        let db: Database = serde_json::from_str(GET_EXAMPLE).unwrap();
        assert_eq!(db.database_name, "MyRedis");
        assert!(db.read_regions.is_empty());
        assert!(!db.auto_upgrade);
        assert_eq!(db.budget, Budget::from_cents(100));
        assert_eq!(db.budget.usd(), 1.0);
        assert!(db.has_credentials());
        assert_eq!(db.plan(), Some(Plan::Fixed1Gb));
        let debug = format!("{db:?}");
        assert!(!debug.contains("038a8e27"), "{debug}");
        assert!(!debug.contains("AXsX"), "{debug}");
    }

    #[test]
    fn budgets_are_dollars_here_and_cents_on_the_wire() {
        let fifty = Budget::from_usd(50);
        assert_eq!(fifty.cents(), 5000);
        assert_eq!(
            serde_json::to_value(fifty).unwrap(),
            serde_json::json!(5000)
        );
        let read: Database = serde_json::from_str(r#"{"database_id":"x","budget":360}"#).unwrap();
        assert_eq!(read.budget.usd(), 3.6);
        assert_eq!(read.budget.to_string(), "$3.60");
        assert_ne!(
            read.budget,
            Budget::from_usd(3),
            "a console value in cents is not rounded"
        );
        let missing: Database =
            serde_json::from_str(r#"{"database_id":"x","budget":null}"#).unwrap();
        assert_eq!(missing.budget, Budget::default());
        let request = CreateDatabase {
            database_name: "n".into(),
            platform: "aws".into(),
            primary_region: "us-east-1".into(),
            read_regions: vec![],
            plan: "payg".into(),
            budget: Some(Budget::from_usd(20)),
            eviction: None,
            auto_upgrade: None,
            prod_pack_enabled: None,
            tls: true,
        };
        assert_eq!(serde_json::to_value(&request).unwrap()["budget"], 2000);
    }

    #[test]
    fn hidden_credentials_are_not_credentials() {
        let db: Database = serde_json::from_str(
            r#"{"database_id":"x","password":"***","rest_token":"***","read_only_rest_token":"***"}"#,
        )
        .unwrap();
        assert!(!db.has_credentials());
    }

    #[test]
    fn endpoints_with_and_without_ports() {
        assert_eq!(
            split_host_port("eu2-x-1.upstash.io"),
            ("eu2-x-1.upstash.io", None)
        );
        assert_eq!(split_host_port("localhost:8443"), ("localhost", Some(8443)));
        assert_eq!(split_host_port("[::1]:8443"), ("::1", Some(8443)));
        assert_eq!(
            split_host_port("beloved-stallion-58500"),
            ("beloved-stallion-58500", None)
        );
    }

    #[test]
    fn plan_families() {
        let mut db = Database {
            plan_type: "payg".into(),
            ..Default::default()
        };
        assert_eq!(db.plan(), Some(Plan::Payg));
        db.plan_type = "paid".into();
        db.db_disk_threshold = 5_368_709_120; // 5 GiB
        assert_eq!(db.plan(), Some(Plan::Fixed5Gb));
        db.db_disk_threshold = 250_000_000;
        assert_eq!(db.plan(), Some(Plan::Fixed250Mb));
    }
}
