//! Keeping credentials readable until the instances that use them are cleaned up.
//!
//! When `kubectl delete namespace` removes a namespace, its Secrets and CacheInstances are
//! deleted together. A CacheInstance's cleanup needs its credentials to delete (or find) its
//! database, so the operator *claims* every per-namespace and per-instance credentials Secret a
//! CacheInstance uses: a finalizer ([`IN_USE_FINALIZER`]) and a label ([`CLAIM_LABEL`], which
//! the credentials watch selects on). A deleted Secret that carries the finalizer stays
//! readable; the operator releases it (removes both) once no CacheInstance uses it any more,
//! and the namespace's deletion completes.
//!
//! A Secret is claimed only once its credentials have worked (Upstash answered them with a
//! database): credentials that were refused cannot clean anything up, and a claim would only
//! hold up the deletion of a Secret that never served.
//!
//! The operator-wide Secret is never claimed, however an instance finds it (also as the
//! namespace's Secret of an instance in the operator's own namespace): deleting an application
//! namespace does not touch it, and a finalizer on it would hold up uninstalling the operator.
//!
//! Writes are strategic-merge patches of metadata only (they never create a Secret that is
//! gone, and leave data and other finalizers alone).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::Store,
};
use serde_json::{Value, json};

use super::{Origin, identity};
use crate::crd::CacheInstance;

/// Label on credentials Secrets claimed by the operator (value [`CLAIM_VALUE`]).
pub const CLAIM_LABEL: &str = "cache.upstash-operator.dev/credentials";
/// Value of [`CLAIM_LABEL`].
pub const CLAIM_VALUE: &str = "in-use";
/// Finalizer that keeps a credentials Secret until no CacheInstance uses it.
pub const IN_USE_FINALIZER: &str = "cache.upstash-operator.dev/credentials-in-use";
/// Field manager of the operator's writes to credentials Secrets.
pub const FIELD_MANAGER: &str = "upstash-operator/credentials";

/// The operator's metadata on a credentials Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// The claim: finalizer and label.
    pub claimed: bool,
    /// The account these credentials act for and the digest of the credentials it was
    /// learned with (see [`identity`]).
    pub account: Option<(String, String)>,
}

impl Marks {
    /// What `secret` carries now.
    pub fn of(secret: &Secret) -> Self {
        let claimed = secret.labels().get(CLAIM_LABEL).map(String::as_str) == Some(CLAIM_VALUE)
            && secret.finalizers().iter().any(|f| f == IN_USE_FINALIZER);
        let annotations = secret.annotations();
        let account = annotations
            .get(identity::ACCOUNT_ANNOTATION)
            .zip(annotations.get(identity::ACCOUNT_KEY_ANNOTATION))
            .map(|(a, k)| (a.clone(), k.clone()));
        Self { claimed, account }
    }

    /// The strategic-merge patch that turns `current` into `self`; `None` when nothing differs.
    pub fn patch_from(&self, current: &Marks) -> Option<Value> {
        if self == current {
            return None;
        }
        let mut labels = BTreeMap::new();
        let mut annotations = BTreeMap::new();
        let mut metadata = serde_json::Map::new();
        if self.claimed != current.claimed {
            if self.claimed {
                labels.insert(CLAIM_LABEL, Value::from(CLAIM_VALUE));
                metadata.insert("finalizers".into(), json!([IN_USE_FINALIZER]));
            } else {
                labels.insert(CLAIM_LABEL, Value::Null);
                metadata.insert(
                    "$deleteFromPrimitiveList/finalizers".into(),
                    json!([IN_USE_FINALIZER]),
                );
            }
        }
        if self.account != current.account {
            match &self.account {
                Some((account, key)) => {
                    annotations.insert(identity::ACCOUNT_ANNOTATION, Value::from(account.clone()));
                    annotations.insert(identity::ACCOUNT_KEY_ANNOTATION, Value::from(key.clone()));
                }
                None => {
                    annotations.insert(identity::ACCOUNT_ANNOTATION, Value::Null);
                    annotations.insert(identity::ACCOUNT_KEY_ANNOTATION, Value::Null);
                }
            }
        }
        if !labels.is_empty() {
            metadata.insert("labels".into(), json!(labels));
        }
        if !annotations.is_empty() {
            metadata.insert("annotations".into(), json!(annotations));
        }
        Some(json!({ "metadata": metadata }))
    }
}

