"""One vocabulary of conditions (issue #26): every finding of `health` and of the fleet names
its condition, a word of `jobrunner.rules.verdict.CONDITIONS`; the checks are a table of judges;
the skip text goes with the staleness finding; docs/design.md's table is the vocabulary."""

from __future__ import annotations

import ast
import json
import os
import pwd
import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobrunner.declaration import Alert
from jobrunner.fleet import stream as fleet
from jobrunner.observe import health
from jobrunner.rules.verdict import CONDITIONS, CRITICAL, OK, UNKNOWN, WARNING, JobHealth
from jobrunner.store.history import RunRecord, append
from jobrunner.store.state import StateStore

from .conftest import REPO, jobrunner_cli
from .test_fleet_history import redis_server
from .test_redislock import RedisServer

HOUR = 3600.0
NOW = time.time()
ME = pwd.getpwuid(os.getuid()).pw_name


def job(name: str, schedule: tuple[str, ...] = ("hourly",), **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, unit=name.replace("_", "-"), schedule=schedule, jitter=None, user=ME, **extra)


def write_state(root: Path, name: str, **state: Any) -> None:
    StateStore(name, str(root)).update(lambda s: s.update(state))


def judge(root: Path, j: SimpleNamespace, units: dict[str, dict[str, str]] | None = None) -> JobHealth:
    return health.check_jobs([j], now=NOW, state_root=str(root), systemd=units is not None)[0]


def consistent(h: JobHealth) -> JobHealth:
    """Each reason is a finding's (the silence's text aside), and each finding has its word."""
    found = [f.reason for f in h.findings if f.status != OK]
    reasons = (
        h.reasons[1:] if "silenced" in h.conditions and h.reasons and h.reasons[0].startswith("silenced") else h.reasons
    )
    assert reasons == found, (reasons, found)
    assert all(f.condition in CONDITIONS for f in h.findings), h.findings
    return h


