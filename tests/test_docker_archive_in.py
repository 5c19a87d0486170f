"""docker-archive in: ``docker save`` (a real Docker engine, Debian's docker.io) and
``podman save`` (both formats) archives import, list and verify; read back with skopeo.

The legacy form holds no registry manifest: bundler builds one (config kept, layers
gzip-compressed), the same from docker's and from podman's archive of one image. The
layout forms (Docker 25+, the containerd store) keep their digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bundler import BundleError, MappingError, import_bundle, list_bundle, verify_bundle
from bundler.errors import UnsafeArchiveError
from bundler.sandbox import LocalRegistry
from bundler.sandbox.engines import (
    Dockerd,
    Podman,
    docker_binary,
)
from bundler.sandbox.images import make_image, make_index, random_layer
from bundler.stores.docker_archive import gzip_chunks

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # copies of ../shared/fixtures
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
needs_docker = pytest.mark.skipif(shutil.which("dockerd") is None or docker_binary() is None,
                                  reason="docker.io missing")
needs_podman = pytest.mark.skipif(shutil.which("podman") is None, reason="podman missing")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


GREETING = layer_tar({"etc/greeting": b"hello from bundler\n"})
OTHER = layer_tar({"etc/other": b"another layer\n"})


def legacy_archive(path: Path, layers: list[bytes], tags: list[str] | None,
                   layer_names: list[str] | None = None, diff_ids: list[str] | None = None
                   ) -> str:
    """A legacy docker archive, as written by hand; returns the config digest."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers",
                   "diff_ids": diff_ids if diff_ids is not None else [sha(x) for x in layers]},
        "history": [{"created_by": f"layer {n}"} for n in range(len(layers))]}).encode()
    names = layer_names or [f"{hashlib.sha256(b'%d' % n).hexdigest()}/layer.tar"
                            for n in range(len(layers))]
    members = [(f"{sha(config)[7:]}.json", config)]
    members += list(zip(names, layers, strict=True))
    members.append(("manifest.json", json.dumps([{
        "Config": f"{sha(config)[7:]}.json", "RepoTags": tags, "Layers": names}]).encode()))
    write_tar(path, members)
    return sha(config)


