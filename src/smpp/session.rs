//! One SMPP bind to one SMSC, as an actor.
//!
//! [`run_bind`] is the supervisor: connect, bind, run a session until it ends, back off
//! (1 s doubling to 30 s, with jitter), again — until shutdown. A session is one task that
//! owns the socket's read half, the sequence counter, the window of pending submits and the
//! messages in flight; a writer task owns the write half so that a slow peer never stops us
//! reading (and answering) what it sends. Messages whose submits were unanswered when a
//! session dies are carried to the next session: only those can go twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
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
use super::{DeliveryEvent, OutboundSms, SmscStatus, StatusClass, classify_status, status_name};
use crate::config::SmscConfig;
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
    pub jobs: async_channel::Receiver<OutboundSms>,
    pub events: mpsc::UnboundedSender<DeliveryEvent>,
    /// Cancelled when the daemon stops taking work.
    pub shutdown: CancellationToken,
    /// How long to keep submitting queued SMS after shutdown began.
    pub shutdown_grace: Duration,
}

/// Supervises one bind until shutdown: reconnects with backoff after any drop.
pub async fn run_bind(ctx: BindContext, bind_index: u32) {
    let source = super::addressing::source_address(&ctx.config.source_addr).unwrap_or((
        Ton::Alphanumeric,
        Npi::Unknown,
        "otpgate".into(),
    ));
    let mut carry: VecDeque<OutboundSms> = VecDeque::new();
    let mut backoff = Duration::from_secs(1);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if ctx.shutdown.is_cancelled() {
            let deadline =
                *drain_deadline.get_or_insert_with(|| Instant::now() + ctx.shutdown_grace);
            if (carry.is_empty() && ctx.jobs.is_empty()) || Instant::now() >= deadline {
                break;
            }
        }
        match connect_and_bind(&ctx).await {
            Ok(conn) => {
                backoff = Duration::from_secs(1);
                tracing::info!(smsc = %ctx.status.name, bind = bind_index, "bound");
                ctx.status.session_up();
                let mut session = Session::new(&ctx, &source, conn.seq_next);
                let result = session
                    .run(
                        conn.reader,
                        conn.buf,
                        conn.writer,
                        &mut carry,
                        &mut drain_deadline,
                    )
                    .await;
                ctx.status.session_down();
                match result {
                    Ok(()) => {
                        tracing::info!(smsc = %ctx.status.name, bind = bind_index, "unbound");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(smsc = %ctx.status.name, bind = bind_index, error = %e,
                            carried = carry.len(), "session lost; reconnecting");
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
    let left = carry.len() + if bind_index == 0 { ctx.jobs.len() } else { 0 };
    if left > 0 {
        tracing::warn!(smsc = %ctx.status.name, messages = left, "stopped with messages not submitted");
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
        .system_id(COctetString::from_str_lossy(&c.system_id))
        .password(COctetString::from_str_lossy(c.password.expose()))
        .system_type(COctetString::from_str_lossy(&c.system_type))
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

trait LossyCOctet {
    fn from_str_lossy(s: &str) -> Self;
}

impl<const MIN: usize, const MAX: usize> LossyCOctet for COctetString<MIN, MAX> {
    fn from_str_lossy(s: &str) -> Self {
        let s: String = s
            .chars()
            .filter(|c| c.is_ascii() && *c != '\0')
            .take(MAX - 1)
            .collect();
        <COctetString<MIN, MAX> as std::str::FromStr>::from_str(&s)
            .unwrap_or_else(|_| COctetString::empty())
    }
}

/// A message being submitted: its parts and what the SMSC answered for each.
struct InFlight {
    sms: OutboundSms,
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
    source: &'a (Ton, Npi, String),
    seq: u32,
    next_key: u64,
    inflight: HashMap<u64, InFlight>,
    pending: HashMap<u32, Pending>,
    /// Keys of messages with parts waiting in `todo`.
    ready: VecDeque<u64>,
    window: usize,
    /// Set after ESME_RTHROTTLED/RMSGQFUL: no new submit before this.
    paused_until: Option<Instant>,
    enquire_pending: Option<(u32, Instant)>,
    last_heard: Instant,
    /// The SMSC sent unbind.
    closed: bool,
}

impl<'a> Session<'a> {
    fn new(ctx: &'a BindContext, source: &'a (Ton, Npi, String), seq_next: u32) -> Session<'a> {
        Session {
            ctx,
            source,
            seq: seq_next,
            next_key: 0,
            inflight: HashMap::new(),
            pending: HashMap::new(),
            ready: VecDeque::new(),
            window: ctx.config.window as usize,
            paused_until: None,
            enquire_pending: None,
            last_heard: Instant::now(),
            closed: false,
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
    /// still unanswered are put back in `carry`.
    async fn run(
        &mut self,
        mut reader: OwnedReadHalf,
        mut buf: BytesMut,
        writer: mpsc::Sender<BytesMut>,
        carry: &mut VecDeque<OutboundSms>,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<(), Error> {
        // Messages carried over from a lost session go first.
        while let Some(sms) = carry.pop_front() {
            self.admit(sms);
        }
        let result = self
            .run_inner(&mut reader, &mut buf, &writer, drain_deadline)
            .await;
        // Whatever was not answered goes to the next session (or is reported at stop).
        for (_, f) in self.inflight.drain() {
            carry.push_back(f.sms);
        }
        result
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
            // Put ready parts on the wire while the window has room.
            self.fill_window(&mut out);
            if !out.is_empty() {
                writer.send(out.split()).await.map_err(|_| Error::Closed)?;
            }

            let draining = self.ctx.shutdown.is_cancelled();
            if draining {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.ctx.shutdown_grace);
                let idle = self.inflight.is_empty() && self.ctx.jobs.is_empty();
                if idle || Instant::now() >= deadline {
                    return self.unbind(reader, buf, writer).await;
                }
            }
            let room = self.pending.len() < self.window
                && self.ready.is_empty()
                && self.paused_until.is_none();

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
                job = self.ctx.jobs.recv(), if room => {
                    if let Ok(sms) = job {
                        self.admit(sms);
                        // Take what else is queued right away, up to the window.
                        while self.pending.len() + self.queued_parts() < self.window {
                            match self.ctx.jobs.try_recv() {
                                Ok(sms) => self.admit(sms),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if self.paused_until.is_some_and(|t| now >= t) {
                        self.paused_until = None;
                    }
                    self.expire_pending(now);
                    if let Some((_, sent)) = self.enquire_pending && now.duration_since(sent) > timeout {
                        return Err(Error::Timeout(timeout));
                    }
                    if self.enquire_pending.is_none() && now.duration_since(self.last_heard) >= enquire_every {
                        let seq = self.next_seq();
                        self.enquire_pending = Some((seq, now));
                        pdu::encode_into(&Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink), &mut out);
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

    /// Encodes a new message into its submit_sm parts and queues them.
    fn admit(&mut self, sms: OutboundSms) {
        let key = self.next_key;
        self.next_key += 1;
        let seg = sms::split(&sms.text);
        let validity_secs = ((sms.expires_at_ms - now_ms()) / 1000).max(1) as u64;
        let params = SubmitParams {
            source: self.source,
            destination: sms.destination.international_digits(),
            validity_secs,
            mode: self.ctx.config.long_messages,
            reference: rand::rng().random(),
        };
        let submits = pdu::submit_sms(&seg, &params);
        let n = submits.len();
        let now = Instant::now();
        self.inflight.insert(
            key,
            InFlight {
                sms,
                submits,
                smsc_ids: vec![None; n],
                todo: (0..n).map(|i| (i, now)).collect(),
                unanswered: n,
                tries: 0,
            },
        );
        self.ready.push_back(key);
    }

    /// Writes queued parts whose time has come, while the window has room.
    fn fill_window(&mut self, out: &mut BytesMut) {
        if self.paused_until.is_some() {
            return;
        }
        let now = Instant::now();
        let mut rounds = self.ready.len();
        while self.pending.len() < self.window && rounds > 0 {
            rounds -= 1;
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let expired = match self.inflight.get(&key) {
                Some(f) => f.sms.expires_at_ms <= now_ms(),
                None => continue,
            };
            if expired {
                if let Some(f) = self.inflight.remove(&key) {
                    self.pending.retain(|_, p| p.key != key);
                    let _ = self.ctx.events.send(DeliveryEvent::Expired {
                        message_id: f.sms.message_id,
                    });
                }
                continue;
            }
            let Some(f) = self.inflight.get_mut(&key) else {
                continue;
            };
            while self.pending.len() < self.window {
                match f.todo.front() {
                    Some(&(part, at)) if at <= now => {
                        f.todo.pop_front();
                        let seq = self.seq;
                        self.seq = if self.seq >= 0x7FFF_FFFF {
                            1
                        } else {
                            self.seq + 1
                        };
                        let mut submit = f.submits[part].clone();
                        let remaining = ((f.sms.expires_at_ms - now_ms()) / 1000).max(1) as u64;
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
                                deadline: now + self.ctx.config.response_timeout,
                                sent_at: now,
                            },
                        );
                    }
                    _ => break,
                }
            }
            if !f.todo.is_empty() {
                self.ready.push_back(key);
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
                    // A response we cannot read: treat its submit as a failed try.
                    if let Some(p) = self.pending.remove(&sequence_number) {
                        self.retry_part(p.key, p.part, Duration::from_secs(1));
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
                message_id: f.sms.message_id,
                smsc: self.ctx.status.name.clone(),
                smsc_message_ids: f.smsc_ids.into_iter().flatten().collect(),
            });
        }
    }

    fn on_submit_error(&mut self, p: Pending, status: u32) {
        match classify_status(status) {
            StatusClass::Ok => {}
            StatusClass::Throttled => {
                metrics::counter!("otpgate_smpp_throttled_total", "smsc" => self.ctx.status.name.to_string()).increment(1);
                self.paused_until = Some(Instant::now() + Duration::from_millis(500));
                self.retry_part(p.key, p.part, Duration::from_millis(500));
            }
            StatusClass::Temporary => self.retry_part(p.key, p.part, Duration::from_secs(1)),
            StatusClass::Permanent => {
                if let Some(f) = self.inflight.remove(&p.key) {
                    self.pending.retain(|_, q| q.key != p.key);
                    let _ = self.ctx.events.send(DeliveryEvent::Failed {
                        message_id: f.sms.message_id,
                        error: status_name(status),
                    });
                }
            }
        }
    }

    /// Schedules one part again, with backoff growing with the message's tries.
    fn retry_part(&mut self, key: u64, part: usize, base: Duration) {
        let Some(f) = self.inflight.get_mut(&key) else {
            return;
        };
        f.tries += 1;
        let delay = base
            .saturating_mul(1 << f.tries.min(5))
            .min(Duration::from_secs(30));
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
                self.retry_part(p.key, p.part, Duration::from_secs(1));
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

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