/// Writes `wanted` onto the Secret at `origin` when it differs from what `current` carries.
/// Returns the Secret as written, or `None` when nothing was written (or the Secret is gone).
pub async fn mark(
    client: &Client,
    origin: &Origin,
    current: &Secret,
    wanted: &Marks,
) -> kube::Result<Option<Secret>> {
    let mut wanted = wanted.clone();
    if current.metadata.deletion_timestamp.is_some() && !Marks::of(current).claimed {
        // No finalizer can be added to an object being deleted.
        wanted.claimed = false;
    }
    let Some(patch) = wanted.patch_from(&Marks::of(current)) else {
        return Ok(None);
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), &origin.namespace);
    match api
        .patch(
            &origin.name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Strategic(patch),
        )
        .await
    {
        Ok(secret) => Ok(Some(secret)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Which credentials Secret each CacheInstance would use, from the spec and what the watches
/// know: `spec.credentials.secretRef`, else the namespace's Secret when it exists.
pub fn users_of<'a>(
    secret_namespace: &str,
    secret_name: &str,
    namespace_secret: Option<&str>,
    instances: impl IntoIterator<Item = &'a CacheInstance>,
) -> usize {
    instances
        .into_iter()
        .filter(|i| i.metadata.namespace.as_deref() == Some(secret_namespace))
        .filter(|i| match &i.spec.credentials {
            Some(c) => c.secret_ref.name == secret_name,
            None => namespace_secret == Some(secret_name),
        })
        .count()
}

/// The claimed Secrets that no CacheInstance in `stores` uses any more.
pub fn unused(
    claimed: &[Arc<Secret>],
    namespace_secret: Option<&str>,
    stores: &[Store<CacheInstance>],
) -> Vec<Origin> {
    let instances: Vec<Arc<CacheInstance>> = stores.iter().flat_map(|s| s.state()).collect();
    claimed
        .iter()
        .filter(|s| Marks::of(s).claimed)
        .filter(|s| {
            let ns = s.namespace().unwrap_or_default();
            users_of(
                &ns,
                &s.name_any(),
                namespace_secret,
                instances.iter().map(|i| i.as_ref()),
            ) == 0
        })
        .map(|s| Origin {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
        })
        .collect()
}

/// Whether a claimed Secret is used only by instances being deleted: it is about to become
/// unused, and the release loop should look again soon rather than at its next sweep.
pub fn about_to_be_unused(
    claimed: &[Arc<Secret>],
    namespace_secret: Option<&str>,
    stores: &[Store<CacheInstance>],
) -> bool {
    let instances: Vec<Arc<CacheInstance>> = stores.iter().flat_map(|s| s.state()).collect();
    claimed.iter().filter(|s| Marks::of(s).claimed).any(|s| {
        let ns = s.namespace().unwrap_or_default();
        let name = s.name_any();
        let all = users_of(
            &ns,
            &name,
            namespace_secret,
            instances.iter().map(|i| i.as_ref()),
        );
        let staying = users_of(
            &ns,
            &name,
            namespace_secret,
            instances
                .iter()
                .filter(|i| i.metadata.deletion_timestamp.is_none())
                .map(|i| i.as_ref()),
        );
        all > 0 && staying == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &[(&str, &str)], finalizers: &[&str], deleting: bool) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("crm".into());
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        if deleting {
            s.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        s
    }

    fn instance(ns: &str, name: &str, credentials: Option<&str>) -> CacheInstance {
        let mut spec = json!({"primaryRegion": "us-east-1"});
        if let Some(c) = credentials {
            spec["credentials"] = json!({"secretRef": {"name": c}});
        }
        serde_json::from_value(json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn a_claim_adds_label_and_finalizer_and_keeps_the_rest() {
        let current = Marks::of(&secret(&[("team", "crm")], &["other/finalizer"], false));
        assert_eq!(current, Marks::default());
        let patch = Marks {
            claimed: true,
            account: None,
        }
        .patch_from(&current)
        .unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "finalizers": [IN_USE_FINALIZER],
                "labels": {CLAIM_LABEL: CLAIM_VALUE},
            }})
        );
    }

    #[test]
    fn a_release_removes_only_what_the_claim_added() {
        let current = Marks::of(&secret(
            &[(CLAIM_LABEL, CLAIM_VALUE)],
            &[IN_USE_FINALIZER, "other/finalizer"],
            true,
        ));
        assert!(current.claimed);
        let patch = Marks::default().patch_from(&current).unwrap();
        assert_eq!(
            patch,
            json!({"metadata": {
                "$deleteFromPrimitiveList/finalizers": [IN_USE_FINALIZER],
                "labels": {CLAIM_LABEL: null},
            }})
        );
        assert_eq!(current.patch_from(&current), None);
    }

    #[test]
    fn the_account_is_written_next_to_the_claim() {
        let wanted = Marks {
            claimed: true,
            account: Some(("team-1".into(), "abc".into())),
        };
        let current = Marks {
            claimed: true,
            account: None,
        };
        assert_eq!(
            wanted.patch_from(&current).unwrap(),
            json!({"metadata": {"annotations": {
                identity::ACCOUNT_ANNOTATION: "team-1",
                identity::ACCOUNT_KEY_ANNOTATION: "abc",
            }}})
        );
    }

    #[test]
    fn users_are_counted_by_credentials_source() {
        let instances = [
            instance("crm", "a", Some("creds")),
            instance("crm", "b", None),
            instance("other", "c", Some("creds")),
        ];
        // A per-instance Secret: only instances naming it.
        assert_eq!(
            users_of("crm", "creds", Some("upstash-credentials"), &instances),
            1
        );
        // The namespace's Secret: instances without spec.credentials.
        assert_eq!(
            users_of(
                "crm",
                "upstash-credentials",
                Some("upstash-credentials"),
                &instances
            ),
            1
        );
        assert_eq!(
            users_of("crm", "unused", Some("upstash-credentials"), &instances),
            0
        );
        // Per-namespace lookup disabled: nobody uses a Secret by that name implicitly.
        assert_eq!(users_of("crm", "upstash-credentials", None, &instances), 0);
    }

    #[test]
    fn a_secret_whose_last_users_are_leaving_is_about_to_be_unused() {
        use kube::runtime::{reflector, watcher};
        let claimed = Arc::new(secret(
            &[(CLAIM_LABEL, CLAIM_VALUE)],
            &[IN_USE_FINALIZER],
            false,
        ));
        let (store, mut writer) = reflector::store::<CacheInstance>();
        let mut leaving = instance("crm", "a", Some("creds"));
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        writer.apply_watcher_event(&watcher::Event::Apply(leaving));
        let stores = [store];
        let claimed = [claimed];
        assert!(about_to_be_unused(&claimed, None, &stores));
        assert!(unused(&claimed, None, &stores).is_empty(), "still used");
        // One user that stays: not about to be unused.
        writer.apply_watcher_event(&watcher::Event::Apply(instance("crm", "b", Some("creds"))));
        assert!(!about_to_be_unused(&claimed, None, &stores));
        // No user at all: unused now, not "about to be".
        let (empty, _w) = reflector::store::<CacheInstance>();
        assert!(!about_to_be_unused(
            &claimed,
            None,
            std::slice::from_ref(&empty)
        ));
        assert_eq!(unused(&claimed, None, &[empty]).len(), 1);
    }
}
