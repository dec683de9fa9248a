//! Lost-phone number changes (contract §3.3).

use std::sync::Arc;

use super::{AccountPhones, Error, unavailable, validate};
use crate::StartError;
use crate::clock::Clock;
use crate::ids;
use crate::messages::NOTIFICATION_VALIDITY_MS;
use crate::otp::Error as OtpError;
use crate::otp::challenge::{Challenge, ResendVerdict, Status};
use crate::outbox::{Body, Job, Priority};
use crate::phone::Phone;
use crate::purpose::Purpose;
use crate::sms::{self, Locale};
use crate::store::phone_changes::{ChangeState, PhoneChange, SettleOutcome, Settled, Settlement};
use crate::store::{
    AccountEvent, AccountPhone, CheckOutcome, DeliveryStatus, EventKind, MessageRecord,
    MessageUpdate, RETENTION_AFTER_EXPIRY_MS,
};
use crate::subscriber::camara::Camara;
use crate::subscriber::static_file::StaticProvider;
use crate::subscriber::{
    Checker, Field, FieldResult, Identity, Provider, SubscriberConfig, SubscriberProvider, Verdict,
};

/// The configured carrier check (`[subscriber]`): the provider loaded once at start.
pub fn checker(cfg: &SubscriberConfig, clock: Clock) -> Result<Checker, StartError> {
    let provider: Option<Arc<dyn Provider>> = match cfg.provider {
        SubscriberProvider::None => None,
        SubscriberProvider::Static => Some(Arc::new(
            StaticProvider::load(&cfg.static_file)
                .map_err(|e| StartError::Config(format!("subscriber.static_file: {e}")))?,
        )),
        SubscriberProvider::Camara => {
            let c = cfg.camara.as_ref().ok_or_else(|| {
                StartError::Config("subscriber.camara: required with provider \"camara\"".into())
            })?;
            Some(Arc::new(
                Camara::new(c, cfg.name_score_threshold, clock)
                    .map_err(|e| StartError::Config(format!("subscriber.camara: {e}")))?,
            ))
        }
    };
    let require = cfg.require.iter().filter_map(|f| Field::parse(f)).collect();
    Ok(Checker::new(provider, require, cfg.sim_swap_max_age))
}

/// A request for a number change, validated by the API layer.
#[derive(Debug, Clone)]
pub struct NewChange {
    pub account_id: String,
    pub new_phone: Phone,
    pub locale: Option<Locale>,
    pub identity: Identity,
    pub ip: Option<String>,
}

/// The refusal reason stored for a SIM swap; a mismatch is stored as
/// `subscriber_mismatch;field=result,…`, so a retry answers what the check answered.
const SIM_SWAP: &str = "sim_swap_detected";
const MISMATCH: &str = "subscriber_mismatch;";

fn refusal_reason(fields: &[(Field, FieldResult)]) -> String {
    let list: Vec<String> = fields
        .iter()
        .map(|(f, r)| format!("{}={}", f.as_str(), r.as_str()))
        .collect();
    format!("{MISMATCH}{}", list.join(","))
}

fn refusal_error(reason: &str) -> Error {
    let Some(list) = reason.strip_prefix(MISMATCH) else {
        return Error::SimSwapped;
    };
    let fields = list
        .split(',')
        .filter_map(|kv| {
            let (f, r) = kv.split_once('=')?;
            let r = [
                FieldResult::Match,
                FieldResult::Mismatch,
                FieldResult::NotAvailable,
            ]
            .into_iter()
            .find(|x| x.as_str() == r)?;
            Some((Field::parse(f)?, r))
        })
        .collect();
    Error::Mismatch { fields }
}

fn code_error(outcome: CheckOutcome) -> Error {
    Error::Code(match outcome {
        CheckOutcome::Wrong { attempts_remaining } => {
            OtpError::CodeIncorrect { attempts_remaining }
        }
        CheckOutcome::LockedNow | CheckOutcome::Locked => OtpError::Locked,
        CheckOutcome::Expired => OtpError::Expired,
        CheckOutcome::AlreadyUsed => OtpError::AlreadyUsed,
        CheckOutcome::NotFound | CheckOutcome::Forbidden => OtpError::NotFound,
        // Not an error; callers handle it before.
        CheckOutcome::Approved => OtpError::AlreadyUsed,
    })
}

