//! TOTP domain code at its outer seams: codes from Debian's `oathtool` (a second, independent
//! RFC 6238 implementation) run through the `check`/`confirm` rules, an enrolment's URI
//! survives the sealed stored form, and the QR SVG, rendered by a real SVG renderer, decodes
//! to the `otpauth://` URI. (HTTP and store tests come with the handlers.)

use std::process::Command;

use otpgate::totp::rules::{TotpOp, TotpOutcome, TotpState, TotpStatus, decide};
use otpgate::totp::seal::{SealedSecret, SecretSealer};
use otpgate::totp::secret::{TotpSecret, enrol, step_of};
use resvg::{tiny_skia, usvg};
use time::macros::datetime;

const TTL_MS: i64 = 300_000;

/// `oathtool --totp -b SECRET --now "…"`: the code oathtool computes for that instant.
pub(crate) fn oathtool(base32: &str, at_unix: i64) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp(at_unix).unwrap();
    let now = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        when.year(),
        when.month() as u8,
        when.day(),
        when.hour(),
        when.minute(),
        when.second()
    );
    let out = Command::new("oathtool")
        .args(["--totp", "-b", base32, "--now", &now])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run oathtool ({e}): install Debian's `oathtool` package (scripts/test does)"
            )
        });
    assert!(
        out.status.success(),
        "oathtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 6, "{code}");
    code
}

fn t0() -> i64 {
    datetime!(2026-11-29 10:00:00 UTC).unix_timestamp()
}

fn active(secret_step_before: u64) -> TotpState {
    TotpState {
        status: TotpStatus::Active,
        last_step: Some(secret_step_before),
        ..TotpState::enrolled(5)
    }
}

/// What `check` answers for `code` at `at_unix` on `state`.
fn check(secret: &TotpSecret, state: &TotpState, code: &str, at_unix: i64) -> TotpOutcome {
    let now_ms = at_unix * 1000;
    let steps = secret.matching_steps(code, now_ms);
    decide(state, TotpOp::Check, &steps, now_ms, TTL_MS).outcome
}

#[test]
fn oathtool_codes_are_accepted() {
    let rfc = TotpSecret::from_bytes(*b"12345678901234567890");
    let random = TotpSecret::generate(&mut rand::rng());
    for secret in [rfc, random] {
        for offset in [0, 1, 29, 30, 59, 3_600, 86_399] {
            let at = t0() + offset;
            let code = oathtool(&secret.base32(), at);
            let step = step_of(at * 1000);
            assert_eq!(secret.code_at_step(step), code, "at {at}");
            let state = active(step - 5);
            assert_eq!(
                check(&secret, &state, &code, at),
                TotpOutcome::Approved { step },
                "at {at}"
            );
        }
    }
}

#[test]
fn oathtool_codes_one_step_off_are_accepted_two_are_not() {
    let secret = TotpSecret::generate(&mut rand::rng());
    let now = t0() + 12;
    let state = active(step_of(now * 1000) - 10);
    for off in [-30, 30] {
        let code = oathtool(&secret.base32(), now + off);
        assert!(
            matches!(
                check(&secret, &state, &code, now),
                TotpOutcome::Approved { .. }
            ),
            "{off} s"
        );
    }
    for off in [-60, 60, -90, 90] {
        let code = oathtool(&secret.base32(), now + off);
        // One random secret could make a code of ±2 steps equal one inside the window;
        // the chance (3 in a million) is far below anything that matters here.
        assert_eq!(
            check(&secret, &state, &code, now),
            TotpOutcome::Incorrect {
                attempts_remaining: 4
            },
            "{off} s"
        );
    }
}

#[test]
fn a_confirmed_code_cannot_be_replayed() {
    let secret = TotpSecret::generate(&mut rand::rng());
    let at = t0();
    let code = oathtool(&secret.base32(), at);
    let steps = secret.matching_steps(&code, at * 1000);
    let confirmed = decide(
        &TotpState::enrolled(5),
        TotpOp::Confirm,
        &steps,
        at * 1000,
        TTL_MS,
    );
    let step = step_of(at * 1000);
    assert_eq!(confirmed.outcome, TotpOutcome::Activated { step });
    let state = confirmed.next.unwrap();
    // Same code 10 s later (same step), then 35 s later (previous step for the window).
    for later in [10, 35] {
        assert_eq!(
            check(&secret, &state, &code, at + later),
            TotpOutcome::Replayed {
                attempts_remaining: 5
            }
        );
    }
    let next = oathtool(&secret.base32(), at + 30);
    assert_eq!(
        check(&secret, &state, &next, at + 30),
        TotpOutcome::Approved { step: step + 1 }
    );
}

