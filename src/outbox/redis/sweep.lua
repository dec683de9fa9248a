-- Removes expired jobs that no consumer holds: entries of a stream after the group's last
-- delivered id (never read), or members of the delay set (retries waiting for their time).
-- KEYS[1] a stream or the delay set. ARGV[1] 'stream' or 'delay', ARGV[2] the group,
-- ARGV[3] now (ms), ARGV[4] how many to look at, ARGV[5] the newest job version this
-- instance reads, ARGV[6] the kinds it reads, comma separated (like claim.lua).
-- Returns the message ids removed (their messages are then marked expired by the caller).
-- Entries of a newer version or another kind are left alone (not ours to read). Entries a
-- consumer holds are not touched here: its session expires them when it takes them.
local kinds = {}
for k in string.gmatch(ARGV[6], '[^,]+') do
  kinds[k] = true
end
local newest = tonumber(ARGV[5])
-- The job's message id when it is of a version and kind read here and expired; else nil.
local function expired_id(v, k, j)
  local vn = tonumber(v)
  if not (vn and vn <= newest and kinds[k] and j) then
    return nil
  end
  local ok, job = pcall(cjson.decode, j)
  if ok and type(job) == 'table' and type(job.expires_at_ms) == 'number'
      and job.expires_at_ms <= tonumber(ARGV[3]) and type(job.message_id) == 'string' then
    return job.message_id
  end
  return nil
end
local out = {}
if ARGV[1] == 'delay' then
  -- A member is "<stream>\n<json>" (a version 1 SMS job) or
  -- "<stream>\n<version>\n<kind>\n<json>" (writer.rs, move_due.lua).
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)) do
    local nl = string.find(m, '\n', 1, true)
    local rest = nl and string.sub(m, nl + 1)
    local v, k, j = nil, nil, nil
    if rest and string.sub(rest, 1, 1) == '{' then
      v, k, j = '1', 'sms', rest
    elseif rest then
      local a = string.find(rest, '\n', 1, true)
      local b = a and string.find(rest, '\n', a + 1, true)
      if b then
        v = string.sub(rest, 1, a - 1)
        k = string.sub(rest, a + 1, b - 1)
        j = string.sub(rest, b + 1)
      end
    end
    local id = expired_id(v, k, j)
    if id then
      redis.call('ZREM', KEYS[1], m)
      out[#out + 1] = id
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
  -- Entries without v and k predate envelopes: version 1 SMS jobs.
  local v, k, j = '1', 'sms', nil
  for i = 1, #f, 2 do
    if f[i] == 'v' then v = f[i + 1] elseif f[i] == 'k' then k = f[i + 1] elseif f[i] == 'j' then j = f[i + 1] end
  end
  local id = expired_id(v, k, j)
  if id then
    redis.call('XDEL', KEYS[1], e[1])
    out[#out + 1] = id
  end
end
return out