def skopeo(*args: str) -> bytes:
    proc = subprocess.run(["skopeo", *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def pushed(registry: LocalRegistry, reference: str) -> tuple[bytes, bytes]:
    """(manifest, config) as skopeo reads them from the registry."""
    return (skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}"),
            skopeo("inspect", "--config", "--raw", "--tls-verify=false",
                   f"docker://{reference}"))


def layer_files(registry: LocalRegistry, repository: str, manifest: bytes) -> list[bytes]:
    """Each pushed layer, decompressed, as its tar bytes."""
    import gzip

    out = []
    with registry.client() as http:
        for layer in json.loads(manifest)["layers"]:
            data = http.get(f"{registry.url}/v2/{repository}/blobs/{layer['digest']}").content
            assert sha(data) == layer["digest"]
            out.append(gzip.decompress(data))
    return out



@pytest.fixture(scope="module")
def docker_saved(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``docker save`` of an image whose first and third layers are the same (docker
    writes the third as a symbolic link to the first); returns (archive, image ID)."""
    folder = tmp_path_factory.mktemp("docker-saved")
    crafted = folder / "crafted.tar"
    legacy_archive(crafted, [GREETING, OTHER, GREETING], ["example.com/tiny/dup:1"])
    dockerd.run("load", "-i", str(crafted))
    image_id = dockerd.run("image", "inspect", "-f", "{{.Id}}",
                           "example.com/tiny/dup:1").stdout.decode().strip()
    saved = folder / "docker-save.tar"
    dockerd.run("save", "-o", str(saved), "example.com/tiny/dup:1")
    return saved, image_id


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    engine = Podman(tmp_path / "podman")
    try:
        yield engine
    finally:
        engine.close()


@needs_docker
def test_a_real_docker_save_imports_with_a_built_manifest(
        docker_saved: tuple[Path, str], registry: LocalRegistry) -> None:
    saved, image_id = docker_saved
    with tarfile.open(saved) as tar:
        links = [m for m in tar.getmembers() if m.issym()]
        assert [m.name.endswith("/layer.tar") for m in links] == [True]  # the duplicate
        assert "index.json" not in tar.getnames()  # the legacy form (docker 20.10)
    listing = list_bundle(saved)
    assert [i.name for i in listing.images] == ["example.com/tiny/dup:1"]
    assert listing.images[0].media_type == DOCKER_MANIFEST
    report = verify_bundle(saved)
    assert (report.problems, report.images, report.blobs) == ([], 1, 4)  # manifest,
    # config and two distinct layers
    result = import_bundle(saved, to=f"{registry.host}/dk")
    digest = listing.images[0].digest
    assert [str(t.destination) for t in result.targets] == [
        f"{registry.host}/dk/tiny/dup:1@{digest}"]
    assert result.notes == [
        f"{saved}: image #0 (example.com/tiny/dup:1): a legacy docker archive holds no "
        f"registry manifest; bundler built one (layers gzip-compressed as docker push "
        f"does): manifest {digest} is new, config {image_id} is kept"]
    manifest, config = pushed(registry, f"{registry.host}/dk/tiny/dup:1")
    assert sha(manifest) == str(digest)
    assert sha(config) == image_id  # the config digest is the image ID
    assert json.loads(manifest)["config"]["digest"] == image_id
    assert layer_files(registry, "dk/tiny/dup", manifest) == [GREETING, OTHER, GREETING]
    assert (result.blobs_uploaded, result.bytes_uploaded > 0) == (3, True)


@needs_docker
@needs_podman
@pytest.mark.parametrize("form", ["docker-archive", "oci-archive"])
def test_podman_save_archives_import(form: str, docker_saved: tuple[Path, str],
                                     registry: LocalRegistry, podman: Podman,
                                     tmp_path: Path) -> None:
    saved, image_id = docker_saved
    podman.run("load", "-i", str(saved))
    archive = tmp_path / f"podman-{form}.tar"
    podman.run("save", "--format", form, "-o", str(archive), "example.com/tiny/dup:1")
    assert verify_bundle(archive).problems == []
    result = import_bundle(archive, to=f"{registry.host}/pm")
    manifest, config = pushed(registry, f"{registry.host}/pm/tiny/dup:1")
    if form == "docker-archive":  # the same manifest as from docker's own archive
        assert sha(manifest) == str(list_bundle(saved).images[0].digest)
        assert sha(config) == image_id
        assert len(result.notes) == 1
    else:  # an OCI layout: podman's manifest, digest kept
        with tarfile.open(archive) as tar:
            index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        assert sha(manifest) == index["manifests"][0]["digest"]
        assert result.notes == []
    assert layer_files(registry, "pm/tiny/dup", manifest) == [GREETING, OTHER, GREETING]


def test_the_built_layers_are_gzip_that_gzip_reads_back() -> None:
    import gzip

    data = b"".join(gzip_chunks(io.BytesIO(OTHER * 50).read))
    assert gzip.decompress(data) == OTHER * 50
    assert data == b"".join(gzip_chunks(io.BytesIO(OTHER * 50).read))  # deterministic


# -- the layout forms (shapes of tests/fixtures/docker-save-*) ----------------------------
def test_a_docker_25_archive_saved_by_id_needs_a_repository(
        registry: LocalRegistry, tmp_path: Path) -> None:
    image = make_image([random_layer(3, 2048)])
    index_json = (FIXTURES / "docker-save-v25.index.json").read_bytes()  # "manifests":null
    assert b'"manifests":null' in index_json
    blobs = [(f"blobs/sha256/{b.digest[7:]}", b.data) for b in (*image.layers, image.config)]
    path = tmp_path / "v25.tar"
    write_tar(path, [*blobs, (f"blobs/sha256/{image.digest[7:]}", image.manifest_bytes),
                     ("index.json", index_json),
                     ("manifest.json", json.dumps([{
                         "Config": f"blobs/sha256/{image.config.digest[7:]}",
                         "RepoTags": None,
                         "Layers": [f"blobs/sha256/{x.digest[7:]}" for x in image.layers]}]
                     ).encode()),
                     ("oci-layout", (FIXTURES / "docker-save-v25.oci-layout.json").read_bytes())])
    assert [(i.name, str(i.digest)) for i in list_bundle(path).images] == [("", image.digest)]
    with pytest.raises(MappingError) as info:  # a registry alone names no repository
        import_bundle(path, to=registry.host)
    assert str(info.value) == (f"bundle entry #0 ({image.digest[:19]}, no name) records no "
                               "repository; give --to with the full repository "
                               "(REGISTRY/REPOSITORY) or use --mapping")
    by_digest = import_bundle(path, to=f"{registry.host}/v25/app")  # pushed by digest
    assert [str(t.destination) for t in by_digest.targets] == [
        f"{registry.host}/v25/app@{image.digest}"]
    result = import_bundle(path, mapping=[(image.digest, f"{registry.host}/v25/app:1")])
    assert result.notes == []  # the original digests are kept
    manifest, _ = pushed(registry, f"{registry.host}/v25/app:1")
    assert manifest == image.manifest_bytes


def test_a_containerd_store_archive_imports_the_platform_it_holds(
        registry: LocalRegistry, tmp_path: Path) -> None:
    amd64 = make_image([random_layer(4, 1024)], architecture="amd64")
    arm64 = make_image([random_layer(5, 1024)], architecture="arm64")
    index = make_index([amd64, arm64])
    index_json = json.dumps({"schemaVersion": 2, "mediaType":
                             "application/vnd.oci.image.index.v1+json", "manifests": [{
                                 "mediaType": index.media_type, "digest": index.digest,
                                 "size": index.size, "annotations": {
                                     "io.containerd.image.name":
                                         "docker.io/library/hello-world:linux",
                                     "org.opencontainers.image.ref.name": "linux"}}]}).encode()
    path = tmp_path / "containerd-store.tar"
    write_tar(path, [
        (f"blobs/sha256/{amd64.layers[0].digest[7:]}", amd64.layers[0].data),
        (f"blobs/sha256/{amd64.config.digest[7:]}", amd64.config.data),
        (f"blobs/sha256/{index.digest[7:]}", index.manifest_bytes),
        (f"blobs/sha256/{amd64.digest[7:]}", amd64.manifest_bytes),  # arm64's is absent
        ("index.json", index_json),
        ("manifest.json", json.dumps([{
            "Config": f"blobs/sha256/{amd64.config.digest[7:]}",
            "RepoTags": ["hello-world:linux"],
            "Layers": [f"blobs/sha256/{amd64.layers[0].digest[7:]}"]}]).encode()),
        ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')])
    listing = list_bundle(path)
    assert [(i.name, str(i.digest)) for i in listing.images] == [
        ("docker.io/library/hello-world:linux", amd64.digest)]
    assert verify_bundle(path).problems == []
    import_bundle(path, to=f"{registry.host}/cs")
    manifest, _ = pushed(registry, f"{registry.host}/cs/library/hello-world:linux")
    assert manifest == amd64.manifest_bytes


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["outside", "missing", "count", "diff_id"])
def test_a_bad_docker_archive_is_refused_naming_the_member(
        case: str, registry: LocalRegistry, tmp_path: Path) -> None:
    path = tmp_path / f"{case}.tar"
    layer_names = {"outside": ["../../etc/passwd"], "missing": ["abc/layer.tar"]}.get(case)
    diff_ids = {"count": [sha(GREETING), sha(OTHER)], "diff_id": [sha(OTHER)]}.get(case)
    if layer_names is not None:  # Layers name a member that is not in the archive
        config = legacy_archive(path, [], ["example.com/bad/x:1"], diff_ids=[sha(GREETING)])
        with tarfile.open(path) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
        members[-1] = ("manifest.json", json.dumps([{
            "Config": f"{config[7:]}.json", "RepoTags": ["example.com/bad/x:1"],
            "Layers": layer_names}]).encode())
        write_tar(path, members)
    else:
        config = legacy_archive(path, [GREETING], ["example.com/bad/x:1"], diff_ids=diff_ids)
    layer = f"{hashlib.sha256(b'0').hexdigest()}/layer.tar"
    expected = {
        "outside": f"{path}: manifest.json: layer '../../etc/passwd' is not a member of the "
                   "archive",
        "missing": f"{path}: manifest.json: layer 'abc/layer.tar' is not a member of the "
                   "archive",
        "count": f"{path}: manifest.json: image #0 (example.com/bad/x:1) has 1 Layers, but "
                 f"its config {config[7:]}.json has 2 diff_ids",
        "diff_id": f"{path}: {layer}: its sha256 {sha(GREETING)} is not the diff_id "
                   f"{sha(OTHER)} its config names for layer 0",
    }[case]
    since = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(path, to=f"{registry.host}/bad")
    assert str(info.value) == expected
    assert registry.requests(since) == []
    assert verify_bundle(path).problems == [expected]
    with pytest.raises(BundleError) as listed:
        list_bundle(path)
    assert str(listed.value) == expected


def test_a_layer_link_out_of_the_archive_is_refused(registry: LocalRegistry,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "link.tar"
    config = legacy_archive(path, [GREETING], ["example.com/bad/x:1"])
    layer = f"{hashlib.sha256(b'0').hexdigest()}/layer.tar"
    with tarfile.open(path) as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar.getmembers()  # type: ignore[union-attr]
                if m.name != layer]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in kept:
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(layer)
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
        tar.addfile(link)
    expected = (f"{path}: unsafe archive member {layer!r}: a link to '../../etc/passwd', "
                "which is no regular file of the archive")
    since = registry.mark()
    with pytest.raises(UnsafeArchiveError) as info:
        import_bundle(path, to=f"{registry.host}/bad")
    assert str(info.value) == expected
    assert verify_bundle(path).problems == [expected]
    assert registry.requests(since) == []
    assert config.startswith("sha256:")
