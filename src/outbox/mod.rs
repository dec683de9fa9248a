//! The outbox: SMS accepted for delivery and not yet settled, by route and priority.
//!
//! Every SMPP session takes its work here ([`Outbox::next`]), code SMS before notifications,
//! from the routes its SMSC serves; a message is settled ([`Outbox::done`]) once an SMSC
//! accepted or refused it for good, or its validity ended. A message a session could not get
//! accepted goes back ([`Outbox::release`]), possibly after a delay and avoiding the SMSC that
//! failed, so that another SMSC of the route takes it.
//!
//! Nothing here holds a code: a code SMS is queued as its verification's id (and the text's
//! parameters), and its text is rendered by the session with the server key when it is sent.
//!
//! Two implementations: [`memory::MemoryOutbox`] (in-process; with the memory store) and
//! [`redis::RedisOutbox`] (Redis streams with a consumer group; survives a crash).

pub mod memory;
pub mod redis;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::otp::codes::CodeDeriver;
use crate::phone::Phone;
use crate::sms::{Locale, Templates};

/// Code SMS go before notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Code,
    Notification,
}

impl Priority {
    pub const ALL: [Priority; 2] = [Priority::Code, Priority::Notification];

    pub fn index(self) -> usize {
        match self {
            Priority::Code => 0,
            Priority::Notification => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Code => "code",
            Priority::Notification => "notification",
        }
    }
}

/// What the SMS says, without any code in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// A verification code SMS; the code is derived from `verification_id` when rendered.
    Code {
        verification_id: String,
        digits: u8,
        locale: Locale,
        ttl_secs: u64,
    },
    /// A text given as is (notifications, notices).
    Text { text: String },
}

/// One message waiting for an SMSC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Our id (`msg_…`).
    pub message_id: String,
    pub destination: Phone,
    pub body: Body,
    /// Unix ms after which the message must not be submitted.
    pub expires_at_ms: i64,
    pub priority: Priority,
    /// The route prefix it goes by (`""`: the default route).
    pub route: String,
    /// Earlier tries that failed (for backoff).
    pub attempts: u32,
    /// An SMSC not to use for this try when another of the route is bound.
    pub avoid: Option<String>,
    /// An SMSC never to use (a re-send after UNDELIV must go through another one).
    #[serde(default)]
    pub exclude: Option<String>,
    /// Unix ms before which it should not be taken (a retry's backoff).
    pub not_before_ms: i64,
    /// Implementation detail of the outbox (the Redis stream entry id).
    #[serde(skip)]
    pub receipt: Option<String>,
}

impl Job {
    /// A message on its first try.
    pub fn new(
        message_id: String,
        destination: Phone,
        body: Body,
        expires_at_ms: i64,
        priority: Priority,
        route: String,
    ) -> Job {
        Job {
            message_id,
            destination,
            body,
            expires_at_ms,
            priority,
            route,
            attempts: 0,
            avoid: None,
            exclude: None,
            not_before_ms: 0,
            receipt: None,
        }
    }
}

/// Renders a job's text.
pub struct Composer {
    pub codes: CodeDeriver,
    pub templates: Templates,
}

impl Composer {
    pub fn render(&self, body: &Body) -> String {
        match body {
            Body::Code {
                verification_id,
                digits,
                locale,
                ttl_secs,
            } => {
                let code = self.codes.numeric("otp", verification_id, *digits);
                self.templates.code_sms(*locale, &code, *ttl_secs)
            }
            Body::Text { text } => text.clone(),
        }
    }
}

/// Why the outbox could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backing store did not answer.
    #[error("outbox unavailable: {0}")]
    Unavailable(String),
    /// The in-process queue is at capacity.
    #[error("outbox full")]
    Full,
}

/// One SMSC as routing sees it.
pub struct SmscRoutes {
    pub status: Arc<crate::smpp::SmscStatus>,
    /// Its prefixes, or `[""]` when it has none (it takes the rest).
    pub routes: Vec<String>,
    pub long_messages: crate::config::LongMessages,
}

/// Which SMSCs serve which routes, and which are bound now (for `avoid`).
pub struct Routing {
    /// Every configured prefix, longest first.
    prefixes: Vec<String>,
    pub smscs: Vec<SmscRoutes>,
}

impl Routing {
    pub fn new(
        config: &[crate::config::SmscConfig],
        statuses: &[Arc<crate::smpp::SmscStatus>],
    ) -> Routing {
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
        Routing { prefixes, smscs }
    }

