//! Observe: one value holding what a pass knows before it decides anything: the Developer API
//! bound to the instance's account (credentials resolved and checked once, by
//! [`CredentialResolver::bind`](crate::credentials::CredentialResolver::bind)), the freshest
//! status, the create record, and what Upstash has of the database; then, once there is
//! a database, the Secrets and the workloads.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::{
    cluster::Cluster,
    plan::{
        self,
        input::{ClusterView, Lookup, Memory, ObjectView, Sighting, Workload},
    },
    validate::Valid,
};
use crate::{
    controller::{
        Context, FINALIZER, adoption,
        claims::{self, Claim, Held},
        database_index,
        developer_api::DeveloperApi,
        naming, secret, startup,
    },
    crd::{
        CREATE_RECORD_ANNOTATION, CacheInstance, CacheInstanceStatus,
        LEGACY_PENDING_CREATE_ANNOTATION, PendingCreate,
    },
    credentials::{Binding, Bound, Source},
    error::Result,
    upstash::{Database, UpstashApi},
};

/// The Developer API bound to the instance's account.
pub struct Upstash<A = UpstashApi> {
    pub api: A,
    /// The account the credentials act for (see [`crate::credentials::Bound::account`]).
    pub account: String,
    /// The key of these credentials in the database index.
    pub index_key: String,
    /// The binding, which learns the account from the databases it reads (none in the tests
    /// of the pass, whose Developer API is a double).
    pub bound: Option<Bound>,
}

impl<A> Upstash<A> {
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
pub struct Observed<A = UpstashApi> {
    pub upstash: Option<Upstash<A>>,
    /// The object, its freshest status and what this process remembers of it.
    pub object: ObjectView,
    pub sighting: Sighting,
    /// When the database in the sighting was read from Upstash.
    pub read_at: Option<Instant>,
    /// Whether the database is this process's last successful read (no call was made).
    pub reused: bool,
    /// The database this pass takes, reserved against other instances until it is recorded.
    pub reservation: Option<claims::ReservationGuard>,
}

pub use crate::controller::create_record::pending_record;

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

/// How long the pass over `obj` waits before it observes anything, if it does: its turn to
/// read after a start (see [`crate::controller::startup`]), or the watch event of this
/// process's own last write, which is on its way and triggers the next pass (the requeue only
/// covers its loss).
pub fn wait(obj: &CacheInstance, ctx: &Context) -> Option<Duration> {
    if let Some(wait) = first_read_wait(obj, ctx) {
        return Some(wait);
    }
    ctx.memory
        .cache_behind(obj)
        .then_some(Duration::from_secs(1))
}

/// How long a settled instance's first pass of this process waits for its turn to read (see
/// [`crate::controller::startup`]), if it does.
fn first_read_wait(obj: &CacheInstance, ctx: &Context) -> Option<Duration> {
    // A "reconcile now" request does not wait.
    if crate::controller::reconcile_now::pending(obj) {
        return None;
    }
    let read_before = obj
        .status
        .as_ref()
        .and_then(|s| s.database_id.as_deref())
        .is_some_and(|id| ctx.memory.read_at(obj, id).is_some());
    if !startup::settled(obj) {
        return ctx
            .first_reads
            .wait(obj, false, read_before, ctx.config.resync);
    }
    let namespace = obj.namespace().unwrap_or_default();
    let secrets_in_place = std::iter::once(secret::secret_name(obj))
        .chain(secret::read_only_secret_name(obj))
        .all(|name| ctx.owned_secrets.get(&namespace, &name).is_some());
    if !secrets_in_place
        && !read_before
        && !ctx.owned_secrets.listed()
        && ctx.first_reads.starting()
    {
        // The Secret watch has not listed yet: decide once it has (or once the first minute
        // is over).
        return Some(Duration::from_secs(1));
    }
    let settled = {
        secrets_in_place
            && super::validate::spec(obj).is_ok_and(|valid| {
                let valid = valid.with_request_floor(ctx.config.min_rotation_interval);
                let policy = super::validate::policy_verdict(
                    obj,
                    &ctx.policies.all(),
                    ctx.config.default_deletion_policy,
                );
                let status = obj.status.clone().unwrap_or_default();
                !policy.blocked
                    && !plan::once_only_may_be_due(obj, &valid, false, &status, Timestamp::now())
            })
    };
    ctx.first_reads
        .wait(obj, settled, read_before, ctx.config.resync)
}

/// Where a pass finds its database side: the Developer API of the instance's account and what
/// Upstash has of the database ([`Credentials`]: through the instance's credentials; the
/// tests of the pass use an in-memory account).
pub trait Account: Send + Sync {
    type Api: DeveloperApi;

    /// Observes the database side of `obj` (see [`database`]).
    fn observe(
        &self,
        obj: &CacheInstance,
        ctx: &Context,
        kube: &impl Cluster,
        valid: &Valid,
        blocked: bool,
        read: Read,
    ) -> impl Future<Output = Result<Observed<Self::Api>>> + Send;
}

/// The instance's account, through its credentials.
pub struct Credentials;

impl Account for Credentials {
    type Api = UpstashApi;

