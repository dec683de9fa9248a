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
pub mod stale;
pub mod supervise;
pub mod sweep;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::phone::Phone;
use crate::sms::Locale;

pub use crate::routing::{Routing, SmscRoutes};
pub use crate::sms::compose::Composer;

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
        /// The id of the server key the code is derived with (`""`: the current key; jobs
        /// queued before keys had ids).
        #[serde(default)]
        key_id: String,
    },
    /// A text given as is (notifications).
    Text { text: String },
    /// An activation SMS; the code is derived from the activation id when rendered. Written
    /// with the envelope kind [`JOB_KIND_ACTIVATION`], so an older instance leaves it pending.
    Activation(crate::activation::issue::ActivationSms),
    /// The notice to the old number after a phone change (contract §4), rendered when sent
    /// in the change request's locale. Queued under its own envelope kind
    /// ([`JOB_KIND_NOTICE`]), so an instance that predates it leaves it pending.
    PhoneChanged {
        locale: Locale,
        new_phone_masked: String,
    },
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
    /// The envelope kind this job is written with (`k`).
    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Code { .. } | Body::Text { .. } => JOB_KIND_SMS,
            Body::Activation(_) => JOB_KIND_ACTIVATION,
            Body::PhoneChanged { .. } => JOB_KIND_NOTICE,
        }
    }

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

