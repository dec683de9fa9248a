//! Starting every bind of every configured SMSC (and the built-in simulators), supervised.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::session::{BindContext, spawn_supervised, throughput_limiter};
use super::{EventSink, SmscStatus, sim};
use crate::clock::Clock;
use crate::config::SmscConfig;
use crate::outbox::{Composer, Outbox, Routing};

/// What the binds share: the daemon's services for them.
pub struct Shared {
    pub outbox: Outbox,
    pub routing: Arc<Routing>,
    pub composer: Arc<Composer>,
    pub events: EventSink,
    pub clock: Clock,
    /// Cancelled when the daemon stops taking work.
    pub shutdown: CancellationToken,
    pub shutdown_grace: Duration,
}

/// The running binds and the simulators they talk to.
pub struct Binds {
    tasks: Vec<JoinHandle<()>>,
    simulators: Vec<sim::SimHandle>,
}

/// A simulator that could not start: (which SMSC, why).
pub type StartError = (String, std::io::Error);

/// Starts `binds` supervised tasks per SMSC (after its simulator, when `simulator = true`).
pub async fn start(
    smscs: &[SmscConfig],
    statuses: &[Arc<SmscStatus>],
    shared: Shared,
) -> Result<Binds, StartError> {
    let mut tasks = Vec::new();
    let mut simulators = Vec::new();
    for (smsc, (status, served)) in smscs
        .iter()
        .zip(statuses.iter().zip(shared.routing.smscs.iter()))
    {
        let address = if smsc.simulator {
            let what = || format!("simulator for {}", smsc.name);
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| (what(), e))?;
            let h = sim::start(
                l,
                sim::SimConfig {
                    print: true,
                    ..Default::default()
                },
            )
            .map_err(|e| (what(), e))?;
            tracing::info!(smsc = %smsc.name, address = %h.addr(), "built-in SMSC simulator started");
            let a = h.addr().to_string();
            simulators.push(h);
            a
        } else {
            smsc.address.clone()
        };
        let ctx = BindContext {
            config: Arc::new(smsc.clone()),
            address,
            status: status.clone(),
            outbox: shared.outbox.clone(),
            routing: shared.routing.clone(),
            routes: served.routes.clone(),
            composer: shared.composer.clone(),
            limiter: throughput_limiter(smsc.throughput),
            events: shared.events.clone(),
            clock: shared.clock.clone(),
            shutdown: shared.shutdown.clone(),
            shutdown_grace: shared.shutdown_grace,
        };
        for i in 0..smsc.binds {
            tasks.push(spawn_supervised(ctx.clone(), i));
        }
    }
    Ok(Binds { tasks, simulators })
}

impl Binds {
    /// Waits until every bind ended (after shutdown: drained and unbound).
    pub async fn unbound(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Stops the built-in simulators.
    pub async fn stop_simulators(self) {
        for s in self.simulators {
            s.shutdown();
            s.stopped().await;
        }
    }
}
