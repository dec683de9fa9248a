//! One connection to the SMSC: bind_transceiver, the session's read loop, the writer task,
//! enquire_link, unbind.

use std::time::Duration;

use bytes::BytesMut;
use rusmpp::pdus::{BindTransceiver, DataSmResp, DeliverSmResp};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::window::{Settle, Window};
use super::{BindContext, Error, Sequence, lossy, panic_requested};
use crate::outbox::Consumer;
use crate::smpp::pdu::{self, Frame};
use crate::smpp::{DeliveryEvent, ReceiptAck, status_name};

/// A bound connection, handed from [`connect_and_bind`] to the session.
pub(super) struct Connection {
    reader: OwnedReadHalf,
    buf: BytesMut,
    pub(super) writer: mpsc::Sender<BytesMut>,
    /// Ends the writer task (and so the socket) when the connection is dropped, even when the
    /// peer stopped reading and a write is stuck.
    writer_stop: DropGuard,
    pub(super) seq_next: u32,
}

pub(super) async fn connect_and_bind(ctx: &BindContext) -> Result<Connection, Error> {
    let timeout = ctx.config.response_timeout;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&ctx.address))
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    let (mut reader, write_half) = stream.into_split();
    let stop = CancellationToken::new();
    let writer = spawn_writer(write_half, stop.clone(), ctx.config.response_timeout);
    let writer_stop = stop.drop_guard();

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
                        writer_stop,
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

/// Writes whatever frames are queued, batching those already waiting into one write, until
/// `stop` (the connection is dropped): then what was queued last gets 200 ms, and the write half
/// goes — a peer that stopped reading cannot keep this task, or the socket, alive. A write that
/// does not complete within `stall_after` means the peer stopped reading: the writer ends, and
/// the session's next write finds it closed (however many frames the queue could still hold:
/// the queue counts frames, not bytes, and a frame can be a whole batch of answers).
fn spawn_writer(
    mut half: tokio::net::tcp::OwnedWriteHalf,
    stop: CancellationToken,
    stall_after: Duration,
) -> mpsc::Sender<BytesMut> {
    let (tx, mut rx) = mpsc::channel::<BytesMut>(4096);
    tokio::spawn(async move {
        let linger = Duration::from_millis(200);
        let mut out = BytesMut::with_capacity(64 * 1024);
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
            };
            out.unsplit(first);
            while out.len() < 256 * 1024 {
                match rx.try_recv() {
                    Ok(more) => out.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            let written = tokio::select! {
                biased;
                _ = stop.cancelled() => false,
                r = tokio::time::timeout(stall_after, half.write_all(&out)) => match r {
                    Ok(r) => r.is_ok(),
                    Err(_) => {
                        tracing::warn!("SMSC stopped reading: a write waited {stall_after:?}");
                        false
                    }
                },
            };
            if !written {
                return;
            }
            out.clear();
        }
        while let Ok(more) = rx.try_recv() {
            out.extend_from_slice(&more);
        }
        if !out.is_empty() {
            let _ = tokio::time::timeout(linger, half.write_all(&out)).await;
        }
        let _ = tokio::time::timeout(linger, half.shutdown()).await;
    });
    tx
}