/// Why the outbox could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backing store did not answer.
    #[error("outbox unavailable: {0}")]
    Unavailable(#[from] ::redis::RedisError),
    /// A job could not be written as JSON (a bug).
    #[error("job not encodable: {0}")]
    Encode(#[from] serde_json::Error),
    /// The in-process queue is at capacity.
    #[error("outbox full")]
    Full,
}

/// The version of the job format this daemon writes, and the newest it reads. A durable entry
/// carries its version and kind next to the job (`v`, `k`), so that during a rolling upgrade
/// an older instance leaves what it cannot read pending for a newer one instead of dropping it.
/// Raise it for any change an older reader would misread; additive optional fields do not
/// need it (unknown fields are ignored).
pub const JOB_VERSION: u32 = 1;

/// The kinds of job this version reads.
pub const JOB_KINDS: [&str; 3] = [JOB_KIND_SMS, JOB_KIND_ACTIVATION, JOB_KIND_NOTICE];

/// An SMS to submit (codes and notifications).
pub const JOB_KIND_SMS: &str = "sms";

/// An activation SMS ([`Body::Activation`]): a kind of its own, because an instance from
/// before activations would not decode its body.
pub const JOB_KIND_ACTIVATION: &str = "activation";
/// A notice SMS rendered from its parameters when sent ([`Body::PhoneChanged`]).
pub const JOB_KIND_NOTICE: &str = "notice";

/// A durable entry as read back.
#[derive(Debug)]
pub enum Envelope {
    /// A job this version reads.
    Job(Box<Job>),
    /// Written by a newer version (or a kind added later): not ours to read or acknowledge.
    Unknown { version: u32, kind: String },
    /// Claims a version and kind we read, but does not decode: a bug or a foreign writer.
    Corrupt(serde_json::Error),
}

impl Envelope {
    /// Opens an entry from its fields; entries without `v` and `k` were written before
    /// envelopes existed and are version 1 SMS jobs.
    pub fn open(version: Option<&str>, kind: Option<&str>, job: Option<&str>) -> Envelope {
        let version = match version.map(str::parse::<u32>) {
            None => 1,
            Some(Ok(v)) => v,
            // Unparseable version: certainly not one we wrote.
            Some(Err(_)) => u32::MAX,
        };
        let kind = kind.unwrap_or(JOB_KIND_SMS);
        if version > JOB_VERSION || !JOB_KINDS.contains(&kind) {
            return Envelope::Unknown {
                version,
                kind: kind.to_owned(),
            };
        }
        match serde_json::from_str::<Job>(job.unwrap_or_default()) {
            Ok(j) => Envelope::Job(Box::new(j)),
            Err(e) => Envelope::Corrupt(e),
        }
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
                checking: None,
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

    /// Whether sessions drain this outbox at shutdown. The memory outbox's queue dies with the
    /// process: sessions keep taking and submitting it for `shutdown_grace`. What waits in
    /// Redis stays there for the next instance: a session stops taking work at once (its
    /// consumer closed, what it buffered goes back) and only finishes what is in its window.
    pub fn drains_at_shutdown(&self) -> bool {
        match self {
            Outbox::Memory(_) => true,
            Outbox::Redis(_) => false,
        }
    }

    /// Whether nothing waits for any of `routes` that sessions must still submit at shutdown:
    /// with Redis never anything (see [`Outbox::drains_at_shutdown`]).
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

    /// Code SMS are checked against their verification before they are handed out (see
    /// [`stale`]); set once at startup.
    pub fn set_stale_check(&self, check: stale::StaleCheck) {
        let check = Arc::new(check);
        let _ = match self {
            Outbox::Memory(m) => m.stale.set(check),
            Outbox::Redis(r) => r.stale.set(check),
        };
    }

    /// Removes the jobs expired at `now_ms` that no session holds; returns their message ids.
    pub async fn take_expired(&self, now_ms: i64) -> Result<Vec<String>, Error> {
        match self {
            Outbox::Memory(m) => Ok(m.take_expired(now_ms)),
            Outbox::Redis(r) => r.take_expired(now_ms).await,
        }
    }

    /// The outcome of the message whose durable entry is `entry` (see [`Consumer::handed`]) is
    /// recorded: the entry goes.
    pub fn settled(&self, entry: &str) {
        if let Outbox::Redis(r) = self {
            r.settled(entry);
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
        /// A code SMS taken and being checked (kept here so that `next` stays cancel-safe).
        checking: Option<Box<Job>>,
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
                checking,
            } => loop {
                let job = match checking.take() {
                    Some(job) => *job,
                    None => outbox.next(routes, smsc, routing).await,
                };
                let Some(check) = outbox
                    .stale
                    .get()
                    .filter(|_| job.priority == Priority::Code)
                else {
                    return job;
                };
                let job = checking.insert(Box::new(job));
                let verdict = check.verdict(job).await;
                let Some(job) = checking.take().map(|j| *j) else {
                    continue;
                };
                if verdict == stale::Verdict::Send {
                    return job;
                }
                let check = check.clone();
                tokio::spawn(async move { check.mark(&job, verdict).await });
            },
            Consumer::Redis(c) => c.next().await,
        }
    }

    /// The message is settled (accepted, refused for good, or expired) and its event goes to
    /// the delivery tracker, which acknowledges its entry ([`Outbox::settled`]) once the store
    /// recorded the outcome; until then the entry stays this consumer's.
    pub fn handed(&self, job: &Job) {
        match self {
            Consumer::Memory { .. } => {}
            Consumer::Redis(c) => c.handed(job),
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
        match self {
            Consumer::Redis(c) => c.close(),
            Consumer::Memory {
                outbox, checking, ..
            } => {
                if let Some(job) = checking.take() {
                    outbox.release(*job);
                }
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"{"message_id":"msg_a","destination":"+85366123456","body":{"kind":"text","text":"hi"},"expires_at_ms":1,"priority":"notification","route":"","attempts":0,"avoid":null,"not_before_ms":0}"#;

    #[test]
    fn envelopes_open_only_what_this_version_reads() {
        assert!(
            matches!(Envelope::open(None, None, Some(JOB)), Envelope::Job(_)),
            "before envelopes"
        );
        assert!(matches!(
            Envelope::open(Some("1"), Some("sms"), Some(JOB)),
            Envelope::Job(_)
        ));
        assert!(matches!(
            Envelope::open(Some("2"), Some("sms"), Some(JOB)),
            Envelope::Unknown { version: 2, .. }
        ));
        assert!(matches!(
            Envelope::open(Some("1"), Some("activation_sms"), Some(JOB)),
            Envelope::Unknown { version: 1, .. }
        ));
        assert!(matches!(
            Envelope::open(Some("x"), None, Some(JOB)),
            Envelope::Unknown { .. }
        ));
        assert!(matches!(
            Envelope::open(Some("1"), Some("sms"), Some("{")),
            Envelope::Corrupt(_)
        ));
    }

    #[test]
    fn activation_jobs_carry_their_own_kind_and_read_back() {
        let job = Job::new(
            "msg_a".into(),
            Phone::from_e164_unchecked("+85366123456".into()),
            Body::Activation(crate::activation::issue::ActivationSms {
                activation_id: "act_a".into(),
                key_id: "k1".into(),
                locale: Locale::Pt,
                entity_number: Some("600123".into()),
                activation_url: "https://e.example/a".into(),
            }),
            1,
            Priority::Code,
            String::new(),
        );
        assert_eq!(job.kind(), JOB_KIND_ACTIVATION);
        let json = serde_json::to_string(&job).unwrap();
        match Envelope::open(Some("1"), Some(job.kind()), Some(&json)) {
            Envelope::Job(j) => assert_eq!(*j, job),
            other => panic!("{other:?}"),
        }
        // What an instance from before activations reads: unknown, left pending.
        assert!(!["sms"].contains(&job.kind()));
        let text: Job = serde_json::from_str(JOB).unwrap();
        assert_eq!(text.kind(), JOB_KIND_SMS);
    }

    #[test]
    fn notices_travel_under_their_own_kind() {
        let mut job: Job = serde_json::from_str(JOB).unwrap();
        assert_eq!(job.kind(), JOB_KIND_SMS);
        job.body = Body::PhoneChanged {
            locale: Locale::Vi,
            new_phone_masked: "+84*****5678".into(),
        };
        assert_eq!(job.kind(), JOB_KIND_NOTICE);
        let json = serde_json::to_string(&job).unwrap();
        assert!(json.contains(r#""kind":"phone_changed""#), "{json}");
        match Envelope::open(Some("1"), Some(JOB_KIND_NOTICE), Some(&json)) {
            Envelope::Job(j) => assert_eq!(j.body, job.body),
            other => panic!("{other:?}"),
        }
    }
}
