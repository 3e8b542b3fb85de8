"""The etcd lease against a real etcd 3.4 (Debian's, unpacked: tests/etcd_server.py): grant, busy,
renew, loss, expiry, fencing tokens, and a fleet of "hosts" (UTS namespaces) on one machine.

Each run records entering and leaving its critical section in a ledger (O_APPEND,
CLOCK_MONOTONIC nanoseconds), so overlaps and hand-over times are measured, not inferred.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
import uuid

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrunner.declaration import LEASE_SCHEMES, Lock, job
from jobrunner.errors import LockBusy
from jobrunner.locks import abc as lease_abc
from jobrunner.locks.abc import LeaseUnavailable, lease_timing
from jobrunner.locks.etcd import FIRING_KEY_PREFIX, KEY_PREFIX, _claim, _Gateway, _Refused, acquire_etcd_lease

from .conftest import ledger_entries, overlaps, wait_for
from .etcd_server import EtcdServer, debian, etcd_bin, etcd_server, free_port, own_etcd

__all__ = ["debian", "etcd_bin", "etcd_server", "own_etcd"]  # fixtures, re-exported for pytest

CRITICAL = """
    import json, os, sys, time
    from jobrunner import job, Lock

    @job(
        lock=Lock(url=os.environ["LEASE_URL"], name=os.environ["LOCK_NAME"], ttl=os.environ.get("TTL", "3s"),
                  wait=os.environ.get("WAIT") or None, unavailable=os.environ.get("UNAVAILABLE", "fail")),
        kill_grace=0.5, network=True,
    )
    def critical(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"in {ctx.env['SERVER']} {time.monotonic_ns()}\\n".encode())
        info = {"server": ctx.env["SERVER"], "token": ctx.lock.fencing_token,
                "env_token": ctx.env.get("JOBRUNNER_FENCING_TOKEN"), "redis_imported": "redis" in sys.modules}
        with open(ctx.env["LEDGER"] + ".info", "a") as f:
            f.write(json.dumps(info) + "\\n")
        try:
            end = time.monotonic() + float(ctx.env.get("HOLD", "0.5"))
            while time.monotonic() < end:
                time.sleep(0.02)
        finally:
            os.write(fd, f"out {ctx.env['SERVER']} {time.monotonic_ns()}\\n".encode())
            os.close(fd)
"""


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


class Lost:
    def __init__(self) -> None:
        self.reason: str | None = None
        self.at: float | None = None
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reason, self.at = reason, time.monotonic()
        self.event.set()


def a_job(name: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, kill_grace=0.2)


def unique() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def take(server: EtcdServer, name: str, ttl: str = "3s", wait: str | None = None, **kw):
    log, lost = Recorder(), Lost()
    lease = acquire_etcd_lease(a_job(name), Lock(url=server.url, ttl=ttl, wait=wait), log, lost, **kw)
    return lease, log, lost


@pytest.fixture
def fleet(launcher, tmp_path):
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"
    lock_name = unique()

    def env(server: str, url: str, **extra: str) -> dict[str, str]:
        return launcher.env(LEDGER=str(ledger), SERVER=server, LEASE_URL=url, LOCK_NAME=lock_name, **extra)

    return types.SimpleNamespace(launcher=launcher, ledger=ledger, env=env, key=KEY_PREFIX + lock_name)


def infos(ledger) -> list[dict]:
    path = f"{ledger}.info"
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


def on_host(launcher, host: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``jobrunner run critical`` as host ``host``: its own UTS namespace (hostname), state and locks."""
    return launcher.start_on_host(host, "run", "critical", env=env, own_dirs=True)


# -- the interface --------------------------------------------------------------------------


def test_the_declarations_schemes_are_the_registrys():
    assert set(LEASE_SCHEMES) == set(lease_abc.BACKENDS)
    for target in lease_abc.BACKENDS.values():
        module, _, factory = target.partition(":")
        assert module.startswith("jobrunner.locks.") and factory


