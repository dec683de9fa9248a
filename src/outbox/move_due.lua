-- Moves due retries back to their streams.
-- KEYS[1] the delay set (ob:{ob}:delay). ARGV: now_ms.
-- A member is "<stream key>\n<job json>" (a version 1 SMS job, the form every version so far
-- writes) or "<stream key>\n<version>\n<kind>\n<job json>"; the entry written carries its
-- version and kind (fields v, k) and the job (field j).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
for _, m in ipairs(due) do
  local nl = string.find(m, '\n', 1, true)
  if nl then
    local stream = string.sub(m, 1, nl - 1)
    local rest = string.sub(m, nl + 1)
    local v, k, j = '1', 'sms', rest
    if string.sub(rest, 1, 1) ~= '{' then
      local a = string.find(rest, '\n', 1, true)
      local b = a and string.find(rest, '\n', a + 1, true)
      if b then
        v = string.sub(rest, 1, a - 1)
        k = string.sub(rest, a + 1, b - 1)
        j = string.sub(rest, b + 1)
      end
    end
    redis.call('XADD', stream, '*', 'v', v, 'k', k, 'j', j)
  end
  redis.call('ZREM', KEYS[1], m)
end
return #due
