"""A fleet on one machine: real runner processes ("servers" s1…s5) share a real redis-server.

Each run records entering and leaving its critical section in one ledger file (O_APPEND,
CLOCK_MONOTONIC nanoseconds, which all processes of the machine share), so overlaps and
hand-over times are measured, not inferred.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import ledger_entries, overlaps, wait_for
from .test_redislock import free_port, own_redis, redis_server

pytest.importorskip("redis")

CRITICAL = """
    import os, time
    from jobrunner import job, Lock

    @job(
        lock=Lock(redis=True, ttl=os.environ.get("TTL", "3s"), wait=os.environ.get("WAIT") or None,
                  unavailable=os.environ.get("UNAVAILABLE", "fail")),
        kill_grace=0.5, network=True,
    )
    def critical(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"in {ctx.env['SERVER']} {time.monotonic_ns()}\\n".encode())
        try:
            end = time.monotonic() + float(ctx.env.get("HOLD", "0.5"))
            while time.monotonic() < end:
                time.sleep(0.02)
        finally:
            os.write(fd, f"out {ctx.env['SERVER']} {time.monotonic_ns()}\\n".encode())
            os.close(fd)
"""


def entered(entries, server: str) -> float:
    """When SERVER entered, in time.monotonic() seconds."""
    return next(ns / 1e9 for kind, s, ns in entries if kind == "in" and s == server)


def left(entries, server: str) -> float:
    return next(ns / 1e9 for kind, s, ns in entries if kind == "out" and s == server)


@pytest.fixture
def fleet(launcher, tmp_path):
    launcher.write_job("critical", CRITICAL)
    ledger = tmp_path / "ledger"

    def env(server: str, url: str | None, **extra: str) -> dict[str, str]:
        more = {"JOBRUNNER_REDIS_URL": url} if url else {}
        return launcher.env(LEDGER=str(ledger), SERVER=server, **more, **extra)

    return launcher, ledger, env


def wait_exit(proc, timeout: float) -> float:
    """Wait for ``proc`` to end; return the monotonic time it was seen gone."""
    assert wait_for(lambda: proc.poll() is not None, timeout, interval=0.005), "the holder did not stop"
    return time.monotonic()


@pytest.mark.slow
def test_five_servers_ten_rounds_exactly_one_runs_never_overlapping(fleet, redis_server):
    """5 servers race 10 times: each round exactly one runs (exit 0), four skip (75); no overlap at all."""
    launcher, ledger, env = fleet
    redis_server.client().flushdb()
    for round_ in range(10):
        procs = [
            launcher.start("critical", env=env(f"s{i}", redis_server.url, HOLD="1.0", TTL="3s")) for i in range(1, 6)
        ]
        runs = [launcher.finish(p) for p in procs]
        codes = sorted(r.returncode for r in runs)
        assert codes == [0, 75, 75, 75, 75], (round_, [r.stdout[-800:] for r in runs])
        busy = [r.event("lock.busy") for r in runs if r.returncode == 75]
        assert all(b["path"] == "jobrunner:lock:critical" for b in busy)
    entries = ledger_entries(ledger)
    assert overlaps(entries) == 0
    assert sum(1 for kind, _, _ in entries if kind == "in") == 10
    assert redis_server.client().get("jobrunner:lock:critical") is None  # every winner released
    print(f"race: 10 rounds x 5 servers, {sum(1 for k, _, _ in entries if k == 'in')} runs, 0 overlaps")


@pytest.mark.slow
def test_redis_down_past_the_lease_holder_stops_before_it_could_expire(fleet, own_redis):
    """Redis SIGKILLed and kept down: the holder exits 1 with lock.lost before the key could
    have expired; after the restart a waiting server runs only after the holder stopped."""
    launcher, ledger, env = fleet
    own_redis.settle(2)
    holder = launcher.start("critical", env=env("s1", own_redis.url, HOLD="30", TTL="2s"))
    assert wait_for(lambda: ledger_entries(ledger), 15)
    client = own_redis.client()
    time.sleep(0.8)  # a renewal or two
    measured, pttl = time.monotonic(), client.pttl("jobrunner:lock:critical") / 1000
    assert pttl > 0
    killed = own_redis.kill()
    stopped = wait_exit(holder, 10)
    run = launcher.finish(holder)
    assert run.returncode == 1, run.stdout[-2000:]
    assert "lock.lost" in run.names() and "lock.renew_failed" in run.names()
    assert run.event("job.finished")["outcome"] == "failure"
    could_expire = measured + pttl
    print(
        f"redis down: holder stopped {stopped - killed:.2f}s after the kill, {could_expire - stopped:.2f}s before the lease could expire"
    )
    assert stopped < could_expire, (
        f"stopped {stopped - killed:.2f}s after the kill; lease could expire at {could_expire - killed:.2f}s"
    )
    own_redis.start()
    second = launcher.run("critical", env=env("s2", own_redis.url, HOLD="0.1", TTL="2s", WAIT="10s"))
    assert second.returncode == 0, second.stdout[-2000:]
    entries = ledger_entries(ledger)
    assert overlaps(entries) == 0
    assert entered(entries, "s2") > max(left(entries, "s1"), stopped)


@pytest.mark.slow
def test_redis_restarted_at_once_no_second_holder_before_the_first_stopped(fleet, own_redis):
    """Redis SIGKILLed and restarted empty at once, a server already waiting: the holder sees its
    key gone and exits 1 (lock.lost); the waiter is granted nothing until the restarted Redis has
    been up a whole ttl, so it enters only after the holder stopped."""
    launcher, ledger, env = fleet
    own_redis.settle(2)
    holder = launcher.start("critical", env=env("s1", own_redis.url, HOLD="30", TTL="2s"))
    assert wait_for(lambda: ledger_entries(ledger), 15)
    time.sleep(0.5)
    killed = own_redis.kill()
    own_redis.start()
    waiter = launcher.start("critical", env=env("s2", own_redis.url, HOLD="0.1", TTL="2s", WAIT="15s"))
    stopped = wait_exit(holder, 10)
    run = launcher.finish(holder)
    assert run.returncode == 1 and "lock.lost" in run.names(), run.stdout[-2000:]
    assert stopped - killed < 2.0
    print(f"redis restarted: holder stopped {stopped - killed:.2f}s after the kill")
    second = launcher.finish(waiter)
    assert second.returncode == 0, second.stdout[-2000:]
    entries = ledger_entries(ledger)
    assert overlaps(entries) == 0
    assert entered(entries, "s2") > max(left(entries, "s1"), stopped)
    print(f"redis restarted: the waiter entered {entered(entries, 's2') - stopped:.2f}s after the holder stopped")


@pytest.mark.slow
def test_sigkilled_holder_is_succeeded_after_the_ttl_not_before(fleet, redis_server):
    """A holder SIGKILLed (no release): a waiting server enters after the lease expires, not before, and within ~a ttl."""
    launcher, ledger, env = fleet
    redis_server.client().flushdb()
    holder = launcher.start("critical", env=env("s1", redis_server.url, HOLD="60", TTL="2s"))
    assert wait_for(lambda: ledger_entries(ledger), 15)
    time.sleep(0.5)
    client = redis_server.client()
    measured, pttl = time.monotonic(), client.pttl("jobrunner:lock:critical") / 1000
    os.killpg(holder.pid, signal.SIGKILL)
    killed = time.monotonic()
    holder.wait(5)
    second = launcher.run("critical", env=env("s2", redis_server.url, HOLD="0.1", TTL="2s", WAIT="10s"))
    assert second.returncode == 0, second.stdout[-2000:]
    took_over = entered(ledger_entries(ledger), "s2")
    print(
        f"sigkilled holder: taken over {took_over - killed:.2f}s after the kill, {took_over - (measured + pttl):.3f}s after the lease expired"
    )
    assert took_over >= measured + pttl - 0.01, f"entered {measured + pttl - took_over:.3f}s before the lease expired"
    assert took_over - killed < 2.0 + 1.0, f"took over {took_over - killed:.2f}s after the kill (ttl 2s)"


def test_unreachable_redis_fails_in_one_line_without_the_password(fleet):
    """unavailable="fail" (default): Redis unreachable at start → exit 1, one job.failed event
    (RedisUnavailable), no traceback, the password masked; the job never ran."""
    launcher, ledger, env = fleet
    url = f"redis://:Sup3rSecretPw@127.0.0.1:{free_port()}/0"
    run = launcher.run("critical", env=env("s1", url))
    assert run.returncode == 1
    failed = run.event("job.failed")
    assert failed["exception"]["type"] == "RedisUnavailable"
    assert "unreachable" in failed["exception"]["message"] and "\n" not in failed["exception"]["message"]
    assert "Sup3rSecretPw" not in run.stdout + run.stderr and "Traceback" not in run.stdout + run.stderr
    assert not ledger.exists()


def test_unreachable_redis_falls_back_to_the_file_lock_when_told(fleet):
    """unavailable="local": Redis unreachable → lock.fallback_local warning, the file lock, the job runs."""
    launcher, ledger, env = fleet
    url = f"redis://:Sup3rSecretPw@127.0.0.1:{free_port()}/0"
    run = launcher.run("critical", env=env("s1", url, UNAVAILABLE="local", HOLD="0"))
    assert run.returncode == 0, run.stdout
    fallback = run.event("lock.fallback_local")
    assert fallback["level"] == "warning" and "***" in fallback["reason"]
    assert run.event("lock.acquired")["path"].endswith("critical.lock")
    assert "Sup3rSecretPw" not in run.stdout + run.stderr
    assert ledger.exists()


def test_redis_true_without_the_url_exits_78(fleet):
    """redis=True and no $JOBRUNNER_REDIS_URL: exit 78, one event naming the variable, no traceback."""
    launcher, ledger, env = fleet
    run = launcher.run("critical", env=env("s1", None))
    assert run.returncode == 78
    assert "JOBRUNNER_REDIS_URL" in run.event("job.failed")["exception"]["message"]
    assert "Traceback" not in run.stdout + run.stderr
    assert not ledger.exists()


def test_redis_is_imported_only_by_jobs_with_a_redis_lock(launcher, tmp_path):
    """A file-locked job does not import redis or jobrunner.locks.redis."""
    import json
    import subprocess
    import sys

    from .test_imports import PROBE

    launcher.write_job("filelocked", "from jobrunner import job\n@job(lock=True)\ndef filelocked(ctx): pass\n")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "filelocked"], capture_output=True, text=True, timeout=60, env=launcher.env()
    )
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "jobrunner.locks.file" in loaded
    assert "redis" not in loaded and "jobrunner.locks.redis" not in loaded


def test_exec_wraps_a_script_under_a_redis_lease(launcher, redis_server, tmp_path):
    """`jobrunner exec NAME --redis -- script` on two "servers" (each its own lock dir, so only
    Redis can exclude them): the second exits 75 naming the Redis key; the first's script ran
    and its exit status passes through; the lease is released."""
    redis_server.client().flushdb()
    started = tmp_path / "started"
    script = f"touch {started}; sleep 2; exit 3"

    def env(server: str) -> dict[str, str]:
        return {**launcher.env(JOBRUNNER_REDIS_URL=redis_server.url), "JOBRUNNER_LOCK_DIR": str(tmp_path / server)}

    holder = launcher.start(
        "exec", "legacy-sync", "--redis", "--lock-ttl", "3s", "--", "sh", "-c", script, env=env("s1")
    )
    assert wait_for(started.exists, 15), "the holder's script never started"
    busy = launcher.run("exec", "legacy-sync", "--redis", "--", "sh", "-c", "echo must-not-run", env=env("s2"))
    assert busy.returncode == 75, busy.stdout
    assert busy.event("lock.busy")["path"] == "jobrunner:lock:legacy-sync"
    assert "must-not-run" not in busy.stdout
    done = launcher.finish(holder)
    assert done.returncode == 3, done.stdout  # the script's own status, as exec promises
    assert redis_server.client().get("jobrunner:lock:legacy-sync") is None


def test_exec_redis_fallback_and_a_password_on_the_command_line(launcher, tmp_path):
    """--redis-unavailable local runs on the file lock when Redis is down; a URL with a password
    as --redis's argument is refused (exit 64, usage, one line) before anything runs or is logged."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    run = launcher.run("exec", "legacy", "--redis", down, "--redis-unavailable", "local", "--", "true")
    assert run.returncode == 0, run.stdout
    assert run.event("lock.acquired")["path"].endswith("legacy.lock") and "lock.fallback_local" in run.names()
    refused = launcher.run("exec", "legacy", "--redis", f"redis://:Pw-on-argv@127.0.0.1:{free_port()}/0", "--", "true")
    assert refused.returncode == 64 and "JOBRUNNER_REDIS_URL" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not refused.stdout
    assert "Pw-on-argv" not in refused.stderr


