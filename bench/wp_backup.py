#!/usr/bin/env python3
"""wp_backup's write phase against its two floors and the seed's pipeline, side by side.

    python bench/wp_backup.py [--size 1G] [--workdir DIR] [--rounds 5] [--drop-caches]

Builds a throwaway stack (tests/wp/stack.py: a real mariadbd on 127.0.0.1, WordPress from
Debian's package) and grows it to ``--size``: ~12 % database (rows of word-salad text loaded
into a ``<prefix>bench_rows`` table through the mysql client, so mysqldump does real work; the
dump is ~120 MB at 1 GiB), ~5 % WordPress PHP/text, the rest already-compressed media (random
bytes, as JPEG/MP4 are to a compressor). Then, in each of ``--rounds`` rounds, each variant
writes into its own directory on the same filesystem as the job's sets, and every file it
wrote is fsync'd (with its directory) inside the timing, as the job fsyncs its own: a backup
is not written until it is durable. (Each file is fsync'd, not the filesystem: a ``syncfs``
would also wait for whatever else on the machine has dirty pages.)

- ``wp_backup write``: the real job run through the CLI; the figure is its own ``write_s``
  log field (the archive, ``jobs._archive``, beside ``mysqldump --single-transaction | zstd``;
  fsync; SHA-256 of both: the archive's fed by its writer as the bytes pass, its fsync inside
  ``archive_s``; the dump's read back as it grows, its last hash and fsync after both ended,
  ``sync_s``); its ``cpu_s`` is the CPU of the job's process and of the commands it ran in
  that phase (not mariadbd's); verification (tar -t, every checksum recomputed from the files,
  scratch-database load) is its ``verify_s``, reported apart;
- ``seed-style``: ``tar czf`` of the site, then ``mysqldump | gzip`` (the seed's scripts): a
  size and wall reference, run in the first ``--seed-rounds`` rounds only (14 s at 512 MiB);
- ``floor (parallel)`` / ``(sequential)``: ``tar cf`` and ``mysqldump > db.sql``, no
  compression, no checksums, side by side as the job runs its two pipelines, and one after
  the other: the I/O floor is the faster of the two in that round;
- ``tar | zstd (previous)``: the previous job's two pipelines in bare bash (``tar | zstd -T0
  -3`` of everything beside ``mysqldump | zstd``), without checksums and runner;
- the CPU the same work needs, each measured alone, from the page cache: ``compress`` (``zstd
  -T0 -3`` of a tar of the files the job compresses, ``jobs._archive.classify``, and of the
  dump), ``dump`` (``mysqldump > /dev/null``: the client's CPU and mariadbd's, read from /proc),
  ``SHA-256`` (hashlib over the job's own output, in this process). Their sum ÷ the CPUs is what
  the write phase cannot beat on N idle cores, however well it overlaps; on a machine others
  share, the same work run side by side (the two zstd, mysqldump, the hash of the job's set;
  wall time) is what it cannot beat now. The CPU floor is the larger of the two.

The write phase cannot take less than the larger of the two floors. Each round gives its own
ratio, write ÷ max(I/O floor, CPU floor) of that round, so a machine that is busy for a while
moves both sides of a ratio; every figure is printed as the median of the rounds, with the
min and max. The page cache is warm for every variant (the site is read once beforehand and
stays cached; the outputs are deleted after each variant), or, with ``--drop-caches`` (root),
dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``) before each variant alike; mariadbd's
buffer pool stays warm either way.

Targets: write ≤ 1.3× max(I/O floor, CPU floor) (median), ≤ 0.2× seed-style wall, output no
larger than seed-style. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shlex
import shutil
import statistics
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


# SHA-256 of the files named, as the job hashes its set (hashlib, 1 MiB reads)
HASH = """import hashlib, sys
buf = bytearray(1 << 20)
for name in sys.argv[1:]:
    digest = hashlib.sha256()
    with open(name, "rb", buffering=0) as handle:
        while n := handle.readinto(buf):
            digest.update(memoryview(buf)[:n])
