"""The fleet's history (issue #16): with $JOBRUNNER_REDIS_URL each run also publishes its finish
record to a capped Redis stream (a real redis-server); `history --fleet` and `status --fleet`
show every host's runs; a Redis that is down or silent never changes the outcome and holds the
run up for at most the publish bound; without the URL, neither redis nor the fleet module is
imported."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrunner.fleet import stream as fleet
from jobrunner.store.history import RunRecord

from .conftest import REPO, Launcher, clean_env, jobrunner_cli
from .test_imports import PROBE
from .test_redislock import RedisServer, free_port

JOB = "from jobrunner import job\n@job\ndef fl(ctx):\n    ctx.log.info('fl.ran')\n"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_run_publishes_its_record_and_the_fleet_views_show_it(launcher: Launcher, redis_server: RedisServer):
    launcher.write_job("fl", JOB)
    run = launcher.run("fl", env=launcher.env(JOBRUNNER_REDIS_URL=redis_server.url))
    assert run.returncode == 0 and "fleet.publish_failed" not in run.names()
    # another host's runs, published as its runner would
    now = time.time()
    for i, outcome in enumerate(("success", "failure", "failure")):
        fleet.publish(redis_server.url, RunRecord("fl", "web2", f"{i:032x}", now + i, 2.0, outcome, 1 if i else 0, 1))
    entries = redis_server.client().xrange("jobrunner:runs")
    assert len(entries) == 4
    mine = json.loads(entries[0][1][b"r"])
    assert mine["run_id"] == run.event("job.started")["run_id"] and mine["outcome"] == "success"

    env = {"JOBRUNNER_REDIS_URL": redis_server.url}
    rows = [json.loads(x) for x in jobrunner_cli("history", "--fleet", "--json", **env).stdout.splitlines()]
    runs = [r for r in rows if "summary" not in r]
    assert [r["host"] for r in runs][:3] == ["web2"] * 3 and len(runs) == 4
    streaks = {
        (s["summary"]["host"], s["summary"]["job"]): s["summary"]["failure_streak"] for s in rows if "summary" in s
    }
    assert streaks[("web2", "fl")] == 2 and streaks[(mine["host"], "fl")] == 0

    cells = [json.loads(x) for x in jobrunner_cli("status", "--fleet", "--json", **env).stdout.splitlines()]
    assert {(c["host"], c["last_outcome"]) for c in cells} == {("web2", "failure"), (mine["host"], "success")}
    table = jobrunner_cli("status", "--fleet", "--table", **env).stdout.splitlines()
    assert table[0].split()[0] == "JOB" and "web2" in table[0] and mine["host"] in table[0]
    assert table[1].startswith("fl ") and "2 failed" in table[1]


def test_the_stream_is_capped(redis_server: RedisServer):
    for i in range(300):
        fleet.publish(redis_server.url, RunRecord("j", "h", f"{i}", 1.7e9 + i, 1.0, "success", 0), maxlen=100)
    assert redis_server.client().xlen("jobrunner:runs") == 100  # the setting means what it says
    assert len(fleet.read_fleet(redis_server.url)) == redis_server.client().xlen("jobrunner:runs")


@pytest.mark.parametrize("redis", ["refused", "silent"])
def test_a_redis_down_or_silent_never_changes_the_run(launcher: Launcher, redis: str):
    """A closed port (refused) or a server that accepts and never answers (silent): the run
    succeeds, logs fleet.publish_failed, records its own history, and is held up at most
    about the publish bound."""
    launcher.write_job("fl", JOB)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever reads or answers
    port = silent.getsockname()[1] if redis == "silent" else free_port()
    try:
        began = time.monotonic()
        plain = launcher.run("fl")
        plain_s = time.monotonic() - began
        began = time.monotonic()
        run = launcher.run("fl", env=launcher.env(JOBRUNNER_REDIS_URL=f"redis://127.0.0.1:{port}/0"))
        held_s = time.monotonic() - began
    finally:
        silent.close()
    assert plain.returncode == 0 and run.returncode == 0
    assert run.event("job.finished")["outcome"] == "success"
    assert run.event("fleet.publish_failed")["error"]
    # Measured on the run's own clock, from the job's last line to the hook's give-up (the
    # processes' start-up, which a loaded machine stretches, is not what is bounded).
    stamps = {e["event"]: e["ts"] for e in run.events}
    from datetime import datetime

    def ts(name: str) -> float:
        return datetime.fromisoformat(stamps[name].replace("Z", "+00:00")).timestamp()

    assert ts("fleet.publish_failed") - ts("fl.ran") < fleet.PUBLISH_BOUND_S + 1.0, (held_s, plain_s)
    lines = (launcher.state_dir / "fl" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_without_redis_nothing_new_is_imported(tmp_path: Path):
    env = clean_env(JOBRUNNER_STATE_DIR=str(tmp_path / "s"), JOBRUNNER_LOCK_DIR=str(tmp_path / "l"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "jobs.noop"], capture_output=True, text=True, timeout=60, env=env
    )
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "jobrunner.store.history" in loaded
    assert "jobrunner.fleet.stream" not in loaded and "redis" not in loaded


def test_fleet_views_need_the_url_and_a_live_redis():
    assert jobrunner_cli("history", "--fleet").returncode == 78
    down = jobrunner_cli("status", "--fleet", JOBRUNNER_REDIS_URL=f"redis://:hunter2secret@127.0.0.1:{free_port()}/0")
    assert down.returncode == 78 and "Traceback" not in down.stderr and "hunter2secret" not in down.stderr


HOSTS = ("web1", "web2", "web3", "web4", "web5")
FLEET_JOB = """
import os, time
from jobrunner import job