SINGLETON = """
    import os, time
    from jobrunner import job, Lock

    @job(schedule="*:0/5", lock=Lock(redis=True, ttl="3s"), network=True)
    def report(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"ran {os.uname().nodename} {ctx.env.get('TRIGGER_TIMER_REALTIME_USEC', 'by-hand')}\\n".encode())
        os.close(fd)
        time.sleep(0.2)
"""


SINGLETON_IO = """
    import os, time
    from jobrunner import job, Lock

    def mark(ctx, kind):
        fd = os.open(ctx.env["LEDGER"] + ".io", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{kind} {os.uname().nodename} {time.monotonic_ns()}\\n".encode())
        os.close(fd)

    @job(schedule="*:0/5", lock=Lock(redis=True, ttl="3s"), network=True)
    def report(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"ran {os.uname().nodename}\\n".encode())
        os.close(fd)
        mark(ctx, "in")
        time.sleep(0.2)
        mark(ctx, "out")
"""


def _fire(launcher, host: str, env: dict[str, str], at: float | None):
    """``jobrunner run report`` as host HOST's timer (or a person, ``at=None``) starts it: its
    own UTS namespace (hostname HOST), the variables systemd gives a timer's service."""
    return launcher.start_on_host(host, "run", "report", env=env, timer=None if at is None else ("report.timer", at))


