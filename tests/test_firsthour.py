"""The first hour (issue 29), each point through the real CLI: where a user's jobs live (the
README's example as written), names everywhere with "did you mean", health on day one,
``units render JOB``, ``instances add`` on an existing site, and the smaller points."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, clean_env

README = REPO / "README.md"


def cli(*args: str, cwd: Path | None = None, script: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    """The real CLI; ``script``: as the installed console script starts it (no working
    directory first on the path: ``python -P``)."""
    return subprocess.run(
        [sys.executable, *(["-P"] if script else []), "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**({"PYTHONPATH": str(REPO)} | env)),
        cwd=cwd or REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def site_dir(tmp_path: Path) -> Path:
    """A site jobs directory as root makes it: root's, 0755, parents root's or sticky."""
    path = tmp_path / "site-jobs"
    path.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    os.chmod(path, 0o755)
    return path


def readme_example() -> tuple[str, str, list[str]]:
    """(module path, module source, shell lines) of the README's 'A job in ten lines'."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## A job in ten lines") :]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    python = next(body for lang, body in blocks if lang == "python")
    shell = next(body for lang, body in blocks if lang == "sh")
    path = python.splitlines()[0].removeprefix("# ").strip()
    lines = [line.split("  #")[0].strip() for line in shell.splitlines() if line.strip()]
    return path, python, lines


def test_readme_example_runs_as_written(tmp_path):
    """The README's job, saved where the README says, runs by name with the README's commands
    (the two roots moved under tmp: /etc/jobrunner/jobs by $JOBRUNNER_JOBS_DIR, /root/site-units)."""
    path, source, lines = readme_example()
    assert path == "/etc/jobrunner/jobs/site_backup.py"
    jobs_dir = tmp_path / "etc-jobrunner-jobs"
    units_dir = tmp_path / "site-units"
    os.chmod(tmp_path, 0o755)

    def moved(line: str) -> str:
        return line.replace("/etc/jobrunner/jobs", str(jobs_dir)).replace("/root/site-units", str(units_dir))

    assert lines[0].startswith("install -d -m 0755 /etc/jobrunner/jobs")
    subprocess.run(shlex.split(moved(lines[0])), check=True)
    (jobs_dir / "site_backup.py").write_text(source)
    env = {"JOBRUNNER_JOBS_DIR": str(jobs_dir), "JOBRUNNER_STATE_DIR": str(tmp_path / "state")}
    cwd = tmp_path  # not the checkout: an installed jobrunner does not see ./jobs
    outputs = []
    for line in lines[1:]:
        argv = shlex.split(moved(line))
        assert argv[0] == "/opt/jobrunner/bin/jobrunner", line
        proc = cli(*argv[1:], cwd=cwd, script=True, **env)  # /opt/jobrunner/bin/jobrunner: the console script
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        outputs.append(proc)
    finished = [json.loads(x) for x in outputs[0].stdout.splitlines() if '"job.finished"' in x]
    assert finished and finished[0]["outcome"] == "success" and finished[0]["job"] == "site_backup"
    # point 8: run by hand as root, the declared user= is not silently ignored
    assert "jobrunner: runs as root by hand, not as user=www-data (its unit's User=)\n" == outputs[0].stderr
    assert (units_dir / "site-backup.service").exists() and (units_dir / "site-backup.timer").exists()
    assert "User=www-data" in (units_dir / "site-backup.service").read_text()
    # listed with the shipped jobs, by its name
    listed = cli("list", "--no-next", cwd=cwd, **env)
    assert "jobs.site_backup:site_backup" in listed.stdout and "jobs.wp_backup:wp_backup" in listed.stdout


