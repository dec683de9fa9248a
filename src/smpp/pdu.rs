//! Framing and the PDUs we build and read, on top of the rusmpp codec.
//!
//! Framing is ours (not rusmpp's `CommandCodec`) so that one undecodable PDU does not end the
//! session: each frame is cut by its `command_length` (bounded), then decoded on its own; a
//! frame that does not decode is reported with its raw header so the session can answer it
//! with `generic_nack` and go on.

use std::str::FromStr;

use bytes::{Buf, BufMut, BytesMut};
use rusmpp::decode::DecodeWithLength;
use rusmpp::encode::Length;
use rusmpp::encode::owned::Encode;
use rusmpp::pdus::{DataSm, DeliverSm, SubmitSm};
use rusmpp::tlvs::{MessageDeliveryRequestTlvValue, MessageSubmissionRequestTlvValue, TlvValue};
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, MessagePayload, MessageState, Npi, RegisteredDelivery, ServiceType, Ton,
};
use rusmpp::{Command, CommandStatus, Pdu};

use crate::config::LongMessages;
use crate::sms::Segments;

/// Header length: command_length, command_id, command_status, sequence_number.
pub const HEADER_LEN: usize = 16;
/// The largest PDU we accept; anything longer is a broken or hostile peer.
pub const MAX_PDU_LEN: usize = 64 * 1024;

/// One frame cut from the byte stream.
#[derive(Debug)]
pub enum Frame {
    /// A PDU that decoded.
    Command(Box<Command>),
    /// A PDU of valid length that did not decode: its raw header, to answer it.
    Undecodable {
        command_id: u32,
        sequence_number: u32,
    },
}

/// The stream cannot be framed any more (length out of bounds): the session must end.
#[derive(Debug, thiserror::Error)]
#[error("invalid command_length {0}")]
pub struct FramingError(pub u32);

/// Cuts the next frame from `buf`, if it holds a whole one.
pub fn next_frame(buf: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if (len as usize) < HEADER_LEN || len as usize > MAX_PDU_LEN {
        return Err(FramingError(len));
    }
    if buf.len() < len as usize {
        buf.reserve(len as usize - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(len as usize);
    let command_id = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let sequence_number = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
    frame.advance(4);
    let body_len = frame.len();
    match Command::decode(&mut frame, body_len) {
        Ok((cmd, _)) => Ok(Some(Frame::Command(Box::new(cmd)))),
        Err(_) => Ok(Some(Frame::Undecodable {
            command_id,
            sequence_number,
        })),
    }
}

/// Appends one encoded PDU (with its length) to `dst`.
pub fn encode_into(cmd: &Command, dst: &mut BytesMut) {
    let len = 4 + cmd.length();
    dst.reserve(len);
    dst.put_u32(len as u32);
    cmd.encode(dst);
}

pub fn encode(cmd: &Command) -> BytesMut {
    let mut b = BytesMut::new();
    encode_into(cmd, &mut b);
    b
}

/// A generic_nack carrying `status` for the PDU with `sequence_number`.
pub fn generic_nack(status: u32, sequence_number: u32) -> Command {
    Command::new(
        CommandStatus::from(status),
        sequence_number,
        Pdu::GenericNack,
    )
}

/// Whether a command id is a response (high bit set).
pub fn is_response(command_id: u32) -> bool {
    command_id & 0x8000_0000 != 0
}

fn coctet<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    // Inputs were validated against the field sizes; fall back to empty rather than panic.
    COctetString::from_str(s).unwrap_or_else(|_| COctetString::empty())
}

/// What goes into every submit_sm of one message.
#[derive(Debug, Clone)]
pub struct SubmitParams<'a> {
    pub source: &'a (Ton, Npi, String),
    /// International digits without `+` (TON 1, NPI 1).
    pub destination: &'a str,
    /// Relative validity period, seconds from now (the code's remaining life).
    pub validity_secs: u64,
    pub mode: LongMessages,
    /// The 8-bit (UDH) or 16-bit (SAR) concatenation reference of this message.
    pub reference: u16,
}

/// The most parts a concatenated message can have (UDH and SAR count parts in one octet).
pub const MAX_PARTS: usize = 255;

/// A message too long to be sent in `udh` or `sar` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{parts} parts: at most {max} can be concatenated", max = MAX_PARTS)]
pub struct TooManyParts {
    pub parts: usize,
}

