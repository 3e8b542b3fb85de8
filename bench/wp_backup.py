#!/usr/bin/env python3
"""wp_backup's write phase against its two floors and the seed's pipeline, side by side.

    python bench/wp_backup.py [--size 1G] [--workdir DIR] [--rounds 1]

Builds a throwaway stack (tests/wp/stack.py: a real mariadbd on 127.0.0.1, WordPress from
Debian's package) and grows it to ``--size``: ~12 % database (rows of word-salad text loaded
into a ``<prefix>bench_rows`` table through the mysql client, so mysqldump does real work; the
dump is ~120 MB at 1 GiB), ~5 % WordPress PHP/text, the rest already-compressed media (random
bytes, as JPEG/MP4 are to a compressor). Then, caches warm, each variant writes into its own
directory on the same filesystem, and its outputs are fsync'd inside the timing (a backup is
not written until it is durable):

- ``wp_backup write``: the real job run through the CLI; the figure is its own ``write_s``
  log field (tar | zstd -T0 -3 beside mysqldump --single-transaction | zstd, fsync, SHA-256),
  verification (tar -t, checksums, scratch-database load) is its ``verify_s``, reported apart;
- ``seed-style``: ``tar czf`` of the site, then ``mysqldump | gzip`` (the seed's scripts);
- ``I/O floor``: ``tar cf`` and ``mysqldump > db.sql``, no compression, no checksums, run side
  by side as the job runs its two pipelines (the sequential floor is printed too);
- ``tar | zstd (previous)``: the previous job's two pipelines in bare bash (``tar | zstd -T0
  -3`` of everything beside ``mysqldump | zstd``), without checksums and runner: what
  compressing already-compressed media cost;
- ``compress CPU``: what compressing what does compress costs: ``zstd -T0 -3`` of a tar of the
  files the job compresses (``jobs._archive.classify``: not stored) and of the dump, made
  beforehand and read from the page cache; its client CPU ÷ the CPUs is the CPU floor.

The write phase cannot take less than the larger of the two floors: the I/O floor (the
faster of the parallel and the sequential ``tar cf`` + dump), and the CPU floor (with N cores,
the compressor's CPU / N). The client CPU column (tar, mysqldump, compressors; not mariadbd)
is each variant's.

Targets: write ≤ 1.3× max(I/O floor, CPU floor), ≤ 0.2× seed-style wall, output no larger
than seed-style. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.wp import stack  # noqa: E402


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("IB")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def grow_site(site: Path, media_bytes: int) -> None:
    media = site / "wp-content" / "uploads" / "2024" / "06"
    media.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    left, i = media_bytes, 0
    while left > 0:
        n = min(left, rng.choice([200_000, 800_000, 2_500_000, 9_000_000]))
        with open(media / f"media-{i:05d}.jpg", "wb") as handle:
            handle.write(os.urandom(n))
        left -= n
        i += 1


def load_rows(db: stack.MariaDB, dump_bytes: int, workdir: Path) -> None:
    rng = random.Random(11)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11))) for _ in range(5000)]
    sql = workdir / "rows.sql"
    with open(sql, "w") as out:
        out.write(
            f"CREATE TABLE {stack.TABLE_PREFIX}bench_rows (id INT PRIMARY KEY, title VARCHAR(200), body LONGTEXT) ENGINE=InnoDB;\n"
        )
        written, row = 0, 0
        while written < dump_bytes:
            values = []
            for _ in range(200):
                body = " ".join(rng.choices(words, k=700))
                values.append(f"({row},'row {row}','{body}')")
                row += 1
            line = f"INSERT INTO {stack.TABLE_PREFIX}bench_rows VALUES {','.join(values)};\n"
            out.write(line)
            written += len(line)
    with open(sql, "rb") as handle:
        subprocess.run(db.client(stack.DB_NAME), stdin=handle, check=True)
    sql.unlink()


def compressible_tar(site: Path, out: Path) -> None:
    """A tar of what the job gives its compressor (directories, links, files not stored)."""
    from jobs._archive import classify

    names = []
    for top, _dirs, files in os.walk(site):
        rel = os.path.relpath(top, site)
        names.append(rel)
        for name in files:
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                names.append(os.path.join(rel, name))
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                stored, _ = classify(os.path.join(rel, name), fd, os.fstat(fd).st_size)
            finally:
                os.close(fd)
            if not stored:
                names.append(os.path.join(rel, name))
    listing = out.with_suffix(".list")
    listing.write_bytes(b"".join(os.fsencode(n) + b"\0" for n in names))
    subprocess.run(
        ["tar", "--create", "-f", str(out), "-C", str(site), "--null", "--no-recursion", "-T", str(listing)],
        check=True,
    )
    listing.unlink()


def sync_tree(path: Path) -> None:
    subprocess.run(["sync", "-f", *[str(p) for p in path.rglob("*") if p.is_file()]], check=True)


CPU: dict[str, float] = {}


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(script: str, out: Path, env: dict[str, str], name: str = "") -> tuple[float, int]:
    out.mkdir(parents=True)
    cpu, started = cpu_children(), time.monotonic()
    subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True, cwd=out, env=env)
    sync_tree(out)
    wall = time.monotonic() - started
    CPU[name] = min(CPU.get(name, 1e9), cpu_children() - cpu)
    return wall, du(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="total site size incl. database (e.g. 1G, 256M)")
    parser.add_argument("--workdir", help="where to build (default: a temp dir, removed after)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant; the fastest counts")
    args = parser.parse_args()
    missing = stack.missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    total = parse_size(args.size)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="wpbench-"))
    db = stack.MariaDB(work / "db")
    try:
        t0 = time.monotonic()
        db.start()
        db.create_wp_database()
        site = work / "site"
        stack.install_site(site, f"127.0.0.1:{db.port}")
        load_rows(db, int(total * 0.12), work)
        grow_site(site, max(0, total - int(total * 0.12) - du(site)))
        print(
            f"generated in {time.monotonic() - t0:.1f}s: site {du(site) / 2**20:.0f} MiB files + "
            f"database (dump size measured below); {os.cpu_count()} CPUs",
            flush=True,
        )
        subprocess.run(
            f"tar cf - -C {site} . | cat > /dev/null", shell=True, check=True
        )  # warm the cache (tar skips reads into /dev/null)

        defaults = work / "my.cnf"
        defaults.write_text(
            f'[client]\nuser={stack.DB_USER}\npassword="{stack.DB_PASSWORD.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"\nhost=127.0.0.1\nport={db.port}\n'
        )
        defaults.chmod(0o600)
        dump = f"mysqldump --defaults-extra-file={defaults} --single-transaction --quick {stack.DB_NAME}"
        env = dict(os.environ)
        results: dict[str, tuple[float, int]] = {}
        write_s = verify_s = job_wall = 0.0
        job_bytes = 0
        compressible_mib = 0.0
        archive: dict[str, Any] = {}

        def best(name: str, value: tuple[float, int]) -> None:
            if name not in results or value[0] < results[name][0]:
                results[name] = value

        for r in range(args.rounds):
            out = work / f"round{r}"
            best(
                "floor (parallel)",
                timed(
                    f"{{ {dump} > db.sql; }} & p=$!; tar cf site.tar -C {site} .; wait $p",
                    out / "floor",
                    env,
                    "floor (parallel)",
                ),
            )
            best(
                "floor (sequential)",
                timed(f"tar cf site.tar -C {site} .; {dump} > db.sql", out / "floor-seq", env, "floor (sequential)"),
            )
            best(
                "seed-style",
                timed(f"tar czf site.tar.gz -C {site} .; {dump} | gzip > db.sql.gz", out / "seed", env, "seed-style"),
            )
            best(
                "tar | zstd (previous)",
                timed(
                    f"{{ {dump} | zstd -T0 -3 -q -c > db.sql.zst; }} & p=$!; tar cf - -C {site} . | zstd -T0 -3 -q -c > files.tar.zst; wait $p",
                    out / "pipes",
                    env,
                    "tar | zstd (previous)",
                ),
            )
            dump_mib = (out / "floor" / "db.sql").stat().st_size / 2**20
            if r == 0:
                compressible_tar(site, work / "compressible.tar")
                shutil.copy(out / "floor" / "db.sql", work / "db.sql")
                compressible_mib = (work / "compressible.tar").stat().st_size / 2**20
            best(
                "compress CPU",
                timed(
                    f"zstd -T0 -3 -q -c {work / 'compressible.tar'} > /dev/null; zstd -T0 -3 -q -c {work / 'db.sql'} > /dev/null",
                    out / "cpu",
                    env,
                    "compress CPU",
                ),
            )
            env_file = work / "wp.env"
            env_file.write_text(f"WP_PATH={site}\nBACKUP_DIR={out / 'job'}\nWP_SITE=bench\n")
            jenv = dict(
                env,
                JOBRUNNER_LOCK_DIR=str(work / "locks"),
                JOBRUNNER_STATE_DIR=str(work / "state"),
                JOBRUNNER_LOG_FORMAT="json",
                PYTHONPATH=str(REPO),
            )
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "jobrunner", "run", "jobs.wp_backup", "--env-file", str(env_file)],
                capture_output=True,
                text=True,
                env=jenv,
            )
            wall = time.monotonic() - started
            events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
            done = [e for e in events if e["event"] in ("backup.verified", "backup.unverified")]
            if proc.returncode != 0 or not done:
                print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
                return 1
            if r == 0 or done[-1]["write_s"] < write_s:
                write_s, verify_s, job_wall = done[-1]["write_s"], done[-1]["verify_s"], wall
                archive = next(e for e in events if e["event"] == "backup.archive")
            job_bytes = du(out / "job")
            results["wp_backup write"] = (write_s, job_bytes)
            shutil.rmtree(out)

        print(
            f"\nsite {du(site) / 2**20:.0f} MiB files + {dump_mib:.0f} MiB SQL dump; "
            f"compressible: {compressible_mib:.0f} MiB of tar + the dump\n"
        )
        print(f"{'variant':<22} {'wall s':>8} {'output MiB':>11} {'client CPU s':>13}")
        for name, (wall, size) in results.items():
            cpu = f"{CPU[name]:13.2f}" if name in CPU else f"{'':>13}"
            print(f"{name:<22} {wall:8.2f} {size / 2**20:11.1f} {cpu}")
        print(
            f"{'  of which archive':<22} {archive['archive_s']:8.2f} {'':>11}  "
            f"({archive['stored']['bytes'] / 2**20:.0f} MiB stored in {archive['stored']['files']} files, "
            f"{archive['compressed']['bytes'] / 2**20:.0f} MiB compressed in {archive['compressed']['files']})"
        )
        print(f"{'  and dump (beside it)':<22} {archive['dump_s']:8.2f}")
        print(f"{'wp_backup verify':<22} {verify_s:8.2f} {'':>11}  (tar -t, SHA-256, scratch DB load; separate)")
        print(f"{'wp_backup whole run':<22} {job_wall:8.2f} {'':>11}  (CLI start to exit)")
        seed = results["seed-style"]
        io_floor = min(results["floor (parallel)"][0], results["floor (sequential)"][0])
        cpu_floor = CPU["compress CPU"] / (os.cpu_count() or 1)
        print(f"\n{'I/O floor':<26} {io_floor:6.2f} s  (the faster of the parallel and sequential tar cf + dump)")
        print(
            f"{'CPU floor':<26} {cpu_floor:6.2f} s  (compress CPU {CPU['compress CPU']:.2f} s ÷ {os.cpu_count()} CPUs)"
        )
        checks = [
            ("write / max(floors)", write_s / max(io_floor, cpu_floor), 1.3),
            ("write / seed-style wall", write_s / seed[0], 0.2),
            ("output / seed-style size", job_bytes / seed[1], 1.0),
        ]
        print()
        for label, ratio, target in checks:
            print(f"{label:<26} {ratio:6.3f}×  {'met' if ratio <= target else 'MISSED'} (target ≤ {target}×)")
        print(f"{'write / I/O floor':<26} {write_s / io_floor:6.3f}×  (reported)")
        print(f"{'write / CPU floor':<26} {write_s / cpu_floor:6.3f}×  (reported)")
        print(
            f"{'write / tar | zstd (prev.)':<26} {write_s / results['tar | zstd (previous)'][0]:6.3f}×  "
            "(the job, checksums and fsync included, against the previous bare pipelines)"
        )
        print(
            "client CPU: user+sys of tar, mysqldump, compressors (not mariadbd's); the job's is not "
            "measured (it runs through the CLI)"
        )
        return 0
    finally:
        db.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