fn ceil_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000).max(1)
}

impl AccountPhones {
    /// Starts a change: a code to the new number (contract §3.3).
    pub async fn create_change(
        &self,
        client: &str,
        req: NewChange,
        now_ms: i64,
    ) -> Result<PhoneChange, Error> {
        if !self.checker.enabled() {
            return Err(Error::ChangesDisabled);
        }
        validate(&self.checker, &req.identity)?;
        let route = self
            .routing
            .route(&req.new_phone)
            .ok_or(Error::Code(OtpError::Unroutable))?;
        if self.outbox.is_full() {
            return Err(Error::Code(OtpError::QueueFull));
        }
        let policy = self.otp.policy(Purpose::PhoneChange);
        let tag = ids::random_tag();
        let pc = PhoneChange {
            id: ids::new_id("pc", &tag),
            client: client.to_owned(),
            account_id: req.account_id,
            new_phone: req.new_phone,
            locale: req.locale.unwrap_or(self.default_locale),
            challenge: Challenge {
                status: Status::Pending,
                expires_at_ms: now_ms + policy.ttl.as_millis() as i64,
                attempts_used: 0,
                max_attempts: policy.max_attempts,
                sends: 1,
                max_sends: policy.max_sends,
                last_sent_ms: now_ms,
                cooldown_ms: policy.resend_cooldown.as_millis() as i64,
            },
            digits: policy.digits,
            created_at_ms: now_ms,
            message_id: ids::new_id("msg", &tag),
            key_id: self.composer.codes.current_id().to_owned(),
            identity: req.identity,
            ip: req.ip,
            settled: None,
        };
        // The limits of a code SMS (contract §6: `per_phone` all purposes, `per_country` every
        // SMS, `per_account`, `per_ip`, the pumping guard), checked and recorded before the
        // change is stored. Not in the same store step as the creation: a store failure between
        // the two leaves one count spent (resends are bounded by `max_sends`).
        let plan = self.verifications.limits.for_create(
            &self.composer.codes,
            crate::limits::Subject {
                account: Some(&pc.account_id),
                phone: &pc.new_phone,
                ip: pc.ip.as_deref(),
            },
        );
        if let Err(r) = self.stores.limits.apply(&plan, now_ms).await? {
            crate::limits::refused(r.limit);
            return Err(Error::Code(OtpError::RateLimited(r)));
        }
        let (job, record) = self.compose_code(&pc, &pc.message_id, route, now_ms);
        self.stores.phone_changes.create(&pc, &record).await?;
        self.enqueue(job, now_ms).await?;
        metrics::counter!("otpgate_phone_changes_total", "outcome" => "created").increment(1);
        Ok(pc)
    }

    pub async fn get_change(&self, client: &str, id: &str) -> Result<PhoneChange, Error> {
        self.stores
            .phone_changes
            .get(client, id)
            .await?
            .ok_or(Error::NotFound)
    }

