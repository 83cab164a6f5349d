//! Developer API keys and teams.
//!
//! A key belongs to a person (an email) and acts either for that person (a personal key) or for
//! one of the teams the person belongs to (a team key), like Upstash's keys, which act only in
//! the account or team they were made in. A database belongs to its owner: the person's email or
//! the team's id, shown as `customer_id` and `user_email`; so the same person's personal and team
//! keys see different databases. A key can be read-only: its mutating calls are refused.
//!
//! Keys are configured as `email:apikey`, with optional `;team=<team name>` and `;readonly`
//! (`ops@example.com:key1;team=Platform;readonly`), or as JSON objects
//! `{"email", "api_key", "team", "readonly"}`. A team named in a key is created when it does not
//! exist, with a stable id derived from its name, and the key's person joins it (the first as
//! `owner`, later ones as `dev`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One configured or added API key (`team` is a team name, resolved when added).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySpec {
    pub email: String,
    pub api_key: String,
    pub team: Option<String>,
    pub read_only: bool,
    /// The key's name, shown as the source of its changes in the audit log.
    pub name: Option<String>,
}

impl KeySpec {
    pub fn personal(email: &str, api_key: &str) -> Self {
        KeySpec {
            email: email.into(),
            api_key: api_key.into(),
            ..Default::default()
        }
    }
}

/// A stored API key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    pub email: String,
    pub key: String,
    /// The team the key acts for (`None`: the person's own account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// The key's name (the audit log's `API_KEY - <name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A team member's role (Upstash: owner, admin, dev, finance).
pub const ROLES: &[&str] = &["owner", "admin", "dev", "finance"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub email: String,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Team {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub copy_cc: bool,
    pub members: Vec<Member>,
}

impl Team {
    pub fn role_of(&self, email: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.email == email)
            .map(|m| m.role.as_str())
    }
}

/// Who is calling the Developer API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub email: String,
    /// The owner of the databases this key sees: the email, or the team id.
    pub owner: String,
    pub team_id: Option<String>,
    pub read_only: bool,
    /// The key's name (`default` when it has none).
    pub key_name: String,
}

/// Keys and teams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accounts {
    #[serde(default)]
    pub keys: Vec<ApiKey>,
    #[serde(default)]
    pub teams: BTreeMap<String, Team>,
}

/// The stable id of a team configured by name.
pub fn team_id_for_name(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("upstash-emulator:team:{name}").as_bytes(),
    )
    .to_string()
}

impl Accounts {
    /// Adds a key (replacing an earlier key with the same value); a named team is found by name
    /// or id, or created. Returns the stored key.
    pub fn add(&mut self, spec: &KeySpec) -> anyhow::Result<ApiKey> {
        anyhow::ensure!(
            !spec.email.is_empty() && !spec.api_key.is_empty(),
            "an API key needs an email and a key"
        );
        let team_id = spec.team.as_ref().map(|t| self.join_team(t, &spec.email));
        let key = ApiKey {
            email: spec.email.clone(),
            key: spec.api_key.clone(),
            team_id,
            read_only: spec.read_only,
            name: spec.name.clone(),
        };
        self.keys.retain(|k| k.key != key.key);
        self.keys.push(key.clone());
        Ok(key)
    }

    /// The team named (by id or name), created if missing; `email` becomes a member.
    fn join_team(&mut self, name_or_id: &str, email: &str) -> String {
        let found = self
            .teams
            .values()
            .find(|t| t.id == name_or_id || t.name == name_or_id)
            .map(|t| t.id.clone());
        let id = found.unwrap_or_else(|| {
            let id = team_id_for_name(name_or_id);
            self.teams.insert(
                id.clone(),
                Team {
                    id: id.clone(),
                    name: name_or_id.to_string(),
                    copy_cc: false,
                    members: vec![],
                },
            );
            id
        });
        let team = self.teams.get_mut(&id).expect("just found or made");
        if team.role_of(email).is_none() {
            let role = if team.members.is_empty() {
                "owner"
            } else {
                "dev"
            };
            team.members.push(Member {
                email: email.into(),
                role: role.into(),
            });
        }
        id
    }

    /// The caller for an email and key, or `None`.
    pub fn authenticate(&self, email: &str, key: &str) -> Option<Principal> {
        let k = self
            .keys
            .iter()
            .find(|k| k.email == email && constant_time_eq(k.key.as_bytes(), key.as_bytes()))?;
        // A team key stops working when its person leaves the team or the team is deleted.
        if let Some(t) = &k.team_id {
            self.teams.get(t)?.role_of(email)?;
        }
        Some(Principal {
            email: k.email.clone(),
            owner: k.team_id.clone().unwrap_or_else(|| k.email.clone()),
            team_id: k.team_id.clone(),
            read_only: k.read_only,
            key_name: k.name.clone().unwrap_or_else(|| "default".into()),
        })
    }

