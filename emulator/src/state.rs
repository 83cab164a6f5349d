//! Everything the emulator remembers: API keys and teams, databases (metadata, backups, traffic,
//! stats overrides), and the optional state file that survives restarts. Key spaces live in the
//! databases' engines (`crate::engine`), whose files sit beside the state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::engine::EngineSettings;
use crate::ids;
use crate::model::{self, BackupWire, DatabaseWire, MASKED, Plan, SecurityAddons};
use crate::stats::Traffic;

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Database settings, as the Developer API shows and changes them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DbMeta {
    pub id: String,
    /// The owner: a person's email, or a team id (`customer_id`, `user_email`).
    pub account: String,
    pub name: String,
    pub plan: String,
    pub platform: String,
    pub primary_region: String,
    pub read_regions: Vec<String>,
    pub creation_time: i64,
    pub password: String,
    /// Password of the `default_ro` Redis user (read-only over the Redis protocol).
    #[serde(default = "ids::password")]
    pub read_only_password: String,
    pub rest_token: String,
    pub read_only_rest_token: String,
    pub slug: String,
    pub eviction: bool,
    pub auto_upgrade: bool,
    pub consistent: bool,
    pub multizone: bool,
    pub prod_pack_enabled: bool,
    /// Monthly budget in US cents (0 = none).
    pub budget: i64,
    pub daily_backup_enabled: bool,
    pub allowed_ip_ranges: Vec<String>,
    pub last_plan_upgrade_time: i64,
    pub state: String,
    /// A data limit below the plan's, set through the control API (tests of a full database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_data_size_bytes: Option<u64>,
    /// Archived (a free database unused for a long time): gone from the Developer API and the
    /// data plane, its data kept in a backup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// Credential Protection (Prod Pack): Upstash keeps no copy of the password and tokens, so
    /// a Get answers them empty; reset-password answers new ones once. Switched through the
    /// control API (the console's switch; the Developer API has none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub credential_protection: bool,
}

impl DbMeta {
    pub fn plan(&self) -> &'static Plan {
        model::plan_by_name(&self.plan, true).unwrap_or(&model::PLANS[1])
    }

    /// The data limit in bytes: the plan's, or the lower one set for tests.
    pub fn max_data_bytes(&self) -> u64 {
        self.max_data_size_bytes
            .unwrap_or(self.plan().max_data_size)
    }

    /// What the database's engine must enforce.
    pub fn engine_settings(&self) -> EngineSettings {
        EngineSettings {
            max_data_bytes: self.max_data_bytes(),
            eviction: self.eviction,
        }
    }
}

/// A backup: a snapshot of the key space (an RDB file kept by the engines).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub id: String,
    pub name: String,
    pub creation_time: i64,
    pub size: u64,
    pub daily: bool,
}

/// One database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Database {
    pub meta: DbMeta,
    #[serde(default)]
    pub backups: Vec<Backup>,
    #[serde(default)]
    pub traffic: Traffic,
    #[serde(default)]
    pub stats_overrides: Map<String, Value>,
    /// Creation order (list order).
    #[serde(default)]
    pub order: u64,
    /// Read-your-writes sequence, echoed as `upstash-sync-token`.
    #[serde(default)]
    pub sync_seq: u64,
    /// ACL users clients defined, and their REST tokens.
    #[serde(default)]
    pub acl: crate::acl::AclState,
}

/// How the advertised endpoint is formed.
#[derive(Debug, Clone)]
pub struct EndpointStyle {
    pub domain: Option<String>,
    /// Port of the REST data API (HTTPS).
    pub data_port: u16,
    /// Port of the RESP listener (Redis protocol over TLS), shown as the database's `port`.
    pub resp_port: u16,
}

impl EndpointStyle {
    /// `<slug>.<domain>` exactly like Upstash when a domain is set and the data plane listens on
    /// 443; otherwise `localhost:<port>` (no DNS name exists on loopback), so that
    /// `"https://" + endpoint` always reaches the emulator.
    pub fn endpoint(&self, slug: &str) -> String {
        match &self.domain {
            Some(d) if self.data_port == 443 => format!("{slug}.{d}"),
            _ => format!("localhost:{}", self.data_port),
        }
    }
}

