//! Lua scripts written for Upstash, on Redis.
//!
//! Upstash accepts script flags that Redis does not know: Upstash's own clients send
//! `#!lua flags=allow-key-locking` (every `@upstash/ratelimit` script), which Redis refuses with
//! `ERR Unexpected flag in script shebang`. Before a script reaches the engine, flags Redis does
//! not know are taken out of its shebang line (the line stays, so error line numbers do not
//! move). Clients address scripts by the SHA1 of the text they sent (`EVALSHA`, the answer of
//! `SCRIPT LOAD`, `SCRIPT EXISTS`), so those names are translated both ways.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::reply::Reply;

/// The script flags Redis knows (Redis 7 shebang flags).
const REDIS_FLAGS: &[&str] = &[
    "no-writes",
    "allow-oom",
    "allow-stale",
    "no-cluster",
    "allow-cross-slot-keys",
];

/// The script as Redis accepts it, when it differs from what the client sent.
pub fn for_redis(script: &[u8]) -> Option<Vec<u8>> {
    let end = script
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(script.len());
    let line = std::str::from_utf8(&script[..end]).ok()?;
    let rest = line.strip_prefix("#!lua")?;
    if !rest.is_empty() && !rest.starts_with([' ', '\t', '\r']) {
        return None;
    }
    let mut changed = false;
    let mut parts = vec!["#!lua".to_string()];
    for token in rest.split_whitespace() {
        match token.strip_prefix("flags=") {
            Some(flags) => {
                let kept: Vec<&str> = flags
                    .split(',')
                    .filter(|f| {
                        let known = f.is_empty() || REDIS_FLAGS.contains(f);
                        changed |= !known;
                        known
                    })
                    .filter(|f| !f.is_empty())
                    .collect();
                if !kept.is_empty() {
                    parts.push(format!("flags={}", kept.join(",")));
                }
            }
            None => parts.push(token.to_string()),
        }
    }
    if !changed {
        return None;
    }
    let mut out = parts.join(" ").into_bytes();
    out.extend_from_slice(&script[end..]);
    Some(out)
}

fn sha1_hex(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}

/// What to change in the engine's answer to a translated command.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyFix {
    /// `SCRIPT LOAD`: answer the SHA1 of the script the client sent.
    ScriptName(String),
    /// `ACL LIST` / `ACL USERS`: leave the engine's own users out.
    HideUsers,
}

impl ReplyFix {
    pub fn apply(&self, reply: Reply) -> Reply {
        match (self, reply) {
            (ReplyFix::ScriptName(sha), Reply::Bulk(_)) => Reply::Bulk(sha.clone().into_bytes()),
            (ReplyFix::HideUsers, r) => crate::acl::hide(r),
            (_, other) => other,
        }
    }
}

/// Client script names (SHA1 of what was sent) → the engine's names (SHA1 of what Redis got).
#[derive(Default)]
pub struct Scripts {
    names: Mutex<HashMap<String, String>>,
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

impl Scripts {
    fn remember(&self, sent: &[u8], rewritten: &[u8]) -> String {
        let client = sha1_hex(sent);
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(client.clone(), sha1_hex(rewritten));
        client
    }

    fn engine_name(&self, client: &[u8]) -> Option<Vec<u8>> {
        let key = String::from_utf8_lossy(client).to_ascii_lowercase();
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|s| s.clone().into_bytes())
    }

    /// The command as the engine must get it, and what to change in its answer; `None` when
    /// the command needs no change.
    pub fn translate(&self, args: &[Vec<u8>]) -> Option<(Vec<Vec<u8>>, Option<ReplyFix>)> {
        let name = upper(args.first()?);
        let mut out = args.to_vec();
        match name.as_str() {
            "EVAL" | "EVAL_RO" => {
                let rewritten = for_redis(args.get(1)?)?;
                self.remember(&args[1], &rewritten);
                out[1] = rewritten;
                Some((out, None))
            }
            "EVALSHA" | "EVALSHA_RO" => {
                out[1] = self.engine_name(args.get(1)?)?;
                Some((out, None))
            }
            "SCRIPT" => match upper(args.get(1)?).as_str() {
                "LOAD" => {
                    let rewritten = for_redis(args.get(2)?)?;
                    let client = self.remember(&args[2], &rewritten);
                    out[2] = rewritten;
                    Some((out, Some(ReplyFix::ScriptName(client))))
                }
                "EXISTS" => {
                    let mut changed = false;
                    for a in out.iter_mut().skip(2) {
                        if let Some(n) = self.engine_name(a) {
                            *a = n;
                            changed = true;
                        }
                    }
                    changed.then_some((out, None))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn upstash_only_flags_leave_the_shebang() {
        assert_eq!(
            for_redis(b"#!lua flags=allow-key-locking\nreturn 1").unwrap(),
            b"#!lua\nreturn 1"
        );
        assert_eq!(
            for_redis(b"#!lua flags=allow-key-locking,no-writes\nreturn 1").unwrap(),
            b"#!lua flags=no-writes\nreturn 1"
        );
        assert_eq!(for_redis(b"#!lua flags=no-writes\nreturn 1"), None);
        assert_eq!(for_redis(b"return 1"), None);
        assert_eq!(for_redis(b"#!luax flags=allow-key-locking\n"), None);
        assert_eq!(
            for_redis(b"#!lua name=x flags=allow-key-locking").unwrap(),
            b"#!lua name=x"
        );
    }

    #[test]
    fn script_names_are_the_clients() {
        let s = Scripts::default();
        let script = "#!lua flags=allow-key-locking\nreturn 1";
        let client = sha1_hex(script.as_bytes());
        let engine = sha1_hex(b"#!lua\nreturn 1");
        let (load, fix) = s.translate(&args(&["script", "load", script])).unwrap();
        assert_eq!(load[2], b"#!lua\nreturn 1");
        assert_eq!(
            fix.unwrap().apply(Reply::Bulk(engine.clone().into_bytes())),
            Reply::Bulk(client.clone().into_bytes())
        );
        let (sha, _) = s.translate(&args(&["EVALSHA", &client, "0"])).unwrap();
        assert_eq!(sha[1], engine.as_bytes());
        let (exists, _) = s
            .translate(&args(&["SCRIPT", "EXISTS", &client, "abc"]))
            .unwrap();
        assert_eq!(exists[2], engine.as_bytes());
        assert_eq!(exists[3], b"abc");
        assert!(s.translate(&args(&["EVALSHA", "unknown", "0"])).is_none());
        assert!(s.translate(&args(&["EVAL", "return 1", "0"])).is_none());
        assert!(s.translate(&args(&["GET", "k"])).is_none());
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
