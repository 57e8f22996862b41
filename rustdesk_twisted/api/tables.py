"""The API's one schema definition (SQLAlchemy Core), for SQLite and PostgreSQL alike.

Times are unix seconds as floats, so both engines store the same thing and no
time zone is ever guessed.  Text that reaches the client (names, notes, peer
fields) is bounded in the column type and checked again at the HTTP edge.
Every table grows only through an operator's or a user's action, or has a
retention (audit rows, expired tokens), pruned by :mod:`.maintenance`.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

NAME = 64
SHORT = 255
NOTE = 2000


def _id():
    return Column("id", Integer, primary_key=True, autoincrement=True)


user_groups = Table(
    "user_groups", metadata,
    _id(),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("note", String(NOTE), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

device_groups = Table(
    "device_groups", metadata,
    _id(),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("note", String(NOTE), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

strategies = Table(
    "strategies", metadata,
    _id(),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("enabled", Boolean, nullable=False, default=True),
    # JSON object of client option name -> value (heartbeat "strategy.config_options").
    Column("options", Text, nullable=False, default="{}"),
    # What heartbeat replies carry as modified_at; bumped on every edit.
    Column("modified_at", BigInteger, nullable=False),
)

users = Table(
    "users", metadata,
    _id(),
    Column("name", String(NAME), nullable=False, unique=True),
    Column("display_name", String(NAME), nullable=False, default=""),
    Column("email", String(SHORT), nullable=False, default=""),
    Column("note", String(NOTE), nullable=False, default=""),
    # argon2id; NULL for accounts that only sign in through OIDC.
    Column("password_hash", String(SHORT)),
    # 1 normal, 0 disabled, -1 unverified (the client's UserStatus).
    Column("status", Integer, nullable=False, default=1),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("totp_secret", String(64)),
    # JSON list of argon2 hashes of unused backup codes.
    Column("totp_backup", Text, nullable=False, default="[]"),
    Column("oidc_provider", String(NAME), nullable=False, default=""),
    Column("oidc_subject", String(SHORT)),
    Column("group_id", Integer, ForeignKey("user_groups.id", ondelete="SET NULL")),
    Column("strategy_id", Integer, ForeignKey("strategies.id", ondelete="SET NULL")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("oidc_provider", "oidc_subject", name="uq_users_oidc"),
)

tokens = Table(
    "tokens", metadata,
    _id(),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # SHA-256 hex of the bearer value: a stolen database yields no usable token.
    Column("token_hash", String(64), nullable=False, unique=True),
    # "session": a client or console login; "api": an operator-issued token with scopes.
    Column("kind", String(16), nullable=False, default="session"),
    Column("name", String(NAME), nullable=False, default=""),
    Column("scopes", String(SHORT), nullable=False, default=""),
    Column("rustdesk_id", String(NAME), nullable=False, default=""),
    Column("device_uuid", String(SHORT), nullable=False, default=""),
    Column("device_info", Text, nullable=False, default="{}"),
    Column("ip", String(64), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    # The personal book's version this token last pulled through the legacy API (API.md 1.3);
    # its whole-book pushes delete only entries it has seen (see addressbooks).
    Column("ab_version", BigInteger),
)

group_rules = Table(
    "group_rules", metadata,
    _id(),
    # Members of user group `group_id` may access the target; same-group access is implicit.
    Column("group_id", Integer, ForeignKey("user_groups.id", ondelete="CASCADE"), nullable=False),
    Column("target_kind", String(16), nullable=False),  # user_group | device_group | user
    Column("target_id", Integer, nullable=False),
    UniqueConstraint("group_id", "target_kind", "target_id", name="uq_group_rules_target"),
)

devices = Table(
    "devices", metadata,
    _id(),
    Column("rustdesk_id", String(NAME), nullable=False, unique=True),
    Column("uuid", String(SHORT), nullable=False, default=""),
    Column("pk", LargeBinary(64)),
    Column("hostname", String(SHORT), nullable=False, default=""),
    Column("username", String(SHORT), nullable=False, default=""),
    Column("os", String(SHORT), nullable=False, default=""),
    Column("cpu", String(SHORT), nullable=False, default=""),
    Column("memory", String(NAME), nullable=False, default=""),
    Column("version", String(NAME), nullable=False, default=""),
    Column("ip", String(64), nullable=False, default=""),
    Column("note", String(NOTE), nullable=False, default=""),
    # 1 enabled, 0 disabled by an administrator.
    Column("status", Integer, nullable=False, default=1),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL")),
    Column("device_group_id", Integer, ForeignKey("device_groups.id", ondelete="SET NULL")),
    Column("strategy_id", Integer, ForeignKey("strategies.id", ondelete="SET NULL")),
    Column("deployed", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("sysinfo_at", Float, nullable=False, default=0.0),
    Column("last_seen", Float, nullable=False, default=0.0),
)

address_books = Table(
    "address_books", metadata,
    _id(),
    Column("guid", String(40), nullable=False, unique=True),
    Column("name", String(NAME), nullable=False),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("personal", Boolean, nullable=False, default=False),
    Column("note", String(NOTE), nullable=False, default=""),
    # The book-level default password of a shared book (info.password).
    Column("password", String(SHORT), nullable=False, default=""),
    # Bumped by every change; the legacy whole-book push compares it.
    Column("version", BigInteger, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

ab_rules = Table(
    "ab_rules", metadata,
    _id(),
    Column("ab_id", Integer, ForeignKey("address_books.id", ondelete="CASCADE"), nullable=False),
    # Exactly one of user_id / group_id, or neither for "everyone".
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE")),
    Column("group_id", Integer, ForeignKey("user_groups.id", ondelete="CASCADE")),
    Column("rule", Integer, nullable=False),  # 1 read, 2 read/write, 3 full control
)

ab_peers = Table(
    "ab_peers", metadata,
    _id(),
    Column("ab_id", Integer, ForeignKey("address_books.id", ondelete="CASCADE"), nullable=False),
    Column("peer_id", String(NAME), nullable=False),
    Column("hash", String(SHORT), nullable=False, default=""),
    Column("password", String(SHORT), nullable=False, default=""),
    Column("username", String(SHORT), nullable=False, default=""),
    Column("hostname", String(SHORT), nullable=False, default=""),
    Column("platform", String(NAME), nullable=False, default=""),
    Column("alias", String(SHORT), nullable=False, default=""),
    Column("tags", Text, nullable=False, default="[]"),
    Column("note", String(NOTE), nullable=False, default=""),
    Column("force_always_relay", Boolean, nullable=False, default=False),
    Column("rdp_port", String(16), nullable=False, default=""),
    Column("rdp_username", String(SHORT), nullable=False, default=""),
    Column("login_name", String(SHORT), nullable=False, default=""),
    Column("updated_at", Float, nullable=False),
    # Set when deleted: the recycle bin keeps the row until it is emptied or restored.
    Column("deleted_at", Float),
    UniqueConstraint("ab_id", "peer_id", name="uq_ab_peers_peer"),
    # The book's version at the row's last write, and the token that wrote it (NULL: the
    # console): what tells a stale legacy push from a deliberate one.
    Column("version", BigInteger, nullable=False, default=0),
    Column("updated_by", Integer),
)

ab_tags = Table(
    "ab_tags", metadata,
    _id(),
    Column("ab_id", Integer, ForeignKey("address_books.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(NAME), nullable=False),
    Column("color", BigInteger, nullable=False, default=0),
    UniqueConstraint("ab_id", "name", name="uq_ab_tags_name"),
)

audit_conn = Table(
    "audit_conn", metadata,
    _id(),
    Column("guid", String(40), nullable=False, unique=True),
    Column("rustdesk_id", String(NAME), nullable=False, index=True),
    Column("conn_id", BigInteger, nullable=False),
    # The controller's u64 session id: text, since it may not fit a signed 64-bit column.
    Column("session_id", String(24), nullable=False, default=""),
    Column("ip", String(64), nullable=False, default=""),
    Column("controller_id", String(NAME), nullable=False, default=""),
    Column("controller_name", String(SHORT), nullable=False, default=""),
    Column("controller_user_id", Integer, ForeignKey("users.id", ondelete="SET NULL")),
    Column("conn_type", Integer, nullable=False, default=0),
    Column("primary_auth", Integer, nullable=False, default=0),
    Column("two_factor", Integer, nullable=False, default=0),
    Column("conn_audit_ref", String(SHORT), nullable=False, default=""),
    Column("note", String(NOTE), nullable=False, default=""),
    Column("started_at", Float, nullable=False, index=True),
    Column("authorized_at", Float),
    Column("closed_at", Float),
    # The uuid the controlled device gave: its later posts must match it (api/audit.py).
    Column("device_uuid", String(SHORT), nullable=False, default=""),
)

audit_file = Table(
    "audit_file", metadata,
    _id(),
    Column("rustdesk_id", String(NAME), nullable=False, index=True),
    Column("peer_id", String(NAME), nullable=False, default=""),
    Column("conn_id", BigInteger, nullable=False, default=0),
    Column("direction", Integer, nullable=False, default=0),  # 0 sent, 1 received
    Column("path", Text, nullable=False, default=""),
    Column("is_file", Boolean, nullable=False, default=True),
    Column("info", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False, index=True),
)

audit_alarm = Table(
    "audit_alarm", metadata,
    _id(),
    Column("rustdesk_id", String(NAME), nullable=False, index=True),
    Column("typ", Integer, nullable=False),
    Column("info", Text, nullable=False, default="{}"),
    Column("conn_id", BigInteger, nullable=False, default=0),
    Column("conn_audit_ref", String(SHORT), nullable=False, default=""),
    Column("created_at", Float, nullable=False, index=True),
)

audit_console = Table(
    "audit_console", metadata,
    _id(),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL")),
    Column("user_name", String(NAME), nullable=False, default=""),
    Column("ip", String(64), nullable=False, default=""),
    Column("action", String(NAME), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False, index=True),
)

switch_grants = Table(
    "switch_grants", metadata,
    _id(),
    Column("rustdesk_id", String(NAME), nullable=False, index=True),
    Column("verifier", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("rustdesk_id", "verifier", name="uq_switch_grants_verifier"),
)

recordings = Table(
    "recordings", metadata,
    _id(),
    Column("rustdesk_id", String(NAME), nullable=False, index=True),
    Column("file", String(SHORT), nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("complete", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("rustdesk_id", "file", name="uq_recordings_file"),
)
