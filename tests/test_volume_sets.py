"""Split bundles end to end: more than 1000 volumes, a missing volume, no checksum file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundler import BundleError, export_bundle, import_bundle, verify_bundle
from bundler.sandbox import LocalRegistry, SeededSet


@pytest.fixture(scope="module")
def tool(seeded_registry: tuple[LocalRegistry, SeededSet]) -> str:
    _, seeded = seeded_registry
    return seeded.get("legacy/tool").reference


def pushed_digest(reg: LocalRegistry, repository: str) -> str | None:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repository}/manifests/latest",
                             headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                      "application/vnd.docker.distribution.manifest.v2+json"})
        return response.headers.get("Docker-Content-Digest")


@pytest.fixture(scope="module")
def four_volumes(tool: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """legacy/tool as four .tar.zst volumes."""
    root = tmp_path_factory.mktemp("four")
    whole = root / "whole.tar.zst"
    export_bundle([tool], whole)
    base = root / "split" / "tool.tar.zst"
    base.parent.mkdir()
    export_bundle([tool], base, split_size=whole.stat().st_size // 4 + 1)
    assert sorted(p.name for p in base.parent.iterdir()) == [
        "tool.tar.zst.000", "tool.tar.zst.001", "tool.tar.zst.002", "tool.tar.zst.003",
        "tool.tar.zst.receipt.json", "tool.tar.zst.sha256"]
    return base


def copy_of(base: Path, tmp_path: Path) -> Path:
    shutil.copytree(base.parent, tmp_path / "copy")
    return tmp_path / "copy" / base.name


def volume_problems(problems: list[str]) -> list[str]:
    return [p for p in problems if p.startswith("volume ")]


def test_more_than_1000_volumes_concatenate_in_glob_order(
        tool: str, seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path,
        registry: LocalRegistry) -> None:
    source = seeded_registry[1].get("legacy/tool").digest
    base = tmp_path / "tool.tar.zst"
    export_bundle([tool], base, split_size=40)
    paths = sorted(tmp_path.glob("tool.tar.zst.[0-9]*"))
    assert len(paths) > 1000
    assert [p.name for p in paths] == [f"tool.tar.zst.{n:04d}" for n in range(len(paths))]
    assert verify_bundle(base).problems == []
    command = (f"cat tool.tar.zst.* | {sys.executable} -m bundler.cli import - "
               f"--to {registry.host}/many --dest-tls-verify=false -q")
    out = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert pushed_digest(registry, "many/legacy/tool") == source
    import_bundle(paths[517], to=f"{registry.host}/middle")
    assert pushed_digest(registry, "middle/legacy/tool") == source


def test_verify_names_only_the_missing_middle_volume(four_volumes: Path, tmp_path: Path) -> None:
    base = copy_of(four_volumes, tmp_path)
    base.with_name("tool.tar.zst.001").unlink()
    report = verify_bundle(base)
    assert volume_problems(report.problems) == [
        "volume tool.tar.zst.001 is missing (listed in the checksum file)"]
    assert not report.ok


def test_without_checksums_a_gap_names_the_missing_volume(four_volumes: Path,
                                                          tmp_path: Path) -> None:
    base = copy_of(four_volumes, tmp_path)
    base.with_name("tool.tar.zst.002").unlink()
    base.with_name("tool.tar.zst.sha256").unlink()
    report = verify_bundle(base.with_name("tool.tar.zst.000"))
    assert volume_problems(report.problems) == [
        "volume tool.tar.zst.002 is missing (the numbering skips it)"]
    assert not report.ok


def test_import_names_the_missing_volume(four_volumes: Path, tmp_path: Path,
                                         registry: LocalRegistry) -> None:
    base = copy_of(four_volumes, tmp_path)
    base.with_name("tool.tar.zst.001").unlink()
    with pytest.raises(BundleError) as info:
        import_bundle(base, to=f"{registry.host}/gap")
    assert str(info.value) == "volume tool.tar.zst.001 is missing (listed in the checksum file)"


def test_a_missing_checksum_file_is_a_warning(four_volumes: Path, tmp_path: Path) -> None:
    base = copy_of(four_volumes, tmp_path)
    base.with_name("tool.tar.zst.sha256").unlink()
    report = verify_bundle(base)
    assert report.ok and report.problems == []
    assert report.images == 1 and report.blobs == 3
    text = (f"{base}: no checksum file tool.tar.zst.sha256; the volumes were "
            "checked through the digests of the blobs they hold")
    assert report.warnings == [text]
    warning = f"warning: {text}"
    out = subprocess.run([sys.executable, "-m", "bundler.cli", "verify", str(base)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stderr.splitlines() == [warning]


def test_a_last_volume_from_another_bundle_is_named(four_volumes: Path, tmp_path: Path,
                                                    registry: LocalRegistry) -> None:
    base = copy_of(four_volumes, tmp_path)
    last = base.with_name("tool.tar.zst.003")
    expected = last.stat().st_size
    shutil.copyfile(base.with_name("tool.tar.zst.000"), last)  # a volume of another set
    actual = last.stat().st_size
    message = (f"volume tool.tar.zst.003 has {actual} bytes, the checksum file says "
               f"{expected} (truncated or from another bundle)")
    report = verify_bundle(base)
    assert volume_problems(report.problems)[0] == message
    mark = registry.mark()
    with pytest.raises(BundleError) as info:
        import_bundle(base, to=f"{registry.host}/swap")
    assert str(info.value) == message
    assert registry.requests(since=mark) == []  # refused before any request
