//! SMS one-time-code verifications (contract §3.1): create, resend, check, read.
//!
//! Domain rules live here ([`challenge`]: attempts, sends, cooldown, expiry); persistence and
//! atomicity in [`crate::store`]; the SMS goes to the [`crate::outbox`]. Every function takes
//! `now` from the caller.

pub mod challenge;
pub mod codes;
pub mod config;
pub mod job;

use std::sync::Arc;

use unicode_normalization::UnicodeNormalization;

use crate::config::OtpConfig;
use crate::ids;
use crate::limits::{Limiter, Plan, Refused, Subject};
use crate::outbox::{Composer, Job, Outbox, Routing};
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::sms::{self, Locale};
use crate::store::phones::LoginCreated;
use crate::store::{
    self, AccountEvent, CheckGuards, CheckOutcome, CheckRequest, CodeProof, EventKind,
    MessageRecord, ResendOutcome, SendGuards, Status, Stores, Verification, VerificationGuard,
};
use codes::codes_equal;

/// Why a verification call was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Unknown, another client's, or canceled.
    #[error("verification not found")]
    NotFound,
    #[error("verification expired")]
    Expired,
    /// Approved before: its code is spent.
    #[error("verification already used")]
    AlreadyUsed,
    /// Locked by too many wrong codes (now or before).
    #[error("too many wrong codes; verification locked")]
    Locked,
    #[error("wrong code")]
    CodeIncorrect { attempts_remaining: u32 },
    #[error("resend not yet allowed")]
    ResendCooldown { retry_after_s: u64 },
    #[error("no sends left")]
    MaxSends { retry_after_s: u64 },
    /// `login` without a phone, or with one the account has not registered.
    #[error("phone not registered for this account")]
    PhoneNotRegistered,
    /// The client may no longer use this verification's purpose.
    #[error("purpose not allowed for this client")]
    Forbidden,
    /// No SMSC takes the number (no route prefix matches and no SMSC without routes).
    #[error("no SMSC takes this number")]
    Unroutable,
    /// The SMS queue is full: delivery is not keeping up (the memory outbox; with Redis a
    /// failed queueing is a [`Error::Store`]: the entry is written by the store's script).
    #[error("SMS queue full")]
    QueueFull,
    /// Refused by a `[limits]` rule; nothing was sent or counted.
    #[error("rate limited ({})", .0.limit.as_str())]
    RateLimited(Refused),
}

/// A request for a new verification, validated by the API layer.
#[derive(Debug, Clone)]
pub struct NewVerification {
    pub purpose: Purpose,
    pub account_id: Option<String>,
    pub phone: Option<Phone>,
    pub locale: Option<Locale>,
    /// `context.ip` of the end user (`per_ip`, the account's events).
    pub ip: Option<String>,
}

/// The verification service: cheap to share behind an `Arc`.
/// Why a creation wrote nothing.
enum Refusal {
    Limited(crate::limits::Refused),
    PhoneNotRegistered,
}

pub struct Verifications {
    pub stores: Stores,
    pub composer: Arc<Composer>,
    pub otp: OtpConfig,
    pub default_locale: Locale,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    pub limits: Arc<Limiter>,
}

