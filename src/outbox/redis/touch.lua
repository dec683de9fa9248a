-- Touches the entries a consumer holds, and says which it no longer owns.
-- KEYS[1] the stream. ARGV[1] the group, ARGV[2] the consumer, ARGV[3..] entry ids.
-- An entry still pending to this consumer has its idle time reset (XCLAIM … 0 JUSTID, which
-- leaves the delivery count alone); one pending to another consumer (taken over after
-- CLAIM_IDLE) or no longer pending is returned as lost, and is not touched: never steal back.
local mine, lost = {}, {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    mine[#mine + 1] = ARGV[i]
  else
    lost[#lost + 1] = ARGV[i]
  end
end
local i = 1
while i <= #mine do
  local args = {KEYS[1], ARGV[1], ARGV[2], 0}
  for n = i, math.min(i + 499, #mine) do
    args[#args + 1] = mine[n]
  end
  args[#args + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(args))
  i = i + 500
end
return lost
