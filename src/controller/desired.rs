//! What the Upstash database should look like according to the spec, and the calls that bring
//! an observed database there (pure: no I/O). Only the settings the spec sets are compared.

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::{
    crd::{CacheInstance, Plan},
    upstash::{Budget, CreateDatabase, Database},
};

/// Why a password rotation is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDue {
    /// The rotate annotation carries a value not served yet.
    Requested,
    /// `passwordRotation.every` has passed since the last rotation.
    Scheduled,
}

/// `spec.passwordRotation.every`, if set and valid.
pub fn rotation_every(instance: &CacheInstance) -> Option<SignedDuration> {
    instance
        .spec
        .password_rotation
        .as_ref()
        .and_then(|r| r.every.as_ref())
        .and_then(|e| e.duration().ok())
        .and_then(|e| SignedDuration::try_from(e).ok())
}

/// The next scheduled rotation and whether one is due at `now`: `last` is the last rotation
/// (unknown: nothing is scheduled yet), `request` the rotate annotation's value and `served` the
/// last request already served. A request wins over the schedule (it names the reason).
pub fn rotation_plan(
    every: Option<SignedDuration>,
    last: Option<Timestamp>,
    request: Option<&str>,
    served: Option<&str>,
    now: Timestamp,
) -> (Option<Timestamp>, Option<RotationDue>) {
    let next = every.zip(last).map(|(every, last)| last + every);
    let due = if request.is_some() && request != served {
        Some(RotationDue::Requested)
    } else if next.is_some_and(|n| now >= n) {
        Some(RotationDue::Scheduled)
    } else {
        None
    };
    (next, due)
}

/// Read regions the spec asks for, sorted; `None` when the spec leaves them alone.
pub fn desired_read_regions(instance: &CacheInstance) -> Option<Vec<String>> {
    let regions = instance.spec.read_regions.as_ref()?;
    let mut regions: Vec<String> = regions.iter().map(|r| r.as_str().to_string()).collect();
    regions.sort();
    regions.dedup();
    Some(regions)
}

/// The create request for this spec and database name. Fields the spec leaves out take the
/// defaults the CRD documents: pay-as-you-go, no read replicas, Upstash's own defaults for the
/// rest (the allow-list and daily backups are set after the create when the spec asks).
pub fn create_request(instance: &CacheInstance, database_name: String) -> CreateDatabase {
    let spec = &instance.spec;
    CreateDatabase {
        database_name,
        platform: spec.primary_region.platform().to_string(),
        primary_region: spec.primary_region.as_str().to_string(),
        read_regions: desired_read_regions(instance).unwrap_or_default(),
        plan: spec.plan.unwrap_or(Plan::DEFAULT).as_str().to_string(),
        budget: spec.budget.map(Budget::from_usd),
        eviction: spec.eviction,
        auto_upgrade: spec.auto_upgrade,
        prod_pack_enabled: spec.prod_pack,
        tls: true,
    }
}

/// One call that brings a setting in line with the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ReadRegions(Vec<String>),
    Plan(Plan),
    Budget(i64),
    Eviction(bool),
    AutoUpgrade(bool),
    ProdPack(bool),
    AllowedIps(Vec<String>),
    DailyBackup(bool),
}

