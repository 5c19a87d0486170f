"""Blob bytes written around the page cache (O_DIRECT) in aligned blocks, the tail and
anything unaligned through it: the file always ends up with exactly the bytes given."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.errors import DigestMismatchError
from bundler.oci.digest import Digest
from bundler.stores import direct_io
from bundler.stores.direct_io import ALIGN_BYTES, BLOCK_BYTES, DirectAppender
from bundler.stores.layout import LayoutStore

DATA = random.Random(17).randbytes(3 * BLOCK_BYTES + 12_345)


def pieces(data: bytes, seed: int) -> Iterator[bytes]:
    """``data`` cut at random places, from 1 byte to two blocks long."""
    rng, at = random.Random(seed), 0
    while at < len(data):
        step = rng.choice([1, 7, 4096, 65_536, BLOCK_BYTES - 3, 2 * BLOCK_BYTES + 5])
        yield data[at:at + step]
        at += step


def append(path: Path, offset: int, chunks: Iterator[bytes]) -> bool:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with DirectAppender(fd, path, offset) as out:
            direct = out.direct
            for chunk in chunks:
                out.write(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return direct


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_file_gets_exactly_the_bytes_given(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "blob"
    direct = append(path, 0, pieces(DATA, seed))
    assert path.read_bytes() == DATA
    assert direct == (getattr(os, "O_DIRECT", 0) != 0 and _takes_direct(tmp_path))


def test_an_aligned_start_is_continued_and_an_unaligned_one_goes_through_the_cache(
        tmp_path: Path) -> None:
    aligned, unaligned = tmp_path / "a", tmp_path / "u"
    aligned.write_bytes(DATA[:2 * ALIGN_BYTES])
    unaligned.write_bytes(DATA[:1000])
    assert append(aligned, 2 * ALIGN_BYTES, pieces(DATA[2 * ALIGN_BYTES:], 4)) == \
        _takes_direct(tmp_path)
    assert append(unaligned, 1000, pieces(DATA[1000:], 5)) is False
    assert aligned.read_bytes() == DATA
    assert unaligned.read_bytes() == DATA


def test_a_filesystem_that_refuses_direct_writes_gets_them_through_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The open succeeds but the first direct write answers EINVAL (as some FUSE
    filesystems do): everything, the block that failed included, lands plainly."""
    real_pwrite, refused = os.pwrite, []

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if fd not in plain_fds:
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    plain_fds = {fd}
    monkeypatch.setattr(direct_io.os, "pwrite", pwrite)
    try:
        with DirectAppender(fd, path, 0) as out:
            for chunk in pieces(DATA, 6):
                out.write(chunk)
            assert out.direct is False or not refused
    finally:
        os.close(fd)
    assert path.read_bytes() == DATA
    assert refused in ([], [0])  # [] where the open itself was refused


def test_a_cut_source_keeps_what_arrived_and_a_rerun_completes_the_blob(
        tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "bundle", create=True)
    digest = Digest("sha256", hashlib.sha256(DATA).hexdigest())
    cut_at = BLOCK_BYTES + 5000

    def cut(offset: int) -> Iterator[bytes]:
        yield DATA[:cut_at]
        yield DATA[cut_at:cut_at + 100]  # held back by the reader, never written
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        store.put_blob(digest, len(DATA), cut)
    partial = store.blob_path(digest).with_name(f".{digest.hex}.partial")
    assert partial.read_bytes() == DATA[:cut_at]
    offsets: list[int] = []

    def rest(offset: int) -> Iterator[bytes]:
        offsets.append(offset)
        yield from pieces(DATA[offset:], 7)

    assert store.put_blob(digest, len(DATA), rest) == len(DATA) - cut_at
    assert offsets == [cut_at]
    assert store.blob_path(digest).read_bytes() == DATA
    assert not partial.exists()


def test_wrong_bytes_leave_no_blob_and_no_partial(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "bundle", create=True)
    digest = Digest("sha256", hashlib.sha256(DATA).hexdigest())
    wrong = bytes([DATA[0] ^ 1]) + DATA[1:]
    with pytest.raises(DigestMismatchError):
        store.put_blob(digest, len(DATA), lambda offset: pieces(wrong, 8))
    assert list((tmp_path / "bundle/blobs/sha256").iterdir()) == []


def _takes_direct(folder: Path) -> bool:
    """Whether ``folder``'s filesystem opens files with O_DIRECT."""
    probe = folder / ".probe"
    probe.touch()
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
    except OSError:
        return False
    finally:
        probe.unlink()
    return True
