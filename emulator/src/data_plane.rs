//! The REST data API (reference §7): one TLS listener for every database, routed by token.
//!
//! Request forms: a JSON-array command on `POST /`, path style (`/set/foo/bar`, with a POST/PUT
//! body appended as the last argument and query parameters appended as `KEY VALUE`), `/pipeline`
//! and `/multi-exec`. Auth: `Authorization: Bearer <token>` or `?_token=`. Responses are
//! `{"result": ...}` / `{"error": "..."}`; `Upstash-Encoding: base64` and
//! `Upstash-Response-Format: resp2` are honoured; `upstash-sync-token` is returned.
//!
//! Commands run on the database's engine (`crate::engine`), a real Redis server. [`admit`] holds
//! Upstash's checks (credentials, allow-list, state, request size, budget), [`precheck`] the
//! per-command ones, and [`record`] writes the traffic history; the RESP listener
//! (`crate::resp`) uses them too.

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
use crate::acl;
use crate::api::databases::parse_cidr;
use crate::calllog::redact_path;
use crate::engine::{EngineSettings, Role, Sample, Who};
use crate::reply::Reply;
use crate::scripts::ReplyFix;
use crate::server::{ConnInfo, Exchange, Outcome};
use crate::state::now_ms;
use crate::stats::{CommandSample, StatsInput, monthly_billing};

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

/// The command's name in upper case.
pub fn command_name(args: &[Vec<u8>]) -> String {
    args.first()
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .unwrap_or_default()
}

/// Commands Upstash does not offer (server administration, replication, other databases):
/// refused on both transports.
const NOT_AVAILABLE: &[&str] = &[
    "BGREWRITEAOF",
    "BGSAVE",
    "CLUSTER",
    "CONFIG",
    "DEBUG",
    "FAILOVER",
    "LASTSAVE",
    "LATENCY",
    "MIGRATE",
    "MODULE",
    "MONITOR",
    "MOVE",
    "PFDEBUG",
    "PFSELFTEST",
    "PSUBSCRIBE",
    "PSYNC",
    "PUNSUBSCRIBE",
    "REPLCONF",
    "REPLICAOF",
    "SAVE",
    "SHUTDOWN",
    "SLAVEOF",
    "SLOWLOG",
    "SSUBSCRIBE",
    "SUBSCRIBE",
    "SUNSUBSCRIBE",
    "SWAPDB",
    "SYNC",
    "UNSUBSCRIBE",
];

/// Commands that only make sense on a connection of one's own: refused by the REST API (a
/// transaction is `/multi-exec`).
const CONNECTION_ONLY: &[&str] = &[
    "ASKING",
    "AUTH",
    "CLIENT",
    "DISCARD",
    "EXEC",
    "HELLO",
    "MULTI",
    "QUIT",
    "READONLY",
    "READWRITE",
    "RESET",
    "UNWATCH",
    "WATCH",
];

/// Upstash's answer to a command it does not offer.
pub fn not_available(args: &[Vec<u8>]) -> Reply {
    Reply::err(format!(
        "ERR Command is not available: '{}'",
        String::from_utf8_lossy(args.first().map(Vec::as_slice).unwrap_or_default())
    ))
}

/// Which transport a command came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Rest,
    Resp,
}

/// The emulator's own checks of one command before the engine sees it: commands Upstash does not
/// offer, and arguments larger than the plan's max entry size.
pub fn precheck(args: &[Vec<u8>], transport: Transport, max_entry: u64) -> Result<(), Reply> {
    if args.is_empty() {
        return Err(Reply::err("ERR empty command"));
    }
    let name = command_name(args);
    let refused = NOT_AVAILABLE.contains(&name.as_str())
        || (transport == Transport::Rest && CONNECTION_ONLY.contains(&name.as_str()))
        || (name == "CLIENT"
            && args
                .get(1)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"reply")));
    if refused {
        return Err(not_available(args));
    }
    if args.iter().any(|a| a.len() as u64 > max_entry) {
        return Err(Reply::err("ERR max entry size exceeded"));
    }
    Ok(())
}

/// Who runs a batch of commands, whatever the transport. (No `Debug`: it holds a password.)
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The database the credentials named.
    pub database_id: &'a str,
    /// The read-only REST token or the `default_ro` user was used.
    pub read_only: bool,
    /// The password a RESP connection authenticated with; checked against the database's current
    /// password on every batch, so a reset password ends older sessions. `None` for REST (the
    /// token lookup already proved the credentials current).
    pub password: Option<&'a str>,
    /// The client's address (checked against the allow-list).
    pub peer: IpAddr,
    /// An ACL user a client defined, instead of `default`/`default_ro` (`password` is its
    /// password, for both transports).
    pub user: Option<&'a str>,
}

