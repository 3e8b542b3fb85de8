"""wp_backup against a real MariaDB and WordPress: a verified set, nothing leaked."""

from __future__ import annotations

import json
import subprocess

import pytest

from . import stack

pytestmark = pytest.mark.slow


def test_full_backup_writes_a_verified_set(wp_env, wp_stack):
    """A run leaves one set dir with the archive, the dump and a manifest whose checksums hold."""
    run = wp_env.run("wp_backup")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    [set_dir] = wp_env.sets()
    assert set_dir.name.startswith("testsite-")
    assert sorted(p.name for p in set_dir.iterdir()) == [
        "db.sql.zst",
        "files.tar.zst",
        "manifest.hmac",
        "manifest.json",
    ]
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["verified"] is True and manifest["tables"] == 12 and manifest["kind"] == "full"
    assert manifest["table_prefix"] == stack.TABLE_PREFIX
    for name, meta in manifest["files"].items():
        out = subprocess.run(["sha256sum", str(set_dir / name)], capture_output=True, text=True).stdout
        assert out.split()[0] == meta["sha256"]
    listing = subprocess.run(
        f"zstd -dc {set_dir}/files.tar.zst | tar -t", shell=True, capture_output=True, text=True
    ).stdout
    assert "./wp-content/uploads/2024/01/photo-0.jpg" in listing.splitlines()
    dump = subprocess.run(["zstd", "-dc", str(set_dir / "db.sql.zst")], capture_output=True, text=True).stdout
    assert "CREATE TABLE `jrt_posts`" in dump and "Post 1" in dump
    verified = run.event("backup.verified")
    assert verified["write_s"] > 0 and verified["verify_s"] > 0
    assert stack.DB_PASSWORD not in (set_dir / "manifest.json").read_text()
    # the scratch database is gone
    assert "_verify_" not in wp_stack.db.sql("SHOW DATABASES")
    assert not any(p.name.endswith(".partial") for p in wp_env.backup_dir.iterdir())


def test_disk_full_removes_the_partial_set_and_keeps_older_ones(wp_env, small_tmpfs):
    """BACKUP_DIR on a 2 MiB tmpfs: a clear ENOSPC error, no .partial left, the old set intact."""
    old = small_tmpfs / "testsite-20240101T021500Z"
    old.mkdir()
    (old / "db.sql.zst").write_bytes(b"old backup")
    (old / "manifest.json").write_text('{"verified": true}')
    run = wp_env.run("wp_backup", BACKUP_DIR=str(small_tmpfs))
    assert run.returncode == 1
    message = run.event("job.failed")["exception"]["message"]
    assert message.startswith(f"no space left on device in {small_tmpfs}")
    assert "partial set was removed" in message
    assert run.event("backup.partial_removed")["reason"] == "no space left"
    assert sorted(p.name for p in small_tmpfs.iterdir()) == [old.name]
    assert (old / "db.sql.zst").read_bytes() == b"old backup"


def test_dry_run_writes_nothing(wp_env):
    """--dry-run plans and leaves BACKUP_DIR absent."""
    run = wp_env.run("wp_backup", "--dry-run")
    assert run.returncode == 0
    assert run.event("backup.planned")["kind"] == "full"
    assert not wp_env.backup_dir.exists()