    /// Sends the same code again (the expiry does not move).
    pub async fn resend_change(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<PhoneChange, Error> {
        let current = self.get_change(client, id).await?;
        if self.outbox.is_full() {
            return Err(Error::Code(OtpError::QueueFull));
        }
        let tag = ids::parse("pc", id).ok_or(Error::NotFound)?;
        let message_id = ids::new_id("msg", tag);
        let route = self.routing.route_of(&current.new_phone);
        let (job, record) = self.compose_code(&current, &message_id, route, now_ms);
        let (verdict, pc) = self
            .stores
            .phone_changes
            .resend(client, id, now_ms, &record)
            .await?;
        let err = match verdict {
            ResendVerdict::Sent => {
                self.enqueue(job, now_ms).await?;
                return pc.ok_or(Error::NotFound);
            }
            ResendVerdict::NotFound => OtpError::NotFound,
            ResendVerdict::Expired => OtpError::Expired,
            ResendVerdict::AlreadyUsed => OtpError::AlreadyUsed,
            ResendVerdict::Locked => OtpError::Locked,
            ResendVerdict::Cooldown { retry_after_ms } => OtpError::ResendCooldown {
                retry_after_s: ceil_secs(retry_after_ms),
            },
            ResendVerdict::MaxSends => OtpError::MaxSends {
                retry_after_s: ceil_secs(current.challenge.expires_at_ms - now_ms),
            },
        };
        Err(Error::Code(err))
    }

    /// Checks the code; on a right one, the carrier check runs and settles the change.
    pub async fn check_change(
        &self,
        client: &str,
        id: &str,
        code: &str,
        now_ms: i64,
    ) -> Result<PhoneChange, Error> {
        let proof = self.verifications.proof(id, code);
        match self
            .stores
            .phone_changes
            .check(client, id, &proof, now_ms)
            .await?
        {
            CheckOutcome::Approved => {}
            other => return Err(code_error(other)),
        }
        // `code_verified` is stored: whatever happens to the carrier call, `/retry` can
        // finish the change until it expires.
        self.run_check(client, id, now_ms).await
    }

    /// Runs the carrier check again for a change left `code_verified` (contract §3.3).
    pub async fn retry_change(
        &self,
        client: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<PhoneChange, Error> {
        self.run_check(client, id, now_ms).await
    }

    /// The carrier check between two store operations: the change is read (after the one
    /// that verified its code), the carrier asked with its deadlines, then the outcome
    /// settled in one atomic operation.
    async fn run_check(&self, client: &str, id: &str, now_ms: i64) -> Result<PhoneChange, Error> {
        let pc = self.get_change(client, id).await?;
        match (&pc.settled, pc.state_at(now_ms)) {
            (Some(Settled::Completed), _) => return Ok(pc),
            (Some(Settled::Refused(r)), _) => return Err(refusal_error(r)),
            (None, ChangeState::CodeVerified) => {}
            (None, ChangeState::Expired) => return Err(Error::Code(OtpError::Expired)),
            (None, ChangeState::Locked) => return Err(Error::Code(OtpError::Locked)),
            (None, ChangeState::CodeSent) => return Err(Error::NotVerified),
            (None, ChangeState::Completed | ChangeState::Refused) => return Err(Error::NotFound),
        }
        let asked = std::time::Instant::now();
        let verdict = self
            .checker
            .check(&pc.new_phone, &pc.identity, now_ms)
            .await;
        // The carrier may take seconds: the settle is judged at the time it happens (a change
        // cannot complete after its `expires_at`).
        let now_ms = now_ms + i64::try_from(asked.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        let masked = pc.new_phone.masked();
        let event = |kind| {
            AccountEvent::new(kind, client, now_ms)
                .purpose(Purpose::PhoneChange.as_str())
                .phone_masked(masked.clone())
                .ip(pc.ip.as_deref())
        };
        let (reason, refused) = match verdict {
            Err(e) => {
                metrics::counter!("otpgate_phone_changes_total", "outcome" => "check_unavailable")
                    .increment(1);
                return Err(unavailable(e));
            }
            Ok(Verdict::Match { .. }) => {
                let phone = AccountPhone {
                    id: ids::new_id("ph", &ids::random_tag()),
                    phone: pc.new_phone.clone(),
                    primary: true,
                    level: 2,
                    added_at_ms: now_ms,
                };
                let ev = event(EventKind::PhoneChanged);
                let how = Settlement::Complete {
                    phone: &phone,
                    event: &ev,
                };
                return self.settled(&pc, &how, now_ms).await;
            }
            Ok(Verdict::Mismatch { fields }) => {
                (refusal_reason(&fields), Error::Mismatch { fields })
            }
            Ok(Verdict::SimSwapped) => (SIM_SWAP.to_owned(), Error::SimSwapped),
        };
        let ev = event(EventKind::PhoneChangeRefused);
        let how = Settlement::Refuse {
            reason: &reason,
            event: &ev,
        };
        self.settled(&pc, &how, now_ms).await?;
        Err(refused)
    }

    /// Applies a settlement; on completion the old primary gets the notice.
    async fn settled(
        &self,
        pc: &PhoneChange,
        how: &Settlement<'_>,
        now_ms: i64,
    ) -> Result<PhoneChange, Error> {
        let outcome = self
            .stores
            .phone_changes
            .settle(&pc.client, &pc.id, how, now_ms)
            .await?;
        let mut done = pc.clone();
        match outcome {
            SettleOutcome::NotFound => Err(Error::NotFound),
            SettleOutcome::NotVerified => Err(Error::NotVerified),
            SettleOutcome::Expired => Err(Error::Code(OtpError::Expired)),
            SettleOutcome::AlreadySettled(Settled::Completed) => {
                done.settled = Some(Settled::Completed);
                Ok(done)
            }
            SettleOutcome::AlreadySettled(Settled::Refused(r)) => Err(refusal_error(&r)),
            SettleOutcome::Refused => {
                metrics::counter!("otpgate_phone_changes_total", "outcome" => "refused")
                    .increment(1);
                done.settled = how_settled(how);
                Ok(done)
            }
            SettleOutcome::Completed { old_primary } => {
                metrics::counter!("otpgate_phone_changes_total", "outcome" => "completed")
                    .increment(1);
                if let Some(old) = old_primary
                    && self.notify_old_phone
                {
                    self.notify(pc, old, now_ms).await;
                }
                done.settled = Some(Settled::Completed);
                Ok(done)
            }
        }
    }

    /// The §4 notice to the old number, in the change request's locale. A failure to queue it
    /// is logged: the change itself is done.
    async fn notify(&self, pc: &PhoneChange, old: Phone, now_ms: i64) {
        let Some(route) = self.routing.route(&old) else {
            tracing::warn!(change = %pc.id, "no SMSC takes the old number: no phone-changed notice");
            return;
        };
        let body = Body::PhoneChanged {
            locale: pc.locale,
            new_phone_masked: pc.new_phone.masked(),
        };
        let seg = sms::split(&self.composer.render(&body).unwrap_or_default());
        let parts = self.routing.parts_on(&route, &seg);
        let id = ids::new_id("msg", &ids::random_tag());
        let expires_at_ms = now_ms + NOTIFICATION_VALIDITY_MS;
        let record = MessageRecord::queued(&id, &pc.client, &pc.id, seg.coding, parts, now_ms);
        if let Err(e) = self
            .stores
            .messages
            .create(&record, expires_at_ms + RETENTION_AFTER_EXPIRY_MS)
            .await
        {
            tracing::error!(change = %pc.id, error = %e, "phone-changed notice not recorded");
            return;
        }
        let job = Job::new(id, old, body, expires_at_ms, Priority::Notification, route);
        if let Err(e) = self.enqueue(job, now_ms).await {
            tracing::error!(change = %pc.id, error = %e, "phone-changed notice not queued");
        }
    }

    /// The outbox job of a code send of `pc` and its message record.
    fn compose_code(
        &self,
        pc: &PhoneChange,
        message_id: &str,
        route: String,
        now_ms: i64,
    ) -> (Job, MessageRecord) {
        let ttl_secs = ((pc.challenge.expires_at_ms - pc.created_at_ms) / 1000).max(1) as u64;
        let body = Body::Code {
            verification_id: pc.id.clone(),
            digits: pc.digits,
            locale: pc.locale,
            ttl_secs,
            key_id: pc.key_id.clone(),
        };
        let seg = sms::split(&self.composer.render(&body).unwrap_or_default());
        let parts = self.routing.parts_on(&route, &seg);
        let record =
            MessageRecord::queued(message_id, &pc.client, &pc.id, seg.coding, parts, now_ms);
        let job = Job::new(
            message_id.to_owned(),
            pc.new_phone.clone(),
            body,
            pc.challenge.expires_at_ms,
            Priority::Code,
            route,
        );
        (job, record)
    }

    /// Hands the job to the outbox; when that fails its message is marked failed (503).
    async fn enqueue(&self, job: Job, now_ms: i64) -> Result<(), Error> {
        let id = job.message_id.clone();
        if let Err(e) = self.outbox.push(job).await {
            tracing::error!(message_id = %id, error = %e, "could not queue SMS");
            let _ = self
                .stores
                .messages
                .update(
                    &id,
                    &MessageUpdate {
                        status: DeliveryStatus::Failed,
                        at_ms: now_ms,
                        error: Some(e.to_string()),
                    },
                )
                .await;
            return Err(Error::Code(OtpError::QueueFull));
        }
        Ok(())
    }
}

fn how_settled(how: &Settlement<'_>) -> Option<Settled> {
    Some(match how {
        Settlement::Complete { .. } => Settled::Completed,
        Settlement::Refuse { reason, .. } => Settled::Refused((*reason).to_owned()),
    })
}
