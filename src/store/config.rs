//! `[store]` (contract §2): which backend, and where Redis is.

use std::fmt;

use serde::Deserialize;

use crate::config::Issues;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Memory,
    Redis,
}

/// `Debug` hides the password of every Redis URL.
#[derive(Clone, Deserialize)]
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

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("redis_url", &redact_url(&self.redis_url))
            .field(
                "redis_cluster",
                &self
                    .redis_cluster
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// The URL with the password of its user part (`redis://user:PASSWORD@host`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://PASSWORD@host` is read as a password by some clients: hide it too.
        "***".to_owned()
    };
    format!("{scheme}://{shown}@{host}{tail}")
}

impl StoreConfig {
    /// Checks of `[store]`; `at` is `store`.
    pub fn validate(&self, at: &str, issues: &mut Issues) {
        if self.backend == StoreBackend::Redis
            && self.redis_cluster.is_empty()
            && redis::parse_redis_url(&self.redis_url).is_none()
        {
            issues.error(format!("{at}.redis_url"), "not a redis:// URL");
        }
        if self.backend == StoreBackend::Redis && !self.redis_cluster.is_empty() {
            issues.error(
                format!("{at}.redis_cluster"),
                "not supported yet: the durable SMS outbox needs a single Redis endpoint (store.redis_url)",
            );
        }
        for (i, u) in self.redis_cluster.iter().enumerate() {
            if redis::parse_redis_url(u).is_none() {
                issues.error(format!("{at}.redis_cluster[{i}]"), "not a redis:// URL");
            }
        }
        if self.key_prefix.is_empty() {
            issues.error(format!("{at}.key_prefix"), "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_redis_passwords() {
        let c = StoreConfig {
            redis_url: "redis://app:s3cret-pw@10.0.0.5:6379/0".into(),
            redis_cluster: vec!["rediss://:other-pw@r1:7000".into()],
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(!shown.contains("other-pw"), "{shown}");
        assert!(shown.contains("redis://app:***@10.0.0.5:6379/0"), "{shown}");
        assert!(shown.contains("rediss://:***@r1:7000"), "{shown}");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("redis://tok@h/1"), "redis://***@h/1");
    }
}
