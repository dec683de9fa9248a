//! Configuration (contract §2): parsed from TOML once at start, validated, then shared read-only.
//!
//! This module composes: each section's types and checks live with the code that uses them
//! (`smpp::config`, `otp::config`, `sms::config`, `store::config`, `phone::config`,
//! `limits::config`, `subscriber::config`, `activation::config`) and are re-exported here.
//! What stays here is the file as a whole: `[server]`, `[security]`, `[[clients]]`, parsing
//! that names every bad key (`parse`), and the secrets published in the repository.
//!
//! Every key of the contract is accepted, even for features a later issue implements, so that
//! one config file serves every version; unknown keys are an error, and every error names the
//! key path (`smpp.smsc[0].window: must be 1..=1024`, `otp.ttl: invalid duration "5 min"`).
//!
//! Relative paths in the config (`security.secret_key_file`, `sms.templates_dir`,
//! `subscriber.static_file`) are relative to the working directory of the process, not to the
//! config file (systemd: `WorkingDirectory=`); absolute paths are safer.

pub mod duration;
mod parse;
pub mod published;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::purpose::Purpose;

pub use crate::activation::config::ActivationConfig;
pub use crate::limits::config::{LimitsConfig, PumpingGuardConfig, RateSpec};
pub use crate::otp::config::{OtpConfig, OtpOverride, OtpPolicy};
pub use crate::phone::config::PhoneConfig;
pub use crate::smpp::config::{LongMessages, SmppConfig, SmscConfig};
pub use crate::sms::config::SmsConfig;
pub use crate::store::config::{StoreBackend, StoreConfig};
pub use crate::subscriber::config::{CamaraConfig, SubscriberConfig, SubscriberProvider};

/// A problem with one key of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `smpp.smsc[0].window`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What the sections' checks found: errors refuse the file, warnings are only said.
#[derive(Debug, Default)]
pub struct Issues {
    pub errors: Vec<ConfigIssue>,
    pub warnings: Vec<ConfigIssue>,
}

impl Issues {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("{file}: line {line}, column {column}: {message}", file = file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// Keys of the wrong type, unknown keys, values out of range or inconsistent: all of them.
    #[error("{}: {}", file.display(), issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        file: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// Each problem on its own line, prefixed by the file (what `check-config` prints).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => vec![self.to_string()],
            ConfigError::Invalid { file, issues } => issues
                .iter()
                .map(|i| format!("{}: {i}", file.display()))
                .collect(),
        }
    }
}

/// A string that never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Every key has a default (a missing `[[smpp.smsc]]` or client `name` is a validation error
/// naming the key), so that parsing can step over a bad key and find the next one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub security: SecurityConfig,
    pub store: StoreConfig,
    pub clients: Vec<ClientConfig>,
    pub phone: PhoneConfig,
    pub otp: OtpConfig,
    pub activation: ActivationConfig,
    pub limits: LimitsConfig,
    pub sms: SmsConfig,
    pub smpp: SmppConfig,
    pub subscriber: SubscriberConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 16384,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub secret_key: Option<Secret>,
    pub secret_key_file: Option<PathBuf>,
    /// Keys used before a rotation (64 hex characters each): codes made under them stay valid
    /// until they expire; new ones use `secret_key`.
    pub retired_secret_keys: Vec<Secret>,
    /// A file of retired keys, one a line (blank lines and `#` comments ignored).
    pub retired_secret_keys_file: Option<PathBuf>,
}

impl SecurityConfig {
    /// The retired keys of `retired_secret_keys` and `retired_secret_keys_file`.
    pub fn retired_key_bytes(&self) -> Result<Vec<[u8; 32]>, ConfigIssue> {
        let mut keys = Vec::new();
        for (i, k) in self.retired_secret_keys.iter().enumerate() {
            keys.push(parse_secret_hex(k.expose()).ok_or_else(|| ConfigIssue {
                path: format!("security.retired_secret_keys[{i}]"),
                message: "must be 64 hex characters (32 bytes)".into(),
            })?);
        }
        if let Some(f) = &self.retired_secret_keys_file {
            let text = std::fs::read_to_string(f).map_err(|e| ConfigIssue {
                path: "security.retired_secret_keys_file".into(),
                message: format!("{}: {e}", f.display()),
            })?;
            let lines = text.lines().map(str::trim);
            for (n, line) in lines
                .enumerate()
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            {
                keys.push(parse_secret_hex(line).ok_or_else(|| ConfigIssue {
                    path: "security.retired_secret_keys_file".into(),
                    message: format!("{} line {}: must be 64 hex characters", f.display(), n + 1),
                })?);
            }
        }
        Ok(keys)
    }
}

