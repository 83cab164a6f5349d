//! The Developer API (`/v2/redis/...`, `/v2/teams`, `/v2/team`): HTTP Basic auth with personal,
//! team and read-only API keys, routing to operations, JSON-string error bodies (reference §2,
//! §4).
//!
//! Routing is a table (`resolve`) rather than an axum `Router` because the operation name must be
//! known before the handler runs: faults, the call log and the global latency are keyed by it.

pub mod auditlogs;
pub mod backups;
pub mod databases;
mod stats;
mod teams;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::accounts::Principal;
use crate::calllog::redact_path;
use crate::server::{ConnInfo, Exchange, Outcome};

/// Developer API operations; `name()` is the stable name used by faults and the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    List,
    Get,
    Create,
    Delete,
    Rename,
    ResetPassword,
    EnableTls,
    EnableEviction,
    DisableEviction,
    EnableAutoupgrade,
    DisableAutoupgrade,
    ChangePlan,
    UpdateBudget,
    UpdateRegions,
    MoveToTeam,
    Stats,
    ListBackup,
    CreateBackup,
    DeleteBackup,
    RestoreBackup,
    EnableDailyBackup,
    DisableDailyBackup,
    EnableProdpack,
    DisableProdpack,
    UpdateAllowlist,
    ListTeams,
    CreateTeam,
    DeleteTeam,
    ListTeamMembers,
    AddTeamMember,
    RemoveTeamMember,
    AuditLogs,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Get => "get",
            Op::Create => "create",
            Op::Delete => "delete",
            Op::Rename => "rename",
            Op::ResetPassword => "reset-password",
            Op::EnableTls => "enable-tls",
            Op::EnableEviction => "enable-eviction",
            Op::DisableEviction => "disable-eviction",
            Op::EnableAutoupgrade => "enable-autoupgrade",
            Op::DisableAutoupgrade => "disable-autoupgrade",
            Op::ChangePlan => "change-plan",
            Op::UpdateBudget => "update-budget",
            Op::UpdateRegions => "update-regions",
            Op::MoveToTeam => "move-to-team",
            Op::Stats => "stats",
            Op::ListBackup => "list-backup",
            Op::CreateBackup => "create-backup",
            Op::DeleteBackup => "delete-backup",
            Op::RestoreBackup => "restore-backup",
            Op::EnableDailyBackup => "enable-dailybackup",
            Op::DisableDailyBackup => "disable-dailybackup",
            Op::EnableProdpack => "enable-prodpack",
            Op::DisableProdpack => "disable-prodpack",
            Op::UpdateAllowlist => "update-allowlist",
            Op::ListTeams => "list-teams",
            Op::CreateTeam => "create-team",
            Op::DeleteTeam => "delete-team",
            Op::ListTeamMembers => "list-team-members",
            Op::AddTeamMember => "add-team-member",
            Op::RemoveTeamMember => "remove-team-member",
            Op::AuditLogs => "auditlogs",
        }
    }

    /// Whether the operation changes anything (refused for read-only API keys).
    pub fn mutates(self) -> bool {
        !matches!(
            self,
            Op::List
                | Op::Get
                | Op::Stats
                | Op::ListBackup
                | Op::ListTeams
                | Op::ListTeamMembers
                | Op::AuditLogs
        )
    }
}

/// A resolved route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub op: Op,
    pub id: Option<String>,
    pub backup_id: Option<String>,
}

/// Why a path did not resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    MethodNotAllowed,
}

