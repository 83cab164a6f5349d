//! The global Upstash rate limit, with changes ahead of reads.
//!
//! Every call takes a token from one bucket (`--upstash-rate-limit` per second, twice that as a
//! burst). A call that creates, changes or deletes something waits only for a token; a read
//! (a drift check, a monitoring sample) also waits until no change is waiting. So while many
//! instances are being created or deleted the whole rate goes to them, and the monitor's
//! samples and the resync reads use what is left; with no change waiting, reads share the
//! bucket as before.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicUsize, Ordering},
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

/// What a call does, for its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Creates, changes or deletes something.
    Change,
    /// Only reads.
    Read,
}

/// The shared bucket.
#[derive(Debug)]
pub struct Limiter {
    tokens: DefaultDirectRateLimiter,
    changes_waiting: AtomicUsize,
    no_change_waiting: Notify,
}

/// Counts a waiting change for as long as it lives (also when its call is cancelled).
struct Waiting<'a>(&'a Limiter);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.changes_waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.no_change_waiting.notify_waiters();
        }
    }
}

impl Limiter {
    /// `per_second` tokens a second, at most `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second.max(1)).expect("nonzero");
        let burst = NonZeroU32::new(burst.max(1)).expect("nonzero");
        Self {
            tokens: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            changes_waiting: AtomicUsize::new(0),
            no_change_waiting: Notify::new(),
        }
    }

    /// Waits for a token: a change at once, a read once no change is waiting.
    pub async fn until_ready(&self, kind: Kind) {
        match kind {
            Kind::Change => {
                self.changes_waiting.fetch_add(1, Ordering::AcqRel);
                let _waiting = Waiting(self);
                self.tokens.until_ready().await;
            }
            Kind::Read => {
                loop {
                    let notified = self.no_change_waiting.notified();
                    tokio::pin!(notified);
                    // Registered before the check, so a wake-up in between is not lost.
                    notified.as_mut().enable();
                    if self.changes_waiting.load(Ordering::Acquire) == 0 {
                        break;
                    }
                    notified.await;
                }
                self.tokens.until_ready().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_waiting_change_goes_before_a_read() {
        let limiter = Arc::new(Limiter::new(1, 1));
        // The only token of the burst.
        limiter.until_ready(Kind::Read).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let change = {
            let (limiter, order) = (limiter.clone(), order.clone());
            tokio::spawn(async move {
                limiter.until_ready(Kind::Change).await;
                order.lock().unwrap().push("change");
            })
        };
        // The change is counted as waiting before the read asks.
        while limiter.changes_waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        let read = {
            let (limiter, order) = (limiter.clone(), order.clone());
            tokio::spawn(async move {
                limiter.until_ready(Kind::Read).await;
                order.lock().unwrap().push("read");
            })
        };
        change.await.unwrap();
        read.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["change", "read"]);
        assert_eq!(limiter.changes_waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_cancelled_change_does_not_hold_reads_back() {
        let limiter = Arc::new(Limiter::new(1, 1));
        limiter.until_ready(Kind::Read).await;
        let change = {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.until_ready(Kind::Change).await })
        };
        while limiter.changes_waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        change.abort();
        let _ = change.await;
        assert_eq!(limiter.changes_waiting.load(Ordering::Acquire), 0);
        limiter.until_ready(Kind::Read).await;
    }
}
