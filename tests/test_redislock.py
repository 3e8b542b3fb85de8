"""The Redis lease, in process, against a real redis-server: grant, busy, renew, loss, release.

``RedisServer`` (used by test_redislock_fleet.py too) runs the Debian ``redis-server`` on
127.0.0.1 and a free port, without persistence, and can be killed and restarted on that port.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner.declaration import Lock
from jobrunner.errors import ConfigError, LockBusy

from .conftest import wait_for

redis = pytest.importorskip("redis")
from jobrunner.locks import redis as redislock  # noqa: E402
from jobrunner.locks.abc import lease_timing  # noqa: E402
from jobrunner.locks.redis import RedisUnavailable, acquire_redis_lock  # noqa: E402

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER), reason="needs redis-server (apt-get install redis-server)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1:port; ``kill()`` and ``start()`` again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.started_at = time.monotonic()
        client = self.client()

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        assert wait_for(answers, 10), f"redis-server did not start on port {self.port}"
        client.close()
        return self

    def settle(self, ttl: float) -> None:
        """Wait until the server has been up a whole ``ttl`` (the lease's restart guard)."""
        time.sleep(max(0.0, self.started_at + math.ceil(ttl) - time.monotonic()))
        client = self.client()
        assert wait_for(lambda: client.info("server")["uptime_in_seconds"] >= math.ceil(ttl) + 1, 5)
        client.close()

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


_SHARED: RedisServer | None = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One server for the whole session (both test modules), up long enough for 3 s leases."""
    global _SHARED
    if _SHARED is None or _SHARED.proc is None:
        _SHARED = RedisServer(tmp_path_factory.mktemp("redis")).start()
        atexit.register(_SHARED.stop)
    _SHARED.settle(3)
    yield _SHARED


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A server of this test's own, free to be killed and restarted."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def flush(redis_server) -> Iterator[RedisServer]:
    client = redis_server.client()
    client.flushdb()
    client.close()
    yield redis_server


class Recorder:
    """A stand-in for the run's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level: str):
        return lambda event, **kw: self.events.append((level, event, kw))

    def names(self) -> list[str]:
        return [e for _, e, _ in self.events]

    def find(self, name: str) -> dict:
        found = [kw for _, e, kw in self.events if e == name]
        assert found, f"no {name} in {self.events}"
        return found[-1]


def a_job(name: str = "nightly", kill_grace: float = 0.2):
    return types.SimpleNamespace(name=name, kill_grace=kill_grace)


class Lost:
    """on_lost: remembers the reason and when it came."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.at: float | None = None
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reason, self.at = reason, time.monotonic()
        self.event.set()


def test_lease_timing_leaves_a_third_of_the_ttl_to_stop():
    """For every ttl: renew at ttl/3, give up at 2/3 ttl, two attempts' timeouts fit before giving up."""
    for ttl in (1, 2, 3, 10, 60, 600, 3600):
        t = lease_timing(ttl)
        assert t["renew_every"] == pytest.approx(ttl / 3)
        assert t["lost_after"] + t["stop_budget"] == pytest.approx(ttl)
        assert t["renew_every"] + 2 * t["op_timeout"] < t["lost_after"]
        assert t["op_timeout"] <= 2.0


def test_grant_stores_holder_ttl_and_increasing_fencing_tokens(flush):
    """The key holds host:pid:nonce with the ttl; each grant's fencing token is larger than the last."""
    log, tokens = Recorder(), []
    client = flush.client()
    for _ in range(3):
        lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), log, on_lost=Lost())
        assert client.get("jobrunner:lock:nightly").decode() == lease.holder
        assert lease.holder.startswith(f"{os.uname().nodename}:{os.getpid()}:")
        assert 2000 < client.pttl("jobrunner:lock:nightly") <= 3000
        tokens.append(lease.fencing_token)
        lease.release()
        assert client.exists("jobrunner:lock:nightly") == 0
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    acquired = log.find("lock.acquired")
    assert acquired["fencing_token"] == tokens[-1] and acquired["ttl_s"] == 3.0
    assert "lock.released" in log.names()


def test_fencing_tokens_keep_growing_when_redis_forgets_the_counter(flush):
    """The fence counter lost (a restart without persistence): the next token is still larger."""
    first = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost())
    first.release()
    flush.client().delete("jobrunner:fence:nightly")
    second = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost(), run_id="r2")
    second.release()
    assert second.fencing_token > first.fencing_token > 10**15  # microseconds of Redis's clock
    assert second.holder.endswith(":r2")


def test_busy_names_the_holder(flush):
    """A second taker gets LockBusy naming the holder and the key (the runner's lock.busy path)."""
    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost())
    try:
        with pytest.raises(LockBusy) as caught:
            acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost())
        assert caught.value.path == "jobrunner:lock:nightly"
        assert lease.holder in str(caught.value)
    finally:
        lease.release()


