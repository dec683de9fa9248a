//! One SMPP bind to one SMSC, as an actor.
//!
//! [`run_bind`] is the supervisor: connect, bind, run a session until it ends, back off
//! (1 s doubling to 30 s, with jitter; a refused bind counts as a drop), again — until
//! shutdown. A session is one task that owns the socket's read half, the sequence counter, the
//! window of pending submits and the messages in flight; a writer task owns the write half so
//! that a slow peer never stops us reading (and answering) what it sends.
//!
//! Work comes from the [`Outbox`]: a message is settled there once the SMSC accepted every part
//! or refused it for good. A message that fails a try before any part was accepted goes back
//! to the outbox with backoff, avoiding this SMSC, so another SMSC of the route takes it; the
//! messages in flight when a session dies go back the same way (only those can go twice).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use governor::{DefaultDirectRateLimiter, Quota};
use rand::Rng;
use rusmpp::pdus::{BindTransceiver, DeliverSmResp, SubmitSm};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::pdu::{self, Frame, SubmitParams};
use super::{DeliveryEvent, SmscStatus, StatusClass, classify_status, status_name};
use crate::clock::system_now_ms;
use crate::config::SmscConfig;
use crate::outbox::{Composer, Consumer, Job, Outbox, Routing};
use crate::sms;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed or broke.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The SMSC answered bind_transceiver with an error status.
    #[error("bind refused: {0}")]
    BindRefused(String),
    /// The SMSC did not answer bind or enquire_link in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The byte stream could not be framed (bad command_length).
    #[error("framing: {0}")]
    Framing(#[from] pdu::FramingError),
    /// The SMSC closed the connection or sent unbind.
    #[error("closed by the SMSC")]
    Closed,
}

/// Everything a bind needs, shared by all binds of one SMSC.
#[derive(Clone)]
pub struct BindContext {
    pub config: Arc<SmscConfig>,
    /// Where to connect (the simulator's port when `simulator = true`).
    pub address: String,
    pub status: Arc<SmscStatus>,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    /// The routes this SMSC takes.
    pub routes: Vec<String>,
    pub composer: Arc<Composer>,
    /// `throughput` over all binds of this SMSC.
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub events: mpsc::UnboundedSender<DeliveryEvent>,
    /// Cancelled when the daemon stops taking work.
    pub shutdown: CancellationToken,
    /// How long to keep submitting queued SMS after shutdown began.
    pub shutdown_grace: Duration,
}

/// A smoothed limiter of `per_second` submits (no bursts above the rate), or none for 0.
pub fn throughput_limiter(per_second: u32) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let quota = Quota::per_second(rate).allow_burst(std::num::NonZeroU32::MIN);
    Some(Arc::new(DefaultDirectRateLimiter::direct(quota)))
}

