-- One resend request. Mirrors src/otp/challenge.rs `resend` (the conformance suite in
-- tests/it/challenge.rs runs the same cases against both).
-- KEYS[1] the verification (v:{tag}:ver_…), KEYS[2] the new SMS record (m:{tag}:msg_…).
-- ARGV: client, now_ms, new message id, then the SMS record's fields and values.
-- Returns {outcome[, retry after ms | the verification's fields]}.
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'sn', 'xs', 'ls', 'cd')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found'} end
local s = v[2]
local now = tonumber(ARGV[2])
if s == 'canceled' then return {'not_found'} end
if s == 'approved' then return {'already_used'} end
if s == 'locked' then return {'locked'} end
if s == 'expired' or now >= tonumber(v[3]) then return {'expired'} end
if tonumber(v[4]) >= tonumber(v[5]) then return {'max_sends'} end
local next = tonumber(v[6]) + tonumber(v[7])
if now < next then return {'cooldown', next - now} end
redis.call('HSET', KEYS[1], 'sn', tonumber(v[4]) + 1, 'ls', now, 'm', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4, #ARGV))
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
return {'sent', redis.call('HGETALL', KEYS[1])}
