"""The restore drill: back up, damage the site, restore, find the content back."""

from __future__ import annotations

import json

import pytest

from . import stack

pytestmark = pytest.mark.slow


def _damage(site):
    stack.php(
        site,
        "$_SERVER['HTTP_HOST']='localhost'; require $argv[1] . '/wp-load.php';"
        "foreach (get_posts(['numberposts'=>-1]) as $p) if ($p->post_title === 'Post 1') wp_delete_post($p->ID, true);",
    )
    stack.add_posts(site, ["Written after the backup"])
    uploads = site / "wp-content" / "uploads" / "2024" / "01"
    (uploads / "photo-1.jpg").unlink()
    (uploads / "photo-0.jpg").write_bytes(b"overwritten")
    (uploads / "new-after-backup.txt").write_text("new")


def test_restore_drill(site_env, site):
    """Full backup, then delete a post and an upload, restore `latest`: all is as it was."""
    uploads = site / "wp-content" / "uploads" / "2024" / "01"
    before_titles = stack.post_titles(site)
    before_bytes = {p.name: p.read_bytes() for p in uploads.iterdir()}
    assert site_env.run("wp_backup").returncode == 0
    _damage(site)
    assert "Post 1" not in stack.post_titles(site)

    run = site_env.run("wp_restore", RESTORE_SET="latest")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert stack.post_titles(site) == before_titles
    assert {p.name: p.read_bytes() for p in uploads.iterdir()} == before_bytes
    assert not [p.name for p in site.iterdir() if p.name.startswith((".restore-", ".pre-restore-"))]
    assert run.event("restore.checksums_ok")
    assert run.event("restore.db_done")["tables"] == 12


def test_restore_elsewhere(site_env, site, tmp_path, wp_stack):
    """RESTORE_TARGET_PATH and RESTORE_DB put a copy beside the live site, which stays as is."""
    assert site_env.run("wp_backup").returncode == 0
    [set_dir] = site_env.sets()
    other, other_db = tmp_path / "copy", f"{stack.DB_NAME}_copy{set_dir.name[-7:-1]}"
    try:
        run = site_env.run("wp_restore", RESTORE_SET=set_dir.name, RESTORE_TARGET_PATH=str(other), RESTORE_DB=other_db)
        assert run.returncode == 0, run.stdout[-3000:]
        assert (other / "wp-content" / "uploads" / "2024" / "01" / "photo-2.jpg").exists()
        titles = wp_stack.db.sql(f"SELECT post_title FROM {stack.TABLE_PREFIX}posts WHERE post_type='post'", other_db)
        assert "Post 2" in titles
    finally:
        wp_stack.db.sql(f"DROP DATABASE IF EXISTS `{other_db}`")


def test_restore_refuses_a_corrupted_set(site_env, site):
    """A byte changed in the dump: checksum mismatch, exit 1, the site untouched."""
    assert site_env.run("wp_backup").returncode == 0
    [set_dir] = site_env.sets()
    dump = set_dir / "db.sql.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    stack.add_posts(site, ["Must survive"])
    run = site_env.run("wp_restore", RESTORE_SET=str(set_dir))
    assert run.returncode == 1
    assert "db.sql.zst: SHA-256 mismatch" in run.event("job.failed")["exception"]["message"]
    assert "Must survive" in stack.post_titles(site)


def test_restore_needs_a_set(site_env):
    """No RESTORE_SET: configuration error (78) naming the variable."""
    run = site_env.run("wp_restore")
    assert run.returncode == 78
    assert "RESTORE_SET" in run.stderr + run.stdout


def test_tables_created_after_the_backup(site_env, wp_stack):
    """Tables made after the backup are kept and listed by default; RESTORE_DROP_EXTRA=1 drops
    the site's own (its $table_prefix) so the database is as backed up, never another prefix's."""
    assert site_env.run("wp_backup").returncode == 0
    [set_dir] = site_env.sets()
    db = json.loads((set_dir / "manifest.json").read_text())["database"]
    ours, theirs = f"{stack.TABLE_PREFIX}plugin_since", "othersite_posts"
    for table in (ours, theirs):
        wp_stack.db.sql(f"CREATE TABLE `{table}` (id INT PRIMARY KEY)", db)

    def tables() -> set[str]:
        return set(wp_stack.db.sql("SHOW TABLES", db).split())

    try:
        kept = site_env.run("wp_restore", RESTORE_SET="latest")
        assert kept.returncode == 0, kept.stdout[-3000:]
        assert kept.event("restore.extra_tables")["tables"] == sorted([ours, theirs])
        assert {ours, theirs} <= tables()

        dropped = site_env.run("wp_restore", RESTORE_SET="latest", RESTORE_DROP_EXTRA="1")
        assert dropped.returncode == 0, dropped.stdout[-3000:]
        assert dropped.event("restore.extra_dropped")["tables"] == [ours]
        assert dropped.event("restore.extra_tables")["tables"] == [theirs]
        assert ours not in tables() and theirs in tables()
        assert len(tables()) == 13  # the backup's 12 and the other site's one
    finally:
        wp_stack.db.sql(f"DROP TABLE IF EXISTS `{ours}`, `{theirs}`", db)