/// Supervises one bind until shutdown: reconnects with backoff after any drop.
pub async fn run_bind(ctx: BindContext, bind_index: u32) {
    let source = super::addressing::source_address(&ctx.config.source_addr).unwrap_or((
        Ton::Alphanumeric,
        Npi::Unknown,
        "otpgate".into(),
    ));
    let mut backoff = Duration::from_secs(1);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if ctx.shutdown.is_cancelled() {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + ctx.shutdown_grace);
            if Instant::now() >= deadline || ctx.outbox.is_empty_for(&ctx.routes).await {
                break;
            }
        }
        match connect_and_bind(&ctx).await {
            Ok(conn) => {
                backoff = Duration::from_secs(1);
                tracing::info!(smsc = %ctx.status.name, bind = bind_index, "bound");
                ctx.status.session_up();
                let consumer = ctx.outbox.consumer(
                    &ctx.routes,
                    &ctx.status.name,
                    bind_index,
                    ctx.routing.clone(),
                    ctx.config.window as usize,
                );
                let mut session = Session::new(&ctx, &source, conn.seq_next, consumer);
                let result = session
                    .run(conn.reader, conn.buf, conn.writer, &mut drain_deadline)
                    .await;
                ctx.status.session_down();
                match result {
                    Ok(()) => {
                        tracing::info!(smsc = %ctx.status.name, bind = bind_index, "unbound");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(smsc = %ctx.status.name, bind = bind_index, error = %e,
                            "session lost; reconnecting");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(smsc = %ctx.status.name, bind = bind_index, error = %e,
                    retry_in_ms = backoff.as_millis() as u64, "bind failed");
            }
        }
        let jitter = rand::rng().random_range(0.8..1.2);
        let wait = backoff.mul_f64(jitter);
        tokio::select! {
            _ = sleep(wait) => {}
            _ = ctx.shutdown.cancelled(), if drain_deadline.is_none() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

struct Connection {
    reader: OwnedReadHalf,
    buf: BytesMut,
    writer: mpsc::Sender<BytesMut>,
    seq_next: u32,
}

async fn connect_and_bind(ctx: &BindContext) -> Result<Connection, Error> {
    let timeout = ctx.config.response_timeout;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&ctx.address))
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    let (mut reader, write_half) = stream.into_split();
    let writer = spawn_writer(write_half);

    let c = &ctx.config;
    let bind = BindTransceiver::builder()
        .system_id(lossy(&c.system_id))
        .password(lossy(c.password.expose()))
        .system_type(lossy(&c.system_type))
        .interface_version(InterfaceVersion::Smpp3_4)
        .addr_ton(Ton::Unknown)
        .addr_npi(Npi::Unknown)
        .address_range(COctetString::empty())
        .build();
    let cmd = Command::new(CommandStatus::EsmeRok, 1, Pdu::BindTransceiver(bind));
    writer
        .send(pdu::encode(&cmd))
        .await
        .map_err(|_| Error::Closed)?;

    let mut buf = BytesMut::with_capacity(64 * 1024);
    let deadline = Instant::now() + timeout;
    loop {
        while let Some(frame) = pdu::next_frame(&mut buf)? {
            let Frame::Command(cmd) = frame else { continue };
            match cmd.id() {
                CommandId::BindTransceiverResp if cmd.sequence_number() == 1 => {
                    let status = u32::from(cmd.status());
                    if status != 0 {
                        return Err(Error::BindRefused(status_name(status)));
                    }
                    return Ok(Connection {
                        reader,
                        buf,
                        writer,
                        seq_next: 2,
                    });
                }
                CommandId::GenericNack => {
                    return Err(Error::BindRefused(status_name(u32::from(cmd.status()))));
                }
                CommandId::EnquireLink => {
                    let resp = Command::new(
                        CommandStatus::EsmeRok,
                        cmd.sequence_number(),
                        Pdu::EnquireLinkResp,
                    );
                    let _ = writer.send(pdu::encode(&resp)).await;
                }
                _ => {}
            }
        }
        tokio::select! {
            n = reader.read_buf(&mut buf) => {
                if n? == 0 {
                    return Err(Error::Closed);
                }
            }
            _ = sleep_until(deadline) => return Err(Error::Timeout(timeout)),
        }
    }
}

/// Writes whatever frames are queued, batching those already waiting into one write.
fn spawn_writer(mut half: tokio::net::tcp::OwnedWriteHalf) -> mpsc::Sender<BytesMut> {
    let (tx, mut rx) = mpsc::channel::<BytesMut>(4096);
    tokio::spawn(async move {
        let mut out = BytesMut::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            out.unsplit(first);
            while out.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => out.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if half.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        let _ = half.shutdown().await;
    });
    tx
}

/// A C-octet string from configuration text (validated at start; trimmed, never panics).
fn lossy<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii() && *c != '\0')
        .take(MAX - 1)
        .collect();
    <COctetString<MIN, MAX> as std::str::FromStr>::from_str(&s)
        .unwrap_or_else(|_| COctetString::empty())
}

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

struct Pending {
    key: u64,
    part: usize,
    deadline: Instant,
    sent_at: Instant,
}

