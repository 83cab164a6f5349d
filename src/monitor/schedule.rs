//! When each instance is due (pure): a queue of due work ordered by time, so that the monitor
//! wakes for what is due and touches nothing else, and the interval stretch that keeps the
//! monitor within its share of the Upstash request rate.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    time::{Duration, Instant},
};

/// Work the monitor does for an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Work {
    /// Read Upstash's stats and judge every threshold (one Developer API call).
    Sample,
    /// A data-plane probe round (only when a policy turns the probe on).
    Probe,
}

/// One queued piece of work. `epoch` ties it to the schedule it was queued under: an instance
/// whose schedule changed (a new policy, a new database) bumps its epoch, and older entries are
/// dropped when they come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Due {
    pub at: Instant,
    pub id: u64,
    pub work: Work,
    pub epoch: u64,
}

/// Due work, earliest first.
#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<Due>>,
}

impl Queue {
    pub fn push(&mut self, due: Due) {
        self.heap.push(Reverse(due));
    }

    /// When the earliest entry is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns every entry due at `now`, earliest first. Costs O(k log n) for k due
    /// entries among n.
    pub fn pop_due(&mut self, now: Instant) -> Vec<Due> {
        std::iter::from_fn(|| self.pop_one_due(now)).collect()
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_one_due(&mut self, now: Instant) -> Option<Due> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }

    /// Whether an entry is due at `now`.
    pub fn has_due(&self, now: Instant) -> bool {
        self.next_at().is_some_and(|at| at <= now)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Share of the operator's Upstash rate limit the monitor plans for.
pub const REQUEST_BUDGET_SHARE: f64 = 0.5;

/// The factor intervals are stretched by so that `demand` (samples per second at the
/// configured intervals, one Upstash call each) fits `budget` requests per second.
pub fn interval_stretch(demand_per_s: f64, budget_per_s: f64) -> f64 {
    if budget_per_s <= 0.0 || !demand_per_s.is_finite() {
        return 1.0;
    }
    (demand_per_s / budget_per_s).max(1.0)
}

/// When the first sample of a newly seen instance is due: somewhere in the first half
/// interval, so that instances seen together do not sample together.
pub fn first_due(now: Instant, interval: Duration) -> Instant {
    now + crate::controller::jitter(interval / 2, 1.0)
}

/// When the next sample is due after one starting `now` (±10% jitter).
pub fn next_due(now: Instant, interval: Duration, stretch: f64) -> Instant {
    now + crate::controller::jitter(interval.mul_f64(stretch.max(1.0)), 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stretch_only_beyond_the_budget() {
        // 100 instances every 60 s against 10 requests/s: within budget.
        assert_eq!(interval_stretch(100.0 / 60.0, 10.0), 1.0);
        // 1,000 instances every 60 s need 16.7 requests/s: intervals grow 1.67 times.
        let s = interval_stretch(1000.0 / 60.0, 10.0);
        assert!((s - 1000.0 / 600.0).abs() < 1e-9, "{s}");
        // No budget configured: as configured.
        assert_eq!(interval_stretch(50.0, 0.0), 1.0);
    }

    #[test]
    fn only_due_work_comes_out_earliest_first() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        for (secs, id) in [(30, 1), (10, 2), (20, 3), (90, 4)] {
            q.push(Due {
                at: t0 + Duration::from_secs(secs),
                id,
                work: Work::Sample,
                epoch: 0,
            });
        }
        assert_eq!(q.next_at(), Some(t0 + Duration::from_secs(10)));
        assert!(q.pop_due(t0).is_empty());
        let due: Vec<u64> = q
            .pop_due(t0 + Duration::from_secs(25))
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(due, [2, 3]);
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_at(), Some(t0 + Duration::from_secs(30)));
        // One at a time, as sampling slots free up: the rest stays queued.
        let later = t0 + Duration::from_secs(100);
        assert!(q.has_due(later) && !q.has_due(t0));
        assert_eq!(q.pop_one_due(later).map(|d| d.id), Some(1));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_one_due(t0), None);
    }

    #[test]
    fn schedules_spread_and_stretch() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(60);
        for _ in 0..50 {
            let first = first_due(t0, interval);
            assert!(first >= t0 && first <= t0 + Duration::from_secs(60));
            let next = next_due(t0, interval, 2.0);
            assert!(next >= t0 + Duration::from_secs(108) && next <= t0 + Duration::from_secs(132));
        }
    }
}
