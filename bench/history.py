#!/usr/bin/env python3
"""Run history and the status page at scale (issue #16).

    python bench/history.py [--runs N]

- the history query: ``jobrunner history`` (default limit; ``--since``, ``--outcome``; and
  ``--limit 0``: everything, reported) over 100,000 recorded runs (100 jobs × 1,000, the
  default bound), in process (target ≤ 0.2 s);
- the status page for 200 jobs × 100 runs: collect + render time (target ≤ 1 s) and size
  (target ≤ 1 MB); the fleet's page for 200 jobs × 20 hosts (10,000 records, the stream's
  default cap), verdicts + render (same targets);
- the added cost per run of recording history: ``python -m jobrunner jobs.noop`` with and
  without (``JOBRUNNER_HISTORY=off``), alternated, as a share of the startup figure (target
  ≤ 5 %); and the hook's own append into a full (1,000-record) file, timed in process;
- beside it, the added cost per run of publishing to the fleet's stream: the same with
  ``$JOBRUNNER_REDIS_URL`` pointing at a real redis-server on 127.0.0.1, and without
  (reported: one ``XADD`` over a socket; the redis client is not imported).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import REPO, run_once, start_redis

from jobrunner.observe import statuspage
from jobrunner.store import history
from jobrunner.store.history import RunRecord


def seed(root: str, jobs: int, runs: int) -> int:
    """Write ``jobs`` histories of ``runs`` records (5 % failures with an output tail); bytes."""
    now = time.time()
    total = 0
    for j in range(jobs):
        name = f"job_{j:03d}"
        os.makedirs(os.path.join(root, name), exist_ok=True)
        lines = []
        for i in range(runs):
            failed = (i * 7 + j) % 20 == 0
            record = RunRecord(
                job=name,
                host="web1",
                run_id=os.urandom(16).hex(),
                start=now - 300 * (runs - i),
                duration_s=2.0 + (i * 13 + j) % 40,
                outcome="failure" if failed else "success",
                exit_code=1 if failed else 0,
                attempts=1,
                error="RuntimeError: rsync: connection unexpectedly closed (code 12)" if failed else None,
                tail=tuple(f"08:00:{k:02d} info step.done item={k}" for k in range(10)) if failed else (),
            )
            lines.append(json.dumps(record.to_dict(), separators=(",", ":")))
        data = ("\n".join(lines) + "\n").encode()
        with open(os.path.join(root, name, history.FILE_NAME), "wb") as f:
            f.write(data)
        total += len(data)
    return total


def timed(fn, repeat: int) -> float:
    """Median seconds of ``fn()``."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def query(root: str, *args: str) -> None:
    from jobrunner.cli import main as cli

    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(["history", "--state-dir", root, *args]) == 0