impl Change {
    /// The spec field the change serves, for Events and logs.
    pub fn field(&self) -> &'static str {
        match self {
            Change::ReadRegions(_) => "readRegions",
            Change::Plan(_) => "plan",
            Change::Budget(_) => "budget",
            Change::Eviction(_) => "eviction",
            Change::AutoUpgrade(_) => "autoUpgrade",
            Change::ProdPack(_) => "prodPack",
            Change::AllowedIps(_) => "allowedIPs",
            Change::DailyBackup(_) => "dailyBackup",
        }
    }

    /// The value the spec asks for, as the spec writes it.
    pub fn wanted(&self) -> String {
        match self {
            Change::ReadRegions(r) | Change::AllowedIps(r) => list(r),
            Change::Plan(p) => p.to_string(),
            Change::Budget(b) => b.to_string(),
            Change::Eviction(v)
            | Change::AutoUpgrade(v)
            | Change::ProdPack(v)
            | Change::DailyBackup(v) => v.to_string(),
        }
    }

    /// The value `db` has for the field the change serves.
    pub fn live(&self, db: &Database) -> String {
        let live = LiveSettings::of(db);
        match self {
            Change::ReadRegions(_) => list(&live.read_regions),
            Change::Plan(_) => live.plan,
            Change::Budget(_) => live.budget.usd_text(),
            Change::Eviction(_) => live.eviction.to_string(),
            Change::AutoUpgrade(_) => live.auto_upgrade.to_string(),
            Change::ProdPack(_) => live.prod_pack.to_string(),
            Change::AllowedIps(_) => list(&live.allowed_ips),
            Change::DailyBackup(_) => live.daily_backup.to_string(),
        }
    }

    /// `field old → new`, for Events.
    pub fn describe(&self, db: &Database) -> String {
        format!("{} {} → {}", self.field(), self.live(db), self.wanted())
    }

    /// `field (spec X, live Y)`, for drift reports.
    pub fn drift(&self, db: &Database) -> String {
        format!(
            "{} (spec {}, live {})",
            self.field(),
            self.wanted(),
            self.live(db)
        )
    }

    /// Applies the change to a local copy of the database, as Upstash will.
    pub fn apply_to(&self, db: &mut Database) {
        match self {
            Change::ReadRegions(r) => db.read_regions = r.clone(),
            Change::Plan(p) => {
                db.plan_type = match p {
                    Plan::Free => "free",
                    Plan::Payg => "payg",
                    _ => "paid",
                }
                .to_string();
                db.db_disk_threshold = p.data_limit_bytes();
            }
            Change::Budget(b) => db.budget = Budget::from_usd(*b),
            Change::Eviction(e) => db.eviction = *e,
            Change::AutoUpgrade(a) => db.auto_upgrade = *a,
            Change::ProdPack(p) => db.prod_pack_enabled = *p,
            Change::AllowedIps(ips) => db.allowed_ip_ranges = ips.clone(),
            Change::DailyBackup(d) => db.daily_backup_enabled = *d,
        }
    }
}

/// The calls needed to bring `db` in line with the spec; empty when it already is. Only the
/// fields the spec sets are compared: an omitted field is left as the database has it, an
/// explicit empty list means "none".
pub fn changes(instance: &CacheInstance, db: &Database) -> Vec<Change> {
    let spec = &instance.spec;
    let mut out = Vec::new();
    if let Some(want) = desired_read_regions(instance)
        && want != sorted(&db.read_regions)
    {
        out.push(Change::ReadRegions(want));
    }
    if let Some(want) = spec.plan
        && db.plan() != Some(want)
    {
        out.push(Change::Plan(want));
    }
    if let Some(budget) = spec.budget
        && db.budget != Budget::from_usd(budget)
    {
        out.push(Change::Budget(budget));
    }
    if let Some(e) = spec.eviction
        && db.eviction != e
    {
        out.push(Change::Eviction(e));
    }
    if let Some(a) = spec.auto_upgrade
        && db.auto_upgrade != a
    {
        out.push(Change::AutoUpgrade(a));
    }
    if let Some(p) = spec.prod_pack
        && db.prod_pack_enabled != p
    {
        out.push(Change::ProdPack(p));
    }
    if let Some(want) = desired_allowed_ips(instance)
        && want != normalize_ips(&db.allowed_ip_ranges)
    {
        out.push(Change::AllowedIps(want));
    }
    if let Some(d) = spec.daily_backup
        && db.daily_backup_enabled != d
    {
        out.push(Change::DailyBackup(d));
    }
    out
}

