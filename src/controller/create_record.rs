//! The record of a create call that may still be in flight: written on the object (with the
//! finalizer) before the call, read back by the pass, the cleanup and the claims on databases.

use kube::ResourceExt;

use crate::crd::{
    CREATE_RECORD_ANNOTATION, CacheInstance, CacheInstanceStatus, LEGACY_PENDING_CREATE_ANNOTATION,
    PendingCreate,
};

/// The create call of `obj` that may still be in flight: its record (the annotation, else what
/// earlier versions wrote), while `status.databaseId` names no database yet and the record is
/// this object's own (a restored copy has another UID and ignores its original's record).
pub fn pending_record(obj: &CacheInstance, status: &CacheInstanceStatus) -> Option<PendingCreate> {
    if status.database_id.is_some() {
        return None;
    }
    let annotations = obj.annotations();
    [CREATE_RECORD_ANNOTATION, LEGACY_PENDING_CREATE_ANNOTATION]
        .iter()
        .find_map(|key| annotations.get(*key))
        .and_then(|v| serde_json::from_str::<PendingCreate>(v).ok())
        .or_else(|| status.pending_create.as_deref().cloned())
        .filter(|record| record.uid.is_none() || record.uid == obj.metadata.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::{instance, status};

    #[test]
    fn the_pending_record_is_the_annotation_else_the_earlier_status_field() {
        let annotated = instance(
            r#"
            metadata:
              annotations:
                cache.upstash-operator.dev/pending-create: '{"databaseName":"crm-orders-1","started":"2026-10-01T00:00:00Z"}'
            spec: {primaryRegion: us-east-1}
            "#,
        );
        let p = pending_record(&annotated, &Default::default()).unwrap();
        assert_eq!(p.database_name, "crm-orders-1");
        let legacy = status(
            "pendingCreate: {databaseName: crm-orders-3f2a9c1d, started: '2026-09-01T00:00:00Z'}",
        );
        let plain = instance("spec: {primaryRegion: us-east-1}");
        assert_eq!(
            pending_record(&plain, &legacy).unwrap().database_name,
            "crm-orders-3f2a9c1d"
        );
        assert!(pending_record(&plain, &Default::default()).is_none());
    }

    #[test]
    fn the_create_record_counts_only_for_its_own_object_until_the_status_names_the_database() {
        let with = |uid: &str| {
            instance(&format!(
                r#"
                metadata:
                  annotations:
                    cache.upstash-operator.dev/create-record: '{{"databaseName":"crm-orders-1","started":"2026-10-01T00:00:00Z","uid":"{uid}"}}'
                spec: {{primaryRegion: us-east-1}}
                "#
            ))
        };
        let own = with("3f2a9c1d-0000-4000-8000-000000000000");
        assert_eq!(
            pending_record(&own, &Default::default())
                .unwrap()
                .database_name,
            "crm-orders-1"
        );
        // Done: the status names the database.
        assert!(pending_record(&own, &status("databaseId: db-1")).is_none());
        // A restored copy (another UID) does not take its original's record for its own.
        assert!(pending_record(&with("another-uid"), &Default::default()).is_none());
    }
}
