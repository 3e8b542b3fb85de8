"""The bounded reader of ``jobrunner.files`` (``read_regular_file``): what the state, the late
watcher's memory, a job's manifest and (following links) an env file are read with."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from jobrunner.files import FileTooLarge, NotRegularFile, read_regular_file, read_regular_file_stat


def test_reads_a_regular_file_within_its_limit(tmp_path):
    """The bytes of a regular file, relative to a directory descriptor or by path."""
    (tmp_path / "f").write_bytes(b"hello")
    assert read_regular_file(str(tmp_path / "f"), limit=5) == b"hello"
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_regular_file("f", dir_fd=dfd, limit=5) == b"hello"
    finally:
        os.close(dfd)


def test_refuses_a_symlink_unless_told_to_follow(tmp_path):
    """A symlink planted in the file's place is never followed (ELOOP); ``follow=True`` (a
    path the caller trusts) reads its target and returns the target's status."""
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as refused:
        read_regular_file(str(tmp_path / "link"), limit=100)
    assert refused.value.errno == errno.ELOOP
    data, info = read_regular_file_stat(str(tmp_path / "link"), limit=100, follow=True)
    assert data == b"secret" and stat.S_ISREG(info.st_mode) and info.st_size == 6


def test_refuses_a_fifo_a_directory_a_big_file_and_another_owner(tmp_path):
    """A FIFO (without blocking) or a directory: EINVAL, with its mode; over the limit: EFBIG;
    another owner than ``owner``: EPERM."""
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFile) as fifo:
        read_regular_file(str(tmp_path / "fifo"), limit=10)
    assert fifo.value.errno == errno.EINVAL and stat.S_ISFIFO(fifo.value.mode)
    with pytest.raises(NotRegularFile) as directory:
        read_regular_file(str(tmp_path), limit=10)
    assert stat.S_ISDIR(directory.value.mode)
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(FileTooLarge) as big:
        read_regular_file(str(tmp_path / "big"), limit=10)
    assert big.value.errno == errno.EFBIG
    (tmp_path / "mine").write_bytes(b"x")
    with pytest.raises(OSError) as owner:
        read_regular_file(str(tmp_path / "mine"), limit=10, owner=os.geteuid() + 1)
    assert owner.value.errno == errno.EPERM
