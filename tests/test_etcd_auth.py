"""etcd with users and roles (the counterpart of tests/test_fleet_acl.py's Redis ACLs), on a real
etcd 3.4 with auth enabled through its gateway, as docs/fleets.md tells an admin to: root's runs
authenticate as etcd's ``root``; www-data's as a user whose role may read and write
``jobrunner/u/www-data/`` alone. As the attacker (a real ``jobrunner run`` as www-data, with
every credential it can read), root's lease and firing keys are refused by etcd itself.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobrunner.declaration import Lock, _check_etcd
from jobrunner.errors import ConfigError
from jobrunner.locks.etcd import acquire_etcd_lease, etcd_credentials, etcd_endpoint, key_prefix
from jobrunner.redact import default_redactor

from .attacker import as_user, shared_tree, www_data
from .etcd_server import EtcdServer, debian, etcd_bin

__all__ = ["debian", "etcd_bin", "www_data"]  # fixtures, re-exported for pytest

WWW_PW = "www-etcd-pw-8e4"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **kw: self.events.append((level, event, kw))


@pytest.fixture
def auth_etcd(etcd_bin: Path, tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd of this test's own with auth on: ``root`` and ``www-data`` (readwrite on
    ``jobrunner/u/www-data/`` only); a token lives 1 s unused (``--auth-token-ttl=1``)."""
    server = EtcdServer(etcd_bin, tmp_path / "etcd", auth_token_ttl=1).start()
    try:
        server.enable_auth({"www-data": (WWW_PW, "jobrunner/u/www-data/")})
        yield server
    finally:
        server.stop()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def lease_job(name: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, lock_name=None, kill_grace=0, schedule=None)


# -- the URL and the credentials --------------------------------------------------------------


@given(st.text(max_size=40))
@example("u:secret@h:2379")
@example(":secret@h")
@example("u@h")
@example("u:@h:1")
@example("h:99999")
@example("h/prefix")
@example("@h")
def test_the_declaration_and_the_backend_accept_the_same_etcd_urls(rest):
    url = "etcd://" + rest
    try:
        _check_etcd(url)
    except ValueError as exc:
        declared = str(exc)
    else:
        declared = None
    try:
        etcd_endpoint(url)
    except ConfigError as exc:
        backend = str(exc)
    else:
        backend = None
    assert (declared is None) == (backend is None), (url, declared, backend)
    for message in (declared, backend):
        assert message is None or ("\n" not in message and "secret" not in message)


def test_credentials_come_from_the_url_percent_decoded_or_the_env_file():
    assert Lock(url="etcd://www-data:p%40ss%3Aw0rd@h:2379").backend == "etcd"
    assert etcd_credentials("etcd://www-data:p%40ss%3Aw0rd@h:2379", {}) == ("www-data", "p@ss:w0rd")
    assert etcd_credentials("etcd://h:2379", {}) is None
    env = {"JOBRUNNER_ETCD_USER": "www-data", "JOBRUNNER_ETCD_PASSWORD": "from-env-pw"}
    assert etcd_credentials("etcd://h:2379", env) == ("www-data", "from-env-pw")
    assert etcd_credentials("etcd://other@h", env) == ("other", "from-env-pw")  # the URL's user, env's password
    assert etcd_credentials("etcd://u:in-url@h", env) == ("u", "in-url")
    with pytest.raises(ConfigError, match="set JOBRUNNER_ETCD_PASSWORD"):
        etcd_credentials("etcd://www-data@h", {})
    with pytest.raises(ConfigError, match="set JOBRUNNER_ETCD_USER") as caught:
        etcd_credentials("etcd://h", {"JOBRUNNER_ETCD_PASSWORD": "lonely-pw-1"})
    assert "lonely-pw-1" not in str(caught.value)
    assert "from-env-pw" not in default_redactor().redact("pw from-env-pw")  # registered: masked everywhere
    with pytest.raises(ValueError, match="password needs its user"):
        Lock(url="etcd://:secret@h")


