"""``jobrunner import crontab``: cron's semantics, on real inputs nobody here wrote.

The inputs are the cron files Debian's packages install and the examples of Debian's
crontab(5), taken from the packages (tests/debian_packages.py). cron's side of every
comparison is the importer's own matcher, written to Debian's cron source (Vixie cron 3.0 +
Debian's patches); systemd's is the real ``systemd-analyze calendar``. Debian's own
converter, systemd-cron's generator (from its package), is run on the same files beside ours.
"""

from __future__ import annotations

import datetime as dt
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobrunner.importer.check import compare
from jobrunner.importer.cron import CronError, parse_crontab, parse_env_line, parse_schedule, split_percent
from jobrunner.importer.oncalendar import to_oncalendar
from jobrunner.importer.wrappers import unwrap

from .conftest import REPO, clean_env
from .debian_packages import CRON_D, NATIVE_TIMERS, crontab5_examples, debian, systemd_cron_generator

UTC = dt.UTC
YEAR = (dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 1, tzinfo=UTC))


def jobrunner(
    *args: str, stdin: str | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=300,
        input=stdin if stdin is not None else "",
        cwd=cwd or REPO,
        env=clean_env(PYTHONPATH=str(REPO), **env),
        check=False,
    )


def load(out: Path, name: str):
    """Import an emitted module as ``<package>.<name>`` (a fresh import each time)."""
    sys.path.insert(0, str(out.parent))
    try:
        for mod in [m for m in sys.modules if m == out.name or m.startswith(out.name + ".")]:
            del sys.modules[mod]
        return importlib.import_module(f"{out.name}.{name}")
    finally:
        sys.path.remove(str(out.parent))


# --- the five fields, the day rule, @ words ----------------------------------------------


def test_fields_ranges_steps_lists_and_names():
    s = parse_schedule("*/15 0-23/6 1,15,20-22 JAN-mar,Dec mon-fri".split())
    assert s.minute.values == {0, 15, 30, 45} and s.minute.star
    assert s.hour.values == {0, 6, 12, 18}
    assert s.dom.values == {1, 15, 20, 21, 22} and not s.dom.star
    assert s.month.values == {1, 2, 3, 12}
    assert s.dow.values == {1, 2, 3, 4, 5}
    assert parse_schedule("0 0 * * 7".split()).dow.values == {0}  # 7 is Sunday, as 0
    assert parse_schedule("0 0 * * 5-7".split()).dow.values == {5, 6, 0}
    assert parse_schedule("0 0 * * */2".split()).dow.values == {0, 2, 4, 6}


def test_day_of_month_or_day_of_week_when_both_are_restricted():
    """crontab(5): '30 4 1,15 * 5' runs on the 1st and 15th *and* every Friday; a field
    starting with '*' (even '*/2') makes it AND, as Debian's cron tests the first character."""
    either = parse_schedule("30 4 1,15 * 5".split())
    assert either.matches(dt.datetime(2025, 1, 1, 4, 30))  # Wednesday the 1st
    assert either.matches(dt.datetime(2025, 1, 3, 4, 30))  # Friday the 3rd
    assert not either.matches(dt.datetime(2025, 1, 2, 4, 30))
    assert to_oncalendar(either) == ["*-*-01,15 04:30:00", "Fri *-*-* 04:30:00"]
    both = parse_schedule("0 16 */2 * sat".split())  # '*/2' starts with '*': odd days that are Saturdays
    assert both.matches(dt.datetime(2025, 1, 11, 16)) and not both.matches(dt.datetime(2025, 1, 18, 16))
    assert not both.matches(dt.datetime(2025, 1, 3, 16))
    assert to_oncalendar(both) == ["Sat *-*-01/2 16:00:00"]
    assert to_oncalendar(parse_schedule("0 0 1-31 * 1".split())) == ["*-*-* 00:00:00"]  # either: every day


@pytest.mark.parametrize(
    "word, calendar",
    [
        ("@hourly", ["hourly"]),
        ("@daily", ["daily"]),
        ("@midnight", ["daily"]),
        ("@monthly", ["monthly"]),
        ("@yearly", ["yearly"]),
        ("@annually", ["yearly"]),
        ("@weekly", ["Sun *-*-* 00:00:00"]),
        ("@reboot", []),
    ],
)
def test_at_words(word, calendar):
    """systemd's 'weekly' is Monday: cron's @weekly (Sunday) is spelled out."""
    assert to_oncalendar(parse_schedule([word])) == calendar


