"""events table with the API's indexes, and the selector's file checkpoint.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("ingested_at", TZ, nullable=False),
        sa.Column("subject", sa.Text, nullable=True),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("attributes", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    op.create_index("events_occurred_at_idx", "events", ["occurred_at"])
    op.create_index("events_source_occurred_at_idx", "events", ["source", "occurred_at"])
    op.create_index("events_subject_idx", "events", ["subject"])
    op.create_index("events_event_type_idx", "events", ["event_type"])
    op.create_table(
        "selector_files",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("loaded_at", TZ, nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("selector_files")
    op.drop_table("events")
