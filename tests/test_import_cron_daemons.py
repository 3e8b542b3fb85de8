"""``jobrunner import crontab``: an ``@reboot`` line that starts a daemon becomes a plain
service (``--out/services/cron-<file>.service``), checked by the real ``systemd-analyze
verify``; everything it cannot prove equivalent keeps its one-line refusal. The service of a
line in www-data's crontab runs as www-data, whatever the crontab says.

A real systemd starts these services in tests/systemd/test_import_daemons_e2e.py.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobrunner.envfile import parse_env
from jobrunner.importer.batch import import_crontabs
from jobrunner.importer.guards import background
from jobrunner.importer.services import daemon_command
from jobrunner.unitgen.verify import verify_problems

from .test_import_cron import jobrunner

WWW_HOME = pwd.getpwnam("www-data").pw_dir
KEYS = {
    "Unit": {"Description", "StartLimitIntervalSec", "StartLimitBurst", "ConditionFileIsExecutable",
             "ConditionPathExists", "ConditionPathIsDirectory"},
    "Service": {"Type", "ExecStart", "User", "Group", "WorkingDirectory", "Environment", "EnvironmentFile", "Restart",
                "RestartSec"},
    "Install": {"WantedBy"},
}  # fmt: skip


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """The unit's ``[Section]`` → ``(key, value)`` lines; every line is a comment, a section, a
    known key or blank, and no line continues onto the next."""
    found: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        assert not line.endswith("\\"), line
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            found[current] = []
            continue
        key, _, value = line.partition("=")
        assert key in KEYS[current], line
        found[current].append((key, value))
    return found


def values(text: str, key: str) -> list[str]:
    return [v for lines in sections(text).values() for k, v in lines if k == key]


def test_reboot_nohup_daemon_is_written_as_a_service(tmp_path):
    """The commonest such line on real servers: it becomes cron-<file>.service in --out/services
    (0600), the install commands are said, the other lines stay jobs."""
    out = tmp_path / "jobs"
    text = "MAILTO=ops\n@reboot cd /srv/app && nohup node app.js --port 8080 > /dev/null 2>&1 &\n@daily /bin/true\n"
    proc = jobrunner("import", "crontab", "--user", "www-data", "--out", str(out), "--strict", "-", stdin=text)
    assert proc.returncode == 0, proc.stderr
    unit = out / "services" / "cron-www-data-1.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["__init__.py", "cron_www_data_2.py", "services"]
    assert "1 job(s) imported, 1 @reboot daemon(s) as service(s), 0 line(s)" in proc.stderr
    env = out / "services" / "cron-www-data-1.env"  # the crontab's own assignment: not in the unit
    assert stat.S_IMODE(env.stat().st_mode) == 0o600 and env.read_text() == 'MAILTO="ops"\n'
    assert (
        f"install -m 0600 {env} /etc/default/cron-www-data-1 && install -m 0644 {unit} /etc/systemd/system/ "
        "&& systemctl daemon-reload && systemctl enable --now cron-www-data-1.service" in proc.stderr
    )
    text = unit.read_text()
    assert values(text, "Type") == ["simple"]
    assert values(text, "ExecStart") == ['/bin/sh -c "cd /srv/app && node app.js --port 8080 > /dev/null 2>&1"']
    assert values(text, "User") == ["www-data"] and values(text, "Group") == ["www-data"]
    assert values(text, "WorkingDirectory") == [WWW_HOME if os.path.isdir(WWW_HOME) else f"-{WWW_HOME}"]
    assert values(text, "Environment") == [
        '"SHELL=/bin/sh"',
        f'"HOME={WWW_HOME}"',
        '"PATH=/usr/bin:/bin"',
        '"LOGNAME=www-data"',
    ]
    assert values(text, "EnvironmentFile") == ["/etc/default/cron-www-data-1"]
    assert values(text, "Restart") == ["on-failure"] and values(text, "RestartSec") == ["5s"]
    assert values(text, "WantedBy") == ["multi-user.target"]
    assert values(text, "Description") == ["@reboot cd /srv/app && nohup node app.js --port 8080 > /dev/null 2>&1 &"]
    # Without --out it is printed, after the modules.
    printed = jobrunner("import", "crontab", "--user", "www-data", "-", stdin="@reboot nohup x &\n")
    assert "# ---- services/cron-www-data.service ----" in printed.stdout
    assert 'ExecStart=/bin/sh -c "x"' in printed.stdout
    assert "EnvironmentFile" not in printed.stdout and ".env" not in printed.stdout  # nothing of its own


def test_quoting_of_percent_dollar_backslash_and_quotes():
    """cron's \\% and \\\\ are undone first (what the shell got), then systemd's own escapes:
    %% (specifiers), $$ (its variable expansion), \\\\ and \\" inside the double quotes."""
    line = r"""@reboot root printf '\%s|\%s\n' "$HOME" 'a"b\\c${x}' > /tmp/out; nohup sleep 9 &"""
    result = import_crontabs(["-"], texts={"-": line + "\nX=50% off \\o/\n"}, system=True)
    (service,) = result.services
    assert values(service.text, "ExecStart") == [
        r'''/bin/sh -c "printf '%%s|%%s\\n' \"$$HOME\" 'a\"b\\c$${x}' > /tmp/out; sleep 9"'''
    ]
    assert values(service.text, "User") == ["root"]
    tail = import_crontabs(["-"], texts={"-": "X=50% off \\o/\n" + line + "\n"}, system=True).services[0]
    assert tail.env_text == 'X="50% off \\\\o/"\n'  # the crontab's own: in the environment file, as it is
    assert not any(v.startswith('"X=') for v in values(tail.text, "Environment"))


