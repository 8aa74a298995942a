"""applied configs: the feeds.yaml text `run` last applied, for a restart on a broken file

A restart after an edit that broke feeds.yaml stopped all monitoring (under a supervisor,
a restart loop); `run` now starts on the last text it applied and says what is wrong.

Created 2026-12-04.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision: str = "applied_configs"
down_revision: str | Sequence[str] | None = "story_keys_covering"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "applied_configs",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("applied_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )


def downgrade() -> None:
    op.drop_table("applied_configs")
