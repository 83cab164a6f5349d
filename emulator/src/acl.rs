//! Redis ACL users of a database, as Upstash offers them on paid plans: `ACL SETUSER`, `DELUSER`,
//! `LIST`, `USERS`, `GETUSER`, `WHOAMI` (and Redis's other harmless subcommands) run on the
//! database's engine, which enforces them (a refused command gets Redis's own `NOPERM`, a wrong
//! password Redis's own `WRONGPASS`), over both transports. `ACL RESTTOKEN <user> <password>`
//! (Upstash-only) answers a REST token that acts as that user.
//!
//! The engine's own users stay out of sight: the emulator's administration user and
//! `default_ro` (the read-only user) are left out of `ACL LIST`/`USERS`, unknown to `GETUSER`,
//! and cannot be changed or deleted. The clients' `default` user is the engine's `default` user;
//! its password stays the database's (`reset-password`), so rules that set passwords are refused
//! for it, while `ACL SETUSER default off` makes the database password fail.
//!
//! The users a client defined are copied into the database's state after every change ([`sync`])
//! and replayed when the engine starts again (engines stop when idle), so they last as long as
//! the database; a restore drops them, as Upstash documents ("You need to redefine ACL users").

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Shared;
use crate::reply::Reply;
use crate::state::READ_ONLY_USER;

/// The engine user the emulator administers engines as (limits, `INFO`, `SAVE`).
pub const ADMIN_USER: &str = "upstash-emulator";

/// Engine users clients never see.
const HIDDEN: [&str; 2] = [ADMIN_USER, READ_ONLY_USER];

/// Whether clients must not see or touch this engine user.
pub fn hidden(user: &[u8]) -> bool {
    HIDDEN.iter().any(|h| h.as_bytes() == user)
}

/// A REST token minted by `ACL RESTTOKEN`. (No `Debug`: it holds a password.)
#[derive(Clone, Serialize, Deserialize)]
pub struct AclToken {
    pub token: String,
    pub user: String,
    pub password: String,
}

/// The users clients defined on a database.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct AclState {
    /// The users as the engine's `ACL LIST` shows them (`user <name> <rules...>`), `default`
    /// included, the engine's own users left out; empty while no client changed the ACL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
    /// REST tokens minted by `ACL RESTTOKEN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AclToken>,
}

impl std::fmt::Debug for AclState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclState")
            .field("users", &self.lines.len())
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// `sha256(password)` in hex, as `ACL LIST` shows passwords (`#<hex>`).
pub fn password_hash(password: &str) -> String {
    Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A line's user name and rules.
fn split_line(line: &str) -> Option<(&str, Vec<&str>)> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "user" {
        return None;
    }
    let name = parts.next()?;
    Some((name, parts.collect()))
}

impl AclState {
    fn rules(&self, user: &str) -> Option<Vec<&str>> {
        self.lines
            .iter()
            .filter_map(|l| split_line(l))
            .find(|(n, _)| *n == user)
            .map(|(_, r)| r)
    }

    /// Whether the `default` user is on (it is unless a client turned it off).
    pub fn default_on(&self) -> bool {
        self.rules("default")
            .is_none_or(|r| r.iter().rev().find(|t| matches!(**t, "on" | "off")) != Some(&"off"))
    }

    /// Whether users other than `default` exist.
    pub fn has_users(&self) -> bool {
        self.lines
            .iter()
            .filter_map(|l| split_line(l))
            .any(|(n, _)| n != "default")
    }

    /// Whether this user exists, is on and takes this password (never for `default`, whose
    /// password is the database's).
    pub fn accepts(&self, user: &str, password: &str) -> bool {
        if user == "default" {
            return false;
        }
        let Some(rules) = self.rules(user) else {
            return false;
        };
        let on = rules.iter().rev().find(|t| matches!(**t, "on" | "off")) == Some(&"on");
        let hash = format!("#{}", password_hash(password));
        on && rules.iter().any(|t| *t == "nopass" || *t == hash)
    }

    /// The user and password a minted token acts as.
    pub fn token(&self, token: &str) -> Option<&AclToken> {
        self.tokens.iter().find(|t| t.token == token)
    }

    /// A REST token for the user (the same one for the same password), or `None` when the pair
    /// is wrong.
    pub fn mint(&mut self, user: &str, password: &str) -> Option<String> {
        if !self.accepts(user, password) {
            return None;
        }
        if let Some(t) = self
            .tokens
            .iter()
            .find(|t| t.user == user && t.password == password)
        {
            return Some(t.token.clone());
        }
        let token = crate::ids::rest_token();
        self.tokens.push(AclToken {
            token: token.clone(),
            user: user.to_string(),
            password: password.to_string(),
        });
        Some(token)
    }

