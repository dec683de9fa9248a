//! The identity a phone change (or a level-2 binding) is checked against (contract §3.3), and
//! how each field is named here, in the API and in CAMARA KYC Match.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// One identity field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    IdDocument,
    IdDocumentType,
    Name,
    GivenName,
    FamilyName,
    Birthdate,
    Address,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::IdDocument,
        Field::IdDocumentType,
        Field::Name,
        Field::GivenName,
        Field::FamilyName,
        Field::Birthdate,
        Field::Address,
    ];

    /// The contract's (and the config's `require`) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::IdDocument => "id_document",
            Field::IdDocumentType => "id_document_type",
            Field::Name => "name",
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::Birthdate => "birthdate",
            Field::Address => "address",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The property of CAMARA's `KYC_MatchRequestBody`.
    pub fn camara(self) -> &'static str {
        match self {
            Field::IdDocument => "idDocument",
            Field::IdDocumentType => "idDocumentType",
            Field::Name => "name",
            Field::GivenName => "givenName",
            Field::FamilyName => "familyName",
            Field::Birthdate => "birthdate",
            Field::Address => "address",
        }
    }

    /// Name fields may match on a `*MatchScore` at or above `name_score_threshold` (§6).
    pub fn is_name(self) -> bool {
        matches!(self, Field::Name | Field::GivenName | Field::FamilyName)
    }
}

/// CAMARA's `idDocumentType` values.
pub const ID_DOCUMENT_TYPES: [&str; 7] = [
    "passport",
    "national_id_card",
    "residence_permit",
    "diplomatic_id",
    "driver_licence",
    "social_security_id",
    "other",
];

/// The account holder's identity as the platform knows it. Never logged (`Debug` lists only
/// which fields are present).
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_document: Option<String>,
    /// One of CAMARA's `idDocumentType` values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_document_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birthdate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given: Vec<&str> = self.given().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Identity").field("fields", &given).finish()
    }
}

/// Why an identity cannot be used: the field (`identity.<field>`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Identity {
    pub fn get(&self, f: Field) -> Option<&str> {
        match f {
            Field::IdDocument => self.id_document.as_deref(),
            Field::IdDocumentType => self.id_document_type.as_deref(),
            Field::Name => self.name.as_deref(),
            Field::GivenName => self.given_name.as_deref(),
            Field::FamilyName => self.family_name.as_deref(),
            Field::Birthdate => self.birthdate.as_deref(),
            Field::Address => self.address.as_deref(),
        }
    }

    /// The fields given, in a fixed order.
    pub fn given(&self) -> impl Iterator<Item = (Field, &str)> {
        Field::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|v| (f, v)))
    }

    /// Checks the identity before anything is sent: every `required` field present and
    /// non-blank, formats CAMARA defines (dates, document types) respected.
    pub fn validate(&self, required: &[Field]) -> Result<(), Invalid> {
        let invalid = |f: Field, m: &str| Invalid {
            field: format!("identity.{}", f.as_str()),
            message: m.to_owned(),
        };
        for (f, v) in self.given() {
            if v.trim().is_empty() {
                return Err(invalid(f, "must not be blank"));
            }
            if v.chars().count() > 256 {
                return Err(invalid(f, "at most 256 characters"));
            }
        }
        for f in required {
            if self.get(*f).is_none() {
                return Err(invalid(*f, "required (subscriber.require)"));
            }
        }
        if let Some(b) = &self.birthdate {
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            if time::Date::parse(b, fmt).is_err() {
                return Err(invalid(Field::Birthdate, "must be a date YYYY-MM-DD"));
            }
        }
        if let Some(t) = &self.id_document_type
            && !ID_DOCUMENT_TYPES.contains(&t.as_str())
        {
            return Err(invalid(
                Field::IdDocumentType,
                &format!("must be one of {}", ID_DOCUMENT_TYPES.join(", ")),
            ));
        }
        Ok(())
    }
}

/// A name or document number as compared by the static provider: NFC, case-folded (lower
/// case), runs of white space as one space, trimmed. `NGUYỄN  VĂN A` (decomposed or not) and
/// `nguyễn văn a` compare equal; `NGUYEN VAN A` does not (diacritics are part of a name).
pub fn normalize(s: &str) -> String {
    let folded: String = s.nfc().flat_map(char::to_lowercase).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_after_nfc_case_and_spaces() {
        // "Ễ" precomposed vs E + circumflex + tilde.
        let composed = "NGUYỄN VĂN A";
        let decomposed = "NGUYE\u{0302}\u{0303}N  VA\u{0306}N A ";
        assert_eq!(normalize(composed), normalize(decomposed));
        assert_eq!(normalize(composed), "nguyễn văn a");
        assert_ne!(normalize("NGUYEN VAN A"), normalize(composed));
        assert_eq!(
            normalize("陳 大文"),
            normalize("陳　大文"),
            "ideographic space"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let id = Identity {
            name: Some("A".into()),
            birthdate: Some("1990-02-31".into()),
            ..Default::default()
        };
        assert_eq!(
            id.validate(&[Field::Name]).map_err(|e| e.field),
            Err("identity.birthdate".into())
        );
        assert_eq!(
            id.validate(&[Field::IdDocument]).map_err(|e| e.field),
            Err("identity.id_document".into())
        );
        let ok = Identity {
            id_document_type: Some("passport".into()),
            ..Default::default()
        };
        assert!(ok.validate(&[]).is_ok());
    }

    #[test]
    fn debug_shows_no_value() {
        let id = Identity {
            name: Some("CHAN TAI MAN".into()),
            ..Default::default()
        };
        let d = format!("{id:?}");
        assert!(!d.contains("CHAN"), "{d}");
        assert!(d.contains("name"));
    }
}
