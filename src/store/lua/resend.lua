-- One resend request. Mirrors src/otp/challenge.rs `resend` (the conformance suite in
-- tests/it/challenge.rs runs the same cases against both), then the limits of one more code
-- SMS (checked after the challenge's refusals, recorded only when sent), the outbox entry in
-- this same step, and the account's event. limits.lua and events.lua are prepended.
-- KEYS[1] the verification (v:{tag}:ver_…), KEYS[2] the new SMS record (m:{tag}:msg_…),
-- KEYS[3] the outbox stream, KEYS[4 .. 3+nl] the limit counters, then the range (when the
-- guard applies), then the account's events (when there is an event).
-- ARGV: [1] client, [2] now_ms, [3] new message id, [4] nl, [5] '1' with a range, [6] the
-- event JSON or '', [7] events kept, [8] events ttl, [9..14] the outbox entry's fields and
-- values (empty strings: no entry, the caller queues the job itself), then 4 per limit (and 5
-- for the range), then the SMS record's fields and values.
-- Returns {outcome[, retry after ms | the verification's fields]} or {limit name, wait ms[,
-- 'closes']} for a refusal by a limit.
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
local nl = tonumber(ARGV[4])
local refused = limits_check(3, 14, nl, now)
if refused then
  local r = nil
  if ARGV[5] == '1' then r = KEYS[4 + nl] end
  return with_closed_range(refused, r, now)
end
local b = 14 + nl * 4
local range, g
if ARGV[5] == '1' then
  range = KEYS[4 + nl]
  g = {tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
       tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])}
  b = b + 5
  local verdict = guard_judge(range, now, g)
  if verdict then return {'pumping_guard', verdict[2], verdict[1]} end
end
-- The first write: Redis does not roll a script back, so a failing XADD must precede the rest.
if ARGV[9] ~= '' then
  redis.call('XADD', KEYS[3], '*', ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14])
end
redis.call('HSET', KEYS[1], 'sn', tonumber(v[4]) + 1, 'ls', now, 'm', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, b + 1, #ARGV))
redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
limits_record(3, 14, nl, now)
if range then guard_count(range, now, g, 's') end
if ARGV[6] ~= '' then
  local ek = 4 + nl
  if range then ek = ek + 1 end
  event_push(KEYS[ek], ARGV[6], tonumber(ARGV[7]), ARGV[8])
end
return {'sent', redis.call('HGETALL', KEYS[1])}
