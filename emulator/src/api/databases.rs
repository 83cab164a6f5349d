//! Database operations: list, get, create, delete, rename, reset-password, enable-tls, eviction,
//! auto-upgrade, change-plan, update-budget, update-regions, move-to-team, prod pack, allow-list.

use serde_json::{Map, Value};

use super::fields::{nullable_str_list, opt_bool, opt_i64, opt_str};
use super::{ApiError, ApiResult, Ctx, Success};
use crate::ids;
use crate::model::{self, GCP_REGIONS};
use crate::state::{Database, DbMeta, now_ms};
use crate::stats::Traffic;

fn ok() -> ApiResult {
    Ok(Value::String("OK".into()).into())
}

fn raw<T: serde::Serialize>(v: &T) -> ApiResult {
    serde_json::to_vec(v)
        .map(Success::Raw)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn wire(ctx: &Ctx<'_>, db: &Database, hide: bool) -> ApiResult {
    raw(&db.to_wire(&ctx.shared.settings.endpoint, hide))
}

fn hide(ctx: &Ctx<'_>) -> bool {
    ctx.query.get("credentials").is_some_and(|v| v == "hide")
}

/// Database names: not blank, at most 100 characters, no control characters. Neither the OpenAPI
/// spec nor the docs restrict them further, and Terraform's own example has a space
/// (`Terraform DB6`).
pub fn validate_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("database name cannot be empty"));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid database name: at most 100 characters, without control characters",
        ));
    }
    Ok(())
}

/// Read regions: valid codes (AWS without `af-south-1`), no duplicates, not the primary, an AWS
/// primary, and at most one on the free plan.
pub fn validate_read_regions(
    primary: &str,
    plan: &str,
    regions: &[String],
) -> Result<(), ApiError> {
    for (i, r) in regions.iter().enumerate() {
        if !model::is_valid_read_region(r) {
            return Err(ApiError::bad_request(format!("invalid read region: {r}")));
        }
        if r == primary {
            return Err(ApiError::bad_request(format!(
                "primary region {r} cannot also be a read region"
            )));
        }
        if regions[..i].contains(r) {
            return Err(ApiError::bad_request(format!("duplicate read region: {r}")));
        }
    }
    if !regions.is_empty() && GCP_REGIONS.contains(&primary) {
        return Err(ApiError::bad_request(
            "read regions are not available for GCP primary regions",
        ));
    }
    if plan == "free" && regions.len() > 1 {
        return Err(ApiError::bad_request(
            "free databases can have at most one read region",
        ));
    }
    Ok(())
}

pub fn list(ctx: &Ctx<'_>) -> ApiResult {
    let hide = hide(ctx);
    let items: Vec<_> = {
        let st = ctx.shared.lock();
        st.list(ctx.account)
            .into_iter()
            .map(|d| d.to_wire(&ctx.shared.settings.endpoint, hide))
            .collect()
    };
    raw(&items)
}

pub fn get(ctx: &Ctx<'_>) -> ApiResult {
    let st = ctx.shared.lock();
    let db = st
        .db_of(ctx.account, ctx.id())
        .ok_or_else(ApiError::db_not_found)?;
    wire(ctx, db, hide(ctx))
}