/// `security.retired_secret_keys`: each a 64-hex key; `retired_secret_keys_file` is read and
/// checked line by line.
fn check_retired_keys(s: &SecurityConfig, issues: &mut Issues) {
    for (i, k) in s.retired_secret_keys.iter().enumerate() {
        if parse_secret_hex(k.expose()).is_none() {
            issues.error(
                format!("security.retired_secret_keys[{i}]"),
                "must be 64 hex characters (32 bytes)",
            );
        }
    }
    match s.retired_key_bytes() {
        // A bad inline key was named above; the file's problems are named here.
        Err(e) if e.path == "security.retired_secret_keys_file" => issues.errors.push(e),
        Err(_) => {}
        Ok(retired) => {
            // Each key once: a key both current and retired, or retired twice, is a mistake
            // that key ids cannot tell apart.
            let current = s
                .secret_key
                .as_ref()
                .and_then(|k| parse_secret_hex(k.expose()));
            let mut seen: Vec<[u8; 32]> = current.into_iter().collect();
            for k in retired {
                if seen.contains(&k) {
                    issues.error(
                        "security.retired_secret_keys",
                        "lists a key twice, or the current secret_key",
                    );
                    break;
                }
                seen.push(k);
            }
        }
    }
}

/// One calling system and what it may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    pub name: String,
    pub key_sha256: String,
    pub purposes: Vec<Purpose>,
}

