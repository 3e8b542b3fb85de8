"""A real healthchecks server (the open-source one, tag v3.13) on 127.0.0.1 for the ping and
check-sync tests.

The source is ``../shared/vendor/healthchecks-v3.13`` beside the repository (read-only;
``$JOBRUNNER_HEALTHCHECKS_SRC`` points elsewhere). Its venv is built from its
``requirements.txt`` with Debian's ``/usr/bin/python3`` and cached under
``/var/cache/jobrunner-tests/healthchecks-<hash of requirements + python>`` (``$JOBRUNNER_TEST_CACHE``
moves the cache). Each session copies the source into a temp dir (nothing is written into
``shared/``), migrates a SQLite database (a migrated copy is cached beside the venv), creates one user with a few projects, each with a
fixed 32-character API key and ping key (``manage.py shell -c``), and runs
``manage.py runserver 127.0.0.1:PORT --noreload`` (without ``--noreload`` it forks and
outlives its PID) in its own clean environment: ``SITE_ROOT``/``PING_ENDPOINT`` name that
port, ``DEBUG=False``, ``PING_BODY_LIMIT`` as asked, and none of the machine's CA-bundle or
proxy variables.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
HOST_PYTHON = "/usr/bin/python3"
CACHE = Path(os.environ.get("JOBRUNNER_TEST_CACHE", "/var/cache/jobrunner-tests"))


def source_dir() -> Path:
    """The vendored server: ``$JOBRUNNER_HEALTHCHECKS_SRC``, else ``shared/vendor/healthchecks-v3.13``
    beside the repository or beside one of the directories above it (a clone may sit deeper)."""
    configured = os.environ.get("JOBRUNNER_HEALTHCHECKS_SRC", "").strip()
    if configured:
        return Path(configured)
    nearest = REPO.parent / "shared" / "vendor" / "healthchecks-v3.13"
    for parent in REPO.parents:
        candidate = parent / "shared" / "vendor" / "healthchecks-v3.13"
        if (candidate / "requirements.txt").is_file():
            return candidate
    return nearest


class HealthchecksUnavailable(RuntimeError):
    """What is missing to run the server (the fixture fails with it under JOBRUNNER_REQUIRE_*)."""


@contextlib.contextmanager
def _flocked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def venv(src: Path) -> Path:
    """The server's venv, built once per requirements file and Python (cached, under a flock)."""
    requirements = src / "requirements.txt"
    if not requirements.is_file():
        raise HealthchecksUnavailable(f"{requirements} not found (set JOBRUNNER_HEALTHCHECKS_SRC)")
    if not os.access(HOST_PYTHON, os.X_OK):
        raise HealthchecksUnavailable(f"{HOST_PYTHON} not found")
    version = subprocess.run(
        [HOST_PYTHON, "-c", "import sys, platform; print(sys.version, platform.machine())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    key = hashlib.sha256(requirements.read_bytes() + version.encode()).hexdigest()[:16]
    target = CACHE / f"healthchecks-{key}"
    with _flocked(CACHE / ".healthchecks.lock"):
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            log = CACHE / f"healthchecks-{key}.log"
            with open(log, "w") as out:
                steps = [
                    [HOST_PYTHON, "-m", "venv", str(target)],
                    [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(requirements)],
                ]
                for step in steps:
                    done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, env=_pip_env(), timeout=900)
                    if done.returncode != 0:
                        raise HealthchecksUnavailable(f"building the healthchecks venv failed: see {log}")
            (target / ".complete").write_text("ok\n")
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Projects made at start-up, handed out one per test (``HealthchecksServer.project``): each has
# its own checks, so a sync test that prunes sees only its own.
PROJECTS = 12
_SETUP = """
from django.contrib.auth.models import User
from hc.accounts.models import Profile, Project
user = User.objects.create(username="jobrunner", email="jobrunner@example.org")
profile = Profile.objects.for_user(user)
profile.check_limit = 1000
profile.ping_log_limit = 1000
profile.save()
for i in range({count}):
    Project.objects.create(
        owner=user, name=f"project-{{i}}", api_key=f"jobrunnertestkey{{i:016d}}", ping_key=f"jobrunner-ping-{{i:04d}}",
        badge_key=f"jobrunner-badge-{{i}}",
    )
print("ready")
"""


class Project:
    """A healthchecks project: its API key (32 characters), its ping key, and API helpers."""

    def __init__(self, server: HealthchecksServer, index: int) -> None:
        self.server = server
        self.api_key = f"jobrunnertestkey{index:016d}"
        assert len(self.api_key) == 32
        self.ping_key = f"jobrunner-ping-{index:04d}"

    @property
    def api_url(self) -> str:
        return f"{self.server.url}/api/v3/"

    def api(self, method: str, path: str, data: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One API call: ``(status, parsed JSON or text)``."""
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(self.api_url + path.lstrip("/"), data=body, method=method)
        request.add_header("X-Api-Key", self.api_key)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def checks(self) -> dict[str, dict[str, Any]]:
        """The project's checks by slug."""
        status, got = self.api("GET", "checks/")
        assert status == 200, got
        return {c["slug"]: c for c in got["checks"]}

    def create(self, **spec: Any) -> dict[str, Any]:
        status, got = self.api("POST", "checks/", spec)
        assert status in (200, 201), got
        return dict(got)

    def pings(self, uuid: str) -> list[dict[str, Any]]:
        """The check's pings, oldest first (the API lists them newest first)."""
        status, got = self.api("GET", f"checks/{uuid}/pings/")
        assert status == 200, got
        return list(reversed(got["pings"]))

    def body(self, uuid: str, n: int) -> str:
        status, got = self.api("GET", f"checks/{uuid}/pings/{n}/body")
        assert status == 200, got
        return str(got)

    def ping_url(self, slug: str) -> str:
        return f"{self.server.url}/ping/{self.ping_key}/{slug}"


class HealthchecksServer:
    """One running server (``url``); ``project()`` hands out a fresh project per call."""

    def __init__(self, work: Path, *, body_limit: int) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.body_limit = body_limit
        self.proc: subprocess.Popen[bytes] | None = None
        self._next = 0

    def env(self) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.work),
            "LANG": "C.UTF-8",
            "PYTHONPYCACHEPREFIX": str(self.work / "pycache"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SECRET_KEY": "jobrunner-tests-" + "x" * 32,
            "DEBUG": "False",
            "SITE_ROOT": self.url,
            "PING_ENDPOINT": f"{self.url}/ping/",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DB_NAME": str(self.work / "hc.sqlite"),
            "REGISTRATION_OPEN": "False",
            "PING_BODY_LIMIT": str(self.body_limit),
        }

    def _manage(self, python: Path, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [str(python), "manage.py", *args],
            cwd=self.work / "src",
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise HealthchecksUnavailable(f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _migrate(self, python: Path, src: Path) -> None:
        """The schema, from a cached migrated database when the migrations are the same
        (``manage.py migrate`` takes 10-30 s on a busy machine)."""
        digest = hashlib.sha256()
        for path in sorted(src.glob("hc/*/migrations/*.py")):
            digest.update(f"{path.relative_to(src)}:{path.stat().st_size}\n".encode())
        cached = python.parent.parent / f"migrated-{digest.hexdigest()[:16]}.sqlite"
        database = self.work / "hc.sqlite"
        if cached.is_file():
            shutil.copyfile(cached, database)
            return
        self._manage(python, "migrate", "--no-input", "-v", "0")
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(database, partial)
        os.replace(partial, cached)

    def start(self, src: Path) -> None:
        python = venv(src) / "bin" / "python"
        shutil.copytree(src, self.work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.sqlite"))
        for root, dirs, files in os.walk(self.work / "src"):  # the copy of a read-only tree is read-only
            for name in dirs + files:
                path = Path(root, name)
                path.chmod(path.stat().st_mode | 0o200)
        self._migrate(python, src)
        out = self._manage(python, "shell", "-c", _SETUP.format(count=PROJECTS))
        assert "ready" in out, out
        self.log = open(self.work / "server.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [str(python), "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            cwd=self.work / "src",
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HealthchecksUnavailable(f"runserver exited: {(self.work / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v3/status/", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise HealthchecksUnavailable(f"runserver did not answer within 60 s on {self.url}")

    def project(self) -> Project:
        if self._next >= PROJECTS:
            raise RuntimeError(f"all {PROJECTS} test projects are used: raise PROJECTS in {__file__}")
        self._next += 1
        return Project(self, self._next - 1)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if getattr(self, "log", None):
            self.log.close()


@contextlib.contextmanager
def running(body_limit: int = 4000) -> Iterator[HealthchecksServer]:
    """A server for the duration of the block, its temp dir removed afterwards."""
    src = source_dir()
    if not (src / "manage.py").is_file():
        raise HealthchecksUnavailable(f"the healthchecks source is not at {src} (set JOBRUNNER_HEALTHCHECKS_SRC)")
    work = Path(tempfile.mkdtemp(prefix="jobrunner-hc-"))
    server = HealthchecksServer(work, body_limit=body_limit)
    try:
        server.start(src)
        yield server
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # `python -m tests.healthchecks_server`: a server to try things by hand
    for number in (signal.SIGINT, signal.SIGTERM):  # also when started in the background (SIGINT ignored)
        signal.signal(number, _interrupt)
    with running() as hc:
        project = hc.project()
        print(f"{hc.url}  api key {project.api_key}  ping key {project.ping_key}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    sys.exit(0)
