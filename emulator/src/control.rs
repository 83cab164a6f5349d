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
//! | `GET /_emulator/databases` / `GET /_emulator/databases/{id}` | every database (archived ones too), with credentials and owner |
//! | `PATCH /_emulator/databases/{id}` | set `state` (`active`, `suspended`, `passive`), `max_data_size_bytes` (a lower data limit, `null` = the plan's), `credential_protection` (Credential Protection: a Get answers empty credentials, reset-password new ones once; turning it off revokes and regenerates them) |
//! | `POST /_emulator/databases/{id}/archive` | archive a free database: gone from the Developer API, its data kept in a backup |
//! | `POST /_emulator/databases/{id}/unarchive` | bring it back from a backup (`{"backup_id"}`, default the archival's) |
//! | `PUT` / `PATCH` / `DELETE /_emulator/databases/{id}/stats` | replace / merge / clear stats overrides |
//! | `GET` / `PUT /_emulator/latency` | global Developer API latency `{"ms": N}` |
//! | `GET` / `POST /_emulator/accounts` | account emails / add a key `{"email", "api_key", "team"?, "readonly"?}` |
//! | `GET /_emulator/keys` / `GET /_emulator/teams` | the API keys (without their values) / the teams and members |
//! | `POST /_emulator/console` | a change made in the console: `{"actor", "key_name"?, "method", "path", "body"?}` runs the Developer API operation of `method` + `path` on the database's owner's account, recorded in the audit log as `actor` with source `API_KEY - <key_name>` (or `CONSOLE`), not in the call log → the Developer API's status and answer |
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
use crate::accounts::KeySpec;
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
        .route("/databases/{id}/archive", post(archive))
        .route("/databases/{id}/unarchive", post(unarchive))
        .route(
            "/databases/{id}/stats",
            put(put_stats).patch(patch_stats).delete(clear_stats),
        )
        .route("/latency", get(get_latency).put(set_latency))
        .route("/accounts", get(accounts).post(add_account))
        .route("/keys", get(keys))
        .route("/teams", get(teams))
        .route("/reset", post(reset))
        .route("/console", post(console))
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
        serde_json::to_value(db.to_wire_revealed(&s.settings.endpoint)).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert(
            "credential_protection".into(),
            json!(db.meta.credential_protection),
        );
        let (keys, bytes) = db.traffic.current();
        m.insert("account".into(), json!(db.meta.account));
        m.insert("plan".into(), json!(db.meta.plan));
        m.insert(
            "read_only_password".into(),
            json!(db.meta.read_only_password),
        );
        m.insert("archived".into(), json!(db.meta.archived));
        m.insert("keys".into(), json!(keys));
        m.insert("stored_bytes".into(), json!(bytes));
        m.insert("backups".into(), json!(db.backups.len()));
        m.insert(
            "backup_list".into(),
            Value::Array(
                db.backups
                    .iter()
                    .map(|b| serde_json::to_value(db.backup_wire(b)).unwrap_or(Value::Null))
                    .collect(),
            ),
        );
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
    /// `Some(None)` (`null`): back to the plan's limit.
    #[serde(default, deserialize_with = "some_nullable")]
    max_data_size_bytes: Option<Option<u64>>,
    credential_protection: Option<bool>,
}

fn some_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
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
    if let Some(limit) = patch.max_data_size_bytes {
        if limit == Some(0) {
            return err(
                StatusCode::BAD_REQUEST,
                "max_data_size_bytes must be positive",
            );
        }
        // Applied to a running engine on its next use.
        db.meta.max_data_size_bytes = limit;
    }
    if let Some(on) = patch.credential_protection {
        if db.meta.credential_protection && !on {
            // Turning it off revokes the credentials and issues new ones.
            db.rotate_credentials();
        }
        db.meta.credential_protection = on;
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
    Json(json!(s.lock().accounts.emails())).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    email: String,
    api_key: String,
    /// A team name or id: the key acts for that team (created when unknown).
    #[serde(default)]
    team: Option<String>,
    #[serde(default, alias = "read_only")]
    readonly: bool,
    /// The key's name (the audit log's source `API_KEY - <name>`).
    #[serde(default)]
    name: Option<String>,
}

