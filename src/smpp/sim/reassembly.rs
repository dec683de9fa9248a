//! Putting concatenated messages back together (UDH, SAR TLVs, message_payload) and decoding
//! their text.

use std::collections::HashMap;

use rusmpp::tlvs::TlvValue;

use super::Received;
use crate::sms::encoding;

/// Parts of a concatenated message collected so far.
pub(super) struct Assembly {
    parts: Vec<Option<Vec<u8>>>,
    ids: Vec<String>,
    first: Received,
}

/// Adds one submit_sm to its message; returns the message when it is complete.
pub(super) fn take_part(
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
