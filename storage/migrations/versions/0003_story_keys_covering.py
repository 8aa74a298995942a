"""story keys: the index that finds open stories by key covers the story id too

Finding the open stories that share keys with a batch's new items reads thousands of
(key, story) pairs per batch; with the story id in the index SQLite and PostgreSQL
answer from the index alone instead of visiting the table for every pair.

Created 2026-12-04.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "story_keys_covering"
down_revision: str | Sequence[str] | None = "leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_story_keys_key_seen", table_name="story_keys")
    op.create_index("ix_story_keys_key_seen_story", "story_keys", ["key", "first_seen", "story_id"])


def downgrade() -> None:
    op.drop_index("ix_story_keys_key_seen_story", table_name="story_keys")
    op.create_index("ix_story_keys_key_seen", "story_keys", ["key", "first_seen"])
