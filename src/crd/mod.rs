//! The custom resources served under `cache.upstash-operator.dev/v1alpha1`.
//!
//! Everything here is the product's contract with users, GitOps repositories and the Helm chart:
//! doc comments on fields become `kubectl explain` output, and the validation attributes become
//! OpenAPI and CEL rules that the API server enforces at admission.

mod common;
pub mod deletion_protection;
mod instance;
mod instance_status;
mod policy;
mod secret;
mod users;
pub mod validation;
mod window;

pub use common::*;
pub use instance::*;
pub use instance_status::*;
pub use policy::*;
pub use secret::*;
pub use users::*;
pub use window::*;

/// API group of both kinds.
pub const GROUP: &str = "cache.upstash-operator.dev";
/// API version of both kinds.
pub const VERSION: &str = "v1alpha1";

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// All CustomResourceDefinitions the operator serves, in the order they are written to `crds/`.
pub fn all() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt;
    vec![tidy(CacheInstance::crd()), tidy(CachePolicy::crd())]
}

/// Removes `nullable: true` (and `null` enum members) that schemars emits for `Option` fields.
///
/// Optional fields are simply omitted in manifests; without `nullable` the API server prunes an
/// explicit `null` instead of storing it, so CEL rules and the operator never see a null value.
fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("nullable");
                if let Some(serde_json::Value::Array(members)) = map.get_mut("enum") {
                    members.retain(|m| !m.is_null());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes to JSON");
    walk(&mut value);
    serde_json::from_value(value).expect("a tidied CRD deserializes")
}