struct Session<'a> {
    ctx: &'a BindContext,
    consumer: Consumer,
    source: &'a (Ton, Npi, String),
    seq: u32,
    next_key: u64,
    inflight: HashMap<u64, InFlight>,
    pending: HashMap<u32, Pending>,
    /// Keys of messages with parts waiting in `todo`.
    ready: VecDeque<u64>,
    /// The window now: the configured one, halved on throttling, regrown on success.
    window: usize,
    /// After ESME_RTHROTTLED/RMSGQFUL: no new submit before this.
    paused_until: Option<Instant>,
    /// When the window was last halved for throttling (one reaction per pause interval, so a
    /// burst of throttled responses to one window counts once).
    last_throttle: Option<Instant>,
    /// The throughput limiter said wait until this.
    rate_wait: Option<Instant>,
    enquire_pending: Option<(u32, Instant)>,
    last_heard: Instant,
    /// The SMSC sent unbind.
    closed: bool,
    /// Messages to settle or release in the outbox (outside the borrow of `self`).
    settle: Vec<(Job, Settle)>,
}

enum Settle {
    Done,
    Release,
}

/// How long new submits pause after the SMSC throttles us.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);

impl<'a> Session<'a> {
    fn new(
        ctx: &'a BindContext,
        source: &'a (Ton, Npi, String),
        seq_next: u32,
        consumer: Consumer,
    ) -> Session<'a> {
        Session {
            ctx,
            consumer,
            source,
            seq: seq_next,
            next_key: 0,
            inflight: HashMap::new(),
            pending: HashMap::new(),
            ready: VecDeque::new(),
            window: ctx.config.window as usize,
            paused_until: None,
            last_throttle: None,
            rate_wait: None,
            enquire_pending: None,
            last_heard: Instant::now(),
            closed: false,
            settle: Vec::new(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        let s = self.seq;
        self.seq = if self.seq >= 0x7FFF_FFFF {
            1
        } else {
            self.seq + 1
        };
        s
    }

    /// Runs until unbound after shutdown (`Ok`) or the connection is lost (`Err`); messages
    /// not yet accepted go back to the outbox.
    async fn run(
        &mut self,
        mut reader: OwnedReadHalf,
        mut buf: BytesMut,
        writer: mpsc::Sender<BytesMut>,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<(), Error> {
        let result = self
            .run_inner(&mut reader, &mut buf, &writer, drain_deadline)
            .await;
        self.flush_settled();
        let now_ms = system_now_ms();
        for (_, f) in self.inflight.drain() {
            let mut job = f.job;
            job.not_before_ms = now_ms;
            job.avoid = Some(self.ctx.status.name.to_string());
            self.consumer.release(job);
        }
        self.consumer.close();
        result
    }

    fn flush_settled(&mut self) {
        for (job, how) in std::mem::take(&mut self.settle) {
            match how {
                Settle::Done => self.consumer.done(&job),
                Settle::Release => self.consumer.release(job),
            }
        }
    }

    async fn run_inner(
        &mut self,
        reader: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        writer: &mpsc::Sender<BytesMut>,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<(), Error> {
        let timeout = self.ctx.config.response_timeout;
        let enquire_every = self.ctx.config.enquire_link_interval;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = BytesMut::with_capacity(16 * 1024);
        loop {
            // Put ready parts on the wire while the window and the rate allow.
            self.fill_window(&mut out);
            if !out.is_empty() {
                writer.send(out.split()).await.map_err(|_| Error::Closed)?;
            }
            self.flush_settled();

            let draining = self.ctx.shutdown.is_cancelled();
            if draining {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.ctx.shutdown_grace);
                let idle = self.inflight.is_empty()
                    && self.ctx.outbox.is_empty_for(&self.ctx.routes).await;
                if idle || Instant::now() >= deadline {
                    return self.unbind(reader, buf, writer).await;
                }
            }
            let room = self.pending.len() + self.queued_parts() < self.window
                && self.paused_until.is_none()
                && self.rate_wait.is_none();
            // Wake exactly when a throttling pause or the rate limiter's wait ends.
            let resume = match (self.paused_until, self.rate_wait) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };

            tokio::select! {
                n = reader.read_buf(buf) => {
                    if n? == 0 {
                        return Err(Error::Closed);
                    }
                    self.last_heard = Instant::now();
                    while let Some(frame) = pdu::next_frame(buf)? {
                        if let Some(reply) = self.on_frame(frame) {
                            pdu::encode_into(&reply, &mut out);
                        }
                        if self.closed {
                            writer.send(out.split()).await.map_err(|_| Error::Closed)?;
                            return Err(Error::Closed);
                        }
                    }
                }
                job = self.consumer.next(), if room => {
                    self.admit(job);
                }
                _ = sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {
                    let now = Instant::now();
                    if self.paused_until.is_some_and(|t| now >= t) {
                        self.paused_until = None;
                    }
                    if self.rate_wait.is_some_and(|t| now >= t) {
                        self.rate_wait = None;
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if self.paused_until.is_some_and(|t| now >= t) {
                        self.paused_until = None;
                    }
                    self.expire_pending(now);
                    if let Some((_, sent)) = self.enquire_pending
                        && now.duration_since(sent) > timeout
                    {
                        return Err(Error::Timeout(timeout));
                    }
                    if self.enquire_pending.is_none()
                        && now.duration_since(self.last_heard) >= enquire_every
                    {
                        let seq = self.next_seq();
                        self.enquire_pending = Some((seq, now));
                        pdu::encode_into(
                            &Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink),
                            &mut out,
                        );
                    }
                }
                _ = self.ctx.shutdown.cancelled(), if !draining => {}
            }
        }
    }

    fn queued_parts(&self) -> usize {
        self.ready
            .iter()
            .filter_map(|k| self.inflight.get(k))
            .map(|f| f.todo.len())
            .sum()
    }

    /// Renders a message into its submit_sm parts and queues them.
    fn admit(&mut self, job: Job) {
        let key = self.next_key;
        self.next_key += 1;
        let text = self.ctx.composer.render(&job.body);
        let seg = sms::split(&text);
        let params = SubmitParams {
            source: self.source,
            destination: job.destination.international_digits(),
            validity_secs: ((job.expires_at_ms - system_now_ms()) / 1000).max(1) as u64,
            mode: self.ctx.config.long_messages,
            reference: rand::rng().random(),
        };
        let submits = pdu::submit_sms(&seg, &params);
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
    fn fill_window(&mut self, out: &mut BytesMut) {
        if self.paused_until.is_some() || self.rate_wait.is_some() {
            return;
        }
        let now = Instant::now();
        let now_ms = system_now_ms();
        let mut rounds = self.ready.len();
        while self.pending.len() < self.window && rounds > 0 {
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
                    let _ = self.ctx.events.send(DeliveryEvent::Expired {
                        message_id: f.job.message_id.clone(),
                    });
                    self.settle.push((f.job, Settle::Done));
                }
                continue;
            }
            let mut blocked = false;
            while self.pending.len() < self.window {
                let due = matches!(self.inflight.get(&key).and_then(|f| f.todo.front()), Some(&(_, at)) if at <= now);
                if !due {
                    break;
                }
                if !self.rate_allows() {
                    blocked = true;
                    break;
                }
                let seq = self.next_seq();
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

    /// Handles one frame from the SMSC; returns the reply to send, if any.
    fn on_frame(&mut self, frame: Frame) -> Option<Command> {
        let cmd = match frame {
            Frame::Command(cmd) => cmd,
            Frame::Undecodable {
                command_id,
                sequence_number,
            } => {
                if pdu::is_response(command_id) {
                    // A response we cannot read: its submit failed this try.
                    if let Some(p) = self.pending.remove(&sequence_number) {
                        self.on_temporary_failure(p, "unreadable response");
                    }
                    return None;
                }
                tracing::warn!(smsc = %self.ctx.status.name, command_id = format_args!("{command_id:#010x}"),
                    "undecodable PDU from SMSC; answered generic_nack");
                metrics::counter!("otpgate_smpp_generic_nack_sent_total", "smsc" => self.ctx.status.name.to_string()).increment(1);
                return Some(pdu::generic_nack(0x0000_0002, sequence_number));
            }
        };
        let seq = cmd.sequence_number();
        let status = u32::from(cmd.status());
        match cmd.id() {
            CommandId::SubmitSmResp => {
                let id = match cmd.pdu() {
                    Some(Pdu::SubmitSmResp(r)) => r.message_id().as_str().to_owned(),
                    _ => String::new(),
                };
                self.on_submit_resp(seq, status, id);
                None
            }
            CommandId::GenericNack => {
                if let Some(p) = self.pending.remove(&seq) {
                    self.on_submit_error(p, status);
                }
                None
            }
            CommandId::DeliverSm => {
                if let Some(Pdu::DeliverSm(dsm)) = cmd.pdu()
                    && pdu::is_receipt(u8::from(dsm.esm_class))
                {
                    match pdu::parse_receipt(dsm) {
                        Some(r) => {
                            let _ = self.ctx.events.send(DeliveryEvent::Receipt {
                                smsc: self.ctx.status.name.clone(),
                                smsc_message_id: r.message_id,
                                stat: r.stat,
                            });
                        }
                        None => {
                            tracing::warn!(smsc = %self.ctx.status.name, "unreadable delivery receipt")
                        }
                    }
                }
                // Mobile-originated messages are acknowledged and ignored.
                Some(Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::DeliverSmResp(DeliverSmResp::default()),
                ))
            }
            CommandId::EnquireLink => Some(Command::new(
                CommandStatus::EsmeRok,
                seq,
                Pdu::EnquireLinkResp,
            )),
            CommandId::EnquireLinkResp => {
                if self.enquire_pending.is_some_and(|(s, _)| s == seq) {
                    self.enquire_pending = None;
                }
                None
            }
            CommandId::Unbind => {
                self.closed = true;
                Some(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp))
            }
            CommandId::UnbindResp => None,
            other => {
                let id = u32::from(other);
                if pdu::is_response(id) {
                    None
                } else {
                    // A request we do not handle (data_sm, alert_notification, …).
                    Some(pdu::generic_nack(0x0000_0003, seq))
                }
            }
        }
    }

    fn on_submit_resp(&mut self, seq: u32, status: u32, smsc_id: String) {
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
        if self.window < self.ctx.config.window as usize {
            self.window += 1;
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
            let _ = self.ctx.events.send(DeliveryEvent::Submitted {
                message_id: f.job.message_id.clone(),
                smsc: self.ctx.status.name.clone(),
                smsc_message_ids: f.smsc_ids.into_iter().flatten().collect(),
            });
            self.settle.push((f.job, Settle::Done));
        }
    }

    fn on_submit_error(&mut self, p: Pending, status: u32) {
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
                    self.window = (self.window / 2).max(1);
                    self.paused_until = Some(now + THROTTLE_PAUSE);
                    self.last_throttle = Some(now);
                }
                self.retry_part_here(p.key, p.part, Duration::ZERO);
            }
            StatusClass::Temporary => self.on_temporary_failure(p, &status_name(status)),
            StatusClass::Permanent => {
                if let Some(f) = self.inflight.remove(&p.key) {
                    self.pending.retain(|_, q| q.key != p.key);
                    let _ = self.ctx.events.send(DeliveryEvent::Failed {
                        message_id: f.job.message_id.clone(),
                        smsc: self.ctx.status.name.clone(),
                        error: status_name(status),
                    });
                    self.settle.push((f.job, Settle::Done));
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
            job.not_before_ms = system_now_ms() + delay.as_millis() as i64;
            job.avoid = Some(self.ctx.status.name.to_string());
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

    /// Submits whose response did not come in time are failed tries.
    fn expire_pending(&mut self, now: Instant) {
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

    /// Sends unbind and waits briefly for unbind_resp.
    async fn unbind(
        &mut self,
        reader: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        writer: &mpsc::Sender<BytesMut>,
    ) -> Result<(), Error> {
        let seq = self.next_seq();
        let _ = writer
            .send(pdu::encode(&Command::new(
                CommandStatus::EsmeRok,
                seq,
                Pdu::Unbind,
            )))
            .await;
        let deadline =
            Instant::now() + self.ctx.config.response_timeout.min(Duration::from_secs(2));
        loop {
            while let Ok(Some(frame)) = pdu::next_frame(buf) {
                if let Frame::Command(cmd) = &frame
                    && cmd.id() == CommandId::UnbindResp
                {
                    return Ok(());
                }
                if let Some(reply) = self.on_frame(frame) {
                    let _ = writer.send(pdu::encode(&reply)).await;
                }
            }
            tokio::select! {
                n = reader.read_buf(buf) => match n {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => {}
                },
                _ = sleep_until(deadline) => return Ok(()),
            }
        }
    }
}

/// Backoff of the n-th retry: 1 s doubling to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}
