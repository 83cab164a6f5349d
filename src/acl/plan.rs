//! What the ACL users of an instance need, decided from the spec, the users' Secrets (as the
//! operator's cache holds them: annotations, no data) and the database's `ACL LIST`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::jiff::SignedDuration;
use sha2::{Digest, Sha256};

use crate::crd::{AclUser, RestartTarget};

/// Label on a user's Secret: the user's name.
pub const USER_LABEL: &str = "cache.upstash-operator.dev/acl-user";
/// Annotation on a user's Secret: digest of what the user was set from (its rules and the
/// database it lives in).
pub const SPEC_ANNOTATION: &str = "cache.upstash-operator.dev/acl-spec";
/// Annotation on a user's Secret: digest of the user as `ACL LIST` showed it after the
/// operator set it (a different line later is a change made outside Kubernetes).
pub const LINE_ANNOTATION: &str = "cache.upstash-operator.dev/acl-line";
/// Annotation on a user's Secret: the last rotation request it served.
pub const SERVED_ANNOTATION: &str = "cache.upstash-operator.dev/rotation-request";
/// Annotation on the CacheInstance, followed by the user's name: set it to a new value to
/// rotate that user's password.
pub const ROTATE_PREFIX: &str = "cache.upstash-operator.dev/rotate-user-";

/// SHA-256 in hex, shortened to 32 digits.
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One user as the spec wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    pub secret_name: String,
    /// `ACL SETUSER <name> reset >password` followed by these.
    pub rules: Vec<String>,
    /// Digest of the rules and the database (see [`SPEC_ANNOTATION`]).
    pub spec_digest: String,
    /// The rotation request on the instance, if any.
    pub rotation: Option<String>,
    /// `rotation.every`, if set and valid.
    pub every: Option<SignedDuration>,
    /// Its scheduled rotation is due (decided by [`super::schedule`]).
    pub scheduled: bool,
    /// Workloads restarted when its password is rotated (`rotation.restart`).
    pub restart: Vec<RestartTarget>,
}

/// The database a user lives in, as far as its Secret is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub database_id: &'a str,
    pub endpoint: &'a str,
    pub port: u64,
    pub key_prefix: Option<&'a str>,
    /// Digest of the instance's `spec.secret` presets and templates, when it sets any (the
    /// users' Secrets are written with them).
    pub secret_format: Option<&'a str>,
}

/// The users the spec names, with their rules.
pub fn desired(
    instance_name: &str,
    users: &[AclUser],
    target: &Target<'_>,
    annotations: &BTreeMap<String, String>,
) -> Vec<Desired> {
    users
        .iter()
        .map(|u| {
            let mut rules = vec!["on".to_string()];
            rules.extend(
                u.key_patterns(target.key_prefix)
                    .iter()
                    .map(|k| format!("~{k}")),
            );
            match &u.channels {
                Some(c) if !c.is_empty() => rules.extend(c.iter().map(|c| format!("&{c}"))),
                _ => rules.push("resetchannels".into()),
            }
            rules.extend(u.command_rules());
            let secret_name = u
                .secret_name
                .clone()
                .unwrap_or_else(|| format!("{instance_name}-{}", u.name));
            let port = target.port.to_string();
            let mut parts: Vec<&str> = vec![
                &u.name,
                &secret_name,
                target.database_id,
                target.endpoint,
                &port,
                target.key_prefix.unwrap_or_default(),
            ];
            parts.extend(rules.iter().map(String::as_str));
            if let Some(format) = target.secret_format {
                parts.push(format);
            }
            Desired {
                spec_digest: digest(&parts),
                rotation: annotations
                    .get(&format!("{ROTATE_PREFIX}{}", u.name))
                    .filter(|v| !v.is_empty())
                    .cloned(),
                every: u
                    .rotation
                    .as_ref()
                    .and_then(|r| r.every.as_ref())
                    .and_then(|e| e.duration().ok())
                    .and_then(|e| SignedDuration::try_from(e).ok()),
                scheduled: false,
                restart: u
                    .rotation
                    .as_ref()
                    .and_then(|r| r.restart.clone())
                    .unwrap_or_default(),
                name: u.name.clone(),
                secret_name,
                rules,
            }
        })
        .collect()
}

/// A user's Secret as the cache shows it (no data).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecretView {
    pub name: String,
    /// The user it holds ([`USER_LABEL`]).
    pub user: String,
    pub spec_digest: Option<String>,
    pub line_digest: Option<String>,
    pub served: Option<String>,
}

