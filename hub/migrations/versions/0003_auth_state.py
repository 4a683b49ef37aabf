"""encrypted auth_state of users

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:20:00

What an identity provider returned at login (tokens, claims), encrypted with the hub's
auth_state key (hub/services/auth_state.py). Existing users have none until they log in again.
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch table copy: see 0002).
    op.add_column('users', sa.Column('encrypted_auth_state', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('encrypted_auth_state')
