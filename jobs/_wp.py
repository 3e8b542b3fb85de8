"""What the WordPress jobs share: configuration, wp-config.php, database clients and wp-cli.
(Backup sets and their compression: ``jobs._backupsets``.)

Configuration is one env file (``/etc/jobrunner/jobrunner.env``, loaded by every unit and by
runs by hand) read through ``ctx.env``:

- ``WP_PATH`` (``/var/www/html``): the WordPress directory (where wp-config.php is).
- ``WP_SITE``: the name backup sets carry (default: the name of ``WP_PATH``'s directory, or
  ``wordpress`` for generic names such as ``html``).
- ``WP_CONFIG``: the PHP file that defines DB_NAME, DB_USER, DB_PASSWORD (default:
  ``wp-config.php`` in ``WP_PATH`` or one directory up). Needed with Debian's ``wordpress``
  package, whose wp-config.php only dispatches to ``/etc/wordpress/config-<host>.php``.
- ``WP_CLI``: path of ``wp``; unset: ``wp`` on ``PATH`` if there is one, else the direct path
  (mysql clients and php with credentials from wp-config.php).
- ``BACKUP_DIR`` (``/mnt/backups``), ``BACKUP_COMPRESS`` (``zstd`` | ``gzip``; default zstd when
  installed), ``KEEP_DAILY`` / ``KEEP_WEEKLY`` / ``KEEP_MONTHLY`` (7 / 4 / 6).
- ``BACKUP_HMAC_KEY_FILE`` (``/var/lib/jobrunner/keys/backup.key``): the key that signs backup
  sets (``jobs._backupsets``); ``WP_USER`` (``www-data``): who owns the files restore writes.

The database password never reaches a command line: it is registered with ``ctx.secret`` and
handed to the mysql clients in a 0600 option file (``--defaults-extra-file``) removed at the
end of the run. A database name is always preceded by ``--`` (never read as an option), and
``mysql`` always runs with ``--sandbox`` (a dump's ``\\!``, ``source`` or ``tee`` is refused).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobrunner import ConfigError, JobContext, Slots
from jobrunner.settings import env_int
from jobs._backupsets import CODECS, DEFAULT_KEY_FILE

DEFAULT_WP_PATH = "/var/www/html"
DEFAULT_BACKUP_DIR = "/mnt/backups"
# Many sites on one server (docs/sites.md): every WordPress job also runs per site, as the
# instance of the group "wp" (one env file per site: /etc/jobrunner/instances/wp/<site>.env).
# A site's defaults: WP_PATH=/var/www/<site>, WP_SITE=<site>, BACKUP_DIR=/mnt/backups/<site>,
# and its units may write there only (instance_write_paths).
SITE_INSTANCES: dict[str, Any] = {"instances": "optional", "instance_group": "wp"}
INSTANCE_WP_PATH = "/var/www/%i"
INSTANCE_BACKUP_DIR = f"{DEFAULT_BACKUP_DIR}/%i"
# At most 2 backups (wp_backup, wp_db_export, any site) at once on a host, so fifty sites'
# 02:15 do not saturate the disk; JOBRUNNER_SLOTS_BACKUP=N in jobrunner.env changes it.
BACKUP_SLOTS = Slots("backup", 2)
_GENERIC_DIRS = {"html", "htdocs", "public_html", "public", "www", "web", "wordpress", ""}


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    wp_path: Path
    site: str
    backup_dir: Path
    compress: str
    keep_daily: int
    keep_weekly: int
    keep_monthly: int
    wp_cli: str | None
    wp_config: Path | None = None  # WP_CONFIG: where the DB_* defines are, when not wp-config.php
    key_file: Path = Path(DEFAULT_KEY_FILE)  # BACKUP_HMAC_KEY_FILE
    wp_user: str = "www-data"  # WP_USER: owner of the site's files (restore)


def settings(ctx: JobContext) -> Settings:
    """Read and check the WordPress settings from ``ctx.env`` (ConfigError: exit 78)."""
    env = ctx.env
    instance = ctx.instance  # a site of many: its name is the defaults' (docs/sites.md)
    wp_path = Path(env.get("WP_PATH") or (INSTANCE_WP_PATH.replace("%i", instance) if instance else DEFAULT_WP_PATH))
    site = env.get("WP_SITE") or instance or (wp_path.name if wp_path.name not in _GENERIC_DIRS else "wordpress")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", site) or site.startswith("."):
        raise ConfigError(f"WP_SITE={site!r}: use letters, digits and '_.-'")
    compress = (
        env.get("BACKUP_COMPRESS") or ("zstd" if shutil.which("zstd", path=env.get("PATH")) else "gzip")
    ).lower()
    if compress not in CODECS:
        raise ConfigError(f"BACKUP_COMPRESS={compress!r}: use zstd or gzip")
    return Settings(
        wp_path=wp_path,
        site=site,
        backup_dir=Path(
            env.get("BACKUP_DIR") or (INSTANCE_BACKUP_DIR.replace("%i", instance) if instance else DEFAULT_BACKUP_DIR)
        ),
        compress=compress,
        keep_daily=env_int(env, "KEEP_DAILY", 7, min=0),
        keep_weekly=env_int(env, "KEEP_WEEKLY", 4, min=0),
        keep_monthly=env_int(env, "KEEP_MONTHLY", 6, min=0),
        wp_cli=find_wp_cli(env),
        wp_config=Path(env["WP_CONFIG"]) if env.get("WP_CONFIG", "").strip() else None,
        key_file=Path(env.get("BACKUP_HMAC_KEY_FILE", "").strip() or DEFAULT_KEY_FILE),
        wp_user=env.get("WP_USER", "").strip() or "www-data",
    )


def site_owner(s: Settings) -> tuple[int, int]:
    """``WP_USER``'s uid and primary gid (ConfigError: exit 78, when there is no such user)."""
    try:
        entry = pwd.getpwnam(s.wp_user)
    except KeyError:
        raise ConfigError(f"WP_USER={s.wp_user!r}: no such user (the owner of the site's files)") from None
    return entry.pw_uid, entry.pw_gid