    /// The distinct emails with a key.
    pub fn emails(&self) -> Vec<String> {
        let mut v: Vec<String> = self.keys.iter().map(|k| k.email.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The teams a person belongs to.
    pub fn teams_of(&self, email: &str) -> Vec<&Team> {
        self.teams
            .values()
            .filter(|t| t.role_of(email).is_some())
            .collect()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses keys from `email:apikey[;team=NAME][;readonly],...` (flag/env form).
pub fn parse_list(s: &str) -> anyhow::Result<Vec<KeySpec>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse_one)
        .collect()
}

fn parse_one(s: &str) -> anyhow::Result<KeySpec> {
    let mut parts = s.split(';');
    let head = parts.next().unwrap_or_default();
    let (email, key) = head
        .split_once(':')
        .with_context(|| format!("account {head:?} is not email:apikey"))?;
    anyhow::ensure!(
        !email.is_empty() && !key.is_empty(),
        "account {head:?} is not email:apikey"
    );
    let mut spec = KeySpec::personal(email, key);
    for opt in parts.map(str::trim).filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("team", team)) if !team.is_empty() => spec.team = Some(team.to_string()),
            None if opt == "readonly" => spec.read_only = true,
            _ => anyhow::bail!("account option {opt:?} of {email} is not team=<name> or readonly"),
        }
    }
    Ok(spec)
}

/// Parses an accounts file: one `email:key[;team=NAME][;readonly]` per line (`#` comments), or
/// JSON — an object `{"email": "key"}` or an array of
/// `{"email", "api_key", "team"?, "readonly"?}`.
pub fn parse_file(text: &str) -> anyhow::Result<Vec<KeySpec>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let v: serde_json::Value = serde_json::from_str(text).context("accounts file JSON")?;
        let mut out = vec![];
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = v
                        .as_str()
                        .context("accounts file: values must be API keys")?;
                    out.push(KeySpec::personal(&k, key));
                }
            }
            serde_json::Value::Array(items) => {
                for it in items {
                    let email = it["email"]
                        .as_str()
                        .context("accounts file: missing email")?;
                    let key = it["api_key"]
                        .as_str()
                        .or(it["apiKey"].as_str())
                        .context("accounts file: missing api_key")?;
                    let mut spec = KeySpec::personal(email, key);
                    spec.team = it["team"].as_str().map(str::to_string);
                    spec.read_only = it["readonly"]
                        .as_bool()
                        .or(it["read_only"].as_bool())
                        .unwrap_or(false);
                    out.push(spec);
                }
            }
            _ => anyhow::bail!("accounts file: expected an object or an array"),
        }
        return Ok(out);
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_one)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_keeps_the_old_forms_and_reads_options() {
        assert_eq!(
            parse_list("a@b.c:k1, d@e.f:k2").unwrap(),
            vec![
                KeySpec::personal("a@b.c", "k1"),
                KeySpec::personal("d@e.f", "k2")
            ]
        );
        assert!(parse_list("nokey").is_err());
        assert_eq!(
            parse_file("# c\na@b.c:k:with:colons\n\n").unwrap(),
            vec![KeySpec::personal("a@b.c", "k:with:colons")]
        );
        assert_eq!(
            parse_file(r#"{"a@b.c":"k"}"#).unwrap(),
            vec![KeySpec::personal("a@b.c", "k")]
        );
        assert_eq!(
            parse_file(r#"[{"email":"a@b.c","api_key":"k"}]"#).unwrap(),
            vec![KeySpec::personal("a@b.c", "k")]
        );
        let team = parse_list("a@b.c:k2;team=Platform Team;readonly").unwrap();
        assert_eq!(team[0].team.as_deref(), Some("Platform Team"));
        assert!(team[0].read_only);
        assert!(parse_list("a@b.c:k;admin").is_err());
        let json =
            parse_file(r#"[{"email":"a@b.c","api_key":"k","team":"T","readonly":true}]"#).unwrap();
        assert_eq!(json[0].team.as_deref(), Some("T"));
        assert!(json[0].read_only);
    }

    #[test]
    fn team_keys_act_for_the_team_and_stop_with_membership() {
        let mut a = Accounts::default();
        a.add(&KeySpec::personal("p@x.io", "own")).unwrap();
        let mut spec = KeySpec::personal("p@x.io", "team-key");
        spec.team = Some("Platform".into());
        let k = a.add(&spec).unwrap();
        let team = k.team_id.clone().unwrap();
        assert_eq!(team, team_id_for_name("Platform"));
        assert_eq!(a.teams[&team].role_of("p@x.io"), Some("owner"));
        let personal = a.authenticate("p@x.io", "own").unwrap();
        assert_eq!(personal.owner, "p@x.io");
        let team_p = a.authenticate("p@x.io", "team-key").unwrap();
        assert_eq!(team_p.owner, team);
        assert!(a.authenticate("p@x.io", "wrong").is_none());
        assert!(a.authenticate("q@x.io", "own").is_none());
        a.teams.get_mut(&team).unwrap().members.clear();
        assert!(a.authenticate("p@x.io", "team-key").is_none());
    }
}
