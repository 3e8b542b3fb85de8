"""The attacker of the threat model (docs/security.md): a local, unprivileged user.

Tests of the security promises act as that user for real: ``attacker`` is a user created for
the test session (``jr-attacker``, removed at teardown), and ``www_data`` is Debian's site
user. ``as_user(user, argv)`` runs a command as that user (``setpriv``: real uid/gid, no
supplementary groups of root, no capabilities), so what it can and cannot do is what the
kernel allows it, not what a test pretends.

Both need root; as another user the fixtures skip with the reason (a failure in CI, where
``JOBRUNNER_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

ATTACKER = "jr-attacker"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> User:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid)


def as_user(
    user: User,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    cwd: str = "/",
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` (real and effective ids, its own groups) and wait for it."""
    cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--", *argv]
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})}, cwd=cwd, input=input
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"as {user.name}: {argv!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_as_user(
    user: User, argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str = "/"
) -> subprocess.Popen[str]:
    """Start ``argv`` as ``user`` in its own session; the caller stops it (``conftest.stop_group``)."""
    cmd = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "--", *argv]
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")


@pytest.fixture(scope="session")
def attacker() -> Iterator[User]:
    """A throwaway unprivileged local user with no rights to anything of root's."""
    _require_root()
    created = False
    try:
        pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                ATTACKER,
            ],
            check=True,
        )
        created = True
    try:
        yield User.named(ATTACKER)
    finally:
        if created:
            subprocess.run(["userdel", ATTACKER], check=False)


@pytest.fixture(scope="session")
def www_data() -> User:
    """Debian's site user: what a vulnerable plugin runs as."""
    _require_root()
    return User.named("www-data")


@dataclass(frozen=True)
class SharedTree:
    """A place a test user can traverse (pytest's tmp dirs are root's 0700): ``base`` (0755)
    holding ``jobs/<module>.py`` (0644), the user's own ``home`` (0700, the user's) and root's
    env file ``root_env`` (0600, as docs/fleets.md says)."""

    base: str
    jobs: str
    home: str
    root_env: str


def shared_tree(user: User, module: str, source: str, root_env: str, *, prefix: str) -> SharedTree:
    """Make a ``SharedTree`` under ``/tmp/<prefix>…`` with ``source`` as the job module and
    ``root_env`` as root's env file; the caller removes ``base``. Nothing is left behind when
    making it fails."""
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    try:
        os.chmod(base, 0o755)
        jobs = os.path.join(base, "jobs")
        os.mkdir(jobs, 0o755)
        with open(os.path.join(jobs, f"{module}.py"), "w") as handle:
            handle.write(textwrap.dedent(source))
        os.chmod(os.path.join(jobs, f"{module}.py"), 0o644)
        home = os.path.join(base, "www")
        os.mkdir(home, 0o700)
        os.chown(home, user.uid, user.gid)
        env_path = os.path.join(base, "jobrunner.env")
        fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, root_env.encode())
        os.close(fd)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return SharedTree(base, jobs, home, env_path)
