//! The plan of one pass, as a list of steps ([`pass`]), and the decisions that follow a step's
//! outcome: what is remembered when a create fails, which Event announces a change of the
//! settings (or the new database, once, at the end of its pass), the rotation record, and the
//! notices of the Secrets and restarts. All pure, so that each has its fixture test.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{
    ARCHIVE_NOTE, How, Memory, Notice, ObjectView, Provision, RotationPlan, association_note,
    changes_note,
};
use crate::{
    controller::{
        conditions::{self, Cond},
        desired::{Change, RotationDue},
    },
    crd::{CacheInstance, PendingCreate, RotationStatus},
    upstash::{CreateDatabase, Database, UpstashError},
};

/// How soon an instance held by a Secret of its name that the operator does not own looks
/// again (the operator does not watch Secrets it does not own).
pub const SECRET_CONFLICT_RECHECK: Duration = Duration::from_secs(30);

/// One step of a pass. The plan lists every step in the order it runs; the steps after the
/// database refer to it as "the database" (the one used, read or created by the steps before),
/// and decide what they do with it from the pure functions of this module.
#[derive(Debug, Clone)]
pub enum Step {
    /// End the pass: nothing to work with for now, `cond` (type `Provisioned`) says why.
    Hold {
        cond: Cond,
        requeue: Option<Duration>,
    },
    /// End the pass with this refusal of an earlier create, calling nothing.
    Refused(UpstashError),
    /// The database is this one, as observed.
    Use { db: Box<Database>, how: How },
    /// Read database `id` with its credentials (gone: hold and look again).
    Fetch { id: String, how: How },
    /// The recorded database is gone: confirm, forget and announce it (see [`Replaced`]).
    Replace(Replaced),
    /// Look at the Secrets and workloads; a Secret of a needed name that the operator does not
    /// own ends the pass (see [`secret_conflict_hold`]).
    CheckSecrets,
    /// Put the finalizer in place with `record` (without one, an earlier record is cleared);
    /// with `confirm`, only if the object is still at that resourceVersion.
    Finalize {
        record: Option<PendingCreate>,
        confirm: Option<String>,
    },
    /// Create the database; a failure ends the pass and is remembered (see
    /// [`failed_create`]).
    Create {
        request: CreateDatabase,
        record: PendingCreate,
    },
    /// End the pass if the database may not be the instance's (see [`super::admit`]).
    Admit,
    /// Take charge of the database: its account is learnt and the status names it.
    Associate,
    /// Change (or report) the database's settings (see [`super::settings`]), then its live
    /// settings go into the status.
    Settings,
    /// Serve the backup and restore requests (see [`super::requests`]).
    Requests,
    /// Rotate the credentials when due (see [`super::rotation()`]).
    Rotate,
    /// Write the Secrets, remove the stale ones, restart the workloads (see
    /// [`super::secrets()`]).
    Publish,
    /// Reconcile the database's Redis ACL users and their Secrets (see [`crate::acl`]).
    Users,
    /// Remember the database as the pass leaves it.
    Remember,
    /// The Event that closes the pass (see [`closing_notice`]).
    Announce,
}

/// The steps of one pass, from the provisioning decision and the object as observed.
pub fn pass(
    obj: &CacheInstance,
    decision: Provision,
    object: &ObjectView,
    now: Timestamp,
) -> Vec<Step> {
    // A database found (not created) gets the finalizer, keeping the record of a create that
    // may still be in flight, once it is admitted.
    let found = |first: Step| {
        let mut steps = vec![first, Step::Admit];
        if !object.has_finalizer {
            steps.push(Step::Finalize {
                record: object.pending.clone(),
                confirm: object.confirm.clone(),
            });
        }
        steps
    };
    let mut steps = match decision {
        Provision::Hold { cond, requeue } => return vec![Step::Hold { cond, requeue }],
        Provision::Use { db, how } => found(Step::Use { db, how }),
        Provision::Fetch { id, how } => found(Step::Fetch { id, how }),
        Provision::Create { request, replaces } => {
            match create(obj, request, replaces, object.fresh, &object.memory, now) {
                CreatePlan::Refused(refusal) => return vec![Step::Refused(refusal)],
                CreatePlan::Create(creation) => {
                    let Creation {
                        replaces,
                        record,
                        request,
                    } = *creation;
                    let mut steps: Vec<Step> = replaces.map(Step::Replace).into_iter().collect();
                    steps.extend([
                        // Nothing is created that could not deliver its Secret.
                        Step::CheckSecrets,
                        // The record first, with the finalizer in one write, so that a restart
                        // after a lost answer recognises the database.
                        Step::Finalize {
                            record: Some(record.clone()),
                            confirm: object.confirm.clone(),
                        },
                        Step::Create { request, record },
                        Step::Admit,
                    ]);
                    steps
                }
            }
        }
    };
    steps.extend([
        Step::Associate,
        Step::Settings,
        Step::Requests,
        Step::Rotate,
        Step::Publish,
        Step::Users,
        Step::Remember,
        Step::Announce,
    ]);
    steps
}

