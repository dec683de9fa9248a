//! The window of one session: the messages in flight, the submits waiting for their response,
//! response timeouts, throttling slow-down, the throughput limiter and retries.
//!
//! No I/O here: [`Window::fill`] encodes the submits that may go now into a buffer, the
//! `on_*` methods apply what the SMSC answered, and the outcomes wait in [`Window::settle`]
//! (for the outbox) and [`Window::events`] (for the delivery tracker) for the session to hand
//! them on. Time comes from the injected clock (`ctx.clock`) for validity, and from tokio's
//! `Instant` for the session's own timers.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use rand::Rng;
use rusmpp::pdus::SubmitSm;
use rusmpp::values::{Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::time::Instant;

use super::{BindContext, Sequence, backoff};
use crate::outbox::Job;
use crate::smpp::pdu::{self, SubmitParams};
use crate::smpp::{DeliveryEvent, StatusClass, classify_status, status_name};
use crate::sms;

/// "Incorrect bind status": the SMSC no longer considers this session bound.
const ESME_RINVBNDSTS: u32 = 0x0000_0004;

/// How long new submits pause after the SMSC throttles us.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);

/// A message being submitted: its parts and what the SMSC answered for each.
struct InFlight {
    job: Job,
    submits: Vec<SubmitSm>,
    smsc_ids: Vec<Option<String>>,
    /// Parts still to (re)send, with the earliest time to do so.
    todo: VecDeque<(usize, Instant)>,
    unanswered: usize,
    tries: u32,
}

/// A submit_sm on the wire, waiting for its response.
struct Pending {
    key: u64,
    part: usize,
    deadline: Instant,
    sent_at: Instant,
}

/// What becomes of a message in the outbox.
pub(super) enum Settle {
    /// Settled; its event carries the outbox entry, acknowledged by the delivery tracker once
    /// the store recorded the outcome.
    Handed,
    Release,
}

pub(super) struct Window<'a> {
    ctx: &'a BindContext,
    source: &'a (Ton, Npi, String),
    next_key: u64,
    inflight: HashMap<u64, InFlight>,
    pending: HashMap<u32, Pending>,
    /// Keys of messages with parts waiting in `todo`.
    ready: VecDeque<u64>,
    /// The window now: the configured one, halved on throttling, regrown on success.
    size: usize,
    /// After ESME_RTHROTTLED/RMSGQFUL: no new submit before this.
    paused_until: Option<Instant>,
    /// When the window was last halved for throttling (one reaction per pause interval, so a
    /// burst of throttled responses to one window counts once).
    last_throttle: Option<Instant>,
    /// The throughput limiter said wait until this.
    rate_wait: Option<Instant>,
    /// Messages to settle or release in the outbox (by the session, which owns the consumer).
    pub(super) settle: Vec<(Job, Settle)>,
    /// Events for the delivery tracker (sent by the session, which may have to wait for room).
    pub(super) events: Vec<DeliveryEvent>,
    /// The SMSC said we are not bound (ESME_RINVBNDSTS): the session must bind again.
    pub(super) rebind: bool,
}