def test_lock_url_picks_the_backend_and_redis_is_an_alias():
    assert Lock(url="etcd://10.0.0.5:2379").backend == "etcd"
    assert Lock(url="redis://r:6379/0") == Lock(redis="redis://r:6379/0")
    assert Lock(redis=True).backend == "redis" and Lock().backend is None

    def nightly(ctx):
        pass

    assert job(lock="etcd://10.0.0.5")(nightly).lock == Lock(url="etcd://10.0.0.5")
    declared = job(lock=Lock(url="etcd://10.0.0.5:2379"))(nightly)
    assert declared.network is True  # its unit must reach etcd
    for bad, why in [
        (dict(url="zk://h:2181"), "unknown scheme 'zk://'"),
        (dict(url="etcd://h:2379", shared=True), "a lease is exclusive"),
        (dict(url="etcd://h:99999"), "lock url"),
        (dict(url="etcd://:secret@h:2379"), "password needs its user"),
        (dict(url="etcd://h:2379/prefix"), "no path"),
        (dict(url="redis://a", redis="redis://b"), "give the lease's URL once"),
    ]:
        with pytest.raises(ValueError, match=why) as caught:
            Lock(**bad)
        assert "secret" not in str(caught.value)


def test_units_of_a_leased_job_wait_for_the_network_and_make_no_lock_file():
    from jobrunner.unitgen.render import render_service, render_tmpfiles

    def sync_feeds(ctx):
        pass

    leased = job(schedule="hourly", user="www-data", lock=Lock(url="etcd://10.0.0.5:2379"))(sync_feeds)
    filed = job(schedule="hourly", user="www-data", lock=True)(sync_feeds)
    assert "network-online.target" in render_service(leased)
    assert "sync_feeds.lock" not in render_tmpfiles([leased])  # the lease is in etcd, not a file
    assert "sync_feeds.lock" in render_tmpfiles([filed])


@given(st.text(max_size=60))
def test_any_lease_url_is_a_lock_or_one_value_error(text):
    try:
        lock = Lock(url=text)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("lock")
    else:
        assert lock.backend in LEASE_SCHEMES


def test_an_unknown_backend_is_a_config_error_naming_the_schemes():
    with pytest.raises(lease_abc.ConfigError, match="use one of redis://"):
        lease_abc.backend("zk")


# -- in process, against a real etcd --------------------------------------------------------


def test_grant_busy_release_and_fencing_tokens_grow(etcd_server):
    name = unique()
    first, log, _ = take(etcd_server, name)
    key = KEY_PREFIX + name
    assert first.held and first.name == key
    record = etcd_server.get(key)
    assert record is not None and record["value"] == first.holder and record["lease"] == first.lease_id
    assert int(record["create_revision"]) == first.fencing_token
    assert log.find("lock.acquired")["fencing_token"] == first.fencing_token
    with pytest.raises(LockBusy, match=rf"etcd lease {key} is held by {first.holder}") as busy:
        take(etcd_server, name)
    assert busy.value.path == key
    first.release()
    assert etcd_server.get(key) is None and "lock.released" in log.names()
    assert etcd_server.ttl(first.lease_id) == -1  # revoked, not left to expire
    second, _, _ = take(etcd_server, name)
    assert second.fencing_token > first.fencing_token
    second.release()
    second.release()  # idempotent


