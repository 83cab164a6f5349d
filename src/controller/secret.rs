//! The connection Secret(s) a CacheInstance gets, built from the database's connection details
//! (pure: no I/O), plus the ownership checks that keep the operator off Secrets it does not own.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::Resource;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::{
    crd::{CacheInstance, SecretPreset},
    templates::{RenderError, Renderer},
    upstash::Database,
};

/// Label set on every Secret the operator writes.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "upstash-operator");
/// Label naming the CacheInstance a Secret belongs to (its name, shortened with a hash past
/// 63 characters; the ownerReference names it exactly).
pub const INSTANCE_LABEL: &str = "cache.upstash-operator.dev/instance";
/// Secret type for Service Binding.
pub const SERVICE_BINDING_TYPE: &str = "servicebinding.io/redis";

/// What a connection Secret is made of. `Debug` shows no credential.
#[derive(Clone)]
pub struct ConnectionDetails {
    pub database_id: String,
    pub database_name: String,
    /// `host` or `host:port` as Upstash (or a local emulator) advertises it.
    pub endpoint: String,
    /// TCP port of the Redis protocol (6379 for current databases).
    pub port: u64,
    pub password: SecretString,
    pub rest_token: SecretString,
    pub read_only_rest_token: SecretString,
    pub key_prefix: String,
}

impl std::fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionDetails")
            .field("database_id", &self.database_id)
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ConnectionDetails {
    /// The connection details of `db` (which carries its credentials) for `instance`.
    pub fn new(instance: &CacheInstance, db: &Database) -> Self {
        let secret = |s: &Option<SecretString>| s.clone().unwrap_or_else(|| SecretString::from(""));
        Self {
            database_id: db.database_id.clone(),
            database_name: db.database_name.clone(),
            endpoint: db.endpoint.clone(),
            port: if db.port == 0 { 6379 } else { db.port },
            password: secret(&db.password),
            rest_token: secret(&db.rest_token),
            read_only_rest_token: secret(&db.read_only_rest_token),
            key_prefix: instance.spec.key_prefix.clone().unwrap_or_default(),
        }
    }

    /// Details of the right shape and no real value, to check templates against before any
    /// database exists. The values are as long as real ones may be (Upstash's are shorter), so
    /// that the size of a Secret rendered with them is not below the real one's.
    pub fn placeholder(instance: &CacheInstance) -> Self {
        let filler = |n: usize| "x".repeat(n);
        Self {
            database_id: "00000000-0000-0000-0000-000000000000".into(),
            database_name: filler(64),
            endpoint: format!("{}.upstash.io", filler(52)),
            port: 6379,
            password: SecretString::from(filler(64)),
            rest_token: SecretString::from(filler(256)),
            read_only_rest_token: SecretString::from(filler(256)),
            key_prefix: instance.spec.key_prefix.clone().unwrap_or_default(),
        }
    }

    pub fn host(&self) -> &str {
        crate::upstash::types::split_host_port(&self.endpoint).0
    }

    /// `https://<endpoint>`.
    pub fn rest_url(&self) -> String {
        format!("https://{}", self.endpoint)
    }

    /// `rediss://default:<password>@<host>:<port>`.
    pub fn redis_url(&self) -> String {
        let host = self.host();
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!(
            "rediss://default:{}@{host}:{}",
            self.password.expose_secret(),
            self.port
        )
    }

    /// A short digest of the credentials, stamped on restarted workloads: it changes exactly
    /// when the credentials do.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.database_id.as_str(),
            self.endpoint.as_str(),
            self.password.expose_secret(),
            self.rest_token.expose_secret(),
            self.read_only_rest_token.expose_secret(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The variables templates may use (and nothing else: no environment, no files, no other
    /// instance's values).
    pub fn template_context(&self) -> serde_json::Value {
        serde_json::json!({
            "restUrl": self.rest_url(),
            "restToken": self.rest_token.expose_secret(),
            "readOnlyRestToken": self.read_only_rest_token.expose_secret(),
            "host": self.host(),
            "port": self.port,
            "password": self.password.expose_secret(),
            "redisUrl": self.redis_url(),
            "keyPrefix": self.key_prefix.as_str(),
            "databaseId": self.database_id.as_str(),
            "databaseName": self.database_name.as_str(),
        })
    }
}

/// `spec.secret.templates`, if any.
pub fn templates(instance: &CacheInstance) -> Option<&BTreeMap<String, String>> {
    instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.templates.as_ref())
        .filter(|t| !t.is_empty())
}

/// Renders the instance's templates with `details` in the bounded renderer (see
/// [`crate::templates`]); no templates, nothing rendered.
pub async fn render_templates(
    renderer: &Renderer,
    instance: &CacheInstance,
    details: &ConnectionDetails,
) -> Result<BTreeMap<String, String>, RenderError> {
    match templates(instance) {
        Some(templates) => {
            renderer
                .render_all(templates, &details.template_context())
                .await
        }
        None => Ok(BTreeMap::new()),
    }
}

/// Renders the instance's templates in this process, within the bounds of
/// [`crate::templates::render_bounded`] but not its memory limit: for tests.
#[cfg(test)]
pub fn render_in_process(
    instance: &CacheInstance,
    details: &ConnectionDetails,
) -> Result<BTreeMap<String, String>, RenderError> {
    let context = minijinja::Value::from_serialize(details.template_context());
    templates(instance)
        .into_iter()
        .flatten()
        .map(|(key, template)| {
            crate::templates::render_bounded(template, &context)
                .map(|out| (key.clone(), out))
                .map_err(|reason| RenderError {
                    key: key.clone(),
                    reason: crate::templates::RenderFailure::Template(reason),
                })
        })
        .collect()
}

/// The bytes a Secret's data holds, as Kubernetes counts them against its 1 MiB (the values).
pub fn data_size(data: &BTreeMap<String, String>) -> usize {
    data.values().map(String::len).sum()
}

/// Name of the main connection Secret: `spec.secret.name`, else the CacheInstance's name.
pub fn secret_name(instance: &CacheInstance) -> String {
    instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| instance.metadata.name.clone().unwrap_or_default())
}

