//! The in-memory key space of one database and the Redis commands a cache client uses.
//!
//! Values are byte strings (the string type only). Expiry is lazy (on access) plus a sweep before
//! whole-keyspace commands. Hits and misses are counted the way Redis counts `keyspace_hits` /
//! `keyspace_misses`: one per key looked up by a read command.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::seq::IndexedRandom as _;
use serde::{Deserialize, Serialize};

/// A Redis reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    Array(Vec<Reply>),
    Error(String),
}

impl Reply {
    pub fn ok() -> Self {
        Reply::Status("OK".into())
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Reply::Error(msg.into())
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// JSON form used by the REST API: strings are UTF-8 (lossy), or base64 when `base64` is set
    /// (every string except the status `OK`, as `Upstash-Encoding: base64` does).
    pub fn to_json(&self, base64: bool) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Reply::Nil => Value::Null,
            Reply::Int(i) => Value::from(*i),
            Reply::Bulk(b) => {
                if base64 {
                    Value::String(B64.encode(b))
                } else {
                    Value::String(String::from_utf8_lossy(b).into_owned())
                }
            }
            Reply::Status(s) => {
                if base64 && s != "OK" {
                    Value::String(B64.encode(s.as_bytes()))
                } else {
                    Value::String(s.clone())
                }
            }
            Reply::Array(items) => Value::Array(items.iter().map(|r| r.to_json(base64)).collect()),
            Reply::Error(e) => Value::String(e.clone()),
        }
    }

    /// RESP2 encoding (`Upstash-Response-Format: resp2`).
    pub fn to_resp2(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
            Reply::Bulk(b) => {
                out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Status(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
            Reply::Error(e) => out.extend_from_slice(format!("-{e}\r\n").as_bytes()),
            Reply::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for i in items {
                    i.to_resp2(out);
                }
            }
        }
    }
}

/// How a command touches the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
}

/// Classification of the supported commands; `None` = not supported.
pub fn command_kind(name: &str) -> Option<Kind> {
    use Kind::*;
    Some(match name {
        "GET" | "MGET" | "EXISTS" | "TTL" | "PTTL" | "STRLEN" | "TYPE" | "SCAN" | "KEYS"
        | "PING" | "ECHO" | "INFO" | "DBSIZE" | "TIME" | "EXPIRETIME" | "PEXPIRETIME"
        | "RANDOMKEY" | "GETRANGE" => Read,
        "SET" | "SETEX" | "PSETEX" | "SETNX" | "GETSET" | "GETDEL" | "GETEX" | "APPEND" | "DEL"
        | "UNLINK" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" | "PERSIST" | "INCR"
        | "DECR" | "INCRBY" | "DECRBY" | "INCRBYFLOAT" | "MSET" | "MSETNX" | "FLUSHDB"
        | "FLUSHALL" | "RENAME" | "RENAMENX" => Write,
        _ => return None,
    })
}

/// Commands the read-only token may not run besides writes (reference §7: SCAN/KEYS blocked too).
pub fn forbidden_for_read_only(name: &str) -> bool {
    matches!(command_kind(name), Some(Kind::Write)) || matches!(name, "SCAN" | "KEYS")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    expires_at_ms: Option<i64>,
}

/// Counters of one key space (Redis `INFO stats` names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyCounters {
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    pub evicted_keys: u64,
    pub expired_keys: u64,
}

/// Limits that the plan imposes on writes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_data_bytes: u64,
    pub max_entry_bytes: u64,
    pub eviction: bool,
}

/// Facts outside the key space that `INFO` reports.
#[derive(Debug, Clone, Default)]
pub struct InfoContext {
    pub total_commands_processed: u64,
    pub uptime_seconds: u64,
    pub max_data_bytes: u64,
}

/// A key space with its counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "KeyspaceSnapshot", into = "KeyspaceSnapshot")]
pub struct Keyspace {
    entries: BTreeMap<Vec<u8>, Entry>,
    stored_bytes: u64,
    pub counters: KeyCounters,
    scan_cursors: HashMap<u64, Vec<u8>>,
    next_cursor: u64,
}

/// Serialized form (state file, backups): keys and values base64.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyspaceSnapshot {
    entries: Vec<SnapshotEntry>,
    #[serde(default)]
    counters: KeyCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotEntry {
    k: String,
    v: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
}

impl From<Keyspace> for KeyspaceSnapshot {
    fn from(ks: Keyspace) -> Self {
        KeyspaceSnapshot {
            entries: ks
                .entries
                .iter()
                .map(|(k, e)| SnapshotEntry {
                    k: B64.encode(k),
                    v: B64.encode(&e.value),
                    exp: e.expires_at_ms,
                })
                .collect(),
            counters: ks.counters.clone(),
        }
    }
}

impl From<KeyspaceSnapshot> for Keyspace {
    fn from(s: KeyspaceSnapshot) -> Self {
        let mut ks = Keyspace {
            counters: s.counters,
            ..Default::default()
        };
        for e in s.entries {
            if let (Ok(k), Ok(v)) = (B64.decode(&e.k), B64.decode(&e.v)) {
                ks.insert(
                    k,
                    Entry {
                        value: v,
                        expires_at_ms: e.exp,
                    },
                );
            }
        }
        ks
    }
}