impl Verifications {
    pub async fn create(
        &self,
        client: &str,
        req: NewVerification,
        now_ms: i64,
    ) -> Result<Verification, Error> {
        let phone = match (req.purpose, req.phone, req.account_id.as_deref()) {
            // A login code goes only to one of the account's registered phones (contract §3.1):
            // the named one, else the primary. Whether it is still the account's is checked
            // again in the operation that creates the verification
            // (`PhoneStore::create_login_verification`), so a phone removed meanwhile is
            // never sent a code.
            (Purpose::Login, _, None) => return Err(Error::PhoneNotRegistered),
            (Purpose::Login, Some(p), Some(_)) => p,
            (Purpose::Login, None, Some(account)) => self
                .stores
                .phones
                .list(account)
                .await?
                .into_iter()
                .find(|p| p.primary)
                .map(|p| p.phone)
                .ok_or(Error::PhoneNotRegistered)?,
            (_, Some(p), _) => p,
            (_, None, _) => return Err(Error::PhoneNotRegistered),
        };
        let route = self.routing.route(&phone).ok_or(Error::Unroutable)?;
        let policy = self.otp.policy(req.purpose);
        let subject_key = match &req.account_id {
            Some(a) => format!("a:{a}"),
            None => format!("p:{}", phone.e164()),
        };
        let codes = &self.composer.codes;
        let subject = codes.subject_hash(&[client, req.purpose.as_str(), &subject_key]);
        let tag = ids::tag_of(&subject);
        let id = ids::new_id("ver", &tag);
        let message_id = ids::new_id("msg", &tag);
        let ttl_ms = policy.ttl.as_millis() as i64;
        let plan = self.limits.for_create(
            codes,
            Subject {
                account: req.account_id.as_deref(),
                phone: &phone,
                ip: req.ip.as_deref(),
            },
        );
        let guard = VerificationGuard {
            failures_key: req
                .account_id
                .as_deref()
                .and_then(|a| self.limits.failure_charge(codes, a))
                .map(|c| c.key),
            range: plan.range.as_ref().map(|r| r.range.clone()),
            ip: req.ip,
        };
        let v = Verification {
            id,
            client: client.to_owned(),
            purpose: req.purpose,
            account_id: req.account_id,
            phone,
            locale: req.locale.unwrap_or(self.default_locale),
            status: Status::Pending,
            digits: policy.digits,
            created_at_ms: now_ms,
            expires_at_ms: now_ms + ttl_ms,
            attempts_used: 0,
            max_attempts: policy.max_attempts,
            sends: 1,
            max_sends: policy.max_sends,
            last_sent_ms: now_ms,
            cooldown_ms: policy.resend_cooldown.as_millis() as i64,
            message_id: message_id.clone(),
            subject: hex::encode(&subject[..16]),
            key_id: codes.current_id().to_owned(),
            guard,
        };
        let (job, record) = self.compose(&v, &message_id, route, now_ms);
        let event = v.account_id.as_ref().map(|_| sent_event(&v, now_ms));
        let guards = SendGuards {
            plan: &plan,
            account: v.account_id.as_deref(),
            event: event.as_ref(),
            job: Some(&job),
        };
        // One atomic operation: limits, the subject's previous verification canceled, the new
        // one, its SMS record and event, and the SMS queued. The memory outbox cannot be part
        // of the store's step: room is reserved first, so the push after it cannot fail.
        let created = match &self.outbox {
            Outbox::Memory(m) => {
                let room = m.reserve().map_err(|_| Error::QueueFull)?;
                let out = self
                    .store_create(
                        &v,
                        &record,
                        SendGuards {
                            job: None,
                            ..guards
                        },
                    )
                    .await?;
                if out.is_ok() {
                    room.push(job);
                }
                out
            }
            Outbox::Redis(_) => self.store_create(&v, &record, guards).await?,
        };
        match created {
            Ok(()) => {}
            Err(Refusal::Limited(r)) => return Err(self.refused(client, &v, r, now_ms).await),
            Err(Refusal::PhoneNotRegistered) => return Err(Error::PhoneNotRegistered),
        }
        metrics::counter!("otpgate_verifications_total", "purpose" => v.purpose.as_str(), "outcome" => "created").increment(1);
        Ok(v)
    }

    /// The store operation that creates `v`: for a login, only if its phone is (still) one of
    /// the account's registered phones, checked in the same operation.
    async fn store_create(
        &self,
        v: &Verification,
        record: &MessageRecord,
        guards: SendGuards<'_>,
    ) -> Result<Result<(), Refusal>, Error> {
        Ok(match (v.purpose, v.account_id.as_deref()) {
            (Purpose::Login, Some(account)) => {
                match self
                    .stores
                    .phones
                    .create_login_verification(account, v, record, guards)
                    .await?
                {
                    Ok(LoginCreated::Created) => Ok(()),
                    Ok(LoginCreated::PhoneNotRegistered) => Err(Refusal::PhoneNotRegistered),
                    Err(r) => Err(Refusal::Limited(r)),
                }
            }
            _ => self
                .stores
                .verifications
                .create(v, record, guards)
                .await?
                .map_err(Refusal::Limited),
        })
    }

