"""Fleet trust on a real Redis 7 with ACLs (issue #25, finding 3): root's runs publish and lease
as a Redis user whose password only root can read; a non-root job's user may write only its own
namespace (``jobrunner:u:<user>:*``); readers believe a record about a job only from the writer
that job's user may be; a foreign or stale lease on a root job's key is a warning naming the
holder, and ``health`` reports it."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner.fleet import stream as fleet
from jobrunner.locks.resp import RespError, call, key_prefix
from jobrunner.store.history import RunRecord

from .test_redislock import RedisServer

redis = pytest.importorskip("redis")

# The lines docs/fleets.md tells an admin to paste (passwords aside).
ROOT_ACL = (
    "jobrunner on >{root_pw} resetkeys ~jobrunner:* resetchannels -@all "
    "+@connection +@read +@write +@scripting +info +time"
)
USER_ACL = (
    "jobrunner-{user} on >{user_pw} resetkeys ~jobrunner:u:{user}:* resetchannels -@all "
    "+@connection +get +set +del +incr +pttl +pexpire +xadd +hset +hincrby +zadd "
    "+eval +evalsha +script|load +info +time"
)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, str, str]]:
    server = RedisServer(tmp_path / "redis").start()
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", *ROOT_ACL.format(root_pw="root-pw-9f3").split())
    admin.execute_command("ACL", "SETUSER", *USER_ACL.format(user="www-data", user_pw="www-pw-2c1").split())
    # a monitoring host's user: read only, no scripts
    admin.execute_command(
        "ACL", "SETUSER", "monitor", "on", ">mon-pw-77", "resetkeys", "~jobrunner:*", "-@all", "+@connection", "+@read"
    )
    # the default user: no keys, no commands but a PING (what a stranger without a password gets)
    admin.execute_command("ACL", "SETUSER", "default", "resetkeys", "-@all", "+ping", "+info", "+auth", "+hello")
    root = f"redis://jobrunner:root-pw-9f3@127.0.0.1:{server.port}/0"
    www = f"redis://jobrunner-www-data:www-pw-2c1@127.0.0.1:{server.port}/0"
    try:
        yield server, root, www
    finally:
        server.stop()


def test_www_data_with_every_credential_it_can_read_cannot_change_roots_verdict(acl_redis):
    server, root, www = acl_redis
    now = time.time()
    for i in range(3):
        fleet.publish(root, RunRecord("backup", "web1", f"{i:032x}", now - 300 + i, 2.0, "failure", 1, 1))
    owners = {"backup": "root", "wp_cron": "www-data"}

    def verdict() -> tuple[str, list[str], int]:
        from jobrunner.observe.health import NAMES

        view = fleet.read_view(root, owners=owners)
        h = {v.job: v for v in fleet.check_fleet(view, now=time.time())}["backup"]
        return NAMES[h.status], h.reasons, view.untrusted

    assert verdict()[:2] == ("CRITICAL", ["failing on 1 of 1 hosts: web1 (3 in a row)"])
    forged = RunRecord("backup", "web1", "f" * 32, now, 1.0, "success", 0, 1)
    # into root's keys: refused by Redis itself
    for stream in ("jobrunner:runs",):
        with pytest.raises(RespError, match="NOPERM"):
            fleet.publish(www, forged, stream=stream)
    replies = call(www, [("SET", "jobrunner:lock:backup", "www:1:x", "EX", "86400")], timeout=2)
    assert isinstance(replies[0], RespError) and "NOPERM" in str(replies[0])
    # without a password at all: nothing
    anon = f"redis://127.0.0.1:{server.port}/0"
    assert isinstance(call(anon, [("XADD", "jobrunner:runs", "*", "r", "{}")], timeout=2)[0], RespError)
    # into its own namespace: taken, but not believed about root's job
    fleet.publish(www, forged, stream=fleet.user_stream(33))
    # ... and about a host root has no record of (a success of root's job "on web2")
    fleet.publish(www, RunRecord("backup", "web2", "e" * 32, now, 1.0, "success", 0, 1), stream=fleet.user_stream(33))
    status, reasons, untrusted = verdict()
    assert (status, reasons) == ("CRITICAL", ["failing on 1 of 1 hosts: web1 (3 in a row)"]) and untrusted == 2
    # its own job is its own: believed
    fleet.publish(www, RunRecord("wp_cron", "web1", "c" * 32, now, 1.0, "success", 0, 1), stream=fleet.user_stream(33))
    view = fleet.read_view(root, owners=owners)
    assert view.cells[("web1", "wp_cron")].last.outcome == "success"
    # an undeclared job that root publishes is root's: the same forgery is refused without owners
    unowned = fleet.read_view(root)
    assert unowned.cells[("web1", "backup")].last.outcome == "failure" and ("web2", "backup") not in unowned.cells


def test_the_acl_users_can_do_what_their_runs_do(acl_redis):
    """Root's user leases and publishes; the restricted user leases and publishes in its own
    namespace (the lease's scripts, fence and firing included)."""
    import types

    from jobrunner.declaration import Lock
    from jobrunner.locks.redis import acquire_redis_lock

    from .test_redislock import Recorder

    server, root, www = acl_redis
    server.settle(2)
    job = types.SimpleNamespace(name="nightly", lock_name=None, kill_grace=0)
    lease = acquire_redis_lock(job, Lock(redis=root, ttl="2s"), Recorder(), on_lost=lambda r: None)
    assert lease.key == "jobrunner:lock:nightly" and lease.fencing_token
    time.sleep(1.0)  # a renewal (extend's script) as the restricted user too
    assert lease.held and lease.renewals >= 1
    lease.release()
    assert key_prefix(33) == "jobrunner:u:www-data:"
    ns = key_prefix(33)
    keys = [f"{ns}lock:wp_cron", f"{ns}fence:wp_cron"]
    script = "return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', 2000)"
    ok = call(www, [("EVAL", script, "2", *keys, "web1:1:abc"), ("INCR", keys[1]), ("DEL", keys[0])], timeout=2)
    assert not [r for r in ok if isinstance(r, RespError)], ok
    fleet.publish(www, RunRecord("wp_cron", "web1", "d" * 32, time.time(), 1.0, "failure", 1, 1), stream=f"{ns}runs")


def test_acl_cost_per_run(tmp_path: Path, capsys):
    """What the ACL setup costs a run: publishing as a named user with a password (AUTH
    user pass) against the same commands with no AUTH at all."""
    server = RedisServer(tmp_path / "redis").start()
    server.client().execute_command("ACL", "SETUSER", *ROOT_ACL.format(root_pw="root-pw-9f3").split())
    root = f"redis://jobrunner:root-pw-9f3@127.0.0.1:{server.port}/0"
    plain = f"redis://127.0.0.1:{server.port}/0"
    record = RunRecord("j", "web1", "e" * 32, time.time(), 1.0, "success", 0, 1)

    def timed(url: str) -> float:
        out = []
        for _ in range(200):
            began = time.perf_counter()
            fleet.publish(url, record)
            out.append(time.perf_counter() - began)
        return statistics.median(out)

    with_acl, without = [], []
    for _ in range(3):
        with_acl.append(timed(root))
        without.append(timed(plain))
    cost = (min(with_acl) - min(without)) * 1000
    server.stop()
    with capsys.disabled():
        print(
            json.dumps(
                {"publish_ms_acl": round(min(with_acl) * 1000, 3), "publish_ms_plain": round(min(without) * 1000, 3)}
            )
        )
    assert cost < 2.0  # one AUTH in the same write: well under a millisecond on localhost


def test_a_reader_without_scripts_sees_the_same_views(acl_redis):
    """A monitoring user that may only read (no EVAL): the views come through plain reads,
    the same cells and verdicts."""
    server, root, www = acl_redis
    now = time.time()
    fleet.publish(root, RunRecord("backup", "web1", "a" * 32, now - 60, 2.0, "failure", 1, 1))
    fleet.publish(root, RunRecord("backup", "web2", "b" * 32, now - 50, 2.0, "skipped", 75, 0))
    fleet.publish(
        www, RunRecord("wp_cron", "web1", "c" * 32, now - 40, 1.0, "success", 0, 1), stream=fleet.user_stream(33)
    )
    monitor = f"redis://monitor:mon-pw-77@127.0.0.1:{server.port}/0"
    refused = call(monitor, [("EVAL", "return 1", "0")], timeout=2)[0]
    assert isinstance(refused, RespError) and "NOPERM" in str(refused)
    a = fleet.read_view(root, history=True)
    b = fleet.read_view(monitor, history=True)
    assert fleet.matrix(a) == fleet.matrix(b) and len(fleet.matrix(a)) == 3
    assert [r.run_id for r in a.records] == [r.run_id for r in b.records]
    # and each command's subset of the views (history: seen and streak; status: no successes)
    for parts in (frozenset({"seen", "streak"}), fleet.ALL_PARTS - {"ok"}):
        a, b = fleet.read_view(root, parts=parts), fleet.read_view(monitor, parts=parts)
        assert fleet.matrix(a) == fleet.matrix(b) and len(a.cells) == 3
        assert all(c.ok_at is None for c in a.cells.values())


# Root's job and www-data's, in one package both read: root's fails, www-data's (run by
# www-data, as systemd's User=www-data would) tries everything it can with what it can read.
E2E_JOBS = """
    import json, os, time
    from jobrunner import job, Lock

    @job(lock=Lock(redis=True, ttl="3s"), network=True)
    def backup(ctx):
        raise RuntimeError("disk full")

    @job(schedule="*:0/5", user="www-data", lock=Lock(redis=True, ttl="3s"), network=True)
    def wp_cron(ctx):
        from jobrunner.fleet.stream import publish, user_stream
        from jobrunner.locks.resp import call
        from jobrunner.store.history import RunRecord

        urls, files = [os.environ["JOBRUNNER_REDIS_URL"]], {}
        for path in (os.environ["ROOT_ENV"],):  # root's credentials, if this user could read them
            try:
                with open(path) as handle:
                    urls += [line.split("=", 1)[1].strip() for line in handle if "=" in line]
                files[path] = "read"
            except OSError as exc:
                files[path] = type(exc).__name__
        host = os.uname().nodename
        forged = RunRecord("backup", host, "f" * 32, time.time(), 1.0, "success", 0, 1)
        payload = json.dumps(forged.to_dict())
        attempts = [
            ("SET", "jobrunner:lock:backup", host + ":1:x", "PX", "86400000"),
            ("XADD", "jobrunner:runs", "*", "r", payload),
            ("HSET", "jobrunner:runs:brief", host + "\\tbackup", f"{time.time()} 1.0 success 0 1"),
            ("HSET", "jobrunner:runs:streak", host + "\\tbackup", "0"),
            ("DEL", "jobrunner:runs:streak"),
            ("EVAL", "return redis.call('set', KEYS[1], 'x')", "1", "jobrunner:lock:backup"),
        ]
        replies = {}
        for url in urls:
            for command in attempts:
                replies[" ".join(command[:2])] = str(call(url, [command], timeout=2)[0])
        # and in its own namespace, which it may write: a success of root's job
        publish(urls[0], forged, stream=user_stream())
        with open(os.environ["OUT"], "w") as handle:
            json.dump({"files": files, "replies": replies}, handle)
"""


@pytest.mark.slow
def test_a_www_data_run_publishes_its_own_record_and_cannot_change_roots_verdict_or_lease(acl_redis, www_data):
    """Issue #25 finding 3, end to end: ``jobrunner run`` as www-data (its env file's URL, the
    restricted Redis user) leases and publishes in its own namespace, and root's views show its
    job; the same process, with every credential it can read (root's env file it cannot), gets
    NOPERM for root's lease key, stream and views, and what it writes about root's job in its
    own namespace is not believed: root's ``health --fleet`` stays CRITICAL (3 in a row), and
    root's next run takes root's lease."""
    import os
    import shutil
    import sys
    import tempfile
    import textwrap

    from .attacker import as_user, shared_tree
    from .conftest import REPO, clean_env, jobrunner_cli

    server, root_url, www_url = acl_redis
    server.settle(3)
    tree = shared_tree(www_data, "e2ejobs", E2E_JOBS, f"JOBRUNNER_REDIS_URL={root_url}\n", prefix="jr-e2e-")
    base, jobs, www_home, root_env = tree.base, tree.jobs, tree.home, tree.root_env
    try:
        root_state = os.path.join(base, "root")
        os.mkdir(root_state, 0o700)
        root_env_vars = {
            "JOBRUNNER_REDIS_URL": root_url,
            "JOBRUNNER_PATH": jobs,
            "JOBRUNNER_STATE_DIR": os.path.join(root_state, "state"),
            "JOBRUNNER_LOCK_DIR": os.path.join(root_state, "locks"),
            "JOBRUNNER_LOG_FORMAT": "json",
        }

        def root_cli(*args: str):
            return jobrunner_cli(*args, **root_env_vars)

        for _ in range(3):
            failed = root_cli("run", "e2ejobs:backup")
            assert failed.returncode == 1 and "fleet.publish_failed" not in failed.stdout + failed.stderr

        out = os.path.join(www_home, "out.json")
        www_env = {
            "PYTHONPATH": str(REPO),
            "JOBRUNNER_JOBS_DIR": "",
            "JOBRUNNER_REDIS_URL": www_url,
            "JOBRUNNER_PATH": jobs,
            "JOBRUNNER_STATE_DIR": os.path.join(www_home, "state"),
            "JOBRUNNER_LOCK_DIR": os.path.join(www_home, "locks"),
            "JOBRUNNER_LOG_FORMAT": "json",
            "ROOT_ENV": root_env,
            "OUT": out,
        }
        run = as_user(
            www_data, [sys.executable, "-m", "jobrunner", "run", "e2ejobs:wp_cron"], env=www_env, cwd=www_home
        )
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        names = [e["event"] for e in events]
        assert "fleet.publish_failed" not in names, run.stdout
        acquired = next(e for e in events if e["event"] == "lock.acquired")
        assert acquired["key"] == "jobrunner:u:www-data:lock:wp_cron"
        assert "www-pw-2c1" not in run.stdout + run.stderr
        with open(out) as handle:
            tried = json.load(handle)
        assert tried["files"] == {root_env: "PermissionError"}
        assert len(tried["replies"]) == 6 and all("NOPERM" in r for r in tried["replies"].values()), tried

        admin = redis.Redis(host="127.0.0.1", port=server.port, username="jobrunner", password="root-pw-9f3")
        assert not admin.exists("jobrunner:lock:backup")
        assert admin.xlen("jobrunner:runs") == 3  # root's three runs, nothing of www-data's
        assert admin.xlen("jobrunner:u:www-data:runs") == 2  # its run and its forgery, in its own namespace
        # root's views, through the CLI: www-data's job is shown, root's verdict is root's
        cells = [json.loads(x) for x in root_cli("status", "--fleet", "--json").stdout.splitlines()]
        shown = {(c["job"], c["last_outcome"]) for c in cells}
        assert ("wp_cron", "success") in shown and ("backup", "failure") in shown and ("backup", "success") not in shown
        health = root_cli("health", "--fleet", "--json", "--package", "e2ejobs")
        verdicts = {j["job"]: j for j in json.loads(health.stdout)["jobs"]}
        assert verdicts["backup"]["status"] == "CRITICAL" and health.returncode == 2, health.stdout
        assert "(3 in a row)" in verdicts["backup"]["reasons"][0]
        assert verdicts["wp_cron"]["status"] == "OK", verdicts["wp_cron"]
        history = [json.loads(x) for x in root_cli("history", "--fleet", "--json").stdout.splitlines()]
        assert sorted(r["job"] for r in history if "summary" not in r) == ["backup"] * 3 + ["wp_cron"]
        # root's lease is root's: its next run takes it
        again = root_cli("run", "e2ejobs:backup")
        took = [json.loads(line) for line in again.stdout.splitlines() if '"lock.acquired"' in line]
        assert took and took[0]["key"] == "jobrunner:lock:backup", again.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
