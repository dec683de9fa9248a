//! The `static` provider: subscriber records from a TOML file (contract §2,
//! `config/subscribers.toml`), for development, tests and the README's walk-through.
//!
//! Each `[[subscriber]]` has `phone` (E.164), `id_document`, `name`, `given_name`,
//! `family_name`, `birthdate` and optionally `sim_changed_at` (RFC 3339). Names and document
//! numbers compare after NFC, case folding and white-space normalisation; fields the record
//! does not hold (`id_document_type`, `address`) are `not_available`. A number without a record
//! answers like CAMARA's 404: every field `not_available`, refused.

use std::collections::HashMap;
use std::path::Path;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::identity::normalize;
use super::{Error, Field, FieldResult, Identity, KycAnswer, Provider};
use crate::phone::Phone;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    subscriber: Vec<Record>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    phone: String,
    id_document: Option<String>,
    name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    birthdate: Option<String>,
    sim_changed_at: Option<String>,
}

struct Subscriber {
    fields: HashMap<Field, String>,
    sim_changed_at_ms: Option<i64>,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

pub struct StaticProvider {
    by_phone: HashMap<String, Subscriber>,
}

impl StaticProvider {
    pub fn load(path: &Path) -> Result<StaticProvider, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_toml(&text).map_err(|reason| LoadError::Invalid {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_toml(text: &str) -> Result<StaticProvider, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_phone = HashMap::new();
        for (i, r) in file.subscriber.into_iter().enumerate() {
            let at = |k: &str| format!("subscriber[{i}].{k}");
            let phone = phonenumber::parse(None, &r.phone)
                .ok()
                .filter(phonenumber::is_valid)
                .map(|n| n.format().mode(phonenumber::Mode::E164).to_string())
                .ok_or_else(|| format!("{}: not a valid E.164 number", at("phone")))?;
            let sim_changed_at_ms = match &r.sim_changed_at {
                None => None,
                Some(s) => Some(
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                        .map_err(|_| format!("{}: not an RFC 3339 time", at("sim_changed_at")))?,
                ),
            };
            let fields = [
                (Field::IdDocument, r.id_document),
                (Field::Name, r.name),
                (Field::GivenName, r.given_name),
                (Field::FamilyName, r.family_name),
                (Field::Birthdate, r.birthdate),
            ]
            .into_iter()
            .filter_map(|(f, v)| v.map(|v| (f, v)))
            .collect();
            by_phone.insert(
                phone,
                Subscriber {
                    fields,
                    sim_changed_at_ms,
                },
            );
        }
        Ok(StaticProvider { by_phone })
    }

    pub fn len(&self) -> usize {
        self.by_phone.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_phone.is_empty()
    }
}

fn compare(f: Field, given: &str, held: Option<&String>) -> FieldResult {
    match held {
        None => FieldResult::NotAvailable,
        Some(h) => {
            let same = if f == Field::Birthdate {
                given.trim() == h.trim()
            } else {
                normalize(given) == normalize(h)
            };
            if same {
                FieldResult::Match
            } else {
                FieldResult::Mismatch
            }
        }
    }
}

impl Provider for StaticProvider {
    fn kyc_match<'a>(
        &'a self,
        phone: &'a Phone,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<KycAnswer, Error>> {
        Box::pin(async move {
            let Some(s) = self.by_phone.get(phone.e164()) else {
                return Ok(KycAnswer::no_subscriber(identity));
            };
            Ok(KycAnswer {
                fields: identity
                    .given()
                    .map(|(f, v)| (f, compare(f, v, s.fields.get(&f))))
                    .collect(),
                refused: false,
            })
        })
    }

    fn sim_swapped<'a>(
        &'a self,
        phone: &'a Phone,
        max_age_hours: u32,
        now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let changed = self
                .by_phone
                .get(phone.e164())
                .and_then(|s| s.sim_changed_at_ms);
            Ok(changed.is_some_and(|t| now_ms - t < i64::from(max_age_hours) * 3_600_000))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldResult::*;

    const FILE: &str = r#"
[[subscriber]]
phone = "+84912345678"
id_document = "079090001234"
name = "NGUYỄN VĂN A"
birthdate = "1990-01-31"
sim_changed_at = "2026-01-05T08:00:00Z"
"#;

    fn phone(s: &str) -> Phone {
        Phone::from_e164_unchecked(s.into())
    }

    #[tokio::test]
    async fn fields_compare_normalised() {
        let p = StaticProvider::from_toml(FILE).expect("file");
        let id = Identity {
            id_document: Some(" 079090001234".into()),
            name: Some("nguyễn  văn a".into()),
            birthdate: Some("1990-01-30".into()),
            address: Some("Hà Nội".into()),
            ..Default::default()
        };
        let a = p
            .kyc_match(&phone("+84912345678"), &id)
            .await
            .expect("answer");
        assert_eq!(
            a.fields,
            vec![
                (Field::IdDocument, Match),
                (Field::Name, Match),
                (Field::Birthdate, Mismatch),
                (Field::Address, NotAvailable)
            ]
        );
        assert!(!a.refused);
        let none = p
            .kyc_match(&phone("+84912000000"), &id)
            .await
            .expect("answer");
        assert!(none.refused);
        assert!(none.fields.iter().all(|(_, r)| *r == NotAvailable));
    }

    #[tokio::test]
    async fn sim_swaps_within_max_age() {
        let p = StaticProvider::from_toml(FILE).expect("file");
        let changed = 1_767_600_000_000; // 2026-01-05T08:00:00Z
        let ph = phone("+84912345678");
        assert!(
            p.sim_swapped(&ph, 72, changed + 71 * 3_600_000)
                .await
                .expect("ok")
        );
        assert!(
            !p.sim_swapped(&ph, 72, changed + 72 * 3_600_000)
                .await
                .expect("ok")
        );
        assert!(
            !p.sim_swapped(&phone("+84912000000"), 72, changed)
                .await
                .expect("ok")
        );
    }

    #[test]
    fn bad_records_are_named() {
        let e = StaticProvider::from_toml("[[subscriber]]\nphone = \"12\"\n")
            .err()
            .expect("refused");
        assert!(e.contains("subscriber[0].phone"), "{e}");
    }
}
