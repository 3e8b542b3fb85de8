"""Every command that writes a file answers a place it cannot write (a missing directory, an
unwritable one, ``/proc/...``, a path through a file) with one line naming it and exit 78
(docs/cli.md), never a traceback; a missing directory that the command may make (``--out DIR``)
is made. Real subprocesses of the CLI; ``/sys`` refuses even root (EACCES)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Launcher

SITE_JOBS = """
from jobrunner import JobContext, job

@job(instances=True, instance_group="site", lock=True, schedule="hourly")
def site_backup(ctx: JobContext) -> None:
    pass
"""

PLAIN_JOB = """
from jobrunner import job

@job(schedule="daily")
def nightly(ctx):
    pass
"""


def _bad_places(tmp: Path) -> dict[str, str]:
    afile = tmp / "a-file"
    afile.write_text("x")
    return {
        "unwritable": f"/sys/jobrunner-test-{tmp.name}",
        "proc": f"/proc/1/jobrunner-test-{tmp.name}",
        "through a file": str(afile / "below"),
    }


def _one_line(done, prefix: str) -> None:
    assert done.returncode == 78, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jobrunner: {prefix}: cannot write "), done.stderr


@pytest.fixture
def cli(launcher: Launcher) -> Launcher:
    launcher.write_job("sitejobs", SITE_JOBS)
    launcher.write_job("plainjobs", PLAIN_JOB)
    return launcher


def test_status_html_into_a_bad_place(cli: Launcher) -> None:
    places = _bad_places(cli.tmp) | {"missing directory": str(cli.tmp / "missing" / "index.html")}
    for what, place in places.items():
        target = place if what == "missing directory" else f"{place}/index.html"
        done = cli.run("status", "--html", target)
        _one_line(done, "status --html")
        assert target in done.stderr, what
    good = cli.run("status", "--html", str(cli.tmp / "index.html"))
    assert good.returncode == 0 and (cli.tmp / "index.html").read_text().startswith("<!")


def test_units_render_out_into_a_bad_place(cli: Launcher) -> None:
    for place in _bad_places(cli.tmp).values():
        _one_line(cli.run("units", "render", "--package", "plainjobs", "--out", place), "units render")
    made = cli.tmp / "new" / "units"
    done = cli.run("units", "render", "--package", "plainjobs", "--out", str(made))
    assert done.returncode == 0 and (made / "nightly.timer").exists(), done.stderr


def test_units_install_into_a_bad_root(cli: Launcher) -> None:
    units = cli.tmp / "units"
    assert cli.run("units", "render", "--package", "plainjobs", "--out", str(units)).returncode == 0
    for place in _bad_places(cli.tmp).values():
        done = cli.run("units", "install", "--dir", str(units), "--root", place)
        _one_line(done, "units install")


def test_import_out_into_a_bad_place(cli: Launcher) -> None:
    crontab = cli.tmp / "crontab"
    crontab.write_text("0 3 * * * root /bin/true\n")
    for place in _bad_places(cli.tmp).values():
        done = cli.run("import", "crontab", str(crontab), "--out", place)
        assert done.returncode == 78 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[0].startswith("jobrunner: import: "), done.stderr
        assert len([line for line in done.stderr.splitlines() if "import:" in line]) == 1, done.stderr
    made = cli.tmp / "new" / "imported"
    done = cli.run("import", "crontab", str(crontab), "--out", str(made))
    assert done.returncode == 0 and list(made.glob("*.py")), done.stderr


@pytest.mark.parametrize("variable", ["JOBRUNNER_INSTANCES_DIR", "JOBRUNNER_TMPFILES_DIR"])
def test_instances_add_into_a_bad_place(cli: Launcher, variable: str) -> None:
    dirs = {"JOBRUNNER_INSTANCES_DIR": str(cli.tmp / "inst"), "JOBRUNNER_TMPFILES_DIR": str(cli.tmp / "tmpfiles")}
    for n, place in enumerate(_bad_places(cli.tmp).values()):
        env = cli.env(**(dirs | {variable: place}))
        args = ("instances", "add", "site", f"s{n}", "--set", "X=1", "--no-enable", "--package", "sitejobs")
        _one_line(cli.run(*args, env=env), "instances add")
