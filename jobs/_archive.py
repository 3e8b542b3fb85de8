"""The files archive of a full backup set: a tar of the site that stores what does not compress.

``files.tar.zst`` (or ``.gz``) stays one compressed tar for every reader (``zstd -dc | tar -x``,
restore's own unpacker, ``tar -t`` in verification): it is a concatenation of zstd frames (gzip
members), which every decompressor reads as one stream. What changed is who makes them:

- files of 16 KiB or more of already-compressed types (JPEG, PNG, MP4, zip, fonts, …;
  ``STORED``, by extension), and of 64 KiB or more of a type not known as text (``TEXT``)
  whose first 64 KiB zlib level 1 leaves above 95 %, are written by this module as frames of
  *raw* blocks (zstd's ``Raw_Block``, deflate's stored blocks): the file's bytes are read
  straight into their place between the blocks' headers (``readv``; for gzip through the
  CRC), no compressor reads them;
- everything else (directories, links, PHP, text, types that compress) is one tar stream
  through one ``zstd -T0 -3`` (``gzip -6``), as before, into a temporary file that is appended
  once the stored members are written (the two run side by side). The walk reads files of up
  to 1 MiB of it itself and hands the compressor's feeder their headers and bytes in batches
  of 256 KiB, so neither writer waits on the other's queue: the walk holds no descriptor for
  them and gets past a directory of PHP to the media while the compressor is still busy;
- hard links and the end-of-archive blocks come last.

Every byte of the archive passes one ``Sink``, in order: written, then hashed by the sink's
own thread while the writer reads the next chunk, so the set's SHA-256 is of exactly what was
written and costs no read-back (reading it back to hash it cost a copy of every byte, and,
lagging behind the writers on 2 busy cores, 0.1–0.4 s alone at the end).

So a JPEG costs what copying it costs, and the compressor's CPU goes to what shrinks. The
order of members differs from GNU tar's (stored files before their directories' entries):
restore's unpacker and tar both create missing parent directories.

The tree is read as GNU tar reads it, never through a link www-data could plant: each
directory is opened ``O_NOFOLLOW`` relative to its parent's descriptor, each file
``O_NOFOLLOW | O_NONBLOCK`` relative to its directory and checked to be a regular file after
opening; a symlink is archived as a symlink. A file removed while the walk runs is left out,
one that changed while read is archived as read (its size at opening, short reads padded with
zeros), both counted in the summary like tar's warnings.
"""

from __future__ import annotations

import errno
import fcntl
import grp
import hashlib
import os
import pwd
import queue
import re
import stat
import tarfile
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jobrunner import JobContext
from jobs._backupsets import writeback_starter

# Types that are compressed already: compressing them again costs CPU and saves nothing.
STORED = frozenset(
    """jpg jpeg jpe jfif png apng gif webp avif heic heif jxl mp4 m4v mov webm mkv 3gp flv
    mp3 m4a aac ogg oga ogv opus flac wma wmv zip gz tgz bz2 tbz2 xz txz zst lz lz4 lzma 7z
    rar jar war apk docx xlsx pptx odt ods odp epub woff woff2""".split()
)
# Text the sample would find compressible anyway: not sampled.
TEXT = frozenset(
    "php inc js mjs css scss less html htm json xml svg sql txt md po pot map csv tsv ini yml yaml".split()
)
SAMPLE_BYTES = 64 << 10
STORE_MIN = 16 << 10  # smaller files cost the compressor little, and a stored member ~120 bytes more
STORE_RATIO = 0.95  # an unknown type is stored when zlib -1 leaves more than this of its head
EXCLUDED_TOP = (".restore-", ".pre-restore-")  # wp_restore's own directories in the site

_BLOCK = 512
_ZEROS = memoryview(bytes(_BLOCK))
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NO_KERNEL_COPY = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM)
_SMALL = 1 << 20  # files up to this size are read by the walk, in a batch with their header
_BATCH = 256 << 10  # a batch of headers and small files for the compressor (its queue: 128 of them)
_PIPE = 1 << 20  # the compressor's pipe buffer (the kernel's default is 64 KiB)
_CHUNK = 1 << 20  # a stored file is read (into its frame's blocks), hashed and written in chunks of this (in L2)


