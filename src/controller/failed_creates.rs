//! What a failed create call leaves to decide: whether its database may still appear.
//!
//! A create whose answer was lost (a timeout, a broken connection) may have made a database
//! that the account's list does not show yet: the next attempt waits [`lost_create_grace`].
//! A create that failed with an answer from Upstash (a 5xx) is over, so the list shows whether
//! it made the database: the pass after it decides at once ([`AnsweredCreates`]). That is kept
//! in memory only: after a restart the operator waits the full grace, the safe side.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{CacheInstance, PendingCreate};

/// The longest wait for a database whose create answer was lost to show up in the list before
/// creating again.
pub const LOST_CREATE_GRACE: Duration = Duration::from_secs(30);

/// The shortest such wait.
pub const MIN_LOST_CREATE_GRACE: Duration = Duration::from_secs(5);

/// How often the list is read again while waiting for a lost create's database.
pub const LOST_CREATE_RECHECK: Duration = Duration::from_secs(2);

/// How long a create whose answer was lost is given to show up: as long as the client waited
/// for the answer (the Upstash request timeout), within [5 s, 30 s]. A create still running
/// when the client gave up has already run that long.
pub fn lost_create_grace(request_timeout: Duration) -> Duration {
    request_timeout.clamp(MIN_LOST_CREATE_GRACE, LOST_CREATE_GRACE)
}

/// The failed-with-an-answer create call per object, by its pending record.
#[derive(Default)]
pub struct AnsweredCreates {
    entries: Mutex<HashMap<ObjectRef<CacheInstance>, (String, Timestamp)>>,
}

impl AnsweredCreates {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, (String, Timestamp)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the create call of `record` ended with an error answer.
    pub fn answered(&self, obj: &CacheInstance, record: &PendingCreate) {
        self.lock().insert(
            ObjectRef::from_obj(obj),
            (record.database_name.clone(), record.started.0),
        );
    }

    /// Whether the call of `record` (the same name, started at the same time) ended with an
    /// answer.
    pub fn was_answered(&self, obj: &CacheInstance, record: &PendingCreate) -> bool {
        self.lock()
            .get(&ObjectRef::from_obj(obj))
            .is_some_and(|(name, started)| {
                *name == record.database_name && *started == record.started.0
            })
    }

    /// Drops the record (a create went through, was repeated, or the object is gone).
    pub fn forget(&self, obj: &CacheInstance) {
        self.lock().remove(&ObjectRef::from_obj(obj));
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::controller::instance::fixtures::instance;

    fn record(name: &str, started: &str) -> PendingCreate {
        PendingCreate {
            database_name: name.into(),
            started: Time(started.parse().unwrap()),
            uid: None,
        }
    }

    #[test]
    fn only_the_same_call_counts_as_answered() {
        let answers = AnsweredCreates::default();
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let call = record("crm-orders-1", "2026-11-01T12:00:00Z");
        assert!(!answers.was_answered(&obj, &call));
        answers.answered(&obj, &call);
        assert!(answers.was_answered(&obj, &call));
        // A later attempt (a new record) is another call.
        assert!(!answers.was_answered(&obj, &record("crm-orders-1", "2026-11-01T12:00:09Z")));
        assert!(!answers.was_answered(&obj, &record("crm-orders-2", "2026-11-01T12:00:00Z")));
        answers.forget(&obj);
        assert!(!answers.was_answered(&obj, &call));
    }
}
