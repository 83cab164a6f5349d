//! Validate (pure): every check of the spec and the policies that apply to it, made before any
//! Upstash call, so that a spec that cannot work never creates, changes or rotates anything.

use std::{sync::Arc, time::Duration};

use k8s_openapi::jiff::SignedDuration;
use kube::ResourceExt;

use crate::{
    controller::{
        conditions::{self, Cond},
        desired, secret,
    },
    crd::{
        CacheInstance, CachePolicy, DeletionPolicy, ManagementPolicy, OnMissing, PAUSE_ANNOTATION,
    },
    error::{Error, Result},
    guardrails::{self, Selection},
};

/// Shortest rotation interval accepted.
const MIN_ROTATION: Duration = Duration::from_secs(3600);

/// Whether the object is paused: no Upstash call and no Kubernetes write until the annotation
/// is removed.
pub fn paused(obj: &CacheInstance) -> bool {
    obj.annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// What the CachePolicies say about an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVerdict {
    /// The policy that applies, if one does.
    pub policy: Option<String>,
    /// The `PolicyCompliant` condition.
    pub compliance: Cond,
    /// Whether the guardrails block provisioning and changes.
    pub blocked: bool,
    /// What deleting the instance does to its database.
    pub deletion_policy: DeletionPolicy,
}

/// The verdict of the policies on `obj`: the one place that reads the guardrails.
pub fn policy_verdict(
    obj: &CacheInstance,
    policies: &[Arc<CachePolicy>],
    default_deletion_policy: DeletionPolicy,
) -> PolicyVerdict {
    let selection = guardrails::select(obj, policies.iter().map(|p| p.as_ref()));
    let deletion_policy =
        guardrails::deletion_policy(obj, selection.policy(), default_deletion_policy);
    let (compliance, blocked) = match &selection {
        Selection::None => (
            Cond::new(
                conditions::POLICY_COMPLIANT,
                true,
                "NoPolicy",
                "no CachePolicy selects this instance",
            ),
            false,
        ),
        Selection::MissingRef(name) => (
            Cond::new(
                conditions::POLICY_COMPLIANT,
                false,
                "PolicyNotFound",
                format!(
                    "spec.policyRef names CachePolicy {name}, which does not exist in this namespace"
                ),
            ),
            true,
        ),
        Selection::Conflict(names) => (
            Cond::new(
                conditions::POLICY_COMPLIANT,
                false,
                "PolicyConflict",
                format!(
                    "CachePolicies {} all select this instance; set spec.policyRef to choose one or narrow their selectors",
                    names.join(", ")
                ),
            ),
            true,
        ),
        Selection::One(policy) => {
            let violations = guardrails::violations(obj, policy);
            if violations.is_empty() {
                (
                    Cond::new(
                        conditions::POLICY_COMPLIANT,
                        true,
                        "Compliant",
                        format!("the spec respects CachePolicy {}", policy.name_any()),
                    ),
                    false,
                )
            } else {
                (
                    Cond::new(
                        conditions::POLICY_COMPLIANT,
                        false,
                        "PolicyViolation",
                        violations.join("; "),
                    ),
                    true,
                )
            }
        }
    };
    PolicyVerdict {
        policy: selection.policy().map(|p| p.name_any()),
        compliance,
        blocked,
        deletion_policy,
    }
}

/// A spec that passed every check, with what the later stages read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid {
    pub management: ManagementPolicy,
    pub on_missing: OnMissing,
    pub rotation_every: Option<SignedDuration>,
}

impl Valid {
    /// Whether the operator may only read the database.
    pub fn observe_only(&self) -> bool {
        self.management == ManagementPolicy::Observe
    }
}

