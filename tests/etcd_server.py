"""A real etcd 3.4 for the etcd lease tests, never installed as a service.

Debian's ``etcd-server`` package is fetched with ``apt-get download`` and unpacked with
``dpkg-deb -x`` into the tests' cache (``tests/debian_packages.py``); ``EtcdServer`` runs its
``/usr/bin/etcd`` as a one-member cluster on 127.0.0.1, two free ports and a data directory
of the test's own, and can be SIGKILLed and started again on the same ports and data (its
revisions and leases survive, as in production).
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import wait_for
from .debian_packages import DebianPackages, debian

__all__ = ["EtcdServer", "debian", "etcd_bin", "etcd_server", "free_port", "own_etcd"]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EtcdServer:
    """``etcd`` on 127.0.0.1: ``url`` is the lease URL (``etcd://127.0.0.1:PORT``)."""

    def __init__(self, binary: Path, workdir: Path, *, auth_token_ttl: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port, self.peer = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.auth_token_ttl = auth_token_ttl  # seconds a simple token lives unused (etcd's default: 300)
        self.token: str | None = None  # root's, once auth is enabled: every helper call sends it

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.port}"

    def start(self) -> EtcdServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{self.peer}"
        argv = [
            str(self.binary),
            "--name=t",
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
            "--initial-cluster-state=new",
        ]
        if self.auth_token_ttl is not None:
            argv.append(f"--auth-token-ttl={self.auth_token_ttl}")
        log = open(self.workdir / "etcd.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

        def answers() -> bool:
            try:
                return self.call("/v3/kv/range", {"key": "eA=="}) is not None
            except (OSError, ValueError):
                return False

        assert wait_for(answers, 20, interval=0.05), (
            f"etcd did not start on port {self.port}: {(self.workdir / 'etcd.log').read_text()[-2000:]}"
        )
        return self

    def call(self, path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        """One gateway call (root's token when auth is on, unless ``token`` is given; "" for none)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(), method="POST"
        )
        token = self.token if token is None else token
        if token:
            request.add_header("Authorization", token)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer: dict[str, Any] = json.loads(response.read().splitlines()[0])
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read().splitlines()[0])
        if self.token and token == self.token and "invalid auth token" in str(answer.get("error", "")):
            self.token = self.authenticate("root", self.root_password)  # expired between calls (--auth-token-ttl)
            return self.call(path, body)
        return answer.get("result", answer)

    root_password = "root-etcd-pw-5d2"

    def authenticate(self, name: str, password: str) -> str:
        answer = self.call("/v3/auth/authenticate", {"name": name, "password": password}, token="")
        assert "token" in answer, answer
        return str(answer["token"])

    def enable_auth(self, users: dict[str, tuple[str, str | None]]) -> None:
        """Users and roles as docs/fleets.md sets them up, then ``auth enable``: ``root`` (role
        ``root``, every key) and, for each ``name: (password, prefix)``, a user of that name with
        a role of its own allowed readwrite on keys under ``prefix`` only (none when ``None``)."""

        def ok(path: str, body: dict[str, Any]) -> None:
            answer = self.call(path, body)
            assert "error" not in answer, (path, answer)

        ok("/v3/auth/user/add", {"name": "root", "password": self.root_password})
        ok("/v3/auth/user/grant", {"user": "root", "role": "root"})
        for name, (password, prefix) in users.items():
            ok("/v3/auth/user/add", {"name": name, "password": password})
            ok("/v3/auth/role/add", {"name": name})
            if prefix is not None:
                end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                perm = {"permType": "READWRITE", "key": _b64(prefix), "range_end": _b64(end)}
                ok("/v3/auth/role/grant", {"name": name, "perm": perm})
            ok("/v3/auth/user/grant", {"user": name, "role": name})
        ok("/v3/auth/enable", {})
        self.token = self.authenticate("root", self.root_password)

    def get(self, key: str) -> dict[str, Any] | None:
        """The key's record (``value`` decoded, revisions and lease as etcd gives them)."""
        kvs = self.call("/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs")
        if not kvs:
            return None
        kv = dict(kvs[0])
        kv["value"] = base64.b64decode(kv.get("value", "")).decode()
        return kv

    def delete(self, key: str) -> None:
        self.call("/v3/kv/deleterange", {"key": base64.b64encode(key.encode()).decode()})

    def keys(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` and its value."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()}
        kvs = self.call("/v3/kv/range", body).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode() for kv in kvs}

    def leases(self) -> set[str]:
        """The IDs of every lease etcd holds (``/v3/lease/leases``)."""
        return {lease["ID"] for lease in self.call("/v3/lease/leases", {}).get("leases") or []}

    def granted_ttl(self, lease_id: str) -> int:
        """The TTL a lease was granted with, in seconds (-1 when etcd no longer knows it)."""
        answer = self.call("/v3/lease/timetolive", {"ID": lease_id})
        return int(answer.get("grantedTTL", -1)) if int(answer.get("TTL", -1)) > 0 else -1

    def ttl(self, lease_id: str) -> int:
        """Seconds left of a lease (-1 when etcd no longer knows it)."""
        return int(self.call("/v3/lease/timetolive", {"ID": lease_id}).get("TTL", -1))

    def kill(self) -> float:
        """SIGKILL the server; return the monotonic time it was killed."""
        assert self.proc is not None
        killed = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None
        return killed

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="session")
def etcd_bin(debian: DebianPackages) -> Path:
    """Debian's etcd 3.4 binary, unpacked from ``etcd-server`` (fetched once, cached)."""
    path = debian.root("etcd-server") / "usr" / "bin" / "etcd"
    assert path.is_file(), "etcd-server has no usr/bin/etcd"
    return path


@pytest.fixture(scope="session")
def etcd_server(etcd_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One etcd for the session's tests that do not kill it."""
    server = EtcdServer(etcd_bin, tmp_path_factory.mktemp("etcd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_etcd(etcd_bin: Path, tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own, free to be killed and restarted."""
    server = EtcdServer(etcd_bin, tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()
