"""Fair shares (issue 16, point 7): ``ingest_sessions.awaits_turn``.

True while a session is ``queued`` for its turn, because its user already runs
INGEST_MAX_ACTIVE_SESSIONS_PER_USER sessions (``jobs/turns.py``); a ``queued`` session with no lease
owner and ``awaits_turn`` false waits for the work tier instead. Existing sessions never waited for
a turn: false.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_sessions") as batch:
        batch.add_column(sa.Column("awaits_turn", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # The older release knows no turns: a session still waiting for its turn would wait for a
    # worker that never comes. Leave it interrupted, so it can be resumed. (SQL as of this revision:
    # a migration imports nothing of the app, whose vocabulary may change after it.)
    op.execute("UPDATE ingest_sessions SET status = 'interrupted' WHERE awaits_turn")
    with op.batch_alter_table("ingest_sessions") as batch:
        batch.drop_column("awaits_turn")
