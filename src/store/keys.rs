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
//! | `ob:{ob}:<route>:<priority>` | stream | outbox entries of a route (`default` for `""`) and priority | `XADD` (also inside `create.lua`, `resend.lua`, `record_part.lua`), `XREADGROUP`, `move_due.lua`, `touch.lua`, `claim.lua`, `reap.lua` (group `otpgate`) |
//! | `ev:<sha256(account)>` | list | an account's history, newest first (JSON events) | `events.lua` helper in the scripts that record events, `append_event.lua` |
//! | `a:{tag}:act_…` | hash | an activation (no code, no numbers: keyed hashes) | `act_issue.lua`, `act_redeem.lua` |
//! | `ai:{tag}:<hex>:<hex>` | string | the redeem index: key of the latest activation of (client, keyed hash of the application number) | `act_issue.lua` |
//! | `aa:<hex>` | string | key of the latest activation of (client, account) | `act_issue.lua` |
//! | `t:<hex>` | hash | an account's TOTP enrolment (the secret sealed) | `totp_enrol.lua`, `totp_apply.lua`, `DEL` |
//! | `l:<hex>` | list | a `[limits]` counter: times of the events it let through, newest first (the hex a keyed hash of limit, rule and subject) | `limits.lua` helpers in `create.lua`, `resend.lua`, `check.lua`, `apply.lua` |
//! | `l:range:<digits>` | hash | the pumping guard's counts of a number range (its first `prefix_digits` digits) | `limits.lua` helpers in `create.lua`, `resend.lua`, `check.lua` |
//! | `ph:<sha256(account)>` | hash | an account's phones: E.164 → "id\|primary\|level\|added_at" | `phones_bind.lua`, `phones_remove.lua`, `pc_settle.lua`; read by `create.lua` (login) |
//! | `pc:{tag}:pc_…` | hash | a phone change (the verification's challenge fields, so `check.lua` and `resend.lua` apply; `a` account, `idn` identity JSON, `st` how it was settled) | a `HSET` pipeline, `check.lua`, `resend.lua`, `pc_settle.lua` |
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
        format!("{}ev:{}", self.prefix, short_hash(account))
    }

    /// An activation's hash; `None` for a malformed id.
    pub fn activation(&self, id: &str) -> Option<String> {
        ids::parse("act", id).map(|tag| format!("{}a:{{{tag}}}:{id}", self.prefix))
    }

    /// The redeem index of (client, application number's lookup hash) in slot `tag`.
    pub fn activation_index(&self, tag: &str, client: &str, lookup_hash: &str) -> String {
        format!(
            "{}ai:{{{tag}}}:{}:{lookup_hash}",
            self.prefix,
            short_hash(client)
        )
    }

    /// The latest activation of (client, account).
    pub fn activation_account(&self, client: &str, account: &str) -> String {
        let pair = format!("{client}\u{1}{account}");
        format!("{}aa:{}", self.prefix, short_hash(&pair))
    }

    /// An account's TOTP enrolment (the account id hashed).
    pub fn totp(&self, account: &str) -> String {
        format!("{}t:{}", self.prefix, short_hash(account))
    }

    /// A `[limits]` counter (`name` is a keyed hash, or `range:<digits>` for the pumping guard).
    pub fn limit(&self, name: &str) -> String {
        format!("{}l:{name}", self.prefix)
    }

    /// A phone change's hash; `None` for a malformed id.
    pub fn phone_change(&self, id: &str) -> Option<String> {
        ids::parse("pc", id).map(|tag| format!("{}pc:{{{tag}}}:{id}", self.prefix))
    }

    /// An account's phones (the account id hashed, like its history).
    pub fn account_phones(&self, account: &str) -> String {
        format!("{}ph:{}", self.prefix, short_hash(account))
    }

    /// The outbox's delayed retries.
    pub fn outbox_delay(&self) -> String {
        format!("{}ob:{{ob}}:delay", self.prefix)
    }
}

/// 32 hex characters of SHA-256: names something in a key without spelling it.
fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..16])
}
