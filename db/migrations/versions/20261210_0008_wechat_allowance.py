"""wechat allowance: interactions that allow customer-service messages; messages held for one

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_allowance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("granted_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_chat_allowance_address",
        "chat_allowance",
        ["channel", "address", "expires_at"],
        unique=False,
    )
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("held_until", db.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_column("held_until")
    op.drop_index("ix_chat_allowance_address", table_name="chat_allowance")
    op.drop_table("chat_allowance")