fn next_midnight(now_ms: i64) -> i64 {
    (now_ms.div_euclid(86_400_000) + 1) * 86_400
}

impl Database {
    /// The Database object (§2.3); `hide` masks the credentials with `"***"`.
    pub fn to_wire(&self, style: &EndpointStyle, hide: bool) -> DatabaseWire {
        let m = &self.meta;
        let plan = m.plan();
        let cred = |s: &str| {
            if hide {
                MASKED.to_string()
            } else if m.credential_protection {
                String::new()
            } else {
                s.to_string()
            }
        };
        let mut all_members = vec![m.primary_region.clone()];
        all_members.extend(m.read_regions.iter().cloned());
        DatabaseWire {
            database_id: m.id.clone(),
            database_name: m.name.clone(),
            database_type: plan.display.to_string(),
            region: "global".into(),
            kind: plan.kind.to_string(),
            port: style.resp_port,
            creation_time: m.creation_time,
            state: m.state.clone(),
            password: cred(&m.password),
            user_email: m.account.clone(),
            customer_id: m.account.clone(),
            endpoint: style.endpoint(&m.slug),
            tls: true,
            rest_token: cred(&m.rest_token),
            read_only_rest_token: cred(&m.read_only_rest_token),
            eviction: m.eviction,
            auto_upgrade: m.auto_upgrade,
            consistent: m.consistent,
            multizone: m.multizone,
            prod_pack_enabled: m.prod_pack_enabled,
            budget: m.budget,
            primary_region: m.primary_region.clone(),
            primary_members: vec![m.primary_region.clone()],
            all_members,
            read_regions: m.read_regions.clone(),
            reserved_per_region_price: 0.0,
            next_daily_backup_time: if m.daily_backup_enabled {
                next_midnight(now_ms())
            } else {
                0
            },
            daily_backup_enabled: m.daily_backup_enabled,
            modifying_state: String::new(),
            db_max_clients: 10_000,
            db_max_request_size: plan.max_request_size,
            db_disk_threshold: m.max_data_bytes(),
            db_max_entry_size: plan.max_entry_size,
            db_memory_threshold: m.max_data_bytes().min(3 * 1024 * 1024 * 1024),
            db_daily_bandwidth_limit: plan.monthly_bandwidth,
            db_max_commands_per_second: plan.max_commands_per_second,
            db_request_limit: model::DB_REQUEST_LIMIT,
            db_resource_size: if plan.kind == "free" { "S" } else { "L" }.into(),
            db_type: "pebble".into(),
            db_conn_idle_timeout: 21_600_000_000_000,
            db_lua_timeout: 250_000_000,
            db_lua_credits_per_min: 10_000_000_000,
            db_store_max_idle: 900_000_000_000,
            db_max_loads_per_sec: 1_000_000,
            db_acl_enabled: self.acl.has_users().to_string(),
            db_acl_default_user_status: self.acl.default_on().to_string(),
            db_eviction: m.eviction,
            last_plan_upgrade_time: m.last_plan_upgrade_time,
            replicas: 1 + m.read_regions.len() as u32,
            security_addons: SecurityAddons {
                ip_whitelisting: !m.allowed_ip_ranges.is_empty(),
                vpc_peering: false,
                private_link: false,
                tls_mutual_auth: false,
                encryption_at_rest: m.prod_pack_enabled,
            },
            prometheus_enabled: "false".into(),
            allowed_ip_ranges: m.allowed_ip_ranges.clone(),
        }
    }

    pub fn backup_wire(&self, b: &Backup) -> BackupWire {
        BackupWire {
            database_id: self.meta.id.clone(),
            customer_id: self.meta.account.clone(),
            name: b.name.clone(),
            backup_id: b.id.clone(),
            creation_time: b.creation_time,
            state: "completed".into(),
            backup_size: b.size,
            daily_backup: b.daily.to_string(),
            hourly_backup: "false".into(),
            internal_backup_tag: String::new(),
        }
    }