/// Why a user is set.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    /// Not there yet: a new user and Secret.
    New,
    /// The database has no such user (deleted outside Kubernetes, dropped by a restore, or a
    /// new database).
    Missing,
    /// The user differs from what the operator set (changed outside Kubernetes).
    Drifted,
    /// The spec (or the database) changed.
    Changed,
    /// A rotation was requested (the request id).
    Rotate(String),
    /// Its scheduled rotation is due (`rotation.every`).
    Scheduled,
}

/// What one user needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `ACL SETUSER`, a REST token and the Secret; `new_password` when a password is generated.
    Set {
        user: Desired,
        why: Why,
        new_password: bool,
    },
    /// The spec no longer names the user: `ACL DELUSER` and the Secret goes.
    Delete { user: String, secret_name: String },
}

/// The steps, in order: sets first (by the spec's order), then deletes.
pub fn steps(
    desired: &[Desired],
    secrets: &[SecretView],
    lines: &BTreeMap<String, String>,
) -> Vec<Step> {
    let mut out = Vec::new();
    for d in desired {
        let secret = secrets
            .iter()
            .find(|s| s.user == d.name && s.name == d.secret_name);
        let Some(secret) = secret else {
            out.push(Step::Set {
                user: d.clone(),
                why: Why::New,
                new_password: true,
            });
            continue;
        };
        let why = match (&d.rotation, lines.get(&d.name)) {
            (Some(r), _) if secret.served.as_ref() != Some(r) => Some(Why::Rotate(r.clone())),
            _ if d.scheduled => Some(Why::Scheduled),
            (_, None) => Some(Why::Missing),
            _ if secret.spec_digest.as_deref() != Some(d.spec_digest.as_str()) => {
                Some(Why::Changed)
            }
            (_, Some(line)) if secret.line_digest.as_deref() != Some(digest(&[line]).as_str()) => {
                Some(Why::Drifted)
            }
            _ => None,
        };
        if let Some(why) = why {
            out.push(Step::Set {
                new_password: matches!(why, Why::Rotate(_) | Why::Scheduled),
                user: d.clone(),
                why,
            });
        }
    }
    for s in secrets {
        let named = desired
            .iter()
            .any(|d| d.name == s.user && d.secret_name == s.name);
        if !named {
            // A user renamed to another Secret keeps its Redis user (set again above).
            let user_kept = desired.iter().any(|d| d.name == s.user);
            out.push(Step::Delete {
                user: if user_kept {
                    String::new()
                } else {
                    s.user.clone()
                },
                secret_name: s.name.clone(),
            });
        }
    }
    out
}

/// What a step says in an Event or a condition.
pub fn describe(step: &Step) -> String {
    match step {
        Step::Set { user, why, .. } => match why {
            Why::New => format!("ACL user {} is to be created", user.name),
            Why::Missing => format!(
                "ACL user {} is missing from the database (deleted outside Kubernetes, or dropped by a restore or a new database)",
                user.name
            ),
            Why::Drifted => format!("ACL user {} was changed outside Kubernetes", user.name),
            Why::Changed => format!("ACL user {} differs from the spec", user.name),
            Why::Rotate(_) => format!("ACL user {}'s password rotation is requested", user.name),
            Why::Scheduled => format!(
                "ACL user {}'s scheduled password rotation is due",
                user.name
            ),
        },
        Step::Delete { user, secret_name } if user.is_empty() => {
            format!("Secret {secret_name} is no longer named by the spec")
        }
        Step::Delete { user, .. } => format!("ACL user {user} is no longer in the spec"),
    }
}

/// The `ACL SETUSER` arguments for `user` with `password`.
pub fn setuser(user: &Desired, password: &str) -> Vec<String> {
    let mut args = vec![
        "ACL".to_string(),
        "SETUSER".into(),
        user.name.clone(),
        "reset".into(),
        format!(">{password}"),
    ];
    args.extend(user.rules.iter().cloned());
    args
}

