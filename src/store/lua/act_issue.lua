-- Issues an activation: cancels the account's pending one, stores the new one, its redeem
-- index and account index, the record of its SMS, and the `activation_issued` event.
-- Mirrors src/store/memory/activations.rs `issue_activation`.
-- KEYS[1] the activation (a:{tag}:act_…), KEYS[2] the redeem index (ai:{tag}:…),
-- KEYS[3] the account index (aa:…), KEYS[4] the SMS record (m:{tag}:msg_…), KEYS[5] the
-- account's events.
-- ARGV: record ttl ms, index ttl ms, event json, max events, event retention ms, n (number of
-- activation field arguments), the activation's fields and values, then the SMS record's.
-- The previous activation is named by the account index's value (single-endpoint Redis).
local old = redis.call('GET', KEYS[3])
if old and redis.call('HGET', old, 's') == 'pending' then
  redis.call('HSET', old, 's', 'canceled')
end
local n = tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, 6 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], KEYS[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], KEYS[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[4], unpack(ARGV, 7 + n, #ARGV))
redis.call('PEXPIRE', KEYS[4], ARGV[1])
event_push(KEYS[5], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
