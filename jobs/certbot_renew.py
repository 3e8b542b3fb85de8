"""Renew TLS certificates with certbot at 03:00 (fixed per-host jitter); reload the web server
only when a certificate was actually renewed.

Settings, from the environment or ``/etc/default/certbot-renew``:

- ``RELOAD_COMMAND``: run once after one or more renewals (default ``systemctl reload nginx``;
  shell-quoted words, no shell)
- ``CERTBOT_ARGS``: extra arguments for ``certbot renew``, shell-quoted (``--config-dir``,
  ``--server``, ``--cert-name example.com`` …)
- ``CERTBOT_EXTRA_ARGS``: more of the same, meant for one-off runs (``--force-renewal``,
  ``--dry-run``) by ``jobrunner run jobs.certbot_renew --env-file …``
- ``CERTBOT_RETRIES`` (default 1, at most 5): when certbot fails, run it again this many
  times, ``CERTBOT_RETRY_DELAY`` (default ``2min``) apart, while the job's timeout leaves room.
  A CA hiccup (a 503, a dropped connection, the ``badNonce`` answer that Debian 12's certbot
  crashes on) then costs a retry, not an alert at 03:00. Each retry renews only what is still
  due, and two attempts stay far inside Let's Encrypt's failed-validation limit (5 per hour).

How "renewed" is known: the job passes certbot a ``--deploy-hook`` that appends
``$RENEWED_LINEAGE`` to a private marker file. certbot runs deploy hooks once per certificate
it actually renewed, never for "not yet due" and never under ``--dry-run``, so the marker is
exact and nothing parses certbot's human-readable output. No renewal: no reload. When certbot
fails part-way (one certificate renewed, another failed), the web server is still reloaded so
the renewed one is served, and then the run fails. Caveat: a ``--deploy-hook`` on the command
line replaces a per-certificate ``renew_hook`` stored in ``/etc/letsencrypt/renewal/*.conf``;
hooks in ``/etc/letsencrypt/renewal-hooks/deploy/`` still run.

certbot's own random sleep (up to 8 minutes, in non-interactive runs) is turned off: the timer
already spreads hosts with a fixed ``RandomizedDelaySec=``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time

from jobrunner import ConfigError, JobContext, job
from jobrunner.settings import env_int, env_span, env_words

DEFAULT_RELOAD = "systemctl reload nginx"


@job(
    schedule="03:00",
    persistent=True,
    jitter="1h",
    fixed_jitter=True,
    accuracy="1m",
    lock=True,
    timeout="30m",
    network=True,
    env_files=["-/etc/default/certbot-renew"],
    # certbot runs as root (it owns /etc/letsencrypt) inside the strict sandbox, plus:
    # - its three directories, made by systemd when missing (a fresh host has no
    #   /var/log/letsencrypt, and certbot cannot create it under ProtectSystem=strict);
    # - @chown: on renewal certbot gives the new private key the old key's group (os.chown),
    #   which the strict seccomp list (~@privileged) would refuse with EPERM;
    # - CAP_CHOWN for that same chown when the key's group was changed (e.g. ssl-cert), and
    #   CAP_NET_BIND_SERVICE for the --standalone authenticator's port 80.
    # The reload (systemctl) needs no capability: PID 1 authorizes uid 0 by its credentials.
    # A webroot authenticator also needs its challenge directory writable: add a drop-in
    # "ReadWritePaths=/var/www/html/.well-known" (see docs).
    systemd={
        "Service": {
            "ConfigurationDirectory": "letsencrypt",
            "+StateDirectory": "letsencrypt",
            "LogsDirectory": "letsencrypt",
            "LogsDirectoryMode": "0700",
            "+SystemCallFilter": "@chown",
            "CapabilityBoundingSet": "CAP_CHOWN CAP_NET_BIND_SERVICE",
        }
    },
    security_threshold=2.0,
)
def certbot_renew(ctx: JobContext) -> None:
    """certbot renew; reload the web server only when a certificate was renewed."""
    reload_cmd = env_words(ctx.env, "RELOAD_COMMAND", DEFAULT_RELOAD)
    if not reload_cmd:
        raise ConfigError("RELOAD_COMMAND is empty: name the command that reloads the web server")
    marker_dir = tempfile.mkdtemp(prefix="certbot-renew-")
    ctx.cleanup(shutil.rmtree, marker_dir, ignore_errors=True)
    marker = os.path.join(marker_dir, "renewed")
    hook = f'printf "%s\\n" "$RENEWED_LINEAGE" >> {shlex.quote(marker)}'
    argv = [
        "certbot",
        "renew",
        "--non-interactive",
        "--no-random-sleep-on-renew",
        "--deploy-hook",
        hook,
        *env_words(ctx.env, "CERTBOT_ARGS"),
        *env_words(ctx.env, "CERTBOT_EXTRA_ARGS"),
    ]
    retries = env_int(ctx.env, "CERTBOT_RETRIES", 1, min=0, max=5)
    delay = env_span(ctx.env, "CERTBOT_RETRY_DELAY", "2min")
    for attempt in range(1, retries + 2):
        result = ctx.run(argv, check=False)
        if result.returncode == 0 or ctx.dry_run or attempt > retries:
            break
        left = ctx.remaining()
        if left is not None and left < delay + 60:
            ctx.log.warning("certbot.no_retry", reason=f"{left:.0f}s left before the job's timeout")
            break
        ctx.log.warning("certbot.retrying", attempt=attempt, exit_code=result.returncode, delay_s=delay)
        time.sleep(delay)
    if ctx.dry_run:
        ctx.log.info("certbot.dry_run", reload=reload_cmd)
        return
    try:
        with open(marker) as handle:
            renewed = [line.strip() for line in handle if line.strip()]
    except FileNotFoundError:
        renewed = []
    if renewed:
        ctx.log.info("certbot.renewed", lineages=renewed, count=len(renewed))
        ctx.run(reload_cmd)
        ctx.log.info("certbot.reloaded", command=reload_cmd)
    else:
        ctx.log.info("certbot.nothing_renewed", reload="skipped")
    if result.returncode != 0:
        raise RuntimeError(
            f"certbot renew exited with status {result.returncode} "
            f"(renewed: {len(renewed)}); see its output above or /var/log/letsencrypt"
        )
