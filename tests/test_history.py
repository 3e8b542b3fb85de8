"""Run history (issue #16): every run's finish record appended to the job's history.jsonl by a
real run, bounded by count and age, compacted atomically, 0640 whatever the umask; readers
refuse symlinks and skip malformed lines; `jobrunner history` lists runs newest first with
their journalctl command, p50/p95 and the failure streak."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobrunner.store import history
from jobrunner.store.history import RunRecord, read_history

from .conftest import REPO, Launcher, clean_env, jobrunner_cli

JOB = """
import os
from jobrunner import job
@job
def flaky(ctx):
    ctx.log.info("working", secret_token=os.environ.get("SEEN", ""))
    if os.environ.get("FAIL"):
        raise RuntimeError("disk full on /srv/backup")
"""


def _record(
    job: str = "j", start: float = 1_700_000_000.0, outcome: str = "success", duration_s: float = 1.0
) -> RunRecord:
    return RunRecord(
        job=job, host="h", run_id=f"r{start}", start=start, duration_s=duration_s, outcome=outcome, exit_code=0
    )


def test_a_real_run_appends_its_finish_record(launcher: Launcher):
    """Success then failure: two records, in order, with the run id, outcome, exit code, attempts,
    the redacted error line and, for the failure, the tail of its output; the file is 0640."""
    launcher.write_job("flaky", JOB)
    assert launcher.run("flaky", env=launcher.env(JOBRUNNER_HISTORY_MAX_RUNS="5")).returncode == 0
    failed = launcher.run("flaky", env=launcher.env(FAIL="1"))
    assert failed.returncode == 1
    path = launcher.state_dir / "flaky" / "history.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["success", "failure"]
    assert lines[1]["run_id"] == failed.event("job.started")["run_id"]
    assert lines[1]["exit_code"] == 1 and lines[1]["attempts"] >= 1
    assert lines[1]["error"] == "RuntimeError: disk full on /srv/backup"
    assert any("working" in line for line in lines[1]["tail"])
    assert lines[1]["host"] == os.uname().nodename and lines[1]["duration_s"] >= 0
    assert "tail" not in lines[0]


def test_the_error_line_is_redacted(launcher: Launcher):
    """A secret in the environment never reaches the history (the error, the tail)."""
    launcher.write_job(
        "leaky",
        "import os\nfrom jobrunner import job\n@job\ndef leaky(ctx):\n"
        "    print('token is', os.environ['API_TOKEN'])\n    raise RuntimeError('bad ' + os.environ['API_TOKEN'])\n",
    )
    secret = "s3cr3t-Value-4242424242"
    assert launcher.run("leaky", env=launcher.env(API_TOKEN=secret)).returncode == 1
    text = (launcher.state_dir / "leaky" / "history.jsonl").read_text()
    assert secret not in text and "bad " in text


def test_history_off_and_dry_run_record_nothing(launcher: Launcher):
    launcher.write_job("flaky", JOB)
    assert launcher.run("flaky", env=launcher.env(JOBRUNNER_HISTORY="off")).returncode == 0
    assert launcher.run("--dry-run", "flaky").returncode == 0
    assert not (launcher.state_dir / "flaky" / "history.jsonl").exists()


def test_bounded_by_count_and_age_compacted_atomically(tmp_path: Path):
    """Past the bound the file is rewritten (a new inode, by rename) with the newest records
    younger than the age bound; appends in between keep the inode."""
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    now = time.time()
    old = _record(start=now - 10 * 86400)
    history.append(str(job_dir), old, max_runs=10, max_age_s=86400)
    compactions = 0
    for i in range(40):
        compactions += history.append(str(job_dir), _record(start=now + i), max_runs=10, max_age_s=86400)
    assert compactions >= 1
    read = read_history(str(tmp_path), "j")
    assert old not in read.records
    assert 10 <= len(read.records) <= 13
    assert read.records[-1].start == pytest.approx(now + 39, abs=0.01)
    assert stat.S_IMODE((job_dir / "history.jsonl").stat().st_mode) == 0o640
    assert not [p for p in job_dir.iterdir() if p.name.endswith(".tmp")]


def test_append_refuses_a_planted_symlink(tmp_path: Path):
    """The job's user may be the attacker: history.jsonl as a symlink is refused, never followed."""
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (job_dir / "history.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        history.append(str(job_dir), _record())
    assert target.read_text() == "precious\n"
    read = read_history(str(tmp_path), "j")
    assert read.error and read.records == []


def test_reader_skips_and_counts_malformed_lines(tmp_path: Path):
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    good = json.dumps(_record().to_dict())
    junk = [
        "not json",
        "[1,2]",
        json.dumps({**_record().to_dict(), "start": "yesterday"}),
        json.dumps({**_record().to_dict(), "exit_code": True}),
        json.dumps({**_record().to_dict(), "job": "other"}),
        json.dumps({**_record().to_dict(), "tail": [1]}),
        "[" * 100_000,
        "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),
    ]
    (job_dir / "history.jsonl").write_text("\n".join([good, *junk, good]) + "\n", errors="surrogateescape")
    read = read_history(str(tmp_path), "j")
    assert len(read.records) == 2 and read.skipped == len(junk)


def test_filtered_reads_return_what_a_full_read_would(tmp_path: Path):
    """The filters pushed into the read (the newest N split off alone, --since stopping at the
    first older record, --outcome parsing only lines that can hold it) return exactly the
    records a full read then filtered would, malformed lines among them or not."""
    job_dir = tmp_path / "j"
    job_dir.mkdir()
    outcomes = ["success", "failure", "skipped", "timeout", "success", "failure", "success", "terminated"]
    lines = []
    for i, outcome in enumerate(outcomes * 5):
        lines.append(json.dumps(_record(outcome=outcome, start=1000.0 + i).to_dict(), separators=(",", ":")))
        if i % 7 == 3:
            lines.append("not json")
    # an error text quoting an outcome is escaped, so it cannot fool the byte check
    tricky = {**_record(outcome="failure", start=2000.0).to_dict(), "error": '"outcome":"success"'}
    lines.append(json.dumps(tricky, separators=(",", ":")))
    (job_dir / "history.jsonl").write_text("\n".join(lines) + "\n")
    full = read_history(str(tmp_path), "j").records
    assert len(full) == 41
    for last in (1, 3, 10, 40, 41, 100):
        assert read_history(str(tmp_path), "j", last=last).records == full[-last:]
    for wanted in ("failure", "failed", "success", "skipped", "timeout"):
        picked = [r for r in full if history.outcome_matches(r.outcome, wanted)]
        assert read_history(str(tmp_path), "j", outcome=wanted).records == picked
        assert read_history(str(tmp_path), "j", outcome=wanted, last=2).records == picked[-2:]
        assert read_history(str(tmp_path), "j", outcome=wanted, since=1020.0).records == [
            r for r in picked if r.start >= 1020.0
        ]


def test_reader_refuses_a_fifo_and_a_symlinked_directory(tmp_path: Path):
    (tmp_path / "f").mkdir()
    os.mkfifo(tmp_path / "f" / "history.jsonl")
    assert read_history(str(tmp_path), "f").error  # never blocks
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "history.jsonl").write_text(json.dumps(_record(job="link").to_dict()) + "\n")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert read_history(str(tmp_path), "link").error