async fn add_account(State(s): S, body: axum::body::Bytes) -> Response {
    let b = match serde_json::from_slice::<AccountBody>(&body) {
        Ok(b) if !b.email.is_empty() && !b.api_key.is_empty() => b,
        _ => {
            return err(
                StatusCode::BAD_REQUEST,
                "expected {\"email\": ..., \"api_key\": ..., \"team\"?: ..., \"readonly\"?: bool}",
            );
        }
    };
    let spec = KeySpec {
        email: b.email.clone(),
        api_key: b.api_key,
        team: b.team,
        read_only: b.readonly,
        name: b.name,
    };
    let added = s.lock().accounts.add(&spec);
    match added {
        Ok(k) => {
            s.mark_dirty();
            Json(json!({"email": b.email, "team_id": k.team_id, "readonly": k.read_only}))
                .into_response()
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn keys(State(s): S) -> Response {
    let st = s.lock();
    let v: Vec<Value> = st
        .accounts
        .keys
        .iter()
        .map(|k| json!({"email": k.email, "team_id": k.team_id, "readonly": k.read_only}))
        .collect();
    Json(v).into_response()
}

async fn teams(State(s): S) -> Response {
    let st = s.lock();
    let v: Vec<Value> = st
        .accounts
        .teams
        .values()
        .map(|t| {
            json!({
                "team_id": t.id,
                "team_name": t.name,
                "copy_cc": t.copy_cc,
                "members": t.members.iter().map(|m| json!({"email": m.email, "role": m.role})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(v).into_response()
}

/// Archives a free database, as Upstash does with free databases unused for a long time: its
/// key space goes into a backup, the engine's data is removed, and the database disappears from
/// the Developer API and the data plane until it is unarchived.
async fn archive(State(s): S, Path(id): Path<String>) -> Response {
    {
        let st = s.lock();
        match st.databases.get(&id) {
            None => return err(StatusCode::NOT_FOUND, "database not found"),
            Some(d) if d.meta.archived => {
                return err(StatusCode::BAD_REQUEST, "database is already archived");
            }
            Some(d) if d.meta.plan != "free" => {
                return err(StatusCode::BAD_REQUEST, "only free databases are archived");
            }
            Some(_) => {}
        }
    }
    let name = format!("archived-{}", jiff::Timestamp::now().strftime("%Y-%m-%d"));
    let backup = match crate::api::backups::snapshot(&s, &id, name, false).await {
        Ok(b) => b,
        Err(e) => return err(e.status, e.message),
    };
    if let Err(e) = s.engines.clear(&id).await {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("archiving failed: {e}"),
        );
    }
    let mut st = s.lock();
    let Some(db) = st.databases.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "database not found");
    };
    db.backups.push(backup);
    db.meta.archived = true;
    let v = db_view(&s, db);
    drop(st);
    s.mark_dirty();
    Json(v).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UnarchiveBody {
    backup_id: Option<String>,
}

/// Brings an archived database back, its key space restored from a backup (the archival's
/// unless `backup_id` names another).
async fn unarchive(State(s): S, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let b: UnarchiveBody = if body.iter().all(u8::is_ascii_whitespace) {
        UnarchiveBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
        }
    };
    let backup_id = {
        let st = s.lock();
        let Some(db) = st.databases.get(&id) else {
            return err(StatusCode::NOT_FOUND, "database not found");
        };
        if !db.meta.archived {
            return err(StatusCode::BAD_REQUEST, "database is not archived");
        }
        let chosen = match &b.backup_id {
            Some(bid) => db.backups.iter().find(|x| &x.id == bid),
            None => db
                .backups
                .iter()
                .rev()
                .find(|x| x.name.starts_with("archived-")),
        };
        match chosen {
            Some(x) => x.id.clone(),
            None => return err(StatusCode::NOT_FOUND, "backup not found"),
        }
    };
    if let Err(e) = s.engines.restore(&id, &backup_id).await {
        return err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("restore failed: {e}"),
        );
    }
    let mut st = s.lock();
    let Some(db) = st.databases.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "database not found");
    };
    db.meta.archived = false;
    db.sync_seq += 1;
    let v = db_view(&s, db);
    drop(st);
    s.mark_dirty();
    Json(v).into_response()
}

async fn reset(State(s): S) -> Response {
    {
        let mut st = s.lock();
        st.databases.clear();
        st.accounts = Default::default();
        for k in &s.settings.config_accounts {
            let _ = st.accounts.add(k);
        }
    }
    s.engines.reset().await;
    s.faults_lock().clear();
    s.calls_lock().clear();
    s.audit_lock().clear();
    s.mark_dirty();
    Json(json!("OK")).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleBody {
    actor: String,
    #[serde(default)]
    key_name: Option<String>,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
}

async fn console(State(s): S, body: axum::body::Bytes) -> Response {
    let b: ConsoleBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let Ok(method) = http::Method::from_bytes(b.method.as_bytes()) else {
        return err(StatusCode::BAD_REQUEST, "invalid method");
    };
    let call_body = b
        .body
        .map(|v| axum::body::Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
        .unwrap_or_default();
    let (status, answer) = crate::api::auditlogs::console(
        &s,
        &b.actor,
        b.key_name.as_deref(),
        &method,
        &b.path,
        call_body,
    )
    .await;
    s.mark_dirty();
    (status, Json(answer)).into_response()
}