def test_lock_name_overrides_job_name(flush):
    """Lock(name=...) names the key, so differently named jobs can share one lease."""
    lease = acquire_redis_lock(
        a_job("a"), Lock(redis=flush.url, name="shared-db", ttl="3s"), Recorder(), on_lost=Lost()
    )
    try:
        with pytest.raises(LockBusy):
            acquire_redis_lock(
                a_job("b"), Lock(redis=flush.url, name="shared-db", ttl="3s"), Recorder(), on_lost=Lost()
            )
    finally:
        lease.release()


def test_waiter_gets_the_lease_when_released(flush):
    """Lock(wait=...): a waiter is granted the lease soon after the holder releases it."""
    first = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost())
    timer = threading.Timer(0.5, first.release)
    timer.start()
    started = time.monotonic()
    log = Recorder()
    second = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s", wait="5s"), log, on_lost=Lost())
    waited = time.monotonic() - started
    second.release()
    timer.join()
    assert 0.4 < waited < 1.5
    assert log.names()[:2] == ["lock.waiting", "lock.acquired"]


def test_renewal_keeps_the_lease_past_its_ttl(flush):
    """A 1 s lease held for 1.8 s is renewed (lock.renewed at debug) and never declared lost."""
    lost, log = Lost(), Recorder()
    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="1s"), log, on_lost=lost)
    time.sleep(1.8)
    client = flush.client()
    assert client.get("jobrunner:lock:nightly").decode() == lease.holder
    assert lease.renewals >= 4 and lost.reason is None
    assert ("debug", "lock.renewed") in [(lv, e) for lv, e, _ in log.events]
    lease.release()


def test_taken_over_lease_is_lost_at_the_next_renewal(flush):
    """Another token in the key (or the key gone): on_lost within one renewal period, naming the taker."""
    lost = Lost()
    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=lost)
    flush.client().set("jobrunner:lock:nightly", "other-host:1:abcd")
    assert lost.event.wait(1.0 + 0.5)
    assert "taken over by other-host:1:abcd" in lost.reason
    lease.release()
    assert flush.client().get("jobrunner:lock:nightly") == b"other-host:1:abcd"  # never deletes another's key


def test_a_crashed_renewer_declares_the_lease_lost(flush, monkeypatch):
    """An unexpected error in the renewer thread is a lost lease, never a silently expiring one."""
    lost = Lost()
    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="1s"), Recorder(), on_lost=lost)

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(lease._lock, "extend", broken)
    assert lost.event.wait(1.0)
    assert "renewer failed: RuntimeError: bug" in lost.reason
    lease.release()


def test_release_deletes_only_our_own_token(flush):
    """release() after the key changed hands leaves the new owner's key and warns lock.release_failed."""
    log = Recorder()
    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), log, on_lost=Lost())
    flush.client().set("jobrunner:lock:nightly", "intruder")
    lease.release()
    lease.release()  # idempotent
    assert flush.client().get("jobrunner:lock:nightly") == b"intruder"
    assert "lock.release_failed" in log.names() and "lock.released" not in log.names()


@pytest.mark.slow
def test_dead_redis_is_declared_lost_before_the_lease_could_expire(own_redis):
    """Redis SIGKILLed: renewals fail (lock.renew_failed) and on_lost comes ≥ ttl/3 before the key could expire."""
    own_redis.settle(2)
    lost, log = Lost(), Recorder()
    lease = acquire_redis_lock(a_job(), Lock(redis=own_redis.url, ttl="2s"), log, on_lost=lost)
    time.sleep(0.2)
    killed = own_redis.kill()
    assert lost.event.wait(5)
    expires_at = lease.last_renewed + 2.0  # at the earliest, by Redis's clock
    assert lease.last_renewed <= killed
    assert lost.at <= expires_at - 2.0 / 3, (lost.at - killed, expires_at - killed)
    assert "not renewed" in lost.reason
    assert "lock.renew_failed" in log.names()
    lease.release()  # Redis is gone: a warning, never an exception
    assert "lock.release_failed" in log.names()


@pytest.mark.slow
def test_restarted_redis_grants_nothing_for_a_ttl(own_redis):
    """A Redis up for less than the ttl refuses (it may have forgotten a lease); a waiter gets it once it has been up a ttl."""
    with pytest.raises(LockBusy, match="restarted"):
        acquire_redis_lock(a_job(), Lock(redis=own_redis.url, ttl="2s"), Recorder(), on_lost=Lost())
    lease = acquire_redis_lock(a_job(), Lock(redis=own_redis.url, ttl="2s", wait="5s"), Recorder(), on_lost=Lost())
    assert time.monotonic() - own_redis.started_at >= 2.0
    lease.release()


