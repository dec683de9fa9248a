//! The `otpgate` command line (contract §1). Everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(
    name = "otpgate",
    version,
    about = "SMS and one-time-code gateway daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Config file [default: $OTPGATE_CONFIG, else config/otpgate.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints `config OK` (and warnings on stderr), or each bad key
    /// on stderr and exits 2.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a fresh API token and the `key_sha256` line for `[[clients]]`.
    GenApiKey,
    /// Run a standalone SMSC simulator (SMPP 3.4 server) that prints what it receives.
    SmscSim {
        #[arg(long, default_value = "127.0.0.1:2775")]
        listen: String,
        /// Accept only this system_id.
        #[arg(long)]
        system_id: Option<String>,
        /// Accept only this password.
        #[arg(long)]
        password: Option<String>,
    },
}

fn config_path(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("OTPGATE_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("config/otpgate.toml"))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stdout)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => {
            let path = config_path(config);
            match otpgate::config::Config::load(&path) {
                Ok(config) => {
                    for w in config.warnings() {
                        eprintln!("{}: warning: {w}", path.display());
                    }
                    println!("config OK");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    for line in e.lines() {
                        eprintln!("{line}");
                    }
                    ExitCode::from(2)
                }
            }
        }
        Command::GenApiKey => {
            let bytes: [u8; 32] = rand::random();
            let token = format!("otpg_{}", hex::encode(bytes));
            println!("{token}");
            println!(
                "key_sha256 = \"{}\"",
                hex::encode(Sha256::digest(token.as_bytes()))
            );
            ExitCode::SUCCESS
        }
        Command::SmscSim {
            listen,
            system_id,
            password,
        } => {
            init_tracing();
            match smsc_sim(listen, system_id, password) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("otpgate smsc-sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let path = config_path(config);
            let config = match otpgate::config::Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    for line in e.lines() {
                        eprintln!("{line}");
                    }
                    return ExitCode::from(2);
                }
            };
            init_tracing();
            for w in config.warnings() {
                tracing::warn!(key = %w.path, "{}", w.message);
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "otpgate failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(config: otpgate::config::Config) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", config.server.listen))?;
        let options = otpgate::RunOptions {
            on_ready: Some(Arc::new(|| {
                if std::env::var_os("NOTIFY_SOCKET").is_some()
                    && let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready])
                {
                    tracing::warn!(error = %e, "sd_notify READY=1 failed");
                }
            })),
            watchdog: sd_notify::watchdog_enabled().map(|period| otpgate::Watchdog {
                // systemd's advice: ping at half the watchdog period.
                interval: period / 2,
                ping: Arc::new(|| {
                    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                        tracing::warn!(error = %e, "sd_notify WATCHDOG=1 failed");
                    }
                }),
            }),
            ..Default::default()
        };
        otpgate::run(config, listener, shutdown_signal(), options).await?;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

fn smsc_sim(
    listen: String,
    system_id: Option<String>,
    password: Option<String>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let handle = otpgate::smpp::sim::start(
            listener,
            otpgate::smpp::sim::SimConfig {
                system_id,
                password,
                print: true,
            },
        )?;
        tracing::info!(address = %handle.addr(), "SMSC simulator listening");
        shutdown_signal().await;
        handle.shutdown();
        handle.stopped().await;
        Ok(())
    })
}
