-- Removes consumers of the group that hold nothing and have been silent for a while (dead
-- instances, closed sessions). Atomic: a consumer cannot read an entry between the check and
-- the removal, so no pending entry is ever dropped with its consumer.
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] the idle time (ms) after which an empty
-- consumer is removed. Returns how many were removed.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and pending == 0 and idle and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed = removed + 1
  end
end
return removed
