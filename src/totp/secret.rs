//! The TOTP secret, its enrolment (base32, `otpauth://` URI, QR code as SVG) and the codes
//! it makes (totp-rs: RFC 6238, SHA-1, 6 digits, 30-second steps).
//!
//! Time is always a parameter (`now_ms`); nothing here reads a clock.

use qrcode::QrCode;
use qrcode::render::svg;
use rand::{CryptoRng, RngCore};
use subtle::{Choice, ConstantTimeEq};
use totp_rs::{Algorithm, TOTP};
use unicode_normalization::UnicodeNormalization;

/// Digits of a code (contract §3.5).
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Bytes of a secret (160 bits, RFC 4226's recommendation; what authenticator apps expect).
pub const SECRET_LEN: usize = 20;

/// Why an enrolment could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolError {
    /// The URI label is `issuer:account`; a colon in either would change its meaning.
    #[error("`{0}` may not contain `:` (it separates issuer and account in the otpauth label)")]
    Colon(&'static str),
    /// An empty issuer or account id.
    #[error("`{0}` may not be empty")]
    Empty(&'static str),
    /// The URI is too long for a QR code.
    #[error("QR code: {0}")]
    Qr(String),
}

/// A TOTP shared secret. Never printed: `Debug` shows `TotpSecret(***)`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(***)")
    }
}

impl TotpSecret {
    /// A fresh random secret from `rng` (the daemon passes the OS generator).
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> TotpSecret {
        let mut b = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut b);
        TotpSecret(b)
    }

    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> TotpSecret {
        TotpSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// RFC 4648 base32 without padding, as authenticator apps take it typed in.
    pub fn base32(&self) -> String {
        self.totp(None, String::new()).get_secret_base32()
    }

    fn totp(&self, issuer: Option<String>, account: String) -> TOTP {
        // `new_unchecked`: the parameters are ours and valid; labels are checked in `enrol`.
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            1,
            STEP_SECS,
            self.0.to_vec(),
            issuer,
            account,
        )
    }

    /// The code of time step `step` (`unix seconds / 30`).
    pub fn code_at_step(&self, step: u64) -> String {
        self.totp(None, String::new()).generate(step * STEP_SECS)
    }

    /// The steps among the current one ±1 whose code is `code` (normalised first: spaces
    /// dropped, full-width digits accepted). All three are computed and compared in
    /// constant time whatever matches. Usually empty or one step.
    pub fn matching_steps(&self, code: &str, now_ms: i64) -> Vec<u64> {
        let given = normalize_code(code);
        let current = step_of(now_ms);
        let mut out = Vec::with_capacity(1);
        for step in current.saturating_sub(1)..=current + 1 {
            let expected = self.code_at_step(step);
            let ok: Choice = expected.as_bytes().ct_eq(given.as_bytes());
            if bool::from(ok) {
                out.push(step);
            }
        }
        out
    }
}

/// The time step of `now_ms` (steps before 1970 count as step 0).
pub fn step_of(now_ms: i64) -> u64 {
    (now_ms.max(0) as u64 / 1000) / STEP_SECS
}

/// A typed TOTP code as compared: NFKC (full-width digits become ASCII), whitespace dropped
/// (apps show `123 456`).
pub fn normalize_code(input: &str) -> String {
    input.nfkc().filter(|c| !c.is_whitespace()).collect()
}

/// What `POST /v1/accounts/{account_id}/totp` answers.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    /// Starts with `<svg` (no XML declaration), ready to inline.
    pub qr_svg: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(***)")
    }
}

/// The enrolment of `secret` for `account_id`: issuer = `sms.service_name`, label =
/// `issuer:account_id`, SHA-1, 6 digits, 30 s.
pub fn enrol(secret: &TotpSecret, issuer: &str, account_id: &str) -> Result<Enrolment, EnrolError> {
    for (name, value) in [("sms.service_name", issuer), ("account_id", account_id)] {
        if value.is_empty() {
            return Err(EnrolError::Empty(name));
        }
        if value.contains(':') {
            return Err(EnrolError::Colon(name));
        }
    }
    let totp = secret.totp(Some(issuer.to_owned()), account_id.to_owned());
    let uri = totp.get_url();
    Ok(Enrolment {
        secret_base32: totp.get_secret_base32(),
        qr_svg: qr_svg(&uri)?,
        otpauth_uri: uri,
    })
}

