//! The users' changes: `ACL` commands through the data plane and the users' Secrets.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
};
use rand::{Rng as _, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};

use super::{
    client,
    plan::{self, Desired, Why},
};
use crate::{
    controller::{
        Context, FIELD_MANAGER,
        restarts::{self, workload_resource},
        secret::{self, ConnectionDetails},
    },
    crd::CacheInstance,
    error::Result,
    events::EventType,
};

/// A new password: 40 letters and digits.
pub(super) fn generate_password() -> SecretString {
    SecretString::from(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>(),
    )
}

/// One Event per kind of change in a pass, naming the users.
pub(super) fn announce(
    obj: &CacheInstance,
    ctx: &Context,
    set: &[(Desired, Why, SecretString, SecretString)],
) {
    let names = |f: fn(&Why) -> bool| {
        let users: Vec<&Desired> = set
            .iter()
            .filter(|(_, w, ..)| f(w))
            .map(|(u, ..)| u)
            .collect();
        (!users.is_empty()).then(|| {
            (
                users
                    .iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                users
                    .iter()
                    .map(|u| u.secret_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    };
    if let Some((users, secrets)) = names(|w| *w == Why::New) {
        ctx.publish(
            obj,
            EventType::Normal,
            "AclUserCreated",
            "SetUser",
            &format!("created ACL user {users} and wrote Secret {secrets}"),
        );
    }
    if let Some((users, _)) = names(|w| *w == Why::Missing) {
        ctx.publish(
            obj,
            EventType::Normal,
            "DriftCorrected",
            "SetUser",
            &format!(
                "ACL user {users} was missing from the database (deleted outside Kubernetes, or dropped by a restore or a new database); created it again"
            ),
        );
    }
    if let Some((users, _)) = names(|w| *w == Why::Drifted) {
        ctx.publish(
            obj,
            EventType::Normal,
            "DriftCorrected",
            "SetUser",
            &format!(
                "set ACL user {users} back to the spec after a change made outside Kubernetes"
            ),
        );
    }
    if let Some((users, _)) = names(|w| *w == Why::Changed) {
        ctx.publish(
            obj,
            EventType::Normal,
            "AclUserUpdated",
            "SetUser",
            &format!("updated ACL user {users} to match the spec"),
        );
    }
    if let Some((users, secrets)) = names(|w| matches!(w, Why::Rotate(_))) {
        ctx.publish(
            obj,
            EventType::Normal,
            "AclUserRotated",
            "SetUser",
            &format!(
                "rotated the password of ACL user {users} on request and rewrote Secret {secrets}"
            ),
        );
    }
    if let Some((users, secrets)) = names(|w| *w == Why::Scheduled) {
        ctx.publish(
            obj,
            EventType::Normal,
            "AclUserRotated",
            "SetUser",
            &format!(
                "rotated the password of ACL user {users} on its schedule and rewrote Secret {secrets}"
            ),
        );
    }
}

/// Why a step did not happen.
pub(super) enum Failure {
    /// The data plane could not be reached or refused the token: try again later.
    DataPlane(client::CallError),
    /// Redis refused the command (its error text; never an argument).
    Refused(String),
    Kube(kube::Error),
}

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Failure::Kube(e)
    }
}

pub(super) struct Applier<'a> {
    pub obj: &'a CacheInstance,
    pub ctx: &'a Context,
    pub namespace: &'a str,
    pub details: &'a ConnectionDetails,
    pub rest_url: &'a str,
    pub token: &'a SecretString,
}

impl Applier<'_> {
    pub fn api(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), self.namespace)
    }

    /// Sets the user in Redis and mints its REST token; `None` when its Secret's name is taken
    /// by a Secret the operator does not own (nothing is done then).
    pub async fn set(
        &mut self,
        user: &Desired,
        new_password: bool,
    ) -> Result<Option<(SecretString, SecretString)>, Failure> {
        let taken_by_main = user.secret_name == secret::secret_name(self.obj)
            || secret::read_only_secret_name(self.obj).as_deref()
                == Some(user.secret_name.as_str());
        if taken_by_main {
            return Ok(None);
        }
        let password = if new_password {
            new_password_checked(self, user).await?
        } else {
            // The password the user's Secret holds (read only when the user is set again).
            let existing = self.api().get_opt(&user.secret_name).await?;
            match existing {
                Some(s) if !secret::owned_by(&s.metadata, self.obj) => return Ok(None),
                Some(s) => s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("REDIS_PASSWORD"))
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
                    .filter(|p| !p.is_empty())
                    .map(SecretString::from)
                    .unwrap_or_else(generate_password),
                None => generate_password(),
            }
        };
        let commands = vec![
            plan::setuser(user, password.expose_secret()),
            vec![
                "ACL".into(),
                "RESTTOKEN".into(),
                user.name.clone(),
                password.expose_secret().to_string(),
            ],
        ];
        let answers = client::pipeline(self.rest_url, self.token, &commands)
            .await
            .map_err(Failure::DataPlane)?;
        match answers.as_slice() {
            [Ok(_), Ok(serde_json::Value::String(token))] => {
                Ok(Some((password, SecretString::from(token.clone()))))
            }
            [Err(e), ..] | [_, Err(e)] => Err(Failure::Refused(redact(e, &password))),
            _ => Err(Failure::Refused("ACL RESTTOKEN gave no token".into())),
        }
    }

    /// Deletes the user (unless `user` is empty: only the Secret goes) and its Secret.
    pub async fn delete(&mut self, user: &str, secret_name: &str) -> Result<(), Failure> {
        if !user.is_empty() {
            let answers = client::pipeline(
                self.rest_url,
                self.token,
                &[vec!["ACL".into(), "DELUSER".into(), user.to_string()]],
            )
            .await
            .map_err(Failure::DataPlane)?;
            if let Some(Err(e)) = answers.first() {
                return Err(Failure::Refused(format!(
                    "deleting ACL user {user} failed: {e}"
                )));
            }
        }
        self.ctx.owned_secrets.deleted(self.namespace, secret_name);
        match self
            .api()
            .delete(secret_name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        let note = if user.is_empty() {
            format!("deleted Secret {secret_name}, which the spec no longer names")
        } else {
            format!(
                "deleted ACL user {user}, which the spec no longer lists, and its Secret {secret_name}"
            )
        };
        self.ctx.publish(
            self.obj,
            EventType::Normal,
            "AclUserDeleted",
            "DeleteUser",
            &note,
        );
        Ok(())
    }

    pub async fn write_secret(
        &mut self,
        user: &Desired,
        why: &Why,
        password: &SecretString,
        rest_token: &SecretString,
        line_digest: &str,
    ) -> Result<()> {
        let data = user_data(self.ctx, self.obj, self.details, user, password, rest_token).await?;
        let kind = secret::secret_type(self.obj);
        let mut s = secret::build_secret(self.obj, &user.secret_name, kind, data);
        s.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(plan::USER_LABEL.into(), user.name.clone());
        let annotations = s.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(plan::SPEC_ANNOTATION.into(), user.spec_digest.clone());
        annotations.insert(plan::LINE_ANNOTATION.into(), line_digest.to_string());
        // The request served stays recorded until another one is made.
        let served = match why {
            Why::Rotate(r) => Some(r.clone()),
            _ => user.rotation.clone(),
        };
        if let Some(served) = served {
            annotations.insert(plan::SERVED_ANNOTATION.into(), served);
        }
        // A Secret's type cannot change: one of another type (a preset added or removed) is
        // replaced.
        let other_type = self
            .ctx
            .owned_secrets
            .get(self.namespace, &user.secret_name)
            .is_some_and(|e| e.type_.as_deref().unwrap_or("Opaque") != kind);
        if other_type {
            self.ctx
                .owned_secrets
                .deleted(self.namespace, &user.secret_name);
            match self
                .api()
                .delete(&user.secret_name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let applied = self
            .api()
            .patch(
                &user.secret_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&s),
            )
            .await?;
        self.ctx.owned_secrets.wrote(applied);
        Ok(())
    }
}

/// The data of a user's Secret: the instance's presets (`spec.secret.presets`) and templates
/// (`spec.secret.templates`, rendered in the bounded renderer) with the user's name, password
/// and REST token in place of the `default` user's (and no read-only token: templates see
/// `readOnlyRestToken` empty).
async fn user_data(
    ctx: &Context,
    obj: &CacheInstance,
    details: &ConnectionDetails,
    user: &Desired,
    password: &SecretString,
    rest_token: &SecretString,
) -> Result<BTreeMap<String, String>> {
    let mut d = details.clone();
    d.password = password.clone();
    d.rest_token = rest_token.clone();
    d.read_only_rest_token = SecretString::from("");
    let host = d.host();
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!(
        "rediss://{}:{}@{host}:{}",
        user.name,
        password.expose_secret(),
        d.port
    );
    let rendered = match secret::templates(obj) {
        Some(templates) => {
            let mut context = d.template_context();
            context["redisUrl"] = url.clone().into();
            context["username"] = user.name.clone().into();
            ctx.templates
                .render_all(templates, &context)
                .await
                .map_err(|e| {
                    crate::error::Error::TemplateEngine(format!(
                        "spec.secret.templates.{}: could not be rendered for ACL user {}",
                        e.key, user.name
                    ))
                })?
        }
        None => BTreeMap::new(),
    };
    let mut base = secret::connection_data(obj, &d, &BTreeMap::new());
    if base.contains_key("REDIS_URL") {
        base.insert("REDIS_URL".into(), url.clone());
        base.insert("REDIS_USERNAME".into(), user.name.clone());
    }
    if base.contains_key("uri") {
        base.insert("uri".into(), url);
        base.insert("username".into(), user.name.clone());
    }
    base.extend(rendered);
    Ok(base)
}

/// Requests a restart of the workloads listed for `user` after its password was rotated, through
/// the operator's coalescing restarts (`controller/restarts.rs`): the user's entry in the
/// workloads' `credentials-hash` annotation becomes a digest of its new credentials, in the same
/// write as the other credentials that changed within `--restart-window`, and at most once per
/// `--min-restart-interval`. Workloads that do not exist are left out. Returns the workloads
/// whose restart was requested.
pub(super) async fn restart(
    ctx: &Context,
    obj: &CacheInstance,
    user: &Desired,
    password: &SecretString,
) -> Result<Vec<String>> {
    let namespace = obj.namespace().unwrap_or_default();
    let fingerprint = plan::digest(&[&user.name, &user.secret_name, password.expose_secret()]);
    let key = restarts::user_key(&namespace, &obj.name_any(), &user.name);
    let mut present = Vec::new();
    for target in &user.restart {
        let api: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            &namespace,
            &workload_resource(target.kind),
        );
        // A workload that does not exist (yet) has nothing to restart.
        if api.get_metadata_opt(&target.name).await?.is_some() {
            present.push(target.clone());
        }
    }
    Ok(ctx
        .restarts
        .request(&ctx.client, &namespace, &present, &key, &fingerprint))
}

/// A new password for a user whose Secret is about to be written; `Failure` when the Secret's
/// name belongs to someone else (checked on the API server: the cache holds only the
/// operator's Secrets).
async fn new_password_checked(
    applier: &Applier<'_>,
    user: &Desired,
) -> Result<SecretString, Failure> {
    if applier
        .ctx
        .owned_secrets
        .get(applier.namespace, &user.secret_name)
        .is_none_or(|s| !secret::owned_by(&s.metadata, applier.obj))
    {
        let existing = applier.api().get_metadata_opt(&user.secret_name).await?;
        if existing.is_some_and(|s| !secret::owned_by(&s.metadata, applier.obj)) {
            return Err(Failure::Refused(format!(
                "Secret {} exists and is not the operator's: ACL user {} is not created",
                user.secret_name, user.name
            )));
        }
    }
    Ok(generate_password())
}

/// An error text with the password taken out, should Redis ever echo it.
fn redact(error: &str, password: &SecretString) -> String {
    error.replace(password.expose_secret(), "<redacted>")
}
