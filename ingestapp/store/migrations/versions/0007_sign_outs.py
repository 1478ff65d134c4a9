"""Signing out ends the browser's streams (issue 16, point 10): ``sign_outs``.

A browser sign-in carries a random id in its session cookie; ``POST /logout`` records it here, so
the cookie (or a copy of it) is refused from then on and every worker's credential check ends the
streams it opened. Rows older than a sign-in may last (``INGEST_SIGN_IN_MAX_AGE``) are pruned at the
next sign-out. Cookies of earlier releases carry no sign-in id and are refused: everyone signs in
once more after the upgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_outs",
        sa.Column("sign_in_id", sa.String(length=32), nullable=False),
        sa.Column("signed_out_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sign_in_id"),
    )
    op.create_index("ix_sign_outs_signed_out_at", "sign_outs", ["signed_out_at"])


def downgrade() -> None:
    op.drop_index("ix_sign_outs_signed_out_at", table_name="sign_outs")
    op.drop_table("sign_outs")
