//! Limit counters alone in memory (a notification's `per_country`).

use super::{MemoryStore, ready};
use crate::limits::{Plan, Refused};
use crate::store::{BoxFuture, Error, LimitStore};

impl LimitStore for MemoryStore {
    fn apply<'a>(
        &'a self,
        plan: &'a Plan,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>> {
        ready(
            self.limits
                .apply(&plan.charges, plan.range.as_ref(), now_ms),
        )
    }
}