def find_wp_cli(env: Mapping[str, str]) -> str | None:
    """``$WP_CLI`` (must be executable), else ``wp`` on ``PATH``, else ``None`` (direct path)."""
    configured = env.get("WP_CLI", "").strip()
    if configured:
        if not os.access(configured, os.X_OK):
            raise ConfigError(f"WP_CLI={configured!r} is not an executable file")
        return configured
    return shutil.which("wp", path=env.get("PATH"))


def wp_command(ctx: JobContext, s: Settings, *args: str) -> list[str]:
    """A wp-cli command line for the site (``--allow-root`` when running as root)."""
    assert s.wp_cli
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    return [s.wp_cli, *args, f"--path={s.wp_path}", *extra]


def require_site(s: Settings) -> None:
    if s.wp_config is not None and not s.wp_config.is_file():
        raise ConfigError(f"WP_CONFIG={str(s.wp_config)!r}: no such file")
    if not (s.wp_path / "wp-config.php").is_file() and not (s.wp_path.parent / "wp-config.php").is_file():
        raise ConfigError(f"WP_PATH={str(s.wp_path)!r}: no wp-config.php there (is WordPress installed?)")


# --- wp-config.php --------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    """Connection settings as WordPress reads them from wp-config.php."""

    name: str
    user: str
    password: str
    host: str = "localhost"
    port: int | None = None
    socket: str | None = None
    prefix: str = "wp_"

    def option_lines(self) -> list[str]:
        lines = [f"user={_opt(self.user)}", f"password={_opt(self.password)}"]
        if self.socket:
            lines.append(f"socket={_opt(self.socket)}")
        lines.append(f"host={_opt(self.host or 'localhost')}")
        if self.port:
            lines.append(f"port={self.port}")
        return lines


def _opt(value: str) -> str:
    """A value for a MySQL option file: double-quoted, with the escapes the parser knows."""
    table = {"\\": "\\\\", '"': '\\"', "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(table.get(c, c) for c in value) + '"'


_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_DEFINE = re.compile(r"""define\s*\(\s*(['"])(DB_[A-Z]+)\1\s*,\s*(""" + _STRING + r""")\s*\)""", re.S)
_PREFIX = re.compile(r"""\$table_prefix\s*=\s*(""" + _STRING + r""")\s*;""", re.S)


def _strip_comments(php: str) -> str:
    """PHP source without comments (strings kept intact), so commented-out defines don't count."""
    out, i, n = [], 0, len(php)
    while i < n:
        c = php[i]
        if c in "'\"":
            j = i + 1
            while j < n and php[j] != c:
                j += 2 if php[j] == "\\" else 1
            out.append(php[i : j + 1])
            i = j + 1
        elif php.startswith("/*", i):
            end = php.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == "#" or php.startswith("//", i):
            end = php.find("\n", i)
            i = n if end < 0 else end
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _php_string(literal: str) -> str:
    body = literal[1:-1]
    if literal[0] == "'":
        return re.sub(r"\\([\\'])", r"\1", body)
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), body)