@pytest.mark.slow
def test_twenty_hosts_firing_up_to_3s_apart_run_a_short_singleton_once(launcher, redis_server, tmp_path):
    """Issue #27: 20 hosts (UTS namespaces) whose timers fire for the same elapse of
    ``*:0/5`` up to 3 s apart run a 0.2 s singleton once: one exit 0, 19 exit 75 naming the
    host that ran it. The next firing runs once again, and a run by hand is not a firing."""
    import random

    launcher.write_job("report", SINGLETON)
    ledger = tmp_path / "ledger"
    env = launcher.env(JOBRUNNER_REDIS_URL=redis_server.url, LEDGER=str(ledger))
    redis_server.client().flushdb()
    boundary = time.time() // 300 * 300 - 600  # an elapse of */5 ten minutes ago: the firing
    for firing in (boundary, boundary + 300):
        began = time.monotonic()
        procs = []
        for n, delay in enumerate(sorted(random.uniform(0, 3.0) for _ in range(20))):
            time.sleep(max(0.0, began + delay - time.monotonic()))
            # each host's timer elapsed at its own moment after the calendar time
            procs.append(_fire(launcher, f"h{n:02d}", env, firing + 20 + delay))
        runs = [launcher.finish(p) for p in procs]
        codes = sorted(r.returncode for r in runs)
        assert codes == [0] + [75] * 19, [r.stdout[-600:] for r in runs if r.returncode not in (0, 75)]
        winner = next(r for r in runs if r.returncode == 0)
        busy = [r.event("lock.busy") for r in runs if r.returncode == 75]
        assert all("ran already" in b["reason"] for b in busy), busy[:2]
        assert all(winner.event("lock.acquired")["holder"].split(":")[0] in b["reason"] for b in busy)
    lines = ledger.read_text().splitlines()
    assert len(lines) == 2, lines
    by_hand = launcher.finish(_fire(launcher, "h00", env, None))
    assert by_hand.returncode == 0 and len(ledger.read_text().splitlines()) == 3
    keys = sorted(k.decode() for k in redis_server.client().keys("jobrunner:firing:*"))
    assert keys == [f"jobrunner:firing:report:{int(boundary)}", f"jobrunner:firing:report:{int(boundary) + 300}"]


