"""Unit tests of bundler.digest: the Digest value and the VerifyingReader."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler.errors import (
    DigestMismatchError,
    IntegrityError,
    InvalidReferenceError,
    SizeMismatchError,
)
from bundler.oci.digest import Digest, VerifyingReader, sha256_digest

DATA = random.Random(42).randbytes(10_000)
DIGEST = Digest("sha256", hashlib.sha256(DATA).hexdigest())
EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def flipped(data: bytes, position: int) -> bytes:
    """``data`` with the byte at ``position`` XOR 0xFF."""
    out = bytearray(data)
    out[position] ^= 0xFF
    return bytes(out)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- Digest ---------------------------------------------------------------------------------


def test_parse_and_str() -> None:
    digest = Digest.parse(EMPTY_SHA256)
    assert digest.algorithm == "sha256"
    assert digest.hex == EMPTY_SHA256[7:]
    assert str(digest) == EMPTY_SHA256
    assert digest.short == "sha256:e3b0c44298fc"


def test_of_matches_hashlib_for_sha256_and_sha512() -> None:
    assert str(Digest.of(b"")) == EMPTY_SHA256
    assert Digest.of(DATA) == DIGEST
    assert sha256_digest(DATA) == DIGEST
    sha512 = Digest.of(b"abc", "sha512")
    assert str(sha512) == "sha512:" + hashlib.sha512(b"abc").hexdigest()
    assert Digest.parse(str(sha512)) == sha512


def test_digest_is_a_hashable_ordered_value() -> None:
    a, b = Digest.of(b"a"), Digest.of(b"b")
    assert {a: 1, Digest.parse(str(a)): 2} == {a: 2}
    assert sorted([b, a]) == sorted([a, b])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sha256:abc",
         "invalid reference 'sha256:abc': a sha256 digest has 64 lowercase hex characters"),
        ("sha256:" + "A" * 64,
         f"invalid reference 'sha256:{'A' * 64}': a sha256 digest has 64 lowercase hex characters"),
        ("sha512:" + "a" * 64,
         f"invalid reference 'sha512:{'a' * 64}': a sha512 digest has 128 lowercase hex characters"),
        ("md5:" + "a" * 32,
         f"invalid reference 'md5:{'a' * 32}': unsupported digest algorithm 'md5'"),
        ("e3b0c44298fc", "invalid reference 'e3b0c44298fc': a digest looks like sha256:<64 hex>"),
        ("", "invalid reference '': a digest looks like sha256:<64 hex>"),
        ("sha256:", "invalid reference 'sha256:': a digest looks like sha256:<64 hex>"),
    ],
)
def test_parse_rejects_bad_digests(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Digest.parse(text)
    assert str(info.value) == message


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        Digest.parse(None)  # type: ignore[arg-type]
    assert str(info.value) == "invalid reference 'None': a digest looks like sha256:<64 hex>"


# -- VerifyingReader: sources -----------------------------------------------------------------


@pytest.fixture
def blob_file(tmp_path: Path) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    return path


def test_file_source_correct_content_passes(blob_file: Path) -> None:
    with open(blob_file, "rb") as f:
        received = list(VerifyingReader(f, DIGEST, len(DATA), chunk_size=4096))
    assert [len(c) for c in received] == [4096, 4096, 1808]
    assert b"".join(received) == DATA


@pytest.mark.parametrize("chunk_size", [1, 999, 10_000, 65_536])
def test_iterator_source_correct_content_passes(chunk_size: int) -> None:
    reader = VerifyingReader(chunks(DATA, chunk_size), DIGEST, len(DATA))
    assert b"".join(reader) == DATA
    assert reader.count == len(DATA)


def test_iterator_source_with_unknown_size_passes() -> None:
    reader = VerifyingReader(chunks(DATA, 3000), DIGEST, None)
    assert b"".join(reader) == DATA


def test_empty_chunks_are_skipped() -> None:
    source = iter([b"", DATA[:10], b"", DATA[10:], b""])
    assert b"".join(VerifyingReader(source, DIGEST, len(DATA))) == DATA


@pytest.mark.parametrize("position", [0, 5000, len(DATA) - 1])
def test_flipped_byte_in_a_file_raises_digest_mismatch(tmp_path: Path, position: int) -> None:
    bad = flipped(DATA, position)
    path = tmp_path / "bad"
    path.write_bytes(bad)
    received: list[bytes] = []
    with open(path, "rb") as f, pytest.raises(DigestMismatchError) as info:
        for chunk in VerifyingReader(f, DIGEST, len(DATA), where=str(path), chunk_size=4096):
            received.append(chunk)
    actual = "sha256:" + hashlib.sha256(bad).hexdigest()
    assert str(info.value) == f"digest mismatch ({path}): expected {DIGEST}, got {actual}"
    assert (info.value.expected, info.value.actual, info.value.digest) == (
        str(DIGEST), actual, str(DIGEST),
    )
    assert isinstance(info.value, IntegrityError)
    # the last chunk is held back: the consumer never got all the bytes
    assert sum(len(c) for c in received) == 8192


@pytest.mark.parametrize("size_known", [True, False])
@pytest.mark.parametrize("chunk_size", [1000, 4096, 10_000])
def test_flipped_byte_in_an_iterator_never_releases_the_last_chunk(
    size_known: bool, chunk_size: int
) -> None:
    bad = flipped(DATA, len(DATA) // 2)
    received: list[bytes] = []
    reader = VerifyingReader(
        chunks(bad, chunk_size), DIGEST, len(DATA) if size_known else None, where="http://r/x"
    )
    with pytest.raises(DigestMismatchError) as info:
        for chunk in reader:
            received.append(chunk)
    got = sum(len(c) for c in received)
    assert got < len(DATA)
    last = len(DATA) % chunk_size or chunk_size
    assert got == len(DATA) - last
    assert info.value.where == "http://r/x"
    assert str(info.value).startswith(f"digest mismatch (http://r/x): expected {DIGEST}, got ")


def test_short_content_raises_size_mismatch() -> None:
    received: list[bytes] = []
    with pytest.raises(SizeMismatchError) as info:
        for chunk in VerifyingReader(chunks(DATA[:-10], 4096), DIGEST, len(DATA), where="w"):
            received.append(chunk)
    assert str(info.value) == (
        f"size mismatch for {DIGEST} (w): expected 10000 bytes, got only 9990"
    )
    assert (info.value.expected, info.value.actual) == (10_000, 9_990)
    assert sum(len(c) for c in received) < len(DATA) - 10


def test_long_content_raises_size_mismatch_as_soon_as_it_overflows() -> None:
    received: list[bytes] = []
    source = chunks(DATA + b"extra", 4096)
    with pytest.raises(SizeMismatchError) as info:
        for chunk in VerifyingReader(source, DIGEST, len(DATA)):
            received.append(chunk)
    assert str(info.value) == (
        f"size mismatch for {DIGEST}: expected 10000 bytes, got at least 10005"
    )
    assert sum(len(c) for c in received) == 4096


def test_long_file_raises_size_mismatch_on_read(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(DATA + b"!")
    with open(path, "rb") as f:
        reader = VerifyingReader(f, DIGEST, len(DATA))
        with pytest.raises(SizeMismatchError) as info:
            reader.read(len(DATA))
    assert (info.value.expected, info.value.actual) == (10_000, 10_001)


def test_short_file_raises_size_mismatch_on_read(tmp_path: Path) -> None:
    path = tmp_path / "short"
    path.write_bytes(DATA[:100])
    with open(path, "rb") as f:
        reader = VerifyingReader(f, DIGEST, len(DATA))
        with pytest.raises(SizeMismatchError) as info:
            reader.read()
    assert str(info.value) == f"size mismatch for {DIGEST}: expected 10000 bytes, got only 100"


# -- VerifyingReader: read(n) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make_source",
    [lambda: io.BytesIO(DATA), lambda: chunks(DATA, 777)],
    ids=["file", "iterator"],
)
def test_read_n_semantics(make_source) -> None:  # type: ignore[no-untyped-def]
    reader = VerifyingReader(make_source(), DIGEST, len(DATA))
    assert reader.read(0) == b""
    assert reader.read(3) == DATA[:3]
    assert reader.read(1000) == DATA[3:1003]
    assert reader.count == 1003
    assert reader.read() == DATA[1003:]
    assert reader.read(5) == b""
    assert reader.read() == b""


def test_read_all_at_once_and_past_the_end() -> None:
    reader = VerifyingReader(io.BytesIO(DATA), DIGEST, len(DATA))
    assert reader.read(len(DATA) + 100) == DATA
    assert reader.read(1) == b""


def test_read_raises_before_returning_the_last_bytes() -> None:
    bad = flipped(DATA, 10)
    reader = VerifyingReader(io.BytesIO(bad), DIGEST, len(DATA))
    assert reader.read(9000) == bad[:9000]
    with pytest.raises(DigestMismatchError):
        reader.read(1000)


def test_resumed_reader_counts_the_offset() -> None:
    hasher = hashlib.sha256(DATA[:4000])
    reader = VerifyingReader(
        chunks(DATA[4000:], 1024), DIGEST, len(DATA), hasher=hasher, offset=4000
    )
    assert b"".join(reader) == DATA[4000:]
    assert reader.count == len(DATA)


def test_resumed_reader_with_wrong_prefix_fails() -> None:
    hasher = hashlib.sha256(flipped(DATA[:4000], 0))
    reader = VerifyingReader(
        chunks(DATA[4000:], 1024), DIGEST, len(DATA), hasher=hasher, offset=4000
    )
    with pytest.raises(DigestMismatchError):
        b"".join(reader)


def test_empty_blob() -> None:
    empty = Digest.parse(EMPTY_SHA256)
    assert list(VerifyingReader(iter([]), empty, 0)) == []
    assert VerifyingReader(io.BytesIO(b""), empty, 0).read() == b""
    with pytest.raises(SizeMismatchError):
        VerifyingReader(io.BytesIO(b"x"), empty, 0).read()


@pytest.mark.parametrize(("length", "released"), [(8192, 4096), (8000, 0)])
def test_file_of_unknown_size_never_releases_the_last_chunk(length: int, released: int) -> None:
    good = DATA[:length]
    bad = flipped(good, 0)
    received: list[bytes] = []
    reader = VerifyingReader(io.BytesIO(bad), Digest.of(good), None, chunk_size=4096)
    with pytest.raises(DigestMismatchError):
        for chunk in reader:
            received.append(chunk)
    assert sum(len(c) for c in received) == released
