//! Redis ACL users of a CacheInstance (`spec.users`): one user per application, scoped to its
//! keys, with a generated password and a Secret of its own, reconciled like every other setting.
//!
//! One pass: read the users' Secrets from the operator's cache (annotations only, no data) and
//! the database's `ACL LIST` (one REST request), decide ([`plan`], pure), then set the users
//! that need it (`ACL SETUSER` and `ACL RESTTOKEN` in one pipeline per user, then one more `ACL
//! LIST`), write their Secrets and delete those the spec no longer names. An instance that never
//! listed users costs nothing; a settled one with users costs one REST request per resync and no
//! Kubernetes write. Passwords are generated here, written only to the users' Secrets, and never
//! logged, put in Events, status or metrics.

pub mod client;
pub mod plan;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use rand::{Rng as _, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};

use self::plan::{Desired, SecretView, Step, Why};
use crate::{
    controller::{
        Context, FIELD_MANAGER,
        conditions::{self, Cond},
        secret::{self, ConnectionDetails},
    },
    crd::CacheInstance,
    error::Result,
    events::EventType,
    upstash::Database,
};

/// The condition that tells how the instance's ACL users are.
pub const USERS_READY: &str = "UsersReady";

/// How soon a pass that could not reach the data plane looks again.
const RETRY: Duration = Duration::from_secs(30);

/// What the users' part of a pass reports: a condition (none for an instance that never listed
/// users) and how soon to come back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub cond: Option<Cond>,
    pub retry: Option<Duration>,
}

impl Outcome {
    fn cond(status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            cond: Some(Cond::new(USERS_READY, status, reason, message)),
            retry: None,
        }
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry = Some(after);
        self
    }
}

/// A new password: 40 letters and digits.
fn generate_password() -> SecretString {
    SecretString::from(
        rand::rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>(),
    )
}

fn view(s: &Secret) -> SecretView {
    let annotation = |k: &str| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    SecretView {
        name: s.name_any(),
        user: s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(plan::USER_LABEL))
            .cloned()
            .unwrap_or_default(),
        spec_digest: annotation(plan::SPEC_ANNOTATION),
        line_digest: annotation(plan::LINE_ANNOTATION),
        served: annotation(plan::SERVED_ANNOTATION),
    }
}

