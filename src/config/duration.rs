//! Durations in the config (`"90s"`, `"5m"`, `"7d"`), with errors that quote the bad value:
//! `otp.ttl: invalid duration "five minutes"`. Use as `#[serde(with = "crate::config::duration")]`.

use std::fmt;
use std::time::Duration;

use serde::Deserializer;
use serde::de::{self, Visitor};

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like \"90s\", \"5m\" or \"7d\"")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
        humantime::parse_duration(s.trim()).map_err(|_| {
            E::custom(format!(
                "invalid duration \"{s}\" (a number and a unit, like \"90s\", \"5m\" or \"7d\")"
            ))
        })
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_str(DurationVisitor)
}

/// For `Option<Duration>` fields (absent = `None`); add `#[serde(default)]`.
pub mod option {
    use super::*;

    struct Wrapped(Duration);

    impl<'de> serde::Deserialize<'de> for Wrapped {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            super::deserialize(d).map(Wrapped)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let w: Option<Wrapped> = serde::Deserialize::deserialize(d)?;
        Ok(w.map(|w| w.0))
    }
}
