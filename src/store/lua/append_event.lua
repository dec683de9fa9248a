-- Appends one event outside any other change (events.lua is prepended).
-- KEYS[1] the account's history; ARGV: the event (JSON), max kept, ttl ms.
event_push(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3])
return 1
