//! `GET /v2/redis/stats/{id}` (reference §3).

use super::{ApiError, ApiResult, Ctx, Success};
use crate::data_plane;
use crate::state::now_ms;
use crate::stats::{StatsInput, period_minutes, stats_body};

pub async fn stats(ctx: &Ctx<'_>) -> ApiResult {
    let period = ctx.query.get("period").map(String::as_str);
    let minutes = period_minutes(period).ok_or_else(|| {
        ApiError::bad_request("invalid period: use 1h, 3h, 12h, 1d, 3d, 7d or 30d")
    })?;
    if ctx.shared.lock().db_of(ctx.account, ctx.id()).is_none() {
        return Err(ApiError::db_not_found());
    }
    // A running engine's counters up to now.
    let sample = ctx.shared.engines.sample(ctx.id(), true).await;
    data_plane::record(ctx.shared, ctx.id(), &[], sample);
    let st = ctx.shared.lock();
    let db = st
        .db_of(ctx.account, ctx.id())
        .ok_or_else(ApiError::db_not_found)?;
    let (keys, bytes) = db.traffic.current();
    Ok(Success::Json(stats_body(&StatsInput {
        traffic: &db.traffic,
        plan: db.meta.plan(),
        prod_pack: db.meta.prod_pack_enabled,
        current_keys: keys,
        current_bytes: bytes,
        now_ms: now_ms(),
        period_minutes: minutes,
        overrides: &db.stats_overrides,
    })))
}
