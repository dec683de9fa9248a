-- One code check. Mirrors src/otp/challenge.rs `check` (the conformance suite in
-- tests/it/challenge.rs runs the same cases against both). limits.lua and events.lua are
-- prepended: a wrong code is recorded in the account's `account_failures` counter, an
-- approval in the pumping guard's range, and the outcome in the account's events. Those keys
-- were fixed at creation and are read from the verification (fields xf, xr, xe): the caller
-- cannot name them without a read first (a deliberate exception to "every key in KEYS"; with
-- Redis Cluster they would have to share the verification's slot).
-- KEYS[1] the verification (v:{tag}:ver_…).
-- ARGV: [1] client, [2] now_ms, [3] id of the current key, [4] ",purpose,…," the client may
-- use, [5] account_failures count (0: none), [6] its window ms, [7..11] the guard's slot_ms
-- (0: off), slots, min_sent, min_ratio, cool_off_ms, [12] events kept, [13] events ttl ms,
-- then one "key id:digits" per (key, length) the submitted code matched.
-- Returns {outcome, purpose[, attempts remaining]}.
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'au', 'ma', 'd', 'p', 'k',
  'xf', 'xr', 'xe', 'ip', 'pm')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found', ''} end
local p = v[7] or ''
if not string.find(ARGV[4], ',' .. p .. ',', 1, true) then return {'forbidden', p} end
local s = v[2]
if s == 'canceled' then return {'not_found', p} end
if s == 'approved' then return {'already_used', p} end
if s == 'locked' then return {'locked', p} end
local now = tonumber(ARGV[2])
if s == 'expired' or now >= tonumber(v[3]) then return {'expired', p} end
local function event(t)
  if v[11] and v[11] ~= '' then
    local e = {at = now, t = t, p = p, ph = v[13], c = ARGV[1]}
    if v[12] and v[12] ~= '' then e.ip = v[12] end
    event_push(v[11], cjson.encode(e), tonumber(ARGV[12]), ARGV[13])
  end
end
local function failed()
  local count = tonumber(ARGV[5])
  if count > 0 and v[9] and v[9] ~= '' then
    -- One record-only charge: key, mode 'r', count, window (limits.lua reads KEYS and ARGV).
    redis.call('LPUSH', v[9], now)
    redis.call('LTRIM', v[9], 0, count - 1)
    redis.call('PEXPIRE', v[9], ARGV[6])
  end
end
local key = v[8]
if not key or key == '' then key = ARGV[3] end
local want = key .. ':' .. v[6]
for i = 14, #ARGV do
  if ARGV[i] == want then
    redis.call('HSET', KEYS[1], 's', 'approved')
    if tonumber(ARGV[7]) > 0 and v[10] and v[10] ~= '' then
      local g = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]),
                 tonumber(ARGV[11])}
      guard_count(v[10], now, g, 'a')
    end
    event('verification_approved')
    return {'approved', p}
  end
end
local au = tonumber(v[4]) + 1
local ma = tonumber(v[5])
failed()
if au >= ma then
  redis.call('HSET', KEYS[1], 'au', au, 's', 'locked')
  event('verification_locked')
  return {'locked_now', p}
end
redis.call('HSET', KEYS[1], 'au', au)
event('verification_failed')
return {'wrong', p, ma - au}