@cache
def _uname(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@cache
def _gname(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def header(name: str, st: os.stat_result, kind: bytes, *, size: int = 0, linkname: str = "") -> bytes:
    """A GNU tar header (with its long-name records) for ``name``, as GNU tar writes it: the
    bytes ``tarfile`` makes (``_tarfile_header``), built here directly where every field fits
    its octal digits and no long-name record is needed (a site's every member, as a rule;
    ``tarfile`` costs ~20 µs a member, a third of the walk's CPU)."""
    mtime = int(st.st_mtime)
    if kind == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    bname = name.encode("utf-8", "surrogateescape")
    blink = linkname.encode("utf-8", "surrogateescape")
    if (
        kind in (tarfile.CHRTYPE, tarfile.BLKTYPE)
        or len(bname) > 100
        or len(blink) > 100
        or not 0 <= size < 8**11
        or not 0 <= mtime < 8**11
        or not 0 <= st.st_uid < 8**7
        or not 0 <= st.st_gid < 8**7
    ):
        return _tarfile_header(name, st, kind, size=size, linkname=linkname)
    buf = bytearray(_BLOCK)
    buf[0 : len(bname)] = bname
    buf[100:156] = b"%07o\0%07o\0%07o\0%011o\0%011o\0        " % (
        st.st_mode & 0o7777,
        st.st_uid,
        st.st_gid,
        size,
        mtime,
    )
    buf[156:157] = kind
    buf[157 : 157 + len(blink)] = blink
    buf[257:265] = tarfile.GNU_MAGIC
    uname = _uname(st.st_uid).encode("utf-8", "surrogateescape")[:32]
    gname = _gname(st.st_gid).encode("utf-8", "surrogateescape")[:32]
    buf[265 : 265 + len(uname)] = uname
    buf[297 : 297 + len(gname)] = gname
    buf[148:155] = b"%06o\0" % sum(buf)  # the checksum field counted as spaces, as it is
    return bytes(buf)


def _tarfile_header(name: str, st: os.stat_result, kind: bytes, *, size: int = 0, linkname: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = st.st_mode & 0o7777
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname, info.gname = _uname(st.st_uid), _gname(st.st_gid)
    info.mtime = int(st.st_mtime)
    info.size = size
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def classify(name: str, fd: int, size: int) -> tuple[bool, bool]:
    """``(stored, sampled)`` for a regular file: stored by its extension, else (64 KiB or more
    of an unknown type) when zlib level 1 leaves more than 95 % of its first 64 KiB."""
    base = name.rpartition("/")[2]
    ext = base.rpartition(".")[2].lower() if "." in base else ""
    if size < STORE_MIN:
        return False, False
    if ext in STORED:
        return True, False
    if ext in TEXT or size < SAMPLE_BYTES:
        return False, False
    head = os.pread(fd, SAMPLE_BYTES, 0)
    return len(head) >= SAMPLE_BYTES // 2 and len(zlib.compress(head, 1)) > STORE_RATIO * len(head), True


# --- stored frames --------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Sink:
    """The archive's bytes, written in order through one descriptor (the sink's: ``close()``
    closes it). The SHA-256 and the count
    are of exactly what was written, fed as the bytes pass (no read-back): a chunk is written,
    then hashed by a thread of the sink's own while the writer reads the next (``buffer()``
    hands out the chunks, 4 of 1 MiB, each back once hashed). The kernel is told to start
    writing back every 32 MiB (``sync_file_range``; where refused, an fdatasync), so the final
    fsync has little left to wait for."""

    FLUSH_EVERY = 32 << 20
    BUFFERS = 4

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = hashlib.sha256()
        self.sha256 = ""  # the hex digest, once the hash thread ended
        self._error: BaseException | None = None
        self.bytes = 0
        self._since = 0
        self._start = writeback_starter()
        self._free: queue.Queue[bytearray] = queue.Queue()
        self._made = 0
        self._hash: queue.Queue[tuple[bytes | memoryview, bytearray | None] | None] = queue.Queue()
        self._hasher = threading.Thread(target=self._hashing, name="archive hash", daemon=True)
        self._hasher.start()

    def _hashing(self) -> None:
        while (item := self._hash.get()) is not None:
            data, buf = item
            if self._error is None:
                try:
                    self.digest.update(data)
                except BaseException as exc:  # raised by finish(); the buffers still come back
                    self._error = exc
            if buf is not None:
                self._free.put(buf)
        self.sha256 = self.digest.hexdigest()  # of everything queued before the end

    def buffer(self) -> bytearray:
        """A chunk-sized buffer for ``write_buffer`` (waits while all are being hashed)."""
        if self._made < self.BUFFERS:
            self._made += 1
            return bytearray(_CHUNK + (_CHUNK >> 10))  # room for the blocks' headers too
        return self._free.get()

    def write_buffer(self, buf: bytearray, n: int) -> None:
        """Write ``buf[:n]``; ``buf`` (from ``buffer()``) is the sink's until hashed."""
        view = memoryview(buf)[:n]
        _write_all(self.fd, view)
        self._hash.put((view, buf))
        self._wrote(n)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)  # the caller may reuse its buffer
        _write_all(self.fd, data)
        self._hash.put((data, None))
        self._wrote(len(data))

    def _wrote(self, n: int) -> None:
        self.bytes += n
        self._since += n
        if self._since >= self.FLUSH_EVERY:
            self.start_writeback()

    def copy(self, src: int, count: int) -> int:
        """``count`` bytes of ``src`` (fewer if it ends sooner), written; the bytes copied."""
        done = 0
        while done < count:
            buf = self.buffer()
            n = os.readv(src, [memoryview(buf)[: min(_CHUNK, count - done)]])
            if n == 0:
                self._free.put(buf)
                break
            self.write_buffer(buf, n)
            done += n
        return done

    def start_writeback(self) -> None:
        """Start writing back what was written since the last call."""
        if not self._since:
            return
        if self._start is not None:
            try:
                self._start(self.fd, self.bytes - self._since, self._since)
                self._since = 0
                return
            except OSError:
                self._start = None  # a filesystem that refuses it: fdatasync from now on
        os.fdatasync(self.fd)
        self._since = 0

    def close(self, *, keep_fd: bool = False) -> None:
        """The hash thread ends once it hashed what was queued (also after a failure); the
        descriptor is closed unless ``keep_fd``."""
        if self._hasher.is_alive():
            self._hash.put(None)
            self._hasher.join()
        if not keep_fd:
            os.close(self.fd)

    def finish(self) -> dict[str, Any]:
        """fsync (while the last chunks are hashed); ``{"bytes", "sha256"}`` of what was written."""
        self._hash.put(None)
        os.fsync(self.fd)
        self._hasher.join()
        if self._error is not None:
            raise self._error
        return {"bytes": self.bytes, "sha256": self.sha256}


class StoredFrames:
    """Writes members as frames the decompressor copies through, the file's bytes never passing
    a compressor: zstd frames of raw blocks (the header's and the padding's runs of zeros as
    RLE blocks; frame content size given, no checksum: the manifest's SHA-256 covers the file),
    or gzip members whose header and padding are deflated and whose data are stored blocks.
    The file's bytes are read straight into their place between the block headers (``readv``),
    and each chunk of the frame is hashed and written at once (``Sink``)."""

    def __init__(self, codec: str, out: Sink) -> None:
        if codec not in ("zstd", "gzip"):
            raise ValueError(f"{codec}: no stored frames")
        self.codec = codec
        self.out = out

    def member(self, head: bytes, src: int | None, size: int) -> int:
        """One frame: ``head`` (tar header bytes), ``size`` bytes of ``src`` (zeros past its
        end), the tar padding. Returns the bytes read from ``src``."""
        pad = bytes(-size % _BLOCK)
        if self.codec == "zstd":
            return self._zstd(head, src, size, pad)
        return self._gzip(head, src, size, pad)

    def _zstd_data(self, pending: bytearray, src: int | None, size: int) -> int:
        """``size`` bytes of ``src`` as raw blocks, after ``pending``; zeros past the end of
        ``src``. Each chunk (8 blocks) is one buffer: the blocks' headers, the file's bytes
        read into the gaps between them; hashed and written whole. Returns the bytes read."""
        self.out.write(pending)
        pending.clear()
        most = self._ZBLOCK
        per = _CHUNK // most
        read, short = 0, src is None
        for at in range(0, size, per * most):
            buf = self.out.buffer()
            view = memoryview(buf)
            slots, pos = [], 0
            for start in range(at, min(size, at + per * most), most):
                n = min(most, size - start)
                view[pos : pos + 3] = (n << 3).to_bytes(3, "little")
                slots.append(view[pos + 3 : pos + 3 + n])
                pos += 3 + n
            want = sum(len(slot) for slot in slots)
            got = 0
            if not short:
                assert src is not None
                got = os.readv(src, slots)  # a regular file: short only where it ends
                read += got
                short = got < want
            if got < want:  # zeros past the end (the buffer holds the previous chunk's bytes)
                skip = got
                for slot in slots:
                    if skip >= len(slot):
                        skip -= len(slot)
                        continue
                    slot[skip:] = bytes(len(slot) - skip)
                    skip = 0
            self.out.write_buffer(buf, pos)
        return read

    # zstd (RFC 8878): magic, descriptor 0xC0 (8-byte content size, not single-segment, no
    # checksum, no dictionary), window 128 KiB (0x38), then blocks of at most 128 KiB whose
    # 3-byte header is size << 3 | type << 1 | last (type 0: raw bytes; 1: RLE, one byte
    # repeated size times).
    _ZBLOCK = 128 << 10

    @staticmethod
    def _zstd_bytes(data: bytes) -> bytes:
        """Raw and RLE blocks (never the last) for ``data``: runs of 16 zeros or more as RLE."""
        out, at = bytearray(), 0
        for run in re.finditer(rb"\0{16,}", data):
            if run.start() > at:
                out += ((run.start() - at) << 3).to_bytes(3, "little") + data[at : run.start()]
            out += ((len(run.group()) << 3) | 2).to_bytes(3, "little") + b"\0"
            at = run.end()
        if at < len(data):
            out += ((len(data) - at) << 3).to_bytes(3, "little") + data[at:]
        return bytes(out)

    def _zstd(self, head: bytes, src: int | None, size: int, pad: bytes) -> int:
        pending = bytearray(b"\x28\xb5\x2f\xfd\xc0\x38")
        pending += (len(head) + size + len(pad)).to_bytes(8, "little")
        pending += self._zstd_bytes(head)
        read = self._zstd_data(pending, src, size)
        pending += self._zstd_bytes(pad)
        pending += (1).to_bytes(3, "little")  # the last block: raw, empty
        self.out.write(pending)
        return read

    # gzip (RFC 1952) around one deflate stream (RFC 1951): the header deflated and flushed to
    # a byte boundary (Z_SYNC_FLUSH), the data as stored blocks (a byte 0, LEN, NLEN, bytes),
    # the padding deflated as the final block, then CRC-32 and size.
    _GBLOCK = 0xFFFF

    def _gzip(self, head: bytes, src: int | None, size: int, pad: bytes) -> int:
        pending = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        first = zlib.compressobj(6, zlib.DEFLATED, -15)
        pending += first.compress(head) + first.flush(zlib.Z_SYNC_FLUSH)
        crc, read, short = zlib.crc32(head), 0, src is None
        for at in range(0, size, self._GBLOCK):
            n = min(self._GBLOCK, size - at)
            data = b"" if short else os.read(src, n)  # type: ignore[arg-type]
            while not short and len(data) < n:
                more = os.read(src, n - len(data))  # type: ignore[arg-type]
                short = not more
                data += more
            read += len(data)
            data += bytes(n - len(data))
            crc = zlib.crc32(data, crc)
            pending += b"\0" + n.to_bytes(2, "little") + (n ^ 0xFFFF).to_bytes(2, "little") + data
            if len(pending) >= 1 << 20:
                self.out.write(pending)
                pending.clear()
        last = zlib.compressobj(6, zlib.DEFLATED, -15)
        pending += last.compress(pad) + last.flush(zlib.Z_FINISH)
        crc = zlib.crc32(pad, crc)
        pending += crc.to_bytes(4, "little") + ((len(head) + size + len(pad)) & 0xFFFFFFFF).to_bytes(4, "little")
        self.out.write(pending)
        return read


# --- the writer -----------------------------------------------------------------------------


@dataclass
class Summary:
    """What went into an archive (``manifest["archive"]``)."""

    stored_files: int = 0
    stored_bytes: int = 0
    compressed_files: int = 0
    compressed_bytes: int = 0  # of regular files' contents given to the compressor
    other_members: int = 0  # directories, symlinks, hard links, devices, fifos
    sampled: int = 0
    changed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "stored": {"files": self.stored_files, "bytes": self.stored_bytes},
            "compressed": {"files": self.compressed_files, "bytes": self.compressed_bytes},
            "other_members": self.other_members,
            "sampled": self.sampled,
            "changed": len(self.changed),
            "vanished": len(self.vanished),
        }


@dataclass
class _Item:
    name: str
    st: os.stat_result
    kind: bytes
    fd: int | None = None
    linkname: str = ""


_END = None


class ArchiveWriter:
    """Writes the tar of ``root`` into ``out`` (``files.tar.<ext>``, made empty beforehand),
    fsync'd; ``written`` is then its ``{"bytes", "sha256"}``, fed as the bytes were written."""

    def __init__(self, ctx: JobContext, root: Path, out: Path, codec: str, compress: tuple[str, ...]) -> None:
        self.ctx = ctx
        self.root = root
        self.out = out
        self.codec = codec
        self.compress = compress
        self.summary = Summary()
        self._read = [0, 0]  # file bytes read so far by the stored and the compressed writer
        self._error: BaseException | None = None
        self._failed = threading.Event()
        # the walk gets past a directory of media without waiting (descriptors: ≤ 256 + 128)
        self._stored: queue.Queue[_Item | None] = queue.Queue(maxsize=256)
        # batches of tar bytes (headers, small files read by the walk) or large files' items
        self._compressed: queue.Queue[_Item | bytearray | None] = queue.Queue(maxsize=128)
        self._batch = bytearray()
        self._links: list[bytes] = []
        self._inodes: dict[tuple[int, int], str] = {}
        self.written: dict[str, Any] = {}

    @property
    def read(self) -> int:
        """File bytes read so far (for the progress line)."""
        return sum(self._read)

    # the threads: walk (the job's thread), stored (→ out), compressed (→ compressor → temp)

    def write(self, check: Callable[[], None] = lambda: None) -> Summary:
        """Walk, write, append, fsync; ``check`` is called between members (raises to stop)."""
        tmp = self.out.with_name(f".{self.out.name}.compressed")
        out_fd = os.open(self.out, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        tmp_fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size: the default buffer then
        # each thread gets descriptors of its own (sharing the offsets), closed when it ends; the
        # sink's is the stored writer's until it ends, then this thread's
        sink = Sink(os.dup(out_fd))
        threads = [
            self._thread("stored", self._write_stored, sink),
            self._thread("compressor", self._run_compressor, read_end, os.dup(tmp_fd)),
            self._thread("compressed", self._write_compressed, write_end),
        ]
        try:
            for thread in threads:
                thread.start()
            self._walk(check)
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
                    self._raise_failure()
            self._raise_failure()
            os.lseek(tmp_fd, 0, os.SEEK_SET)
            size = os.fstat(tmp_fd).st_size
            if sink.copy(tmp_fd, size) != size:
                raise OSError(errno.EIO, f"{tmp.name}: short copy")
            tail = b"".join(self._links) + bytes(2 * _BLOCK)  # the hard links, the end of the archive
            StoredFrames(self.codec, sink).member(tail, None, 0)
            self.written = sink.finish()
        except BaseException:
            self._failed.set()
            self._drain()
            raise
        finally:
            # a stored writer still running after a failure keeps the sink's descriptor open:
            # no number is reused under its writes
            sink.close(keep_fd=threads[0].is_alive())
            os.close(out_fd)
            os.close(tmp_fd)
            tmp.unlink(missing_ok=True)
        return self.summary

    def _thread(self, name: str, fn: Callable[..., None], *args: Any) -> threading.Thread:
        def body() -> None:
            try:
                fn(*args)
            except BaseException as exc:
                if self._error is None or isinstance(self._error, BrokenPipeError):
                    self._error = exc  # the compressor's own failure says more than the pipe's
                self._failed.set()

        return threading.Thread(target=body, name=f"archive {name}", daemon=True)

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
        if self._failed.is_set():
            raise OSError(errno.EIO, "the archive writer stopped")

    def _put(self, q: queue.Queue[Any], item: _Item | bytearray | None) -> None:
        while True:
            self._raise_failure()
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        """After a failure: close the descriptors still queued and let the writers end."""
        for q in (self._stored, self._compressed):
            while True:
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Item) and item.fd is not None:
                    os.close(item.fd)
            try:
                q.put_nowait(_END)
            except queue.Full:
                pass

    # --- walking --------------------------------------------------------------------------

    def _walk(self, check: Callable[[], None]) -> None:
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # WP_PATH may be a link (tar -C)
        self._add(header(".", os.fstat(root_fd), tarfile.DIRTYPE))
        stack = [(root_fd, "./", sorted(os.listdir(root_fd), reverse=True))]
        try:
            while stack:
                dir_fd, prefix, names = stack[-1]
                if not names:
                    os.close(dir_fd)
                    stack.pop()
                    continue
                check()
                entry = names.pop()
                if prefix == "./" and entry.startswith(EXCLUDED_TOP):
                    continue
                child = self._entry(dir_fd, entry, prefix + entry)
                if child is not None:
                    try:
                        listing = sorted(os.listdir(child), reverse=True)
                    except BaseException:
                        os.close(child)
                        raise
                    stack.append((child, f"{prefix}{entry}/", listing))
        finally:
            for dir_fd, _, _ in stack:
                os.close(dir_fd)
        self._flush()
        self._put(self._stored, _END)
        self._put(self._compressed, _END)

    def _add(self, data: bytes) -> None:
        """Tar bytes for the compressor, in the current batch."""
        self._batch += data
        if len(self._batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._put(self._compressed, self._batch)  # the feeder's now: a new batch begins
            self._batch = bytearray()

    def _entry(self, dir_fd: int, entry: str, name: str) -> int | None:
        """Queue one entry; a directory's descriptor is returned (to walk it)."""
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(entry, _DIR, dir_fd=dir_fd)
                try:
                    self._add(header(name, os.fstat(fd), tarfile.DIRTYPE))
                except BaseException:
                    os.close(fd)
                    raise
                self.summary.other_members += 1
                return fd
            if stat.S_ISREG(st.st_mode):
                self._file(dir_fd, entry, name)
            elif stat.S_ISLNK(st.st_mode):
                link = os.readlink(entry, dir_fd=dir_fd)
                self._add(header(name, st, tarfile.SYMTYPE, linkname=link))
                self.summary.other_members += 1
            elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = tarfile.FIFOTYPE if stat.S_ISFIFO(st.st_mode) else tarfile.CHRTYPE
                if stat.S_ISBLK(st.st_mode):
                    kind = tarfile.BLKTYPE
                self._add(header(name, st, kind))
                self.summary.other_members += 1
            # sockets are left out, as tar does
        except FileNotFoundError:
            self.summary.vanished.append(name)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(exc.errno, f"{exc.strerror}: {name}") from None
            self.summary.changed.append(name)  # replaced by a symlink or a file meanwhile: left out
        return None

    def _file(self, dir_fd: int, entry: str, name: str) -> None:
        fd = os.open(entry, _FILE, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.ELOOP, "not a regular file any more")
            if st.st_nlink > 1:
                first = self._inodes.setdefault((st.st_dev, st.st_ino), name)
                if first != name:
                    self._links.append(header(name, st, tarfile.LNKTYPE, linkname=first))
                    self.summary.other_members += 1
                    os.close(fd)
                    return
            stored, sampled = classify(name, fd, st.st_size)
            self.summary.sampled += sampled
            item = _Item(name, st, tarfile.REGTYPE, fd)
            if st.st_size <= _SMALL and not stored:
                self._small_file(item)
            else:
                if not stored:
                    self._flush()  # the compressed stream keeps the walk's order
                self._put(self._stored if stored else self._compressed, item)
                return  # the writer closes it
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)

    def _small_file(self, item: _Item) -> None:
        """A file for the compressor read now, into the batch with its header and padding."""
        assert item.fd is not None
        size = item.st.st_size
        batch = self._batch
        batch += header(item.name, item.st, tarfile.REGTYPE, size=size)
        got = 0
        while got < size:
            more = os.read(item.fd, size - got)
            if not more:
                break
            batch += more
            got += len(more)
        self._changed(item, got)
        batch += _ZEROS[: -size % _BLOCK] if got == size else bytes(size - got + (-size % _BLOCK))
        if len(batch) >= _BATCH:
            self._flush()
        self._read[1] += size
        self.summary.compressed_files += 1
        self.summary.compressed_bytes += size

    # --- writing --------------------------------------------------------------------------

    def _items(self, q: queue.Queue[Any]) -> Any:
        while True:
            item = q.get()
            if item is None or self._failed.is_set():
                if isinstance(item, _Item) and item.fd is not None:
                    os.close(item.fd)
                return
            yield item

    def _changed(self, item: _Item, got: int) -> None:
        assert item.fd is not None
        after = os.fstat(item.fd)
        if got != item.st.st_size or after.st_size != item.st.st_size or after.st_mtime_ns != item.st.st_mtime_ns:
            self.summary.changed.append(item.name)

    def _write_stored(self, sink: Sink) -> None:
        frames = StoredFrames(self.codec, sink)
        for item in self._items(self._stored):
            assert item.fd is not None
            try:
                size = item.st.st_size
                got = frames.member(header(item.name, item.st, tarfile.REGTYPE, size=size), item.fd, size)
                self._changed(item, got)
                self._read[0] += size
                self.summary.stored_files += 1
                self.summary.stored_bytes += size
            finally:
                os.close(item.fd)

    def _run_compressor(self, read_end: int, tmp_fd: int) -> None:
        try:
            self.ctx.run(list(self.compress), stdin=read_end, stdout=tmp_fd)
        finally:
            os.close(read_end)
            os.close(tmp_fd)

    def _write_compressed(self, pipe: int) -> None:
        try:
            for item in self._items(self._compressed):
                if isinstance(item, bytearray):
                    _write_all(pipe, item)
                    continue
                try:
                    self._compressed_file(pipe, item)
                finally:
                    os.close(item.fd)
        finally:
            os.close(pipe)

    _kernel_splice = True

    def _splice(self, src: int, pipe: int, count: int) -> int:
        """Up to ``count`` bytes of ``src`` into the pipe (by the kernel where it can)."""
        if self._kernel_splice:
            try:
                return os.splice(src, pipe, count)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                self._kernel_splice = False
        data = os.read(src, count)
        _write_all(pipe, data)
        return len(data)

    def _compressed_file(self, pipe: int, item: _Item) -> None:
        """A file of more than 1 MiB for the compressor, spliced into its pipe."""
        assert item.fd is not None
        size = item.st.st_size
        _write_all(pipe, header(item.name, item.st, tarfile.REGTYPE, size=size))
        got = 0
        while got < size:
            n = self._splice(item.fd, pipe, min(size - got, 1 << 20))
            if n == 0:
                break
            got += n
        if got < size:
            _write_all(pipe, bytes(size - got))
        _write_all(pipe, bytes(-size % _BLOCK))
        self._changed(item, got)
        self._read[1] += size
        self.summary.compressed_files += 1
        self.summary.compressed_bytes += size
