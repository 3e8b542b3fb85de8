"""A throwaway WordPress stack: a real MariaDB server and a real WordPress site.

Used by the fixtures in ``conftest.py`` and by ``bench/wp_backup.py``. Everything lives under
one directory; the server listens on 127.0.0.1 at a free port and on a socket in that
directory, runs as root with ``--no-defaults`` (the machine's /etc/mysql is never read) and is
stopped by ``MariaDB.stop()``.

WordPress comes from Debian's ``wordpress`` package (/usr/share/wordpress). Debian's own
``wp-config.php`` there is a dispatcher to /etc/wordpress/config-<host>.php; a site copy gets a
normal, self-contained ``wp-config.php`` instead, as on a typical VPS.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

WP_SOURCE = Path("/usr/share/wordpress")
# A password with every character that breaks naive quoting (shell, PHP, option files).
DB_PASSWORD = "Pw-7xq$Zz'\"\\ ;#&`k9"
DB_USER = "wpuser"
DB_NAME = "wordpress"
TABLE_PREFIX = "jrt_"

MU_PLUGIN = r"""<?php
// Test helpers: a cron hook that leaves a marker, and an object cache whose flush is visible.
add_action('jr_test_event', function () {
    file_put_contents(WP_CONTENT_DIR . '/cron-ran', (string) time());
});
class JR_Marker_Cache extends WP_Object_Cache {
    public function flush() {
        file_put_contents(WP_CONTENT_DIR . '/cache-flushed', (string) time());
        return parent::flush();
    }
}
$GLOBALS['wp_object_cache'] = new JR_Marker_Cache();
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def missing_tools() -> list[str]:
    need = ["mariadb-install-db", "mariadbd", "mysqldump", "mysql", "mysqlcheck", "php", "zstd"]
    found = [t for t in need if not (shutil.which(t) or shutil.which(t, path="/usr/sbin"))]
    if not (WP_SOURCE / "wp-load.php").exists():
        found.append(str(WP_SOURCE))
    return found


