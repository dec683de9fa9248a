//! A test carrier: the OAuth2 token endpoint, CAMARA KYC Match 0.4 and SIM Swap 2, on a
//! loopback port. It validates every request otpgate sends against the schemas of the official
//! YAML files in `../shared/specs/camara/` (plus: no property the schema does not define, and
//! an `x-correlator` that fits the spec's pattern) and records each violation; a test that uses
//! it ends with `assert_clean()`. Its own answers are checked against the response schemas too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

const CLIENT_ID: &str = "otpgate-test";
const CLIENT_SECRET: &str = "carrier-secret";

/// The spec files (relative to the crate root, as CI lays them out).
fn spec(name: &str) -> Value {
    let path = format!(
        "{}/../shared/specs/camara/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A validator for `#/components/schemas/<name>` of `doc`; `strict` adds
/// `additionalProperties: false` (the spec leaves it open; otpgate must not send extras).
fn validator(doc: &Value, name: &str, strict: bool) -> jsonschema::Validator {
    let mut components = doc["components"].clone();
    if strict {
        components["schemas"][name]["additionalProperties"] = json!(false);
    }
    let schema = json!({"$ref": format!("#/components/schemas/{name}"), "components": components});
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {name}: {e}"))
}

/// A validator for the error body of a response, e.g. `Generic404`.
fn error_validator(doc: &Value, response: &str) -> jsonschema::Validator {
    let mut schema =
        doc["components"]["responses"][response]["content"]["application/json"]["schema"].clone();
    schema["components"] = doc["components"].clone();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .build(&schema)
        .unwrap_or_else(|e| panic!("response {response}: {e}"))
}

struct Validators {
    match_request: jsonschema::Validator,
    match_response: jsonschema::Validator,
    swap_request: jsonschema::Validator,
    swap_response: jsonschema::Validator,
    errors: HashMap<(&'static str, u16), jsonschema::Validator>,
    correlator: regex_lite_free::Pattern,
}

/// The `x-correlator` pattern `^[a-zA-Z0-9-_:;.\/<>{}]{0,256}$`, checked by hand (a regex
/// crate for one character class is not worth a dependency).
mod regex_lite_free {
    pub struct Pattern;
    impl Pattern {
        pub fn is_match(&self, s: &str) -> bool {
            s.len() <= 256
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:;./<>{}".contains(c))
        }
    }
}

/// What the carrier answers for a number.
#[derive(Debug, Clone)]
pub enum Kyc {
    /// 200 with this body.
    Answer(Value),
    /// An error status and CAMARA error code.
    Error(u16, &'static str),
    /// Answers only after this long.
    Slow(Duration, Value),
    /// 200 with a body cut off in the middle (not JSON).
    Garbled,
}

#[derive(Default)]
struct Scripted {
    kyc: HashMap<String, Kyc>,
    swapped: HashMap<String, bool>,
    /// Answer the next N data calls with 401 (an expired or revoked token).
    unauthorized_next: u32,
    /// Answer every call with this status (carrier down).
    down: Option<u16>,
}

#[derive(Default)]
pub struct Seen {
    pub violations: Vec<String>,
    pub tokens_issued: u32,
    pub kyc_calls: u32,
    pub swap_calls: u32,
    pub last_max_age: Option<i64>,
    pub last_match_request: Option<Value>,
}

struct Inner {
    v: Validators,
    script: Mutex<Scripted>,
    seen: Mutex<Seen>,
    expires_in: u64,
    next_token: Mutex<u32>,
    valid_tokens: Mutex<Vec<String>>,
}

#[derive(Clone)]
pub struct Carrier {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

impl Carrier {
    /// Starts a carrier whose tokens say they live `expires_in` seconds.
    pub async fn start(expires_in: u64) -> Carrier {
        let kyc = spec("kyc-match.yaml");
        let swap = spec("sim-swap.yaml");
        let mut errors = HashMap::new();
        for (api, doc) in [("kyc", &kyc), ("swap", &swap)] {
            for (status, name) in [
                (400, "Generic400"),
                (401, "Generic401"),
                (403, "Generic403"),
                (404, "Generic404"),
                (422, "Generic422"),
            ] {
                errors.insert((api, status), error_validator(doc, name));
            }
        }
        let v = Validators {
            match_request: validator(&kyc, "KYC_MatchRequestBody", true),
            match_response: validator(&kyc, "KYC_MatchResponse", true),
            swap_request: validator(&swap, "CreateCheckSimSwap", true),
            swap_response: validator(&swap, "CheckSimSwapInfo", true),
            errors,
            correlator: regex_lite_free::Pattern,
        };
        let inner = Arc::new(Inner {
            v,
            script: Mutex::new(Scripted::default()),
            seen: Mutex::new(Seen::default()),
            expires_in,
            next_token: Mutex::new(0),
            valid_tokens: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/camara/kyc-match/v0.4/match", post(kyc_match))
            .route("/camara/sim-swap/v2/check", post(sim_swap))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind carrier");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Carrier { inner, addr }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/camara", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/token", self.addr)
    }

    pub fn config(&self) -> otpgate::config::CamaraConfig {
        otpgate::config::CamaraConfig {
            base_url: self.base_url(),
            token_url: self.token_url(),
            client_id: CLIENT_ID.into(),
            client_secret: otpgate::config::Secret::new(CLIENT_SECRET),
            ..Default::default()
        }
    }

    pub fn set_kyc(&self, phone: &str, k: Kyc) {
        self.inner
            .script
            .lock()
            .expect("lock")
            .kyc
            .insert(phone.into(), k);
    }

    pub fn set_swapped(&self, phone: &str, swapped: bool) {
        self.inner
            .script
            .lock()
            .expect("lock")
            .swapped
            .insert(phone.into(), swapped);
    }

    pub fn set_down(&self, status: Option<u16>) {
        self.inner.script.lock().expect("lock").down = status;
    }

    /// Revokes every token issued so far: the next data call answers 401.
    pub fn revoke_tokens(&self) {
        self.inner.valid_tokens.lock().expect("lock").clear();
    }

    pub fn unauthorized_next(&self, n: u32) {
        self.inner.script.lock().expect("lock").unauthorized_next = n;
    }

    pub fn seen<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.inner.seen.lock().expect("lock"))
    }

    /// Fails the test on any request that broke the spec.
    pub fn assert_clean(&self) {
        let v = self.seen(|s| s.violations.clone());
        assert!(v.is_empty(), "requests that break the CAMARA specs: {v:#?}");
    }
}

impl Inner {
    fn violation(&self, what: String) {
        self.seen.lock().expect("lock").violations.push(what);
    }

    fn check(&self, what: &str, v: &jsonschema::Validator, body: &Value) {
        let errs: Vec<String> = v.iter_errors(body).map(|e| e.to_string()).collect();
        if !errs.is_empty() {
            self.violation(format!("{what}: {errs:?} in {body}"));
        }
    }

    /// The common checks of a data call: bearer token, x-correlator, JSON.
    fn admit(
        &self,
        api: &'static str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Value, Box<Response>> {
        match headers.get("x-correlator").and_then(|h| h.to_str().ok()) {
            Some(c) if self.v.correlator.is_match(c) => {}
            Some(c) => self.violation(format!("{api}: x-correlator {c:?} breaks the pattern")),
            None => self.violation(format!("{api}: no x-correlator")),
        }
        if headers.get("content-type").and_then(|h| h.to_str().ok()) != Some("application/json") {
            self.violation(format!("{api}: content-type is not application/json"));
        }
        let token = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        {
            let mut s = self.script.lock().expect("lock");
            let valid = self
                .valid_tokens
                .lock()
                .expect("lock")
                .iter()
                .any(|t| t == token);
            if s.unauthorized_next > 0 || !valid {
                s.unauthorized_next = s.unauthorized_next.saturating_sub(1);
                return Err(Box::new(self.error(api, 401, "UNAUTHENTICATED")));
            }
            if let Some(status) = s.down {
                return Err(Box::new(
                    (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        axum::Json(
                            json!({"status": status, "code": "UNAVAILABLE", "message": "down"}),
                        ),
                    )
                        .into_response(),
                ));
            }
        }
        serde_json::from_slice(body).map_err(|_| {
            self.violation(format!("{api}: body is not JSON"));
            Box::new(self.error(api, 400, "INVALID_ARGUMENT"))
        })
    }

    fn error(&self, api: &'static str, status: u16, code: &str) -> Response {
        let body = json!({"status": status, "code": code, "message": "test carrier"});
        if let Some(v) = self.v.errors.get(&(api, status)) {
            assert!(
                v.is_valid(&body),
                "the test carrier's own {status} {code} breaks the spec"
            );
        }
        (
            StatusCode::from_u16(status).expect("status"),
            axum::Json(body),
        )
            .into_response()
    }
}

async fn token(
    State(c): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let auth_ok = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == format!("Basic {basic}"));
    let form = String::from_utf8_lossy(&body);
    if !form
        .split('&')
        .any(|kv| kv == "grant_type=client_credentials")
    {
        c.violation(format!(
            "token: form without grant_type=client_credentials: {form}"
        ));
    }
    if !auth_ok {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = {
        let mut n = c.next_token.lock().expect("lock");
        *n += 1;
        *n
    };
    let t = format!("tok-{n}");
    c.valid_tokens.lock().expect("lock").push(t.clone());
    c.seen.lock().expect("lock").tokens_issued += 1;
    axum::Json(json!({"access_token": t, "token_type": "Bearer", "expires_in": c.expires_in}))
        .into_response()
}

async fn kyc_match(
    State(c): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    c.seen.lock().expect("lock").kyc_calls += 1;
    let req = match c.admit("kyc", &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    c.check("kyc request", &c.v.match_request, &req);
    let fields = req.as_object().map_or(0, |o| o.len());
    if fields < 2 {
        c.violation(format!("kyc: only the phone number was sent: {req}"));
    }
    c.seen.lock().expect("lock").last_match_request = Some(req.clone());
    let phone = req["phoneNumber"].as_str().unwrap_or("").to_owned();
    let k = c.script.lock().expect("lock").kyc.get(&phone).cloned();
    let answer = match k {
        None => return c.error("kyc", 404, "IDENTIFIER_NOT_FOUND"),
        Some(Kyc::Error(s, code)) => return c.error("kyc", s, code),
        Some(Kyc::Answer(a)) => a,
        Some(Kyc::Slow(d, a)) => {
            tokio::time::sleep(d).await;
            a
        }
        Some(Kyc::Garbled) => {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                r#"{"idDocumentMatch": "tr"#,
            )
                .into_response();
        }
    };
    // Only the fields that were asked about are answered (the spec's rule).
    let mut out = serde_json::Map::new();
    for (k, v) in answer.as_object().into_iter().flatten() {
        let field = k.trim_end_matches("MatchScore").trim_end_matches("Match");
        if req.get(field).is_some() {
            out.insert(k.clone(), v.clone());
        }
    }
    let out = Value::Object(out);
    assert!(
        c.v.match_response.is_valid(&out),
        "the test carrier's own answer breaks the spec: {out}"
    );
    axum::Json(out).into_response()
}

async fn sim_swap(
    State(c): State<Arc<Inner>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    c.seen.lock().expect("lock").swap_calls += 1;
    let req = match c.admit("swap", &headers, &body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    c.check("sim swap request", &c.v.swap_request, &req);
    c.seen.lock().expect("lock").last_max_age = req["maxAge"].as_i64();
    let phone = req["phoneNumber"].as_str().unwrap_or("");
    let swapped = c
        .script
        .lock()
        .expect("lock")
        .swapped
        .get(phone)
        .copied()
        .unwrap_or(false);
    let out = json!({"swapped": swapped});
    assert!(c.v.swap_response.is_valid(&out));
    axum::Json(out).into_response()
}
