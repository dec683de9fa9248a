//! Configuration (contract §2): parsed from TOML once at start, validated, then shared read-only.
//!
//! Every key of the contract is accepted, even for features a later issue implements, so that
//! one config file serves every version; unknown keys are an error, and every error names the
//! key path (`smpp.smsc[0].window: must be 1..=1024`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::purpose::Purpose;

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

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or a key has the wrong type or is unknown.
    #[error("{file}: {issue}")]
    Parse { file: PathBuf, issue: ConfigIssue },
    /// The file parsed but some values are out of range or inconsistent.
    #[error("{file}: {}", issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        file: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// Each problem on its own line, prefixed by the file (what `check-config` prints).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Parse { file, issue } => vec![format!("{}: {issue}", file.display())],
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

/// A rate limit like `"5/1h"`: at most `count` events per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub window: Duration,
}

impl FromStr for RateSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, window) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not COUNT/WINDOW like \"5/1h\""))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a whole number"))?;
        let window = humantime::parse_duration(window.trim())
            .map_err(|e| format!("`{window}` is not a duration: {e}"))?;
        if count == 0 || window.is_zero() {
            return Err(format!("`{s}`: count and window must be positive"));
        }
        Ok(RateSpec { count, window })
    }
}

impl<'de> Deserialize<'de> for RateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.window)
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub phone: PhoneConfig,
    #[serde(default)]
    pub otp: OtpConfig,
    #[serde(default)]
    pub activation: ActivationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub sms: SmsConfig,
    pub smpp: SmppConfig,
    #[serde(default)]
    pub subscriber: SubscriberConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
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

/// `security.retired_secret_keys`: each a 64-hex key (the file is read when the daemon starts).
fn check_retired_keys(s: &SecurityConfig, bad: &mut impl FnMut(String, &str)) {
    for (i, k) in s.retired_secret_keys.iter().enumerate() {
        if parse_secret_hex(k.expose()).is_none() {
            bad(
                format!("security.retired_secret_keys[{i}]"),
                "must be 64 hex characters (32 bytes)",
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub redis_url: String,
    pub redis_cluster: Vec<String>,
    pub key_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_cluster: Vec::new(),
            key_prefix: "otpgate:".into(),
        }
    }
}

/// One calling system and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    pub key_sha256: String,
    pub purposes: Vec<Purpose>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhoneConfig {
    pub default_region: String,
    pub allowed_countries: Vec<String>,
}

impl Default for PhoneConfig {
    fn default() -> Self {
        PhoneConfig {
            default_region: "MO".into(),
            allowed_countries: Vec::new(),
        }
    }
}

/// OTP policy: the `[otp]` defaults, or one purpose's effective values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpPolicy {
    pub digits: u8,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_attempts: u32,
    pub max_sends: u32,
    #[serde(with = "humantime_serde")]
    pub resend_cooldown: Duration,
}

impl Default for OtpPolicy {
    fn default() -> Self {
        OtpPolicy {
            digits: 6,
            ttl: Duration::from_secs(300),
            max_attempts: 5,
            max_sends: 3,
            resend_cooldown: Duration::from_secs(60),
        }
    }
}

/// Per-purpose overrides: every key optional, falling back to `[otp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpOverride {
    pub digits: Option<u8>,
    #[serde(default, with = "humantime_serde::option")]
    pub ttl: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub max_sends: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub resend_cooldown: Option<Duration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpConfig {
    #[serde(flatten)]
    pub defaults: OtpPolicy,
    #[serde(default)]
    pub purposes: BTreeMap<Purpose, OtpOverride>,
}