    /// The longest configured prefix matching `phone`, or `""` (SMSCs without routes).
    pub fn route_of(&self, phone: &Phone) -> String {
        self.prefixes
            .iter()
            .find(|p| phone.e164().starts_with(p.as_str()))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether an SMSC other than `name` that takes `route` is bound.
    pub fn other_bound(&self, route: &str, name: &str) -> bool {
        self.smscs.iter().any(|s| {
            &*s.status.name != name && s.status.is_bound() && s.routes.iter().any(|x| x == route)
        })
    }

    /// The parts a text split as `seg` is sent in on `route` (`payload` sends one).
    pub fn parts_on(&self, route: &str, seg: &crate::sms::Segments) -> u32 {
        match self.long_messages_of(route) {
            crate::config::LongMessages::Payload => 1,
            _ => seg.parts.len() as u32,
        }
    }

    /// How long texts on `route` are sent (its first SMSC's `long_messages`).
    pub fn long_messages_of(&self, route: &str) -> crate::config::LongMessages {
        self.smscs
            .iter()
            .find(|s| s.routes.iter().any(|x| x == route))
            .map(|s| s.long_messages)
            .unwrap_or(crate::config::LongMessages::Udh)
    }
}

/// The configured outbox.
#[derive(Clone)]
pub enum Outbox {
    Memory(Arc<memory::MemoryOutbox>),
    Redis(Arc<redis::RedisOutbox>),
}

impl Outbox {
    /// Queues a new message.
    pub async fn push(&self, job: Job) -> Result<(), Error> {
        match self {
            Outbox::Memory(m) => m.push(job),
            Outbox::Redis(r) => r.push(&job).await,
        }
    }

    /// The consumer of one bind of `smsc`, taking `routes`.
    pub fn consumer(
        &self,
        routes: &[String],
        smsc: &str,
        bind: u32,
        routing: Arc<Routing>,
        window: usize,
    ) -> Consumer {
        match self {
            Outbox::Memory(m) => Consumer::Memory {
                outbox: m.clone(),
                routes: routes.to_vec(),
                smsc: smsc.to_owned(),
                routing,
            },
            Outbox::Redis(r) => Consumer::Redis(r.consumer(routes, smsc, bind, routing, window)),
        }
    }

    /// Messages waiting, by priority.
    pub async fn depth(&self) -> [usize; 2] {
        match self {
            Outbox::Memory(m) => m.depth(),
            Outbox::Redis(r) => r.depth().await,
        }
    }

    /// Whether nothing waits for any of `routes` (for the shutdown drain). With Redis, what
    /// waits stays there for the next instance: nothing to wait for.
    pub async fn is_empty_for(&self, routes: &[String]) -> bool {
        match self {
            Outbox::Memory(m) => m.is_empty_for(routes),
            Outbox::Redis(_) => true,
        }
    }

    pub fn is_full(&self) -> bool {
        match self {
            Outbox::Memory(m) => m.is_full(),
            Outbox::Redis(_) => false,
        }
    }

    /// Waits (at most `limit`) until settled messages are recorded as such.
    pub async fn flush(&self, limit: std::time::Duration) {
        if let Outbox::Redis(r) = self {
            r.flush(limit).await;
        }
    }
}

/// One bind's source of work.
pub enum Consumer {
    Memory {
        outbox: Arc<memory::MemoryOutbox>,
        routes: Vec<String>,
        smsc: String,
        routing: Arc<Routing>,
    },
    Redis(redis::Consumer),
}

impl Consumer {
    /// The next message (code SMS first), waiting until one comes. Cancel-safe: a message is
    /// handed out only when this returns.
    pub async fn next(&mut self) -> Job {
        match self {
            Consumer::Memory {
                outbox,
                routes,
                smsc,
                routing,
            } => outbox.next(routes, smsc, routing).await,
            Consumer::Redis(c) => c.next().await,
        }
    }

    /// The message is settled (accepted, refused for good, or expired).
    pub fn done(&self, job: &Job) {
        match self {
            Consumer::Memory { .. } => {}
            Consumer::Redis(c) => c.done(job),
        }
    }

    /// The message goes back to be taken again (after `not_before_ms`, by another SMSC when
    /// `avoid` is set and another is bound).
    pub fn release(&self, job: Job) {
        match self {
            Consumer::Memory { outbox, .. } => outbox.release(job),
            Consumer::Redis(c) => c.release(job),
        }
    }

    /// Stops taking work; what was taken but not handed out goes back.
    pub fn close(&mut self) {
        if let Consumer::Redis(c) = self {
            c.close();
        }
    }
}