pub fn create(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let name = match opt_str(&b, "database_name")? {
        Some(n) => n,
        None => opt_str(&b, "name")?
            .ok_or_else(|| ApiError::bad_request("database_name is required"))?,
    };
    validate_name(&name)?;
    if let Some(region) = opt_str(&b, "region")?
        && region != "global"
    {
        return Err(ApiError::bad_request("regional db creation is deprecated"));
    }
    let platform = opt_str(&b, "platform")?;
    if let Some(p) = &platform
        && p != "aws"
        && p != "gcp"
    {
        return Err(ApiError::bad_request(format!(
            "invalid platform: {p} (aws or gcp)"
        )));
    }
    let primary = opt_str(&b, "primary_region")?
        .ok_or_else(|| ApiError::bad_request("primary_region is required"))?;
    let Some(primary_platform) = model::region_platform(&primary) else {
        return Err(ApiError::bad_request(format!(
            "invalid primary region: {primary}"
        )));
    };
    if let Some(p) = &platform
        && p != primary_platform
    {
        return Err(ApiError::bad_request(format!(
            "primary region {primary} is not available on platform {p}"
        )));
    }
    let plan = opt_str(&b, "plan")?.unwrap_or_else(|| "payg".into());
    if model::plan_by_name(&plan, false).is_none() {
        return Err(ApiError::bad_request(format!("invalid plan: {plan}")));
    }
    let read_regions = nullable_str_list(&b, "read_regions")?.unwrap_or_default();
    validate_read_regions(&primary, &plan, &read_regions)?;
    let budget = opt_i64(&b, "budget")?.unwrap_or(0);
    if budget < 0 {
        return Err(ApiError::bad_request("budget cannot be negative"));
    }
    let now = now_ms();
    let db = Database {
        meta: DbMeta {
            id: ids::uuid(),
            account: ctx.account.to_string(),
            name,
            plan,
            platform: primary_platform.to_string(),
            primary_region: primary,
            read_regions,
            creation_time: now / 1000,
            password: ids::password(),
            read_only_password: ids::password(),
            rest_token: ids::rest_token(),
            read_only_rest_token: ids::read_only_rest_token(),
            slug: ids::slug(),
            eviction: opt_bool(&b, "eviction")?.unwrap_or(false),
            auto_upgrade: opt_bool(&b, "auto_upgrade")?.unwrap_or(false),
            consistent: opt_bool(&b, "consistent")?.unwrap_or(false),
            multizone: opt_bool(&b, "multizone")?.unwrap_or(false),
            prod_pack_enabled: opt_bool(&b, "prod_pack_enabled")?.unwrap_or(false),
            budget,
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
    };
    // TLS is always on (a `tls: false` request is accepted and ignored, like Upstash).
    let _ = opt_bool(&b, "tls")?;
    let out = wire(ctx, &db, false)?;
    ctx.shared.lock().insert(db);
    ctx.shared.mark_dirty();
    Ok(out)
}

/// Runs `f` on the account's database, then marks the state dirty.
fn with_db<T>(
    ctx: &Ctx<'_>,
    f: impl FnOnce(&mut Database) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut st = ctx.shared.lock();
    let db = st
        .db_of_mut(ctx.account, ctx.id())
        .ok_or_else(ApiError::db_not_found)?;
    let out = f(db)?;
    drop(st);
    ctx.shared.mark_dirty();
    Ok(out)
}

pub async fn delete(ctx: &Ctx<'_>) -> ApiResult {
    {
        let mut st = ctx.shared.lock();
        if st.db_of(ctx.account, ctx.id()).is_none() {
            return Err(ApiError::db_not_found());
        }
        st.databases.remove(ctx.id());
    }
    ctx.shared.mark_dirty();
    // The engine (if one ever ran) and the key space and backup files go with it.
    ctx.shared.engines.remove(ctx.id()).await;
    ok()
}

pub fn rename(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        let b = ctx.body_obj()?;
        let name = opt_str(&b, "name")?.ok_or_else(|| ApiError::bad_request("name is required"))?;
        validate_name(&name)?;
        db.meta.name = name;
        wire(ctx, db, false)
    })
}

pub fn reset_password(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        db.rotate_credentials();
        // Shown once, also under Credential Protection.
        raw(&db.to_wire_revealed(&ctx.shared.settings.endpoint))
    })
}

pub fn enable_tls(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| wire(ctx, db, false))
}

pub fn set_eviction(ctx: &Ctx<'_>, on: bool) -> ApiResult {
    with_db(ctx, |db| {
        db.meta.eviction = on;
        ok()
    })
}

pub fn set_autoupgrade(ctx: &Ctx<'_>, on: bool) -> ApiResult {
    with_db(ctx, |db| {
        if db.meta.auto_upgrade == on {
            return Err(ApiError::bad_request(if on {
                "auto upgrade is already enabled"
            } else {
                "auto upgrade is already disabled"
            }));
        }
        db.meta.auto_upgrade = on;
        ok()
    })
}

pub fn set_prodpack(ctx: &Ctx<'_>, on: bool) -> ApiResult {
    with_db(ctx, |db| {
        db.meta.prod_pack_enabled = on;
        ok()
    })
}

pub fn change_plan(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        let b = ctx.body_obj()?;
        let name = match opt_str(&b, "plan_name")? {
            Some(p) => p,
            None => opt_str(&b, "plan")?
                .ok_or_else(|| ApiError::bad_request("plan_name is required"))?,
        };
        let plan = model::plan_by_name(&name, true)
            .ok_or_else(|| ApiError::bad_request(format!("invalid plan: {name}")))?;
        if plan.name == "free" && db.meta.read_regions.len() > 1 {
            return Err(ApiError::bad_request(
                "free databases can have at most one read region",
            ));
        }
        let auto_upgrade = opt_bool(&b, "auto_upgrade")?;
        let prod_pack = opt_bool(&b, "prod_pack_enabled")?;
        if plan.name != db.meta.plan {
            db.meta.plan = plan.name.to_string();
            db.meta.last_plan_upgrade_time = now_ms() / 1000;
        }
        if let Some(a) = auto_upgrade {
            db.meta.auto_upgrade = a;
        }
        if let Some(p) = prod_pack {
            db.meta.prod_pack_enabled = p;
        }
        ok()
    })
}