impl OtpConfig {
    /// The effective policy of one purpose.
    pub fn policy(&self, purpose: Purpose) -> OtpPolicy {
        let d = self.defaults;
        match self.purposes.get(&purpose) {
            None => d,
            Some(o) => OtpPolicy {
                digits: o.digits.unwrap_or(d.digits),
                ttl: o.ttl.unwrap_or(d.ttl),
                max_attempts: o.max_attempts.unwrap_or(d.max_attempts),
                max_sends: o.max_sends.unwrap_or(d.max_sends),
                resend_cooldown: o.resend_cooldown.unwrap_or(d.resend_cooldown),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivationConfig {
    pub length: usize,
    pub alphabet: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_attempts: u32,
}

impl Default for ActivationConfig {
    fn default() -> Self {
        ActivationConfig {
            length: 10,
            alphabet: "23456789ABCDEFGHJKLMNPQRSTUVWXYZ".into(),
            ttl: Duration::from_secs(7 * 86400),
            max_attempts: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub per_phone: Vec<RateSpec>,
    pub per_account: Vec<RateSpec>,
    pub per_ip: Vec<RateSpec>,
    pub account_failures: Option<RateSpec>,
    pub per_country: BTreeMap<String, RateSpec>,
    pub pumping_guard: PumpingGuardConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let r = |s: &str| s.parse().expect("built-in rate spec");
        LimitsConfig {
            per_phone: vec![r("5/1h"), r("10/24h")],
            per_account: vec![r("10/1h")],
            per_ip: vec![r("20/1h")],
            account_failures: Some(r("10/1h")),
            per_country: BTreeMap::new(),
            pumping_guard: PumpingGuardConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingGuardConfig {
    pub enabled: bool,
    pub prefix_digits: usize,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_sent: u32,
    pub min_approval_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub cool_off: Duration,
}

impl Default for PumpingGuardConfig {
    fn default() -> Self {
        PumpingGuardConfig {
            enabled: false,
            prefix_digits: 6,
            window: Duration::from_secs(3600),
            min_sent: 50,
            min_approval_ratio: 0.2,
            cool_off: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    pub service_name: String,
    pub default_locale: crate::sms::Locale,
    pub webotp_domain: String,
    pub notify_old_phone_on_change: bool,
    pub templates_dir: Option<PathBuf>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            service_name: "One Account".into(),
            default_locale: crate::sms::Locale::En,
            webotp_domain: String::new(),
            notify_old_phone_on_change: true,
            templates_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmppConfig {
    pub smsc: Vec<SmscConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LongMessages {
    Udh,
    Sar,
    Payload,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmscConfig {
    pub name: String,
    pub simulator: bool,
    pub address: String,
    pub system_id: String,
    pub password: Secret,
    pub system_type: String,
    pub binds: u32,
    pub window: u32,
    pub throughput: u32,
    #[serde(with = "humantime_serde")]
    pub enquire_link_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    pub source_addr: String,
    pub routes: Vec<String>,
    pub long_messages: LongMessages,
}

impl Default for SmscConfig {
    fn default() -> Self {
        SmscConfig {
            name: String::new(),
            simulator: false,
            address: "127.0.0.1:2775".into(),
            system_id: "otpgate".into(),
            password: Secret::default(),
            system_type: String::new(),
            binds: 1,
            window: 32,
            throughput: 0,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            source_addr: "OneAccount".into(),
            routes: Vec::new(),
            long_messages: LongMessages::Udh,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriberProvider {
    Static,
    Camara,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    pub provider: SubscriberProvider,
    pub static_file: PathBuf,
    #[serde(with = "humantime_serde")]
    pub sim_swap_max_age: Duration,
    pub require: Vec<String>,
    pub name_score_threshold: u8,
    pub camara: Option<CamaraConfig>,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        SubscriberConfig {
            provider: SubscriberProvider::Static,
            static_file: PathBuf::from("config/subscribers.toml"),
            sim_swap_max_age: Duration::from_secs(72 * 3600),
            require: vec!["id_document".into(), "name".into(), "birthdate".into()],
            name_score_threshold: 90,
            camara: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CamaraConfig {
    pub base_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub routes: Vec<String>,
}

const IDENTITY_FIELDS: [&str; 7] = [
    "id_document",
    "id_document_type",
    "name",
    "given_name",
    "family_name",
    "birthdate",
    "address",
];

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `file` is only used in error messages and to resolve
    /// `secret_key_file`.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            issue: ConfigIssue {
                path: "(file)".into(),
                message: e.message().to_owned(),
            },
        })?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Parse {
                file: file.to_owned(),
                issue: ConfigIssue {
                    path: if path == "." {
                        "(top level)".into()
                    } else {
                        path
                    },
                    message: e.into_inner().message().to_owned(),
                },
            }
        })?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: file.to_owned(),
                issues,
            })
        }
    }

    /// Cross-field and range checks; every problem found, not just the first.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut bad = |path: String, message: &str| {
            out.push(ConfigIssue {
                path,
                message: message.to_owned(),
            })
        };

        if self.server.max_body_bytes < 256 {
            bad("server.max_body_bytes".into(), "must be at least 256");
        }
        if let Some(k) = &self.security.secret_key
            && parse_secret_hex(k.expose()).is_none()
        {
            bad(
                "security.secret_key".into(),
                "must be 64 hex characters (32 bytes)",
            );
        }
        check_retired_keys(&self.security, &mut bad);
        if self.security.secret_key.is_some() && self.security.secret_key_file.is_some() {
            bad(
                "security.secret_key_file".into(),
                "give either secret_key or secret_key_file, not both",
            );
        }
        if self.store.backend == StoreBackend::Redis
            && self.security.secret_key.is_none()
            && self.security.secret_key_file.is_none()
        {
            bad(
                "security.secret_key".into(),
                "required with store.backend = \"redis\" (every instance must share the key)",
            );
        }
        if self.store.backend == StoreBackend::Redis
            && self.store.redis_cluster.is_empty()
            && redis::parse_redis_url(&self.store.redis_url).is_none()
        {
            bad("store.redis_url".into(), "not a redis:// URL");
        }
        if self.store.backend == StoreBackend::Redis && !self.store.redis_cluster.is_empty() {
            bad(
                "store.redis_cluster".into(),
                "not supported yet: the durable SMS outbox needs a single Redis endpoint (store.redis_url)",
            );
        }
        for (i, u) in self.store.redis_cluster.iter().enumerate() {
            if redis::parse_redis_url(u).is_none() {
                bad(format!("store.redis_cluster[{i}]"), "not a redis:// URL");
            }
        }
        if self.store.key_prefix.is_empty() {
            bad("store.key_prefix".into(), "must not be empty");
        }

        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            if c.name.trim().is_empty() {
                bad(format!("clients[{i}].name"), "must not be empty");
            } else if !names.insert(c.name.as_str()) {
                bad(format!("clients[{i}].name"), "duplicate client name");
            }
            if c.key_sha256.len() != 64 || hex::decode(&c.key_sha256).is_err() {
                bad(
                    format!("clients[{i}].key_sha256"),
                    "must be 64 hex characters (see `otpgate gen-api-key`)",
                );
            } else if !keys.insert(c.key_sha256.to_ascii_lowercase()) {
                bad(
                    format!("clients[{i}].key_sha256"),
                    "the same key is given to two clients",
                );
            }
            if c.purposes.is_empty() {
                bad(
                    format!("clients[{i}].purposes"),
                    "must name at least one purpose",
                );
            }
        }

        if phonenumber::country::Id::from_str(&self.phone.default_region).is_err() {
            bad(
                "phone.default_region".into(),
                "not an ISO 3166 alpha-2 region code",
            );
        }
        for (i, c) in self.phone.allowed_countries.iter().enumerate() {
            if phonenumber::country::Id::from_str(c).is_err() {
                bad(
                    format!("phone.allowed_countries[{i}]"),
                    "not an ISO 3166 alpha-2 region code",
                );
            }
        }

        check_otp(&self.otp.defaults, "otp", &mut bad);
        for p in self.otp.purposes.keys() {
            check_otp(&self.otp.policy(*p), &format!("otp.purposes.{p}"), &mut bad);
        }

        let a = &self.activation;
        if !(6..=32).contains(&a.length) {
            bad("activation.length".into(), "must be 6..=32");
        }
        let alphabet: Vec<char> = a.alphabet.chars().collect();
        let unique: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        if alphabet.len() < 10
            || unique.len() != alphabet.len()
            || !alphabet.iter().all(|c| c.is_ascii_alphanumeric())
        {
            bad(
                "activation.alphabet".into(),
                "must be at least 10 distinct ASCII letters or digits",
            );
        }
        if a.ttl.is_zero() {
            bad("activation.ttl".into(), "must be positive");
        }
        if a.max_attempts == 0 {
            bad("activation.max_attempts".into(), "must be at least 1");
        }
        for k in self.limits.per_country.keys() {
            if phonenumber::country::Id::from_str(k).is_err() {
                bad(
                    format!("limits.per_country.{k}"),
                    "not an ISO 3166 alpha-2 region code",
                );
            }
        }
        let g = &self.limits.pumping_guard;
        if !(1..=15).contains(&g.prefix_digits) {
            bad(
                "limits.pumping_guard.prefix_digits".into(),
                "must be 1..=15",
            );
        }
        if !(0.0..=1.0).contains(&g.min_approval_ratio) {
            bad(
                "limits.pumping_guard.min_approval_ratio".into(),
                "must be 0.0..=1.0",
            );
        }

        if self.sms.service_name.trim().is_empty() {
            bad("sms.service_name".into(), "must not be empty");
        }
        if !self.sms.webotp_domain.is_empty()
            && (self.sms.webotp_domain.contains(char::is_whitespace)
                || !self.sms.webotp_domain.contains('.'))
        {
            bad(
                "sms.webotp_domain".into(),
                "must be a host name like \"example.gov.mo\"",
            );
        }

        if self.smpp.smsc.is_empty() {
            bad("smpp.smsc".into(), "at least one [[smpp.smsc]] is required");
        }
        let mut smsc_names = std::collections::HashSet::new();
        for (i, s) in self.smpp.smsc.iter().enumerate() {
            let p = |k: &str| format!("smpp.smsc[{i}].{k}");
            if s.name.trim().is_empty() {
                bad(p("name"), "must not be empty");
            } else if !smsc_names.insert(s.name.as_str()) {
                bad(p("name"), "duplicate SMSC name");
            }
            if !s.simulator && s.address.parse::<SocketAddr>().is_err() && !s.address.contains(':')
            {
                bad(p("address"), "must be HOST:PORT");
            }
            if s.system_id.is_empty() || s.system_id.len() > 15 {
                bad(p("system_id"), "must be 1..=15 characters");
            }
            if s.password.expose().len() > 8 {
                bad(p("password"), "must be at most 8 characters (SMPP 3.4)");
            }
            if s.system_type.len() > 12 {
                bad(p("system_type"), "must be at most 12 characters");
            }
            if !(1..=64).contains(&s.binds) {
                bad(p("binds"), "must be 1..=64");
            }
            if !(1..=1024).contains(&s.window) {
                bad(p("window"), "must be 1..=1024");
            }
            if s.enquire_link_interval < Duration::from_secs(1) {
                bad(p("enquire_link_interval"), "must be at least 1s");
            }
            if s.response_timeout < Duration::from_millis(100) {
                bad(p("response_timeout"), "must be at least 100ms");
            }
            if crate::smpp::addressing::source_address(&s.source_addr).is_none() {
                bad(
                    p("source_addr"),
                    "must be 1..=11 GSM letters/digits (alphanumeric) or 1..=20 digits with optional +",
                );
            }
            for (j, r) in s.routes.iter().enumerate() {
                let digits = r.strip_prefix('+').unwrap_or("");
                if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                    bad(
                        format!("smpp.smsc[{i}].routes[{j}]"),
                        "must be an E.164 prefix like \"+853\"",
                    );
                }
            }
        }

        let sub = &self.subscriber;
        for (i, f) in sub.require.iter().enumerate() {
            if !IDENTITY_FIELDS.contains(&f.as_str()) {
                bad(
                    format!("subscriber.require[{i}]"),
                    "unknown identity field (id_document, id_document_type, name, given_name, family_name, birthdate, address)",
                );
            }
        }
        if sub.name_score_threshold > 100 {
            bad("subscriber.name_score_threshold".into(), "must be 0..=100");
        }
        if sub.provider == SubscriberProvider::Camara {
            match &sub.camara {
                None => bad(
                    "subscriber.camara".into(),
                    "required with subscriber.provider = \"camara\"",
                ),
                Some(c) => {
                    if !c.base_url.starts_with("http://") && !c.base_url.starts_with("https://") {
                        bad(
                            "subscriber.camara.base_url".into(),
                            "must be an http(s) URL",
                        );
                    }
                    if !c.token_url.starts_with("http://") && !c.token_url.starts_with("https://") {
                        bad(
                            "subscriber.camara.token_url".into(),
                            "must be an http(s) URL",
                        );
                    }
                }
            }
        }
        out
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

fn check_otp(p: &OtpPolicy, prefix: &str, bad: &mut impl FnMut(String, &str)) {
    if !(4..=10).contains(&p.digits) {
        bad(format!("{prefix}.digits"), "must be 4..=10");
    }
    if p.ttl < Duration::from_secs(30) || p.ttl > Duration::from_secs(86400) {
        bad(format!("{prefix}.ttl"), "must be 30s..=24h");
    }
    if !(1..=100).contains(&p.max_attempts) {
        bad(format!("{prefix}.max_attempts"), "must be 1..=100");
    }
    if !(1..=20).contains(&p.max_sends) {
        bad(format!("{prefix}.max_sends"), "must be 1..=20");
    }
}

fn parse_secret_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s.trim()).ok()?;
    bytes.try_into().ok()
}
