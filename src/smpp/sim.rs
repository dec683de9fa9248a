//! The built-in SMSC simulator: a real SMPP 3.4 server on the same codec.
//!
//! It accepts binds (any credentials unless some are set), answers every submit_sm with a
//! unique message id, reassembles concatenated messages (UDH, SAR TLVs, message_payload),
//! decodes their text, reports each message (to stdout as one JSON line, and to in-process
//! subscribers), and sends a delivery receipt per part when one was requested — again, after
//! [`RECEIPT_RETRY_DELAY`], when the ESME answers it with an error status, as a real SMSC does.
//! Tests drive faults through [`SimHandle`]: raw bytes to the ESMEs, error statuses, dropped
//! connections, receipts as data_sm.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use bytes::BytesMut;
use rusmpp::pdus::{BindTransceiverResp, SubmitSmResp};
use rusmpp::tlvs::TlvValue;
use rusmpp::types::COctetString;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::pdu::{self, Frame};
use crate::sms::encoding;

/// How many received messages `SimHandle::received` keeps.
const KEEP_RECEIVED: usize = 10_000;

/// How long before a receipt the ESME refused (non-zero response status) is sent again.
pub const RECEIPT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);
/// How often one receipt is sent again before the simulator gives up on it.
const RECEIPT_TRIES: u32 = 200;
/// Receipts awaiting their response, at most (beyond, new ones are not tracked for re-sending).
const TRACK_RECEIPTS: usize = 100_000;

/// Simulator settings.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// When set, binds must use this system_id (else ESME_RINVSYSID).
    pub system_id: Option<String>,
    /// When set, binds must use this password (else ESME_RINVPASWD).
    pub password: Option<String>,
    /// Print each message as a JSON line on stdout.
    pub print: bool,
}

/// A message as the simulator received it, reassembled and decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    pub source_addr: String,
    pub source_addr_ton: u8,
    pub source_addr_npi: u8,
    pub destination_addr: String,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub data_coding: u8,
    pub esm_class: u8,
    pub registered_delivery: u8,
    pub validity_period: String,
    /// How it came: `single`, `udh`, `sar` or `payload`.
    pub concatenation: &'static str,
    pub parts: usize,
    /// The decoded text, or `None` when it did not decode.
    pub text: Option<String>,
    /// The message ids given to its parts, in part order.
    pub message_ids: Vec<String>,
}

/// Handle to a running simulator.
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<Shared>,
}

struct Shared {
    addr: SocketAddr,
    config: SimConfig,
    next_id: AtomicU64,
    /// The latest messages (at most [`KEEP_RECEIVED`]), for `received()`.
    received: Mutex<std::collections::VecDeque<Received>>,
    events: broadcast::Sender<Received>,
    conns: Mutex<HashMap<u64, mpsc::Sender<BytesMut>>>,
    next_conn: AtomicU64,
    behavior: Mutex<Arc<Behavior>>,
    receipt_seq: AtomicU32,
    generic_nacks: AtomicU64,
    binds: AtomicU64,
    submits: AtomicU64,
    /// Receipts sent and not answered yet: sequence number → (PDU, tries so far).
    receipts_out: Mutex<HashMap<u32, (Pdu, u32)>>,
    receipts_refused: AtomicU64,
    receipts_resent: AtomicU64,
    /// Cancelled by `shutdown`: the accept loop and every connection watch it.
    stop: CancellationToken,
    /// Cancelled once the accept loop has ended and the listener is closed.
    closed: CancellationToken,
    /// The current generation of connections; `drop_connections` cancels it and starts a new one.
    kill_conns: Mutex<CancellationToken>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The latest messages received (at most 10,000; `subscribe` sees every one).
    pub fn received(&self) -> Vec<Received> {
        self.inner
            .received
            .lock()
            .map(|v| v.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    }

    /// Messages received from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Received> {
        self.inner.events.subscribe()
    }

    /// generic_nack PDUs received from ESMEs.
    pub fn generic_nacks_received(&self) -> u64 {
        self.inner.generic_nacks.load(Ordering::Relaxed)
    }

    /// Successful binds since start.
    pub fn binds(&self) -> u64 {
        self.inner.binds.load(Ordering::Relaxed)
    }

