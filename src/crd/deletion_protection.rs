//! Deletion protection, enforced by the API server: a ValidatingAdmissionPolicy (and its
//! binding) that refuses the DELETE of a CacheInstance whose `spec.deletionProtection` is true.
//!
//! It is installed with the CRDs (`crds/`, the chart's CRD templates and `deploy/manifests`), for
//! every namespace, so a `kubectl delete`, a GitOps prune or a namespace delete cannot remove a
//! protected instance (and with it, under `deletionPolicy: Delete`, its database) even when the
//! operator is not running. On a DELETE the policy sees the stored object as `oldObject`.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};

use super::GROUP;

/// Name of the policy and of its binding.
pub const DELETION_PROTECTION_POLICY: &str = "upstash-operator-deletion-protection";

/// File of `crds/` that holds the policy and its binding.
pub const DELETION_PROTECTION_FILE: &str = "deletion-protection.admissionregistration.k8s.io.yaml";

/// The CEL expression that holds when a DELETE may go ahead.
pub const ALLOW_DELETE: &str =
    "!has(oldObject.spec.deletionProtection) || oldObject.spec.deletionProtection != true";

/// The refusal, naming the object and the command that turns protection off.
pub const REFUSAL_MESSAGE: &str = concat!(
    "'CacheInstance ' + oldObject.metadata.namespace + '/' + oldObject.metadata.name + ",
    "' has spec.deletionProtection: true, so it cannot be deleted (its Upstash database stays). ",
    "To delete it, turn protection off first: kubectl patch cacheinstance ' + ",
    "oldObject.metadata.name + ' -n ' + oldObject.metadata.namespace + ",
    "' --type merge -p \\'{\"spec\":{\"deletionProtection\":false}}\\''"
);

/// What a CacheInstance being deleted while protected says (the policy was not installed, or
/// protection was turned on after the delete): the operator keeps the database and the
/// finalizer until protection is turned off.
pub const HELD_MESSAGE: &str = "spec.deletionProtection is true, so the operator keeps the database and this CacheInstance waits. Set spec.deletionProtection: false to let the cleanup run as deletionPolicy says, or set deletionPolicy: Retain to let this object go and keep the database";

/// Whether the cleanup of a deleted `obj` that would delete its database must wait.
pub fn holds_cleanup(obj: &super::CacheInstance) -> bool {
    obj.spec.deletion_protection == Some(true)
}

/// The policy: DELETE of a protected CacheInstance is refused.
pub fn policy() -> ValidatingAdmissionPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": DELETION_PROTECTION_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [GROUP],
                    "apiVersions": ["*"],
                    "operations": ["DELETE"],
                    "resources": ["cacheinstances"],
                }],
            },
            "validations": [{
                "expression": ALLOW_DELETE,
                "messageExpression": REFUSAL_MESSAGE,
                "reason": "Forbidden",
            }],
        },
    }))
    .expect("the deletion protection policy deserializes")
}

/// The binding: the policy applies in every namespace and denies.
pub fn binding() -> ValidatingAdmissionPolicyBinding {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": DELETION_PROTECTION_POLICY},
        "spec": {
            "policyName": DELETION_PROTECTION_POLICY,
            "validationActions": ["Deny"],
        },
    }))
    .expect("the deletion protection binding deserializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_matches_deletes_of_cache_instances_only_and_its_binding_names_it() {
        let policy = serde_json::to_value(policy()).unwrap();
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"];
        assert_eq!(rules[0]["operations"], serde_json::json!(["DELETE"]));
        assert_eq!(rules[0]["resources"], serde_json::json!(["cacheinstances"]));
        let binding = serde_json::to_value(binding()).unwrap();
        assert_eq!(binding["spec"]["policyName"], DELETION_PROTECTION_POLICY);
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
        assert!(binding["spec"]["matchResources"].is_null());
    }

    #[test]
    fn the_refusal_says_how_to_turn_protection_off() {
        assert!(REFUSAL_MESSAGE.contains(r#"\'{"spec":{"deletionProtection":false}}\'"#));
        assert!(REFUSAL_MESSAGE.contains("kubectl patch cacheinstance"));
    }
}
