"""Backup sets as an attacker makes them: consistent checksums, any date, any tar members.

Standard library and the ``zstd`` binary only, so that it also runs as a script as another
user (``python3 forge.py SPEC.json``, run by ``tests.attacker.as_user``) and inside the
systemd sandbox. A forged set has everything a real one has except a MAC made with root's key:
``sign()`` adds that, written here independently of ``jobs._backupsets`` from the documented
format (HMAC-SHA256 of manifest.json's bytes), for the tests that stand for a set that got
past authentication (defence in depth behind the MAC).

Spec (JSON): ``{"out": DIR, "site": S, "kind": "full"|"db", "created": ISO8601, "sql": TEXT,
"members": [...], "sign_with": KEY_FILE|null}``; a member is ``{"name", "type": "file"|"dir"|
"symlink"|"hardlink"|"chr"|"fifo", "mode", "uid", "gid", "data", "link", "major", "minor"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import subprocess
import sys
import tarfile
from datetime import UTC, datetime, timezone
from pathlib import Path

_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def set_name(site: str, kind: str, created: datetime) -> str:
    stamp = created.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{site}-{stamp}" if kind == "full" else f"{site}-{kind}-{stamp}"


def tar_bytes(members: list[dict]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = _TYPES[m.get("type", "file")]
            info.mode = m.get("mode", 0o755 if info.type == tarfile.DIRTYPE else 0o644)
            info.uid, info.gid = m.get("uid", 0), m.get("gid", 0)
            info.mtime = m.get("mtime", 1700000000)
            info.linkname = m.get("link", "")
            info.devmajor, info.devminor = m.get("major", 0), m.get("minor", 0)
            data = m.get("data", "").encode() if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def forge(
    out: Path,
    *,
    site: str,
    kind: str,
    created: datetime,
    sql: str,
    members: list[dict] | None = None,
    verified: bool = True,
) -> Path:
    """A set directory ``out/<name>`` whose manifest agrees with its files."""
    set_dir = out / set_name(site, kind, created)
    set_dir.mkdir(mode=0o755)
    files = {"db.sql.zst": _zstd(sql.encode())}
    if kind == "full":
        files["files.tar.zst"] = _zstd(tar_bytes(members or []))
    listed = {}
    for name, data in files.items():
        (set_dir / name).write_bytes(data)
        listed[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": 1,
        "site": site,
        "kind": kind,
        "created": created.isoformat(timespec="seconds"),
        "host": "forged",
        "run_id": "0" * 32,
        "verified": verified,
        "files": listed,
        "tables": 0,
    }
    (set_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return set_dir


def rewrite(set_dir: Path, name: str, data: bytes) -> None:
    """Replace one file of a set and make the manifest's checksums agree again (a tamperer)."""
    (set_dir / name).write_bytes(data)
    manifest_path = set_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def compress(data: bytes) -> bytes:
    return _zstd(data)


def sign(set_dir: Path, key_file: Path) -> None:
    """manifest.hmac as the backup jobs write it, with the key in ``key_file`` (made as the
    first backup would, 0600 in a 0700 directory, if there is none yet)."""
    if not key_file.exists():
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32).hex().encode() + b"\n")
        os.close(fd)
    key = key_file.read_bytes().strip()
    record = {
        "alg": "hmac-sha256",
        "key_id": hashlib.sha256(b"jobrunner backup key id\0" + key).hexdigest()[:16],
        "mac": hmac.new(key, (set_dir / "manifest.json").read_bytes(), hashlib.sha256).hexdigest(),
    }
    path = set_dir / "manifest.hmac"
    path.write_text(json.dumps(record, sort_keys=True) + "\n")
    os.chmod(path, 0o600)


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    created = datetime.fromisoformat(spec["created"])
    set_dir = forge(
        Path(spec["out"]),
        site=spec["site"],
        kind=spec["kind"],
        created=created,
        sql=spec["sql"],
        members=spec.get("members"),
        verified=spec.get("verified", True),
    )
    if spec.get("sign_with"):
        sign(set_dir, Path(spec["sign_with"]))
    print(set_dir)


if __name__ == "__main__":
    main(sys.argv[1])
