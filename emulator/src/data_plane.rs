//! The REST data API (reference §7): one TLS listener for every database, routed by token.
//!
//! Request forms: a JSON-array command on `POST /`, path style (`/set/foo/bar`, with a POST/PUT
//! body appended as the last argument and query parameters appended as `KEY VALUE`), `/pipeline`
//! and `/multi-exec`. Auth: `Authorization: Bearer <token>` or `?_token=`. Responses are
//! `{"result": ...}` / `{"error": "..."}`; `Upstash-Encoding: base64` and
//! `Upstash-Response-Format: resp2` are honoured; `upstash-sync-token` is returned.
//!
//! [`execute`] is the transport-neutral core (checks, commands, stats); the RESP listener
//! (`crate::resp`) runs its commands through it too.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::Shared;
use crate::api::databases::parse_cidr;
use crate::calllog::redact_path;
use crate::server::{ConnInfo, Exchange, Outcome};
use crate::state::now_ms;
use crate::stats::CommandSample;
use crate::store::{self, InfoContext, Kind, Reply};

/// What the request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Single(Vec<Vec<u8>>),
    Pipeline(Vec<Vec<Vec<u8>>>),
    Multi(Vec<Vec<Vec<u8>>>),
}

impl Parsed {
    /// Operation name for faults and the call log.
    pub fn endpoint(&self) -> String {
        match self {
            Parsed::Single(args) => match args.first() {
                Some(c) => format!("data:{}", String::from_utf8_lossy(c).to_ascii_lowercase()),
                None => "data:unknown".into(),
            },
            Parsed::Pipeline(_) => "data:pipeline".into(),
            Parsed::Multi(_) => "data:multi-exec".into(),
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn json_arg(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Number(n) => Some(n.to_string().into_bytes()),
        Value::Bool(b) => Some(b.to_string().into_bytes()),
        _ => None,
    }
}

fn json_command(v: &Value) -> Option<Vec<Vec<u8>>> {
    let items = v.as_array()?;
    if items.is_empty() {
        return None;
    }
    items.iter().map(json_arg).collect()
}

const PARSE_ERROR: &str = "ERR failed to parse command";

/// Parses a data-plane request.
pub fn parse_request(path: &str, query: Option<&str>, body: &[u8]) -> Result<Parsed, String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let body_json = || serde_json::from_slice::<Value>(body).map_err(|_| PARSE_ERROR.to_string());
    match segs.as_slice() {
        [] => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err("ERR empty command".into());
            }
            json_command(&body_json()?)
                .map(Parsed::Single)
                .ok_or_else(|| PARSE_ERROR.to_string())
        }
        ["pipeline"] | ["multi-exec"] => {
            let v = body_json()?;
            let cmds = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| PARSE_ERROR.to_string())?
                .iter()
                .map(json_command)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| PARSE_ERROR.to_string())?;
            Ok(if segs[0] == "pipeline" {
                Parsed::Pipeline(cmds)
            } else {
                Parsed::Multi(cmds)
            })
        }
        _ => {
            let mut args: Vec<Vec<u8>> = segs.iter().map(|s| percent_decode(s)).collect();
            if !body.is_empty() {
                args.push(body.to_vec());
            }
            for kv in query
                .unwrap_or_default()
                .split('&')
                .filter(|s| !s.is_empty())
            {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                if k == "_token" {
                    continue;
                }
                args.push(percent_decode(k));
                if !v.is_empty() {
                    args.push(percent_decode(v));
                }
            }
            Ok(Parsed::Single(args))
        }
    }
}

fn token_of(headers: &http::HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some((scheme, t)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(t.trim().to_string());
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("_token="))
        .map(|t| String::from_utf8_lossy(&percent_decode(t)).into_owned())
}

fn error(status: StatusCode, msg: &str) -> Outcome {
    Outcome::json(status, &json!({ "error": msg }))
}

fn injected_error_body(status: StatusCode) -> Value {
    json!({"error": format!("ERR {}", status.canonical_reason().unwrap_or("error").to_ascii_lowercase())})
}

/// Output encoding requested by headers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Json,
    Base64,
    Resp2,
}

