//! SMPP 3.4, ESME side: our session actor over the rusmpp codec, and the built-in SMSC simulator.
//!
//! - [`pdu`]: framing, the PDUs we build, receipts.
//! - [`session`]: one bind — supervisor (reconnect with backoff, restart after a panic),
//!   connection (bind_transceiver, reader, writer, enquire_link, unbind on shutdown), window
//!   (in-flight messages, timeouts, throttling).
//! - [`binds`]: starts every bind of every SMSC (and the built-in simulators).
//! - [`sim`]: the SMSC simulator (`otpgate smsc-sim`, `simulator = true`).
//!
//! Sessions report to the delivery tracker through an [`EventSink`] (bounded); a receipt
//! carries its [`ReceiptAck`], answered by the tracker once the store kept it.

pub mod addressing;
pub mod binds;
pub mod config;
pub mod pdu;
pub mod session;
pub mod sim;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the sessions report about messages, consumed by the delivery tracker.
#[derive(Debug)]
pub enum DeliveryEvent {
    /// Every part was accepted by an SMSC (`submit_sm_resp` OK).
    Submitted {
        message_id: String,
        smsc: Arc<str>,
        /// The id the SMSC gave each part, in part order (as given: possibly empty, possibly
        /// the same for several parts).
        smsc_message_ids: Vec<String>,
        /// Where the job waits in the durable outbox: acknowledged by the tracker once the
        /// store recorded this (`None` with the memory outbox).
        outbox_entry: Option<String>,
    },
    /// Refused for good (permanent SMPP error), with the status.
    Failed {
        message_id: String,
        smsc: Arc<str>,
        error: String,
        outbox_entry: Option<String>,
    },
    /// Its validity ended before an SMSC accepted it; it was not sent.
    Expired {
        message_id: String,
        outbox_entry: Option<String>,
    },
    /// A delivery receipt arrived; the SMSC waits for [`ReceiptAck::answer`].
    Receipt {
        smsc: Arc<str>,
        smsc_message_id: String,
        stat: String,
        /// The SMSC's `receipt_ids` setting.
        receipt_ids: crate::store::ReceiptIds,
        ack: ReceiptAck,
    },
}

impl DeliveryEvent {
    /// The durable outbox entry a settled message leaves behind (acknowledged once recorded).
    pub fn outbox_entry(&self) -> Option<&str> {
        match self {
            DeliveryEvent::Submitted { outbox_entry, .. }
            | DeliveryEvent::Failed { outbox_entry, .. }
            | DeliveryEvent::Expired { outbox_entry, .. } => outbox_entry.as_deref(),
            DeliveryEvent::Receipt { .. } => None,
        }
    }

    /// What the delivery tracker shards on: events with the same key are applied in order.
    /// A message's submit result by its id; a receipt by the SMSC's id (its message id is not
    /// known before the store matched it).
    pub fn shard_key(&self) -> &str {
        match self {
            DeliveryEvent::Submitted { message_id, .. }
            | DeliveryEvent::Failed { message_id, .. }
            | DeliveryEvent::Expired { message_id, .. } => message_id,
            DeliveryEvent::Receipt {
                smsc_message_id, ..
            } => smsc_message_id,
        }
    }
}

/// The answer a receipt's `deliver_sm` (or `data_sm`) waits for. The SMSC is answered only
/// once the receipt is kept (contract §6 "Receipts are kept before they are acknowledged"):
/// `ESME_ROK` then, [`ESME_RX_T_APPN`] while the store is down, so that it sends it again.
/// Dropped without an answer (a test, a worker that died), the SMSC gets none and sends the
/// receipt again after its own response timeout.
pub struct ReceiptAck {
    writer: Option<tokio::sync::mpsc::Sender<bytes::BytesMut>>,
    sequence_number: u32,
    data_sm: bool,
}

/// "Temporary application error": the SMSC should deliver the PDU again later.
pub const ESME_RX_T_APPN: u32 = 0x0000_0064;

impl ReceiptAck {
    pub(crate) fn new(
        writer: tokio::sync::mpsc::Sender<bytes::BytesMut>,
        sequence_number: u32,
        data_sm: bool,
    ) -> ReceiptAck {
        ReceiptAck {
            writer: Some(writer),
            sequence_number,
            data_sm,
        }
    }

