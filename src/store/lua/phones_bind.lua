-- Binds the phone of an approved registration verification to an account (events.lua is
-- prepended). Mirrors src/store/memory/phones.rs `bind_phone` and `upsert`.
-- KEYS[1] the verification (v:{tag}:ver_…), KEYS[2] the account's phones (ph:<hash>, a hash
-- E.164 → "id|primary|level|added_at"), KEYS[3] the account's history.
-- ARGV: client, E.164, the new entry, the event (JSON), max events, events ttl ms.
-- Returns {'bound', entry} | {'not_usable'} | {'already_used'}.
local v = redis.call('HMGET', KEYS[1], 'c', 'p', 's', 'ph', 'b')
if not v[1] or v[1] ~= ARGV[1] or v[2] ~= 'registration' or v[4] ~= ARGV[2] then
  return {'not_usable'}
end
if v[5] then return {'already_used'} end
if v[3] ~= 'approved' then return {'not_usable'} end
redis.call('HSET', KEYS[1], 'b', '1')
local pat = '^([^|]*)|([01])|(%d+)|(%-?%d+)$'
local id, p, l, at = string.match(ARGV[3], pat)
local all = redis.call('HGETALL', KEYS[2])
local out = {id, p, l, at}
for i = 1, #all, 2 do
  if all[i] == ARGV[2] then
    local eid, ep, el, eat = string.match(all[i + 1], pat)
    if tonumber(el) > tonumber(l) then l = el end
    out = {eid, ep, l, eat}
  end
end
if p == '1' or #all == 0 then
  for i = 1, #all, 2 do
    local a, b, c, d = string.match(all[i + 1], pat)
    if all[i] ~= ARGV[2] and b == '1' then
      redis.call('HSET', KEYS[2], all[i], a .. '|0|' .. c .. '|' .. d)
    end
  end
  out[2] = '1'
end
local entry = table.concat(out, '|')
redis.call('HSET', KEYS[2], ARGV[2], entry)
event_push(KEYS[3], ARGV[4], tonumber(ARGV[5]), ARGV[6])
return {'bound', entry}
