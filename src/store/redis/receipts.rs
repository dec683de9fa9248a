//! Receipt correlation in Redis: `lua/correlate.lua` and `lua/match_receipt.lua`, every key in
//! the SMSC's slot (`{smsc-<name>}`), one round trip each. Mirrors `memory/receipts.rs`.

use redis::Script;

use super::RedisStore;
use crate::store::{
    CORRELATION_TTL_MS, Correlated, Error, LEARN_VOTES, Learned, ORPHAN_RECEIPT_TTL_MS, ReceiptIds,
    ReceiptMatch, normalize_id, receipt_candidates, receipt_forms,
};

/// A receipt script: `lua/receipt_rule.lua`'s vote prepended.
pub(super) fn script(body: &str) -> Script {
    Script::new(&format!(
        "{}\n{body}",
        include_str!("../lua/receipt_rule.lua")
    ))
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
    pub(super) async fn correlate_parts(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
    ) -> Result<Correlated, Error> {
        let canon: Vec<String> = smsc_ids
            .iter()
            .map(|id| normalize_id(id))
            .filter(|c| !c.is_empty())
            .collect();
        if canon.is_empty() {
            return Ok(Correlated::default());
        }
        let mut inv = self.scripts.correlate.prepare_invoke();
        inv.key(self.keys.receipt_rule(smsc))
            .key(self.keys.receipt_pool(smsc));
        for c in &canon {
            inv.key(self.keys.correlation(smsc, c));
        }
        for c in &canon {
            inv.key(self.keys.orphan_receipt(smsc, c));
        }
        inv.arg(format!("{message_id}|{}", smsc_ids.len()))
            .arg(CORRELATION_TTL_MS)
            .arg(LEARN_VOTES);
        for c in &canon {
            let lines: Vec<String> = receipt_forms(c)
                .into_iter()
                .map(|(form, rules)| {
                    let letters: String = rules.iter().map(|r| r.letter()).collect();
                    format!("{letters}={form}")
                })
                .collect();
            inv.arg(lines.join("\n"));
        }
        let reply: Vec<String> = self.run(&mut inv).await?;
        let n: usize = reply.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        let early: Vec<String> = reply.iter().skip(1).take(n).cloned().collect();
        let learned = learned(reply.get(1 + n..).unwrap_or_default());
        Ok(Correlated { early, learned })
    }

    pub(super) async fn find_receipt(
        &self,
        smsc: &str,
        rule: ReceiptIds,
        smsc_id: &str,
        stat: &str,
    ) -> Result<ReceiptMatch, Error> {
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
            return Ok(ReceiptMatch::default());
        }
        let mut inv = self.scripts.match_receipt.prepare_invoke();
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
        let reply: Vec<String> = self.run(&mut inv).await?;
        let message = match reply.first().map(String::as_str) {
            Some("m") => reply.get(1).and_then(|v| {
                let (m, parts) = v.rsplit_once('|')?;
                Some((m.to_owned(), parts.parse().ok()?))
            }),
            _ => None,
        };
        let learned = reply
            .get(2)
            .and_then(|l| ReceiptIds::from_letter(l))
            .map(|r| {
                let pool = reply[3..]
                    .chunks(2)
                    .filter_map(|p| match p {
                        [id, stat] => Some((id.clone(), stat.clone())),
                        _ => None,
                    })
                    .collect();
                (r, pool)
            });
        Ok(ReceiptMatch { message, learned })
    }
}
