"""Archives written by other tools, in their member order: skopeo's ``oci-archive:``,
``ctr images export`` and ``tar -C layout .`` put the blobs first and ``index.json``
last. From a file bundler reads them in any order (one pass over the headers, then the
members where they are); only a pipe needs bundler's own order, and then says so.
``list``, ``verify`` and ``import`` accept and refuse the same archives.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.oci.content import OCI_INDEX
from bundler.sandbox import LocalRegistry
from bundler.sandbox.engines import start_containerd, write_large_layout
from bundler.sandbox.images import make_image, random_layer

BUNDLER = str(Path(sys.executable).with_name("bundler"))
REF_NAME = "org.opencontainers.image.ref.name"
LARGE = 210 << 20
TEMP_LIMIT = 64 << 20
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")
needs_ctr = pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("ctr") is None,
                               reason="containerd missing")


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def skopeo_raw(reference: str) -> bytes:
    proc = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{reference}"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def blob_digests(registry: LocalRegistry, repository: str, digests: list[str]) -> list[int]:
    with registry.client() as http:
        return [http.head(f"{registry.url}/v2/{repository}/blobs/{d}").status_code
                for d in digests]


def measured_import(archive: Path, to: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str],
                                                                 int, int]:
    """``bundler import ARCHIVE --to TO`` in a child whose TMPDIR is ``tmp``.

    Returns:
        (the process, the most bytes seen under ``tmp`` at once, the child's peak RSS in
        bytes: its own ``VmHWM``, polled; ``ru_maxrss`` would count the forked test
        process).
    """
    tmp.mkdir()
    peak, hwm, done = [0], [0], threading.Event()
    out, err = tmp.parent / "stdout", tmp.parent / "stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([BUNDLER, "import", str(archive), "--to", to, "-q"],
                                   stdout=stdout, stderr=stderr,
                                   env={**os.environ, "TMPDIR": str(tmp)})

        def watch() -> None:
            status = Path(f"/proc/{process.pid}/status")
            while not done.is_set():
                used = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
                peak[0] = max(peak[0], used)
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            hwm[0] = max(hwm[0], int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
                done.wait(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            process.wait(timeout=300)
        finally:
            done.set()
            watcher.join()
    return (subprocess.CompletedProcess(process.args, process.returncode, out.read_text(),
                                        err.read_text()), peak[0], hwm[0])


def archive_digests(path: Path) -> dict[str, int]:
    """blob digest -> size of every blob member of an archive."""
    with tarfile.open(path) as tar:
        return {"sha256:" + m.name.rsplit("/", 1)[1]: m.size for m in tar.getmembers()
                if m.isfile() and m.name.startswith("blobs/sha256/")}


@pytest.fixture(scope="module")
def large_layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("large") / "layout"
    return root, write_large_layout(root, LARGE, name="1")


@pytest.fixture(scope="module")
def skopeo_archive(large_layout: tuple[Path, dict[str, str]]) -> Path:
    root, _ = large_layout
    archive = root.parent / "skopeo.tar"
    subprocess.run(["skopeo", "copy", f"oci:{root}:1",
                    f"oci-archive:{archive}:example.com/large/image:1"], check=True,
                   capture_output=True, timeout=300)
    return archive


def check_large_import(archive: Path, registry: LocalRegistry, tmp_path: Path,
                       repository: str) -> None:
    """Import from the file: every digest equal, temp disk and memory bounded."""
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    assert names[-1] in ("index.json", "oci-layout", "manifest.json")  # blobs came first
    blobs = archive_digests(archive)
    assert max(blobs.values()) > 200 << 20
    proc, temp_peak, rss = measured_import(archive, f"{registry.host}/peers", tmp_path / "tmp")
    assert proc.returncode == 0, proc.stderr
    top = index["manifests"][0]["digest"]
    raw = skopeo_raw(f"{registry.host}/peers/{repository}")
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == top
    with tarfile.open(archive) as tar:
        assert raw == tar.extractfile("blobs/sha256/" + top[7:]).read()  # type: ignore[union-attr]
    manifest = json.loads(raw)
    layers = [d["digest"] for d in [manifest["config"], *manifest["layers"]]]
    assert blob_digests(registry, f"peers/{repository.split(':')[0]}", layers) == [200, 200]
    assert temp_peak <= TEMP_LIMIT
    assert temp_peak == 0  # read by offsets: nothing unpacked at all
    assert 0 < rss < 150 << 20  # the 210 MiB layer is never whole in memory
    print(f"\n{archive.name}: {max(blobs.values())} bytes layer; temp peak {temp_peak} "
          f"bytes; import RSS {rss >> 20} MiB")


@needs_skopeo
def test_a_skopeo_oci_archive_of_210_mib_imports_from_the_file(
        skopeo_archive: Path, registry: LocalRegistry, tmp_path: Path) -> None:
    check_large_import(skopeo_archive, registry, tmp_path, "large/image:1")
    listing = list_bundle(skopeo_archive)
    assert [i.name for i in listing.images] == ["example.com/large/image:1"]
    report = verify_bundle(skopeo_archive)
    assert (report.problems, report.warnings, report.images, report.blobs) == ([], [], 1, 3)


@needs_skopeo
@needs_ctr
def test_a_ctr_images_export_of_210_mib_imports_from_the_file(
        skopeo_archive: Path, registry: LocalRegistry, tmp_path: Path) -> None:
    daemon = start_containerd(tmp_path / "containerd")
    exported = tmp_path / "ctr.tar"
    try:
        daemon.ctr("images", "import", "--no-unpack", "--base-name", "example.com/large/image",
                   str(skopeo_archive))
        daemon.ctr("images", "export", str(exported), "example.com/large/image:1")
    finally:
        daemon.stop()
    with tarfile.open(exported) as tar:
        assert "manifest.json" in tar.getnames()  # ctr writes docker's metadata too
    check_large_import(exported, registry, tmp_path, "large/image:1")
    assert archive_digests(exported) == archive_digests(skopeo_archive)


# -- any member order, small ------------------------------------------------------------
def write_archive(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            add(tar, name, data)


def blobs_first(name: str = "example.com/team/app:1", layer_size: int = 9 << 20,
                extra: list[tuple[str, bytes]] | None = None):  # type: ignore[no-untyped-def]
    """One image whose 9 MiB layer (larger than one manifest may be) comes first, then
    config, manifest, oci-layout, index.json: the order of skopeo and ``tar -C``."""
    image = make_image([random_layer(21, layer_size)])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {**image.descriptor(), "annotations": {REF_NAME: name}}]}).encode()
    members = [(f"blobs/sha256/{b.digest[7:]}", b.data) for b in (*image.layers, image.config)]
    members += [(f"blobs/sha256/{image.digest[7:]}", image.manifest_bytes),
                *(extra or []), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                ("index.json", index)]
    return image, members


def test_list_verify_and_import_agree_on_an_archive_in_any_order(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image, members = blobs_first(extra=[("manifest.json", b"[]"), ("repositories", b"{}")])
    path = tmp_path / "any-order.tar"
    write_archive(path, members)
    listing = list_bundle(path)
    assert [(i.name, str(i.digest)) for i in listing.images] == [
        ("example.com/team/app:1", image.digest)]
    report = verify_bundle(path)
    assert (report.problems, report.warnings, report.images, report.blobs) == ([], [], 1, 3)
    result = import_bundle(path, to=f"{registry.host}/any")
    assert [str(t.destination) for t in result.targets] == [
        f"{registry.host}/any/team/app:1@{image.digest}"]
    assert skopeo_raw(f"{registry.host}/any/team/app:1") == image.manifest_bytes


def test_from_a_pipe_the_order_matters_and_the_error_says_to_give_the_file(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image, members = blobs_first()
    path = tmp_path / "any-order.tar"
    write_archive(path, members)
    layer = image.layers[0]
    since = registry.mark()
    with open(path, "rb") as f:
        proc = subprocess.run([BUNDLER, "import", "-", "--to", f"{registry.host}/pipe", "-q"],
                              stdin=f, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: stdin: blobs/sha256/{layer.digest[7:]} ({layer.size} bytes) arrived before "
        "the manifests that name it; read once (from a pipe or zstd-compressed), an archive "
        "must be in bundle order (oci-layout, index.json, manifests, configs, layers): give "
        "it as an uncompressed .tar file (or its volumes) instead, which is read in any "
        "order\n")
    assert [r for r in registry.requests(since) if r[0] not in ("GET", "HEAD")] == []


def test_a_blob_no_manifest_names_is_ignored_with_a_warning(
        registry: LocalRegistry, tmp_path: Path) -> None:
    stray = random_layer(5, 9 << 20)
    image, members = blobs_first(extra=[(f"blobs/sha256/{stray.digest[7:]}", stray.data)])
    members.insert(0, members.pop(-3))  # the stray blob first, before any manifest
    path = tmp_path / "stray.tar"
    write_archive(path, members)
    report = verify_bundle(path)
    assert report.problems == []
    assert report.warnings == [f"{path}: blobs/sha256/{stray.digest[7:]} is named by no "
                               "manifest; it is ignored"]
    assert import_bundle(path, to=f"{registry.host}/stray").targets
    # from a pipe too: the image follows the stray blob, which is read past
    piped = tmp_path / "piped.tar"
    image2, members2 = blobs_first(layer_size=4096)
    write_archive(piped, [(f"blobs/sha256/{stray.digest[7:]}", stray.data), *members2])
    with open(piped, "rb") as f:
        proc = subprocess.run([BUNDLER, "import", "-", "--to", f"{registry.host}/pipe", "-q"],
                              stdin=f, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"note: stdin: blobs/sha256/{stray.digest[7:]} is named by no "
                           "manifest of the images imported; it was ignored\n")
    assert skopeo_raw(f"{registry.host}/pipe/team/app:1") == image2.manifest_bytes


def test_a_tar_that_is_neither_a_layout_nor_a_docker_archive_is_refused(
        registry: LocalRegistry, tmp_path: Path) -> None:
    path = tmp_path / "plain.tar"
    write_archive(path, [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')])
    expected = (f"{path}: the archive has no index.json (it is no OCI image layout) and no "
                "manifest.json (it is no docker save archive)")
    since = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(path, to=f"{registry.host}/x")
    assert str(info.value) == expected
    assert verify_bundle(path).problems == [expected]
    with pytest.raises(BundleError):
        list_bundle(path)
    assert registry.requests(since) == []


def split_volumes(path: Path, size: int, checksums: bool) -> Path:
    """Cut ``path`` into ``NAME.000``, ``NAME.001``, ... (and ``NAME.sha256``); returns
    the base name (which then does not exist)."""
    data = path.read_bytes()
    lines = []
    for number, start in enumerate(range(0, len(data), size)):
        volume = path.with_name(f"{path.name}.{number:03d}")
        volume.write_bytes(data[start:start + size])
        lines.append(f"{hashlib.sha256(data[start:start + size]).hexdigest()}  {volume.name}")
        lines.append(f"# {volume.name} {len(data[start:start + size])}")
    path.unlink()
    if checksums:
        path.with_name(path.name + ".sha256").write_text(
            "\n".join(lines[0::2] + lines[1::2]) + "\n")
    return path


def test_volumes_of_an_archive_in_any_order_are_read_by_offsets(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image, members = blobs_first()
    path = tmp_path / "vol.tar"
    write_archive(path, members)
    base = split_volumes(path, 4 << 20, checksums=True)
    assert len(list(tmp_path.glob("vol.tar.0*"))) == 3
    assert [i.name for i in list_bundle(base).images] == ["example.com/team/app:1"]
    report = verify_bundle(tmp_path / "vol.tar.001")
    assert (report.problems, report.warnings, report.blobs) == ([], [], 3)
    result = import_bundle(base, to=f"{registry.host}/vol")
    assert [str(t.destination) for t in result.targets] == [
        f"{registry.host}/vol/team/app:1@{image.digest}"]
    # a damaged volume is found before anything is pushed
    volume = tmp_path / "vol.tar.001"
    sound = hashlib.sha256(volume.read_bytes()).hexdigest()
    damaged = bytearray(volume.read_bytes())
    damaged[100] ^= 1  # inside the 9 MiB layer, the first member
    volume.write_bytes(bytes(damaged))
    expected = (f"volume vol.tar.001: sha256 {hashlib.sha256(bytes(damaged)).hexdigest()} "
                f"does not match the checksum file ({sound}); it is damaged or belongs to "
                "another bundle")
    since = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(base, to=f"{registry.host}/vol2")
    assert str(info.value) == expected
    assert registry.requests(since) == []
    joined = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("vol.tar.0*")))
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        layer = image.layers[0]
        got = hashlib.sha256(tar.extractfile(  # type: ignore[union-attr]
            f"blobs/sha256/{layer.digest[7:]}").read()).hexdigest()
    assert verify_bundle(base).problems == [
        expected, f"example.com/team/app:1: digest mismatch (blobs/sha256/{layer.digest[7:]}): "
                  f"expected {layer.digest}, got sha256:{got}"]


def test_volumes_without_a_checksum_file_verify_with_a_warning(tmp_path: Path) -> None:
    _, members = blobs_first()
    path = tmp_path / "bare.tar"
    write_archive(path, members)
    base = split_volumes(path, 4 << 20, checksums=False)
    report = verify_bundle(base)
    assert (report.problems, report.images, report.blobs) == ([], 1, 3)
    assert report.warnings == [f"{base}: no checksum file bare.tar.sha256; the volumes were "
                               "checked through the digests of the blobs they hold"]


def test_serve_reads_an_archive_in_any_order_through_the_same_index(tmp_path: Path) -> None:
    """``bundler serve`` reads a tar through the import's one member index: blobs first,
    docker metadata beside, split volumes; a blob's segments cross volumes, exact bytes."""
    from bundler.oci.digest import Digest
    from bundler.serve.index import build_namespace

    image, members = blobs_first(extra=[("manifest.json", b"[]"), ("repositories", b"{}")])
    path = tmp_path / "served.tar"
    write_archive(path, members)
    base = split_volumes(path, 4 << 20, checksums=False)
    namespace = build_namespace([base])
    try:
        assert namespace.images == 1
        layer = image.layers[0]
        source, size = namespace.blobs[Digest.parse(layer.digest)]
        blob = source.open_blob(Digest.parse(layer.digest), size)
        assert len(blob.segments) >= 2
        data = b"".join(os.pread(s.file.fileno(), s.size, s.offset) for s in blob.segments)
        assert data == layer.data
    finally:
        namespace.close()
