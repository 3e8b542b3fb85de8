"""Backups that store what does not compress (jobs/_archive.py), on the real stack.

Media (real JPEG and PNG from PHP's GD, random bytes named .jpg, a random blob of an unknown
type) go into the archive as raw frames, text through the compressor; the set is still one
signed ``files.tar.<codec>`` every decompressor reads, restored byte for byte; a set in the
previous format (``tar | zstd``) still restores; a changed byte in a stored member is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from . import forge, stack

pytestmark = pytest.mark.slow

MEDIA = Path("wp-content/uploads/2025/03")


def _grow(site: Path) -> dict[str, bytes]:
    """Real and fake media, compressible text and an unknown compressible type; returns the
    incompressible files (relative name → bytes) the archive must store verbatim."""
    media = site / MEDIA
    media.mkdir(parents=True)
    rng = random.Random(5)
    stack.php(
        site,
        "$im = imagecreatetruecolor(640, 480); mt_srand(9);"
        "for ($i = 0; $i < 4000; $i++) imagefilledellipse($im, mt_rand(0, 639), mt_rand(0, 479),"
        " mt_rand(4, 60), mt_rand(4, 60), mt_rand(0, 0xFFFFFF));"
        "imagejpeg($im, $argv[2] . '/real.jpeg', 90); imagepng($im, $argv[2] . '/real.png', 6);",
        str(media),
    )
    (media / "random.jpg").write_bytes(rng.randbytes(3 << 20))
    (media / "clip.MP4").write_bytes(rng.randbytes(700 << 10))
    (media / "blob.bin").write_bytes(rng.randbytes(300 << 10))  # unknown type, sampled: stored
    words = [f"word{i}" for i in range(300)]
    (media / "table.dat").write_text(" ".join(rng.choice(words) for _ in range(120_000)))  # sampled: compressed
    (site / "wp-content" / "big.css").write_text("body { color: red; }\n" * 40_000)
    os.symlink("2025/03/real.png", site / "wp-content" / "uploads" / "latest.png")
    stored = ("real.jpeg", "real.png", "random.jpg", "clip.MP4", "blob.bin")
    return {str(MEDIA / name): (media / name).read_bytes() for name in stored}


def _tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under ``root`` (restore's own directories aside): kind and content."""
    found: dict[str, tuple[str, bytes]] = {}
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = ("link", os.readlink(path).encode())
        elif path.is_dir():
            found[rel] = ("dir", b"")
        else:
            found[rel] = ("file", path.read_bytes())
    return found


def _decompress(codec: str) -> list[str]:
    return ["zstd", "-dcq"] if codec == "zstd" else ["gzip", "-dc"]


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_media_is_stored_and_the_set_restores_byte_for_byte(site_env, site, tmp_path, wp_stack, codec):
    """JPEG, PNG, MP4 and random bytes of an unknown type are in the archive verbatim (raw
    frames), text is compressed; the archive is no larger than ``tar | gzip`` of the same tree,
    standard tools read it, and a restore elsewhere gives back every file, link and byte."""
    stored = _grow(site)
    run = site_env.run("wp_backup", BACKUP_COMPRESS=codec)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    [set_dir] = site_env.sets()
    ext = ".zst" if codec == "zstd" else ".gz"
    assert sorted(p.name for p in set_dir.iterdir()) == sorted(
        [f"db.sql{ext}", f"files.tar{ext}", "manifest.hmac", "manifest.json"]
    )
    manifest = json.loads((set_dir / "manifest.json").read_text())
    assert manifest["verified"] is True
    archive = (set_dir / f"files.tar{ext}").read_bytes()
    # the checksum the writer fed as it wrote (stored and compressed members) is the file's
    assert manifest["files"][f"files.tar{ext}"] == {
        "bytes": len(archive),
        "sha256": hashlib.sha256(archive).hexdigest(),
    }
    summary = manifest["archive"]
    assert run.event("backup.archive")["stored"] == summary["stored"]
    # the site's own photo-N.jpg (256 KiB) too; WordPress's small icons (< 16 KiB) are not
    assert summary["stored"]["files"] >= len(stored) + 3 and summary["sampled"] >= 2
    assert summary["compressed"]["files"] > 1000
    for name, data in stored.items():  # verbatim: a raw block holds up to 128 KiB (64 KiB for gzip)
        assert data[: 60 << 10] in archive, f"{name} was recompressed"
    css = (site / "wp-content" / "big.css").read_bytes()
    table = (site / MEDIA / "table.dat").read_bytes()
    assert css[:4096] not in archive and table[:4096] not in archive, "text was stored, not compressed"

    seed = subprocess.run(
        f"tar -C {site} --exclude='./.restore-*' -cf - . | gzip -6 | wc -c", shell=True, capture_output=True, text=True
    )
    assert len(archive) <= int(seed.stdout), (len(archive), seed.stdout)
    listing = subprocess.run(
        [*_decompress(codec), str(set_dir / f"files.tar{ext}")], capture_output=True, check=True
    ).stdout
    names = subprocess.run(["tar", "-t"], input=listing, capture_output=True, check=True).stdout.decode().split()
    assert f"./{MEDIA}/random.jpg" in names and "./wp-config.php" in names

    other, other_db = tmp_path / "copy", f"{stack.DB_NAME}_stored_{codec}"
    try:
        restored = site_env.run(
            "wp_restore", RESTORE_SET=set_dir.name, RESTORE_TARGET_PATH=str(other), RESTORE_DB=other_db
        )
        assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr
        assert _tree(other) == _tree(site)
        assert restored.event("restore.unpacked")["symlinks"] >= 1
        assert "Post 2" in wp_stack.db.sql(f"SELECT post_title FROM {stack.TABLE_PREFIX}posts", other_db)
    finally:
        wp_stack.db.sql(f"DROP DATABASE IF EXISTS `{other_db}`")


