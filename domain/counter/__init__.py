"""Counter work: what staff do for a member in front of them, as use cases a chat handler or a
terminal command calls once.

Every use case takes the acting staff account (`who`: an id, or a name typed in full) and is
authorised by role and store before it reads or writes anything (`acting`); a refusal is a
`NotAllowed`, audited in a fresh transaction by `acting.guarded`, since the refused
transaction rolls back. Money and visits answer with a `receipts.Receipt` (the member's
balances before and after), written once per idempotency key, so a double tap or a retry gets
the first answer back and changes nothing. Modules: `acting` (who may), `receipts` (once per
key, balances, the audit line), `lookup` (finding the member), `visits` (record, void),
`money` (coupons, points, stored value, punch cards), `desk` (today's bookings, complaints and
low survey scores).
"""
