#!/usr/bin/env python3
"""Added cost per run of the etcd lease, side by side with the file lock.

    python bench/etcd_lock.py [--runs N]

Starts a private etcd 3.4 (Debian's ``etcd-server``, fetched with ``apt-get download`` and
unpacked into the tests' cache, as tests/etcd_server.py does) on 127.0.0.1 and free ports,
then times whole ``python -m jobrunner`` runs of the same empty job declared with
``Lock(url="etcd://…", ttl="5s")`` and with ``lock=True`` (flock), alternated pair by pair
(bench/_harness.py). Also prints the in-process cost of one acquire + release (range, lease
grant, the create-if-absent txn, revoke: four HTTP round trips to the JSON gateway).

``--firing N``: instead, the in-process cost of once per firing (jobrunner/locks/firing.py),
median of N each: acquire + release by hand (no firing), as a timer's run (the firing's
elapse by ``systemd-analyze calendar``, a second lease, the claim in the same txn), and the
skip of a firing claimed already (one read).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _harness import lease_vs_file  # noqa: E402

JOBS = {
    "etcd_locked": 'import os\nfrom jobrunner import job, Lock\n\n@job(lock=Lock(url=os.environ["BENCH_ETCD_URL"], ttl="5s"))\ndef etcd_locked(ctx):\n    pass\n',
    "file_locked": "from jobrunner import job\n\n@job(lock=True)\ndef file_locked(ctx):\n    pass\n",
}
TTL = 5


def _etcd_binary() -> Path:
    from tests.debian_packages import DebianPackages

    try:
        return DebianPackages().root("etcd-server") / "usr" / "bin" / "etcd"
    except BaseException as exc:  # pytest.skip's exception when apt cannot fetch it
        sys.exit(f"bench/etcd_lock.py: needs Debian's etcd-server package: {exc}")


def _start_etcd(tmp: str) -> tuple[subprocess.Popen[bytes], str]:
    from tests.etcd_server import EtcdServer

    server = EtcdServer(_etcd_binary(), Path(tmp) / "etcd").start()
    assert server.proc is not None
    return server.proc, server.url


def _firing_costs(url: str, n: int) -> None:
    import statistics
    import time
    import types
    from typing import Any

    from jobrunner.declaration import Lock
    from jobrunner.errors import LockBusy
    from jobrunner.locks.etcd import acquire_etcd_lease

    class Quiet:
        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    spec = Lock(url=url, ttl="5s")
    ms: dict[str, list[float]] = {"by hand: acquire + release": [], "timer's run: claim + release": [], "skip": []}
    base = time.time() // 300 * 300 - 300 * (n + 2)
    for i in range(n):
        job = types.SimpleNamespace(name=f"bench{i}", lock_name=None, kill_grace=0, schedule="*:0/5")
        os.environ.pop("TRIGGER_UNIT", None)
        began = time.perf_counter()
        acquire_etcd_lease(job, spec, Quiet(), lambda r: None).release()
        ms["by hand: acquire + release"].append((time.perf_counter() - began) * 1000)
        os.environ.update(TRIGGER_UNIT="bench.timer", TRIGGER_TIMER_REALTIME_USEC=str(int((base + 300 * i) * 1e6)))
        began = time.perf_counter()
        acquire_etcd_lease(job, spec, Quiet(), lambda r: None).release()
        ms["timer's run: claim + release"].append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        try:
            acquire_etcd_lease(job, spec, Quiet(), lambda r: None).release()
        except LockBusy:
            ms["skip"].append((time.perf_counter() - began) * 1000)
    for label, values in ms.items():
        print(f"{label:32s} {statistics.median(values):7.2f} ms median of {len(values)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--firing", type=int, default=0, metavar="N")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _start_etcd(tmp)
        try:
            if args.firing:
                _firing_costs(url, args.firing)
                return 0
            lease_vs_file("etcd", url, "Lock(url=etcd://…, ttl=5s)", tmp, JOBS, "etcd_locked", args.runs, TTL)
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
