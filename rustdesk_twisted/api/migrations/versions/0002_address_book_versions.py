"""Address books: the book version each token last pulled, and each entry's version and writer.

Revision 0002, after 0001.  Upgrade only: the way back is the backup the API takes before
upgrading (migrate.py).  Entries already there get version 0, as new ones do.
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("ab_peers") as batch_op:
        batch_op.add_column(sa.Column("version", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("updated_by", sa.Integer(), nullable=True))
    with op.batch_alter_table("tokens") as batch_op:
        batch_op.add_column(sa.Column("ab_version", sa.BigInteger(), nullable=True))