/// `text` as a QR code in SVG (4 modules of quiet zone, at least 256 px wide).
pub fn qr_svg(text: &str) -> Result<String, EnrolError> {
    let code = QrCode::new(text.as_bytes()).map_err(|e| EnrolError::Qr(e.to_string()))?;
    let svg = code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    // The renderer starts with an XML declaration, which has no place inside HTML.
    Ok(match svg.find("<svg") {
        Some(i) => svg[i..].to_owned(),
        None => svg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> TotpSecret {
        TotpSecret::from_bytes(*b"12345678901234567890")
    }

    #[test]
    fn rfc_6238_appendix_b_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 (8 digits there); the 6-digit code is the same
        // number mod 10^6, i.e. its last 6 digits.
        let vectors: [(u64, &str); 6] = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let eight = TOTP::new(
            Algorithm::SHA1,
            8,
            1,
            30,
            b"12345678901234567890".to_vec(),
            None,
            String::new(),
        )
        .unwrap();
        for (t, code) in vectors {
            assert_eq!(eight.generate(t), code, "8 digits at {t}");
            assert_eq!(secret().code_at_step(t / 30), code[2..], "6 digits at {t}");
            let steps = secret().matching_steps(&code[2..], t as i64 * 1000);
            assert!(steps.contains(&(t / 30)), "{t}: {steps:?}");
        }
    }

    #[test]
    fn one_step_either_side_matches_two_do_not() {
        let s = secret();
        let now_ms = 1_800_000_015_000; // inside step 60_000_000
        let cur = step_of(now_ms);
        assert_eq!(cur, 60_000_000);
        for d in [-1i64, 0, 1] {
            let step = (cur as i64 + d) as u64;
            assert_eq!(s.matching_steps(&s.code_at_step(step), now_ms), vec![step]);
        }
        for d in [-2i64, 2] {
            let code = s.code_at_step((cur as i64 + d) as u64);
            assert!(s.matching_steps(&code, now_ms).is_empty(), "{d}");
        }
    }

    #[test]
    fn typed_codes_are_normalised() {
        let s = secret();
        let now_ms = 59_000;
        assert_eq!(s.matching_steps("287 082", now_ms), vec![1]);
        assert_eq!(s.matching_steps("２８７０８２", now_ms), vec![1]);
        assert!(s.matching_steps("28708", now_ms).is_empty());
        assert!(s.matching_steps("2870821", now_ms).is_empty());
        assert!(s.matching_steps("", 0).is_empty());
    }

    #[test]
    fn the_first_steps_do_not_underflow() {
        let s = secret();
        assert_eq!(step_of(-5), 0);
        assert_eq!(s.matching_steps(&s.code_at_step(0), 0), vec![0]);
        assert_eq!(s.matching_steps(&s.code_at_step(1), 0), vec![1]);
    }

    #[test]
    fn generated_secrets_differ_and_are_160_bits() {
        let mut rng = rand::rng();
        let a = TotpSecret::generate(&mut rng);
        let b = TotpSecret::generate(&mut rng);
        assert_ne!(a, b);
        assert_eq!(a.base32().len(), 32);
    }

    #[test]
    fn enrolment_uri_names_issuer_and_account() {
        let e = enrol(&secret(), "One Account", "ent-778").unwrap();
        assert_eq!(e.secret_base32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            e.otpauth_uri,
            "otpauth://totp/One%20Account:ent-778?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=One%20Account"
        );
        assert!(e.qr_svg.starts_with("<svg"), "{}", &e.qr_svg[..40]);
        assert!(e.qr_svg.ends_with("</svg>"));
        assert_eq!(
            enrol(&secret(), "One Account", "a:b"),
            Err(EnrolError::Colon("account_id"))
        );
        assert_eq!(
            enrol(&secret(), "A:B", "acc"),
            Err(EnrolError::Colon("sms.service_name"))
        );
        assert_eq!(
            enrol(&secret(), "X", ""),
            Err(EnrolError::Empty("account_id"))
        );
    }

    #[test]
    fn nothing_secret_in_debug() {
        let e = enrol(&secret(), "One Account", "acc").unwrap();
        let shown = format!("{:?} {:?}", secret(), e);
        assert!(
            !shown.contains("GEZDGNBV") && !shown.contains("49, 50"),
            "{shown}"
        );
    }
}
