-- One redeem. Mirrors src/activation/rules.rs `decide` (tests/it/activation_http.rs runs the
-- same cases against both stores).
-- KEYS[1] the activation (a:{tag}:act_…; for an unknown application number a key that does
-- not exist, so the work is the same), KEYS[2] the account's events.
-- ARGV: matched ("1" or "0"), now_ms, `activation_redeemed` event json, max events,
-- event retention ms.
-- Returns one of redeemed, incorrect, locked_now, locked, expired, already_used.
local v = redis.call('HMGET', KEYS[1], 's', 'ea', 'au', 'ma')
if not v[1] then return 'incorrect' end
local s = v[1]
if s == 'pending' and tonumber(ARGV[2]) >= tonumber(v[2]) then s = 'expired' end
local matched = ARGV[1] == '1'
if s == 'locked' then return 'locked' end
if s == 'pending' then
  if matched then
    redis.call('HSET', KEYS[1], 's', 'redeemed')
    event_push(KEYS[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
    return 'redeemed'
  end
  local au = tonumber(v[3]) + 1
  if au >= tonumber(v[4]) then
    redis.call('HSET', KEYS[1], 'au', au, 's', 'locked')
    return 'locked_now'
  end
  redis.call('HSET', KEYS[1], 'au', au)
  return 'incorrect'
end
if matched and s == 'redeemed' then return 'already_used' end
if matched and s == 'expired' then return 'expired' end
return 'incorrect'
