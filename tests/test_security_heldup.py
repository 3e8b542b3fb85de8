"""What held up in the security review (issue #13) and must keep holding: a 10 MB line, invalid
UTF-8 and a fork bomb under a timeout; `units install` never writing through a symlink."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from jobrunner.unitgen import render_all
from jobrunner.unitgen.install import install
from jobrunner.unitgen.testing import job_package
from jobrunner.unitgen.write import write_rendered


def test_ten_megabyte_line_and_invalid_utf8_keep_the_log_one_json_object_a_line(launcher):
    """A 10 MB line without a newline and bytes that are not UTF-8 become cut, replaced text:
    every line of the run's log is still one JSON object, and the run succeeds."""
    launcher.write_job(
        "noisy",
        """
        from jobrunner import job

        @job(timeout="60s")
        def noisy(ctx):
            ctx.run(["python3", "-c",
                     "import sys; out = sys.stdout.buffer; out.write(b'y' * 10_000_000); out.write(b'\\\\n');"
                     "out.write(b'bad \\\\xff\\\\xfe bytes\\\\n'); out.write(b'end\\\\n')"])
    """,
    )
    run = launcher.run("noisy", timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    for line in run.stdout.splitlines():
        json.loads(line)
    lines = [e["line"] for e in run.events if e["event"] == "proc.output"]
    assert lines[0].endswith("…[truncated]") and len(lines[0]) < 70_000
    assert lines[1].startswith("bad ") and "\ufffd" in lines[1] and lines[2] == "end"


@pytest.mark.slow
def test_a_fork_bomb_under_a_timeout_is_ended_with_its_whole_tree(launcher):
    """A bounded fork bomb (each process forks until a cap, then sleeps) under timeout="2s":
    the run ends with 124 within seconds, and none of the bomb's processes is left."""
    marker = f"jr-bomb-{time.monotonic_ns()}"
    launcher.write_job(
        "bomb",
        f"""
        from jobrunner import job

        @job(timeout="2s", kill_grace="1s")
        def bomb(ctx):
            ctx.sh('b() {{ [ $(pgrep -fc {marker}) -lt 200 ] && {{ b & b & }}; exec -a {marker} sleep 300; }}; b')
    """,
    )
    started = time.monotonic()
    run = launcher.run("bomb", timeout=60)
    assert run.returncode == 124, run.stdout[-2000:]
    assert time.monotonic() - started < 20
    import subprocess

    def left() -> int:
        found = subprocess.run(["pgrep", "-fc", marker], capture_output=True, text=True)
        return int(found.stdout.strip() or 0)

    deadline = time.monotonic() + 5
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left() == 0


def test_units_install_never_writes_through_a_symlink(tmp_path, monkeypatch):
    """A unit's target path planted as a symlink to another file: `units install --force`
    replaces the link with the unit; the file it pointed at is untouched."""
    package = job_package(
        tmp_path / "src", {"m": "from jobrunner import job\n\n@job(schedule='daily')\ndef alpha(ctx): pass\n"}
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    units = tmp_path / "units"
    write_rendered(render_all(package), units, prune=True)
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.write_text("not a unit\n")
    target = root / "etc/systemd/system/alpha.service"
    target.parent.mkdir(parents=True)
    target.symlink_to(victim)
    install(units, root, out=io.StringIO(), force=True)
    assert victim.read_text() == "not a unit\n"
    assert not target.is_symlink() and target.read_text() == (units / "alpha.service").read_text()
    assert Path(root / "etc/systemd/system/alpha.timer").exists()
