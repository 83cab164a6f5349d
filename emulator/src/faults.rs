//! Fault injection rules (control API `POST /_emulator/faults`).
//!
//! A rule matches an operation name (`create`, `get`, ..., `*` for every Developer API operation,
//! `data` or `data:*` for every data-plane request, `data:<command>` / `data:pipeline` /
//! `data:multi-exec` for one kind) and optionally a database id. The first matching rule (in
//! creation order) applies; `times` and `probability` limit it.

use rand::Rng as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_id: Option<String>,
    /// Answer with this status instead of performing the operation (unless `lose_response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Raw response body for `status` (default: a JSON string / `{"error"}` object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// `Retry-After` seconds; alone it implies status 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Added latency before anything else happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Hold the request open without answering (until the client gives up).
    #[serde(default, skip_serializing_if = "is_false")]
    pub timeout: bool,
    /// Perform the operation, then send a 200 whose JSON body is cut in half.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncate: bool,
    /// Perform the operation, then drop the connection without an answer (or, with `status`,
    /// answer that status with an empty body).
    #[serde(default, skip_serializing_if = "is_false")]
    pub lose_response: bool,
    /// Apply this many times, then expire (default: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Apply with this probability (0..=1, default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// How often it has been applied.
    pub applied: u64,
}

impl FaultSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("endpoint must not be empty".into());
        }
        if let Some(s) = self.status
            && !(100..=599).contains(&s)
        {
            return Err(format!("status {s} is not an HTTP status"));
        }
        if let Some(p) = self.probability
            && !(0.0..=1.0).contains(&p)
        {
            return Err("probability must be between 0 and 1".into());
        }
        let actions = [self.timeout, self.truncate, self.lose_response]
            .iter()
            .filter(|b| **b)
            .count();
        if actions > 1 {
            return Err("at most one of timeout, truncate, lose_response".into());
        }
        if (self.timeout || self.truncate) && self.status.is_some() {
            return Err("status cannot be combined with timeout or truncate".into());
        }
        Ok(())
    }

    /// The status to answer instead of the operation, if any.
    pub fn error_status(&self) -> Option<u16> {
        if self.lose_response || self.timeout || self.truncate {
            return None;
        }
        self.status.or(self.retry_after.map(|_| 429))
    }

    fn matches(&self, endpoint: &str, database_id: Option<&str>) -> bool {
        let is_data = endpoint.starts_with("data");
        let ep_ok = match self.endpoint.as_str() {
            "*" => !is_data,
            "data" | "data:*" => is_data,
            e => e.eq_ignore_ascii_case(endpoint),
        };
        let db_ok = self
            .database_id
            .as_deref()
            .is_none_or(|d| Some(d) == database_id);
        ep_ok && db_ok
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    next_id: u64,
}

impl Faults {
    pub fn add(&mut self, spec: FaultSpec) -> FaultRule {
        self.next_id += 1;
        let rule = FaultRule {
            id: self.next_id,
            spec,
            applied: 0,
        };
        self.rules.push(rule.clone());
        rule
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.rules.len();
        self.rules.retain(|r| r.id != id);
        before != self.rules.len()
    }

    /// Picks the rule to apply to a request, counting the application.
    pub fn take(&mut self, endpoint: &str, database_id: Option<&str>) -> Option<FaultRule> {
        let mut rng = rand::rng();
        let idx = self.rules.iter().position(|r| {
            r.spec.matches(endpoint, database_id)
                && r.spec.probability.is_none_or(|p| rng.random_bool(p))
        })?;
        let rule = &mut self.rules[idx];
        rule.applied += 1;
        let out = rule.clone();
        if rule.spec.times.is_some_and(|t| rule.applied >= t) {
            self.rules.remove(idx);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(endpoint: &str) -> FaultSpec {
        serde_json::from_value(serde_json::json!({"endpoint": endpoint})).unwrap()
    }

    #[test]
    fn matching_and_times() {
        let mut f = Faults::default();
        let mut s = spec("create");
        s.times = Some(2);
        s.status = Some(500);
        f.add(s);
        assert!(f.take("get", None).is_none());
        assert!(f.take("create", None).is_some());
        assert!(f.take("create", None).is_some());
        assert!(f.take("create", None).is_none());
        assert!(f.list().is_empty());
    }

    #[test]
    fn star_and_data() {
        let mut f = Faults::default();
        f.add(spec("*"));
        assert!(f.take("data:get", None).is_none());
        assert!(f.take("list", None).is_some());
        f.clear();
        f.add(spec("data"));
        assert!(f.take("data:ping", None).is_some());
        assert!(f.take("list", None).is_none());
        f.clear();
        let mut s = spec("data:ping");
        s.database_id = Some("a".into());
        f.add(s);
        assert!(f.take("data:ping", Some("b")).is_none());
        assert!(f.take("data:get", Some("a")).is_none());
        assert!(f.take("data:ping", Some("a")).is_some());
    }

    #[test]
    fn validation() {
        let mut s = spec("x");
        s.timeout = true;
        s.truncate = true;
        assert!(s.validate().is_err());
        let mut s = spec("x");
        s.retry_after = Some(3);
        assert_eq!(s.error_status(), Some(429));
        assert!(
            serde_json::from_value::<FaultSpec>(serde_json::json!({"endpoint":"x","bogus":1}))
                .is_err()
        );
        let mut s = spec("x");
        s.probability = Some(0.0);
        let mut f = Faults::default();
        f.add(s);
        assert!(f.take("x", None).is_none());
    }
}
