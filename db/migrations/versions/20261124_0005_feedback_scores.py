"""feedback and scores: survey responses, complaints, nightly member scores

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "survey_response",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("visit_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["visit_id"], ["visit.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("member_id", "visit_id"),
    )
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        batch_op.create_index("ix_survey_response_member_id", ["member_id"], unique=False)

    op.create_table(
        "complaint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("answered_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("complaint", schema=None) as batch_op:
        batch_op.create_index("ix_complaint_member_id", ["member_id"], unique=False)
        batch_op.create_index("ix_complaint_status", ["status"], unique=False)

    op.create_table(
        "member_score",
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("monetary_cents", sa.Integer(), nullable=False),
        sa.Column("rfm_score", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("rfm_segment", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("stickiness", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("lifecycle", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("churn_risk", sa.Float(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=True),
        sa.Column("computed_at", db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["member.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("member_id"),
    )
    with op.batch_alter_table("member_score", schema=None) as batch_op:
        batch_op.create_index("ix_member_score_risk", ["churn_risk"], unique=False)


def downgrade() -> None:
    op.drop_table("member_score")
    with op.batch_alter_table("complaint", schema=None) as batch_op:
        batch_op.drop_index("ix_complaint_status")
        batch_op.drop_index("ix_complaint_member_id")
    op.drop_table("complaint")
    with op.batch_alter_table("survey_response", schema=None) as batch_op:
        batch_op.drop_index("ix_survey_response_member_id")
    op.drop_table("survey_response")
