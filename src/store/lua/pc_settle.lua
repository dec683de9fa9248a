-- Settles a code-verified phone change (events.lua is prepended). Mirrors
-- src/store/memory/phone_changes.rs `settle_change`.
-- KEYS[1] the change (pc:{tag}:pc_…), KEYS[2] the account's phones (ph:<hash>), KEYS[3] the
-- account's history.
-- ARGV: client, now_ms, "completed" or "refused:<reason>", the new number (E.164), its entry
-- should the account not have it ("id|1|2|added_at"), the event (JSON), max events, ttl ms.
-- Returns {'not_found'} | {'settled', how} | {'not_verified'} | {'expired'} | {'refused'} |
-- {'completed', the removed primary's E.164 or ''}.
local v = redis.call('HMGET', KEYS[1], 'c', 's', 'ea', 'st')
if not v[1] or v[1] ~= ARGV[1] then return {'not_found'} end
if v[4] and v[4] ~= '' then return {'settled', v[4]} end
if v[2] ~= 'approved' then return {'not_verified'} end
if tonumber(ARGV[2]) >= tonumber(v[3]) then return {'expired'} end
redis.call('HSET', KEYS[1], 'st', ARGV[3])
event_push(KEYS[3], ARGV[6], tonumber(ARGV[7]), ARGV[8])
if ARGV[3] ~= 'completed' then return {'refused'} end
local pat = '^([^|]*)|([01])|(%d+)|(%-?%d+)$'
local all = redis.call('HGETALL', KEYS[2])
local old = ''
local entry = ARGV[5]
for i = 1, #all, 2 do
  local a, b, c, d = string.match(all[i + 1], pat)
  if all[i] == ARGV[4] then
    entry = a .. '|1|2|' .. d
  elseif b == '1' then
    old = all[i]
    redis.call('HDEL', KEYS[2], all[i])
  end
end
redis.call('HSET', KEYS[2], ARGV[4], entry)
return {'completed', old}
