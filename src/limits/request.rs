//! Which limits a request is charged: the [`Plan`] of a code SMS (create, resend), a wrong code,
//! and a notification, built from `[limits]` (contract §2, §6).
//!
//! Every counter key is a keyed hash of (limit, rule, subject) made with the server key
//! ([`CodeDeriver::subject_hash`]), so no phone number, account id or IP appears in a key. The
//! pumping guard's range is the first `prefix_digits` digits of the number (a range, not a
//! number; it is what its warning names).

use super::config::{LimitsConfig, RateSpec};
use super::engine::{Charge, Mode, RangeCharge};
use super::pumping::Guard;
use super::window::{LimitName, Rule};
use crate::otp::codes::CodeDeriver;
use crate::phone::Phone;

/// What one request is charged: its counters and, for a code SMS with the guard on, its range
/// (with the guard's parameters, which the Redis engine passes to its script).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub charges: Vec<Charge>,
    pub range: Option<RangeCharge>,
    pub guard: Option<Guard>,
}

/// The `[limits]` of this daemon, ready to build plans.
#[derive(Debug, Clone)]
pub struct Limiter {
    config: LimitsConfig,
    pub guard: Option<Guard>,
}

/// The end user and account a code SMS is for.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub account: Option<&'a str>,
    pub phone: &'a Phone,
    pub ip: Option<&'a str>,
}

impl Limiter {
    pub fn new(config: &LimitsConfig) -> Limiter {
        Limiter {
            config: config.clone(),
            guard: Guard::from_config(&config.pumping_guard),
        }
    }

    /// No limits at all (benchmarks, tests of other things).
    pub fn none() -> Limiter {
        Limiter {
            config: LimitsConfig {
                per_phone: vec![],
                per_account: vec![],
                per_ip: vec![],
                account_failures: None,
                per_country: Default::default(),
                pumping_guard: Default::default(),
            },
            guard: None,
        }
    }

    fn key(codes: &CodeDeriver, limit: LimitName, rule: &RateSpec, subject: &str) -> String {
        let h = codes.subject_hash(&["limit", limit.as_str(), &rule.to_string(), subject]);
        hex::encode(&h[..16])
    }

    fn push(
        out: &mut Vec<Charge>,
        codes: &CodeDeriver,
        limit: LimitName,
        rules: &[RateSpec],
        subject: &str,
        mode: Mode,
    ) {
        for r in rules {
            out.push(Charge {
                limit,
                key: Self::key(codes, limit, r, subject),
                rule: Rule::from(*r),
                mode,
            });
        }
    }

    /// `per_country` of the number's country, when one is configured.
    fn country(&self, codes: &CodeDeriver, phone: &Phone, out: &mut Vec<Charge>) {
        if self.config.per_country.is_empty() {
            return;
        }
        if let Some(region) = region_of(phone)
            && let Some(r) = self.config.per_country.get(&region)
        {
            Self::push(
                out,
                codes,
                LimitName::PerCountry,
                std::slice::from_ref(r),
                &region,
                Mode::CheckAndRecord,
            );
        }
    }

    fn range(&self, phone: &Phone) -> Option<RangeCharge> {
        self.guard.as_ref().map(|g| RangeCharge {
            range: g.range_of(phone.e164()).to_owned(),
        })
    }

    /// A new verification: its code SMS (`per_phone`, `per_country`, the range), the account
    /// (`per_account`, and `account_failures` checked), the end user's IP (`per_ip`).
    pub fn for_create(&self, codes: &CodeDeriver, s: Subject<'_>) -> Plan {
        let mut charges = Vec::new();
        let c = &self.config;
        Self::push(
            &mut charges,
            codes,
            LimitName::PerPhone,
            &c.per_phone,
            s.phone.e164(),
            Mode::CheckAndRecord,
        );
        if let Some(a) = s.account {
            Self::push(
                &mut charges,
                codes,
                LimitName::PerAccount,
                &c.per_account,
                a,
                Mode::CheckAndRecord,
            );
            if let Some(f) = &c.account_failures {
                Self::push(
                    &mut charges,
                    codes,
                    LimitName::AccountFailures,
                    std::slice::from_ref(f),
                    a,
                    Mode::Check,
                );
            }
        }
        if let Some(ip) = s.ip {
            Self::push(
                &mut charges,
                codes,
                LimitName::PerIp,
                &c.per_ip,
                ip,
                Mode::CheckAndRecord,
            );
        }
        self.country(codes, s.phone, &mut charges);
        Plan {
            charges,
            range: self.range(s.phone),
            guard: self.guard,
        }
    }

    /// A resend: one more code SMS to the same number (`per_phone`, `per_country`, the range).
    pub fn for_resend(&self, codes: &CodeDeriver, phone: &Phone) -> Plan {
        let mut charges = Vec::new();
        Self::push(
            &mut charges,
            codes,
            LimitName::PerPhone,
            &self.config.per_phone,
            phone.e164(),
            Mode::CheckAndRecord,
        );
        self.country(codes, phone, &mut charges);
        Plan {
            charges,
            range: self.range(phone),
            guard: self.guard,
        }
    }

    /// A notification: `per_country` only.
    pub fn for_notification(&self, codes: &CodeDeriver, phone: &Phone) -> Plan {
        let mut charges = Vec::new();
        self.country(codes, phone, &mut charges);
        Plan {
            charges,
            range: None,
            guard: None,
        }
    }

    /// What a wrong code of `account` records (`account_failures`, never refusing).
    pub fn failure_charge(&self, codes: &CodeDeriver, account: &str) -> Option<Charge> {
        let f = self.config.account_failures.as_ref()?;
        Some(Charge {
            limit: LimitName::AccountFailures,
            key: Self::key(codes, LimitName::AccountFailures, f, account),
            rule: Rule::from(*f),
            mode: Mode::Record,
        })
    }

    /// The `account_failures` rule, when configured.
    pub fn failures_rule(&self) -> Option<Rule> {
        self.config.account_failures.map(Rule::from)
    }

    /// The range a code SMS to `phone` counts in (the guard's approvals), when the guard is on.
    pub fn range_of(&self, phone: &Phone) -> Option<RangeCharge> {
        self.range(phone)
    }
}

/// The ISO region of an E.164 number (`MO` for `+853…`), when the metadata knows it.
pub fn region_of(phone: &Phone) -> Option<String> {
    let n = phonenumber::parse(None, phone.e164()).ok()?;
    n.country().id().map(|c| c.as_ref().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_no_subject_and_differ_by_rule() {
        let codes = CodeDeriver::new([7; 32]);
        let l = Limiter::new(&LimitsConfig::default());
        let phone = Phone::from_e164_unchecked("+85366123456".into());
        let p = l.for_create(
            &codes,
            Subject {
                account: Some("acc-1"),
                phone: &phone,
                ip: Some("203.0.113.7"),
            },
        );
        let names: Vec<_> = p.charges.iter().map(|c| c.limit.as_str()).collect();
        assert_eq!(
            names,
            [
                "per_phone",
                "per_phone",
                "per_account",
                "account_failures",
                "per_ip"
            ]
        );
        assert_ne!(p.charges[0].key, p.charges[1].key);
        for c in &p.charges {
            assert!(!c.key.contains("66123456") && !c.key.contains("203.0"));
        }
        let f = l.failure_charge(&codes, "acc-1").expect("configured");
        assert_eq!(f.key, p.charges[3].key, "recorded where creation checks");
        assert_eq!(
            region_of(&phone).as_deref(),
            Some("MO"),
            "the country of a Macao number"
        );
    }
}
