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
use rusmpp::types::COctetString;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::pdu::{self, Frame};

mod behavior;
mod reassembly;
mod receipts;

pub use behavior::{Behavior, IdFormat};
use reassembly::{Assembly, take_part};

/// How many received messages `SimHandle::received` keeps.
const KEEP_RECEIVED: usize = 10_000;

pub use receipts::RECEIPT_RETRY_DELAY;

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
    receipts_out: Mutex<HashMap<u32, (BytesMut, u32)>>,
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

impl Shared {
    fn behavior(&self) -> Arc<Behavior> {
        self.behavior.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn next_seq(&self) -> u32 {
        let s = self.receipt_seq.fetch_add(1, Ordering::Relaxed);
        (s % 0x7FFF_FFF0) + 1
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

async fn serve_conn(shared: Arc<Shared>, stream: TcpStream, kill: CancellationToken) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<BytesMut>(4096);
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut c) = shared.conns.lock() {
        c.insert(conn_id, tx.clone());
    }
    // Ends with the connection even while tasks that send delayed or repeated receipts still
    // hold a sender: nothing is written on a connection after it ended.
    let done = CancellationToken::new();
    let writer_done = done.clone();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let mut out = BytesMut::with_capacity(64 * 1024);
        loop {
            let first = tokio::select! {
                biased;
                _ = writer_done.cancelled() => break,
                f = rx.recv() => match f {
                    Some(f) => f,
                    None => break,
                },
            };
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
        // What the connection queued last (an unbind_resp) still goes out.
        out.clear();
        while let Ok(more) = rx.try_recv() {
            out.extend_from_slice(&more);
        }
        if !out.is_empty() {
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                write_half.write_all(&out),
            )
            .await;
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
        // A stop that came while we read: what was read is not served.
        if kill.is_cancelled() || shared.stop.is_cancelled() {
            break 'conn;
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
                                let frame =
                                    pdu::encode(&Command::new(CommandStatus::EsmeRok, rseq, rpdu));
                                shared.track_receipt(rseq, &frame, 0);
                                let _ = tx.send(frame).await;
                            });
                        }
                        Some(rpdu) => {
                            let rseq = shared.next_seq();
                            let frame =
                                pdu::encode(&Command::new(CommandStatus::EsmeRok, rseq, rpdu));
                            shared.track_receipt(rseq, &frame, 0);
                            let other = if b.receipt_on_other_bind {
                                shared.other_conn(conn_id)
                            } else {
                                None
                            };
                            if b.receipt_before_resp {
                                match &other {
                                    Some(o) => {
                                        let _ = o.send(frame).await;
                                    }
                                    None => out.extend_from_slice(&frame),
                                }
                                pdu::encode_into(&resp, &mut out);
                            } else {
                                pdu::encode_into(&resp, &mut out);
                                match &other {
                                    Some(o) => {
                                        // After our resp is on the wire.
                                        let _ = tx.send(out.split()).await;
                                        let _ = o.send(frame).await;
                                    }
                                    None => out.extend_from_slice(&frame),
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
    done.cancel();
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