/// One bound session: reads and answers what the SMSC sends, feeds the window from the outbox.
pub(super) struct Session<'a> {
    ctx: &'a BindContext,
    consumer: Consumer,
    seq: Sequence,
    window: Window<'a>,
    /// The connection's writer, for receipts answered later by the delivery tracker.
    writer: mpsc::Sender<BytesMut>,
    enquire_pending: Option<(u32, Instant)>,
    last_heard: Instant,
    /// The SMSC sent unbind.
    closed: bool,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        ctx: &'a BindContext,
        source: &'a (Ton, Npi, String),
        consumer: Consumer,
        conn: &Connection,
    ) -> Session<'a> {
        Session {
            ctx,
            consumer,
            seq: Sequence(conn.seq_next),
            window: Window::new(ctx, source),
            writer: conn.writer.clone(),
            enquire_pending: None,
            last_heard: Instant::now(),
            closed: false,
        }
    }

    /// Runs until unbound after shutdown (`Ok`) or the connection is lost (`Err`); messages
    /// not yet accepted go back to the outbox. The connection (and its writer task) ends here.
    pub(super) async fn run(
        &mut self,
        conn: Connection,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<(), Error> {
        let Connection {
            mut reader,
            mut buf,
            writer,
            writer_stop,
            ..
        } = conn;
        let result = self
            .run_inner(&mut reader, &mut buf, &writer, drain_deadline)
            .await;
        drop(writer_stop);
        // Receipts read last still reach the tracker (their answers find no connection: the
        // SMSC sends them again). Settled jobs are handed over before their events go out: the
        // tracker acknowledges their entries once it recorded them.
        self.flush_settled();
        self.emit().await;
        self.give_back();
        self.consumer.close();
        result
    }

    /// Settles what the window decided, and gives every message still in flight back to the
    /// outbox (for another SMSC of the route first).
    fn give_back(&mut self) {
        self.flush_settled();
        let now_ms = self.ctx.clock.now_ms();
        for mut job in self.window.drain() {
            job.not_before_ms = now_ms;
            job.avoid = self
                .ctx
                .routing
                .avoid_after_failure(&job, &self.ctx.status.name);
            self.consumer.release(job);
        }
    }

    fn flush_settled(&mut self) {
        for (job, how) in std::mem::take(&mut self.window.settle) {
            match how {
                Settle::Handed => self.consumer.handed(&job),
                Settle::Release => self.consumer.release(job),
            }
        }
    }

    /// Hands the window's events to the delivery tracker, waiting for room: while it waits the
    /// session reads nothing, so the SMSC slows down; the deadlines of submits on the wire move
    /// by the time spent (their responses may be among what was not read).
    async fn emit(&mut self) {
        if self.window.events.is_empty() {
            return;
        }
        let started = Instant::now();
        // Drained in place: the vector keeps its capacity for the next round.
        let mut events = std::mem::take(&mut self.window.events);
        for ev in events.drain(..) {
            if self.ctx.events.send(ev).await.is_err() {
                tracing::warn!(smsc = %self.ctx.status.name, "delivery tracker gone; event dropped");
            }
        }
        self.window.events = events;
        let waited = started.elapsed();
        if waited >= Duration::from_millis(20) {
            self.window.postpone(waited);
            if let Some((_, sent)) = &mut self.enquire_pending {
                *sent += waited;
            }
        }
    }

    /// Queues bytes for the writer; a writer that cannot take them within the response timeout
    /// means the peer stopped reading.
    async fn write(&self, writer: &mpsc::Sender<BytesMut>, bytes: BytesMut) -> Result<(), Error> {
        // Room now (the usual case): no timer needed.
        let bytes = match writer.try_send(bytes) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
            Err(mpsc::error::TrySendError::Full(bytes)) => bytes,
        };
        match tokio::time::timeout(self.ctx.config.response_timeout, writer.send(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::WriteStalled),
        }
    }

    /// Whether the drain after shutdown is over (no new work may be taken or submitted).
    fn drain_over(&self, drain_deadline: &Option<Instant>) -> bool {
        drain_deadline.is_some_and(|d| Instant::now() >= d)
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
        // Whether new work is taken from the outbox: until shutdown, and while draining an
        // outbox whose queue dies with the process (memory). From Redis nothing new is taken
        // once shutdown began: the queue stays there for the next instance.
        let mut taking = true;
        loop {
            // Stop first: past the drain deadline nothing more is submitted.
            let draining = self.ctx.shutdown.is_cancelled();
            if draining {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.ctx.shutdown_grace);
                if taking && !self.ctx.outbox.drains_at_shutdown() {
                    // What the consumer buffered goes back now; the window is finished.
                    self.consumer.close();
                    taking = false;
                }
                let idle = self.window.is_empty()
                    && (!taking || self.ctx.outbox.is_empty_for(&self.ctx.routes).await);
                if idle || Instant::now() >= deadline {
                    if !out.is_empty() {
                        self.write(writer, out.split()).await?;
                    }
                    return self.unbind(reader, buf, writer).await;
                }
            }
            // Put ready parts on the wire while the window and the rate allow.
            self.window.fill(&mut self.seq, &mut out);
            if !out.is_empty() {
                self.write(writer, out.split()).await?;
            }
            self.flush_settled();
            self.emit().await;
            if self.window.rebind {
                return Err(Error::NotBound);
            }

            let room = self.window.has_room();
            // Wake exactly when a throttling pause or the rate limiter's wait ends.
            let resume = self.window.resume_at();
            let wake_to_unbind = drain_deadline.unwrap_or_else(Instant::now);

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
                            self.write(writer, out.split()).await?;
                            return Err(Error::Closed);
                        }
                    }
                }
                job = self.consumer.next(), if room && taking => {
                    // Taken while the stop came: it goes back rather than out.
                    if self.drain_over(drain_deadline) {
                        self.consumer.release(job);
                    } else {
                        self.window.admit(job);
                    }
                }
                _ = sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {
                    self.window.resume(Instant::now(), true);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if panic_requested(&self.ctx.address) {
                        panic!("test hook: the session to {} panics", self.ctx.address);
                    }
                    self.window.resume(now, false);
                    self.window.expire_pending(now);
                    if let Some((_, sent)) = self.enquire_pending
                        && now.duration_since(sent) > timeout
                    {
                        return Err(Error::Timeout(timeout));
                    }
                    if self.enquire_pending.is_none()
                        && now.duration_since(self.last_heard) >= enquire_every
                    {
                        let seq = self.seq.next();
                        self.enquire_pending = Some((seq, now));
                        pdu::encode_into(
                            &Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLink),
                            &mut out,
                        );
                    }
                }
                _ = self.ctx.shutdown.cancelled(), if !draining => {}
                _ = sleep_until(wake_to_unbind), if drain_deadline.is_some() => {}
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
                    self.window.on_unreadable_response(sequence_number);
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
                self.window.on_submit_resp(seq, status, id);
                None
            }
            CommandId::GenericNack => {
                self.window.on_generic_nack(seq, status);
                None
            }
            CommandId::DeliverSm => {
                if let Some(Pdu::DeliverSm(dsm)) = cmd.pdu()
                    && pdu::is_receipt(u8::from(dsm.esm_class))
                {
                    match pdu::parse_receipt(dsm) {
                        // Answered by the delivery tracker once the receipt is kept.
                        Some(r) => return self.receipt(r, seq, false),
                        None => {
                            tracing::warn!(smsc = %self.ctx.status.name, "unreadable delivery receipt")
                        }
                    }
                }
                // Mobile-originated messages (and receipts we cannot read, which would only
                // come again) are acknowledged and ignored.
                Some(Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::DeliverSmResp(DeliverSmResp::default()),
                ))
            }
            CommandId::DataSm => {
                if let Some(Pdu::DataSm(dsm)) = cmd.pdu()
                    && pdu::is_receipt(u8::from(dsm.esm_class))
                {
                    match pdu::parse_data_sm_receipt(dsm) {
                        Some(r) => return self.receipt(r, seq, true),
                        None => {
                            tracing::warn!(smsc = %self.ctx.status.name, "unreadable delivery receipt (data_sm)")
                        }
                    }
                }
                Some(Command::new(
                    CommandStatus::EsmeRok,
                    seq,
                    Pdu::DataSmResp(DataSmResp::default()),
                ))
            }
            // SMPP 3.4 defines no response to alert_notification.
            CommandId::AlertNotification => None,
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
                    // A request we do not handle (query_sm, replace_sm, …).
                    Some(pdu::generic_nack(0x0000_0003, seq))
                }
            }
        }
    }

    /// Queues a receipt for the delivery tracker, which answers it once it is kept.
    fn receipt(&mut self, r: pdu::Receipt, seq: u32, data_sm: bool) -> Option<Command> {
        self.window.events.push(DeliveryEvent::Receipt {
            smsc: self.ctx.status.name.clone(),
            smsc_message_id: r.message_id,
            stat: r.stat,
            receipt_ids: self.ctx.config.receipt_ids,
            ack: ReceiptAck::new(self.writer.clone(), seq, data_sm),
        });
        None
    }

    /// Sends unbind and waits briefly for unbind_resp.
    async fn unbind(
        &mut self,
        reader: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        writer: &mpsc::Sender<BytesMut>,
    ) -> Result<(), Error> {
        let seq = self.seq.next();
        let deadline =
            Instant::now() + self.ctx.config.response_timeout.min(Duration::from_secs(2));
        let unbind = pdu::encode(&Command::new(CommandStatus::EsmeRok, seq, Pdu::Unbind));
        if !matches!(
            tokio::time::timeout_at(deadline, writer.send(unbind)).await,
            Ok(Ok(()))
        ) {
            return Ok(());
        }
        loop {
            while let Ok(Some(frame)) = pdu::next_frame(buf) {
                if let Frame::Command(cmd) = &frame
                    && cmd.id() == CommandId::UnbindResp
                {
                    return Ok(());
                }
                if let Some(reply) = self.on_frame(frame) {
                    let _ =
                        tokio::time::timeout_at(deadline, writer.send(pdu::encode(&reply))).await;
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

impl Drop for Session<'_> {
    /// A session that did not end through [`Session::run`] (its task panicked) still gives its
    /// messages back: only messages in flight may go twice, none is lost.
    fn drop(&mut self) {
        self.give_back();
    }
}
