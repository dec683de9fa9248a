//! Receipts the ESME refused: sent again after a while, as a real SMSC does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::Shared;

/// How long before a receipt the ESME refused (non-zero response status) is sent again.
pub const RECEIPT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(300);
/// How often one receipt is sent again before the simulator gives up on it.
const RECEIPT_TRIES: u32 = 200;
/// Receipts awaiting their response, at most (beyond, new ones are not tracked for re-sending).
const TRACK_RECEIPTS: usize = 100_000;

impl Shared {
    /// Remembers a receipt (its encoded frame) until the ESME answers it.
    pub(super) fn track_receipt(&self, seq: u32, frame: &[u8], tries: u32) {
        if let Ok(mut out) = self.receipts_out.lock()
            && out.len() < TRACK_RECEIPTS
        {
            out.insert(seq, (BytesMut::from(frame), tries));
        }
    }

    /// The ESME answered receipt `seq` with `status`: a refused one goes again after a while,
    /// on `conn` (or another connection when that one is gone).
    pub(super) fn receipt_answered(
        self: &Arc<Self>,
        seq: u32,
        status: u32,
        conn_id: u64,
        conn: mpsc::Sender<BytesMut>,
    ) {
        let Some((mut frame, tries)) = self
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
            // The same PDU under a new sequence number (header octets 12..16).
            frame[12..16].copy_from_slice(&rseq.to_be_bytes());
            shared.track_receipt(rseq, &frame, tries + 1);
            shared.receipts_resent.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(frame).await;
        });
    }
}
