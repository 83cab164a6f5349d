//! The control API for tests, on the API listener under `/_emulator/` (no auth unless an admin
//! token is configured; then `Authorization: Bearer <token>`).
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /_emulator/health` | `{"ok": true}` |
//! | `GET /_emulator/calls?since=&endpoint=&plane=&database_id=` | call log |
//! | `DELETE /_emulator/calls` | clear the call log |
//! | `POST /_emulator/faults` | add a fault rule → the rule with its `id` |
//! | `GET /_emulator/faults` / `DELETE /_emulator/faults` / `DELETE /_emulator/faults/{id}` | list / clear / remove |
//! | `GET /_emulator/databases` / `GET /_emulator/databases/{id}` | every database, with credentials and account |
//! | `PATCH /_emulator/databases/{id}` | set `state` (`active`, `suspended`, `passive`) |
//! | `PUT` / `PATCH` / `DELETE /_emulator/databases/{id}/stats` | replace / merge / clear stats overrides |
//! | `GET` / `PUT /_emulator/latency` | global Developer API latency `{"ms": N}` |
//! | `GET` / `POST /_emulator/accounts` | account emails / add `{"email", "api_key"}` |
//! | `POST /_emulator/reset` | delete all databases, faults, overrides and the call log |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::calllog::CallFilter;
use crate::faults::FaultSpec;

type S = State<Arc<Shared>>;

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// The `/_emulator` router (nested by the API listener).
pub fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/calls", get(calls).delete(clear_calls))
        .route(
            "/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/faults/{id}", delete(remove_fault))
        .route("/databases", get(databases))
        .route("/databases/{id}", get(database).patch(patch_database))
        .route(
            "/databases/{id}/stats",
            put(put_stats).patch(patch_stats).delete(clear_stats),
        )
        .route("/latency", get(get_latency).put(set_latency))
        .route("/accounts", get(accounts).post(add_account))
        .route("/reset", post(reset))
        .fallback(|| async { err(StatusCode::NOT_FOUND, "unknown control route") })
        .layer(middleware::from_fn_with_state(shared, admin_guard))
}

async fn admin_guard(State(s): S, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.settings.admin_token {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(expected.as_str()) {
            return err(
                StatusCode::UNAUTHORIZED,
                "control API requires the admin token",
            );
        }
    }
    next.run(req).await
}

async fn calls(State(s): S, Query(f): Query<CallFilter>) -> Response {
    Json(s.calls_lock().query(&f)).into_response()
}

async fn clear_calls(State(s): S) -> Response {
    s.calls_lock().clear();
    Json(json!("OK")).into_response()
}

async fn add_fault(State(s): S, body: axum::body::Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(x) => x,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid fault: {e}")),
    };
    if let Err(e) = spec.validate() {
        return err(StatusCode::BAD_REQUEST, e);
    }
    (StatusCode::OK, Json(s.faults_lock().add(spec))).into_response()
}

async fn list_faults(State(s): S) -> Response {
    Json(s.faults_lock().list()).into_response()
}

async fn clear_faults(State(s): S) -> Response {
    s.faults_lock().clear();
    Json(json!("OK")).into_response()
}

async fn remove_fault(State(s): S, Path(id): Path<u64>) -> Response {
    if s.faults_lock().remove(id) {
        Json(json!("OK")).into_response()
    } else {
        err(StatusCode::NOT_FOUND, "fault not found")
    }
}

fn db_view(s: &Shared, db: &crate::state::Database) -> Value {
    let mut v =
        serde_json::to_value(db.to_wire(&s.settings.endpoint, false)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("account".into(), json!(db.meta.account));
        m.insert("plan".into(), json!(db.meta.plan));
        m.insert("keys".into(), json!(db.keyspace.len()));
        m.insert("stored_bytes".into(), json!(db.keyspace.stored_bytes()));
        m.insert("backups".into(), json!(db.backups.len()));
        m.insert(
            "stats_overrides".into(),
            Value::Object(db.stats_overrides.clone()),
        );
        m.insert(
            "rest_url".into(),
            json!(format!(
                "https://{}",
                s.settings.endpoint.endpoint(&db.meta.slug)
            )),
        );
    }
    v
}

async fn databases(State(s): S) -> Response {
    let st = s.lock();
    let v: Vec<Value> = st.all().into_iter().map(|d| db_view(&s, d)).collect();
    Json(v).into_response()
}

async fn database(State(s): S, Path(id): Path<String>) -> Response {
    let st = s.lock();
    match st.databases.get(&id) {
        Some(d) => Json(db_view(&s, d)).into_response(),
        None => err(StatusCode::NOT_FOUND, "database not found"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbPatch {
    state: Option<String>,
}

async fn patch_database(State(s): S, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let patch: DbPatch = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let mut st = s.lock();
    let Some(db) = st.databases.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "database not found");
    };
    if let Some(state) = patch.state {
        if !matches!(state.as_str(), "active" | "suspended" | "passive") {
            return err(
                StatusCode::BAD_REQUEST,
                "state must be active, suspended or passive",
            );
        }
        db.meta.state = state;
    }
    let v = db_view(&s, db);
    drop(st);
    s.mark_dirty();
    Json(v).into_response()
}

fn parse_overrides(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("body must be a JSON object of stats fields".to_string()),
    }
}

async fn set_stats(s: &Shared, id: &str, body: &[u8], merge: bool) -> Response {
    let m = match parse_overrides(body) {
        Ok(m) => m,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let mut st = s.lock();
    let Some(db) = st.databases.get_mut(id) else {
        return err(StatusCode::NOT_FOUND, "database not found");
    };
    if merge {
        db.stats_overrides.extend(m);
    } else {
        db.stats_overrides = m;
    }
    let v = Value::Object(db.stats_overrides.clone());
    drop(st);
    s.mark_dirty();
    Json(v).into_response()
}

async fn put_stats(State(s): S, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    set_stats(&s, &id, &body, false).await
}

async fn patch_stats(State(s): S, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    set_stats(&s, &id, &body, true).await
}

async fn clear_stats(State(s): S, Path(id): Path<String>) -> Response {
    set_stats(&s, &id, b"{}", false).await
}

async fn get_latency(State(s): S) -> Response {
    Json(json!({"ms": s.latency()})).into_response()
}

#[derive(Deserialize)]
struct LatencyBody {
    ms: u64,
}

async fn set_latency(State(s): S, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<LatencyBody>(&body) {
        Ok(b) => {
            s.latency_ms.store(b.ms, Ordering::Relaxed);
            Json(json!({"ms": b.ms})).into_response()
        }
        Err(e) => err(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"ms\": N}}: {e}"),
        ),
    }
}

async fn accounts(State(s): S) -> Response {
    let st = s.lock();
    let emails: Vec<&String> = st.accounts.keys().collect();
    Json(json!(emails)).into_response()
}

#[derive(Deserialize)]
struct AccountBody {
    email: String,
    api_key: String,
}

async fn add_account(State(s): S, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<AccountBody>(&body) {
        Ok(b) if !b.email.is_empty() && !b.api_key.is_empty() => {
            s.lock().accounts.insert(b.email.clone(), b.api_key);
            s.mark_dirty();
            Json(json!({"email": b.email})).into_response()
        }
        _ => err(
            StatusCode::BAD_REQUEST,
            "expected {\"email\": ..., \"api_key\": ...}",
        ),
    }
}

async fn reset(State(s): S) -> Response {
    {
        let mut st = s.lock();
        st.databases.clear();
        st.accounts = s.settings.config_accounts.iter().cloned().collect();
    }
    s.faults_lock().clear();
    s.calls_lock().clear();
    s.mark_dirty();
    Json(json!("OK")).into_response()
}