    /// Sends `deliver_sm_resp` (or `data_sm_resp`) with `status` on the connection the receipt
    /// came on; nothing when that connection is gone (the SMSC will send it again). Never waits:
    /// see [`AckBatch::flush`].
    pub fn answer(self, status: u32) {
        let mut batch = AckBatch::default();
        self.answer_into(status, &mut batch);
        batch.flush();
    }

    /// Adds the answer to `batch` (answers for one connection share one write).
    pub fn answer_into(mut self, status: u32, batch: &mut AckBatch) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        // Header and an empty message_id: 17 octets, written directly.
        let id: u32 = if self.data_sm {
            0x8000_0103
        } else {
            0x8000_0005
        };
        let mut frame = [0u8; 17];
        for (i, word) in [17, id, status, self.sequence_number]
            .into_iter()
            .enumerate()
        {
            frame[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
        }
        match batch
            .items
            .iter_mut()
            .find(|(w, _)| w.same_channel(&writer))
        {
            Some((_, bytes)) => bytes.extend_from_slice(&frame),
            None => batch
                .items
                .push((writer, bytes::BytesMut::from(&frame[..]))),
        }
        batch.answers += 1;
    }
}

/// Receipt answers gathered by one delivery worker, written per connection in one go.
#[derive(Default)]
pub struct AckBatch {
    items: Vec<(tokio::sync::mpsc::Sender<bytes::BytesMut>, bytes::BytesMut)>,
    answers: usize,
}

impl AckBatch {
    /// Answers gathered and not flushed yet.
    pub fn len(&self) -> usize {
        self.answers
    }

    pub fn is_empty(&self) -> bool {
        self.answers == 0
    }

    /// Hands the answers to their connections' writers. Never waits: when a writer is full
    /// (the SMSC reads slowly, maybe because its session waits for the delivery tracker), the
    /// answers are queued by a task of their own, so the tracker and a session can never wait
    /// for each other.
    pub fn flush(&mut self) {
        self.answers = 0;
        for (writer, bytes) in self.items.drain(..) {
            match writer.try_send(bytes) {
                Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
                Err(tokio::sync::mpsc::error::TrySendError::Full(bytes)) => {
                    tokio::spawn(async move {
                        let _ = writer.send(bytes).await;
                    });
                }
            }
        }
    }
}

impl std::fmt::Debug for ReceiptAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptAck")
            .field("sequence_number", &self.sequence_number)
            .field("data_sm", &self.data_sm)
            .finish()
    }
}

/// Where sessions put their [`DeliveryEvent`]s: bounded channels, one per shard of the delivery
/// tracker, chosen by [`DeliveryEvent::shard_key`]. A full shard makes the session wait, so it
/// stops reading from the SMSC: a flood slows the SMSC, not the heap.
#[derive(Clone)]
pub struct EventSink {
    shards: Arc<[tokio::sync::mpsc::Sender<DeliveryEvent>]>,
}

impl EventSink {
    pub fn new(shards: Vec<tokio::sync::mpsc::Sender<DeliveryEvent>>) -> EventSink {
        EventSink {
            shards: shards.into(),
        }
    }

    /// One shard with room for `capacity` events, and its receiving end (tests, benches).
    pub fn channel(capacity: usize) -> (EventSink, tokio::sync::mpsc::Receiver<DeliveryEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        (EventSink::new(vec![tx]), rx)
    }

    /// Waits for room in the event's shard; gives the event back when the tracker is gone.
    pub async fn send(&self, ev: DeliveryEvent) -> Result<(), DeliveryEvent> {
        use std::hash::{Hash, Hasher};
        let shard = if self.shards.len() <= 1 {
            0
        } else {
            let mut h = std::hash::DefaultHasher::new();
            ev.shard_key().hash(&mut h);
            (h.finish() % self.shards.len() as u64) as usize
        };
        match self.shards.get(shard) {
            Some(tx) => tx.send(ev).await.map_err(|e| e.0),
            None => Err(ev),
        }
    }
}

