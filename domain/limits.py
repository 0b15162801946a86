"""The largest amounts the shop's data may hold: one definition for the import, the CLI and the
domain functions that take amounts from people.

Why caps at all: a typo or a hostile file (`100000000000000000000` in an amount cell) must be a
clear refusal, not a driver's overflow halfway through a transaction, nor a ledger line so large
that every later adjustment overflows. The caps are far above anything a car service shop
writes, and far below what the columns hold (64-bit on both databases, see migration 0008), so
sums of many capped values (a member's spend, a day's expiry) still fit.
"""

from __future__ import annotations

MAX_AMOUNT_YUAN = 10_000_000
MAX_AMOUNT_CENTS = MAX_AMOUNT_YUAN * 100
"""One payment: a visit's amount, a stored-value top-up or spend."""

MAX_POINTS = 100_000_000
"""Points written at once by a person or a file: an adjustment, an opening balance."""

MAX_KM = 2_000_000
"""An odometer reading; the longest-lived cars reach about half of it."""
