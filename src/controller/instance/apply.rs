//! Apply: carries out the Upstash side of a plan through [`DeveloperApi`], so that the same
//! code runs against Upstash and against the tests' in-memory double. Once-only calls (create,
//! backup, restore, reset-password) are never repeated blindly: a lost answer is resolved by
//! looking.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::plan::Notice;
use crate::{
    controller::{
        database_index::DatabaseIndex,
        desired::Change,
        developer_api::{ApiResult, DeveloperApi},
    },
    crd::{BackupRequest, RequestResult, RestoreRequest},
    upstash::{CreateDatabase, Database, UpstashError},
};

/// Creates the database and records it in the account's index; the answer carries its
/// credentials (read once more if it does not).
pub async fn create<A: DeveloperApi>(
    api: &A,
    index: &DatabaseIndex,
    account: &str,
    request: &CreateDatabase,
) -> ApiResult<Database> {
    let db = api.create_database(request).await?;
    index.created(account, &db.database_id, &db.database_name);
    if db.has_credentials() {
        return Ok(db);
    }
    api.get_database(&db.database_id)
        .await?
        .ok_or_else(|| UpstashError::NotFound {
            message: format!("database {} disappeared after its create", db.database_id),
        })
}

/// Makes one call per change, updating the local copy of `db` as Upstash does.
pub async fn settings<A: DeveloperApi>(
    api: &A,
    db: &mut Database,
    changes: &[Change],
) -> ApiResult<()> {
    let id = db.database_id.clone();
    for change in changes {
        match change {
            Change::ReadRegions(r) => api.update_regions(&id, r).await?,
            Change::Plan(p) => api.change_plan(&id, p.as_str()).await?,
            Change::Budget(b) => api.update_budget(&id, *b).await?,
            Change::Eviction(e) => api.set_eviction(&id, *e).await?,
            Change::AutoUpgrade(a) => api.set_auto_upgrade(&id, *a).await?,
            Change::ProdPack(p) => api.set_prod_pack(&id, *p).await?,
            Change::AllowedIps(ips) => api.update_allowlist(&id, ips).await?,
            Change::DailyBackup(d) => api.set_daily_backup(&id, *d).await?,
        }
        change.apply_to(db);
    }
    Ok(())
}

fn result(
    request_id: &str,
    ok: bool,
    backup_id: Option<String>,
    backup_name: Option<String>,
    message: String,
    now: Timestamp,
) -> RequestResult {
    RequestResult {
        request_id: request_id.to_string(),
        result: if ok { "Succeeded" } else { "Failed" }.to_string(),
        backup_id,
        backup_name,
        message,
        time: Time(now),
    }
}

