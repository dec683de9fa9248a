//! Lost-phone number changes (contract §3.3).

use std::sync::Arc;

use crate::StartError;
use crate::clock::Clock;
use crate::subscriber::camara::Camara;
use crate::subscriber::static_file::StaticProvider;
use crate::subscriber::{Checker, Field, Provider, SubscriberConfig, SubscriberProvider};

/// The configured carrier check (`[subscriber]`): the provider loaded once at start.
pub fn checker(cfg: &SubscriberConfig, clock: Clock) -> Result<Checker, StartError> {
    let provider: Option<Arc<dyn Provider>> = match cfg.provider {
        SubscriberProvider::None => None,
        SubscriberProvider::Static => Some(Arc::new(
            StaticProvider::load(&cfg.static_file)
                .map_err(|e| StartError::Config(format!("subscriber.static_file: {e}")))?,
        )),
        SubscriberProvider::Camara => {
            let c = cfg.camara.as_ref().ok_or_else(|| {
                StartError::Config("subscriber.camara: required with provider \"camara\"".into())
            })?;
            Some(Arc::new(
                Camara::new(c, cfg.name_score_threshold, clock)
                    .map_err(|e| StartError::Config(format!("subscriber.camara: {e}")))?,
            ))
        }
    };
    let require = cfg.require.iter().filter_map(|f| Field::parse(f)).collect();
    Ok(Checker::new(provider, require, cfg.sim_swap_max_age))
}