    /// New REST tokens and passwords; the old ones stop working at once.
    /// The Database object with its credentials shown whatever Credential Protection says:
    /// what reset-password answers (once), and what the control API shows tests.
    pub fn to_wire_revealed(&self, style: &EndpointStyle) -> DatabaseWire {
        let mut wire = self.to_wire(style, false);
        wire.password = self.meta.password.clone();
        wire.rest_token = self.meta.rest_token.clone();
        wire.read_only_rest_token = self.meta.read_only_rest_token.clone();
        wire
    }

    pub fn rotate_credentials(&mut self) {
        self.meta.password = ids::password();
        self.meta.read_only_password = ids::password();
        self.meta.rest_token = ids::rest_token();
        self.meta.read_only_rest_token = ids::read_only_rest_token();
    }
}

/// The CA, kept in the state file so clients that trust it keep working across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// All mutable emulator state.
#[derive(Debug, Default)]
pub struct State {
    /// API keys and teams.
    pub accounts: Accounts,
    pub databases: BTreeMap<String, Database>,
    pub next_order: u64,
    pub ca: Option<StoredCa>,
}

/// Token lookup result.
pub struct TokenMatch {
    pub database_id: String,
    pub read_only: bool,
    /// An ACL user a client defined (name, password), instead of `default`/`default_ro`.
    pub user: Option<(String, String)>,
}

/// The Redis users of a database: `default` (full access) and `default_ro` (read-only).
pub const READ_ONLY_USER: &str = "default_ro";

impl State {
    /// The owner's database, or `None` (unknown id, another owner's database, or archived).
    pub fn db_of(&self, owner: &str, id: &str) -> Option<&Database> {
        self.databases
            .get(id)
            .filter(|d| d.meta.account == owner && !d.meta.archived)
    }

    pub fn db_of_mut(&mut self, owner: &str, id: &str) -> Option<&mut Database> {
        self.databases
            .get_mut(id)
            .filter(|d| d.meta.account == owner && !d.meta.archived)
    }

    pub fn find_token(&self, token: &str) -> Option<TokenMatch> {
        if token.is_empty() {
            return None;
        }
        self.databases
            .values()
            .filter(|d| !d.meta.archived)
            .find_map(|d| {
                if d.meta.rest_token == token {
                    Some(TokenMatch {
                        database_id: d.meta.id.clone(),
                        read_only: false,
                        user: None,
                    })
                } else if d.meta.read_only_rest_token == token {
                    Some(TokenMatch {
                        database_id: d.meta.id.clone(),
                        read_only: true,
                        user: None,
                    })
                } else {
                    d.acl.token(token).map(|t| TokenMatch {
                        database_id: d.meta.id.clone(),
                        read_only: false,
                        user: Some((t.user.clone(), t.password.clone())),
                    })
                }
            })
    }

    /// The database whose Redis user (`default` or `default_ro`) has this password (RESP
    /// `AUTH`), and whether the user is the read-only one; `None` for an empty or unknown pair.
    pub fn find_password(&self, user: &str, password: &str) -> Option<TokenMatch> {
        if password.is_empty() {
            return None;
        }
        let read_only = match user {
            "default" => false,
            READ_ONLY_USER => true,
            _ => {
                // An ACL user a client defined (paid plans).
                return self
                    .databases
                    .values()
                    .filter(|d| !d.meta.archived)
                    .find(|d| d.acl.accepts(user, password))
                    .map(|d| TokenMatch {
                        database_id: d.meta.id.clone(),
                        read_only: false,
                        user: Some((user.to_string(), password.to_string())),
                    });
            }
        };
        self.databases
            .values()
            .filter(|d| !d.meta.archived)
            .find(|d| {
                if read_only {
                    d.meta.read_only_password == password
                } else {
                    d.meta.password == password && d.acl.default_on()
                }
            })
            .map(|d| TokenMatch {
                database_id: d.meta.id.clone(),
                read_only,
                user: None,
            })
    }

    pub fn insert(&mut self, mut db: Database) {
        self.next_order += 1;
        db.order = self.next_order;
        self.databases.insert(db.meta.id.clone(), db);
    }

    /// The owner's databases in creation order (archived ones left out).
    pub fn list(&self, owner: &str) -> Vec<&Database> {
        let mut v: Vec<&Database> = self
            .databases
            .values()
            .filter(|d| d.meta.account == owner && !d.meta.archived)
            .collect();
        v.sort_by_key(|d| d.order);
        v
    }

