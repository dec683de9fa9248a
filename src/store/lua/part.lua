-- One part's final receipt applied to its message (prepended to record_part.lua and
-- record_receipt.lua). Mirrors memory.rs `apply_part`.
-- key: the SMS record; parts; status; err; resend ('1'/'0'); at_ms; send ('0' the first send,
-- '1' the re-send); entry: nil, or the re-send's outbox entry {stream, field, value, …} to
-- `XADD` when the message goes once more (a transactional outbox: the entry and the record
-- change are one step). A part of an earlier send (a late receipt of the first send after the
-- re-send went) does not count. Returns 'pending', 'final' or 'resend'.
local function apply_part(key, parts, status, err, resend, at_ms, send, entry)
  local v = redis.call('HMGET', key, 's', 'rs')
  local s = v[1]
  if not s or (s ~= 'queued' and s ~= 'submitted') then return 'pending' end
  local current = '0'
  if v[2] == '1' then current = '1' end
  if current ~= send then return 'pending' end
  if status == 'delivered' then
    local pd = redis.call('HINCRBY', key, 'pd', 1)
    if pd < tonumber(parts) then return 'pending' end
    redis.call('HSET', key, 's', 'delivered', 'da', at_ms)
    return 'final'
  end
  if resend == '1' and v[2] ~= '1' then
    -- The first write: Redis does not roll a script back, so a failing XADD must precede the
    -- record's change (which would otherwise say "re-sent" with nothing queued).
    if entry then redis.call('XADD', entry[1], '*', unpack(entry, 2)) end
    redis.call('HSET', key, 'rs', '1', 'pd', 0, 's', 'queued', 'er', err)
    return 'resend'
  end
  redis.call('HSET', key, 's', status, 'er', err)
  return 'final'
end