/// The users' part of a pass over a live instance whose database is `db` (read this pass, with
/// its credentials), after its main Secrets are written.
pub async fn reconcile(
    obj: &CacheInstance,
    ctx: &Context,
    db: &Database,
    observe_only: bool,
) -> Result<Outcome> {
    let users = obj.spec.users.as_deref().unwrap_or_default();
    let previous = obj
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, USERS_READY));
    if users.is_empty() && previous.is_none() {
        // Never had users: nothing to read, nothing to call.
        return Ok(Outcome::default());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let secrets: Vec<SecretView> = ctx
        .owned_secrets
        .with_label(&namespace, plan::USER_LABEL)
        .iter()
        .filter(|s| secret::owned_by(&s.metadata, obj))
        .map(|s| view(s))
        .collect();
    if users.is_empty() && secrets.is_empty() {
        return Ok(Outcome::cond(
            true,
            "NoUsers",
            "spec.users lists no ACL user",
        ));
    }
    if !users.is_empty() && db.plan_type == "free" {
        // Upstash has no ACL users on the free plan: no call is made.
        return Ok(Outcome::cond(
            false,
            "FreePlan",
            format!(
                "spec.users lists ACL users, but database {} is on the free plan, which has none: set plan: payg (or a fixed plan), or remove spec.users",
                db.database_id
            ),
        ));
    }
    let details = ConnectionDetails::new(obj, db);
    let rest_url = details.rest_url();
    let Some(token) = db.rest_token.clone() else {
        return Ok(Outcome::cond(
            false,
            "NoToken",
            "the database's REST token is not available, so its ACL users cannot be read",
        )
        .retry(RETRY));
    };
    let lines = match client::acl_list(&rest_url, &token).await {
        Ok(lines) => plan::lines_by_user(&lines),
        Err(e) => return Ok(data_plane_failed(e)),
    };
    let target = plan::Target {
        database_id: &db.database_id,
        endpoint: &db.endpoint,
        port: details.port,
        key_prefix: obj.spec.key_prefix.as_deref(),
    };
    let desired = plan::desired(&obj.name_any(), users, &target, obj.annotations());
    let steps = plan::steps(&desired, &secrets, &lines);
    let names = desired
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");

    if observe_only {
        if steps.is_empty() {
            return Ok(Outcome::cond(
                true,
                "Synced",
                format!("ACL users in place: {names}"),
            ));
        }
        let message = format!(
            "managementPolicy is Observe, so nothing is changed: {}",
            steps
                .iter()
                .map(plan::describe)
                .collect::<Vec<_>>()
                .join("; ")
        );
        if previous.is_none_or(|p| p.message != message) {
            ctx.publish(obj, EventType::Warning, "AclDrifted", "Observe", &message);
        }
        return Ok(Outcome::cond(false, "Drifted", message));
    }

    let mut applier = Applier {
        obj,
        ctx,
        namespace: &namespace,
        details: &details,
        rest_url: &rest_url,
        token: &token,
    };
    let mut problems = Vec::new();
    let mut set: Vec<(Desired, Why, SecretString, SecretString)> = Vec::new();
    for step in steps {
        match step {
            Step::Set {
                user,
                why,
                new_password,
            } => match applier.set(&user, new_password).await {
                Ok(Some((password, token))) => set.push((user, why, password, token)),
                Ok(None) => problems.push(format!(
                    "Secret {} exists and is not the operator's: ACL user {} is not created",
                    user.secret_name, user.name
                )),
                Err(Failure::DataPlane(e)) => return Ok(data_plane_failed(e)),
                Err(Failure::Refused(e)) => {
                    problems.push(format!("the database refused ACL user {}: {e}", user.name))
                }
                Err(Failure::Kube(e)) => return Err(e.into()),
            },
            Step::Delete { user, secret_name } => {
                if let Err(e) = applier.delete(&user, &secret_name).await {
                    match e {
                        Failure::DataPlane(e) => return Ok(data_plane_failed(e)),
                        Failure::Refused(e) => problems.push(e),
                        Failure::Kube(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    if !set.is_empty() {
        // What the users look like now: the reference for changes made outside Kubernetes.
        let lines = match client::acl_list(&rest_url, &token).await {
            Ok(lines) => plan::lines_by_user(&lines),
            Err(e) => return Ok(data_plane_failed(e)),
        };
        for (user, why, password, rest_token) in &set {
            let line = lines.get(&user.name).cloned().unwrap_or_default();
            applier
                .write_secret(user, why, password, rest_token, &plan::digest(&[&line]))
                .await?;
        }
        announce(obj, ctx, &set);
    }
    if !problems.is_empty() {
        let message = problems.join("; ");
        let reason = if message.contains("not the operator's") {
            "SecretConflict"
        } else {
            "AclRefused"
        };
        if previous.is_none_or(|p| p.message != message) {
            ctx.publish(obj, EventType::Warning, reason, "SetUser", &message);
        }
        return Ok(Outcome::cond(false, reason, message).retry(RETRY));
    }
    if desired.is_empty() {
        return Ok(Outcome::cond(
            true,
            "NoUsers",
            "spec.users lists no ACL user",
        ));
    }
    Ok(Outcome::cond(
        true,
        "Ready",
        format!("ACL users in place, each with its Secret: {names}"),
    ))
}

fn data_plane_failed(e: client::CallError) -> Outcome {
    Outcome::cond(
        false,
        "DataPlaneUnavailable",
        format!("ACL users could not be read or set: {e}"),
    )
    .retry(RETRY)
}

/// One Event per kind of change in a pass, naming the users.
fn announce(
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
}

/// Why a step did not happen.
enum Failure {
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

struct Applier<'a> {
    obj: &'a CacheInstance,
    ctx: &'a Context,
    namespace: &'a str,
    details: &'a ConnectionDetails,
    rest_url: &'a str,
    token: &'a SecretString,
}

impl Applier<'_> {
    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), self.namespace)
    }

    /// Sets the user in Redis and mints its REST token; `None` when its Secret's name is taken
    /// by a Secret the operator does not own (nothing is done then).
    async fn set(
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
    async fn delete(&mut self, user: &str, secret_name: &str) -> Result<(), Failure> {
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

    async fn write_secret(
        &mut self,
        user: &Desired,
        why: &Why,
        password: &SecretString,
        rest_token: &SecretString,
        line_digest: &str,
    ) -> Result<()> {
        let d = self.details;
        let host = d.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let data = BTreeMap::from([
            ("UPSTASH_REDIS_REST_URL".to_string(), d.rest_url()),
            (
                "UPSTASH_REDIS_REST_TOKEN".to_string(),
                rest_token.expose_secret().to_string(),
            ),
            (
                "REDIS_URL".to_string(),
                format!(
                    "rediss://{}:{}@{host}:{}",
                    user.name,
                    password.expose_secret(),
                    d.port
                ),
            ),
            (
                "REDIS_PASSWORD".to_string(),
                password.expose_secret().to_string(),
            ),
            ("REDIS_USERNAME".to_string(), user.name.clone()),
            ("REDIS_KEY_PREFIX".to_string(), d.key_prefix.clone()),
            ("REDIS_TLS_ENABLED".to_string(), "true".to_string()),
        ]);
        let mut s = secret::build_secret(self.obj, &user.secret_name, "Opaque", data);
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
