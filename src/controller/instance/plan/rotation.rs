//! The rotation decision: whether the password and REST tokens are due for a rotation (on
//! schedule or on request), and the rotation clock of a database the instance takes charge of.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;

use super::Valid;
use crate::{
    controller::desired::{self, RotationDue},
    crd::{CacheInstance, ROTATE_ANNOTATION, RotationStatus},
    upstash::Database,
};

/// The rotation decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPlan {
    /// The last rotation (or the database's creation).
    pub last: Timestamp,
    pub next: Option<Timestamp>,
    pub due: Option<RotationDue>,
    /// When to come back for the next scheduled rotation.
    pub requeue: Option<Duration>,
}

/// The rotate annotation's value, if set.
pub fn rotate_request(obj: &CacheInstance) -> Option<String> {
    obj.annotations()
        .get(ROTATE_ANNOTATION)
        .cloned()
        .filter(|v| !v.is_empty())
}

/// Decides whether a rotation is due. Only observing, nothing is scheduled.
pub fn rotation(
    obj: &CacheInstance,
    valid: &Valid,
    recorded: Option<&RotationStatus>,
    now: Timestamp,
) -> RotationPlan {
    let last = recorded
        .and_then(|r| r.last_rotation_time.as_ref())
        .map_or(now, |t| t.0);
    if valid.observe_only() {
        return RotationPlan {
            last,
            next: None,
            due: None,
            requeue: None,
        };
    }
    let request = rotate_request(obj);
    let (mut next, mut due) = desired::rotation_plan(
        valid.rotation_every,
        Some(last),
        request.as_deref(),
        recorded.and_then(|r| r.last_request.as_deref()),
        now,
    );
    // A request within the minimum interval of the last one served waits for its end (and
    // whatever else is requested meanwhile is served by that one rotation); a scheduled
    // rotation due now still runs, and serves it.
    if due == Some(RotationDue::Requested)
        && let Some(free) = recorded
            .and_then(|r| r.last_request_time.as_ref())
            .map(|t| t.0 + valid.request_floor)
        && now < free
    {
        due = next
            .is_some_and(|n| now >= n)
            .then_some(RotationDue::Scheduled);
        if due.is_none() {
            next = Some(next.map_or(free, |n| n.min(free)));
        }
    }
    let requeue = match (due, next) {
        (None, Some(n)) => Some(n.duration_since(now).unsigned_abs()),
        _ => None,
    };
    RotationPlan {
        last,
        next,
        due,
        requeue,
    }
}

/// The rotation bookkeeping of a database the instance just took charge of: the clock starts
/// at its creation, and a rotation requested before it existed is served by its credentials.
pub fn start_clock(
    obj: &CacheInstance,
    recorded: Option<RotationStatus>,
    db: &Database,
    now: Timestamp,
) -> RotationStatus {
    let mut rotation = recorded.unwrap_or_default();
    if rotation.last_rotation_time.is_none() {
        let created = i64::try_from(db.creation_time)
            .ok()
            .filter(|s| *s > 0)
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(now);
        rotation.last_rotation_time = Some(Time(created));
    }
    if let Some(request) = rotate_request(obj) {
        rotation.last_request = Some(request);
    }
    rotation
}