def test_racing_acquirers_exactly_one_wins(etcd_server):
    """8 threads that all found the key absent race for it, 5 times: the transaction's
    create-revision compare lets exactly one through each time."""

    def contender(name: str, barrier: threading.Barrier, won: list, busy: list) -> None:
        barrier.wait()
        try:
            won.append(take(etcd_server, name)[0])
        except LockBusy as exc:
            busy.append(exc)

    for _ in range(5):
        name, barrier = unique(), threading.Barrier(8)
        won: list = []
        busy: list = []
        threads = [threading.Thread(target=contender, args=(name, barrier, won, busy)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(won) == 1 and len(busy) == 7, (len(won), len(busy))
        won[0].release()


def test_renewal_keeps_the_lease_past_its_ttl(etcd_server):
    lease, log, lost = take(etcd_server, unique(), ttl="2s")
    time.sleep(3.5)
    assert lease.held and lost.reason is None and lease.renewals >= 4
    assert etcd_server.get(lease.name) is not None
    lease.release()


def test_a_waiter_gets_the_lease_when_released(etcd_server):
    name = unique()
    holder, _, _ = take(etcd_server, name)
    threading.Timer(0.5, holder.release).start()
    started = time.monotonic()
    waiter, log, _ = take(etcd_server, name, wait="5s")
    assert 0.4 < time.monotonic() - started < 3 and "lock.waiting" in log.names()
    assert waiter.fencing_token > holder.fencing_token
    waiter.release()


def test_a_deleted_key_is_lost_at_the_next_renewal(etcd_server):
    lease, log, lost = take(etcd_server, unique(), ttl="3s")
    etcd_server.delete(lease.name)
    assert lost.event.wait(3), "the loss was not noticed"
    assert "deleted" in (lost.reason or "") and not lease.held
    lease.release()
    assert "lock.release_failed" not in log.names()  # the lease itself was still ours to revoke


def test_a_key_taken_over_is_lost_naming_the_new_holder(etcd_server):
    name = unique()
    lease, _, lost = take(etcd_server, name, ttl="3s")
    etcd_server.delete(lease.name)
    thief, _, _ = take(etcd_server, name, run_id="thief")
    assert lost.event.wait(3)
    assert "taken over by" in (lost.reason or "") and "thief" in (lost.reason or "")
    lease.release()
    assert etcd_server.get(thief.name)["value"] == thief.holder  # our release did not delete theirs
    thief.release()


def test_fencing_tokens_keep_growing_across_an_etcd_restart(own_etcd):
    name = unique()
    first, _, _ = take(own_etcd, name)
    first.release()
    own_etcd.kill()
    own_etcd.start()
    second, _, _ = take(own_etcd, name)
    assert second.fencing_token > first.fencing_token
    second.release()


def test_dead_etcd_is_declared_lost_before_the_lease_could_expire(own_etcd):
    ttl = 2.0
    lease, log, lost = take(own_etcd, unique(), ttl="2s")
    time.sleep(0.3)
    killed = own_etcd.kill()
    assert lost.event.wait(5)
    assert lost.at is not None and lost.at - killed < ttl * 2 / 3, lost.at - killed
    # declared lost within 2/3 ttl of the last renewal sent: etcd keeps the lease ttl after it
    assert lost.at - lease.last_renewed <= ttl * 2 / 3
    assert "not renewed" in (lost.reason or "") and "lock.renew_failed" in log.names()
    lease.release()
    assert "lock.release_failed" in log.names()


def test_unreachable_etcd_at_start_is_lease_unavailable():
    with pytest.raises(LeaseUnavailable, match=r"etcd at etcd://127\.0\.0\.1:\d+ is unreachable"):
        acquire_etcd_lease(a_job("x"), Lock(url=f"etcd://127.0.0.1:{free_port()}"), Recorder(), Lost())


# -- once per firing ------------------------------------------------------------------------


def a_timed_job(name: str, schedule: str = "*:0/5") -> types.SimpleNamespace:
    return types.SimpleNamespace(name=name, lock_name=None, kill_grace=0, schedule=schedule)


def fired(monkeypatch, at: float | None) -> None:
    """This process is a run its timer started at ``at`` (systemd's variables), or by hand."""
    if at is None:
        monkeypatch.delenv("TRIGGER_UNIT", raising=False)
        monkeypatch.delenv("TRIGGER_TIMER_REALTIME_USEC", raising=False)
    else:
        monkeypatch.setenv("TRIGGER_UNIT", "x.timer")
        monkeypatch.setenv("TRIGGER_TIMER_REALTIME_USEC", str(int(at * 1e6)))


def test_a_claimed_firing_grants_nothing_however_free_the_lease(etcd_server, monkeypatch):
    """A timer's run of firing F takes the lease and claims F on a lease of its own, kept after
    the run; a run of the same firing then skips, naming F and the claimant; a run of the next
    firing and a run by hand take the lease. Mirrors the Redis test of the same name."""
    name = unique()
    timed, spec = a_timed_job(name), Lock(url=etcd_server.url, ttl="3s")
    boundary = time.time() // 300 * 300 - 600  # an elapse of */5 ten minutes ago
    fkey = f"{FIRING_KEY_PREFIX}{name}:{int(boundary)}"
    fired(monkeypatch, boundary + 20)
    first = acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="first")
    claim = etcd_server.get(fkey)
    assert claim is not None and claim["value"] == first.holder
    assert claim["lease"] not in (None, "0", first.lease_id)  # its own lease, not the run's
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(boundary))
    fired(monkeypatch, boundary + 60)  # another host's timer of this firing, while it runs
    with pytest.raises(LockBusy, match=rf"^this firing \({stamp}\) of the timer ran already: "):
        acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="meanwhile")
    first.release()
    assert etcd_server.get(first.name) is None and etcd_server.get(fkey) is not None  # the claim outlives the run
    # twice */5's interval, never kept alive: it expires on its own
    assert etcd_server.granted_ttl(claim["lease"]) == 600 and 0 < etcd_server.ttl(claim["lease"]) <= 600
    fired(monkeypatch, boundary + 140)  # a later timer of the same firing, waiting for a held lease
    started = time.monotonic()
    with pytest.raises(LockBusy) as caught:
        acquire_etcd_lease(timed, Lock(url=etcd_server.url, ttl="3s", wait="5s"), Recorder(), Lost(), run_id="second")
    assert time.monotonic() - started < 2  # a spent firing is not waited for
    assert str(caught.value) == (
        f"this firing ({stamp}) of the timer ran already: {fkey} was claimed by {first.holder}"
    )
    assert caught.value.path == fkey and etcd_server.get(first.name) is None
    fired(monkeypatch, boundary + 300 + 5)  # the next firing
    acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="third").release()
    fired(monkeypatch, None)
    acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="by-hand").release()
    claims = etcd_server.keys(f"{FIRING_KEY_PREFIX}{name}:")
    assert sorted(claims) == [fkey, f"{FIRING_KEY_PREFIX}{name}:{int(boundary) + 300}"], claims
    assert claims[fkey].endswith(":first") and "by-hand" not in " ".join(claims.values())


