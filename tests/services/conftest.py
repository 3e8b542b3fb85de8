"""Real components for the WordPress service jobs, started per test and always stopped.

Everything listens on 127.0.0.1 on a free port and keeps its files in the test's tmp dir:

``moto``      an S3-compatible server (``moto_server`` from moto[server]) for rclone
``acme_server`` a local ACME CA (Debian's ``pebble``) with a throwaway CA
``pebble``    the same, plus ``certbot`` that obtained one certificate from it
              (``--standalone``), ready for ``certbot renew``
``web``       ``php-fpm8.2`` (own pool, unix socket, ``ping.path``) behind ``nginx`` serving a
              generated WordPress-style sitemap and PHP pages; access log with timings
``blackhole`` a TCP listener that never accepts: requests to it time out
``tmpfs``     a small tmpfs mounted in the tmp dir (root only)

Every process is started in its own session and killed as a group at teardown, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import stop_group

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
# The machine's CA-bundle variables break rclone's S3 backend (LoadCustomCABundleError) and
# would send certbot to the wrong CA: every run under test starts without them.
SCRUBBED = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            program = proc.args if isinstance(proc.args, (str, bytes, os.PathLike)) else proc.args[0]
            raise RuntimeError(f"{os.fsdecode(program)} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_path(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.05)


def need(*programs: str) -> None:
    missing = [p for p in programs if not shutil.which(p, path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (see .ci/run)")


class Procs:
    """Processes of one test: started in new sessions, killed as groups at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.out", "wb")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        log.close()
        self.started.append(proc)
        return proc

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.out").read_text(errors="replace")

    def stop(self) -> None:
        for proc in reversed(self.started):
            stop_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop()


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------- S3


@dataclass
class S3:
    endpoint: str
    remote: str  # the rclone remote's name, configured through RCLONE_CONFIG_<NAME>_*
    access_key: str
    secret_key: str

    def rclone_env(self) -> dict[str, str]:
        name = self.remote.upper()
        return {
            f"RCLONE_CONFIG_{name}_TYPE": "s3",
            f"RCLONE_CONFIG_{name}_PROVIDER": "Other",
            f"RCLONE_CONFIG_{name}_ENDPOINT": self.endpoint,
            f"RCLONE_CONFIG_{name}_ACCESS_KEY_ID": self.access_key,
            f"RCLONE_CONFIG_{name}_SECRET_ACCESS_KEY": self.secret_key,
        }

    def ls(self, path: str) -> dict[str, int]:
        """``{relative path: size}`` of the objects under ``remote:path`` (rclone lsjson)."""
        out = subprocess.run(
            ["rclone", "lsjson", "-R", "--files-only", f"{self.remote}:{path}"],
            env=service_env(**self.rclone_env()),
            capture_output=True,
            text=True,
            check=True,
        )
        return {item["Path"]: item["Size"] for item in json.loads(out.stdout)}


@pytest.fixture
def moto(procs: Procs) -> S3:
    need("moto_server", "rclone")
    port = free_port()
    proc = procs.start(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], name="moto", env=service_env()
    )
    wait_port(port, proc)
    return S3(
        endpoint=f"http://127.0.0.1:{port}",
        remote="media",
        access_key="AKIATESTMEDIA",
        secret_key="s3cr3t-Media-Key-9f2c1b",
    )


# ---------------------------------------------------------------------------------- ACME


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass
class Acme:
    dir_url: str
    ca: Path
    config_dir: Path
    work_dir: Path
    logs_dir: Path
    http_port: int
    domain: str

    def certbot_args(self) -> str:
        """What CERTBOT_ARGS carries in the tests: certbot's own dirs and the test CA."""
        return f"--config-dir {self.config_dir} --work-dir {self.work_dir} --logs-dir {self.logs_dir}"

    def env(self) -> dict[str, str]:
        return {"REQUESTS_CA_BUNDLE": str(self.ca)}

    def cert_serial(self) -> str:
        cert = self.config_dir / "live" / self.domain / "cert.pem"
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-serial", "-in", str(cert)], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


@dataclass
class AcmeServer:
    """A running pebble: its directory URL and the CA that signed its HTTPS certificate."""

    dir_url: str
    ca: Path


