"""${message}

Revision ${up_revision}, after ${down_revision | comma,n}.  Upgrade only: the way back is the
backup the API takes before upgrading (migrate.py).
"""
import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade():
    ${upgrades if upgrades else "pass"}
