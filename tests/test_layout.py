"""The layout store's writes: two writers of one blob, sources closed on error, and the
order in which an export makes its renames durable."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import export_bundle
from bundler.errors import SizeMismatchError
from bundler.oci.digest import Digest
from bundler.registry.client import TransportOptions
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.stores import direct_io, layout
from bundler.stores.layout import LayoutStore, file_mode

DATA = bytes(range(256)) * 4096  # 1 MiB
DIGEST = Digest("sha256", hashlib.sha256(DATA).hexdigest())


def slow_chunks(offset: int, chunk: int = 1 << 15) -> Iterator[bytes]:
    """DATA from ``offset`` in small chunks with pauses, so two writers overlap."""
    for start in range(offset, len(DATA), chunk):
        time.sleep(0.002)
        yield DATA[start:start + chunk]


def test_two_writers_of_one_blob_end_with_the_right_file(tmp_path: Path) -> None:
    stores = [LayoutStore(tmp_path / "bundle", create=True) for _ in range(2)]
    fetched: list[int] = []
    errors: list[BaseException] = []

    def write(store: LayoutStore) -> None:
        try:
            fetched.append(store.put_blob(DIGEST, len(DATA), slow_chunks))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(fetched) == [0, len(DATA)]  # the second writer found the blob complete
    folder = tmp_path / "bundle/blobs/sha256"
    assert (folder / DIGEST.hex).read_bytes() == DATA
    assert sorted(p.name for p in folder.iterdir()) == [DIGEST.hex]


def test_a_second_writer_continues_a_partial_file(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "bundle", create=True)

    def cut(offset: int) -> Iterator[bytes]:
        for start in range(offset, 300_000, 100_000):
            yield DATA[start:start + 100_000]
        raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        store.put_blob(DIGEST, len(DATA), cut)
    offsets: list[int] = []

    def rest(offset: int) -> Iterator[bytes]:
        offsets.append(offset)
        yield DATA[offset:]

    # the reader holds the last chunk back until the end: 200,000 bytes were kept
    assert store.put_blob(DIGEST, len(DATA), rest) == len(DATA) - 200_000
    assert offsets == [200_000]
    assert store.blob_path(DIGEST).read_bytes() == DATA
    assert store.blob_path(DIGEST).stat().st_mode & 0o777 == file_mode()


def test_writeback_starts_on_each_window_of_new_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the filesystem takes no direct writes, a blob continued from byte 200,000
    asks for writeback of consecutive windows of
    at least WRITEBACK_BYTES from there; each window is already in the file, not in
    Python's buffer, when it is asked for."""
    data = bytes(range(256)) * (40 << 12)  # 40 MiB
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    store = LayoutStore(tmp_path / "bundle", create=True)
    partial = store.blob_path(digest).with_name(f".{digest.hex}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(data[:200_000])
    calls: list[tuple[int, int, int]] = []

    def start_writeback(fd: int, offset: int, count: int, flags: int) -> int:
        assert os.fstat(fd).st_size >= offset + count
        calls.append((offset, count, flags))
        return 0

    monkeypatch.setattr(layout, "_START_WRITEBACK", start_writeback)
    monkeypatch.setattr(direct_io, "_O_DIRECT", 0)  # a filesystem without direct writes
    window = layout.WRITEBACK_BYTES

    def chunks(offset: int) -> Iterator[bytes]:
        for start in range(offset, len(data), 1 << 20):
            yield data[start:start + (1 << 20)]

    assert store.put_blob(digest, len(data), chunks) == len(data) - 200_000
    assert store.blob_path(digest).read_bytes() == data
    assert [c[0] for c in calls] == [200_000 + sum(c[1] for c in calls[:i])
                                     for i in range(len(calls))]
    assert all(count >= window for _, count, _ in calls)
    assert {flags for *_, flags in calls} == {2}  # SYNC_FILE_RANGE_WRITE: do not wait
    assert len(data) - 200_000 - sum(c[1] for c in calls) < window + (1 << 20)
    assert len(calls) >= 3


def test_a_failed_write_closes_its_source_at_once(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "bundle", create=True)
    closed: list[bool] = []

    def too_long(offset: int) -> Iterator[bytes]:
        try:
            while True:
                yield DATA[:1 << 16]
        finally:
            closed.append(True)

    with pytest.raises(SizeMismatchError) as info:
        store.put_blob(DIGEST, len(DATA), too_long)
    assert info.value.actual > len(DATA)
    assert closed == [True]  # while the traceback still holds the frames
    assert list((tmp_path / "bundle/blobs/sha256").iterdir()) == []


def test_export_makes_manifests_durable_before_index_json(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry, _ = seeded_registry
    bundle = tmp_path / "bundle"
    steps: list[str] = []
    real_fsync_dir, real_put, real_index = (layout.fsync_dir, LayoutStore.put_manifest,
                                            LayoutStore.write_index)

    def fsync_dir(path: Path) -> None:
        steps.append(f"fsync {Path(path).relative_to(tmp_path)}")
        real_fsync_dir(path)

    def put_manifest(self: LayoutStore, digest: Digest, data: bytes) -> None:
        real_put(self, digest, data)
        steps.append("manifest")

    def write_index(self: LayoutStore, descriptors: object, annotations: object = None) -> None:
        steps.append("index.json")
        real_index(self, descriptors, annotations)  # type: ignore[arg-type]

    monkeypatch.setattr(layout, "fsync_dir", fsync_dir)
    monkeypatch.setattr(LayoutStore, "put_manifest", put_manifest)
    monkeypatch.setattr(LayoutStore, "write_index", write_index)
    export_bundle([f"{registry.host}/base/os:1"], bundle,
                  options=TransportOptions(retries=0), jobs=1)
    # the new directories into their parents: the bundle, oci-layout, blobs/, blobs/sha256/
    assert steps[:4] == ["fsync .", "fsync bundle", "fsync bundle", "fsync bundle/blobs"]
    assert steps.count("fsync bundle/blobs") == 1
    last_manifest = len(steps) - 1 - steps[::-1].index("manifest")
    # then the receipts: inside the bundle, and beside it last
    assert steps[last_manifest + 1:] == ["fsync bundle/blobs/sha256", "index.json",
                                         "fsync bundle", "fsync bundle", "fsync ."]
    assert (bundle / "bundler-receipt.json").read_bytes() == \
        (tmp_path / "bundle.receipt.json").read_bytes()