/// Name of the read-only Secret, if one is requested.
pub fn read_only_secret_name(instance: &CacheInstance) -> Option<String> {
    instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.read_only.as_ref())
        .map(|r| r.name.clone())
}

fn presets(instance: &CacheInstance) -> Vec<SecretPreset> {
    instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.presets.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| vec![SecretPreset::Env])
}

/// The data of the main connection Secret, with `rendered`, the instance's rendered templates.
pub fn connection_data(
    instance: &CacheInstance,
    details: &ConnectionDetails,
    rendered: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let presets = presets(instance);
    if presets.contains(&SecretPreset::Env) {
        data.insert("UPSTASH_REDIS_REST_URL".into(), details.rest_url());
        data.insert(
            "UPSTASH_REDIS_REST_TOKEN".into(),
            details.rest_token.expose_secret().to_string(),
        );
        data.insert("REDIS_URL".into(), details.redis_url());
        data.insert(
            "REDIS_PASSWORD".into(),
            details.password.expose_secret().to_string(),
        );
        data.insert("REDIS_KEY_PREFIX".into(), details.key_prefix.clone());
        data.insert("REDIS_TLS_ENABLED".into(), "true".into());
    }
    if presets.contains(&SecretPreset::ServiceBinding) {
        data.insert("type".into(), "redis".into());
        data.insert("provider".into(), "upstash".into());
        data.insert("host".into(), details.host().to_string());
        data.insert("port".into(), details.port.to_string());
        data.insert("username".into(), "default".into());
        data.insert(
            "password".into(),
            details.password.expose_secret().to_string(),
        );
        data.insert("uri".into(), details.redis_url());
        data.insert("ssl".into(), "true".into());
    }
    for (key, value) in rendered {
        data.insert(key.clone(), value.clone());
    }
    data
}

/// The data of the read-only Secret.
pub fn read_only_data(details: &ConnectionDetails) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("UPSTASH_REDIS_REST_URL".to_string(), details.rest_url()),
        (
            "UPSTASH_REDIS_REST_TOKEN".to_string(),
            details.read_only_rest_token.expose_secret().to_string(),
        ),
        ("REDIS_KEY_PREFIX".to_string(), details.key_prefix.clone()),
    ])
}