def test_a_daily_firing_is_kept_two_days_and_a_held_lease_claims_nothing(etcd_server, monkeypatch):
    """The firing's lease is twice the schedule's interval (02:15 daily: 2 days). A timer's run
    that finds the lease held (a run by hand still going) skips as busy, naming the holder, and
    claims nothing: the firing still runs once the lease is free."""
    name = unique()
    timed, spec = a_timed_job(name, "02:15"), Lock(url=etcd_server.url, ttl="3s")
    fired(monkeypatch, None)
    by_hand = acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="by-hand")
    fired(monkeypatch, time.time())
    with pytest.raises(LockBusy, match=rf"etcd lease {KEY_PREFIX}{name} is held by .*:by-hand$"):
        acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="timer")
    assert etcd_server.keys(f"{FIRING_KEY_PREFIX}{name}:") == {}
    by_hand.release()
    timer = acquire_etcd_lease(timed, spec, Recorder(), Lost(), run_id="timer")
    [(fkey, who)] = etcd_server.keys(f"{FIRING_KEY_PREFIX}{name}:").items()
    assert who == timer.holder and etcd_server.granted_ttl(etcd_server.get(fkey)["lease"]) == 2 * 86400
    timer.release()


def test_the_claim_transaction_refuses_a_claimed_firing_and_leaks_no_lease(own_etcd):
    """The transaction is what keeps a firing once, for runs that read it unclaimed a moment
    before another host claimed it: it puts nothing when the firing is claimed (naming the
    claimant) or the lease held (naming the holder, claiming nothing), and revokes every lease
    it granted for the attempt: etcd's lease list holds only the claims and holders."""
    host, port = own_etcd.url.removeprefix("etcd://").split(":")
    gateway = _Gateway(host, int(port), 2.0)
    key, fkey, next_fkey = KEY_PREFIX + "tx", FIRING_KEY_PREFIX + "tx:1796609700", FIRING_KEY_PREFIX + "tx:1796609900"
    try:
        before = own_etcd.leases()
        granted = _claim(gateway, key, 3, "a:1:first", (fkey, 600_000))
        assert isinstance(granted, tuple)
        run_lease, claim_lease = granted[0], own_etcd.get(fkey)["lease"]
        assert own_etcd.leases() - before == {run_lease, claim_lease} and run_lease != claim_lease
        own_etcd.call("/v3/lease/revoke", {"ID": run_lease})  # the run ended
        assert own_etcd.get(key) is None and own_etcd.leases() - before == {claim_lease}
        assert _claim(gateway, key, 3, "b:2:second", (fkey, 600_000)) == _Refused("a:1:first", ran=True)
        assert own_etcd.get(key) is None and own_etcd.leases() - before == {claim_lease}
        hand = _claim(gateway, key, 3, "c:3:hand", None)
        assert isinstance(hand, tuple)
        assert _claim(gateway, key, 3, "d:4:next", (next_fkey, 600_000)) == _Refused("c:3:hand")
        assert own_etcd.get(next_fkey) is None and own_etcd.leases() - before == {claim_lease, hand[0]}
    finally:
        gateway.close()


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
@example(b" \t ")
@example(b"\x00")
@example(b"web3:4121:r1\nforged line")
def test_any_claim_another_etcd_client_wrote_is_a_one_line_skip_naming_it(etcd_server, value):
    """Whatever bytes sit in a firing's key (etcd has no users here: any client can write
    one), a timer's run of that firing skips with one line naming them, no traceback."""
    name = unique()
    boundary = time.time() // 300 * 300 - 600
    fkey = f"{FIRING_KEY_PREFIX}{name}:{int(boundary)}"
    encoded = base64.b64encode(fkey.encode()).decode()
    etcd_server.call("/v3/kv/put", {"key": encoded, "value": base64.b64encode(value).decode()})
    saved = {k: os.environ.get(k) for k in ("TRIGGER_UNIT", "TRIGGER_TIMER_REALTIME_USEC")}
    os.environ.update(TRIGGER_UNIT="x.timer", TRIGGER_TIMER_REALTIME_USEC=str(int((boundary + 30) * 1e6)))
    try:
        with pytest.raises(LockBusy) as caught:
            acquire_etcd_lease(a_timed_job(name), Lock(url=etcd_server.url, ttl="3s"), Recorder(), Lost())
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        etcd_server.delete(fkey)
    reason = str(caught.value)
    assert reason.startswith("this firing (") and f"{fkey} was claimed by " in reason and reason.isprintable()
    who = reason.split(" was claimed by ", 1)[1]
    shown = " ".join(value.decode("utf-8", "replace").split())
    assert who == (shown[:330] or "another run") or not shown.isprintable()


