"""Archive bundles that can be trusted: limits shared by writers and readers, linear
zstd decoding with a ratio cap, errors instead of tracebacks, nothing left by a failed
export."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.errors import SizeMismatchError, UnsafeArchiveError
from bundler.oci.content import OCI_INDEX, Descriptor, parse_manifest
from bundler.oci.digest import Digest
from bundler.oci.graph import ImagePlan, walk
from bundler.oci.limits import HELD_LIMIT, INDEX_LIMIT
from bundler.sandbox import LocalRegistry
from bundler.sandbox.images import Blob, Image, make_image, random_layer
from bundler.stores.archive_export import ArchiveExport
from bundler.stores.volumes import VolumeWriter

REF_NAME = "org.opencontainers.image.ref.name"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
BUNDLER = str(Path(sys.executable).with_name("bundler"))


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def dest_digest(reg: LocalRegistry, repository: str, identifier: str) -> str | None:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                             headers={"Accept": ACCEPT})
    return response.headers.get("Docker-Content-Digest") if response.status_code == 200 \
        else None


def many_names(count: int) -> list[str]:
    return [f"registry.example.com:5000/team-{n % 97}/service-{n}:v1.2.{n}"
            for n in range(count)]


def export_many(output: Path, names: list[str]):  # type: ignore[no-untyped-def]
    """One small image under many names, written by the archive writer (no registry)."""
    image = make_image([random_layer(3, 1024)])
    manifest = parse_manifest(image.manifest_bytes, image.media_type)
    entries, plans = [], []
    for name in names:
        descriptor = Descriptor.from_dict({**image.descriptor(), "annotations": {
            REF_NAME: name, "io.containerd.image.name": name}})
        entries.append(descriptor)
        plans.append(walk(descriptor, lambda _d: manifest, name=name))
    with ArchiveExport(output, "tar") as archive:
        archive.start(entries, plans)
        for blob in (image.config, *image.layers):
            archive.put_blob(Digest.parse(blob.digest), blob.size,
                             lambda offset, b=blob: iter([b.data[offset:]]))
    return image


# -- 2. one set of limits --------------------------------------------------------------
def test_an_archive_of_20000_images_is_read_by_verify_list_and_import(
        tmp_path: Path, registry: LocalRegistry) -> None:
    output = tmp_path / "many.tar"
    names = many_names(20000)
    image = export_many(output, names)
    with tarfile.open(output) as tar:
        assert tar.getmember("index.json").size > 8 << 20  # over the old cap
    report = verify_bundle(output)
    assert (report.problems, report.images, report.blobs) == ([], 20000, 3)
    listing = list_bundle(output)
    assert [i.name for i in listing.images] == names
    result = import_bundle(output, mapping=[(names[12345], f"{registry.host}/one/image:1")])
    assert [t.name for t in result.targets] == [names[12345]]
    assert dest_digest(registry, "one/image", "1") == image.digest


def test_export_refuses_an_index_json_readers_would_refuse(tmp_path: Path) -> None:
    image = make_image([random_layer(4, 512)])
    manifest = parse_manifest(image.manifest_bytes, image.media_type)
    top = Descriptor.from_dict(image.descriptor())
    plan = ImagePlan(name="x", descriptor=top, manifests=[(top, manifest)],
                     blobs={b.digest: b for b in manifest.blobs})
    entries = [top.with_annotations({REF_NAME: name, "io.containerd.image.name": name})
               for name in many_names(140000)]
    output = tmp_path / "huge.tar"
    archive = ArchiveExport(output, "tar")
    with pytest.raises(BundleError) as info:
        archive.start(entries, [plan] * len(entries))
    archive.abort()
    message = str(info.value)
    assert message.startswith(f"{output}: index.json would have ")
    assert "more than the limit of 67108864 bytes (64 MiB) that readers put on it" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["big-index.tar"])
def test_readers_name_the_real_limit_on_index_json(name: str, tmp_path: Path,
                                                   registry: LocalRegistry) -> None:
    path = tmp_path / name
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    index += b" " * (INDEX_LIMIT + 1 - len(index))
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
    expected = (f"{path}: index.json has {INDEX_LIMIT + 1} bytes, more than the limit of "
                "67108864 bytes (64 MiB) on index.json")
    assert verify_bundle(path).problems == [expected]
    with pytest.raises(BundleError) as listed:
        list_bundle(path)
    assert str(listed.value) == expected
    with pytest.raises(BundleError) as imported:
        import_bundle(path, to=f"{registry.host}/x")
    assert str(imported.value) == expected
    assert "bundle order" not in expected and HELD_LIMIT > INDEX_LIMIT


# -- 6. zstd: linear decoding, a cap on the ratio ---------------------------------------
def zero_layer_archive(path: Path, size: int) -> Image:
    """A one-image .tar.zst whose layer is ``size`` zero bytes (about 10000:1 in zstd)."""
    layer = Blob(OCI_LAYER_TAR, bytes(size), "sha256:" + hashlib.sha256(bytes(size)).hexdigest(),
                 size)
    image = make_image([layer])
    plain = path.with_suffix("")
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                           "manifests": [{**image.descriptor(), "annotations": {
                                               REF_NAME: "example.com/zeros/layer:1"}}]}
                                          ).encode())
        add(tar, "blobs/sha256/" + image.digest.removeprefix("sha256:"), image.manifest_bytes)
        for blob in (image.config, layer):
            add(tar, "blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.data)
    with open(plain, "rb") as src, open(path, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    plain.unlink()
    return image


@pytest.fixture(scope="module")
def zeros_zst(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Image]:
    path = tmp_path_factory.mktemp("zeros") / "zeros.tar.zst"
    return path, zero_layer_archive(path, 96 << 20)


def test_decoding_a_zero_layer_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "zeros.tar.zst"
    zero_layer_archive(path, 48 << 20)  # within the allowance: no flag needed
    assert path.stat().st_size < 16 << 10
    tracemalloc.start()
    try:
        report = verify_bundle(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (report.problems, report.images, report.blobs) == ([], 1, 3)
    assert report.bytes >= 48 << 20
    assert peak < 16 << 20, f"verify held {peak} bytes at its peak"


def bomb_message(path: Path, layer: str) -> str:
    return (f"{path}: 'blobs/sha256/{layer}': more than 1000 bytes decompressed per "
            "compressed byte")


def test_verify_refuses_a_decompression_bomb_unless_told(zeros_zst: tuple[Path, Image]) -> None:
    path, image = zeros_zst
    layer = image.layers[0].digest.removeprefix("sha256:")
    report = verify_bundle(path)
    assert len(report.problems) == 1
    assert report.problems[0].startswith(bomb_message(path, layer))
    assert report.problems[0].endswith("refused as a decompression bomb. If the bundle is "
                                       "trusted (a layer of zeros compresses that well), "
                                       "give --max-zstd-ratio with a higher limit")
    cli = subprocess.run([BUNDLER, "verify", str(path)], capture_output=True, text=True)
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr
    assert f"problem: {bomb_message(path, layer)}" in cli.stderr
    cli = subprocess.run([BUNDLER, "verify", "--max-zstd-ratio", "20000", str(path)],
                         capture_output=True, text=True)
    assert (cli.returncode, cli.stderr) == (0, "")
    usage = subprocess.run([BUNDLER, "verify", "--max-zstd-ratio", "0", str(path)],
                           capture_output=True, text=True)
    assert usage.returncode == 2
    assert "Invalid value for '--max-zstd-ratio'" in usage.stderr


def test_import_refuses_a_decompression_bomb_and_takes_it_with_the_flag(
        zeros_zst: tuple[Path, Image], registry: LocalRegistry) -> None:
    path, image = zeros_zst
    layer = image.layers[0].digest.removeprefix("sha256:")
    with pytest.raises(UnsafeArchiveError) as info:
        import_bundle(path, to=f"{registry.host}/z")
    assert str(info.value).startswith(bomb_message(path, layer))
    assert dest_digest(registry, "z/zeros/layer", "1") is None
    import_bundle(path, to=f"{registry.host}/z", max_zstd_ratio=100000)
    assert dest_digest(registry, "z/zeros/layer", "1") == image.digest


# -- 7. errors instead of tracebacks ---------------------------------------------------
def nested_json_archive(path: Path) -> None:
    deep = b'{"schemaVersion": 2, "manifests": [], "x": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", deep)


@pytest.mark.parametrize("command", ["list", "verify", "import"])
def test_a_deeply_nested_index_json_is_an_error_line(command: str, tmp_path: Path) -> None:
    path = tmp_path / "deep.tar"
    nested_json_archive(path)
    args = [BUNDLER, command, str(path)] + (["--to", "127.0.0.1:1/x"] if command == "import"
                                            else [])
    run = subprocess.run(args, capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    prefix = "problem" if command == "verify" else "error"
    assert run.stderr.startswith(f"{prefix}: {path}: index.json: manifest is JSON nested too "
                                 "deeply to be read\n")


def test_archive_import_checks_manifest_sizes_against_descriptors(
        tmp_path: Path, registry: LocalRegistry) -> None:
    image = make_image([random_layer(9, 2048)])
    descriptor = {**image.descriptor(), "annotations": {REF_NAME: "example.com/s/x:1"}}
    descriptor["size"] += 7  # the digest is right, the size is not
    path = tmp_path / "sized.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                           "manifests": [descriptor]}).encode())
        add(tar, "blobs/sha256/" + image.digest.removeprefix("sha256:"), image.manifest_bytes)
        for blob in (image.config, *image.layers):
            add(tar, "blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.data)
    since = registry.mark()
    with pytest.raises(SizeMismatchError) as info:
        import_bundle(path, to=f"{registry.host}/s")
    assert str(info.value) == (
        f"size mismatch for {image.digest} ({path}: blobs/sha256/"
        f"{image.digest.removeprefix('sha256:')}): expected {image.size + 7} bytes, got only "
        f"{image.size}")
    assert registry.requests(since) == []
    assert verify_bundle(path).problems == [
        f"example.com/s/x:1: {image.digest} has {image.size} bytes in the archive, the "
        f"descriptor says {image.size + 7}"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """Mount small tmpfs file systems (skips where mounting is not permitted)."""
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                              str(point)], capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {run.stderr.strip()}")
        mounted.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], check=False)


@pytest.fixture(scope="module")
def many_tags(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """One small image under 150 tags: its index.json outgrows a 48 KiB disk."""
    from bundler.sandbox import start_registry
    from bundler.sandbox.push import push

    reg = start_registry(tmp_path_factory.mktemp("tags-registry"))
    try:
        image = make_image([random_layer(21, 16 << 10)])
        refs = []
        for n in range(150):
            push(reg, "many/tags-with-a-long-repository-name", image, tag=f"release-{n:04d}")
            refs.append(f"{reg.host}/many/tags-with-a-long-repository-name:release-{n:04d}")
        yield refs
    finally:
        reg.stop()


FILLER_KIB = 20  # the layer (16 KiB) then no longer fits beside its spool file


def test_directory_export_onto_a_full_disk_ends_in_an_error_line(
        many_tags: list[str], small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(48)
    output = disk / "bundle"
    run = subprocess.run([BUNDLER, "export", "-q", "-o", str(output), *many_tags],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr == (f"error: {output / 'index.json'}: cannot write index.json: No space "
                          "left on device\n")
    assert not (output / "index.json").exists()
    assert [p.name for p in output.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name,split", [("bundle.tar", None), ("bundle.tar.zst", None),
                                        ("bundle.tar", "4k"), ("bundle.tar.zst", "4k")])
def test_archive_export_onto_a_full_disk_leaves_nothing(
        name: str, split: str | None, many_tags: list[str],
        small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(48)
    filler = disk / "filler"  # a .tar.zst compresses index.json: less room for the layer
    filler.write_bytes(bytes(FILLER_KIB << 10) if name.endswith(".zst") else b"")
    output = disk / name
    args = ["--split-size", split] if split else []
    run = subprocess.run([BUNDLER, "export", "-q", "-o", str(output), *args, *many_tags],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    # the archive (or a volume) or the spool of a blob still downloading: whichever write
    # finds the disk full first is named
    named = (run.stderr.startswith(f"error: {output}: cannot write")
             or re.match(rf"error: [^\n]+: cannot write the spool file {re.escape(str(disk))}/"
                         rf"\.{re.escape(name)}\.spool-", run.stderr))
    assert named, run.stderr
    assert run.stderr.endswith("No space left on device\n")
    assert list(disk.iterdir()) == [filler]


def test_a_blob_that_does_not_fit_names_the_spool_file(
        registry: LocalRegistry, small_disk: Callable[[int], Path]) -> None:
    from bundler.sandbox.push import push

    push(registry, "big/one", make_image([random_layer(22, 256 << 10)]), tag="1")
    disk = small_disk(64)
    output = disk / "big.tar"
    run = subprocess.run([BUNDLER, "export", "-q", "-o", str(output),
                          f"{registry.host}/big/one:1"], capture_output=True, text=True)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    # the download fills the spool file while the writer copies it into the archive:
    # either write may be the one that finds the disk full, and the error names its file
    spool = (rf"error: {re.escape(registry.host)}/big/one:1: cannot write the spool file "
             rf"{re.escape(str(disk))}/\.big\.tar\.spool-[^/]+/sha256-[0-9a-f]{{64}}: "
             r"No space left on device\n")
    archive = rf"error: {re.escape(str(output))}: cannot write [^\n]*No space left on device\n"
    assert re.fullmatch(f"{spool}|{archive}", run.stderr), run.stderr
    assert list(disk.iterdir()) == []


# -- 9. a failed export leaves nothing that looks like a bundle ---------------------------
def test_volumes_whose_checksum_file_cannot_be_written_are_removed(
        small_disk: Callable[[int], Path]) -> None:
    disk = small_disk(64)
    writer = VolumeWriter(disk / "set.tar", 4096)
    writer.write(bytes(range(256)) * 16 * 16)  # 16 volumes of one 4 KiB page: the disk is full
    with pytest.raises(OSError):
        writer.commit()
    writer.abort()
    assert list(disk.iterdir()) == []