    /// Takes the engine's users after a change; tokens of users that no longer take their
    /// password are dropped.
    pub fn replace(&mut self, lines: Vec<String>) {
        self.lines = lines;
        let keep: Vec<AclToken> = std::mem::take(&mut self.tokens)
            .into_iter()
            .filter(|t| self.accepts(&t.user, &t.password))
            .collect();
        self.tokens = keep;
    }
}

/// The commands that replay a database's users on a freshly started engine, the `default`
/// user's password being the engine's own (`default_password`).
pub fn replay(lines: &[String], default_password: &str) -> Vec<Vec<Vec<u8>>> {
    lines
        .iter()
        .filter_map(|l| split_line(l))
        .filter(|(name, _)| !hidden(name.as_bytes()))
        .map(|(name, rules)| {
            let mut args: Vec<Vec<u8>> = ["ACL", "SETUSER", name, "reset"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect();
            if name == "default" {
                args.push(format!(">{default_password}").into_bytes());
                args.extend(
                    rules
                        .iter()
                        .filter(|t| !t.starts_with('#') && **t != "nopass")
                        .map(|t| t.as_bytes().to_vec()),
                );
            } else {
                args.extend(rules.iter().map(|t| t.as_bytes().to_vec()));
            }
            args
        })
        .collect()
}

/// What the emulator does with a command before and after the engine runs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Not an ACL command, or one the engine answers as is.
    Pass,
    /// Answered here (an error, or a REST token).
    Local(Reply),
    /// Changes users: the database's copy is refreshed after it ran.
    Changes,
    /// Lists users: the engine's own are left out of the answer.
    Hide,
    /// `ACL RESTTOKEN <user> <password>`: answered here with [`rest_token`], after the commands
    /// before it ran (a user set in the same pipeline gets its token).
    RestToken { user: Vec<u8>, password: Vec<u8> },
}

/// Upstash's answer to ACL commands on a free database.
pub const FREE_PLAN: &str = "ERR ACL commands are not available on the free plan: upgrade the database to pay-as-you-go or a fixed plan";

