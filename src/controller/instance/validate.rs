//! Validate (pure): every check of the spec and the policies that apply to it, made before any
//! Upstash call, so that a spec that cannot work never creates, changes or rotates anything.

use std::sync::Arc;

use k8s_openapi::jiff::SignedDuration;
use kube::ResourceExt;

use crate::{
    controller::{
        conditions::{self, Cond},
        desired,
        secret::{self, ConnectionDetails},
    },
    crd::{
        CacheInstance, CachePolicy, DeletionPolicy, ManagementPolicy, OnMissing, PAUSE_ANNOTATION,
        validation,
    },
    error::{Error, Result},
    guardrails,
    templates::{RenderError, RenderFailure, Renderer},
};

/// Whether the object is paused: no Upstash call and no Kubernetes write until the annotation
/// is removed.
pub fn paused(obj: &CacheInstance) -> bool {
    obj.annotations()
        .get(PAUSE_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether `obj` adopts its database (`spec.adopt`). An adopted database is kept when the
/// instance is deleted unless its own spec says `deletionPolicy: Delete`: neither a
/// CachePolicy's default nor the operator's applies to a database the operator did not create.
pub fn adopted(obj: &CacheInstance) -> bool {
    obj.spec.adopt.is_some()
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
    /// The maintenance window of the policies, if one sets it (the first by name).
    pub window: Option<crate::crd::MaintenanceWindow>,
}

/// The verdict of the policies on `obj`: the one place that reads the guardrails. Every
/// policy that selects the instance applies (the strictest rule wins), plus the one
/// `spec.policyRef` names.
pub fn policy_verdict(
    obj: &CacheInstance,
    policies: &[Arc<CachePolicy>],
    default_deletion_policy: DeletionPolicy,
) -> PolicyVerdict {
    let applicable = guardrails::applicable(obj, policies);
    let deletion_policy = match obj.spec.deletion_policy {
        None if adopted(obj) => DeletionPolicy::Retain,
        _ => guardrails::deletion_policy(obj, &applicable, default_deletion_policy),
    };
    let c = guardrails::compliance(obj, &applicable);
    PolicyVerdict {
        policy: applicable.names(),
        compliance: Cond::new(
            conditions::POLICY_COMPLIANT,
            c.compliant,
            c.reason,
            c.message,
        ),
        blocked: c.blocked,
        deletion_policy,
        window: applicable.window(),
    }
}

/// A spec that passed every check, with what the later stages read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Valid {
    pub management: ManagementPolicy,
    pub on_missing: OnMissing,
    pub rotation_every: Option<SignedDuration>,
    /// The least time between two on-demand rotations (`--min-rotation-interval`).
    pub request_floor: SignedDuration,
}

impl Valid {
    /// With the operator's minimum interval between on-demand rotations.
    pub fn with_request_floor(mut self, floor: std::time::Duration) -> Self {
        self.request_floor = SignedDuration::try_from(floor).unwrap_or(SignedDuration::MAX);
        self
    }

    /// Whether the operator may only read the database.
    pub fn observe_only(&self) -> bool {
        self.management == ManagementPolicy::Observe
    }
}

/// Every check of the spec that admission also makes (see [`crate::crd::validation`]); the
/// Secret templates are checked by [`templates`].
pub fn spec(obj: &CacheInstance) -> Result<Valid> {
    if let Some(problem) = validation::check_instance(obj).into_iter().next() {
        return Err(Error::InvalidSpec(problem));
    }
    let spec = &obj.spec;
    Ok(Valid {
        management: spec.management_policy.unwrap_or(ManagementPolicy::DEFAULT),
        on_missing: spec.on_missing.unwrap_or(OnMissing::Recreate),
        rotation_every: desired::rotation_every(obj),
        request_floor: SignedDuration::ZERO,
    })
}

/// The Secret templates, compiled and rendered against placeholder values in the bounded
/// renderer, so that an unknown variable or a template past the engine's bounds shows now
/// rather than after the database was created or rotated; and the size of the Secret they make
/// (Kubernetes refuses one over 1 MiB).
pub async fn templates(obj: &CacheInstance, renderer: &Renderer) -> Result<()> {
    if secret::templates(obj).is_none() {
        return Ok(());
    }
    let details = ConnectionDetails::placeholder(obj);
    let rendered = secret::render_templates(renderer, obj, &details)
        .await
        .map_err(template_error)?;
    secret_size(&secret::connection_data(obj, &details, &rendered))
}

/// Whether a Secret with `data` can be written.
pub fn secret_size(data: &std::collections::BTreeMap<String, String>) -> Result<()> {
    let size = secret::data_size(data);
    if size > validation::MAX_SECRET_DATA {
        return Err(Error::InvalidSpec(validation::Problem {
            check: validation::Check::SecretTooLarge,
            message: format!(
                "spec.secret.templates: the connection Secret would hold {size} bytes, more than the {} Kubernetes allows a Secret",
                validation::MAX_SECRET_DATA
            ),
        }));
    }
    Ok(())
}

/// The error for a template that did not render: the spec's when the template is at fault.
pub fn template_error(e: RenderError) -> Error {
    match e.reason {
        RenderFailure::Template(reason) => Error::InvalidSpec(validation::Problem {
            check: validation::Check::TemplateInvalid,
            message: format!(
                "spec.secret.templates.{}: the template does not render: {reason}",
                e.key
            ),
        }),
        RenderFailure::Unavailable(reason) => Error::TemplateEngine(format!(
            "spec.secret.templates.{}: could not be rendered: {reason}",
            e.key
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::instance::fixtures::{instance, policy};

    #[test]
    fn a_bad_template_names_its_key() {
        let e = template_error(RenderError {
            key: "CACHE_URL".into(),
            reason: RenderFailure::Template("undefined value".into()),
        });
        assert_eq!(e.category().condition_reason(), "InvalidSpec");
        assert!(
            e.to_string()
                .starts_with("spec.secret.templates.CACHE_URL:"),
            "{e}"
        );
        let busy = template_error(RenderError {
            key: "CACHE_URL".into(),
            reason: RenderFailure::Unavailable("no worker".into()),
        });
        assert_eq!(busy.category().condition_reason(), "ReconcileError");
    }

    #[test]
    fn a_secret_over_a_mebibyte_is_too_large() {
        let data = std::collections::BTreeMap::from([(
            "BIG".to_string(),
            "x".repeat(validation::MAX_SECRET_DATA + 1),
        )]);
        let e = secret_size(&data).unwrap_err();
        assert!(e.to_string().starts_with("spec.secret.templates:"), "{e}");
        let data = std::collections::BTreeMap::from([(
            "BIG".to_string(),
            "x".repeat(validation::MAX_SECRET_DATA),
        )]);
        assert!(secret_size(&data).is_ok());
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
    fn an_adopted_database_is_deleted_only_when_its_own_spec_says_so() {
        let delete_default = policy(
            "delete",
            "{selector: {}, guardrails: {defaultDeletionPolicy: Delete}}",
        );
        for adopt in ["{databaseId: 9a1c}", "{byName: true}"] {
            let obj = instance(&format!(
                "spec: {{primaryRegion: us-east-1, databaseName: legacy, adopt: {adopt}}}"
            ));
            assert_eq!(
                policy_verdict(&obj, &[], DeletionPolicy::Delete).deletion_policy,
                DeletionPolicy::Retain,
                "not by the operator's default"
            );
            assert_eq!(
                policy_verdict(
                    &obj,
                    std::slice::from_ref(&delete_default),
                    DeletionPolicy::Delete
                )
                .deletion_policy,
                DeletionPolicy::Retain,
                "not by a CachePolicy's default"
            );
            let explicit = instance(&format!(
                "spec: {{primaryRegion: us-east-1, databaseName: legacy, adopt: {adopt}, deletionPolicy: Delete}}"
            ));
            assert_eq!(
                policy_verdict(&explicit, &[], DeletionPolicy::Retain).deletion_policy,
                DeletionPolicy::Delete
            );
        }
        // A database the operator created keeps following the defaults.
        let created = instance("spec: {primaryRegion: us-east-1}");
        assert_eq!(
            policy_verdict(&created, &[], DeletionPolicy::Delete).deletion_policy,
            DeletionPolicy::Delete
        );
    }

    #[test]
    fn every_selecting_policy_applies_and_the_strictest_guardrail_wins() {
        let obj = instance("spec: {primaryRegion: us-east-1}");
        let v = policy_verdict(
            &obj,
            &[
                policy("lenient", "{selector: {}}"),
                policy(
                    "eu-only",
                    "{selector: {}, guardrails: {allowedRegions: [eu-west-1]}}",
                ),
            ],
            DeletionPolicy::Delete,
        );
        assert!(v.blocked);
        assert_eq!(v.compliance.reason, "PolicyViolation");
        assert_eq!(v.policy.as_deref(), Some("eu-only, lenient"));
    }
}
