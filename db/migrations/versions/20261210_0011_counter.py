"""counter work: member codes, counter actions under their keys, follow-ups of complaints and
low survey scores

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _follow_up_columns() -> list[sa.Column]:
    return [
        sa.Column("closed_at", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("close_note", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "member_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("used_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("member_code", schema=None) as batch_op:
        batch_op.create_index("ix_member_code_member_id", ["member_id"], unique=False)
    op.create_table(
        "counter_action",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=48), nullable=False),
        sa.Column("staff_id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=True),
        sa.Column("member_id", sa.Integer(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"]),
        sa.ForeignKeyConstraint(["store_id"], ["store.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("complaint", schema=None) as batch_op:
        for column in _follow_up_columns():
            batch_op.add_column(column)
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("answered_at", db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("answered_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        for column in _follow_up_columns():
            batch_op.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        for name in ("close_note", "closed_by", "closed_at", "answered_by", "answered_at"):
            batch_op.drop_column(name)
        batch_op.drop_column("answer")
    with op.batch_alter_table("complaint", schema=None) as batch_op:
        for name in ("close_note", "closed_by", "closed_at"):
            batch_op.drop_column(name)
    op.drop_table("counter_action")
    with op.batch_alter_table("member_code", schema=None) as batch_op:
        batch_op.drop_index("ix_member_code_member_id")
    op.drop_table("member_code")
