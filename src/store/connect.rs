//! The one Redis connection set-up of the daemon: the store and the outbox share it.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, RedisResult};

/// A command gets this long for its answer on a shared connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn client(url: &str) -> RedisResult<redis::Client> {
    redis::Client::open(url)
}

/// A shared multiplexed connection that reconnects by itself. Lazy: the daemon starts (and
/// `/readyz` says `store: down`) while Redis is away.
pub fn shared(client: redis::Client) -> RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, cfg)
}

/// A connection of its own, for blocking commands (`XREADGROUP … BLOCK` would stall a shared
/// one); its response timeout leaves room for a one-second block.
pub async fn dedicated(client: &redis::Client) -> RedisResult<MultiplexedConnection> {
    let cfg = AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_connection_timeout(Some(CONNECT_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// A Redis Cluster connection.
pub async fn cluster(nodes: &[String]) -> RedisResult<redis::cluster_async::ClusterConnection> {
    redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .build()?
        .get_async_connection()
        .await
}
