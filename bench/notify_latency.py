#!/usr/bin/env python3
"""Notification cost, measured side by side in one run.

    python bench/notify_latency.py [--runs N]

1. Latency: a failing job (``python -m jobrunner``) notifies a local HTTP receiver through
   Apprise's ``json://``; measured from the job's end (the ``ts`` of its ``job.failed`` line)
   to the request's arrival. Target: median ≤ 1.5 s.
2. Success-path cost: ``jobs.noop`` with notification URLs configured against the same run
   with nothing configured, alternating (target: ≈1.0×, i.e. none: apprise is not imported
   on a success that follows a success). Also checked: the modules a configured success loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from _harness import compare, job_env, verdict  # noqa: E402

from tests.test_notify_receivers import HttpReceiver  # noqa: E402

FAILER = "from jobrunner import job\n@job\ndef benchfail(ctx):\n    raise RuntimeError('bench failure')\n"
PROBE = (
    "import json, runpy, sys\nsys.argv = ['jobrunner', 'jobs.noop']\n"
    "try:\n    runpy.run_module('jobrunner', run_name='__main__', alter_sys=True)\nexcept SystemExit:\n    pass\n"
    "sys.stderr.write(json.dumps(sorted(sys.modules)) + '\\n')\n"
)


def latency(runs: int, tmp: str) -> list[float]:
    receiver = HttpReceiver()
    env = job_env(tmp, {"benchfail": FAILER}, JOBRUNNER_NOTIFY_URLS=receiver.url(), JOBRUNNER_NOTIFY_REPEAT="0")
    out: list[float] = []
    try:
        for _ in range(runs):
            before = len(receiver.requests)
            proc = subprocess.run(
                [sys.executable, "-m", "jobrunner", "benchfail"],
                env=env,
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=60,
            )
            got = receiver.wait(before + 1, timeout=15)
            arrived = time.time() - (time.monotonic() - got[before]["at"])
            failed = [json.loads(line) for line in proc.stdout.splitlines() if '"job.failed"' in line][-1]
            ended = datetime.fromisoformat(failed["ts"].replace("Z", "+00:00")).timestamp()
            out.append(arrived - ended)
    finally:
        receiver.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        lat = latency(args.runs, tmp)
        plain = job_env(tmp, {})
        configured = job_env(tmp, {}, JOBRUNNER_NOTIFY_URLS="json://127.0.0.1:9/never-used")
        # A/B alternate: the same command, A with the URLs from an env file (the way units get them).
        noop = [py, "-m", "jobrunner", "jobs.noop"]
        env_a = os.path.join(tmp, "a.env")
        with open(env_a, "w") as handle:
            handle.write("JOBRUNNER_NOTIFY_URLS=json://127.0.0.1:9/never-used\n")
        result = compare([*noop, "--env-file", env_a], noop, runs=args.runs, env=plain, cwd=tmp)
        probe = subprocess.run([py, "-c", PROBE], env=configured, cwd=tmp, capture_output=True, text=True, timeout=60)
        loaded = set(json.loads(probe.stderr.strip().splitlines()[-1]))
    med = statistics.median(lat)
    print(f"{'measure':<52} {'value':>10}")
    print(
        f"{f'failure -> received, median of {len(lat)} (s)':<52} {med:>10.3f}   "
        f"{'met' if med <= 1.5 else 'MISSED'} (target ≤ 1.5 s); min {min(lat):.3f} max {max(lat):.3f}"
    )
    print(f"{'noop success, notify configured (ms)':<52} {result['wall_a_ms']:>10.1f}")
    print(f"{'noop success, nothing configured (ms)':<52} {result['wall_b_ms']:>10.1f}")
    print(f"configured / unconfigured  wall {result['wall_ratio']:.3f}×  {verdict(result['wall_ratio'], 1.05)}")
    print(f"configured / unconfigured  RSS  {result['rss_ratio']:.3f}×  {verdict(result['rss_ratio'], 1.05)}")
    print(f"apprise imported on the configured success path: {'YES' if 'apprise' in loaded else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
