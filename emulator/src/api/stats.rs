//! `GET /v2/redis/stats/{id}` (reference §3).

use super::{ApiError, ApiResult, Ctx, Success};
use crate::state::now_ms;
use crate::stats::{StatsInput, period_minutes, stats_body};

pub fn stats(ctx: &Ctx<'_>) -> ApiResult {
    let st = ctx.shared.lock();
    let db = st
        .db_of(ctx.account, ctx.id())
        .ok_or_else(ApiError::db_not_found)?;
    let period = ctx.query.get("period").map(String::as_str);
    let minutes = period_minutes(period).ok_or_else(|| {
        ApiError::bad_request("invalid period: use 1h, 3h, 12h, 1d, 3d, 7d or 30d")
    })?;
    let now = now_ms();
    let live_keys = db.keyspace.len() as u64;
    Ok(Success::Json(stats_body(&StatsInput {
        traffic: &db.traffic,
        plan: db.meta.plan(),
        prod_pack: db.meta.prod_pack_enabled,
        current_keys: live_keys,
        current_bytes: db.keyspace.stored_bytes(),
        now_ms: now,
        period_minutes: minutes,
        overrides: &db.stats_overrides,
    })))
}