@pytest.mark.parametrize("how", ["group-writable file", "group-writable dir", "foreign owner"])
def test_site_dir_another_user_can_write_is_refused(tmp_path, how):
    """Root never imports a module another user can change: the directory is left out, and
    run and list say why in one line (threat model: www-data must not get root's code run)."""
    jobs_dir = site_dir(tmp_path)
    module = jobs_dir / "evil.py"
    module.write_text("from jobrunner import job\n@job\ndef evil(ctx):\n    open('/tmp/pwned','w')\n")
    os.chmod(module, 0o644)
    if how == "group-writable file":
        os.chmod(module, 0o664)
    elif how == "group-writable dir":
        os.chmod(jobs_dir, 0o775)
    else:
        os.chown(module, 33, 33)  # www-data
    env = {"JOBRUNNER_JOBS_DIR": str(jobs_dir), "JOBRUNNER_STATE_DIR": str(tmp_path / "state")}
    run = cli("run", "evil", cwd=tmp_path, **env)
    assert run.returncode == 78, run.stderr
    assert "left out" in run.stderr and str(jobs_dir) in run.stderr and "Traceback" not in run.stderr
    listed = cli("list", "--no-next", cwd=tmp_path, **env)
    assert "evil" not in listed.stdout.replace(str(jobs_dir), "")
    assert "left out" in listed.stderr
    assert "jobs.wp_backup:wp_backup" in listed.stdout  # the shipped jobs are still there


def test_run_takes_a_job_name_and_unit_name(tmp_path):
    """`jobrunner run NAME` as list/status/health take it: the job's name or its unit name."""
    env = {"JOBRUNNER_JOBS_DIR": "", "JOBRUNNER_STATE_DIR": str(tmp_path)}
    for name in ("noop", "jobrunner", "run"):
        if name == "noop":
            proc = cli("run", "noop", **env)
            assert proc.returncode == 0, proc.stderr
    proc = cli("run", "dir-backup", "--dry-run", **env)
    assert proc.returncode == 0, proc.stderr
    proc = cli("dir-backup", "--dry-run", **env)  # the bare form too
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["stauts"], 64, "did you mean 'status'?"),
        (["hisotry", "x"], 64, "did you mean 'history'?"),
        (["run", "dir_bakup"], 78, "did you mean 'dir_backup'?"),
        (["health", "disk_chek"], 3, "did you mean 'disk_check'?"),
        (["units", "render", "--out", "-", "wp_bakup"], 78, "did you mean 'wp_backup'?"),
        (["instances", "add", "wpp", "shop.example", "--set", "A=b", "--no-enable"], 78, "did you mean 'wp'?"),
        (["history", "bom"], 78, "did you mean 'boom'?"),
        (["silence", "slwo", "--for", "1h"], 78, "did you mean 'slow'?"),
        (["status", "bom"], 78, "did you mean 'boom'?"),
    ],
)
def test_mistyped_names_get_did_you_mean(tmp_path, args, code, needle):
    """A mistyped command, job or instance group: one line with the nearest name that exists."""
    state = tmp_path / "state"
    env = {"JOBRUNNER_JOBS_DIR": "", "JOBRUNNER_STATE_DIR": str(state)}
    for name in ("boom", "slow"):  # two jobs that ran: history, silence and status know them
        module = tmp_path / f"{name}.py"
        module.write_text(f"from jobrunner import job\n@job\ndef {name}(ctx):\n    pass\n")
        assert cli("run", name, cwd=tmp_path, **env).returncode == 0
    proc = cli(*args, cwd=tmp_path, **env)
    out = proc.stderr + proc.stdout
    assert proc.returncode == code, out
    assert needle in out and "Traceback" not in out


BROKEN_DUP = "from jobrunner import job\n@job(schedule='daily')\ndef noop(ctx):\n    pass\n"  # noop is shipped