/// Takes the requested backup, named after its request id. A backup of that name may exist
/// already from an attempt whose answer was lost; then it is not taken again. A refusal is a
/// `Failed` result, not an error.
pub async fn backup<A: DeveloperApi>(
    api: &A,
    id: &str,
    request: &BackupRequest,
    now: Timestamp,
) -> ApiResult<(RequestResult, Notice)> {
    let name = request.request_id.clone();
    let find =
        |backups: Vec<crate::upstash::types::Backup>| backups.into_iter().find(|b| b.name == name);
    let mut taken = find(api.list_backups(id).await?);
    if taken.is_none() {
        match api.create_backup(id, &name).await {
            Ok(()) => taken = find(api.list_backups(id).await?),
            Err(e) if !e.is_retryable() => {
                let message = format!("backup {name} failed: {e}");
                return Ok((
                    result(&name, false, None, Some(name.clone()), message.clone(), now),
                    Notice::warning("BackupFailed", "Backup", message),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let Some(backup) = taken else {
        return Err(UpstashError::Decode(format!(
            "backup {name} was taken but is not listed"
        )));
    };
    let message = format!("took backup {name} ({})", backup.backup_id);
    Ok((
        result(
            &name,
            true,
            Some(backup.backup_id),
            Some(name.clone()),
            message.clone(),
            now,
        ),
        Notice::normal("BackupTaken", "Backup", message),
    ))
}

/// Restores the requested backup (by id or by name). A backup that does not exist, or a
/// refused restore, is a `Failed` result, not an error.
pub async fn restore<A: DeveloperApi>(
    api: &A,
    id: &str,
    request: &RestoreRequest,
    now: Timestamp,
) -> ApiResult<(RequestResult, Notice)> {
    let backups = api.list_backups(id).await?;
    let found = match (&request.backup_id, &request.backup_name) {
        (Some(bid), _) => backups.into_iter().find(|b| &b.backup_id == bid),
        (None, Some(name)) => backups.into_iter().find(|b| &b.name == name),
        (None, None) => None,
    };
    let rid = request.request_id.as_str();
    let Some(backup) = found else {
        let wanted = request
            .backup_id
            .clone()
            .or(request.backup_name.clone())
            .unwrap_or_default();
        let message = format!("restore {rid}: no backup {wanted} exists for database {id}");
        return Ok((
            result(rid, false, None, Some(wanted), message.clone(), now),
            Notice::warning("RestoreFailed", "Restore", message),
        ));
    };
    match api.restore_backup(id, &backup.backup_id).await {
        Ok(()) => {
            let message = format!(
                "restored backup {} ({}) into database {id}",
                backup.name, backup.backup_id
            );
            Ok((
                result(
                    rid,
                    true,
                    Some(backup.backup_id),
                    Some(backup.name),
                    message.clone(),
                    now,
                ),
                Notice::normal("Restored", "Restore", message),
            ))
        }
        Err(e) if !e.is_retryable() => {
            let message = format!("restore of backup {} failed: {e}", backup.name);
            Ok((
                result(
                    rid,
                    false,
                    Some(backup.backup_id),
                    Some(backup.name),
                    message.clone(),
                    now,
                ),
                Notice::warning("RestoreFailed", "Restore", message),
            ))
        }
        Err(e) => Err(e),
    }
}

/// Resets the password and REST tokens; the answer (or a read after it) carries the new ones.
pub async fn rotate<A: DeveloperApi>(api: &A, db: &Database) -> ApiResult<Database> {
    let rotated = api.reset_password(&db.database_id).await?;
    if rotated.has_credentials() {
        return Ok(rotated);
    }
    api.get_database(&db.database_id)
        .await?
        .ok_or_else(|| UpstashError::NotFound {
            message: "database not found".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        controller::{
            desired,
            fake_api::FakeApi,
            instance::fixtures::{database, instance},
        },
        crd::Plan,
    };

    fn at() -> Timestamp {
        "2026-11-01T00:00:00Z".parse().unwrap()
    }

    #[tokio::test]
    async fn each_change_is_exactly_its_call() {
        let api = FakeApi::default();
        let id = api.insert_database("crm-orders-1", "us-east-1");
        let mut db = api.database(&id).unwrap();
        let changes = vec![
            Change::ReadRegions(vec!["eu-west-1".into()]),
            Change::Plan(Plan::Fixed1Gb),
            Change::Budget(75),
            Change::Eviction(true),
            Change::AutoUpgrade(true),
            Change::ProdPack(false),
            Change::AllowedIps(vec![]),
            Change::DailyBackup(true),
        ];
        settings(&api, &mut db, &changes).await.unwrap();
        assert_eq!(
            api.mutating_calls(),
            [
                "update-regions",
                "change-plan",
                "update-budget",
                "enable-eviction",
                "enable-autoupgrade",
                "disable-prodpack",
                "update-allowlist",
                "enable-dailybackup"
            ]
        );
        let live = api.database(&id).unwrap();
        assert_eq!(live.budget, crate::upstash::Budget::from_usd(75));
        assert_eq!(live.plan(), Some(Plan::Fixed1Gb));
        assert_eq!(db.plan(), Some(Plan::Fixed1Gb), "the local copy follows");
    }

    #[tokio::test]
    async fn a_created_database_is_indexed_under_its_name() {
        let api = FakeApi::default();
        let index = DatabaseIndex::default();
        let obj = instance("spec: {primaryRegion: eu-west-1, budget: 20}");
        let request = desired::create_request(&obj, "crm-orders-1".into());
        let db = create(&api, &index, "ops", &request).await.unwrap();
        assert!(db.has_credentials());
        assert_eq!(db.budget, crate::upstash::Budget::from_usd(20));
        let found = index
            .lookup("ops", &api, &["crm-orders-1".to_string()], None)
            .await
            .unwrap();
        assert_eq!(found[0].id, db.database_id);
    }

    #[tokio::test]
    async fn a_lost_create_answer_is_an_error_and_the_database_exists() {
        let api = FakeApi::default();
        api.lose_next_answer("create");
        let obj = instance("spec: {primaryRegion: eu-west-1}");
        let request = desired::create_request(&obj, "crm-orders-1".into());
        let e = create(&api, &DatabaseIndex::default(), "ops", &request)
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "the pending record stays: {e}");
        assert_eq!(api.count(), 1);
    }

    #[tokio::test]
    async fn a_backup_already_taken_by_a_lost_call_is_not_taken_again() {
        let api = FakeApi::default();
        let id = api.insert_database("crm-orders-1", "us-east-1");
        let backup_id = api.insert_backup(&id, "before-migration");
        let request = BackupRequest {
            request_id: "before-migration".into(),
        };
        let (result, notice) = backup(&api, &id, &request, at()).await.unwrap();
        assert_eq!(api.calls_to("create-backup"), 0);
        assert_eq!(result.result, "Succeeded");
        assert_eq!(result.backup_id.as_deref(), Some(backup_id.as_str()));
        assert_eq!(notice.reason, "BackupTaken");
    }

    #[tokio::test]
    async fn a_refused_backup_is_a_failed_result() {
        let api = FakeApi::default();
        let id = api.insert_database("crm-orders-1", "us-east-1");
        api.fail_next(
            "create-backup",
            UpstashError::Rejected {
                status: 400,
                message: "free databases have no backups".into(),
            },
        );
        let request = BackupRequest {
            request_id: "b1".into(),
        };
        let (result, notice) = backup(&api, &id, &request, at()).await.unwrap();
        assert_eq!(result.result, "Failed");
        assert!(result.message.contains("free databases have no backups"));
        assert_eq!(notice.reason, "BackupFailed");
    }

    #[tokio::test]
    async fn a_restore_of_a_backup_that_does_not_exist_fails_without_a_call() {
        let api = FakeApi::default();
        let id = api.insert_database("crm-orders-1", "us-east-1");
        let request = RestoreRequest {
            request_id: "typo".into(),
            backup_name: Some("no-such-backup".into()),
            backup_id: None,
        };
        let (result, _) = restore(&api, &id, &request, at()).await.unwrap();
        assert_eq!(result.result, "Failed");
        assert!(result.message.contains("no-such-backup"));
        assert_eq!(api.calls_to("restore-backup"), 0);
        let named = api.insert_backup(&id, "nightly");
        let request = RestoreRequest {
            request_id: "undo".into(),
            backup_name: Some("nightly".into()),
            backup_id: None,
        };
        let (result, notice) = restore(&api, &id, &request, at()).await.unwrap();
        assert_eq!(result.result, "Succeeded");
        assert_eq!(result.backup_id, Some(named));
        assert_eq!(notice.reason, "Restored");
    }

    #[tokio::test]
    async fn a_rotation_returns_the_new_credentials() {
        let api = FakeApi::default();
        let id = api.insert_database("crm-orders-1", "us-east-1");
        let before = database(&format!("database_id: {id}"));
        let after = rotate(&api, &before).await.unwrap();
        assert!(after.has_credentials());
        assert_ne!(
            secrecy::ExposeSecret::expose_secret(after.password.as_ref().unwrap()),
            secrecy::ExposeSecret::expose_secret(before.password.as_ref().unwrap())
        );
        assert_eq!(api.calls_to("reset-password"), 1);
    }
}