/// Maps method + path to an operation.
pub fn resolve(method: &Method, path: &str) -> Result<Route, RouteError> {
    if let Some(rest) = path.strip_prefix("/v2/") {
        let segs: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
        if matches!(segs.first(), Some(&"teams") | Some(&"team")) {
            return resolve_teams(method, &segs);
        }
        if segs == ["auditlogs"] {
            return if method == Method::GET {
                Ok(Route {
                    op: Op::AuditLogs,
                    id: None,
                    backup_id: None,
                })
            } else {
                Err(RouteError::MethodNotAllowed)
            };
        }
    }
    let Some(rest) = path.strip_prefix("/v2/redis/") else {
        return Err(RouteError::NotFound);
    };
    let segs: Vec<&str> = rest.strip_suffix('/').unwrap_or(rest).split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return Err(RouteError::NotFound);
    }
    let m = method;
    let route = |op: Op, allowed: &[Method], id: Option<&str>, bid: Option<&str>| {
        if allowed.contains(m) {
            Ok(Route {
                op,
                id: id.map(str::to_string),
                backup_id: bid.map(str::to_string),
            })
        } else {
            Err(RouteError::MethodNotAllowed)
        }
    };
    use Method as M;
    match segs.as_slice() {
        ["databases"] => route(Op::List, &[M::GET], None, None),
        ["database"] => route(Op::Create, &[M::POST], None, None),
        ["database", id] => match *m {
            M::GET => route(Op::Get, &[M::GET], Some(id), None),
            M::DELETE => route(Op::Delete, &[M::DELETE], Some(id), None),
            _ => Err(RouteError::MethodNotAllowed),
        },
        ["move-to-team"] => route(Op::MoveToTeam, &[M::POST], None, None),
        ["delete-backup", id, bid] => route(Op::DeleteBackup, &[M::DELETE], Some(id), Some(bid)),
        [id, "change-plan"] => route(Op::ChangePlan, &[M::POST], Some(id), None),
        [action, id] => {
            let (op, methods): (Op, &[Method]) = match *action {
                "rename" => (Op::Rename, &[M::POST]),
                "reset-password" => (Op::ResetPassword, &[M::POST]),
                "enable-tls" => (Op::EnableTls, &[M::POST]),
                "enable-eviction" => (Op::EnableEviction, &[M::POST]),
                "disable-eviction" => (Op::DisableEviction, &[M::POST]),
                "enable-autoupgrade" => (Op::EnableAutoupgrade, &[M::POST]),
                "disable-autoupgrade" => (Op::DisableAutoupgrade, &[M::POST]),
                "change-plan" => (Op::ChangePlan, &[M::POST]),
                "update-budget" => (Op::UpdateBudget, &[M::PATCH]),
                "update-regions" => (Op::UpdateRegions, &[M::POST]),
                "stats" => (Op::Stats, &[M::GET]),
                "list-backup" => (Op::ListBackup, &[M::GET]),
                "create-backup" => (Op::CreateBackup, &[M::POST]),
                "restore-backup" => (Op::RestoreBackup, &[M::POST]),
                "enable-dailybackup" => (Op::EnableDailyBackup, &[M::PATCH, M::POST]),
                "disable-dailybackup" => (Op::DisableDailyBackup, &[M::PATCH, M::POST]),
                "enable-prodpack" => (Op::EnableProdpack, &[M::POST]),
                "disable-prodpack" => (Op::DisableProdpack, &[M::POST]),
                "update-allowlist" => (Op::UpdateAllowlist, &[M::POST]),
                _ => return Err(RouteError::NotFound),
            };
            route(op, methods, Some(id), None)
        }
        _ => Err(RouteError::NotFound),
    }
}

/// The team routes (reference §2.1 "Teams"; `DELETE /v2/teams/member` carries a JSON body).
fn resolve_teams(m: &Method, segs: &[&str]) -> Result<Route, RouteError> {
    if segs.iter().any(|s| s.is_empty()) {
        return Err(RouteError::NotFound);
    }
    let route = |op: Op, id: Option<&str>| {
        Ok(Route {
            op,
            id: id.map(str::to_string),
            backup_id: None,
        })
    };
    match (segs, m) {
        (["teams"], &Method::GET) => route(Op::ListTeams, None),
        (["team"], &Method::POST) => route(Op::CreateTeam, None),
        (["team", id], &Method::DELETE) => route(Op::DeleteTeam, Some(id)),
        (["teams", "member"], &Method::POST) => route(Op::AddTeamMember, None),
        (["teams", "member"], &Method::DELETE) => route(Op::RemoveTeamMember, None),
        (["teams", id], &Method::GET) if *id != "member" => route(Op::ListTeamMembers, Some(id)),
        (["teams"] | ["team"] | ["team", _] | ["teams", _], _) => Err(RouteError::MethodNotAllowed),
        _ => Err(RouteError::NotFound),
    }
}

/// An API error: status + JSON-string body (trip-up 1).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: msg.into(),
        }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: msg.into(),
        }
    }
    pub fn db_not_found() -> Self {
        Self::not_found("database not found")
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: msg.into(),
        }
    }
}

/// The answer to a mutating call with a read-only API key, given before any lookup. Upstash's
/// answer contains "Readonly API key" (what its MCP server looks for); the status is ours.
pub const READ_ONLY_KEY: &str = "Readonly API key: this key can only read";

/// A successful answer: a JSON value, or JSON already serialized (large lists are serialized
/// straight from their wire structs, outside the state lock).
pub enum Success {
    Json(Value),
    Raw(Vec<u8>),
}

impl From<Value> for Success {
    fn from(v: Value) -> Self {
        Success::Json(v)
    }
}

pub type ApiResult = Result<Success, ApiError>;

/// What an operation gets.
pub struct Ctx<'a> {
    pub shared: &'a Arc<Shared>,
    /// The owner of the databases the key sees: the caller's email or the key's team id.
    pub account: &'a str,
    pub principal: &'a Principal,
    pub route: &'a Route,
    pub body: &'a Bytes,
    pub query: &'a HashMap<String, String>,
}

