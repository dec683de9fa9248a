-- One part's final receipt (lua/part.lua prepended).
-- KEYS[1] the SMS record (m:{tag}:msg_…).
-- ARGV: parts, status, error, resend (0/1), at_ms, send (0 the first, 1 the re-send).
return apply_part(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
