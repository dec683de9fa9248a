-- One part's final receipt (lua/part.lua prepended), with the re-send's outbox entry when the
-- part sends the message once more.
-- KEYS[1] the SMS record (m:{tag}:msg_…), KEYS[2] the outbox stream of the re-send
-- (ob:{ob}:<route>:code; KEYS[1] again, untouched, when there is no entry to write).
-- ARGV: parts, status, error, resend (0/1), at_ms, send (0 the first, 1 the re-send), then
-- [7..12] the outbox entry's fields and values (v, k, j; empty strings: no entry, the caller
-- queues the re-send itself).
local entry = nil
if ARGV[7] ~= '' then
  entry = {KEYS[2], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]}
end
return apply_part(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], entry)
