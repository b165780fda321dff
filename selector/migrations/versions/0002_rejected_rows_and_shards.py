"""rejected_rows; checkpoint rows remember their lake partition (for --shard) and etag.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.TIMESTAMP(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rejected_rows",
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("row", JSONB, nullable=False),
        sa.Column("file", sa.Text, nullable=True),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("rule", "event_id", name="rejected_rows_pkey"),
    )
    op.create_index("rejected_rows_at_idx", "rejected_rows", ["at"])
    # Existing checkpoint rows get their partition from the path (everything before the file).
    op.add_column("selector_files", sa.Column("partition", sa.Text, nullable=True))
    op.execute(
        "UPDATE selector_files SET partition = CASE WHEN strpos(path, '/') > 0"
        " THEN regexp_replace(path, '/[^/]*$', '') ELSE '' END WHERE partition IS NULL"
    )
    op.alter_column("selector_files", "partition", nullable=False)
    op.add_column("selector_files", sa.Column("etag", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("selector_files", "etag")
    op.drop_column("selector_files", "partition")
    op.drop_index("rejected_rows_at_idx", table_name="rejected_rows")
    op.drop_table("rejected_rows")
