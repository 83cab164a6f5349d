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

mod apply;
pub mod client;
pub mod default_user;
pub mod plan;
pub mod schedule;

use std::time::Duration;

use k8s_openapi::{
    api::core::v1::Secret,
    jiff::{SignedDuration, Timestamp},
};
use kube::ResourceExt;
use secrecy::SecretString;

use self::{
    apply::{Applier, Failure, announce},
    plan::{Desired, SecretView, Step, Why},
};
use crate::{
    controller::{
        Context,
        conditions::{self, Cond},
        secret::{self, ConnectionDetails},
    },
    crd::{CacheInstance, DefaultUser, UserStatus},
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
    /// `status.users` after the pass; `None` leaves it as it is.
    pub users: Option<Vec<UserStatus>>,
}

impl Outcome {
    fn cond(status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            cond: Some(Cond::new(USERS_READY, status, reason, message)),
            retry: None,
            users: None,
        }
    }

    fn users(mut self, users: Vec<UserStatus>) -> Self {
        self.users = Some(users);
        self
    }

    fn retry(mut self, after: Duration) -> Self {
        self.retry = Some(after);
        self
    }
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
/// its credentials), after its main Secrets are written; `recorded` is `status.users` as the
/// pass knows it.
pub async fn reconcile(
    obj: &CacheInstance,
    ctx: &Context,
    db: &Database,
    observe_only: bool,
    recorded: &[UserStatus],
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
        return Ok(
            Outcome::cond(true, "NoUsers", "spec.users lists no ACL user").users(Vec::new()),
        );
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
    client::register(&rest_url, &db.database_id);
    // The operator's own user's token first (it works when `default` is off), else the
    // database's own.
    let own = default_user::known_token(ctx, obj, &namespace, &db.database_id).await?;
    let mut listed = None;
    if let Some(own) = own {
        match client::acl_list(&rest_url, &own).await {
            Ok(lines) => listed = Some((own, lines, true)),
            Err(client::CallError::Unauthorized) => default_user::forget(&db.database_id),
            Err(e) => return Ok(data_plane_failed(e)),
        }
    }
    if listed.is_none() {
        let Some(main) = db.rest_token.clone() else {
            return Ok(Outcome::cond(
                false,
                "NoToken",
                "the database's REST token is not available, so its ACL users cannot be read",
            )
            .retry(RETRY));
        };
        match client::acl_list(&rest_url, &main).await {
            Ok(lines) => listed = Some((main, lines, false)),
            Err(client::CallError::Unauthorized) => {
                return Ok(Outcome::cond(
                    false,
                    "NoCredential",
                    "the database refuses the main REST token (its default user is off) and the operator's own ACL user is missing: turn the default user on in the Upstash console, and the operator sets its users up again",
                )
                .retry(RETRY));
            }
            Err(e) => return Ok(data_plane_failed(e)),
        }
    }
    let Some((mut token, lines, using_own)) = listed else {
        return Ok(Outcome::default());
    };
    let lines = plan::lines_by_user(&lines);
    // The users' Secrets follow the instance's presets and templates: a change rewrites them.
    let secret_format = obj
        .spec
        .secret
        .as_ref()
        .filter(|s| s.presets.is_some() || s.templates.is_some())
        .map(|s| {
            plan::digest(&[&serde_json::to_string(&(&s.presets, &s.templates)).unwrap_or_default()])
        });
    let target = plan::Target {
        secret_format: secret_format.as_deref(),
        database_id: &db.database_id,
        endpoint: &db.endpoint,
        port: details.port,
        key_prefix: obj.spec.key_prefix.as_deref(),
    };
    let mut desired = plan::desired(&obj.name_any(), users, &target, obj.annotations());
    let now = Timestamp::now();
    let floor =
        SignedDuration::try_from(ctx.config.min_rotation_interval).unwrap_or(SignedDuration::MAX);
    schedule::mark_due(&mut desired, recorded, floor, now);
    let steps = plan::steps(&desired, &secrets, &lines);
    let names = desired
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");

    let wanted_default = obj.spec.default_user;
    let default_differs = match wanted_default {
        Some(DefaultUser::Disabled) => default_user::default_on(&lines),
        Some(DefaultUser::Enabled) => !default_user::default_on(&lines),
        None => false,
    };
    if observe_only {
        let mut described: Vec<String> = steps.iter().map(plan::describe).collect();
        if default_differs {
            described.push(format!(
                "the default user is {}, the spec says {:?}",
                if default_user::default_on(&lines) {
                    "on"
                } else {
                    "off"
                },
                wanted_default.unwrap_or_default()
            ));
        }
        if described.is_empty() {
            return Ok(Outcome::cond(
                true,
                "Synced",
                format!("ACL users in place: {names}"),
            ));
        }
        let message = format!(
            "managementPolicy is Observe, so nothing is changed: {}",
            described.join("; ")
        );
        if previous.is_none_or(|p| p.message != message) {
            ctx.publish(obj, EventType::Warning, "AclDrifted", "Observe", &message);
        }
        return Ok(Outcome::cond(false, "Drifted", message));
    }

    let listing_token = token.clone();
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
    let mut lines = lines;
    if !set.is_empty() {
        // What the users look like now: the reference for changes made outside Kubernetes.
        lines = match client::acl_list(&rest_url, &listing_token).await {
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
        for (user, why, password, _) in &set {
            if matches!(why, Why::Rotate(_) | Why::Scheduled) && !user.restart.is_empty() {
                let requested = apply::restart(ctx, obj, user, password).await?;
                if !requested.is_empty() {
                    ctx.publish(
                        obj,
                        EventType::Normal,
                        "WorkloadsRestarted",
                        "Restart",
                        &format!(
                            "restarting {} to pick up ACL user {}'s new password (one restart for every credentials change within {}s)",
                            requested.join(", "),
                            user.name,
                            ctx.restarts.window().as_secs()
                        ),
                    );
                }
            }
        }
    }
    let rotated: Vec<&str> = set
        .iter()
        .filter(|(_, why, ..)| matches!(why, Why::New | Why::Rotate(_) | Why::Scheduled))
        .map(|(u, ..)| u.name.as_str())
        .collect();
    let mut present = secrets.clone();
    present.extend(set.iter().map(|(u, ..)| SecretView {
        name: u.secret_name.clone(),
        user: u.name.clone(),
        ..Default::default()
    }));
    let (statuses, next_rotation) =
        schedule::statuses(&desired, &present, recorded, &rotated, floor, now);
    let done = |o: Outcome| {
        let mut o = o.users(statuses.clone());
        if let Some(after) = next_rotation {
            o.retry = Some(o.retry.map_or(after, |r| r.min(after)));
        }
        Ok(o)
    };
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
        return done(Outcome::cond(false, reason, message).retry(RETRY));
    }
    if desired.is_empty() {
        return done(Outcome::cond(
            true,
            "NoUsers",
            "spec.users lists no ACL user",
        ));
    }

    // The default user, once every listed user exists.
    let mut note = String::new();
    match wanted_default {
        Some(DefaultUser::Disabled) => {
            if !(using_own && lines.contains_key(default_user::OPERATOR_USER)) {
                match default_user::ensure_own_user(
                    ctx,
                    obj,
                    &namespace,
                    &db.database_id,
                    &rest_url,
                    &token,
                )
                .await?
                {
                    Ok(own) => token = own,
                    Err(e) => {
                        return Ok(Outcome::cond(
                            false,
                            "AclRefused",
                            format!("the operator's own ACL user could not be set: {e}"),
                        )
                        .retry(RETRY));
                    }
                }
            }
            if default_user::default_on(&lines) {
                if let Err(e) = default_user::switch_default(&rest_url, &token, false).await {
                    return Ok(Outcome::cond(
                        false,
                        "AclRefused",
                        format!("the default user could not be turned off: {e}"),
                    )
                    .retry(RETRY));
                }
                ctx.publish(
                    obj,
                    EventType::Normal,
                    "DefaultUserDisabled",
                    "SetUser",
                    &format!(
                        "turned the default user off: Secret {}'s password and REST token no longer work; the users {names} do",
                        secret::secret_name(obj)
                    ),
                );
            }
            note = format!(
                "; the default user is off, so Secret {}'s password and REST token no longer work",
                secret::secret_name(obj)
            );
        }
        Some(DefaultUser::Enabled) if !default_user::default_on(&lines) => {
            if let Err(e) = default_user::switch_default(&rest_url, &token, true).await {
                return Ok(Outcome::cond(
                    false,
                    "AclRefused",
                    format!("the default user could not be turned on: {e}"),
                )
                .retry(RETRY));
            }
            ctx.publish(
                obj,
                EventType::Normal,
                "DefaultUserEnabled",
                "SetUser",
                "turned the default user on: the main Secret's password and REST token work again",
            );
        }
        _ => {}
    }
    done(Outcome::cond(
        true,
        "Ready",
        format!("ACL users in place, each with its Secret: {names}{note}"),
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
