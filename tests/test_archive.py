"""jobs/_archive.py: the files archive with stored members, read back by GNU tar, zstd/gzip and
restore's own unpacker (real binaries, a real runtime context; no database needed)."""

from __future__ import annotations

import grp
import os
import pwd
import random
import subprocess
import tarfile
from pathlib import Path

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner import job
from jobrunner.redact import Redactor
from jobrunner.run.context import Context
from jobs._archive import STORE_MIN, ArchiveWriter, Sink, StoredFrames, _tarfile_header, classify, header
from jobs._backupsets import CODECS

LONG = "d" * 90 + "/" + "n" * 150 + ".jpg"
ODD = os.fsdecode(b"caf\xe9-latin1.png")  # not UTF-8: kept byte for byte


def noop(ctx) -> None:
    """Nothing."""


def _ctx(tmp_path: Path) -> Context:
    return Context(
        job=job(noop),
        log=structlog.get_logger(),
        env=dict(os.environ),
        run_id="r1",
        dry_run=False,
        redactor=Redactor(),
        state_dir=str(tmp_path),
    )


def _site(root: Path) -> None:
    rng = random.Random(3)
    (root / "wp-content" / "uploads").mkdir(parents=True)
    up = root / "wp-content" / "uploads"
    (up / "big.jpg").write_bytes(rng.randbytes(300 << 10))  # several raw blocks
    (up / "edge.webp").write_bytes(rng.randbytes(STORE_MIN))  # the smallest stored size
    (up / "tiny.png").write_bytes(rng.randbytes(STORE_MIN - 1))  # compressed
    (up / "noise.dat").write_bytes(rng.randbytes(100 << 10))  # unknown, sampled: stored
    (up / "empty.gif").write_bytes(b"")
    (root / "index.php").write_text("<?php // " + "hello " * 5000)
    (root / "wp-content" / LONG.split("/")[0]).mkdir()
    (root / "wp-content" / LONG).write_bytes(rng.randbytes(40 << 10))
    os.link(up / "big.jpg", up / "big-copy.jpg")  # a hard link: archived once
    (root / ODD).write_bytes(rng.randbytes(20 << 10))
    os.symlink("uploads/big.jpg", root / "wp-content" / "latest.jpg")
    os.mkfifo(root / "fifo")
    (root / ".restore-abc").mkdir()  # wp_restore's own: never archived
    (root / ".restore-abc" / "x").write_text("x")
    (root / "wp-content" / ".restore-kept").write_text("only the top level is restore's")


def _write(tmp_path: Path, root: Path, codec: str, check=lambda: None):
    out = tmp_path / f"files.tar{CODECS[codec].ext}"
    out.touch(mode=0o600)
    writer = ArchiveWriter(_ctx(tmp_path), root, out, codec, CODECS[codec].compress)
    return out, writer.write(check)


def _tar(out: Path, codec: str) -> bytes:
    return subprocess.run([*CODECS[codec].decompress, str(out)], capture_output=True, check=True).stdout


def _entries(root: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = "dir"
            elif path.is_fifo():
                found[rel] = "fifo"
            else:
                found[rel] = path.read_bytes()
    return found


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_the_archive_round_trips_through_gnu_tar(tmp_path, codec):
    """Stored and compressed members, hard link, long and non-UTF-8 names, symlink, fifo,
    empty file: GNU tar extracts the same tree (restore's directories at the top aside); the
    decompressor's own test passes; only what compresses went to the compressor."""
    root = tmp_path / "site"
    _site(root)
    out, summary = _write(tmp_path, root, codec)
    subprocess.run([CODECS[codec].test[0], *CODECS[codec].test[1:], str(out)], check=True)
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dest)], input=_tar(out, codec), check=True)
    expected = _entries(root)
    del expected[".restore-abc"], expected[".restore-abc/x"]
    assert _entries(dest) == expected
    assert (
        os.stat(dest / "wp-content/uploads/big-copy.jpg").st_ino == os.stat(dest / "wp-content/uploads/big.jpg").st_ino
    )
    record = summary.record()
    assert record["stored"] == {"files": 5, "bytes": (300 << 10) + STORE_MIN + (100 << 10) + (40 << 10) + (20 << 10)}
    assert record["sampled"] == 1 and record["vanished"] == 0 and record["changed"] == 0
    assert not list(tmp_path.glob(".files.tar*"))  # the compressed part's temporary file is gone
    big = (root / "wp-content/uploads/big.jpg").read_bytes()
    assert big[: 60 << 10] in out.read_bytes(), "the stored member was not stored verbatim"


