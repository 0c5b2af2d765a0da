"""The keys of events whose order could not be found, so that they heal when it appears.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.String(255)


def upgrade() -> None:
    # The primary key (key, event_id) is the index healing looks keys up by.
    op.create_table(
        "unmatched_event_keys",
        sa.Column("key", ID, primary_key=True),
        sa.Column("event_id", ID, primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("unmatched_event_keys")