@pytest.fixture
def systemd_answers(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """systemctl's answers, as tests/test_health.py gives them (no systemd in CI's container)."""
    answers: dict[str, dict[str, str]] = {}
    active = {
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "waiting",
        "ActiveEnterTimestamp": f"@{int(NOW - 10 * HOUR)}",
        "Result": "success",
    }

    def show(units: list[str], props: list[str]) -> dict[str, dict[str, str]]:
        return {u: answers.get(u, active) for u in units}

    monkeypatch.setattr("jobrunner.systemd.systemctl.show_units", show)
    return answers


def test_each_condition_of_health_is_found_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, systemd_answers):
    """One case per word `health` finds: the job's `condition` is that word, every reason is a
    finding's, and the words found are the vocabulary's (with the fleet's, below)."""
    units = tmp_path / "units"
    units.mkdir()
    monkeypatch.setenv("SYSTEMD_UNIT_PATH", str(units))
    seen: set[str] = set()

    def expect(h: JobHealth, condition: str, status: int) -> None:
        consistent(h)
        assert (h.condition, h.status) == (condition, status), h.as_dict()
        seen.update(h.conditions)

    (units / "broken.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "state.json").write_text("{not json")
    expect(judge(tmp_path, job("broken")), "unknown", UNKNOWN)
    expect(judge(tmp_path, job("absent")), "not_installed", OK)
    (units / "fresh.timer").write_text("[Timer]\nOnCalendar=hourly\n")
    expect(judge(tmp_path, job("fresh")), "never_ran", WARNING)
    write_state(tmp_path, "failed", last_outcome="failure", last_exit_code=1, last_start=NOW - 60, last_finish=NOW - 50)
    expect(judge(tmp_path, job("failed")), "failing", WARNING)
    write_state(tmp_path, "stopped", last_outcome="success", last_start=NOW - 5 * HOUR, last_success=NOW - 5 * HOUR)
    expect(judge(tmp_path, job("stopped")), "late", CRITICAL)
    write_state(tmp_path, "held", last_skipped=NOW - 60, skipped_since=NOW - HOUR, consecutive_skips=3)
    expect(judge(tmp_path, job("held", schedule=())), "skipping", WARNING)
    write_state(tmp_path, "long", last_outcome="success", last_success=NOW - 60, running={"since": NOW - 2 * HOUR})
    expect(judge(tmp_path, job("long", schedule=(), alert=Alert(max_duration="1h"))), "running_long", WARNING)
    write_state(tmp_path, "quick", last_outcome="success", last_success=NOW - 60, anomaly={"text": "finished in 1s"})
    expect(judge(tmp_path, job("quick", schedule=())), "duration", WARNING)
    write_state(tmp_path, "flappy", last_outcome="success", last_success=NOW - 60)
    for i in range(10):
        outcome = ("success", "failure")[i % 2]
        record = RunRecord("flappy", "h", f"{i:032x}", NOW - 1000 + i * 10, 1.0, outcome, i % 2, 1)
        append(str(tmp_path / "flappy"), record)
    expect(judge(tmp_path, job("flappy", schedule=())), "flapping", WARNING)
    silence = {"until": NOW + HOUR, "since": NOW, "by": ME, "uid": os.getuid(), "reason": "disk swap"}
    write_state(tmp_path, "quiet", last_outcome="failure", last_exit_code=1, silence=silence)
    expect(judge(tmp_path, job("quiet", schedule=())), "silenced", WARNING)

    write_state(tmp_path, "sd", last_outcome="success", last_start=NOW - 60, last_success=NOW - 60)
    systemd_answers["sd.timer"] = {"LoadState": "masked", "ActiveState": "inactive"}
    expect(judge(tmp_path, job("sd"), systemd_answers), "timer_inactive", CRITICAL)
    del systemd_answers["sd.timer"]
    systemd_answers["sd.service"] = {"LoadState": "loaded", "Result": "signal", "ExecMainStatus": "9"}
    expect(judge(tmp_path, job("sd"), systemd_answers), "unit_failed", WARNING)
    systemd_answers["sd.service"] = {"LoadState": "not-found"}
    expect(judge(tmp_path, job("sd"), systemd_answers), "not_installed", UNKNOWN)

    fleet_words = {"silent", "unreported"}
    assert seen | fleet_words == set(CONDITIONS), set(CONDITIONS) - seen - fleet_words


def test_the_skip_text_goes_with_the_staleness_finding(tmp_path: Path):
    """A failing job that is also stale and skipping: the skip text ends the staleness reason
    ("last success … ; skipped since …"), not the last run's failure, and it is `skipping` too."""
    write_state(
        tmp_path,
        "busy",
        last_outcome="failure",
        last_exit_code=1,
        last_start=NOW - 600,
        last_finish=NOW - 590,
        last_success=NOW - 5 * HOUR,
        last_skipped=NOW - 60,
        skipped_since=NOW - 3 * HOUR,
        consecutive_skips=4,
        skip_holder={"pid": 4242, "user": "www-data"},
    )
    h = consistent(judge(tmp_path, job("busy")))
    assert len(h.reasons) == 2 and h.reasons[0].startswith("last run 9min 50s ago: failure"), h.reasons
    assert "skipped since" not in h.reasons[0]
    assert h.reasons[1].startswith("last success 5h ago") and h.reasons[1].endswith("held by PID 4242 (user www-data)")
    assert h.condition == "failing" and h.as_dict()["conditions"] == ["failing", "skipping"]
    # not stale: the text is a note, and the job is not skipping by its verdict
    write_state(tmp_path, "busy", last_success=NOW - 600, last_outcome="success", last_start=NOW - 600)
    h = consistent(judge(tmp_path, job("busy")))
    assert h.status == OK and any(n.startswith("skipped since") for n in h.notes) and h.conditions == []


def test_the_fleet_speaks_the_same_words():
    """`check_fleet`: failing on a host → `failing`; no record within the stale limit → `late`;
    a host that stopped reporting → `silent`; declared, never reported → `unreported`."""
    records = [
        RunRecord("backup", "web1", "a" * 32, NOW - 120, 5.0, "failure", 1, 1),
        RunRecord("backup", "web2", "b" * 32, NOW - 100, 5.0, "success", 0, 1),
        RunRecord("report", "web3", "c" * 32, NOW - 6 * HOUR, 5.0, "success", 0, 1),
    ]
    verdicts = {
        v.job: consistent(v)
        for v in fleet.check_fleet(
            records, now=NOW, intervals={"report": HOUR}, declared=["ghost"], silent_after=3 * HOUR
        )
    }
    words = {name: (v.condition, v.status) for name, v in verdicts.items()}
    assert words == {
        "backup": ("failing", WARNING),
        "report": ("late", CRITICAL),
        "ghost": ("unreported", WARNING),
        "host web3": ("silent", CRITICAL),
    }, words
    # records within the limit, no success among them: failing, not late
    failed = [RunRecord("report", "web3", "d" * 32, NOW - 60, 5.0, "failure", 1, 1)]
    v = fleet.check_fleet(failed, now=NOW, intervals={"report": HOUR})[0]
    assert (v.reasons, v.conditions) == (
        ["failing on 1 of 1 hosts: web3", "no host has succeeded in the fleet's records"],
        ["failing"],
    )


@pytest.mark.slow
def test_health_fleet_json_has_the_conditions(redis_server: RedisServer):
    """`health --fleet --json` (a real redis-server) gives each row `condition` and `conditions`
    as `health --json` does."""
    env = {"JOBRUNNER_REDIS_URL": redis_server.url}
    fleet.publish(redis_server.url, RunRecord("cond_job", "h1", "1" * 32, NOW - 60, 1.0, "failure", 1, 1))
    fleet.publish(redis_server.url, RunRecord("cond_job", "h2", "2" * 32, NOW - 3 * HOUR, 1.0, "success", 0, 1))
    out = jobrunner_cli("health", "--fleet", "--json", "--silent-after", "1h", **env)
    rows = {r["job"]: r for r in json.loads(out.stdout)["jobs"]}
    assert (rows["cond_job"]["condition"], rows["cond_job"]["conditions"]) == ("failing", ["failing"]), rows
    assert rows["host h2"]["condition"] == "silent" and rows["host h2"]["status"] == "CRITICAL"
    unreported = [r for r in rows.values() if r["reasons"] == ["declared, but no host has reported it"]]
    assert unreported and all(r["condition"] == "unreported" for r in unreported)
    assert all(r["condition"] in CONDITIONS for r in rows.values() if r["status"] != "OK"), rows


def test_a_word_outside_the_vocabulary_is_refused():
    h = JobHealth("j", "j")
    with pytest.raises(ValueError, match="not one of CONDITIONS"):
        h.find(WARNING, "odd", "strange")


def _find_calls() -> list[tuple[str, ast.Call, ast.AST]]:
    calls: list[tuple[str, ast.Call, ast.AST]] = []
    for path in sorted((REPO / "jobrunner").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "find":
                    first = node.args[0] if node.args else None
                    if isinstance(first, ast.Name) and (first.id in ("OK", "WARNING", "CRITICAL", "UNKNOWN", "status")):
                        calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node, fn))
    return calls


def test_every_find_in_the_package_names_a_word_of_the_vocabulary():
    """Walk the package: each `JobHealth.find(status, reason, condition)` names its condition,
    a literal word of CONDITIONS or a variable only ever set to such words; nothing outside
    `rules/verdict.py` adds to a verdict's reasons or conditions by hand."""
    calls = _find_calls()
    assert len(calls) >= 20, calls  # health's and the fleet's
    for where, call, fn in calls:
        assert len(call.args) == 3, f"{where}: find() without its condition"
        word = call.args[2]
        if isinstance(word, ast.Constant):
            assert word.value in CONDITIONS, f"{where}: {word.value!r}"
            continue
        assert isinstance(word, ast.Name), where
        values = [
            n.value
            for a in ast.walk(fn)
            if isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == word.id for t in a.targets)
            for n in ast.walk(a.value)
            if isinstance(n, ast.Constant) and isinstance(n.value, str)
        ]
        assert values and set(values) <= set(CONDITIONS), f"{where}: {word.id} = {values}"
    for path in sorted((REPO / "jobrunner").rglob("*.py")):
        if path.name == "verdict.py":
            continue
        text = path.read_text()
        bad = re.findall(r"\.(?:reasons|conditions)\.(?:append|insert|extend)\(|\bh(?:ealth)?\.status\s*=(?!=)", text)
        assert not bad, f"{path.relative_to(REPO)}: {bad}"


