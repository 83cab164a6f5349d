//! Waiting for the cluster to reach a state, with a timeout that fails the test clearly.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::time::{Duration, Instant};

use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::Condition;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How often [`wait_for`] polls.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What a [`wait_for`] check returns: whether the wait is over, and with what value.
pub trait WaitOutcome {
    /// The value [`wait_for`] returns once the check succeeds.
    type Output;
    /// `Ok(value)` when done, `Err(reason)` (possibly empty) to keep waiting.
    fn into_result(self) -> Result<Self::Output, String>;
}

/// `true` ends the wait.
impl WaitOutcome for bool {
    type Output = ();
    fn into_result(self) -> Result<(), String> {
        if self { Ok(()) } else { Err(String::new()) }
    }
}

/// `Some(value)` ends the wait with `value`.
impl<T> WaitOutcome for Option<T> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

/// `Ok(value)` ends the wait with `value`; the last `Err` is shown if the wait times out.
impl<T, E: Display> WaitOutcome for Result<T, E> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Calls `check` every 200 ms until it reports success (`true`, `Some(_)` or `Ok(_)`, see
/// [`WaitOutcome`]) and returns its value.
///
/// # Panics
///
/// After `timeout`, with a message naming `what` was awaited and the last error, if any.
pub async fn wait_for<F, Fut, R>(what: &str, timeout: Duration, mut check: F) -> R::Output
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R>,
    R: WaitOutcome,
{
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, check()).await {
            Ok(outcome) => match outcome.into_result() {
                Ok(value) => return value,
                Err(reason) => last = reason,
            },
            // Keep the reason the previous check gave, if any.
            Err(_) if last.is_empty() => last = "the check itself did not finish".to_string(),
            Err(_) => {}
        }
        if started.elapsed() >= timeout {
            if last.is_empty() {
                panic!("timed out after {timeout:?} waiting for {what}");
            }
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// Waits until object `name` has a condition `cond_type` with status `status` (for
/// example `"Ready"`, `"True"`) in `status.conditions`, and returns the object.
///
/// # Panics
///
/// After `timeout`, showing the object's conditions as last seen.
pub async fn wait_for_condition<K>(
    api: &Api<K>,
    name: &str,
    cond_type: &str,
    status: &str,
    timeout: Duration,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    <K as Resource>::DynamicType: Default,
{
    let what = format!(
        "{} {name} to have condition {cond_type}={status}",
        K::kind(&Default::default())
    );
    wait_for(&what, timeout, || async {
        let obj = match api.get_opt(name).await {
            Ok(Some(obj)) => obj,
            Ok(None) => return Err("not found".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
        let conditions = value
            .pointer("/status/conditions")
            .cloned()
            .unwrap_or_default();
        let matched = conditions.as_array().is_some_and(|list| {
            list.iter().any(|c| {
                c.get("type").and_then(|t| t.as_str()) == Some(cond_type)
                    && c.get("status").and_then(|s| s.as_str()) == Some(status)
            })
        });
        if matched {
            Ok(obj)
        } else {
            Err(format!("conditions: {conditions}"))
        }
    })
    .await
}

/// [`kube::runtime::wait::await_condition`] with a timeout: waits (by watching, not
/// polling) until `cond` holds for object `name` and returns the object as then seen
/// (`None` if the condition holds for a missing object, e.g. `is_deleted`).
///
/// # Panics
///
/// After `timeout` or on a watch error, naming `what` was awaited.
pub async fn await_condition<K>(
    api: Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await
    {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => panic!("watch failed while waiting for {what}: {e}"),
        Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::wait_for;
    use std::time::Duration;

    #[tokio::test]
    async fn returns_the_value_once_ready() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 300ms waiting for nothing; last: still 42")]
    async fn times_out_naming_what_and_the_last_error() {
        wait_for("nothing", Duration::from_millis(300), || async {
            Err::<(), _>("still 42")
        })
        .await;
    }
}
