"""docker-archive out: ``bundler export --format docker-archive`` and ``bundler copy ...
docker-archive:FILE[:NAME]`` write the Docker 25+ dual form: ``docker load`` (Debian's
docker.io) and ``podman load`` accept it, the loaded image has the source's config
digest, layer count and files; and it is an OCI layout that skopeo and bundler read.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from bundler import BundleError, LocationError, copy_image, import_bundle, verify_bundle
from bundler.cli.main import main
from bundler.sandbox import LocalRegistry, push
from bundler.sandbox.engines import (
    Dockerd,
    Podman,
    docker_binary,
)
from bundler.sandbox.images import Image, make_image, make_index, make_layer, random_layer

needs_docker = pytest.mark.skipif(shutil.which("dockerd") is None or docker_binary() is None,
                                  reason="docker.io missing")
needs_podman = pytest.mark.skipif(shutil.which("podman") is None, reason="podman missing")
needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")


def image_of(arch: str, text: bytes) -> Image:
    return make_image([make_layer({"etc/greeting": text}), random_layer(11, 4096)],
                      architecture=arch)


AMD64 = image_of("amd64", b"hello from amd64\n")
ARM64 = image_of("arm64", b"hello from arm64\n")
INDEX = make_index([AMD64, ARM64])



@pytest.fixture
def source(registry: LocalRegistry) -> str:
    push(registry, "team/app", INDEX, tag="1")
    push(registry, "team/single", AMD64, tag="2")
    return registry.host


def file_in_container(dockerd: Dockerd, image: str, path: str, name: str) -> bytes:
    """A file of an image, read by ``docker create`` + ``docker cp`` (no start)."""
    dockerd.run("create", "--name", name, image, "/bin/true")
    try:
        archive = dockerd.run("cp", f"{name}:{path}", "-").stdout
    finally:
        dockerd.run("rm", name)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.next()
        assert member is not None
        return tar.extractfile(member).read()  # type: ignore[union-attr]


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


@needs_docker
def test_export_format_docker_archive_loads_in_docker(
        source: str, dockerd: Dockerd, tmp_path: Path) -> None:
    out = tmp_path / "app.tar"
    result = CliRunner().invoke(main, ["export", f"{source}/team/app:1", "-o", str(out),
                                       "--format", "docker-archive", "-q"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"note: {source}/team/app:1: an index; docker load takes one "
                             "platform: linux/amd64 was written\n")
    assert members(out)[:3] == ["oci-layout", "index.json", "manifest.json"]
    with tarfile.open(out) as tar:
        saved = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert saved == [{"Config": f"blobs/sha256/{AMD64.config.digest[7:]}",
                      "RepoTags": [f"{source}/team/app:1"],
                      "Layers": [f"blobs/sha256/{x.digest[7:]}" for x in AMD64.layers]}]
    assert "Loaded image: " in dockerd.run("load", "-i", str(out)).stdout.decode()
    inspect = json.loads(dockerd.run("image", "inspect", f"{source}/team/app:1").stdout)[0]
    assert inspect["Id"] == AMD64.config.digest
    assert len(inspect["RootFS"]["Layers"]) == 2
    assert file_in_container(dockerd, f"{source}/team/app:1", "/etc/greeting",
                             "export-amd64") == b"hello from amd64\n"
    # the same file is an OCI layout: verify and import it, digests kept
    assert verify_bundle(out).problems == []


@needs_docker
def test_copy_to_docker_archive_picks_the_platform(
        source: str, dockerd: Dockerd, tmp_path: Path) -> None:
    out = tmp_path / "arm.tar"
    result = copy_image(f"docker://{source}/team/app:1",
                        f"docker-archive:{out}:example.com/loaded/arm:1", platform="linux/arm64")
    assert result.digest is not None and str(result.digest) == ARM64.digest
    assert result.notes == ["example.com/loaded/arm:1: an index; docker load takes one "
                            "platform: linux/arm64 was written"]
    dockerd.run("load", "-i", str(out))
    inspect = json.loads(dockerd.run("image", "inspect", "example.com/loaded/arm:1").stdout)[0]
    assert (inspect["Id"], inspect["Architecture"]) == (ARM64.config.digest, "arm64")
    assert len(inspect["RootFS"]["Layers"]) == 2
    with pytest.raises(BundleError) as info:
        copy_image(f"docker://{source}/team/app:1", f"docker-archive:{tmp_path / 'x.tar'}",
                   platform="linux/s390x")
    assert str(info.value) == (f"{source}/team/app:1: the index has no image for platform "
                               "linux/s390x; it has linux/amd64, linux/arm64: choose one "
                               "with --platform OS/ARCH[/VARIANT]")
    assert not (tmp_path / "x.tar").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm.tar", "registry"]  # no temp


@needs_docker
@needs_skopeo
def test_a_docker_save_round_trips_through_bundler_and_docker_load(
        source: str, dockerd: Dockerd, registry: LocalRegistry, tmp_path: Path) -> None:
    """docker save (legacy) -> bundler copy -> docker-archive -> docker load; and the same
    file read by skopeo as an oci-archive: one manifest, digests kept."""
    out = tmp_path / "single.tar"
    copy_image(f"docker://{source}/team/single:2", f"docker-archive:{out}")
    dockerd.run("load", "-i", str(out))
    saved = tmp_path / "saved.tar"
    dockerd.run("save", "-o", str(saved), f"{source}/team/single:2")
    again = tmp_path / "again.tar"
    copied = copy_image(f"docker-archive:{saved}",
                        f"docker-archive:{again}:example.com/again/single:3")
    assert [n.split(": a legacy")[0] for n in copied.notes] == [  # docker 20.10: legacy
        f"{saved}: image #0 ({source}/team/single:2)"]
    dockerd.run("load", "-i", str(again))
    inspect = json.loads(dockerd.run("image", "inspect", "example.com/again/single:3").stdout)[0]
    assert inspect["Id"] == AMD64.config.digest
    assert file_in_container(dockerd, "example.com/again/single:3", "/etc/greeting",
                             "again") == b"hello from amd64\n"
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{out}",
                    f"docker://{registry.host}/sk/single:2"], check=True, capture_output=True,
                   timeout=120)
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                          f"docker://{registry.host}/sk/single:2"], check=True,
                         capture_output=True, timeout=120).stdout
    assert raw == AMD64.manifest_bytes
    result = import_bundle(out, to=f"{registry.host}/bd")
    assert [str(t.destination) for t in result.targets] == [
        f"{registry.host}/bd/team/single:2@{AMD64.digest}"]


@needs_podman
def test_podman_loads_bundlers_docker_archive(source: str, tmp_path: Path) -> None:
    out = tmp_path / "podman.tar"
    copy_image(f"docker://{source}/team/app:1", f"docker-archive:{out}:example.com/pm/app:1")
    podman = Podman(tmp_path / "podman")
    try:
        podman.run("load", "-i", str(out))
        image_id = podman.run("image", "inspect", "--format", "{{.Id}}",
                              "example.com/pm/app:1").stdout.decode().strip()
        layers = podman.run("image", "inspect", "--format", "{{len .RootFS.Layers}}",
                            "example.com/pm/app:1").stdout.decode().strip()
        mount = Path(podman.run("image", "mount", "example.com/pm/app:1").stdout.decode().strip())
        try:
            greeting = (mount / "etc" / "greeting").read_bytes()
        finally:
            podman.run("image", "unmount", "example.com/pm/app:1")
    finally:
        podman.close()
    assert ("sha256:" + image_id, layers, greeting) == (AMD64.config.digest, "2",
                                                        b"hello from amd64\n")


def test_a_docker_archive_destination_must_be_a_new_file(source: str, tmp_path: Path) -> None:
    out = tmp_path / "taken.tar"
    out.write_bytes(b"keep me")
    with pytest.raises(BundleError) as info:
        copy_image(f"docker://{source}/team/single:2", f"docker-archive:{out}")
    assert str(info.value) == (f"{out} already exists; a docker archive is written whole: "
                               "remove it or choose another output name")
    assert out.read_bytes() == b"keep me"
    with pytest.raises(LocationError):
        copy_image(f"docker://{source}/team/single:2", "docker-archive:-")


def test_bundlers_docker_archive_imports_from_a_pipe(source: str, registry: LocalRegistry,
                                                      tmp_path: Path) -> None:
    """The dual form is in bundler's one-pass order: ``bundler import -`` reads it."""
    out = tmp_path / "piped.tar"
    copy_image(f"docker://{source}/team/app:1", f"docker-archive:{out}:example.com/p/app:1")
    with open(out, "rb") as f:
        proc = subprocess.run([str(Path(sys.executable).with_name("bundler")), "import", "-",
                               "--to", f"{registry.host}/piped", "-q"], stdin=f,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == (
        f"  example.com/p/app:1 -> {registry.host}/piped/p/app:1@{AMD64.digest}")


@pytest.mark.parametrize("extra", [["--split-size", "1MiB"], ["--dry-run"],
                                   ["--include-foreign-layers"]])
def test_export_docker_archive_refuses_what_a_single_file_cannot_do(
        extra: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", "example.com/a/b:1", "-o",
                                       str(tmp_path / "x.tar"), "--format", "docker-archive",
                                       *extra])
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: --format docker-archive writes one file for docker "
                                  "load: no --split-size, --dry-run or "
                                  "--include-foreign-layers\n")
    assert list(tmp_path.iterdir()) == []


def test_a_docker_archive_takes_one_platform(tmp_path: Path) -> None:
    """``--platform`` on its own keeps platforms of indexes (image sets); a docker
    archive holds one platform per image, so it takes ``--platform`` once."""
    result = CliRunner().invoke(main, ["export", "example.com/a/b:1", "-o",
                                       str(tmp_path / "x.tar"), "--format", "docker-archive",
                                       "--platform", "linux/arm64", "--platform",
                                       "linux/amd64"])
    assert result.exit_code == 2
    assert ("--format docker-archive holds one platform per image: give --platform once"
            in result.stderr)
    assert list(tmp_path.iterdir()) == []