SINGLETON = """
    import os, time
    from jobrunner import job, Lock

    @job(schedule="*:0/5", lock=Lock(url=os.environ["LEASE_URL"], ttl="3s"), network=True)
    def report(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"ran {os.uname().nodename} {ctx.env.get('TRIGGER_TIMER_REALTIME_USEC', 'by-hand')}\\n".encode())
        os.close(fd)
        time.sleep(0.2)
"""


def fire(launcher, host: str, env: dict[str, str], at: float | None) -> subprocess.Popen[str]:
    """``jobrunner run report`` as host HOST's timer started it at ``at`` (or by hand: None)."""
    return launcher.start_on_host(host, "run", "report", env=env, timer=None if at is None else ("report.timer", at))


@pytest.mark.slow
def test_hosts_firing_seconds_apart_run_a_short_singleton_once_per_firing(launcher, own_etcd, tmp_path):
    """6 hosts (UTS namespaces) whose timers fire for one elapse of ``*:0/5`` over 2 s run a
    0.2 s etcd-leased singleton once: one exit 0, five exit 75 naming the firing and the host
    that ran it; twice in a row. A run by hand afterwards runs. etcd keeps the two claims on
    their leases and nothing else: no lease of a refused attempt is left behind."""
    import random

    launcher.write_job("report", SINGLETON)
    ledger = tmp_path / "ledger"
    env = launcher.env(LEASE_URL=own_etcd.url, LEDGER=str(ledger))
    boundary = time.time() // 300 * 300 - 600
    for firing in (boundary, boundary + 300):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(firing))
        began, procs = time.monotonic(), []
        for n, delay in enumerate(sorted(random.uniform(0, 2.0) for _ in range(6))):
            time.sleep(max(0.0, began + delay - time.monotonic()))
            procs.append(fire(launcher, f"e{n}", env, firing + 20 + delay))
        runs = [launcher.finish(p) for p in procs]
        codes = sorted(r.returncode for r in runs)
        assert codes == [0] + [75] * 5, [r.stdout[-600:] + r.stderr[-600:] for r in runs]
        winner = next(r for r in runs if r.returncode == 0).event("lock.acquired")["holder"]
        for run in runs:
            if run.returncode == 75:
                busy = run.event("lock.busy")
                assert busy["reason"].startswith(f"this firing ({stamp}) of the timer ran already: "), busy
                assert busy["reason"].endswith(f"was claimed by {winner}") and busy["path"].endswith(f":{int(firing)}")
    assert len(ledger.read_text().splitlines()) == 2
    by_hand = launcher.finish(fire(launcher, "e0", env, None))
    assert by_hand.returncode == 0 and ledger.read_text().splitlines()[-1].endswith(" by-hand")
    claims = own_etcd.keys(FIRING_KEY_PREFIX)
    assert sorted(claims) == [f"{FIRING_KEY_PREFIX}report:{int(f)}" for f in (boundary, boundary + 300)]
    assert own_etcd.keys(KEY_PREFIX) == {}  # every run released its lease
    assert own_etcd.leases() == {own_etcd.get(k)["lease"] for k in claims}  # nothing else left