def php_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class MariaDB:
    """One mariadbd under ``base``; ``sql()`` runs statements as root over the socket."""

    base: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.base / "mysqld.sock"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    def start(self) -> MariaDB:
        self.base.mkdir(parents=True, exist_ok=True)
        if not (self.datadir / "mysql").exists():
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        self.port = self.port or free_port()
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                f"--pid-file={self.base / 'mysqld.pid'}",
                f"--log-error={self.base / 'error.log'}",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=256M",
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-doublewrite=0",
                "--max-allowed-packet=64M",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {(self.base / 'error.log').read_text()[-2000:]}")
            ok = subprocess.run(
                ["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-uroot", "ping"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if ok.returncode == 0:
                return self
            time.sleep(0.1)
        raise RuntimeError("mariadbd did not start in 60s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def client(self, *args: str) -> list[str]:
        return ["mariadb", "--no-defaults", f"--socket={self.socket}", "-uroot", *args]

    def sql(self, statement: str, db: str | None = None) -> str:
        argv = self.client("-N", "-B", *([db] if db else []))
        return subprocess.run(argv, input=statement, check=True, capture_output=True, text=True).stdout

    def create_wp_database(self, name: str = DB_NAME) -> None:
        pw = self.quote(DB_PASSWORD)
        self.sql(
            f"CREATE DATABASE IF NOT EXISTS `{name}`;"
            + "".join(
                f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY {pw};"
                f"GRANT ALL ON `{name}`.* TO '{DB_USER}'@'{host}';"
                # the backup's restore check loads into `<db>_verify_<random>`; the restore drill
                # may load into another database of this prefix
                f"GRANT ALL ON `{name}\\_%`.* TO '{DB_USER}'@'{host}';"
                for host in ("localhost", "127.0.0.1")
            )
        )

    @staticmethod
    def quote(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def copy_wordpress(dest: Path) -> None:
    """Copy Debian's WordPress files (symlinks resolved, no translations) into ``dest``."""
    shutil.copytree(
        WP_SOURCE, dest, symlinks=False, ignore=lambda d, names: ["languages"] if d.endswith("wp-content") else []
    )
    (dest / "wp-config.php").unlink()


def write_wp_config(site: Path, db_host: str, db_name: str = DB_NAME, prefix: str = TABLE_PREFIX) -> None:
    (site / "wp-config.php").write_text(
        "<?php\n"
        "/** generated by tests/wp/stack.py */\n"
        f"define( 'DB_NAME', {php_quote(db_name)} );\n"
        f"define('DB_USER',{php_quote(DB_USER)});\n"
        f'define( "DB_PASSWORD", {php_quote(DB_PASSWORD)} ); // single-quoted in PHP\n'
        f"define( 'DB_HOST', {php_quote(db_host)} );\n"
        "define( 'DB_CHARSET', 'utf8mb4' );\n"
        "define( 'DB_COLLATE', '' );\n"
        "define( 'WP_HOME', 'http://localhost' );\n"
        "define( 'WP_SITEURL', 'http://localhost' );\n"
        "define( 'AUTOMATIC_UPDATER_DISABLED', true );\n"
        "define( 'DISABLE_WP_CRON', true );\n"
        f"$table_prefix = {php_quote(prefix)};\n"
        "if ( ! defined( 'ABSPATH' ) ) { define( 'ABSPATH', __DIR__ . '/' ); }\n"
        "require_once ABSPATH . 'wp-settings.php';\n"
    )


def php(site: Path, code: str, *args: str) -> str:
    proc = subprocess.run(
        ["php", "-d", "display_errors=stderr", "-r", code, "--", str(site), *args],
        capture_output=True,
        text=True,
        cwd=site,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"php failed ({proc.returncode}): {proc.stderr[-2000:]} {proc.stdout[-500:]}")
    return proc.stdout


_BOOT = "$_SERVER['HTTP_HOST']='localhost'; require $argv[1] . '/wp-load.php';"


def install_site(site: Path, db_host: str, posts: int = 3, upload_bytes: int = 256 * 1024) -> None:
    """Copy WordPress, configure it, run the installer, add posts, uploads and test mu-plugin."""
    copy_wordpress(site)
    write_wp_config(site, db_host)
    php(
        site,
        "define('WP_INSTALLING', true); $_SERVER['HTTP_HOST']='localhost';"
        "require $argv[1] . '/wp-load.php'; require_once ABSPATH . 'wp-admin/includes/upgrade.php';"
        "wp_install('jobrunner test', 'admin', 'admin@example.com', true, '', 'admin-pw');",
    )
    add_posts(site, [f"Post {i}" for i in range(posts)])
    uploads = site / "wp-content" / "uploads" / "2024" / "01"
    uploads.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (uploads / f"photo-{i}.jpg").write_bytes(os.urandom(upload_bytes))
    mu = site / "wp-content" / "mu-plugins"
    mu.mkdir(exist_ok=True)
    (mu / "jobrunner-test.php").write_text(MU_PLUGIN)


def add_posts(site: Path, titles: list[str]) -> None:
    php(
        site,
        _BOOT + "foreach (array_slice($argv, 2) as $t) { wp_insert_post(['post_title'=>$t,"
        "'post_content'=>'Body of '.$t,'post_status'=>'publish']); }",
        *titles,
    )


def post_titles(site: Path) -> list[str]:
    out = php(
        site,
        _BOOT + "foreach (get_posts(['numberposts'=>-1,'post_status'=>'any']) as $p) echo $p->post_title, \"\\n\";",
    )
    return sorted(line for line in out.splitlines() if line)


def clone_site(db: MariaDB, source: Path, dest: Path, db_name: str, db_host: str) -> None:
    """A copy of ``source`` (files and database) under another database name and DB_HOST."""
    shutil.copytree(source, dest, symlinks=True)
    db.create_wp_database(db_name)
    dump = subprocess.run(
        ["mysqldump", "--no-defaults", f"--socket={db.socket}", "-uroot", DB_NAME], check=True, capture_output=True
    ).stdout
    subprocess.run(db.client(db_name), input=dump, check=True)
    write_wp_config(dest, db_host, db_name=db_name)
