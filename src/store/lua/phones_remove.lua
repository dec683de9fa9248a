-- Removes one phone of an account, promoting the oldest remaining one when it was the primary
-- (events.lua is prepended). Mirrors src/store/memory/phones.rs `remove_phone`.
-- KEYS[1] the account's phones (ph:<hash>), KEYS[2] the account's history.
-- ARGV: E.164, phone id, the event (JSON), max events, events ttl ms. Returns 1, or 0 when
-- the account has no such phone (with that id).
local pat = '^([^|]*)|([01])|(%d+)|(%-?%d+)$'
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local id, p = string.match(cur, pat)
if id ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if p == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  local best
  for i = 1, #all, 2 do
    local a, b, c, d = string.match(all[i + 1], pat)
    local at = tonumber(d)
    if not best or at < best[5] or (at == best[5] and a < best[2]) then
      best = {all[i], a, c, d, at}
    end
  end
  if best then
    redis.call('HSET', KEYS[1], best[1], best[2] .. '|1|' .. best[3] .. '|' .. best[4])
  end
end
event_push(KEYS[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
return 1