    /// submit_sm PDUs received.
    pub fn submits(&self) -> u64 {
        self.inner.submits.load(Ordering::Relaxed)
    }

    /// Receipts the ESMEs answered with a non-zero status (e.g. ESME_RX_T_APPN).
    pub fn receipts_refused(&self) -> u64 {
        self.inner.receipts_refused.load(Ordering::Relaxed)
    }

    /// Receipts sent again after such an answer.
    pub fn receipts_resent(&self) -> u64 {
        self.inner.receipts_resent.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.inner.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// The next message ids are `n`, `n + 1`, …
    pub fn set_next_message_id(&self, n: u64) {
        self.inner.next_id.store(n, Ordering::Relaxed);
    }

    /// Answer every submit_sm with this status from now on (0 = OK).
    pub fn set_submit_status(&self, status: u32) {
        self.update(|b| b.submit_status = status);
    }

    /// Changes how the simulator behaves from now on.
    pub fn update(&self, f: impl FnOnce(&mut Behavior)) {
        if let Ok(mut g) = self.inner.behavior.lock() {
            let mut b = (**g).clone();
            f(&mut b);
            *g = Arc::new(b);
        }
    }

    /// Writes raw bytes to every connected ESME (to send malformed PDUs).
    pub async fn inject_raw(&self, bytes: &[u8]) {
        let conns: Vec<_> = self
            .inner
            .conns
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for c in conns {
            let _ = c.send(BytesMut::from(bytes)).await;
        }
    }

    /// Drops every open connection (the listener stays).
    pub fn drop_connections(&self) {
        if let Ok(mut t) = self.inner.kill_conns.lock() {
            t.cancel();
            *t = CancellationToken::new();
        }
    }

    /// Stops listening and drops every connection, at once: from this call on no connection is
    /// served, even one the kernel completed before the listener closes (each connection
    /// watches the stop token itself, so a token swap cannot let one slip through).
    /// `stopped().await` waits until the listener is closed and its port free.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
        self.drop_connections();
    }

    /// Waits until the listener of a shut-down simulator is closed.
    pub async fn stopped(&self) {
        self.inner.closed.cancelled().await;
    }
}

/// How message ids are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdFormat {
    /// Upper-case hex, `1A2B`.
    #[default]
    Hex,
    /// Decimal, `6699`.
    Decimal,
    /// Upper-case hex padded with zeros to 10 characters, `0000001A2B`.
    PaddedHex,
    /// Decimal padded with zeros to 10 characters.
    PaddedDecimal,
}

impl IdFormat {
    fn write(self, n: u64) -> String {
        match self {
            IdFormat::Hex => format!("{n:X}"),
            IdFormat::Decimal => n.to_string(),
            IdFormat::PaddedHex => format!("{n:010X}"),
            IdFormat::PaddedDecimal => format!("{n:010}"),
        }
    }
}

/// Fault and format settings, changed at run time through [`SimHandle::update`].
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Answer every submit_sm with this status (0 = accept).
    pub submit_status: u32,
    /// Answer this share of submits (percent) with ESME_RTHROTTLED.
    pub throttle_percent: u8,
    /// Accept submits without ever answering (to provoke response timeouts).
    pub ignore_submits: bool,
    /// How submit_sm_resp writes the message id.
    pub id_format: IdFormat,
    /// How the receipt writes the same id.
    pub receipt_id_format: IdFormat,
    /// Send the receipt before the submit_sm_resp.
    pub receipt_before_resp: bool,
    /// Send the receipt on another bind of the same SMSC when there is one.
    pub receipt_on_other_bind: bool,
    /// Receipt stat per destination (default `DELIVRD`).
    pub stat_for: HashMap<String, String>,
    /// Leave the receipted_message_id / message_state TLVs out: only the receipt text.
    pub receipt_text_only: bool,
    /// Send receipts as data_sm (the text in message_payload) instead of deliver_sm.
    pub receipt_as_data_sm: bool,
    /// Send each receipt this long after the submit_sm_resp (0: right after it).
    pub receipt_delay: std::time::Duration,
    /// Answer every submit_sm with this message id (e.g. the same for every part, or empty).
    pub fixed_message_id: Option<String>,
}

