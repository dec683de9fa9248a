//! Account histories in memory: a bounded deque per account, behind one lock that the memory
//! store's other operations take (after their own) to record an event in the same step.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::store::events::{AccountEvent, MAX_EVENTS, MAX_READ, RETENTION_MS};

#[derive(Default)]
pub struct MemoryEvents {
    by_account: Mutex<HashMap<String, VecDeque<AccountEvent>>>,
}

/// The locked histories, for an operation that records events as part of its change.
pub struct Histories<'a>(MutexGuard<'a, HashMap<String, VecDeque<AccountEvent>>>);

impl Histories<'_> {
    pub fn push(&mut self, account: &str, event: AccountEvent) {
        let q = self.0.entry(account.to_owned()).or_default();
        q.push_front(event);
        q.truncate(MAX_EVENTS);
    }
}

impl MemoryEvents {
    pub fn lock(&self) -> Histories<'_> {
        Histories(self.by_account.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn recent(&self, account: &str, limit: usize, now_ms: i64) -> Vec<AccountEvent> {
        let g = self.by_account.lock().unwrap_or_else(|e| e.into_inner());
        g.get(account)
            .map(|q| {
                q.iter()
                    .take_while(|e| e.at_ms > now_ms - RETENTION_MS)
                    .take(limit.min(MAX_READ))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets histories whose newest event is older than the retention.
    pub fn sweep(&self, now_ms: i64) {
        let mut g = self.by_account.lock().unwrap_or_else(|e| e.into_inner());
        g.retain(|_, q| q.front().is_some_and(|e| e.at_ms > now_ms - RETENTION_MS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    #[test]
    fn newest_first_bounded_and_aged_out() {
        let m = MemoryEvents::default();
        let now = 1_000_000_000_000;
        m.lock().push(
            "a",
            AccountEvent::new(EventKind::PhoneAdded, "c", now - RETENTION_MS),
        );
        for i in 0..(MAX_EVENTS as i64 + 5) {
            m.lock().push(
                "a",
                AccountEvent::new(EventKind::VerificationSent, "c", now + i),
            );
        }
        let r = m.recent("a", 5000, now + 10_000);
        assert_eq!(r.len(), MAX_EVENTS);
        assert_eq!(r[0].at_ms, now + MAX_EVENTS as i64 + 4);
        assert!(r.windows(2).all(|w| w[0].at_ms > w[1].at_ms));
        assert_eq!(m.recent("a", 3, now).len(), 3);
        m.sweep(now + MAX_EVENTS as i64 + 4 + RETENTION_MS);
        assert!(m.recent("a", 10, now).is_empty());
    }
}
