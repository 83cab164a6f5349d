//! Backups: create (a snapshot of the key space), list, restore (the key space becomes the
//! snapshot again), delete, and the daily-backup switch.

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

pub fn create(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, true, |db| {
        let b = ctx.body_obj()?;
        let name = opt_str(&b, "name")?.unwrap_or_default();
        if name.trim().is_empty() {
            return Err(ApiError::bad_request("backup name is required"));
        }
        let now = now_ms();
        db.keyspace.sweep(now);
        db.backups.push(Backup {
            id: ids::uuid(),
            name,
            creation_time: now / 1000,
            size: db.keyspace.stored_bytes(),
            daily: false,
            data: db.keyspace.clone(),
        });
        ok()
    })
}

pub fn restore(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, true, |db| {
        let b = ctx.body_obj()?;
        let id = opt_str(&b, "backup_id")?
            .ok_or_else(|| ApiError::bad_request("backup_id is required"))?;
        let backup = db
            .backups
            .iter()
            .find(|x| x.id == id)
            .ok_or_else(|| ApiError::not_found("backup not found"))?
            .data
            .clone();
        db.keyspace.restore_from(&backup);
        db.sync_seq += 1;
        ok()
    })
}

pub fn delete(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, true, |db| {
        let id = ctx.route.backup_id.as_deref().unwrap_or_default();
        let before = db.backups.len();
        db.backups.retain(|b| b.id != id);
        if db.backups.len() == before {
            return Err(ApiError::not_found("backup not found"));
        }
        ok()
    })
}

pub fn set_daily(ctx: &Ctx<'_>, on: bool) -> ApiResult {
    with_db(ctx, true, |db| {
        db.meta.daily_backup_enabled = on;
        ok()
    })
}