fn allowed(ranges: &[String], ip: IpAddr) -> bool {
    if ranges.is_empty() {
        return true;
    }
    let ip = ip.to_canonical();
    ranges
        .iter()
        .filter_map(|r| parse_cidr(r))
        .any(|n| n.contains(&ip))
}

fn command_name(args: &[Vec<u8>]) -> String {
    args.first()
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Checks that a command is known and allowed for the token; returns the error reply otherwise.
pub(crate) fn precheck(args: &[Vec<u8>], read_only: bool) -> Result<Kind, Reply> {
    let name = command_name(args);
    let Some(kind) = store::command_kind(&name) else {
        return Err(Reply::err(format!(
            "ERR Command is not available: '{}'",
            String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or_default())
        )));
    };
    if read_only && store::forbidden_for_read_only(&name) {
        return Err(Reply::err(format!(
            "NOPERM this user has no permissions to run the '{}' command",
            name.to_ascii_lowercase()
        )));
    }
    Ok(kind)
}

/// Who runs a batch of commands, whatever the transport. (No `Debug`: it holds a password.)
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The database the credentials named.
    pub database_id: &'a str,
    /// The read-only REST token was used.
    pub read_only: bool,
    /// The password a RESP connection authenticated with; checked against the database's current
    /// password on every batch, so a reset password ends older sessions. `None` for REST (the
    /// token lookup already proved the credentials current).
    pub password: Option<&'a str>,
    /// The client's address (checked against the allow-list).
    pub peer: IpAddr,
}

/// The replies of a batch that ran.
#[derive(Debug)]
pub struct Executed {
    /// One reply per command, in order (errors included).
    pub replies: Vec<Reply>,
    /// The read-your-writes sequence after the batch (`upstash-sync-token`).
    pub sync: u64,
}

/// Why a batch was not run at all.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// The database does not exist (any more).
    UnknownDatabase,
    /// The connection's password is no longer the database's password.
    WrongPassword,
    /// The client's address is outside the database's allow-list.
    IpNotAllowed(IpAddr),
    /// The database is not `active` (the state is given).
    NotActive(String),
    /// The request is larger than the plan allows.
    TooLarge,
    /// A transaction was discarded because a command failed its precheck (the error is given).
    Discarded(String),
}

