"""Trust boundaries, round 2 (issue 25, findings 2 and 4–8): what www-data writes never steers
or blinds root. Each test performs the attack as a real second user (``www_data``,
``attacker``: tests/attacker.py) against real runs of the CLI as root, and asserts the refusal:
the exit code, one line, nothing changed on disk. (Finding 1: test_security_import.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .attacker import User, as_user
from .conftest import REPO, clean_env

SYSTEM_PYTHON = "/usr/bin/python3"  # the attacker's own interpreter (the venv may be out of its reach)
ESCAPE = "\x1b[2J\x1b[1;1HOK: all jobs fine\x1b[8m"

PACKAGE = """
from jobrunner import job

@job(schedule="hourly")
def rootjob(ctx):
    pass

@job(schedule="hourly", user="www-data")
def wwwjob(ctx):
    pass
"""


def _cli(*args: str, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=clean_env(PYTHONPATH=f"{REPO}:{cwd}", **env),
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _world_open(path: Path) -> None:
    """Make ``path`` and its parents reachable by other users (pytest's tmp dirs are 0700)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o711)


def _write_as(user: User, path: Path, text: str) -> None:
    """``user`` writes ``text`` into ``path`` (a file of its own, in a directory it may write)."""
    code = "import sys; open(sys.argv[1], 'w', newline='').write(sys.stdin.read())"
    as_user(user, [SYSTEM_PYTHON, "-c", code, str(path)], input=text)


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


@pytest.fixture
def site(tmp_path: Path, www_data: User) -> Path:
    """A package with root's ``rootjob`` (3 days late: last success 3 days ago, hourly) and
    www-data's ``wwwjob``, whose state directory belongs to www-data (as StateDirectory= makes it)."""
    (tmp_path / "trustpkg").mkdir()
    (tmp_path / "trustpkg" / "__init__.py").write_text("")
    (tmp_path / "trustpkg" / "jobs.py").write_text(PACKAGE)
    state = tmp_path / "state"
    (state / "rootjob").mkdir(parents=True)
    then = time.time() - 3 * 86400
    root_state = {"job": "rootjob", "last_start": then, "last_finish": then + 1, "last_success": then + 1}
    (state / "rootjob" / "state.json").write_text(json.dumps(root_state))
    (state / "wwwjob").mkdir(mode=0o750)
    os.chown(state / "wwwjob", www_data.uid, www_data.gid)
    _world_open(state)
    return tmp_path


def _www_state(site: Path, www_data: User, text: str) -> Path:
    path = site / "state" / "wwwjob" / "state.json"
    _write_as(www_data, path, text)
    return path


@pytest.mark.parametrize("planted", ['{"last_success": NaN}', '{"last_success": Infinity}', '{"last_start": 1e400}'])
def test_a_nan_in_www_datas_state_does_not_blind_health_to_roots_late_job(site, www_data, planted):
    """Finding 2: a non-finite number in www-data's own state.json is that job's UNKNOWN (one
    reason line); root's 3-days-late job is still judged CRITICAL, with no traceback."""
    _www_state(site, www_data, planted)
    done = _cli("health", "--package", "trustpkg", "--state-dir", str(site / "state"), cwd=site)
    _no_traceback(done)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CRITICAL: "), lines
    assert any(line.startswith("CRITICAL rootjob: late") for line in lines), lines
    unknown = [line for line in lines if line.startswith("UNKNOWN wwwjob: ")]
    assert len(unknown) == 1 and "unreadable" in unknown[0], lines


def test_late_watch_fails_when_health_gives_no_status_line(tmp_path):
    """Finding 2: health exiting 1 with no status line (a crash: a traceback's exit code) is no
    WARNING: late_watch fails (exit 1) naming it, instead of reporting success."""
    (tmp_path / "crashpkg").mkdir()
    (tmp_path / "crashpkg" / "__init__.py").write_text("")
    (tmp_path / "crashpkg" / "boom.py").write_text("import os\nos._exit(1)\n")
    done = _cli(
        "run",
        "jobs.late_watch",
        cwd=tmp_path,
        LATE_WATCH_PACKAGE="crashpkg",
        JOBRUNNER_STATE_DIR=str(tmp_path / "state"),
        JOBRUNNER_LOCK_DIR=str(tmp_path / "locks"),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "did not answer with a status line (exit 1" in done.stdout + done.stderr


def test_late_watch_reads_a_valid_status_line():
    from jobs.late_watch import health_verdict

    assert health_verdict("CRITICAL: rootjob: late | jobs=2", 2) == "CRITICAL"
    assert health_verdict("WARNING: x | jobs=1", 1) == "WARNING"
    assert health_verdict("Traceback (most recent call last):", 1) is None
    assert health_verdict("OK: 2 jobs ok | jobs=2", 1) is None  # the word and the exit code disagree
    assert health_verdict("", 1) is None


def test_absurd_numbers_in_www_datas_records_do_not_crash_roots_views(site, www_data):
    """Finding 4: ``silence.until: 1e308`` in www-data's state and history lines with
    ``start: ±1e308``: status --html (root's job on the page), silence --list and history
    exit 0 with a warning line each, never an OverflowError."""
    state = _www_state(site, www_data, json.dumps({"job": "wwwjob", "silence": {"until": 1e308, "by": "x", "uid": 33}}))
    lines = [
        {"job": "wwwjob", "host": "h", "run_id": "a", "start": s, "duration_s": 1, "outcome": "success", "exit_code": 0}
        for s in (1e308, -1e308)
    ]
    history = site / "state" / "wwwjob" / "history.jsonl"
    _write_as(www_data, history, "".join(json.dumps(line) + "\n" for line in lines))
    root_line = {
        "job": "rootjob",
        **{"host": "h", "run_id": "r", "start": time.time() - 60, "duration_s": 2},
        **{"outcome": "success", "exit_code": 0},
    }
    (site / "state" / "rootjob" / "history.jsonl").write_text(json.dumps(root_line) + "\n")
    before = state.read_bytes(), history.read_bytes()
    page = site / "page" / "index.html"
    page.parent.mkdir()
    root = str(site / "state")

    html = _cli("status", "--html", str(page), "--state-dir", root, cwd=site)
    _no_traceback(html)
    assert html.returncode == 0, html.stderr
    assert "rootjob" in page.read_text()

    silences = _cli("silence", "--list", "--state-dir", root, cwd=site)
    _no_traceback(silences)
    assert silences.returncode == 0 and "no silence in force" in silences.stdout
    assert [line for line in silences.stderr.splitlines() if "wwwjob" in line] == [silences.stderr.strip()]

    shown = _cli("history", "--state-dir", root, cwd=site)
    _no_traceback(shown)
    assert shown.returncode == 0, shown.stderr
    assert "rootjob" in shown.stdout
    assert "history of wwwjob: 2 malformed line(s) skipped" in shown.stderr
    assert (state.read_bytes(), history.read_bytes()) == before


def test_control_sequences_a_job_recorded_never_reach_roots_terminal(site, www_data):
    """Finding 7: a job's error ``ESC[2J ESC[1;1H OK: all jobs fine ESC[8m`` (in www-data's own
    state and history) is shown escaped by health, history, status and silence --list."""
    now = time.time()
    state = {
        "job": "wwwjob",
        "last_start": now - 60,
        "last_finish": now - 59,
        "last_failure": now - 59,
        "last_outcome": "failure",
        "last_exit_code": 1,
        "consecutive_failures": 5,
        "last_error": ESCAPE,
        "silence": {"until": now + 3600, "since": now, "by": ESCAPE, "uid": www_data.uid, "reason": ESCAPE},
        "anomaly": {"kind": "long", "text": ESCAPE},
    }
    _www_state(site, www_data, json.dumps(state))
    record = {"job": "wwwjob", "host": "h", "run_id": "a", "start": now - 60, "duration_s": 1}
    record.update({"outcome": "failure", "exit_code": 1, "error": ESCAPE})
    _write_as(www_data, site / "state" / "wwwjob" / "history.jsonl", json.dumps(record) + "\n")
    root = str(site / "state")
    outputs = [
        _cli("health", "--package", "trustpkg", "--state-dir", root, cwd=site),
        _cli("history", "--state-dir", root, cwd=site),
        _cli("status", "--table", "--state-dir", root, cwd=site),
        _cli("silence", "--list", "--state-dir", root, cwd=site),
    ]
    for done in outputs:
        _no_traceback(done)
        assert "\x1b" not in done.stdout + done.stderr, done.args
        assert "\\x1b[2J" in done.stdout, (done.args, done.stdout)


def _dir_backup(site: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    return _cli(
        "run",
        "jobs.dir_backup",
        cwd=site,
        BACKUP_SOURCE=str(site / "src" / "etc"),
        BACKUP_DIR=str(dest),
        JOBRUNNER_STATE_DIR=str(site / "state"),
        JOBRUNNER_LOCK_DIR=str(site / "locks"),
    )


def test_planted_names_in_a_shared_backup_dir_prune_nothing_real(tmp_path, attacker):
    """Finding 5: seven empty ``etc-9999123NT000000Z.tar.gz`` planted by another user in a
    shared 1777 BACKUP_DIR: dir_backup keeps both real archives (and leaves the planted files
    alone), logging ``backup.prune_foreign`` once."""
    (tmp_path / "src" / "etc").mkdir(parents=True)
    (tmp_path / "src" / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    dest = tmp_path / "shared"
    dest.mkdir()
    dest.chmod(0o1777)
    _world_open(dest)
    first = _dir_backup(tmp_path, dest)
    assert first.returncode == 0, first.stdout + first.stderr
    # The older real backup: the first one moved a day back, its checksum file following it.
    [archive] = dest.glob("etc-*.tar.gz")
    older = "etc-20200101T000000Z.tar.gz"
    digest = (dest / f"{archive.name}.sha256").read_text().split()[0]
    archive.rename(dest / older)
    (dest / f"{archive.name}.sha256").unlink()
    (dest / f"{older}.sha256").write_text(f"{digest}  {older}\n")
    planted = [dest / f"etc-9999123{n}T000000Z.tar.gz" for n in range(1, 8)]
    for path in planted:
        _write_as(attacker, path, "")
    time.sleep(1.1)  # a new stamp
    second = _dir_backup(tmp_path, dest)
    assert second.returncode == 0, second.stdout + second.stderr
    real = sorted(p.name for p in dest.glob("etc-2*.tar.gz"))
    assert len(real) == 2 and real[0] == older, real
    assert all(p.exists() and p.stat().st_uid == attacker.uid for p in planted)
    events = [json.loads(line) for line in second.stdout.splitlines() if line.startswith("{")]
    foreign = [e for e in events if e.get("event") == "backup.prune_foreign"]
    assert len(foreign) == 1 and foreign[0]["count"] == 7
    assert not [e for e in events if e.get("event") == "backup.pruned"]


def test_dir_backup_refuses_a_directory_others_can_change(tmp_path, attacker):
    """Finding 5: a BACKUP_DIR others can write without the sticky bit (0777), where another
    user could rename root's archives away, is refused: exit 78, one line, nothing written."""
    (tmp_path / "src" / "etc").mkdir(parents=True)
    dest = tmp_path / "open"
    dest.mkdir()
    dest.chmod(0o777)
    _world_open(dest)
    _write_as(attacker, dest / "etc-99991231T000000Z.tar.gz", "")
    done = _dir_backup(tmp_path, dest)
    assert done.returncode == 78, done.stdout + done.stderr
    assert "writable by other users without the sticky bit" in done.stdout + done.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["etc-99991231T000000Z.tar.gz"]


def test_status_page_is_never_written_through_a_swapped_symlink(site, www_data):
    """Finding 6: www-data swaps the page's directory ``status/`` (its own) for a symlink to a
    root-only directory; root's ``status --html`` is refused (exit 78, one line naming the
    link) and the file there is untouched."""
    html = site / "www"
    (html / "status").mkdir(parents=True)
    shutil.chown(html, www_data.uid, www_data.gid)
    shutil.chown(html / "status", www_data.uid, www_data.gid)
    _world_open(html)
    secret = site / "rootonly"
    secret.mkdir(mode=0o700)
    (secret / "index.html").write_text("root's own file\n")
    page = html / "status" / "index.html"
    root = str(site / "state")
    first = _cli("status", "--html", str(page), "--state-dir", root, cwd=site)
    assert first.returncode == 0 and "rootjob" in page.read_text(), first.stderr
    as_user(www_data, ["mv", str(html / "status"), str(html / "old")])
    as_user(www_data, ["ln", "-s", str(secret), str(html / "status")])
    done = _cli("status", "--html", str(page), "--state-dir", root, cwd=site)
    _no_traceback(done)
    assert done.returncode == 78, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "symlink another user can change" in done.stderr
    assert (secret / "index.html").read_text() == "root's own file\n"
    assert sorted(os.listdir(secret)) == ["index.html"]


def test_status_page_to_a_missing_directory_is_one_line(site):
    done = _cli("status", "--html", str(site / "nowhere" / "index.html"), "--state-dir", str(site / "state"), cwd=site)
    _no_traceback(done)
    assert done.returncode == 78 and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.fixture
def drop(tmp_path: Path, attacker: User) -> Path:
    """A directory of the attacker's, where it leaves what root is asked to import."""
    where = tmp_path / "drop"
    where.mkdir()
    shutil.chown(where, attacker.uid, attacker.gid)
    _world_open(where)
    return where


def test_import_refuses_a_fifo_and_dev_zero_at_once(tmp_path, drop, attacker):
    """Finding 8: ``import crontab /dev/zero`` (2.4 GB in 6 s before) and a FIFO (a hang) are
    refused within seconds: exit 78, one line, nothing written."""
    as_user(attacker, ["mkfifo", str(drop / "crontab")])
    out = tmp_path / "out"
    for source in (str(drop / "crontab"), "/dev/zero"):
        began = time.monotonic()
        done = _cli("import", "crontab", "--out", str(out), source, cwd=tmp_path, timeout=30)
        assert time.monotonic() - began < 20
        _no_traceback(done)
        assert done.returncode == 78 and "not a regular file" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_import_refuses_a_carriage_return_hiding_code(tmp_path, drop, attacker):
    """Finding 8: a ``\\r`` inside a crontab line (the text after it compiled, unseen on a
    terminal) and a crontab over 1 MiB are refused: exit 78, one line naming the line."""
    crontab = drop / "crontab"
    _write_as(attacker, crontab, "0 * * * * echo hi\r\nimport os; os.system('id')\n")
    out = tmp_path / "out"
    done = _cli("import", "crontab", "--out", str(out), str(crontab), cwd=tmp_path)
    _no_traceback(done)
    assert done.returncode == 78, done.stderr
    assert done.stderr.strip().endswith("crontab:1: control character '\\r' in a line: remove it")
    big = drop / "big"
    _write_as(attacker, big, "# padding\n" * 200_000)
    done = _cli("import", "crontab", "--out", str(out), str(big), cwd=tmp_path)
    assert done.returncode == 78 and "larger than 1048576 bytes" in done.stderr, done.stderr
    assert not out.exists()


def test_import_units_never_waits_on_a_fifo_unit(tmp_path, drop, attacker):
    """Finding 8: ``import units`` given a FIFO as a unit file finishes at once (the importer
    reports the unit it could not convert), and ``read_unit`` refuses it in one line."""
    from jobrunner.errors import ConfigError
    from jobrunner.importer.units import read_unit

    fifo = drop / "x.service"
    as_user(attacker, ["mkfifo", str(fifo)])
    began = time.monotonic()
    done = _cli("import", "units", "--out", str(tmp_path / "out"), str(fifo), cwd=tmp_path, timeout=30)
    _no_traceback(done)
    assert time.monotonic() - began < 20
    with pytest.raises(ConfigError, match="x.service: not a regular file$"):
        read_unit(fifo)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_own_archives_proves_each_condition(tmp_path):
    """Each proof of dir_backup's pruning on its own: root's own files that fail one check (a
    stamp in the future, a checksum that does not match, a second hard link, a checksum file
    naming another archive, a symlink) are not its archives."""
    import hashlib

    from jobs.dir_backup import own_archives

    def make(name: str, body: bytes = b"x", named: str | None = None, digest: str | None = None) -> None:
        (tmp_path / name).write_bytes(body)
        (tmp_path / f"{name}.sha256").write_text(f"{digest or hashlib.sha256(body).hexdigest()}  {named or name}\n")

    make("etc-20240101T000000Z.tar.gz")
    make("etc-20240102T000000Z.tar.gz")
    make("etc-99990101T000000Z.tar.gz")  # the future
    make("etc-20240103T000000Z.tar.gz", digest="0" * 64)  # wrong checksum
    make("etc-20240104T000000Z.tar.gz", named="etc-20240101T000000Z.tar.gz")  # names another
    make("etc-20240105T000000Z.tar.gz")
    os.link(tmp_path / "etc-20240105T000000Z.tar.gz", tmp_path / "elsewhere")  # two links
    os.symlink("etc-20240101T000000Z.tar.gz", tmp_path / "etc-20240106T000000Z.tar.gz")
    (tmp_path / "etc-20240106T000000Z.tar.gz.sha256").write_text(f"{hashlib.sha256(b'x').hexdigest()}  x\n")
    make("etc-2024010T000000Z.tar.gz")  # no stamp
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mine, foreign = own_archives(dfd, "etc")
    finally:
        os.close(dfd)
    assert mine == ["etc-20240101T000000Z.tar.gz", "etc-20240102T000000Z.tar.gz"]
    assert sorted(foreign) == sorted(
        [
            "etc-2024010T000000Z.tar.gz",
            "etc-20240103T000000Z.tar.gz",
            "etc-20240104T000000Z.tar.gz",
            "etc-20240105T000000Z.tar.gz",
            "etc-20240106T000000Z.tar.gz",
            "etc-99990101T000000Z.tar.gz",
        ]
    )