impl Shared {
    fn behavior(&self) -> Arc<Behavior> {
        self.behavior.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn next_seq(&self) -> u32 {
        let s = self.receipt_seq.fetch_add(1, Ordering::Relaxed);
        (s % 0x7FFF_FFF0) + 1
    }

    /// Remembers a receipt until the ESME answers it.
    fn track_receipt(&self, seq: u32, pdu: Pdu, tries: u32) {
        if let Ok(mut out) = self.receipts_out.lock()
            && out.len() < TRACK_RECEIPTS
        {
            out.insert(seq, (pdu, tries));
        }
    }

    /// The ESME answered receipt `seq` with `status`: a refused one goes again after a while,
    /// on `conn` (or another connection when that one is gone).
    fn receipt_answered(
        self: &Arc<Self>,
        seq: u32,
        status: u32,
        conn_id: u64,
        conn: mpsc::Sender<BytesMut>,
    ) {
        let Some((pdu, tries)) = self
            .receipts_out
            .lock()
            .ok()
            .and_then(|mut o| o.remove(&seq))
        else {
            return;
        };
        if status == 0 {
            return;
        }
        self.receipts_refused.fetch_add(1, Ordering::Relaxed);
        if tries >= RECEIPT_TRIES {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                _ = tokio::time::sleep(RECEIPT_RETRY_DELAY) => {}
            }
            let tx = if conn.is_closed() {
                match shared.other_conn(conn_id) {
                    Some(tx) => tx,
                    None => return,
                }
            } else {
                conn
            };
            let rseq = shared.next_seq();
            shared.track_receipt(rseq, pdu.clone(), tries + 1);
            shared.receipts_resent.fetch_add(1, Ordering::Relaxed);
            let _ = tx
                .send(pdu::encode(&Command::new(
                    CommandStatus::EsmeRok,
                    rseq,
                    pdu,
                )))
                .await;
        });
    }

    /// Another open connection than `conn_id`, to send a receipt on.
    fn other_conn(&self, conn_id: u64) -> Option<mpsc::Sender<BytesMut>> {
        self.conns
            .lock()
            .ok()?
            .iter()
            .find(|(id, _)| **id != conn_id)
            .map(|(_, tx)| tx.clone())
    }
}

/// Starts a simulator on `listener`.
pub fn start(listener: TcpListener, config: SimConfig) -> std::io::Result<SimHandle> {
    let addr = listener.local_addr()?;
    let (events, _) = broadcast::channel(65536);
    let inner = Arc::new(Shared {
        addr,
        config,
        next_id: AtomicU64::new(1),
        received: Mutex::new(std::collections::VecDeque::new()),
        events,
        conns: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        behavior: Mutex::new(Arc::new(Behavior::default())),
        receipt_seq: AtomicU32::new(1),
        generic_nacks: AtomicU64::new(0),
        binds: AtomicU64::new(0),
        submits: AtomicU64::new(0),
        receipts_out: Mutex::new(HashMap::new()),
        receipts_refused: AtomicU64::new(0),
        receipts_resent: AtomicU64::new(0),
        stop: CancellationToken::new(),
        closed: CancellationToken::new(),
        kill_conns: Mutex::new(CancellationToken::new()),
    });
    let shared = inner.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                // A stop wins over a connection that is ready at the same time.
                biased;
                _ = shared.stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if shared.stop.is_cancelled() {
                            break;
                        }
                        let kill = shared.kill_conns.lock().map(|t| t.clone()).unwrap_or_default();
                        tokio::spawn(serve_conn(shared.clone(), stream, kill));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "smsc-sim: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        shared.closed.cancel();
    });
    Ok(SimHandle { inner })
}

/// Parts of a concatenated message collected so far.
struct Assembly {
    parts: Vec<Option<Vec<u8>>>,
    ids: Vec<String>,
    first: Received,
}

