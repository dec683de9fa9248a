//! Issuing an activation: the record the store keeps and the SMS job the outbox carries, and
//! rendering that SMS at send time. Neither holds the code; it is derived again when the SMS
//! is rendered (so the outbox, the store and the logs never see it).

use serde::{Deserialize, Serialize};

use super::codes::{ActivationKeys, normalize_entity_number};
use super::rules::ActivationState;
use crate::ids;
use crate::phone::Phone;
use crate::sms::{Locale, Templates};

/// A validated `POST /v1/activations`.
#[derive(Debug, Clone)]
pub struct NewActivation {
    pub client: String,
    pub account_id: String,
    pub application_number: String,
    /// `None` (or blank): redeeming must then give none.
    pub entity_number: Option<String>,
    pub phone: Phone,
    pub activation_url: String,
    pub locale: Locale,
}

/// An activation as stored. No code, no application or entity number: only keyed hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    /// `act_…`; its slot tag is the lookup hash's, so a redeem (which knows only the
    /// application number) finds index and record in one Redis Cluster slot.
    pub id: String,
    /// The API client that issued it.
    pub client: String,
    pub account_id: String,
    /// The id of the server key the code and hashes were made under.
    pub key_id: String,
    /// [`ActivationKeys::lookup_hash`] of the application number (hex): the redeem index.
    pub lookup_hash: String,
    /// [`ActivationKeys::entity_hash`] (hex), when issued with an entity number.
    pub entity_hash: Option<String>,
    /// For `phone_masked` and the SMS.
    pub phone: Phone,
    pub locale: Locale,
    /// The activation SMS (`msg_…`, same slot tag).
    pub message_id: String,
    pub created_at_ms: i64,
    /// Status, expiry and attempts: what [`super::rules::decide`] reads and writes.
    pub state: ActivationState,
}

/// The outbox payload of an activation SMS: what [`render`] needs, without the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationSms {
    pub activation_id: String,
    pub key_id: String,
    pub locale: Locale,
    /// Printed in the SMS, so it travels with the job (the record keeps only its hash).
    pub entity_number: Option<String>,
    pub activation_url: String,
}

/// The record and the SMS job of a new activation, made under the current key at `now_ms`.
pub fn issue(
    keys: &ActivationKeys,
    req: NewActivation,
    now_ms: i64,
    ttl_ms: i64,
    max_attempts: u32,
) -> (Activation, ActivationSms) {
    let lookup = keys.lookup_hash(&req.application_number);
    let tag = ids::tag_of(&hex::decode(&lookup.hash).unwrap_or_default());
    let id = ids::new_id("act", &tag);
    // As given (trimmed) for the SMS; a blank one is none.
    let entity_number = req
        .entity_number
        .as_deref()
        .map(str::trim)
        .filter(|e| normalize_entity_number(e).is_some())
        .map(str::to_owned);
    let entity_hash = keys.entity_hash(&lookup.key_id, &id, entity_number.as_deref());
    let record = Activation {
        message_id: ids::new_id("msg", &tag),
        client: req.client,
        account_id: req.account_id,
        key_id: lookup.key_id.clone(),
        lookup_hash: lookup.hash,
        entity_hash,
        phone: req.phone,
        locale: req.locale,
        created_at_ms: now_ms,
        state: ActivationState::issued(now_ms, ttl_ms, max_attempts),
        id: id.clone(),
    };
    let sms = ActivationSms {
        activation_id: id,
        key_id: lookup.key_id,
        locale: req.locale,
        entity_number,
        activation_url: req.activation_url,
    };
    (record, sms)
}

/// The text of an activation SMS, with its code derived again; `None` when the key it was
/// made under is no longer configured (the message then fails rather than carry a dead code).
pub fn render(keys: &ActivationKeys, templates: &Templates, sms: &ActivationSms) -> Option<String> {
    let code = keys.code(&sms.key_id, &sms.activation_id)?;
    Some(templates.activation_sms(
        sms.locale,
        &code,
        sms.entity_number.as_deref(),
        &sms.activation_url,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::codes::{Presented, StoredSecrets};

    fn keys() -> ActivationKeys {
        ActivationKeys::new(
            ("k1", &[9; 32]),
            &[],
            "23456789ABCDEFGHJKLMNPQRSTUVWXYZ",
            10,
        )
        .unwrap()
    }

    fn request(entity: Option<&str>) -> NewActivation {
        NewActivation {
            client: "platform".into(),
            account_id: "ent-778".into(),
            application_number: "A2026-000123".into(),
            entity_number: entity.map(str::to_owned),
            phone: Phone::from_e164_unchecked("+85366123456".into()),
            activation_url: "https://entity-account.example/activate".into(),
            locale: Locale::En,
        }
    }

    #[test]
    fn the_record_and_the_job_carry_no_code_and_no_plain_numbers() {
        let k = keys();
        let (rec, sms) = issue(&k, request(Some("600123")), 1_000, 7_000, 5);
        let code = k.code(&rec.key_id, &rec.id).unwrap();
        let stored = format!("{rec:?}");
        let queued = serde_json::to_string(&sms).unwrap();
        for (what, text) in [("record", &stored), ("job", &queued)] {
            assert!(!text.contains(&code), "{what}: {text}");
            assert!(!text.contains("A2026"), "{what}: {text}");
        }
        assert!(!stored.contains("600123"), "{stored}");
        assert_eq!(sms.entity_number.as_deref(), Some("600123"));
        assert_eq!(rec.state.expires_at_ms, 8_000);
        assert_eq!(
            ids::parse("act", &rec.id),
            ids::parse("msg", &rec.message_id)
        );
        let text = render(&k, &Templates::load("One Account", "", None).unwrap(), &sms).unwrap();
        assert!(
            text.contains(&format!("Activation code: {code}\n")),
            "{text}"
        );
        assert!(text.contains("Entity number: 600123\n"), "{text}");
        // The job survives the outbox's JSON.
        assert_eq!(serde_json::from_str::<ActivationSms>(&queued).unwrap(), sms);
    }

    #[test]
    fn the_issued_record_is_what_a_redeem_matches() {
        let k = keys();
        let (rec, _) = issue(&k, request(Some("600123")), 0, 1, 5);
        assert_eq!(k.lookup_hash(" a2026-000123").hash, rec.lookup_hash);
        let stored = StoredSecrets {
            activation_id: &rec.id,
            key_id: &rec.key_id,
            entity_hash: rec.entity_hash.as_deref(),
        };
        let code = k.code(&rec.key_id, &rec.id).unwrap();
        let p = |entity| Presented {
            entity_number: entity,
            code: &code,
        };
        assert!(k.presented_matches(Some(stored), p(Some("600123"))));
        assert!(!k.presented_matches(Some(stored), p(None)));
    }

    #[test]
    fn a_blank_entity_number_is_none() {
        let (rec, sms) = issue(&keys(), request(Some("  ")), 0, 1, 5);
        assert_eq!(rec.entity_hash, None);
        assert_eq!(sms.entity_number, None);
    }
}
