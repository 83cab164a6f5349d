//! Observe: one value holding what a pass knows before it decides anything: the Developer API
//! bound to the instance's account (credentials resolved and checked once, by
//! [`CredentialResolver::bind`](crate::credentials::CredentialResolver::bind)), the freshest
//! status, the create record, and what Upstash has of the database; then, once there is
//! a database, the Secrets and the workloads.

use std::time::Instant;

use k8s_openapi::{api::core::v1::Secret, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};

use super::{plan, publish::RESTART_ANNOTATION, validate::Valid};
use crate::{
    controller::{
        Context, FINALIZER, adoption,
        claims::{self, Claim, Held},
        database_index::{self, Entry},
        naming, secret,
    },
    crd::{
        CREATE_RECORD_ANNOTATION, CacheInstance, CacheInstanceStatus,
        LEGACY_PENDING_CREATE_ANNOTATION, PendingCreate, RestartTarget,
    },
    credentials::{Binding, Bound, Source},
    error::Result,
    upstash::{Database, UpstashApi},
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

/// The Developer API bound to the instance's account.
pub struct Upstash {
    pub api: UpstashApi,
    /// The account the credentials act for (see [`crate::credentials::Bound::account`]).
    pub account: String,
    /// The key of these credentials in the database index.
    pub index_key: String,
    /// The binding, which learns the account from the databases it reads.
    pub bound: Bound,
}

impl Upstash {
    /// The account to record for `db`: Upstash's own name for it (`customer_id`), else the
    /// account the credentials act for.
    pub fn account_of(&self, db: &Database) -> String {
        crate::credentials::identity::account_of(db)
            .map(str::to_string)
            .unwrap_or_else(|| self.account.clone())
    }
}

/// Which copy of the object a pass decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The cached copy, unless a once-only action may be due (then the API server's), and a
    /// new object's cached copy even then, its first write conditional on that copy.
    Cached,
    /// The API server's copy: the cached one was found behind.
    Fresh,
}

/// What a pass knows about the instance and its database.
pub struct Observed {
    pub upstash: Option<Upstash>,
    /// The freshest status known (the API server's own when the cached one could lag).
    pub status: CacheInstanceStatus,
    /// Whether `status` is the API server's (read this pass), not the cached copy's.
    pub fresh: bool,
    /// The create call in flight, if one is recorded.
    pub pending: Option<PendingCreate>,
    /// The cached copy's resourceVersion, when the pass decides on that copy instead of the API
    /// server's (see [`first_sight`]): its first write must find the object at that version.
    pub confirm: Option<String>,
    pub has_finalizer: bool,
    pub sighting: Sighting,
    /// When the database in the sighting was read from Upstash.
    pub read_at: Option<Instant>,
    /// Whether the database is this process's last successful read (no call was made).
    pub reused: bool,
    /// The database this pass takes, reserved against other instances until it is recorded.
    pub reservation: Option<claims::ReservationGuard>,
}

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

/// Whether the cached `obj` shows nothing the operator ever wrote to it (no finalizer of the
/// operator's, no database in its status, no create record): a new object. A pass over it
/// decides on the cached copy and makes its first write conditional on the copy's
/// resourceVersion, instead of reading the object from the API server first: the write is
/// refused if the copy was not current, and the pass starts over on a fresh read.
pub fn first_sight(obj: &CacheInstance) -> bool {
    let annotations = obj.annotations();
    obj.metadata.resource_version.is_some()
        && !obj.finalizers().iter().any(|f| f == FINALIZER)
        && !annotations.contains_key(CREATE_RECORD_ANNOTATION)
        && !annotations.contains_key(LEGACY_PENDING_CREATE_ANNOTATION)
        && obj
            .status
            .as_ref()
            .is_none_or(|s| s.database_id.is_none() && s.pending_create.is_none())
}

