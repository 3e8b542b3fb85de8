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
