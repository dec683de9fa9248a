-- Stores a new (pending) TOTP enrolment, replacing the account's previous one, and records
-- `totp_enrolled`. Mirrors src/store/memory/totp.rs `enrol`.
-- KEYS[1] the enrolment (t:…), KEYS[2] the account's events.
-- ARGV: event json, max events, event retention ms, then the enrolment's fields and values.
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4, #ARGV))
event_push(KEYS[2], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return 1
