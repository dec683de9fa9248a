//! Which SMSCs take which numbers: routes are E.164 prefixes of `[[smpp.smsc]] routes`; a
//! number goes by its longest matching prefix, else by the default route of the SMSCs without
//! routes. A number no SMSC can take is refused before anything is queued (contract §6,
//! "Unroutable numbers").

use std::sync::Arc;

use crate::config::{LongMessages, SmscConfig};
use crate::phone::Phone;
use crate::smpp::SmscStatus;

/// One SMSC as routing sees it.
pub struct SmscRoutes {
    pub status: Arc<SmscStatus>,
    /// Its prefixes, or `[""]` when it has none (it takes the rest).
    pub routes: Vec<String>,
    pub long_messages: LongMessages,
}

/// Which SMSCs serve which routes, and which are bound now (for `avoid`).
pub struct Routing {
    /// Every configured prefix, longest first.
    prefixes: Vec<String>,
    /// Whether some SMSC has no routes (so takes every number no prefix matches).
    has_default: bool,
    pub smscs: Vec<SmscRoutes>,
}

impl Routing {
    pub fn new(config: &[SmscConfig], statuses: &[Arc<SmscStatus>]) -> Routing {
        let mut prefixes: Vec<String> = config
            .iter()
            .flat_map(|c| c.routes.iter().cloned())
            .collect();
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        prefixes.dedup();
        let smscs = config
            .iter()
            .zip(statuses)
            .map(|(c, s)| SmscRoutes {
                status: s.clone(),
                routes: if c.routes.is_empty() {
                    vec![String::new()]
                } else {
                    c.routes.clone()
                },
                long_messages: c.long_messages,
            })
            .collect();
        Routing {
            prefixes,
            has_default: config.iter().any(|c| c.routes.is_empty()),
            smscs,
        }
    }

    /// The route of `phone`: its longest matching prefix, else `""` (the SMSCs without
    /// routes); `None` when no SMSC can take it.
    pub fn route(&self, phone: &Phone) -> Option<String> {
        match self
            .prefixes
            .iter()
            .find(|p| phone.e164().starts_with(p.as_str()))
        {
            Some(p) => Some(p.clone()),
            None if self.has_default => Some(String::new()),
            None => None,
        }
    }

    /// The route of a number that was accepted (so is routable): see [`Routing::route`].
    pub fn route_of(&self, phone: &Phone) -> String {
        self.route(phone).unwrap_or_default()
    }

    /// Whether an SMSC other than `name` (and other than `exclude`, which may never take the
    /// job) that takes `route` is bound: only then may `name` leave a job it should avoid.
    pub fn other_bound(&self, route: &str, name: &str, exclude: Option<&str>) -> bool {
        self.smscs.iter().any(|s| {
            &*s.status.name != name
                && Some(&*s.status.name) != exclude
                && s.status.is_bound()
                && s.routes.iter().any(|x| x == route)
        })
    }

    /// Whether `route` has an SMSC other than `name` that may take a job never to go through
    /// `exclude` (bound or not): only then is there an SMSC to `avoid` `name` for. A re-send
    /// of an undeliverable code (excluded from the SMSC that failed it) that fails a try at the
    /// route's only other SMSC must be tried there again, not avoided by both.
    pub fn another_for(&self, route: &str, name: &str, exclude: Option<&str>) -> bool {
        self.smscs.iter().any(|s| {
            &*s.status.name != name
                && Some(&*s.status.name) != exclude
                && s.routes.iter().any(|x| x == route)
        })
    }

    /// The SMSC a job that failed a try at `name` should avoid next (`None`: no other may
    /// take it, so `name` tries again).
    pub fn avoid_after_failure(&self, job: &crate::outbox::Job, name: &str) -> Option<String> {
        self.another_for(&job.route, name, job.exclude.as_deref())
            .then(|| name.to_owned())
    }

    /// The parts a text split as `seg` is sent in on `route` (`payload` sends one).
    pub fn parts_on(&self, route: &str, seg: &crate::sms::Segments) -> u32 {
        match self.long_messages_of(route) {
            LongMessages::Payload => 1,
            _ => seg.parts.len() as u32,
        }
    }

    /// How long texts on `route` are sent (its first SMSC's `long_messages`).
    pub fn long_messages_of(&self, route: &str) -> LongMessages {
        self.smscs
            .iter()
            .find(|s| s.routes.iter().any(|x| x == route))
            .map(|s| s.long_messages)
            .unwrap_or(LongMessages::Udh)
    }
}
