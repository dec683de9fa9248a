//! Limit counters on their own (a request that changes nothing else, like a notification's
//! `per_country`). Requests that change state apply their limits inside their own operation
//! (see [`super::SendGuards`]).

use super::{BoxFuture, Error};
use crate::limits::{Plan, Refused};

pub trait LimitStore: Send + Sync {
    /// Checks every charge of `plan` and, only if all pass, records them; atomically.
    fn apply<'a>(
        &'a self,
        plan: &'a Plan,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>>;
}