def test_summary_percentiles_and_streak():
    records = [_record(start=i, duration_s=float(i)) for i in range(1, 21)]
    records += [_record(start=30, outcome="failure"), _record(start=31, outcome="skipped")]
    records += [_record(start=32, outcome="timeout")]
    s = history.summary(records)
    assert s["failure_streak"] == 2 and s["runs"] == 23
    assert history.percentile([1, 2, 3, 4], 0.5) == 2 and history.percentile(list(range(1, 101)), 0.95) == 95
    assert history.failure_streak([_record(outcome="failure"), _record()]) == 0


def _seed(root: Path) -> None:
    now = time.time()
    for job, outcomes in (("backup", ["success", "failure", "failure"]), ("sync", ["success", "success"])):
        (root / job).mkdir(parents=True)
        for i, outcome in enumerate(outcomes):
            rec = _record(job=job, start=now - 3600 * (len(outcomes) - i), outcome=outcome, duration_s=10.0 + i)
            rec = RunRecord(**{**rec.to_dict(), "run_id": uuid.uuid4().hex})  # a unit's run: systemd's v4 ID
            history.append(str(root / job), rec)


def test_cli_history_lists_newest_first_with_the_log_command(tmp_path: Path):
    _seed(tmp_path)
    proc = jobrunner_cli("history", "--state-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    runs = [x for x in lines if "journalctl _SYSTEMD_INVOCATION_ID=" in x]
    assert len(runs) == 5
    assert "backup  failure (exit 0)" in runs[0] and "sync" in runs[1]
    assert any(x.startswith("backup") and "failure streak 2" in x and "p95 12.0s" in x for x in lines)
    assert any(x.startswith("sync") and "failure streak 0" in x for x in lines)


def test_cli_history_filters_and_json(tmp_path: Path):
    _seed(tmp_path)
    root = str(tmp_path)
    proc = jobrunner_cli("history", "backup", "--outcome", "failure", "--json", "--state-dir", root)
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    runs = [r for r in rows if "summary" not in r]
    assert [r["outcome"] for r in runs] == ["failure", "failure"]
    assert runs[0]["log"] == f"journalctl _SYSTEMD_INVOCATION_ID={runs[0]['run_id']}"
    assert [r["summary"]["job"] for r in rows if "summary" in r] == ["backup"]
    recent = jobrunner_cli("history", "--since", "90min", "--json", "--state-dir", root)
    assert len([x for x in recent.stdout.splitlines() if '"summary"' not in x]) == 2
    assert len(jobrunner_cli("history", "--limit", "1", "--json", "--state-dir", root).stdout.splitlines()) == 3
    assert jobrunner_cli("history", "nosuch", "--state-dir", root).returncode == 78
    assert jobrunner_cli("history", "--since", "whenever", "--state-dir", root).returncode == 64


def test_the_jobs_under_the_state_directory_by_one_rule(tmp_path: Path):
    """status, history, the page and silences list the same jobs: the directories holding a
    state or a history; not a dotted entry, a symlink, an empty directory or a file."""
    from jobrunner.store.history import recorded_jobs

    for name, file in (("a", "state.json"), ("b", "history.jsonl"), (".tmp", "state.json"), ("empty", None)):
        (tmp_path / name).mkdir()
        if file:
            (tmp_path / name / file).write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    (tmp_path / "file").write_text("")
    assert recorded_jobs(str(tmp_path)) == ["a", "b"]
    assert recorded_jobs(str(tmp_path / "missing")) == []
