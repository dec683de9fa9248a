//! Text → SMPP short_message octets and back.
//!
//! GSM 03.38 (default alphabet and extension table) goes unpacked, one septet per octet, as
//! `data_coding = 0`; the SMSC packs it. Anything else goes as UTF-16BE (`data_coding = 8`,
//! called UCS-2 by SMPP), with surrogate pairs for characters outside the BMP, which phones
//! display. The GSM table is rusmpp's; the UCS-2 side is written here because rusmpp's encoder
//! refuses characters outside the BMP (emoji), and rusmpp has no decoders at all.
//!
//! Parts: a single SMS holds 160 GSM characters (septets) or 70 UTF-16 units; a part of a
//! concatenated SMS 153 or 67 (6 octets of UDH). A part never ends inside an escape sequence
//! or a surrogate pair.

use std::collections::HashMap;
use std::sync::OnceLock;

use rusmpp::extra::encoding::gsm7bit::Gsm7BitUnpacked;

/// The GSM escape to the extension table.
const ESC: u8 = 0x1B;

/// SMPP data_coding of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Coding {
    /// GSM 03.38, unpacked septets; `data_coding = 0`.
    #[serde(rename = "gsm7")]
    Gsm7,
    /// UTF-16BE; `data_coding = 8`.
    #[serde(rename = "ucs2")]
    Ucs2,
}

impl Coding {
    pub fn data_coding(self) -> u8 {
        match self {
            Coding::Gsm7 => 0x00,
            Coding::Ucs2 => 0x08,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gsm7 => "gsm7",
            Coding::Ucs2 => "ucs2",
        }
    }

    /// Characters (septets or UTF-16 units) in a single, unsplit SMS.
    pub fn single_capacity(self) -> usize {
        match self {
            Coding::Gsm7 => 160,
            Coding::Ucs2 => 70,
        }
    }

    /// Characters in one part of a concatenated SMS (6-octet UDH with an 8-bit reference).
    pub fn part_capacity(self) -> usize {
        match self {
            Coding::Gsm7 => 153,
            Coding::Ucs2 => 67,
        }
    }
}

/// A text encoded and split into the parts it would take as concatenated SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    pub coding: Coding,
    /// The whole text encoded (what `message_payload` carries).
    pub whole: Vec<u8>,
    /// The text in parts (one part when it fits a single SMS), without UDH.
    pub parts: Vec<Vec<u8>>,
}

/// Encodes `text`, GSM 03.38 when every character has a GSM code, else UCS-2, and splits it.
pub fn split(text: &str) -> Segments {
    match Gsm7BitUnpacked::new().encode_to_vec(text) {
        Ok(septets) => {
            let parts = split_units(&septets, 1, Coding::Gsm7, |s, i| s[i] == ESC);
            Segments {
                coding: Coding::Gsm7,
                whole: septets,
                parts,
            }
        }
        Err(_) => {
            let mut bytes = Vec::with_capacity(text.len() * 2);
            for unit in text.encode_utf16() {
                bytes.extend_from_slice(&unit.to_be_bytes());
            }
            // One unit is two octets; a part must not end on a high surrogate.
            let parts = split_units(&bytes, 2, Coding::Ucs2, |b, i| {
                (0xD8..=0xDB).contains(&b[i * 2])
            });
            Segments {
                coding: Coding::Ucs2,
                whole: bytes,
                parts,
            }
        }
    }
}

/// Splits `bytes` (made of `unit`-octet units) into parts of at most `coding`'s capacity,
/// moving the cut one unit back when `binds_next(bytes, last_unit_index)` says the last unit
/// of a part is the first half of a pair.
fn split_units(
    bytes: &[u8],
    unit: usize,
    coding: Coding,
    binds_next: impl Fn(&[u8], usize) -> bool,
) -> Vec<Vec<u8>> {
    let units = bytes.len() / unit;
    if units <= coding.single_capacity() {
        return vec![bytes.to_vec()];
    }
    let cap = coding.part_capacity();
    let mut parts = Vec::with_capacity(units / cap + 1);
    let mut start = 0;
    while start < units {
        let mut end = (start + cap).min(units);
        if end < units && binds_next(bytes, end - 1) {
            end -= 1;
        }
        parts.push(bytes[start * unit..end * unit].to_vec());
        start = end;
    }
    parts
}

