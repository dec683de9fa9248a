//! The limit rules, one suite over both engines: the memory engine and the Lua that Redis
//! runs. Every scenario is a table of (time, request, expected answer) with an injected clock.

use otpgate::limits::pumping::Guard;
use otpgate::limits::{Charge, LimitName, MemoryLimits, Mode, RangeCharge, Refused, Rule};

use crate::util::*;

enum Engine {
    Memory(MemoryLimits),
    Redis {
        conn: redis::aio::MultiplexedConnection,
        prefix: String,
        guard: Option<Guard>,
        script: redis::Script,
    },
}

impl Engine {
    async fn both(guard: Option<Guard>) -> [Engine; 2] {
        require_redis().await;
        let client = redis::Client::open(redis_url()).expect("url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        [
            Engine::Memory(MemoryLimits::new(guard)),
            Engine::Redis {
                conn,
                prefix: test_prefix(),
                guard,
                script: otpgate::limits::redis::apply_script(),
            },
        ]
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Memory(_) => "memory",
            Engine::Redis { .. } => "redis",
        }
    }

    async fn apply(
        &mut self,
        charges: &[Charge],
        range: Option<&RangeCharge>,
        now: i64,
    ) -> Result<(), Refused> {
        match self {
            Engine::Memory(m) => m.apply(charges, range, now),
            Engine::Redis {
                conn,
                prefix,
                guard,
                script,
            } => {
                let mut inv = script.prepare_invoke();
                inv.arg(now).arg(charges.len());
                let range = match (range, guard.as_ref()) {
                    (Some(r), Some(g)) => Some((r, g)),
                    _ => None,
                };
                otpgate::limits::redis::add_args(&mut inv, charges, range, |k| {
                    format!("{prefix}l:{k}")
                });
                let reply: Vec<redis::Value> = inv.invoke_async(conn).await.expect("script");
                match otpgate::limits::redis::parse_reply(&reply) {
                    None => Ok(()),
                    Some((r, _)) => Err(r),
                }
            }
        }
    }
}

fn c(limit: LimitName, key: &str, count: u32, window_ms: i64, mode: Mode) -> Charge {
    Charge {
        limit,
        key: key.into(),
        rule: Rule { count, window_ms },
        mode,
    }
}

fn refused(limit: LimitName, retry_after_ms: i64) -> Result<(), Refused> {
    Err(Refused {
        limit,
        retry_after_ms,
    })
}

#[tokio::test]
async fn both_engines_agree_on_every_rule() {
    use LimitName::*;
    use Mode::*;
    let phone5 = c(PerPhone, "ph", 2, 1000, CheckAndRecord);
    let phone_day = c(PerPhone, "ph-day", 3, 10_000, CheckAndRecord);
    let ip = c(PerIp, "ip", 1, 500, CheckAndRecord);
    let fail_rec = c(AccountFailures, "acc-f", 2, 1000, Record);
    let fail_chk = c(AccountFailures, "acc-f", 2, 1000, Check);
    #[allow(clippy::type_complexity)]
    let table: Vec<(i64, Vec<Charge>, Result<(), Refused>)> = vec![
        // Two per second and three per ten seconds for one phone.
        (0, vec![phone5.clone(), phone_day.clone()], Ok(())),
        (10, vec![phone5.clone(), phone_day.clone()], Ok(())),
        (
            20,
            vec![phone5.clone(), phone_day.clone()],
            refused(PerPhone, 980),
        ),
        // A retry at the announced time passes.
        (1000, vec![phone5.clone(), phone_day.clone()], Ok(())),
        // Now the day rule is full: the longest wait is reported.
        (
            1010,
            vec![phone5.clone(), phone_day.clone()],
            refused(PerPhone, 8990),
        ),
        (10_000, vec![phone5.clone(), phone_day.clone()], Ok(())),
        (
            10_005,
            vec![phone5.clone(), phone_day.clone()],
            refused(PerPhone, 5),
        ),
        (10_010, vec![phone5.clone(), phone_day.clone()], Ok(())),
        // A request refused by one rule consumes none: the IP is full, the phone is not charged.
        (20_000, vec![ip.clone()], Ok(())),
        (
            20_001,
            vec![phone5.clone(), ip.clone()],
            refused(PerIp, 499),
        ),
        (
            20_002,
            vec![phone5.clone(), ip.clone()],
            refused(PerIp, 498),
        ),
        (20_003, vec![phone5.clone()], Ok(())),
        (20_004, vec![phone5.clone()], Ok(())),
        (20_005, vec![phone5.clone()], refused(PerPhone, 998)),
        // Wrong codes are recorded without refusing; creation only checks them.
        (30_000, vec![fail_chk.clone()], Ok(())),
        (30_001, vec![fail_rec.clone()], Ok(())),
        (30_002, vec![fail_chk.clone()], Ok(())),
        (30_003, vec![fail_rec.clone()], Ok(())),
        (30_004, vec![fail_rec.clone()], Ok(())),
        (
            30_005,
            vec![fail_chk.clone()],
            refused(AccountFailures, 998),
        ),
        (31_002, vec![fail_chk.clone()], refused(AccountFailures, 1)),
        (31_003, vec![fail_chk.clone()], Ok(())),
    ];
    for mut e in Engine::both(None).await {
        for (i, (now, charges, want)) in table.iter().enumerate() {
            let got = e.apply(charges, None, *now).await;
            assert_eq!(&got, want, "{} row {i} at {now}", e.name());
        }
    }
}

#[tokio::test]
async fn both_engines_agree_on_the_pumping_guard() {
    let g = Guard {
        prefix_digits: 6,
        window_ms: 12_000,
        min_sent: 5,
        min_approval_ratio: 0.5,
        cool_off_ms: 3_000,
    };
    let a = RangeCharge {
        range: "853661".into(),
    };
    let b = RangeCharge {
        range: "853662".into(),
    };
    for mut e in Engine::both(Some(g)).await {
        let name = e.name();
        for t in 0..5 {
            assert_eq!(e.apply(&[], Some(&a), t).await, Ok(()), "{name} {t}");
        }
        // Five sent, none approved: the sixth closes the range for the cool-off.
        assert_eq!(
            e.apply(&[], Some(&a), 5).await,
            refused(LimitName::PumpingGuard, 3000),
            "{name}"
        );
        assert_eq!(
            e.apply(&[], Some(&a), 1005).await,
            refused(LimitName::PumpingGuard, 2000),
            "{name}"
        );
        // A rule that refuses with a short wait while the range is closed for longer: the
        // longer wait is announced (a retry after the short one would still be refused).
        let ph = c(LimitName::PerPhone, "ph-g", 1, 100, Mode::CheckAndRecord);
        assert_eq!(
            e.apply(std::slice::from_ref(&ph), None, 1000).await,
            Ok(()),
            "{name}"
        );
        assert_eq!(
            e.apply(std::slice::from_ref(&ph), Some(&a), 1010).await,
            refused(LimitName::PumpingGuard, 1995),
            "{name}"
        );
        // Another range keeps working.
        assert_eq!(e.apply(&[], Some(&b), 1006).await, Ok(()), "{name}");
        // After the cool-off the range is open again.
        assert_eq!(e.apply(&[], Some(&a), 3005).await, Ok(()), "{name}");
    }
}
