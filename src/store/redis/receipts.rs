//! Message status changes and receipt correlation in Redis, one round trip each:
//! `lua/record_submitted.lua` (status `submitted` and the correlations; with a cluster
//! `lua/update_message.lua` then `lua/correlate.lua`), `lua/match_receipt.lua` (every key in the
//! SMSC's slot, `{smsc-<name>}`), `lua/record_part.lua` (with the re-send's outbox entry when
//! the part sends the message once more). Mirrors `memory/receipts.rs`.

use redis::Script;

use super::{Conn, RedisStore};
use crate::outbox::Job;
use crate::outbox::redis::entry_fields;
use crate::store::{
    CORRELATION_TTL_MS, Correlated, DeliveryStatus, Error, LEARN_VOTES, Learned, MessageUpdate,
    ORPHAN_RECEIPT_TTL_MS, PartOutcome, PartReceipt, ReceiptIds, ReceiptMatch, ReceiptOf,
    ReceiptPart, ReceiptRecorded, normalize_id, receipt_candidates, receipt_forms,
};

/// A receipt script: `lua/receipt_rule.lua`'s vote prepended.
pub(super) fn script(body: &str) -> Script {
    Script::new(&format!(
        "{}\n{body}",
        include_str!("../lua/receipt_rule.lua")
    ))
}

/// A script that applies parts: `lua/part.lua`'s `apply_part` prepended.
pub(super) fn with_part(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("../lua/part.lua")))
}

/// Per canonical id, the forms a receipt may write it in while the rule is unknown: one
/// "rules=form" a line (`lua/receipt_rule.lua` `correlate_parts`).
fn forms_arg(canonical: &str) -> String {
    let lines: Vec<String> = receipt_forms(canonical)
        .into_iter()
        .map(|(form, rules)| {
            let letters: String = rules.iter().map(|r| r.letter()).collect();
            format!("{letters}={form}")
        })
        .collect();
    lines.join("\n")
}

/// A correlation script's reply: {count, stat…, learned…}.
fn correlated(send: u32, reply: &[String]) -> Correlated {
    let n: usize = reply.first().and_then(|n| n.parse().ok()).unwrap_or(0);
    let early: Vec<String> = reply.iter().skip(1).take(n).cloned().collect();
    let learned = learned(reply.get(1 + n..).unwrap_or_default());
    Correlated {
        send,
        early,
        learned,
    }
}

/// A learned rule and the kept receipts, from a script's reply (rule, id, stat, id, stat, …).
fn learned(reply: &[String]) -> Learned {
    let (rule, pool) = reply.split_first()?;
    let rule = ReceiptIds::from_letter(rule)?;
    let pool = pool
        .chunks(2)
        .filter_map(|p| match p {
            [id, stat] => Some((id.clone(), stat.clone())),
            _ => None,
        })
        .collect();
    Some((rule, pool))
}

impl RedisStore {
    /// Moves a message to a new status unless final; returns the send it is at.
    pub(super) async fn update_message(&self, id: &str, u: &MessageUpdate) -> Result<u32, Error> {
        let Some(key) = self.keys.message(id) else {
            return Ok(0);
        };
        let time_field = match u.status {
            DeliveryStatus::Submitted => "sa",
            DeliveryStatus::Delivered => "da",
            _ => "",
        };
        let mut inv = self.scripts.update_message.prepare_invoke();
        inv.key(&key)
            .arg(u.status.as_str())
            .arg(time_field)
            .arg(u.at_ms)
            .arg(u.error.clone().unwrap_or_default());
        let send: u32 = self.run(&mut inv).await?;
        Ok(send)
    }

    /// `submitted` and the correlations: one script on a single Redis; with a cluster (the
    /// message's slot and the SMSC's differ) the status change, then the correlations.
    pub(super) async fn submitted(
        &self,
        message_id: &str,
        smsc: &str,
        smsc_ids: &[String],
        u: &MessageUpdate,
    ) -> Result<Correlated, Error> {
        let canon: Vec<String> = smsc_ids
            .iter()
            .map(|id| normalize_id(id))
            .filter(|c| !c.is_empty())
            .collect();
        let key = self.keys.message(message_id);
        let (Conn::Single(_), Some(key), false) = (&self.conn, &key, canon.is_empty()) else {
            let send = self.update_message(message_id, u).await?;
            if canon.is_empty() {
                return Ok(Correlated {
                    send,
                    ..Correlated::default()
                });
            }
            let value = format!("{message_id}|{}|{send}", smsc_ids.len());
            let mut inv = self.scripts.correlate.prepare_invoke();
            self.correlation_keys(&mut inv, smsc, &canon);
            inv.arg(value).arg(CORRELATION_TTL_MS).arg(LEARN_VOTES);
            for c in &canon {
                inv.arg(forms_arg(c));
            }
            let reply: Vec<String> = self.run(&mut inv).await?;
            return Ok(correlated(send, &reply));
        };
        let mut inv = self.scripts.record_submitted.prepare_invoke();
        inv.key(key);
        self.correlation_keys(&mut inv, smsc, &canon);
        inv.arg(u.at_ms)
            .arg(u.error.clone().unwrap_or_default())
            .arg(format!("{message_id}|{}", smsc_ids.len()))
            .arg(CORRELATION_TTL_MS)
            .arg(LEARN_VOTES);
        for c in &canon {
            inv.arg(forms_arg(c));
        }
        let reply: Vec<String> = self.run(&mut inv).await?;
        let send = reply.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(correlated(send, reply.get(1..).unwrap_or_default()))
    }