@pytest.mark.parametrize(
    ("source", "needle"),
    [(BROKEN_DUP, "both use the unit name 'noop'"), ("import no_such_dependency_xyz\n", "no_such_dependency_xyz")],
)
def test_one_broken_module_is_one_unknown_line(tmp_path, source, needle):
    """A duplicate job name or an import error in one module: list and health name that
    module in one line, and still list and judge every other job."""
    jobs_dir = site_dir(tmp_path)
    (jobs_dir / "zz_broken.py").write_text(source)
    (jobs_dir / "mine.py").write_text("from jobrunner import job\n@job(schedule='hourly')\ndef mine(ctx):\n    pass\n")
    env = {"JOBRUNNER_JOBS_DIR": str(jobs_dir), "JOBRUNNER_STATE_DIR": str(tmp_path / "state")}
    listed = cli("list", "--no-next", cwd=tmp_path, **env)
    assert listed.returncode == 78
    assert "jobs.mine:mine" in listed.stdout and "jobs.wp_backup:wp_backup" in listed.stdout
    assert listed.stderr.count("\n") == 1 and "jobs.zz_broken" in listed.stderr and needle in listed.stderr
    checked = cli("health", "--all", cwd=tmp_path, **env)
    assert checked.returncode == 3, checked.stdout
    lines = checked.stdout.splitlines()
    unknown = [line for line in lines[1:] if line.startswith("UNKNOWN")]
    assert len(unknown) == 1 and "jobs.zz_broken" in unknown[0] and needle in unknown[0]
    assert any(line.startswith("OK mine: not installed") for line in lines)
    assert any(line.startswith("OK wp_backup") for line in lines)
    # and the other jobs still run by name
    assert cli("run", "mine", cwd=tmp_path, **env).returncode == 0


