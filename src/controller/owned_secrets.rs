//! The connection Secrets the operator wrote, from the controller's own watch of them, so that
//! a pass reads no Secret from the API server once an instance's Secret exists.
//!
//! The watch selects the operator's `managed-by` label, so a Secret it does not hold may still
//! exist without that label (someone else's Secret of the same name, which must never be
//! overwritten): only a Secret found here spares the read; an absent one is read from the API
//! server, as before.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};

/// One store per watched scope (`None` = every namespace).
#[derive(Default)]
pub struct OwnedSecrets {
    stores: Mutex<Vec<(Option<String>, Store<Secret>)>>,
}

impl OwnedSecrets {
    /// Adds the store of the controller watching `scope`.
    pub fn register(&self, scope: Option<String>, store: Store<Secret>) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((scope, store));
    }

    /// The operator's Secret `namespace/name` as its watch last saw it, if it holds one.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(scope, _)| scope.as_deref().is_none_or(|s| s == namespace))
            .find_map(|(_, store)| store.get(&key))
    }
}
