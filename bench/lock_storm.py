#!/usr/bin/env python3
"""A storm of launches against a held lock, side by side with plain startup, in one run.

    python bench/lock_storm.py [--launches 200]

A holder run of a locked job sits inside its critical section; then ``--launches`` copies of
``python -m jobrunner storm`` are started at once. Every one must exit 75 (skipped) and none
may enter the critical section (each entry writes an ``in`` line to a ledger). Then the same
number of ``python -m jobrunner jobs.noop`` are started at once (the plain startup, same
concurrency, same machine load), and finally a few sequential noop runs.

Figures (per launch):
- storm wall / N for both storms (concurrency-adjusted throughput cost); their ratio is the
  target figure (≤ 1.2×): a busy launch must cost no more than a plain start;
- median CPU (user + sys, from ``wait4``) per launch against that of a sequential noop run;
- median spawn-to-reap wall of a storm launch (reported: under N-way contention on a few
  cores this is dominated by queueing, not by the runner).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import TypedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import job_env, run_once, verdict

STORM_JOB = """
    import os, time
    from jobrunner import job

    @job(lock=True)
    def storm(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"in {os.getpid()} {time.monotonic_ns()}\\n".encode())
        time.sleep(float(ctx.env.get("HOLD", "0")))
        os.write(fd, f"out {os.getpid()} {time.monotonic_ns()}\\n".encode())
        os.close(fd)
"""


class Storm(TypedDict):
    wall: float  # the whole storm, seconds
    walls: list[float]  # spawn-to-reap of each launch, seconds
    cpus: list[float]  # user + sys of each launch, seconds
    codes: list[int]  # exit codes


def storm(argv: list[str], n: int, env: dict[str, str], cwd: str) -> Storm:
    """Start ``n`` copies at once; reap them as they end. Wall, per-launch walls, CPU, codes."""
    started: dict[int, float] = {}
    procs = []  # kept referenced: a dropped Popen may be reaped behind our back by subprocess
    t0 = time.perf_counter()
    for _ in range(n):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        procs.append(proc)
        started[proc.pid] = time.perf_counter()
    walls: list[float] = []
    cpus: list[float] = []
    codes: list[int] = []
    pending = set(started)
    deadline = time.monotonic() + 300
    while pending:
        if time.monotonic() > deadline:
            sys.exit(f"bench/lock_storm.py: {len(pending)} launches did not end within 300 s")
        found = False
        for pid in list(pending):
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got == 0:
                continue
            found = True
            break
        if not found:
            time.sleep(0.005)
            continue
        pending.discard(pid)
        walls.append(time.perf_counter() - started[pid])
        cpus.append(usage.ru_utime + usage.ru_stime)
        codes.append(os.waitstatus_to_exitcode(status))
    total = time.perf_counter() - t0
    return {"wall": total, "walls": walls, "cpus": cpus, "codes": codes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=200)
    parser.add_argument("--sequential", type=int, default=7, help="sequential noop runs for the CPU baseline")
    args = parser.parse_args()
    n = args.launches
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        ledger = os.path.join(tmp, "ledger")
        env = job_env(tmp, {"storm": STORM_JOB}, LEDGER=ledger)
        holder = subprocess.Popen(
            [py, "-m", "jobrunner", "storm"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**env, "HOLD": "600"},
            cwd=tmp,
            start_new_session=True,
        )
        try:
            end = time.monotonic() + 30
            while not (os.path.exists(ledger) and open(ledger).read().count("in ") == 1):
                if time.monotonic() > end or holder.poll() is not None:
                    sys.exit("bench/lock_storm.py: the holder did not enter its critical section")
                time.sleep(0.02)
            noop = [py, "-m", "jobrunner", "jobs.noop"]
            for _ in range(2):  # warm caches for both commands
                run_once([py, "-m", "jobrunner", "storm"], env=env, cwd=tmp)
                run_once(noop, env=env, cwd=tmp)
            busy = storm([py, "-m", "jobrunner", "storm"], n, env, tmp)
            plain = storm(noop, n, env, tmp)
            seq = [run_once(noop, env=env, cwd=tmp) for _ in range(args.sequential)]
            seq_cpu = []
            for _ in range(args.sequential):
                proc = subprocess.Popen(noop, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp)
                _, _, usage = os.wait4(proc.pid, 0)
                seq_cpu.append(usage.ru_utime + usage.ru_stime)
            entered = open(ledger).read().count("in ")
        finally:
            holder.send_signal(signal.SIGTERM)
            try:
                holder.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(holder.pid, signal.SIGKILL)
                holder.wait()
    med = statistics.median
    codes = busy["codes"]
    bad = [c for c in codes if c != 75]
    busy_per = busy["wall"] / n
    plain_per = plain["wall"] / n
    seq_wall = med(w for w, _, _ in seq)
    ratio = busy_per / plain_per
    cpu_ratio = med(busy["cpus"]) / med(seq_cpu)
    cores = os.cpu_count() or 1
    print(f"{n} concurrent launches against a held lock, {cores} cores")
    print(f"{'':<40} {'storm wall s':>12} {'per launch ms':>14} {'median launch ms':>17} {'median CPU ms':>14}")
    print(
        f"{'busy (lock held, expect 75)':<40} {busy['wall']:>12.2f} {busy_per * 1000:>14.1f} "
        f"{med(busy['walls']) * 1000:>17.1f} {med(busy['cpus']) * 1000:>14.1f}"
    )
    print(
        f"{'plain start, jobs.noop (same storm)':<40} {plain['wall']:>12.2f} {plain_per * 1000:>14.1f} "
        f"{med(plain['walls']) * 1000:>17.1f} {med(plain['cpus']) * 1000:>14.1f}"
    )
    print(
        f"{'plain start, jobs.noop (sequential)':<40} {'':>12} {seq_wall * 1000:>14.1f} {'':>17} {med(seq_cpu) * 1000:>14.1f}"
    )
    print()
    print(
        f"exit codes: {codes.count(75)}/{n} exited 75; others: {sorted(set(bad)) or 'none'}; "
        f"entered the critical section: {entered - 1} (holder excluded)"
    )
    correct = not bad and entered == 1
    print(f"correctness: {'ok' if correct else 'FAILED'}")
    print(f"busy launch / plain start  storm wall per launch {ratio:.3f}×  {verdict(ratio, 1.2)}")
    print(f"busy launch / plain start  CPU per launch {cpu_ratio:.3f}×  (reported; sequential noop CPU)")
    adj = busy_per * cores / seq_wall
    print(f"busy storm wall/{n}×{cores} cores / sequential noop wall {adj:.3f}×  (reported)")
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