@pytest.mark.parametrize(
    "fields, why",
    [
        ("61 * * * *", "minute: 61 is out of range"),
        ("0 24 * * *", "hour: 24 is out of range"),
        ("0 0 0 * *", "day of month: 0 is out of range"),
        ("5/10 * * * *", "a step without a range"),
        ("0 19-7 * * *", "runs backwards"),
        ("0 0 * * funday", "'funday' is not a number"),
        ("*/0 * * * *", "step '0'"),
    ],
)
def test_bad_fields_say_why(fields, why):
    with pytest.raises(CronError, match=why):
        parse_schedule(fields.split())


def test_unknown_at_word():
    with pytest.raises(CronError, match="unknown '@fortnightly'"):
        parse_schedule(["@fortnightly"])


# --- % and environment lines ----------------------------------------------------------------


def test_percent_is_standard_input_and_backslash_percent_a_literal():
    assert split_percent('mail -s "It\'s 10pm" joe%Joe,%%Where are your kids?%') == (
        'mail -s "It\'s 10pm" joe',
        "Joe,\n\nWhere are your kids?\n",
    )
    assert split_percent(r"date +\%d") == ("date +%d", None)
    assert split_percent(r"printf a\\b") == (r"printf a\b", None)  # Debian's cron: \\ is \ in the command
    assert split_percent(r"cat%50\% done%last") == ("cat", "50% done\nlast\n")
    assert split_percent("true%") == ("true", None)


def test_environment_lines_as_debian_cron_reads_them():
    assert parse_env_line("MAILTO=paul") == ("MAILTO", "paul")
    assert parse_env_line('MAILTO=""') == ("MAILTO", "")
    assert parse_env_line("  PATH = /usr/bin:/bin  ") == ("PATH", "/usr/bin:/bin")
    assert parse_env_line("GREETING=' hello '") == ("GREETING", " hello ")
    assert parse_env_line("A=b c") == ("A", "b c")
    assert parse_env_line("MAILTO=") is None  # Debian's cron: not an assignment (then a bad cron line)
    assert parse_env_line("5 0 * * * x=1 cmd") is None
    tab = parse_crontab("MAILTO=\n", path="t")
    assert "empty assignment" in str(tab.problems[0]) and str(tab.problems[0]).startswith("t:1: ")


def test_environment_applies_to_the_lines_below(tmp_path):
    text = "SHELL=/bin/bash\n0 1 * * * root a\nPATH=/opt/bin:/usr/bin\nSHELL=/bin/dash\n0 2 * * * root b\n"
    tab = parse_crontab(text, path="f")
    first, second = tab.entries
    assert first.environment == {"SHELL": "/bin/bash"} and first.shell == "/bin/bash"
    assert second.environment == {"PATH": "/opt/bin:/usr/bin", "SHELL": "/bin/dash"}


# --- the wrappers ----------------------------------------------------------------------------


def test_flock_timeout_nice_ionice_and_log_redirect_become_settings():
    u = unwrap(
        "flock -n /var/lock/x.lock timeout 2h nice -n 19 ionice -c3 /usr/local/bin/backup --all 'a b'"
        " >> /var/log/backup.log 2>&1"
    )
    assert u.command == "/usr/local/bin/backup --all 'a b'"
    assert u.lock == {"name": "/var/lock/x.lock"} and u.timeout == "2h" and u.log_file == "/var/log/backup.log"
    assert u.service == {"Nice": 19, "IOSchedulingClass": "idle"}
    waiting = unwrap("/usr/bin/flock -s -w 30 /run/lock/y -c 'cd /srv && make'")
    assert waiting.command == "cd /srv && make" and waiting.lock == {
        "name": "/run/lock/y",
        "shared": True,
        "wait": "30s",
    }
    assert unwrap("flock /run/lock/z cmd").lock == {"name": "/run/lock/z", "wait": "1h"}


def test_wrappers_of_part_of_a_command_stay_in_it():
    """In 'timeout 1h a && b' the deadline covers a alone: moving it to the job would change that."""
    for command in ("timeout 1h a && b", "flock -n /x a; b", "nice a | b >> /var/log/x 2>&1", "flock 9 a"):
        u = unwrap(command)
        assert u.command == command and not (u.lock or u.timeout or u.service or u.log_file)


