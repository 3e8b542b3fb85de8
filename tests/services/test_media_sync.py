"""media_sync against a real S3-compatible server (moto_server) through real rclone."""

from __future__ import annotations

from pathlib import Path

from .conftest import S3


def _uploads(tmp_path: Path) -> Path:
    wp = tmp_path / "wp"
    uploads = wp / "wp-content" / "uploads" / "2026" / "11"
    uploads.mkdir(parents=True)
    (uploads / "cat.jpg").write_bytes(b"\xff\xd8jpeg" * 1000)
    (uploads / "doc.pdf").write_bytes(b"%PDF-1.4" * 300)
    return wp


def _env(launcher, s3: S3, wp: Path, **extra: str) -> dict[str, str]:
    return launcher.env(
        WP_PATH=str(wp), MEDIA_SYNC_DEST=f"{s3.remote}:media-bucket/uploads", **s3.rclone_env(), **extra
    )


def test_copy_uploads_then_nothing_to_do_and_deletes_kept(launcher, moto: S3, tmp_path: Path):
    """Default copy mode: files land in the bucket; a rerun transfers nothing; a local delete is kept remotely."""
    wp = _uploads(tmp_path)
    first = launcher.run("run", "jobs.media_sync", env=_env(launcher, moto, wp))
    assert first.returncode == 0, first.stdout + first.stderr
    assert moto.ls("media-bucket/uploads") == {"2026/11/cat.jpg": 6000, "2026/11/doc.pdf": 2400}
    synced = first.event("media.synced")
    assert (synced["mode"], synced["transfers"], synced["errors"]) == ("copy", 2, 0)

    second = launcher.run("run", "jobs.media_sync", env=_env(launcher, moto, wp))
    assert second.returncode == 0
    assert second.event("media.synced")["transfers"] == 0
    assert second.event("media.synced")["checks"] == 2

    (wp / "wp-content/uploads/2026/11/doc.pdf").unlink()
    third = launcher.run("run", "jobs.media_sync", env=_env(launcher, moto, wp))
    assert third.returncode == 0
    assert "2026/11/doc.pdf" in moto.ls("media-bucket/uploads")
    assert third.event("media.synced")["deletes"] == 0
    # The secret key never reaches a log line, even where rclone or the runner would print it.
    for run in (first, second, third):
        assert moto.secret_key not in run.stdout + run.stderr


def test_sync_mode_mirrors_deletions(launcher, moto: S3, tmp_path: Path):
    """MEDIA_SYNC_MODE=sync: a file deleted locally is deleted remotely on the next run."""
    wp = _uploads(tmp_path)
    env = _env(launcher, moto, wp, MEDIA_SYNC_MODE="sync")
    assert launcher.run("run", "jobs.media_sync", env=env).returncode == 0
    (wp / "wp-content/uploads/2026/11/cat.jpg").unlink()
    run = launcher.run("run", "jobs.media_sync", env=env)
    assert run.returncode == 0, run.stdout
    assert moto.ls("media-bucket/uploads") == {"2026/11/doc.pdf": 2400}
    assert run.event("media.synced")["deletes"] == 1


def test_sync_refuses_an_empty_source(launcher, moto: S3, tmp_path: Path):
    """An empty uploads dir (volume not mounted) never mirrors into an empty bucket."""
    wp = _uploads(tmp_path)
    env = _env(launcher, moto, wp, MEDIA_SYNC_MODE="sync")
    assert launcher.run("run", "jobs.media_sync", env=env).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    run = launcher.run("run", "jobs.media_sync", env=dict(env, MEDIA_SYNC_SOURCE=str(empty)))
    assert run.returncode == 1
    assert "refusing to sync" in run.event("job.failed")["exception"]["message"]
    assert len(moto.ls("media-bucket/uploads")) == 2


def test_aws_ca_bundle_error_is_one_clear_line(launcher, moto: S3, tmp_path: Path):
    """AWS_CA_BUNDLE pointing at a missing file: exit 1 and a job.failed naming the variable and the fix."""
    wp = _uploads(tmp_path)
    run = launcher.run(
        "run", "jobs.media_sync", env=_env(launcher, moto, wp, AWS_CA_BUNDLE=str(tmp_path / "missing-ca.pem"))
    )
    assert run.returncode == 1
    message = run.event("job.failed")["exception"]["message"]
    assert "\n" not in message
    assert f"AWS_CA_BUNDLE={tmp_path / 'missing-ca.pem'}" in message
    assert "LoadCustomCABundleError" in message and "unset AWS_CA_BUNDLE" in message
    assert moto.secret_key not in run.stdout + run.stderr


def test_missing_destination_is_a_config_error(launcher, tmp_path: Path):
    """No MEDIA_SYNC_DEST: exit 78 before anything runs; a bad mode too."""
    wp = _uploads(tmp_path)
    assert launcher.run("run", "jobs.media_sync", env=launcher.env(WP_PATH=str(wp))).returncode == 78
    bad = launcher.run(
        "run", "jobs.media_sync", env=launcher.env(WP_PATH=str(wp), MEDIA_SYNC_DEST="s3:b", MEDIA_SYNC_MODE="move")
    )
    assert bad.returncode == 78