/// Rules that set or clear passwords: refused for `default` (its password is the database's).
fn sets_password(rule: &[u8]) -> bool {
    matches!(rule.first(), Some(b'>' | b'<' | b'#' | b'!'))
        || [&b"nopass"[..], b"resetpass", b"reset"]
            .iter()
            .any(|r| rule.eq_ignore_ascii_case(r))
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

/// The emulator's part of an `ACL` command: the plan, the engine's own users, `RESTTOKEN`.
/// `database_id` names the caller's database (for `RESTTOKEN`).
pub fn check(shared: &Shared, database_id: &str, args: &[Vec<u8>]) -> Check {
    if !args.first().is_some_and(|c| c.eq_ignore_ascii_case(b"ACL")) {
        return Check::Pass;
    }
    let free = shared
        .lock()
        .databases
        .get(database_id)
        .is_none_or(|d| d.meta.plan().kind == "free");
    if free {
        return Check::Local(Reply::err(FREE_PLAN));
    }
    let sub = args.get(1).map(|s| upper(s)).unwrap_or_default();
    let rest = args.get(2..).unwrap_or_default();
    let not_found = |u: &[u8]| {
        Check::Local(Reply::err(format!(
            "ERR User '{}' not found",
            String::from_utf8_lossy(u)
        )))
    };
    match sub.as_str() {
        "SETUSER" => match rest {
            [user, ..] if hidden(user) => Check::Local(Reply::err(format!(
                "ERR the user name '{}' is reserved",
                String::from_utf8_lossy(user)
            ))),
            [user, rules @ ..]
                if user.as_slice() == b"default" && rules.iter().any(|r| sets_password(r)) =>
            {
                Check::Local(Reply::err(
                    "ERR the default user's password is the database's password: use reset-password",
                ))
            }
            _ => Check::Changes,
        },
        "DELUSER" => match rest.iter().find(|u| hidden(u)) {
            Some(u) => not_found(u),
            None => Check::Changes,
        },
        "GETUSER" => match rest {
            [user] if hidden(user) => Check::Local(Reply::Nil),
            _ => Check::Pass,
        },
        "DRYRUN" => match rest {
            [user, ..] if hidden(user) => not_found(user),
            _ => Check::Pass,
        },
        "LIST" | "USERS" => Check::Hide,
        "RESTTOKEN" => match rest {
            [user, password] => Check::RestToken {
                user: user.clone(),
                password: password.clone(),
            },
            _ => Check::Local(Reply::err(
                "ERR wrong number of arguments for 'acl|resttoken' command",
            )),
        },
        "SAVE" | "LOAD" => Check::Local(Reply::err(format!(
            "ERR Command is not available: 'acl|{}'",
            sub.to_ascii_lowercase()
        ))),
        _ => Check::Pass,
    }
}

/// `ACL RESTTOKEN <user> <password>`: a token for the REST API acting as that user.
pub fn rest_token(shared: &Shared, database_id: &str, user: &[u8], password: &[u8]) -> Reply {
    let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
    else {
        return Reply::err(crate::data_plane::WRONGPASS);
    };
    let minted = {
        let mut st = shared.lock();
        st.databases
            .get_mut(database_id)
            .and_then(|d| d.acl.mint(user, password))
    };
    match minted {
        Some(token) => {
            shared.mark_dirty();
            Reply::Bulk(token.into_bytes())
        }
        None => Reply::err(crate::data_plane::WRONGPASS),
    }
}

/// Leaves the engine's own users out of an `ACL LIST` or `ACL USERS` answer.
pub fn hide(reply: Reply) -> Reply {
    match reply {
        Reply::Array(items) => Reply::Array(
            items
                .into_iter()
                .filter(|r| {
                    let text = r.as_text().unwrap_or_default();
                    let name = text
                        .strip_prefix("user ")
                        .unwrap_or(&text)
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    !hidden(name.as_bytes())
                })
                .collect(),
        ),
        other => other,
    }
}

/// Whether a batch changed users (`ACL SETUSER`/`DELUSER`, also inside a transaction).
pub fn changes_users(args: &[Vec<u8>]) -> bool {
    args.first().is_some_and(|c| c.eq_ignore_ascii_case(b"ACL"))
        && args.get(1).is_some_and(|s| {
            s.eq_ignore_ascii_case(b"SETUSER") || s.eq_ignore_ascii_case(b"DELUSER")
        })
}

/// Copies the engine's users into the database's state after a change.
pub async fn sync(shared: &Shared, database_id: &str) {
    let lines = match shared.engines.acl_list(database_id).await {
        Ok(Some(lines)) => lines,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(database_id, error = %e, "reading the engine's ACL failed");
            return;
        }
    };
    let lines: Vec<String> = lines
        .into_iter()
        .filter(|l| split_line(l).is_some_and(|(n, _)| !hidden(n.as_bytes())))
        .collect();
    if let Some(db) = shared.lock().databases.get_mut(database_id) {
        db.acl.replace(lines);
    }
    shared.mark_dirty();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn users_and_passwords() {
        let h = password_hash("pw");
        let mut s = AclState {
            lines: vec![
                "user default off #abc ~* &* +@all".into(),
                format!("user alice on #{h} ~a:* resetchannels -@all +get"),
                format!("user bob off #{h} ~b:* -@all"),
            ],
            tokens: vec![],
        };
        assert!(!s.default_on());
        assert!(s.has_users());
        assert!(s.accepts("alice", "pw"));
        assert!(!s.accepts("alice", "other"));
        assert!(!s.accepts("bob", "pw"), "off");
        assert!(!s.accepts("default", "pw"));
        let t = s.mint("alice", "pw").unwrap();
        assert_eq!(s.mint("alice", "pw").unwrap(), t, "same pair, same token");
        assert!(s.mint("alice", "x").is_none());
        s.replace(vec!["user default on #abc ~* &* +@all".into()]);
        assert!(s.default_on());
        assert!(!s.has_users());
        assert!(
            s.token(&t).is_none(),
            "a deleted user's token stops working"
        );
        assert!(AclState::default().default_on());
    }

    #[test]
    fn replay_keeps_the_engine_password_of_default() {
        let cmds = replay(
            &[
                "user default off #abc ~* &* +@all".into(),
                "user alice on #def ~a:* -@all +get".into(),
            ],
            "internal",
        );
        assert_eq!(
            cmds[0],
            a(&[
                "ACL",
                "SETUSER",
                "default",
                "reset",
                ">internal",
                "off",
                "~*",
                "&*",
                "+@all"
            ])
        );
        assert_eq!(
            cmds[1],
            a(&[
                "ACL", "SETUSER", "alice", "reset", "on", "#def", "~a:*", "-@all", "+get"
            ])
        );
    }

    #[test]
    fn hidden_users_stay_out_of_lists() {
        let r = hide(Reply::Array(vec![
            Reply::Bulk(b"user default on ~* +@all".to_vec()),
            Reply::Bulk(b"user default_ro on ~* +@read".to_vec()),
            Reply::Bulk(b"user upstash-emulator on ~* +@all".to_vec()),
            Reply::Bulk(b"user alice on ~a:*".to_vec()),
        ]));
        assert_eq!(
            r,
            Reply::Array(vec![
                Reply::Bulk(b"user default on ~* +@all".to_vec()),
                Reply::Bulk(b"user alice on ~a:*".to_vec()),
            ])
        );
        let r = hide(Reply::Array(vec![
            Reply::Bulk(b"alice".to_vec()),
            Reply::Bulk(b"upstash-emulator".to_vec()),
        ]));
        assert_eq!(r, Reply::Array(vec![Reply::Bulk(b"alice".to_vec())]));
        assert!(changes_users(&a(&["acl", "setuser", "x"])));
        assert!(!changes_users(&a(&["acl", "list"])));
        assert!(sets_password(b">x") && sets_password(b"nopass") && !sets_password(b"off"));
    }
}