@job
def site_sync(ctx):
    time.sleep(float(os.environ.get("SLEEP", "0")))
    if os.environ.get("FAIL"):
        raise RuntimeError("rsync: connection refused")
    ctx.log.info("site_sync.done")
"""


def _on_host(launcher: Launcher, host: str, env: dict[str, str], **extra: str) -> subprocess.Popen[str]:
    """``jobrunner run site_sync`` as host HOST would: its own UTS namespace (hostname HOST,
    which the runner records as the run's host), its own state and lock directories."""
    return launcher.start_on_host(host, "run", "site_sync", env={**env, **extra}, own_dirs=True)


def _run_on(launcher: Launcher, host: str, env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    proc = _on_host(launcher, host, env, **extra)
    out, err = proc.communicate(timeout=60)
    assert "fleet.publish_failed" not in out, out
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_five_hosts_one_silent_one_failing_and_redis_down_mid_run(launcher: Launcher, redis_server: RedisServer):
    """Five hosts (real runs, each in its own UTS namespace, so each records its own hostname)
    publish to a real redis-server. web5 runs once and then stops reporting; web2 fails once,
    web4 three times in a row. `health --fleet` says which job fails on which hosts (CRITICAL
    for web4's streak), and that web5 stopped reporting; `status --fleet` shows hosts × jobs,
    and its page marks web5. Then Redis dies during a run on web1: the run still succeeds,
    held up at most the publish bound, and the fleet views fail in one line."""
    launcher.write_job("site_sync", FLEET_JOB)
    env = launcher.env(JOBRUNNER_REDIS_URL=redis_server.url)
    assert _run_on(launcher, "web5", env).returncode == 0
    time.sleep(5)  # web5 goes quiet
    for host in HOSTS[:4]:
        fail = {"FAIL": "1"} if host in ("web2", "web4") else {}
        assert _run_on(launcher, host, env, **fail).returncode == (1 if fail else 0)
        if host == "web1":
            web1_done = time.monotonic()
    for _ in range(2):
        assert _run_on(launcher, "web4", env, FAIL="1").returncode == 1
    cli_env = {"JOBRUNNER_REDIS_URL": redis_server.url}
    # A limit between web1's silence (the oldest of the four) and web5's (5 s longer), however
    # slow this machine ran the runs above.
    silent_after = f"{time.monotonic() - web1_done + 2.5:.1f}s"

    health = jobrunner_cli("health", "--fleet", "--silent-after", silent_after, "--json", **cli_env)
    doc = json.loads(health.stdout)
    assert health.returncode == 2 and doc["status"] == "CRITICAL", health.stdout
    rows = {r["job"]: r for r in doc["jobs"]}
    sync = rows["site_sync"]
    assert sync["status"] == "CRITICAL"
    assert sync["reasons"] == ["failing on 2 of 5 hosts: web2, web4 (3 in a row)"], sync
    assert sync["last_host"] == "web4" and sync["hosts"]["web5"]["last_outcome"] == "success"
    assert rows["host web5"]["status"] == "CRITICAL" and "stopped reporting" in rows["host web5"]["reasons"][0]
    assert not any(name.startswith("host web") and name != "host web5" for name in rows)
    text = jobrunner_cli("health", "--fleet", **cli_env).stdout.splitlines()
    assert text[0].startswith("CRITICAL: site_sync: failing on 2 of 5 hosts") and "jobs=1" in text[0]
    # the default limit is wider than seconds of silence (at least 15 min): web5 is not called out
    quiet = json.loads(jobrunner_cli("health", "--fleet", "--json", **cli_env).stdout)
    # (the jobs this checkout declares and no host reported are named: the fleet shares its jobs)
    assert [r["job"] for r in quiet["jobs"] if r["reasons"] != ["declared, but no host has reported it"]] == [
        "site_sync"
    ]

    cells = [json.loads(x) for x in jobrunner_cli("status", "--fleet", "--json", **cli_env).stdout.splitlines()]
    assert {c["host"]: c["last_outcome"] for c in cells} == {
        "web1": "success",
        "web2": "failure",
        "web3": "success",
        "web4": "failure",
        "web5": "success",
    }
    page = launcher.tmp / "fleet.html"
    assert jobrunner_cli("status", "--fleet", "--html", str(page), **cli_env).returncode == 0
    html_text = page.read_text()
    assert all(f"<th>{h}</th>" in html_text for h in HOSTS)
    assert '<span class="err">stopped reporting</span>' not in html_text  # the page's limit is the default
    assert "3 failed" in html_text and "failing on 2 of 5 hosts" in html_text

    began = time.monotonic()
    slow = _on_host(launcher, "web1", env, SLEEP="2")
    time.sleep(1.0)
    redis_server.kill()  # mid-run: the job is sleeping
    out, err = slow.communicate(timeout=60)
    held = time.monotonic() - began
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in events]
    assert slow.returncode == 0 and "fleet.publish_failed" in names, (out, err)
    assert [e for e in events if e["event"] == "job.finished"][0]["outcome"] == "success"
    assert held < 2 + fleet.PUBLISH_BOUND_S + 3.0, held
    assert len((launcher.tmp / "web1" / "state" / "site_sync" / "history.jsonl").read_text().splitlines()) == 2
    down = jobrunner_cli("health", "--fleet", **cli_env)
    assert down.returncode == 3 and down.stdout.startswith("UNKNOWN: the fleet's Redis is unavailable")
    assert len(down.stdout.splitlines()) == 1 and "Traceback" not in down.stderr


def test_publishing_speaks_resp_itself_auth_select_and_a_unix_socket(tmp_path: Path, launcher: Launcher):
    """A run publishes without importing the redis client (one XADD over a plain socket): to a
    real redis-server that wants a password and a database other than 0, over TCP and over its
    unix socket; a wrong password is fleet.publish_failed with Redis's own words and without the
    password, and the run still succeeds."""
    import redis as redis_client

    from .test_redislock import REDIS_SERVER

    port = free_port()
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "s3cret-pw",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis_client.Redis(host="127.0.0.1", port=port, password="s3cret-pw", db=3, socket_timeout=2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis_client.RedisError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        launcher.write_job("fl", JOB)
        for url in (f"redis://:s3cret-pw@127.0.0.1:{port}/3", f"unix://:s3cret-pw@{sock}?db=3"):
            probe = subprocess.run(
                [sys.executable, "-c", PROBE, "fl"],
                capture_output=True,
                text=True,
                timeout=60,
                env=launcher.env(JOBRUNNER_REDIS_URL=url),
            )
            loaded = set(json.loads(probe.stderr.strip().splitlines()[-1]))
            assert "jobrunner.fleet.stream" in loaded and "redis" not in loaded
            assert "fleet.publish_failed" not in probe.stdout, probe.stdout
        entries = client.xrange("jobrunner:runs")
        assert len(entries) == 2
        assert {json.loads(fields[b"r"])["job"] for _, fields in entries} == {"fl"}
        assert redis_client.Redis(host="127.0.0.1", port=port, password="s3cret-pw", db=0).xlen("jobrunner:runs") == 0

        wrong = launcher.run("fl", env=launcher.env(JOBRUNNER_REDIS_URL=f"redis://:not-it-pw@127.0.0.1:{port}/3"))
        assert wrong.returncode == 0 and wrong.event("job.finished")["outcome"] == "success"
        error = wrong.event("fleet.publish_failed")["error"]
        assert "WRONGPASS" in error or "invalid password" in error, error
        assert "not-it-pw" not in wrong.stdout + wrong.stderr
    finally:
        proc.terminate()
        proc.wait(10)


def _flood(url: str, records: list[RunRecord], maxlen: int = fleet.DEFAULT_MAXLEN) -> None:
    """Publish ``records`` as their runs would (the same commands), 500 records a round trip."""
    from jobrunner.locks.resp import RespError, call

    for i in range(0, len(records), 500):
        commands = [c for r in records[i : i + 500] for c in fleet.publish_commands(r, maxlen=maxlen)]
        assert not [x for x in call(url, commands, timeout=30) if isinstance(x, RespError)]


def test_a_quiet_hosts_daily_job_is_in_every_view_after_a_flood_of_60000_records(
    redis_server: RedisServer, tmp_path: Path
):
    """Issue #27's flood: one run of a daily job on a quiet host, then 60,000 records from 100
    busy hosts (nine in ten of them skips, as in a busy fleet): the quiet host and its job are
    in status, health, history and the page; the stream holds exactly its setting."""
    now = time.time()
    quiet = RunRecord("nightly_report", "quiet1", "q" * 32, now - 20 * 3600, 40.0, "failure", 1, 1, error="disk full")
    fleet.publish(redis_server.url, quiet)
    busy = [
        RunRecord(
            f"job{(i // 100) % 50:02d}",
            f"busy{i % 100:03d}",
            f"{i:032x}",
            now - 3600 + i * 0.05,
            0.5,
            "skipped" if i % 10 else "success",
            75 if i % 10 else 0,
            1,
        )
        for i in range(60000)
    ]
    _flood(redis_server.url, busy, maxlen=5000)
    stream = redis_server.client().xrange("jobrunner:runs")
    assert len(stream) == 5000  # the runs, not the skips, and exactly the setting
    assert not any(b"quiet1" in fields[b"r"] for _, fields in stream)  # long gone from the history
    assert not any(b'"skipped"' in fields[b"r"] for _, fields in stream)  # skips update only the views
    env = {"JOBRUNNER_REDIS_URL": redis_server.url}

    cells = [json.loads(x) for x in jobrunner_cli("status", "--fleet", "--json", **env).stdout.splitlines()]
    mine = [c for c in cells if c["host"] == "quiet1"]
    assert [(c["job"], c["last_outcome"], c["failure_streak"]) for c in mine] == [("nightly_report", "failure", 1)]
    assert len(cells) == 100 * 50 + 1

    health = json.loads(jobrunner_cli("health", "--fleet", "--json", "--package", "nosuch_pkg", **env).stdout)
    rows = {r["job"]: r for r in health["jobs"]}
    assert rows["nightly_report"]["reasons"] == ["failing on 1 of 1 hosts: quiet1"]
    assert "host quiet1" not in rows  # 20 h: within a daily host's day and an hour

    history = [json.loads(x) for x in jobrunner_cli("history", "--fleet", "--json", **env).stdout.splitlines()]
    summaries = [h["summary"] for h in history if "summary" in h]
    assert {(s["host"], s["job"], s["failure_streak"]) for s in summaries if s["host"] == "quiet1"} == {
        ("quiet1", "nightly_report", 1)
    }

    page = tmp_path / "fleet.html"
    assert jobrunner_cli("status", "--fleet", "--html", str(page), **env).returncode == 0
    text = page.read_text()
    assert "<th>quiet1</th>" in text and "nightly_report" in text and "100 other hosts" in text
    assert len(text.encode()) < 1_000_000


def test_absurd_or_forged_entries_are_skipped_never_a_crash(redis_server: RedisServer, tmp_path: Path):
    """Issue #25 finding 3: ``start: 1e308`` in a record (and other nonsense) must not crash
    ``status --fleet --html`` or ``history --fleet``; a record filed under another host's name
    is not believed."""
    now = time.time()
    fleet.publish(redis_server.url, RunRecord("j", "web1", "a" * 32, now - 60, 1.0, "success", 0))
    client = redis_server.client()
    bad = {"job": "j", "host": "web9", "run_id": "b" * 32, "start": 1e308, "duration_s": 1, "outcome": "success"}
    client.xadd("jobrunner:runs", {"r": json.dumps(bad)})
    client.hset("jobrunner:runs:ran", "web9\tj", json.dumps(bad))
    client.hset("jobrunner:runs:seen", "web9\tj", "1e308")
    client.zadd("jobrunner:runs:hosts", {"web9": 1e308})
    forged = {**bad, "start": now, "host": "web1", "outcome": "success"}
    client.hset("jobrunner:runs:ran", "web2\tj", json.dumps(forged))
    client.hset("jobrunner:runs:streak", "web1\tj", "not a number")
    env = {"JOBRUNNER_REDIS_URL": redis_server.url}
    page = tmp_path / "p.html"
    for argv in (
        ("status", "--fleet", "--html", str(page)),
        ("history", "--fleet"),
        ("status", "--fleet", "--json"),
        ("health", "--fleet", "--package", "nosuch_pkg"),
    ):
        proc = jobrunner_cli(*argv, **env)
        assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr, (argv, proc.stderr)
    cells = [json.loads(x) for x in jobrunner_cli("status", "--fleet", "--json", **env).stdout.splitlines()]
    assert [(c["host"], c["last_outcome"]) for c in cells] == [("web1", "success")]


def test_a_parked_connection_goes_only_to_the_same_redis_url(redis_server: RedisServer):
    """The lease parks its connection for the run's record (``resp.park``/``take``): handed
    over only for the same server, database and user, in the same process; another URL's
    is closed, never used for it."""
    from jobrunner.locks import resp

    conn = resp.Connection(redis_server.url, 2.0)
    assert conn.call("PING") == "PONG"
    resp.park(conn)
    assert resp.take(redis_server.url.replace("/0", "/3")) is None and not conn.connected  # another database
    assert resp.take(redis_server.url) is None  # taken once: nothing parked now
    conn = resp.Connection(redis_server.url, 2.0)
    conn.call("PING")
    resp.park(conn)
    same = resp.take(redis_server.url)
    assert same is conn and same.connected and resp.take(redis_server.url) is None
    fleet.publish(redis_server.url, RunRecord("pk", "h", "1", 1.7e9, 1.0, "success", 0))  # no parked one: its own
    same.close()


_names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            _names,
            _names,
            st.sampled_from(["success", "failure", "skipped", "timeout", 'we"ird\\']),
            st.floats(1.7e9, 1.8e9),
        ),
        max_size=30,
    )
)
def test_status_fleet_json_lines_are_what_json_dumps_of_the_matrix_writes(rows):
    """``cell_lines`` (the 1,000-host fast path of ``status --fleet --json``) writes, byte for
    byte, what ``json.dumps`` of each cell of ``matrix`` wrote: any host or job name (quotes,
    control characters, non-ASCII), skips only, a cell's streak."""
    records = [
        RunRecord(job, host, f"{i:032x}", start, 1.5, outcome, 1 if outcome != "success" else 0, 1)
        for i, (host, job, outcome, start) in enumerate(rows)
    ]
    view = fleet.FleetView.from_records(records)
    view.records = []  # the view status reads: no history
    expected = [json.dumps({"host": h, "job": j, **c}) + "\n" for (h, j), c in fleet.matrix(view).items()]
    assert list(fleet.cell_lines(view)) == expected


