//! otpgate: an SMS and one-time-code gateway daemon.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, parsed and validated once; each section's types and
//!   checks live in its domain (`smpp::config`, `otp::config`, …).
//! - [`api`]: the HTTP API (axum): authentication, error shape, one file per resource.
//! - [`otp`]: SMS one-time-code verifications; [`otp::codes`] derives codes with HMAC.
//! - [`store`]: one storage trait per aggregate, with memory and Redis implementations; the
//!   Redis keys ([`store::keys`]) and connection set-up ([`store::connect`]).
//! - [`outbox`]: SMS waiting for an SMSC (memory queues or Redis streams); [`routing`]: which
//!   SMSC takes which number.
//! - [`sms`]: texts (templates, locales, composition of a job's text) and their GSM 03.38 /
//!   UCS-2 encoding and splitting.
//! - [`smpp`]: our SMPP session actor and the built-in SMSC simulator.
//! - [`delivery`]: applies submit results and delivery receipts to stored messages.
//! - [`phones`]: account phones and lost-phone number changes with the carrier check
//!   ([`subscriber`]).
//! - [`phone`], [`ids`], [`purpose`], [`clock`]: small domain types.
//! - [`activation`]: activation codes (§3.4); [`totp`]: authenticator codes (§3.5).
//! - [`limits`]: `[limits]` rules, applied by the stores in the operations they guard.
//! - [`subscriber`]: carrier subscriber checks (CAMARA, static file).
//!
//! [`run`] wires them together; `main.rs` only parses the command line.

pub mod activation;
pub mod api;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod ids;
pub mod limits;
pub mod messages;
pub mod otp;
pub mod outbox;
pub mod phone;
pub mod phones;
pub mod purpose;
pub mod routing;
pub mod smpp;
pub mod sms;
pub mod store;
pub mod subscriber;
pub mod totp;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, StoreBackend};
use crate::smpp::SmscStatus;
use crate::store::Stores;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] store::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Capacity of the in-process outbox (memory store).
const QUEUE_CAPACITY: usize = 100_000;

/// The process-wide Prometheus recorder (one per process; every daemon in it shares it).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ])
                .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (then ours just renders nothing).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Options of a run that are not configuration: how tests and `main` differ.
#[derive(Clone, Default)]
pub struct RunOptions {
    pub clock: Clock,
    /// Called once the HTTP listener serves (systemd `READY=1`).
    pub on_ready: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The HTTP server's timeouts and bounds (default: contract §6).
    pub http: Option<api::serve::HttpLimits>,
    /// systemd's watchdog (`WATCHDOG=1`), pinged while the runtime runs tasks.
    pub watchdog: Option<Watchdog>,
    /// The memory outbox's capacity (default 100,000): tests make it small to fill it.
    pub memory_outbox_capacity: Option<usize>,
}

/// Every `interval`, `ping` is called if the runtime is healthy: a fresh task was picked up by
/// a worker thread within `interval`. A stalled runtime (every worker blocked) stops the pings
/// and systemd restarts the daemon. A store that does not answer does not: the daemon rides out
/// a store outage by design (503 to the API, `ESME_RX_T_APPN` to receipts, the durable outbox
/// keeps what was accepted), and a restart would not bring Redis back — it would only cut the
/// SMPP sessions and send their in-flight messages twice.
#[derive(Clone)]
pub struct Watchdog {
    pub interval: Duration,
    pub ping: Arc<dyn Fn() + Send + Sync>,
}

async fn watchdog(w: Watchdog) {
    let mut tick = tokio::time::interval(w.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(w.interval, tokio::spawn(async {})).await {
            Ok(Ok(())) => (w.ping)(),
            _ => tracing::warn!("runtime did not run a task within the watchdog interval: no ping"),
        }
    }
}