impl Ctx<'_> {
    pub fn id(&self) -> &str {
        self.route.id.as_deref().unwrap_or_default()
    }

    /// The body as a JSON object; an empty body is `{}`. Parsed regardless of Content-Type.
    pub fn body_obj(&self) -> Result<Map<String, Value>, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice::<Value>(self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ApiError::bad_request(
                "invalid request body: expected a JSON object",
            )),
            Err(e) => Err(ApiError::bad_request(format!("invalid request body: {e}"))),
        }
    }
}

/// Typed field access with 400s for wrong types.
pub(crate) mod fields {
    use super::ApiError;
    use serde_json::{Map, Value};

    fn wrong(k: &str, what: &str) -> ApiError {
        ApiError::bad_request(format!("invalid request body: {k} must be {what}"))
    }

    pub fn opt_str(m: &Map<String, Value>, k: &str) -> Result<Option<String>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(wrong(k, "a string")),
        }
    }

    pub fn opt_bool(m: &Map<String, Value>, k: &str) -> Result<Option<bool>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong(k, "a boolean")),
        }
    }

    pub fn opt_i64(m: &Map<String, Value>, k: &str) -> Result<Option<i64>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| wrong(k, "an integer")),
        }
    }

    /// A list that may be `null` (Terraform sends `null` for an emptied list): `Some(vec![])`
    /// for `null`, `None` when absent.
    pub fn nullable_str_list(
        m: &Map<String, Value>,
        k: &str,
    ) -> Result<Option<Vec<String>>, ApiError> {
        match m.get(k) {
            Some(Value::Null) => Ok(Some(vec![])),
            _ => opt_str_list(m, k),
        }
    }

    pub fn opt_str_list(m: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>, ApiError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| wrong(k, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(wrong(k, "a list of strings")),
        }
    }
}

/// Checks HTTP Basic credentials; returns the caller.
pub fn authenticate(shared: &Shared, headers: &http::HeaderMap) -> Option<Principal> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (email, key) = decoded.split_once(':')?;
    shared.lock().accounts.authenticate(email, key)
}

/// Default body of an injected error on the Developer API: a JSON string.
fn injected_error_body(status: StatusCode) -> Value {
    Value::String(
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    )
}

fn error_outcome(status: StatusCode, msg: &str) -> Outcome {
    Outcome::json(status, &Value::String(msg.to_string()))
}

