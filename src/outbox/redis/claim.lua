-- Takes over entries of silent consumers, only those this version reads.
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] the consumer, ARGV[3] min idle (ms),
-- ARGV[4] where to start ("-" or "(<id>", the cursor returned last time), ARGV[5] how many
-- pending entries to look at, ARGV[6] the newest job version this reader reads, ARGV[7] the
-- kinds it reads, comma separated.
-- Returns {next cursor, {{id, v, k, j}…} claimed, {{id, v, k}…} left for a newer reader}.
-- An entry of a newer version or unknown kind is not claimed: it stays pending to whoever
-- holds it, so that a newer instance's claim takes it; an older one never acknowledges it.
local kinds = {}
for k in string.gmatch(ARGV[7], '[^,]+') do
  kinds[k] = true
end
local newest = tonumber(ARGV[6])
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local claimed, foreign = {}, {}
local last
for _, e in ipairs(p) do
  local id = e[1]
  last = id
  local r = redis.call('XRANGE', KEYS[1], id, id)
  if #r == 0 then
    -- Deleted while pending: nothing is left to send.
    redis.call('XACK', KEYS[1], ARGV[1], id)
  else
    local f = r[1][2]
    local v, k, j = '1', 'sms', ''
    for i = 1, #f, 2 do
      if f[i] == 'v' then v = f[i + 1] elseif f[i] == 'k' then k = f[i + 1] elseif f[i] == 'j' then j = f[i + 1] end
    end
    local vn = tonumber(v)
    if vn and vn <= newest and kinds[k] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id, 'JUSTID')
      claimed[#claimed + 1] = {id, v, k, j}
    else
      foreign[#foreign + 1] = {id, v, k}
    end
  end
end
local nxt = '-'
if last and #p >= tonumber(ARGV[5]) then
  nxt = '(' .. last
end
return {nxt, claimed, foreign}
