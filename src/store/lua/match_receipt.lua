-- Finds (and takes) the message of a receipt, or keeps the receipt (lua/receipt_rule.lua
-- prepended; KEYS, ARGV and reply: see `receipt_match` there). The SMSC's slot only.
return receipt_match()