def test_restores_own_unpacker_reads_it(tmp_path):
    """wp_restore's Unpacker (the one restore uses) takes every member of the new archive."""
    from jobs.wp_restore import Unpacker, _unpack_stream

    root = tmp_path / "site"
    _site(root)
    out, _ = _write(tmp_path, root, "zstd")
    dest = tmp_path / "restored"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        unpacker = Unpacker(fd, (os.getuid(), os.getgid()))
        proc = subprocess.Popen(["zstd", "-dcq", str(out)], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        _unpack_stream(proc.stdout, unpacker)
        assert proc.wait() == 0
    finally:
        os.close(fd)
    assert (dest / "wp-content/uploads/big-copy.jpg").read_bytes() == (root / "wp-content/uploads/big.jpg").read_bytes()
    assert (dest / "wp-content" / LONG).read_bytes() == (root / "wp-content" / LONG).read_bytes()
    assert (dest / ODD).read_bytes() == (root / ODD).read_bytes()
    assert os.readlink(dest / "wp-content/latest.jpg") == "uploads/big.jpg"
    assert [s.split(" ")[0] for s in unpacker.done.skipped] == ["./fifo"]


def test_a_file_removed_during_the_walk_is_left_out_and_counted(tmp_path):
    """As tar's "file removed before we read it": the archive is written without it."""
    root = tmp_path / "site"
    _site(root)
    gone = root / "zz-removed.txt"
    gone.write_text("soon gone")

    def remove_once() -> None:  # called before each entry, after the top directory was listed
        gone.unlink(missing_ok=True)

    out, summary = _write(tmp_path, root, "zstd", remove_once)
    assert summary.vanished == ["./zz-removed.txt"]
    names = subprocess.run(["tar", "-t"], input=_tar(out, "zstd"), capture_output=True, check=True).stdout
    assert b"zz-removed" not in names and b"./index.php" in names


def test_classify_by_extension_then_by_sample(tmp_path):
    rng = random.Random(1)
    text = tmp_path / "t"
    text.write_bytes(b"abc " * 50_000)
    noise = tmp_path / "n"
    noise.write_bytes(rng.randbytes(200_000))
    with open(text, "rb") as t, open(noise, "rb") as n:
        assert classify("a/photo.JPG", n.fileno(), 200_000) == (True, False)
        assert classify("a/photo.jpg", n.fileno(), STORE_MIN - 1) == (False, False)
        assert classify("a/script.js", n.fileno(), 200_000) == (False, False)  # known text: not sampled
        assert classify("a/doc.pdf", n.fileno(), 200_000) == (True, True)
        assert classify("a/doc.pdf", t.fileno(), 200_000) == (False, True)
        assert classify("a/no-extension", n.fileno(), 200_000) == (True, True)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_a_stored_frame_pads_a_file_that_shrank(tmp_path, codec):
    """A file shorter than its header says (it shrank while read) is padded with zeros, and the
    frame still decompresses to exactly header + size + padding."""
    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    st = os.stat(src)
    out = tmp_path / "out"
    with open(out, "wb") as handle, open(src, "rb") as source:
        head = header("./f.jpg", st, b"0", size=5000)
        sink = Sink(handle.fileno())
        got = StoredFrames(codec, sink).member(head, source.fileno(), 5000)
        sink.finish()
    assert got == 1000
    data = _tar(out, codec)
    assert data == head + b"x" * 1000 + bytes(4000) + bytes(-5000 % 512)


_NAMES = st.one_of(
    st.text(min_size=1, max_size=130),  # the site's users name their files: any text
    st.binary(min_size=1, max_size=130).map(os.fsdecode),  # and any bytes (not UTF-8: surrogates)
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    name=_NAMES,
    linkname=st.one_of(st.just(""), _NAMES),
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE]),
    mode=st.integers(0, 0o177777),
    ids=st.tuples(st.integers(0, 2**32 - 2), st.integers(0, 2**32 - 2)),
    size=st.one_of(st.integers(0, 1 << 40), st.just(8**11 - 1), st.just(8**11)),
    mtime=st.one_of(st.floats(-(2.0**40), 2.0**40), st.just(float(8**11 - 1)), st.just(float(8**11))),
)
def test_the_fast_header_is_the_one_tarfile_makes(name, linkname, kind, mode, ids, size, mtime):
    """The header built directly is byte for byte the one tarfile builds (names of any bytes,
    at and past 100 bytes; ids, sizes and times at and past their octal digits)."""
    stat = os.stat_result((mode, 1, 1, 1, ids[0], ids[1], size, 0, mtime, 0))
    assert header(name, stat, kind, size=size, linkname=linkname) == _tarfile_header(
        name, stat, kind, size=size, linkname=linkname
    )


