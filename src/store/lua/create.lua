-- Creates a verification: cancels the subject's pending one, stores the new one and the
-- record of its first SMS. Mirrors memory.rs `VerificationStore::create`.
-- KEYS[1] the new verification (v:{tag}:ver_…), KEYS[2] the subject index (s:{tag}:…),
-- KEYS[3] the SMS record (m:{tag}:msg_…).
-- KEYS[4] (optional, login) the account's phones (ph:<hash>, a hash by E.164): when given and
-- the verification's phone is not in it, nothing is written and the script returns 0.
-- ARGV: id, verification ttl ms, subject ttl ms, verification key prefix (v:{tag}:, to find the
-- previous verification of the subject, in the same slot), n (number of verification field
-- arguments), the verification's fields and values, then the SMS record's fields and values.
if KEYS[4] then
  local ph = ''
  for i = 6, 5 + tonumber(ARGV[5]), 2 do if ARGV[i] == 'ph' then ph = ARGV[i + 1] end end
  if redis.call('HEXISTS', KEYS[4], ph) == 0 then return 0 end
end
local old = redis.call('GET', KEYS[2])
if old then
  local okey = ARGV[4] .. old
  if redis.call('HGET', okey, 's') == 'pending' then redis.call('HSET', okey, 's', 'canceled') end
end
local n = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], unpack(ARGV, 6, 5 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[3], unpack(ARGV, 6 + n, #ARGV))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
