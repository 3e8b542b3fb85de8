#!/usr/bin/env python3
"""Added cost per run of the etcd lease, side by side with the file lock.

    python bench/etcd_lock.py [--runs N]

Starts a private etcd 3.4 (Debian's ``etcd-server``, fetched with ``apt-get download`` and
unpacked into the tests' cache, as tests/etcd_server.py does) on 127.0.0.1 and free ports,
then times whole ``python -m jobrunner`` runs of the same empty job declared with
``Lock(url="etcd://…", ttl="5s")`` and with ``lock=True`` (flock), alternated pair by pair
(bench/_harness.py). Also prints the in-process cost of one acquire + release (range, lease
grant, the create-if-absent txn, revoke: four HTTP round trips to the JSON gateway).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server, url = _start_etcd(tmp)
        try:
            lease_vs_file("etcd", url, "Lock(url=etcd://…, ttl=5s)", tmp, JOBS, "etcd_locked", args.runs, TTL)
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