    /// A request refused by a limit: counted by limit, written to the account's events.
    async fn refused(&self, client: &str, v: &Verification, r: Refused, now_ms: i64) -> Error {
        crate::limits::refused(r.limit);
        if let Some(a) = &v.account_id {
            let e = AccountEvent::new(EventKind::RateLimited, client, now_ms)
                .purpose(v.purpose.as_str())
                .phone_masked(v.phone.masked())
                .ip(v.guard.ip.as_deref())
                .detail(r.limit.as_str());
            if let Err(err) = self.stores.events.append(a, &e).await {
                tracing::warn!(error = %err, "could not record a refusal in the account's events");
            }
        }
        Error::RateLimited(r)
    }

    /// Sends the code again; `allowed` are the purposes the calling client may use.
    pub async fn resend(
        &self,
        client: &str,
        allowed: &[Purpose],
        id: &str,
        now_ms: i64,
    ) -> Result<Verification, Error> {
        let Some(current) = self.stores.verifications.get(client, id).await? else {
            return Err(Error::NotFound);
        };
        if !allowed.contains(&current.purpose) {
            return Err(Error::Forbidden);
        }
        let tag = ids::parse("ver", id).ok_or(Error::NotFound)?;
        let message_id = ids::new_id("msg", tag);
        let route = self.routing.route_of(&current.phone);
        let (job, record) = self.compose(&current, &message_id, route, now_ms);
        let plan: Plan = self.limits.for_resend(&self.composer.codes, &current.phone);
        let event = current
            .account_id
            .as_ref()
            .map(|_| sent_event(&current, now_ms));
        let guards = SendGuards {
            plan: &plan,
            account: current.account_id.as_deref(),
            event: event.as_ref(),
            job: Some(&job),
        };
        let outcome = match &self.outbox {
            Outbox::Memory(m) => {
                let room = m.reserve().map_err(|_| Error::QueueFull)?;
                let out = self
                    .stores
                    .verifications
                    .resend(
                        client,
                        id,
                        now_ms,
                        &record,
                        SendGuards {
                            job: None,
                            ..guards
                        },
                    )
                    .await?;
                if let ResendOutcome::Sent(_) = out {
                    room.push(job);
                }
                out
            }
            Outbox::Redis(_) => {
                self.stores
                    .verifications
                    .resend(client, id, now_ms, &record, guards)
                    .await?
            }
        };
        match outcome {
            ResendOutcome::Sent(v) => {
                metrics::counter!("otpgate_verifications_total", "purpose" => v.purpose.as_str(), "outcome" => "resent").increment(1);
                Ok(*v)
            }
            ResendOutcome::Limited(r) => Err(self.refused(client, &current, r, now_ms).await),
            ResendOutcome::NotFound => Err(Error::NotFound),
            ResendOutcome::Expired => Err(Error::Expired),
            ResendOutcome::AlreadyUsed => Err(Error::AlreadyUsed),
            ResendOutcome::Locked => Err(Error::Locked),
            ResendOutcome::Cooldown { retry_after_ms } => {
                metrics::counter!("otpgate_rate_limited_total", "limit" => "resend_cooldown")
                    .increment(1);
                Err(Error::ResendCooldown {
                    retry_after_s: ceil_secs(retry_after_ms),
                })
            }
            ResendOutcome::MaxSends => {
                metrics::counter!("otpgate_rate_limited_total", "limit" => "max_sends")
                    .increment(1);
                Err(Error::MaxSends {
                    retry_after_s: ceil_secs(current.expires_at_ms - now_ms),
                })
            }
        }
    }

