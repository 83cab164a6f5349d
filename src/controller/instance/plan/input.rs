//! What the plan is decided from, as observe finds it: the database side (what Upstash has, or
//! this process's last read of it), the cluster side (the Secrets and the restart targets), and
//! what this process remembers of the object's earlier create calls. The plan owns these types
//! and observe fills them, so that observe → plan → apply is a one-way road.

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};

use crate::{
    controller::database_index::Entry,
    crd::{CacheInstanceStatus, PendingCreate, RestartTarget},
    upstash::UpstashError,
};

pub use crate::credentials::identity::Lookup;

/// What is known about the instance's database before the plan.
#[derive(Debug, Clone)]
pub enum Sighting {
    /// The credentials belong to another account than the database.
    AccountChanged(String),
    /// `status.databaseId` names a database.
    Recorded { id: String, lookup: Lookup },
    /// `spec.adopt.databaseId` names a database.
    AdoptById { id: String, lookup: Lookup },
    /// `spec.adopt.byName`: the databases named `spec.databaseName`.
    AdoptByName { name: String, matches: Vec<Entry> },
    /// No database yet: the databases under the names this object may have created.
    Candidates { matches: Vec<Entry> },
    /// Not looked for (the guardrails block provisioning).
    NotLooked,
    /// Another instance manages the database (see [`crate::controller::claims`]);
    /// `recheck`: its hold may end soon (a new adoption or a create in flight).
    AlreadyManaged { message: String, recheck: bool },
    /// `spec.adopt` through the operator-wide credentials, in a namespace the platform does
    /// not allow it in.
    AdoptionNotAllowed(String),
}

/// The object as a pass finds it: the freshest status and what the operator wrote to its
/// metadata, and what this process remembers of it.
#[derive(Debug, Clone, Default)]
pub struct ObjectView {
    /// The freshest status known (the API server's own when the cached one could lag).
    pub status: CacheInstanceStatus,
    /// Whether `status` is the API server's (read this pass), not the cached copy's.
    pub fresh: bool,
    /// The create call in flight, if one is recorded.
    pub pending: Option<PendingCreate>,
    /// The cached copy's resourceVersion, when the pass decides on that copy instead of the API
    /// server's: its first write must find the object at that version.
    pub confirm: Option<String>,
    pub has_finalizer: bool,
    /// What this process remembers of the object's create calls.
    pub memory: Memory,
}

/// What this process remembers of the object's earlier create calls.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Upstash refused the last create and the pause after it is not over (same spec).
    pub refusal: Option<UpstashError>,
    /// The create call of the current record ended with an answer: the list is authoritative.
    pub create_answered: bool,
    /// When the create call of the current record was over for certain (its answer, else its
    /// start and the grace for a lost answer): a list taken after that shows its database.
    pub create_over: Option<Timestamp>,
}

/// A restart target and the credentials digest its pod template carries (`None`: the workload
/// does not exist).
#[derive(Debug, Clone)]
pub struct Workload {
    pub target: RestartTarget,
    pub stamped: Option<Option<String>>,
}

/// The cluster side of a pass: the connection Secrets as they are, the operator's Secrets of
/// this instance that the spec no longer names, and the restart targets.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Each Secret the spec asks for, by name, and its current state.
    pub secrets: Vec<(String, Option<Secret>)>,
    /// Secrets this instance owns that the spec no longer names.
    pub stale: Vec<String>,
    pub workloads: Vec<Workload>,
}
