//! Database names (pure: no I/O).
//!
//! Without `spec.databaseName` a CacheInstance's database is named
//! `<namespace>-<name>-<8 hex digits of sha256("<cluster id>/<namespace>/<name>")>`. The name
//! depends only on the cluster and the object's namespace and name, so the same object applied
//! again (after a delete with `deletionPolicy: Retain`, or restored by a backup tool without its
//! status, with a new UID) recognises its database, and the same namespace and name in another
//! cluster sharing the Upstash account never do. Names of the earlier form
//! `<namespace>-<name>-<first 8 hex of the UID>` are still recognised as the object's own.

use sha2::{Digest, Sha256};

use crate::crd::CacheInstance;

/// Longest database name the operator derives.
const DERIVED_NAME_MAX: usize = 64;

/// The database name of `instance`: `spec.databaseName`, else its derived name.
pub fn database_name(instance: &CacheInstance, cluster_id: &str) -> String {
    match &instance.spec.database_name {
        Some(name) => name.clone(),
        None => derived_name_of(instance, cluster_id),
    }
}

/// The derived name of `instance`, whether or not `spec.databaseName` is set.
pub fn derived_name_of(instance: &CacheInstance, cluster_id: &str) -> String {
    let (namespace, name) = key(instance);
    derived_name(cluster_id, namespace, name)
}

/// `<namespace>-<name>-<8 hex>`, the namespace and name shortened so that the whole fits in 64
/// characters.
pub fn derived_name(cluster_id: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{cluster_id}/{namespace}/{name}").as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    with_suffix(&format!("{namespace}-{name}"), &suffix)
}

/// The name earlier versions derived: `<namespace>-<name>-<first 8 hex digits of the UID>`.
pub fn legacy_derived_name(instance: &CacheInstance) -> Option<String> {
    let uid: String = instance
        .metadata
        .uid
        .as_deref()?
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if uid.is_empty() {
        return None;
    }
    let (namespace, name) = key(instance);
    Some(with_suffix(&format!("{namespace}-{name}"), &uid))
}

/// The names under which a database of `instance` may exist before its status records one, most
/// specific first: the chosen name, or the derived name and the earlier derived form.
pub fn candidate_names(instance: &CacheInstance, cluster_id: &str) -> Vec<String> {
    if let Some(name) = &instance.spec.database_name {
        return vec![name.clone()];
    }
    let mut names = vec![derived_name_of(instance, cluster_id)];
    names.extend(legacy_derived_name(instance).filter(|n| !names.contains(n)));
    names
}

/// Whether `name` is one the operator derived for `instance` (and so a database of that name
/// is the object's own).
pub fn is_derived_for(name: &str, instance: &CacheInstance, cluster_id: &str) -> bool {
    name == derived_name_of(instance, cluster_id)
        || legacy_derived_name(instance).is_some_and(|legacy| legacy == name)
}

fn key(instance: &CacheInstance) -> (&str, &str) {
    (
        instance.metadata.namespace.as_deref().unwrap_or("default"),
        instance.metadata.name.as_deref().unwrap_or("cache"),
    )
}

fn with_suffix(base: &str, suffix: &str) -> String {
    let room = DERIVED_NAME_MAX - suffix.len() - 1;
    let mut base = base.to_string();
    if base.len() > room {
        let mut end = room;
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        base.truncate(end);
    }
    let base = base.trim_end_matches(['-', '.']);
    format!("{base}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(namespace: &str, name: &str, uid: &str, spec: serde_json::Value) -> CacheInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": spec,
        }))
        .expect("a CacheInstance")
    }

    fn region() -> serde_json::Value {
        serde_json::json!({"primaryRegion": "us-east-1"})
    }

    #[test]
    fn derived_names_depend_on_cluster_namespace_and_name_not_on_the_uid() {
        let first = instance(
            "crm",
            "orders",
            "3F2A9C1D-0000-4000-8000-000000000000",
            region(),
        );
        let reapplied = instance(
            "crm",
            "orders",
            "77777777-0000-4000-8000-000000000000",
            region(),
        );
        let name = database_name(&first, "cluster-a");
        assert_eq!(name, database_name(&reapplied, "cluster-a"));
        let digest = Sha256::digest(b"cluster-a/crm/orders");
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        assert_eq!(name, format!("crm-orders-{hex}"));
        assert_ne!(name, database_name(&first, "cluster-b"), "another cluster");
        assert_ne!(
            name,
            database_name(&instance("crm", "carts", "x", region()), "cluster-a")
        );
        assert!(is_derived_for(&name, &reapplied, "cluster-a"));
        assert!(!is_derived_for(&name, &reapplied, "cluster-b"));
    }

    #[test]
    fn the_earlier_uid_form_is_still_recognised_for_the_same_object_only() {
        let obj = instance(
            "crm",
            "orders",
            "3F2A9C1D-0000-4000-8000-000000000000",
            region(),
        );
        assert_eq!(
            legacy_derived_name(&obj).as_deref(),
            Some("crm-orders-3f2a9c1d")
        );
        assert!(is_derived_for("crm-orders-3f2a9c1d", &obj, "cluster-a"));
        let other_uid = instance(
            "crm",
            "orders",
            "99999999-0000-4000-8000-000000000000",
            region(),
        );
        assert!(!is_derived_for(
            "crm-orders-3f2a9c1d",
            &other_uid,
            "cluster-a"
        ));
        assert_eq!(
            candidate_names(&obj, "cluster-a"),
            [
                derived_name_of(&obj, "cluster-a"),
                "crm-orders-3f2a9c1d".to_string()
            ]
        );
    }

    #[test]
    fn long_names_are_shortened_to_64_characters_keeping_the_suffix() {
        let long = instance(&"n".repeat(63), &"x".repeat(253), "3f2a9c1d", region());
        let name = database_name(&long, "cluster-a");
        assert_eq!(name.len(), 64);
        assert!(name.starts_with(&"n".repeat(54)));
        assert_eq!(legacy_derived_name(&long).unwrap().len(), 64);
        assert!(legacy_derived_name(&long).unwrap().ends_with("-3f2a9c1d"));
    }

    #[test]
    fn a_chosen_name_is_used_as_is_and_is_the_only_candidate() {
        let named = instance(
            "crm",
            "orders",
            "3f2a9c1d",
            serde_json::json!({"primaryRegion": "us-east-1", "databaseName": "prod"}),
        );
        assert_eq!(database_name(&named, "cluster-a"), "prod");
        assert_eq!(candidate_names(&named, "cluster-a"), ["prod"]);
        assert!(!is_derived_for("prod", &named, "cluster-a"));
    }
}