def test_unreachable_redis_skips_by_default_so_a_fleet_is_not_paged_per_host(launcher, tmp_path):
    """Issue #27: Redis down at start, the default policy (``unavailable="skip"``): exit 75,
    outcome skipped, one ``lock.unavailable`` warning with the password masked, no job.failed,
    whatever ``busy=`` says; the fleet is told once, by ``health --fleet`` (UNKNOWN)."""
    from .conftest import jobrunner_cli

    launcher.write_job(
        "downjob",
        """
        from jobrunner import job, Lock

        @job(lock=Lock(redis=True, ttl="3s", busy="fail"), network=True)
        def downjob(ctx):
            ctx.log.info("downjob.ran")
        """,
    )
    url = f"redis://:pw-s3cret@127.0.0.1:{free_port()}/0"
    run = launcher.run("downjob", env=launcher.env(JOBRUNNER_REDIS_URL=url))
    assert run.returncode == 75, run.stdout[-800:]
    assert run.event("job.finished")["outcome"] == "skipped"
    warning = run.event("lock.unavailable")
    assert warning["level"] == "warning" and "unreachable" in warning["reason"]
    assert "job.failed" not in run.names() and "downjob.ran" not in run.names()
    assert "pw-s3cret" not in run.stdout + run.stderr
    health = jobrunner_cli("health", "--fleet", JOBRUNNER_REDIS_URL=url)
    assert health.returncode == 3 and health.stdout.startswith("UNKNOWN: the fleet's Redis is unavailable")


