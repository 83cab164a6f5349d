//! Witnesses: proof that the operator looked, for tests that assert that nothing happened.
//!
//! "No call was made" proves nothing if the operator was slow, stuck or never resynced while the
//! test waited. A test of a negative therefore first waits for a count that only the operator's
//! work moves (reads of a database in the emulator's call log, a counter on its `/metrics`) to
//! grow by enough since a mark, and only then asserts. A count that does not grow fails the test
//! with a message naming what was awaited; a sleep is never the proof.

use std::{fmt::Display, future::Future, time::Duration};

/// Waits until the count `read` returns has grown by at least `by` since `mark` (a value it
/// returned earlier), and returns the count then.
///
/// Moves of a per-object count (say, reads of one database, once per pass) prove passes over
/// that object: the operator never works on the same object twice at once, so a move starts
/// only after the pass of the move before ended. Three moves after a mark therefore prove a
/// whole pass that started after the mark (the second's).
///
/// # Panics
///
/// After `timeout`, naming `what` and how far the count got; or when `read` fails (an error is
/// never taken for "nothing happened").
pub async fn wait_for_growth<F, Fut, E>(
    what: &str,
    timeout: Duration,
    mark: u64,
    by: u64,
    mut read: F,
) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: Display,
{
    let mut last = mark;
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            let now = read()
                .await
                .unwrap_or_else(|e| panic!("reading the count for {what}: {e}"));
            last = now;
            if now >= mark.saturating_add(by) {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match outcome {
        Ok(now) => now,
        Err(_) => panic!(
            "timed out after {timeout:?} waiting for {what}: it moved by {} of {by} since the mark",
            last.saturating_sub(mark)
        ),
    }
}

/// The value of the series `name{labels}` in a Prometheus text exposition (`labels` exactly as
/// written, e.g. `namespace="crm",name="cache"`; empty for an unlabelled metric); `None` if
/// there is no such series.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

/// The sum of every series of `name` (whatever their labels) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };

    #[tokio::test]
    #[should_panic(
        expected = "timed out after 600ms waiting for two reads of db-1: it moved by 0 of 2 since the mark"
    )]
    async fn a_count_that_does_not_move_fails_the_test() {
        wait_for_growth(
            "two reads of db-1",
            Duration::from_millis(600),
            7,
            2,
            || async { Ok::<_, String>(7) },
        )
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 600ms waiting for two reads: it moved by 1 of 2")]
    async fn one_move_is_not_two() {
        wait_for_growth("two reads", Duration::from_millis(600), 7, 2, || async {
            Ok::<_, String>(8)
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "reading the count for reads: the call log is not a list")]
    async fn an_error_is_not_nothing() {
        wait_for_growth("reads", Duration::from_secs(5), 0, 1, || async {
            Err::<u64, _>("the call log is not a list")
        })
        .await;
    }

    #[tokio::test]
    async fn returns_once_the_count_moved_enough() {
        let count = Arc::new(AtomicU64::new(3));
        let moving = count.clone();
        let reached = wait_for_growth("three moves", Duration::from_secs(5), 3, 3, || {
            let moving = moving.clone();
            async move { Ok::<_, String>(moving.fetch_add(1, Ordering::SeqCst)) }
        })
        .await;
        assert!(reached >= 6, "{reached}");
        assert!(count.load(Ordering::SeqCst) >= 7);
    }

    #[test]
    fn reads_series_from_the_exposition() {
        let text = "# TYPE upstash_cache_reconciles counter\n\
            upstash_cache_reconciles_total{namespace=\"crm\",name=\"cache\"} 4\n\
            upstash_cache_reconciles_total{namespace=\"crm\",name=\"cache-2\"} 1\n\
            upstash_monitor_probe_commands_total 0\n";
        assert_eq!(
            metric_value(
                text,
                "upstash_cache_reconciles_total",
                "namespace=\"crm\",name=\"cache\""
            ),
            Some(4.0)
        );
        assert_eq!(
            metric_value(
                text,
                "upstash_cache_reconciles_total",
                "namespace=\"crm\",name=\"x\""
            ),
            None
        );
        assert_eq!(
            metric_value(text, "upstash_monitor_probe_commands_total", ""),
            Some(0.0)
        );
        assert_eq!(metric_sum(text, "upstash_cache_reconciles_total"), 5.0);
        assert_eq!(metric_sum(text, "upstash_cache_reconciles"), 0.0);
    }
}
