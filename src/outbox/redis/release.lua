-- Puts a job back in the queue, only when the entry is still pending to the consumer that
-- releases it (the fence: an entry another consumer took over is that consumer's to send; a
-- release from the old owner would queue it twice). Deleting the old entry and adding the new
-- one happen together.
-- KEYS[1] the entry's stream, KEYS[2] where the job goes: its stream, or the delay set.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] entry id, ARGV[4] 'stream' or 'delay',
-- ARGV[5] the delay set's score (not before, ms), ARGV[6] the job (stream: its JSON; delay: the
-- set member), ARGV[7] version, ARGV[8] kind.
-- Returns 1 when released, 0 when the entry is not (or no longer) this consumer's, 2 when
-- the group is gone (Redis lost its data: restarted without persistence): the job, whose only
-- copy is the releasing consumer's, is queued again.
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
local lost_group = not ok
if ok and (not p[1] or p[1][2] ~= ARGV[2]) then
  return 0
end
if ARGV[4] == 'delay' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
else
  redis.call('XADD', KEYS[2], '*', 'v', ARGV[7], 'k', ARGV[8], 'j', ARGV[6])
end
if lost_group then
  return 2
end
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
