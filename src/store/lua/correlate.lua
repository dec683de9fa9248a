-- Records the SMSC ids of a message's parts, unless their receipt came first.
-- KEYS: n correlation keys (c:{smsc-…}:id), then their n orphan keys (o:{smsc-…}:id).
-- ARGV: "message_id|parts", ttl_ms.
-- Returns the stats of orphan receipts found (their correlation is not stored).
local n = #KEYS / 2
local early = {}
for i = 1, n do
  local o = redis.call('GETDEL', KEYS[n + i])
  if o then
    table.insert(early, o)
  else
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  end
end
return early
