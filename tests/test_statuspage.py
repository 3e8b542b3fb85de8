"""The status page (issue #16): `jobrunner status --html PATH` writes one self-contained HTML file
atomically; a real headless Chromium loads it from a real nginx and from file://: every job's
row with its outcome as text, sparklines drawn, no console error, no sideways scroll at
390 px (the page's scrollWidth, written by a probe copy of it, since the page has no script),
screenshots at phone and desktop widths."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner.observe import statuspage
from jobrunner.store import history
from jobrunner.store.history import RunRecord

from .conftest import REPO, clean_env, stop_group

NOW = time.time()
# job -> outcomes, oldest first
JOBS = {
    "wp_backup": ["success"] * 20 + ["failure", "success"],
    "certbot_renew": ["success"] * 5 + ["failure", "timeout", "failure"],
    "disk_check": ["success"] * 30,
    "media_sync": ["success", "skipped"],
    "evil<script>alert(1)<\\script>": ["failure"],
}
HOSTILE = "<img src=x onerror=alert(1)> https://evil.example/x.js"


def seed(root: Path, jobs: dict[str, list[str]] = JOBS) -> None:
    for job, outcomes in jobs.items():
        (root / job).mkdir(parents=True)
        for i, outcome in enumerate(outcomes):
            failed = outcome not in ("success", "skipped")
            record = RunRecord(
                job=job,
                host="web1",
                run_id=uuid.UUID(int=i, version=4).hex,  # a unit's run: systemd's v4 invocation ID
                start=NOW - 600 * (len(outcomes) - i),
                duration_s=5.0 + (i * 7) % 50,
                outcome=outcome,
                exit_code=1 if failed else 0,
                attempts=1,
                error=f"RuntimeError: {HOSTILE}" if failed else None,
                tail=(f"08:00:0{i % 10} info step.done", HOSTILE) if failed else (),
            )
            history.append(str(root / job), record)


def last_outcome(job: str) -> str:
    """The state a row shows: the newest outcome, a skip included (a skipped last run is
    "skipped", never the success before it)."""
    return JOBS[job][-1]


def render_cli(state: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", "status", "--html", str(out), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def page(tmp_path: Path) -> Path:
    seed(tmp_path / "state")
    www = tmp_path / "www"
    www.mkdir()
    out = www / "index.html"
    proc = render_cli(tmp_path / "state", out)
    assert proc.returncode == 0, proc.stderr
    return out


def rows(text: str) -> dict[str, str]:
    """Job name -> its row's 'State' cell text, from the page's job table (in the page's order)."""
    body = text.split('<table class="jobs board">', 1)[1].split("</table>", 1)[0]
    found = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        cells = dict(re.findall(r'<td class="[^"]*" data-label="([^"]+)">(.*?)</td>', row, re.S))
        if "Job" in cells:
            link = re.search(r"<a [^>]*>(.*?)</a>", cells["Job"], re.S)
            assert link, cells["Job"]
            name = re.sub(r"<[^>]+>", "", link.group(1))
            found[name] = re.sub(r"<[^>]+>", "", cells["State"])
    return found


def test_page_is_self_contained_escaped_and_complete(page: Path):
    """One row per job with its outcome in words; an SVG sparkline per job with runs; no script,
    no external asset; the hostile strings a job's user wrote into its history are escaped."""
    text = page.read_text()
    import html as html_module

    found = {html_module.unescape(k): v for k, v in rows(text).items()}
    assert set(found) == set(JOBS)
    for job in JOBS:
        assert last_outcome(job) in found[job], (job, found[job])
    assert text.count('<svg class="spark"') == len(JOBS)
    assert "<script" not in text and "<img" not in text  # shown as text: &lt;img src=x onerror=…&gt;
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "journalctl _SYSTEMD_INVOCATION_ID=" in text
    assert "3 failed" in text  # certbot_renew's streak
    assert stat.S_IMODE(page.stat().st_mode) == 0o644


def test_page_is_replaced_atomically_and_survives_bad_history(tmp_path: Path, page: Path):
    """A rewrite is a new inode by rename, no temp file left; malformed lines are counted on the
    page, never a crash; a symlinked history is reported, not followed."""
    inode = page.stat().st_ino
    state = tmp_path / "state"
    with open(state / "disk_check" / "history.jsonl", "a") as f:
        f.write('not json\n{"job": 1}\n')
    (state / "linked").mkdir()
    (state / "linked" / "history.jsonl").symlink_to(state / "disk_check" / "history.jsonl")
    proc = render_cli(state, page)
    assert proc.returncode == 0, proc.stderr
    assert page.stat().st_ino != inode
    assert [p.name for p in page.parent.iterdir()] == ["index.html"]
    text = page.read_text()
    assert "2 malformed history line(s) skipped" in text
    assert "linked" in rows(text) and "unreadable" in rows(text)["linked"]


def test_two_hundred_jobs_fit_in_a_megabyte(tmp_path: Path):
    views = [
        statuspage.JobView(
            f"job_{n:03d}",
            [
                RunRecord(f"job_{n:03d}", "h", os.urandom(16).hex(), NOW - 60 * (100 - i), 3.0 + i % 9, "success", 0, 1)
                for i in range(100)
            ],
        )
        for n in range(200)
    ]
    began = time.perf_counter()
    text = statuspage.render(views)
    assert time.perf_counter() - began < 1.0
    assert len(text.encode()) < 1 << 20


# -- in a real browser -----------------------------------------------------------------------

NGINX = """\
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
user root;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    types {{ text/html html; }}
    server {{ listen 127.0.0.1:{port}; root {www}; index index.html; }}
}}
"""


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.skip("not installed: chromium (Debian's chromium package; see .ci/run)")
    return found


@pytest.fixture
def nginx(tmp_path: Path, page: Path) -> Iterator[str]:
    if not shutil.which("nginx"):
        pytest.skip("not installed: nginx (nginx-light; see .ci/run)")
    d = tmp_path / "nginx"
    (d / "tmp").mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (d / "nginx.conf").write_text(NGINX.format(d=d, port=port, www=page.parent))
    proc = subprocess.Popen(
        ["nginx", "-c", str(d / "nginx.conf"), "-p", str(d), "-g", "daemon off;"],
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx never listened"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)
        if proc.stderr:
            proc.stderr.close()


def browse(tmp_path: Path, url: str, *args: str, width: int = 390) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{width}"
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # as root in CI
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            f"--window-size={width},844",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=clean_env(HOME=str(tmp_path)),
    )


PROBE = (
    "<script>addEventListener('load',function(){var e=document.documentElement;"
    "document.body.setAttribute('data-widths',JSON.stringify([e.scrollWidth,e.clientWidth,"
    "document.querySelectorAll('svg.spark path').length]))})</script>"
)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]