def test_every_child_of_a_leased_run_gets_the_fencing_token(launcher, redis_server, tmp_path):
    """``ctx.run`` and ``jobrunner exec``: the child's environment holds JOBRUNNER_FENCING_TOKEN,
    the token of the run's lease (lock.acquired)."""
    out = tmp_path / "token"
    launcher.write_job(
        "fenced",
        f"""
        from jobrunner import job, Lock

        @job(lock=Lock(redis=True, ttl="3s"), network=True)
        def fenced(ctx):
            ctx.run(["sh", "-c", 'printf %s "$JOBRUNNER_FENCING_TOKEN" > {out}'])
        """,
    )
    env = launcher.env(JOBRUNNER_REDIS_URL=redis_server.url)
    run = launcher.run("fenced", env=env)
    assert run.returncode == 0 and out.read_text() == str(run.event("lock.acquired")["fencing_token"])
    wrapped = launcher.run(
        "exec",
        "legacy-fenced",
        "--redis",
        "--lock-ttl",
        "3s",
        "--",
        "sh",
        "-c",
        f'printf %s "$JOBRUNNER_FENCING_TOKEN" > {out}',
        env=env,
    )
    assert wrapped.returncode == 0 and out.read_text() == str(wrapped.event("lock.acquired")["fencing_token"])
    assert int(out.read_text()) > int(run.event("lock.acquired")["fencing_token"])


def test_a_foreign_lease_on_a_root_jobs_key_is_a_warning_naming_the_holder(launcher, redis_server):
    """Issue #25 finding 3: another writer SETs ``jobrunner:lock:<name>`` with a long TTL (where
    Redis has no ACLs): each run skips with a ``lock.foreign`` warning naming the holder
    (escaped), never a quiet info, and ``health`` reports it."""
    import json

    launcher.write_job(
        "fj",
        """
        from jobrunner import job, Lock

        @job(lock=Lock(redis=True, ttl="3s"), network=True)
        def fj(ctx):
            ctx.log.info("fj.ran")
        """,
    )
    client = redis_server.client()
    client.set("jobrunner:lock:fj", "evil\x1b[2Jholder", ex=86400)
    try:
        env = launcher.env(JOBRUNNER_REDIS_URL=redis_server.url)
        run = launcher.run("fj", env=env)
        assert run.returncode == 75 and "fj.ran" not in run.names()
        warning = run.event("lock.foreign")
        assert warning["level"] == "warning" and "\x1b" not in warning["holder"] and "evil" in warning["holder"]
        assert "foreign or stale" in warning["reason"]
        # a key of our form but a TTL no run of this job sets: stale, or forged
        client.set("jobrunner:lock:fj", "web1:123:abc", ex=86400)
        assert launcher.run("fj", env=env).event("lock.foreign")["holder"] == "web1:123:abc"
        health = launcher.run("health", "--json", "--package", "fj", "fj", env=env)
        doc = json.loads(health.stdout)
        reasons = " ".join(r for j in doc["jobs"] for r in j["reasons"])
        assert "foreign or stale holder 'web1:123:abc'" in reasons, health.stdout
    finally:
        client.delete("jobrunner:lock:fj")


