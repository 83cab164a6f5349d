//! "Reconcile now": a new value of the annotation [`RECONCILE_REQUEST_ANNOTATION`] (Flux-style:
//! any unique string, typically a timestamp) makes the operator reconcile the CacheInstance at
//! once with a fresh read of its database, and echo the value in
//! `status.lastHandledReconcileAt` once that pass has run.
//!
//! The fresh read comes from the annotation itself: a pass reuses the database read of the
//! previous pass only while the object's metadata is unchanged. A request also skips the wait
//! of a settled instance for its turn to read after an operator restart.

use kube::ResourceExt;

use crate::crd::CacheInstance;
pub use crate::crd::RECONCILE_REQUEST_ANNOTATION;

/// The request the object carries, if any (an empty value is none).
pub fn requested(obj: &CacheInstance) -> Option<String> {
    obj.annotations()
        .get(RECONCILE_REQUEST_ANNOTATION)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// Whether the object carries a request that its status does not show as handled.
pub fn pending(obj: &CacheInstance) -> bool {
    requested(obj).is_some_and(|value| {
        obj.status
            .as_ref()
            .and_then(|s| s.last_handled_reconcile_at.as_deref())
            != Some(value.as_str())
    })
}

/// The value to record in `status.lastHandledReconcileAt` after a pass: the request served, or
/// the value already recorded.
pub fn handled(obj: &CacheInstance, recorded: Option<String>) -> Option<String> {
    requested(obj).or(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(annotation: Option<&str>, handled: Option<&str>) -> CacheInstance {
        let mut o: CacheInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "c", "namespace": "n"},
            "spec": {"primaryRegion": "us-east-1"},
            "status": {},
        }))
        .unwrap();
        if let Some(a) = annotation {
            o.annotations_mut()
                .insert(RECONCILE_REQUEST_ANNOTATION.into(), a.into());
        }
        o.status.as_mut().unwrap().last_handled_reconcile_at = handled.map(str::to_string);
        o
    }

    #[test]
    fn a_new_value_is_pending_until_the_status_echoes_it() {
        assert!(!pending(&obj(None, None)));
        assert!(!pending(&obj(Some(""), None)));
        assert!(pending(&obj(Some("2026-12-06T23:00:00Z"), None)));
        assert!(pending(&obj(Some("b"), Some("a"))));
        assert!(!pending(&obj(Some("a"), Some("a"))));
    }

    #[test]
    fn the_status_keeps_the_last_value_served() {
        assert_eq!(
            handled(&obj(Some("b"), Some("a")), Some("a".into())),
            Some("b".into())
        );
        assert_eq!(
            handled(&obj(None, Some("a")), Some("a".into())),
            Some("a".into())
        );
        assert_eq!(handled(&obj(None, None), None), None);
    }
}
