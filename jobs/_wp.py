"""What the WordPress jobs share: configuration, wp-config.php, database clients, wp-cli,
compression and backup sets.

Configuration is one env file (``/etc/jobrunner/jobrunner.env``, loaded by every unit and by
runs by hand) read through ``ctx.env``:

- ``WP_PATH`` (``/var/www/html``): the WordPress directory (where wp-config.php is).
- ``WP_SITE``: the name backup sets carry (default: the name of ``WP_PATH``'s directory, or
  ``wordpress`` for generic names such as ``html``).
- ``WP_CLI``: path of ``wp``; unset: ``wp`` on ``PATH`` if there is one, else the direct path
  (mysql clients and php with credentials from wp-config.php).
- ``BACKUP_DIR`` (``/mnt/backups``), ``BACKUP_COMPRESS`` (``zstd`` | ``gzip``; default zstd when
  installed), ``KEEP_DAILY`` / ``KEEP_WEEKLY`` / ``KEEP_MONTHLY`` (7 / 4 / 6).

The database password never reaches a command line: it is registered with ``ctx.secret`` and
handed to the mysql clients in a 0600 option file (``--defaults-extra-file``) removed at the
end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobrunner import ConfigError

DEFAULT_WP_PATH = "/var/www/html"
DEFAULT_BACKUP_DIR = "/mnt/backups"
BACKUP_LOCK = "wp-backups"  # shared by writers and restore, exclusive for the pruner
MANIFEST = "manifest.json"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
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


def _count(env: dict[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip() or str(default)
    if not raw.isdigit():
        raise ConfigError(f"{key}={raw!r}: must be a whole number (0 or more)")
    return int(raw)


def settings(ctx: Any) -> Settings:
    """Read and check the WordPress settings from ``ctx.env`` (ConfigError: exit 78)."""
    env = ctx.env
    wp_path = Path(env.get("WP_PATH") or DEFAULT_WP_PATH)
    site = env.get("WP_SITE") or (wp_path.name if wp_path.name not in _GENERIC_DIRS else "wordpress")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", site) or site.startswith("."):
        raise ConfigError(f"WP_SITE={site!r}: use letters, digits and '_.-'")
    compress = (env.get("BACKUP_COMPRESS") or ("zstd" if shutil.which("zstd", path=env.get("PATH")) else "gzip")).lower()
    if compress not in CODECS:
        raise ConfigError(f"BACKUP_COMPRESS={compress!r}: use zstd or gzip")
    return Settings(
        wp_path=wp_path,
        site=site,
        backup_dir=Path(env.get("BACKUP_DIR") or DEFAULT_BACKUP_DIR),
        compress=compress,
        keep_daily=_count(env, "KEEP_DAILY", 7),
        keep_weekly=_count(env, "KEEP_WEEKLY", 4),
        keep_monthly=_count(env, "KEEP_MONTHLY", 6),
        wp_cli=find_wp_cli(env),
    )


def find_wp_cli(env: dict[str, str]) -> str | None:
    """``$WP_CLI`` (must be executable), else ``wp`` on ``PATH``, else ``None`` (direct path)."""
    configured = env.get("WP_CLI", "").strip()
    if configured:
        if not os.access(configured, os.X_OK):
            raise ConfigError(f"WP_CLI={configured!r} is not an executable file")
        return configured
    return shutil.which("wp", path=env.get("PATH"))


def wp_command(ctx: Any, s: Settings, *args: str) -> list[str]:
    """A wp-cli command line for the site (``--allow-root`` when running as root)."""
    assert s.wp_cli
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    return [s.wp_cli, *args, f"--path={s.wp_path}", *extra]


def require_site(s: Settings) -> None:
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


def read_wp_config(wp_path: Path) -> Database:
    """DB_NAME, DB_USER, DB_PASSWORD, DB_HOST and ``$table_prefix`` from wp-config.php
    (WordPress also looks one directory up)."""
    path = wp_path / "wp-config.php"
    if not path.is_file() and (wp_path.parent / "wp-config.php").is_file():
        path = wp_path.parent / "wp-config.php"
    try:
        source = _strip_comments(path.read_text(errors="replace"))
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    found = {m.group(2): _php_string(m.group(3)) for m in _DEFINE.finditer(source)}
    missing = [k for k in ("DB_NAME", "DB_USER", "DB_PASSWORD") if k not in found]
    if missing:
        raise ConfigError(f"{path}: no string literal for {', '.join(missing)} (install wp-cli, or define them literally)")
    host, port, socket = parse_db_host(found.get("DB_HOST", "localhost"))
    prefix = _PREFIX.search(source)
    return Database(
        name=found["DB_NAME"], user=found["DB_USER"], password=found["DB_PASSWORD"],
        host=host, port=port, socket=socket, prefix=_php_string(prefix.group(1)) if prefix else "wp_",
    )


# --- mysql clients --------------------------------------------------------------------------


class Clients:
    """mysql / mysqldump / mysqlcheck with the site's credentials from a 0600 option file."""

    def __init__(self, ctx: Any, db: Database) -> None:
        self.ctx = ctx
        self.db = db
        ctx.secret(db.password)
        fd, self.defaults = tempfile.mkstemp(prefix="jobrunner-my-", suffix=".cnf")
        ctx.cleanup(lambda: Path(self.defaults).unlink(missing_ok=True))
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            handle.write("[client]\n" + "\n".join(db.option_lines()) + "\n")

    def argv(self, tool: str, *args: str) -> list[str]:
        # --defaults-extra-file must be the first option
        return [tool, f"--defaults-extra-file={self.defaults}", *args]

    def query(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run one statement, return the rows (tab separated, no headers)."""
        argv = self.argv("mysql", "--batch", "--skip-column-names", "-e", sql, *([database] if database else []))
        out = self.ctx.run(argv, capture=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def table_names(self, database: str) -> list[str]:
        """The base tables (not views) of ``database``, sorted."""
        rows = self.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            + sql_string(database) + " AND table_type = 'BASE TABLE' ORDER BY table_name"
        )
        return [row[0] for row in rows]

    def dump_argv(self, database: str | None = None) -> list[str]:
        """A consistent InnoDB dump, streamed (``--single-transaction --quick``)."""
        return self.argv(
            "mysqldump", "--single-transaction", "--quick", "--hex-blob", "--no-tablespaces",
            "--default-character-set=utf8mb4", "--triggers", "--add-drop-table", database or self.db.name,
        )


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


# --- compression ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    test: tuple[str, ...]


CODECS = {
    "zstd": Codec("zstd", ".zst", ("zstd", "-T0", "-3", "-q", "-c"), ("zstd", "-d", "-q", "-c"), ("zstd", "-t", "-q")),
    "gzip": Codec("gzip", ".gz", ("gzip", "-6", "-c"), ("gzip", "-d", "-c"), ("gzip", "-t")),
}


def codec_for(filename: str) -> Codec:
    for codec in CODECS.values():
        if filename.endswith(codec.ext):
            return codec
    raise ValueError(f"{filename}: unknown compression")


# --- backup sets ----------------------------------------------------------------------------


@dataclass
class BackupSet:
    """A finished set directory ``<site>-<stamp>`` (full) or ``<site>-db-<stamp>`` (database)."""

    path: Path
    manifest: dict[str, Any] | None
    created: datetime | None

    @property
    def kind(self) -> str:
        return (self.manifest or {}).get("kind") or ("db" if "-db-" in self.path.name else "full")

    @property
    def site(self) -> str | None:
        return (self.manifest or {}).get("site")

    @property
    def verified(self) -> bool:
        return bool(self.manifest and self.manifest.get("verified") is True)


def utc_stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime(STAMP_FORMAT)


def set_name(site: str, kind: str, when: datetime) -> str:
    return f"{site}-{utc_stamp(when)}" if kind == "full" else f"{site}-{kind}-{utc_stamp(when)}"


_SET_NAME = re.compile(r"^(?P<site>.+?)(?:-(?P<kind>db))?-(?P<stamp>\d{8}T\d{6}Z)$")


def read_set(path: Path) -> BackupSet | None:
    """The set at ``path`` (``None`` if the name is not a set's)."""
    match = _SET_NAME.match(path.name)
    if not match or not path.is_dir():
        return None
    manifest = None
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        pass
    created = datetime.strptime(match.group("stamp"), STAMP_FORMAT).replace(tzinfo=timezone.utc)
    return BackupSet(path, manifest, created)


def list_sets(backup_dir: Path, site: str | None = None) -> list[BackupSet]:
    """Finished sets, oldest first (``.partial`` directories are not sets)."""
    if not backup_dir.is_dir():
        return []
    found = [s for p in backup_dir.iterdir() if not p.name.startswith(".") and (s := read_set(p))]
    if site is not None:
        found = [s for s in found if (s.site or _SET_NAME.match(s.path.name).group("site")) == site]
    return sorted(found, key=lambda s: (s.created, s.path.name))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := handle.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def check_manifest(set_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found checking each listed file's size and SHA-256 (empty: all good)."""
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = set_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {meta['bytes']}")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{name}: SHA-256 mismatch")
    if not manifest.get("files"):
        problems.append("manifest lists no files")
    return problems


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_durably(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def hold_backup_lock(ctx: Any, *, shared: bool, wait: float) -> None:
    """Take the backup area's lock in the job (the declared lock is the job's own)."""
    from jobrunner.locks import FileLock, default_lock_dir

    path = os.path.join(default_lock_dir(), f"{BACKUP_LOCK}.lock")
    lock = FileLock(path, wait=wait, shared=shared)
    ctx.log.info("lock.waiting" if wait else "lock.acquiring", path=path, shared=shared)
    lock.acquire()
    ctx.cleanup(lock.release)
    ctx.log.info("lock.acquired", path=path, shared=shared)


class FileFollower:
    """Hashes a file while another process appends to it, and has the kernel write it back
    as it grows (an fdatasync every 32 MiB) instead of all at the end.

    The checksum and the disk writes then overlap the compression, and the data is read back
    from the page cache, not through another pipe: the write phase costs about what its I/O
    does. ``finish()`` (after the writer exited) reads the rest, fsyncs, returns the summary.
    """

    FLUSH_EVERY = 32 << 20

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow {path.name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        since = 0
        try:
            while True:
                finished = self._done.is_set()  # read before reading: no append is missed
                n = os.readv(self.fd, [buf])
                if n:
                    self.digest.update(view[:n])
                    self.bytes += n
                    since += n
                    if since >= self.FLUSH_EVERY:
                        os.fdatasync(self.fd)
                        since = 0
                elif finished:
                    return
                else:
                    self._done.wait(0.02)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> dict[str, Any]:
        """Stop following (the writer has exited); fsync; ``{"bytes", "sha256"}``."""
        self._done.set()
        self._thread.join()
        try:
            if self.error:
                raise self.error
            os.fsync(self.fd)
            return {"bytes": self.bytes, "sha256": self.digest.hexdigest()}
        finally:
            os.close(self.fd)

    def abandon(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        try:
            os.close(self.fd)
        except OSError:
            pass

