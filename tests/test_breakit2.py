"""Defects found by a hostile pass over docker archives and referrers (breakit2)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import zstandard

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.oci.content import OCI_INDEX
from bundler.sandbox import LocalRegistry, push
from bundler.sandbox.engines import Dockerd, docker_binary
from bundler.sandbox.images import Blob, Image, make_image, make_layer
from bundler.sandbox.images import _tar_bytes as _layer_bytes
from bundler.sandbox.proxy import FaultProxy
from tests.referrers_tools import attach, push_app


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def layer_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/greeting")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buffer.getvalue()


def legacy_archive(path: Path, repo_tags: object) -> None:
    layer = layer_tar()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}).encode()
    layer_name = f"{'e' * 64}/layer.tar"
    write_tar(path, [(f"{sha(config)[7:]}.json", config), (layer_name, layer),
                     ("manifest.json", json.dumps([{
                         "Config": f"{sha(config)[7:]}.json", "RepoTags": repo_tags,
                         "Layers": [layer_name]}]).encode())])


@pytest.mark.parametrize("repo_tags", [[5], ["example.com/x:1", None], [{"a": 1}]])
def test_repo_tags_that_are_not_strings_are_refused(repo_tags: object, registry: LocalRegistry,
                                                    tmp_path: Path) -> None:
    """A RepoTags entry that is no string was dropped: the image was pushed unnamed."""
    path = tmp_path / "odd.tar"
    legacy_archive(path, repo_tags)
    expected = (f"{path}: manifest.json is not a docker save manifest (a list of objects "
                "with Config, RepoTags and Layers)")
    since = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(path, to=f"{registry.host}/odd")
    assert str(info.value) == expected
    assert registry.requests(since) == []
    assert verify_bundle(path).problems == [expected]
    with pytest.raises(BundleError):
        list_bundle(path)


def _export_via(proxy_host: str, bundle: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bundler", "export",
                           f"{proxy_host}/apps/signed:1.0", "-o", str(bundle), "-q", *extra],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("link", ["self", "other-host"])
def test_a_referrers_api_link_that_loops_or_leaves_is_not_followed(
        link: str, registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy],
        tmp_path: Path) -> None:
    """The referrers API's Link header was followed as given: to itself for ever (the
    export never ended), or to another host."""
    image = push_app(registry)
    proxy = fault_proxy(registry.url)
    path = f"/v2/apps/signed/referrers/{image}"
    target = path if link == "self" else f"http://127.0.0.2:1{path}"
    empty = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                        "manifests": []}).encode()
    proxy.status("/referrers/", 200, {"Content-Type": OCI_INDEX,
                                      "Link": f'<{target}>; rel="next"'}, empty, times=None)
    result = _export_via(proxy.host, tmp_path / "bundle")
    assert "Traceback" not in result.stderr
    referrer_requests = [r for r in proxy.requests if "/referrers/" in r[1]]
    assert len(referrer_requests) <= 2
    assert result.returncode == 0, result.stderr
    assert "127.0.0.2" not in result.stderr, result.stderr
    assert "warning" not in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["", " ", "sbom", "a\x1b[31m/b", "example/sbom ",
                                   "application/spdx+json; x=1"])
@pytest.mark.parametrize("command", ["export", "mirror", "copy"])
def test_an_artifact_type_that_is_no_media_type_is_a_usage_error(
        value: str, command: str, registry: LocalRegistry, tmp_path: Path) -> None:
    """An empty or odd --referrers-artifact-type matched nothing: every signature was
    silently left out (an unset shell variable, a typo)."""
    from click.testing import CliRunner

    from bundler.cli.main import main
    source = f"{registry.host}/apps/signed:1.0"
    args = {"export": ["export", source, "-o", str(tmp_path / "b")],
            "mirror": ["mirror", source, "--to", f"{registry.host}/m"],
            "copy": ["copy", source, f"{registry.host}/c/signed:1.0"]}[command]
    since = registry.mark()
    result = CliRunner().invoke(main, [*args, "--referrers-artifact-type", value])
    assert result.exit_code == 2, result.output
    assert "--referrers-artifact-type" in result.output
    assert "\x1b" not in result.output
    assert registry.requests(since) == []
    assert not (tmp_path / "b").exists()


def test_a_media_type_artifact_type_is_accepted(registry: LocalRegistry,
                                                 tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundler.cli.main import main
    push_app(registry)
    result = CliRunner().invoke(main, [
        "export", f"{registry.host}/apps/signed:1.0", "-o", str(tmp_path / "b"), "-q",
        "--referrers-artifact-type", "application/vnd.dev.sigstore.bundle.v0.3+json"])
    assert result.exit_code == 0, result.output



@pytest.mark.skipif(shutil.which("dockerd") is None or docker_binary() is None,
                    reason="docker.io missing")
def test_docker_loads_an_archive_of_an_image_with_zstd_layers(
        dockerd: Dockerd, registry: LocalRegistry, tmp_path: Path) -> None:
    """docker load failed (``ApplyLayer exit status 1 ... unexpected EOF``) on a zstd
    layer: the archive's manifest.json now names the layer's tar (its diff_id), the OCI
    side keeps the zstd blob, every digest kept."""
    raw_zstd = _layer_bytes({"etc/zstd": b"from a zstd layer\n"})
    raw_plain = _layer_bytes({"etc/plain": b"from a plain layer\n"})
    zstd_layer = Blob.of("application/vnd.oci.image.layer.v1.tar+zstd",
                         zstandard.ZstdCompressor().compress(raw_zstd), diff_id=sha(raw_zstd))
    plain_layer = Blob.of("application/vnd.oci.image.layer.v1.tar", raw_plain,
                          diff_id=sha(raw_plain))
    typed = make_image([make_layer({"etc/gzip": b"gzip\n"}), zstd_layer, plain_layer])
    layers = [typed.layers[0], zstd_layer, plain_layer]  # make_image types them all gzip
    document = json.loads(typed.manifest_bytes)
    document["layers"] = [layer.descriptor() for layer in layers]
    raw = json.dumps(document, indent=3).encode()
    image = Image(raw, typed.media_type, sha(raw), len(raw), typed.config, layers,
                  typed.platform)
    push(registry, "team/zstd", image, tag="1")
    out = tmp_path / "zstd.tar"
    result = subprocess.run([sys.executable, "-m", "bundler", "export",
                             f"{registry.host}/team/zstd:1", "--format", "docker-archive",
                             "-o", str(out), "-q"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    dockerd.run("load", "-i", str(out))
    inspected = dockerd.run("image", "inspect", "-f", "{{.Id}} {{json .RootFS.Layers}}",
                            f"{registry.host}/team/zstd:1").stdout.decode().split(" ", 1)
    assert inspected[0] == image.config.digest
    assert json.loads(inspected[1]) == [layer.diff_id for layer in image.layers]
    # the OCI side: the image as pushed, digests kept; verify and import agree
    assert verify_bundle(out).problems == []
    import_bundle(out, to=f"{registry.host}/again")
    pulled = httpx.get(f"{registry.url}/v2/again/team/zstd/manifests/{image.digest}",
                       headers={"Accept": image.media_type})
    assert pulled.content == image.manifest_bytes


@pytest.mark.parametrize("name", ["FOO:1", "foo", "team/app@sha256:" + "a" * 64,
                                  "sha256:" + "a" * 64, "team/app:1@sha256:" + "a" * 64])
def test_a_docker_archive_destination_name_must_be_a_repository_and_tag(
        name: str, registry: LocalRegistry, tmp_path: Path) -> None:
    """``copy SRC docker-archive:FILE:FOO:1`` wrote ``RepoTags: null``: docker load gave
    an untagged image, the name asked for silently lost."""
    from click.testing import CliRunner

    from bundler.cli.main import main
    push_app(registry)
    out = tmp_path / "out.tar"
    since = registry.mark()
    result = CliRunner().invoke(main, ["copy", f"docker://{registry.host}/apps/signed:1.0",
                                       f"docker-archive:{out}:{name}"])
    assert result.exit_code == 2, result.output
    assert "docker load takes" in result.output or "RepoTags" in result.output
    assert registry.requests(since) == []
    assert not out.exists()


def test_a_docker_archive_destination_named_repository_and_tag_is_written(
        registry: LocalRegistry, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bundler.cli.main import main
    push_app(registry)
    out = tmp_path / "out.tar"
    result = CliRunner().invoke(main, ["copy", f"docker://{registry.host}/apps/signed:1.0",
                                       f"docker-archive:{out}:example.com/team/app:1", "-q"])
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as tar:
        saved = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert saved[0]["RepoTags"] == ["example.com/team/app:1"]


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_verify_names_a_referrer_whose_subject_is_no_image_of_the_bundle(
        form: str, registry: LocalRegistry, tmp_path: Path) -> None:
    """The subject's entry removed from index.json, its manifest blob left behind: verify
    said OK (it asked only whether the blob was there) while import pushed nothing
    (the referrer has no image to go with) and list showed it as an image."""
    from click.testing import CliRunner

    from bundler.cli.main import main
    image = push_app(registry)
    sbom = attach(registry, "apps/signed:1.0", "example/sbom", tmp_path / "sbom", b"sbom")
    bundle = tmp_path / "b"
    assert CliRunner().invoke(main, ["export", f"{registry.host}/apps/signed:1.0", "-o",
                                     str(bundle), "-q"]).exit_code == 0
    index = json.loads((bundle / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["digest"] != image]
    (bundle / "index.json").write_text(json.dumps(index))
    target = bundle
    if form == "tar":
        target = tmp_path / "b.tar"
        with tarfile.open(target, "w") as tar:
            for name in ("oci-layout", "index.json"):
                tar.add(bundle / name, arcname=name)
            for blob in sorted((bundle / "blobs/sha256").iterdir()):
                tar.add(blob, arcname=f"blobs/sha256/{blob.name}")
    result = CliRunner().invoke(main, ["verify", str(target), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["problems"] == [
        f"referrer {registry.host}/apps/signed@{sbom['digest']}: its subject {image} is not "
        "in the bundle"]


def test_import_names_a_referrer_it_leaves_out_for_want_of_its_subject(
        registry: LocalRegistry, tmp_path: Path) -> None:
    """The same bundle: import said ``imported 0 images`` and exit 0, the referrer
    dropped without a word."""
    image = push_app(registry)
    sbom = attach(registry, "apps/signed:1.0", "example/sbom", tmp_path / "sbom", b"sbom")
    bundle = tmp_path / "b"
    assert subprocess.run([sys.executable, "-m", "bundler", "export",
                           f"{registry.host}/apps/signed:1.0", "-o", str(bundle), "-q"],
                          capture_output=True, timeout=120).returncode == 0
    index = json.loads((bundle / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["digest"] != image]
    (bundle / "index.json").write_text(json.dumps(index))
    result = subprocess.run([sys.executable, "-m", "bundler", "import", str(bundle), "--to",
                             f"{registry.host}/dest", "-q"],
                            capture_output=True, text=True, timeout=120)
    assert (f"warning: referrer {registry.host}/apps/signed@{sbom['digest']} left out: its "
            f"subject {image} is not in the bundle") in result.stderr, result.stderr


def test_a_referrers_answer_that_is_no_index_is_named_once(
        registry: LocalRegistry, fault_proxy: Callable[..., FaultProxy], tmp_path: Path) -> None:
    """The warning for an unreadable referrers answer said "referrers of R@D" twice."""
    image = push_app(registry)
    proxy = fault_proxy(registry.url)
    proxy.status("/referrers/", 200, {"Content-Type": OCI_INDEX}, b"<html>no</html>",
                 times=None)
    result = _export_via(proxy.host, tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    what = f"referrers of {proxy.host}/apps/signed@{image}"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"warning: {what} cannot be read (left out): ")
    assert warnings[0].count("referrers of") == 1, warnings[0]