/// What to say about a bad `secret_key`.
const SECRET_KEY_FORMAT: &str =
    "must be 64 hex characters (32 bytes); make one with `openssl rand -hex 32`";

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `file` is only used in error messages. Every bad key
    /// is reported, type errors and unknown keys included, each with its full path.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let parsed = parse::parse::<Config>(text).map_err(|s| ConfigError::Syntax {
            file: file.to_owned(),
            line: s.line,
            column: s.column,
            message: s.message,
        })?;
        let mut issues = parsed.issues.clone();
        if let Some(config) = &parsed.value {
            // A key that did not parse took its default: do not judge the default again.
            let unparsed: Vec<String> = issues.iter().map(|i| i.path.clone()).collect();
            let under = |path: &str, p: &str| {
                path == p
                    || path
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
            };
            issues.extend(
                config
                    .validate()
                    .into_iter()
                    .map(|i| ConfigIssue {
                        path: parsed.path_in_file(&i.path),
                        message: i.message,
                    })
                    .filter(|i| !unparsed.iter().any(|p| under(&i.path, p))),
            );
        }
        match parsed.value {
            Some(config) if issues.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                file: file.to_owned(),
                issues,
            }),
        }
    }

    /// Every range and consistency error, section by section.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        self.check().errors
    }

    /// What is allowed but worth saying (`check-config` prints it, `serve` logs it).
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        self.check().warnings
    }

    fn check(&self) -> Issues {
        let mut issues = Issues::default();
        if self.server.max_body_bytes < 256 {
            issues.error("server.max_body_bytes", "must be at least 256");
        }
        if self.server.shutdown_grace > Duration::from_secs(60) {
            // The systemd unit's TimeoutStopSec (90 s) covers 10 s of HTTP drain, this, and
            // the final flush.
            issues.error("server.shutdown_grace", "must be 0s..=60s");
        }
        self.check_security(&mut issues);
        self.store.validate("store", &mut issues);
        self.check_clients(&mut issues);
        self.phone.validate("phone", &mut issues);
        self.otp.validate("otp", &mut issues);
        self.otp.warn_short("otp", &mut issues);
        self.activation.validate("activation", &mut issues);
        self.limits.validate("limits", &mut issues);
        self.sms.validate("sms", &mut issues);
        self.smpp.validate("smpp", &mut issues);
        self.subscriber.validate("subscriber", &mut issues);
        self.check_published_secrets(&mut issues);
        issues
    }

    fn check_security(&self, issues: &mut Issues) {
        let s = &self.security;
        if let Some(k) = &s.secret_key
            && parse_secret_hex(k.expose()).is_none()
        {
            issues.error("security.secret_key", SECRET_KEY_FORMAT);
        }
        check_retired_keys(s, issues);
        if s.secret_key.is_some() && s.secret_key_file.is_some() {
            issues.error(
                "security.secret_key_file",
                "give either secret_key or secret_key_file, not both",
            );
        } else if s.secret_key_file.is_some()
            && let Err(e) = self.secret_key_bytes()
        {
            issues.errors.push(e);
        }
        if self.store.backend == StoreBackend::Redis
            && s.secret_key.is_none()
            && s.secret_key_file.is_none()
        {
            issues.error(
                "security.secret_key",
                "required with store.backend = \"redis\" (every instance must share the key)",
            );
        }
    }

    fn check_clients(&self, issues: &mut Issues) {
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.name.trim().is_empty() {
                issues.error(format!("clients[{i}].name"), "must not be empty");
            } else if !names.insert(c.name.as_str()) {
                issues.error(format!("clients[{i}].name"), "duplicate client name");
            }
            if c.key_sha256.len() != 64 || hex::decode(&c.key_sha256).is_err() {
                issues.error(
                    format!("clients[{i}].key_sha256"),
                    "must be 64 hex characters (see `otpgate gen-api-key`)",
                );
            } else if !keys.insert(c.key_sha256.to_ascii_lowercase()) {
                issues.error(
                    format!("clients[{i}].key_sha256"),
                    "the same key is given to two clients",
                );
            }
            if c.purposes.is_empty() {
                issues.error(
                    format!("clients[{i}].purposes"),
                    "must name at least one purpose",
                );
            }
        }
    }

    /// Off loopback, no development token and no key written in this repository: anyone can
    /// read them, and a code is HMAC(key, verification id).
    fn check_published_secrets(&self, issues: &mut Issues) {
        let listen = self.server.listen;
        if listen.ip().is_loopback() {
            return;
        }
        let why = format!("refused because server.listen {listen} is not a loopback address");
        let dev = hex::encode(Sha256::digest(published::DEV_TOKEN.as_bytes()));
        for (i, c) in self.clients.iter().enumerate() {
            let hash = c.key_sha256.to_ascii_lowercase();
            if hash == dev {
                issues.error(
                    format!("clients[{i}].key_sha256"),
                    format!(
                        "is the development token `{}`, {why}; make a real one with `otpgate gen-api-key`",
                        published::DEV_TOKEN
                    ),
                );
            } else if published::is_published(&hash) {
                issues.error(
                    format!("clients[{i}].key_sha256"),
                    format!(
                        "is published in the otpgate repository, {why}; make a real one with `otpgate gen-api-key`"
                    ),
                );
            }
        }
        if let Ok(Some(key)) = self.secret_key_bytes()
            && published::is_published(&hex::encode(key))
        {
            let path = if self.security.secret_key.is_some() {
                "security.secret_key"
            } else {
                "security.secret_key_file"
            };
            issues.error(
                path,
                format!(
                    "is published in the otpgate repository, {why}; make one with `openssl rand -hex 32`"
                ),
            );
        }
        // A published key kept as retired still lets anyone compute what was made under it.
        if let Ok(retired) = self.security.retired_key_bytes()
            && retired
                .iter()
                .any(|k| published::is_published(&hex::encode(k)))
        {
            issues.error(
                "security.retired_secret_keys",
                format!(
                    "holds a key published in the otpgate repository, {why}; drop it (what was made under it stops working)"
                ),
            );
        }
    }

    /// The 32-byte server key: from `secret_key`, `secret_key_file`, or `None` when neither is set.
    pub fn secret_key_bytes(&self) -> Result<Option<[u8; 32]>, ConfigIssue> {
        if let Some(k) = &self.security.secret_key {
            return parse_secret_hex(k.expose())
                .map(Some)
                .ok_or_else(|| ConfigIssue {
                    path: "security.secret_key".into(),
                    message: "must be 64 hex characters".into(),
                });
        }
        if let Some(f) = &self.security.secret_key_file {
            let text = std::fs::read_to_string(f).map_err(|e| ConfigIssue {
                path: "security.secret_key_file".into(),
                message: format!("{}: {e}", f.display()),
            })?;
            return parse_secret_hex(text.trim())
                .map(Some)
                .ok_or_else(|| ConfigIssue {
                    path: "security.secret_key_file".into(),
                    message: format!("{}: must hold 64 hex characters", f.display()),
                });
        }
        Ok(None)
    }
}

