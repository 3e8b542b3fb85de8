#!/usr/bin/env python3
"""What ``ctx.progress`` costs a copy step, and how many journal lines a long step writes.

    python bench/progress.py [--size-mib N] [--runs N]

Throughput: a job copying a file of ``--size-mib`` (default 1024: 1 GiB) in 1 MiB blocks,
with ``p.advance(len(block))`` per block and without, run as whole ``python -m jobrunner``
processes side by side (alternating, median of pairwise ratios); the same with ``cp`` as the
child and ``p.follow_commands(command="cp")`` reading its bytes from /proc. The throughput is
the copy step's: each job times its step (opening and closing the progress step included) and
the ratio is plain / progress step time. Target: ≥ 0.99×. The whole processes' wall and CPU
ratios are printed too: they add the runner's start-up, the same in both, and on a copy that
takes a third of a second the one-off import of the progress module. Source and copy are on /dev/shm (``$BENCH_DIR`` to change it): on a disk,
dirty-page writeback of 1 GiB per run swings run times by ±50% and hides a 1% effect; the
copy is removed after each run.

Journal lines: one step an hour long, advanced four times a second, under a simulated clock
(the real reporter, its log counted): the ``progress`` events and ``STATUS=`` datagrams it
sends. Bounded by the design: 3600 / 30 + 1 events, 3600 / 2 + 1 datagrams at most.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import REPO, job_env, verdict

COPY = """
    import os, time
    from jobrunner import job

    BLOCK = 1 << 20

    def copy(src, dst, step=None):
        with open(src, "rb", buffering=0) as r, open(dst, "wb", buffering=0) as w:
            while block := r.read(BLOCK):
                w.write(block)
                if step is not None:
                    step.advance(len(block))

    def timed(ctx, began):
        # the step's own time (progress set-up and tear-down included), for the throughput
        with open(ctx.env["STEP_TIMES"], "a") as f:
            f.write(f"{time.perf_counter() - began}\\n")
        os.unlink(ctx.env["SRC"] + ".copy")

    @job()
    def copy_plain(ctx):
        began = time.perf_counter()
        copy(ctx.env["SRC"], ctx.env["SRC"] + ".copy")
        timed(ctx, began)

    @job()
    def copy_progress(ctx):
        began = time.perf_counter()
        with ctx.progress("copy", total=os.path.getsize(ctx.env["SRC"]), unit="B") as p:
            copy(ctx.env["SRC"], ctx.env["SRC"] + ".copy", p)
        timed(ctx, began)

    @job()
    def cp_plain(ctx):
        began = time.perf_counter()
        ctx.run(["cp", ctx.env["SRC"], ctx.env["SRC"] + ".copy"])
        timed(ctx, began)

    @job()
    def cp_progress(ctx):
        began = time.perf_counter()
        with ctx.progress("copy", total=os.path.getsize(ctx.env["SRC"]), unit="B") as p:
            p.follow_commands(command="cp")
            ctx.run(["cp", ctx.env["SRC"], ctx.env["SRC"] + ".copy"])
        timed(ctx, began)
"""


def measure(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, float]:
    """Run ``argv`` to completion: (wall seconds, CPU seconds of the process: user + system,
    the copy step's own seconds as the job timed it)."""
    times = env["STEP_TIMES"]
    with open(times, "w"):
        pass
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"benchmark aborted: {' '.join(argv)!r} exited {os.waitstatus_to_exitcode(status)}")
    wall = time.perf_counter() - start
    with open(times) as f:
        step = float(f.read().split()[-1])
    return wall, usage.ru_utime + usage.ru_stime, step


def side_by_side(a: list[str], b: list[str], runs: int, env: dict[str, str], cwd: str) -> dict[str, float]:
    """A and B alternated (one warm-up each); medians and median pairwise ratios A / B."""
    measure(a, env, cwd)
    measure(b, env, cwd)
    pairs = [(measure(a, env, cwd), measure(b, env, cwd)) for _ in range(runs)]
    med = statistics.median
    return {
        "wall_a_ms": med(pa[0] for pa, _ in pairs) * 1000,
        "wall_b_ms": med(pb[0] for _, pb in pairs) * 1000,
        "step_a_ms": med(pa[2] for pa, _ in pairs) * 1000,
        "step_b_ms": med(pb[2] for _, pb in pairs) * 1000,
        "wall_ratio": med(pa[0] / pb[0] for pa, pb in pairs),
        "step_ratio": med(pa[2] / pb[2] for pa, pb in pairs),
        "cpu_ratio": med(pa[1] / pb[1] for pa, pb in pairs),
    }


def journal_lines_per_hour() -> tuple[int, int]:
    sys.path.insert(0, REPO)
    from jobrunner.run.progress import Reporter

    class Count:
        def __init__(self) -> None:
            self.n = 0

        def info(self, event: str, **kw: Any) -> None:
            self.n += 1

        def send(self, message: str) -> bool:
            self.n += 1
            return True

    now = [0.0]
    log, notify = Count(), Count()
    rep = Reporter(log, notifier=notify, clock=lambda: now[0], thread=False)  # type: ignore[arg-type]
    with rep.step("copy", total=3600 * 4, unit="B") as p:
        for _ in range(3600 * 4):
            now[0] += 0.25
            p.advance(1)
            rep.tick()
    return log.n, notify.n


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/dev/shm")) as tmp:
        src = os.path.join(tmp, "src")
        with open(src, "wb") as out:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                out.write(block)
        env = job_env(tmp, {"copyjobs": COPY}, SRC=src, STEP_TIMES=os.path.join(tmp, "step-times"))
        results = {}
        for kind in ("copy", "cp"):
            # A: plain, B: with progress; wall A / wall B = throughput with progress / without
            results[kind] = side_by_side(
                [py, "-m", "jobrunner", f"copyjobs:{kind}_plain"],
                [py, "-m", "jobrunner", f"copyjobs:{kind}_progress"],
                args.runs,
                env,
                tmp,
            )
    size = f"{args.size_mib} MiB"
    print(f"{'copy step (' + size + ')':<44} {'plain ms':>9} {'progress ms':>12}  (step; whole process)")
    for kind, label in (("copy", "Python loop, advance per 1 MiB block"), ("cp", "cp child, follow_commands (/proc)")):
        r = results[kind]
        print(
            f"{label:<44} {r['step_a_ms']:>9.0f} {r['step_b_ms']:>12.0f}  ({r['wall_a_ms']:.0f} / {r['wall_b_ms']:.0f})"
        )
    print()
    for kind, label in (("copy", "advance"), ("cp", "follow_commands")):
        ratio = results[kind]["step_ratio"]
        print(f"progress / plain throughput ({label})  {ratio:.3f}×  {verdict(ratio, 0.99, higher_is_better=True)}")
        whole, cpu = results[kind]["wall_ratio"], results[kind]["cpu_ratio"]
        print(f"  whole process, start-up included: wall {whole:.3f}×, CPU time (user + system) {cpu:.3f}×")
    events, datagrams = journal_lines_per_hour()
    print(
        f"journal lines per hour of one long step: {events} (bound 3600/30 + 1 = 121); STATUS= datagrams: {datagrams}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
