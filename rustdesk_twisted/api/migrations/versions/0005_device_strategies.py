"""device strategies

Revision 0005, after 0004.  Upgrade only: the way back is the
backup the API takes before upgrading (migrate.py).
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('device_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('strategy_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_device_groups_strategy_id_strategies'),
                                    'strategies', ['strategy_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('strategy_keys', sa.Text(), nullable=False,
                                      server_default='[]'))
