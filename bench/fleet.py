#!/usr/bin/env python3
"""The fleet's views at 100 and 1,000 hosts × 50 jobs (issue #27).

    python bench/fleet.py [--hosts 100,1000] [--jobs 50] [--repeat 3]

Starts a private ``redis-server`` on 127.0.0.1 and a free port; for each fleet size fills it
as the hosts' runs would (``jobrunner.fleet.stream.publish_commands``: each host × job's last
runs, one in ten failing on a few hosts, skips, the stream full at its default 10,000 runs),
then times whole ``jobrunner`` processes: ``history --fleet``, ``status --fleet``,
``health --fleet`` and the page (``status --fleet --html``), each the median of ``--repeat``
and printed as a ratio to ``jobrunner version`` timed in the same run; the page's size; and
Redis's memory per host × job (``used_memory`` after the fill minus before, over hosts × jobs).
Targets: each view ≤ 1 s on this machine, the page ≤ 1 MB.

    python bench/fleet.py --firing 100 [--tree PATH] [--auth]

One firing of a leased, publishing singleton on that many hosts (each ``jobrunner run`` in
its own UTS namespace, as its timer would start it; needs root): the connections Redis
received and the commands it processed (``INFO stats``, before and after), per firing and per
host. ``--tree`` runs another checkout's jobrunner (e.g. main, for the figures before);
``--auth`` gives Redis a password (every connection then starts with ``AUTH``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from _harness import job_env, start_redis  # noqa: E402

SINGLETON = """
    import time
    from jobrunner import job, Lock

    @job(schedule="*:0/5", lock=Lock(redis=True, ttl="5s"), network=True)
    def report(ctx):
        time.sleep(0.2)