    /// The SMSC's rule and pool, then the correlation keys, then the orphan keys.
    fn correlation_keys(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        smsc: &str,
        canon: &[String],
    ) {
        inv.key(self.keys.receipt_rule(smsc))
            .key(self.keys.receipt_pool(smsc));
        for c in canon {
            inv.key(self.keys.correlation(smsc, c));
        }
        for c in canon {
            inv.key(self.keys.orphan_receipt(smsc, c));
        }
    }

    /// `lua/record_part.lua`; with `job`, the re-send's outbox entry is written by the same
    /// script when the part sends the message once more (a transactional outbox).
    pub(super) async fn apply_part(
        &self,
        message_id: &str,
        part: &PartReceipt,
        job: Option<&Job>,
    ) -> Result<PartOutcome, Error> {
        let Some(key) = self.keys.message(message_id) else {
            return Ok(PartOutcome::Pending);
        };
        let entry = match job {
            Some(job) => Some(entry_fields(job).map_err(|_| Error::Corrupt {
                key: job.message_id.clone(),
                reason: "job not encodable",
            })?),
            None => None,
        };
        let mut inv = self.scripts.record_part.prepare_invoke();
        inv.key(&key);
        match job {
            Some(job) => inv.key(self.keys.outbox_stream(&job.route, job.priority)),
            // A key the script leaves alone: there is no entry to write.
            None => inv.key(&key),
        };
        inv.arg(part.parts)
            .arg(part.status.as_str())
            .arg(part.error.clone().unwrap_or_default())
            .arg(if part.resend { 1 } else { 0 })
            .arg(part.at_ms)
            .arg(part.send);
        match entry {
            Some(fields) => {
                for (f, v) in fields {
                    inv.arg(f).arg(v);
                }
            }
            None => {
                for _ in 0..6 {
                    inv.arg("");
                }
            }
        }
        let word: String = self.run(&mut inv).await?;
        Ok(match word.as_str() {
            "final" => PartOutcome::Final(part.status),
            "resend" => PartOutcome::Resend,
            _ => PartOutcome::Pending,
        })
    }

    /// `match_receipt.lua`'s keys and arguments; `None` when no form of the id can match.
    fn receipt_invocation<'s>(
        &self,
        script: &'s Script,
        smsc: &str,
        rule: ReceiptIds,
        smsc_id: &str,
        stat: &str,
    ) -> Option<redis::ScriptInvocation<'s>> {
        let forms: Vec<(String, String)> = match rule {
            ReceiptIds::Auto => receipt_candidates(smsc_id)
                .into_iter()
                .map(|(f, rules)| (f, rules.iter().map(|r| r.letter()).collect()))
                .collect(),
            explicit => explicit
                .canonical_of_receipt(smsc_id)
                .map(|f| (f, explicit.letter().to_owned()))
                .into_iter()
                .collect(),
        };
        if forms.is_empty() {
            return None;
        }
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.receipt_rule(smsc))
            .key(self.keys.receipt_pool(smsc));
        for (f, _) in &forms {
            inv.key(self.keys.correlation(smsc, f));
        }
        for (f, _) in &forms {
            inv.key(self.keys.orphan_receipt(smsc, f));
        }
        inv.arg(rule.letter())
            .arg(stat)
            .arg(ORPHAN_RECEIPT_TTL_MS)
            .arg(normalize_id(smsc_id))
            .arg(LEARN_VOTES);
        for (_, rules) in &forms {
            inv.arg(rules);
        }
        Some(inv)
    }

    pub(super) async fn find_receipt(
        &self,
        smsc: &str,
        rule: ReceiptIds,
        smsc_id: &str,
        stat: &str,
    ) -> Result<ReceiptMatch, Error> {
        let script = &self.scripts.match_receipt;
        let Some(mut inv) = self.receipt_invocation(script, smsc, rule, smsc_id, stat) else {
            return Ok(ReceiptMatch::default());
        };
        let reply: Vec<String> = self.run(&mut inv).await?;
        Ok(receipt_match(&reply, 2))
    }

    /// `record_receipt.lua`: one round trip, on a single Redis only.
    pub(super) async fn receipt_in_one(
        &self,
        smsc: &str,
        rule: ReceiptIds,
        smsc_id: &str,
        stat: &str,
        part: &ReceiptPart,
    ) -> Result<Option<ReceiptRecorded>, Error> {
        if !matches!(self.conn, Conn::Single(_)) {
            return Ok(None);
        }
        let script = &self.scripts.record_receipt;
        let Some(mut inv) = self.receipt_invocation(script, smsc, rule, smsc_id, stat) else {
            return Ok(Some(ReceiptRecorded {
                matched: ReceiptMatch::default(),
                outcome: None,
            }));
        };
        inv.arg(self.keys.prefix())
            .arg(part.status.as_str())
            .arg(part.error.clone().unwrap_or_default())
            .arg(part.at_ms);
        let reply: Vec<String> = self.run(&mut inv).await?;
        let matched = receipt_match(&reply, 3);
        let outcome = match reply.get(2).map(String::as_str) {
            _ if matched.message.is_none() => None,
            Some("final") => Some(PartOutcome::Final(part.status)),
            Some("pending") => Some(PartOutcome::Pending),
            _ => None,
        };
        Ok(Some(ReceiptRecorded { matched, outcome }))
    }
}

/// A `receipt_match` reply; the learned rule and pool start at `learned_at`.
fn receipt_match(reply: &[String], learned_at: usize) -> ReceiptMatch {
    let message = match reply.first().map(String::as_str) {
        Some("m") => reply.get(1).and_then(|v| ReceiptOf::decode(v)),
        _ => None,
    };
    let learned = learned(reply.get(learned_at..).unwrap_or_default());
    ReceiptMatch { message, learned }
}