impl Refused {
    /// The HTTP status the REST API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::UnknownDatabase | Refused::WrongPassword => StatusCode::UNAUTHORIZED,
            Refused::IpNotAllowed(_) => StatusCode::FORBIDDEN,
            Refused::NotActive(_) | Refused::TooLarge | Refused::Discarded(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// The error text (the REST API's `error` field, a RESP error line).
    pub fn message(&self) -> String {
        match self {
            Refused::UnknownDatabase => "Unauthorized".into(),
            Refused::WrongPassword => WRONGPASS.into(),
            Refused::IpNotAllowed(ip) => format!(
                "ERR client IP {} is not in the allowed IP ranges of this database",
                ip.to_canonical()
            ),
            Refused::NotActive(state) => format!("ERR database is {state}"),
            Refused::TooLarge => "ERR max request size exceeded".into(),
            Refused::Discarded(e) => e.clone(),
        }
    }
}

/// Redis's answer to credentials that name no user (AUTH, and a password reset under a session).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Runs the commands against the database under the state lock: the transport-neutral core of the
/// data plane, shared by the REST API and the RESP listener (checks, stats, limits, sync token).
pub fn execute(
    shared: &Shared,
    caller: &Caller<'_>,
    request_size: usize,
    parsed: &Parsed,
) -> Result<Executed, Refused> {
    let read_only = caller.read_only;
    let mut st = shared.lock();
    let Some(db) = st.databases.get_mut(caller.database_id) else {
        return Err(Refused::UnknownDatabase);
    };
    if caller.password.is_some_and(|p| p != db.meta.password) {
        return Err(Refused::WrongPassword);
    }
    if !allowed(&db.meta.allowed_ip_ranges, caller.peer) {
        return Err(Refused::IpNotAllowed(caller.peer));
    }
    if db.meta.state != "active" {
        return Err(Refused::NotActive(db.meta.state.clone()));
    }
    let plan = db.meta.plan();
    if request_size as u64 > plan.max_request_size {
        return Err(Refused::TooLarge);
    }
    let limits = db.meta.limits();
    let cmds: Vec<&Vec<Vec<u8>>> = match parsed {
        Parsed::Single(c) => vec![c],
        Parsed::Pipeline(c) | Parsed::Multi(c) => c.iter().collect(),
    };
    if let Parsed::Multi(_) = parsed {
        for c in &cmds {
            if let Err(Reply::Error(e)) = precheck(c, read_only) {
                return Err(Refused::Discarded(e));
            }
        }
    }
    let now = now_ms();
    let mut replies = Vec::with_capacity(cmds.len());
    let mut wrote = false;
    for c in cmds {
        let kind = match precheck(c, read_only) {
            Ok(k) => k,
            Err(e) => {
                replies.push(e);
                continue;
            }
        };
        let info = InfoContext {
            total_commands_processed: db.traffic.total_commands + 1,
            uptime_seconds: shared.settings.started.elapsed().as_secs(),
            max_data_bytes: plan.max_data_size,
        };
        let (h0, m0) = (
            db.keyspace.counters.keyspace_hits,
            db.keyspace.counters.keyspace_misses,
        );
        let t0 = Instant::now();
        let reply = db.keyspace.execute(c, &limits, &info, now);
        let latency_ms = t0.elapsed().as_secs_f64() * 1000.0;
        let name = command_name(c);
        let bytes = c.iter().map(|a| a.len() as u64).sum::<u64>();
        db.traffic.record(
            now,
            &CommandSample {
                name: &name,
                write: kind == Kind::Write,
                hits: db.keyspace.counters.keyspace_hits - h0,
                misses: db.keyspace.counters.keyspace_misses - m0,
                latency_ms,
                bytes,
            },
        );
        if kind == Kind::Write && !reply.is_error() {
            wrote = true;
        }
        replies.push(reply);
    }
    db.traffic
        .record_gauges(now, db.keyspace.len() as u64, db.keyspace.stored_bytes());
    if wrote {
        db.sync_seq += 1;
    }
    let sync = db.sync_seq;
    drop(st);
    // Traffic counters are state too; saving after reads keeps stats across restarts.
    shared.mark_dirty();
    Ok(Executed { replies, sync })
}

fn render(parsed: &Parsed, ex: Executed, enc: Encoding) -> Outcome {
    let b64 = enc == Encoding::Base64;
    let mut out = match (parsed, enc) {
        (Parsed::Single(_), Encoding::Resp2) => {
            let mut buf = vec![];
            ex.replies[0].to_resp2(&mut buf);
            Outcome {
                status: StatusCode::OK,
                body: Bytes::from(buf),
                headers: vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
            }
        }
        (Parsed::Pipeline(_), Encoding::Resp2) => {
            let mut buf = vec![];
            for r in &ex.replies {
                r.to_resp2(&mut buf);
            }
            Outcome {
                status: StatusCode::OK,
                body: Bytes::from(buf),
                headers: vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                )],
            }
        }
        (Parsed::Single(_), _) => match &ex.replies[0] {
            Reply::Error(e) => error(StatusCode::BAD_REQUEST, e),
            r => Outcome::json(StatusCode::OK, &json!({ "result": r.to_json(b64) })),
        },
        _ => {
            let items: Vec<Value> = ex
                .replies
                .iter()
                .map(|r| match r {
                    Reply::Error(e) => json!({ "error": e }),
                    r => json!({ "result": r.to_json(b64) }),
                })
                .collect();
            Outcome::json(StatusCode::OK, &Value::Array(items))
        }
    };
    if let Ok(v) = HeaderValue::from_str(&ex.sync.to_string()) {
        out.headers
            .push((header::HeaderName::from_static("upstash-sync-token"), v));
    }
    out
}

/// Largest body read from the socket (plan limits are checked afterwards).
const MAX_BODY: usize = 128 * 1024 * 1024;

