//! `GET /v2/auditlogs`, the recording of changes into the audit log, and the console path of
//! the control API (changes made "in the console" by a named person, optionally with a named
//! key, recorded in the audit log but not in the Developer API's call log).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use super::{ApiResult, Ctx, Route, RouteError, Success, perform, resolve};
use crate::Shared;
use crate::accounts::Principal;
use crate::audit::{self, Change, FREE_RETENTION_SECS, PAYG_RETENTION_SECS};
use crate::state::now_ms;

/// The account's entries within its retention (30 days once it has a paid database, else 7),
/// newest first.
pub fn list(ctx: &Ctx<'_>) -> ApiResult {
    let paid = ctx
        .shared
        .lock()
        .list(ctx.account)
        .iter()
        .any(|d| d.meta.plan != "free");
    let retention = if paid {
        PAYG_RETENTION_SECS
    } else {
        FREE_RETENTION_SECS
    };
    let entries = ctx
        .shared
        .audit_lock()
        .of(ctx.account, retention, now_ms() / 1000);
    serde_json::to_value(entries)
        .map(Success::Json)
        .map_err(|e| super::ApiError::internal(e.to_string()))
}

/// The name and id of the database a route names, before the call (a delete removes it).
pub fn entity_of(shared: &Shared, route: &Route) -> Option<(String, String)> {
    let id = route.id.as_deref()?;
    let st = shared.lock();
    let db = st.databases.get(id)?;
    Some((db.meta.name.clone(), db.meta.id.clone()))
}

/// Records a successful change in the audit log of the principal's account.
pub fn record(
    shared: &Shared,
    principal: &Principal,
    source: &str,
    route: &Route,
    before: Option<(String, String)>,
    result: &ApiResult,
) {
    if !route.op.mutates() || result.is_err() {
        return;
    }
    let (entity, id) = match (before, result) {
        (Some(e), _) => e,
        // A create names its database in the answer.
        (None, Ok(Success::Raw(bytes))) => {
            let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            (
                v["database_name"].as_str().unwrap_or_default().to_string(),
                v["database_id"].as_str().unwrap_or_default().to_string(),
            )
        }
        _ => (String::new(), String::new()),
    };
    shared.audit_lock().record(
        &principal.owner,
        &principal.email,
        source,
        &Change {
            op: route.op.name(),
            entity: &entity,
            secondary_entity: &id,
        },
        now_ms() / 1000,
    );
}

/// A change made in the console by `actor` (with the key `key_name`, if given: source
/// `API_KEY - <name>`, else `CONSOLE`): the Developer API operation of `method` and `path` on
/// the database's owner's account. Answers the status and body the Developer API would.
pub async fn console(
    shared: &Arc<Shared>,
    actor: &str,
    key_name: Option<&str>,
    method: &Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, Value) {
    let route = match resolve(method, path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => return (StatusCode::NOT_FOUND, "not found".into()),
        Err(RouteError::MethodNotAllowed) => {
            return (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
        }
    };
    let owner = route.id.as_deref().and_then(|id| {
        shared
            .lock()
            .databases
            .get(id)
            .map(|d| d.meta.account.clone())
    });
    let Some(owner) = owner else {
        return (StatusCode::NOT_FOUND, "database not found".into());
    };
    let principal = Principal {
        email: actor.to_string(),
        owner: owner.clone(),
        team_id: None,
        read_only: false,
        key_name: key_name.unwrap_or("console").to_string(),
    };
    let source = key_name.map_or_else(|| audit::CONSOLE.to_string(), audit::api_key_source);
    let before = entity_of(shared, &route);
    let query = HashMap::new();
    let ctx = Ctx {
        shared,
        account: &owner,
        principal: &principal,
        route: &route,
        body: &body,
        query: &query,
    };
    let result = perform(&ctx).await;
    record(shared, &principal, &source, &route, before, &result);
    match result {
        Ok(Success::Json(v)) => (StatusCode::OK, v),
        Ok(Success::Raw(b)) => (
            StatusCode::OK,
            serde_json::from_slice(&b).unwrap_or(Value::Null),
        ),
        Err(e) => (e.status, Value::String(e.message)),
    }
}
