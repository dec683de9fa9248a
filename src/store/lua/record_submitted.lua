-- A message every part of which an SMSC accepted: status `submitted` (unless final) and the
-- correlations of its parts, in one round trip (single Redis; the message's and the SMSC's
-- slots differ, so with Redis Cluster update_message.lua and correlate.lua run instead).
-- KEYS[1] the SMS record (m:{tag}:msg_…), KEYS[2] the SMSC's rule hash, KEYS[3] its pool,
-- then n correlation keys, then their n orphan keys.
-- ARGV: at_ms, error ('' = none), "message_id|parts", ttl_ms, learn votes, then per part the
-- forms a receipt may write its id in while the rule is unknown (see correlate.lua).
-- Returns {send, count of early stats, stat, …, then when learned: rule, pool id, pool stat, …};
-- send is 0 for the first send, 1 for the re-send.
local v = redis.call('HMGET', KEYS[1], 's', 'rs')
if v[1] == 'queued' or v[1] == 'submitted' then
  redis.call('HSET', KEYS[1], 's', 'submitted', 'sa', ARGV[1])
  if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'er', ARGV[2]) end
end
local send = '0'
if v[2] == '1' then send = '1' end
local n = (#KEYS - 3) / 2
local corr, orphans, forms = {}, {}, {}
for i = 1, n do
  corr[i] = KEYS[3 + i]
  orphans[i] = KEYS[3 + n + i]
  forms[i] = ARGV[5 + i]
end
local early, got = correlate_parts(KEYS[2], KEYS[3], corr, orphans, ARGV[3] .. '|' .. send, ARGV[4], ARGV[5], forms)
local out = correlated_reply(early, got)
table.insert(out, 1, send)
return out
