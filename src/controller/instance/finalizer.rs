//! The object's metadata the operator writes: the cleanup finalizer and the create record,
//! added together in one server-side apply (so that a new instance costs one metadata write,
//! made before its database is created), and the finalizer's removal once cleanup has run: the
//! bodies of those writes, which `Cluster` (in `cluster.rs`) makes.
//!
//! Semantics follow kube's `finalizer` helper: the finalizer is in place before the operator
//! takes charge of a database, cleanup runs only while it is there, and its removal is
//! guarded by a JSON-patch `test` so that another controller's finalizer is never removed.

use json_patch::{PatchOperation, RemoveOperation, TestOperation, jsonptr::PointerBuf};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::{
    controller::FINALIZER,
    crd::{CREATE_RECORD_ANNOTATION, CacheInstance, PendingCreate},
};

/// The apply body that holds the finalizer and, when given, the create record. Without a
/// record, applying it removes the annotation an earlier apply set. With `expected` (a
/// resourceVersion), the API server refuses the write (409) unless the object is still at that
/// version: a decision taken on a cached copy holds only if the copy was current.
pub fn metadata_apply(
    obj: &CacheInstance,
    pending: Option<&PendingCreate>,
    expected: Option<&str>,
) -> Value {
    let mut metadata = json!({
        "name": obj.name_any(),
        "finalizers": [FINALIZER],
    });
    if let Some(p) = pending {
        let record = serde_json::to_string(p).expect("a create record serializes");
        metadata["annotations"] = json!({ CREATE_RECORD_ANNOTATION: record });
    }
    if let Some(version) = expected {
        metadata["resourceVersion"] = json!(version);
    }
    json!({
        "apiVersion": CacheInstance::api_version(&()),
        "kind": CacheInstance::kind(&()),
        "metadata": metadata,
    })
}

/// The JSON patch that removes the finalizer at the position `obj` shows it, failing instead if
/// the list changed meanwhile; `None` when the finalizer is not there.
pub fn removal(obj: &CacheInstance) -> Option<json_patch::Patch> {
    let index = obj.finalizers().iter().position(|f| f == FINALIZER)?;
    let path = PointerBuf::parse(format!("/metadata/finalizers/{index}")).ok()?;
    Some(json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path.clone(),
            value: FINALIZER.into(),
        }),
        PatchOperation::Remove(RemoveOperation { path }),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::instance;

    #[test]
    fn the_finalizer_and_the_pending_record_are_one_apply() {
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let pending = PendingCreate {
            database_name: "crm-orders-1".into(),
            started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-10-01T00:00:00Z".parse().unwrap(),
            ),
            uid: Some("u-1".into()),
        };
        let body = metadata_apply(&obj, Some(&pending), None);
        assert_eq!(body["metadata"]["finalizers"], json!([FINALIZER]));
        let record: PendingCreate = serde_json::from_str(
            body["metadata"]["annotations"][CREATE_RECORD_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(record, pending);
        assert!(body.get("spec").is_none(), "the operator never writes spec");
        assert!(body["metadata"].get("resourceVersion").is_none());
        let cleared = metadata_apply(&obj, None, None);
        assert!(cleared["metadata"].get("annotations").is_none());
        assert_eq!(cleared["metadata"]["finalizers"], json!([FINALIZER]));
        let conditional = metadata_apply(&obj, Some(&pending), Some("4711"));
        assert_eq!(conditional["metadata"]["resourceVersion"], json!("4711"));
    }

    #[test]
    fn removal_targets_the_finalizers_position_and_tests_it() {
        let obj = instance(&format!(
            "metadata: {{finalizers: [example.com/other, {FINALIZER}]}}\nspec: {{primaryRegion: us-east-1}}"
        ));
        let patch = serde_json::to_value(removal(&obj).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"}
            ])
        );
        assert!(removal(&instance("spec: {primaryRegion: us-east-1}")).is_none());
    }
}
