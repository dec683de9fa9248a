//! The contract's SMS texts (§4), optionally overridden by files in `sms.templates_dir`
//! named `{code,activation,phone_changed}.{locale}.txt`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A message language. Serialised as in the contract: `en`, `zh-Hant`, `zh-Hans`, `pt`, `vi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    En,
    ZhHant,
    ZhHans,
    Pt,
    Vi,
}

impl Locale {
    pub const ALL: [Locale; 5] = [
        Locale::En,
        Locale::ZhHant,
        Locale::ZhHans,
        Locale::Pt,
        Locale::Vi,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::ZhHant => "zh-Hant",
            Locale::ZhHans => "zh-Hans",
            Locale::Pt => "pt",
            Locale::Vi => "vi",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Locale {
    type Err = String;
    /// Case-insensitive; `_` is accepted for `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().replace('_', "-");
        Locale::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(&norm))
            .ok_or_else(|| format!("`{s}` is not one of en, zh-Hant, zh-Hans, pt, vi"))
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Locale {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Locale {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// Code SMS: registration, login, password_reset, transaction, phone_change.
    Code,
    /// Activation SMS (seed 000), lines joined with `\n`.
    Activation,
    /// "Your phone number was changed" notice to the old number.
    PhoneChanged,
}

impl TemplateKind {
    const ALL: [TemplateKind; 3] = [
        TemplateKind::Code,
        TemplateKind::Activation,
        TemplateKind::PhoneChanged,
    ];

    fn file_stem(self) -> &'static str {
        match self {
            TemplateKind::Code => "code",
            TemplateKind::Activation => "activation",
            TemplateKind::PhoneChanged => "phone_changed",
        }
    }

    /// The placeholders a text of this kind may use; the first one it must use.
    fn placeholders(self) -> &'static [&'static str] {
        match self {
            TemplateKind::Code => &["code", "service", "minutes"],
            TemplateKind::Activation => &["code", "service", "entity_number", "activation_url"],
            TemplateKind::PhoneChanged => &["new_phone_masked", "service"],
        }
    }
}

/// Problems of the override files in `dir`, each as (file name, what is wrong): an override
/// without its required placeholder (a code SMS without `{code}`), with a placeholder its kind
/// does not have (left as typed in the SMS), or empty. Checked with the config.
pub fn check_overrides(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        out.push((String::new(), "not a directory".to_owned()));
        return out;
    }
    for locale in Locale::ALL {
        for kind in TemplateKind::ALL {
            let name = format!("{}.{}.txt", kind.file_stem(), locale);
            let text = match std::fs::read_to_string(dir.join(&name)) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    out.push((name, e.to_string()));
                    continue;
                }
            };
            let allowed = kind.placeholders();
            if text.trim().is_empty() {
                out.push((name, "is empty".to_owned()));
                continue;
            }
            if !text.contains(&format!("{{{}}}", allowed[0])) {
                out.push((name.clone(), format!("must contain {{{}}}", allowed[0])));
            }
            for used in placeholders_in(&text) {
                if !allowed.contains(&used) {
                    out.push((
                        name.clone(),
                        format!(
                            "unknown placeholder {{{used}}} (this text may use {})",
                            allowed
                                .iter()
                                .map(|p| format!("{{{p}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    out
}

/// The `{name}` placeholders of a text (names of ASCII letters and `_`).
fn placeholders_in(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
                    out.push(name);
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

const CODE: [&str; 5] = [
    "{code} is your {service} verification code. It expires in {minutes} minutes. Do not share it with anyone.",
    "【{service}】您的驗證碼為 {code}，{minutes} 分鐘內有效。請勿向任何人透露。",
    "【{service}】您的验证码为 {code}，{minutes} 分钟内有效。请勿向任何人泄露。",
    "{service}: o seu código de verificação é {code}. Válido por {minutes} minutos. Não o partilhe com ninguém.",
    "{service}: Mã xác thực của bạn là {code}, có hiệu lực trong {minutes} phút. Không chia sẻ mã này cho bất kỳ ai.",
];

/// Activation lines; the third (entity number) is left out when there is none.
const ACTIVATION: [[&str; 4]; 5] = [
    [
        "{service} account activation",
        "Activation code: {code}",
        "Entity number: {entity_number}",
        "Activate at: {activation_url}",
    ],
    [
        "{service}帳戶啟動",
        "啟動碼：{code}",
        "實體編號：{entity_number}",
        "啟動網址：{activation_url}",
    ],
    [
        "{service}账户激活",
        "激活码：{code}",
        "实体编号：{entity_number}",
        "激活网址：{activation_url}",
    ],
    [
        "Ativação da conta {service}",
        "Código de ativação: {code}",
        "Número da entidade: {entity_number}",
        "Ativar em: {activation_url}",
    ],
    [
        "Kích hoạt tài khoản {service}",
        "Mã kích hoạt: {code}",
        "Mã số tổ chức: {entity_number}",
        "Kích hoạt tại: {activation_url}",
    ],
];

const PHONE_CHANGED: [&str; 5] = [
    "{service}: the phone number that receives your codes was changed to {new_phone_masked}. If this was not you, contact {service} at once.",
    "【{service}】接收驗證碼的手機號碼已更改為 {new_phone_masked}。如非本人操作，請立即聯絡{service}。",
    "【{service}】接收验证码的手机号码已更改为 {new_phone_masked}。如非本人操作，请立即联系{service}。",
    "{service}: o número que recebe os seus códigos foi alterado para {new_phone_masked}. Se não foi você, contacte {service} de imediato.",
    "{service}: Số điện thoại nhận mã của bạn đã được đổi thành {new_phone_masked}. Nếu không phải bạn, hãy liên hệ {service} ngay.",
];

/// The texts in effect: the built-in ones with any file overrides applied.
#[derive(Debug, Clone)]
pub struct Templates {
    service: String,
    webotp_domain: String,
    code: [String; 5],
    activation: [Option<String>; 5],
    phone_changed: [String; 5],
}

impl Templates {
    /// Built-in texts; `templates_dir`, when given, overrides those it has a file for.
    pub fn load(
        service: &str,
        webotp_domain: &str,
        templates_dir: Option<&Path>,
    ) -> std::io::Result<Templates> {
        let mut t = Templates {
            service: service.to_owned(),
            webotp_domain: webotp_domain.to_owned(),
            code: CODE.map(str::to_owned),
            activation: [None, None, None, None, None],
            phone_changed: PHONE_CHANGED.map(str::to_owned),
        };
        if let Some(dir) = templates_dir {
            for locale in Locale::ALL {
                for kind in TemplateKind::ALL {
                    let path = dir.join(format!("{}.{}.txt", kind.file_stem(), locale));
                    match std::fs::read_to_string(&path) {
                        Ok(text) => {
                            let text = text.trim_end_matches(['\n', '\r']).to_owned();
                            let i = locale.index();
                            match kind {
                                TemplateKind::Code => t.code[i] = text,
                                TemplateKind::Activation => t.activation[i] = Some(text),
                                TemplateKind::PhoneChanged => t.phone_changed[i] = text,
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(t)
    }

    /// A code SMS; `ttl_secs` becomes `{minutes}`, rounded up, at least 1.
    pub fn code_sms(&self, locale: Locale, code: &str, ttl_secs: u64) -> String {
        let minutes = ttl_secs.div_ceil(60).max(1).to_string();
        let mut text = fill(
            &self.code[locale.index()],
            &[
                ("service", &self.service),
                ("code", code),
                ("minutes", &minutes),
            ],
        );
        if !self.webotp_domain.is_empty() {
            text.push_str("\n\n@");
            text.push_str(&self.webotp_domain);
            text.push_str(" #");
            text.push_str(code);
        }
        text
    }

    /// The activation SMS; the entity line is left out without an entity number.
    pub fn activation_sms(
        &self,
        locale: Locale,
        code: &str,
        entity_number: Option<&str>,
        activation_url: &str,
    ) -> String {
        let vars = [
            ("service", self.service.as_str()),
            ("code", code),
            ("entity_number", entity_number.unwrap_or("")),
            ("activation_url", activation_url),
        ];
        if let Some(custom) = &self.activation[locale.index()] {
            let lines: Vec<&str> = custom
                .lines()
                .filter(|l| entity_number.is_some() || !l.contains("{entity_number}"))
                .collect();
            return fill(&lines.join("\n"), &vars);
        }
        let lines = &ACTIVATION[locale.index()];
        let mut out: Vec<String> = Vec::with_capacity(4);
        for (i, line) in lines.iter().enumerate() {
            if i == 2 && entity_number.is_none() {
                continue;
            }
            out.push(fill(line, &vars));
        }
        out.join("\n")
    }

    /// The notice to the old number after a phone change.
    pub fn phone_changed_sms(&self, locale: Locale, new_phone_masked: &str) -> String {
        fill(
            &self.phone_changed[locale.index()],
            &[
                ("service", &self.service),
                ("new_phone_masked", new_phone_masked),
            ],
        )
    }
}

/// Replaces `{name}` placeholders in one pass (a value containing `{…}` is not expanded again).
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(domain: &str) -> Templates {
        Templates::load("One Account", domain, None).expect("built-in")
    }

    #[test]
    fn code_texts_in_every_locale() {
        let t = t("");
        assert_eq!(
            t.code_sms(Locale::En, "123456", 300),
            "123456 is your One Account verification code. It expires in 5 minutes. Do not share it with anyone."
        );
        assert_eq!(
            t.code_sms(Locale::ZhHant, "123456", 301),
            "【One Account】您的驗證碼為 123456，6 分鐘內有效。請勿向任何人透露。"
        );
        assert_eq!(
            t.code_sms(Locale::Vi, "000001", 30),
            "One Account: Mã xác thực của bạn là 000001, có hiệu lực trong 1 phút. Không chia sẻ mã này cho bất kỳ ai."
        );
    }

    #[test]
    fn webotp_line_is_appended() {
        let t = t("gov.example.mo");
        assert!(
            t.code_sms(Locale::Pt, "654321", 600)
                .ends_with("\n\n@gov.example.mo #654321")
        );
    }

    #[test]
    fn activation_without_entity_number_drops_the_line() {
        let t = t("");
        assert_eq!(
            t.activation_sms(Locale::En, "ABCD234567", None, "https://x.example/a"),
            "One Account account activation\nActivation code: ABCD234567\nActivate at: https://x.example/a"
        );
        assert_eq!(
            t.activation_sms(
                Locale::ZhHans,
                "ABCD234567",
                Some("600123"),
                "https://x.example/a"
            ),
            "One Account账户激活\n激活码：ABCD234567\n实体编号：600123\n激活网址：https://x.example/a"
        );
    }

    #[test]
    fn overrides_are_checked_for_their_placeholders() {
        let dir = std::env::temp_dir().join(format!("otpgate-tpl-{}", crate::ids::random_tag()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("code.en.txt"), "Your code for {service}.\n").expect("write");
        std::fs::write(dir.join("code.pt.txt"), "{code} {servce}").expect("write");
        std::fs::write(
            dir.join("phone_changed.vi.txt"),
            "{service} {new_phone_masked}",
        )
        .expect("write");
        let found = check_overrides(&dir);
        assert_eq!(
            found,
            vec![
                ("code.en.txt".to_owned(), "must contain {code}".to_owned()),
                (
                    "code.pt.txt".to_owned(),
                    "unknown placeholder {servce} (this text may use {code}, {service}, {minutes})"
                        .to_owned()
                ),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn locales_parse_case_insensitively() {
        assert_eq!("zh-hant".parse::<Locale>(), Ok(Locale::ZhHant));
        assert_eq!("ZH_HANS".parse::<Locale>(), Ok(Locale::ZhHans));
        assert!("fr".parse::<Locale>().is_err());
    }
}