def test_unreachable_redis_at_start_is_redis_unavailable_with_password_masked():
    """Nothing listening: RedisUnavailable, one line, the URL's password masked."""
    url = f"redis://:Sup3rSecretPw@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as caught:
        acquire_redis_lock(a_job(), Lock(redis=url, ttl="3s"), Recorder(), on_lost=Lost())
    message = str(caught.value)
    assert "Sup3rSecretPw" not in message and "***" in message and "\n" not in message
    assert caught.value.exit_code == 1 and caught.value.__cause__ is None


def test_redis_true_without_url_is_a_config_error(monkeypatch):
    """redis=True and no $JOBRUNNER_REDIS_URL: ConfigError (exit 78) naming the variable."""
    monkeypatch.delenv("JOBRUNNER_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="JOBRUNNER_REDIS_URL") as caught:
        acquire_redis_lock(a_job(), Lock(redis=True), Recorder(), on_lost=Lost())
    assert caught.value.exit_code == 78


def test_redis_true_reads_the_url_from_the_environment(flush, monkeypatch):
    """redis=True uses $JOBRUNNER_REDIS_URL."""
    monkeypatch.setenv("JOBRUNNER_REDIS_URL", flush.url)
    lease = acquire_redis_lock(a_job(), Lock(redis=True, ttl="3s"), Recorder(), on_lost=Lost())
    assert flush.client().get("jobrunner:lock:nightly").decode() == lease.holder
    lease.release()


def test_short_ttl_for_the_kill_grace_is_warned(flush):
    """A ttl whose last third cannot cover kill_grace logs lock.ttl_short at acquisition."""
    log = Recorder()
    lease = acquire_redis_lock(a_job(kill_grace=10), Lock(redis=flush.url, ttl="3s"), log, on_lost=Lost())
    lease.release()
    assert log.find("lock.ttl_short")["kill_grace_s"] == 10


def test_all_matches_public_names():
    """redislock.__all__ lists exactly its public names."""
    public = {
        n
        for n, v in vars(redislock).items()
        if not n.startswith("_") and getattr(v, "__module__", None) == redislock.__name__
    }
    assert set(redislock.__all__) == public


def test_instances_have_their_own_lease(flush):
    """An instance's lease key is the job's with ``@instance`` (issue 19): two sites of one job
    hold theirs at once; the same site twice is busy."""
    from jobrunner import job

    @job(instances=True, lock=Lock(redis=flush.url, ttl="3s"))
    def site_sync(ctx): ...

    shop, blog = site_sync.for_instance("shop.example"), site_sync.for_instance("blog.example")
    client = flush.client()
    first = acquire_redis_lock(shop, shop.lock, Recorder(), on_lost=Lost())
    second = acquire_redis_lock(blog, blog.lock, Recorder(), on_lost=Lost())
    try:
        assert client.get("jobrunner:lock:site_sync@shop.example").decode() == first.holder
        assert client.get("jobrunner:lock:site_sync@blog.example").decode() == second.holder
        with pytest.raises(LockBusy) as caught:
            acquire_redis_lock(shop, shop.lock, Recorder(), on_lost=Lost())
        assert caught.value.path == "jobrunner:lock:site_sync@shop.example"
    finally:
        first.release()
        second.release()


@pytest.mark.parametrize(
    ("schedule", "at", "elapse", "following"),
    [
        (["*:0/15"], "2026-12-06 23:20:07", "2026-12-06 23:15:00", "2026-12-06 23:30:00"),
        (["*:0/15"], "2026-12-06 23:15:00", "2026-12-06 23:15:00", "2026-12-06 23:30:00"),
        (["02:15"], "2026-12-06 01:00:00", "2026-12-05 02:15:00", "2026-12-06 02:15:00"),
        (["Mon 02:00"], "2026-12-06 12:00:00", "2026-11-30 02:00:00", "2026-12-07 02:00:00"),
        (["*:*:0/5"], "2026-12-06 12:00:03", "2026-12-06 12:00:00", "2026-12-06 12:00:05"),
        (["00:00", "12:00"], "2026-12-06 13:00:00", "2026-12-06 12:00:00", "2026-12-07 00:00:00"),
        (["monthly"], "2026-12-06 13:00:00", "2026-12-01 00:00:00", "2027-01-01 00:00:00"),
    ],
)
def test_a_firing_is_the_schedules_last_elapse_at_or_before_the_timers_moment(schedule, at, elapse, following):
    from jobrunner.locks.firing import current_firing, last_elapse

    def local(text: str) -> float:
        return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))

    firing = last_elapse(schedule, local(at))
    assert firing is not None and (firing.elapse, firing.next_elapse) == (local(elapse), local(following))
    timer = {"TRIGGER_UNIT": "x.timer", "TRIGGER_TIMER_REALTIME_USEC": str(int(local(at) * 1e6))}
    assert current_firing(schedule, timer) == firing
    assert current_firing(schedule, {}) is None  # a run by hand is no firing
    assert current_firing(schedule, {"TRIGGER_UNIT": "x.path"}) is None


