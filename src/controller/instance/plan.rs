//! Plan (pure): one decision per concern, as plain data, from what validate and observe found:
//! which database the instance works with (and whether to create one), which settings to change
//! or report, which backup and restore requests to serve, whether to rotate, which Secrets to
//! write or remove, which workloads to restart.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{ResourceExt, runtime::events::EventType};

pub mod input;
mod pass;
pub mod preview;
mod rotation;
mod secrets;
pub mod window;

pub use input::{ClusterView, Lookup, Memory, ObjectView, Sighting};
pub use pass::*;
pub use rotation::*;
pub use secrets::*;

use super::validate::Valid;
use crate::{
    controller::{
        claims,
        conditions::{self, Cond},
        desired::{self, Change},
        naming,
    },
    crd::{
        BackupRequest, CacheInstance, CacheInstanceStatus, OnMissing, PendingCreate, RequestResult,
        RestoreRequest,
    },
    upstash::{CreateDatabase, Database},
};

pub use crate::controller::memory::lost_create_grace;

/// Where a database that disappears from Upstash may have gone.
pub const ARCHIVE_NOTE: &str = "Upstash archives free databases after 30 days without use and keeps a backup that can be restored from the Upstash console";

/// An Event to publish about the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: std::borrow::Cow<'static, str>,
    pub action: &'static str,
    pub note: String,
}

impl Notice {
    pub fn normal(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }

    pub fn warning(reason: &'static str, action: &'static str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason: reason.into(),
            action,
            note: note.into(),
        }
    }
}

/// How the instance came to work with its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// `status.databaseId` records it.
    Recorded,
    /// `spec.adopt` names it.
    Adopted,
    /// It carries the name this object derives: created for it earlier (before a delete with
    /// `Retain`, or before the object lost its status).
    TookBack,
    /// A create call of this object whose answer was lost made it.
    FoundOwnCreate,
    /// This pass created it.
    Created,
}

impl How {
    /// The Event that announces the association, if it is new.
    pub fn event_reason(self) -> Option<&'static str> {
        match self {
            How::Recorded => None,
            How::Adopted => Some("Adopted"),
            How::TookBack | How::FoundOwnCreate | How::Created => Some("Provisioned"),
        }
    }
}

/// The provisioning decision.
#[derive(Debug, Clone)]
pub enum Provision {
    /// Work with this database.
    Use { db: Box<Database>, how: How },
    /// Work with the database `id`, once read with its credentials.
    Fetch { id: String, how: How },
    /// Create a database (`replaces`: the recorded one Upstash no longer has).
    Create {
        request: CreateDatabase,
        replaces: Option<String>,
    },
    /// Nothing to work with for now: `cond` (type `Provisioned`) says why.
    Hold {
        cond: Cond,
        requeue: Option<Duration>,
    },
}

/// What the provisioning decision is made from.
pub struct ProvisionInput<'a> {
    pub obj: &'a CacheInstance,
    pub cluster_id: &'a str,
    pub valid: &'a Valid,
    pub blocked: bool,
    pub pending: Option<&'a PendingCreate>,
    /// How long the pending create may still be on its way: zero when its call ended with an
    /// answer (the list is then authoritative), else [`lost_create_grace`].
    pub grace: Duration,
    pub sighting: &'a Sighting,
    pub now: Timestamp,
}

fn hold(reason: &str, message: impl Into<String>) -> Provision {
    Provision::Hold {
        cond: Cond::new(conditions::PROVISIONED, false, reason, message),
        requeue: None,
    }
}

