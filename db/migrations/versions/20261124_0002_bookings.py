"""bookings

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "booking",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("service_code", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("vehicle_id", sa.Integer(), nullable=True),
        sa.Column("starts_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=96), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store.id"],
        ),
        sa.ForeignKeyConstraint(["vehicle_id"], ["vehicle.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.create_index("ix_booking_member_start", ["member_id", "starts_at"], unique=False)
        batch_op.create_index("ix_booking_store_start", ["store_id", "starts_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.drop_index("ix_booking_store_start")
        batch_op.drop_index("ix_booking_member_start")

    op.drop_table("booking")