fn sorted(list: &[String]) -> Vec<String> {
    let mut list = list.to_vec();
    list.sort();
    list.dedup();
    list
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// The live settings of a database under the spec's field names, as `status` shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSettings {
    pub plan: String,
    pub read_regions: Vec<String>,
    pub budget: Budget,
    pub eviction: bool,
    pub auto_upgrade: bool,
    pub prod_pack: bool,
    pub allowed_ips: Vec<String>,
    pub daily_backup: bool,
}

impl LiveSettings {
    pub fn of(db: &Database) -> Self {
        Self {
            plan: db
                .plan()
                .map(|p| p.to_string())
                .unwrap_or_else(|| db.plan_type.clone()),
            read_regions: sorted(&db.read_regions),
            budget: db.budget,
            eviction: db.eviction,
            auto_upgrade: db.auto_upgrade,
            prod_pack: db.prod_pack_enabled,
            allowed_ips: normalize_ips(&db.allowed_ip_ranges),
            daily_backup: db.daily_backup_enabled,
        }
    }
}

/// The allow-list the spec asks for, normalised like Upstash stores it; `None` when the spec
/// leaves it alone.
pub fn desired_allowed_ips(instance: &CacheInstance) -> Option<Vec<String>> {
    instance.spec.allowed_ips.as_deref().map(normalize_ips)
}

