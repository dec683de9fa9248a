-- Checks a request's limits and, when all pass, records them (limits.lua is prepended).
-- KEYS: n counters, then the range key when the pumping guard applies.
-- ARGV: now, n, 4 per charge, then (with a range) slot_ms, slots, min_sent, min_ratio, cool_off_ms.
-- Returns {} when it passed, else {limit name, wait ms}.
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local refused = limits_check(0, 2, n, now)
local range = KEYS[n + 1]
if refused then return with_closed_range(refused, range, now) end
local g
if range then
  local b = 2 + n * 4
  g = {tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3]),
       tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])}
  local v = guard_judge(range, now, g)
  if v then return {'pumping_guard', v[2], v[1]} end
end
limits_record(0, 2, n, now)
if range then guard_count(range, now, g, 's') end
return {}