# --- side by side with systemd, over a year --------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "30 4 1,15 * 5",
        "5-55/10 * * * *",
        "0 */12 * * *",
        "0 22 * * 1-5",
        "23 0-23/2 * * *",
        "5 4 * * sun",
        "0 0 */2 * 1",
        "15 14 1 * *",
        "0 8-18 * * 1-5",
        "0 0 1 jan,jul *",
        "59 23 31 * *",
        "0 12 29 2 *",
        "@weekly",
    ],
)
def test_emitted_calendar_fires_when_cron_does_over_a_year(line):
    schedule = parse_schedule(line.split())
    result = compare(line, schedule, to_oncalendar(schedule), start=YEAR[0], end=YEAR[1], zone=ZoneInfo("UTC"))
    assert result.ok, "\n".join(result.lines(ZoneInfo("UTC")))
    assert bool(result.cron) == (line != "0 12 29 2 *")  # 2025 has no 29 February: neither fires


def test_dst_change_is_flagged_and_warned():
    """Europe/Berlin: 02:30 does not exist on 2025-03-30; cron runs the line at 03:00, the
    timer skips it: --check shows the mismatch and warns of both DST changes."""
    zone = ZoneInfo("Europe/Berlin")
    schedule = parse_schedule("30 2 * * *".split())
    result = compare("30 2 * * *", schedule, to_oncalendar(schedule), start=YEAR[0], end=YEAR[1], zone=zone)
    assert result.only_cron == [dt.datetime(2025, 3, 30, 1, 0, tzinfo=UTC)] and not result.only_systemd
    text = "\n".join(result.lines(zone))
    assert "Sun 2025-03-30 03:00 CEST" in text and "!! mismatch" in text
    assert any("2025-03-30 02:30 does not exist" in w for w in result.dst)
    assert any("2025-10-26 02:30 happens twice" in w for w in result.dst)


def test_check_command_line_flags_mismatch_with_exit_1(tmp_path):
    crontab = tmp_path / "dst"
    crontab.write_text("30 2 * * * root /bin/true\n")
    proc = jobrunner("import", "crontab", str(crontab), "--check", "--tz", "Europe/Berlin", "--from", "2025-01-01")
    assert proc.returncode == 1, proc.stderr
    assert "!! mismatch" in proc.stdout and "warning:" in proc.stdout and "Traceback" not in proc.stderr
    utc = jobrunner("import", "crontab", str(crontab), "--check", "--tz", "UTC", "--from", "2025-01-01")
    assert utc.returncode == 0 and "365 firings under cron, 365 under systemd: all match" in utc.stdout


# --- Debian's files ----------------------------------------------------------------------------