    /// Checks a code: `Ok` when it approved the verification just now. `allowed` are the
    /// purposes the calling client may use (a verification of another purpose is refused
    /// without counting an attempt).
    pub async fn check(
        &self,
        client: &str,
        allowed: &[Purpose],
        id: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<(), Error> {
        let proof = self.proof(id, code);
        let checked = self
            .stores
            .verifications
            .check(
                id,
                &CheckRequest {
                    client,
                    allowed,
                    proof: &proof,
                    now_ms,
                    guards: CheckGuards {
                        failures_rule: self.limits.failures_rule(),
                        guard: self.limits.guard,
                    },
                },
            )
            .await?;
        let outcome = checked.outcome;
        let label = match outcome {
            CheckOutcome::Approved => "approved",
            CheckOutcome::Wrong { .. } => "code_incorrect",
            CheckOutcome::LockedNow => "locked",
            CheckOutcome::Locked => "locked_retry",
            CheckOutcome::Expired => "expired",
            CheckOutcome::AlreadyUsed => "already_used",
            CheckOutcome::NotFound => "not_found",
            CheckOutcome::Forbidden => "forbidden",
        };
        if let Some(p) = checked.purpose {
            metrics::counter!("otpgate_verifications_total", "purpose" => p.as_str(), "outcome" => label).increment(1);
        }
        match outcome {
            CheckOutcome::Approved => Ok(()),
            CheckOutcome::Wrong { attempts_remaining } => {
                Err(Error::CodeIncorrect { attempts_remaining })
            }
            CheckOutcome::LockedNow | CheckOutcome::Locked => Err(Error::Locked),
            CheckOutcome::Expired => Err(Error::Expired),
            CheckOutcome::AlreadyUsed => Err(Error::AlreadyUsed),
            CheckOutcome::NotFound => Err(Error::NotFound),
            CheckOutcome::Forbidden => Err(Error::Forbidden),
        }
    }

    /// For which keys and lengths `code` is right. Codes of every length are prefixes of one
    /// HMAC digit stream of the id per key, so the submitted code is compared (in constant
    /// time) with each key's stream prefix of its own length; the store learns only these
    /// matches and decides in one atomic operation whether one is the verification's own.
    /// Compatibility forms are folded first (NFKC), so full-width digits from CJK input
    /// methods (`１２３４５６`) count as the digits they show.
    pub(crate) fn proof(&self, id: &str, code: &str) -> CodeProof {
        let folded: String = code.nfkc().collect();
        let given = folded.trim();
        let len_ok = (4..=10).contains(&given.len()) && given.bytes().all(|b| b.is_ascii_digit());
        let len = if len_ok { given.len() as u8 } else { 10 };
        let mut matches = Vec::new();
        for (key_id, codes) in self.composer.codes.keys() {
            // Every key is compared, matching or not, so the time taken says nothing.
            let expected = codes.numeric("otp", id, len);
            if codes_equal(&expected, given) && len_ok {
                matches.push((key_id.to_owned(), len));
            }
        }
        CodeProof {
            current_key_id: self.composer.codes.current_id().to_owned(),
            matches,
        }
    }

    pub async fn get(
        &self,
        client: &str,
        id: &str,
    ) -> Result<(Verification, Option<MessageRecord>), Error> {
        let v = self
            .stores
            .verifications
            .get(client, id)
            .await?
            .ok_or(Error::NotFound)?;
        let msg = self.stores.messages.get(&v.message_id).await?;
        Ok((v, msg))
    }

    /// The outbox job of a send of `v` on `route` and its message record.
    fn compose(
        &self,
        v: &Verification,
        message_id: &str,
        route: String,
        now_ms: i64,
    ) -> (Job, MessageRecord) {
        let job = job::code_job(v, message_id, route);
        // Rendered here only to know the encoding and parts; the session renders it again. A
        // new verification is made under the current key, which always renders.
        let seg = sms::split(&self.composer.render(&job.body).unwrap_or_default());
        let parts = self.routing.parts_on(&job.route, &seg);
        let record = MessageRecord::queued(message_id, &v.client, &v.id, seg.coding, parts, now_ms);
        (job, record)
    }
}

/// `verification_sent` for the account's history (create and each resend).
fn sent_event(v: &Verification, now_ms: i64) -> AccountEvent {
    AccountEvent::new(EventKind::VerificationSent, &v.client, now_ms)
        .purpose(v.purpose.as_str())
        .phone_masked(v.phone.masked())
        .ip(v.guard.ip.as_deref())
}

fn ceil_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000).max(1)
}