@pytest.fixture
def acme_server(procs: Procs, tmp_path: Path) -> AcmeServer:
    """pebble on 127.0.0.1 with a throwaway CA; every challenge passes (PEBBLE_VA_ALWAYS_VALID).

    PEBBLE_WFE_NONCEREJECT=0: by default pebble rejects 5 % of valid nonces to exercise client
    retries, and Debian 12's certbot 2.1 on Python 3.11 crashes on any ACME error response
    ("AttributeError: can't set attribute", certbot issue #9539) instead of retrying: the
    tests would fail at random."""
    need("pebble", "openssl")
    ca_dir = tmp_path / "acme-ca"
    ca_dir.mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=jobrunner test CA",
        cwd=ca_dir,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
        cwd=ca_dir,
    )
    (ca_dir / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=ca_dir,
    )
    port, mgmt = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{mgmt}",
            "certificate": str(ca_dir / "cert.pem"),
            "privateKey": str(ca_dir / "key.pem"),
            "httpPort": free_port(),
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (ca_dir / "pebble.json").write_text(json.dumps(config))
    proc = procs.start(
        ["pebble", "-config", str(ca_dir / "pebble.json")],
        name="pebble",
        env=service_env(PEBBLE_VA_ALWAYS_VALID="1", PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0"),
    )
    wait_port(port, proc)
    return AcmeServer(dir_url=f"https://127.0.0.1:{port}/dir", ca=ca_dir / "ca.pem")


def certonly_argv(dir_url: str, http_port: int, domain: str) -> list[str]:
    """certbot obtaining DOMAIN from the ACME server (standalone, on 127.0.0.1:HTTP_PORT)."""
    return [
        "certbot",
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--server",
        dir_url,
        "--standalone",
        "--http-01-address",
        "127.0.0.1",
        "--http-01-port",
        str(http_port),
        "-d",
        domain,
    ]


@pytest.fixture
def pebble(acme_server: AcmeServer, tmp_path: Path) -> Acme:
    """pebble plus one certificate that real certbot obtained from it, in the test's own dirs."""
    need("certbot")
    acme = Acme(
        dir_url=acme_server.dir_url,
        ca=acme_server.ca,
        config_dir=tmp_path / "le" / "config",
        work_dir=tmp_path / "le" / "work",
        logs_dir=tmp_path / "le" / "logs",
        http_port=free_port(),
        domain="blog.example.test",
    )
    obtain = subprocess.run(
        [*certonly_argv(acme.dir_url, acme.http_port, acme.domain), *acme.certbot_args().split()],
        env=service_env(**acme.env()),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert obtain.returncode == 0, obtain.stdout + obtain.stderr
    return acme


# ---------------------------------------------------------------------------------- web


@dataclass
class Web:
    base: str
    root: Path
    access_log: Path
    fpm_socket: Path
    fpm_pid: Path
    fpm_proc: subprocess.Popen

    def requests(self) -> list[dict]:
        """Access-log records: path, status, end (epoch s), seconds."""
        out = []
        for line in self.access_log.read_text().splitlines():
            end, seconds, status, path = line.split(" ", 3)
            out.append({"end": float(end), "seconds": float(seconds), "status": int(status), "path": path})
        return out

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests()]


_NGINX = """\
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
user root;
events {{ worker_connections 256; }}
http {{
    log_format timed '$msec $request_time $status $request_uri';
    access_log {d}/access.log timed;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ application/xml xml; text/html html; }}
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        index index.php;
        location ~ \\.php$ {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_pass unix:{d}/fpm.sock;
        }}
        location = /fpm-ping {{
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_NAME /ping;
            fastcgi_param SCRIPT_FILENAME /ping;
            fastcgi_pass unix:{d}/fpm.sock;
        }}
    }}
}}
"""

_FPM = """\
[global]
pid = {d}/fpm.pid
error_log = {d}/fpm-error.log
daemonize = no
[www]
user = root
group = root
listen = {d}/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = 8
ping.path = /ping
ping.response = pong
"""

# A WordPress core-style sitemap: an index pointing at nested sitemaps, one of them PHP-made.
_PAGE = "<?php usleep(200000); echo 'page ', htmlspecialchars($_SERVER['REQUEST_URI']), \"\\n\";\n"
_POSTS = """<?php
header('Content-Type: application/xml');
echo '<?xml version="1.0" encoding="UTF-8"?>', "\\n";
echo '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">';
for ($i = 1; $i <= 12; $i++) { echo "<url><loc>http://127.0.0.1:{port}/page.php?p=$i</loc></url>"; }
echo '</urlset>';
"""


def _urlset(locs: list[str]) -> str:
    body = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>\n'
    )


def _index(locs: list[str]) -> str:
    body = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</sitemapindex>\n'
    )


@pytest.fixture
def web(procs: Procs, tmp_path: Path) -> Web:
    need("nginx", "php-fpm8.2")
    d = tmp_path / "web"
    for sub in ("www", "tmp"):
        (d / sub).mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    www = d / "www"
    (www / "index.php").write_text('<?php echo "home\\n";\n')
    (www / "page.php").write_text(_PAGE)
    (www / "wp-sitemap-posts-post-1.php").write_text(_POSTS.replace("{port}", str(port)))
    pages = [f"{base}/page.php?page={i}" for i in range(1, 7)]
    (www / "wp-sitemap-pages-1.xml").write_text(_urlset([f"{base}/", *pages]))
    (www / "wp-sitemap.xml").write_text(
        _index([f"{base}/wp-sitemap-posts-post-1.php", f"{base}/wp-sitemap-pages-1.xml"])
    )
    (d / "fpm.conf").write_text(_FPM.format(d=d))
    (d / "nginx.conf").write_text(_NGINX.format(d=d, port=port))
    fpm = procs.start(["php-fpm8.2", "-F", "-R", "-y", str(d / "fpm.conf")], name="php-fpm")
    wait_path(d / "fpm.sock")
    nginx = procs.start(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d), "-g", "daemon off;"], name="nginx")
    wait_port(port, nginx)
    return Web(
        base=base, root=www, access_log=d / "access.log", fpm_socket=d / "fpm.sock", fpm_pid=d / "fpm.pid", fpm_proc=fpm
    )


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``http://127.0.0.1:PORT/``: connects (the kernel queues it) but never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow"
    finally:
        sock.close()


# ---------------------------------------------------------------------------------- tmpfs


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs with 64 inodes, unmounted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "vol"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64,mode=0755", "jr-test", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
