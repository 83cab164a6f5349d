//! An in-memory Developer API for the reconciler's unit tests: databases and backups it holds,
//! every call it received (by the emulator's endpoint names), and failures to inject.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::SecretString;

use super::developer_api::{ApiResult, DeveloperApi};
use crate::upstash::{CreateDatabase, Database, ListedDatabase, UpstashError, types::Backup};

/// A failure to inject into the next call of an endpoint.
struct Fault {
    endpoint: String,
    error: UpstashError,
    /// The call takes effect, but its answer is lost.
    lose_answer: bool,
}

#[derive(Default)]
struct State {
    databases: Vec<Database>,
    backups: HashMap<String, Vec<Backup>>,
    calls: Vec<String>,
    faults: VecDeque<Fault>,
    next: u32,
}

/// The in-memory Developer API (its clones share one account).
#[derive(Default, Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    list_delay: Arc<Mutex<Option<Duration>>>,
}

fn credentials(db: &mut Database, serial: u32) {
    db.password = Some(SecretString::from(format!("pw-{serial}")));
    db.rest_token = Some(SecretString::from(format!("AXtoken-{serial}")));
    db.read_only_rest_token = Some(SecretString::from(format!("Anro-{serial}")));
}

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A database that exists already (created outside the operator); returns its id.
    pub fn insert_database(&self, name: &str, region: &str) -> String {
        let mut state = self.lock();
        state.next += 1;
        let serial = state.next;
        let mut db = Database {
            database_id: format!("db-{serial}"),
            database_name: name.to_string(),
            plan_type: "payg".into(),
            primary_region: region.to_string(),
            endpoint: format!("{name}.upstash.io"),
            port: 6379,
            state: "active".into(),
            creation_time: 1_790_000_000,
            tls: true,
            db_disk_threshold: 100_000_000_000,
            ..Default::default()
        };
        credentials(&mut db, serial);
        let id = db.database_id.clone();
        state.databases.push(db);
        id
    }

    /// Changes a database as a console edit would.
    pub fn edit(&self, id: &str, change: impl FnOnce(&mut Database)) {
        let mut state = self.lock();
        if let Some(db) = state.databases.iter_mut().find(|d| d.database_id == id) {
            change(db);
        }
    }

    /// A database as Upstash holds it now.
    pub fn database(&self, id: &str) -> Option<Database> {
        self.lock()
            .databases
            .iter()
            .find(|d| d.database_id == id)
            .cloned()
    }

    /// Number of databases.
    pub fn count(&self) -> usize {
        self.lock().databases.len()
    }

    /// A backup that exists already.
    pub fn insert_backup(&self, id: &str, name: &str) -> String {
        let mut state = self.lock();
        state.next += 1;
        let backup_id = format!("backup-{}", state.next);
        state
            .backups
            .entry(id.to_string())
            .or_default()
            .push(Backup {
                backup_id: backup_id.clone(),
                name: name.to_string(),
                state: "completed".into(),
                creation_time: 1_790_000_000,
            });
        backup_id
    }

    /// The next call to `endpoint` fails with `error`.
    pub fn fail_next(&self, endpoint: &str, error: UpstashError) {
        self.lock().faults.push_back(Fault {
            endpoint: endpoint.to_string(),
            error,
            lose_answer: false,
        });
    }

    /// The next call to `endpoint` goes through, but its answer is lost (a timeout).
    pub fn lose_next_answer(&self, endpoint: &str) {
        self.lock().faults.push_back(Fault {
            endpoint: endpoint.to_string(),
            error: UpstashError::Timeout(Duration::from_secs(30)),
            lose_answer: true,
        });
    }

    /// Makes every list call take `delay`.
    pub fn set_list_delay(&self, delay: Duration) {
        *self.list_delay.lock().unwrap_or_else(|e| e.into_inner()) = Some(delay);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// The calls that change something (everything but get, list and list-backup).
    pub fn mutating_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !matches!(c.as_str(), "get" | "list" | "list-backup"))
            .collect()
    }

    /// How many calls `endpoint` received.
    pub fn calls_to(&self, endpoint: &str) -> usize {
        self.calls().iter().filter(|c| *c == endpoint).count()
    }

    /// Logs the call and takes an injected fault for it: `Err` fails the call before it acts,
    /// `Ok(Some(error))` lets it act and then fails it.
    fn call(&self, endpoint: &str) -> ApiResult<Option<UpstashError>> {
        let mut state = self.lock();
        state.calls.push(endpoint.to_string());
        let Some(at) = state.faults.iter().position(|f| f.endpoint == endpoint) else {
            return Ok(None);
        };
        let fault = state.faults.remove(at).expect("the fault found");
        if fault.lose_answer {
            Ok(Some(fault.error))
        } else {
            Err(fault.error)
        }
    }

    fn update(
        &self,
        endpoint: &str,
        id: &str,
        change: impl FnOnce(&mut Database),
    ) -> ApiResult<()> {
        let lost = self.call(endpoint)?;
        let mut state = self.lock();
        let db = state
            .databases
            .iter_mut()
            .find(|d| d.database_id == id)
            .ok_or_else(|| UpstashError::NotFound {
                message: "database not found".into(),
            })?;
        change(db);
        lost.map_or(Ok(()), Err)
    }
}

