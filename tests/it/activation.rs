//! Activation domain code at its outer seams: the exact activation SMS of contract §4 in all
//! five locales (with and without an entity number), and a code read from that SMS and typed
//! back the way people type it, through the redeem rules. (HTTP and store tests come with the
//! handlers.)

use otpgate::activation::codes::{ActivationKeys, Presented, StoredSecrets};
use otpgate::activation::rules::{ActivationState, RedeemOutcome, decide};
use otpgate::sms::{Locale, Templates};

const URL: &str = "https://entity-account.example/activate";
const CODE: &str = "7KQ4ZP2M9X";

fn templates() -> Templates {
    Templates::load("One Account", "", None).unwrap()
}

#[test]
fn activation_sms_texts_in_every_locale() {
    let with: [(Locale, &str); 5] = [
        (
            Locale::En,
            "One Account account activation\nActivation code: 7KQ4ZP2M9X\nEntity number: 600123\nActivate at: https://entity-account.example/activate",
        ),
        (
            Locale::ZhHant,
            "One Account帳戶啟動\n啟動碼：7KQ4ZP2M9X\n實體編號：600123\n啟動網址：https://entity-account.example/activate",
        ),
        (
            Locale::ZhHans,
            "One Account账户激活\n激活码：7KQ4ZP2M9X\n实体编号：600123\n激活网址：https://entity-account.example/activate",
        ),
        (
            Locale::Pt,
            "Ativação da conta One Account\nCódigo de ativação: 7KQ4ZP2M9X\nNúmero da entidade: 600123\nAtivar em: https://entity-account.example/activate",
        ),
        (
            Locale::Vi,
            "Kích hoạt tài khoản One Account\nMã kích hoạt: 7KQ4ZP2M9X\nMã số tổ chức: 600123\nKích hoạt tại: https://entity-account.example/activate",
        ),
    ];
    let without: [(Locale, &str); 5] = [
        (
            Locale::En,
            "One Account account activation\nActivation code: 7KQ4ZP2M9X\nActivate at: https://entity-account.example/activate",
        ),
        (
            Locale::ZhHant,
            "One Account帳戶啟動\n啟動碼：7KQ4ZP2M9X\n啟動網址：https://entity-account.example/activate",
        ),
        (
            Locale::ZhHans,
            "One Account账户激活\n激活码：7KQ4ZP2M9X\n激活网址：https://entity-account.example/activate",
        ),
        (
            Locale::Pt,
            "Ativação da conta One Account\nCódigo de ativação: 7KQ4ZP2M9X\nAtivar em: https://entity-account.example/activate",
        ),
        (
            Locale::Vi,
            "Kích hoạt tài khoản One Account\nMã kích hoạt: 7KQ4ZP2M9X\nKích hoạt tại: https://entity-account.example/activate",
        ),
    ];
    let t = templates();
    for (locale, text) in with {
        assert_eq!(
            t.activation_sms(locale, CODE, Some("600123"), URL),
            text,
            "{locale}"
        );
    }
    for (locale, text) in without {
        assert_eq!(t.activation_sms(locale, CODE, None, URL), text, "{locale}");
    }
}

const NOW: i64 = 1_800_000_000_000;
const ALPHABET: &str = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Redeems against one issued activation (or none) and answers what the rules decide.
struct Issued {
    keys: ActivationKeys,
    id: String,
    key_id: String,
    lookup: String,
    entity_hash: Option<String>,
    state: ActivationState,
}

impl Issued {
    fn new(entity: Option<&str>) -> Issued {
        let keys = ActivationKeys::new(("k1", &[42; 32]), &[], ALPHABET, 10).unwrap();
        let id = "act_abcdefghijklmnopqrstuvwxyz2345".to_owned();
        let key_id = keys.current_key_id().to_owned();
        Issued {
            lookup: keys.lookup_hash("A2026-000123").hash,
            entity_hash: keys.entity_hash(&key_id, &id, entity),
            state: ActivationState::issued(NOW, 7 * 86_400_000, 5),
            keys,
            id,
            key_id,
        }
    }

    fn code(&self) -> String {
        self.keys.code(&self.key_id, &self.id).unwrap()
    }

    /// One redeem: look up by application number, match, decide, store the result.
    fn redeem(&mut self, application: &str, entity: Option<&str>, code: &str) -> RedeemOutcome {
        let found = self
            .keys
            .lookup_hashes(application)
            .iter()
            .any(|h| h.hash == self.lookup);
        let stored = found.then_some(StoredSecrets {
            activation_id: &self.id,
            key_id: &self.key_id,
            entity_hash: self.entity_hash.as_deref(),
        });
        let matched = self.keys.presented_matches(
            stored,
            Presented {
                entity_number: entity,
                code,
            },
        );
        let d = decide(found.then_some(&self.state), matched, NOW + 1000);
        if let Some(next) = d.next {
            self.state = next;
        }
        d.outcome
    }
}

#[test]
fn the_code_from_the_sms_redeems_once_as_people_type_it() {
    let mut a = Issued::new(Some("600123"));
    let sms = templates().activation_sms(Locale::ZhHant, &a.code(), Some("600123"), URL);
    let from_sms = sms
        .lines()
        .find_map(|l| l.strip_prefix("啟動碼："))
        .unwrap()
        .to_owned();
    assert_eq!(from_sms, a.code());
    // Lower case, grouped with a dash and a space, typed full-width on a phone keyboard.
    let typed: String = format!("{}-{} ", &from_sms[..5], &from_sms[5..])
        .to_lowercase()
        .chars()
        .map(|c| match c {
            '0'..='9' | 'a'..='z' => char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap(),
            c => c,
        })
        .collect();
    assert_eq!(
        a.redeem(" a2026-000123", Some("６００１２３"), &typed),
        RedeemOutcome::Redeemed
    );
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), &from_sms),
        RedeemOutcome::AlreadyUsed
    );
}

#[test]
fn every_wrong_field_answers_the_same_and_only_known_numbers_lock() {
    let mut a = Issued::new(Some("600123"));
    let code = a.code();
    let incorrect = RedeemOutcome::Incorrect { locks: false };
    // Unknown application number: never locks.
    for _ in 0..10 {
        assert_eq!(a.redeem("A2026-999999", Some("600123"), &code), incorrect);
    }
    assert_eq!(a.state.attempts_used, 0);
    // Wrong entity number, missing entity number, wrong code: the same answer, and each
    // uses an attempt; the fifth locks.
    assert_eq!(a.redeem("A2026-000123", Some("600124"), &code), incorrect);
    assert_eq!(a.redeem("A2026-000123", None, &code), incorrect);
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), "2222222222"),
        incorrect
    );
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), &code[..9]),
        incorrect
    );
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), "ZZZZZZZZZZ"),
        RedeemOutcome::Incorrect { locks: true }
    );
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), &code),
        RedeemOutcome::Locked
    );
}

#[test]
fn an_entity_number_given_for_an_activation_without_one_is_a_mismatch() {
    let mut a = Issued::new(None);
    let code = a.code();
    assert_eq!(
        a.redeem("A2026-000123", Some("600123"), &code),
        RedeemOutcome::Incorrect { locks: false }
    );
    assert_eq!(
        a.redeem("A2026-000123", None, &code),
        RedeemOutcome::Redeemed
    );
}
