"""server lifecycle state and stop reason

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00

A server's life is one stored state (``lifecycle``) with the reason of its last failure or
unexpected stop. Existing rows: a started server is ``running``, everything else ``stopped`` (a
row that still holds spawner state was cut short during a start: the hub cleans it up).
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch copy: on SQLite a copy drops the old table, and with foreign
    # keys on that would cascade to the running servers' tokens and OAuth clients.
    op.add_column('servers', sa.Column('lifecycle', sa.String(length=16), nullable=False,
                                       server_default='stopped'))
    op.add_column('servers', sa.Column('stop_reason', sa.String(length=32), nullable=True))
    op.add_column('servers', sa.Column('stop_message', sa.Text(), nullable=True))
    servers = sa.table('servers', sa.column('lifecycle', sa.String),
                       sa.column('started', sa.DateTime))
    op.execute(servers.update().where(servers.c.started.is_not(None))
               .values(lifecycle='running'))


def downgrade() -> None:
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_column('stop_message')
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('lifecycle')
