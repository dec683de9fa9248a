-- Removes expired jobs that no consumer holds: entries of a stream after the group's last
-- delivered id (never read), or members of the delay set (retries waiting for their time).
-- KEYS[1] a stream or the delay set. ARGV[1] 'stream' or 'delay', ARGV[2] the group,
-- ARGV[3] now (ms), ARGV[4] how many to look at.
-- Returns the message ids removed (their messages are then marked expired by the caller).
-- Entries of another version or kind are left alone (not ours to read). Entries a consumer
-- holds are not touched here: its session expires them when it takes them.
local function expired_id(j)
  local ok, job = pcall(cjson.decode, j)
  if ok and type(job) == 'table' and type(job.expires_at_ms) == 'number'
      and job.expires_at_ms <= tonumber(ARGV[3]) and type(job.message_id) == 'string' then
    return job.message_id
  end
  return nil
end
local out = {}
if ARGV[1] == 'delay' then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
    local nl = string.find(m, '\n', 1, true)
    local j = nl and string.sub(m, nl + 1)
    -- Only the version 1 form ("<stream>\n{json}").
    if j and string.sub(j, 1, 1) == '{' then
      local id = expired_id(j)
      if id then
        redis.call('ZREM', KEYS[1], m)
        out[#out + 1] = id
      end
    end
  end
  return out
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return out
end
local last = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, ld
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end
  end
  if name == ARGV[2] and ld then last = ld end
end
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', tonumber(ARGV[4]))) do
  local f = e[2]
  local v, k, j = '1', 'sms', nil
  for i = 1, #f, 2 do
    if f[i] == 'v' then v = f[i + 1] elseif f[i] == 'k' then k = f[i + 1] elseif f[i] == 'j' then j = f[i + 1] end
  end
  if v == '1' and k == 'sms' and j then
    local id = expired_id(j)
    if id then
      redis.call('XDEL', KEYS[1], e[1])
      out[#out + 1] = id
    end
  end
end
return out