/// Observes the database side of `obj`.
pub async fn database(
    obj: &CacheInstance,
    ctx: &Context,
    valid: &Valid,
    blocked: bool,
    read: Read,
) -> Result<Observed> {
    let cached = obj.status.clone().unwrap_or_default();
    // The watch cache can lag behind this operator's own last writes (a trigger from the Secret
    // it just applied can come first), so a pass that may do something once-only (create or
    // take back a database, rotate, back up, restore) first takes the API server's current
    // copy: one read, only when the cached status says such an action may be due. A new object
    // is the exception: its first write checks the copy instead (see `first_sight`).
    let may_be_due = plan::once_only_may_be_due(obj, valid, blocked, &cached, Timestamp::now());
    let confirm = (may_be_due && read == Read::Cached && first_sight(obj))
        .then(|| obj.metadata.resource_version.clone())
        .flatten();
    let fresh = if read == Read::Fresh || (may_be_due && confirm.is_none()) {
        let api: Api<CacheInstance> =
            Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
        api.get_opt(&obj.name_any()).await?
    } else {
        None
    };
    let current = fresh.as_ref().unwrap_or(obj);
    let status = current.status.clone().unwrap_or_default();
    let pending = pending_record(current, &status);
    let has_finalizer = current.finalizers().iter().any(|f| f == FINALIZER);
    let mut seen = Observed {
        upstash: None,
        status,
        fresh: fresh.is_some(),
        pending,
        confirm,
        has_finalizer,
        sighting: Sighting::NotLooked,
        read_at: None,
        reused: false,
        reservation: None,
    };

    let binding = match &fresh {
        Some(fresh) => {
            let mut checked = obj.clone();
            checked.status = fresh.status.clone();
            ctx.bind(&checked).await?
        }
        None => ctx.bind(obj).await?,
    };
    let bound = match binding {
        Binding::Bound(bound) => bound,
        Binding::AccountChanged(why) => {
            seen.sighting = Sighting::AccountChanged(why);
            return Ok(seen);
        }
    };
    let upstash = Upstash {
        index_key: database_index::key(&bound),
        api: bound.api.clone(),
        account: bound.account.clone(),
        bound,
    };
    seen.sighting = sight(obj, ctx, &upstash, &mut seen, blocked).await?;
    seen.upstash = Some(upstash);
    Ok(seen)
}

async fn sight(
    obj: &CacheInstance,
    ctx: &Context,
    upstash: &Upstash,
    seen: &mut Observed,
    blocked: bool,
) -> Result<Sighting> {
    let cluster_id = ctx.config.cluster_id.as_str();
    let get = |id: String, recorded: Option<String>| async move {
        Ok::<_, crate::Error>(upstash.bound.lookup(&id, recorded.as_deref()).await?)
    };
    if let Some(id) = seen.status.database_id.clone() {
        if let Some(held) = claimed(obj, ctx, seen, &id, None).await {
            return Ok(held);
        }
        // Triggered by the operator's own writes (or the monitor's) since the last read:
        // nothing the database could have drifted in is worth a call before the next resync.
        if let Some(db) = ctx.memory.reusable_read(obj, &id, &upstash.index_key) {
            seen.read_at = ctx.memory.read_at(obj, &id);
            seen.reused = true;
            return Ok(Sighting::Recorded {
                id,
                lookup: Lookup::Found(Box::new(db)),
            });
        }
        seen.read_at = Some(Instant::now());
        let lookup = get(id.clone(), seen.status.account.clone()).await?;
        return Ok(Sighting::Recorded { id, lookup });
    }
    let adopt = obj.spec.adopt.as_ref();
    if adopt.is_some() && upstash.bound.source() == Source::Operator {
        // The operator-wide account is every tenant's: adopting through it is the platform's
        // decision, per namespace.
        let namespace = obj.namespace().unwrap_or_default();
        if !ctx.config.adoption.allows(&ctx.client, &namespace).await? {
            return Ok(Sighting::AdoptionNotAllowed(adoption::refusal(&namespace)));
        }
    }
    if let Some(id) = adopt.and_then(|a| a.database_id.clone()) {
        if let Some(held) = claimed(obj, ctx, seen, &id, None).await {
            return Ok(held);
        }
        seen.read_at = Some(Instant::now());
        let lookup = get(id.clone(), None).await?;
        // Its name tells whether a create call in flight makes it.
        if let Lookup::Found(db) = &lookup
            && let Some(held) = claimed(obj, ctx, seen, &id, Some(&db.database_name)).await
        {
            return Ok(held);
        }
        return Ok(Sighting::AdoptById { id, lookup });
    }
    let created = obj.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if adopt.is_some_and(|a| a.by_name == Some(true)) {
        let name = naming::database_name(obj, cluster_id);
        let matches = ctx
            .databases
            .lookup(
                &upstash.index_key,
                &upstash.api,
                std::slice::from_ref(&name),
                created,
            )
            .await?;
        if let [one] = matches.as_slice()
            && let Some(held) = claimed(obj, ctx, seen, &one.id, Some(&name)).await
        {
            return Ok(held);
        }
        return Ok(Sighting::AdoptByName { name, matches });
    }
    if blocked {
        return Ok(Sighting::NotLooked);
    }
    let mut names = naming::candidate_names(obj, cluster_id);
    if let Some(p) = &seen.pending
        && !names.contains(&p.database_name)
    {
        names.push(p.database_name.clone());
    }
    // A create whose answer was lost may have left a database this process never heard of: a
    // list taken after the call was over tells (any such list, so that the passes of calls that
    // ended together share one); before that, no list could rule the database out, and the pass
    // waits (see `plan::provision`). A name the user chose may have been taken by a database
    // made since the last listing.
    let fresh_since = if let Some(p) = &seen.pending {
        let over = ctx
            .memory
            .create_over_at(obj, p, ctx.config.lost_create_grace);
        (over <= Timestamp::now()).then_some(over)
    } else if obj.spec.database_name.is_some() {
        created
    } else {
        None
    };
    let matches = ctx
        .databases
        .lookup(&upstash.index_key, &upstash.api, &names, fresh_since)
        .await?;
    // The one database this object would take back or find from its own create call.
    if let [one] = matches.as_slice()
        && (naming::is_derived_for(&one.name, obj, cluster_id)
            || seen
                .pending
                .as_ref()
                .is_some_and(|p| p.database_name == one.name))
        && let Some(held) = claimed(obj, ctx, seen, &one.id, Some(&one.name)).await
    {
        return Ok(held);
    }
    Ok(Sighting::Candidates { matches })
}

