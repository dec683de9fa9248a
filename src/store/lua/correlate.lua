-- Records the SMSC ids of a message's parts, unless their receipt came first. Mirrors
-- memory/receipts.rs `correlate`.
-- KEYS[1] the SMSC's rule hash (ri:{smsc-…}), KEYS[2] its pool (rp:{smsc-…}), then n
-- correlation keys (c:{smsc-…}:canonical), then their n orphan keys (o:{smsc-…}:canonical).
-- ARGV: "message_id|parts", ttl_ms, learn votes, then per part the forms a receipt may write
-- its id in while the rule is unknown, one "rules=form" a line (rules: letters s, h, d).
-- Returns {count of early stats, stat, …, then when learned: rule, pool id, pool stat, …}.
local n = (#KEYS - 2) / 2
local learned = redis.call('HGET', KEYS[1], 'r')
local early = {}
local got = nil
for i = 1, n do
  local o = redis.call('GETDEL', KEYS[2 + n + i])
  if o then
    table.insert(early, o)
  else
    local taken = false
    if not learned then
      local fit_form, fit_rules, count = nil, nil, 0
      for line in string.gmatch(ARGV[3 + i], '[^\n]+') do
        local rules, form = string.match(line, '^([shd]+)=(.*)$')
        if form and redis.call('HEXISTS', KEYS[2], form) == 1 then
          fit_form, fit_rules, count = form, rules, count + 1
        end
      end
      if count == 1 then
        table.insert(early, redis.call('HGET', KEYS[2], fit_form))
        redis.call('HDEL', KEYS[2], fit_form)
        taken = true
        if not got then
          got = receipt_vote(KEYS[1], KEYS[2], fit_rules, ARGV[3])
          if got then learned = got[1] end
        end
      end
    end
    if not taken then redis.call('SET', KEYS[2 + i], ARGV[1], 'PX', ARGV[2]) end
  end
end
local out = {tostring(#early)}
for _, s in ipairs(early) do table.insert(out, s) end
if got then for _, x in ipairs(got) do table.insert(out, x) end end
return out
