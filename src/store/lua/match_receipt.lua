-- Finds (and takes) the message of a receipt, or keeps the receipt. Mirrors
-- memory/receipts.rs `match_receipt`.
-- KEYS[1] the SMSC's rule hash (ri:{smsc-…}), KEYS[2] its pool (rp:{smsc-…}), then n
-- correlation keys (c:{smsc-…}:form), then their n orphan keys (o:{smsc-…}:form): with an
-- explicit rule one form, with auto every canonical form the receipt id may stand for.
-- ARGV: configured rule ('a' auto, 's', 'h', 'd'), stat, orphan ttl_ms, the receipt id
-- normalised, learn votes, then per form the rules that give it ('s', 'h', 'd' letters).
-- Returns {} (kept), {'m', "message_id|parts"}, or {'m' or '', value, rule, pool id, pool stat, …}
-- when this receipt fixed the rule.
local n = (#KEYS - 2) / 2
local rule = ARGV[1]
if rule == 'a' then rule = redis.call('HGET', KEYS[1], 'r') end
if rule then
  for i = 1, n do
    if string.find(ARGV[5 + i], rule, 1, true) then
      local v = redis.call('GETDEL', KEYS[2 + i])
      if v then return {'m', v} end
      redis.call('SET', KEYS[2 + n + i], ARGV[2], 'PX', ARGV[3])
      return {}
    end
  end
  return {}
end
local found = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[2 + i]) == 1 then table.insert(found, i) end
end
if #found ~= 1 then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return {}
end
local i = found[1]
local v = redis.call('GETDEL', KEYS[2 + i])
local out = {'m', v}
local got = receipt_vote(KEYS[1], KEYS[2], ARGV[5 + i], ARGV[5])
if got then for _, x in ipairs(got) do table.insert(out, x) end end
return out