    pub fn all(&self) -> Vec<&Database> {
        let mut v: Vec<&Database> = self.databases.values().collect();
        v.sort_by_key(|d| d.order);
        v
    }
}

/// On-disk form of the state file.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    #[serde(default)]
    ca: Option<StoredCa>,
    #[serde(default)]
    accounts: Accounts,
    #[serde(default)]
    databases: Vec<Database>,
}

/// Version 2: key spaces moved out of the file into the engines' files.
const STATE_VERSION: u32 = 2;

/// Loads a state file; a missing file is an empty state.
pub fn load(path: &Path) -> anyhow::Result<State> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "reading state file {}: {e}",
                path.display()
            ));
        }
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("parsing state file {}: {e}", path.display()))?;
    if v.version == 1 {
        anyhow::bail!(
            "state file {} was written by an older emulator that kept key spaces in the file \
             (version 1); this one keeps them in its Redis engines' files. Move the file away \
             to start with an empty state",
            path.display()
        );
    }
    let p: Persisted = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("parsing state file {}: {e}", path.display()))?;
    if p.version != STATE_VERSION {
        anyhow::bail!(
            "state file {} has version {}, this emulator reads version {STATE_VERSION}",
            path.display(),
            p.version
        );
    }
    let mut st = State {
        accounts: p.accounts,
        ca: p.ca,
        ..Default::default()
    };
    let mut dbs = p.databases;
    dbs.sort_by_key(|d| d.order);
    for d in dbs {
        st.next_order = st.next_order.max(d.order);
        st.databases.insert(d.meta.id.clone(), d);
    }
    Ok(st)
}

fn serialize(st: &State) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct PersistedRef<'a> {
        version: u32,
        ca: &'a Option<StoredCa>,
        accounts: &'a Accounts,
        databases: Vec<&'a Database>,
    }
    serde_json::to_vec(&PersistedRef {
        version: STATE_VERSION,
        ca: &st.ca,
        accounts: &st.accounts,
        databases: st.all(),
    })
}

/// Writes atomically: a temporary file in the same directory, then rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Saves the state file after mutations (debounced by 200 ms).
pub struct Persister {
    path: PathBuf,
    dirty: Notify,
}

