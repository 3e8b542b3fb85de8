#!/usr/bin/env python3
"""Startup cost of the runner on a timer tick, side by side with what it replaces.

    python bench/startup.py [--runs N]

Prints wall time and peak RSS of ``python -m jobrunner jobs.noop`` against
``python -I -c "import structlog, filelock"`` (the libraries alone; targets ≤ 1.15× wall,
≤ 1.2× RSS) and against bash's ``flock -n LOCK true`` (reported, no target). Run it with the
interpreter of a normal (non-editable) install, e.g. /opt/jobrunner/bin/python.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import compare, verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "JOBRUNNER_STATE_DIR": os.path.join(tmp, "state"),
            "JOBRUNNER_LOCK_DIR": os.path.join(tmp, "locks"),
            "JOBRUNNER_LOG_FORMAT": "json",
        }
        runner = [py, "-m", "jobrunner", "jobs.noop"]
        libs = [py, "-I", "-c", "import structlog, filelock"]
        flock = ["flock", "-n", os.path.join(tmp, "lock"), "true"]
        r1 = compare(runner, libs, runs=args.runs, env=env, cwd=tmp)
        r2 = compare(runner, flock, runs=args.runs, env=env, cwd=tmp)
    print(f"{'command':<44} {'wall ms':>9} {'peak RSS MiB':>13}")
    print(f"{'python -m jobrunner jobs.noop':<44} {r1['wall_a_ms']:>9.1f} {r1['rss_a_mib']:>13.1f}")
    base = 'python -I -c "import structlog, filelock"'
    print(f"{base:<44} {r1['wall_b_ms']:>9.1f} {r1['rss_b_mib']:>13.1f}")
    print(f"{'flock -n LOCK true':<44} {r2['wall_b_ms']:>9.1f} {r2['rss_b_mib']:>13.1f}")
    print()
    print(f"runner / libraries  wall {r1['wall_ratio']:.3f}×  {verdict(r1['wall_ratio'], 1.15)}")
    print(f"runner / libraries  RSS  {r1['rss_ratio']:.3f}×  {verdict(r1['rss_ratio'], 1.2)}")
    print(f"runner / flock(1)   wall {r2['wall_ratio']:.1f}×  RSS {r2['rss_ratio']:.1f}×  (reported)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
