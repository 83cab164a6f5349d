//! Preview (pure): the changes the operator would make to an instance's database, from the
//! spec and the live values `status` holds, without calling Upstash. The operator lists them in
//! `status.pendingChanges`; `kubectl upstash plan -f` lists them for a manifest not applied yet,
//! against the live object (and says when a change needs a new database).

use k8s_openapi::jiff::Timestamp;

use super::rotation::rotate_request;
use crate::{
    controller::desired::{desired_allowed_ips, desired_read_regions, normalize_ips},
    crd::{CacheInstance, CacheInstanceStatus, MaintenanceWindow, PendingChange},
};

/// `when` of a change made on the next pass.
pub const NOW: &str = "Now";

/// Why a plan change is disruptive.
pub const PLAN_DISRUPTS: &str =
    "changing the plan disconnects every client for 1-2 seconds (Upstash's upgrade guide)";
/// Why a read-region change is disruptive.
pub const REGIONS_DISRUPT: &str =
    "adding or removing a read replica moves the clients of that region to another replica";
/// Why a rotation is disruptive.
pub const ROTATION_DISRUPTS: &str =
    "rotating revokes the old password and REST tokens: clients holding them fail until restarted";
/// Why a restore is disruptive.
pub const RESTORE_DISRUPTS: &str = "restoring replaces the database's data with the backup's";

/// A change that the live database cannot take: a new database is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recreate {
    pub field: &'static str,
    pub live: String,
    pub desired: String,
    pub reason: &'static str,
}

/// What applying a manifest over a live object would do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preview {
    /// Changes the API server refuses (immutable fields): a new CacheInstance is needed.
    pub recreate: Vec<Recreate>,
    /// Changes the operator would make to the database.
    pub changes: Vec<PendingChange>,
}

impl Preview {
    pub fn is_empty(&self) -> bool {
        self.recreate.is_empty() && self.changes.is_empty()
    }
}

fn change(field: &str, live: String, desired: String, disruptive: Option<&str>) -> PendingChange {
    PendingChange {
        field: field.to_string(),
        live,
        desired,
        disruptive: disruptive.is_some(),
        reason: disruptive.map(str::to_string),
        when: NOW.to_string(),
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items.dedup();
    items
}

/// The changes the operator would make to the database of `obj`: each field the spec sets whose
/// live value (in `status`) differs, a due rotation, a new restore or backup request. Nothing
/// before the database is known (`status.databaseId` unset).
pub fn pending(obj: &CacheInstance, now: Timestamp) -> Vec<PendingChange> {
    obj.status
        .as_ref()
        .map(|status| pending_with(obj, status, now))
        .unwrap_or_default()
}

/// [`pending`] with `status` in place of the object's own.
pub fn pending_with(
    obj: &CacheInstance,
    status: &CacheInstanceStatus,
    now: Timestamp,
) -> Vec<PendingChange> {
    if status.database_id.is_none() {
        return Vec::new();
    }
    let spec = &obj.spec;
    let mut out = Vec::new();
    if let (Some(want), Some(live)) = (desired_read_regions(obj), &status.read_regions)
        && want != sorted(live)
    {
        out.push(change(
            "readRegions",
            list(live),
            list(&want),
            Some(REGIONS_DISRUPT),
        ));
    }
    if let (Some(want), Some(live)) = (spec.plan, &status.plan)
        && want.to_string() != *live
    {
        out.push(change(
            "plan",
            live.clone(),
            want.to_string(),
            Some(PLAN_DISRUPTS),
        ));
    }
    let mut plain = |field: &str, want: Option<String>, live: Option<String>| {
        if let (Some(want), Some(live)) = (want, live)
            && want != live
        {
            out.push(change(field, live, want, None));
        }
    };
    plain(
        "budget",
        spec.budget.map(|b| b.to_string()),
        status.budget.map(|b| b.to_string()),
    );
    plain(
        "eviction",
        spec.eviction.map(|v| v.to_string()),
        status.eviction.map(|v| v.to_string()),
    );
    plain(
        "autoUpgrade",
        spec.auto_upgrade.map(|v| v.to_string()),
        status.auto_upgrade.map(|v| v.to_string()),
    );
    plain(
        "prodPack",
        spec.prod_pack.map(|v| v.to_string()),
        status.prod_pack.map(|v| v.to_string()),
    );
    plain(
        "allowedIPs",
        desired_allowed_ips(obj).map(|v| list(&v)),
        status
            .allowed_ips
            .as_deref()
            .map(|v| list(&normalize_ips(v))),
    );
    plain(
        "dailyBackup",
        spec.daily_backup.map(|v| v.to_string()),
        status.daily_backup.map(|v| v.to_string()),
    );
    if let Some(backup) = &spec.backup
        && status.backup.as_ref().map(|b| &b.request_id) != Some(&backup.request_id)
    {
        out.push(change(
            "backup",
            served(status.backup.as_deref().map(|b| b.request_id.as_str())),
            backup.request_id.clone(),
            None,
        ));
    }
    if let Some(restore) = &spec.restore
        && status.restore.as_ref().map(|r| &r.request_id) != Some(&restore.request_id)
    {
        out.push(change(
            "restore",
            served(status.restore.as_deref().map(|r| r.request_id.as_str())),
            restore.request_id.clone(),
            Some(RESTORE_DISRUPTS),
        ));
    }
    let rotation = status.rotation.as_deref();
    let request = rotate_request(obj);
    let last_request = rotation.and_then(|r| r.last_request.clone());
    if let Some(request) = request.filter(|r| Some(r) != last_request.as_ref()) {
        let mut rotate = change(
            "password",
            served(last_request.as_deref()),
            format!("rotated (request {request})"),
            Some(ROTATION_DISRUPTS),
        );
        // A request made within the minimum interval after the last one waits for
        // `nextRotationTime`.
        if let Some(r) = rotation
            && r.last_request_time.is_some()
            && let Some(next) = r.next_rotation_time.as_ref().filter(|n| n.0 > now)
        {
            rotate.when = next.0.to_string();
        }
        out.push(rotate);
    } else if spec
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.every.is_some())
        && let Some(next) = rotation.and_then(|r| r.next_rotation_time.as_ref())
        && next.0 <= now
    {
        out.push(change(
            "password",
            format!("due since {}", next.0),
            "rotated (schedule)".to_string(),
            Some(ROTATION_DISRUPTS),
        ));
    }
    out
}