impl Persister {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            dirty: Notify::new(),
        }
    }

    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }

    pub fn save_now(&self, state: &Mutex<State>) {
        let bytes = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            serialize(&st)
        };
        match bytes {
            Ok(b) => {
                if let Err(e) = write_atomic(&self.path, &b) {
                    tracing::error!(path = %self.path.display(), error = %e, "saving state file failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "serializing state failed"),
        }
    }

    /// Background saver; saves once more when shut down.
    pub async fn run(self: Arc<Self>, state: Arc<Mutex<State>>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    self.save_now(&state);
                }
                _ = shutdown.cancelled() => {
                    self.save_now(&state);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_db(account: &str) -> Database {
        Database {
            meta: DbMeta {
                id: ids::uuid(),
                account: account.into(),
                name: "db".into(),
                plan: "payg".into(),
                platform: "aws".into(),
                primary_region: "us-east-1".into(),
                read_regions: vec!["eu-west-1".into()],
                creation_time: 1,
                password: ids::password(),
                read_only_password: ids::password(),
                rest_token: ids::rest_token(),
                read_only_rest_token: ids::read_only_rest_token(),
                slug: "a-b-12345".into(),
                eviction: false,
                auto_upgrade: false,
                consistent: false,
                multizone: false,
                prod_pack_enabled: false,
                budget: 0,
                daily_backup_enabled: false,
                allowed_ip_ranges: vec![],
                last_plan_upgrade_time: 0,
                state: "active".into(),
                max_data_size_bytes: None,
                credential_protection: false,
                archived: false,
            },
            backups: vec![],
            traffic: Traffic::default(),
            stats_overrides: Map::new(),
            order: 0,
            sync_seq: 0,
            acl: Default::default(),
        }
    }

    #[test]
    fn endpoint_styles() {
        let s = EndpointStyle {
            domain: None,
            data_port: 8443,
            resp_port: 6380,
        };
        assert_eq!(s.endpoint("a-b-1"), "localhost:8443");
        let s = EndpointStyle {
            domain: Some("upstash.io".into()),
            data_port: 443,
            resp_port: 6379,
        };
        assert_eq!(s.endpoint("a-b-1"), "a-b-1.upstash.io");
        let s = EndpointStyle {
            domain: Some("upstash.io".into()),
            data_port: 8443,
            resp_port: 6380,
        };
        assert_eq!(s.endpoint("a-b-1"), "localhost:8443");
    }

    #[test]
    fn wire_shape() {
        let db = sample_db("a@b.c");
        let style = EndpointStyle {
            domain: None,
            data_port: 1,
            resp_port: 6390,
        };
        let v = serde_json::to_value(db.to_wire(&style, false)).unwrap();
        // `port` is the RESP listener's; `endpoint` stays the REST host:port.
        assert_eq!(v["port"], 6390);
        assert_eq!(v["endpoint"], "localhost:1");
        assert_eq!(v["type"], "payg");
        assert_eq!(v["database_type"], "Pay as You Go");
        assert_eq!(v["db_acl_enabled"], "false");
        assert!(v["securityAddons"]["ipWhitelisting"].is_boolean());
        assert_eq!(
            v["all_members"],
            serde_json::json!(["us-east-1", "eu-west-1"])
        );
        assert_eq!(v["db_disk_threshold"], 107_374_182_400u64);
        let text = serde_json::to_string(&db.to_wire(&style, true)).unwrap();
        assert!(text.contains("\"db_request_limit\":9223372036854775808"));
        assert!(text.contains("\"password\":\"***\""));
        assert!(!text.contains(&db.meta.rest_token));
    }

    #[test]
    fn finds_databases_by_password() {
        let mut st = State::default();
        let db = sample_db("a@b.c");
        let (id, pw, ro) = (
            db.meta.id.clone(),
            db.meta.password.clone(),
            db.meta.read_only_password.clone(),
        );
        st.insert(db);
        let found = |user: &str, p: &str| {
            st.find_password(user, p)
                .map(|m| (m.database_id, m.read_only))
        };
        assert_eq!(found("default", &pw), Some((id.clone(), false)));
        assert_eq!(found(READ_ONLY_USER, &ro), Some((id.clone(), true)));
        assert_eq!(
            found(READ_ONLY_USER, &pw),
            None,
            "each user has its own password"
        );
        assert_eq!(found("default", &ro), None);
        assert_eq!(found("admin", &pw), None);
        assert_eq!(found("default", "not-the-password"), None);
        assert_eq!(found("default", ""), None);
        st.databases.get_mut(&id).unwrap().rotate_credentials();
        assert_eq!(
            st.find_password("default", &pw).map(|m| m.database_id),
            None
        );
        assert_eq!(
            st.find_password(READ_ONLY_USER, &ro).map(|m| m.database_id),
            None
        );
    }

    #[test]
    fn archived_databases_are_invisible() {
        let mut st = State::default();
        let mut db = sample_db("a@b.c");
        db.meta.archived = true;
        let (id, token) = (db.meta.id.clone(), db.meta.rest_token.clone());
        st.insert(db);
        assert!(st.db_of("a@b.c", &id).is_none());
        assert!(st.list("a@b.c").is_empty());
        assert!(st.find_token(&token).is_none());
    }

    #[test]
    fn persist_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut st = State::default();
        let db = sample_db("a@b.c");
        let id = db.meta.id.clone();
        st.insert(db);
        st.accounts
            .add(&crate::accounts::KeySpec::personal("a@b.c", "k"))
            .unwrap();
        let p = Persister::new(path.clone());
        p.save_now(&Mutex::new(st));
        let back = load(&path).unwrap();
        assert_eq!(back.databases[&id].meta.name, "db");
        assert!(back.accounts.authenticate("a@b.c", "k").is_some());
        assert_eq!(back.next_order, 1);
        std::fs::write(&path, r#"{"version":1,"databases":[]}"#).unwrap();
        let old = load(&path).unwrap_err().to_string();
        assert!(old.contains("older emulator"), "{old}");
        assert!(
            load(&dir.path().join("missing.json"))
                .unwrap()
                .databases
                .is_empty()
        );
    }
}