def test_what_is_not_provably_a_daemon_stays_refused():
    """Only what a Type=simple service does as cron did is converted; the rest keeps today's
    one-line refusal (exit 1 with --strict), and a non-@reboot line is never a service."""
    lines = {
        "@reboot root nohup /usr/local/bin/worker & echo started": "is not the last thing",
        "@reboot root /usr/sbin/app --daemon": "'--daemon'",
        "@reboot root nohup /usr/sbin/app --daemon &": "'--daemon'",
        "@reboot root daemonize /usr/sbin/app": "'daemonize'",
        "@reboot root setsid -f /usr/sbin/app": "setsid -f",
        "@reboot root (nohup /usr/sbin/app &)": "inside quotes, ( … ) or { … }",
        "@reboot root nohup cat &%input": "'%' standard input",
        "@reboot root nohup /usr/bin/memcached -d -u nobody &": "'-d', with which many programs fork",
        "HOME=/srv/../root\n@reboot root nohup x &": "HOME='/srv/../root' is not a plain absolute path",
        "SHELL=bash\n@reboot root nohup x &": "SHELL='bash' is not an absolute path",
        "*/5 * * * * root nohup /usr/sbin/app &": "a child left at every firing is no service",
    }
    proc = jobrunner("import", "crontab", "--strict", "-", stdin="".join(f"{line}\n" for line in lines))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    numbers = [
        n for n, line in enumerate("".join(f"{line}\n" for line in lines).splitlines(), 1) if "*" in line or "@" in line
    ]
    for n, why in zip(numbers, lines.values(), strict=True):
        (said,) = [line for line in proc.stderr.splitlines() if line.startswith(f"jobrunner: -:{n}: ")]
        assert "not imported: it leaves a process running" in said and why in said, said
    assert "0 job(s) imported, 11 line(s)" in proc.stderr and "service(s)" not in proc.stderr


def test_daemon_names_share_the_jobs_rules(tmp_path):
    """A service is named as a job would be (cron-<file>, -1, -2 …) and never takes a unit that
    exists in the package's tree."""
    root = tmp_path / "pkg"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system/cron-agent.service").write_text("[Service]\nExecStart=/bin/true\n")
    tab = root / "etc/cron.d/agent"
    tab.write_text("@reboot root nohup /usr/sbin/agent &\n")
    result = import_crontabs([str(tab)])
    assert not result.services
    assert "its unit cron-agent would take over" in str(result.problems[0])
    two = import_crontabs(["-"], texts={"-": "@reboot root nohup a &\n@reboot root nohup b &\n"}, system=True)
    assert [s.unit for s in two.services] == ["cron-crontab-1.service", "cron-crontab-2.service"]


def test_a_condition_for_a_leading_test():
    """``test -x X && nohup X &`` (a package's program may be gone): Condition…= instead of a
    shell that fails and is restarted."""
    (service,) = import_crontabs(
        ["-"], texts={"-": "@reboot root test -x /usr/sbin/agent && nohup /usr/sbin/agent &\n"}, system=True
    ).services
    assert values(service.text, "ConditionFileIsExecutable") == ["/usr/sbin/agent"]
    assert values(service.text, "ExecStart") == ['/bin/sh -c "/usr/sbin/agent"']


def test_written_services_pass_systemd_analyze_verify(tmp_path):
    out = tmp_path / "jobs"
    text = (
        'GREETING="50% off $HOME \\o/"\n'
        "@reboot root cd /tmp && nohup /bin/sleep 1000 >/dev/null 2>&1 &\n"
        "@reboot www-data test -x /bin/sleep && setsid /bin/sleep 99 &\n"
        "@reboot www-data printf '\\%s' \"$(id -u)\" > /tmp/x; nohup /bin/sleep 5 &\n"
    )
    proc = jobrunner("import", "crontab", "--out", str(out), "--strict", "-", stdin=text)
    assert proc.returncode == 0, proc.stderr
    units = sorted((out / "services").glob("*.service"))
    assert len(units) == 3
    assert verify_problems(units) == []
    # The crontab's own variable is in each unit's environment file, and reads back as it was
    # (systemd's EnvironmentFile= syntax, as jobrunner.envfile reads it: no $ expansion).
    envs = sorted((out / "services").glob("*.env"))
    assert [e.stem for e in envs] == [u.stem for u in units]
    assert all(parse_env(e.read_text(), str(e)) == {"GREETING": "50% off $HOME \\o/"} for e in envs)


