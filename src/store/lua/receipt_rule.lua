-- Learning an SMSC's receipt_ids rule (prepended to correlate.lua and match_receipt.lua).
-- Mirrors memory/receipts.rs `SmscReceipts::vote`.
-- One more receipt matched one message under `rules` (letters): a vote when that is one rule.
-- Returns nil, or {rule, pool id, pool stat, …} when the rule is now learned (the pool of
-- receipts kept while it was unknown is handed back, to match again under it).
local function receipt_vote(rule_key, pool_key, rules, learn_votes)
  if #rules ~= 1 then return nil end
  local votes = redis.call('HINCRBY', rule_key, 'v:' .. rules, 1)
  if votes < tonumber(learn_votes) then return nil end
  redis.call('DEL', rule_key)
  redis.call('HSET', rule_key, 'r', rules)
  local out = {rules}
  local pool = redis.call('HGETALL', pool_key)
  for j = 1, #pool do table.insert(out, pool[j]) end
  redis.call('DEL', pool_key)
  return out
end
