"""The status page, refreshed every five minutes into a directory a web server serves.

Settings, from the environment or ``/etc/default/status-page``:

- ``STATUS_PAGE_DIR``: where ``index.html`` is written (default ``/var/www/jobrunner-status``,
  the unit's only writable path: another directory needs a drop-in with ``ReadWritePaths=``)
- ``STATUS_PAGE_PACKAGE``: the package of job modules whose timers give the next runs and
  whose jobs that never ran are listed too (default: none, every job with a state or a history)

The page (``jobrunner.observe.statuspage``) is replaced atomically (a temp file renamed over it), so
the web server never serves half a page. It reads every job's state directory, which belongs
to that job's user (0750): the unit runs as root with ``CAP_DAC_READ_SEARCH`` back (read, never
write, past file permissions) and nothing else. The directory is made 0755 and the page 0644
so that the web server's user can read them; nginx::

    location /jobs/ { alias /var/www/jobrunner-status/; }  # behind your authentication
"""

from __future__ import annotations

import os
import sys

from jobrunner import JobContext, job

DEFAULT_DIR = "/var/www/jobrunner-status"


@job(
    schedule="*:0/5",
    accuracy="30s",
    lock=True,
    timeout="2m",
    hardening="strict",
    network=False,
    write_paths=[DEFAULT_DIR],
    env_files=["-/etc/default/status-page"],
    # root, but the strict sandbox drops every capability: reading other users' 0750 state
    # directories needs CAP_DAC_READ_SEARCH back.
    systemd={"Service": {"CapabilityBoundingSet": "CAP_DAC_READ_SEARCH"}},
    security_threshold=2.0,
)
def status_page(ctx: JobContext) -> None:
    """Write the jobs' status page (one self-contained HTML file) for a web server."""
    out_dir = ctx.env.get("STATUS_PAGE_DIR") or DEFAULT_DIR
    page = os.path.join(out_dir, "index.html")
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 != 0o755:
            os.fchmod(fd, 0o755)  # tmpfiles.d makes it 0750 root: the web server must enter
    finally:
        os.close(fd)
    # The command an admin would type: every job's state and history under the state root
    # (this job's directory's parent), written atomically by `jobrunner status --html`.
    argv = [sys.executable, "-m", "jobrunner", "status", "--html", page, "--state-dir", os.path.dirname(ctx.state_dir)]
    package = (ctx.env.get("STATUS_PAGE_PACKAGE") or "").strip()
    if package:
        argv += ["--package", package]
    ctx.run(argv)
    ctx.log.info("status_page.written", path=page)
