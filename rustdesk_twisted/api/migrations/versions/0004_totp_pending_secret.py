"""totp pending secret

Revision 0004, after 0003.  Upgrade only: the way back is the
backup the API takes before upgrading (migrate.py).
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_pending', sa.String(length=64), nullable=True))