impl Caller<'_> {
    /// Who the engine connection logs in as.
    pub fn who(&self) -> Who<'_> {
        match (self.user, self.password) {
            (Some(name), Some(password)) => Who::User { name, password },
            _ if self.read_only => Who::Role(Role::ReadOnly),
            _ => Who::Role(Role::Full),
        }
    }
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
    /// This month's cost reached the database's budget.
    BudgetReached,
    /// A transaction was discarded because a command failed its check (the error is given).
    Discarded(String),
    /// The database's engine could not be reached.
    Engine(String),
}

impl Refused {
    /// The HTTP status the REST API answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::UnknownDatabase | Refused::WrongPassword => StatusCode::UNAUTHORIZED,
            Refused::IpNotAllowed(_) => StatusCode::FORBIDDEN,
            Refused::NotActive(_)
            | Refused::TooLarge
            | Refused::BudgetReached
            | Refused::Discarded(_) => StatusCode::BAD_REQUEST,
            Refused::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            Refused::BudgetReached => {
                "ERR monthly budget reached: the database is rate limited".into()
            }
            Refused::Discarded(e) => e.clone(),
            Refused::Engine(e) => format!("ERR database unavailable: {e}"),
        }
    }
}

/// Redis's answer to credentials that name no user (AUTH, and a password reset under a session).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// What an admitted batch may use.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub settings: EngineSettings,
    pub max_entry: u64,
    /// The ACL users clients defined (replayed if the engine starts).
    pub users: Vec<String>,
}

/// Upstash's checks of a batch, under the state lock: the database exists, the password is
/// current, the client's address is allowed, the database is active, the request fits the plan
/// and the budget is not spent.
pub fn admit(
    shared: &Shared,
    caller: &Caller<'_>,
    request_size: usize,
) -> Result<Admitted, Refused> {
    let st = shared.lock();
    let Some(db) = st
        .databases
        .get(caller.database_id)
        .filter(|d| !d.meta.archived)
    else {
        return Err(Refused::UnknownDatabase);
    };
    let m = &db.meta;
    let current = if caller.read_only {
        &m.read_only_password
    } else {
        &m.password
    };
    match caller.user {
        // The engine checks the password again when the connection logs in.
        Some(user) => {
            if !caller.password.is_some_and(|p| db.acl.accepts(user, p)) {
                return Err(Refused::WrongPassword);
            }
        }
        None => {
            if caller.password.is_some_and(|p| p != current)
                || (!caller.read_only && !db.acl.default_on())
            {
                return Err(Refused::WrongPassword);
            }
        }
    }
    if !allowed(&m.allowed_ip_ranges, caller.peer) {
        return Err(Refused::IpNotAllowed(caller.peer));
    }
    if m.state != "active" {
        return Err(Refused::NotActive(m.state.clone()));
    }
    let plan = m.plan();
    if request_size as u64 > plan.max_request_size {
        return Err(Refused::TooLarge);
    }
    if budget_reached(db, now_ms()) {
        return Err(Refused::BudgetReached);
    }
    Ok(Admitted {
        settings: m.engine_settings(),
        max_entry: plan.max_entry_size,
        users: db.acl.lines.clone(),
    })
}

/// Whether this month's cost (in cents) reached a pay-as-you-go database's budget (in cents).
pub fn budget_reached(db: &crate::state::Database, now: i64) -> bool {
    let m = &db.meta;
    if m.budget <= 0 || !matches!(m.plan().name, "payg" | "pro") {
        return false;
    }
    let cost_usd = monthly_billing(&StatsInput {
        traffic: &db.traffic,
        plan: m.plan(),
        prod_pack: m.prod_pack_enabled,
        current_keys: db.traffic.current().0,
        current_bytes: db.traffic.current().1,
        now_ms: now,
        period_minutes: 60,
        overrides: &db.stats_overrides,
    });
    cost_usd * 100.0 >= m.budget as f64
}

/// One command as it ran, for the traffic history.
pub struct Ran<'a> {
    pub args: &'a [Vec<u8>],
    pub latency_ms: f64,
    pub failed: bool,
}

