"""The status page's layout in a real headless Chromium (issue 29), at 1280×900 and 390×844:
the overall verdict first, failing, late and silenced jobs above the others, the last error in
the job's own row, a skipped last run said as such, next runs from the schedules, sparklines
with their scale, and on a phone one compact row per job (≤ 64 px) with the name and state on
its first line. Boxes are measured by a probe copy of the page (the page itself has no script)
that writes every row's box into the DOM, read back with ``--dump-dom``; screenshots are taken
at both sizes (``JOBRUNNER_SCREENSHOTS=DIR`` keeps them: docs/status-page-*.png come from it)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from jobrunner.store import history
from jobrunner.store.history import RunRecord
from jobrunner.store.state import StateStore

from .conftest import REPO, clean_env
from .test_statuspage import browse, console_errors, png_size

H = 3600.0
ERROR = "CommandFailed: wp db export exited 1: mysqldump: Got error: 1045: Access denied for user 'wp'@'localhost'"
# job -> [(seconds ago, outcome, duration)], oldest first; names of shipped jobs (their schedules)
RUNS: dict[str, list[tuple[float, str, float]]] = {
    "wp_backup": [(d * 24 * H + 2 * H, "success", 300 + 20 * d) for d in range(9, 3, -1)]
    + [(d * 24 * H + 2 * H, "failure", 40.0) for d in (3, 2, 1)],
    "certbot_renew": [(d * 24 * H, "success", 12.0) for d in range(6, 1, -1)] + [(24 * H, "timeout", 1800.0)],
    "wp_cron": [(3 * H + 900 * k, "success", 3.0 + k % 3) for k in range(8, 0, -1)],
    "php_fpm_restart": [(8 * 24 * H, "success", 4.0), (24 * H, "failure", 2.0)],
    "media_sync": [(2 * H * k, "success", 90.0 + 10 * k) for k in range(8, 0, -1)] + [(1800.0, "skipped", 0.0)],
    "disk_check": [(H * k + 1200, "success", 0.4 + 0.1 * (k % 4)) for k in range(24, -1, -1)],
    "dir_backup": [(d * 24 * H + 5 * H, "success", 60.0 + d) for d in range(7, -1, -1)],
    "backup_prune": [(d * 24 * H + 21 * H, "success", 8.0) for d in range(5, -1, -1)],
    "late_watch": [(900 * k + 600, "success", 0.8) for k in range(12, -1, -1)],
    "status_page": [(300 * k + 180, "success", 0.5 + 0.05 * k) for k in range(20, -1, -1)],
    "wp_cache_flush": [(d * 24 * H + 4 * H, "success", 1.5) for d in range(3, -1, -1)],
}
ORDER = ("bad", "late", "silenced", "warn", "skipped", "running", "ok", "never")


LATE_BY_DESIGN = {"wp_cron"}  # its last run is 3h ago on a 15-minute schedule


def _aligned(runs: dict[str, list[tuple[float, str, float]]], now: float) -> dict[str, list[tuple[float, str, float]]]:
    """The runs shifted so that each job's newest run is just after its schedule's latest elapse
    (from the shipped declaration, by ``systemd-analyze calendar``): whatever the time of day the
    test runs at, only the jobs late by design are late (a job on "04:00" whose newest run was
    seeded "21h ago" missed this morning's firing when the test ran at 00:30)."""
    from jobrunner.run.loader import discover
    from jobrunner.systemd.calendar import calendar_iterations

    schedules = {j.name: j.schedule for j in discover("jobs")}
    out = {}
    for job, seeded in runs.items():
        if job in LATE_BY_DESIGN or not schedules.get(job):
            out[job] = seeded
            continue
        for window in (2 * H, 36 * H, 8 * 24 * H):  # a window whose elapses reach past now
            elapses = [t.timestamp() for t in calendar_iterations(schedules[job], 600, base=now - window)]
            if any(t <= now for t in elapses) and elapses[-1] > now:
                break
        latest = max(t for t in elapses if t <= now)
        newest_ago = now - (latest + min(60.0, (now - latest) / 2))
        shift = seeded[-1][0] - newest_ago
        out[job] = [(ago - shift, outcome, duration) for ago, outcome, duration in seeded]
    return out


def seed(root: Path, now: float) -> None:
    """The runs as history and state, relative to ``now`` (taken when the page is made: the suite
    may reach this module minutes after importing it, and a 5-minute job would look late)."""
    for job, runs in _aligned(RUNS, now).items():
        (root / job).mkdir(parents=True)
        streak = 0
        for i, (ago, outcome, duration) in enumerate(runs):
            failed = outcome not in ("success", "skipped")
            streak = streak + 1 if failed else 0 if outcome == "success" else streak
            record = RunRecord(
                job=job,
                host="web1",
                run_id=uuid.UUID(int=i + 1, version=4).hex,
                start=now - ago,
                duration_s=duration,
                outcome=outcome,
                exit_code=1 if failed else 0,
                attempts=1,
                error=(ERROR if job == "wp_backup" else f"{outcome}: exit 1") if failed else None,
            )
            history.append(str(root / job), record)
        last = runs[-1]

        def write(state: dict, last: tuple[float, str, float] = last, streak: int = streak) -> None:
            state.update(last_start=now - last[0], last_outcome=last[1], consecutive_failures=streak)

        StateStore(job, str(root)).update(write)


PROBE = """<script>addEventListener('load',function(){
var out={scroll:[document.documentElement.scrollWidth,document.documentElement.clientWidth],rows:[]};
var v=document.querySelector('.verdict').getBoundingClientRect();
out.verdict={top:v.top,bottom:v.bottom,first:document.body.firstElementChild.className,
text:document.querySelector('.verdict').textContent};
document.querySelectorAll('table.board tr.job').forEach(function(tr){
 var r=tr.getBoundingClientRect(),n=tr.querySelector('td.name a').getBoundingClientRect(),
 s=tr.querySelector('td.state .o').getBoundingClientRect(),
 w=[].filter.call(tr.querySelectorAll('.why'),function(e){return e.getBoundingClientRect().height>0})[0],
 wb=w?w.getBoundingClientRect():null;
 out.rows.push({key:tr.className.split('k-')[1],name:tr.querySelector('td.name a').textContent,
  state:tr.querySelector('td.state').textContent,top:r.top,height:r.height,nameTop:n.top,stateTop:s.top,
  nameRight:n.right,width:r.width,why:w?w.textContent:'',whyTop:wb?wb.top:null,whyLeft:wb?wb.left:null,left:r.left,whyBottom:wb?wb.bottom:null,
  next:tr.querySelector('td.next').textContent,scale:(tr.querySelector('.scale')||{}).textContent||''});});
document.body.setAttribute('data-probe',JSON.stringify(out));});</script>"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    seed(root / "state", time.time())
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner", "silence", "php_fpm_restart", "--for", "2h", "--reason", "maintenance"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO), JOBRUNNER_STATE_DIR=str(root / "state")),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    www = root / "www"
    www.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner", "status", "--html", str(www / "index.html")],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(PYTHONPATH=str(REPO), JOBRUNNER_STATE_DIR=str(root / "state")),
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = (www / "index.html").read_text()
    (www / "probe.html").write_text(text.replace("</body>", PROBE + "</body>"))
    return www


def measure(tmp_path: Path, www: Path, width: int, height: int) -> dict:
    probe = browse(tmp_path, (www / "probe.html").as_uri(), "--dump-dom", "--virtual-time-budget=2000", width=width)
    assert probe.returncode == 0 and console_errors(probe.stderr) == [], probe.stderr[-2000:]
    found = re.search(r'data-probe="([^"]+)"', probe.stdout)
    assert found, probe.stdout[-800:]
    return json.loads(html.unescape(found.group(1)))


def test_the_page_source_is_one_file_without_script(rendered: Path):
    text = (rendered / "index.html").read_text()
    assert "<script" not in text and not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert text.index('class="verdict') < text.index('<table class="jobs board">')


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_layout_in_chromium(tmp_path: Path, rendered: Path, width: int, height: int):
    """Measured in Chromium: verdict first; rows worst first; the failing job's error in its own
    row; skipped said; next runs and sparkline scales shown; on a phone every row ≤ 64 px with
    name and state on one line; no sideways scroll; a screenshot of the right size."""
    got = measure(tmp_path, rendered, width, height)
    scroll, client = got["scroll"]
    assert scroll <= client, f"horizontal scroll at {width}px: {scroll} > {client}"
    verdict, rows = got["verdict"], got["rows"]
    assert verdict["first"].startswith("verdict")  # the first thing on the page
    assert verdict["text"].startswith("\u2717 2 failing \u00b7 1 late \u00b7 1 silenced of 11 jobs on ")
    assert verdict["bottom"] <= rows[0]["top"]
    assert len(rows) == len(RUNS)
    ranks = [ORDER.index(r["key"]) for r in rows]
    assert ranks == sorted(ranks), [(r["name"], r["key"]) for r in rows]
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows[:4]] == ["certbot_renew", "wp_backup", "wp_cron", "php_fpm_restart"]
    backup = by_name["wp_backup"]
    assert "failure" in backup["state"] and "Access denied for user" in backup["why"]
    assert backup["top"] <= backup["whyTop"] and backup["whyBottom"] <= backup["top"] + backup["height"] + 0.5
    assert by_name["wp_cron"]["key"] == "late" and "late" in by_name["wp_cron"]["state"]
    assert by_name["php_fpm_restart"]["key"] == "silenced" and "silenced until" in by_name["php_fpm_restart"]["why"]
    assert "skipped" in by_name["media_sync"]["state"] and "last ran" in by_name["media_sync"]["why"]
    assert "success" not in by_name["media_sync"]["state"]
    for row in rows:
        assert abs(row["nameTop"] - row["stateTop"]) <= 4, row  # name and state on one line
        assert row["nameRight"] <= row["width"] + 1, row
    if width == 390:
        tallest = max(r["height"] for r in rows)
        assert tallest <= 64, f"a phone row is {tallest}px"
        assert "next in" in by_name["disk_check"]["why"]  # an OK job's second line: its next run
        # the second line is the row's whole width (under the state too), not squeezed under the name
        assert all(abs(r["whyLeft"] - r["left"]) <= 2 for r in rows), [(r["whyLeft"], r["left"]) for r in rows]
    else:
        assert all(r["next"].startswith("in ") for r in rows), [r["next"] for r in rows]
        assert all(r["scale"].startswith("\u2264") for r in rows)
        assert max(r["height"] for r in rows) <= 64
    keep = os.environ.get("JOBRUNNER_SCREENSHOTS")
    shot = (Path(keep) if keep else tmp_path) / f"status-page-{'phone' if width == 390 else 'desktop'}.png"
    taken = browse(
        tmp_path,
        (rendered / "index.html").as_uri(),
        f"--screenshot={shot}",
        f"--window-size={width},{height}",
        width=width,
    )
    assert taken.returncode == 0 and console_errors(taken.stderr) == []
    assert png_size(shot) == (width, height)
