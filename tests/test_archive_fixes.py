"""Archive bundles: memory of verify, refused mounts, skips by target, stale volumes,
cancellation, planned blobs that never arrive, skippable zstd frames, the umask."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import tarfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import zstandard

from bundler import BundleError, export_bundle, import_bundle, list_bundle, verify_bundle
from bundler.engine import archive_check, archive_import
from bundler.engine.archive_check import HeadManifests
from bundler.errors import Cancelled, NotFoundError
from bundler.oci.content import OCI_INDEX, OCI_MANIFEST, Descriptor, parse_manifest
from bundler.oci.digest import Digest
from bundler.oci.graph import walk
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.sandbox.images import Blob, make_image, make_index, random_layer
from bundler.sandbox.push import push
from bundler.stores.archive_export import ArchiveExport
from bundler.stores.archive_writer import ArchiveWriter, file_mode

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"


# -- helpers -----------------------------------------------------------------------------
def dest_digest(reg: LocalRegistry, repository: str, identifier: str) -> str | None:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                             headers={"Accept": ACCEPT})
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 \
            else None


def pairs_count(seeded: SeededSet) -> int:
    """(repository, blob) pairs an import into an empty registry creates."""
    repos: dict[str, set[str]] = {}
    for entry in seeded.entries:
        repos.setdefault(entry.repository, set()).update(entry.blob_sizes)
    return sum(len(blobs) for blobs in repos.values())


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def seeded_zst(seeded_registry: tuple[LocalRegistry, SeededSet],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded set exported once as .tar.zst."""
    _, seeded = seeded_registry
    path = tmp_path_factory.mktemp("fixes") / "bundle.tar.zst"
    export_bundle(seeded.references, path)
    return path


@pytest.fixture(scope="module")
def tool_tar(seeded_registry: tuple[LocalRegistry, SeededSet],
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """legacy/tool exported as a plain .tar."""
    _, seeded = seeded_registry
    path = tmp_path_factory.mktemp("tool") / "tool.tar"
    export_bundle([seeded.get("legacy/tool").reference], path)
    return path


# -- 1. verify streams large blobs -------------------------------------------------------
def big_layer_archive(path: Path, size: int, *, compressed: bool) -> None:
    """A one-image bundle whose layer has ``size`` random bytes, built without holding it."""
    rng = random.Random(5)
    layer_file = path.with_name("layer.bin")
    hasher = hashlib.sha256()
    with open(layer_file, "wb") as f:
        for _ in range(size >> 20):
            chunk = rng.randbytes(1 << 20)
            hasher.update(chunk)
            f.write(chunk)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": "sha256:" + hasher.hexdigest(), "size": size}
    config_bytes = json.dumps({"architecture": "amd64", "os": "linux",
                               "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
                              ).encode()
    config = {"mediaType": "application/vnd.oci.image.config.v1+json",
              "digest": str(Digest.of(config_bytes)), "size": len(config_bytes)}
    manifest_bytes = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                 "config": config, "layers": [layer]}).encode()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": str(Digest.of(manifest_bytes)),
         "size": len(manifest_bytes),
         "annotations": {"org.opencontainers.image.ref.name": "example.com/big/one:1"}}]}
    tar_path = path.with_name("plain.tar")
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", json.dumps(index).encode())
        for data in (manifest_bytes, config_bytes):
            add(tar, "blobs/sha256/" + Digest.of(data).hex, data)
        info = tarfile.TarInfo("blobs/sha256/" + hasher.hexdigest())
        info.size = size
        with open(layer_file, "rb") as f:
            tar.addfile(info, f)
    layer_file.unlink()
    if compressed:
        with open(tar_path, "rb") as src, open(path, "wb") as dst:
            zstandard.ZstdCompressor(level=1).copy_stream(src, dst)
        tar_path.unlink()
    else:
        tar_path.rename(path)