async fn serve_conn(shared: Arc<Shared>, stream: TcpStream, kill: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<BytesMut>(4096);
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut c) = shared.conns.lock() {
        c.insert(conn_id, tx.clone());
    }
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut out = BytesMut::with_capacity(64 * 1024);
        while let Some(first) = rx.recv().await {
            out.unsplit(first);
            while let Ok(more) = rx.try_recv() {
                out.extend_from_slice(&more);
                if out.len() > 256 * 1024 {
                    break;
                }
            }
            if write_half.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    });

    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut bound = false;
    let mut assemblies: HashMap<(String, u16, u8), Assembly> = HashMap::new();
    'conn: loop {
        tokio::select! {
            biased;
            _ = kill.cancelled() => break 'conn,
            _ = shared.stop.cancelled() => break 'conn,
            n = reader.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break 'conn,
                Ok(_) => {}
            },
        }
        let mut out = BytesMut::new();
        loop {
            let frame = match pdu::next_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break 'conn,
            };
            let cmd = match frame {
                Frame::Command(c) => c,
                Frame::Undecodable {
                    command_id,
                    sequence_number,
                } => {
                    if !pdu::is_response(command_id) {
                        pdu::encode_into(&pdu::generic_nack(0x02, sequence_number), &mut out);
                    }
                    continue;
                }
            };
            let s = cmd.sequence_number();
            match cmd.pdu() {
                Some(Pdu::BindTransceiver(_)) | Some(Pdu::BindTransmitter(_)) => {
                    let (system_id, password) = match cmd.pdu() {
                        Some(Pdu::BindTransceiver(b)) => {
                            (b.system_id.as_str(), b.password.as_str())
                        }
                        Some(Pdu::BindTransmitter(b)) => {
                            (b.system_id.as_str(), b.password.as_str())
                        }
                        _ => ("", ""),
                    };
                    let c = &shared.config;
                    let status = if c.system_id.as_deref().is_some_and(|id| id != system_id) {
                        0x0F
                    } else if c.password.as_deref().is_some_and(|p| p != password) {
                        0x0E
                    } else {
                        0
                    };
                    bound = status == 0;
                    if bound {
                        shared.binds.fetch_add(1, Ordering::Relaxed);
                    }
                    let resp = BindTransceiverResp::builder()
                        .system_id(COctetString::from_str_checked("otpgate-sim"))
                        .build();
                    let pdu = if cmd.id() == CommandId::BindTransceiver {
                        Pdu::BindTransceiverResp(resp)
                    } else {
                        Pdu::BindTransmitterResp(
                            rusmpp::pdus::BindTransmitterResp::builder()
                                .system_id(COctetString::from_str_checked("otpgate-sim"))
                                .build(),
                        )
                    };
                    pdu::encode_into(&Command::new(CommandStatus::from(status), s, pdu), &mut out);
                }
                Some(Pdu::SubmitSm(sm)) => {
                    shared.submits.fetch_add(1, Ordering::Relaxed);
                    let b = shared.behavior();
                    let refuse = if !bound {
                        0x04
                    } else if b.submit_status != 0 {
                        b.submit_status
                    } else if b.throttle_percent > 0
                        && rand::random_range(0..100u8) < b.throttle_percent
                    {
                        0x58
                    } else {
                        0
                    };
                    if refuse != 0 {
                        pdu::encode_into(
                            &Command::new(
                                CommandStatus::from(refuse),
                                s,
                                Pdu::SubmitSmResp(SubmitSmResp::default()),
                            ),
                            &mut out,
                        );
                        continue;
                    }
                    if b.ignore_submits {
                        continue;
                    }
                    let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let id = match &b.fixed_message_id {
                        Some(fixed) => fixed.clone(),
                        None => b.id_format.write(n),
                    };
                    let receipt_id = match &b.fixed_message_id {
                        Some(fixed) => fixed.clone(),
                        None => b.receipt_id_format.write(n),
                    };
                    let registered = u8::from(sm.registered_delivery);
                    let from = sm.source_addr.as_str().to_owned();
                    let to = sm.destination_addr.as_str().to_owned();
                    let receipt = (registered & 0x03 != 0).then(|| {
                        let date = sim_date();
                        let stat = b.stat_for.get(&to).map_or("DELIVRD", String::as_str);
                        if b.receipt_as_data_sm {
                            return Pdu::DataSm(pdu::receipt_data_sm(
                                &receipt_id,
                                stat,
                                &from,
                                &to,
                                &date,
                            ));
                        }
                        let mut dsm = pdu::receipt_deliver_sm(
                            &receipt_id,
                            stat,
                            &from,
                            &to,
                            &date,
                            &date,
                            !b.receipt_text_only,
                        );
                        dsm.esm_class = rusmpp::values::EsmClass::from(0x04);
                        Pdu::DeliverSm(dsm)
                    });
                    let resp = SubmitSmResp::builder()
                        .message_id(COctetString::from_str_checked(&id))
                        .build();
                    let resp = Command::new(CommandStatus::EsmeRok, s, Pdu::SubmitSmResp(resp));
                    if let Some(msg) = take_part(&mut assemblies, sm, id.clone()) {
                        publish(&shared, msg);
                    }
                    match receipt {
                        None => pdu::encode_into(&resp, &mut out),
                        Some(rpdu) if !b.receipt_delay.is_zero() => {
                            pdu::encode_into(&resp, &mut out);
                            let (shared, tx, delay) = (shared.clone(), tx.clone(), b.receipt_delay);
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let rseq = shared.next_seq();
                                shared.track_receipt(rseq, rpdu.clone(), 0);
                                let dcmd = Command::new(CommandStatus::EsmeRok, rseq, rpdu);
                                let _ = tx.send(pdu::encode(&dcmd)).await;
                            });
                        }
                        Some(rpdu) => {
                            let rseq = shared.next_seq();
                            shared.track_receipt(rseq, rpdu.clone(), 0);
                            let dcmd = Command::new(CommandStatus::EsmeRok, rseq, rpdu);
                            let other = if b.receipt_on_other_bind {
                                shared.other_conn(conn_id)
                            } else {
                                None
                            };
                            if b.receipt_before_resp {
                                match &other {
                                    Some(o) => {
                                        let _ = o.send(pdu::encode(&dcmd)).await;
                                    }
                                    None => pdu::encode_into(&dcmd, &mut out),
                                }
                                pdu::encode_into(&resp, &mut out);
                            } else {
                                pdu::encode_into(&resp, &mut out);
                                match &other {
                                    Some(o) => {
                                        // After our resp is on the wire.
                                        let _ = tx.send(out.split()).await;
                                        let _ = o.send(pdu::encode(&dcmd)).await;
                                    }
                                    None => pdu::encode_into(&dcmd, &mut out),
                                }
                            }
                        }
                    }
                }
                Some(Pdu::EnquireLink) => {
                    pdu::encode_into(
                        &Command::new(CommandStatus::EsmeRok, s, Pdu::EnquireLinkResp),
                        &mut out,
                    );
                }
                Some(Pdu::Unbind) => {
                    pdu::encode_into(
                        &Command::new(CommandStatus::EsmeRok, s, Pdu::UnbindResp),
                        &mut out,
                    );
                    let _ = tx.send(out.split()).await;
                    break 'conn;
                }
                Some(Pdu::GenericNack) => {
                    shared.generic_nacks.fetch_add(1, Ordering::Relaxed);
                }
                Some(Pdu::DeliverSmResp(_)) | Some(Pdu::DataSmResp(_)) => {
                    shared.receipt_answered(s, u32::from(cmd.status()), conn_id, tx.clone());
                }
                _ => {
                    let id = u32::from(cmd.id());
                    if !pdu::is_response(id) {
                        pdu::encode_into(&pdu::generic_nack(0x03, s), &mut out);
                    }
                }
            }
        }
        if !out.is_empty() && tx.send(out).await.is_err() {
            break;
        }
    }
    if let Ok(mut c) = shared.conns.lock() {
        c.remove(&conn_id);
    }
    drop(tx);
    let _ = writer.await;
}