def test_www_data_crontab_gives_a_www_data_service(tmp_path):
    """Attacker: www-data writes its own crontab (cron's spool file, or --user). Whatever it
    holds, the service runs as www-data: a 'root' user field is refused, a forged
    'User=root' stays inside a quoted word, HOME=/root is entered as www-data (systemd changes
    to WorkingDirectory= after dropping to User=, as cron did)."""
    spool = tmp_path / "var/spool/cron/crontabs"
    spool.mkdir(parents=True)
    crontab = spool / "www-data"
    crontab.write_text(
        "HOME=/root\n"
        'EVIL="x\\nUser=root"\n'
        "@reboot nohup /usr/bin/php /var/www/worker.php \\%n\\nUser=root\\n[Service] &\n"
        "@reboot root nohup /usr/bin/id &\n"
    )
    for result in (
        import_crontabs([str(crontab)], user="www-data"),
        import_crontabs(["-"], texts={"-": crontab.read_text()}, user="www-data"),
    ):
        (service,) = result.services
        assert service.user == "www-data"
        assert values(service.text, "User") == ["www-data"] and values(service.text, "Group") == ["www-data"]
        assert values(service.text, "WorkingDirectory") == ["/root"]
        assert values(service.text, "ExecStart") == [
            '/bin/sh -c "/usr/bin/php /var/www/worker.php %%n\\\\nUser=root\\\\n[Service]"'
        ]
        assert service.env_text is not None and 'EVIL="x\\\\nUser=root"' in service.env_text
        assert "EVIL" not in service.text  # a crontab's own variable never enters the unit
        assert "looks like the user field" in " ".join(str(p) for p in result.problems)


ENV_ATOMS = ["HOME=/root\n", "SHELL=/bin/bash\n", "A=%i\n", 'B="x\\"\n', "C=$D\n", "SHELL=sh\n", "x\n"]
ATOMS = ["@reboot ", "* * * * * ", "nohup ", "setsid ", "-f ", "&", " & ", "&&", ";", "|", "2>&1", "(", ")", "'",
         '"', "\\", "%", "$", "${X}", "\\%", " ", "x", "/bin/sleep", "--daemon", "User=root", "[Service]", "=",
         "HOME=/root\n", "SHELL=/bin/bash\n", "A=%i\n", "\n", "test -x /bin/x && "]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    env=st.lists(st.sampled_from(ENV_ATOMS), max_size=3).map("".join),
    command=st.lists(st.sampled_from(ATOMS), max_size=16).map("".join),
    lead=st.sampled_from(["@reboot nohup ", "@reboot ", "@reboot setsid ", "@reboot root ", ""]),
    tail=st.sampled_from([" &", "&", "", " & x"]),
)
def test_any_www_data_crontab_gives_only_www_data_services(env, command, lead, tail):
    """Whatever www-data's crontab holds: no traceback; each service has the known keys only,
    one line each, runs as www-data, and its command is in a single quoted word of ExecStart=
    with every % and $ doubled for systemd."""
    result = import_crontabs(["-"], texts={"-": env + lead + command + tail + "\n"}, user="www-data")
    for problem in result.problems:
        assert "\n" not in str(problem)
    for service in result.services:
        assert values(service.text, "User") == ["www-data"]
        (start,) = values(service.text, "ExecStart")
        assert re.fullmatch(r'/[^ ]+ -c "([^"\\]|\\.)*"', start), start
        word = start.split(" -c ", 1)[1]
        assert not re.search(r"%", word.replace("%%", "")), start  # every % doubled
        assert not re.search(r"\$", word.replace("$$", "")), start  # every $ doubled
        SERVICES_SEEN.append(service.unit)


SERVICES_SEEN: list[str] = []


def test_the_property_test_makes_services():
    """The property test above is not vacuous: its examples give services."""
    SERVICES_SEEN.clear()
    test_any_www_data_crontab_gives_only_www_data_services()
    assert len(SERVICES_SEEN) > 20, SERVICES_SEEN


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(ATOMS), max_size=16).map("".join))
def test_a_daemon_command_never_detaches(command):
    found, why = daemon_command(command)
    if found is None:
        assert why
        return
    assert background(found) is None
    assert "&" not in re.sub(r"&&|[0-9]*>&[0-9-]*|&>>?|<&[0-9-]*", "", found)


def test_services_directory_is_no_job_module(tmp_path):
    """The job package keeps working with services/ in it: units render ignores the folder."""
    out = tmp_path / "jobs"
    proc = jobrunner("import", "crontab", "--out", str(out), "-", stdin="@reboot root nohup x &\n@daily root true\n")
    assert proc.returncode == 0, proc.stderr
    render = jobrunner(
        "units", "render", "--package", "jobs", "--out", str(tmp_path / "units"), JOBRUNNER_PATH=str(tmp_path)
    )
    assert render.returncode == 0, render.stderr
    assert sorted(p.name for p in (tmp_path / "units").glob("cron-*")) == [
        "cron-crontab-2.service",
        "cron-crontab-2.timer",
    ]
    assert Path(out, "services", "cron-crontab-1.service").exists()
