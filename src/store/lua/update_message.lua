-- Moves an SMS record to a new status unless it is final.
-- KEYS[1] the SMS record (m:{tag}:msg_…).
-- ARGV: status, time field ('sa', 'da' or ''), at_ms, error ('' = none).
-- Returns the send the record is at: 0 the first, 1 the re-send of an undeliverable code.
local v = redis.call('HMGET', KEYS[1], 's', 'rs')
local send = 0
if v[2] == '1' then send = 1 end
if not v[1] or (v[1] ~= 'queued' and v[1] ~= 'submitted') then return send end
redis.call('HSET', KEYS[1], 's', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'er', ARGV[4]) end
return send
