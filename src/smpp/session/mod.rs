//! One SMPP bind to one SMSC, as an actor, in three parts:
//!
//! - [`supervisor`]: [`run_bind`] connects, binds, runs a session until it ends, backs off
//!   (1 s doubling to 30 s, with jitter; a refused bind counts as a drop), again — until
//!   shutdown.
//! - [`connection`]: bind_transceiver, the session's read loop (one task owns the socket's read
//!   half, the sequence counter and the enquire_link state), the writer task that owns the write
//!   half (so a slow peer never stops us reading and answering what it sends), unbind.
//! - [`window`]: the messages in flight and the window of pending submits: admission, response
//!   timeouts, throttling slow-down, the throughput limiter, retries.
//!
//! Work comes from the [`Outbox`]: a message is settled there once the SMSC accepted every part
//! or refused it for good. A message that fails a try before any part was accepted goes back
//! to the outbox with backoff, avoiding this SMSC, so another SMSC of the route takes it; the
//! messages in flight when a session dies go back the same way (only those can go twice).

mod connection;
mod supervisor;
mod window;

use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};
use rusmpp::types::COctetString;
use tokio_util::sync::CancellationToken;

use super::pdu;
use super::{EventSink, SmscStatus};
use crate::clock::Clock;
use crate::config::SmscConfig;
use crate::outbox::{Composer, Outbox, Routing};

pub use supervisor::{run_bind, spawn_supervised};

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection failed or broke.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The SMSC answered bind_transceiver with an error status.
    #[error("bind refused: {0}")]
    BindRefused(String),
    /// The SMSC did not answer bind or enquire_link in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The byte stream could not be framed (bad command_length).
    #[error("framing: {0}")]
    Framing(#[from] pdu::FramingError),
    /// The SMSC closed the connection or sent unbind.
    #[error("closed by the SMSC")]
    Closed,
    /// The SMSC answered a submit with ESME_RINVBNDSTS: it does not consider us bound.
    #[error("the SMSC says this session is not bound")]
    NotBound,
    /// The SMSC stopped reading: what we must send did not leave within the response timeout.
    #[error("the SMSC reads nothing we send")]
    WriteStalled,
}

/// Everything a bind needs, shared by all binds of one SMSC.
#[derive(Clone)]
pub struct BindContext {
    pub config: Arc<SmscConfig>,
    /// Where to connect (the simulator's port when `simulator = true`).
    pub address: String,
    pub status: Arc<SmscStatus>,
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    /// The routes this SMSC takes.
    pub routes: Vec<String>,
    pub composer: Arc<Composer>,
    /// `throughput` over all binds of this SMSC.
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Where submit results and receipts go (bounded: a full tracker slows the session).
    pub events: EventSink,
    /// Time for validity and retry schedules (tests move it).
    pub clock: Clock,
    /// Cancelled when the daemon stops taking work.
    pub shutdown: CancellationToken,
    /// How long to keep submitting queued SMS after shutdown began.
    pub shutdown_grace: Duration,
}

/// A smoothed limiter of `per_second` submits (no bursts above the rate), or none for 0.
pub fn throughput_limiter(per_second: u32) -> Option<Arc<DefaultDirectRateLimiter>> {
    let rate = std::num::NonZeroU32::new(per_second)?;
    let quota = Quota::per_second(rate).allow_burst(std::num::NonZeroU32::MIN);
    Some(Arc::new(DefaultDirectRateLimiter::direct(quota)))
}

/// The sequence numbers of one connection: 1, 2, … wrapping before 0x7FFFFFFF.
struct Sequence(u32);

impl Sequence {
    fn next(&mut self) -> u32 {
        let s = self.0;
        self.0 = if self.0 >= 0x7FFF_FFFF { 1 } else { self.0 + 1 };
        s
    }
}

/// A C-octet string from configuration text (validated at start; trimmed, never panics).
fn lossy<const MIN: usize, const MAX: usize>(s: &str) -> COctetString<MIN, MAX> {
    let s: String = s
        .chars()
        .filter(|c| c.is_ascii() && *c != '\0')
        .take(MAX - 1)
        .collect();
    <COctetString<MIN, MAX> as std::str::FromStr>::from_str(&s)
        .unwrap_or_else(|_| COctetString::empty())
}

/// Backoff of the n-th retry: 1 s doubling to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// A test hook: the next session to `address` panics (at its next timer tick), to prove
/// supervision. Not for production use; nothing in the daemon calls it.
#[doc(hidden)]
pub fn panic_next_session_to(address: &str) {
    if let Ok(mut armed) = PANIC_AT.lock() {
        armed.push(address.to_owned());
        PANIC_ARMED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

static PANIC_AT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static PANIC_ARMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the test hook asks the session to `address` to panic now (once).
fn panic_requested(address: &str) -> bool {
    if !PANIC_ARMED.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let Ok(mut armed) = PANIC_AT.lock() else {
        return false;
    };
    let Some(i) = armed.iter().position(|a| a == address) else {
        return false;
    };
    armed.swap_remove(i);
    PANIC_ARMED.store(!armed.is_empty(), std::sync::atomic::Ordering::SeqCst);
    true
}
