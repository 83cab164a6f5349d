//! What a failed create call leaves to decide.
//!
//! **Refused creates.** Every write a pass makes triggers another pass at once, and a pass that
//! records a create attempt writes; so that the pass right after a refusal does not ask again,
//! a refused create waits for a pause that doubles with each refusal (1 s up to 5 minutes), or
//! for a change of the spec.
//!
//! **Answered creates.** A create whose answer was lost (a timeout, a broken connection) may
//! have made a database that the account's list does not show yet: the next attempt waits
//! [`lost_create_grace`]. A create that failed with an answer from Upstash (a 5xx) is over, so
//! the list shows whether it made the database: the pass after it decides at once. That is kept
//! in memory only: after a restart the operator waits the full grace, the safe side.
//!
//! Either way the decision needs one list of the account taken after the call was over
//! ([`Memory::create_over_at`]); any list taken after that serves, so the passes of many
//! objects whose calls were lost together (say, by a restart) share one list instead of each
//! listing the account.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use super::Memory;
use crate::{
    crd::{CacheInstance, PendingCreate},
    upstash::UpstashError,
};

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

/// The longest pause after a refused create.
const LONGEST_PAUSE: Duration = Duration::from_secs(300);

/// The last create call Upstash refused.
pub(super) struct RefusedCreate {
    /// The spec it was refused for.
    generation: Option<i64>,
    error: UpstashError,
    pub(super) until: Instant,
    pub(super) count: u32,
}

/// A create call that ended with an error answer.
pub(super) struct AnsweredCreate {
    database_name: String,
    started: Timestamp,
    answered: Timestamp,
}

impl Memory {
    /// Records that Upstash refused to create `obj`'s database with `error`.
    pub fn create_refused(&self, obj: &CacheInstance, error: &UpstashError) {
        let generation = obj.metadata.generation;
        self.update(obj, |e| {
            let count = e
                .refused_create
                .as_ref()
                .filter(|r| r.generation == generation)
                .map_or(1, |r| r.count.saturating_add(1));
            let pause = Duration::from_secs(1u64 << (count - 1).min(9)).min(LONGEST_PAUSE);
            e.refused_create = Some(Box::new(RefusedCreate {
                generation,
                error: error.clone(),
                until: Instant::now() + pause,
                count,
            }));
        });
    }

    /// The refusal that still stands for `obj` (same object, same spec, pause not over).
    pub fn standing_refusal(&self, obj: &CacheInstance) -> Option<UpstashError> {
        self.get(obj, |e| {
            e.refused_create
                .as_ref()
                .filter(|r| r.generation == obj.metadata.generation && Instant::now() < r.until)
                .map(|r| r.error.clone())
        })
        .flatten()
    }

    /// Drops the refused create (the create went through).
    pub fn forget_refusal(&self, obj: &CacheInstance) {
        self.update(obj, |e| e.refused_create = None);
    }

    /// Records that the create call of `record` ended with an error answer (now).
    pub fn create_answered(&self, obj: &CacheInstance, record: &PendingCreate) {
        let answered = AnsweredCreate {
            database_name: record.database_name.clone(),
            started: record.started.0,
            answered: Timestamp::now(),
        };
        self.update(obj, |e| e.answered_create = Some(Box::new(answered)));
    }

    /// When the call of `record` (the same name, started at the same time) ended with an
    /// answer, if it did.
    fn answered_at(&self, obj: &CacheInstance, record: &PendingCreate) -> Option<Timestamp> {
        self.get(obj, |e| {
            e.answered_create
                .as_ref()
                .filter(|a| {
                    a.database_name == record.database_name && a.started == record.started.0
                })
                .map(|a| a.answered)
        })
        .flatten()
    }

    /// Whether the call of `record` ended with an answer.
    pub fn create_was_answered(&self, obj: &CacheInstance, record: &PendingCreate) -> bool {
        self.answered_at(obj, record).is_some()
    }

    /// When the call of `record` was over for certain: its answer, else (the answer was lost,
    /// or this process never saw the call) `grace` after it started. A list of the account
    /// taken after that shows whether the call made its database.
    pub fn create_over_at(
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

    /// Drops the answered create (a create went through or was not performed).
    pub fn forget_answered_create(&self, obj: &CacheInstance) {
        self.update(obj, |e| e.answered_create = None);
    }
}
