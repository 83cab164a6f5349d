//! The CachePolicies the operator knows about: one reflector store per watched scope.

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};

use crate::crd::CachePolicy;

/// Read access to every watched CachePolicy.
#[derive(Clone, Default)]
pub struct Policies {
    stores: Vec<Store<CachePolicy>>,
}

impl Policies {
    /// Every known policy.
    pub fn all(&self) -> Vec<Arc<CachePolicy>> {
        self.stores.iter().flat_map(|s| s.state()).collect()
    }

    /// Waits until every store has its initial list.
    pub async fn wait_until_ready(&self) {
        for store in &self.stores {
            wait_until_ready(store).await;
        }
    }

    /// A fixed set of policies, for tests of code that reads them.
    pub fn from_policies(policies: Vec<CachePolicy>) -> Self {
        let (reader, mut writer) = reflector::store();
        for p in policies {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        Self {
            stores: vec![reader],
        }
    }
}

/// Waits until `store` has its initial list.
///
/// `Store::wait_until_ready` keeps only the most recent waiter's waker, so a second waiter (the
/// controller waits on the same store) may never be woken; polling again re-checks the state.
pub async fn wait_until_ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            store.wait_until_ready(),
        )
        .await
        {
            Ok(_) => return,
            Err(_) => continue,
        }
    }
}

/// Starts one reflector per scope (`namespaces` empty = cluster-wide) and returns the stores.
pub fn watch(client: &Client, namespaces: &[String]) -> Policies {
    let apis: Vec<Api<CachePolicy>> = if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let mut stores = Vec::new();
    for api in apis {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()),
        )
        .default_backoff()
        .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    tracing::warn!(err = %e, "CachePolicy watch error");
                }
            }
        });
        stores.push(reader);
    }
    Policies { stores }
}
