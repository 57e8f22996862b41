"""audit connection uuid

Revision 0003, after 0002.  Upgrade only: the way back is the
backup the API takes before upgrading (migrate.py).
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_conn', schema=None) as batch_op:
        batch_op.add_column(sa.Column('device_uuid', sa.String(length=255), nullable=False,
                                      server_default=''))
