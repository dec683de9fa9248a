//! Every Redis key of the daemon, spelled here and nowhere else. All keys start with
//! `store.key_prefix`.
//!
//! | key | type | what | written by |
//! |---|---|---|---|
//! | `v:{tag}:ver_…` | hash | a verification | `create.lua`, `check.lua`, `resend.lua` |
//! | `s:{tag}:<hex>` | string | the subject index: latest verification id of (client, purpose, account or phone), a keyed hash so no key names a number | `create.lua` |
//! | `m:{tag}:msg_…` | hash | an SMS record | `create.lua`, `resend.lua`, `update_message.lua`, `record_part.lua`, `record_submitted.lua`, `record_receipt.lua` (single Redis: the key built from the matched id, not in KEYS), a `HSET` pipeline |
//! | `c:{smsc-<name>}:<id>` | string | receipt correlation: "msg id\|parts\|send" by SMSC and canonical SMSC id | `correlate.lua`, `record_submitted.lua`, `match_receipt.lua`, `record_receipt.lua` |
//! | `o:{smsc-<name>}:<id>` | string | a receipt that came before its correlation, by canonical id | `correlate.lua`, `match_receipt.lua` |
//! | `ri:{smsc-<name>}` | hash | the SMSC's learned receipt-id rule (`r`) and votes (`v:s`, `v:h`, `v:d`) | `correlate.lua`, `match_receipt.lua` |
//! | `rp:{smsc-<name>}` | hash | receipts kept while the rule is unknown: receipt id → stat | `correlate.lua`, `match_receipt.lua` |
//! | `ob:{ob}:<route>:<priority>` | stream | outbox entries of a route (`default` for `""`) and priority | `XADD`, `move_due.lua` |
//! | `ev:<sha256(account)>` | list | an account's history, newest first (JSON events) | `events.lua` helper in the scripts that record events, `append_event.lua` |
//! | `ob:{ob}:delay` | sorted set | retries waiting for their time, "stream\njob" by due time | `ZADD`, `move_due.lua` |
//!
//! `{tag}` is the hash-slot tag carried by the ids (see [`crate::ids`]), so one script's keys
//! share a Redis Cluster slot; the outbox keys share the slot `{ob}`.

use crate::ids;
use crate::outbox::Priority;

/// Builds the keys of one daemon (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// A verification's hash; `None` for a malformed id.
    pub fn verification(&self, id: &str) -> Option<String> {
        ids::parse("ver", id).map(|tag| format!("{}{id}", self.verification_prefix(tag)))
    }

    /// What precedes the id in the verification keys of slot `tag` (the create script finds
    /// the subject's previous verification with it).
    pub fn verification_prefix(&self, tag: &str) -> String {
        format!("{}v:{{{tag}}}:", self.prefix)
    }

    /// The subject index of `subject` (hex) in slot `tag`.
    pub fn subject(&self, tag: &str, subject: &str) -> String {
        format!("{}s:{{{tag}}}:{subject}", self.prefix)
    }

    /// The prefix of every key (`lua/record_receipt.lua` builds a message's key from it the way
    /// [`Keys::message`] does).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A message's hash; `None` for a malformed id.
    pub fn message(&self, id: &str) -> Option<String> {
        ids::parse("msg", id).map(|tag| format!("{}m:{{{tag}}}:{id}", self.prefix))
    }

    /// The correlation of an SMSC's message id (one SMSC's keys share its slot).
    pub fn correlation(&self, smsc: &str, form: &str) -> String {
        format!("{}c:{{smsc-{smsc}}}:{form}", self.prefix)
    }

    /// A receipt kept until its correlation is known.
    pub fn orphan_receipt(&self, smsc: &str, form: &str) -> String {
        format!("{}o:{{smsc-{smsc}}}:{form}", self.prefix)
    }

    /// An SMSC's learned receipt-id rule and its votes.
    pub fn receipt_rule(&self, smsc: &str) -> String {
        format!("{}ri:{{smsc-{smsc}}}", self.prefix)
    }

    /// An SMSC's receipts kept while its rule is unknown.
    pub fn receipt_pool(&self, smsc: &str) -> String {
        format!("{}rp:{{smsc-{smsc}}}", self.prefix)
    }

    /// The outbox stream of a route (`""`: the default route) and priority.
    pub fn outbox_stream(&self, route: &str, priority: Priority) -> String {
        let route = if route.is_empty() { "default" } else { route };
        format!("{}ob:{{ob}}:{route}:{}", self.prefix, priority.as_str())
    }

    /// An account's history (the account id hashed, so no key names an account).
    pub fn account_events(&self, account: &str) -> String {
        use sha2::Digest;
        let h = sha2::Sha256::digest(account.as_bytes());
        format!("{}ev:{}", self.prefix, hex::encode(&h[..16]))
    }

    /// The outbox's delayed retries.
    pub fn outbox_delay(&self) -> String {
        format!("{}ob:{{ob}}:delay", self.prefix)
    }
}
