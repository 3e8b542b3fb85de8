#!/usr/bin/env python3
"""Throughput of output streamed through ``ctx.run``, side by side with bare structlog.

    python bench/log_streaming.py [--lines 200000] [--runs 3]

A: a job whose ``ctx.run`` child prints N lines (``seq``); the runner turns each into a JSON
   ``proc.output`` event on its stdout, which goes to a file.
B: a bare Python process: ``structlog.configure`` with ``JSONRenderer`` and a ``WriteLogger``
   on a file, logging the same N lines as events with the same fields.
Both are whole processes (start-up included), alternated; throughput = lines / wall.
Target: A/B throughput ≥ 0.5×. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import job_env, verdict

FMT = "line %g of the output flood"

FLOOD_JOB = """
    from jobrunner import job

    @job
    def flood(ctx):
        ctx.run(["seq", "-f", ctx.env["FMT"], "1", ctx.env["LINES"]])
"""

BARE = """
import os, sys, structlog
from structlog.processors import JSONRenderer, TimeStamper, add_log_level
n, fmt = int(sys.argv[1]), sys.argv[2]
out = open(sys.argv[3], "w")
structlog.configure(
    processors=[add_log_level, TimeStamper(fmt="iso", utc=True), JSONRenderer()],
    logger_factory=structlog.WriteLoggerFactory(file=out),
    cache_logger_on_first_use=True,
)
log = structlog.get_logger().bind(job="flood", run_id=os.urandom(16).hex(), host=os.uname().nodename)
for i in range(1, n + 1):
    log.info("proc.output", cmd="seq", stream="stdout", line=fmt.replace("%g", str(i)))
out.close()
"""


def timed(
    argv: list[str], env: dict[str, str], cwd: str, out_path: str, stdout_to_file: bool
) -> tuple[float, int, int]:
    """Wall of the whole process; (wall, exit code, lines written to the sink)."""
    with open(out_path, "wb") as sink:
        start = time.perf_counter()
        proc = subprocess.run(
            argv, stdout=sink if stdout_to_file else subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd
        )
        wall = time.perf_counter() - start
    with open(out_path, "rb") as handle:
        lines = sum(1 for _ in handle)
    return wall, proc.returncode, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n, py = args.lines, sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = job_env(tmp, {"flood": FLOOD_JOB}, FMT=FMT, LINES=str(n))
        out = os.path.join(tmp, "out")
        runner = [py, "-m", "jobrunner", "flood"]
        bare = [py, "-c", BARE, str(n), FMT, out]
        a: list[float] = []  # walls, jobrunner
        b: list[float] = []  # walls, bare structlog
        ratios: list[float] = []
        la: set[int] = set()  # sink lines, jobrunner
        lb: set[int] = set()  # sink lines, bare structlog
        codes: set[int] = set()
        for _ in range(args.runs):
            wa, ca, na = timed(runner, env, tmp, out, True)
            wb, cb, nb = timed(bare, env, tmp, out, False)
            a.append(wa)
            b.append(wb)
            ratios.append((n / wa) / (n / wb))
            la.add(na)
            lb.add(nb)
            codes.update((ca, cb))
    med = statistics.median
    print(f"{n} lines, whole processes, stdout to a file{'':<4} {'wall s':>8} {'lines/s':>10} {'sink lines':>11}")
    print(f"{'jobrunner: ctx.run child -> proc.output JSON':<48} {med(a):>8.2f} {n / med(a):>10.0f} {max(la):>11}")
    print(f"{'bare structlog JSONRenderer + WriteLogger':<48} {med(b):>8.2f} {n / med(b):>10.0f} {max(lb):>11}")
    print()
    ratio = med(ratios)
    print(f"jobrunner / bare structlog  throughput {ratio:.3f}×  {verdict(ratio, 0.5, higher_is_better=True)}")
    ok = codes == {0} and min(la) >= n and lb == {n}
    if not ok:
        print(f"unexpected: exit codes {sorted(codes)}, sink lines {sorted(la)} / {sorted(lb)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