/// Body of a 401 (the only evidence, a third-party log, shows `{"error":"Unauthorized"}`).
fn unauthorized() -> Outcome {
    Outcome::json(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"}))
}

pub(crate) async fn perform(ctx: &Ctx<'_>) -> ApiResult {
    use Op::*;
    match ctx.route.op {
        List => databases::list(ctx),
        Get => databases::get(ctx),
        Create => databases::create(ctx),
        Delete => databases::delete(ctx).await,
        Rename => databases::rename(ctx),
        ResetPassword => databases::reset_password(ctx),
        EnableTls => databases::enable_tls(ctx),
        EnableEviction => databases::set_eviction(ctx, true),
        DisableEviction => databases::set_eviction(ctx, false),
        EnableAutoupgrade => databases::set_autoupgrade(ctx, true),
        DisableAutoupgrade => databases::set_autoupgrade(ctx, false),
        ChangePlan => databases::change_plan(ctx),
        UpdateBudget => databases::update_budget(ctx),
        UpdateRegions => databases::update_regions(ctx),
        MoveToTeam => databases::move_to_team(ctx),
        Stats => stats::stats(ctx).await,
        ListBackup => backups::list(ctx),
        CreateBackup => backups::create(ctx).await,
        DeleteBackup => backups::delete(ctx),
        RestoreBackup => backups::restore(ctx).await,
        EnableDailyBackup => backups::set_daily(ctx, true),
        DisableDailyBackup => backups::set_daily(ctx, false),
        EnableProdpack => databases::set_prodpack(ctx, true),
        DisableProdpack => databases::set_prodpack(ctx, false),
        UpdateAllowlist => databases::update_allowlist(ctx),
        ListTeams => teams::list(ctx),
        CreateTeam => teams::create(ctx),
        DeleteTeam => teams::delete(ctx),
        ListTeamMembers => teams::members(ctx),
        AddTeamMember => teams::add_member(ctx),
        RemoveTeamMember => teams::remove_member(ctx),
        AuditLogs => auditlogs::list(ctx),
    }
}

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Fallback handler of the API listener: everything that is not `/_emulator/...`.
pub async fn dispatch(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnInfo>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path = uri.path().to_string();
    let query: HashMap<String, String> =
        axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let principal = authenticate(&shared, req.headers());
    let account = principal.as_ref().map(|p| p.email.clone());
    let route = resolve(&method, &path);
    let endpoint = match &route {
        Ok(r) => r.op.name().to_string(),
        Err(_) => "unknown".to_string(),
    };
    let database_id = route.as_ref().ok().and_then(|r| r.id.clone());
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await;
    let ex = Exchange {
        shared: &shared,
        conn: &conn,
        plane: "api",
        account: account.clone(),
        method: method.to_string(),
        path: redact_path(&path, uri.query()),
        endpoint,
        database_id,
        base_latency_ms: shared.latency(),
        error_body: injected_error_body,
    };
    let shared2 = shared.clone();
    ex.run(async move {
        let Some(principal) = principal else {
            return unauthorized();
        };
        let route = match route {
            Ok(r) => r,
            Err(RouteError::NotFound) => return error_outcome(StatusCode::NOT_FOUND, "not found"),
            Err(RouteError::MethodNotAllowed) => {
                return error_outcome(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
        };
        if principal.read_only && route.op.mutates() {
            return error_outcome(StatusCode::FORBIDDEN, READ_ONLY_KEY);
        }
        let Ok(body) = body else {
            return error_outcome(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        };
        let ctx = Ctx {
            shared: &shared2,
            account: &principal.owner,
            principal: &principal,
            route: &route,
            body: &body,
            query: &query,
        };
        let before = auditlogs::entity_of(&shared2, &route);
        let result = perform(&ctx).await;
        let source = crate::audit::api_key_source(&principal.key_name);
        auditlogs::record(&shared2, &principal, &source, &route, before, &result);
        match result {
            Ok(Success::Json(v)) => Outcome::json(StatusCode::OK, &v),
            Ok(Success::Raw(b)) => Outcome {
                status: StatusCode::OK,
                body: Bytes::from(b),
                headers: vec![],
            },
            Err(e) => error_outcome(e.status, &e.message),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = |m: Method, p: &str| resolve(&m, p);
        assert_eq!(r(Method::GET, "/v2/redis/databases").unwrap().op, Op::List);
        assert_eq!(
            r(Method::POST, "/v2/redis/database").unwrap().op,
            Op::Create
        );
        let g = r(Method::GET, "/v2/redis/database/abc").unwrap();
        assert_eq!((g.op, g.id.as_deref()), (Op::Get, Some("abc")));
        assert_eq!(
            r(Method::DELETE, "/v2/redis/database/abc").unwrap().op,
            Op::Delete
        );
        assert_eq!(
            r(Method::POST, "/v2/redis/abc/change-plan").unwrap().op,
            Op::ChangePlan
        );
        assert_eq!(
            r(Method::POST, "/v2/redis/change-plan/abc").unwrap().op,
            Op::ChangePlan
        );
        assert_eq!(
            r(Method::PATCH, "/v2/redis/update-budget/abc").unwrap().op,
            Op::UpdateBudget
        );
        assert_eq!(
            r(Method::POST, "/v2/redis/update-budget/abc"),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            r(Method::POST, "/v2/redis/enable-dailybackup/a")
                .unwrap()
                .op,
            Op::EnableDailyBackup
        );
        assert_eq!(
            r(Method::PATCH, "/v2/redis/enable-dailybackup/a")
                .unwrap()
                .op,
            Op::EnableDailyBackup
        );
        let d = r(Method::DELETE, "/v2/redis/delete-backup/a/b").unwrap();
        assert_eq!(d.backup_id.as_deref(), Some("b"));
        assert_eq!(
            r(Method::GET, "/v2/redis/nope/a"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            r(Method::GET, "/v2/redis/database//"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            r(Method::GET, "/v1/redis/databases"),
            Err(RouteError::NotFound)
        );
        assert_eq!(r(Method::GET, "/v2/teams").unwrap().op, Op::ListTeams);
        assert_eq!(r(Method::POST, "/v2/team").unwrap().op, Op::CreateTeam);
        let t = r(Method::DELETE, "/v2/team/t1").unwrap();
        assert_eq!((t.op, t.id.as_deref()), (Op::DeleteTeam, Some("t1")));
        assert_eq!(
            r(Method::GET, "/v2/teams/t1").unwrap().op,
            Op::ListTeamMembers
        );
        assert_eq!(
            r(Method::POST, "/v2/teams/member").unwrap().op,
            Op::AddTeamMember
        );
        assert_eq!(
            r(Method::DELETE, "/v2/teams/member").unwrap().op,
            Op::RemoveTeamMember
        );
        assert_eq!(
            r(Method::PUT, "/v2/teams"),
            Err(RouteError::MethodNotAllowed)
        );
        assert!(Op::Delete.mutates() && Op::MoveToTeam.mutates() && Op::CreateTeam.mutates());
        assert!(!Op::List.mutates() && !Op::Stats.mutates() && !Op::ListTeams.mutates());
    }
}