"""


def firing(hosts: int, tree: str, auth: bool = False) -> int:
    """One firing on ``hosts`` hosts: connections and commands, from Redis's own counters."""
    import redis

    with tempfile.TemporaryDirectory() as tmp:
        started = start_redis(tmp)
        if started is None:
            sys.exit("bench/fleet.py: needs redis-server (apt-get install -y redis-server)")
        server, port = started
        try:
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        sys.exit("bench/fleet.py: redis-server did not start")
                    time.sleep(0.1)
            time.sleep(6)  # the restart guard: no lease from a Redis up for less than a ttl
            url = f"redis://127.0.0.1:{port}/0"
            if auth:  # as docs/fleets.md advises: a password (each connection starts with AUTH)
                client.config_set("requirepass", "bench-pw-27")
                client = redis.Redis(host="127.0.0.1", port=port, password="bench-pw-27")
                url = f"redis://:bench-pw-27@127.0.0.1:{port}/0"
            env = job_env(tmp, {"report": SINGLETON}, JOBRUNNER_REDIS_URL=url)
            env["PYTHONPATH"] = tree
            boundary = time.time() // 300 * 300 - 600
            env.update(TRIGGER_UNIT="report.timer", TRIGGER_TIMER_REALTIME_USEC=str(int((boundary + 20) * 1e6)))
            before = client.info("stats")
            procs = []
            for n in range(hosts):
                host_env = {**env, "JOBRUNNER_STATE_DIR": os.path.join(tmp, f"h{n}", "state")}
                host_env["JOBRUNNER_LOCK_DIR"] = os.path.join(tmp, f"h{n}", "locks")
                argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', f"h{n:03d}"]
                argv += [sys.executable, "-m", "jobrunner", "run", "report"]
                procs.append(
                    subprocess.Popen(argv, env=host_env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                )
            codes = sorted(p.wait(300) for p in procs)
            reasons: dict[str, int] = {}
            for p in procs:
                assert p.stdout is not None
                for line in p.stdout.read().decode(errors="replace").splitlines():
                    if '"event":"lock.' in line:
                        event = line.split('"event":"', 1)[1].split('"', 1)[0]
                        reasons[event] = reasons.get(event, 0) + 1
            after = client.info("stats")
            published = client.zcard("jobrunner:runs:hosts")
        finally:
            server.terminate()
            server.wait(10)
    # our own INFO call is one connection-less command between the two readings
    conns = after["total_connections_received"] - before["total_connections_received"]
    cmds = after["total_commands_processed"] - before["total_commands_processed"] - 1
    ran = codes.count(0)
    print(
        f"{hosts} hosts, one firing{' with a password' if auth else ''} ({tree}): ran {ran}, skipped {codes.count(75)}, other {len(codes) - ran - codes.count(75)}"
    )
    print(f"hosts that published: {published}; lock events: {reasons}")
    print(f"connections {conns} ({conns / hosts:.2f} per host), commands {cmds} ({cmds / hosts:.2f} per host)")
    return 0


def _fill(url: str, hosts: int, jobs: int, runs_each: int = 4) -> None:
    from jobrunner.fleet.stream import publish_commands
    from jobrunner.locks.resp import RespError, call
    from jobrunner.store.history import RunRecord

    rng = random.Random(27)
    now = time.time()
    batch: list[tuple[str, ...]] = []
    n = 0
    for k in range(runs_each):
        for h in range(hosts):
            host = f"web{h:04d}.example.net"
            for j in range(jobs):
                failed = rng.random() < 0.02
                skipped = not failed and rng.random() < 0.5
                outcome = "failure" if failed else "skipped" if skipped else "success"
                start = now - (runs_each - k) * 600 - rng.random() * 60
                error = "rsync: connection refused" if failed else None
                tail = ("rsync: connection refused", "job.failed") if failed else ()
                record = RunRecord(
                    f"job_{j:02d}",
                    host,
                    f"{n:032x}",
                    start,
                    rng.uniform(0.1, 30),
                    outcome,
                    1 if failed else 0,
                    1,
                    error=error,
                    tail=tail,
                )
                batch.extend(publish_commands(record))
                n += 1
                if len(batch) >= 5000:
                    assert not [r for r in call(url, batch, timeout=60) if isinstance(r, RespError)]
                    batch = []
    if batch:
        assert not [r for r in call(url, batch, timeout=60) if isinstance(r, RespError)]


def _time(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    times, proc = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - began)
        if proc.returncode not in (0, 1, 2):
            sys.exit(f"bench/fleet.py: {' '.join(argv[2:])} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    assert proc is not None
    return statistics.median(times), proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="100,1000")
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--firing", type=int, metavar="HOSTS", help="count one firing's connections and commands")
    parser.add_argument("--tree", default=REPO, help="with --firing: the checkout whose jobrunner runs")
    parser.add_argument("--auth", action="store_true", help="with --firing: a Redis with a password")
    args = parser.parse_args()
    if args.firing:
        return firing(args.firing, os.path.abspath(args.tree), args.auth)
    import redis

    from jobrunner.fleet.stream import VIEW_KEYS

    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        started = start_redis(tmp)
        if started is None:
            sys.exit("bench/fleet.py: needs redis-server (apt-get install -y redis-server)")
        server, port = started
        try:
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis(host="127.0.0.1", port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        sys.exit("bench/fleet.py: redis-server did not start")
                    time.sleep(0.1)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": REPO,
                "JOBRUNNER_REDIS_URL": url,
                "JOBRUNNER_STATE_DIR": os.path.join(tmp, "state"),
                "JOBRUNNER_PATH": os.path.join(tmp, "nomods"),
            }
            for hosts in (int(x) for x in args.hosts.split(",")):
                client.flushall()
                before = int(client.info("memory")["used_memory"])
                began = time.perf_counter()
                _fill(url, hosts, args.jobs)
                fill_s = time.perf_counter() - began
                used = int(client.info("memory")["used_memory"]) - before
                views_bytes = sum(int(client.memory_usage(f"jobrunner:runs{suffix}") or 0) for suffix in VIEW_KEYS)
                base, _ = _time([py, "-m", "jobrunner", "version"], env, args.repeat)
                page = os.path.join(tmp, f"fleet-{hosts}.html")
                timed = {}
                for label, argv in (
                    ("history --fleet", ["history", "--fleet", "--json"]),
                    ("status --fleet", ["status", "--fleet", "--json"]),
                    ("health --fleet", ["health", "--fleet", "--json", "--package", "nosuch"]),
                    ("status --fleet --html", ["status", "--fleet", "--html", page]),
                ):
                    timed[label], _ = _time([py, "-m", "jobrunner", *argv], env, args.repeat)
                rows.append((hosts, base, timed, os.path.getsize(page), used, views_bytes, fill_s))
        finally:
            server.terminate()
            server.wait(10)
    for hosts, base, timed, page_bytes, used, views_bytes, fill_s in rows:
        pairs = hosts * args.jobs
        print(f"\n{hosts} hosts × {args.jobs} jobs ({pairs} pairs; filled in {fill_s:.1f}s)")
        print(f"{'command':<24} {'s':>7} {'× version':>10}  target ≤ 1 s")
        print(f"{'jobrunner version':<24} {base:>7.3f} {1.0:>10.2f}")
        for label, secs in timed.items():
            print(f"{label:<24} {secs:>7.3f} {secs / base:>10.2f}  {'met' if secs <= 1.0 else 'NOT MET'}")
        print(f"page: {page_bytes / 1e6:.2f} MB ({'met' if page_bytes <= 1_000_000 else 'NOT MET'}: ≤ 1 MB)")
        print(
            f"Redis: {used / 1e6:.1f} MB in all (stream of 10,000 runs included); the views "
            f"{views_bytes / 1e6:.1f} MB = {views_bytes / pairs:.0f} bytes per host × job"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