@pytest.mark.slow
def test_fifty_hosts_one_firing_once_no_overlap_and_every_host_in_the_views(launcher, redis_server, tmp_path):
    """Issue #27's CI fleet: 50 hosts (UTS namespaces) fire one elapse of ``*:0/5`` over 3 s
    with publishing on: the singleton ran once, no two runs overlapped (the ledger's in/out
    times), Redis received one connection per host, and ``status --fleet`` shows all 50 hosts
    (49 of them skipped), ``health --fleet`` names no silent host."""
    import json
    import random

    from .conftest import jobrunner_cli

    launcher.write_job("report", SINGLETON_IO)
    ledger = tmp_path / "ledger"
    env = launcher.env(JOBRUNNER_REDIS_URL=redis_server.url, LEDGER=str(ledger))
    client = redis_server.client()
    client.flushdb()
    firing = time.time() // 300 * 300 - 600
    connections = int(client.info("stats")["total_connections_received"])
    began = time.monotonic()
    procs = []
    for n, delay in enumerate(sorted(random.uniform(0, 3.0) for _ in range(50))):
        time.sleep(max(0.0, began + delay - time.monotonic()))
        host_env = {**env, "JOBRUNNER_STATE_DIR": str(tmp_path / f"h{n:02d}" / "state")}
        host_env["JOBRUNNER_LOCK_DIR"] = str(tmp_path / f"h{n:02d}" / "locks")
        procs.append(_fire(launcher, f"h{n:02d}", host_env, firing + 20 + delay))
    runs = [launcher.finish(p, timeout=180) for p in procs]
    assert sorted(r.returncode for r in runs) == [0] + [75] * 49
    # one connection per host: its lease's, which then carried its record (or its skip's)
    assert int(client.info("stats")["total_connections_received"]) - connections == 50
    assert len(ledger.read_text().splitlines()) == 1
    assert overlaps(ledger_entries(Path(str(ledger) + ".io"))) == 0
    cells = [
        json.loads(x)
        for x in jobrunner_cli("status", "--fleet", "--json", JOBRUNNER_REDIS_URL=redis_server.url).stdout.splitlines()
    ]
    assert len({c["host"] for c in cells}) == 50
    assert sorted(c["last_outcome"] for c in cells) == ["skipped"] * 49 + ["success"]
    health = json.loads(
        jobrunner_cli("health", "--fleet", "--json", "--package", "nosuch", JOBRUNNER_REDIS_URL=redis_server.url).stdout
    )
    assert not [j for j in health["jobs"] if j["job"].startswith("host ")]
    assert client.xlen("jobrunner:runs") == 1  # one run; 49 skips only in the views


def test_a_leased_run_and_its_fleet_record_share_one_connection(fleet, redis_server):
    """Issue #27: a run's lease leaves its connection to the run's fleet record, so a firing
    costs Redis one connection per host, not two: for the run that holds the lease and for a
    run that finds it held and publishes its skip (Redis's own counters, before and after)."""
    launcher, _ledger, env = fleet
    client = redis_server.client()
    client.flushdb()

    def connections() -> int:
        return int(client.info("stats")["total_connections_received"])

    before = connections()
    run = launcher.run("critical", env=env("s1", redis_server.url, HOLD="0.05"))
    assert run.returncode == 0 and run.event("lock.released") and "fleet.publish_failed" not in run.names()
    assert connections() - before == 1
    assert client.hget("jobrunner:runs:brief", f"{run.event('job.started')['host']}\tcritical")
    client.set("jobrunner:lock:critical", "web9:4242:abc", px=3000)  # another server holds it
    before = connections()
    busy = launcher.run("critical", env=env("s2", redis_server.url))
    assert busy.returncode == 75 and busy.event("lock.busy") and "fleet.publish_failed" not in busy.names()
    assert connections() - before == 1
    assert client.xlen("jobrunner:runs") == 1 and client.hlen("jobrunner:runs:seen") == 1  # the skip: seen, no run
    client.delete("jobrunner:lock:critical")
