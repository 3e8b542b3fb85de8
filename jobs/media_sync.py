"""Copy WordPress uploads to S3 (or any rclone remote) every two hours, as www-data.

Settings, from the environment or ``/etc/default/media-sync`` (mode 0600: it holds the keys):

- ``MEDIA_SYNC_DEST`` (required): the rclone destination, ``REMOTE:bucket/path``
- ``MEDIA_SYNC_SOURCE``: the local directory (default ``$WP_PATH/wp-content/uploads``,
  ``WP_PATH`` defaulting to ``/var/www/html``)
- ``MEDIA_SYNC_MODE``: ``copy`` (default) uploads new and changed files and never deletes
  anything remotely; ``sync`` makes the destination a mirror, so a file deleted locally is
  deleted remotely too (rclone sync semantics). ``sync`` refuses to run from an empty or
  missing source, which would otherwise empty the bucket when the uploads volume is not mounted.
- ``MEDIA_SYNC_ARGS``: extra rclone flags, shell-quoted (``--bwlimit 4M --transfers 8``, ``-v``
  to log every file, ``--max-delete 100``)
- the remote itself, without a config file: ``RCLONE_CONFIG_<REMOTE>_TYPE=s3``,
  ``_PROVIDER``, ``_ENDPOINT``, ``_REGION``, ``_ACCESS_KEY_ID``, ``_SECRET_ACCESS_KEY`` (or
  ``RCLONE_CONFIG=/path/rclone.conf``). Key values are registered as secrets: never logged.

rclone writes its JSON log to a private file, with its statistics every 2 s (read as they come:
the run's progress, bytes against rclone's growing total). The job reads it afterwards: each error becomes
a ``rclone.error`` event, the final statistics a ``media.synced`` event (transfers, deletes,
checks, bytes, errors), and a failure one ``job.failed`` line that says what went wrong. The
machine-wide ``AWS_CA_BUNDLE`` in particular makes rclone's S3 backend fail
(``LoadCustomCABundleError``, even when the file exists); the job names the variable and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from jobrunner import ConfigError, JobContext, job
from jobrunner.redact import secret_env_name
from jobrunner.settings import env_words

MODES = ("copy", "sync")
_NOISE = ("Config file ", "not found - using defaults")
MAX_ERROR_EVENTS = 20


def _secrets(ctx: JobContext) -> None:
    for name, value in ctx.env.items():
        if name.startswith("RCLONE_") and value and (secret_env_name(name) or name.endswith("_KEY_ID")):
            ctx.secret(value)


def _read_log(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """rclone's JSON log records, and its plain lines (fatal errors bypass the JSON logger)."""
    records: list[dict[str, Any]] = []
    plain: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.strip()
                if not line:
                    continue
                if line.startswith("{"):
                    try:
                        records.append(json.loads(line))
                        continue
                    except ValueError:
                        pass
                # "2026/11/25 09:10:29 Failed to create file system ...": drop the timestamp
                parts = line.split(" ", 2)
                plain.append(parts[2] if len(parts) == 3 and parts[0].count("/") == 2 else line)
    except FileNotFoundError:
        pass
    return records, plain