def test_a_claimed_firing_grants_nothing_however_free_the_lease(flush, monkeypatch):
    """A run of firing F takes the lease and claims F; once released, a run of the same firing
    is busy (naming the claimant), a run of the next firing and a run by hand are not."""
    now = time.time()
    job = types.SimpleNamespace(name="fr", lock_name=None, kill_grace=0, schedule="*:0/5")
    spec = Lock(redis=flush.url, ttl="3s")
    log = Recorder()
    monkeypatch.setenv("TRIGGER_UNIT", "fr.timer")
    monkeypatch.setenv("TRIGGER_TIMER_REALTIME_USEC", str(int(now * 1e6)))
    acquire_redis_lock(job, spec, log, on_lost=lambda r: None, run_id="first").release()
    with pytest.raises(LockBusy, match="ran already.*claimed by .*:first"):
        acquire_redis_lock(job, spec, log, on_lost=lambda r: None, run_id="second")
    monkeypatch.setenv("TRIGGER_TIMER_REALTIME_USEC", str(int((now + 300) * 1e6)))
    acquire_redis_lock(job, spec, log, on_lost=lambda r: None, run_id="third").release()
    monkeypatch.delenv("TRIGGER_UNIT")
    acquire_redis_lock(job, spec, log, on_lost=lambda r: None, run_id="by-hand").release()
    assert len(flush.client().keys("jobrunner:firing:fr:*")) == 2


def test_fencing_tokens_never_fall_below_redis_clock_after_a_restore_from_an_older_snapshot(flush):
    """A restore brings back a smaller counter: the next token is still larger than every one
    issued before (tokens are never below Redis's clock in microseconds)."""
    tokens = []
    for i in range(3):
        lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost(), run_id=f"{i}")
        tokens.append(lease.fencing_token)
        lease.release()
    flush.client().set("jobrunner:fence:nightly", tokens[0] - 5)  # the snapshot's older counter
    after = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="3s"), Recorder(), on_lost=Lost(), run_id="x")
    after.release()
    assert tokens == sorted(set(tokens)) and after.fencing_token > tokens[-1]
    seconds, micros = flush.client().time()
    assert after.fencing_token <= seconds * 10**6 + micros


def test_held_is_false_as_soon_as_a_paused_holder_may_have_lost_the_lease(flush):
    """A holder whose process held the GIL (a C call: a backtracking regex) past 2/3 of the
    TTL sees ``held == False`` at once, before its renewer thread could run."""
    import re

    lease = acquire_redis_lock(a_job(), Lock(redis=flush.url, ttl="1s"), Recorder(), on_lost=Lost())
    try:
        assert lease.held
        pattern = re.compile(r"(a+)+$")
        n, took = 18, 0.0
        while took < 0.05:  # calibrate: each extra 'a' doubles the time
            began = time.monotonic()
            pattern.match("a" * n + "b")
            took = time.monotonic() - began
            n += 1
        while took < 1.0:
            took *= 2
            n += 1
        import sys

        interval = sys.getswitchinterval()
        sys.setswitchinterval(100.0)  # the renewer thread must not get the GIL before we look
        try:
            pattern.match("a" * n + "b")  # holds the GIL for about a second: the renewer cannot run
            held, lost = lease.held, lease.lost
        finally:
            sys.setswitchinterval(interval)
        assert held is False and lost is None  # known from the clock, before the renewer said so
    finally:
        lease.release()


def test_fenced_write_refuses_an_older_token_and_children_get_the_token(tmp_path, monkeypatch):
    from jobrunner.fencing import StaleToken, fenced_write

    target = str(tmp_path / "report.csv")
    fenced_write(target, b"v1", 100)
    fenced_write(target, b"v2", 101)
    with pytest.raises(StaleToken, match="older than 101"):
        fenced_write(target, b"old holder", 100)
    assert open(target, "rb").read() == b"v2" and oct(os.stat(target + ".fence").st_mode & 0o777) == "0o600"
    monkeypatch.delenv("JOBRUNNER_FENCING_TOKEN", raising=False)
    with pytest.raises(StaleToken, match="no fencing token"):
        fenced_write(target, b"unfenced")
    monkeypatch.setenv("JOBRUNNER_FENCING_TOKEN", "102")
    fenced_write(target, b"v3")
    assert open(target, "rb").read() == b"v3"
