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

-- Finds (and takes) the message of a receipt, or keeps the receipt. Mirrors
-- memory/receipts.rs `match_receipt`.
-- KEYS[1] the SMSC's rule hash (ri:{smsc-…}), KEYS[2] its pool (rp:{smsc-…}), then n
-- correlation keys (c:{smsc-…}:form), then their n orphan keys (o:{smsc-…}:form): with an
-- explicit rule one form, with auto every canonical form the receipt id may stand for.
-- ARGV: configured rule ('a' auto, 's', 'h', 'd'), stat, orphan ttl_ms, the receipt id
-- normalised, learn votes, then per form the rules that give it ('s', 'h', 'd' letters).
-- Returns {} (kept), or {'m', "message_id|parts|send"}, with the learned rule and pool
-- appended (see receipt_vote) when this receipt fixed the rule.
local function receipt_match()
  local n = (#KEYS - 2) / 2
  local rule = ARGV[1]
  if rule == 'a' then rule = redis.call('HGET', KEYS[1], 'r') end
  if rule then
    for i = 1, n do
      if string.find(ARGV[5 + i], rule, 1, true) then
        local v = redis.call('GETDEL', KEYS[2 + i])
        if v then return {'m', v} end
        redis.call('SET', KEYS[2 + n + i], ARGV[2], 'PX', ARGV[3])
        return {}
      end
    end
    return {}
  end
  local found = {}
  for i = 1, n do
    if redis.call('EXISTS', KEYS[2 + i]) == 1 then table.insert(found, i) end
  end
  if #found ~= 1 then
    redis.call('HSET', KEYS[2], ARGV[4], ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
    return {}
  end
  local i = found[1]
  local v = redis.call('GETDEL', KEYS[2 + i])
  local out = {'m', v}
  local got = receipt_vote(KEYS[1], KEYS[2], ARGV[5 + i], ARGV[5])
  if got then for _, x in ipairs(got) do table.insert(out, x) end end
  return out
end