/// The submit_sm PDUs of a message, in part order; more than [`MAX_PARTS`] parts in `udh` or
/// `sar` mode is an error (their part numbers are one octet).
pub fn submit_sms(seg: &Segments, p: &SubmitParams<'_>) -> Result<Vec<SubmitSm>, TooManyParts> {
    let base = || {
        SubmitSm::builder()
            .service_type(ServiceType::default())
            .source_addr_ton(p.source.0)
            .source_addr_npi(p.source.1)
            .source_addr(coctet(&p.source.2))
            .dest_addr_ton(Ton::International)
            .dest_addr_npi(Npi::Isdn)
            .destination_addr(coctet(p.destination))
            .protocol_id(0)
            .schedule_delivery_time(EmptyOrFullCOctetString::empty())
            .validity_period(relative_validity(p.validity_secs))
            .registered_delivery(RegisteredDelivery::from(0x01))
            .data_coding(DataCoding::from(seg.coding.data_coding()))
            .sm_default_msg_id(0)
    };
    let total = seg.parts.len();
    if total > MAX_PARTS && p.mode != LongMessages::Payload {
        return Err(TooManyParts { parts: total });
    }
    // Within MAX_PARTS: part numbers fit one octet.
    let total_u8 = total.min(MAX_PARTS) as u8;
    let number = |i: usize| (i + 1).min(MAX_PARTS) as u8;
    if total == 1 {
        return Ok(vec![
            base()
                .esm_class(EsmClass::from(0x00))
                .short_message(octets(&seg.parts[0]))
                .build(),
        ]);
    }
    Ok(match p.mode {
        LongMessages::Payload => vec![
            base()
                .esm_class(EsmClass::from(0x00))
                .short_message(OctetString::empty())
                .push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                    MessagePayload::new(AnyOctetString::from_slice(&seg.whole)),
                ))
                .build(),
        ],
        LongMessages::Udh => seg
            .parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                let mut sm = Vec::with_capacity(6 + part.len());
                sm.extend_from_slice(&[0x05, 0x00, 0x03, p.reference as u8, total_u8, number(i)]);
                sm.extend_from_slice(part);
                base()
                    .esm_class(EsmClass::from(0x40))
                    .short_message(octets(&sm))
                    .build()
            })
            .collect(),
        LongMessages::Sar => seg
            .parts
            .iter()
            .enumerate()
            .map(|(i, part)| {
                base()
                    .esm_class(EsmClass::from(0x00))
                    .short_message(octets(part))
                    .push_tlv(MessageSubmissionRequestTlvValue::SarMsgRefNum(p.reference))
                    .push_tlv(MessageSubmissionRequestTlvValue::SarTotalSegments(total_u8))
                    .push_tlv(MessageSubmissionRequestTlvValue::SarSegmentSeqnum(number(
                        i,
                    )))
                    .build()
            })
            .collect(),
    })
}

fn octets(b: &[u8]) -> OctetString<0, 255> {
    OctetString::from_slice(b).unwrap_or_else(|_| OctetString::empty())
}

/// SMPP relative time `YYMMDDhhmmss000R`.
pub fn relative_validity(secs: u64) -> EmptyOrFullCOctetString<17> {
    let secs = secs.max(1);
    let days = (secs / 86400).min(99);
    let h = (secs % 86400) / 3600;
    let m = (secs % 3600) / 60;
    let s = secs % 60;
    let text = format!("0000{days:02}{h:02}{m:02}{s:02}000R");
    EmptyOrFullCOctetString::from_str(&text).unwrap_or_else(|_| EmptyOrFullCOctetString::empty())
}

/// Parses a relative (`…R`) or absolute (`YYMMDDhhmmsstnn±`) validity period into seconds from
/// `now_unix`. `None` when empty or malformed.
pub fn parse_validity(v: &str, now_unix: i64) -> Option<i64> {
    if v.len() != 16 || !v.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| v[r].parse::<i64>().ok();
    let (yy, mo, dd, hh, mi, ss) = (
        num(0..2)?,
        num(2..4)?,
        num(4..6)?,
        num(6..8)?,
        num(8..10)?,
        num(10..12)?,
    );
    match &v[15..16] {
        "R" => Some(((yy * 365 + mo * 30 + dd) * 86400) + hh * 3600 + mi * 60 + ss),
        sign @ ("+" | "-") => {
            let quarter = num(13..15)?;
            let month = time::Month::try_from(mo as u8).ok()?;
            let date = time::Date::from_calendar_date(2000 + yy as i32, month, dd as u8).ok()?;
            let t = time::Time::from_hms(hh as u8, mi as u8, ss as u8).ok()?;
            let local = time::PrimitiveDateTime::new(date, t)
                .assume_utc()
                .unix_timestamp();
            let offset = quarter * 15 * 60;
            let utc = if sign == "+" {
                local - offset
            } else {
                local + offset
            };
            Some(utc - now_unix)
        }
        _ => None,
    }
}

