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

-- Records the correlations of a message's parts (value "message_id|parts|send"), unless their
-- receipt came first. Mirrors memory/receipts.rs `correlate`.
-- corr, orphans: the parts' correlation and orphan keys; forms: per part the forms a receipt
-- may write its id in while the rule is unknown, one "rules=form" a line.
-- Returns the stats of the receipts found, and the learned rule (see receipt_vote) or nil.
local function correlate_parts(rule_key, pool_key, corr, orphans, value, ttl, learn_votes, forms)
  local learned = redis.call('HGET', rule_key, 'r')
  local early = {}
  local got = nil
  for i = 1, #corr do
    local o = redis.call('GETDEL', orphans[i])
    if o then
      table.insert(early, o)
    else
      local taken = false
      if not learned then
        local fit_form, fit_rules, count = nil, nil, 0
        for line in string.gmatch(forms[i], '[^\n]+') do
          local rules, form = string.match(line, '^([shd]+)=(.*)$')
          if form and redis.call('HEXISTS', pool_key, form) == 1 then
            fit_form, fit_rules, count = form, rules, count + 1
          end
        end
        if count == 1 then
          table.insert(early, redis.call('HGET', pool_key, fit_form))
          redis.call('HDEL', pool_key, fit_form)
          taken = true
          if not got then
            got = receipt_vote(rule_key, pool_key, fit_rules, learn_votes)
            if got then learned = got[1] end
          end
        end
      end
      if not taken then redis.call('SET', corr[i], value, 'PX', ttl) end
    end
  end
  return early, got
end

-- The reply of a correlation: {count of early stats, stat, …, then the learned rule and pool}.
local function correlated_reply(early, got)
  local out = {tostring(#early)}
  for _, s in ipairs(early) do table.insert(out, s) end
  if got then for _, x in ipairs(got) do table.insert(out, x) end end
  return out
end