/// Whether another instance holds database `id` (named `name`, when known) against `obj` (see
/// [`claims`]); if none does, the database is reserved for this pass.
async fn claimed(
    obj: &CacheInstance,
    ctx: &Context,
    seen: &mut Observed,
    id: &str,
    name: Option<&str>,
) -> Option<Sighting> {
    let me = Claim::contender(obj, seen.status.database_id.as_deref());
    match ctx.claims.check(&me, id, name).await {
        Ok(reservation) => {
            if reservation.is_some() {
                seen.reservation = reservation;
            }
            None
        }
        Err(held) => {
            let what = match name {
                Some(name)
                    if obj
                        .spec
                        .adopt
                        .as_ref()
                        .is_some_and(|a| a.by_name == Some(true)) =>
                {
                    format!("the database named {name}")
                }
                _ => format!("database {id}"),
            };
            Some(Sighting::AlreadyManaged {
                message: held.message(&me.key, &what, ctx.config.reveal_managing_namespace),
                recheck: !matches!(held, Held::Managed(_)),
            })
        }
    }
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

/// Observes the Secrets and workloads of `obj`. `status` says which Secrets were written
/// before: only when a name changed are the instance's Secrets listed.
pub async fn cluster(
    obj: &CacheInstance,
    ctx: &Context,
    status: &CacheInstanceStatus,
) -> Result<ClusterView> {
    let namespace = obj.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut wanted = vec![secret::secret_name(obj)];
    wanted.extend(secret::read_only_secret_name(obj));
    let mut view = ClusterView::default();
    for name in &wanted {
        let current = match ctx.owned_secrets.get(&namespace, name) {
            Some(ours) => Some(ours.as_ref().clone()),
            None => secrets.get_opt(name).await?,
        };
        view.secrets.push((name.clone(), current));
    }
    let recorded = status
        .binding
        .iter()
        .chain(status.read_only_secret.iter())
        .map(|b| &b.name);
    if recorded.clone().any(|name| !wanted.contains(name)) {
        let listed = secrets
            .list_metadata(&ListParams::default().labels(&secret::selector(obj)))
            .await?;
        view.stale = listed
            .items
            .iter()
            .filter(|s| secret::owned_by(&s.metadata, obj))
            .map(|s| s.name_any())
            .filter(|name| !wanted.contains(name))
            .collect();
    }
    let targets = obj
        .spec
        .password_rotation
        .as_ref()
        .and_then(|r| r.restart.clone())
        .unwrap_or_default();
    for target in targets {
        let api: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            &namespace,
            &super::publish::workload_resource(target.kind),
        );
        let stamped = api.get_opt(&target.name).await?.map(|w| {
            w.data
                .pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(RESTART_ANNOTATION))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        });
        view.workloads.push(Workload { target, stamped });
    }
    Ok(view)
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

    #[test]
    fn only_an_object_the_operator_never_wrote_is_decided_on_its_cached_copy() {
        let new = instance("metadata: {resourceVersion: '12'}\nspec: {primaryRegion: us-east-1}");
        assert!(first_sight(&new));
        let finalized = instance(&format!(
            "metadata: {{resourceVersion: '13', finalizers: [{FINALIZER}]}}\nspec: {{primaryRegion: us-east-1}}"
        ));
        assert!(!first_sight(&finalized));
        let recorded = instance(
            "metadata: {resourceVersion: '14', annotations: {cache.upstash-operator.dev/create-record: '{}'}}\nspec: {primaryRegion: us-east-1}",
        );
        assert!(!first_sight(&recorded));
        let mut with_database = new.clone();
        with_database.status = Some(status("databaseId: db-1"));
        assert!(!first_sight(&with_database));
        let mut unversioned = new;
        unversioned.metadata.resource_version = None;
        assert!(!first_sight(&unversioned));
    }
}
