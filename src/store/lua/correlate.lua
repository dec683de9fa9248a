-- Records the SMSC ids of a message's parts, unless their receipt came first (cluster: the
-- SMSC's slot only; record_submitted.lua does this with the status change in one script).
-- KEYS[1] the SMSC's rule hash (ri:{smsc-…}), KEYS[2] its pool (rp:{smsc-…}), then n
-- correlation keys (c:{smsc-…}:canonical), then their n orphan keys (o:{smsc-…}:canonical).
-- ARGV: "message_id|parts|send", ttl_ms, learn votes, then per part the forms a receipt may
-- write its id in while the rule is unknown, one "rules=form" a line (rules: letters s, h, d).
-- Returns {count of early stats, stat, …, then when learned: rule, pool id, pool stat, …}.
local n = (#KEYS - 2) / 2
local corr, orphans, forms = {}, {}, {}
for i = 1, n do
  corr[i] = KEYS[2 + i]
  orphans[i] = KEYS[2 + n + i]
  forms[i] = ARGV[3 + i]
end
local early, got = correlate_parts(KEYS[1], KEYS[2], corr, orphans, ARGV[1], ARGV[2], ARGV[3], forms)
return correlated_reply(early, got)
