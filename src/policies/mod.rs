//! The CachePolicies the operator knows about: one shared watch per watched scope.
//!
//! Each scope's watch fills one reflector store (read by the reconciler, the monitor and the
//! policy status controller) and fans its events out to two subscribers through kube's shared
//! streams: the CacheInstance controller (a policy change re-reconciles its namespace's
//! instances) and the policy status controller ([`status`]). kube's shared stream carries applied
//! objects only, so deletions reach the instance controller through a channel of their own.

pub mod status;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{Stream, StreamExt, TryStreamExt, channel::mpsc};
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, ReflectHandle, Store},
        watcher,
    },
};

use crate::{
    crd::{CacheInstance, CachePolicy},
    guardrails::{self, Applicable},
};

/// Events a subscriber may lag behind before the watch waits for it. Policies change rarely;
/// a standby replica (whose controllers do not run yet) falls this far behind at most.
const SHARED_BUFFER: usize = 1024;

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

    /// The policies that apply to `instance` (see [`guardrails::applicable`]).
    pub fn applicable(&self, instance: &CacheInstance) -> Applicable {
        guardrails::applicable(instance, &self.all())
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

/// The subscriptions of one scope's policy watch, each taken once by its consumer.
struct Subscriptions {
    instances: Option<(
        ReflectHandle<CachePolicy>,
        mpsc::UnboundedReceiver<Arc<CachePolicy>>,
    )>,
    status: Option<ReflectHandle<CachePolicy>>,
}

/// Whether a policy event should requeue the instances of its namespace, given the
/// generation last seen of each policy: a policy seen for the first time, a new spec
/// (`metadata.generation`) or a deletion does; a status write does not.
pub fn policy_trigger(
    generations: &mut HashMap<ObjectRef<CachePolicy>, Option<i64>>,
    policy: &CachePolicy,
    deleted: bool,
) -> bool {
    let key = ObjectRef::from_obj(policy);
    if deleted {
        generations.remove(&key);
        return true;
    }
    let generation = policy.metadata.generation;
    generations.insert(key, generation) != Some(generation)
}

/// One scope's policy watch.
pub struct ScopeWatch {
    /// The namespace watched, `None` for the whole cluster.
    pub scope: Option<String>,
    /// Its store.
    pub store: Store<CachePolicy>,
    subscriptions: Mutex<Subscriptions>,
}

impl ScopeWatch {
    /// The changes to the policies of this scope that can change what their instances should
    /// do (a new policy, a new spec, a deletion), for the CacheInstance controller's
    /// `watches_shared_stream`. Status writes are left out: the status controller updates
    /// `status.selectedInstances` while instances come and go, and each such write would
    /// otherwise requeue every instance of the namespace. Panics when taken twice.
    pub fn instance_trigger(&self) -> impl Stream<Item = Arc<CachePolicy>> + Send + 'static {
        let (applied, deleted) = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instances
            .take()
            .expect("the instance trigger of a policy watch is taken once");
        let mut generations = HashMap::new();
        futures::stream::select(applied.map(|p| (p, false)), deleted.map(|p| (p, true))).filter_map(
            move |(policy, deleted)| {
                std::future::ready(
                    policy_trigger(&mut generations, &policy, deleted).then_some(policy),
                )
            },
        )
    }

    /// Applied policies, for the policy status controller. Panics when taken twice.
    pub fn status_trigger(&self) -> ReflectHandle<CachePolicy> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status
            .take()
            .expect("the status trigger of a policy watch is taken once")
    }
}

/// Every scope's policy watch.
pub struct PolicyWatches {
    /// Read access across scopes.
    pub policies: Policies,
    /// One watch per scope, in the order of the scopes given to [`watch`].
    pub scopes: Vec<ScopeWatch>,
}

impl PolicyWatches {
    /// The watch of `scope`.
    pub fn scope(&self, scope: Option<&str>) -> &ScopeWatch {
        self.scopes
            .iter()
            .find(|s| s.scope.as_deref() == scope)
            .expect("a policy watch per scope")
    }
}

/// Starts one shared reflector per scope (`namespaces` empty = cluster-wide).
pub fn watch(client: &Client, namespaces: &[String]) -> PolicyWatches {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut watches = Vec::new();
    for scope in scopes {
        let api: Api<CachePolicy> = match &scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let (reader, writer) = reflector::store_shared(SHARED_BUFFER);
        // Subscribed before the watch starts, so both see the initial list.
        let for_instances = writer.subscribe().expect("a shared store");
        let for_status = writer.subscribe().expect("a shared store");
        let (deleted_tx, deleted_rx) = mpsc::unbounded();
        let stream = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect_shared(writer)
            .inspect_ok(move |event| {
                if let watcher::Event::Delete(policy) = event {
                    let _ = deleted_tx.unbounded_send(Arc::new(policy.clone()));
                }
            });
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    tracing::warn!(err = %e, "CachePolicy watch error");
                }
            }
        });
        watches.push(ScopeWatch {
            scope,
            store: reader,
            subscriptions: Mutex::new(Subscriptions {
                instances: Some((for_instances, deleted_rx)),
                status: Some(for_status),
            }),
        });
    }
    PolicyWatches {
        policies: Policies {
            stores: watches.iter().map(|w| w.store.clone()).collect(),
        },
        scopes: watches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(generation: i64, selected: i32) -> CachePolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cache.upstash-operator.dev/v1alpha1",
            "kind": "CachePolicy",
            "metadata": {"name": "prod", "namespace": "crm", "generation": generation},
            "spec": {},
            "status": {"selectedInstances": selected},
        }))
        .unwrap()
    }

    #[test]
    fn policy_status_writes_do_not_requeue_instances() {
        let mut seen = HashMap::new();
        assert!(policy_trigger(&mut seen, &policy(1, 0), false));
        // Status only, or a relist after a watch restart.
        assert!(!policy_trigger(&mut seen, &policy(1, 7), false));
        assert!(!policy_trigger(&mut seen, &policy(1, 7), false));
        // A new spec.
        assert!(policy_trigger(&mut seen, &policy(2, 7), false));
        // Deleted, then created again with the same name.
        assert!(policy_trigger(&mut seen, &policy(2, 7), true));
        assert!(policy_trigger(&mut seen, &policy(1, 0), false));
    }
}
