//! SMPP addressing rules of the contract (§6 "SMPP addressing").

use rusmpp::values::{Npi, Ton};

/// `source_addr` as configured → (TON, NPI, address as sent).
/// Alphanumeric → TON 5, NPI 0; `+digits` → TON 1, NPI 1 without the `+`; digits → TON 0, NPI 1.
pub fn source_address(s: &str) -> Option<(Ton, Npi, String)> {
    if let Some(digits) = s.strip_prefix('+') {
        return (!digits.is_empty()
            && digits.len() <= 20
            && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (Ton::International, Npi::Isdn, digits.to_owned()));
    }
    if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some((Ton::Unknown, Npi::Isdn, s.to_owned()));
    }
    // An alphanumeric sender id: at most 11 characters, printable ASCII (all in GSM 03.38).
    (!s.is_empty()
        && s.chars().count() <= 11
        && s.chars().all(|c| c.is_ascii_graphic() || c == ' '))
    .then(|| (Ton::Alphanumeric, Npi::Unknown, s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_address_kinds() {
        let kind = |s: &str| source_address(s).map(|a| (a.0, a.1, a.2));
        assert_eq!(
            kind("OneAccount"),
            Some((Ton::Alphanumeric, Npi::Unknown, "OneAccount".into()))
        );
        assert_eq!(
            kind("+85312345"),
            Some((Ton::International, Npi::Isdn, "85312345".into()))
        );
        assert_eq!(kind("1234"), Some((Ton::Unknown, Npi::Isdn, "1234".into())));
        assert_eq!(kind(""), None);
        assert_eq!(kind("ThisIsTooLongForSender"), None);
    }
}
