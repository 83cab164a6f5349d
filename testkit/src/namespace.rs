//! A namespace per test.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use rand::Rng;

use crate::cluster::Cluster;

/// The label every test namespace carries (`testkit=true`), so leftovers on a shared
/// cluster can be removed with `kubectl delete namespace -l testkit=true`.
pub const NAMESPACE_LABEL: (&str, &str) = ("testkit", "true");

/// A namespace created for one test, with a unique name `<prefix>-<random>`.
///
/// It is deleted (without waiting) when dropped, on a thread of its own so that `Drop`
/// neither blocks the test nor needs the test's runtime. Call [`TestNamespace::delete`]
/// to delete it and wait until it is gone.
pub struct TestNamespace {
    cluster: &'static Cluster,
    name: String,
    deleted: bool,
}

impl TestNamespace {
    pub(crate) async fn create(cluster: &'static Cluster, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": { NAMESPACE_LABEL.0: NAMESPACE_LABEL.1 },
            }
        }))
        .expect("a valid Namespace");
        let api: Api<Namespace> = Api::all(cluster.client().await);
        if let Err(e) = api.create(&PostParams::default(), &ns).await {
            panic!("testkit: creating namespace {name}: {e}");
        }
        TestNamespace {
            cluster,
            name,
            deleted: false,
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster the namespace is in.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// A new admin client whose default namespace is this one.
    pub async fn client(&self) -> Client {
        let mut config = self.cluster.config().await;
        config.default_namespace = self.name.clone();
        Client::try_from(config).unwrap_or_else(|e| panic!("testkit: creating a client: {e}"))
    }

    /// An [`Api`] for namespaced objects of kind `K` in this namespace (admin client).
    pub async fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client().await, &self.name)
    }

    /// Deletes the namespace and waits until the namespace controller has removed it and
    /// everything in it.
    ///
    /// # Panics
    ///
    /// When the deletion fails or does not finish within `timeout`.
    pub async fn delete(mut self, timeout: Duration) {
        self.deleted = true;
        let api: Api<Namespace> = Api::all(self.cluster.client().await);
        if let Err(e) = api.delete(&self.name, &DeleteParams::default()).await {
            panic!("testkit: deleting namespace {}: {e}", self.name);
        }
        let what = format!("namespace {} to be deleted", self.name);
        crate::wait_for(&what, timeout, || async {
            match api.get_opt(&self.name).await {
                Ok(None) => Ok(true),
                Ok(Some(ns)) => Err(format!(
                    "still there, phase {:?}, finalizers {:?}, conditions {:?}",
                    ns.status.as_ref().and_then(|s| s.phase.as_deref()),
                    ns.spec.as_ref().and_then(|s| s.finalizers.as_ref()),
                    ns.status.as_ref().and_then(|s| s.conditions.as_ref()),
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let cluster = self.cluster;
        let name = std::mem::take(&mut self.name);
        // Best effort: a failure to delete leaves a labelled namespace behind and must not
        // turn into a panic while the test may already be unwinding.
        let _ = std::thread::Builder::new()
            .name(format!("delete-ns-{name}"))
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let Ok(config) = kube::Config::from_custom_kubeconfig(
                        cluster.kubeconfig().clone(),
                        &Default::default(),
                    )
                    .await
                    else {
                        return;
                    };
                    let Ok(client) = Client::try_from(config) else {
                        return;
                    };
                    let _ = Api::<Namespace>::all(client)
                        .delete(&name, &DeleteParams::background())
                        .await;
                });
            });
    }
}

/// `<prefix>-<6 random hex digits>`, with the prefix reduced to a DNS label.
fn unique_name(prefix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(48);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let suffix: u32 = rand::rng().random_range(0..0x100_0000);
    format!("{clean}-{suffix:06x}")
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn names_are_dns_labels() {
        for prefix in ["GC test", "a_b.c", "", "---", &"x".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("same"), unique_name("same"));
    }
}