def test_a_non_root_users_keys_live_under_its_own_prefix():
    assert key_prefix(0) == "jobrunner/"
    assert key_prefix(33) == "jobrunner/u/www-data/"
    assert key_prefix(4_000_000_123) == "jobrunner/u/4000000123/"


# -- in process, against etcd with auth ---------------------------------------------------------


def test_a_lease_outlives_its_token_and_every_call_carries_one(auth_etcd):
    """The lease's renewals come 2 s apart, the token dies after 1 s unused: each renewal
    authenticates again and the lease is kept; every call through a recording proxy had a token."""
    seen: list[tuple[str, str | None]] = []
    proxy = RecordingProxy(auth_etcd.port, seen)
    name = f"tok-{uuid.uuid4().hex[:8]}"
    env = {"JOBRUNNER_ETCD_USER": "root", "JOBRUNNER_ETCD_PASSWORD": auth_etcd.root_password}
    lost: list[str] = []
    try:
        os.environ.update(env)
        lease = acquire_etcd_lease(
            lease_job(name), Lock(url=f"etcd://127.0.0.1:{proxy.port}", ttl="6s"), Recorder(), lost.append
        )
        first = lease._gateway.token
        time.sleep(4.6)
        assert lease.held and lease.renewals >= 2 and not lost
        assert lease._gateway.token != first  # the expired token was replaced
        record = auth_etcd.get(f"jobrunner/lock/{name}")
        assert record is not None and record["lease"] == lease.lease_id
        lease.release()
        assert auth_etcd.get(f"jobrunner/lock/{name}") is None
    finally:
        for var in env:
            os.environ.pop(var, None)
        proxy.close()
    paths = {path for path, _ in seen}
    assert {"/v3/lease/grant", "/v3/kv/txn", "/v3/kv/range", "/v3/lease/keepalive", "/v3/lease/revoke"} <= paths
    untokened = [path for path, token in seen if not token and path != "/v3/auth/authenticate"]
    assert untokened == [], untokened
    assert sum(path == "/v3/auth/authenticate" for path, _ in seen) >= 3


def test_wrong_credentials_or_a_role_without_the_prefix_are_one_line_exit_78(auth_etcd):
    url = f"etcd://127.0.0.1:{auth_etcd.port}"
    with pytest.raises(ConfigError) as caught:
        acquire_etcd_lease(
            lease_job("x"), Lock(url=f"etcd://www-data:wrong-pw-3a9@127.0.0.1:{auth_etcd.port}"), Recorder(), print
        )
    assert "refused our credentials" in str(caught.value) and "wrong-pw-3a9" not in str(caught.value)
    assert caught.value.exit_code == 78
    with pytest.raises(ConfigError, match="has auth enabled: set JOBRUNNER_ETCD_USER"):
        acquire_etcd_lease(lease_job("x"), Lock(url=url), Recorder(), print)
    # root's process with www-data's credentials: its keys are root's, which that role may not write
    with pytest.raises(ConfigError, match="etcd user 'www-data' may not write jobrunner/: grant its role"):
        acquire_etcd_lease(
            lease_job("x"), Lock(url=f"etcd://www-data:{WWW_PW}@127.0.0.1:{auth_etcd.port}"), Recorder(), print
        )
    assert auth_etcd.leases() == set()  # nothing leaked


