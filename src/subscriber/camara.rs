//! The `camara` provider: CAMARA KYC Match 0.4 (`POST {base_url}/kyc-match/v0.4/match`) and
//! SIM Swap 2 (`POST {base_url}/sim-swap/v2/check`), authorised with an OAuth2 client-credentials
//! token from `token_url` (RFC 6749 §4.4, client authenticated with HTTP Basic).
//!
//! The token is cached until shortly before it expires and fetched again once when a call
//! answers 401. Every call carries a fresh `x-correlator` (logged, so an operator can quote it
//! to the carrier) and has a deadline. Answers map to the contract as §6 says: a 404
//! `IDENTIFIER_NOT_FOUND` or 403 `KNOW_YOUR_CUSTOMER.ID_DOCUMENT_MISMATCH` is a mismatch;
//! other 401/403 (and `ID_DOCUMENT_REQUIRED`, 400) are configuration faults, logged at error
//! level; 429, 5xx and time-outs are the carrier being unavailable.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::config::CamaraConfig;
use super::{Error, Field, FieldResult, Identity, KycAnswer, Provider};
use crate::clock::Clock;
use crate::phone::Phone;

/// Time to connect to the carrier.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for one whole call (token, match or SIM swap).
const CALL_TIMEOUT: Duration = Duration::from_secs(8);
/// A token is renewed this long before the carrier says it expires.
const TOKEN_MARGIN_MS: i64 = 30_000;
/// When the token answer has no `expires_in`.
const DEFAULT_TOKEN_LIFE_MS: i64 = 300_000;

struct Token {
    value: String,
    renew_at_ms: i64,
}

pub struct Camara {
    http: reqwest::Client,
    match_url: String,
    sim_swap_url: String,
    token_url: String,
    client_id: String,
    client_secret: String,
    name_score_threshold: u8,
    clock: Clock,
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Camara {
    pub fn new(
        cfg: &CamaraConfig,
        name_score_threshold: u8,
        clock: Clock,
    ) -> Result<Camara, reqwest::Error> {
        Self::with_timeout(cfg, name_score_threshold, clock, CALL_TIMEOUT)
    }

    /// As `new`, with another deadline per call (tests).
    pub fn with_timeout(
        cfg: &CamaraConfig,
        name_score_threshold: u8,
        clock: Clock,
        call_timeout: Duration,
    ) -> Result<Camara, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(call_timeout))
            .timeout(call_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let base = cfg.base_url.trim_end_matches('/');
        Ok(Camara {
            http,
            match_url: format!("{base}/kyc-match/v0.4/match"),
            sim_swap_url: format!("{base}/sim-swap/v2/check"),
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.expose().to_owned(),
            name_score_threshold,
            clock,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A valid token: the cached one, or a fresh one when `renew` or when it is due.
    async fn token(&self, renew: bool) -> Result<String, Error> {
        let mut slot = self.token.lock().await;
        let now = self.clock.now_ms();
        if !renew
            && let Some(t) = slot.as_ref()
            && t.renew_at_ms > now
        {
            return Ok(t.value.clone());
        }
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.token_url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                observe("token", "unavailable", started);
                return Err(unavailable("token", &e));
            }
        };
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            observe("token", "unavailable", started);
            return Err(Error::Unavailable {
                reason: format!("token endpoint answered {status}"),
            });
        }
        if !status.is_success() {
            observe("token", "misconfigured", started);
            return Err(Error::Misconfigured {
                reason: format!("token endpoint answered {status} (client_id/client_secret?)"),
            });
        }
        let body: Value = resp.json().await.map_err(|e| unavailable("token", &e))?;
        let value = body["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Misconfigured {
                reason: "token endpoint answered without access_token".into(),
            })?
            .to_owned();
        let life_ms = body["expires_in"]
            .as_i64()
            .map_or(DEFAULT_TOKEN_LIFE_MS, |s| s.saturating_mul(1000));
        observe("token", "ok", started);
        *slot = Some(Token {
            value: value.clone(),
            renew_at_ms: now + (life_ms - TOKEN_MARGIN_MS).max(life_ms / 2),
        });
        Ok(value)
    }

    /// POSTs `body` to `url` with the token; on a 401, once more with a fresh token.
    async fn call(&self, api: &'static str, url: &str, body: &Value) -> Result<Reply, Error> {
        let mut renew = false;
        loop {
            let token = self.token(renew).await?;
            let correlator = correlator();
            let started = Instant::now();
            let sent = self
                .http
                .post(url)
                .bearer_auth(&token)
                .header("x-correlator", &correlator)
                .json(body)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    observe(api, "unavailable", started);
                    tracing::warn!(api, %correlator, error = %e, "carrier call failed");
                    return Err(unavailable(api, &e));
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && !renew {
                renew = true;
                continue;
            }
            let body: Value = match resp.json().await {
                Ok(b) => b,
                // A success whose body is cut off or is not JSON says nothing about the
                // subscriber: the carrier is unavailable, never a mismatch (nor a match).
                Err(e) if (200..300).contains(&status) => {
                    observe(api, "unavailable", started);
                    tracing::warn!(api, %correlator, error = %e, "carrier answer unreadable");
                    return Err(unavailable(api, &e));
                }
                Err(_) => Value::Null,
            };
            let code = body["code"].as_str().unwrap_or("").to_owned();
            let outcome = match status {
                200..=299 => "ok",
                429 | 500..=599 => "unavailable",
                _ => "error",
            };
            observe(api, outcome, started);
            tracing::info!(api, %correlator, status, code, "carrier answered");
            return Ok(Reply { status, code, body });
        }
    }
}

