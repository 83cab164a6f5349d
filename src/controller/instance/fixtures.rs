//! Test fixtures for the pipeline's stages: CacheInstances, databases, statuses and policies
//! written as YAML, the way they appear in a cluster and in Upstash's answers.

use std::sync::Arc;

use serde_json::Value;

use crate::{
    crd::{CacheInstance, CacheInstanceStatus, CachePolicy},
    upstash::Database,
};

/// The cluster identity the fixtures use.
pub const CLUSTER: &str = "0b5d6c1e-cluster";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str::<Value>(text).expect("fixture YAML")
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, over) => *base = over,
    }
}

/// A CacheInstance `crm/orders` (uid `3f2a9c1d-...`, generation 1), overridden by `text`
/// (`spec`, `metadata`, `status`).
pub fn instance(text: &str) -> CacheInstance {
    let mut value = serde_json::json!({
        "apiVersion": "cache.upstash-operator.dev/v1alpha1",
        "kind": "CacheInstance",
        "metadata": {
            "name": "orders",
            "namespace": "crm",
            "uid": "3f2a9c1d-0000-4000-8000-000000000000",
            "generation": 1,
            "creationTimestamp": "2026-10-01T00:00:00Z",
        },
    });
    merge(&mut value, yaml(text));
    serde_json::from_value(value).expect("a CacheInstance fixture")
}

/// A database as Upstash's get answers it (with credentials), overridden by `text`.
pub fn database(text: &str) -> Database {
    let mut value = serde_json::json!({
        "database_id": "db-1",
        "database_name": "crm-orders-1",
        "type": "payg",
        "primary_region": "us-east-1",
        "read_regions": [],
        "endpoint": "crm-orders.upstash.io",
        "port": 6379,
        "state": "active",
        "creation_time": 1_790_000_000,
        "tls": true,
        "eviction": false,
        "auto_upgrade": false,
        "prod_pack_enabled": false,
        "budget": 0,
        "db_disk_threshold": 100_000_000_000_u64,
        "daily_backup_enabled": false,
        "allowed_ip_ranges": [],
        "password": "pw-1",
        "rest_token": "AXtoken-1",
        "read_only_rest_token": "Anro-1",
    });
    merge(&mut value, yaml(text));
    serde_json::from_value(value).expect("a Database fixture")
}

/// A status written as YAML.
pub fn status(text: &str) -> CacheInstanceStatus {
    serde_json::from_value(yaml(text)).expect("a status fixture")
}

/// A CachePolicy `crm/<name>` with `spec` as YAML.
pub fn policy(name: &str, spec: &str) -> Arc<CachePolicy> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": name, "namespace": "crm"},
            "spec": yaml(spec),
        }))
        .expect("a CachePolicy fixture"),
    )
}