def test_health_on_day_one_is_ok_not_installed(tmp_path):
    """A fresh install: no timer installed, no run: exit 0, 'not installed', not 17 WARNINGs;
    --all lists every declared job; a job whose unit file is installed and never ran warns."""
    units = tmp_path / "units"
    units.mkdir()
    env = {"JOBRUNNER_STATE_DIR": str(tmp_path / "state"), "SYSTEMD_UNIT_PATH": str(units)}
    if os.path.isdir("/run/systemd/system"):  # pragma: no cover - the host's systemd would answer
        pytest.fail("this test judges without systemd; the systemd case is tests/systemd/test_health_e2e.py")
    day_one = cli("health", **env)
    assert day_one.returncode == 0, day_one.stdout
    assert day_one.stdout.startswith("OK: no job installed; 16 declared jobs not installed (--all lists them)")
    every = cli("health", "--all", **env)
    assert every.returncode == 0 and len(every.stdout.splitlines()) == 17
    assert all(": not installed" in line for line in every.stdout.splitlines()[1:])
    (units / "disk-check.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    installed = cli("health", **env)
    assert installed.returncode == 1 and installed.stdout.splitlines()[1].startswith("WARNING disk_check: never ran")


SITE_JOB = (
    "from jobrunner import job\n"
    "@job(schedule='02:15', user='www-data', write_paths=['/mnt/backups'], log_file='/var/log/site-backup.log')\n"
    "def site_backup(ctx):\n    pass\n"
)


def test_units_render_job_changes_only_its_files(tmp_path):
    """`units render JOB` into a directory of all the units: JOB's .service/.timer written,
    every other file untouched, the shared tmpfiles/logrotate files merged (the others' lines
    kept); JOB is judged alone (another job sharing a path is not its problem), except where
    the merged file would hold two owners for one path; `--out -` prints, writes nothing."""
    jobs_dir = site_dir(tmp_path)
    (jobs_dir / "site_backup.py").write_text(SITE_JOB.replace("/mnt/backups", str(tmp_path / "site-out")))
    out = tmp_path / "units"
    env = {"JOBRUNNER_JOBS_DIR": "", "JOBRUNNER_STATE_DIR": str(tmp_path / "state")}
    assert cli("units", "render", "--out", str(out), **env).returncode == 0  # every shipped job
    before = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    env["JOBRUNNER_JOBS_DIR"] = str(jobs_dir)
    proc = cli("units", "render", "site_backup", "--out", str(out), **env)
    assert proc.returncode == 0, proc.stderr
    after = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*") if p.is_file()}
    added = set(after) - set(before)
    assert added == {"site-backup.service", "site-backup.timer", "logrotate.d/jobrunner"}
    changed = {rel for rel in before if after[rel] != before[rel]}
    assert changed == {"tmpfiles.d/jobrunner.conf"}
    old_lines = before["tmpfiles.d/jobrunner.conf"].splitlines()
    new_lines = after["tmpfiles.d/jobrunner.conf"].splitlines()
    assert new_lines[: len(old_lines)] == old_lines  # merged: nothing of the other jobs lost
    assert f"d {tmp_path / 'site-out'} 0750 www-data www-data -" in new_lines
    assert "f /var/log/site-backup.log 0640 www-data www-data -" in new_lines
    # rendered again: nothing changes
    again = cli("units", "render", "site_backup", "--out", str(out), **env)
    assert again.returncode == 0 and again.stdout.strip().endswith(", 0 changed"), again.stdout
    # --out -: printed like systemctl cat, nothing written
    printed = cli("units", "render", "site_backup", "--out", "-", **env)
    assert printed.returncode == 0 and "# site-backup.service\n" in printed.stdout and "User=www-data" in printed.stdout
    assert not (REPO / "-").exists()


def test_units_render_job_is_judged_alone_and_conflicts_are_one_line(tmp_path):
    """The README's job shares /mnt/backups with the shipped root jobs: rendering it alone into
    a new directory works (the issue's refusal came from the other jobs); merging it into the
    directory of all units, whose tmpfiles.d gives /mnt/backups to root, is refused in one line."""
    jobs_dir = site_dir(tmp_path)
    (jobs_dir / "site_backup.py").write_text(SITE_JOB)
    env = {"JOBRUNNER_JOBS_DIR": str(jobs_dir), "JOBRUNNER_STATE_DIR": str(tmp_path / "state")}
    alone = cli("units", "render", "site_backup", "--out", str(tmp_path / "alone"), **env)
    assert alone.returncode == 0, alone.stderr
    every = tmp_path / "every"
    assert cli("units", "render", "--out", str(every), JOBRUNNER_JOBS_DIR="").returncode == 0
    merged = cli("units", "render", "site_backup", "--out", str(every), **env)
    assert merged.returncode == 78 and merged.stderr.count("\n") == 1, merged.stderr
    assert "d /mnt/backups 0750 root root -" in merged.stderr and "www-data" in merged.stderr
    assert not (every / "site-backup.service").exists()  # refused before anything is written


def test_instances_add_again_merges_and_warns_on_unread_keys(tmp_path):
    """`instances add` on an existing site keeps its settings (a typo no longer drops WP_PATH),
    warns on a key no job of the group reads (with the nearest one), and --force replaces."""
    env = {
        "JOBRUNNER_INSTANCES_DIR": str(tmp_path / "instances"),
        "JOBRUNNER_TMPFILES_DIR": str(tmp_path / "tmpfiles"),
        "JOBRUNNER_STATE_DIR": str(tmp_path / "state"),
    }
    site = tmp_path / "instances" / "wp" / "shop.example.env"
    first = cli("instances", "add", "wp", "shop.example", "--set", "WP_PATH=/var/www/shop", "--no-enable", **env)
    assert first.returncode == 0 and first.stderr == "", first.stderr
    again = cli("instances", "add", "wp", "shop.example", "--set", "WP_PAHT=/srv/shop", "--no-enable", **env)
    assert again.returncode == 0, again.stderr
    assert "--set WP_PAHT: no job of wp reads it (did you mean 'WP_PATH'?)" in again.stderr
    assert "kept WP_PATH" in again.stdout
    text = site.read_text()
    assert "WP_PATH=/var/www/shop" in text and "WP_PAHT=/srv/shop" in text
    forced = cli(
        "instances", "add", "wp", "shop.example", "--set", "WP_PATH=/srv/shop", "--force", "--no-enable", **env
    )
    assert forced.returncode == 0
    assert "WP_PAHT" not in site.read_text() and "WP_PATH=/srv/shop" in site.read_text()


# ------------------------------------------------------------------ the smaller points (6-8)


def test_status_html_into_a_missing_directory_is_one_line(tmp_path):
    """6: `status --html` into a missing (or unwritable) directory: one line, exit 78."""
    proc = cli("status", "--html", str(tmp_path / "no" / "such" / "page.html"), JOBRUNNER_STATE_DIR=str(tmp_path))
    assert proc.returncode == 78 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("jobrunner: status --html: cannot write ") and proc.stderr.count("\n") == 1


def test_the_plain_smtp_example_of_the_docs_delivers(tmp_path):
    """7: docs/notifications.md's plain-SMTP URL, pointed at a real SMTP server, delivers."""
    from .test_notify_receivers import SmtpReceiver

    text = (REPO / "docs" / "notifications.md").read_text()
    url = re.search(r"Plain SMTP without TLS \(a local relay\): `(mailto://[^`]+)`", text).group(1)
    server = SmtpReceiver()
    try:
        proc = cli("notify", "test", JOBRUNNER_NOTIFY_URLS=url.replace(":25?", f":{server.port}?"))
        assert proc.returncode == 0, proc.stderr
        assert len(server.wait(1)) == 1
    finally:
        server.close()


def test_units_uninstall_takes_dir_like_install(tmp_path):
    """8: `units uninstall --dir` is accepted (one line says the manifest decides)."""
    root = tmp_path / "root"
    root.mkdir()
    proc = cli("units", "uninstall", "--dir", "units", "--root", str(root), "--dry-run")
    assert "unrecognized" not in proc.stderr and "Traceback" not in proc.stderr
    assert "uninstall removes what install recorded in its manifest" in proc.stderr


def test_checks_sync_says_what_to_put_in_the_env_file(tmp_path):
    """8: `checks sync` without its env file says what the file must hold."""
    proc = cli("checks", "sync", "--env-file", str(tmp_path / "healthchecks.env"), "--dry-run")
    assert proc.returncode == 78
    assert "HC_API_URL=https://healthchecks.io/api/v3/" in proc.stderr and "HC_API_KEY=" in proc.stderr


def test_history_offers_journalctl_only_for_a_units_runs(tmp_path):
    """8: a run made by hand has no journal entry to offer; a unit's run (INVOCATION_ID) has."""
    state = str(tmp_path / "state")
    assert cli("run", "noop", JOBRUNNER_STATE_DIR=state).returncode == 0
    unit_run = "6a1f0c2e9b7d4e5fa1b2c3d4e5f60718"  # a v4 UUID, as systemd makes
    assert cli("run", "noop", JOBRUNNER_STATE_DIR=state, INVOCATION_ID=unit_run).returncode == 0
    lines = [x for x in cli("history", "noop", JOBRUNNER_STATE_DIR=state).stdout.splitlines() if "success" in x]
    assert len(lines) == 2
    assert lines[0].endswith(f"journalctl _SYSTEMD_INVOCATION_ID={unit_run}")
    assert lines[1].endswith("by hand") and "journalctl" not in lines[1]


def test_console_lines_fit_80_columns(tmp_path):
    """8: console lines say host, job and run id once (job.started), the time of day in front."""
    proc = cli("run", "noop", "--log-format", "console", JOBRUNNER_STATE_DIR=str(tmp_path))
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) >= 2
    assert re.match(r"^\d\d:\d\d:\d\d \[info\] job\.started ", lines[0])
    assert all(len(line) <= 80 for line in lines[1:]), lines
    assert all("run_id=" not in line for line in lines[1:])