/// Secret type of the main Secret.
pub fn secret_type(instance: &CacheInstance) -> &'static str {
    if presets(instance).contains(&SecretPreset::ServiceBinding) {
        SERVICE_BINDING_TYPE
    } else {
        "Opaque"
    }
}

/// The owner reference every Secret of `instance` carries.
pub fn owner_reference(instance: &CacheInstance) -> Option<OwnerReference> {
    instance.controller_owner_ref(&())
}

/// A complete Secret object to apply.
pub fn build_secret(
    instance: &CacheInstance,
    name: &str,
    type_: &str,
    data: BTreeMap<String, String>,
) -> Secret {
    let mut labels: BTreeMap<String, String> = instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.labels.clone())
        .unwrap_or_default();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(INSTANCE_LABEL.into(), instance_label(instance));
    let annotations = instance
        .spec
        .secret
        .as_ref()
        .and_then(|s| s.annotations.clone())
        .filter(|a| !a.is_empty());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: instance.metadata.namespace.clone(),
            labels: Some(labels),
            annotations,
            owner_references: owner_reference(instance).map(|o| vec![o]),
            ..Default::default()
        },
        type_: Some(type_.to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The value of [`INSTANCE_LABEL`] on the Secrets of `instance`.
pub fn instance_label(instance: &CacheInstance) -> String {
    crate::names::label_value(instance.metadata.name.as_deref().unwrap_or_default())
}

/// The label selector that finds the Secrets the operator wrote for `instance` (and possibly
/// for an earlier object of the same name: check [`owned_by`]).
pub fn selector(instance: &CacheInstance) -> String {
    format!(
        "{}={},{INSTANCE_LABEL}={}",
        MANAGED_BY.0,
        MANAGED_BY.1,
        instance_label(instance)
    )
}

/// Whether an object with `meta` is controlled by `instance` (an owner reference with its UID).
pub fn owned_by(meta: &ObjectMeta, instance: &CacheInstance) -> bool {
    let uid = instance.metadata.uid.as_deref();
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| Some(r.uid.as_str()) == uid && r.controller == Some(true))
    })
}

/// Who owns an existing Secret, as far as this CacheInstance is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// No such Secret yet.
    Absent,
    /// Controlled by this CacheInstance.
    Ours,
    /// Someone else's: never touched.
    Foreign,
}

