//! The in-process outbox: per route, one queue per priority. Lost with the process (the
//! memory store promises nothing across restarts); bounded, so a stalled SMSC turns into 503s
//! at the API rather than unbounded memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::{Error, Job, Routing};
use crate::clock::Clock;

pub struct MemoryOutbox {
    queues: Mutex<HashMap<String, [VecDeque<Job>; 2]>>,
    notify: Notify,
    len: AtomicUsize,
    capacity: usize,
    clock: Clock,
    /// Checks code SMS against their verification before they are handed out.
    pub(super) stale: std::sync::OnceLock<std::sync::Arc<super::stale::StaleCheck>>,
}

enum Take {
    Job(Box<Job>),
    /// Nothing eligible now; something may become eligible at this time (ms).
    WaitUntil(Option<i64>),
}

/// Room for one job in a [`MemoryOutbox`] (see [`MemoryOutbox::reserve`]).
pub struct Reservation<'a> {
    outbox: &'a MemoryOutbox,
    used: bool,
}

impl Reservation<'_> {
    /// Queues the job in the room reserved.
    pub fn push(mut self, job: Job) {
        self.used = true;
        self.outbox.insert_counted(job, false, true);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.outbox.len.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl MemoryOutbox {
    /// An outbox on the system clock.
    pub fn new(capacity: usize) -> MemoryOutbox {
        MemoryOutbox::with_clock(capacity, Clock::system())
    }

    /// An outbox that reads time (for retry delays) from `clock`.
    pub fn with_clock(capacity: usize, clock: Clock) -> MemoryOutbox {
        MemoryOutbox {
            queues: Mutex::new(HashMap::new()),
            notify: Notify::new(),
            len: AtomicUsize::new(0),
            capacity,
            clock,
            stale: std::sync::OnceLock::new(),
        }
    }

    pub fn is_full(&self) -> bool {
        self.len.load(Ordering::Relaxed) >= self.capacity
    }

    pub fn push(&self, job: Job) -> Result<(), Error> {
        if self.is_full() {
            return Err(Error::Full);
        }
        self.insert(job, false);
        Ok(())
    }

    /// Room for one job, taken now (so the push that follows cannot fail): the transactional
    /// create reserves before its store operation and pushes after it, and a refused or failed
    /// operation gives the room back by dropping the reservation.
    pub fn reserve(&self) -> Result<Reservation<'_>, Error> {
        let mut cur = self.len.load(Ordering::Relaxed);
        loop {
            if cur >= self.capacity {
                return Err(Error::Full);
            }
            match self
                .len
                .compare_exchange_weak(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Ok(Reservation {
                        outbox: self,
                        used: false,
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Back into the queue, at the front (it waited longest) unless it must wait.
    pub fn release(&self, job: Job) {
        let front = job.not_before_ms <= self.clock.now_ms();
        self.insert(job, front);
    }

    fn insert(&self, job: Job, front: bool) {
        self.insert_counted(job, front, false)
    }

    fn insert_counted(&self, job: Job, front: bool, counted: bool) {
        {
            let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            // Counted under the lock, so a taker never sees the job before its count (which
            // would wrap the counter below zero and make the outbox look full).
            if !counted {
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            let slot = q.entry(job.route.clone()).or_default();
            let lane = &mut slot[job.priority.index()];
            if front {
                lane.push_front(job);
            } else {
                lane.push_back(job);
            }
        }
        self.notify.notify_waiters();
    }

    fn take(&self, routes: &[String], smsc: &str, routing: &Routing) -> Take {
        let now = self.clock.now_ms();
        let mut wake: Option<i64> = None;
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for prio in 0..2 {
            for route in routes {
                let Some(slot) = q.get_mut(route) else {
                    continue;
                };
                let lane = &mut slot[prio];
                let mut pick = None;
                for (i, job) in lane.iter().enumerate() {
                    if job.not_before_ms > now {
                        wake = Some(wake.map_or(job.not_before_ms, |w| w.min(job.not_before_ms)));
                        continue;
                    }
                    if job.exclude.as_deref() == Some(smsc)
                        || (job.avoid.as_deref() == Some(smsc)
                            && routing.other_bound(route, smsc, job.exclude.as_deref()))
                    {
                        continue;
                    }
                    pick = Some(i);
                    break;
                }
                if let Some(i) = pick
                    && let Some(job) = lane.remove(i)
                {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    return Take::Job(Box::new(job));
                }
            }
        }
        Take::WaitUntil(wake)
    }

    pub async fn next(&self, routes: &[String], smsc: &str, routing: &Routing) -> Job {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.take(routes, smsc, routing) {
                Take::Job(job) => return *job,
                Take::WaitUntil(wake) => {
                    // Jobs skipped for `avoid` become eligible when the other SMSC goes down,
                    // which nothing notifies: look again every 250 ms at the latest.
                    let wait = wake
                        .map(|w| {
                            Duration::from_millis((w - self.clock.now_ms()).clamp(1, 250) as u64)
                        })
                        .unwrap_or(Duration::from_millis(250));
                    let _ = tokio::time::timeout(wait, notified).await;
                }
            }
        }
    }

    /// Removes the jobs expired at `now_ms`; returns their message ids.
    pub fn take_expired(&self, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for slot in q.values_mut() {
            for lane in slot.iter_mut() {
                lane.retain(|job| {
                    let keep = job.expires_at_ms > now_ms;
                    if !keep {
                        out.push(job.message_id.clone());
                    }
                    keep
                });
            }
        }
        self.len.fetch_sub(out.len(), Ordering::Relaxed);
        out
    }

    pub fn depth(&self) -> [usize; 2] {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut d = [0, 0];
        for slot in q.values() {
            d[0] += slot[0].len();
            d[1] += slot[1].len();
        }
        d
    }

    pub fn is_empty_for(&self, routes: &[String]) -> bool {
        let q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .iter()
            .all(|r| q.get(r).is_none_or(|s| s[0].is_empty() && s[1].is_empty()))
    }
}