/// Records commands that ran (counts, latency, bandwidth, the sync sequence), the engine's
/// counters when a sample is given, and samples of engines that stopped. Returns the sync
/// sequence.
pub fn record(shared: &Shared, database_id: &str, ran: &[Ran<'_>], sample: Option<Sample>) -> u64 {
    let table = shared.engines.commands();
    let pending = shared.engines.take_pending();
    if pending.is_empty() && ran.is_empty() && sample.is_none() && database_id.is_empty() {
        return 0;
    }
    let now = now_ms();
    let mut st = shared.lock();
    for (id, s) in &pending {
        if let Some(db) = st.databases.get_mut(id) {
            db.traffic.record_sample(now, s);
        }
    }
    let Some(db) = st.databases.get_mut(database_id) else {
        drop(st);
        if !pending.is_empty() {
            shared.mark_dirty();
        }
        return 0;
    };
    let mut wrote = false;
    for r in ran {
        let write = table.as_ref().is_some_and(|t| t.is_write(r.args));
        wrote |= write && !r.failed;
        db.traffic.record(
            now,
            &CommandSample {
                name: &command_name(r.args),
                write,
                latency_ms: r.latency_ms,
                bytes: r.args.iter().map(|a| a.len() as u64).sum(),
            },
        );
    }
    if let Some(s) = &sample {
        db.traffic.record_sample(now, s);
    }
    if wrote {
        db.sync_seq += 1;
    }
    let sync = db.sync_seq;
    drop(st);
    // Traffic counters are state too; saving after reads keeps stats across restarts.
    shared.mark_dirty();
    sync
}

/// A command rewritten for the engine (or `None`: as sent), and the change to its answer.
type Translated = (Option<Vec<Vec<u8>>>, Option<ReplyFix>);

pub fn engine_error(e: std::io::Error) -> Refused {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        // The engine refused the login: a deleted or disabled user, a changed password.
        return Refused::WrongPassword;
    }
    Refused::Engine(e.to_string())
}