class RecordingProxy:
    """A real HTTP forwarder on 127.0.0.1 in front of etcd's gateway, recording each request's
    path and ``Authorization`` header (etcd 3.4 itself does not check a token on every call)."""

    def __init__(self, target: int, seen: list[tuple[str, str | None]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                token = self.headers.get("Authorization")
                seen.append((self.path, token))
                upstream = http.client.HTTPConnection("127.0.0.1", target, timeout=10)
                headers = {"Content-Type": "application/json", **({"Authorization": token} if token else {})}
                upstream.request("POST", self.path, body, headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- end to end: www-data as the attacker ---------------------------------------------------------

E2E_JOBS = """
    import base64, http.client, json, os, time
    from jobrunner import job, Lock

    URL = os.environ["ETCD_URL"]

    @job(schedule="*:0/5", lock=Lock(url=URL, ttl="3s"), network=True)
    def backup(ctx):
        with open(ctx.env["LEDGER"], "a") as handle:
            handle.write(f"in {time.monotonic()}\\n")
        time.sleep(float(ctx.env.get("HOLD", "0")))

    @job(schedule="*:0/5", user="www-data", lock=Lock(url=URL, ttl="3s"), network=True)
    def wp_cron(ctx):
        b64 = lambda text: base64.b64encode(text.encode()).decode()
        host, port = URL[len("etcd://"):].split(":")

        def call(path, body, token):
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("POST", path, json.dumps(body), {"Authorization": token} if token else {})
            answer = json.loads(conn.getresponse().read().splitlines()[0])
            conn.close()
            return answer

        files = {}
        try:
            open(os.environ["ROOT_ENV"]).read()
            files["root_env"] = "read"
        except OSError as exc:
            files["root_env"] = type(exc).__name__
        user, password = os.environ["JOBRUNNER_ETCD_USER"], os.environ["JOBRUNNER_ETCD_PASSWORD"]
        token = call("/v3/auth/authenticate", {"name": user, "password": password}, None)["token"]
        lock, firing = "jobrunner/lock/backup", "jobrunner/firing/backup:" + os.environ["ELAPSE"]
        attempts = {
            "delete lock": ("/v3/kv/deleterange", {"key": b64(lock)}),
            "put lock": ("/v3/kv/put", {"key": b64(lock), "value": b64("www:1:x")}),
            "put firing": ("/v3/kv/put", {"key": b64(firing), "value": b64("www:1:x")}),
            "delete firings": ("/v3/kv/deleterange", {"key": b64("jobrunner/firing/"), "range_end": b64("jobrunner/firing0")}),
            "txn lock": ("/v3/kv/txn", {"success": [{"request_delete_range": {"key": b64(lock)}}]}),
        }
        replies = {what: call(path, body, token).get("error") for what, (path, body) in attempts.items()}
        replies["anonymous put"] = call("/v3/kv/put", {"key": b64(lock), "value": b64("x")}, None).get("error")
        own = call("/v3/kv/range", {"key": b64("jobrunner/u/www-data/lock/wp_cron")}, token)
        with open(os.environ["OUT"], "w") as handle:
            json.dump({"files": files, "replies": replies, "own": own.get("kvs")}, handle)
"""


@pytest.mark.slow
def test_www_data_takes_its_own_lease_and_cannot_touch_roots(auth_etcd, tmp_path, www_data):
    """``jobrunner run`` as www-data (setpriv, as systemd's ``User=www-data``), its credentials
    in its environment: takes ``jobrunner/u/www-data/lock/wp_cron``; from inside that run, with
    its token, deleting or putting root's lease key, a firing of root's job, or a transaction
    on root's key is ``permission denied``, without a token ``user name is empty``; root's run,
    holding its lease meanwhile, keeps it and runs once. A wrong password is one line, exit 78."""
    from .conftest import REPO, clean_env

    www = www_data
    url = f"etcd://127.0.0.1:{auth_etcd.port}"
    tree = shared_tree(
        www, "etcdjobs", E2E_JOBS, f"JOBRUNNER_ETCD_PASSWORD={auth_etcd.root_password}\n", prefix="jr-etcd-"
    )
    base, jobs, www_home, root_env = tree.base, tree.jobs, tree.home, tree.root_env
    root_proc = None
    try:
        ledger = tmp_path / "ledger"
        root_vars = clean_env(
            PYTHONPATH=str(REPO),
            ETCD_URL=url,
            JOBRUNNER_ETCD_USER="root",
            JOBRUNNER_ETCD_PASSWORD=auth_etcd.root_password,
            JOBRUNNER_PATH=jobs,
            JOBRUNNER_STATE_DIR=str(tmp_path / "state"),
            JOBRUNNER_LOCK_DIR=str(tmp_path / "locks"),
            JOBRUNNER_LOG_FORMAT="json",
            LEDGER=str(ledger),
            HOLD="4",
        )
        root_proc = subprocess.Popen(
            [sys.executable, "-m", "jobrunner", "run", "etcdjobs:backup"],
            env=root_vars,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        deadline = time.monotonic() + 15
        while auth_etcd.get("jobrunner/lock/backup") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        held = auth_etcd.get("jobrunner/lock/backup")
        assert held is not None, "root's run took no lease"
        elapse = "1796609700"  # any firing of root's job: its key is under root's prefix

        out = os.path.join(www_home, "out.json")
        www_env = {
            "PYTHONPATH": str(REPO),
            "JOBRUNNER_JOBS_DIR": "",
            "ETCD_URL": url,
            "JOBRUNNER_ETCD_USER": "www-data",
            "JOBRUNNER_ETCD_PASSWORD": WWW_PW,
            "JOBRUNNER_PATH": jobs,
            "JOBRUNNER_STATE_DIR": os.path.join(www_home, "state"),
            "JOBRUNNER_LOCK_DIR": os.path.join(www_home, "locks"),
            "JOBRUNNER_LOG_FORMAT": "json",
            "ROOT_ENV": root_env,
            "OUT": out,
            "ELAPSE": elapse,
        }
        run = as_user(www, [sys.executable, "-m", "jobrunner", "run", "etcdjobs:wp_cron"], env=www_env, cwd=www_home)
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        acquired = next(e for e in events if e["event"] == "lock.acquired")
        assert acquired["key"] == "jobrunner/u/www-data/lock/wp_cron"
        assert WWW_PW not in run.stdout + run.stderr
        with open(out) as handle:
            tried = json.load(handle)
        assert tried["files"] == {"root_env": "PermissionError"}
        assert tried["own"], "its own lease key was not readable from its run"
        replies = tried["replies"]
        assert replies.pop("anonymous put") == "etcdserver: user name is empty"
        assert replies and set(replies.values()) == {"etcdserver: permission denied"}, replies

        stdout, stderr = root_proc.communicate(timeout=30)
        assert root_proc.returncode == 0, stdout + stderr
        assert "lock.lost" not in stdout and auth_etcd.root_password not in stdout + stderr
        assert ledger.read_text().count("in ") == 1  # ran once
        # root's key was root's throughout: the same create revision on the same lease until released
        after = [json.loads(line) for line in stdout.splitlines() if '"lock.acquired"' in line]
        assert after and int(after[0]["fencing_token"]) == int(held["create_revision"])
        assert auth_etcd.get("jobrunner/lock/backup") is None

        # a wrong password: one line, exit 78, no traceback, the password nowhere
        bad = as_user(
            www,
            [sys.executable, "-m", "jobrunner", "run", "etcdjobs:wp_cron"],
            env={**www_env, "JOBRUNNER_ETCD_PASSWORD": "not-the-pw-71c"},
            cwd=www_home,
            check=False,
        )
        assert bad.returncode == 78, bad.stdout + bad.stderr
        assert "Traceback" not in bad.stdout + bad.stderr
        assert "not-the-pw-71c" not in bad.stdout + bad.stderr
        logs = "".join(p.read_text(errors="replace") for p in Path(www_home).rglob("*") if p.is_file())
        assert "not-the-pw-71c" not in logs
        assert "refused our credentials" in bad.stdout + bad.stderr
    finally:
        if root_proc is not None and root_proc.poll() is None:
            root_proc.kill()
            root_proc.wait(10)
        shutil.rmtree(base, ignore_errors=True)
