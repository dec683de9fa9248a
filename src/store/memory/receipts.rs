//! Receipt correlation in memory: one lock over every SMSC's correlations, orphans and id rule,
//! so [`Receipts::correlate`] and [`Receipts::match_receipt`] are atomic with each other (the
//! delivery tracker may apply events of one message on several workers). Mirrors
//! `lua/correlate.lua` and `lua/match_receipt.lua`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::store::{
    CORRELATION_TTL_MS, Correlated, LEARN_VOTES, Learned, ORPHAN_RECEIPT_TTL_MS, ReceiptIds,
    ReceiptMatch, ReceiptOf, normalize_id, receipt_candidates, receipt_forms,
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
    /// Canonical id → (its message, expiry).
    correlations: HashMap<String, (ReceiptOf, i64)>,
    /// Canonical id → (stat, expiry): receipts that came before their correlation.
    orphans: HashMap<String, (String, i64)>,
    /// Normalised receipt id → (stat, expiry): receipts kept while the rule is unknown.
    pool: HashMap<String, (String, i64)>,
}

impl SmscReceipts {
    /// One more receipt matched one message under `rules`: a vote when that is one rule.
    fn vote(&mut self, rules: &[ReceiptIds]) -> Learned {
        let [r] = rules else {
            return None;
        };
        let votes = self.votes.entry(r.letter()).or_default();
        *votes += 1;
        if *votes < LEARN_VOTES {
            return None;
        }
        self.rule = Some(*r);
        self.votes.clear();
        let pool = self
            .pool
            .drain()
            .map(|(id, (stat, _))| (id, stat))
            .collect();
        Some((*r, pool))
    }
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
            s.correlations.retain(|_, (_, exp)| *exp > now_ms);
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
        send: u32,
        now_ms: i64,
    ) -> Correlated {
        self.with(smsc, |s| {
            let mut early = Vec::new();
            let mut learned = None;
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
                    let fits: Vec<(String, Vec<ReceiptIds>)> = receipt_forms(&canon)
                        .into_iter()
                        .filter(|(f, _)| s.pool.contains_key(f))
                        .collect();
                    if let [(one, rules)] = fits.as_slice()
                        && let Some((stat, _)) = s.pool.remove(one)
                    {
                        early.push(stat);
                        if learned.is_none() {
                            learned = s.vote(rules);
                        }
                        continue;
                    }
                }
                let value = (
                    ReceiptOf {
                        message_id: message_id.to_owned(),
                        parts: smsc_ids.len() as u32,
                        send,
                    },
                    now_ms + CORRELATION_TTL_MS,
                );
                s.correlations.insert(canon, value);
            }
            Correlated {
                send,
                early,
                learned,
            }
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
                    if let Some((m, _)) = s.correlations.remove(&canon) {
                        return ReceiptMatch {
                            message: Some(m),
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
            let message = s.correlations.remove(form).map(|(m, _)| m);
            let rules = rules.clone();
            let learned = s.vote(&rules);
            ReceiptMatch { message, learned }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_learns_from_unambiguous_matches_and_replays_the_ambiguous() {
        let r = Receipts::default();
        let auto = ReceiptIds::Auto;
        r.correlate("a", &ids(&["1000"]), "m1000", 0, 0);
        r.correlate("a", &ids(&["4096"]), "m4096", 0, 0);
        // "1000" is 1000 (same) or 4096 (hex): both in flight, so neither is settled.
        assert_eq!(
            r.match_receipt("a", auto, "1000", "DELIVRD", 0),
            ReceiptMatch::default()
        );
        for (i, hex) in ["FA0", "FA1"].iter().enumerate() {
            r.correlate(
                "a",
                &ids(&[&(4000 + i).to_string()]),
                &format!("m{i}"),
                0,
                0,
            );
            let m = r.match_receipt("a", auto, hex, "DELIVRD", 0);
            assert_eq!(
                m.message.map(|m| (m.message_id, m.parts)),
                Some((format!("m{i}"), 1))
            );
            assert_eq!(m.learned, None);
        }
        r.correlate("a", &ids(&["4002"]), "m2", 0, 0);
        let m = r.match_receipt("a", auto, "0FA2", "DELIVRD", 0);
        assert_eq!(
            m.message.map(|m| (m.message_id, m.parts)),
            Some(("m2".to_owned(), 1))
        );
        assert_eq!(
            m.learned,
            Some((
                ReceiptIds::HexInReceipt,
                vec![("1000".to_owned(), "DELIVRD".to_owned())]
            ))
        );
        // Fixed: the kept "1000" is 4096's, and "3E8" is 1000's.
        let m = r.match_receipt("a", auto, "1000", "DELIVRD", 0);
        assert_eq!(
            m.message.map(|m| (m.message_id, m.parts)),
            Some(("m4096".to_owned(), 1))
        );
        let m = r.match_receipt("a", auto, "3E8", "UNDELIV", 0);
        assert_eq!(
            m.message.map(|m| (m.message_id, m.parts)),
            Some(("m1000".to_owned(), 1))
        );
        // A receipt is taken once; one the rule cannot read is no one's.
        assert_eq!(
            r.match_receipt("a", auto, "3E8", "UNDELIV", 0).message,
            None
        );
        r.correlate("a", &ids(&["5"]), "m5", 0, 0);
        assert_eq!(
            r.match_receipt("a", auto, "xyz", "DELIVRD", 0).message,
            None
        );
        // Another SMSC learns on its own.
        r.correlate("b", &ids(&["1000"]), "b1000", 0, 0);
        let m = r.match_receipt("b", auto, "1000", "DELIVRD", 0);
        assert_eq!(
            m.message.map(|m| (m.message_id, m.parts)),
            Some(("b1000".to_owned(), 1))
        );
    }

    #[test]
    fn receipts_before_their_correlation_vote_and_end_under_the_canonical_id() {
        let r = Receipts::default();
        let auto = ReceiptIds::Auto;
        for i in 0..3 {
            let hex = format!("{:X}", 4000 + i);
            assert_eq!(r.match_receipt("a", auto, &hex, "DELIVRD", 0).message, None);
            let c = r.correlate("a", &ids(&[&(4000 + i).to_string()]), "m", 0, 0);
            assert_eq!(c.early, vec!["DELIVRD".to_owned()]);
            assert_eq!(c.learned.is_some(), i == 2, "learned at the third");
        }
        // Learned: an early receipt waits under its canonical (decimal) id.
        assert_eq!(
            r.match_receipt("a", auto, "FA8", "EXPIRED", 0).message,
            None
        );
        let c = r.correlate("a", &ids(&["4008"]), "m8", 1, 0);
        assert_eq!(c.send, 1);
        assert_eq!(c.early, vec!["EXPIRED".to_owned()]);
    }

    #[test]
    fn an_explicit_rule_ignores_what_was_learned() {
        let r = Receipts::default();
        r.correlate("a", &ids(&["1000"]), "m1000", 0, 0);
        r.correlate("a", &ids(&["4096"]), "m4096", 0, 0);
        let same = r.match_receipt("a", ReceiptIds::Same, "01000", "DELIVRD", 0);
        assert_eq!(
            same.message.map(|m| (m.message_id, m.parts)),
            Some(("m1000".to_owned(), 1))
        );
        let hex = r.match_receipt("a", ReceiptIds::HexInReceipt, "1000", "DELIVRD", 0);
        assert_eq!(
            hex.message.map(|m| (m.message_id, m.parts)),
            Some(("m4096".to_owned(), 1))
        );
        r.correlate("a", &ids(&["1a2b"]), "mx", 1, 0);
        let dec = r.match_receipt("a", ReceiptIds::DecimalInReceipt, "6699", "DELIVRD", 0);
        assert_eq!(
            dec.message.map(|m| (m.message_id, m.parts)),
            Some(("mx".to_owned(), 1))
        );
    }
}