fn parse_secret_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        match Config::from_toml(text, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.lines(),
        }
    }

    #[test]
    fn every_bad_key_is_named_with_its_path() {
        let found = lines(
            r#"
[server]
listen = "nowhere"
[otp]
ttl = "five minutes"
digits = 3
[otp.purposes.login]
ttl = 5
[otp.purposes.bogus]
ttl = "1m"
[sms]
default_locale = "fr"
service_name = "An Extremely Long Service Name That Nobody Reads"
[phone]
allowed_countries = [853, "XX"]
[limits]
per_phone = ["5/1h", "lots"]
[[clients]]
name = "a"
key_sha256 = 7
purposes = ["login", "flying"]
[[smpp.smsc]]
name = "a"
window = 0
system_id = "a-very-long-system-id"
password = "longer-than-8"
colour = "red"
"#,
        );
        let all = found.join("\n");
        for want in [
            "t.toml: server.listen: ",
            "t.toml: otp.ttl: invalid duration \"five minutes\"",
            "t.toml: otp.digits: must be 4..=10",
            "t.toml: otp.purposes.login.ttl: invalid type: integer `5`",
            "t.toml: otp.purposes.bogus",
            "t.toml: sms.default_locale: ",
            "t.toml: sms.service_name: must be at most 40 characters",
            "t.toml: limits.per_phone[1]: invalid rate \"lots\"",
            "t.toml: phone.allowed_countries[0]: invalid type: integer `853`",
            "t.toml: phone.allowed_countries[1]: not an ISO 3166",
            "t.toml: clients[0].key_sha256: invalid type",
            "t.toml: clients[0].purposes[1]: unknown variant `flying`",
            "t.toml: smpp.smsc[0].window: must be 1..=1024",
            "t.toml: smpp.smsc[0].system_id: must be 1..=15 characters",
            "t.toml: smpp.smsc[0].password: must be at most 8 characters",
            "t.toml: smpp.smsc[0].colour: unknown key",
        ] {
            assert!(
                found.iter().any(|l| l.starts_with(want)),
                "{want:?} missing in:\n{all}"
            );
        }
        assert_eq!(found.len(), 16, "one line per bad key:\n{all}");
    }

    #[test]
    fn short_lifetimes_are_allowed_and_warned() {
        let c = Config::from_toml(
            "[otp]\nttl = \"1s\"\nresend_cooldown = \"0s\"\n[activation]\nttl = \"1s\"\n[[smpp.smsc]]\nname = \"a\"\n",
            Path::new("t.toml"),
        )
        .expect("valid");
        assert_eq!(c.otp.defaults.ttl, Duration::from_secs(1));
        let w = c.warnings();
        assert!(w.iter().any(|i| i.path == "otp.ttl"), "{w:?}");
    }

    #[test]
    fn published_secrets_are_refused_off_loopback_only() {
        let dev = hex::encode(Sha256::digest(published::DEV_TOKEN));
        let text = |listen: &str| {
            format!(
                "[server]\nlisten = \"{listen}\"\n[security]\nsecret_key = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n[[clients]]\nname = \"a\"\nkey_sha256 = \"{dev}\"\npurposes = [\"login\"]\n[[smpp.smsc]]\nname = \"a\"\n"
            )
        };
        assert_eq!(lines(&text("127.0.0.1:8080")), Vec::<String>::new());
        let found = lines(&text("0.0.0.0:8080"));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("t.toml: clients[0].key_sha256: is the development token"));
        assert!(found[1].starts_with("t.toml: security.secret_key: is published"));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let found = lines("[otp]\nttl = \"5m\"\ndigits = = 6\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("t.toml: line 3, column "), "{found:?}");
    }
}