fn toggle(on: bool, name: &str) -> String {
    format!("{}-{name}", if on { "enable" } else { "disable" })
}

impl DeveloperApi for FakeApi {
    async fn audit_logs(&self) -> ApiResult<Vec<crate::upstash::AuditLogEntry>> {
        self.call("auditlogs")?;
        Ok(Vec::new())
    }

    async fn list_databases(&self) -> ApiResult<Vec<ListedDatabase>> {
        let delay = *self.list_delay.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.call("list")?;
        Ok(self
            .lock()
            .databases
            .iter()
            .map(ListedDatabase::from)
            .collect())
    }

    async fn get_database(&self, id: &str) -> ApiResult<Option<Database>> {
        self.call("get")?;
        Ok(self.database(id))
    }

    async fn create_database(&self, request: &CreateDatabase) -> ApiResult<Database> {
        let lost = self.call("create")?;
        let id = self.insert_database(&request.database_name, &request.primary_region);
        self.edit(&id, |db| {
            db.read_regions = request.read_regions.clone();
            db.plan_type = match request.plan.as_str() {
                "free" | "payg" => request.plan.clone(),
                _ => "paid".into(),
            };
            db.budget = request.budget.unwrap_or_default();
            db.eviction = request.eviction.unwrap_or(false);
            db.auto_upgrade = request.auto_upgrade.unwrap_or(false);
            db.prod_pack_enabled = request.prod_pack_enabled.unwrap_or(false);
        });
        match lost {
            Some(error) => Err(error),
            None => Ok(self.database(&id).expect("just created")),
        }
    }

    async fn delete_database(&self, id: &str) -> ApiResult<bool> {
        self.call("delete")?;
        let mut state = self.lock();
        let before = state.databases.len();
        state.databases.retain(|d| d.database_id != id);
        Ok(state.databases.len() < before)
    }

    async fn reset_password(&self, id: &str) -> ApiResult<Database> {
        let lost = self.call("reset-password")?;
        let serial = {
            let mut state = self.lock();
            state.next += 1;
            state.next
        };
        self.edit(id, |db| credentials(db, serial));
        if let Some(error) = lost {
            return Err(error);
        }
        self.database(id).ok_or_else(|| UpstashError::NotFound {
            message: "database not found".into(),
        })
    }

    async fn update_regions(&self, id: &str, read_regions: &[String]) -> ApiResult<()> {
        self.update("update-regions", id, |db| {
            db.read_regions = read_regions.to_vec()
        })
    }

    async fn change_plan(&self, id: &str, plan: &str) -> ApiResult<()> {
        let parsed: Option<crate::crd::Plan> = plan.parse().ok();
        self.update("change-plan", id, |db| {
            if let Some(p) = parsed {
                super::desired::Change::Plan(p).apply_to(db);
            }
        })
    }

    async fn update_budget(&self, id: &str, budget: i64) -> ApiResult<()> {
        self.update("update-budget", id, |db| {
            db.budget = crate::upstash::Budget::from_usd(budget)
        })
    }

    async fn set_eviction(&self, id: &str, on: bool) -> ApiResult<()> {
        self.update(&toggle(on, "eviction"), id, |db| db.eviction = on)
    }

    async fn set_auto_upgrade(&self, id: &str, on: bool) -> ApiResult<()> {
        self.update(&toggle(on, "autoupgrade"), id, |db| db.auto_upgrade = on)
    }

    async fn set_prod_pack(&self, id: &str, on: bool) -> ApiResult<()> {
        self.update(&toggle(on, "prodpack"), id, |db| db.prod_pack_enabled = on)
    }

    async fn update_allowlist(&self, id: &str, allowed_ips: &[String]) -> ApiResult<()> {
        self.update("update-allowlist", id, |db| {
            db.allowed_ip_ranges = allowed_ips.to_vec()
        })
    }

    async fn set_daily_backup(&self, id: &str, on: bool) -> ApiResult<()> {
        self.update(&toggle(on, "dailybackup"), id, |db| {
            db.daily_backup_enabled = on
        })
    }

    async fn list_backups(&self, id: &str) -> ApiResult<Vec<Backup>> {
        self.call("list-backup")?;
        Ok(self.lock().backups.get(id).cloned().unwrap_or_default())
    }

    async fn create_backup(&self, id: &str, name: &str) -> ApiResult<()> {
        let lost = self.call("create-backup")?;
        self.insert_backup(id, name);
        lost.map_or(Ok(()), Err)
    }

    async fn restore_backup(&self, id: &str, backup_id: &str) -> ApiResult<()> {
        self.call("restore-backup")?;
        let known = self
            .lock()
            .backups
            .get(id)
            .is_some_and(|b| b.iter().any(|b| b.backup_id == backup_id));
        if known {
            Ok(())
        } else {
            Err(UpstashError::Rejected {
                status: 400,
                message: "backup not found".into(),
            })
        }
    }
}