    async fn observe(
        &self,
        obj: &CacheInstance,
        ctx: &Context,
        kube: &impl Cluster,
        valid: &Valid,
        blocked: bool,
        read: Read,
    ) -> Result<Observed> {
        database(obj, ctx, kube, valid, blocked, read).await
    }
}

/// Observes the database side of `obj`.
pub async fn database(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    valid: &Valid,
    blocked: bool,
    read: Read,
) -> Result<Observed> {
    let (mut seen, fresh) = object(obj, ctx, kube, valid, blocked, read).await?;
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
    let index_key = database_index::key(&bound);
    seen.sighting = sight(obj, ctx, &bound, &index_key, &mut seen, blocked).await?;
    seen.upstash = Some(Upstash {
        index_key,
        api: bound.api.clone(),
        account: bound.account.clone(),
        bound: Some(bound),
    });
    Ok(seen)
}

/// Observes the object side of `obj`: the freshest status, the create record, the finalizer
/// and what this process remembers; with the API server's copy when it was read.
pub async fn object<A>(
    obj: &CacheInstance,
    ctx: &Context,
    kube: &impl Cluster,
    valid: &Valid,
    blocked: bool,
    read: Read,
) -> Result<(Observed<A>, Option<CacheInstance>)> {
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
        kube.instance(obj).await?
    } else {
        None
    };
    let current = fresh.as_ref().unwrap_or(obj);
    let status = current.status.clone().unwrap_or_default();
    let pending = pending_record(current, &status);
    let seen = Observed {
        upstash: None,
        object: ObjectView {
            memory: memory(obj, ctx, pending.as_ref()),
            status,
            fresh: fresh.is_some(),
            pending,
            confirm,
            has_finalizer: current.finalizers().iter().any(|f| f == FINALIZER),
        },
        sighting: Sighting::NotLooked,
        read_at: None,
        reused: false,
        reservation: None,
    };
    Ok((seen, fresh))
}

/// What this process remembers of the create calls of `obj` (`pending`: the one on record).
pub fn memory(obj: &CacheInstance, ctx: &Context, pending: Option<&PendingCreate>) -> Memory {
    Memory {
        refusal: ctx.memory.standing_refusal(obj),
        create_answered: pending.is_some_and(|p| ctx.memory.create_was_answered(obj, p)),
        create_over: pending.map(|p| {
            ctx.memory
                .create_over_at(obj, p, ctx.config.lost_create_grace)
        }),
    }
}

async fn sight(
    obj: &CacheInstance,
    ctx: &Context,
    bound: &Bound,
    index_key: &str,
    seen: &mut Observed,
    blocked: bool,
) -> Result<Sighting> {
    let cluster_id = ctx.config.cluster_id.as_str();
    let get = |id: String, recorded: Option<String>| async move {
        Ok::<_, crate::Error>(bound.lookup(&id, recorded.as_deref()).await?)
    };
    if let Some(id) = seen.object.status.database_id.clone() {
        if let Some(held) = claimed(obj, ctx, seen, &id, None).await {
            return Ok(held);
        }
        // Triggered by the operator's own writes (or the monitor's) since the last read:
        // nothing the database could have drifted in is worth a call before the next resync.
        if let Some(db) = ctx.memory.reusable_read(obj, &id, index_key) {
            seen.read_at = ctx.memory.read_at(obj, &id);
            seen.reused = true;
            return Ok(Sighting::Recorded {
                id,
                lookup: Lookup::Found(Box::new(db)),
            });
        }
        seen.read_at = Some(Instant::now());
        let lookup = get(id.clone(), seen.object.status.account.clone()).await?;
        return Ok(Sighting::Recorded { id, lookup });
    }
    let adopt = obj.spec.adopt.as_ref();
    if adopt.is_some() && bound.source() == Source::Operator {
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
            .lookup(index_key, &bound.api, std::slice::from_ref(&name), created)
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
    if let Some(p) = &seen.object.pending
        && !names.contains(&p.database_name)
    {
        names.push(p.database_name.clone());
    }
    // A create whose answer was lost may have left a database this process never heard of: a
    // list taken after the call was over tells (any such list, so that the passes of calls that
    // ended together share one); before that, no list could rule the database out, and the pass
    // waits (see `plan::provision`). A name the user chose may have been taken by a database
    // made since the last listing.
    let fresh_since = if let Some(over) = seen.object.memory.create_over {
        (over <= Timestamp::now()).then_some(over)
    } else if obj.spec.database_name.is_some() {
        created
    } else {
        None
    };
    let matches = ctx
        .databases
        .lookup(index_key, &bound.api, &names, fresh_since)
        .await?;
    // The one database this object would take back or find from its own create call.
    if let [one] = matches.as_slice()
        && (naming::is_derived_for(&one.name, obj, cluster_id)
            || seen
                .object
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
    let me = Claim::contender(obj, seen.object.status.database_id.as_deref());
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

/// Observes the Secrets and workloads of `obj`. `status` says which Secrets were written
/// before: only when a name changed are the instance's Secrets listed.
pub async fn cluster(
    obj: &CacheInstance,
    kube: &impl Cluster,
    status: &CacheInstanceStatus,
) -> Result<ClusterView> {
    let mut wanted = vec![secret::secret_name(obj)];
    wanted.extend(secret::read_only_secret_name(obj));
    let mut view = ClusterView::default();
    for name in &wanted {
        view.secrets
            .push((name.clone(), kube.secret(obj, name).await?));
    }
    let recorded = status
        .binding
        .iter()
        .chain(status.read_only_secret.iter())
        .map(|b| &b.name);
    if recorded.clone().any(|name| !wanted.contains(name)) {
        view.stale = kube
            .owned_secrets(obj)
            .await?
            .into_iter()
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
        let stamped = kube.stamp(obj, &target).await?;
        view.workloads.push(Workload { target, stamped });
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::{instance, status};

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
