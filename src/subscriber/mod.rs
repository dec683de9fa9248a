//! Carrier subscriber checks of a lost-phone number change (contract §3.3): the `static` file
//! provider and CAMARA KYC Match / SIM Swap. Only the configuration exists so far.

pub mod config;

pub use config::{CamaraConfig, SubscriberConfig, SubscriberProvider};