# -- runs of the CLI ------------------------------------------------------------------------


@pytest.mark.slow
def test_singleton_across_hosts_one_runs_per_round_tokens_grow(fleet, etcd_server):
    """3 hosts (UTS namespaces) race 4 times: each round one runs (exit 0), two skip (75)
    naming the holder's host; no overlap; the fencing token grows round after round and is
    the children's $JOBRUNNER_FENCING_TOKEN; the redis client is never imported."""
    hosts = ["etcd-a", "etcd-b", "etcd-c"]
    for round_ in range(4):
        procs = [on_host(fleet.launcher, h, fleet.env(h, etcd_server.url, HOLD="1.0")) for h in hosts]
        runs = [fleet.launcher.finish(p) for p in procs]
        codes = sorted(r.returncode for r in runs)
        assert codes == [0, 75, 75], (round_, [r.stdout[-800:] + r.stderr[-800:] for r in runs])
        winner = hosts[[r.returncode for r in runs].index(0)]
        for run in runs:
            if run.returncode == 75:
                busy = run.event("lock.busy")
                assert busy["path"] == fleet.key and f"held by {winner}:" in busy["reason"], busy
    entries = ledger_entries(fleet.ledger)
    assert overlaps(entries) == 0 and sum(1 for kind, _, _ in entries if kind == "in") == 4
    seen = infos(fleet.ledger)
    tokens = [i["token"] for i in seen]
    assert tokens == sorted(tokens) and len(set(tokens)) == 4
    assert all(i["env_token"] == str(i["token"]) and i["redis_imported"] is False for i in seen)
    assert etcd_server.get(fleet.key) is None  # every winner released


@pytest.mark.slow
def test_etcd_killed_mid_run_stops_the_holder_with_lock_lost(fleet, own_etcd):
    """etcd SIGKILLed and kept down: the holder exits 1 (lock.lost) within 2/3 of the ttl; after
    the restart a waiting server runs only once the old lease expired, with a larger token."""
    ttl = 3.0
    holder = fleet.launcher.start("run", "critical", env=fleet.env("s1", own_etcd.url, HOLD="30", TTL="3s"))
    assert wait_for(lambda: ledger_entries(fleet.ledger), 15)
    time.sleep(0.5)
    killed = own_etcd.kill()
    assert wait_for(lambda: holder.poll() is not None, 10, interval=0.005)
    stopped = time.monotonic()
    run = fleet.launcher.finish(holder)
    assert run.returncode == 1, run.stdout[-2000:]
    assert "lock.renew_failed" in run.names() and run.event("lock.lost")["reason"].startswith(f"lease {fleet.key}")
    assert run.event("job.finished")["outcome"] == "failure"
    print(f"etcd down: holder stopped {stopped - killed:.2f}s after the kill (ttl {ttl:g}s)")
    assert stopped - killed < ttl * 2 / 3 + 0.5
    own_etcd.start()  # the old lease survived the restart: it must expire before a new grant
    second = fleet.launcher.run("run", "critical", env=fleet.env("s2", own_etcd.url, HOLD="0.1", WAIT="15s"))
    assert second.returncode == 0, second.stdout[-2000:]
    assert overlaps(ledger_entries(fleet.ledger)) == 0
    first_token, second_token = (i["token"] for i in infos(fleet.ledger))
    assert second_token > first_token