@pytest.mark.parametrize("origin", ["nginx", "file"])
def test_the_page_in_headless_chromium(tmp_path: Path, page: Path, nginx: str, origin: str):
    """Loaded by Chromium: every job's row with its outcome text, sparklines drawn (their paths
    laid out), no console error, no horizontal scroll at 390 px; screenshots at 390 and 1280 px."""
    import html as html_module

    base = nginx if origin == "nginx" else page.parent.as_uri()
    (page.parent / "probe.html").write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = browse(tmp_path, f"{base}/index.html", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_errors(dom.stderr) == []
    found = {html_module.unescape(k): v for k, v in rows(dom.stdout).items()}
    assert set(found) == set(JOBS)
    for job in JOBS:
        assert last_outcome(job) in found[job]
    for width in (390, 1280):
        probe = browse(tmp_path, f"{base}/probe.html", "--dump-dom", "--virtual-time-budget=2000", width=width)
        widths = re.search(r'data-widths="([^"]+)"', probe.stdout)
        assert widths, probe.stdout[-500:]
        scroll, client, paths = json.loads(html_module.unescape(widths.group(1)))
        assert scroll <= client, f"horizontal scroll at {width}px: {scroll} > {client}"
        assert paths >= len(JOBS)
        shot = tmp_path / f"shot-{origin}-{width}.png"
        taken = browse(tmp_path, f"{base}/index.html", f"--screenshot={shot}", width=width)
        assert taken.returncode == 0 and console_errors(taken.stderr) == []
        assert png_size(shot) == (width, 844)
    if origin == "nginx":
        log = (tmp_path / "nginx" / "access.log").read_text()
        assert '"GET /index.html HTTP/1.1" 200' in log


def test_the_shipped_job_writes_the_page(tmp_path: Path):
    """jobs.status_page, run as a job: the page (its own run on it at the next refresh), the
    directory made 0755 for the web server, the run recorded in its history."""
    state = tmp_path / "state"
    seed(state, {"disk_check": ["success", "failure"]})
    out = tmp_path / "out"
    out.mkdir(mode=0o750)
    env = clean_env(
        PYTHONPATH=str(REPO),
        JOBRUNNER_STATE_DIR=str(state),
        JOBRUNNER_LOCK_DIR=str(tmp_path / "locks"),
        STATUS_PAGE_DIR=str(out),
        STATUS_PAGE_PACKAGE="jobs",
    )
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "jobrunner", "run", "jobs.status_page"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    found = rows((out / "index.html").read_text())
    assert "failure" in found["disk_check"] and "\u25b6 running" in found["status_page"]  # itself, writing
    assert "never ran" in found["wp_backup"]  # declared in the package, no run yet


def test_the_fleet_page_in_headless_chromium(tmp_path: Path):
    """The fleet's page (`status --fleet --html`) for 20 hosts, read from `file://` by
    Chromium: every host's column and each cell's outcome text, the failing hosts named, a host
    that stopped reporting marked, no console error, and no horizontal scroll of the page at
    390 or 1280 px (the wide table scrolls inside its box, or becomes cards on a phone)."""
    import html as html_module

    from jobrunner.fleet.stream import check_fleet
    from jobrunner.observe.statuspage import render_fleet, write_page

    now = time.time()
    hosts = [f"web{i:02d}.example.net" for i in range(1, 21)]
    records = []
    for n, host in enumerate(hosts):
        for k, job in enumerate(("wp_backup", "wp_cron", "disk_check")):
            failed = job == "wp_backup" and n in (3, 7, 11)
            start = now - (7200 if host == hosts[-1] else 60) - k
            records.append(
                RunRecord(
                    job, host, f"{n:02d}{k:030d}", start, 3.0, "failure" if failed else "success", 1 if failed else 0, 1
                )
            )
    verdicts = check_fleet(records, now=now, silent_after=3600)
    out = tmp_path / "www"
    out.mkdir()
    write_page(str(out / "fleet.html"), render_fleet(records, verdicts, now=now))
    text = (out / "fleet.html").read_text()
    (out / "probe.html").write_text(text.replace("</body>", PROBE + "</body>"))
    dom = browse(tmp_path, (out / "fleet.html").as_uri(), "--dump-dom")
    assert dom.returncode == 0 and console_errors(dom.stderr) == [], dom.stderr[-2000:]
    page = html_module.unescape(dom.stdout)
    assert all(f"<th>{h}</th>" in page for h in hosts)
    assert page.count('data-label="web04.example.net"><span class="o o-failure">✗ failure') == 1
    assert "failing on 3 of 20 hosts: web04.example.net, web08.example.net, web12.example.net" in page
    assert f"{hosts[-1]}: last record" in page and page.count('<span class="err">stopped reporting</span>') == 1
    for width in (390, 1280):
        probe = browse(tmp_path, (out / "probe.html").as_uri(), "--dump-dom", "--virtual-time-budget=2000", width=width)
        widths = re.search(r'data-widths="([^"]+)"', probe.stdout)
        assert widths, probe.stdout[-500:]
        scroll, client, _ = json.loads(html_module.unescape(widths.group(1)))
        assert scroll <= client, f"horizontal scroll at {width}px: {scroll} > {client}"