/// Runs the daemon on `listener` until `shutdown` resolves, then drains: stops accepting,
/// finishes in-flight requests, gives queued SMS `server.shutdown_grace` to be submitted (with
/// Redis: only those in the sessions' windows; the queue stays in Redis), unbinds every
/// session. Nothing it started outlives it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: RunOptions,
) -> Result<(), StartError> {
    let config = Arc::new(config);
    let key = match config
        .secret_key_bytes()
        .map_err(|e| StartError::Config(e.to_string()))?
    {
        Some(k) => k,
        None => {
            tracing::warn!(
                "no security.secret_key: using a random key for this process; codes do not survive a restart"
            );
            rand::random()
        }
    };
    let retired = config
        .security
        .retired_key_bytes()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let codes = otp::codes::CodeDeriver::with_retired(key, &retired);

    // The sweepers (the memory store's, the outbox's expiry) end with this function: tests
    // run many daemons in one process.
    let sweep_stop = CancellationToken::new();
    let _sweep_stop = sweep_stop.clone().drop_guard();
    let store = match config.store.backend {
        StoreBackend::Memory => {
            let m = Arc::new(store::memory::MemoryStore::with_guard(
                limits::pumping::Guard::from_config(&config.limits.pumping_guard),
            ));
            let sweeper = m.clone();
            let clock = options.clock.clone();
            let stop = sweep_stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                        _ = stop.cancelled() => return,
                    }
                    sweeper.sweep(clock.now_ms());
                }
            });
            Stores::memory(m)
        }
        StoreBackend::Redis => Stores::redis(
            store::redis::RedisStore::connect(
                &config.store.redis_url,
                &config.store.redis_cluster,
                &config.store.key_prefix,
            )
            .await?,
        ),
    };

    let templates = sms::Templates::load(
        &config.sms.service_name,
        &config.sms.webotp_domain,
        config.sms.templates_dir.as_deref(),
    )
    .map_err(|e| StartError::Io {
        what: "sms.templates_dir".into(),
        source: e,
    })?;

    let server_keys = activation::service::server_keys(&key, &retired);
    let activation_keys = activation::service::keys_for(&server_keys, &config.activation)
        .map_err(|e| StartError::Config(format!("activation: {e}")))?;
    let sealer = {
        let retired: Vec<(&str, &[u8; 32])> = server_keys[1..]
            .iter()
            .map(|(i, k)| (i.as_str(), k))
            .collect();
        totp::seal::SecretSealer::new((&server_keys[0].0, &server_keys[0].1), &retired)
    };
    let composer = Arc::new(sms::Composer {
        codes,
        templates,
        activation: Some(activation_keys.clone()),
    });
    let statuses: Vec<Arc<SmscStatus>> = config
        .smpp
        .smsc
        .iter()
        .map(|s| SmscStatus::new(&s.name))
        .collect();
    let routing = Arc::new(routing::Routing::new(&config.smpp.smsc, &statuses));
    let outbox = match config.store.backend {
        StoreBackend::Memory => {
            outbox::Outbox::Memory(Arc::new(outbox::memory::MemoryOutbox::with_clock(
                options.memory_outbox_capacity.unwrap_or(QUEUE_CAPACITY),
                options.clock.clone(),
            )))
        }
        StoreBackend::Redis => {
            let routes: Vec<String> = routing
                .smscs
                .iter()
                .flat_map(|s| s.routes.iter().cloned())
                .collect();
            outbox::Outbox::Redis(
                outbox::redis::RedisOutbox::new(
                    &config.store.redis_url,
                    &config.store.key_prefix,
                    &routes,
                    options.clock.clone(),
                )
                .map_err(|e| StartError::Config(format!("store.redis_url: {e}")))?,
            )
        }
    };
    // Receipt and submit results: concurrent shards (the stores' correlate/match_receipt are
    // atomic with each other).
    let delivery_shards = 16;
    let delivery_stop = CancellationToken::new();
    outbox.set_stale_check(outbox::stale::StaleCheck {
        messages: store.messages.clone(),
        verifications: store.verifications.clone(),
        phone_changes: store.phone_changes.clone(),
        clock: options.clock.clone(),
    });
    outbox::sweep::spawn(
        outbox.clone(),
        store.messages.clone(),
        options.clock.clone(),
        sweep_stop,
    );
    let (events, delivery) = delivery::start(
        delivery::Tracker {
            store: store.clone(),
            outbox: outbox.clone(),
            routing: routing.clone(),
            clock: options.clock.clone(),
        },
        delivery_shards,
        1024,
        delivery_stop.clone(),
    );
    let smpp_stop = CancellationToken::new();
    let mut binds = smpp::binds::start(
        &config.smpp.smsc,
        &statuses,
        smpp::binds::Shared {
            outbox: outbox.clone(),
            routing: routing.clone(),
            composer: composer.clone(),
            events,
            clock: options.clock.clone(),
            shutdown: smpp_stop.clone(),
            shutdown_grace: config.server.shutdown_grace,
        },
    )
    .await
    .map_err(|(what, source)| StartError::Io { what, source })?;

    let phones = phone::PhonePolicy::new(
        &config.phone.default_region,
        &config.phone.allowed_countries,
    )
    .ok_or_else(|| StartError::Config("phone.default_region: invalid".into()))?;
    let limiter = Arc::new(limits::Limiter::new(&config.limits));
    let verifications = Arc::new(otp::Verifications {
        stores: store.clone(),
        composer: composer.clone(),
        otp: config.otp.clone(),
        default_locale: config.sms.default_locale,
        outbox: outbox.clone(),
        routing: routing.clone(),
        limits: limiter.clone(),
    });
    let checker = Arc::new(phones::change::checker(
        &config.subscriber,
        options.clock.clone(),
    )?);
    let account_phones = phones::AccountPhones {
        stores: store.clone(),
        verifications: verifications.clone(),
        checker,
        composer: composer.clone(),
        outbox: outbox.clone(),
        routing: routing.clone(),
        otp: config.otp.clone(),
        default_locale: config.sms.default_locale,
        notify_old_phone: config.sms.notify_old_phone_on_change,
    };
    let state = api::AppState {
        config: config.clone(),
        clients: Arc::new(api::Clients::from_config(&config)),
        phones: Arc::new(phones),
        verifications,
        activations: Arc::new(activation::service::Activations {
            limits: limiter.clone(),
            stores: store.clone(),
            keys: activation_keys,
            composer: composer.clone(),
            config: config.activation.clone(),
            outbox: outbox.clone(),
            routing: routing.clone(),
        }),
        totp: Arc::new(totp::service::Totp {
            stores: store.clone(),
            sealer,
            issuer: config.sms.service_name.clone(),
            max_attempts: config.otp.policy(purpose::Purpose::Totp).max_attempts,
            lock_ms: config.otp.policy(purpose::Purpose::Totp).ttl.as_millis() as i64,
        }),
        messages: Arc::new(messages::Messages {
            stores: store.clone(),
            outbox: outbox.clone(),
            routing: routing.clone(),
            limits: limiter.clone(),
            composer: composer.clone(),
        }),
        account_phones: Arc::new(account_phones),
        store: store.clone(),
        smscs: Arc::new(statuses),
        outbox: outbox.clone(),
        metrics: metrics_handle(),
        clock: options.clock.clone(),
    };
    let app = api::router(state);
    let addr = listener.local_addr().map_err(|e| StartError::Io {
        what: "listener".into(),
        source: e,
    })?;
    tracing::info!(%addr, store = ?config.store.backend, "listening");
    // What is loaded lazily (the phone-number metadata, ~60 ms) is loaded before READY=1,
    // not on the first citizen's request.
    phone::warm_up();
    if let Some(ready) = &options.on_ready {
        ready();
    }
    let watchdog = (options.watchdog.clone()).map(|w| tokio::spawn(watchdog(w)));
    api::serve::serve(listener, app, shutdown, options.http.unwrap_or_default()).await;
    tracing::info!("HTTP stopped; draining SMS queue and unbinding");
    smpp_stop.cancel();
    let drained_by = tokio::time::Instant::now() + config.server.shutdown_grace;
    binds.unbound().await;
    // The tracker ends once the sessions are gone and it applied their events; what the store
    // cannot take by the end of the grace is given up.
    let mut delivery = delivery;
    if tokio::time::timeout_at(drained_by, &mut delivery)
        .await
        .is_err()
    {
        delivery_stop.cancel();
        let _ = delivery.await;
    }
    outbox.flush(Duration::from_secs(5)).await;
    binds.stop_simulators().await;
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