fn served(id: Option<&str>) -> String {
    id.map_or_else(|| "-".to_string(), |id| format!("request {id}"))
}

/// What applying `manifest` over `live` (the object in the cluster, with its status) would do;
/// `live` absent: everything is new ("would be created", an empty preview). `policy_window` is
/// the maintenance window of the CachePolicies that apply to the manifest, the default when it
/// has none of its own.
pub fn against(
    manifest: &CacheInstance,
    live: &CacheInstance,
    policy_window: Option<&MaintenanceWindow>,
    now: Timestamp,
) -> Preview {
    let mut recreate = Vec::new();
    if manifest.spec.primary_region != live.spec.primary_region {
        recreate.push(Recreate {
            field: "primaryRegion",
            live: live.spec.primary_region.as_str().to_string(),
            desired: manifest.spec.primary_region.as_str().to_string(),
            reason: "Upstash cannot move a database's primary",
        });
    }
    if manifest.spec.database_name != live.spec.database_name {
        let shown = |o: &CacheInstance| {
            o.spec.database_name.clone().unwrap_or_else(|| {
                o.status
                    .as_ref()
                    .and_then(|s| s.database_name.clone())
                    .unwrap_or_else(|| "(derived)".to_string())
            })
        };
        recreate.push(Recreate {
            field: "databaseName",
            live: shown(live),
            desired: shown(manifest),
            reason: "the name identifies the Upstash database",
        });
    }
    if manifest.spec.adopt != live.spec.adopt {
        recreate.push(Recreate {
            field: "adopt",
            live: format!("{:?}", live.spec.adopt.as_deref()),
            desired: format!("{:?}", manifest.spec.adopt.as_deref()),
            reason: "adoption is decided when the CacheInstance is created",
        });
    }
    // The manifest's spec and annotations, the live object's status.
    let mut merged = manifest.clone();
    merged.status = live.status.clone();
    // A change that waits for the maintenance window (the manifest's own, else its policies')
    // shows when the window opens.
    let mut changes = pending(&merged, now);
    let status = live.status.clone().unwrap_or_default();
    let approved = super::window::approval(manifest, &status).is_some();
    let window = super::window::chosen(manifest, policy_window);
    let gate = super::window::gate(window, approved, now);
    super::window::schedule(&mut changes, &gate);
    Preview { recreate, changes }
}

#[cfg(test)]
mod tests;