/// A delivery receipt read from a deliver_sm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC's message id as written in the receipt.
    pub message_id: String,
    /// `DELIVRD`, `UNDELIV`, … (from the text, or mapped from the message_state TLV).
    pub stat: String,
    pub err: Option<String>,
}

/// Whether esm_class marks an SMSC delivery receipt (message type bits 5..2 = 0001).
pub fn is_receipt(esm_class: u8) -> bool {
    esm_class & 0x3C == 0x04
}

/// Reads a receipt from TLVs (`receipted_message_id`, `message_state`) or, failing that, from
/// the `id:… stat:… err:…` text of short_message / message_payload.
pub fn parse_receipt(dsm: &DeliverSm) -> Option<Receipt> {
    receipt_of(dsm.tlvs(), dsm.short_message().as_ref())
}

/// The same for a receipt sent as `data_sm` (TLVs only; the text in message_payload).
pub fn parse_data_sm_receipt(dsm: &DataSm) -> Option<Receipt> {
    receipt_of(dsm.tlvs(), &[])
}

fn receipt_of(tlvs: &[rusmpp::tlvs::Tlv], short_message: &[u8]) -> Option<Receipt> {
    let mut tlv_id = None;
    let mut tlv_state = None;
    let mut payload: Option<Vec<u8>> = None;
    for tlv in tlvs {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.as_str().to_owned()),
            Some(TlvValue::MessageState(s)) => tlv_state = Some(*s),
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref().to_vec()),
            _ => {}
        }
    }
    let body = payload.unwrap_or_else(|| short_message.to_vec());
    let text = String::from_utf8_lossy(&body);
    let from_text = parse_receipt_text(&text);
    let message_id = tlv_id
        .filter(|s| !s.is_empty())
        .or_else(|| from_text.as_ref().map(|r| r.message_id.clone()))?;
    let stat = tlv_state
        .map(|s| message_state_name(s).to_owned())
        .or_else(|| from_text.as_ref().map(|r| r.stat.clone()))?;
    Some(Receipt {
        message_id,
        stat,
        err: from_text.and_then(|r| r.err),
    })
}

/// `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:…`
pub fn parse_receipt_text(text: &str) -> Option<Receipt> {
    let field = |name: &str| -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let pos = lower.find(&format!("{name}:"))?;
        let rest = &text[pos + name.len() + 1..];
        Some(rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    let id = field("id")?;
    let stat = field("stat")?.to_ascii_uppercase();
    Some(Receipt {
        message_id: id,
        stat,
        err: field("err"),
    })
}

fn message_state_name(s: MessageState) -> &'static str {
    match u8::from(s) {
        1 => "ENROUTE",
        2 => "DELIVRD",
        3 => "EXPIRED",
        4 => "DELETED",
        5 => "UNDELIV",
        6 => "ACCEPTD",
        7 => "UNKNOWN",
        8 => "REJECTD",
        _ => "UNKNOWN",
    }
}

/// The message_state value of a receipt stat word.
pub fn message_state_of(stat: &str) -> MessageState {
    let v: u8 = match stat {
        "ENROUTE" => 1,
        "DELIVRD" => 2,
        "EXPIRED" => 3,
        "DELETED" => 4,
        "UNDELIV" => 5,
        "ACCEPTD" => 6,
        "REJECTD" => 8,
        _ => 7,
    };
    MessageState::from(v)
}

