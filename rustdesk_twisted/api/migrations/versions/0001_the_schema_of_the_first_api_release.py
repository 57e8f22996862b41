"""The schema of the first API release: every table of tables.py as it was then.

Revision 0001, the first.  Upgrade only: the way back is the backup the API takes before
upgrading (migrate.py).
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("audit_alarm",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("typ", sa.Integer(), nullable=False),
        sa.Column("info", sa.Text(), nullable=False),
        sa.Column("conn_id", sa.BigInteger(), nullable=False),
        sa.Column("conn_audit_ref", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_alarm"))
    )
    op.create_index("ix_audit_alarm_created_at", "audit_alarm", ["created_at"])
    op.create_index("ix_audit_alarm_rustdesk_id", "audit_alarm", ["rustdesk_id"])
    op.create_table("audit_file",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("peer_id", sa.String(length=64), nullable=False),
        sa.Column("conn_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("is_file", sa.Boolean(), nullable=False),
        sa.Column("info", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_file"))
    )
    op.create_index("ix_audit_file_created_at", "audit_file", ["created_at"])
    op.create_index("ix_audit_file_rustdesk_id", "audit_file", ["rustdesk_id"])
    op.create_table("device_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_device_groups_name"))
    )
    op.create_table("recordings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint("rustdesk_id", "file", name="uq_recordings_file")
    )
    op.create_index("ix_recordings_rustdesk_id", "recordings", ["rustdesk_id"])
    op.create_table("strategies",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("modified_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strategies")),
        sa.UniqueConstraint("name", name=op.f("uq_strategies_name"))
    )
    op.create_table("switch_grants",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("verifier", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_switch_grants")),
        sa.UniqueConstraint("rustdesk_id", "verifier", name="uq_switch_grants_verifier")
    )
    op.create_index("ix_switch_grants_rustdesk_id", "switch_grants", ["rustdesk_id"])
    op.create_table("user_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_user_groups_name"))
    )
    op.create_table("group_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["user_groups.id"],
            name=op.f("fk_group_rules_group_id_user_groups"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_rules")),
        sa.UniqueConstraint("group_id", "target_kind", "target_id", name="uq_group_rules_target")
    )
    op.create_table("users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("totp_secret", sa.String(length=64), nullable=True),
        sa.Column("totp_backup", sa.Text(), nullable=False),
        sa.Column("oidc_provider", sa.String(length=64), nullable=False),
        sa.Column("oidc_subject", sa.String(length=255), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("strategy_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["user_groups.id"],
            name=op.f("fk_users_group_id_user_groups"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["strategy_id"], ["strategies.id"],
            name=op.f("fk_users_strategy_id_strategies"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
        sa.UniqueConstraint("oidc_provider", "oidc_subject", name="uq_users_oidc")
    )
    op.create_table("address_books",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("guid", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("personal", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"],
            name=op.f("fk_address_books_owner_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_books")),
        sa.UniqueConstraint("guid", name=op.f("uq_address_books_guid"))
    )
    op.create_table("audit_conn",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("guid", sa.String(length=40), nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("conn_id", sa.BigInteger(), nullable=False),
        sa.Column("session_id", sa.String(length=24), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("controller_id", sa.String(length=64), nullable=False),
        sa.Column("controller_name", sa.String(length=255), nullable=False),
        sa.Column("controller_user_id", sa.Integer(), nullable=True),
        sa.Column("conn_type", sa.Integer(), nullable=False),
        sa.Column("primary_auth", sa.Integer(), nullable=False),
        sa.Column("two_factor", sa.Integer(), nullable=False),
        sa.Column("conn_audit_ref", sa.String(length=255), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("authorized_at", sa.Float(), nullable=True),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["controller_user_id"], ["users.id"],
            name=op.f("fk_audit_conn_controller_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_conn")),
        sa.UniqueConstraint("guid", name=op.f("uq_audit_conn_guid"))
    )
    op.create_index("ix_audit_conn_rustdesk_id", "audit_conn", ["rustdesk_id"])
    op.create_index("ix_audit_conn_started_at", "audit_conn", ["started_at"])
    op.create_table("audit_console",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
            name=op.f("fk_audit_console_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_console"))
    )
    op.create_index("ix_audit_console_created_at", "audit_console", ["created_at"])
    op.create_table("devices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("uuid", sa.String(length=255), nullable=False),
        sa.Column("pk", sa.LargeBinary(length=64), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("os", sa.String(length=255), nullable=False),
        sa.Column("cpu", sa.String(length=255), nullable=False),
        sa.Column("memory", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("device_group_id", sa.Integer(), nullable=True),
        sa.Column("strategy_id", sa.Integer(), nullable=True),
        sa.Column("deployed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("sysinfo_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["device_group_id"], ["device_groups.id"],
            name=op.f("fk_devices_device_group_id_device_groups"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["strategy_id"], ["strategies.id"],
            name=op.f("fk_devices_strategy_id_strategies"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
            name=op.f("fk_devices_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("rustdesk_id", name=op.f("uq_devices_rustdesk_id"))
    )
    op.create_table("tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("rustdesk_id", sa.String(length=64), nullable=False),
        sa.Column("device_uuid", sa.String(length=255), nullable=False),
        sa.Column("device_info", sa.Text(), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
            name=op.f("fk_tokens_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_tokens_token_hash"))
    )
    op.create_table("ab_peers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ab_id", sa.Integer(), nullable=False),
        sa.Column("peer_id", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=255), nullable=False),
        sa.Column("password", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("platform", sa.String(length=64), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("note", sa.String(length=2000), nullable=False),
        sa.Column("force_always_relay", sa.Boolean(), nullable=False),
        sa.Column("rdp_port", sa.String(length=16), nullable=False),
        sa.Column("rdp_username", sa.String(length=255), nullable=False),
        sa.Column("login_name", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["ab_id"], ["address_books.id"],
            name=op.f("fk_ab_peers_ab_id_address_books"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ab_peers")),
        sa.UniqueConstraint("ab_id", "peer_id", name="uq_ab_peers_peer")
    )
    op.create_table("ab_rules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ab_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["ab_id"], ["address_books.id"],
            name=op.f("fk_ab_rules_ab_id_address_books"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["user_groups.id"],
            name=op.f("fk_ab_rules_group_id_user_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
            name=op.f("fk_ab_rules_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ab_rules"))
    )
    op.create_table("ab_tags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ab_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("color", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["ab_id"], ["address_books.id"],
            name=op.f("fk_ab_tags_ab_id_address_books"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ab_tags")),
        sa.UniqueConstraint("ab_id", "name", name="uq_ab_tags_name")
    )