/// Decides which database the instance works with.
pub fn provision(input: &ProvisionInput) -> Provision {
    let obj = input.obj;
    let name = naming::database_name(obj, input.cluster_id);
    let create = |replaces| Provision::Create {
        request: desired::create_request(obj, name.clone()),
        replaces,
    };
    match input.sighting {
        Sighting::AccountChanged(why) => hold("AccountChanged", why.clone()),
        Sighting::AlreadyManaged { message, recheck } => Provision::Hold {
            cond: Cond::new(
                conditions::PROVISIONED,
                false,
                "AlreadyManaged",
                message.clone(),
            ),
            requeue: recheck.then_some(claims::RECHECK),
        },
        Sighting::AdoptionNotAllowed(why) => hold("AdoptionNotAllowed", why.clone()),
        Sighting::NotLooked => hold(
            "PolicyViolation",
            "no database is created while the spec breaks its CachePolicy's guardrails",
        ),
        Sighting::Recorded { id, lookup } => match lookup {
            Lookup::Found(db) => Provision::Use {
                db: db.clone(),
                how: How::Recorded,
            },
            Lookup::NotVisible(why) => hold("AccountChanged", why.clone()),
            Lookup::Missing if input.blocked => hold(
                "DatabaseMissing",
                format!(
                    "database {id} no longer exists and the CachePolicy's guardrails block creating a new one. {ARCHIVE_NOTE}"
                ),
            ),
            Lookup::Missing if input.valid.observe_only() => hold(
                "DatabaseMissing",
                format!(
                    "database {id} no longer exists in Upstash; managementPolicy is Observe, so no database is created. {ARCHIVE_NOTE}"
                ),
            ),
            Lookup::Missing if input.valid.on_missing == OnMissing::Report => hold(
                "DatabaseMissing",
                format!(
                    "database {id} no longer exists in Upstash; spec.onMissing is Report, so no database is created (set it to Recreate for a new, empty one). {ARCHIVE_NOTE}"
                ),
            ),
            Lookup::Missing => create(Some(id.clone())),
        },
        Sighting::AdoptById { id, lookup } => match lookup {
            Lookup::Found(db) => Provision::Use {
                db: db.clone(),
                how: How::Adopted,
            },
            Lookup::NotVisible(why) => hold("AccountChanged", why.clone()),
            Lookup::Missing => hold(
                "AdoptionFailed",
                format!("spec.adopt.databaseId {id} does not exist in the Upstash account"),
            ),
        },
        Sighting::AdoptByName { name, matches } => match matches.as_slice() {
            [one] => Provision::Fetch {
                id: one.id.clone(),
                how: How::Adopted,
            },
            [] => hold(
                "AdoptionFailed",
                format!("no Upstash database is named {name}; nothing to adopt"),
            ),
            many => hold(
                "AdoptionFailed",
                format!(
                    "{} Upstash databases are named {name}; adopt one by spec.adopt.databaseId",
                    many.len()
                ),
            ),
        },
        Sighting::Candidates { matches } => {
            let pending_names = |n: &str| input.pending.is_some_and(|p| p.database_name == n);
            match matches.as_slice() {
                [] => {
                    if let Some(p) = input.pending {
                        let grace = SignedDuration::try_from(input.grace).unwrap_or_default();
                        let waited = input.now.duration_since(p.started.0);
                        if waited < grace {
                            let left = Duration::try_from(grace - waited).unwrap_or_default();
                            return Provision::Hold {
                                cond: Cond::new(
                                    conditions::PROVISIONED,
                                    false,
                                    "Provisioning",
                                    format!(
                                        "waiting for database {} from an earlier create call to appear",
                                        p.database_name
                                    ),
                                ),
                                requeue: Some(left),
                            };
                        }
                    }
                    if input.valid.observe_only() {
                        return hold(
                            "NotManaged",
                            "managementPolicy is Observe and this CacheInstance has no database: none is created. Name one in spec.adopt, or set managementPolicy: Full",
                        );
                    }
                    create(None)
                }
                [one] if pending_names(&one.name) => Provision::Fetch {
                    id: one.id.clone(),
                    how: How::FoundOwnCreate,
                },
                [one] if naming::is_derived_for(&one.name, obj, input.cluster_id) => {
                    Provision::Fetch {
                        id: one.id.clone(),
                        how: How::TookBack,
                    }
                }
                [one] => hold(
                    "NameTaken",
                    format!(
                        "an Upstash database named {} already exists and this CacheInstance did not create it; set spec.adopt.byName: true to manage it, or choose another spec.databaseName",
                        one.name
                    ),
                ),
                many => hold(
                    "AmbiguousDatabase",
                    format!(
                        "{} Upstash databases are named {} ({}); delete the extra ones or adopt one with spec.adopt.databaseId",
                        many.len(),
                        many[0].name,
                        many.iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
    }
}

/// Whether a database found by id, name or create may be the instance's: the same primary
/// region. A `Provisioned=False` condition says why not.
pub fn admit(obj: &CacheInstance, how: How, db: &Database) -> Result<(), Cond> {
    if how == How::Recorded || how == How::Created {
        return Ok(());
    }
    match desired::adoption_conflict(obj, db) {
        None => Ok(()),
        Some(conflict) => Err(Cond::new(
            conditions::PROVISIONED,
            false,
            "AdoptionConflict",
            conflict,
        )),
    }
}

/// What a new association says in its Event.
pub fn association_note(obj: &CacheInstance, how: How, db: &Database) -> String {
    let what = format!("database {} ({})", db.database_name, db.database_id);
    match how {
        How::Created => format!("created {what} in {}", obj.spec.primary_region),
        How::FoundOwnCreate => format!("found {what} created by an earlier attempt"),
        How::TookBack => format!(
            "took back {what}, created earlier for {}/{} in this cluster",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        ),
        How::Adopted | How::Recorded => format!("adopted {what}"),
    }
}

/// The settings decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsPlan {
    /// The database matches every setting the spec sets.
    InLine,
    /// Make these calls. `drift`: the spec did not change since the last pass, so someone
    /// changed the database outside Kubernetes.
    Apply { changes: Vec<Change>, drift: bool },
    /// `Observe`: report these differences, change nothing.
    Drifted { changes: Vec<Change> },
    /// The guardrails block changes.
    Blocked,
}

/// Decides which settings to change (or report) on `db`.
pub fn settings(
    obj: &CacheInstance,
    valid: &Valid,
    blocked: bool,
    how: How,
    db: &Database,
    status: &CacheInstanceStatus,
) -> SettingsPlan {
    if blocked {
        return SettingsPlan::Blocked;
    }
    let changes = desired::changes(obj, db);
    if changes.is_empty() {
        SettingsPlan::InLine
    } else if valid.observe_only() {
        SettingsPlan::Drifted { changes }
    } else {
        let drift = how == How::Recorded
            && status.observed_generation == obj.metadata.generation
            && status.database_id.is_some();
        SettingsPlan::Apply { changes, drift }
    }
}

/// `a → b, c → d` for an Event.
pub fn changes_note(changes: &[Change], db: &Database) -> String {
    changes
        .iter()
        .map(|c| c.describe(db))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `Synced` condition of a settings decision, once it is carried out.
pub fn synced(plan: &SettingsPlan, db: &Database) -> Cond {
    match plan {
        SettingsPlan::InLine | SettingsPlan::Apply { .. } => Cond::new(
            conditions::SYNCED,
            true,
            "Synced",
            "the database's settings match the spec",
        ),
        SettingsPlan::Drifted { changes } => Cond::new(
            conditions::SYNCED,
            false,
            "Drifted",
            format!(
                "managementPolicy is Observe, so nothing is changed; the database differs from the spec in {}. Set managementPolicy: Full to apply the spec",
                changes
                    .iter()
                    .map(|c| c.drift(db))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        SettingsPlan::Blocked => Cond::new(
            conditions::SYNCED,
            conditions::Status::Unknown,
            "PolicyViolation",
            "settings are not changed while the spec breaks its CachePolicy's guardrails",
        ),
    }
}

/// The backup and restore requests not served yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requests {
    pub backup: Option<BackupRequest>,
    pub restore: Option<RestoreRequest>,
}

fn unserved(wanted: &str, served: Option<&RequestResult>) -> bool {
    served.is_none_or(|r| r.request_id != wanted)
}

/// The requests to serve now: each request id once; none while only observing.
pub fn requests(obj: &CacheInstance, valid: &Valid, status: &CacheInstanceStatus) -> Requests {
    if valid.observe_only() {
        return Requests::default();
    }
    Requests {
        backup: obj
            .spec
            .backup
            .as_deref()
            .cloned()
            .filter(|b| unserved(&b.request_id, status.backup.as_deref())),
        restore: obj
            .spec
            .restore
            .as_deref()
            .cloned()
            .filter(|r| unserved(&r.request_id, status.restore.as_deref())),
    }
}

/// Whether a pass may do something once-only (create, take back or adopt a database, rotate,
/// back up, restore), judged from a possibly stale `status`: such a pass confirms the status
/// first.
pub fn once_only_may_be_due(
    obj: &CacheInstance,
    valid: &Valid,
    blocked: bool,
    status: &CacheInstanceStatus,
    now: Timestamp,
) -> bool {
    if status.database_id.is_none() {
        // Creating, taking back or adopting a database; with guardrails blocking, only an
        // adoption can happen.
        return !blocked || obj.spec.adopt.is_some();
    }
    let requests = requests(obj, valid, status);
    requests.backup.is_some()
        || requests.restore.is_some()
        || rotation(obj, valid, status.rotation.as_deref(), now)
            .due
            .is_some()
        || crate::acl::schedule::any_due(obj, &status.users, valid.request_floor, now)
}

#[cfg(test)]
mod tests;