struct Reply {
    status: u16,
    code: String,
    body: Value,
}

impl Reply {
    /// The errors every CAMARA call shares.
    fn common_error(&self, api: &str) -> Error {
        if self.status == 429 || self.status >= 500 {
            return Error::Unavailable {
                reason: format!("{api} answered {} {}", self.status, self.code),
            };
        }
        let e = Error::Misconfigured {
            reason: format!("{api} answered {} {}", self.status, self.code),
        };
        tracing::error!(api, status = self.status, code = %self.code, "carrier check misconfigured: the carrier refuses otpgate's requests");
        e
    }
}

fn correlator() -> String {
    format!("otpgate-{:032x}", rand::random::<u128>())
}

fn unavailable(api: &str, e: &reqwest::Error) -> Error {
    Error::Unavailable {
        reason: format!(
            "{api}: {}",
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.to_string()
            }
        ),
    }
}

fn observe(api: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("otpgate_carrier_calls_total", "api" => api, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("otpgate_carrier_call_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
}

/// The KYC Match request body: the number and every identity field given.
pub fn match_request(phone: &Phone, identity: &Identity) -> Value {
    let mut m = Map::new();
    m.insert("phoneNumber".into(), json!(phone.e164()));
    for (f, v) in identity.given() {
        m.insert(f.camara().into(), json!(v));
    }
    Value::Object(m)
}

/// Reads a 200 answer of KYC Match: `<field>Match` "true" | "false" | "not_available", and for
/// names a `<field>MatchScore` that may turn a "false" into a match.
pub fn read_match(body: &Value, identity: &Identity, threshold: u8) -> KycAnswer {
    let fields = identity
        .given()
        .map(|(f, _)| {
            let r = match body[format!("{}Match", f.camara())].as_str() {
                Some("true") => FieldResult::Match,
                Some("false") => {
                    let score = body[format!("{}MatchScore", f.camara())].as_u64();
                    if f.is_name() && score.is_some_and(|s| s >= u64::from(threshold)) {
                        FieldResult::Match
                    } else {
                        FieldResult::Mismatch
                    }
                }
                _ => FieldResult::NotAvailable,
            };
            (f, r)
        })
        .collect();
    KycAnswer {
        fields,
        refused: false,
    }
}

impl Provider for Camara {
    fn kyc_match<'a>(
        &'a self,
        phone: &'a Phone,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<KycAnswer, Error>> {
        Box::pin(async move {
            let r = self
                .call(
                    "kyc_match",
                    &self.match_url,
                    &match_request(phone, identity),
                )
                .await?;
            match (r.status, r.code.as_str()) {
                (200, _) => Ok(read_match(&r.body, identity, self.name_score_threshold)),
                (404, "IDENTIFIER_NOT_FOUND") => Ok(KycAnswer::no_subscriber(identity)),
                (403, "KNOW_YOUR_CUSTOMER.ID_DOCUMENT_MISMATCH") => Ok(KycAnswer {
                    fields: identity
                        .given()
                        .map(|(f, _)| {
                            let r = if f == Field::IdDocument {
                                FieldResult::Mismatch
                            } else {
                                FieldResult::NotAvailable
                            };
                            (f, r)
                        })
                        .collect(),
                    refused: true,
                }),
                _ => Err(r.common_error("kyc_match")),
            }
        })
    }

    fn sim_swapped<'a>(
        &'a self,
        phone: &'a Phone,
        max_age_hours: u32,
        _now_ms: i64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let body = json!({"phoneNumber": phone.e164(), "maxAge": max_age_hours});
            let r = self.call("sim_swap", &self.sim_swap_url, &body).await?;
            match r.status {
                200 => r.body["swapped"]
                    .as_bool()
                    .ok_or_else(|| Error::Unavailable {
                        reason: "sim_swap answered without `swapped`".into(),
                    }),
                _ => Err(r.common_error("sim_swap")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_on_a_score_at_the_threshold() {
        let id = Identity {
            id_document: Some("1".into()),
            name: Some("a".into()),
            given_name: Some("b".into()),
            family_name: Some("c".into()),
            birthdate: Some("1990-01-01".into()),
            ..Default::default()
        };
        let body = json!({
            "idDocumentMatch": "true",
            "nameMatch": "false", "nameMatchScore": 90,
            "givenNameMatch": "false", "givenNameMatchScore": 89,
            "familyNameMatch": "not_available",
            "birthdateMatch": "false"
        });
        let a = read_match(&body, &id, 90);
        use FieldResult::*;
        assert_eq!(
            a.fields,
            vec![
                (Field::IdDocument, Match),
                (Field::Name, Match),
                (Field::GivenName, Mismatch),
                (Field::FamilyName, NotAvailable),
                (Field::Birthdate, Mismatch),
            ]
        );
    }

    #[test]
    fn correlators_fit_the_spec_pattern() {
        let c = correlator();
        assert!(c.len() <= 256);
        assert!(
            c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_:;./<>{}".contains(ch))
        );
    }
}
