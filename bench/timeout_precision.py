#!/usr/bin/env python3
"""How fast a 1 s timeout gets rid of a whole process tree, side by side with timeout(1).

    python bench/timeout_precision.py [--runs 5]

A: a job with ``timeout="1s"`` whose ``ctx.run`` child (sh) starts a grandchild, both
   sleeping 100 s. B: ``timeout -k 1 1 sh -c '<the same sh line>'``. The sh line records
the pids of the child and grandchild; the clock runs from spawn until the top process is
reaped and every recorded pid is gone (polled every 5 ms). Runs alternate A/B; medians.
Target: A/B ≤ 1.1×. The runner's own start (~0.15-0.2 s of Python imports before the
deadline is armed) is part of A; the figure without it is printed too, once with a noop
start measured in the same run subtracted, once from the moment the job function was entered
(the deadline is armed just before). Not part of the test suite.
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
from _harness import job_env, run_once, verdict

SH = 'echo $$ >> "$PIDS"; sleep 100 & echo $! >> "$PIDS"; sleep 100'

TREE_JOB = """
    import os, time
    from jobrunner import job

    @job(timeout="1s", kill_grace="1s")
    def tree(ctx):
        with open(ctx.env["ENTERED"], "w") as handle:
            handle.write(str(time.monotonic_ns()))
        ctx.run(["sh", "-c", ctx.env["SH"]])
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def measure(argv: list[str], env: dict[str, str], cwd: str, pids_file: str) -> tuple[float, int, float]:
    """Spawn; poll until the top process is reaped and the recorded tree is gone."""
    if os.path.exists(pids_file):
        os.unlink(pids_file)
    t0 = time.monotonic_ns()
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True
    )
    deadline = time.monotonic() + 60
    code = None
    while time.monotonic() < deadline:
        if code is None:
            code = proc.poll()
        pids = []
        if os.path.exists(pids_file):
            pids = [int(x) for x in open(pids_file).read().split()]
        if code is not None and len(pids) >= 2 and not any(alive(p) for p in pids):
            return (time.monotonic_ns() - t0) / 1e9, code, t0 / 1e9
        time.sleep(0.005)
    sys.exit(f"bench/timeout_precision.py: {argv[:3]} left its tree alive for 60 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        pids_file = os.path.join(tmp, "pids")
        entered = os.path.join(tmp, "entered")
        env = job_env(tmp, {"tree": TREE_JOB}, PIDS=pids_file, ENTERED=entered, SH=SH)
        runner = [py, "-m", "jobrunner", "tree"]
        coreutils = ["timeout", "-k", "1", "1", "sh", "-c", SH]
        noop = [py, "-m", "jobrunner", "jobs.noop"]
        a, b, from_entry, ratios, starts = [], [], [], [], []
        codes_a, codes_b = set(), set()
        run_once(noop, env=env, cwd=tmp)  # warm
        for _ in range(args.runs):
            wa, ca, t0 = measure(runner, env, tmp, pids_file)
            from_entry.append(wa - (int(open(entered).read()) / 1e9 - t0))
            wb, cb, _ = measure(coreutils, env, tmp, pids_file)
            starts.append(run_once(noop, env=env, cwd=tmp)[0])
            a.append(wa)
            b.append(wb)
            ratios.append(wa / wb)
            codes_a.add(ca)
            codes_b.add(cb)
    med = statistics.median
    startup = med(starts)
    print(f"{'1 s timeout, child + grandchild sleeping':<44} {'tree gone s':>12} {'exit':>6}")
    print(f"{'jobrunner (timeout=1s, ctx.run)':<44} {med(a):>12.3f} {','.join(map(str, sorted(codes_a))):>6}")
    print(f"{'  minus noop startup (' + format(startup * 1000, '.0f') + ' ms)':<44} {med(a) - startup:>12.3f}")
    print(f"{'  from job function entry':<44} {med(from_entry):>12.3f}")
    print(f"{'timeout -k 1 1 sh -c ...':<44} {med(b):>12.3f} {','.join(map(str, sorted(codes_b))):>6}")
    print()
    ratio = med(ratios)
    print(f"jobrunner / timeout(1)  tree gone {ratio:.3f}×  {verdict(ratio, 1.1)}")
    print(f"jobrunner - startup / timeout(1)  {(med(a) - startup) / med(b):.3f}×  (reported)")
    print(f"jobrunner from entry / timeout(1)  {med(from_entry) / med(b):.3f}×  (reported)")
    ok = codes_a == {124} and codes_b == {124}
    if not ok:
        print(f"unexpected exit codes: jobrunner {sorted(codes_a)}, timeout {sorted(codes_b)} (expected 124)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