impl<'a> Window<'a> {
    pub(super) fn new(ctx: &'a BindContext, source: &'a (Ton, Npi, String)) -> Window<'a> {
        Window {
            ctx,
            source,
            next_key: 0,
            inflight: HashMap::new(),
            pending: HashMap::new(),
            ready: VecDeque::new(),
            size: ctx.config.window as usize,
            paused_until: None,
            last_throttle: None,
            rate_wait: None,
            settle: Vec::new(),
            events: Vec::new(),
            rebind: false,
        }
    }

    /// Whether one more message may be taken from the outbox.
    pub(super) fn has_room(&self) -> bool {
        self.pending.len() + self.queued_parts() < self.size
            && self.paused_until.is_none()
            && self.rate_wait.is_none()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// When a throttling pause or the rate limiter's wait ends, if one is on.
    pub(super) fn resume_at(&self) -> Option<Instant> {
        match (self.paused_until, self.rate_wait) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the pauses that are over at `now`.
    pub(super) fn resume(&mut self, now: Instant, rate_too: bool) {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        if rate_too && self.rate_wait.is_some_and(|t| now >= t) {
            self.rate_wait = None;
        }
    }

    /// Every message still in flight (the session is over).
    pub(super) fn drain(&mut self) -> Vec<Job> {
        self.pending.clear();
        self.ready.clear();
        self.inflight.drain().map(|(_, f)| f.job).collect()
    }

    fn queued_parts(&self) -> usize {
        self.ready
            .iter()
            .filter_map(|k| self.inflight.get(k))
            .map(|f| f.todo.len())
            .sum()
    }

    /// Renders a message into its submit_sm parts and queues them.
    pub(super) fn admit(&mut self, job: Job) {
        let key = self.next_key;
        self.next_key += 1;
        let text = match self.ctx.composer.render(&job.body) {
            Ok(t) => t,
            Err(e) => {
                self.events.push(DeliveryEvent::Failed {
                    message_id: job.message_id.clone(),
                    smsc: self.ctx.status.name.clone(),
                    error: e.to_string(),
                    outbox_entry: job.receipt.clone(),
                });
                self.settle.push((job, Settle::Handed));
                return;
            }
        };
        let seg = sms::split(&text);
        let params = SubmitParams {
            source: self.source,
            destination: job.destination.international_digits(),
            validity_secs: ((job.expires_at_ms - self.ctx.clock.now_ms()) / 1000).max(1) as u64,
            mode: self.ctx.config.long_messages,
            reference: rand::rng().random(),
        };
        let submits = match pdu::submit_sms(&seg, &params) {
            Ok(s) => s,
            Err(e) => {
                // The API refuses such texts; a job queued by an older version may still come.
                self.events.push(DeliveryEvent::Failed {
                    message_id: job.message_id.clone(),
                    smsc: self.ctx.status.name.clone(),
                    error: e.to_string(),
                    outbox_entry: job.receipt.clone(),
                });
                self.settle.push((job, Settle::Handed));
                return;
            }
        };
        let n = submits.len();
        let now = Instant::now();
        self.inflight.insert(
            key,
            InFlight {
                job,
                submits,
                smsc_ids: vec![None; n],
                todo: (0..n).map(|i| (i, now)).collect(),
                unanswered: n,
                tries: 0,
            },
        );
        self.ready.push_back(key);
    }

    /// Whether the throughput limiter allows one more submit now.
    fn rate_allows(&mut self) -> bool {
        let Some(l) = &self.ctx.limiter else {
            return true;
        };
        match l.check() {
            Ok(()) => true,
            Err(not_until) => {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                self.rate_wait = Some(Instant::now() + wait.max(Duration::from_micros(100)));
                false
            }
        }
    }

    /// Writes queued parts whose time has come, while the window and the rate allow.
    pub(super) fn fill(&mut self, seq: &mut Sequence, out: &mut BytesMut) {
        if self.paused_until.is_some() || self.rate_wait.is_some() {
            return;
        }
        let now = Instant::now();
        let now_ms = self.ctx.clock.now_ms();
        let mut rounds = self.ready.len();
        while self.pending.len() < self.size && rounds > 0 {
            rounds -= 1;
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let expired = match self.inflight.get(&key) {
                Some(f) => f.job.expires_at_ms <= now_ms,
                None => continue,
            };
            if expired {
                // Never submitted after its code died.
                if let Some(f) = self.inflight.remove(&key) {
                    self.pending.retain(|_, p| p.key != key);
                    self.events.push(DeliveryEvent::Expired {
                        message_id: f.job.message_id.clone(),
                        outbox_entry: f.job.receipt.clone(),
                    });
                    self.settle.push((f.job, Settle::Handed));
                }
                continue;
            }
            let mut blocked = false;
            while self.pending.len() < self.size {
                let due = matches!(self.inflight.get(&key).and_then(|f| f.todo.front()), Some(&(_, at)) if at <= now);
                if !due {
                    break;
                }
                if !self.rate_allows() {
                    blocked = true;
                    break;
                }
                let seq = seq.next();
                let window_deadline = now + self.ctx.config.response_timeout;
                let Some(f) = self.inflight.get_mut(&key) else {
                    break;
                };
                let Some((part, _)) = f.todo.pop_front() else {
                    break;
                };
                let mut submit = f.submits[part].clone();
                let remaining = ((f.job.expires_at_ms - now_ms) / 1000).max(1) as u64;
                submit.validity_period = pdu::relative_validity(remaining);
                pdu::encode_into(
                    &Command::new(CommandStatus::EsmeRok, seq, Pdu::SubmitSm(submit)),
                    out,
                );
                self.pending.insert(
                    seq,
                    Pending {
                        key,
                        part,
                        deadline: window_deadline,
                        sent_at: now,
                    },
                );
            }
            if self.inflight.get(&key).is_some_and(|f| !f.todo.is_empty()) {
                self.ready.push_back(key);
            }
            if blocked {
                break;
            }
        }
    }

    /// A response we could not read: its submit failed this try.
    pub(super) fn on_unreadable_response(&mut self, seq: u32) {
        if let Some(p) = self.pending.remove(&seq) {
            self.on_temporary_failure(p, "unreadable response");
        }
    }

    /// A generic_nack for one of our submits.
    pub(super) fn on_generic_nack(&mut self, seq: u32, status: u32) {
        if let Some(p) = self.pending.remove(&seq) {
            self.on_submit_error(p, status);
        }
    }

    pub(super) fn on_submit_resp(&mut self, seq: u32, status: u32, smsc_id: String) {
        let Some(p) = self.pending.remove(&seq) else {
            return;
        };
        metrics::histogram!("otpgate_smpp_submit_seconds", "smsc" => self.ctx.status.name.to_string())
            .record(p.sent_at.elapsed().as_secs_f64());
        if status != 0 {
            self.on_submit_error(p, status);
            return;
        }
        // Success regrows a throttled window, one submit at a time.
        if self.size < self.ctx.config.window as usize {
            self.size += 1;
        }
        let Some(f) = self.inflight.get_mut(&p.key) else {
            return;
        };
        if f.smsc_ids[p.part].is_none() {
            f.smsc_ids[p.part] = Some(smsc_id);
            f.unanswered -= 1;
        }
        if f.unanswered == 0
            && let Some(f) = self.inflight.remove(&p.key)
        {
            self.events.push(DeliveryEvent::Submitted {
                message_id: f.job.message_id.clone(),
                smsc: self.ctx.status.name.clone(),
                smsc_message_ids: f.smsc_ids.into_iter().flatten().collect(),
                outbox_entry: f.job.receipt.clone(),
            });
            self.settle.push((f.job, Settle::Handed));
        }
    }

    fn on_submit_error(&mut self, p: Pending, status: u32) {
        if status == ESME_RINVBNDSTS {
            tracing::warn!(smsc = %self.ctx.status.name, "the SMSC says we are not bound; binding again");
            self.rebind = true;
        }
        match classify_status(status) {
            StatusClass::Ok => {}
            StatusClass::Throttled => {
                metrics::counter!("otpgate_smpp_throttled_total", "smsc" => self.ctx.status.name.to_string()).increment(1);
                // Slow down (halve the window, pause briefly), then regrow one submit per
                // success; the refused part goes again after the pause.
                let now = Instant::now();
                if self
                    .last_throttle
                    .is_none_or(|t| now.duration_since(t) >= THROTTLE_PAUSE)
                {
                    self.size = (self.size / 2).max(1);
                    self.paused_until = Some(now + THROTTLE_PAUSE);
                    self.last_throttle = Some(now);
                }
                self.retry_part_here(p.key, p.part, Duration::ZERO);
            }
            StatusClass::Temporary => self.on_temporary_failure(p, &status_name(status)),
            StatusClass::Permanent => {
                if let Some(f) = self.inflight.remove(&p.key) {
                    self.pending.retain(|_, q| q.key != p.key);
                    self.events.push(DeliveryEvent::Failed {
                        message_id: f.job.message_id.clone(),
                        smsc: self.ctx.status.name.clone(),
                        error: status_name(status),
                        outbox_entry: f.job.receipt.clone(),
                    });
                    self.settle.push((f.job, Settle::Handed));
                }
            }
        }
    }

    /// A try failed (temporary error, timeout): before any part was accepted the message goes
    /// back to the outbox with backoff, for another SMSC of the route if one is bound; once a
    /// part was accepted the rest is retried here.
    fn on_temporary_failure(&mut self, p: Pending, why: &str) {
        let Some(f) = self.inflight.get(&p.key) else {
            return;
        };
        tracing::debug!(smsc = %self.ctx.status.name, message_id = %f.job.message_id, reason = why, "submit failed; will retry");
        if f.smsc_ids.iter().all(Option::is_none) {
            let Some(f) = self.inflight.remove(&p.key) else {
                return;
            };
            self.pending.retain(|_, q| q.key != p.key);
            let mut job = f.job;
            job.attempts += 1;
            let delay = backoff(job.attempts);
            job.not_before_ms = self.ctx.clock.now_ms() + delay.as_millis() as i64;
            job.avoid = self
                .ctx
                .routing
                .avoid_after_failure(&job, &self.ctx.status.name);
            self.settle.push((job, Settle::Release));
        } else {
            let tries = self.inflight.get(&p.key).map_or(1, |f| f.tries + 1);
            self.retry_part_here(p.key, p.part, backoff(tries));
        }
    }

    /// Schedules one part again on this session.
    fn retry_part_here(&mut self, key: u64, part: usize, delay: Duration) {
        let Some(f) = self.inflight.get_mut(&key) else {
            return;
        };
        f.tries += 1;
        f.todo.push_back((part, Instant::now() + delay));
        if !self.ready.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The session could not read for `d` (it waited for room for its events): the responses
    /// may be waiting unread in the socket, so their deadlines move by as much.
    pub(super) fn postpone(&mut self, d: Duration) {
        for p in self.pending.values_mut() {
            p.deadline += d;
        }
    }

    /// Submits whose response did not come in time are failed tries.
    pub(super) fn expire_pending(&mut self, now: Instant) {
        let late: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in late {
            if let Some(p) = self.pending.remove(&seq) {
                tracing::warn!(smsc = %self.ctx.status.name, "submit_sm response timeout");
                self.on_temporary_failure(p, "response timeout");
            }
        }
    }
}