trait CheckedCOctet {
    fn from_str_checked(s: &str) -> Self;
}

impl<const MIN: usize, const MAX: usize> CheckedCOctet for COctetString<MIN, MAX> {
    fn from_str_checked(s: &str) -> Self {
        <COctetString<MIN, MAX> as std::str::FromStr>::from_str(s)
            .unwrap_or_else(|_| COctetString::empty())
    }
}

fn sim_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        now.year() % 100,
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute()
    )
}

fn publish(shared: &Shared, msg: Received) {
    if shared.config.print
        && let Ok(line) =
            serde_json::to_string(&serde_json::json!({"smsc_sim": "message", "message": &msg}))
    {
        println!("{line}");
    }
    if let Ok(mut r) = shared.received.lock() {
        if r.len() >= KEEP_RECEIVED {
            r.pop_front();
        }
        r.push_back(msg.clone());
    }
    let _ = shared.events.send(msg);
}

/// Adds one submit_sm to its message; returns the message when it is complete.
fn take_part(
    assemblies: &mut HashMap<(String, u16, u8), Assembly>,
    sm: &rusmpp::pdus::SubmitSm,
    id: String,
) -> Option<Received> {
    let esm = u8::from(sm.esm_class);
    let dc = u8::from(sm.data_coding);
    let body = sm.short_message().as_ref();
    let mut sar = (None, None, None);
    let mut payload = None;
    for tlv in sm.tlvs() {
        match tlv.value() {
            Some(TlvValue::SarMsgRefNum(r)) => sar.0 = Some(*r),
            Some(TlvValue::SarTotalSegments(t)) => sar.1 = Some(*t),
            Some(TlvValue::SarSegmentSeqnum(n)) => sar.2 = Some(*n),
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref().to_vec()),
            _ => {}
        }
    }
    let mut base = Received {
        source_addr: sm.source_addr.as_str().to_owned(),
        source_addr_ton: u8::from(sm.source_addr_ton),
        source_addr_npi: u8::from(sm.source_addr_npi),
        destination_addr: sm.destination_addr.as_str().to_owned(),
        dest_addr_ton: u8::from(sm.dest_addr_ton),
        dest_addr_npi: u8::from(sm.dest_addr_npi),
        data_coding: dc,
        esm_class: esm,
        registered_delivery: u8::from(sm.registered_delivery),
        validity_period: String::from_utf8_lossy(sm.validity_period.as_ref())
            .trim_end_matches('\0')
            .to_owned(),
        concatenation: "single",
        parts: 1,
        text: None,
        message_ids: vec![id.clone()],
    };
    // Where this part sits: (reference, total, index, bytes).
    let located: Option<(u16, u8, u8, Vec<u8>)> = if let Some(p) = payload {
        base.concatenation = "payload";
        base.text = encoding::decode(dc, &p).ok();
        return Some(base);
    } else if esm & 0x40 != 0 {
        parse_udh(body).map(|(r, t, i, hdr_len)| (r, t, i, body[hdr_len..].to_vec()))
    } else if let (Some(r), Some(t), Some(i)) = sar {
        Some((r, t, i, body.to_vec()))
    } else {
        None
    };
    let Some((reference, total, index, bytes)) = located else {
        base.text = encoding::decode(dc, body).ok();
        return Some(base);
    };
    base.concatenation = if esm & 0x40 != 0 { "udh" } else { "sar" };
    if total <= 1 {
        base.text = encoding::decode(dc, &bytes).ok();
        return Some(base);
    }
    let key = (base.destination_addr.clone(), reference, total);
    let a = assemblies.entry(key.clone()).or_insert_with(|| Assembly {
        parts: vec![None; total as usize],
        ids: vec![String::new(); total as usize],
        first: base.clone(),
    });
    let i = (index as usize).saturating_sub(1);
    if i < a.parts.len() {
        a.parts[i] = Some(bytes);
        a.ids[i] = id;
    }
    if a.parts.iter().all(Option::is_some) {
        let a = assemblies.remove(&key)?;
        let whole: Vec<u8> = a.parts.into_iter().flatten().flatten().collect();
        let mut msg = a.first;
        msg.parts = total as usize;
        msg.text = encoding::decode(dc, &whole).ok();
        msg.message_ids = a.ids;
        return Some(msg);
    }
    None
}

/// Reads a concatenation IE from a UDH: (reference, total, index, header length).
fn parse_udh(body: &[u8]) -> Option<(u16, u8, u8, usize)> {
    let udhl = *body.first()? as usize;
    let hdr = body.get(1..1 + udhl)?;
    let mut i = 0;
    while i + 2 <= hdr.len() {
        let (iei, len) = (hdr[i], hdr[i + 1] as usize);
        let data = hdr.get(i + 2..i + 2 + len)?;
        match (iei, len) {
            (0x00, 3) => return Some((data[0] as u16, data[1], data[2], 1 + udhl)),
            (0x08, 4) => {
                return Some((
                    u16::from_be_bytes([data[0], data[1]]),
                    data[2],
                    data[3],
                    1 + udhl,
                ));
            }
            _ => {}
        }
        i += 2 + len;
    }
    None
}
