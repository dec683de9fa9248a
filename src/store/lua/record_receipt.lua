-- A delivery receipt in one round trip (single Redis; lua/receipt_rule.lua and lua/part.lua
-- prepended): `receipt_match`, then the part applied to the matched message. The message's key
-- is known only once matched, so it is not in KEYS: this script is for a single Redis server
-- only (with a cluster, match_receipt.lua then record_part.lua).
-- KEYS and ARGV[1..5+n]: as `receipt_match`. Then ARGV[6+n..]: key prefix, status, error,
-- at_ms.
-- Returns `receipt_match`'s reply, with when matched the outcome third: 'pending', 'final', or
-- 'decide' for an undeliverable part of a first send (the caller decides on its re-send and
-- applies it with record_part.lua).
local out = receipt_match()
if out[1] ~= 'm' then return out end
local a = 5 + (#KEYS - 2) / 2
local mid, parts, send = string.match(out[2], '^([^|]+)|(%d+)|?([01]?)$')
local outcome = 'pending'
if send == '' then send = '0' end
if mid and ARGV[a + 2] == 'undeliverable' and send == '0' then
  outcome = 'decide'
elseif mid and #mid == 34 then
  local key = ARGV[a + 1] .. 'm:{' .. string.sub(mid, 5, 8) .. '}:' .. mid
  outcome = apply_part(key, parts, ARGV[a + 2], ARGV[a + 3], '0', ARGV[a + 4], send)
end
table.insert(out, 3, outcome)
return out
