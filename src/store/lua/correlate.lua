-- Records the SMSC ids of a message's parts, unless their receipt came first. Mirrors
-- memory/receipts.rs `correlate`.
-- KEYS[1] the SMSC's rule hash (ri:{smsc-…}), KEYS[2] its pool (rp:{smsc-…}), then n
-- correlation keys (c:{smsc-…}:canonical), then their n orphan keys (o:{smsc-…}:canonical).
-- ARGV: "message_id|parts", ttl_ms, then per part the comma-separated forms a receipt may
-- write its id in while the rule is unknown.
-- Returns the stats of receipts found (their correlation is not stored).
local n = (#KEYS - 2) / 2
local learned = redis.call('HGET', KEYS[1], 'r')
local early = {}
for i = 1, n do
  local o = redis.call('GETDEL', KEYS[2 + n + i])
  if o then
    table.insert(early, o)
  else
    local taken = false
    if not learned then
      local fits = {}
      for f in string.gmatch(ARGV[2 + i], '[^,]+') do
        if not fits[f] and redis.call('HEXISTS', KEYS[2], f) == 1 then fits[f] = true end
      end
      local one, count = nil, 0
      for f in pairs(fits) do one = f; count = count + 1 end
      if count == 1 then
        table.insert(early, redis.call('HGET', KEYS[2], one))
        redis.call('HDEL', KEYS[2], one)
        taken = true
      end
    end
    if not taken then redis.call('SET', KEYS[2 + i], ARGV[1], 'PX', ARGV[2]) end
  end
end
return early