/// `ACL LIST` lines by user name.
pub fn lines_by_user(lines: &[String]) -> BTreeMap<String, String> {
    lines
        .iter()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            (parts.next() == Some("user"))
                .then(|| parts.next())
                .flatten()
                .map(|n| (n.to_string(), l.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(v: serde_json::Value) -> AclUser {
        serde_json::from_value(v).unwrap()
    }

    const TARGET: Target<'static> = Target {
        database_id: "db1",
        endpoint: "x.upstash.io",
        port: 6379,
        key_prefix: Some("a:"),
        secret_format: None,
    };

    fn want(users: &[AclUser]) -> Vec<Desired> {
        desired("shop", users, &TARGET, &BTreeMap::new())
    }

    #[test]
    fn rules_default_to_the_prefix_and_no_admin_or_dangerous_command() {
        let d = want(&[user(serde_json::json!({"name": "a"}))]);
        assert_eq!(
            d[0].rules,
            [
                "on",
                "~a:*",
                "resetchannels",
                "+@all",
                "-@admin",
                "-@dangerous"
            ]
        );
        assert_eq!(d[0].secret_name, "shop-a");
        let d = want(&[user(
            serde_json::json!({"name": "r", "readOnly": true, "keys": ["x:*", "y"], "channels": ["c"], "secretName": "mine"}),
        )]);
        assert_eq!(
            d[0].rules,
            ["on", "~x:*", "~y", "&c", "+@read", "-@dangerous"]
        );
        assert_eq!(d[0].secret_name, "mine");
        let d = want(&[user(serde_json::json!({"name": "c", "commands": ["+get"]}))]);
        assert_eq!(d[0].rules, ["on", "~a:*", "resetchannels", "+get"]);
        let line = "user a on #x ~a:* resetchannels -@all";
        assert_eq!(
            setuser(&want(&[user(serde_json::json!({"name": "a"}))])[0], "pw")[..5],
            ["ACL", "SETUSER", "a", "reset", ">pw"]
        );
        assert_eq!(lines_by_user(&[line.into()])["a"], line);
    }

    #[test]
    fn steady_state_needs_nothing_and_each_difference_one_step() {
        let d = want(&[user(serde_json::json!({"name": "a"}))]);
        let line = "user a on #h ~a:* resetchannels +@all -@admin -@dangerous".to_string();
        let lines = BTreeMap::from([("a".to_string(), line.clone())]);
        let secret = SecretView {
            name: "shop-a".into(),
            user: "a".into(),
            spec_digest: Some(d[0].spec_digest.clone()),
            line_digest: Some(digest(&[&line])),
            served: None,
        };
        assert!(steps(&d, std::slice::from_ref(&secret), &lines).is_empty());

        let why = |d: &[Desired], s: &SecretView, l: &BTreeMap<String, String>| match steps(
            d,
            std::slice::from_ref(s),
            l,
        )
        .as_slice()
        {
            [
                Step::Set {
                    why, new_password, ..
                },
            ] => (why.clone(), *new_password),
            other => panic!("{other:?}"),
        };
        assert_eq!(why(&d, &secret, &BTreeMap::new()), (Why::Missing, false));
        let changed = BTreeMap::from([("a".to_string(), format!("{line} +flushall"))]);
        assert_eq!(why(&d, &secret, &changed), (Why::Drifted, false));
        let other_db = desired(
            "shop",
            &[user(serde_json::json!({"name": "a"}))],
            &Target {
                database_id: "db2",
                ..TARGET
            },
            &BTreeMap::new(),
        );
        assert_eq!(why(&other_db, &secret, &lines), (Why::Changed, false));
        let rotate = desired(
            "shop",
            &[user(serde_json::json!({"name": "a"}))],
            &TARGET,
            &BTreeMap::from([(format!("{ROTATE_PREFIX}a"), "r1".to_string())]),
        );
        assert_eq!(
            why(&rotate, &secret, &lines),
            (Why::Rotate("r1".into()), true)
        );
        let served = SecretView {
            served: Some("r1".into()),
            ..secret.clone()
        };
        assert!(steps(&rotate, &[served], &lines).is_empty());
        let mut due = d.clone();
        due[0].scheduled = true;
        assert_eq!(why(&due, &secret, &lines), (Why::Scheduled, true));

        // New users, and Secrets the spec no longer names.
        assert!(matches!(
            steps(&d, &[], &lines).as_slice(),
            [Step::Set {
                why: Why::New,
                new_password: true,
                ..
            }]
        ));
        assert_eq!(
            steps(&[], std::slice::from_ref(&secret), &lines),
            [Step::Delete {
                user: "a".into(),
                secret_name: "shop-a".into()
            }]
        );
    }
}