/// Fallback handler of the data listener.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    Extension(conn): Extension<ConnInfo>,
    req: Request,
) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let token = token_of(&headers, uri.query());
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await;
    let parsed = match &body {
        Ok(b) => parse_request(uri.path(), uri.query(), b),
        Err(_) => Err("ERR max request size exceeded".into()),
    };
    let endpoint = match &parsed {
        Ok(p) => p.endpoint(),
        Err(_) => "data:unknown".into(),
    };
    let found = token.as_deref().and_then(|t| shared.lock().find_token(t));
    let ex = Exchange {
        shared: &shared,
        conn: &conn,
        plane: "data",
        account: None,
        method: method.to_string(),
        path: redact_path(uri.path(), uri.query()),
        endpoint,
        database_id: found.as_ref().map(|f| f.database_id.clone()),
        base_latency_ms: 0,
        error_body: injected_error_body,
    };
    let shared2 = shared.clone();
    let peer = conn.peer.ip();
    ex.run(async move {
        if !matches!(method, Method::GET | Method::POST | Method::PUT | Method::HEAD) {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed: only HEAD, GET, POST and PUT are allowed",
            );
        }
        let Some(found) = found else {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized");
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let is_b64 = headers
            .get("upstash-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("base64"));
        let is_resp2 = headers
            .get("upstash-response-format")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("resp2"));
        let enc = match (is_b64, is_resp2) {
            (true, true) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ERR Upstash-Encoding: base64 cannot be combined with Upstash-Response-Format: resp2",
                );
            }
            (_, true) if matches!(parsed, Parsed::Multi(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "ERR Upstash-Response-Format: resp2 is not supported for /multi-exec",
                );
            }
            (true, false) => Encoding::Base64,
            (false, true) => Encoding::Resp2,
            (false, false) => Encoding::Json,
        };
        let size = body.as_ref().map(|b| b.len()).unwrap_or(0) + uri.path().len();
        let caller = Caller {
            database_id: &found.database_id,
            read_only: found.read_only,
            password: None,
            peer,
        };
        match execute(&shared2, &caller, size, &parsed) {
            Ok(ex) => render(&parsed, ex, enc),
            Err(refused) => error(refused.status(), &refused.message()),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_forms() {
        assert_eq!(
            parse_request("/", None, br#"["SET","k","v","EX",100]"#).unwrap(),
            Parsed::Single(args(&["SET", "k", "v", "EX", "100"]))
        );
        assert_eq!(
            parse_request("/set/foo/bar/EX/100", None, b"").unwrap(),
            Parsed::Single(args(&["set", "foo", "bar", "EX", "100"]))
        );
        assert_eq!(
            parse_request("/set/foo", Some("EX=100&_token=secret"), b"hello world").unwrap(),
            Parsed::Single(args(&["set", "foo", "hello world", "EX", "100"]))
        );
        assert_eq!(
            parse_request("/get/a%20b", None, b"").unwrap(),
            Parsed::Single(args(&["get", "a b"]))
        );
        assert_eq!(
            parse_request("/pipeline", None, br#"[["SET","a",1],["GET","a"]]"#).unwrap(),
            Parsed::Pipeline(vec![args(&["SET", "a", "1"]), args(&["GET", "a"])])
        );
        assert!(matches!(
            parse_request("/multi-exec", None, br#"[["INCR","a"]]"#).unwrap(),
            Parsed::Multi(_)
        ));
        assert!(parse_request("/", None, b"not json").is_err());
        assert!(parse_request("/", None, b"[]").is_err());
        assert!(parse_request("/", None, b"").is_err());
        assert!(parse_request("/pipeline", None, br#"[["GET",{"x":1}]]"#).is_err());
    }

    #[test]
    fn allow_list() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(allowed(&[], lo));
        assert!(allowed(&["127.0.0.0/8".into()], lo));
        assert!(!allowed(&["10.0.0.0/8".into()], lo));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(allowed(&["127.0.0.1/32".into()], mapped));
    }

    #[test]
    fn prechecks() {
        assert!(precheck(&args(&["SET", "a", "b"]), true).is_err());
        assert!(precheck(&args(&["KEYS", "*"]), true).is_err());
        assert!(precheck(&args(&["GET", "a"]), true).is_ok());
        assert!(precheck(&args(&["SET", "a", "b"]), false).is_ok());
        assert!(precheck(&args(&["HSET", "a", "b"]), false).is_err());
    }
}