pub fn ownership(existing: Option<&Secret>, instance: &CacheInstance) -> Ownership {
    let Some(existing) = existing else {
        return Ownership::Absent;
    };
    if owned_by(&existing.metadata, instance) {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// The key under which a cached copy of one of the operator's Secrets keeps the digest of its
/// data, in its labels, instead of the data: every instance's Secret is cached for as long as
/// the operator runs, and the data is only ever compared. It is not a valid label key (it has
/// spaces), so it can neither be taken for a real label nor be written to the API server.
pub const CACHED_DATA_DIGEST: &str = "data digest (operator cache)";

/// SHA-256 over the data's keys and values, in key order.
pub fn data_digest(data: Option<&BTreeMap<String, ByteString>>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in data.into_iter().flatten() {
        for part in [key.as_bytes(), value.0.as_slice()] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Drops from a watched Secret of the operator's what the cache need not hold: managedFields,
/// and the data, kept as its digest (see [`CACHED_DATA_DIGEST`]).
pub fn trim_cached(secret: &mut Secret) {
    secret.metadata.managed_fields = None;
    let digest = data_digest(secret.data.as_ref());
    secret.data = None;
    secret
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(CACHED_DATA_DIGEST.to_string(), digest);
}

/// Whether `existing` already matches `desired` (data, type, our labels and annotations, owner
/// reference), so that no write is needed. `existing` may be a cached copy that holds the
/// digest of its data instead of the data.
pub fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let contains = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let data_matches = match existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CACHED_DATA_DIGEST))
    {
        Some(digest) => *digest == data_digest(desired.data.as_ref()),
        None => existing.data == desired.data,
    };
    existing.type_.as_deref().unwrap_or("Opaque") == desired.type_.as_deref().unwrap_or("Opaque")
        && data_matches
        && contains(&existing.metadata.labels, &desired.metadata.labels)
        && contains(
            &existing.metadata.annotations,
            &desired.metadata.annotations,
        )
        && existing.metadata.owner_references == desired.metadata.owner_references
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(spec: serde_json::Value) -> CacheInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CacheInstance",
            "metadata": {"name": "crm-cache", "namespace": "crm", "uid": "1234-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn details() -> ConnectionDetails {
        ConnectionDetails {
            database_id: "db-1".into(),
            database_name: "crm".into(),
            endpoint: "eu1-fine-fox-12345.upstash.io".into(),
            port: 6379,
            password: SecretString::from("pw0123"),
            rest_token: SecretString::from("AXtoken"),
            read_only_rest_token: SecretString::from("Anro"),
            key_prefix: "unite-hub:".into(),
        }
    }

    /// Renders the templates with placeholder values, as the check before any call does.
    fn check(instance: &CacheInstance) -> Result<(), RenderError> {
        render_in_process(instance, &ConnectionDetails::placeholder(instance)).map(|_| ())
    }

    #[test]
    fn the_admission_example_of_a_bad_template_fails_the_check() {
        use crate::crd::validation::{Check, breaking_spec};
        let bad = instance(breaking_spec(Check::TemplateInvalid));
        let e = check(&bad).unwrap_err();
        assert_eq!(e.key, "URL");
        let unknown = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"URL": "{{ restUrll }}"}}
        }));
        assert!(
            check(&unknown)
                .unwrap_err()
                .reason
                .to_string()
                .contains("undefined")
        );
        let good = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"CACHE_URL": "{{ redisUrl }}/0", "HOST": "{{ host }}:{{ port }}"}}
        }));
        assert_eq!(check(&good), Ok(()));
    }

    #[test]
    fn default_secret_has_exactly_the_guide_variables() {
        let i = instance(serde_json::json!({"primaryRegion": "us-east-1"}));
        let data = connection_data(&i, &details(), &render_in_process(&i, &details()).unwrap());
        assert_eq!(
            data.keys().collect::<Vec<_>>(),
            [
                "REDIS_KEY_PREFIX",
                "REDIS_PASSWORD",
                "REDIS_TLS_ENABLED",
                "REDIS_URL",
                "UPSTASH_REDIS_REST_TOKEN",
                "UPSTASH_REDIS_REST_URL"
            ]
        );
        assert_eq!(
            data["UPSTASH_REDIS_REST_URL"],
            "https://eu1-fine-fox-12345.upstash.io"
        );
        assert_eq!(
            data["REDIS_URL"],
            "rediss://default:pw0123@eu1-fine-fox-12345.upstash.io:6379"
        );
        assert_eq!(data["REDIS_TLS_ENABLED"], "true");
        assert_eq!(data["REDIS_KEY_PREFIX"], "unite-hub:");
        assert_eq!(secret_name(&i), "crm-cache");
        assert_eq!(secret_type(&i), "Opaque");
    }

    #[test]
    fn an_endpoint_with_a_port_keeps_it_in_the_rest_url_only() {
        let mut d = details();
        d.endpoint = "localhost:8443".into();
        assert_eq!(d.rest_url(), "https://localhost:8443");
        assert_eq!(d.redis_url(), "rediss://default:pw0123@localhost:6379");
    }

    #[test]
    fn service_binding_and_templates() {
        let i = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"name": "crm-redis", "presets": ["ServiceBinding"],
                       "templates": {"CACHE_URL": "{{ redisUrl }}/0", "CACHE_HOST": "{{ host }}"}}
        }));
        let data = connection_data(&i, &details(), &render_in_process(&i, &details()).unwrap());
        assert_eq!(data["type"], "redis");
        assert_eq!(data["provider"], "upstash");
        assert_eq!(data["port"], "6379");
        assert_eq!(
            data["CACHE_URL"],
            "rediss://default:pw0123@eu1-fine-fox-12345.upstash.io:6379/0"
        );
        assert_eq!(data["CACHE_HOST"], "eu1-fine-fox-12345.upstash.io");
        assert!(!data.contains_key("UPSTASH_REDIS_REST_URL"));
        assert_eq!(secret_type(&i), SERVICE_BINDING_TYPE);
        assert_eq!(secret_name(&i), "crm-redis");
    }

    #[test]
    fn a_bad_template_is_an_error_naming_the_key() {
        let i = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"X": "{{ nosuchvar }}"}}
        }));
        let e = render_in_process(&i, &details()).unwrap_err();
        assert_eq!(e.key, "X");
        assert!(!e.reason.to_string().contains("pw0123"));
    }

    #[test]
    fn templates_are_checked_before_any_database_exists() {
        let ok = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"CACHE_URL": "{{ redisUrl }}/0", "P": "{{ keyPrefix }}x"}}
        }));
        assert!(check(&ok).is_ok());
        let unknown = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"URL": "{{ redis_url }}"}}
        }));
        assert_eq!(check(&unknown).unwrap_err().key, "URL");
        let broken = instance(serde_json::json!({
            "primaryRegion": "us-east-1",
            "secret": {"templates": {"B": "{{ redisUrl "}}
        }));
        assert_eq!(check(&broken).unwrap_err().key, "B");
    }

    #[test]
    fn connection_details_come_from_the_database() {
        let i = instance(serde_json::json!({"primaryRegion": "us-east-1", "keyPrefix": "k:"}));
        let db: Database = serde_json::from_value(serde_json::json!({
            "database_id": "db-1", "database_name": "crm", "endpoint": "x.upstash.io", "port": 0,
            "password": "pw", "rest_token": "rt", "read_only_rest_token": "ro"
        }))
        .unwrap();
        let d = ConnectionDetails::new(&i, &db);
        assert_eq!(d.port, 6379, "an unreported port is the Redis default");
        assert_eq!(d.key_prefix, "k:");
        assert_eq!(d.redis_url(), "rediss://default:pw@x.upstash.io:6379");
    }

    #[test]
    fn read_only_secret_has_only_the_read_only_token() {
        let data = read_only_data(&details());
        assert_eq!(data["UPSTASH_REDIS_REST_TOKEN"], "Anro");
        assert!(
            !data
                .values()
                .any(|v| v.contains("pw0123") || v.contains("AXtoken"))
        );
    }

    #[test]
    fn ownership_and_freshness() {
        let i = instance(serde_json::json!({"primaryRegion": "us-east-1"}));
        let desired = build_secret(
            &i,
            "crm-cache",
            "Opaque",
            connection_data(&i, &details(), &render_in_process(&i, &details()).unwrap()),
        );
        assert_eq!(ownership(None, &i), Ownership::Absent);
        assert_eq!(ownership(Some(&desired), &i), Ownership::Ours);
        let mut foreign = desired.clone();
        foreign.metadata.owner_references = None;
        assert_eq!(ownership(Some(&foreign), &i), Ownership::Foreign);
        assert!(up_to_date(&desired, &desired));
        let mut stale = desired.clone();
        stale
            .data
            .as_mut()
            .unwrap()
            .insert("REDIS_PASSWORD".into(), ByteString(b"old".to_vec()));
        assert!(!up_to_date(&stale, &desired));

        // A cached copy holds its data's digest instead: the same answers.
        let mut cached = desired.clone();
        trim_cached(&mut cached);
        assert!(cached.data.is_none());
        assert!(up_to_date(&cached, &desired));
        let mut cached_stale = stale.clone();
        trim_cached(&mut cached_stale);
        assert!(!up_to_date(&cached_stale, &desired));
        assert_ne!(
            data_digest(stale.data.as_ref()),
            data_digest(desired.data.as_ref())
        );
    }

    #[test]
    fn debug_and_fingerprint_hide_credentials() {
        let d = details();
        assert!(!format!("{d:?}").contains("pw0123"));
        let f = d.fingerprint();
        assert_eq!(f.len(), 16);
        let mut rotated = details();
        rotated.password = SecretString::from("new");
        assert_ne!(rotated.fingerprint(), f);
    }
}
