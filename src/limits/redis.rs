//! The limits on Redis: the same rules as the memory engine, as Lua that request scripts
//! include ([`LUA`]), so a request's limits are checked and recorded in its own round trip.
//! [`apply_invocation`] builds the arguments; [`APPLY`] is the script for a request that
//! guards no other state change (and the suite that holds the two engines to one semantics).

use super::engine::{Charge, Mode, RangeCharge, Refused};
use super::pumping::{Guard, SLOTS};
use super::window::LimitName;

/// The functions request scripts prepend.
pub const LUA: &str = include_str!("limits.lua");

/// A script that only checks and records limits.
pub fn apply_script() -> redis::Script {
    redis::Script::new(&format!("{LUA}\n{}", include_str!("apply.lua")))
}

fn mode_arg(m: Mode) -> &'static str {
    match m {
        Mode::CheckAndRecord => "cr",
        Mode::Check => "c",
        Mode::Record => "r",
    }
}

/// Adds a request's charges (and range) to an invocation, in the layout `limits.lua` reads:
/// keys as given by `key_of`, and per charge mode, count, window, name; then the guard's
/// parameters when there is a range.
pub fn add_args(
    inv: &mut redis::ScriptInvocation<'_>,
    charges: &[Charge],
    range: Option<(&RangeCharge, &Guard)>,
    key_of: impl Fn(&str) -> String,
) {
    for c in charges {
        inv.key(key_of(&c.key));
        inv.arg(mode_arg(c.mode))
            .arg(c.rule.count)
            .arg(c.rule.window_ms)
            .arg(c.limit.as_str());
    }
    if let Some((r, g)) = range {
        inv.key(key_of(&format!("range:{}", r.range)));
        inv.arg(g.slot_ms())
            .arg(SLOTS)
            .arg(g.min_sent)
            .arg(g.min_approval_ratio)
            .arg(g.cool_off_ms);
    }
}

/// Reads a script's answer about limits: empty = passed; else (name, wait[, "closes"]).
pub fn parse_reply(reply: &[redis::Value]) -> Option<(Refused, bool)> {
    let name = match reply.first()? {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let wait = match reply.get(1)? {
        redis::Value::Int(i) => *i,
        _ => return None,
    };
    let closes = matches!(reply.get(2), Some(redis::Value::BulkString(b)) if b == b"closes");
    let limit = LimitName::ALL.into_iter().find(|l| l.as_str() == name)?;
    Some((
        Refused {
            limit,
            retry_after_ms: wait,
        },
        closes,
    ))
}
