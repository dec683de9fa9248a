//! Applies what the SMPP sessions report to the stored messages: submitted, failed, expired,
//! and delivery receipts (correlated from the SMSC's message id back to ours).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::smpp::DeliveryEvent;
use crate::store::{AnyStore, DeliveryStatus, MessageUpdate, Store};

/// Receipt correlation: (SMSC, normalised SMSC message id) → (our message id, parts).
struct Correlation {
    map: HashMap<(String, String), (String, usize, Instant)>,
    /// Per message: parts delivered so far.
    delivered_parts: HashMap<String, usize>,
}

/// The SMSC may write the id it gave us in hex or decimal, with or without leading zeros:
/// compare ids by value when they are numbers.
pub fn normalise_id(id: &str) -> String {
    let t = id.trim();
    let stripped = t.trim_start_matches('0');
    if stripped.is_empty() && !t.is_empty() {
        return "0".into();
    }
    stripped.to_ascii_lowercase()
}

/// Runs until every session is gone (the channel closes).
pub async fn run(store: AnyStore, mut events: mpsc::UnboundedReceiver<DeliveryEvent>) {
    let mut c = Correlation {
        map: HashMap::new(),
        delivered_parts: HashMap::new(),
    };
    let mut last_sweep = Instant::now();
    while let Some(ev) = events.recv().await {
        let now_ms = crate::clock::system_now_ms();
        let (id, update) = match ev {
            DeliveryEvent::Submitted {
                message_id,
                smsc,
                smsc_message_ids,
            } => {
                let parts = smsc_message_ids.len();
                for sid in smsc_message_ids {
                    c.map.insert(
                        (smsc.to_string(), normalise_id(&sid)),
                        (message_id.clone(), parts, Instant::now()),
                    );
                }
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => "submitted").increment(1);
                (
                    message_id,
                    MessageUpdate {
                        status: DeliveryStatus::Submitted,
                        at_ms: now_ms,
                        error: None,
                    },
                )
            }
            DeliveryEvent::Failed { message_id, error } => {
                metrics::counter!("otpgate_sms_total", "smsc" => "", "status" => "failed")
                    .increment(1);
                (
                    message_id,
                    MessageUpdate {
                        status: DeliveryStatus::Failed,
                        at_ms: now_ms,
                        error: Some(error),
                    },
                )
            }
            DeliveryEvent::Expired { message_id } => {
                metrics::counter!("otpgate_sms_total", "smsc" => "", "status" => "expired")
                    .increment(1);
                (
                    message_id,
                    MessageUpdate {
                        status: DeliveryStatus::Expired,
                        at_ms: now_ms,
                        error: None,
                    },
                )
            }
            DeliveryEvent::Receipt {
                smsc,
                smsc_message_id,
                stat,
            } => {
                let key = (smsc.to_string(), normalise_id(&smsc_message_id));
                let Some((message_id, parts, _)) = c.map.get(&key).cloned() else {
                    tracing::debug!(smsc = %smsc, "receipt for an unknown message id");
                    continue;
                };
                let status = match stat.as_str() {
                    "DELIVRD" => DeliveryStatus::Delivered,
                    "UNDELIV" | "REJECTD" => DeliveryStatus::Undeliverable,
                    "EXPIRED" => DeliveryStatus::Expired,
                    "DELETED" | "UNKNOWN" => DeliveryStatus::Failed,
                    _ => continue, // ACCEPTD, ENROUTE: still submitted
                };
                c.map.remove(&key);
                if status == DeliveryStatus::Delivered {
                    let n = c.delivered_parts.entry(message_id.clone()).or_insert(0);
                    *n += 1;
                    if *n < parts {
                        continue;
                    }
                    c.delivered_parts.remove(&message_id);
                }
                metrics::counter!("otpgate_sms_total", "smsc" => smsc.to_string(), "status" => status.as_str()).increment(1);
                let error =
                    (status != DeliveryStatus::Delivered).then(|| format!("receipt stat {stat}"));
                (
                    message_id,
                    MessageUpdate {
                        status,
                        at_ms: now_ms,
                        error,
                    },
                )
            }
        };
        if let Err(e) = store.update_message(&id, &update).await {
            tracing::warn!(message_id = %id, error = %e, "could not record message status");
        }
        if last_sweep.elapsed() > Duration::from_secs(60) {
            last_sweep = Instant::now();
            c.map
                .retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(3 * 24 * 3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_id;

    #[test]
    fn ids_compare_without_leading_zeros_or_case() {
        assert_eq!(normalise_id("000A1F"), normalise_id("a1f"));
        assert_eq!(normalise_id("0"), "0");
    }
}
