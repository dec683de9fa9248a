-- One TOTP confirm or check. Mirrors src/totp/rules.rs `decide` (the HTTP tests run the same
-- cases against both stores); the events as src/store/memory/totp.rs records them.
-- KEYS[1] the enrolment (t:…), KEYS[2] the account's events.
-- ARGV: op (confirm|check), now_ms, lock_ms, the sealed secret the steps were computed with,
-- `totp_approved` event json ("" for none), `totp_failed` event json, max events, event
-- retention ms, then the time steps the code matched.
-- Returns {outcome[, number]}: activated/approved + step, incorrect/replayed + attempts
-- remaining, locked_now/locked + locked until, not_active, already_active, gone.
local v = redis.call('HMGET', KEYS[1], 'sec', 'st', 'ls', 'f', 'lu', 'ma')
if not v[1] or v[1] ~= ARGV[4] then return {'gone'} end
local op, st = ARGV[1], v[2]
local now = tonumber(ARGV[2])
if op == 'check' and st == 'pending' then return {'not_active'} end
if op == 'confirm' and st == 'active' then return {'already_active'} end
local lu = v[5] and tonumber(v[5])
if lu and now < lu then return {'locked', v[5]} end
local last = v[3] and tonumber(v[3])
local ma, f = tonumber(v[6]), tonumber(v[4])
local best, any = nil, false
for i = 9, #ARGV do
  local s = tonumber(ARGV[i])
  any = true
  if (not last or s > last) and (not best or s > best) then best = s end
end
local function fail_event()
  event_push(KEYS[2], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]))
end
if best then
  local step = string.format('%.0f', best)
  redis.call('HSET', KEYS[1], 'st', 'active', 'ls', step, 'f', 0)
  redis.call('HDEL', KEYS[1], 'lu')
  if st == 'pending' then redis.call('HSET', KEYS[1], 'aa', ARGV[2]) end
  if op == 'confirm' then return {'activated', step} end
  if ARGV[5] ~= '' then event_push(KEYS[2], ARGV[5], tonumber(ARGV[7]), tonumber(ARGV[8])) end
  return {'approved', step}
end
if any then return {'replayed', tostring(ma - f)} end
f = f + 1
if f >= ma then
  local till = string.format('%.0f', now + tonumber(ARGV[3]))
  redis.call('HSET', KEYS[1], 'f', f, 'lu', till)
  fail_event()
  return {'locked_now', till}
end
redis.call('HSET', KEYS[1], 'f', f)
fail_event()
return {'incorrect', tostring(ma - f)}