def test_the_page_past_forty_hosts_counts_the_other_hosts_per_job():
    """The fleet's page at more than ``FLEET_COLUMNS`` hosts: the failing host is a column,
    and each job's "other hosts" cell counts the rest by last outcome, hosts that never ran
    the job as "not run" (the counts add up to the other hosts, the column not among them)."""
    from jobrunner.observe.statuspage import render_fleet

    now = time.time()
    records = [RunRecord("a", "h00", "0" * 32, now - 60, 1.0, "failure", 1, 1)]
    for n in range(1, 45):
        outcome = "skipped" if n in (5, 6, 7) else "success"
        records.append(RunRecord("a", f"h{n:02d}", f"{n:032x}", now - 50, 1.0, outcome, 0, 1))
    records += [RunRecord("b", f"h{n:02d}", f"b{n:031x}", now - 40, 1.0, "success", 0, 1) for n in range(1, 11)]
    view = fleet.FleetView.from_records(records)
    page = render_fleet(view, fleet.check_fleet(view, now=now), now=now)
    assert "<th>h00</th><th>44 other hosts</th>" in page
    cells = page.split('data-label="other hosts">')[1:]
    assert [c.split("<", 1)[0] for c in cells] == ["41 success, 3 skipped", "34 not run, 10 success"]
    assert page.count("\u2013 not run") == 1  # b on h00, the column


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["web1\tj", "web2\tj", "web3\tk", "bad", "\tj", "web4\t"]),
        st.one_of(
            st.sampled_from(["1790000000.5 2.0 success 0 1", "1790000100 1 failure 1 2", "nan 1 success 0 1"]),
            st.builds(
                lambda a, b, o, c, n: f"{a} {b} {o} {c} {n}",
                st.sampled_from(["1790000000", "nan", "inf", "-1", "1e308", "x"]),
                st.sampled_from(["0.5", "nan", "-3", "1e9"]),
                st.sampled_from(["success", "fail ure", "", "\x1b[2J"]),
                st.sampled_from(["0", "1", "x"]),
                st.sampled_from(["1", "2"]),
            ),
            st.text(max_size=30),
        ),
    ),
    st.dictionaries(
        st.sampled_from(["web1\tj", "web2\tj", "web3\tk", "bad"]),
        st.sampled_from(["1790000000.25", "nan", "inf", "1e308", "-5", "x", "1790000001"]),
    ),
    st.dictionaries(st.sampled_from(["web1\tj", "web2\tj"]), st.sampled_from(["0", "3", "x", "-1", "12345678901"])),
)
@example({"web1\tj": "1790000000.5 2.0 success 0 1", "web2\tj": "nan 1 success 0 1"}, {}, {})  # min() and
@example({"web1\tj": "1790000000.5 2.0 success 0 1", "web2\tj": "1790000000 nan success 0 1"}, {}, {})  # max()
@example({}, {"web1\tj": "1790000000.25", "web2\tj": "nan"}, {})  # pass over a NaN after a good value
def test_the_views_column_parsers_agree_with_the_one_by_one_rules(brief, seen, streak):
    """The views' values are converted a column at a time where all are well formed; any mix
    of good and bad values (NaN, infinities, absurd times, extra spaces, control characters)
    gives exactly what the one-by-one rules give: only finite times of this century, well
    formed briefs, whole streaks; never an exception."""
    lasts = fleet._briefs(brief)
    for key, raw in brief.items():
        bits = raw.split(" ")
        good = len(bits) == 5
        if good:
            try:
                start, duration, _c, _n = float(bits[0]), float(bits[1]), int(bits[3]), int(bits[4])
            except ValueError:
                good = False
        good = good and 946684800.0 <= start <= 4102444800.0 and 0 <= duration <= 366 * 86400.0
        good = good and bool(bits[2]) and len(bits[2]) <= 40 and bits[2].isprintable()
        assert (key in lasts) == good, (key, raw)
    seens = fleet._floats(seen, 946684800.0, 4102444800.0 + 366 * 86400.0)
    assert set(seens) == {k for k, v in seen.items() if fleet._time_of(v) is not None}
    assert fleet._streaks(streak) == {k: int(v) for k, v in streak.items() if v.isdigit() and len(v) < 10}
