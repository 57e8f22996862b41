"""Option lookup the way the official servers do it (PROTOCOL.md section 9.1).

Every option is an environment-style name, looked up case-insensitively with
``_`` and ``-`` equivalent.  Sources are layered: the inherited environment,
then ``.env``, then a ``--config`` INI file, then explicit command-line flags;
later layers win.  Nothing here touches ``os.environ``, so two servers
embedded in one process cannot disturb each other.
"""

import os


class ConfigError(Exception):
    """A configuration value cannot be used; the message is for the operator."""


def normalize_name(name):
    return name.strip().upper().replace("_", "-")


def read_env_file(path, required=False):
    """``key=value`` lines of an INI file without sections.

    Blank lines, ``#``/``;`` comments and ``[section]`` headers are skipped;
    surrounding quotes are removed from values.  A missing file gives {}
    unless ``required``.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read configuration file {path}: {e}") from e
    values = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected key=value, got {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _spelling_rank(name, key):
    """Official lookup order: UPPER-DASH, UPPER_UNDERSCORE, lower-dash, lower_underscore, others."""
    spellings = (key, key.replace("-", "_"), key.lower(), key.lower().replace("-", "_"))
    return spellings.index(name) if name in spellings else len(spellings)


class Settings:
    """A read-only view of layered option sources."""

    def __init__(self, environ=None, layers=()):
        self._values = {}
        self._origin = {}
        chosen = {}
        for name in environ or {}:
            key = normalize_name(name)
            rank = (_spelling_rank(name, key), name)
            if key not in chosen or rank < chosen[key]:
                chosen[key] = rank
                self._values[key] = environ[name]
                self._origin[key] = "environment"
        for origin, layer in layers:
            for name, value in layer.items():
                if value is None:
                    continue
                key = normalize_name(name)
                self._values[key] = value
                self._origin[key] = origin

    def get(self, name, default=None):
        """The value of ``name``; when only ``NAME_FILE`` is set, that file's content.

        ``*_FILE`` keeps secrets (``KEY_FILE``, ``ADMIN_TOKEN_FILE``) out of
        the command line and the environment, as Docker and Kubernetes secrets
        are mounted as files.
        """
        key = normalize_name(name)
        if key in self._values:
            return self._values[key]
        path = self._values.get(key + "-FILE")
        if not path:
            return default
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {key}-FILE {path}: {e}") from None

    def origin(self, name):
        key = normalize_name(name)
        return self._origin.get(key, self._origin.get(key + "-FILE"))

    def __contains__(self, name):
        key = normalize_name(name)
        return key in self._values or bool(self._values.get(key + "-FILE"))

    def integer(self, name, default, minimum=None, maximum=None):
        raw = self.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"{normalize_name(name)} must be an integer, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(
                f"{normalize_name(name)}={value} is out of range [{minimum}, {maximum}]")
        return value

    def flag(self, name, default=False):
        raw = self.get(name)
        if raw is None or raw == "":
            return default
        return str(raw).strip().upper() in ("Y", "YES", "TRUE", "1", "ON")


def layered_settings(environ=None, directory=".", config_file=None, cli=None):
    """hbbs's precedence: CLI > --config > .env > inherited environment."""
    if environ is None:
        environ = os.environ
    layers = [(".env", read_env_file(os.path.join(directory, ".env")))]
    if config_file:
        layers.append((config_file, read_env_file(config_file, required=True)))
    if cli:
        layers.append(("command line", cli))
    return Settings(environ, layers)