class _StatsTail:
    """rclone's latest statistics (``bytes``, ``totalBytes``: a total that grows as rclone
    finds work) from the new lines of its JSON log, for ``ctx.progress``'s ``follow``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def __call__(self) -> tuple[float, float | None] | None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return None
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        latest = None
        for line in lines:
            if b'"stats"' in line:
                try:
                    stats = json.loads(line).get("stats")
                except ValueError:
                    continue
                if isinstance(stats, dict) and isinstance(stats.get("bytes"), (int, float)):
                    total = stats.get("totalBytes")
                    latest = (
                        float(stats["bytes"]),
                        float(total) if isinstance(total, (int, float)) and total else None,
                    )
        return latest


def _explain(ctx: JobContext, reason: str) -> str:
    if "LoadCustomCABundleError" in reason and ctx.env.get("AWS_CA_BUNDLE"):
        return (
            f"AWS_CA_BUNDLE={ctx.env['AWS_CA_BUNDLE']} cannot be used by rclone's S3 backend ({reason}); "
            "unset AWS_CA_BUNDLE in this job's environment: rclone verifies TLS with the system CAs "
            "(for a private CA set RCLONE_CA_CERT)"
        )
    return reason


@job(
    schedule="0/2:00",
    accuracy="1m",
    lock=True,
    timeout="1h50min",
    user="www-data",
    network=True,
    env_files=["-/etc/default/media-sync"],
    instances="optional",  # per site too: the group "wp" (docs/sites.md)
    instance_group="wp",
)
def media_sync(ctx: JobContext) -> None:
    """Copy (or mirror) wp-content/uploads to an S3 bucket with rclone."""
    dest = ctx.env.get("MEDIA_SYNC_DEST", "").strip()
    if not dest or ":" not in dest:
        raise ConfigError(f"MEDIA_SYNC_DEST={dest!r}: set it to an rclone destination, REMOTE:bucket/path")
    wp_path = ctx.env.get("WP_PATH") or (f"/var/www/{ctx.instance}" if ctx.instance else "/var/www/html")
    source = ctx.env.get("MEDIA_SYNC_SOURCE") or os.path.join(wp_path, "wp-content", "uploads")
    mode = ctx.env.get("MEDIA_SYNC_MODE", "copy").strip().lower()
    if mode not in MODES:
        raise ConfigError(f"MEDIA_SYNC_MODE={mode!r}: use copy (never deletes remotely) or sync (mirror)")
    extra = env_words(ctx.env, "MEDIA_SYNC_ARGS")
    _secrets(ctx)
    if not os.path.isdir(source):
        raise RuntimeError(f"source {source} is not a directory (is the uploads volume mounted?)")
    if mode == "sync" and not any(os.scandir(source)):
        raise RuntimeError(f"source {source} is empty: refusing to sync, it would delete everything at {dest}")
    ctx.log.info("media.planned", source=source, dest=dest, mode=mode)

    logdir = tempfile.mkdtemp(prefix="media-sync-")
    ctx.cleanup(shutil.rmtree, logdir, ignore_errors=True)
    logfile = os.path.join(logdir, "rclone.json")
    argv = [
        "rclone",
        mode,
        source,
        dest,
        "--use-json-log",
        "--log-file",
        logfile,
        "--stats",
        "2s",  # rclone's own counts, read back as they come for the progress line
        "--stats-log-level",
        "NOTICE",
        *extra,
    ]
    with ctx.progress(mode, unit="B") as p:
        p.follow(_StatsTail(logfile))
        result = ctx.run(argv, check=False)
    if ctx.dry_run:
        return
    records, plain = _read_log(logfile)
    errors = [r for r in records if r.get("level") in ("error", "critical")]
    seen: set[str] = set()
    for record in errors:
        message = " ".join(str(record.get("msg", "")).split())
        if message not in seen and len(seen) < MAX_ERROR_EVENTS:
            seen.add(message)
            ctx.log.error("rclone.error", message=message, object=record.get("object"))
    for record in records:
        message = str(record.get("msg", ""))
        if record.get("level") == "warning" and "stats" not in record and not all(n in message for n in _NOISE):
            ctx.log.warning("rclone.warning", message=" ".join(message.split()), object=record.get("object"))
    stats: dict[str, Any] = next((r["stats"] for r in reversed(records) if isinstance(r.get("stats"), dict)), {})
    summary = {k: stats.get(k) for k in ("transfers", "deletes", "checks", "bytes", "errors", "renames")}
    if stats:
        ctx.log.info("media.synced", mode=mode, dest=dest, **summary)
    if result.returncode != 0:
        reason = " ".join(" ".join(plain).split()) or (errors[-1].get("msg") if errors else "") or "no error logged"
        raise RuntimeError(f"rclone {mode} to {dest} failed (exit {result.returncode}): {_explain(ctx, reason)}")
