"""money, points and Telegram user ids as 64-bit integers on PostgreSQL

PostgreSQL's INTEGER is 32 bits: 21 million yuan in cents, 2.1 billion points. One capped amount
fits (domain.limits), but a member's spend in the nightly scores and a day's expiry line, sums
of many, do not. SQLite's INTEGER already holds 64 bits, and db.types.Int64 keeps INTEGER there,
so nothing is done on SQLite (no table is rebuilt). A staff member's Telegram user id is a
64-bit number too (newer accounts pass 2**31).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, nullable): every money (cents) and points column of db.models, and the
# Telegram user id of staff.
COLUMNS = (
    ("service", "list_price_cents", False),
    ("tier", "threshold_cents", False),
    ("visit", "amount_cents", False),
    ("points_entry", "points", False),
    ("stored_value_entry", "amount_cents", False),
    ("reward", "points_cost", False),
    ("reward", "coupon_value_cents", False),
    ("reward", "min_spend_cents", False),
    ("coupon", "value_cents", False),
    ("coupon", "min_spend_cents", False),
    ("member_score", "monetary_cents", False),
    ("staff", "telegram_user_id", True),
)


def _retype(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(table, column, type_=new, existing_type=old, existing_nullable=nullable)


def upgrade() -> None:
    _retype(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    # Fails, changing nothing, if a value no longer fits 32 bits.
    _retype(sa.BigInteger(), sa.Integer())