/// Why received octets could not be turned back into text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("octet {0:#04x} is not a GSM 03.38 character")]
    Gsm(u8),
    #[error("odd number of octets in UCS-2 text")]
    OddLength,
    #[error("unpaired UTF-16 surrogate")]
    Surrogate,
    #[error("data_coding {0:#04x} is not supported")]
    Unsupported(u8),
}

/// Decodes a whole reassembled text by its `data_coding` (0/1: GSM unpacked, 3: Latin-1,
/// 8: UTF-16BE).
pub fn decode(data_coding: u8, bytes: &[u8]) -> Result<String, DecodeError> {
    match data_coding {
        0x00 | 0x01 => decode_gsm(bytes),
        0x03 => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
        0x08 => {
            if !bytes.len().is_multiple_of(2) {
                return Err(DecodeError::OddLength);
            }
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| DecodeError::Surrogate)
        }
        other => Err(DecodeError::Unsupported(other)),
    }
}

/// Reverse tables of the GSM alphabet, built once from rusmpp's encoder so the two can never
/// disagree: `[basic, extension]`, octet → char.
fn gsm_reverse() -> &'static [HashMap<u8, char>; 2] {
    static TABLES: OnceLock<[HashMap<u8, char>; 2]> = OnceLock::new();
    TABLES.get_or_init(|| {
        let enc = Gsm7BitUnpacked::new();
        let mut basic = HashMap::new();
        let mut ext = HashMap::new();
        let mut buf = [0u8; 4];
        for cp in 0u32..0x2200 {
            let Some(ch) = char::from_u32(cp) else {
                continue;
            };
            if let Ok(v) = enc.encode_to_vec(ch.encode_utf8(&mut buf)) {
                match v.as_slice() {
                    [b] => {
                        basic.entry(*b).or_insert(ch);
                    }
                    [ESC, b] => {
                        ext.entry(*b).or_insert(ch);
                    }
                    _ => {}
                }
            }
        }
        // U+20AC (euro) is in the range above; nothing of the GSM table lies beyond U+2200.
        [basic, ext]
    })
}

fn decode_gsm(bytes: &[u8]) -> Result<String, DecodeError> {
    let [basic, ext] = gsm_reverse();
    let mut out = String::with_capacity(bytes.len());
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        if b == ESC {
            let Some(&n) = it.next() else {
                return Err(DecodeError::Gsm(ESC));
            };
            out.push(*ext.get(&n).ok_or(DecodeError::Gsm(n))?);
        } else {
            out.push(*basic.get(&b).ok_or(DecodeError::Gsm(b))?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm_text_uses_data_coding_0_and_escapes_extension_characters() {
        let s = split("Price: 5€ {ok}");
        assert_eq!(s.coding, Coding::Gsm7);
        assert_eq!(s.parts.len(), 1);
        assert_eq!(s.whole.iter().filter(|&&b| b == ESC).count(), 3);
        assert_eq!(decode(0, &s.whole).unwrap(), "Price: 5€ {ok}");
    }

    #[test]
    fn non_gsm_text_is_utf16_with_surrogate_pairs() {
        let s = split("驗證碼 😀");
        assert_eq!(s.coding, Coding::Ucs2);
        assert_eq!(s.whole.len(), 2 * 6);
        assert_eq!(decode(8, &s.whole).unwrap(), "驗證碼 😀");
    }

    #[test]
    fn single_part_limits_are_160_and_70() {
        assert_eq!(split(&"a".repeat(160)).parts.len(), 1);
        assert_eq!(split(&"a".repeat(161)).parts.len(), 2);
        assert_eq!(split(&"驗".repeat(70)).parts.len(), 1);
        assert_eq!(split(&"驗".repeat(71)).parts.len(), 2);
    }

    #[test]
    fn parts_never_split_an_escape_or_a_surrogate_pair() {
        let text = format!("{}€tail{}", "a".repeat(152), "b".repeat(20));
        let s = split(&text);
        assert_eq!(s.parts[0].len(), 152, "escape moved to the next part");
        assert_eq!(s.parts[1][..2], [ESC, 0x65]);

        let text = format!("{}😀{}", "驗".repeat(66), "x".repeat(10));
        let s = split(&text);
        assert_eq!(
            s.parts[0].len(),
            66 * 2,
            "surrogate pair moved to the next part"
        );
        let joined: Vec<u8> = s.parts.concat();
        assert_eq!(decode(8, &joined).unwrap(), text);
    }
}
