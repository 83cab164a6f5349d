//! The Secrets and restarts decisions: which connection Secrets to write or remove, which
//! workloads to restart.

use kube::ResourceExt;

use super::input::ClusterView;
use crate::{
    controller::secret::{self, ConnectionDetails, Ownership},
    crd::{CacheInstance, RestartTarget},
};

/// A Secret to write.
#[derive(Debug, Clone)]
pub struct SecretWrite {
    pub secret: k8s_openapi::api::core::v1::Secret,
    /// The type changes, which a Secret cannot do in place: delete it first.
    pub replace: bool,
}

/// The Secrets decision.
#[derive(Debug, Clone, Default)]
pub struct SecretsPlan {
    pub main: String,
    pub read_only: Option<String>,
    /// Writes, in order; empty when every Secret is up to date.
    pub writes: Vec<SecretWrite>,
    /// A Secret of a wanted name that the operator does not own: left untouched.
    pub conflict: Option<String>,
    /// The instance's own Secrets the spec no longer names, removed once the others are written.
    pub stale: Vec<String>,
}

/// The Secret of a name the instance needs that the operator does not own, if `view` found
/// one: nothing may be written, so nothing billable should be created either.
pub fn secret_conflict(obj: &CacheInstance, view: &ClusterView) -> Option<String> {
    std::iter::once(secret::secret_name(obj))
        .chain(secret::read_only_secret_name(obj))
        .find(|name| {
            let existing = view
                .secrets
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, s)| s.as_ref());
            secret::ownership(existing, obj) == Ownership::Foreign
        })
        .map(|name| {
            format!(
                "Secret {name} already exists and is not owned by this CacheInstance; it was left untouched. Delete it or set spec.secret.name to another name"
            )
        })
}

/// Decides which Secrets to write for `details` (with the instance's templates `rendered`),
/// given what `view` found.
pub fn secrets(
    obj: &CacheInstance,
    details: &ConnectionDetails,
    rendered: &std::collections::BTreeMap<String, String>,
    view: &ClusterView,
) -> SecretsPlan {
    let main = secret::secret_name(obj);
    let read_only = secret::read_only_secret_name(obj);
    let mut wanted = vec![secret::build_secret(
        obj,
        &main,
        secret::secret_type(obj),
        secret::connection_data(obj, details, rendered),
    )];
    if let Some(ro) = &read_only {
        wanted.push(secret::build_secret(
            obj,
            ro,
            "Opaque",
            secret::read_only_data(details),
        ));
    }
    let mut plan = SecretsPlan {
        main,
        read_only,
        ..Default::default()
    };
    for desired in wanted {
        let name = desired.name_any();
        let existing = view
            .secrets
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, s)| s.as_ref());
        match secret::ownership(existing, obj) {
            Ownership::Foreign => {
                plan.conflict = Some(format!(
                    "Secret {name} already exists and is not owned by this CacheInstance; it was left untouched. Delete it or set spec.secret.name to another name"
                ));
                return plan;
            }
            Ownership::Ours if existing.is_some_and(|e| secret::up_to_date(e, &desired)) => {}
            ownership => {
                let replace = ownership == Ownership::Ours
                    && existing.is_some_and(|e| {
                        e.type_.as_deref().unwrap_or("Opaque")
                            != desired.type_.as_deref().unwrap_or("Opaque")
                    });
                plan.writes.push(SecretWrite {
                    secret: desired,
                    replace,
                });
            }
        }
    }
    plan.stale = view.stale.clone();
    plan
}

/// The restart targets whose pod template does not carry `fingerprint` for the instance `key`
/// yet (missing workloads are skipped; see [`crate::controller::restarts`]).
pub fn restarts(view: &ClusterView, key: &str, fingerprint: &str) -> Vec<RestartTarget> {
    let workloads = view.workloads.iter().map(|w| (&w.target, &w.stamped));
    crate::controller::restarts::targets(workloads, key, fingerprint)
}