def test_installed_copy_finds_site_jobs_not_the_checkouts(tmp_path):
    """What `pip install .` makes (jobrunner/ and jobs/ copied into site-packages): a module
    added to the checkout's jobs/ afterwards is not the installed package's (the issue's trap),
    one saved in the site jobs directory is, by name, from any working directory."""
    site_packages = tmp_path / "site-packages"
    for package in ("jobrunner", "jobs"):
        shutil.copytree(REPO / package, site_packages / package, ignore=shutil.ignore_patterns("__pycache__"))
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "jobs", checkout / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    _, source, _ = readme_example()
    (checkout / "jobs" / "site_backup.py").write_text(source)
    jobs_dir = site_dir(tmp_path)
    env = {"PYTHONPATH": str(site_packages), "JOBRUNNER_JOBS_DIR": str(jobs_dir), "JOBRUNNER_STATE_DIR": str(tmp_path)}
    missing = cli("run", "site_backup", "--dry-run", cwd=checkout, script=True, **env)
    assert missing.returncode == 78 and "no job 'site_backup'" in missing.stderr, missing.stderr
    (jobs_dir / "site_backup.py").write_text(source)
    for cwd in (checkout, tmp_path):
        found = cli("run", "site_backup", "--dry-run", cwd=cwd, script=True, **env)
        assert found.returncode == 0, found.stderr
        assert '"module":"jobs.site_backup"' in found.stdout.replace(" ", ""), found.stdout
