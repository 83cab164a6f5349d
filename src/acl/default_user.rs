//! `spec.defaultUser`: turning the database's `default` user off (or on), and the operator's own
//! ACL user (`upstash-operator`, allowed only `ACL` commands) that manages the users once the
//! main credentials stop working. Its password and REST token live in a Secret the operator
//! owns; the token is kept in memory after the first read, so a settled instance reads no
//! Secret.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use secrecy::{ExposeSecret, SecretString};

use super::{apply::generate_password, client};
use crate::{
    controller::{Context, FIELD_MANAGER, secret},
    crd::CacheInstance,
    error::Result,
};

/// The operator's own ACL user.
pub const OPERATOR_USER: &str = "upstash-operator";
/// Label on the Secret of the operator's own ACL user.
pub const OPERATOR_LABEL: &str = "cache.upstash-operator.dev/acl-operator";

/// The operator's REST token per database, once read or minted.
static TOKENS: Mutex<Option<HashMap<String, SecretString>>> = Mutex::new(None);

fn tokens() -> std::sync::MutexGuard<'static, Option<HashMap<String, SecretString>>> {
    TOKENS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The Secret holding the operator's own user of `obj`'s database.
pub fn secret_name(obj: &CacheInstance) -> String {
    format!("{}-{OPERATOR_USER}", obj.name_any())
}

/// Whether `default` is on, from its `ACL LIST` line (on when the line is missing).
pub fn default_on(lines: &BTreeMap<String, String>) -> bool {
    lines.get("default").is_none_or(|l| {
        l.split_whitespace()
            .rev()
            .find(|t| matches!(*t, "on" | "off"))
            != Some("off")
    })
}

/// The operator's own token for `database_id`: from memory, else from its Secret (one read,
/// only when the operator holds such a Secret).
pub async fn known_token(
    ctx: &Context,
    obj: &CacheInstance,
    namespace: &str,
    database_id: &str,
) -> Result<Option<SecretString>> {
    if let Some(t) = tokens().as_ref().and_then(|m| m.get(database_id)).cloned() {
        return Ok(Some(t));
    }
    let name = secret_name(obj);
    if ctx
        .owned_secrets
        .get(namespace, &name)
        .is_none_or(|s| !secret::owned_by(&s.metadata, obj))
    {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(s) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    let data = s.data.unwrap_or_default();
    let value = |k: &str| {
        data.get(k)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    if value("DATABASE_ID").as_deref() != Some(database_id) {
        return Ok(None);
    }
    let token = value("UPSTASH_REDIS_REST_TOKEN").map(SecretString::from);
    if let Some(t) = &token {
        remember(database_id, t.clone());
    }
    Ok(token)
}

fn remember(database_id: &str, token: SecretString) {
    tokens()
        .get_or_insert_with(HashMap::new)
        .insert(database_id.to_string(), token);
}

/// Forgets a token the database refused.
pub fn forget(database_id: &str) {
    if let Some(m) = tokens().as_mut() {
        m.remove(database_id);
    }
}

/// Creates (or sets again) the operator's own user with `token` (a credential that works) and
/// writes its Secret; returns its REST token.
pub async fn ensure_own_user(
    ctx: &Context,
    obj: &CacheInstance,
    namespace: &str,
    database_id: &str,
    rest_url: &str,
    token: &SecretString,
) -> Result<std::result::Result<SecretString, String>> {
    let password = generate_password();
    let commands = vec![
        vec![
            "ACL".to_string(),
            "SETUSER".into(),
            OPERATOR_USER.into(),
            "reset".into(),
            "on".into(),
            format!(">{}", password.expose_secret()),
            "resetkeys".into(),
            "resetchannels".into(),
            "-@all".into(),
            "+acl".into(),
        ],
        vec![
            "ACL".into(),
            "RESTTOKEN".into(),
            OPERATOR_USER.into(),
            password.expose_secret().to_string(),
        ],
    ];
    let own = match client::pipeline(rest_url, token, &commands).await {
        Ok(answers) => match answers.as_slice() {
            [Ok(_), Ok(serde_json::Value::String(t))] => SecretString::from(t.clone()),
            [Err(e), ..] | [_, Err(e)] => {
                return Ok(Err(e.replace(password.expose_secret(), "<redacted>")));
            }
            _ => return Ok(Err("ACL RESTTOKEN gave no token".into())),
        },
        Err(e) => return Ok(Err(e.to_string())),
    };
    let data = BTreeMap::from([
        ("DATABASE_ID".to_string(), database_id.to_string()),
        ("REDIS_USERNAME".to_string(), OPERATOR_USER.to_string()),
        (
            "REDIS_PASSWORD".to_string(),
            password.expose_secret().to_string(),
        ),
        ("UPSTASH_REDIS_REST_URL".to_string(), rest_url.to_string()),
        (
            "UPSTASH_REDIS_REST_TOKEN".to_string(),
            own.expose_secret().to_string(),
        ),
    ]);
    let name = secret_name(obj);
    let mut s = secret::build_secret(obj, &name, "Opaque", data);
    s.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(OPERATOR_LABEL.into(), "true".into());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&s),
        )
        .await?;
    ctx.owned_secrets.wrote(applied);
    remember(database_id, own.clone());
    Ok(Ok(own))
}

/// `ACL SETUSER default on|off`.
pub async fn switch_default(
    rest_url: &str,
    token: &SecretString,
    on: bool,
) -> std::result::Result<(), String> {
    let command = vec![
        "ACL".to_string(),
        "SETUSER".into(),
        "default".into(),
        if on { "on" } else { "off" }.into(),
    ];
    match client::pipeline(rest_url, token, &[command]).await {
        Ok(answers) => match answers.first() {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("no answer".into()),
        },
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_status_from_its_line() {
        let lines = |l: &str| BTreeMap::from([("default".to_string(), l.to_string())]);
        assert!(default_on(&BTreeMap::new()));
        assert!(default_on(&lines("user default on #x ~* +@all")));
        assert!(!default_on(&lines("user default off #x ~* +@all")));
    }
}
