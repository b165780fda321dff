"""events: keyset-pagination indexes (occurred_at, event_id) and (source, occurred_at, event_id).

The API pages by ``(occurred_at, event_id)``; these replace the single-column
``occurred_at`` and the ``(source, occurred_at)`` indexes, which they cover.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("events_occurred_at_event_id_idx", "events", ["occurred_at", "event_id"])
    op.create_index(
        "events_source_occurred_at_event_id_idx", "events", ["source", "occurred_at", "event_id"]
    )
    op.drop_index("events_occurred_at_idx", table_name="events")
    op.drop_index("events_source_occurred_at_idx", table_name="events")


def downgrade() -> None:
    op.create_index("events_occurred_at_idx", "events", ["occurred_at"])
    op.create_index("events_source_occurred_at_idx", "events", ["source", "occurred_at"])
    op.drop_index("events_source_occurred_at_event_id_idx", table_name="events")
    op.drop_index("events_occurred_at_event_id_idx", table_name="events")
