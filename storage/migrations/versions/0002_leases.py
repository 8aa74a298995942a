"""feed and delivery leases: several workers share the polling and the sending

Created 2026-12-02 08:19:18.644781.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision: str = "leases"
down_revision: str | Sequence[str] | None = "baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("leased_by", sa.String(), nullable=True))

    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("leased_by", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("leased_by")
        batch_op.drop_column("lease_until")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("leased_by")
        batch_op.drop_column("lease_until")