/// Live state of one SMSC, shared with `/readyz` and metrics.
#[derive(Debug)]
pub struct SmscStatus {
    pub name: Arc<str>,
    bound: AtomicUsize,
}

impl SmscStatus {
    pub fn new(name: &str) -> Arc<SmscStatus> {
        Arc::new(SmscStatus {
            name: Arc::from(name),
            bound: AtomicUsize::new(0),
        })
    }

    /// Sessions currently bound.
    pub fn bound_sessions(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    pub fn is_bound(&self) -> bool {
        self.bound_sessions() > 0
    }

    pub(crate) fn session_up(&self) {
        let n = self.bound.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("otpgate_smpp_binds_up", "smsc" => self.name.to_string()).set(n as f64);
    }

    pub(crate) fn session_down(&self) {
        let n = self.bound.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!("otpgate_smpp_binds_up", "smsc" => self.name.to_string()).set(n as f64);
    }
}

/// How an SMPP command_status is handled (SMPP 3.4 §5.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Ok,
    /// The SMSC asks us to slow down: ESME_RTHROTTLED, ESME_RMSGQFUL.
    Throttled,
    /// Worth another try later, possibly elsewhere.
    Temporary,
    /// The message itself is refused: fail it.
    Permanent,
}

pub fn classify_status(status: u32) -> StatusClass {
    match status {
        0x0000_0000 => StatusClass::Ok,
        0x0000_0058 | 0x0000_0014 => StatusClass::Throttled,
        // RINVBNDSTS, RALYBND, RSYSERR, RCANCELFAIL, RREPLACEFAIL, RSUBMITFAIL, RX_T_APPN,
        // RDELIVERYFAILURE, RUNKNOWNERR
        0x0000_0004 | 0x0000_0005 | 0x0000_0008 | 0x0000_0011 | 0x0000_0013 | 0x0000_0045
        | 0x0000_0064 | 0x0000_00FE | 0x0000_00FF => StatusClass::Temporary,
        _ => StatusClass::Permanent,
    }
}

/// The SMPP error name of a status, for the message's `error` field.
pub fn status_name(status: u32) -> String {
    let name = match status {
        0x01 => "ESME_RINVMSGLEN",
        0x02 => "ESME_RINVCMDLEN",
        0x03 => "ESME_RINVCMDID",
        0x04 => "ESME_RINVBNDSTS",
        0x05 => "ESME_RALYBND",
        0x06 => "ESME_RINVPRTFLG",
        0x07 => "ESME_RINVREGDLVFLG",
        0x08 => "ESME_RSYSERR",
        0x0A => "ESME_RINVSRCADR",
        0x0B => "ESME_RINVDSTADR",
        0x0C => "ESME_RINVMSGID",
        0x0D => "ESME_RBINDFAIL",
        0x0E => "ESME_RINVPASWD",
        0x0F => "ESME_RINVSYSID",
        0x14 => "ESME_RMSGQFUL",
        0x15 => "ESME_RINVSERTYP",
        0x45 => "ESME_RSUBMITFAIL",
        0x48 => "ESME_RINVSRCTON",
        0x49 => "ESME_RINVSRCNPI",
        0x50 => "ESME_RINVDSTTON",
        0x51 => "ESME_RINVDSTNPI",
        0x58 => "ESME_RTHROTTLED",
        0x61 => "ESME_RINVSCHED",
        0x62 => "ESME_RINVEXPIRY",
        0x63 => "ESME_RINVDFTMSGID",
        0x64 => "ESME_RX_T_APPN",
        0x65 => "ESME_RX_P_APPN",
        0x66 => "ESME_RX_R_APPN",
        0xC0 => "ESME_RINVOPTPARSTREAM",
        0xC1 => "ESME_ROPTPARNOTALLWD",
        0xC2 => "ESME_RINVPARLEN",
        0xC3 => "ESME_RMISSINGOPTPARAM",
        0xC4 => "ESME_RINVOPTPARAMVAL",
        0xFE => "ESME_RDELIVERYFAILURE",
        0xFF => "ESME_RUNKNOWNERR",
        _ => return format!("SMPP status {status:#010x}"),
    };
    format!("{name} ({status:#010x})")
}