def test_the_fast_header_names_the_owner_as_tar_does(tmp_path):
    """GNU tar reads back the owner's name, the mode and the time of a header built directly."""
    path = tmp_path / "f.php"
    path.write_bytes(b"<?php")
    os.chmod(path, 0o640)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    info = os.stat(path)
    archive = header("./f.php", info, tarfile.REGTYPE, size=5) + b"<?php".ljust(512, b"\0") + bytes(1024)
    listing = subprocess.run(
        ["tar", "-tv", "--full-time", "--utc"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split()[:2] == [
        "-rw-r-----",
        f"{pwd.getpwuid(info.st_uid).pw_name}/{grp.getgrgid(info.st_gid).gr_name}",
    ]
    assert "2023-11-14 22:13:20 ./f.php" in listing


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_the_hash_fed_while_writing_is_the_files_on_disk(tmp_path, codec):
    """The SHA-256 and size the writer reports (fed as the bytes pass, never read back) are
    those of the archive on disk, for stored members of many chunks (the buffers reused),
    compressed members, links and the appended compressed part."""
    root = tmp_path / "site"
    _site(root)
    rng = random.Random(8)
    media = root / "wp-content" / "uploads"
    (media / "film.mp4").write_bytes(rng.randbytes((13 << 20) + 12345))  # 14 chunks, the last partial
    for i in range(5):
        (media / f"photo-{i}.jpg").write_bytes(rng.randbytes((1 << 20) + i * 777))
    (root / "wp-content" / "style.css").write_text("a { color: blue; }\n" * 100_000)  # 1.9 MB: spliced
    out = tmp_path / f"files.tar{CODECS[codec].ext}"
    out.touch(mode=0o600)
    writer = ArchiveWriter(_ctx(tmp_path), root, out, codec, CODECS[codec].compress)
    summary = writer.write()
    assert summary.stored_files == 11 and summary.compressed_bytes > 1 << 20
    assert writer.written == {"bytes": out.stat().st_size, "sha256": _sha256(out)}
    names = subprocess.run(["tar", "-t"], input=_tar(out, codec), capture_output=True, check=True).stdout.split()
    assert b"./wp-content/uploads/film.mp4" in names and b"./wp-content/style.css" in names


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_a_file_that_shrank_is_padded_with_zeros_in_a_reused_buffer(tmp_path, codec):
    """The chunk buffers are reused: a stored file that ends early is padded with zeros, not
    with the bytes of the file written before it; the hash is still the file's on disk."""
    rng = random.Random(4)
    big, short = tmp_path / "big", tmp_path / "short"
    big.write_bytes(rng.randbytes(13 << 20))  # leaves every buffer full of random bytes
    short.write_bytes(b"y" * 1000)
    out = tmp_path / "out"
    with open(out, "wb") as handle, open(big, "rb") as one, open(short, "rb") as two:
        sink = Sink(handle.fileno())
        frames = StoredFrames(codec, sink)
        head1 = header("./big.jpg", os.stat(big), b"0", size=13 << 20)
        head2 = header("./short.jpg", os.stat(short), b"0", size=300_000)
        assert frames.member(head1, one.fileno(), 13 << 20) == 13 << 20
        assert frames.member(head2, two.fileno(), 300_000) == 1000
        written = sink.finish()
    assert written == {"bytes": out.stat().st_size, "sha256": _sha256(out)}
    data = _tar(out, codec)
    second = data[len(head1) + (13 << 20) :]
    assert second == head2 + b"y" * 1000 + bytes(299_000) + bytes(-300_000 % 512)
