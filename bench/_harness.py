"""Side-by-side timing of whole processes: A and B alternate, ratios are taken pair by pair.

Peak RSS comes from the kernel's accounting of each finished child (``wait4``'s ru_maxrss),
wall time from a monotonic clock around spawn-to-reap. Medians are printed; the machine's
drift hits A and B alike because they alternate.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_env(tmp: str, modules: Mapping[str, str], **extra: str) -> dict[str, str]:
    """Write job modules (name -> source) under ``tmp/mods`` and return an isolated environment
    for running them: state, locks and the import path inside ``tmp``, JSON logs, this checkout."""
    import textwrap

    mods = os.path.join(tmp, "mods")
    os.makedirs(mods, exist_ok=True)
    for name, source in modules.items():
        with open(os.path.join(mods, f"{name}.py"), "w") as handle:
            handle.write(textwrap.dedent(source))
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "JOBRUNNER_STATE_DIR": os.path.join(tmp, "state"),
        "JOBRUNNER_LOCK_DIR": os.path.join(tmp, "locks"),
        "JOBRUNNER_LOG_FORMAT": "json",
        "JOBRUNNER_PATH": mods,
        "PYTHONPATH": REPO,
        **extra,
    }


def run_once(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None
) -> tuple[float, int, int]:
    """Run ``argv`` to completion; return (wall seconds, peak RSS KiB, exit status)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss, proc.returncode


def compare(a: Sequence[str], b: Sequence[str], runs: int = 15, warmup: int = 2, **kw) -> dict[str, float]:
    """Alternate A and B; return medians and the median of the pairwise ratios.

    Every run must exit 0: timing a command that crashed at once would print a fine ratio."""
    for _ in range(warmup):
        for argv in (a, b):
            _, _, status = run_once(argv, **kw)
            if status != 0:
                raise SystemExit(f"benchmark aborted: {' '.join(map(str, argv))!r} exited {status}")
    walls_a, walls_b, rss_a, rss_b, wall_ratio, rss_ratio = [], [], [], [], [], []
    for _ in range(runs):
        wa, ra, sa = run_once(a, **kw)
        wb, rb, sb = run_once(b, **kw)
        if sa or sb:
            raise SystemExit(f"benchmark aborted: a run exited {sa or sb}")
        walls_a.append(wa)
        walls_b.append(wb)
        rss_a.append(ra)
        rss_b.append(rb)
        wall_ratio.append(wa / wb)
        rss_ratio.append(ra / rb)
    med = statistics.median
    return {
        "wall_a_ms": med(walls_a) * 1000,
        "wall_b_ms": med(walls_b) * 1000,
        "rss_a_mib": med(rss_a) / 1024,
        "rss_b_mib": med(rss_b) / 1024,
        "wall_ratio": med(wall_ratio),
        "rss_ratio": med(rss_ratio),
    }


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    sign = "≥" if higher_is_better else "≤"
    return f"{'met' if ok else 'MISSED'} (target {sign} {target:g}×)"


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], int] | None:
    """A real redis-server on 127.0.0.1 (a free port, no persistence, its own session), once it
    accepts connections: (process, port); None when redis-server is not installed."""
    import shutil
    import socket

    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(
        [*argv, "--daemonize", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def lease_round_trip(url: str, runs: int, ttl: float) -> float:
    """Median ms of acquiring and releasing the lease at ``url`` (its backend by the URL's
    scheme, ``jobrunner.locks.abc``) in an already-started interpreter: the lease's own cost,
    without the process start the paired figures include."""
    import types

    from jobrunner.declaration import Lock
    from jobrunner.locks.abc import acquire_lease

    class _Quiet:
        def __getattr__(self, _name):
            return lambda *a, **k: None

    job = types.SimpleNamespace(name="bench_inproc", kill_grace=0.0)
    spec, log = Lock(url=url, ttl=f"{ttl}s"), _Quiet()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        acquire_lease(job, spec, log, on_lost=lambda reason: None).release()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def lease_vs_file(
    backend: str, url: str, declared: str, tmp: str, jobs: Mapping[str, str], leased: str, runs: int, ttl: float
) -> None:
    """Print a leased run (job ``leased``, its URL in ``$BENCH_<BACKEND>_URL``) against the
    file-locked one (``file_locked``), paired, and the lease's in-process round trip."""
    import sys

    py = sys.executable
    env = job_env(tmp, jobs, **{f"BENCH_{backend.upper()}_URL": url})
    for name in jobs:  # both must succeed, or the timings mean nothing
        code = subprocess.run([py, "-m", "jobrunner", name], env=env, cwd=tmp, capture_output=True).returncode
        if code != 0:
            sys.exit(f"bench/{backend}_lock.py: {name} exited {code}")
    r = compare([py, "-m", "jobrunner", leased], [py, "-m", "jobrunner", "file_locked"], runs=runs, env=env, cwd=tmp)
    inproc = lease_round_trip(url, 200, ttl)
    print(f"{'run (empty job)':<40} {'wall ms':>9} {'peak RSS MiB':>13}")
    print(f"{declared:<40} {r['wall_a_ms']:>9.1f} {r['rss_a_mib']:>13.1f}")
    print(f"{'lock=True (flock)':<40} {r['wall_b_ms']:>9.1f} {r['rss_b_mib']:>13.1f}")
    print()
    print(f"{backend} / file lock  wall {r['wall_ratio']:.3f}×  (+{r['wall_a_ms'] - r['wall_b_ms']:.1f} ms per run)")
    print(f"{backend} / file lock  RSS  {r['rss_ratio']:.3f}×  (+{r['rss_a_mib'] - r['rss_b_mib']:.1f} MiB)")
    print(f"acquire + release in process (localhost {backend}): {inproc:.2f} ms median of 200")