fn entry_size(k: &[u8], v: &[u8]) -> u64 {
    (k.len() + v.len()) as u64
}

const WRONG_ARGS: &str = "ERR wrong number of arguments for '{}' command";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn wrong_args(cmd: &str) -> Reply {
    Reply::Error(WRONG_ARGS.replace("{}", &cmd.to_ascii_lowercase()))
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse::<i64>().ok()
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    let f = std::str::from_utf8(b).ok()?.trim().parse::<f64>().ok()?;
    f.is_finite().then_some(f)
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn format_float(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e17 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

impl Keyspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of key and value sizes in bytes.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Replaces the data (not the counters) with another key space's data (backup restore).
    pub fn restore_from(&mut self, other: &Keyspace) {
        self.entries = other.entries.clone();
        self.stored_bytes = other.stored_bytes;
        self.scan_cursors.clear();
    }

    fn insert(&mut self, k: Vec<u8>, e: Entry) {
        self.stored_bytes += entry_size(&k, &e.value);
        if let Some(old) = self.entries.insert(k.clone(), e) {
            self.stored_bytes -= entry_size(&k, &old.value);
        }
    }

    fn remove(&mut self, k: &[u8]) -> Option<Entry> {
        let e = self.entries.remove(k)?;
        self.stored_bytes -= entry_size(k, &e.value);
        Some(e)
    }

    /// Removes every expired key.
    pub fn sweep(&mut self, now_ms: i64) {
        let expired: Vec<Vec<u8>> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires_at_ms.is_some_and(|t| t <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
            self.counters.expired_keys += 1;
        }
    }

    fn live(&mut self, k: &[u8], now_ms: i64) -> Option<&mut Entry> {
        let expired = self
            .entries
            .get(k)
            .is_some_and(|e| e.expires_at_ms.is_some_and(|t| t <= now_ms));
        if expired {
            self.remove(k);
            self.counters.expired_keys += 1;
        }
        self.entries.get_mut(k)
    }

    /// A read lookup that counts a hit or a miss.
    fn lookup_read(&mut self, k: &[u8], now_ms: i64) -> Option<Vec<u8>> {
        let v = self.live(k, now_ms).map(|e| e.value.clone());
        if v.is_some() {
            self.counters.keyspace_hits += 1;
        } else {
            self.counters.keyspace_misses += 1;
        }
        v
    }

    /// Makes room for `extra` more bytes, evicting when allowed. Returns an error reply otherwise.
    fn ensure_capacity(&mut self, extra: u64, limits: &Limits, now_ms: i64) -> Result<(), Reply> {
        if self.stored_bytes + extra <= limits.max_data_bytes {
            return Ok(());
        }
        if !limits.eviction {
            return Err(Reply::err("ERR DB capacity quota exceeded"));
        }
        self.sweep(now_ms);
        // "optimistic-volatile": random sampling that prefers keys with a TTL.
        let mut rng = rand::rng();
        while self.stored_bytes + extra > limits.max_data_bytes && !self.entries.is_empty() {
            let volatile: Vec<Vec<u8>> = self
                .entries
                .iter()
                .filter(|(_, e)| e.expires_at_ms.is_some())
                .map(|(k, _)| k.clone())
                .collect();
            let pool: Vec<Vec<u8>> = if volatile.is_empty() {
                self.entries.keys().cloned().collect()
            } else {
                volatile
            };
            let Some(victim) = pool.choose(&mut rng).cloned() else {
                break;
            };
            self.remove(&victim);
            self.counters.evicted_keys += 1;
        }
        if self.stored_bytes + extra > limits.max_data_bytes {
            return Err(Reply::err("ERR DB capacity quota exceeded"));
        }
        Ok(())
    }

    /// Writes a value (keeping or replacing the TTL), enforcing the plan's limits.
    fn write(
        &mut self,
        k: &[u8],
        v: Vec<u8>,
        expires_at_ms: Option<i64>,
        limits: &Limits,
        now_ms: i64,
    ) -> Result<(), Reply> {
        if v.len() as u64 > limits.max_entry_bytes {
            return Err(Reply::err("ERR max entry size exceeded"));
        }
        let old = self
            .live(k, now_ms)
            .map(|e| entry_size(k, &e.value))
            .unwrap_or(0);
        let new = entry_size(k, &v);
        if new > old {
            self.ensure_capacity(new - old, limits, now_ms)?;
        }
        self.insert(
            k.to_vec(),
            Entry {
                value: v,
                expires_at_ms,
            },
        );
        Ok(())
    }

    fn ttl_of(&mut self, k: &[u8], now_ms: i64) -> Option<Option<i64>> {
        self.live(k, now_ms).map(|e| e.expires_at_ms)
    }

    /// Executes one command (`args[0]` is the name, any case).
    pub fn execute(
        &mut self,
        args: &[Vec<u8>],
        limits: &Limits,
        info: &InfoContext,
        now_ms: i64,
    ) -> Reply {
        let Some(first) = args.first() else {
            return Reply::err("ERR empty command");
        };
        let cmd = upper(first);
        let a = &args[1..];
        match cmd.as_str() {
            "PING" => match a {
                [] => Reply::Status("PONG".into()),
                [m] => Reply::Bulk(m.clone()),
                _ => wrong_args(&cmd),
            },
            "ECHO" => match a {
                [m] => Reply::Bulk(m.clone()),
                _ => wrong_args(&cmd),
            },
            "TIME" => {
                let micros = now_ms * 1000;
                Reply::Array(vec![
                    Reply::Bulk((micros / 1_000_000).to_string().into_bytes()),
                    Reply::Bulk((micros % 1_000_000).to_string().into_bytes()),
                ])
            }
            "GET" => match a {
                [k] => self.lookup_read(k, now_ms).map_or(Reply::Nil, Reply::Bulk),
                _ => wrong_args(&cmd),
            },
            "GETRANGE" => match a {
                [k, s, e] => {
                    let (Some(s), Some(e)) = (parse_i64(s), parse_i64(e)) else {
                        return Reply::err(NOT_INT);
                    };
                    let v = self.lookup_read(k, now_ms).unwrap_or_default();
                    let len = v.len() as i64;
                    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i.min(len) };
                    let (s, e) = (norm(s), norm(e).min(len - 1));
                    if len == 0 || s > e {
                        Reply::Bulk(vec![])
                    } else {
                        Reply::Bulk(v[s as usize..=e as usize].to_vec())
                    }
                }
                _ => wrong_args(&cmd),
            },
            "MGET" => {
                if a.is_empty() {
                    return wrong_args(&cmd);
                }
                Reply::Array(
                    a.iter()
                        .map(|k| self.lookup_read(k, now_ms).map_or(Reply::Nil, Reply::Bulk))
                        .collect(),
                )
            }
            "EXISTS" => {
                if a.is_empty() {
                    return wrong_args(&cmd);
                }
                let n = a
                    .iter()
                    .filter(|k| self.lookup_read(k, now_ms).is_some())
                    .count();
                Reply::Int(n as i64)
            }
            "STRLEN" => match a {
                [k] => Reply::Int(self.lookup_read(k, now_ms).map_or(0, |v| v.len() as i64)),
                _ => wrong_args(&cmd),
            },
            "TYPE" => match a {
                [k] => Reply::Status(
                    if self.live(k, now_ms).is_some() {
                        "string"
                    } else {
                        "none"
                    }
                    .into(),
                ),
                _ => wrong_args(&cmd),
            },
            "SET" => self.cmd_set(a, limits, now_ms),
            "SETNX" => match a {
                [k, v] => {
                    if self.live(k, now_ms).is_some() {
                        Reply::Int(0)
                    } else {
                        match self.write(k, v.clone(), None, limits, now_ms) {
                            Ok(()) => Reply::Int(1),
                            Err(e) => e,
                        }
                    }
                }
                _ => wrong_args(&cmd),
            },
            "SETEX" | "PSETEX" => match a {
                [k, t, v] => {
                    let Some(t) = parse_i64(t) else {
                        return Reply::err(NOT_INT);
                    };
                    if t <= 0 {
                        return Reply::err(format!(
                            "ERR invalid expire time in '{}' command",
                            cmd.to_ascii_lowercase()
                        ));
                    }
                    let ms = if cmd == "SETEX" {
                        t.saturating_mul(1000)
                    } else {
                        t
                    };
                    match self.write(
                        k,
                        v.clone(),
                        Some(now_ms.saturating_add(ms)),
                        limits,
                        now_ms,
                    ) {
                        Ok(()) => Reply::ok(),
                        Err(e) => e,
                    }
                }
                _ => wrong_args(&cmd),
            },
            "GETSET" => match a {
                [k, v] => {
                    let old = self.lookup_read(k, now_ms);
                    match self.write(k, v.clone(), None, limits, now_ms) {
                        Ok(()) => old.map_or(Reply::Nil, Reply::Bulk),
                        Err(e) => e,
                    }
                }
                _ => wrong_args(&cmd),
            },
            "GETDEL" => match a {
                [k] => match self.lookup_read(k, now_ms) {
                    Some(v) => {
                        self.remove(k);
                        Reply::Bulk(v)
                    }
                    None => Reply::Nil,
                },
                _ => wrong_args(&cmd),
            },
            "GETEX" => {
                let Some((k, opts)) = a.split_first() else {
                    return wrong_args(&cmd);
                };
                let exp = match parse_expiry_opts(opts, now_ms, &cmd, true) {
                    Ok(x) => x,
                    Err(e) => return e,
                };
                let Some(v) = self.lookup_read(k, now_ms) else {
                    return Reply::Nil;
                };
                if let Some(e) = self.entries.get_mut(k.as_slice()) {
                    match exp {
                        Expiry::Keep => {}
                        Expiry::Persist => e.expires_at_ms = None,
                        Expiry::At(t) => e.expires_at_ms = Some(t),
                    }
                }
                Reply::Bulk(v)
            }
            "APPEND" => match a {
                [k, v] => {
                    let (mut cur, ttl) = match self.live(k, now_ms) {
                        Some(e) => (e.value.clone(), e.expires_at_ms),
                        None => (vec![], None),
                    };
                    cur.extend_from_slice(v);
                    let n = cur.len() as i64;
                    match self.write(k, cur, ttl, limits, now_ms) {
                        Ok(()) => Reply::Int(n),
                        Err(e) => e,
                    }
                }
                _ => wrong_args(&cmd),
            },
            "DEL" | "UNLINK" => {
                if a.is_empty() {
                    return wrong_args(&cmd);
                }
                let mut n = 0;
                for k in a {
                    if self.live(k, now_ms).is_some() {
                        self.remove(k);
                        n += 1;
                    }
                }
                Reply::Int(n)
            }
            "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => self.cmd_expire(&cmd, a, now_ms),
            "TTL" | "PTTL" => match a {
                [k] => match self.ttl_of(k, now_ms) {
                    None => Reply::Int(-2),
                    Some(None) => Reply::Int(-1),
                    Some(Some(t)) => {
                        let ms = (t - now_ms).max(0);
                        Reply::Int(if cmd == "TTL" { (ms + 500) / 1000 } else { ms })
                    }
                },
                _ => wrong_args(&cmd),
            },
            "EXPIRETIME" | "PEXPIRETIME" => match a {
                [k] => match self.ttl_of(k, now_ms) {
                    None => Reply::Int(-2),
                    Some(None) => Reply::Int(-1),
                    Some(Some(t)) => Reply::Int(if cmd == "EXPIRETIME" { t / 1000 } else { t }),
                },
                _ => wrong_args(&cmd),
            },
            "PERSIST" => match a {
                [k] => match self.live(k, now_ms) {
                    Some(e) if e.expires_at_ms.is_some() => {
                        e.expires_at_ms = None;
                        Reply::Int(1)
                    }
                    _ => Reply::Int(0),
                },
                _ => wrong_args(&cmd),
            },
            "INCR" | "DECR" => match a {
                [k] => self.incr_by(k, if cmd == "INCR" { 1 } else { -1 }, limits, now_ms),
                _ => wrong_args(&cmd),
            },
            "INCRBY" | "DECRBY" => match a {
                [k, by] => {
                    let Some(by) = parse_i64(by) else {
                        return Reply::err(NOT_INT);
                    };
                    let by = if cmd == "INCRBY" {
                        Some(by)
                    } else {
                        by.checked_neg()
                    };
                    match by {
                        Some(by) => self.incr_by(k, by, limits, now_ms),
                        None => Reply::err("ERR decrement would overflow"),
                    }
                }
                _ => wrong_args(&cmd),
            },
            "INCRBYFLOAT" => match a {
                [k, by] => {
                    let Some(by) = parse_f64(by) else {
                        return Reply::err("ERR value is not a valid float");
                    };
                    let (cur, ttl) = match self.live(k, now_ms) {
                        Some(e) => (Some(e.value.clone()), e.expires_at_ms),
                        None => (None, None),
                    };
                    let cur = match cur {
                        Some(v) => match parse_f64(&v) {
                            Some(f) => f,
                            None => return Reply::err("ERR value is not a valid float"),
                        },
                        None => 0.0,
                    };
                    let n = cur + by;
                    if !n.is_finite() {
                        return Reply::err("ERR increment would produce NaN or Infinity");
                    }
                    let s = format_float(n).into_bytes();
                    match self.write(k, s.clone(), ttl, limits, now_ms) {
                        Ok(()) => Reply::Bulk(s),
                        Err(e) => e,
                    }
                }
                _ => wrong_args(&cmd),
            },
            "MSET" | "MSETNX" => {
                if a.is_empty() || !a.len().is_multiple_of(2) {
                    return wrong_args(&cmd);
                }
                if cmd == "MSETNX" && a.chunks(2).any(|p| self.live(&p[0], now_ms).is_some()) {
                    return Reply::Int(0);
                }
                for p in a.chunks(2) {
                    if let Err(e) = self.write(&p[0], p[1].clone(), None, limits, now_ms) {
                        return e;
                    }
                }
                if cmd == "MSET" {
                    Reply::ok()
                } else {
                    Reply::Int(1)
                }
            }
            "RENAME" | "RENAMENX" => match a {
                [from, to] => {
                    let Some(e) = self.live(from, now_ms).cloned() else {
                        return Reply::err("ERR no such key");
                    };
                    if cmd == "RENAMENX" && from != to && self.live(to, now_ms).is_some() {
                        return Reply::Int(0);
                    }
                    self.remove(from);
                    self.insert(to.clone(), e);
                    if cmd == "RENAME" {
                        Reply::ok()
                    } else {
                        Reply::Int(1)
                    }
                }
                _ => wrong_args(&cmd),
            },
            "KEYS" => match a {
                [p] => {
                    self.sweep(now_ms);
                    Reply::Array(
                        self.entries
                            .keys()
                            .filter(|k| glob_match(p, k))
                            .map(|k| Reply::Bulk(k.clone()))
                            .collect(),
                    )
                }
                _ => wrong_args(&cmd),
            },
            "SCAN" => self.cmd_scan(a, now_ms),
            "RANDOMKEY" => {
                self.sweep(now_ms);
                let keys: Vec<&Vec<u8>> = self.entries.keys().collect();
                keys.choose(&mut rand::rng())
                    .map_or(Reply::Nil, |k| Reply::Bulk((*k).clone()))
            }
            "DBSIZE" => {
                if !a.is_empty() {
                    return wrong_args(&cmd);
                }
                self.sweep(now_ms);
                Reply::Int(self.entries.len() as i64)
            }
            "FLUSHDB" | "FLUSHALL" => match a {
                [] => self.flush(),
                [m] if matches!(upper(m).as_str(), "ASYNC" | "SYNC") => self.flush(),
                _ => Reply::err(SYNTAX),
            },
            "INFO" => {
                self.sweep(now_ms);
                Reply::Bulk(self.info(a, info).into_bytes())
            }
            _ => Reply::err(format!(
                "ERR Command is not available: '{}'",
                String::from_utf8_lossy(first)
            )),
        }
    }

    fn flush(&mut self) -> Reply {
        self.entries.clear();
        self.stored_bytes = 0;
        self.scan_cursors.clear();
        Reply::ok()
    }

    fn incr_by(&mut self, k: &[u8], by: i64, limits: &Limits, now_ms: i64) -> Reply {
        let (cur, ttl) = match self.live(k, now_ms) {
            Some(e) => match parse_i64(&e.value) {
                Some(n) => (n, e.expires_at_ms),
                None => return Reply::err(NOT_INT),
            },
            None => (0, None),
        };
        let Some(n) = cur.checked_add(by) else {
            return Reply::err("ERR increment or decrement would overflow");
        };
        match self.write(k, n.to_string().into_bytes(), ttl, limits, now_ms) {
            Ok(()) => Reply::Int(n),
            Err(e) => e,
        }
    }

    fn cmd_set(&mut self, a: &[Vec<u8>], limits: &Limits, now_ms: i64) -> Reply {
        if a.len() < 2 {
            return wrong_args("SET");
        }
        let (k, v) = (&a[0], &a[1]);
        let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
        let mut expires: Option<i64> = None;
        let mut i = 2;
        while i < a.len() {
            let opt = upper(&a[i]);
            match opt.as_str() {
                "NX" if !xx => nx = true,
                "XX" if !nx => xx = true,
                "GET" => get = true,
                "KEEPTTL" if expires.is_none() => keepttl = true,
                "EX" | "PX" | "EXAT" | "PXAT" if expires.is_none() && !keepttl => {
                    let Some(n) = a.get(i + 1) else {
                        return Reply::err(SYNTAX);
                    };
                    let Some(n) = parse_i64(n) else {
                        return Reply::err(NOT_INT);
                    };
                    if n <= 0 {
                        return Reply::err("ERR invalid expire time in 'set' command");
                    }
                    expires = Some(match opt.as_str() {
                        "EX" => now_ms.saturating_add(n.saturating_mul(1000)),
                        "PX" => now_ms.saturating_add(n),
                        "EXAT" => n.saturating_mul(1000),
                        _ => n,
                    });
                    i += 1;
                }
                _ => return Reply::err(SYNTAX),
            }
            i += 1;
        }
        let old = self.live(k, now_ms).cloned();
        if get {
            if old.is_some() {
                self.counters.keyspace_hits += 1;
            } else {
                self.counters.keyspace_misses += 1;
            }
        }
        let old_reply = || {
            old.as_ref()
                .map_or(Reply::Nil, |e| Reply::Bulk(e.value.clone()))
        };
        if (nx && old.is_some()) || (xx && old.is_none()) {
            return if get { old_reply() } else { Reply::Nil };
        }
        let ttl = if keepttl {
            old.as_ref().and_then(|e| e.expires_at_ms)
        } else {
            expires
        };
        if let Err(e) = self.write(k, v.clone(), ttl, limits, now_ms) {
            return e;
        }
        if get { old_reply() } else { Reply::ok() }
    }

    fn cmd_expire(&mut self, cmd: &str, a: &[Vec<u8>], now_ms: i64) -> Reply {
        if a.len() < 2 {
            return wrong_args(cmd);
        }
        let Some(n) = parse_i64(&a[1]) else {
            return Reply::err(NOT_INT);
        };
        let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
        for o in &a[2..] {
            match upper(o).as_str() {
                "NX" => nx = true,
                "XX" => xx = true,
                "GT" => gt = true,
                "LT" => lt = true,
                other => return Reply::err(format!("ERR Unsupported option {other}")),
            }
        }
        if nx && (xx || gt || lt) {
            return Reply::err(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            );
        }
        if gt && lt {
            return Reply::err("ERR GT and LT options at the same time are not compatible");
        }
        let at = match cmd {
            "EXPIRE" => now_ms.saturating_add(n.saturating_mul(1000)),
            "PEXPIRE" => now_ms.saturating_add(n),
            "EXPIREAT" => n.saturating_mul(1000),
            _ => n,
        };
        let Some(e) = self.live(&a[0], now_ms) else {
            return Reply::Int(0);
        };
        let cur = e.expires_at_ms;
        let ok = match cur {
            None => !xx && !gt,
            Some(c) => !nx && (!gt || at > c) && (!lt || at < c),
        };
        if !ok {
            return Reply::Int(0);
        }
        if at <= now_ms {
            self.remove(&a[0]);
        } else {
            e.expires_at_ms = Some(at);
        }
        Reply::Int(1)
    }

    fn cmd_scan(&mut self, a: &[Vec<u8>], now_ms: i64) -> Reply {
        let Some(cursor) = a.first() else {
            return wrong_args("SCAN");
        };
        let Some(cursor) = std::str::from_utf8(cursor)
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
        else {
            return Reply::err("ERR invalid cursor");
        };
        let mut pattern: Option<&[u8]> = None;
        let mut count: usize = 10;
        let mut type_filter: Option<String> = None;
        let mut i = 1;
        while i < a.len() {
            let Some(val) = a.get(i + 1) else {
                return Reply::err(SYNTAX);
            };
            match upper(&a[i]).as_str() {
                "MATCH" => pattern = Some(val),
                "COUNT" => match parse_i64(val) {
                    Some(n) if n >= 1 => count = n as usize,
                    Some(_) => return Reply::err(SYNTAX),
                    None => return Reply::err(NOT_INT),
                },
                "TYPE" => type_filter = Some(String::from_utf8_lossy(val).to_ascii_lowercase()),
                _ => return Reply::err(SYNTAX),
            }
            i += 2;
        }
        self.sweep(now_ms);
        // Cursors name the last key returned, so keys present for the whole iteration are
        // returned even when others are added or deleted in between (the SCAN guarantee).
        let start: Option<Vec<u8>> = if cursor == 0 {
            None
        } else {
            match self.scan_cursors.remove(&cursor) {
                Some(k) => Some(k),
                None => {
                    return Reply::Array(vec![Reply::Bulk(b"0".to_vec()), Reply::Array(vec![])]);
                }
            }
        };
        let range: Box<dyn Iterator<Item = &Vec<u8>>> = match &start {
            None => Box::new(self.entries.keys()),
            Some(s) => Box::new(
                self.entries
                    .range::<Vec<u8>, _>((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k),
            ),
        };
        let mut last: Option<Vec<u8>> = None;
        let mut out = vec![];
        let mut more = false;
        for (visited, k) in range.enumerate() {
            if visited == count {
                more = true;
                break;
            }
            last = Some(k.clone());
            let type_ok = type_filter.as_deref().is_none_or(|t| t == "string");
            if type_ok && pattern.is_none_or(|p| glob_match(p, k)) {
                out.push(Reply::Bulk(k.clone()));
            }
        }
        let next = match (more, last) {
            (true, Some(last)) => {
                self.next_cursor += 1;
                let id = self.next_cursor;
                if self.scan_cursors.len() > 10_000 {
                    self.scan_cursors.clear();
                }
                self.scan_cursors.insert(id, last);
                id
            }
            _ => 0,
        };
        Reply::Array(vec![
            Reply::Bulk(next.to_string().into_bytes()),
            Reply::Array(out),
        ])
    }

    fn info(&self, sections: &[Vec<u8>], ctx: &InfoContext) -> String {
        let wanted: Vec<String> = sections
            .iter()
            .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
            .collect();
        let all = wanted.is_empty()
            || wanted
                .iter()
                .any(|w| w == "all" || w == "everything" || w == "default");
        let want = |s: &str| all || wanted.iter().any(|w| w == s);
        let mut out = String::new();
        let mut section = |name: &str, lines: Vec<String>| {
            if want(&name.to_ascii_lowercase()) {
                if !out.is_empty() {
                    out.push_str("\r\n");
                }
                out.push_str(&format!("# {name}\r\n"));
                for l in lines {
                    out.push_str(&l);
                    out.push_str("\r\n");
                }
            }
        };
        section(
            "Server",
            vec![
                "redis_version:6.2.6".into(),
                "redis_mode:standalone".into(),
                "upstash_emulator:1".into(),
                format!("uptime_in_seconds:{}", ctx.uptime_seconds),
            ],
        );
        section("Clients", vec!["connected_clients:0".into()]);
        section(
            "Memory",
            vec![
                format!("used_memory:{}", self.stored_bytes),
                format!("used_memory_human:{}B", self.stored_bytes),
                format!("maxmemory:{}", ctx.max_data_bytes),
                "maxmemory_policy:noeviction".into(),
            ],
        );
        section(
            "Stats",
            vec![
                format!("total_commands_processed:{}", ctx.total_commands_processed),
                format!("keyspace_hits:{}", self.counters.keyspace_hits),
                format!("keyspace_misses:{}", self.counters.keyspace_misses),
                format!("evicted_keys:{}", self.counters.evicted_keys),
                format!("expired_keys:{}", self.counters.expired_keys),
            ],
        );
        let expires = self
            .entries
            .values()
            .filter(|e| e.expires_at_ms.is_some())
            .count();
        let keyspace = if self.entries.is_empty() {
            vec![]
        } else {
            vec![format!(
                "db0:keys={},expires={},avg_ttl=0",
                self.entries.len(),
                expires
            )]
        };
        section("Keyspace", keyspace);
        out
    }
}

enum Expiry {
    Keep,
    Persist,
    At(i64),
}

fn parse_expiry_opts(
    opts: &[Vec<u8>],
    now_ms: i64,
    cmd: &str,
    allow_persist: bool,
) -> Result<Expiry, Reply> {
    match opts {
        [] => Ok(Expiry::Keep),
        [p] if allow_persist && upper(p) == "PERSIST" => Ok(Expiry::Persist),
        [o, n] => {
            let Some(n) = parse_i64(n) else {
                return Err(Reply::err(NOT_INT));
            };
            if n <= 0 {
                return Err(Reply::err(format!(
                    "ERR invalid expire time in '{}' command",
                    cmd.to_ascii_lowercase()
                )));
            }
            Ok(Expiry::At(match upper(o).as_str() {
                "EX" => now_ms.saturating_add(n.saturating_mul(1000)),
                "PX" => now_ms.saturating_add(n),
                "EXAT" => n.saturating_mul(1000),
                "PXAT" => n,
                _ => return Err(Reply::err(SYNTAX)),
            }))
        }
        _ => Err(Reply::err(SYNTAX)),
    }
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\` escapes) over bytes.
///
/// Hand-written (a port of Redis' `stringmatchlen`) because the usual glob crates differ from
/// Redis: they work on paths/UTF-8, treat `/` specially, and spell negation `[!...]`.
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    // Backtracking point for the last `*`.
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Matches `c` against the class starting at `pattern[start] == '['`. Returns (matched, index after
/// the class), or `None` when the class is not closed.
fn class_match(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut p = start + 1;
    let negate = p < pattern.len() && pattern[p] == b'^';
    if negate {
        p += 1;
    }
    let mut matched = false;
    loop {
        if p >= pattern.len() {
            return None;
        }
        match pattern[p] {
            b']' => break,
            b'\\' if p + 1 < pattern.len() => {
                if pattern[p + 1] == c {
                    matched = true;
                }
                p += 2;
            }
            lo if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' => {
                let hi = pattern[p + 2];
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                if c >= lo && c <= hi {
                    matched = true;
                }
                p += 3;
            }
            x => {
                if x == c {
                    matched = true;
                }
                p += 1;
            }
        }
    }
    Some((matched != negate, p + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_data_bytes: 1 << 30,
        max_entry_bytes: 1 << 20,
        eviction: false,
    };

    fn run(ks: &mut Keyspace, now: i64, cmd: &[&str]) -> Reply {
        let args: Vec<Vec<u8>> = cmd.iter().map(|s| s.as_bytes().to_vec()).collect();
        ks.execute(&args, &LIMITS, &InfoContext::default(), now)
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn glob() {
        assert!(glob_match(b"*", b"anything"));
        assert!(glob_match(b"user:*", b"user:1"));
        assert!(!glob_match(b"user:*", b"usr:1"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[ae]llo", b"hillo"));
        assert!(glob_match(b"h[^e]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"h[a-c]llo", b"hbllo"));
        assert!(glob_match(b"a\\*b", b"a*b"));
        assert!(!glob_match(b"a\\*b", b"axb"));
        assert!(glob_match(b"*a*b*", b"xxaxxbxx"));
        assert!(!glob_match(b"*a*b", b"xxaxxbxxc"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"a/b*", b"a/bc"));
    }

    #[test]
    fn set_get_options() {
        let mut ks = Keyspace::new();
        assert_eq!(run(&mut ks, 0, &["SET", "k", "v"]), Reply::ok());
        assert_eq!(run(&mut ks, 0, &["get", "k"]), bulk("v"));
        assert_eq!(run(&mut ks, 0, &["SET", "k", "w", "NX"]), Reply::Nil);
        assert_eq!(run(&mut ks, 0, &["SET", "n", "w", "XX"]), Reply::Nil);
        assert_eq!(run(&mut ks, 0, &["SET", "k", "w", "XX", "GET"]), bulk("v"));
        assert_eq!(run(&mut ks, 0, &["SET", "e", "1", "EX", "10"]), Reply::ok());
        assert_eq!(run(&mut ks, 0, &["TTL", "e"]), Reply::Int(10));
        assert_eq!(run(&mut ks, 0, &["PTTL", "e"]), Reply::Int(10_000));
        assert_eq!(run(&mut ks, 10_000, &["GET", "e"]), Reply::Nil);
        assert_eq!(run(&mut ks, 0, &["SET", "p", "1", "PX", "5"]), Reply::ok());
        assert_eq!(run(&mut ks, 4, &["EXISTS", "p", "p", "zz"]), Reply::Int(2));
        assert!(run(&mut ks, 0, &["SET", "p", "1", "EX", "0"]).is_error());
        assert!(run(&mut ks, 0, &["SET", "p", "1", "EX"]).is_error());
        assert!(run(&mut ks, 0, &["SET", "p", "1", "NX", "XX"]).is_error());
        assert!(run(&mut ks, 0, &["SET", "p"]).is_error());
    }

    #[test]
    fn counters_and_bytes() {
        let mut ks = Keyspace::new();
        run(&mut ks, 0, &["SET", "ab", "cde"]);
        assert_eq!(ks.stored_bytes(), 5);
        run(&mut ks, 0, &["GET", "ab"]);
        run(&mut ks, 0, &["GET", "nope"]);
        run(&mut ks, 0, &["MGET", "ab", "x", "y"]);
        assert_eq!(ks.counters.keyspace_hits, 2);
        assert_eq!(ks.counters.keyspace_misses, 3);
        run(&mut ks, 0, &["DEL", "ab"]);
        assert_eq!(ks.stored_bytes(), 0);
    }

    #[test]
    fn incr_and_expire() {
        let mut ks = Keyspace::new();
        assert_eq!(run(&mut ks, 0, &["INCR", "c"]), Reply::Int(1));
        assert_eq!(run(&mut ks, 0, &["INCRBY", "c", "41"]), Reply::Int(42));
        assert_eq!(run(&mut ks, 0, &["DECRBY", "c", "2"]), Reply::Int(40));
        assert_eq!(run(&mut ks, 0, &["EXPIRE", "c", "5"]), Reply::Int(1));
        assert_eq!(run(&mut ks, 0, &["INCR", "c"]), Reply::Int(41));
        assert_eq!(run(&mut ks, 0, &["TTL", "c"]), Reply::Int(5));
        assert_eq!(run(&mut ks, 0, &["EXPIRE", "c", "50", "NX"]), Reply::Int(0));
        assert_eq!(run(&mut ks, 0, &["EXPIRE", "missing", "5"]), Reply::Int(0));
        assert_eq!(run(&mut ks, 0, &["TTL", "missing"]), Reply::Int(-2));
        run(&mut ks, 0, &["SET", "s", "x"]);
        assert_eq!(run(&mut ks, 0, &["TTL", "s"]), Reply::Int(-1));
        assert_eq!(run(&mut ks, 0, &["INCR", "s"]), Reply::err(NOT_INT));
        run(&mut ks, 0, &["SET", "m", "9223372036854775807"]);
        assert!(run(&mut ks, 0, &["INCR", "m"]).is_error());
        assert_eq!(run(&mut ks, 0, &["EXPIRE", "s", "-1"]), Reply::Int(1));
        assert_eq!(run(&mut ks, 0, &["EXISTS", "s"]), Reply::Int(0));
    }

    #[test]
    fn scan_visits_every_key_once() {
        let mut ks = Keyspace::new();
        for i in 0..95 {
            run(&mut ks, 0, &["SET", &format!("key:{i}"), "v"]);
        }
        run(&mut ks, 0, &["SET", "other", "v"]);
        let mut cursor = "0".to_string();
        let mut seen = vec![];
        loop {
            let Reply::Array(r) = run(
                &mut ks,
                0,
                &["SCAN", &cursor, "MATCH", "key:*", "COUNT", "7"],
            ) else {
                panic!()
            };
            let (Reply::Bulk(c), Reply::Array(keys)) = (&r[0], &r[1]) else {
                panic!()
            };
            seen.extend(keys.iter().cloned());
            // Deleting during the iteration must not lose keys present throughout.
            run(&mut ks, 0, &["DEL", "other"]);
            cursor = String::from_utf8(c.clone()).unwrap();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 95);
        let Reply::Array(all) = run(&mut ks, 0, &["KEYS", "key:1?"]) else {
            panic!()
        };
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn info_sections() {
        let mut ks = Keyspace::new();
        run(&mut ks, 0, &["SET", "a", "b", "EX", "100"]);
        run(&mut ks, 0, &["GET", "a"]);
        let Reply::Bulk(all) = run(&mut ks, 0, &["INFO"]) else {
            panic!()
        };
        let all = String::from_utf8(all).unwrap();
        assert!(all.contains("# Stats\r\n"));
        assert!(all.contains("keyspace_hits:1"));
        assert!(all.contains("used_memory:2"));
        assert!(all.contains("db0:keys=1,expires=1"));
        let Reply::Bulk(mem) = run(&mut ks, 0, &["INFO", "memory"]) else {
            panic!()
        };
        let mem = String::from_utf8(mem).unwrap();
        assert!(mem.starts_with("# Memory"));
        assert!(!mem.contains("# Stats"));
    }

    #[test]
    fn capacity_and_eviction() {
        let small = Limits {
            max_data_bytes: 10,
            max_entry_bytes: 100,
            eviction: false,
        };
        let mut ks = Keyspace::new();
        let args = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        let info = InfoContext::default();
        assert_eq!(
            ks.execute(&args(&["SET", "a", "12345"]), &small, &info, 0),
            Reply::ok()
        );
        assert_eq!(
            ks.execute(&args(&["SET", "b", "12345"]), &small, &info, 0),
            Reply::err("ERR DB capacity quota exceeded")
        );
        let evicting = Limits {
            eviction: true,
            ..small
        };
        assert_eq!(
            ks.execute(&args(&["SET", "b", "12345"]), &evicting, &info, 0),
            Reply::ok()
        );
        assert_eq!(ks.counters.evicted_keys, 1);
        assert_eq!(ks.len(), 1);
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut ks = Keyspace::new();
        run(&mut ks, 0, &["SET", "a", "b", "PX", "100"]);
        run(&mut ks, 0, &["SET", "c", "d"]);
        let json = serde_json::to_string(&ks).unwrap();
        let back: Keyspace = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back.stored_bytes(), 4);
    }

    #[test]
    fn json_encoding() {
        assert_eq!(Reply::ok().to_json(true), serde_json::json!("OK"));
        assert_eq!(
            Reply::Status("PONG".into()).to_json(true),
            serde_json::json!("UE9ORw==")
        );
        assert_eq!(bulk("OK").to_json(true), serde_json::json!("T0s="));
        assert_eq!(bulk("v").to_json(false), serde_json::json!("v"));
        let mut out = vec![];
        Reply::Array(vec![Reply::Int(1), Reply::Nil, bulk("x")]).to_resp2(&mut out);
        assert_eq!(out, b"*3\r\n:1\r\n$-1\r\n$1\r\nx\r\n");
    }
}