/// A receipt deliver_sm as an SMSC sends it (used by the simulator).
pub fn receipt_deliver_sm(
    smsc_message_id: &str,
    stat: &str,
    from: &str,
    to: &str,
    submit_date: &str,
    done_date: &str,
    with_tlvs: bool,
) -> DeliverSm {
    let err = if stat == "DELIVRD" { "000" } else { "001" };
    let dlvrd = if stat == "DELIVRD" { "001" } else { "000" };
    let text = format!(
        "id:{smsc_message_id} sub:001 dlvrd:{dlvrd} submit date:{submit_date} done date:{done_date} stat:{stat} err:{err} text:"
    );
    let b = DeliverSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(coctet(to))
        .dest_addr_ton(Ton::Unknown)
        .dest_addr_npi(Npi::Unknown)
        .destination_addr(coctet(from))
        .esm_class(EsmClass::from(0x04))
        .data_coding(DataCoding::from(0))
        .short_message(octets(text.as_bytes()));
    if with_tlvs {
        b.push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(coctet(
            smsc_message_id,
        )))
        .push_tlv(MessageDeliveryRequestTlvValue::MessageState(
            message_state_of(stat),
        ))
        .build()
    } else {
        b.build()
    }
}

/// A receipt sent as data_sm, the text in message_payload (used by the simulator).
pub fn receipt_data_sm(
    smsc_message_id: &str,
    stat: &str,
    from: &str,
    to: &str,
    date: &str,
) -> DataSm {
    let text = format!(
        "id:{smsc_message_id} sub:001 dlvrd:000 submit date:{date} done date:{date} stat:{stat} err:000 text:"
    );
    DataSm::builder()
        .source_addr_ton(Ton::International)
        .source_addr_npi(Npi::Isdn)
        .source_addr(coctet(to))
        .dest_addr_ton(Ton::Unknown)
        .dest_addr_npi(Npi::Unknown)
        .destination_addr(coctet(from))
        .esm_class(EsmClass::from(0x04))
        .data_coding(DataCoding::from(0))
        .tlvs(vec![MessageSubmissionRequestTlvValue::MessagePayload(
            MessagePayload::new(AnyOctetString::from_slice(text.as_bytes())),
        )])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_text_is_parsed() {
        let r = parse_receipt_text(
            "id:0A1B2C sub:001 dlvrd:001 submit date:2611211200 done date:2611211201 stat:DELIVRD err:000 text:hello",
        )
        .expect("receipt");
        assert_eq!(r.message_id, "0A1B2C");
        assert_eq!(r.stat, "DELIVRD");
        assert_eq!(r.err.as_deref(), Some("000"));
        assert!(parse_receipt_text("hello there").is_none());
    }

    #[test]
    fn more_than_255_concatenated_parts_is_an_error() {
        let seg = crate::sms::split(&"a".repeat(153 * 256));
        assert_eq!(seg.parts.len(), 256);
        let source = (Ton::Alphanumeric, Npi::Unknown, "otpgate".to_owned());
        let mut p = SubmitParams {
            source: &source,
            destination: "85366000000",
            validity_secs: 60,
            mode: LongMessages::Udh,
            reference: 1,
        };
        assert_eq!(
            submit_sms(&seg, &p).err(),
            Some(TooManyParts { parts: 256 })
        );
        p.mode = LongMessages::Sar;
        assert!(submit_sms(&seg, &p).is_err());
        p.mode = LongMessages::Payload;
        assert_eq!(submit_sms(&seg, &p).map(|v| v.len()), Ok(1));
        let seg = crate::sms::split(&"a".repeat(153 * 255));
        p.mode = LongMessages::Udh;
        assert_eq!(submit_sms(&seg, &p).map(|v| v.len()), Ok(255));
    }

    #[test]
    fn relative_validity_round_trips() {
        let v = relative_validity(300);
        let s = std::str::from_utf8(v.as_ref())
            .expect("ascii")
            .trim_end_matches('\0')
            .to_owned();
        assert_eq!(s, "000000000500000R");
        assert_eq!(parse_validity(&s, 0), Some(300));
    }

    #[test]
    fn frames_are_cut_and_bad_ones_reported() {
        let mut buf = encode(&Command::new(CommandStatus::EsmeRok, 7, Pdu::EnquireLink));
        // A submit_sm (0x4) whose body is garbage.
        buf.extend_from_slice(&[
            0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff,
        ]);
        match next_frame(&mut buf).expect("frame") {
            Some(Frame::Command(c)) => assert_eq!(c.sequence_number(), 7),
            other => panic!("{other:?}"),
        }
        match next_frame(&mut buf).expect("frame") {
            Some(Frame::Undecodable {
                command_id,
                sequence_number,
            }) => {
                assert_eq!((command_id, sequence_number), (4, 9))
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[0u8, 0, 0, 3, 0, 0, 0, 0][..]);
        assert!(next_frame(&mut bad).is_err());
    }
}
