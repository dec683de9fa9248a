//! How the simulator behaves: id formats and the faults tests turn on.

use std::collections::HashMap;

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
    pub(super) fn write(self, n: u64) -> String {
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
