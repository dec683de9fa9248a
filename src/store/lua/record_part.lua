-- One part's final receipt. Mirrors memory.rs `apply_part`.
-- KEYS[1] the SMS record (m:{tag}:msg_…).
-- ARGV: parts, status, error, resend (0/1), at_ms, send (0 the first, 1 the re-send).
-- A part of an earlier send (a late receipt of the first send after the re-send went) does not
-- count.
local v = redis.call('HMGET', KEYS[1], 's', 'rs')
local s = v[1]
if not s or (s ~= 'queued' and s ~= 'submitted') then return 'pending' end
local send = '0'
if v[2] == '1' then send = '1' end
if send ~= ARGV[6] then return 'pending' end
if ARGV[2] == 'delivered' then
  local pd = redis.call('HINCRBY', KEYS[1], 'pd', 1)
  if pd < tonumber(ARGV[1]) then return 'pending' end
  redis.call('HSET', KEYS[1], 's', 'delivered', 'da', ARGV[5])
  return 'final'
end
if ARGV[4] == '1' and v[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'rs', '1', 'pd', 0, 's', 'queued', 'er', ARGV[3])
  return 'resend'
end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'er', ARGV[3])
return 'final'