@pytest.mark.slow
def test_a_holder_killed_outright_frees_the_lease_when_it_expires(fleet, etcd_server):
    """SIGKILL leaves no one to revoke: the lease expires after its ttl (not before 2/3 of it,
    counted from the kill) and a waiting server takes over."""
    ttl = 3.0
    holder = fleet.launcher.start("run", "critical", env=fleet.env("s1", etcd_server.url, HOLD="30", TTL="3s"))
    assert wait_for(lambda: ledger_entries(fleet.ledger), 15)
    time.sleep(0.3)
    os.killpg(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    holder.wait(5)
    assert etcd_server.get(fleet.key) is not None  # nobody released it
    waiter = fleet.launcher.run("run", "critical", env=fleet.env("s2", etcd_server.url, HOLD="0.1", WAIT="15s"))
    assert waiter.returncode == 0, waiter.stdout[-2000:]
    took_over = next(ns / 1e9 for kind, who, ns in ledger_entries(fleet.ledger) if kind == "in" and who == "s2")
    print(f"expiry: s2 took over {took_over - killed:.2f}s after s1 was killed (ttl {ttl:g}s)")
    assert ttl * 2 / 3 - 0.2 < took_over - killed < ttl + 2.0


def test_exec_lease_gives_the_command_its_fencing_token(launcher, etcd_server, tmp_path):
    out = tmp_path / "token"
    name = unique()
    argv = ["exec", name, "--lease", etcd_server.url, "--", "sh", "-c", f'echo "$JOBRUNNER_FENCING_TOKEN" >> {out}']
    runs = [launcher.run(*argv) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    tokens = [int(line) for line in out.read_text().split()]
    assert tokens == [r.event("lock.acquired")["fencing_token"] for r in runs] and tokens[0] < tokens[1]
    assert runs[0].event("lock.acquired")["key"] == KEY_PREFIX + name


def test_bad_lease_urls_are_one_line_and_their_exit_code(launcher):
    for url in ["etcd://127.0.0.1:99999", "zk://127.0.0.1:2181", "etcd://:hunter2@h:2379"]:
        launcher.write_job(
            "badurl", f"from jobrunner import job, Lock\n@job(lock=Lock(url={url!r}))\ndef badurl(ctx): pass\n"
        )
        run = launcher.run("run", "badurl")
        assert run.returncode == 78, (url, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "lock" in run.stderr and "Traceback" not in run.stderr
        assert "hunter2" not in run.stderr + run.stdout
    usage = launcher.run("exec", "x", "--lease", "zk://h", "--", "true")
    assert usage.returncode == 64 and len(usage.stderr.strip().splitlines()) == 1 and "zk://" in usage.stderr
    for flags in (["--lease", "redis://:hunter2@h:6379/0"], ["--lease", "etcd://h:2379", "--redis"]):
        usage = launcher.run("exec", "x", *flags, "--", "true")
        assert usage.returncode == 64 and len(usage.stderr.strip().splitlines()) == 1, usage.stderr
        assert "--lease" in usage.stderr and "hunter2" not in usage.stderr
    usage = launcher.run("exec", "x", "--lease", "etcd://u:hunter2@h:2379", "--", "true")
    assert usage.returncode == 64 and "JOBRUNNER_ETCD_PASSWORD" in usage.stderr and "hunter2" not in usage.stderr


def test_unreachable_etcd_fails_the_run_or_falls_back_to_the_file_lock(fleet):
    url = f"etcd://127.0.0.1:{free_port()}"
    failed = fleet.launcher.run("run", "critical", env=fleet.env("s1", url))
    assert failed.returncode == 1 and "is unreachable" in failed.event("job.finished").get("error", ""), failed.stdout
    local = fleet.launcher.run("run", "critical", env=fleet.env("s1", url, UNAVAILABLE="local", HOLD="0"))
    assert local.returncode == 0 and "lock.fallback_local" in local.names(), local.stdout[-2000:]