def line(label: str, value: float, unit: str, target: float) -> str:
    ok = "met" if value <= target else "MISSED"
    return f"{label:<44} {value:.3f}{unit}  {ok} (target ≤ {target:g}{unit})"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="process pairs for the per-run cost")
    args = parser.parse_args()
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "state")
        size = seed(root, 100, 1000)
        out.append(f"history: 100 jobs × 1,000 runs = 100,000 records, {size / 1e6:.1f} MB on disk")
        q_default = timed(lambda: query(root), 5)
        q_all = timed(lambda: query(root, "--limit", "0", "--json"), 3)
        q_fail = timed(lambda: query(root, "--outcome", "failure", "--since", "1d"), 3)
        q_failed = timed(lambda: query(root, "--outcome", "failed"), 3)
        q_since = timed(lambda: query(root, "--since", "2h"), 3)
        out.append(line("history query (default: newest 50)", q_default, "s", 0.2))
        out.append(line("history --outcome failure --since 1d", q_fail, "s", 0.2))
        out.append(line("history --since 2h", q_since, "s", 0.2))
        out.append(line("history --outcome failed (all time)", q_failed, "s", 0.2))
        out.append(f"{'history --limit 0 --json (all 100,000)':<44} {q_all:.3f}s  (reported)")

        page_root = os.path.join(tmp, "page")
        seed(page_root, 200, 100)

        def page() -> str:
            return statuspage.render(statuspage.collect(page_root, systemd=False))

        page_s = timed(page, 5)
        page_bytes = len(page().encode())
        out.append(line("status page, 200 jobs (collect + render)", page_s, "s", 1.0))
        out.append(line("status page size, 200 jobs", page_bytes / 1e6, " MB", 1.0))

        # The fleet's page: 200 jobs × 20 hosts, the stream at its default cap (10,000 records).
        now = time.time()
        fleet_records = [
            RunRecord(
                f"job_{j:03d}",
                f"web{h:02d}.example.net",
                os.urandom(16).hex(),
                now - 300 * k - j,
                2.0,
                "failure" if (j + h + k) % 17 == 0 else "success",
                0,
                1,
            )
            for k in range(2, -1, -1)
            for j in range(200)
            for h in range(20)
        ][-10000:]

        def fleet_page() -> str:
            from jobrunner.fleet.stream import check_fleet

            return statuspage.render_fleet(fleet_records, check_fleet(fleet_records, now=now), now=now)

        fleet_s = timed(fleet_page, 3)
        fleet_bytes = len(fleet_page().encode())
        out.append(line("fleet page, 200 jobs × 20 hosts (judge + render)", fleet_s, "s", 1.0))
        out.append(line("fleet page size, 200 jobs × 20 hosts", fleet_bytes / 1e6, " MB", 1.0))

        # The hook's own work: one append into a full file (1,000 records), in process.
        full = os.path.join(tmp, "one")
        seed(full, 1, 1000)
        rec = RunRecord("job_000", "web1", "0" * 32, time.time(), 1.0, "success", 0, 1)
        append_s = timed(lambda: history.append(os.path.join(full, "job_000"), rec), 200)

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "JOBRUNNER_STATE_DIR": os.path.join(tmp, "runs"),
            "JOBRUNNER_LOCK_DIR": os.path.join(tmp, "locks"),
            "JOBRUNNER_LOG_FORMAT": "json",
            "PYTHONPATH": REPO,
        }
        argv = [sys.executable, "-m", "jobrunner", "jobs.noop"]
        on: list[float] = []
        off: list[float] = []
        for i in range(args.runs + 2):
            pair = [(on, env), (off, {**env, "JOBRUNNER_HISTORY": "off"})]
            for bucket, e in pair if i % 2 else reversed(pair):
                wall, _, status = run_once(argv, env=e, cwd=tmp)
                if status != 0:
                    raise SystemExit(f"jobs.noop exited {status}")
                if i >= 2:
                    bucket.append(wall)
        deltas = [a - b for a, b in zip(on, off, strict=True)]
        startup = statistics.median(off)
        added = statistics.median(deltas)
        fleet = _fleet_cost(argv, env, tmp, args.runs)
    out.append(f"{'startup (jobs.noop, history off)':<44} {startup * 1000:.1f} ms")
    out.append(f"{'history hook: one append (full file)':<44} {append_s * 1e6:.0f} µs")
    out.append(
        f"{'jobs.noop with history, added per run':<44} {added * 1000:+.1f} ms (median of pairs;"
        f" noise ±{statistics.pstdev(deltas) * 1000:.1f} ms)"
    )
    share = max(added, append_s) / startup * 100
    out.append(line("history per run / startup", share, " %", 5))
    if fleet is None:
        out.append("publishing to Redis: not measured (no redis-server here)")
    else:
        ratio, plus = fleet
        out.append(
            f"{'publishing to a local Redis, per run':<44} {plus * 1000:+.1f} ms, {ratio:.3f}× the run without"
            " (reported: one XADD in Redis's protocol)"
        )
    print("\n".join(out))
    return 0


def _fleet_cost(argv: list[str], env: dict[str, str], tmp: str, runs: int) -> tuple[float, float] | None:
    """jobs.noop with $JOBRUNNER_REDIS_URL (a real redis-server on 127.0.0.1) against without,
    alternated: (median ratio, median added seconds); None when redis-server is not installed
    (a run needs no redis module to publish)."""
    started = start_redis(tmp)
    if started is None:
        return None
    proc, port = started
    try:
        with_redis = {**env, "JOBRUNNER_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        on: list[float] = []
        off: list[float] = []
        for i in range(runs + 2):
            pair = [(on, with_redis), (off, env)]
            for bucket, e in pair if i % 2 else reversed(pair):
                wall, _, status = run_once(argv, env=e, cwd=tmp)
                if status != 0:
                    raise SystemExit(f"jobs.noop exited {status}")
                if i >= 2:
                    bucket.append(wall)
        return (
            statistics.median(a / b for a, b in zip(on, off, strict=True)),
            statistics.median(a - b for a, b in zip(on, off, strict=True)),
        )
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
