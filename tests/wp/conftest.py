"""Fixtures for the WordPress jobs: a real MariaDB and a real WordPress site, made once.

``wp_stack``   session: mariadbd on 127.0.0.1:<free port> + socket, a WordPress site (Debian's
               ``wordpress`` package files, own wp-config.php with DB_HOST=127.0.0.1:<port>,
               table prefix ``jrt_``), installed with PHP CLI, with posts and uploads.
``site``       per test: a copy of that site with its own database, reached over the socket
               (DB_HOST=localhost:/…/mysqld.sock), free to be changed or broken.
``wp_env``     per test: writes the one env file the jobs read and runs them through the
               real CLI (``launcher``), with PATH free of ``wp`` unless a test adds the stand-in.
``wp_standin`` a ``wp`` script put first on PATH that records its arguments.

Skipped (with the reason) when MariaDB, PHP or the wordpress package are not installed;
``JOBRUNNER_REQUIRE_WP=1`` (CI) turns the skip into a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import stack

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def wp_stack(tmp_path_factory):
    missing = stack.missing_tools()
    if missing:
        if os.environ.get("JOBRUNNER_REQUIRE_WP", "") not in ("", "0"):
            pytest.fail(f"JOBRUNNER_REQUIRE_WP is set but missing: {', '.join(missing)}", pytrace=False)
        pytest.skip(f"WordPress stack not installed: {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("the WordPress stack tests run as root (mariadbd --user=root, tmpfs mounts)")
    base = tmp_path_factory.mktemp("wpstack")
    db = stack.MariaDB(base / "db")
    try:
        db.start()
        db.create_wp_database()
        site = base / "site"
        stack.install_site(site, f"127.0.0.1:{db.port}")
        yield _Stack(db, site)
    finally:
        db.stop()


class _Stack:
    def __init__(self, db: stack.MariaDB, site: Path) -> None:
        self.db = db
        self.site = site


@pytest.fixture
def site(wp_stack, tmp_path) -> Iterator[Path]:
    """A private copy of the site (files + database ``wordpress_sN``), DB_HOST as a socket."""
    name = f"{stack.DB_NAME}_s{next(_counter)}"
    dest = tmp_path / "site"
    stack.clone_site(wp_stack.db, wp_stack.site, dest, name, f"localhost:{wp_stack.db.socket}")
    yield dest
    wp_stack.db.sql(f"DROP DATABASE IF EXISTS `{name}`")


class WpEnv:
    """Runs a WordPress job through the real CLI with one env file, like a unit would."""

    def __init__(self, launcher, tmp_path: Path, wp_path: Path) -> None:
        self.launcher = launcher
        self.backup_dir = tmp_path / "backups"
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.env_file = tmp_path / "wp.env"
        self.key_file = tmp_path / "keys" / "backup.key"  # made by the first backup, 0600
        self.settings = {
            "WP_PATH": str(wp_path),
            "BACKUP_DIR": str(self.backup_dir),
            "WP_SITE": "testsite",
            "BACKUP_HMAC_KEY_FILE": str(self.key_file),
        }
        self.path = os.environ.get("PATH", "/usr/bin:/bin")
        self.path = ":".join(p for p in self.path.split(":") if not Path(p, "wp").exists())

    def run(self, module: str, *args: str, timeout: float = 240, **settings: str):
        self.env_file.write_text("".join(f"{k}={json.dumps(v)}\n" for k, v in {**self.settings, **settings}.items()))
        self.env_file.chmod(0o600)  # whatever the umask a test runs under (the runner refuses o+w)
        env = self.launcher.env(PATH=self.path, TMPDIR=str(self.tmpdir))
        result = self.launcher.run(
            "run", f"jobs.{module}", "--env-file", str(self.env_file), *args, env=env, timeout=timeout
        )
        leaked = [str(p) for p in self.tmpdir.iterdir()]
        assert not leaked, f"temporary files left behind: {leaked}"
        assert stack.DB_PASSWORD not in result.stdout + result.stderr, "the DB password reached the output"
        return result

    def sets(self) -> list[Path]:
        return (
            sorted(p for p in self.backup_dir.iterdir() if not p.name.startswith("."))
            if self.backup_dir.exists()
            else []
        )


@pytest.fixture
def wp_env(launcher, tmp_path, wp_stack) -> WpEnv:
    """Jobs run against the shared session site (read-only use)."""
    return WpEnv(launcher, tmp_path, wp_stack.site)


@pytest.fixture
def site_env(launcher, tmp_path, site) -> WpEnv:
    """Jobs run against a private copy of the site (tests that change it)."""
    return WpEnv(launcher, tmp_path, site)


STANDIN = r"""#!/bin/sh
# wp-cli stand-in: records its arguments, one JSON list a line, and fakes `db export -`.
python3 -c 'import json,sys,os; print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pwd_env": "MYSQL_PWD" in os.environ}))' "$@" >> "$WP_STANDIN_LOG"
if [ "$1 $2 $3" = "db export -" ]; then
  printf 'CREATE TABLE `t` (`id` int);\nINSERT INTO `t` VALUES (1);\n'
fi
"""


@pytest.fixture
def wp_standin(tmp_path):
    """A ``wp`` first on PATH; ``.calls()`` returns what it was run with."""
    bindir = tmp_path / "wpbin"
    bindir.mkdir()
    script = bindir / "wp"
    script.write_text(STANDIN)
    script.chmod(0o755)
    log = tmp_path / "wp-calls.jsonl"

    class Standin:
        path = script

        @staticmethod
        def install(env: WpEnv) -> None:
            env.path = f"{bindir}:{env.path}"
            os.environ["WP_STANDIN_LOG"] = str(log)

        @staticmethod
        def calls() -> list[dict]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    yield Standin
    os.environ.pop("WP_STANDIN_LOG", None)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs; unmounted at teardown whatever happens."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    import subprocess

    # mode 0750: a tmpfs is 1777 by default, and the backup jobs refuse a BACKUP_DIR others can write
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(mount, ignore_errors=True)
