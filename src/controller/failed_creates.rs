//! What a failed create call leaves to decide: whether its database may still appear.
//!
//! A create whose answer was lost (a timeout, a broken connection) may have made a database
//! that the account's list does not show yet: the next attempt waits [`lost_create_grace`].
//! A create that failed with an answer from Upstash (a 5xx) is over, so the list shows whether
//! it made the database: the pass after it decides at once ([`AnsweredCreates`]). That is kept
//! in memory only: after a restart the operator waits the full grace, the safe side.
//!
//! Either way the decision needs one list of the account taken after the call was over
//! ([`AnsweredCreates::over_at`]); any list taken after that serves, so the passes of many
//! objects whose calls were lost together (say, by a restart) share one list instead of each
//! listing the account.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use crate::crd::{CacheInstance, PendingCreate};

/// The longest wait for a database whose create answer was lost to show up in the list before
/// creating again.
pub const LOST_CREATE_GRACE: Duration = Duration::from_secs(30);

/// The shortest such wait.
pub const MIN_LOST_CREATE_GRACE: Duration = Duration::from_secs(5);

/// How long a create whose answer was lost is given to show up: as long as the client waited
/// for the answer (the Upstash request timeout), within [5 s, 30 s]. A create still running
/// when the client gave up has already run that long.
pub fn lost_create_grace(request_timeout: Duration) -> Duration {
    request_timeout.clamp(MIN_LOST_CREATE_GRACE, LOST_CREATE_GRACE)
}

/// A create call that ended with an error answer: its database name, start and answer times.
type Answered = (String, Timestamp, Timestamp);

/// The failed-with-an-answer create call per object, by its pending record.
#[derive(Default)]
pub struct AnsweredCreates {
    entries: Mutex<HashMap<ObjectRef<CacheInstance>, Answered>>,
}

impl AnsweredCreates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<CacheInstance>, Answered>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the create call of `record` ended with an error answer (now).
    pub fn answered(&self, obj: &CacheInstance, record: &PendingCreate) {
        self.lock().insert(
            super::object_key(obj),
            (
                record.database_name.clone(),
                record.started.0,
                Timestamp::now(),
            ),
        );
    }

    /// When the call of `record` (the same name, started at the same time) ended with an
    /// answer, if it did.
    fn answered_at(&self, obj: &CacheInstance, record: &PendingCreate) -> Option<Timestamp> {
        self.lock()
            .get(&super::object_key(obj))
            .filter(|(name, started, _)| {
                *name == record.database_name && *started == record.started.0
            })
            .map(|(_, _, at)| *at)
    }

    /// Whether the call of `record` ended with an answer.
    pub fn was_answered(&self, obj: &CacheInstance, record: &PendingCreate) -> bool {
        self.answered_at(obj, record).is_some()
    }

    /// When the call of `record` was over for certain: its answer, else (the answer was lost,
    /// or this process never saw the call) `grace` after it started. A list of the account
    /// taken after that shows whether the call made its database.
    pub fn over_at(
        &self,
        obj: &CacheInstance,
        record: &PendingCreate,
        grace: Duration,
    ) -> Timestamp {
        self.answered_at(obj, record).unwrap_or_else(|| {
            let grace = k8s_openapi::jiff::SignedDuration::try_from(grace).unwrap_or_default();
            record
                .started
                .0
                .checked_add(grace)
                .unwrap_or(record.started.0)
        })
    }

    /// Drops the record (a create went through, was repeated, or the object is gone).
    pub fn forget(&self, obj: &CacheInstance) {
        self.lock().remove(&super::object_key(obj));
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

    #[test]
    fn a_call_is_over_at_its_answer_else_a_grace_after_it_started() {
        let answers = AnsweredCreates::default();
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let call = record("crm-orders-1", "2026-11-01T12:00:00Z");
        let grace = Duration::from_secs(5);
        assert_eq!(
            answers.over_at(&obj, &call, grace),
            "2026-11-01T12:00:05Z".parse::<Timestamp>().unwrap()
        );
        let before = Timestamp::now();
        answers.answered(&obj, &call);
        let over = answers.over_at(&obj, &call, grace);
        assert!(over >= before && over <= Timestamp::now(), "{over}");
    }
}