/// The checks admission cannot make: the rotation interval, distinct Secret names, and the
/// Secret templates (compiled, and rendered against placeholder values so that an unknown
/// variable shows now rather than after the database was created or rotated).
pub fn spec(obj: &CacheInstance) -> Result<Valid> {
    let spec = &obj.spec;
    if let Some(every) = spec
        .password_rotation
        .as_ref()
        .and_then(|r| r.every.as_ref())
    {
        let d = every
            .duration()
            .map_err(|e| Error::InvalidSpec(format!("spec.passwordRotation.every: {e}")))?;
        if d < MIN_ROTATION {
            return Err(Error::InvalidSpec(format!(
                "spec.passwordRotation.every is {every}; rotate at most once an hour (1h or more)"
            )));
        }
    }
    if let Some(ro) = secret::read_only_secret_name(obj)
        && ro == secret::secret_name(obj)
    {
        return Err(Error::InvalidSpec(format!(
            "spec.secret.readOnly.name must differ from the main Secret's name ({ro})"
        )));
    }
    secret::check_templates(obj).map_err(|e| {
        Error::InvalidSpec(format!(
            "spec.secret.templates.{}: the template does not render: {}",
            e.key, e.reason
        ))
    })?;
    Ok(Valid {
        management: spec.management_policy.unwrap_or(ManagementPolicy::DEFAULT),
        on_missing: spec.on_missing.unwrap_or(OnMissing::Recreate),
        rotation_every: desired::rotation_every(obj),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::{instance, policy};

    #[test]
    fn a_bad_template_is_invalid_before_any_call() {
        let obj = instance(
            r#"
            spec:
              primaryRegion: us-east-1
              secret: {templates: {CACHE_URL: "{{ redis_url }}"}}
            "#,
        );
        let e = spec(&obj).unwrap_err();
        assert_eq!(e.category().condition_reason(), "InvalidSpec");
        assert!(
            e.to_string()
                .starts_with("spec.secret.templates.CACHE_URL:"),
            "{e}"
        );
    }

    #[test]
    fn rotation_more_often_than_hourly_is_invalid() {
        let obj = instance("spec: {primaryRegion: us-east-1, passwordRotation: {every: 30m}}");
        assert!(
            spec(&obj)
                .unwrap_err()
                .to_string()
                .contains("at most once an hour")
        );
        let ok = instance("spec: {primaryRegion: us-east-1, passwordRotation: {every: 90d}}");
        assert_eq!(
            spec(&ok).unwrap().rotation_every,
            Some(SignedDuration::from_hours(90 * 24))
        );
    }

    #[test]
    fn the_read_only_secret_needs_its_own_name() {
        let obj = instance(
            "spec: {primaryRegion: us-east-1, secret: {name: app, readOnly: {name: app}}}",
        );
        assert!(spec(&obj).unwrap_err().to_string().contains("must differ"));
    }

    #[test]
    fn management_defaults_to_full_and_missing_databases_to_recreate() {
        let v = spec(&instance("spec: {primaryRegion: us-east-1}")).unwrap();
        assert_eq!(v.management, ManagementPolicy::Full);
        assert_eq!(v.on_missing, OnMissing::Recreate);
        assert!(!v.observe_only());
        let v = spec(&instance(
            "spec: {primaryRegion: us-east-1, managementPolicy: Observe, onMissing: Report}",
        ))
        .unwrap();
        assert!(v.observe_only());
        assert_eq!(v.on_missing, OnMissing::Report);
    }

    #[test]
    fn the_pause_annotation_must_say_true() {
        let mut obj = instance("spec: {primaryRegion: us-east-1}");
        assert!(!paused(&obj));
        obj.annotations_mut()
            .insert(PAUSE_ANNOTATION.into(), "True".into());
        assert!(paused(&obj));
        obj.annotations_mut()
            .insert(PAUSE_ANNOTATION.into(), "false".into());
        assert!(!paused(&obj));
    }

    #[test]
    fn a_guardrail_violation_blocks_and_names_the_field() {
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let eu = policy(
            "eu-only",
            "{selector: {}, guardrails: {allowedRegions: [eu-west-1], defaultDeletionPolicy: Retain}}",
        );
        let v = policy_verdict(&obj, &[eu], DeletionPolicy::Delete);
        assert!(v.blocked);
        assert_eq!(v.compliance.reason, "PolicyViolation");
        assert!(
            v.compliance
                .message
                .contains("spec.primaryRegion us-east-1")
        );
        assert_eq!(v.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(v.policy.as_deref(), Some("eu-only"));
        let none = policy_verdict(&obj, &[], DeletionPolicy::Delete);
        assert!(!none.blocked);
        assert_eq!(none.compliance.reason, "NoPolicy");
        assert_eq!(none.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn two_selecting_policies_block_until_one_is_chosen() {
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let v = policy_verdict(
            &obj,
            &[policy("a", "{selector: {}}"), policy("b", "{selector: {}}")],
            DeletionPolicy::Delete,
        );
        assert!(v.blocked);
        assert_eq!(v.compliance.reason, "PolicyConflict");
    }
}
