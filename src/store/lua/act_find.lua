-- Finds the activation of a redeem: the first redeem index (one per configured key, current
-- first) that names a stored activation. Reads only.
-- KEYS: the redeem indexes (ai:{tag}:…). Returns the activation's HGETALL, or {}.
for i = 1, #KEYS do
  local rk = redis.call('GET', KEYS[i])
  if rk then
    local f = redis.call('HGETALL', rk)
    if #f > 0 then return f end
  end
end
return {}