def test_a_set_in_the_previous_format_still_restores(site_env, site):
    """A set whose archive is the previous ``tar --create | zstd -T0 -3`` (no raw frames, no
    ``archive`` record), signed with the machine's key, restores over a changed site."""
    stored = _grow(site)
    assert site_env.run("wp_backup").returncode == 0
    [set_dir] = site_env.sets()
    before = _tree(site)
    old = subprocess.run(
        f"tar --create --file=- -C {site} . | zstd -T0 -3 -q -c", shell=True, capture_output=True, check=True
    ).stdout
    forge.rewrite(set_dir, "files.tar.zst", old)
    manifest = json.loads((set_dir / "manifest.json").read_text())
    del manifest["archive"]
    (set_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    forge.sign(set_dir, site_env.key_file)
    for path in set_dir.iterdir():
        path.chmod(0o600)
    assert next(iter(stored.values()))[: 60 << 10] not in old  # zstd's own frames, as before

    (site / MEDIA / "random.jpg").write_bytes(b"damaged")
    (site / MEDIA / "real.png").unlink()
    (site / "wp-content" / "big.css").write_text("changed")
    run = site_env.run("wp_restore", RESTORE_SET="latest")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    assert _tree(site) == before


def test_a_changed_byte_in_a_stored_member_is_refused(site_env, site):
    """A byte flipped inside a raw frame (a JPEG stored verbatim): SHA-256 mismatch, nothing
    restored; with the manifest's checksum made to agree, the MAC no longer does (exit 78)."""
    stored = _grow(site)
    assert site_env.run("wp_backup").returncode == 0
    [set_dir] = site_env.sets()
    archive = set_dir / "files.tar.zst"
    data = bytearray(archive.read_bytes())
    jpeg = stored[str(MEDIA / "random.jpg")]
    at = data.find(jpeg[: 64 << 10])
    assert at > 0
    data[at + 1000] ^= 0xFF
    stack.add_posts(site, ["Must survive"])
    (site / MEDIA / "random.jpg").write_bytes(b"current")

    archive.write_bytes(bytes(data))
    run = site_env.run("wp_restore", RESTORE_SET=str(set_dir))
    assert run.returncode == 1
    assert "files.tar.zst: SHA-256 mismatch" in run.event("job.failed")["exception"]["message"]
    assert "restore.unpacked" not in run.names()

    forge.rewrite(set_dir, "files.tar.zst", bytes(data))
    run = site_env.run("wp_restore", RESTORE_SET=str(set_dir))
    assert run.returncode == 78
    assert "manifest.hmac does not match manifest.json" in run.stdout + run.stderr
    assert "Must survive" in stack.post_titles(site)
    assert (site / MEDIA / "random.jpg").read_bytes() == b"current"


def test_links_in_the_site_are_archived_as_links_never_read(site_env, site, tmp_path):
    """Links www-data could plant (a .jpg and a directory pointing at root-only data) are
    archived as links: the secret bytes are nowhere in the archive."""
    secret_dir = tmp_path / "root-only"
    secret_dir.mkdir(mode=0o700)
    secret = secret_dir / "secret.jpg"
    secret.write_bytes(b"ROOT-SECRET-" * 4000)  # big enough to be stored if it were read
    secret.chmod(0o600)
    uploads = site / "wp-content" / "uploads"
    os.symlink(secret, uploads / "photo.jpg")
    os.symlink(secret_dir, uploads / "dir")
    run = site_env.run("wp_backup")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    [set_dir] = site_env.sets()
    tar = subprocess.run(["zstd", "-dcq", str(set_dir / "files.tar.zst")], capture_output=True, check=True).stdout
    assert b"ROOT-SECRET-" not in tar
    listing = subprocess.run(["tar", "-tv"], input=tar, capture_output=True, check=True).stdout.decode()
    assert f"./wp-content/uploads/photo.jpg -> {secret}" in listing
    assert f"./wp-content/uploads/dir -> {secret_dir}" in listing