@pytest.mark.parametrize("package", sorted(CRON_D))
def test_debian_cron_files_fire_as_cron_over_a_year(debian, package, tmp_path):
    """Each line of a package's cron file: the emitted timer fires exactly when cron would,
    every minute of a year (jobrunner import crontab --check); a file whose package ships a
    native timer is skipped, naming the timer."""
    path = debian.file(package, CRON_D[package])
    proc = jobrunner("import", "crontab", str(path), "--check", "--tz", "UTC", "--from", "2025-01-01", "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tab = parse_crontab(path.read_text(), path=str(path))
    assert tab.entries and not tab.problems
    if package in NATIVE_TIMERS:
        assert f"{path}: skipped, all {len(tab.entries)} line(s): the package ships the native timer(s) " in proc.stderr
        assert ", ".join(NATIVE_TIMERS[package]) in proc.stderr and "0 line(s) checked" in proc.stdout
        return
    guarded = sum("/run/systemd/system" in e.command for e in tab.entries)
    checked = len(tab.entries) - guarded
    assert f"{checked} line(s) checked, 0 with mismatches" in proc.stdout
    reboots = sum(e.schedule.reboot for e in tab.entries)  # no calendar: nothing to compare
    assert proc.stdout.count(": all match") == checked - reboots
    assert proc.stderr.count(": skipped: the line works only where systemd is not running") == guarded


def test_debian_cron_files_round_trip_to_verified_units(debian, tmp_path):
    """Every Debian cron line that is not skipped on purpose becomes a module that imports,
    declares its job with the original line as a comment and its command unchanged, and
    renders units that pass 'jobrunner units verify'; no unit takes the name of a unit of
    those packages (issue 28: cron.d/ntpsec became ntpsec.service, over the NTP daemon)."""
    files = [str(debian.file(p, rel)) for p, rel in sorted(CRON_D.items())]
    out = tmp_path / "fromcron"
    proc = jobrunner("import", "crontab", *files, "--out", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    texts = {str(Path(f)): Path(f).read_text() for f in files}
    native = {str(debian.file(p, CRON_D[p])) for p in NATIVE_TIMERS}
    lines = [
        e
        for f in files
        if f not in native
        for e in parse_crontab(texts[f], path=f).entries
        if "/run/systemd/system" not in e.command
    ]
    modules = sorted(p for p in out.glob("*.py") if p.name != "__init__.py")
    assert len(modules) == len(lines) >= 20
    for module in modules:
        text = module.read_text()
        assert "from jobrunner import " in text and "import jobrunner." not in text
    mdadm = load(out, "cron_mdadm")
    assert mdadm.COMMAND == (
        "if [ -x /usr/share/mdadm/checkarray ] && [ $(date +%d) -le 7 ]; "
        "then /usr/share/mdadm/checkarray --cron --all --idle --quiet; fi"
    )
    assert (
        r"57 0 * * 0 root if [ -x /usr/share/mdadm/checkarray ] && [ $(date +\%d) -le 7 ]"
        in (out / "cron_mdadm.py").read_text()
    )
    assert mdadm.cron_mdadm.schedule == ("Sun *-*-* 00:57:00",)
    units = tmp_path / "units"
    render = jobrunner("units", "render", "--package", out.name, "--out", str(units), JOBRUNNER_PATH=str(tmp_path))
    assert render.returncode == 0, render.stderr
    verify = jobrunner("units", "verify", "--dir", str(units))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert (units / "cron-mdadm.timer").read_text().count("OnCalendar=Sun *-*-* 00:57:00") == 1
    ours = {p.name for p in [*units.glob("*.service"), *units.glob("*.timer")]} - {"alert-failure@.service"}
    theirs = {
        p.name
        for package in CRON_D
        for folder in ("lib/systemd/system", "usr/lib/systemd/system")
        for p in (debian.root(package) / folder).glob("*")
    }
    assert len(ours) == 2 * len(lines) and not ours & theirs, ours & theirs
    assert all(name.startswith("cron-") for name in ours)


def test_systemd_cron_generator_side_by_side(debian, tmp_path):
    """Debian's own converter on the same files: where it writes a timer at all, the same
    firings on these simple lines; on crontab(5)'s '30 4 1,15 * 5' it writes one
    OnCalendar= that fires only on Fridays that are the 1st or 15th (twice in 2025), where
    cron runs 74 times. Ours matches cron, and keeps the '%' input the generator leaves in."""
    utc = ZoneInfo("UTC")
    for package, rel in sorted(CRON_D.items()):
        path = debian.file(package, rel)
        timers = systemd_cron_generator(debian, path, tmp_path / package)
        by_line = {e.line.strip().split(None, 0)[0]: e for e in parse_crontab(path.read_text(), path=str(path)).entries}
        for name, keys in timers.items():
            if "OnCalendar" not in keys:
                continue
            described = keys["Description"][0].removeprefix('[Timer] "').removesuffix('"').replace("%%", "%")
            entry = next(e for line, e in by_line.items() if " ".join(line.split()) == described)
            theirs = compare(name, entry.schedule, keys["OnCalendar"], start=YEAR[0], end=YEAR[1], zone=utc)
            assert theirs.ok, "\n".join(theirs.lines(utc))

    example, note = crontab5_examples(debian)
    assert note == "30 4 1,15 * 5"
    system = tmp_path / "crontab5"
    system.write_text(
        f"{note} root /bin/true\n0 22 * * 1-5 root " + example.split("1-5", 1)[1].split("\n", 1)[0].strip() + "\n"
    )
    timers = systemd_cron_generator(debian, system, tmp_path / "gen")
    entry = parse_crontab(system.read_text(), path=str(system)).entries[0]
    generated = next(k["OnCalendar"] for k in timers.values() if note in k["Description"][0])
    theirs = compare("systemd-cron's generator", entry.schedule, generated, start=YEAR[0], end=YEAR[1], zone=utc)
    ours = compare(
        "jobrunner import", entry.schedule, to_oncalendar(entry.schedule), start=YEAR[0], end=YEAR[1], zone=utc
    )
    print("\n".join(theirs.lines(utc, 3) + [""] + ours.lines(utc, 3)))
    assert generated == ["Fri *-*-1,15 4:30:00"]
    both = [
        d
        for d in (dt.date(2025, 1, 1) + dt.timedelta(days=n) for n in range(365))
        if d.day in (1, 15) and d.weekday() == 4
    ]
    assert len(theirs.cron) == 74 and len(theirs.systemd) == len(both) == 2 and len(theirs.only_cron) == 72
    assert "!! mismatch" in "\n".join(theirs.lines(utc))
    assert ours.ok and len(ours.systemd) == 74
    scripts = [p.read_text() for p in (tmp_path / "gen").glob("*.sh")]
    assert any("joe%Joe,%%Where are your kids?%" in s for s in scripts)  # its "TODO": % left in the command
    spec_dir = tmp_path / "ours"
    assert jobrunner("import", "crontab", str(system), "--out", str(spec_dir)).returncode == 0
    mail = load(spec_dir, "cron_crontab5_2")
    assert mail.COMMAND == 'mail -s "It\'s 10pm" joe' and mail.STDIN == "Joe,\n\nWhere are your kids?\n"


def test_crontab5_example_file(debian, tmp_path):
    """crontab(5)'s EXAMPLE CRON FILE as root's crontab: SHELL and MAILTO applied, the log
    redirect becomes log_file=, % becomes standard input, \\% a literal; firings match."""
    example, _ = crontab5_examples(debian)
    out = tmp_path / "crontab5"
    proc = jobrunner("import", "crontab", "--user", "root", "--out", str(out), "--strict", stdin=example)
    assert proc.returncode == 0, proc.stderr
    daily = load(out, "cron_root_1")
    assert daily.COMMAND == "$HOME/bin/daily.job" and daily.cron_root_1.log_file == "/root/tmp/out"
    assert daily.ENV == {
        "SHELL": "/bin/sh",
        "HOME": "/root",
        "PATH": "/usr/bin:/bin",
        "LOGNAME": "root",
        "MAILTO": "paul",
    }
    assert daily.cron_root_1.notify == ("mail-paul",)
    assert "mailto://localhost:25?from=jobrunner@localhost&to=paul@localhost" in (out / "cron_root_1.py").read_text()
    mail = load(out, "cron_root_3")
    assert mail.STDIN == "Joe,\n\nWhere are your kids?\n" and mail.cron_root_3.schedule == ("Mon..Fri *-*-* 22:00:00",)
    wax = load(out, "cron_root_6")
    assert wax.COMMAND == "expr $(date +%s) / 60 / 60 / 24 % 9 > /dev/null || echo Wax the floor."
    check = jobrunner(
        "import", "crontab", "--user", "root", "--check", "--tz", "UTC", "--from", "2025-01-01", stdin=example
    )
    assert check.returncode == 0 and "6 line(s) checked, 0 with mismatches" in check.stdout, check.stdout


def test_an_imported_line_runs_by_hand_with_its_output_as_events(debian, launcher):
    """The crontab(5) lines run as jobs: the command's output lines are proc.output events;
    the % input reaches the command's standard input (a stand-in 'mail' prints it)."""
    example, _ = crontab5_examples(debian)
    bindir = launcher.tmp / "bin"
    bindir.mkdir()
    (bindir / "mail").write_text('#!/bin/sh\necho "mail to $*"\ncat\n')
    (bindir / "mail").chmod(0o755)
    out = launcher.jobs / "crontab5"
    text = f"PATH={bindir}:/usr/bin:/bin\n" + example
    proc = jobrunner("import", "crontab", "--user", "root", "--out", str(out), stdin=text)
    assert proc.returncode == 0, proc.stderr
    run = launcher.run("run", "crontab5.cron_root_5")
    assert run.returncode == 0, run.stderr
    lines = [e["line"] for e in run.events if e["event"] == "proc.output"]
    assert lines == ["run at 5 after 4 every sunday"]
    run = launcher.run("run", "crontab5.cron_root_3")
    assert run.returncode == 0, run.stderr
    assert [e["line"] for e in run.events if e["event"] == "proc.output"] == [
        "mail to -s It's 10pm joe",
        "Joe,",
        "",
        "Where are your kids?",
    ]
    run = launcher.run("run", "crontab5.cron_root_6")
    assert run.returncode == 0 and "non-integer" not in run.stdout + run.stderr


# --- what cannot be converted -------------------------------------------------------------------


BAD_SYSTEM = textwrap.dedent("""\
    # a good line, then bad ones
    0 3 * * * root /bin/true
    61 * * * * root /bin/true
    @fortnightly root /bin/true
    0 4 * * * /usr/bin/backup --all
    0 5 * * *
    @reboot root /bin/echo booted
""")


def test_bad_lines_are_named_and_the_rest_written(tmp_path):
    crontab = tmp_path / "mixed"
    crontab.write_text(BAD_SYSTEM)
    out = tmp_path / "jobs"
    proc = jobrunner("import", "crontab", str(crontab), "--out", str(out))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert f"{crontab}:3: minute: 61 is out of range (0-59)" in proc.stderr
    assert f"{crontab}:4: unknown '@fortnightly'" in proc.stderr
    assert f"{crontab}:5: '/usr/bin/backup' is not a user name" in proc.stderr
    assert f"{crontab}:6: not a cron line" in proc.stderr
    assert sorted(p.name for p in out.glob("*.py")) == ["__init__.py", "cron_mixed_1.py", "cron_mixed_2.py"]
    strict = jobrunner("import", "crontab", str(crontab), "--out", str(out), "--strict")
    assert strict.returncode == 1 and "4 line(s) or unit(s) could not be converted" in strict.stderr


def test_user_crontab_with_a_user_field_or_a_sixth_time_field(tmp_path):
    text = "0 5 * * * root /usr/bin/backup\n*/5 * * * * * /bin/true\n0 6 * * * /bin/true\n"
    proc = jobrunner("import", "crontab", "--user", "root", "--strict", stdin=text)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "-:1: 'root' after the five time fields looks like the user field" in proc.stderr
    assert "-:2: six time fields (*/5 * * * * *)" in proc.stderr
    assert "def cron_root(ctx: JobContext)" in proc.stdout  # the good line, printed


def test_reboot_is_a_boot_timer(tmp_path):
    """@reboot becomes on_boot="0": a timer with OnBootSec=0 (enabled by units install like any
    other), no OnCalendar=, and the unit verifies."""
    crontab = tmp_path / "boot"
    crontab.write_text("@reboot root /bin/echo booted\n")
    out = tmp_path / "bootjobs"
    assert jobrunner("import", "crontab", str(crontab), "--out", str(out)).returncode == 0
    job = load(out, "cron_boot").cron_boot
    assert job.schedule == () and job.on_boot == 0
    units = tmp_path / "units"
    assert (
        jobrunner(
            "units", "render", "--package", out.name, "--out", str(units), JOBRUNNER_PATH=str(tmp_path)
        ).returncode
        == 0
    )
    timer = (units / "cron-boot.timer").read_text()
    assert "OnBootSec=0" in timer and "OnCalendar" not in timer and "WantedBy=timers.target" in timer
    assert jobrunner("units", "verify", "--dir", str(units)).returncode == 0


def test_cron_tz_is_the_schedules_zone_and_tz_only_the_commands(tmp_path):
    text = 'CRON_TZ=America/New_York\n0 9 * * 1-5 root /bin/true\nCRON_TZ=""\nTZ=Asia/Tokyo\n0 9 * * * root /bin/true\n'
    tab = parse_crontab(text, path="tz")
    first, second = tab.entries
    assert to_oncalendar(first.schedule) == ["Mon..Fri *-*-* 09:00:00 America/New_York"]
    assert to_oncalendar(second.schedule) == ["*-*-* 09:00:00"]
    result = compare(
        "tz", first.schedule, to_oncalendar(first.schedule), start=YEAR[0], end=YEAR[1], zone=ZoneInfo("UTC")
    )
    assert result.ok and result.cron[0] == dt.datetime(2025, 1, 1, 14, 0, tzinfo=UTC)


def test_a_timer_tick_does_not_import_the_importer(tmp_path):
    """`jobrunner run` (a timer tick) never loads jobrunner.importer; `jobrunner --help` neither."""
    from .test_imports import modules_after

    loaded = modules_after(tmp_path, "jobs.noop")
    assert "jobrunner.run.lifecycle" in loaded and not [m for m in loaded if m.startswith("jobrunner.importer")]
    assert not [
        m for m in modules_after(tmp_path, "--help") if m.startswith(("jobrunner.importer", "jobrunner.cli.import"))
    ]
