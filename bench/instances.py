#!/usr/bin/env python3
"""Many sites on one server: the commands an admin runs, at 50 sites × the 8 WordPress jobs.

    python bench/instances.py [--sites 50] [--runs 15]

With the shipped ``jobs`` package and ``--sites`` instances of the group ``wp`` (env files in
a private ``JOBRUNNER_INSTANCES_DIR``, a recorded success in each instance's state), prints
the wall time of ``jobrunner list``, ``jobrunner health --json`` (every instance's row) and
``jobrunner units render`` (targets: each ≤ 2 s), and the startup of an instance run
(``run MODULE --instance s1``) against the same job run plain, side by side (target ≤ 1.05×).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import REPO, compare, job_env, run_once, verdict

NOOP = """
from jobrunner import JobContext, job

@job(instances="optional", instance_group="bench")
def bench_noop(ctx: JobContext) -> None:
    pass
"""


def _write_instances(base: str, group: str, sites: int) -> list[str]:
    names = [f"site{i:03d}.example" for i in range(sites)]
    os.makedirs(os.path.join(base, group), mode=0o750, exist_ok=True)
    for name in names:
        path = os.path.join(base, group, f"{name}.env")
        with open(path, "w") as handle:
            handle.write(f"WP_PATH=/var/www/{name}\n")
        os.chmod(path, 0o640)
    return names


def _record_success(state_dir: str, names: list[str]) -> None:
    sys.path.insert(0, REPO)
    from jobrunner.run.loader import discover
    from jobrunner.store.state import StateStore

    now = time.time()
    for job in discover("jobs"):
        if not job.instances:
            continue
        for name in names:
            bound = job.for_instance(name)
            StateStore(bound.name, state_dir).apply(
                lambda s: s.note_finish(
                    run_id="bench",
                    outcome="success",
                    exit_code=0,
                    started=now - 5,
                    duration_s=5.0,
                    attempts=1,
                    error=None,
                    holder=None,
                    now=now,
                )
            )


def _median_wall(argv: list[str], env: dict[str, str], cwd: str, runs: int) -> float:
    walls = []
    for _ in range(runs):
        wall, _, status = run_once(argv, env=env, cwd=cwd)
        if status not in (0, 1, 2, 3):  # health: Nagios codes (timers unknown without systemd)
            raise SystemExit(f"benchmark aborted: {' '.join(argv)!r} exited {status}")
        walls.append(wall)
    return statistics.median(walls)


def _cpu(argv: list[str], env: dict[str, str], cwd: str) -> float:
    import subprocess

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"benchmark aborted: {' '.join(argv)!r} exited {os.waitstatus_to_exitcode(status)}")
    return usage.ru_utime + usage.ru_stime


def _cpu_ratio(a: list[str], b: list[str], runs: int, env: dict[str, str], cwd: str) -> float:
    """Median of the pairwise ratios of the children's user+sys CPU time, alternating A and B."""
    ratios = []
    for _ in range(runs):
        ratios.append(_cpu(a, env, cwd) / max(_cpu(b, env, cwd), 1e-6))
    return statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        instances = os.path.join(tmp, "instances")
        env = job_env(tmp, {"bench_noop": NOOP}, JOBRUNNER_INSTANCES_DIR=instances)
        names = _write_instances(instances, "wp", args.sites)
        _write_instances(instances, "bench", 1)
        _record_success(env["JOBRUNNER_STATE_DIR"], names)
        wp_jobs = 8
        commands = {
            "jobrunner list": [py, "-m", "jobrunner", "list", "--package", "jobs"],
            "jobrunner health --json": [py, "-m", "jobrunner", "health", "--json", "--package", "jobs"],
            "jobrunner units render": [
                py,
                "-m",
                "jobrunner",
                "units",
                "render",
                "--package",
                "jobs",
                "--out",
                os.path.join(tmp, "units"),
            ],
        }
        runs = max(3, args.runs // 3)
        walls = {label: _median_wall(argv, env, tmp, runs) for label, argv in commands.items()}
        plain = [py, "-m", "jobrunner", "run", "bench_noop"]
        instance = [*plain, "--instance", "site000.example"]
        startup = compare(instance, plain, runs=args.runs, env=env, cwd=tmp)
        cpu = _cpu_ratio(instance, plain, args.runs, env, tmp)
    print(f"{args.sites} sites × {wp_jobs} WordPress jobs ({args.sites * wp_jobs} instance rows)")
    print(f"{'command':<28} {'wall s':>8}")
    for label, wall in walls.items():
        print(f"{label:<28} {wall:>8.3f} s  {'met' if wall <= 2.0 else 'MISSED'} (target ≤ 2 s)")
    print()
    print(f"{'run':<44} {'wall ms':>9} {'peak RSS MiB':>13}")
    print(
        f"{'run bench_noop --instance site000.example':<44} {startup['wall_a_ms']:>9.1f} {startup['rss_a_mib']:>13.1f}"
    )
    print(f"{'run bench_noop (plain)':<44} {startup['wall_b_ms']:>9.1f} {startup['rss_b_mib']:>13.1f}")
    print(f"instance / plain  wall {startup['wall_ratio']:.3f}×  {verdict(startup['wall_ratio'], 1.05)}")
    print(f"instance / plain  CPU  {cpu:.3f}×  (user+sys, steadier than wall on a busy machine; reported)")
    print(f"instance / plain  RSS  {startup['rss_ratio']:.3f}×  (reported)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
