"""The status page, refreshed every five minutes into a directory a web server serves.

Settings, from the environment or ``/etc/default/status-page``:

- ``STATUS_PAGE_DIR``: where ``index.html`` is written (default ``/var/www/jobrunner-status``,
  the unit's only writable path: another directory needs a drop-in with ``ReadWritePaths=``)
- ``STATUS_PAGE_PACKAGE``: the package of job modules whose timers give the next runs and
  whose jobs that never ran are listed too (default: none, every job with a state or a history)

The page (``jobrunner.statuspage``) is replaced atomically (a temp file renamed over it), so
the web server never serves half a page. It reads every job's state directory, which belongs
to that job's user (0750): the unit runs as root with ``CAP_DAC_READ_SEARCH`` back (read, never
write, past file permissions) and nothing else. The directory is made 0755 and the page 0644
so that the web server's user can read them; nginx::

    location /jobs/ { alias /var/www/jobrunner-status/; }  # behind your authentication
"""

from __future__ import annotations

import os

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
    from jobrunner.state import default_state_dir
    from jobrunner.statuspage import collect, render, write_page

    out_dir = ctx.env.get("STATUS_PAGE_DIR") or DEFAULT_DIR
    root = os.path.dirname(ctx.state_dir) if ctx.state_dir else default_state_dir()
    units: dict[str, str] = {}
    names = None
    package = (ctx.env.get("STATUS_PAGE_PACKAGE") or "").strip()
    if package:
        from jobrunner.history import recorded_jobs
        from jobrunner.loader import discover

        declared = discover(package)
        units = {j.name: j.unit for j in declared}
        names = sorted(set(units) | set(recorded_jobs(root)) | _state_jobs(root))
    views = collect(root, names, units=units)
    fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o777 != 0o755:
            os.fchmod(fd, 0o755)  # tmpfiles.d makes it 0750 root: the web server must enter
    finally:
        os.close(fd)
    page = render(views)
    write_page(os.path.join(out_dir, "index.html"), page)
    failing = sorted(v.name for v in views if v.streak)
    ctx.log.info("status_page.written", path=os.path.join(out_dir, "index.html"), jobs=len(views), failing=failing)


def _state_jobs(root: str) -> set[str]:
    try:
        return {e for e in os.listdir(root) if os.path.lexists(os.path.join(root, e, "state.json"))}
    except OSError:
        return set()
