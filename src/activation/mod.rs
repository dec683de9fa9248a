//! Activation codes (contract §3.4). Only the configuration exists so far.

pub mod config;

pub use config::ActivationConfig;
