-- The limits of one request, as Lua functions that other scripts include (prepended), so a
-- request's limits are checked and recorded in the same script, the same round trip, as the
-- state change they guard. Mirrors src/limits/window.rs and src/limits/pumping.rs.
--
-- A charge is one counter key in KEYS and four ARGV entries: mode ("cr" check and record,
-- "c" check only, "r" record only), count, window_ms, limit name. A counter is a list of the
-- times of the events it let through, newest first, at most `count` long, expiring `window_ms`
-- after the newest.

-- nil when every charge passes; else {limit name, wait in ms} of the longest wait.
local function limits_check(k0, a0, n, now)
  local worst, wait = nil, 0
  for i = 1, n do
    local a = a0 + (i - 1) * 4
    if ARGV[a + 1] ~= 'r' then
      local count = tonumber(ARGV[a + 2])
      local t = redis.call('LINDEX', KEYS[k0 + i], count - 1)
      if t then
        local free_at = tonumber(t) + tonumber(ARGV[a + 3])
        if free_at > now and free_at - now > wait then
          worst, wait = ARGV[a + 4], free_at - now
        end
      end
    end
  end
  if worst then return {worst, wait} end
  return nil
end

local function limits_record(k0, a0, n, now)
  for i = 1, n do
    local a = a0 + (i - 1) * 4
    if ARGV[a + 1] ~= 'c' then
      local key = KEYS[k0 + i]
      redis.call('LPUSH', key, now)
      redis.call('LTRIM', key, 0, tonumber(ARGV[a + 2]) - 1)
      redis.call('PEXPIRE', key, ARGV[a + 3])
    end
  end
end

-- The pumping guard of one number range: a hash with `c` (closed until, ms) and per slot
-- `i<slot>` (slot number), `s<slot>` (code SMS sent), `a<slot>` (codes approved).
-- g = {slot_ms, slots, min_sent, min_ratio, cool_off_ms}.
-- Returns nil (open), {'closes', wait} or {'closed', wait}.
local function guard_judge(key, now, g)
  local closed = tonumber(redis.call('HGET', key, 'c') or '0')
  if closed > now then return {'closed', closed - now} end
  local cur = math.floor(now / g[1])
  local sent, approved = 0, 0
  for slot = 0, g[2] - 1 do
    local f = redis.call('HMGET', key, 'i' .. slot, 's' .. slot, 'a' .. slot)
    local idx = tonumber(f[1] or '-1')
    if idx > cur - g[2] and idx <= cur then
      sent = sent + tonumber(f[2] or '0')
      approved = approved + tonumber(f[3] or '0')
    end
  end
  if sent >= g[3] and sent > 0 and approved < g[4] * sent then
    redis.call('DEL', key)
    redis.call('HSET', key, 'c', now + g[5])
    redis.call('PEXPIRE', key, g[5] + g[1] * g[2])
    return {'closes', g[5]}
  end
  return nil
end

-- Counts one code SMS sent (field 's') or one code approved (field 'a') in the current slot.
local function guard_count(key, now, g, field)
  local cur = math.floor(now / g[1])
  local slot = cur % g[2]
  if tonumber(redis.call('HGET', key, 'i' .. slot) or '-1') ~= cur then
    redis.call('HSET', key, 'i' .. slot, cur, 's' .. slot, 0, 'a' .. slot, 0)
  end
  redis.call('HINCRBY', key, field .. slot, 1)
  local ttl = redis.call('PTTL', key)
  local keep = g[1] * g[2]
  if ttl < keep then redis.call('PEXPIRE', key, keep) end
end

-- A refusal by a rule, lengthened to a closed range's wait when that is longer (nothing is
-- written): the wait announced must be one after which the request passes.
local function with_closed_range(refused, range, now)
  if not range then return refused end
  local closed = tonumber(redis.call('HGET', range, 'c') or '0')
  if closed - now > tonumber(refused[2]) then return {'pumping_guard', closed - now} end
  return refused
end