/// Canonical, sorted, de-duplicated CIDR strings: a bare address becomes a /32 (or /128), host
/// bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`). Unparsable entries are kept verbatim so
/// that a difference is still noticed.
pub fn normalize_ips(entries: &[String]) -> Vec<String> {
    let mut out: Vec<String> = entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<ipnet::IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| e.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.to_string())
                .unwrap_or_else(|_| e.to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether an existing database can be taken over by this spec: same primary region.
pub fn adoption_conflict(instance: &CacheInstance, db: &Database) -> Option<String> {
    let want = instance.spec.primary_region.as_str();
    if !db.primary_region.is_empty() && db.primary_region != want {
        return Some(format!(
            "database {} has primary region {}, but spec.primaryRegion is {want}",
            db.database_id, db.primary_region
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(name: &str, spec: serde_json::Value) -> CacheInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": name, "namespace": "crm", "uid": "3F2A9C1D-0000-4000-8000-000000000000"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn db_like(i: &CacheInstance) -> Database {
        let req = create_request(i, "crm-db".into());
        Database {
            database_id: "id".into(),
            database_name: req.database_name,
            plan_type: "payg".into(),
            primary_region: req.primary_region,
            read_regions: req.read_regions,
            budget: req.budget.unwrap_or_default(),
            eviction: req.eviction.unwrap_or(false),
            auto_upgrade: req.auto_upgrade.unwrap_or(false),
            prod_pack_enabled: req.prod_pack_enabled.unwrap_or(false),
            db_disk_threshold: 100_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn create_request_follows_the_spec() {
        let i = instance(
            "crm",
            serde_json::json!({
                "primaryRegion": "us-central1", "plan": "fixed_1gb", "budget": 50,
                "eviction": true, "readRegions": ["eu-west-1", "us-east-1"]
            }),
        );
        let r = create_request(&i, "crm-db".into());
        assert_eq!(r.database_name, "crm-db");
        assert_eq!(r.platform, "gcp");
        assert_eq!(r.plan, "fixed_1gb");
        assert_eq!(r.read_regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(r.budget, Some(Budget::from_usd(50)));
        assert_eq!(r.eviction, Some(true));
        assert_eq!(r.auto_upgrade, None);
    }

    #[test]
    fn a_database_matching_the_spec_needs_no_call() {
        let i = instance(
            "crm",
            serde_json::json!({
                "primaryRegion": "us-east-1", "budget": 50, "eviction": true, "readRegions": ["eu-west-1"]
            }),
        );
        assert!(changes(&i, &db_like(&i)).is_empty());
    }

    #[test]
    fn each_difference_is_one_change() {
        let i = instance(
            "crm",
            serde_json::json!({
                "primaryRegion": "us-east-1", "budget": 50, "eviction": true, "autoUpgrade": true,
                "prodPack": false, "plan": "fixed_5gb", "readRegions": ["eu-west-1"]
            }),
        );
        let mut db = db_like(&i);
        db.budget = Budget::from_usd(500);
        db.read_regions = vec![];
        db.eviction = false;
        db.auto_upgrade = false;
        let c = changes(&i, &db);
        assert_eq!(
            c,
            vec![
                Change::ReadRegions(vec!["eu-west-1".into()]),
                Change::Plan(Plan::Fixed5Gb),
                Change::Budget(50),
                Change::Eviction(true),
                Change::AutoUpgrade(true),
            ]
        );
        for change in &c {
            change.apply_to(&mut db);
        }
        assert!(
            changes(&i, &db).is_empty(),
            "applying the changes converges"
        );
    }

    #[test]
    fn unset_fields_are_left_alone() {
        let i = instance("crm", serde_json::json!({"primaryRegion": "us-east-1"}));
        let mut db = db_like(&i);
        db.budget = Budget::from_usd(999);
        db.eviction = true;
        db.auto_upgrade = true;
        db.prod_pack_enabled = true;
        db.daily_backup_enabled = true;
        // A production database adopted as it is: fixed plan, a replica, an allow-list.
        db.plan_type = "paid".into();
        db.db_disk_threshold = 1_000_000_000;
        db.read_regions = vec!["eu-west-1".into()];
        db.allowed_ip_ranges = vec!["10.0.0.0/8".into()];
        assert!(changes(&i, &db).is_empty());
    }

    #[test]
    fn explicit_empty_lists_mean_none() {
        let i = instance(
            "crm",
            serde_json::json!({"primaryRegion": "us-east-1", "readRegions": [], "allowedIPs": []}),
        );
        let mut db = db_like(&i);
        db.read_regions = vec!["eu-west-1".into()];
        db.allowed_ip_ranges = vec!["10.0.0.0/8".into()];
        assert_eq!(
            changes(&i, &db),
            vec![Change::ReadRegions(vec![]), Change::AllowedIps(vec![])]
        );
    }

    #[test]
    fn changes_describe_the_old_and_the_new_value() {
        let i = instance(
            "crm",
            serde_json::json!({"primaryRegion": "us-east-1", "plan": "payg", "budget": 10, "readRegions": [], "eviction": true}),
        );
        let mut db = db_like(&i);
        db.plan_type = "paid".into();
        db.db_disk_threshold = 1_000_000_000;
        db.budget = Budget::from_usd(100);
        db.eviction = false;
        db.read_regions = vec!["eu-west-1".into()];
        let described: Vec<String> = changes(&i, &db).iter().map(|c| c.describe(&db)).collect();
        assert_eq!(
            described,
            [
                "readRegions [eu-west-1] → []",
                "plan fixed_1gb → payg",
                "budget 100 → 10",
                "eviction false → true"
            ]
        );
        assert_eq!(Change::Budget(10).drift(&db), "budget (spec 10, live 100)");
    }

    #[test]
    fn a_new_database_gets_the_documented_defaults() {
        let i = instance("crm", serde_json::json!({"primaryRegion": "eu-west-1"}));
        let r = create_request(&i, "crm-db".into());
        assert_eq!(r.plan, "payg");
        assert!(r.read_regions.is_empty());
        assert_eq!(
            (r.budget, r.eviction, r.auto_upgrade, r.prod_pack_enabled),
            (None, None, None, None)
        );
        assert!(r.tls);
    }

    #[test]
    fn allow_lists_compare_in_canonical_form() {
        assert_eq!(
            normalize_ips(&[
                "10.1.2.3/8".into(),
                "203.0.113.7".into(),
                "10.0.0.0/8".into()
            ]),
            ["10.0.0.0/8", "203.0.113.7/32"]
        );
        let i = instance(
            "crm",
            serde_json::json!({"primaryRegion": "us-east-1", "allowedIPs": ["203.0.113.7", "10.0.0.0/8"]}),
        );
        let mut db = db_like(&i);
        assert_eq!(
            changes(&i, &db),
            vec![Change::AllowedIps(vec![
                "10.0.0.0/8".into(),
                "203.0.113.7/32".into()
            ])]
        );
        db.allowed_ip_ranges = vec!["203.0.113.7/32".into(), "10.0.0.0/8".into()];
        assert!(changes(&i, &db).is_empty());
        let omitted = instance("crm", serde_json::json!({"primaryRegion": "us-east-1"}));
        assert!(changes(&omitted, &db).is_empty(), "omitted: left alone");
        let open = instance(
            "crm",
            serde_json::json!({"primaryRegion": "us-east-1", "allowedIPs": []}),
        );
        assert_eq!(changes(&open, &db), vec![Change::AllowedIps(vec![])]);
    }

    #[test]
    fn adoption_requires_the_same_primary() {
        let i = instance("crm", serde_json::json!({"primaryRegion": "us-east-1"}));
        let mut db = db_like(&i);
        assert!(adoption_conflict(&i, &db).is_none());
        db.primary_region = "eu-west-1".into();
        assert!(adoption_conflict(&i, &db).unwrap().contains("eu-west-1"));
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    #[test]
    fn rotation_is_scheduled_every_interval_after_the_last() {
        let every = Some(SignedDuration::from_hours(24 * 30));
        let last = Some(at("2026-10-01T00:00:00Z"));
        let (next, due) = rotation_plan(every, last, None, None, at("2026-10-30T23:59:59Z"));
        assert_eq!(next, Some(at("2026-10-31T00:00:00Z")));
        assert_eq!(due, None);
        let (_, due) = rotation_plan(every, last, None, None, at("2026-10-31T00:00:00Z"));
        assert_eq!(due, Some(RotationDue::Scheduled));
    }

    #[test]
    fn without_an_interval_or_a_last_rotation_nothing_is_scheduled() {
        let now = at("2030-01-01T00:00:00Z");
        let last = Some(at("2026-10-01T00:00:00Z"));
        assert_eq!(rotation_plan(None, last, None, None, now), (None, None));
        let every = Some(SignedDuration::from_hours(1));
        assert_eq!(rotation_plan(every, None, None, None, now), (None, None));
    }

    #[test]
    fn a_request_is_served_once_and_wins_over_the_schedule() {
        let every = Some(SignedDuration::from_hours(1));
        let last = Some(at("2026-10-01T00:00:00Z"));
        let late = at("2026-10-01T05:00:00Z");
        let (_, due) = rotation_plan(every, last, Some("r1"), None, late);
        assert_eq!(due, Some(RotationDue::Requested));
        let (_, due) = rotation_plan(every, last, Some("r1"), Some("r1"), late);
        assert_eq!(
            due,
            Some(RotationDue::Scheduled),
            "served: the schedule still applies"
        );
        let early = at("2026-10-01T00:30:00Z");
        assert_eq!(
            rotation_plan(every, last, Some("r1"), Some("r1"), early).1,
            None
        );
        assert_eq!(
            rotation_plan(every, last, Some("r2"), Some("r1"), early).1,
            Some(RotationDue::Requested)
        );
    }

    #[test]
    fn every_comes_from_the_spec() {
        let mut obj = CacheInstance::new(
            "c",
            serde_json::from_value(serde_json::json!({
                "primaryRegion": "us-east-1",
                "passwordRotation": {"every": "720h"}
            }))
            .expect("a valid spec"),
        );
        assert_eq!(rotation_every(&obj), Some(SignedDuration::from_hours(720)));
        obj.spec.password_rotation = None;
        assert_eq!(rotation_every(&obj), None);
    }
}
