-- Moves an SMS record to a new status unless it is final.
-- KEYS[1] the SMS record (m:{tag}:msg_…).
-- ARGV: status, time field ('sa', 'da' or ''), at_ms, error ('' = none).
local s = redis.call('HGET', KEYS[1], 's')
if not s or (s ~= 'queued' and s ~= 'submitted') then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'er', ARGV[4]) end
return 1
