-- One code check. Mirrors src/otp/challenge.rs `check` (the conformance suite in
-- tests/it/challenge.rs runs the same cases against both).
-- KEYS[1] the verification (v:{tag}:ver_…).
-- ARGV: client, now_ms, id of the current key, ",purpose,…," the client may use, then one
-- "key id:digits" per (key, length) the submitted code matched.
-- Returns {outcome, purpose[, attempts remaining]}.
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'au', 'ma', 'd', 'p', 'k')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found', ''} end
local p = v[7] or ''
if not string.find(ARGV[4], ',' .. p .. ',', 1, true) then return {'forbidden', p} end
local s = v[2]
if s == 'canceled' then return {'not_found', p} end
if s == 'approved' then return {'already_used', p} end
if s == 'locked' then return {'locked', p} end
if s == 'expired' or tonumber(ARGV[2]) >= tonumber(v[3]) then return {'expired', p} end
local key = v[8]
if not key or key == '' then key = ARGV[3] end
local want = key .. ':' .. v[6]
for i = 5, #ARGV do
  if ARGV[i] == want then
    redis.call('HSET', KEYS[1], 's', 'approved')
    return {'approved', p}
  end
end
local au = tonumber(v[4]) + 1
local ma = tonumber(v[5])
if au >= ma then
  redis.call('HSET', KEYS[1], 'au', au, 's', 'locked')
  return {'locked_now', p}
end
redis.call('HSET', KEYS[1], 'au', au)
return {'wrong', p, ma - au}
