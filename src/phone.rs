//! Phone numbers: parsed once into E.164 (`Phone`), masked whenever they are shown.

pub mod config;

use std::fmt;
use std::str::FromStr;

use phonenumber::country::Id as CountryId;
use serde::{Deserialize, Serialize};

/// A valid phone number in E.164 form (`+85366123456`). `Debug` and `Display` mask it, so a
/// `Phone` that slips into a log line shows no more than the API does.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a phone number, or not a valid one for its country.
    #[error("not a valid phone number")]
    Invalid,
    /// Valid, but its country is not in `phone.allowed_countries`.
    #[error("numbers of this country are not allowed")]
    CountryNotAllowed,
}

/// Parses numbers with the configured default region and country allow-list.
#[derive(Debug, Clone)]
pub struct PhonePolicy {
    default_region: CountryId,
    allowed: Vec<CountryId>,
}

impl PhonePolicy {
    /// `default_region` and `allowed` were validated with the config.
    pub fn new(default_region: &str, allowed: &[String]) -> Option<PhonePolicy> {
        Some(PhonePolicy {
            default_region: CountryId::from_str(default_region).ok()?,
            allowed: allowed
                .iter()
                .map(|c| CountryId::from_str(c).ok())
                .collect::<Option<_>>()?,
        })
    }

    /// E.164 (`+85366123456`) or national form in the default region (`66123456`).
    pub fn parse(&self, input: &str) -> Result<Phone, PhoneError> {
        let input = input.trim();
        if input.is_empty() || input.len() > 32 {
            return Err(PhoneError::Invalid);
        }
        let region = if input.starts_with('+') {
            None
        } else {
            Some(self.default_region)
        };
        let number = phonenumber::parse(region, input).map_err(|_| PhoneError::Invalid)?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        if !self.allowed.is_empty() {
            match number.country().id() {
                Some(c) if self.allowed.contains(&c) => {}
                _ => return Err(PhoneError::CountryNotAllowed),
            }
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        Ok(Phone(e164))
    }
}

impl Phone {
    /// Wraps a number already known to be E.164 (from the store).
    pub fn from_e164_unchecked(s: String) -> Phone {
        Phone(s)
    }

    /// The full E.164 number. Only for the SMSC and the store; never for logs.
    pub fn e164(&self) -> &str {
        &self.0
    }

    /// The digits without `+`, as SMPP's destination_addr wants them (TON 1, NPI 1).
    pub fn international_digits(&self) -> &str {
        self.0.trim_start_matches('+')
    }

    /// `+853****3456`: the country code and the last 4 digits, every other digit `*`.
    pub fn masked(&self) -> String {
        let digits = self.international_digits();
        let cc_len = country_code_len(digits);
        let keep_tail = 4.min(digits.len().saturating_sub(cc_len));
        let mut out = String::with_capacity(digits.len() + 1);
        out.push('+');
        for (i, ch) in digits.chars().enumerate() {
            if i < cc_len || i >= digits.len() - keep_tail {
                out.push(ch);
            } else {
                out.push('*');
            }
        }
        out
    }
}

/// Length of the E.164 country calling code at the start of `digits` (1 to 3 digits).
fn country_code_len(digits: &str) -> usize {
    for len in 1..=3 {
        if let Some(cc) = digits.get(..len).and_then(|s| s.parse::<u16>().ok())
            && phonenumber::metadata::DATABASE.by_code(&cc).is_some()
        {
            return len;
        }
    }
    1
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Loads the phone-number metadata (parsed lazily on first use, ~60 ms) so that the first
/// request after start does not pay for it.
pub fn warm_up() {
    if let Ok(n) = phonenumber::parse(None, "+85366123456") {
        let _ = phonenumber::is_valid(&n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> PhonePolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        PhonePolicy::new("MO", &allowed).expect("policy")
    }

    #[test]
    fn parses_e164_and_national_forms() {
        let p = policy(&[]);
        assert_eq!(p.parse("+85366123456").unwrap().e164(), "+85366123456");
        assert_eq!(p.parse("66123456").unwrap().e164(), "+85366123456");
        assert_eq!(p.parse("+84912345678").unwrap().e164(), "+84912345678");
        assert_eq!(p.parse("12"), Err(PhoneError::Invalid));
        assert_eq!(p.parse("hello"), Err(PhoneError::Invalid));
    }

    #[test]
    fn masks_all_but_country_code_and_last_four() {
        let p = policy(&[]);
        assert_eq!(p.parse("+85366123456").unwrap().masked(), "+853****3456");
        assert_eq!(p.parse("+84912345678").unwrap().masked(), "+84*****5678");
        assert_eq!(
            p.parse("+8613812345678").unwrap().masked(),
            "+86*******5678"
        );
        assert_eq!(
            format!("{:?}", p.parse("+85366123456").unwrap()),
            "Phone(+853****3456)"
        );
    }

    #[test]
    fn enforces_allowed_countries() {
        let p = policy(&["MO", "HK"]);
        assert!(p.parse("+85366123456").is_ok());
        assert_eq!(p.parse("+84912345678"), Err(PhoneError::CountryNotAllowed));
    }
}
