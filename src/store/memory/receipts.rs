//! Receipt correlation in memory: one lock over every SMSC's correlations, orphans and id rule,
//! so [`Receipts::correlate`] and [`Receipts::match_receipt`] are atomic with each other (the
//! delivery tracker may apply events of one message on several workers). Mirrors
//! `lua/correlate.lua` and `lua/match_receipt.lua`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{
    CORRELATION_TTL_MS, LEARN_VOTES, ORPHAN_RECEIPT_TTL_MS, ReceiptIds, ReceiptMatch, normalize_id,
    receipt_candidates,
};

#[derive(Default)]
pub struct Receipts {
    smscs: Mutex<HashMap<String, SmscReceipts>>,
}

#[derive(Default)]
struct SmscReceipts {
    /// The learned rule (for `receipt_ids = "auto"`).
    rule: Option<ReceiptIds>,
    /// Votes per explicit rule, while none is learned.
    votes: HashMap<&'static str, u32>,
    /// Canonical id → (message id, parts, expiry).
    correlations: HashMap<String, (String, u32, i64)>,
    /// Canonical id → (stat, expiry): receipts that came before their correlation.
    orphans: HashMap<String, (String, i64)>,
    /// Normalised receipt id → (stat, expiry): receipts kept while the rule is unknown.
    pool: HashMap<String, (String, i64)>,
}

impl Receipts {
    fn with<R>(&self, smsc: &str, f: impl FnOnce(&mut SmscReceipts) -> R) -> R {
        let mut g = self.smscs.lock().unwrap_or_else(|e| e.into_inner());
        f(g.entry(smsc.to_owned()).or_default())
    }

    /// Drops expired entries; returns how many went.
    pub fn sweep(&self, now_ms: i64) -> usize {
        let mut g = self.smscs.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = 0;
        for s in g.values_mut() {
            let before = s.correlations.len() + s.orphans.len() + s.pool.len();
            s.correlations.retain(|_, (_, _, exp)| *exp > now_ms);
            s.orphans.retain(|_, (_, exp)| *exp > now_ms);
            s.pool.retain(|_, (_, exp)| *exp > now_ms);
            removed += before - (s.correlations.len() + s.orphans.len() + s.pool.len());
        }
        removed
    }

    pub fn correlate(
        &self,
        smsc: &str,
        smsc_ids: &[String],
        message_id: &str,
        now_ms: i64,
    ) -> Vec<String> {
        self.with(smsc, |s| {
            let mut early = Vec::new();
            for id in smsc_ids {
                let canon = normalize_id(id);
                if canon.is_empty() {
                    continue;
                }
                if let Some((stat, _)) = s.orphans.remove(&canon) {
                    early.push(stat);
                    continue;
                }
                if s.rule.is_none() {
                    // A receipt kept while the rule is unknown: taken when one only fits.
                    let mut fits: Vec<String> = ReceiptIds::EXPLICIT
                        .iter()
                        .filter_map(|r| r.receipt_form_of(&canon))
                        .filter(|f| s.pool.contains_key(f))
                        .collect();
                    fits.dedup();
                    if let [one] = fits.as_slice()
                        && let Some((stat, _)) = s.pool.remove(one)
                    {
                        early.push(stat);
                        continue;
                    }
                }
                let value = (
                    message_id.to_owned(),
                    smsc_ids.len() as u32,
                    now_ms + CORRELATION_TTL_MS,
                );
                s.correlations.insert(canon, value);
            }
            early
        })
    }

    pub fn match_receipt(
        &self,
        smsc: &str,
        rule: ReceiptIds,
        smsc_id: &str,
        stat: &str,
        now_ms: i64,
    ) -> ReceiptMatch {
        self.with(smsc, |s| {
            let rule = match rule {
                ReceiptIds::Auto => s.rule,
                explicit => Some(explicit),
            };
            let orphan = (stat.to_owned(), now_ms + ORPHAN_RECEIPT_TTL_MS);
            if let Some(rule) = rule {
                // An id the rule cannot read (hex where decimal is due) is no one's.
                if let Some(canon) = rule.canonical_of_receipt(smsc_id) {
                    if let Some((m, parts, _)) = s.correlations.remove(&canon) {
                        return ReceiptMatch {
                            message: Some((m, parts)),
                            learned: None,
                        };
                    }
                    s.orphans.insert(canon, orphan);
                }
                return ReceiptMatch::default();
            }
            let found: Vec<(String, Vec<ReceiptIds>)> = receipt_candidates(smsc_id)
                .into_iter()
                .filter(|(f, _)| s.correlations.contains_key(f))
                .collect();
            let [(form, rules)] = found.as_slice() else {
                // None yet, or several: kept until the rule is known.
                s.pool.insert(normalize_id(smsc_id), orphan);
                return ReceiptMatch::default();
            };
            let message = s.correlations.remove(form).map(|(m, parts, _)| (m, parts));
            let mut learned = None;
            if let [r] = rules.as_slice() {
                let votes = s.votes.entry(r.letter()).or_default();
                *votes += 1;
                if *votes >= LEARN_VOTES {
                    s.rule = Some(*r);
                    s.votes.clear();
                    let pool = s.pool.drain().map(|(id, (stat, _))| (id, stat)).collect();
                    learned = Some((*r, pool));
                }
            }
            ReceiptMatch { message, learned }
        })
    }
}
