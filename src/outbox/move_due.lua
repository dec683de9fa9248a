-- Moves one due retry back to its stream.
-- KEYS[1] the delay set (ob:{ob}:delay), KEYS[2] the member's stream. ARGV[1] the member.
-- A member is "<stream key>\n<job json>" (a version 1 SMS job, the form every version so far
-- writes) or "<stream key>\n<version>\n<kind>\n<job json>"; the entry written carries its
-- version and kind (fields v, k) and the job (field j). The caller reads the due members and
-- passes each one's stream as a key (every key a script touches is declared); the ZREM makes
-- the move happen once however many instances try it. Returns 1 when moved, 0 when another
-- instance moved it first.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local m = ARGV[1]
local nl = string.find(m, '\n', 1, true)
if not nl then
  return 0
end
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
redis.call('XADD', KEYS[2], '*', 'v', v, 'k', k, 'j', j)
return 1