"""

OUTS = {
    "floor (parallel)": "floor",
    "floor (sequential)": "floor-seq",
    "job": "job",
    "tar | zstd (previous)": "pipes",
    "seed-style": "seed",
}


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` and ``path`` itself (what the job does for its set)."""
    for item in [*(p for p in path.rglob("*") if p.is_file()), path]:
        fd = os.open(item, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Rounds:
    """Each variant's figures, one per round."""

    def __init__(self) -> None:
        self.figures: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def __getitem__(self, name: str) -> list[float]:
        return self.figures[name]

    def spread(self, name: str, fmt: str = "{:.2f}") -> str:
        values = self.figures[name]
        mid = fmt.format(statistics.median(values))
        if len(values) == 1:
            return f"{mid} (1 round)"
        return f"{mid} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--size", default="1G", help="total site size incl. database (e.g. 1G, 256M)")
    parser.add_argument("--workdir", help="where to build (default: a temp dir, removed after)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant (median, min, max)")
    parser.add_argument("--seed-rounds", type=int, default=1, help="rounds that also run the seed-style scripts")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each variant")
    args = parser.parse_args()
    missing = stack.missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.drop_caches and os.geteuid() != 0:
        print("--drop-caches needs root", file=sys.stderr)
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
        cpus = os.cpu_count() or 1
        print(
            f"generated in {time.monotonic() - t0:.1f}s: site {du(site) / 2**20:.0f} MiB files + "
            f"database (dump size measured below); {cpus} CPUs; page cache "
            + ("dropped before each variant" if args.drop_caches else "warm for every variant"),
            flush=True,
        )
        subprocess.run(f"tar cf - -C {site} . | cat > /dev/null", shell=True, check=True)  # warm the cache

        defaults = work / "my.cnf"
        defaults.write_text(
            f'[client]\nuser={stack.DB_USER}\npassword="{stack.DB_PASSWORD.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"\nhost=127.0.0.1\nport={db.port}\n'
        )
        defaults.chmod(0o600)
        dump = f"mysqldump --defaults-extra-file={defaults} --single-transaction --quick {stack.DB_NAME}"
        assert db.proc is not None
        server = db.proc.pid
        env = dict(os.environ)
        rounds = Rounds()
        sizes: dict[str, int] = {}
        archive: dict[str, Any] = {}
        compressible_mib = dump_mib = 0.0

        def prepare() -> None:
            if args.drop_caches:
                drop_caches()

        def timed(name: str, script: str, out: Path, *, durable: bool = True) -> None:
            """Run ``script`` in ``out``; its wall (fsync included) and client CPU, its output's size."""
            out.mkdir(parents=True)
            prepare()
            cpu, db_cpu, started = cpu_children(), proc_cpu(server), time.monotonic()
            subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=True, cwd=out, env=env)
            if durable:
                fsync_tree(out)
            rounds.add(name, time.monotonic() - started)
            rounds.add(f"{name} CPU", cpu_children() - cpu)
            rounds.add(f"{name} server CPU", proc_cpu(server) - db_cpu)
            sizes[name] = du(out)

        def job(out: Path) -> dict[str, Any]:
            env_file = work / "wp.env"
            env_file.write_text(f"WP_PATH={site}\nBACKUP_DIR={out}\nWP_SITE=bench\n")
            jenv = dict(
                env,
                JOBRUNNER_LOCK_DIR=str(work / "locks"),
                JOBRUNNER_STATE_DIR=str(work / "state"),
                JOBRUNNER_LOG_FORMAT="json",
                PYTHONPATH=str(REPO),
            )
            prepare()
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
            if proc.returncode != 0 or not done or done[-1]["event"] != "backup.verified":
                print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(1)
            found = next(e for e in events if e["event"] == "backup.archive")
            for key, value in (
                ("wp_backup write", done[-1]["write_s"]),
                ("wp_backup write CPU", found.get("cpu_s", float("nan"))),  # logged since issue 30
                ("  of which archive+fsync", found["archive_s"]),
                ("  and dump (beside it)", found["dump_s"]),
                ("  then dump fsync+last hash", found.get("sync_s", float("nan"))),
                ("wp_backup verify", done[-1]["verify_s"]),
                ("wp_backup whole run", wall),
            ):
                rounds.add(key, value)
            sizes["wp_backup write"] = du(out)
            return found

        def hash_cpu(out: Path) -> None:
            """SHA-256 of the job's set (its data files), in this process: CPU seconds."""
            cpu = time.process_time()
            for path in out.rglob("*"):
                if path.is_file() and path.name.split(".")[0] in ("files", "db"):
                    digest, buf = hashlib.sha256(), bytearray(1 << 20)
                    with open(path, "rb", buffering=0) as handle:
                        while n := handle.readinto(buf):
                            digest.update(memoryview(buf)[:n])
            rounds.add("SHA-256 CPU", time.process_time() - cpu)

        for r in range(args.rounds):
            base = work / f"round{r}"
            variants: list[tuple[str, str]] = [
                ("floor (parallel)", f"{{ {dump} > db.sql; }} & p=$!; tar cf site.tar -C {site} .; wait $p"),
                ("floor (sequential)", f"tar cf site.tar -C {site} .; {dump} > db.sql"),
                ("job", ""),
                (
                    "tar | zstd (previous)",
                    f"{{ {dump} | zstd -T0 -3 -q -c > db.sql.zst; }} & p=$!; "
                    f"tar cf - -C {site} . | zstd -T0 -3 -q -c > files.tar.zst; wait $p",
                ),
            ]
            if r < args.seed_rounds:
                variants.append(("seed-style", f"tar czf site.tar.gz -C {site} .; {dump} | gzip > db.sql.gz"))
            if r % 2:  # the job before the floors in odd rounds, after them in even ones
                variants.insert(0, variants.pop(2))
            for name, script in variants:
                if name == "job":
                    archive = job(base / "job")
                    hash_cpu(base / "job")
                    sets = " ".join(str(p) for p in (base / "job").glob("*/*") if p.name.startswith(("files.", "db.")))
                    timed(
                        "CPU work side by side",
                        f"zstd -T0 -3 -q -c {work / 'compressible.tar'} > /dev/null & a=$!; "
                        f"zstd -T0 -3 -q -c {work / 'db.sql'} > /dev/null & b=$!; "
                        f"{dump} > /dev/null & c=$!; {sys.executable} -c {shlex.quote(HASH)} {sets}; wait $a; wait $b; wait $c",
                        base / "cpu-wall",
                        durable=False,
                    )
                else:
                    timed(name, script, base / OUTS[name])
                if r == 0 and name == "floor (parallel)":
                    dump_mib = (base / "floor" / "db.sql").stat().st_size / 2**20
                    compressible_tar(site, work / "compressible.tar")
                    shutil.copy(base / "floor" / "db.sql", work / "db.sql")
                    compressible_mib = (work / "compressible.tar").stat().st_size / 2**20
                shutil.rmtree(base / OUTS[name])  # each variant's output gone before the next
            timed(
                "compress",
                f"zstd -T0 -3 -q -c {work / 'compressible.tar'} > /dev/null; zstd -T0 -3 -q -c {work / 'db.sql'} > /dev/null",
                base / "cpu",
                durable=False,
            )
            timed("dump", f"{dump} > /dev/null", base / "dump", durable=False)
            shutil.rmtree(base)

            # this round's floors and ratio
            io = min(rounds["floor (parallel)"][-1], rounds["floor (sequential)"][-1])
            need = rounds["compress CPU"][-1] + rounds["dump CPU"][-1] + rounds["dump server CPU"][-1]
            need += rounds["SHA-256 CPU"][-1]
            cpu_floor = max(need / cpus, rounds["CPU work side by side"][-1])
            rounds.add("I/O floor", io)
            rounds.add("CPU floor", cpu_floor)
            rounds.add("CPU needed", need)
            rounds.add("CPU needed ÷ CPUs", need / cpus)
            write = rounds["wp_backup write"][-1]
            rounds.add("write / max(floors)", write / max(io, cpu_floor))
            rounds.add("write / I/O floor", write / io)
            rounds.add("write / CPU floor", write / cpu_floor)
            rounds.add("write / tar | zstd (prev.)", write / rounds["tar | zstd (previous)"][-1])
            if r < args.seed_rounds:
                rounds.add("write / seed-style wall", write / rounds["seed-style"][-1])
            print(
                f"round {r + 1}/{args.rounds}: write {write:.2f} s, I/O floor {io:.2f} s, CPU floor "
                f"{cpu_floor:.2f} s: {rounds['write / max(floors)'][-1]:.3f}×; load average "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )

        print(
            f"\nsite {du(site) / 2**20:.0f} MiB files + {dump_mib:.0f} MiB SQL dump; compressible: "
            f"{compressible_mib:.0f} MiB of tar + the dump. Each figure: the median of {args.rounds} "
            "rounds (min–max)\n"
        )
        print(f"{'variant':<26} {'wall s':>20} {'output MiB':>11} {'client CPU s':>20}")
        for name in ("floor (parallel)", "floor (sequential)", "tar | zstd (previous)", "seed-style"):
            print(
                f"{name:<26} {rounds.spread(name):>20} {sizes[name] / 2**20:11.1f} {rounds.spread(name + ' CPU'):>20}"
            )
        print(
            f"{'wp_backup write':<26} {rounds.spread('wp_backup write'):>20} "
            f"{sizes['wp_backup write'] / 2**20:11.1f} {rounds.spread('wp_backup write CPU'):>20}"
        )
        print(
            f"{'  of which archive+fsync':<26} {rounds.spread('  of which archive+fsync'):>20}  "
            f"({archive['stored']['bytes'] / 2**20:.0f} MiB stored in {archive['stored']['files']} files, "
            f"{archive['compressed']['bytes'] / 2**20:.0f} MiB compressed in {archive['compressed']['files']})"
        )
        for name in ("  and dump (beside it)", "  then dump fsync+last hash"):
            print(f"{name:<26} {rounds.spread(name):>20}")
        print(f"{'wp_backup verify':<26} {rounds.spread('wp_backup verify'):>20}  (tar -t, SHA-256, scratch DB load)")
        print(f"{'wp_backup whole run':<26} {rounds.spread('wp_backup whole run'):>20}  (CLI start to exit)")
        print("\nCPU the work needs (each alone; s):")
        print(f"  compress (zstd -T0 -3)    {rounds.spread('compress CPU')}")
        print(f"  dump (mysqldump)          {rounds.spread('dump CPU')}")
        print(f"  dump (mariadbd)           {rounds.spread('dump server CPU')}")
        print(f"  SHA-256 of the set        {rounds.spread('SHA-256 CPU')}")
        print(f"  sum                       {rounds.spread('CPU needed')}")
        print(
            f"\n{'I/O floor':<26} {rounds.spread('I/O floor')} s  (the faster of the parallel and sequential tar cf + dump, fsync'd)"
        )
        print(
            f"{'CPU floor':<26} {rounds.spread('CPU floor')} s  (the larger of the CPU needed ÷ {cpus} CPUs, "
            f"{rounds.spread('CPU needed ÷ CPUs')} s, and that work run side by side, "
            f"{rounds.spread('CPU work side by side')} s: the CPUs the machine lends it now)"
        )
        checks = [
            ("write / max(floors)", 1.3),
            ("write / seed-style wall", 0.2),
        ]
        print()
        for label, target in checks:
            mid = statistics.median(rounds[label])
            print(
                f"{label:<26} {rounds.spread(label, '{:.3f}')}×  {'met' if mid <= target else 'MISSED'} (target ≤ {target}×)"
            )
        ratio = sizes["wp_backup write"] / sizes["seed-style"]
        print(f"{'output / seed-style size':<26} {ratio:.3f}×  {'met' if ratio <= 1 else 'MISSED'} (target ≤ 1.0×)")
        for label in ("write / I/O floor", "write / CPU floor", "write / tar | zstd (prev.)"):
            print(f"{label:<26} {rounds.spread(label, '{:.3f}')}×  (reported)")
        print(
            "client CPU: user+sys of tar, mysqldump, compressors (not mariadbd's); the job's: its own "
            "process and the commands it ran in the write phase"
        )
        return 0
    finally:
        db.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
