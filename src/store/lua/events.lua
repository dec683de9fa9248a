-- Appends one event to an account's history (prepended to the scripts that record events, so
-- the event is written in the same script as the change it records). Mirrors
-- src/store/events.rs: newest first, at most `max` kept, the list expiring `ttl_ms` after its
-- newest event.
local function event_push(key, json, max, ttl_ms)
  redis.call('LPUSH', key, json)
  redis.call('LTRIM', key, 0, max - 1)
  redis.call('PEXPIRE', key, ttl_ms)
end
