-- Finds (and forgets) the message of a receipt, or keeps the receipt as an orphan.
-- KEYS: n correlation keys (c:{smsc-…}:form, one per id form), then their n orphan keys.
-- ARGV: stat, ttl_ms.
-- Returns "message_id|parts", or stores the orphan and returns nil.
local n = #KEYS / 2
for i = 1, n do
  local v = redis.call('GETDEL', KEYS[i])
  if v then return v end
end
for i = 1, n do
  redis.call('SET', KEYS[n + i], ARGV[1], 'PX', ARGV[2])
end
return false
