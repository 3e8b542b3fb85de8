#!/usr/bin/env python3
"""Added cost per run of the Redis lease, side by side with the file lock.

    python bench/redis_lock.py [--runs N]

Starts a private ``redis-server`` (Debian package) on 127.0.0.1 and a free port, then times
whole ``python -m jobrunner`` runs of the same empty job declared with
``Lock(redis=URL, ttl="5s")`` and with ``lock=True`` (flock), alternated pair by pair
(bench/_harness.py). Also prints the in-process cost of one acquire + release round trip
(connect, restart-guard INFO, the SET NX PX + INCR script, the compare-and-delete release).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _harness import lease_vs_file, start_redis  # noqa: E402

JOBS = {
    "redis_locked": 'import os\nfrom jobrunner import job, Lock\n\n@job(lock=Lock(redis=os.environ["BENCH_REDIS_URL"], ttl="5s"))\ndef redis_locked(ctx):\n    pass\n',
    "file_locked": "from jobrunner import job\n\n@job(lock=True)\ndef file_locked(ctx):\n    pass\n",
}
TTL = 5


def _start_redis(workdir: str) -> tuple[subprocess.Popen[bytes], str]:
    started = start_redis(workdir)
    if started is None:
        sys.exit("bench/redis_lock.py: needs redis-server (apt-get install -y redis-server)")
    proc, port = started
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            # The lease's restart guard grants nothing until Redis has been up a whole ttl.
            if client.info("server")["uptime_in_seconds"] >= math.ceil(TTL) + 1:
                break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("bench/redis_lock.py: redis-server did not start")
        time.sleep(0.1)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _start_redis(tmp)
        try:
            lease_vs_file("redis", url, "Lock(redis=URL, ttl=5s)", tmp, JOBS, "redis_locked", args.runs, TTL)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
