-- Creates a verification: checks its limits, cancels the subject's pending one, stores the new
-- one and the record of its first SMS, queues the SMS (the outbox entry, in this same step: a
-- transactional outbox), records the limits and the account's event. Mirrors memory
-- `verifications.rs` `create_verification`. limits.lua and events.lua are prepended.
-- KEYS[1] the new verification (v:{tag}:ver_…), KEYS[2] the subject index (s:{tag}:…),
-- KEYS[3] the SMS record (m:{tag}:msg_…), KEYS[4] the outbox stream (ob:{ob}:<route>:code),
-- KEYS[5 .. 4+nl] the limit counters, then the range (when the guard applies), then the
-- account's events (when there is an event).
-- ARGV: [1] id, [2] verification ttl ms, [3] subject ttl ms, [4] verification key prefix
-- (v:{tag}:, to find the subject's previous verification in the same slot), [5] n (number of
-- verification field arguments), [6] m (number of SMS record field arguments), [7] now,
-- [8] nl, [9] '1' with a range, [10] the event JSON or '', [11] events kept, [12] events ttl,
-- [13..18] the outbox entry's fields and values (v, k, j; empty strings: no entry, the caller
-- queues the job itself), then 4 per limit (and 5 for the range: see limits.lua), then the
-- verification's fields and values, then the SMS record's.
-- Login (`member` after the SMS record's fields): the last KEY is the account's phones (a hash
-- by E.164); when the verification's phone is not in it, nothing is written or counted and
-- the script returns {'not_registered'} (a phone removed concurrently is never sent a code).
-- Returns {} when created, else {limit name, wait ms[, 'closes']} and nothing is written
-- (but a range the guard closes now).
local now = tonumber(ARGV[7])
local nl = tonumber(ARGV[8])
do
  local vb = 18 + nl * 4
  if ARGV[9] == '1' then vb = vb + 5 end
  local n, m = tonumber(ARGV[5]), tonumber(ARGV[6])
  if ARGV[vb + n + m + 1] == 'member' then
    local ph = ''
    for i = vb + 1, vb + n, 2 do if ARGV[i] == 'ph' then ph = ARGV[i + 1] end end
    if redis.call('HEXISTS', KEYS[#KEYS], ph) == 0 then return {'not_registered'} end
  end
end
local refused = limits_check(4, 18, nl, now)
if refused then
  local r = nil
  if ARGV[9] == '1' then r = KEYS[5 + nl] end
  return with_closed_range(refused, r, now)
end
local b = 18 + nl * 4
local range, g
if ARGV[9] == '1' then
  range = KEYS[5 + nl]
  g = {tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
       tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])}
  b = b + 5
  local v = guard_judge(range, now, g)
  if v then return {'pumping_guard', v[2], v[1]} end
end
-- The first write: Redis does not roll a script back, so a failing XADD must precede the rest.
if ARGV[13] ~= '' then
  redis.call('XADD', KEYS[4], '*', ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18])
end
local old = redis.call('GET', KEYS[2])
if old then
  local okey = ARGV[4] .. old
  if redis.call('HGET', okey, 's') == 'pending' then redis.call('HSET', okey, 's', 'canceled') end
end
local n = tonumber(ARGV[5])
local m = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, b + 1, b + n))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[3], unpack(ARGV, b + n + 1, b + n + m))
redis.call('PEXPIRE', KEYS[3], ARGV[2])
limits_record(4, 18, nl, now)
if range then guard_count(range, now, g, 's') end
if ARGV[10] ~= '' then
  local ek = 5 + nl
  if range then ek = ek + 1 end
  event_push(KEYS[ek], ARGV[10], tonumber(ARGV[11]), ARGV[12])
end
return {}
