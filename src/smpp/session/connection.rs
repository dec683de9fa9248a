//! One connection to the SMSC: bind_transceiver, the session's read loop, the writer task,
//! enquire_link, unbind.

use std::time::Duration;

use bytes::BytesMut;
use rusmpp::pdus::{BindTransceiver, DeliverSmResp};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::window::{Settle, Window};
use super::{BindContext, Error, Sequence, lossy};
use crate::clock::system_now_ms;
use crate::outbox::Consumer;
use crate::smpp::pdu::{self, Frame};
use crate::smpp::{DeliveryEvent, status_name};

/// A bound connection, handed from [`connect_and_bind`] to the session.
pub(super) struct Connection {
    pub(super) reader: OwnedReadHalf,
    pub(super) buf: BytesMut,
    pub(super) writer: mpsc::Sender<BytesMut>,
    pub(super) seq_next: u32,
}

pub(super) async fn connect_and_bind(ctx: &BindContext) -> Result<Connection, Error> {
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

/// One bound session: reads and answers what the SMSC sends, feeds the window from the outbox.
pub(super) struct Session<'a> {
    ctx: &'a BindContext,
    consumer: Consumer,
    seq: Sequence,
    window: Window<'a>,
    enquire_pending: Option<(u32, Instant)>,
    last_heard: Instant,
    /// The SMSC sent unbind.
    closed: bool,
}

impl<'a> Session<'a> {
    pub(super) fn new(
        ctx: &'a BindContext,
        source: &'a (Ton, Npi, String),
        seq_next: u32,
        consumer: Consumer,
    ) -> Session<'a> {
        Session {
            ctx,
            consumer,
            seq: Sequence(seq_next),
            window: Window::new(ctx, source),
            enquire_pending: None,
            last_heard: Instant::now(),
            closed: false,
        }
    }

    /// Runs until unbound after shutdown (`Ok`) or the connection is lost (`Err`); messages
    /// not yet accepted go back to the outbox.
    pub(super) async fn run(
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
        for mut job in self.window.drain() {
            job.not_before_ms = now_ms;
            job.avoid = Some(self.ctx.status.name.to_string());
            self.consumer.release(job);
        }
        self.consumer.close();
        result
    }

    fn flush_settled(&mut self) {
        for (job, how) in std::mem::take(&mut self.window.settle) {
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
            self.window.fill(&mut self.seq, &mut out);
            if !out.is_empty() {
                writer.send(out.split()).await.map_err(|_| Error::Closed)?;
            }
            self.flush_settled();

            let draining = self.ctx.shutdown.is_cancelled();
            if draining {
                let deadline =
                    *drain_deadline.get_or_insert_with(|| Instant::now() + self.ctx.shutdown_grace);
                let idle =
                    self.window.is_empty() && self.ctx.outbox.is_empty_for(&self.ctx.routes).await;
                if idle || Instant::now() >= deadline {
                    return self.unbind(reader, buf, writer).await;
                }
            }
            let room = self.window.has_room();
            // Wake exactly when a throttling pause or the rate limiter's wait ends.
            let resume = self.window.resume_at();

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
                    self.window.admit(job);
                }
                _ = sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => {
                    self.window.resume(Instant::now(), true);
                }
                _ = tick.tick() => {
                    let now = Instant::now();
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

    /// Sends unbind and waits briefly for unbind_resp.
    async fn unbind(
        &mut self,
        reader: &mut OwnedReadHalf,
        buf: &mut BytesMut,
        writer: &mpsc::Sender<BytesMut>,
    ) -> Result<(), Error> {
        let seq = self.seq.next();
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