def test_the_table_of_judges_names_each_check_once():
    names = [row.name for row in health.JUDGES]
    assert len(names) == len(set(names)) and names[-1] == "silence", names
    assert [r.name for r in health.JUDGES if not r.needs_state] == ["timer", "service"]


def test_the_design_table_of_conditions_is_the_vocabulary():
    """docs/design.md "State, metrics, health": the table of conditions, in CONDITIONS' order."""
    design = (REPO / "docs" / "design.md").read_text()
    section = design.split("## State, metrics, health", 1)[1].split("\n## ", 1)[0]
    table = section.split("| condition | status |", 1)[1].split("\n\n", 1)[0]
    words = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
    assert words == list(CONDITIONS), words


def test_the_messages_name_conditions_of_the_vocabulary():
    """A failure notification's ``condition:`` line names a word of the vocabulary; a failure
    still going on when the job's silence ended says so in its title and that line, whatever
    the condition."""
    from jobrunner.notify.message import _CONDITION, failure_message
    from jobrunner.rules.verdict import CONDITIONS

    assert set(_CONDITION) <= set(CONDITIONS)
    job = SimpleNamespace(name="wp_backup", ref="jobs.wp_backup:wp_backup", unit="wp-backup")
    result = SimpleNamespace(outcome="failure", exit_code=1, duration_s=2.0, attempts=1)
    common: dict[str, Any] = dict(job=job, host="web1", run_id="r1", result=result, error="boom", tail=[], state={})
    for condition in _CONDITION:
        title, body = failure_message(**common, suppressed=0, condition=condition)
        assert "silence" not in title and f"condition: {_CONDITION[condition]}" in body
        title, body = failure_message(**common, suppressed=3, condition=condition, after_silence=True)
        assert title == "🔔 wp_backup still failing on web1 after its silence ended (exit 1)"
        assert "condition: still failing: the failures during its silence were not sent" in body
