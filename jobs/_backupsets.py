"""Backup sets of the WordPress jobs: names, manifests, checksums, compression, the backup
area's lock, following files as they grow, and who made a set. (Durable writes, directory
fsync and SHA-256 are ``jobrunner.files``'.)

A set is a directory ``<site>-<stamp>`` (full) or ``<site>-db-<stamp>`` (database only) in
``BACKUP_DIR`` holding its compressed files, ``manifest.json`` and ``manifest.hmac``; it is
written as ``.<name>.partial`` and renamed only when complete and verified.

Trust (docs/security.md, "Restore trusts nothing it did not make"): the manifest lists every
file's SHA-256, and ``manifest.hmac`` is an HMAC-SHA256 of the manifest's bytes with a key
only root holds (``BACKUP_HMAC_KEY_FILE``, made 0600 by the first backup). A set is used only
if its MAC is right, its name matches its manifest, it is not dated in the future, and it and
its files are root's and not writable by anyone else, in a directory chain only root can
change (``unsafe_dir``). ``python -m jobs._backupsets sign SET_DIR`` lets root vouch for a set
it trusts that has no MAC (one made before sets were signed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobrunner import ConfigError, JobContext
from jobrunner.files import atomic_write, fsync_dir, read_regular_file, sha256_file
from jobrunner.validate import loads

BACKUP_LOCK = "wp-backups"  # shared by writers and restore, exclusive for the pruner
MANIFEST = "manifest.json"
MAC_FILE = "manifest.hmac"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# BACKUP_HMAC_KEY_FILE's default: in a state directory the backup units declare
# (StateDirectory=jobrunner/keys), so the first backup can make it inside the sandbox.
DEFAULT_KEY_FILE = "/var/lib/jobrunner/keys/backup.key"
KEY_STATE_DIRECTORY = "jobrunner/keys"
FUTURE_SKEW = timedelta(minutes=5)  # a set dated later than now + this is refused
_MAX_MANIFEST = 16 << 20


# --- compression ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    name: str
    ext: str
    compress: tuple[str, ...]
    decompress: tuple[str, ...]
    test: tuple[str, ...]


CODECS = {
    "zstd": Codec("zstd", ".zst", ("zstd", "-T0", "-3", "-q", "-c"), ("zstd", "-d", "-q", "-c"), ("zstd", "-t", "-q")),
    "gzip": Codec("gzip", ".gz", ("gzip", "-6", "-c"), ("gzip", "-d", "-c"), ("gzip", "-t")),
}


def codec_for(filename: str) -> Codec:
    for codec in CODECS.values():
        if filename.endswith(codec.ext):
            return codec
    raise ValueError(f"{filename}: unknown compression")


# --- backup sets ----------------------------------------------------------------------------


@dataclass
class BackupSet:
    """A finished set directory ``<site>-<stamp>`` (full) or ``<site>-db-<stamp>`` (database)."""

    path: Path
    manifest: dict[str, Any] | None
    created: datetime  # from the name (mtimes change when sets are copied; names do not)

    @property
    def kind(self) -> str:
        return (self.manifest or {}).get("kind") or ("db" if "-db-" in self.path.name else "full")

    @property
    def site(self) -> str | None:
        return (self.manifest or {}).get("site")

    @property
    def verified(self) -> bool:
        return bool(self.manifest and self.manifest.get("verified") is True)


def utc_stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime(STAMP_FORMAT)


def set_name(site: str, kind: str, when: datetime) -> str:
    return f"{site}-{utc_stamp(when)}" if kind == "full" else f"{site}-{kind}-{utc_stamp(when)}"


_SET_NAME = re.compile(r"^(?P<site>.+?)(?:-(?P<kind>db))?-(?P<stamp>\d{8}T\d{6}Z)$")


def read_set(path: Path) -> BackupSet | None:
    """The set at ``path`` (``None`` if the name is not a set's). The manifest is read as it
    is, not authenticated: ``authenticate()`` is what restore trusts."""
    match = _SET_NAME.match(path.name)
    if not match or path.is_symlink() or not path.is_dir():
        return None
    manifest = None
    try:
        # Bounded, a regular file, finite numbers (jobrunner.validate): a FIFO or a NaN
        # planted as a manifest is no manifest, never a hang or a crash of the listing.
        manifest = loads(read_regular_file(str(path / MANIFEST), limit=_MAX_MANIFEST))
    except (OSError, ValueError):
        pass
    created = datetime.strptime(match.group("stamp"), STAMP_FORMAT).replace(tzinfo=UTC)
    return BackupSet(path, manifest, created)


def _name_site(name: str) -> str | None:
    match = _SET_NAME.match(name)
    return match.group("site") if match else None


def list_sets(backup_dir: Path, site: str | None = None) -> list[BackupSet]:
    """Finished sets, oldest first (``.partial`` directories are not sets)."""
    if not backup_dir.is_dir():
        return []
    found = [s for p in backup_dir.iterdir() if not p.name.startswith(".") and (s := read_set(p))]
    if site is not None:
        found = [s for s in found if (s.site or _name_site(s.path.name)) == site]
    return sorted(found, key=lambda s: (s.created, s.path.name))


def check_manifest(set_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems found checking each listed file's size and SHA-256 (empty: all good)."""
    problems = []
    for name, meta in manifest.get("files", {}).items():
        path = set_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != meta["bytes"]:
            problems.append(f"{name}: {path.stat().st_size} bytes, manifest says {meta['bytes']}")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{name}: SHA-256 mismatch")
    if not manifest.get("files"):
        problems.append("manifest lists no files")
    return problems


def json_bytes(data: dict[str, Any]) -> bytes:
    """A manifest's bytes as written: indented, keys sorted, one final newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


# --- who may have changed a path ----------------------------------------------------------


def _trusted_uids() -> set[int]:
    return {0, os.geteuid()}


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def unsafe_dir(path: Path | str) -> str | None:
    """Why the directory ``path`` (symlinks resolved) could be changed by someone other than
    root or this process's user, or ``None`` when it cannot: it and every directory above it
    must be owned by root (or this user) and not writable by group or others (a group of
    root's excepted); directories above it may be sticky instead (``/tmp``), where others
    cannot rename or remove what is not theirs."""
    real = Path(os.path.realpath(path))
    trusted = _trusted_uids()
    for here in [*reversed(real.parents), real]:
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return f"{here} does not exist"
        if not stat.S_ISDIR(st.st_mode):
            return f"{here} is not a directory"
        if st.st_uid not in trusted:
            return f"{here} is owned by {_user(st.st_uid)}"
        writable = st.st_mode & 0o002 or (st.st_mode & 0o020 and st.st_gid != 0)
        if writable and (here == real or not st.st_mode & stat.S_ISVTX):
            return f"{here} is writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {st.st_mode & 0o7777:04o})"
    return None


def private_dir(path: Path, what: str, *, create: bool = False, mode: int = 0o750) -> Path:
    """``path`` with symlinks resolved, refused (ConfigError, exit 78) unless only root can
    change it (``unsafe_dir``). ``create``: missing directories are made (``mode`` for the
    last, 0755 above it, whatever the umask) under an existing safe one."""
    real = Path(os.path.realpath(path))
    if create and not real.exists():
        missing = [p for p in [real, *real.parents] if not p.exists()]
        top = missing[-1].parent
        reason = unsafe_dir(top)
        if reason:
            raise ConfigError(f"{what}={str(path)!r}: cannot be made safely: {reason}")
        for here in reversed(missing):
            try:
                os.mkdir(here, mode if here == real else 0o755)
            except FileExistsError:
                pass
    reason = unsafe_dir(real)
    if reason:
        raise ConfigError(
            f"{what}={str(path)!r}: {reason}; only root may be able to change it "
            f"(chown root and chmod go-w it and the directories above it)"
        )
    return real


def _private_file(fd: int, name: str) -> str | None:
    """Why the open file ``fd`` is not a regular file only root (or this user) can change."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file"
    if st.st_uid not in _trusted_uids():
        return f"{name} is owned by {_user(st.st_uid)}"
    if st.st_mode & 0o022:
        return f"{name} is writable by group or others (mode {st.st_mode & 0o7777:04o})"
    return None


def _read_private(path: Path, limit: int) -> bytes:
    """The bytes of ``path``, a regular file only root can change (never through a symlink);
    ValueError says why not."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ValueError(f"no {path.name}") from None
    except OSError as exc:
        raise ValueError(f"{path.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        reason = _private_file(fd, path.name)
        if reason:
            raise ValueError(reason)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is larger than {limit} bytes")
    return data


# --- the key and the MAC --------------------------------------------------------------------


@dataclass(frozen=True)
class BackupKey:
    """The HMAC key of the backup sets (``BACKUP_HMAC_KEY_FILE``)."""

    path: Path
    secret: bytes = b""
    created: bool = False

    @property
    def key_id(self) -> str:
        """A fingerprint naming the key in MAC files and errors (not the key)."""
        return hashlib.sha256(b"jobrunner backup key id\0" + self.secret).hexdigest()[:16]

    def mac(self, manifest: bytes) -> str:
        return hmac.new(self.secret, manifest, hashlib.sha256).hexdigest()


def key_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("BACKUP_HMAC_KEY_FILE", "").strip() or DEFAULT_KEY_FILE)


def load_key(path: Path, *, create: bool = False) -> BackupKey:
    """The key from ``BACKUP_HMAC_KEY_FILE``. Refused (ConfigError, exit 78) when it is a
    symlink, not a regular file, not owned by root (or this user), readable or writable by
    group or others, shorter than 32 bytes, or in a directory others could change. Missing:
    made (``create``, the backup jobs: 32 random bytes in hex, 0600, written under a random
    name and linked into place, so two first runs agree on one key), else refused."""
    what = f"BACKUP_HMAC_KEY_FILE={str(path)!r}"
    missing = ConfigError(
        f"{what}: no such file, so no backup set can be authenticated; the first "
        "wp_backup or wp_db_export run makes it (to restore another machine's sets, "
        "copy that machine's key here, 0600 root)"
    )
    if not create and not path.parent.is_dir():
        raise missing
    directory = private_dir(path.parent, "BACKUP_HMAC_KEY_FILE's directory", create=create, mode=0o700)
    path = directory / path.name
    created = False
    if create and not os.path.lexists(path):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
                created = True
            except FileExistsError:
                pass  # another first run made it meanwhile: use that one
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise missing from None
    except OSError as exc:
        why = "a symlink" if os.path.islink(path) else exc.strerror
        raise ConfigError(f"{what}: {why}; refused") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{what}: not a regular file; refused")
        if st.st_uid not in _trusted_uids():
            raise ConfigError(f"{what}: owned by {_user(st.st_uid)}, not root; refused")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"{what}: mode {st.st_mode & 0o7777:04o}, readable or writable by group or "
                "others; refused (chmod 600 it, and make a new key if others may have read it)"
            )
        secret = handle.read(4097).strip()
    if len(secret) < 32:
        raise ConfigError(f"{what}: shorter than 32 bytes; refused")
    return BackupKey(path, secret, created)


def sign_set(set_dir: Path, key: BackupKey) -> None:
    """Write ``manifest.hmac`` for the manifest as it is on disk now."""
    manifest = _read_private(set_dir / MANIFEST, _MAX_MANIFEST)
    record = {"alg": "hmac-sha256", "key_id": key.key_id, "mac": key.mac(manifest)}
    atomic_write(str(set_dir / MAC_FILE), (json.dumps(record, sort_keys=True) + "\n").encode(), 0o600)


class UntrustedSet(ValueError):
    """A set restore must not use; the message says why in one line."""


def authenticate(set_dir: Path, key: BackupKey, *, now: datetime | None = None) -> dict[str, Any]:
    """The manifest of ``set_dir``, once the set is shown to be one root made: the directory
    and its files root's and not writable by others, ``manifest.hmac`` the MAC of
    ``manifest.json`` with ``key``, the name the manifest's site, kind and date, that date not
    in the future. Nothing else of the set is read before the MAC is checked. The caller checks
    the directories above (``private_dir``) and then the checksums (``check_manifest``)."""
    try:
        st = os.lstat(set_dir)
    except OSError as exc:
        raise UntrustedSet(exc.strerror) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UntrustedSet("not a directory")
    if st.st_uid not in _trusted_uids():
        raise UntrustedSet(f"owned by {_user(st.st_uid)}, not root")
    if st.st_mode & 0o022:
        raise UntrustedSet(f"writable by group or others (mode {st.st_mode & 0o7777:04o})")
    try:
        raw = _read_private(set_dir / MANIFEST, _MAX_MANIFEST)
        record = loads(_read_private(set_dir / MAC_FILE, 4096))
    except ValueError as exc:
        if str(exc) == f"no {MAC_FILE}":
            raise UntrustedSet(
                f"no {MAC_FILE}: not made by this machine's backups (or made before sets "
                "were signed: `python -m jobs._backupsets sign` vouches for one you trust)"
            ) from None
        raise UntrustedSet(str(exc)) from None
    if not isinstance(record, dict) or record.get("alg") != "hmac-sha256" or not isinstance(record.get("mac"), str):
        raise UntrustedSet(f"{MAC_FILE} is not an hmac-sha256 record")
    if record.get("key_id") != key.key_id:
        raise UntrustedSet(f"signed with another key (key id {record.get('key_id')!r}; {key.path} is {key.key_id!r})")
    if not hmac.compare_digest(record["mac"].encode(), key.mac(raw).encode()):
        raise UntrustedSet(f"{MAC_FILE} does not match {MANIFEST}: changed since it was written, or not ours")
    try:
        manifest: dict[str, Any] = loads(raw)
        created = datetime.fromisoformat(manifest["created"]).astimezone(UTC)
        expected = set_name(manifest["site"], manifest["kind"], created)
        files = manifest["files"]
        assert isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError, AttributeError):
        raise UntrustedSet(f"{MANIFEST} lacks a site, kind, date or file list") from None
    if set_dir.name != expected:
        raise UntrustedSet(f"its name does not match its manifest (which names it {expected})")
    now = now or datetime.now(UTC)
    if created > now + FUTURE_SKEW:
        raise UntrustedSet(
            f"dated in the future ({created.isoformat(timespec='seconds')}, now {now.isoformat(timespec='seconds')})"
        )
    for name in files:
        if (
            not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name)
            or name in (MANIFEST, MAC_FILE)
        ):
            raise UntrustedSet(f"{MANIFEST} lists a file it may not: {name!r}")
        try:
            fd = os.open(set_dir / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # reported by check_manifest
        except OSError as exc:
            raise UntrustedSet(f"{name}: {exc.strerror}") from None
        try:
            reason = _private_file(fd, name)
        finally:
            os.close(fd)
        if reason:
            raise UntrustedSet(reason)
    return manifest


def hold_backup_lock(ctx: JobContext, *, shared: bool, wait: float) -> None:
    """Take the backup area's lock in the job (the declared lock is the job's own); a site's
    (an instance's) own, as its declared ``Lock(name=BACKUP_LOCK)`` is (``Job.lock_name``)."""
    name = BACKUP_LOCK if ctx.instance is None else f"{BACKUP_LOCK}@{ctx.instance}"
    ctx.hold_lock(name, shared=shared, wait=wait)


def writeback_starter() -> Callable[[int, int, int], None] | None:
    """``start(fd, offset, count)``: the kernel starts writing that range back and returns
    at once (``sync_file_range(SYNC_FILE_RANGE_WRITE)``); None where libc has no such call."""
    import ctypes

    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    call.restype = ctypes.c_int

    def start(fd: int, offset: int, count: int) -> None:
        if call(fd, offset, count, 2) != 0:  # SYNC_FILE_RANGE_WRITE
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return start


class FileFollower:
    """Hashes a file while another process appends to it, and has the kernel start writing
    it back as it grows (every 32 MiB) instead of all at the end.

    The checksum and the disk writes then overlap the compression, and the data is read back
    from the page cache, not through another pipe: the write phase costs about what its I/O
    does. The write-back is only started (``sync_file_range``), not waited for: the hash keeps
    pace with the writer instead of stalling on the disk (and ext4 commits no journal each
    time, as an fdatasync makes it); where the call is missing or refused, an fdatasync.
    ``finish()`` (after the writer exited) reads the rest, fsyncs, returns the summary.
    """

    FLUSH_EVERY = 32 << 20

    def __init__(self, path: Path) -> None:
        import threading

        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow {path.name}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        since = 0
        start = writeback_starter()
        try:
            while True:
                finished = self._done.is_set()  # read before reading: no append is missed
                n = os.readv(self.fd, [buf])
                if n:
                    self.digest.update(view[:n])
                    self.bytes += n
                    since += n
                    if since >= self.FLUSH_EVERY:
                        start = self._flush(start, since)
                        since = 0
                elif finished:
                    return
                else:
                    if since:  # the writer paused or ended: start writing back what it left
                        start = self._flush(start, since)
                        since = 0
                    self._done.wait(0.02)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def _flush(
        self, start: Callable[[int, int, int], None] | None, since: int
    ) -> Callable[[int, int, int], None] | None:
        """Start writing back the last ``since`` bytes read; returns the starter still usable."""
        if start is not None:
            try:
                start(self.fd, self.bytes - since, since)
                return start
            except OSError:
                pass  # a filesystem that refuses it: fdatasync from now on
        os.fdatasync(self.fd)
        return None

    def finish(self) -> dict[str, Any]:
        """Stop following (the writer has exited); fsync; ``{"bytes", "sha256"}``."""
        self._done.set()
        self._thread.join()
        try:
            if self.error:
                raise self.error
            os.fsync(self.fd)
            return {"bytes": self.bytes, "sha256": self.digest.hexdigest()}
        finally:
            os.close(self.fd)

    @staticmethod
    def finish_all(followers: list[FileFollower]) -> list[dict[str, Any]]:
        """``finish()`` each, side by side: the last reads and the fsyncs overlap (ext4 can
        commit them in one journal transaction). The first failure is raised, after all ended."""
        import threading

        for follower in followers:
            follower._done.set()
        results: list[dict[str, Any] | BaseException] = [RuntimeError("not finished")] * len(followers)

        def one(i: int) -> None:
            try:
                results[i] = followers[i].finish()
            except BaseException as exc:
                results[i] = exc

        threads = [threading.Thread(target=one, args=(i,), name="finish") for i in range(1, len(followers))]
        for thread in threads:
            thread.start()
        if followers:
            one(0)
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]

    def abandon(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        try:
            os.close(self.fd)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    """``python -m jobs._backupsets sign SET_DIR...``: root vouches for sets it trusts."""
    if len(argv) < 2 or argv[0] != "sign":
        print(
            "usage: python -m jobs._backupsets sign SET_DIR...  (key: $BACKUP_HMAC_KEY_FILE, "
            f"default {DEFAULT_KEY_FILE})",
            file=sys.stderr,
        )
        return 64
    try:
        key = load_key(key_file(dict(os.environ)))
        for arg in argv[1:]:
            set_dir = Path(arg)
            if read_set(set_dir) is None:
                raise ConfigError(f"{arg}: not a backup set directory")
            private_dir(set_dir, "SET_DIR")
            sign_set(set_dir, key)
            print(f"signed {set_dir} (key id {key.key_id})")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 78
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
