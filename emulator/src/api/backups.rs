//! Backups: create (a snapshot of the key space: the engine's RDB file), list, restore (the key
//! space becomes the snapshot again), delete, and the daily-backup switch.

use serde_json::Value;

use super::fields::opt_str;
use super::{ApiError, ApiResult, Ctx};
use crate::ids;
use crate::state::{Backup, Database, now_ms};

fn ok() -> ApiResult {
    Ok(Value::String("OK".into()).into())
}

fn with_db<T>(
    ctx: &Ctx<'_>,
    mutate: bool,
    f: impl FnOnce(&mut Database) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut st = ctx.shared.lock();
    let db = st
        .db_of_mut(ctx.account, ctx.id())
        .ok_or_else(ApiError::db_not_found)?;
    let out = f(db)?;
    drop(st);
    if mutate {
        ctx.shared.mark_dirty();
    }
    Ok(out)
}

pub fn list(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, false, |db| {
        let items: Vec<Value> = db
            .backups
            .iter()
            .map(|b| serde_json::to_value(db.backup_wire(b)).unwrap_or(Value::Null))
            .collect();
        Ok(Value::Array(items).into())
    })
}

/// Snapshots the key space of database `id` as a new backup (also used by archival).
pub async fn snapshot(
    shared: &crate::Shared,
    id: &str,
    name: String,
    daily: bool,
) -> Result<Backup, ApiError> {
    let backup_id = ids::uuid();
    let size = shared
        .engines
        .backup(id, &backup_id)
        .await
        .map_err(|e| ApiError::internal(format!("backup failed: {e}")))?;
    Ok(Backup {
        id: backup_id,
        name,
        creation_time: now_ms() / 1000,
        size,
        daily,
    })
}

pub async fn create(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let name = opt_str(&b, "name")?.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("backup name is required"));
    }
    with_db(ctx, false, |_| Ok(()))?;
    let backup = snapshot(ctx.shared, ctx.id(), name, false).await?;
    let kept = with_db(ctx, true, |db| {
        db.backups.push(backup.clone());
        Ok(())
    });
    if kept.is_err() {
        // Deleted meanwhile.
        ctx.shared.engines.delete_backup(ctx.id(), &backup.id);
    }
    kept?;
    ok()
}

pub async fn restore(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let id =
        opt_str(&b, "backup_id")?.ok_or_else(|| ApiError::bad_request("backup_id is required"))?;
    with_db(ctx, false, |db| {
        db.backups
            .iter()
            .any(|x| x.id == id)
            .then_some(())
            .ok_or_else(|| ApiError::not_found("backup not found"))
    })?;
    ctx.shared
        .engines
        .restore(ctx.id(), &id)
        .await
        .map_err(|e| ApiError::internal(format!("restore failed: {e}")))?;
    with_db(ctx, true, |db| {
        db.sync_seq += 1;
        // ACL users are not carried over by a restore (Upstash: "You need to redefine ACL
        // users"); the engine was stopped and starts without them.
        db.acl = Default::default();
        Ok(())
    })?;
    ok()
}

pub fn delete(ctx: &Ctx<'_>) -> ApiResult {
    let backup_id = ctx.route.backup_id.as_deref().unwrap_or_default();
    with_db(ctx, true, |db| {
        let before = db.backups.len();
        db.backups.retain(|b| b.id != backup_id);
        if db.backups.len() == before {
            return Err(ApiError::not_found("backup not found"));
        }
        Ok(())
    })?;
    ctx.shared.engines.delete_backup(ctx.id(), backup_id);
    ok()
}

pub fn set_daily(ctx: &Ctx<'_>, on: bool) -> ApiResult {
    with_db(ctx, true, |db| {
        db.meta.daily_backup_enabled = on;
        ok()
    })
}