#[test]
fn the_lock_holds_for_the_ttl_and_lifts_with_a_right_code() {
    let secret = TotpSecret::generate(&mut rand::rng());
    let at = t0();
    let mut state = active(step_of(at * 1000) - 10);
    let right = oathtool(&secret.base32(), at);
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    for i in 1..=5 {
        let d = decide(
            &state,
            TotpOp::Check,
            &secret.matching_steps(wrong, at * 1000),
            at * 1000,
            TTL_MS,
        );
        state = d.next.unwrap();
        if i < 5 {
            assert_eq!(
                d.outcome,
                TotpOutcome::Incorrect {
                    attempts_remaining: 5 - i
                }
            );
        } else {
            assert!(matches!(d.outcome, TotpOutcome::LockedNow { .. }));
        }
    }
    assert!(matches!(
        check(&secret, &state, &right, at),
        TotpOutcome::Locked { .. }
    ));
    let after = at + TTL_MS / 1000;
    let right_after = oathtool(&secret.base32(), after);
    assert!(matches!(
        check(&secret, &state, &right_after, after),
        TotpOutcome::Approved { .. }
    ));
}

#[test]
fn an_enrolment_works_in_oathtool_after_the_sealed_round_trip() {
    let sealer = SecretSealer::new(("k1", &[5; 32]), &[]);
    let secret = TotpSecret::generate(&mut rand::rng());
    let e = enrol(&secret, "One Account", "acc-123").unwrap();
    let stored = sealer.seal(&secret, "acc-123", &mut rand::rng()).encode();
    assert!(!stored.contains(&e.secret_base32));
    let reopened = sealer
        .open(&SealedSecret::decode(&stored).unwrap(), "acc-123")
        .unwrap();
    // The base32 the app reads from the URI gives oathtool codes the reopened secret accepts.
    let from_uri = e
        .otpauth_uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap();
    let at = t0() + 7;
    let code = oathtool(from_uri, at);
    assert_eq!(
        check(&reopened, &active(0), &code, at),
        TotpOutcome::Approved {
            step: step_of(at * 1000)
        }
    );
}

/// Renders an SVG with resvg and decodes the QR codes in it with rqrr.
fn decode_svg_qr(svg: &str) -> Vec<(usize, String)> {
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).expect("well-formed SVG");
    let size = tree.size().to_int_size();
    // Render at 2× so every module is several pixels wide.
    let (w, h) = (size.width() * 2, size.height() * 2);
    let mut pixmap = tiny_skia::Pixmap::new(w, h).unwrap();
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(2.0, 2.0),
        &mut pixmap.as_mut(),
    );
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
        let p = pixmap.pixel(x as u32, y as u32).unwrap();
        // Transparent pixels would read as black: the SVG must paint its own background.
        assert_eq!(p.alpha(), 255, "unpainted pixel at {x},{y}");
        p.red()
    });
    img.detect_grids()
        .into_iter()
        .map(|g| {
            let (meta, content) = g.decode().expect("decodable QR code");
            let modules = 17 + 4 * meta.version.0;
            (modules, content)
        })
        .collect()
}

#[test]
fn the_qr_svg_decodes_to_the_otpauth_uri() {
    let secret = TotpSecret::generate(&mut rand::rng());
    for (issuer, account) in [
        ("One Account", "acc-123"),
        ("一戶通 Macau", "staff/ent-778/admin@example.org"),
    ] {
        let e = enrol(&secret, issuer, account).unwrap();
        assert!(e.qr_svg.starts_with("<svg"));
        let found = decode_svg_qr(&e.qr_svg);
        assert_eq!(found.len(), 1, "{issuer}");
        let (modules, content) = &found[0];
        assert_eq!(content, &e.otpauth_uri);
        // The module count is the one the QR version for this URI has.
        let expected = qrcode::QrCode::new(e.otpauth_uri.as_bytes())
            .unwrap()
            .width();
        assert_eq!(*modules, expected);
    }
}