/// A database that is gone and replaced by a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Replaced {
    /// The recorded database Upstash no longer has.
    pub old: String,
    /// The pass decided on the cached copy: the API server's copy must still name `old`
    /// before anything is created (the cache may be behind this operator's own write of a
    /// database made since).
    pub confirm: bool,
    /// The Warning that announces the new, empty database.
    pub notice: Notice,
}

/// The steps of a create, in order: a standing refusal ends the pass; a replaced database is
/// confirmed gone, forgotten and announced; the Secrets are checked (see
/// [`secret_conflict_hold`]); the record is written with the finalizer; then the call.
#[derive(Debug, Clone)]
pub enum CreatePlan {
    /// Upstash refused the last create of this spec and its pause is not over: no call.
    Refused(UpstashError),
    Create(Box<Creation>),
}

/// A create to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    pub replaces: Option<Replaced>,
    /// The create record, written with the finalizer before the call so that a restart after
    /// a lost answer recognises the database.
    pub record: PendingCreate,
    pub request: CreateDatabase,
}

/// Plans the create of `request` (see [`CreatePlan`]).
pub fn create(
    obj: &CacheInstance,
    request: CreateDatabase,
    replaces: Option<String>,
    fresh: bool,
    memory: &Memory,
    now: Timestamp,
) -> CreatePlan {
    if let Some(refusal) = &memory.refusal {
        return CreatePlan::Refused(refusal.clone());
    }
    CreatePlan::Create(Box::new(Creation {
        replaces: replaces.map(|old| Replaced {
            notice: Notice::warning(
                "DatabaseRecreated",
                "Create",
                format!(
                    "database {old} no longer exists in Upstash; creating a new, empty one (applications get new credentials). {ARCHIVE_NOTE}"
                ),
            ),
            confirm: !fresh,
            old,
        }),
        record: PendingCreate {
            database_name: request.database_name.clone(),
            // In whole seconds, as the record is written and read back: the memory of an
            // answered call (see `controller::memory`) matches the record by its start.
            started: Time(Timestamp::from_second(now.as_second()).unwrap_or(now)),
            uid: obj.metadata.uid.clone(),
        },
        request,
    }))
}

/// The conditions (`SecretReady`, `Provisioned`) of a create held back by a Secret of a
/// needed name that the operator does not own: nothing is created that could not deliver its
/// Secret.
pub fn secret_conflict_hold(conflict: String) -> [Cond; 2] {
    [
        Cond::new(conditions::SECRET_READY, false, "SecretConflict", conflict),
        Cond::new(
            conditions::PROVISIONED,
            false,
            "SecretConflict",
            "no database is created while its connection Secret cannot be written",
        ),
    ]
}

/// The hold of a pass whose database, found by id, was gone when read.
pub fn gone_hold(id: &str) -> (Cond, Duration) {
    (
        Cond::new(
            conditions::PROVISIONED,
            false,
            "Provisioning",
            format!("database {id} is gone; looking again"),
        ),
        Duration::from_secs(1),
    )
}

/// What becomes of the create record after a failed create call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAfter {
    /// Nothing was created (refused, throttled or never sent): the record is dropped, from the
    /// object and from memory, so the next attempt needs no wait.
    Drop,
    /// Upstash finished the call: the next pass decides from the list at once.
    DecideFromList,
    /// The answer was lost: the record stays and the next pass waits for the database to show.
    Keep,
}

/// What a pass remembers of a failed create call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedCreate {
    /// Upstash refused it: not asked again until a pause passes or the spec changes.
    pub refusal: bool,
    pub record: RecordAfter,
}

/// Decides what to remember of a create call that failed with `error`.
pub fn failed_create(error: &UpstashError) -> FailedCreate {
    FailedCreate {
        refusal: !error.is_retryable(),
        record: if error.not_performed() {
            RecordAfter::Drop
        } else if error.answered() {
            RecordAfter::DecideFromList
        } else {
            RecordAfter::Keep
        },
    }
}

/// How a settings change is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsNews {
    /// One Event before the calls, saying what changes (old → new).
    Now(Notice),
    /// A database created this pass: the fields are named in its one Event at the end.
    AtTheEnd(Vec<&'static str>),
}