@pytest.mark.parametrize("name", ["big.tar", "big.tar.zst"])
def test_verify_streams_a_large_blob(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    big_layer_archive(path, 64 << 20, compressed=name.endswith(".zst"))
    tracemalloc.start()
    try:
        report = verify_bundle(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.problems == []
    assert (report.images, report.blobs) == (1, 3)
    assert peak < 16 << 20, f"verify held {peak} bytes at its peak"


# -- 2. a registry that refuses mounts ---------------------------------------------------
@pytest.fixture
def shared_big_layer(registry_factory, tmp_path: Path) -> tuple[Path, str, list[str]]:  # type: ignore[no-untyped-def]
    """Two repositories holding one image with a 3 MiB layer, exported as .tar.zst."""
    source = registry_factory()
    image = make_image([random_layer(11, 3 << 20)])
    for repository in ("big/a", "big/b"):
        push(source, repository, image, tag="1")
    path = tmp_path / "big.tar.zst"
    export_bundle([f"{source.host}/big/a:1", f"{source.host}/big/b:1"], path)
    return path, image.digest, [b.digest for b in image.blobs]


@pytest.mark.parametrize("answer", [404, 202])
def test_import_when_the_registry_refuses_mounts(answer: int, shared_big_layer: tuple,
                                                 registry: LocalRegistry,
                                                 fault_proxy) -> None:  # type: ignore[no-untyped-def]
    path, digest, blobs = shared_big_layer
    proxy = fault_proxy(registry.url)
    if answer == 404:
        proxy.status(r"mount=", 404, method="POST", times=None)
    else:  # no mount support: a plain upload session is opened instead
        for _ in blobs:
            with registry.client() as http:
                opened = http.post(f"{registry.url}/v2/x/big/b/blobs/uploads/")
            assert opened.status_code == 202
            parts = urlsplit(opened.headers["Location"])
            proxy.status(r"^/v2/x/big/b/blobs/uploads/\?.*mount=", 202,
                         {"Location": f"{parts.path}?{parts.query}",
                          "Docker-Upload-UUID": opened.headers["Docker-Upload-UUID"]},
                         method="POST", times=1)
    result = import_bundle(path, to=f"{proxy.host}/x")
    assert dest_digest(registry, "x/big/a", "1") == digest
    assert dest_digest(registry, "x/big/b", "1") == digest
    assert (result.blobs_uploaded, result.blobs_mounted) == (2 * len(blobs), 0)
    assert proxy.count("POST", r"mount=") == len(blobs)
    assert list(Path(os.environ.get("TMPDIR", "/tmp")).glob("bundler-blob-*")) == []


def test_import_of_the_seeded_set_without_mounts(seeded_zst: Path, seeded_registry: tuple,
                                                 registry: LocalRegistry,
                                                 fault_proxy) -> None:  # type: ignore[no-untyped-def]
    _, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    proxy.status(r"mount=", 404, method="POST", times=None)
    result = import_bundle(seeded_zst, to=f"{proxy.host}/nomount")
    for entry in seeded.entries:
        got = dest_digest(registry, f"nomount/{entry.repository}", entry.tag or entry.digest)
        assert got == entry.digest, entry.reference
    assert (result.blobs_uploaded, result.blobs_mounted) == (pairs_count(seeded), 0)
    assert proxy.count("POST", r"mount=") == pairs_count(seeded) - seeded.unique_blob_count


# -- 3. images are skipped by target ------------------------------------------------------
def test_one_source_to_two_destinations_one_already_there(seeded_zst: Path,
                                                          seeded_registry: tuple,
                                                          registry: LocalRegistry) -> None:
    _, seeded = seeded_registry
    web = seeded.get("apps/web", "1.0")
    import_bundle(seeded_zst, mapping=[(web.reference, f"{registry.host}/m/a")])
    result = import_bundle(seeded_zst, mapping=[(web.reference, f"{registry.host}/m/a"),
                                                (web.reference, f"{registry.host}/m/b")])
    assert dest_digest(registry, "m/b", "1.0") == web.digest
    assert result.skipped_images == [web.reference]
    assert (result.blobs_uploaded, result.blobs_mounted) == (0, len(web.blob_sizes))


# -- 4. stale volumes --------------------------------------------------------------------
@pytest.mark.parametrize("split", [None, 64 << 10])
def test_export_refuses_a_stale_volume(split: int | None, seeded_registry: tuple,
                                       tmp_path: Path) -> None:
    _, seeded = seeded_registry
    stale = tmp_path / "out.tar.zst.005"
    stale.write_bytes(b"old")
    with pytest.raises(BundleError) as info:
        export_bundle([seeded.get("legacy/tool").reference], tmp_path / "out.tar.zst",
                      split_size=split)
    assert str(info.value) == (f"{stale} already exists; an archive bundle is written "
                               "whole: remove it or choose another output name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar.zst.005"]
    assert stale.read_bytes() == b"old"


# -- 5. cancellation ---------------------------------------------------------------------
def test_cancelled_import_raises_cancelled(tool_tar: Path, registry: LocalRegistry) -> None:
    stop = threading.Event()
    stop.set()
    since = registry.mark()
    with pytest.raises(Cancelled):
        import_bundle(tool_tar, to=f"{registry.host}/c", stop=stop)
    assert registry.requests(since) == []


# -- 6. planned blobs that never arrive ---------------------------------------------------
def plan_of(image) -> tuple[Descriptor, object]:  # type: ignore[no-untyped-def]
    descriptor = Descriptor.from_dict({**image.descriptor(), "annotations": {
        "org.opencontainers.image.ref.name": "example.com/x/y:1"}})
    manifest = parse_manifest(image.manifest_bytes, image.media_type)
    return descriptor, walk(descriptor, lambda _d: manifest, name="example.com/x/y:1")


def serve(data: bytes):  # type: ignore[no-untyped-def]
    return lambda offset: iter([data[offset:]])


def test_commit_refuses_an_archive_missing_a_planned_blob(tmp_path: Path) -> None:
    layer = random_layer(3, 4096)
    image = make_image([layer])
    descriptor, plan = plan_of(image)
    output = tmp_path / "out.tar"
    archive = ArchiveExport(output, "tar")
    archive.start([descriptor], [plan])  # type: ignore[list-item]
    archive.put_blob(Digest.parse(image.config.digest), image.config.size,
                       serve(image.config.data))
    with pytest.raises(BundleError) as info:
        archive.commit()
    assert str(info.value) == (f"{output}: 1 planned blob was not written to the archive "
                               f"({layer.digest})")
    assert list(tmp_path.iterdir()) == []


def test_a_foreign_layer_not_served_is_left_out_on_purpose(tmp_path: Path) -> None:
    base = random_layer(4, 2048)
    foreign = Blob(FOREIGN, b"", "sha256:" + "ab" * 32, 1234)
    image = make_image([base])
    manifest = json.loads(image.manifest_bytes)
    manifest["layers"].append(foreign.descriptor())
    raw = json.dumps(manifest).encode()
    descriptor = Descriptor.from_dict({"mediaType": OCI_MANIFEST, "digest": str(Digest.of(raw)),
                                       "size": len(raw)})
    parsed = parse_manifest(raw, OCI_MANIFEST)
    plan = walk(descriptor, lambda _d: parsed, name="example.com/x/y:1")
    output = tmp_path / "out.tar"
    archive = ArchiveExport(output, "tar")
    archive.start([descriptor], [plan])

    def not_served(offset: int) -> Iterator[bytes]:
        raise NotFoundError("blob unknown", status=404)
        yield b""  # a generator, as the registry client's

    for blob in (image.config, base):
        archive.put_blob(Digest.parse(blob.digest), blob.size, serve(blob.data))
    with pytest.raises(NotFoundError):
        archive.put_blob(Digest.parse(foreign.digest), foreign.size, not_served)
    assert archive.commit() == [output]
    assert archive.skipped == [Digest.parse(foreign.digest)]
    with tarfile.open(output) as tar:
        names = tar.getnames()
    assert "blobs/sha256/" + "ab" * 32 not in names
    assert "blobs/sha256/" + base.digest.removeprefix("sha256:") in names


def test_downloads_stop_when_the_writer_fails(tmp_path: Path) -> None:
    chunk, count = b"\x01" * (1 << 20), 16
    data = chunk * count
    layer = Blob("application/vnd.oci.image.layer.v1.tar", b"",
                 "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    image = make_image([layer])
    descriptor, plan = plan_of(image)
    archive = ArchiveExport(tmp_path / "out.tar", "tar")

    def broken(*args: object) -> None:
        raise BundleError("disk full")

    archive.writer.copy_from = broken  # type: ignore[method-assign]
    archive.start([descriptor], [plan])  # type: ignore[list-item]
    archive.put_blob(Digest.parse(image.config.digest), image.config.size,
                       serve(image.config.data))
    pulled: list[int] = []

    def source(offset: int) -> Iterator[bytes]:
        for number in range(count):
            if number == 2:  # the writer follows the first MiB, and fails
                deadline = time.monotonic() + 30
                while archive._error is None and time.monotonic() < deadline:
                    time.sleep(0.01)
            pulled.append(number)
            yield chunk

    try:
        with pytest.raises(BundleError) as info:
            archive.put_blob(Digest.parse(layer.digest), layer.size, source)
        assert str(info.value) == f"{tmp_path / 'out.tar'}: cannot write the archive: disk full"
        assert len(pulled) <= 4
    finally:
        archive.abort()
    assert list(tmp_path.iterdir()) == []


# -- 7. one walk of the manifests, kept as they arrive ------------------------------------
def test_head_manifests_follow_members_in_any_order() -> None:
    images = [make_image([random_layer(20 + n, 512)], architecture=arch)
              for n, arch in enumerate(("amd64", "arm64"))]
    index = make_index(images, attestations=False)
    top = Descriptor.from_dict({"mediaType": index.media_type, "digest": index.digest,
                                "size": index.size})
    bad: list[Digest] = []
    graph = HeadManifests(lambda digest, _exc: bad.append(digest))
    first = Digest.parse(images[0].digest)
    graph.offer(first, images[0].manifest_bytes)  # a child before anything names it
    graph.offer(Digest.parse(images[0].config.digest), images[0].config.data)
    assert not graph.complete and graph.missing == {}
    graph.root([top])
    assert list(graph.missing) == [top.digest]
    graph.offer(top.digest, index.manifest_bytes)
    assert list(graph.missing) == [Digest.parse(images[1].digest)]
    assert set(graph.manifests) == {top.digest, first}
    graph.offer(Digest.parse(images[1].digest), b"{not json")
    assert graph.complete and bad == [Digest.parse(images[1].digest)]
    assert list(graph.held) == [Digest.parse(images[0].config.digest)]
    assert archive_import.MAX_HELD is archive_check.MAX_HELD


def test_archive_with_children_before_their_index(seeded_registry: tuple,
                                                  registry: LocalRegistry,
                                                  tmp_path: Path) -> None:
    _, seeded = seeded_registry
    multi = seeded.get("multi/arch", "1")
    ordered = tmp_path / "ordered.tar"
    export_bundle([multi.reference], ordered)
    reverse = tmp_path / "reverse.tar"
    with tarfile.open(ordered) as src, tarfile.open(reverse, "w",
                                                    format=tarfile.PAX_FORMAT) as dst:
        members = [(m, src.extractfile(m).read() if m.isfile() else None)
                   for m in src.getmembers()]
        heads = [m for m in members if m[0].name in ("oci-layout", "index.json")
                 or not m[0].isfile()]
        manifests = [m for m in members if "sha256:" + m[0].name.rsplit("/", 1)[-1]
                     in multi.manifests]
        rest = [m for m in members if m not in heads and m not in manifests]
        for info, data in heads + manifests[::-1] + rest:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    assert verify_bundle(reverse).problems == []
    assert list_bundle(reverse) == list_bundle(ordered)
    import_bundle(reverse, to=f"{registry.host}/rev")
    assert dest_digest(registry, "rev/multi/arch", "1") == multi.digest


# -- 8. skippable zstd frames ------------------------------------------------------------
def skippable(payload: bytes, magic: int = 0x184D2A50) -> bytes:
    return magic.to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


def test_a_tar_zst_that_starts_with_a_skippable_frame(tool_tar: Path, seeded_registry: tuple,
                                                      registry: LocalRegistry,
                                                      tmp_path: Path) -> None:
    _, seeded = seeded_registry
    tool = seeded.get("legacy/tool")
    data = tool_tar.read_bytes()
    half = len(data) // 2
    compressor = zstandard.ZstdCompressor(level=3)
    path = tmp_path / "pzstd.tar.zst"
    path.write_bytes(skippable(b"\x00" * 4 + b"pzstd")  # pzstd: a frame-size hint first
                     + compressor.compress(data[:half])
                     + skippable(b"x" * 100_000, 0x184D2A5E)  # larger than one read piece
                     + compressor.compress(data[half:])
                     + skippable(b"seek table", 0x184D2A5F))
    assert zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO(path.read_bytes()), read_across_frames=True).read() == data
    assert verify_bundle(path).problems == []
    assert list_bundle(path) == list_bundle(tool_tar)
    import_bundle(path, to=f"{registry.host}/skip")
    assert dest_digest(registry, "skip/legacy/tool", "latest") == tool.digest


# -- 9. the umask is read once ------------------------------------------------------------
@pytest.mark.parametrize("split", [None, 1024])
def test_archive_files_get_the_umask_mode_without_flipping_it(
        split: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    current = os.umask(0o022)
    os.umask(current)
    expected = 0o666 & ~current

    def no_flip(mask: int) -> int:
        raise AssertionError("the umask was changed while threads may run")

    monkeypatch.setattr(os, "umask", no_flip)
    assert file_mode() == expected
    writer = ArchiveWriter(tmp_path / "out.tar", "tar", split_size=split)
    writer.add_bytes("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
    paths = writer.commit()
    written = sorted(tmp_path.iterdir())
    assert written == sorted(paths + ([tmp_path / "out.tar.sha256"] if split else []))
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {expected}


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_a_growing_archive_asks_for_writeback_of_what_it_wrote(
        fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The archive file's writeback is started in consecutive ranges from byte 0, each
    already written; the archive still reads back whole."""
    from bundler.stores import layout

    calls: list[tuple[int, int]] = []

    def start_writeback(fd: int, offset: int, count: int, flags: int) -> int:
        assert flags == 2 and count > 0
        assert os.fstat(fd).st_size >= offset + count
        calls.append((offset, count))
        return 0

    monkeypatch.setattr(layout, "_START_WRITEBACK", start_writeback)
    member = random.Random(7).randbytes(20 << 20)
    writer = ArchiveWriter(tmp_path / f"out.{fmt}", fmt)
    writer.add_file("blobs/sha256/big", io.BytesIO(member), len(member))
    [path] = writer.commit()
    assert len(calls) >= 2
    assert [offset for offset, _ in calls] == [sum(c for _, c in calls[:i])
                                               for i in range(len(calls))]
    assert sum(c for _, c in calls) <= path.stat().st_size
    raw = path.read_bytes()
    if fmt == "tar.zst":
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        extracted = tar.extractfile("blobs/sha256/big")
        assert extracted is not None and extracted.read() == member