/// Runs a REST request's commands on the database's engine: Upstash's checks, the emulator's
/// per-command checks, the engine, then the traffic history.
pub async fn execute(
    shared: &Shared,
    caller: &Caller<'_>,
    request_size: usize,
    parsed: &Parsed,
) -> Result<Executed, Refused> {
    let admitted = admit(shared, caller, request_size)?;
    let cmds: Vec<&Vec<Vec<u8>>> = match parsed {
        Parsed::Single(c) => vec![c],
        Parsed::Pipeline(c) | Parsed::Multi(c) => c.iter().collect(),
    };
    let mut acl_changes = false;
    let mut acl_hide = vec![];
    // `ACL RESTTOKEN`s, answered once the commands before them ran: (position, user, password).
    let mut tokens = vec![];
    let checks: Vec<Result<(), Reply>> = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            precheck(c, Transport::Rest, admitted.max_entry)?;
            match acl::check(shared, caller.database_id, c) {
                acl::Check::Local(r) => Err(r),
                acl::Check::RestToken { user, password } => {
                    tokens.push((i, user, password));
                    Err(Reply::Nil)
                }
                acl::Check::Changes => {
                    acl_changes = true;
                    Ok(())
                }
                acl::Check::Hide => {
                    acl_hide.push(c.as_slice());
                    Ok(())
                }
                acl::Check::Pass => Ok(()),
            }
        })
        .collect();
    if let Parsed::Multi(_) = parsed
        && let Some(Err(Reply::Error(e))) =
            checks.iter().find(|c| matches!(c, Err(Reply::Error(_))))
    {
        return Err(Refused::Discarded(e.clone()));
    }
    if let Parsed::Multi(_) = parsed
        && !tokens.is_empty()
    {
        return Err(Refused::Discarded(
            "ERR ACL RESTTOKEN cannot run inside a transaction".into(),
        ));
    }
    let forwarded: Vec<&[Vec<u8>]> = cmds
        .iter()
        .zip(&checks)
        .filter(|(_, ok)| ok.is_ok())
        .map(|(c, _)| c.as_slice())
        .collect();
    let answer_tokens = |replies: &mut Vec<Reply>| {
        for (i, user, password) in &tokens {
            if let Some(r) = replies.get_mut(*i) {
                *r = acl::rest_token(shared, caller.database_id, user, password);
            }
        }
    };
    if forwarded.is_empty() {
        // Nothing for the engine: do not start it for refused commands.
        let sync = record(shared, caller.database_id, &[], None);
        let mut replies = checks
            .into_iter()
            .map(|c| c.err().unwrap_or(Reply::Nil))
            .collect();
        answer_tokens(&mut replies);
        return Ok(Executed { replies, sync });
    }
    // Scripts written for Upstash, as Redis takes them.
    let translated: Vec<Translated> = forwarded
        .iter()
        .map(|c| match shared.engines.scripts().translate(c) {
            Some((args, fix)) => (Some(args), fix),
            None if acl_hide.contains(c) => (None, Some(ReplyFix::HideUsers)),
            None => (None, None),
        })
        .collect();
    let to_engine: Vec<&[Vec<u8>]> = forwarded
        .iter()
        .zip(&translated)
        .map(|(c, (t, _))| t.as_deref().unwrap_or(c))
        .collect();
    let fix = |i: usize, r: Reply| match &translated[i].1 {
        Some(f) => f.apply(r),
        None => r,
    };
    let mut lease = shared
        .engines
        .checkout(
            caller.database_id,
            admitted.settings,
            &admitted.users,
            caller.who(),
        )
        .await
        .map_err(engine_error)?;
    let mut ran = Vec::with_capacity(cmds.len());
    let mut replies = if let Parsed::Multi(_) = parsed {
        let multi = vec![b"MULTI".to_vec()];
        let exec = vec![b"EXEC".to_vec()];
        let mut batch: Vec<&[Vec<u8>]> = vec![&multi];
        batch.extend(&to_engine);
        batch.push(&exec);
        let t0 = Instant::now();
        let answers = lease.run(&batch).await.map_err(engine_error)?;
        let per = t0.elapsed().as_secs_f64() * 1000.0 / forwarded.len().max(1) as f64;
        if let Some((Reply::Error(e), _)) = answers[1..answers.len() - 1]
            .iter()
            .find(|(r, _)| r.is_error())
        {
            return Err(Refused::Discarded(e.clone()));
        }
        match answers.into_iter().last().map(|(r, _)| r) {
            Some(Reply::Array(items)) => {
                for (c, r) in forwarded.iter().zip(&items) {
                    ran.push(Ran {
                        args: c,
                        latency_ms: per,
                        failed: r.is_error(),
                    });
                }
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| fix(i, r))
                    .collect()
            }
            Some(Reply::Error(e)) => return Err(Refused::Discarded(e)),
            other => {
                return Err(Refused::Discarded(format!(
                    "ERR transaction failed: {other:?}"
                )));
            }
        }
    } else {
        lease.in_flight = true;
        let t0 = Instant::now();
        lease.conn().send(&to_engine).await.map_err(engine_error)?;
        let mut last = t0;
        let mut from_engine = Vec::with_capacity(forwarded.len());
        for (i, c) in forwarded.iter().enumerate() {
            let (r, _) = lease.conn().read().await.map_err(engine_error)?;
            let r = fix(i, r);
            let now = Instant::now();
            ran.push(Ran {
                args: c,
                latency_ms: (now - last).as_secs_f64() * 1000.0,
                failed: r.is_error(),
            });
            last = now;
            from_engine.push(r);
        }
        lease.in_flight = false;
        let mut from_engine = from_engine.into_iter();
        checks
            .into_iter()
            .map(|c| match c {
                Ok(()) => from_engine.next().unwrap_or(Reply::Nil),
                Err(e) => e,
            })
            .collect()
    };
    drop(lease);
    if acl_changes {
        acl::sync(shared, caller.database_id).await;
    }
    if !matches!(parsed, Parsed::Multi(_)) {
        answer_tokens(&mut replies);
    }
    let sample = shared.engines.sample(caller.database_id, false).await;
    let sync = record(shared, caller.database_id, &ran, sample);
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
            password: found.user.as_ref().map(|(_, p)| p.as_str()),
            peer,
            user: found.user.as_ref().map(|(u, _)| u.as_str()),
        };
        match execute(&shared2, &caller, size, &parsed).await {
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
        let rest = |a: &[&str]| precheck(&args(a), Transport::Rest, 10);
        let resp = |a: &[&str]| precheck(&args(a), Transport::Resp, 10);
        assert!(rest(&["HSET", "a", "b", "c"]).is_ok());
        assert_eq!(
            rest(&["config", "get", "*"]),
            Err(Reply::err("ERR Command is not available: 'config'"))
        );
        assert!(resp(&["SHUTDOWN"]).is_err());
        assert!(
            rest(&["MULTI"]).is_err(),
            "REST transactions are /multi-exec"
        );
        assert!(resp(&["MULTI"]).is_ok());
        assert!(rest(&["AUTH", "x"]).is_err());
        assert!(resp(&["CLIENT", "SETNAME", "x"]).is_ok());
        assert!(resp(&["client", "reply", "off"]).is_err());
        assert_eq!(
            rest(&["SET", "k", "01234567890"]),
            Err(Reply::err("ERR max entry size exceeded"))
        );
        assert!(rest(&[]).is_err());
    }
}