/// Whether changes to `db`, which the instance works with as `how`, undo a change made outside
/// Kubernetes (`drift`: the spec did not change), as opposed to a database just found or
/// created: only then is the audit log read to say who made it.
pub fn outside_change(how: How, drift: bool) -> bool {
    drift && how.event_reason().is_none() && how != How::Created
}

/// Announces `changes` to `db`, which the instance works with as `how`; `drift`: the spec did
/// not change, so someone changed the database outside Kubernetes (`who`: what the audit log
/// says about it).
pub fn settings_news(
    obj: &CacheInstance,
    how: How,
    db: &Database,
    changes: &[Change],
    drift: bool,
    who: Option<&str>,
) -> SettingsNews {
    let note = changes_note(changes, db);
    match how.event_reason() {
        _ if how == How::Created => {
            SettingsNews::AtTheEnd(changes.iter().map(|c| c.field()).collect())
        }
        Some(reason) => SettingsNews::Now(Notice::normal(
            reason,
            "Update",
            format!(
                "{}; changing {note} to match the spec",
                association_note(obj, how, db)
            ),
        )),
        None if drift => SettingsNews::Now(Notice::normal(
            "DriftCorrected",
            "Update",
            format!(
                "setting {note} back to the spec after a change made outside Kubernetes; {}",
                who.unwrap_or_default()
            ),
        )),
        None => SettingsNews::Now(Notice::normal(
            "Updated",
            "Update",
            format!("updating {note}"),
        )),
    }
}

/// The rotation record after the pass: the plan's times, and when a rotation ran (`due`) its
/// time, the next one, and the request it served.
pub fn rotation_record(
    obj: &CacheInstance,
    every: Option<k8s_openapi::jiff::SignedDuration>,
    recorded: Option<&RotationStatus>,
    plan: &RotationPlan,
    now: Timestamp,
) -> RotationStatus {
    let mut record = recorded.cloned().unwrap_or_default();
    record.last_rotation_time = Some(Time(plan.last));
    record.next_rotation_time = plan.next.map(Time);
    if plan.due.is_some() {
        record.last_rotation_time = Some(Time(now));
        record.next_rotation_time = every.map(|e| Time(now + e));
        // A pending request is served by any rotation.
        let request = super::rotate_request(obj);
        if request.is_some() && request != record.last_request {
            record.last_request = request;
            record.last_request_time = Some(Time(now));
        }
    }
    record
}

/// The Event of a rotation.
pub fn rotated_notice(id: &str, due: RotationDue) -> Notice {
    let why = if due == RotationDue::Requested {
        "on request"
    } else {
        "on schedule"
    };
    Notice::normal(
        "PasswordRotated",
        "Rotate",
        format!("rotated the password and REST tokens of database {id} {why}"),
    )
}

/// The Event of the workloads whose restart was requested (`Kind/name`), if any; `window`:
/// how long restarts of one workload are coalesced.
pub fn restarted_notice(restarted: &[String], window: Duration) -> Option<Notice> {
    (!restarted.is_empty()).then(|| {
        Notice::normal(
            "WorkloadsRestarted",
            "Restart",
            crate::controller::restarts::note(restarted, window),
        )
    })
}

/// What the Secrets step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The Secrets written.
    pub written: Vec<String>,
    /// The instance's Secrets the spec no longer names, removed.
    pub removed: Vec<String>,
}

/// The Event that closes a pass: a new association not announced yet (with the settings set
/// right after a create and the Secrets written), else the Secrets a recorded database's new
/// credentials or a renamed Secret made it write.
pub fn closing_notice(
    obj: &CacheInstance,
    how: How,
    db: &Database,
    news: Option<&SettingsNews>,
    published: &Published,
) -> Option<Notice> {
    let announced = matches!(news, Some(SettingsNews::Now(_)));
    let set_at_create = match news {
        Some(SettingsNews::AtTheEnd(fields)) => fields.as_slice(),
        _ => &[],
    };
    let written = &published.written;
    if let (false, Some(reason)) = (announced, how.event_reason()) {
        let mut note = association_note(obj, how, db);
        if !set_at_create.is_empty() {
            note.push_str(&format!(" and set {}", set_at_create.join(", ")));
        }
        if !written.is_empty() {
            note.push_str(&format!("; wrote Secret {}", written.join(", ")));
        }
        return Some(Notice::normal(reason, "Provision", note));
    }
    if written.is_empty() || how != How::Recorded {
        return None;
    }
    let mut note = format!("wrote Secret {}", written.join(", "));
    if !published.removed.is_empty() {
        note.push_str(&format!(
            "; removed Secret {}, which the spec no longer names",
            published.removed.join(", ")
        ));
    }
    Some(Notice::normal("SecretUpdated", "WriteSecret", note))
}

#[cfg(test)]
mod tests;
