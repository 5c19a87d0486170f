"""Defects found by a hostile pass over docker archives and referrers (breakit2)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bundler import BundleError, import_bundle, list_bundle, verify_bundle
from bundler.oci.content import OCI_INDEX
from bundler.sandbox import LocalRegistry
from bundler.sandbox.proxy import FaultProxy
from tests.referrers_tools import push_app


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