def parse_db_host(value: str) -> tuple[str, int | None, str | None]:
    """DB_HOST as wpdb reads it: ``host``, ``host:port``, ``host:/socket``, ``[::1]:port``."""
    value = value.strip()
    if value.startswith("p:"):  # mysqli persistent-connection marker
        value = value[2:]
    socket = None
    if ":/" in value or value.startswith("/"):
        cut = value.find("/") if value.startswith("/") else value.find(":/")
        socket = value[cut:] if value.startswith("/") else value[cut + 1 :]
        value = value[:cut]
    host, port = value, None
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d*))?|([^:]*)(?::(\d*))?", value)
    if match:
        host = match.group(1) or match.group(3) or ""
        digits = match.group(2) or match.group(4)
        port = int(digits) if digits else None
    return host or "localhost", port, socket


_DEBIAN_DISPATCH = "/etc/wordpress/config-"


def read_wp_config(wp_path: Path, config: Path | None = None) -> Database:
    """DB_NAME, DB_USER, DB_PASSWORD, DB_HOST and ``$table_prefix`` from ``config``
    (WP_CONFIG), else from wp-config.php (WordPress also looks one directory up)."""
    path = config or wp_path / "wp-config.php"
    if config is None and not path.is_file() and (wp_path.parent / "wp-config.php").is_file():
        path = wp_path.parent / "wp-config.php"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse_wp_config(text, path, explicit=config is not None)


def parse_wp_config(text: str, path: Path, *, explicit: bool = False) -> Database:
    """The settings ``read_wp_config`` reads, from the text of ``path`` (``explicit``: it is
    WP_CONFIG). A DB_NAME starting with ``-`` is refused: no client must read it as an option."""
    source = _strip_comments(text)
    found = {m.group(2): _php_string(m.group(3)) for m in _DEFINE.finditer(source)}
    missing = [k for k in ("DB_NAME", "DB_USER", "DB_PASSWORD") if k not in found]
    if missing and not explicit and _DEBIAN_DISPATCH in source:
        raise ConfigError(
            f"{path} is Debian's wordpress dispatcher: set WP_CONFIG to the file with the "
            f"database settings, e.g. WP_CONFIG={_DEBIAN_DISPATCH}<host>.php"
        )
    if missing:
        raise ConfigError(
            f"{path}: no string literal for {', '.join(missing)} (install wp-cli, or define them literally)"
        )
    if found["DB_NAME"].startswith("-") or not found["DB_NAME"].strip():
        raise ConfigError(
            f"{path}: DB_NAME {found['DB_NAME']!r} is not a database name a client may be "
            "given (empty, or starts with '-'); refused"
        )
    host, port, socket = parse_db_host(found.get("DB_HOST", "localhost"))
    prefix = _PREFIX.search(source)
    return Database(
        name=found["DB_NAME"],
        user=found["DB_USER"],
        password=found["DB_PASSWORD"],
        host=host,
        port=port,
        socket=socket,
        prefix=_php_string(prefix.group(1)) if prefix else "wp_",
    )


# --- mysql clients --------------------------------------------------------------------------


class Clients:
    """mysql / mysqldump / mysqlcheck with the site's credentials from a 0600 option file."""

    def __init__(self, ctx: JobContext, db: Database) -> None:
        self.ctx = ctx
        self.db = db
        ctx.secret(db.password)
        fd, self.defaults = tempfile.mkstemp(prefix="jobrunner-my-", suffix=".cnf")
        ctx.cleanup(lambda: Path(self.defaults).unlink(missing_ok=True))
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            handle.write("[client]\n" + "\n".join(db.option_lines()) + "\n")

    def argv(self, tool: str, *args: str) -> list[str]:
        """``tool`` with the credentials; ``mysql`` also with ``--sandbox``: client commands
        that reach the file system or a shell (``\\!``, ``source``, ``tee``) are refused.
        A database name in ``args`` goes after ``--``."""
        # --defaults-extra-file must be the first option
        sandbox = ["--sandbox"] if os.path.basename(tool) in ("mysql", "mariadb") else []
        return [tool, f"--defaults-extra-file={self.defaults}", *sandbox, *args]

    def load_argv(self, database: str) -> list[str]:
        """``mysql`` reading a dump on stdin into ``database`` (sandboxed, name after ``--``)."""
        return self.argv("mysql", "--", database)

    def query(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run one statement, return the rows (tab separated, no headers)."""
        argv = self.argv("mysql", "--batch", "--skip-column-names", "-e", sql, *(["--", database] if database else []))
        out = self.ctx.run(argv, capture=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def table_names(self, database: str) -> list[str]:
        """The base tables (not views) of ``database``, sorted."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            + sql_string(database)
            + " AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [row[0] for row in rows]

    def dump_argv(self, database: str | None = None) -> list[str]:
        """A consistent InnoDB dump, streamed (``--single-transaction --quick``)."""
        return self.argv(
            "mysqldump",
            "--single-transaction",
            "--quick",
            "--hex-blob",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            "--triggers",
            "--add-drop-table",
            "--",
            database or self.db.name,
        )


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"