pub fn update_budget(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        let b = ctx.body_obj()?;
        let budget =
            opt_i64(&b, "budget")?.ok_or_else(|| ApiError::bad_request("budget is required"))?;
        if budget < 0 {
            return Err(ApiError::bad_request("budget cannot be negative"));
        }
        db.meta.budget = budget;
        ok()
    })
}

pub fn update_regions(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        let b = ctx.body_obj()?;
        // `null` (Terraform's emptied list) clears the read regions.
        let regions = nullable_str_list(&b, "read_regions")?
            .ok_or_else(|| ApiError::bad_request("read_regions is required"))?;
        validate_read_regions(&db.meta.primary_region, &db.meta.plan, &regions)?;
        db.meta.read_regions = regions;
        ok()
    })
}

/// Moves one of the key's databases to a team the caller belongs to: the database's owner
/// (`customer_id`, `user_email`) becomes the team.
pub fn move_to_team(ctx: &Ctx<'_>) -> ApiResult {
    let b = ctx.body_obj()?;
    let db_id = opt_str(&b, "database_id")?
        .ok_or_else(|| ApiError::bad_request("database_id is required"))?;
    let team =
        opt_str(&b, "team_id")?.ok_or_else(|| ApiError::bad_request("team_id is required"))?;
    let mut st = ctx.shared.lock();
    if st.db_of(ctx.account, &db_id).is_none() {
        return Err(ApiError::db_not_found());
    }
    let member = st
        .accounts
        .teams
        .get(&team)
        .is_some_and(|t| t.role_of(&ctx.principal.email).is_some());
    if !member {
        return Err(ApiError::not_found(format!("team not found: {team}")));
    }
    if let Some(db) = st.databases.get_mut(&db_id) {
        db.meta.account = team;
    }
    drop(st);
    ctx.shared.mark_dirty();
    ok()
}

/// Parses an allow-list entry: a CIDR, or a bare address (a single host).
pub fn parse_cidr(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .map(|n| n.trunc())
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

pub fn update_allowlist(ctx: &Ctx<'_>) -> ApiResult {
    with_db(ctx, |db| {
        let b = ctx.body_obj()?;
        // `null` (Terraform's emptied list) clears the allow-list.
        let ips = nullable_str_list(&b, "allowed_ips")?
            .ok_or_else(|| ApiError::bad_request("allowed_ips is required"))?;
        let mut ranges = vec![];
        for ip in &ips {
            let net = parse_cidr(ip)
                .ok_or_else(|| ApiError::bad_request(format!("invalid IP range: {ip}")))?;
            let s = net.to_string();
            if !ranges.contains(&s) {
                ranges.push(s);
            }
        }
        db.meta.allowed_ip_ranges = ranges;
        ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("crm-cache_1.prod").is_ok());
        assert!(validate_name("Terraform DB6").is_ok());
        assert!(validate_name("café ☕").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("   ").is_err());
        assert!(validate_name("new\nline").is_err());
        assert!(validate_name(&"é".repeat(100)).is_ok());
        assert!(validate_name(&"a".repeat(101)).is_err());
    }

    #[test]
    fn read_regions() {
        let v = |p: &str, plan: &str, r: &[&str]| {
            validate_read_regions(
                p,
                plan,
                &r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        assert!(v("us-east-1", "payg", &["eu-west-1", "us-west-2"]).is_ok());
        assert!(v("us-east-1", "payg", &["us-east-1"]).is_err());
        assert!(v("us-east-1", "payg", &["af-south-1"]).is_err());
        assert!(v("us-east-1", "payg", &["us-central1"]).is_err());
        assert!(v("us-east-1", "payg", &["eu-west-1", "eu-west-1"]).is_err());
        assert!(v("us-central1", "payg", &["eu-west-1"]).is_err());
        assert!(v("us-east-1", "free", &["eu-west-1", "us-west-2"]).is_err());
        assert!(v("us-east-1", "free", &["eu-west-1"]).is_ok());
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_cidr("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        assert_eq!(parse_cidr("::1").unwrap().to_string(), "::1/128");
        assert!(parse_cidr("nope").is_none());
        assert!(parse_cidr("1.2.3.4/33").is_none());
    }
}
