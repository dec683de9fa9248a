//! Limit counters alone on Redis (a notification's `per_country`): `limits/apply.lua`, one
//! round trip.

use redis::Value;

use super::RedisStore;
use crate::limits::{Plan, Refused};
use crate::store::{BoxFuture, Error, LimitStore};

impl LimitStore for RedisStore {
    fn apply<'a>(
        &'a self,
        plan: &'a Plan,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Result<(), Refused>, Error>> {
        Box::pin(async move {
            if plan.charges.is_empty() && plan.range.is_none() {
                return Ok(Ok(()));
            }
            let mut inv = self.scripts.apply_limits.prepare_invoke();
            inv.arg(now_ms).arg(plan.charges.len());
            self.add_plan(&mut inv, plan);
            let reply: Vec<Value> = self.run(&mut inv).await?;
            Ok(match self.refusal(&reply, plan) {
                Some(r) => Err(r),
                None => Ok(()),
            })
        })
    }
}
