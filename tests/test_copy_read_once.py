"""``bundler copy`` from an archive read once (``.tar.zst``, volumes in bundler's order)
into a layout or an archive: one run of the transfer engine, the archive read once for
its blobs, nothing staged beside the destination. On a real registry: what arrives is
read back file by file and digest by digest, and ``bundler verify`` passes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler.bundle import export_bundle
from bundler.cli.main import main
from bundler.oci.reference import Reference
from bundler.sandbox import LocalRegistry, SeededEntry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
REF_NAME = "org.opencontainers.image.ref.name"


def copy(*args: str) -> Result:
    return CliRunner().invoke(main, ["copy", "-q", "--src-tls-verify=false",
                                     "--dest-tls-verify=false", *args],
                              catch_exceptions=False)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_files(layout: Path) -> list[str]:
    folder = layout / "blobs" / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def check_layout(path: Path, name: str | None, entry: SeededEntry) -> None:
    entries = json.loads((path / "index.json").read_text())["manifests"]
    assert [(e["digest"], e.get("annotations", {}).get(REF_NAME)) for e in entries] == [
        (entry.digest, name)]
    for digest, data in entry.manifests.items():
        assert (path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
    for digest, size in entry.blob_sizes.items():
        blob = (path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert (len(blob), sha(blob)) == (size, digest)
    held = {*entry.manifests, *entry.blob_sizes}
    assert blob_files(path) == sorted(d.split(":")[1] for d in held)
    verify = CliRunner().invoke(main, ["verify", str(path)])
    assert verify.exit_code == 0, verify.output


@pytest.fixture(scope="module")
def archives(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The multi-arch image as a .tar.zst, and as uncompressed volumes in bundler's
    order (both read once). Read-only."""
    _, seeded = seeded_registry
    folder = tmp_path_factory.mktemp("read-once")
    ref = Reference.parse(seeded.get("multi/arch", "1").reference)
    export_bundle([ref], folder / "multi.tar.zst")
    export_bundle([ref], folder / "vol.tar", split_size=4096)
    return {"zst": folder / "multi.tar.zst", "volumes": folder / "vol.tar"}


@pytest.mark.parametrize("kind", ["zst", "volumes"])
def test_an_archive_read_once_copies_into_a_layout(
        kind: str, archives: dict[str, Path], seeded_registry: Seeded, tmp_path: Path) -> None:
    multi = seeded_registry[1].get("multi/arch", "1")
    layout = tmp_path / "out"
    result = copy(f"oci-archive:{archives[kind]}", f"oci:{layout}:copied")
    assert result.exit_code == 0, result.output
    blobs = len(multi.blob_sizes)
    assert f"blobs copied {blobs} (" in result.output
    assert f"({multi.digest})" in result.output
    check_layout(layout, "copied", multi)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing staged
    again = copy(f"oci-archive:{archives[kind]}", f"oci:{layout}:copied")
    assert again.exit_code == 0, again.output
    assert f"blobs copied 0 (0 B), already there {blobs};" in again.output
    check_layout(layout, "copied", multi)


def test_an_archive_read_once_copies_into_an_archive(
        archives: dict[str, Path], seeded_registry: Seeded, tmp_path: Path) -> None:
    multi = seeded_registry[1].get("multi/arch", "1")
    out = tmp_path / "out.tar"
    result = copy(f"oci-archive:{archives['zst']}:{multi.reference}", f"oci-archive:{out}:m")
    assert result.exit_code == 0, result.output
    assert f"blobs copied {len(multi.blob_sizes)} (" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar"]
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 0, verify.output
    listing = json.loads(CliRunner().invoke(main, ["list", "--json", str(out)]).output)
    assert [(i["reference"], i["digest"]) for i in listing["images"]] == [("m", multi.digest)]
    assert listing["blobs"] == len(multi.blob_sizes) + len(multi.manifests)


def test_an_archive_read_once_into_a_locked_layout_writes_nothing(
        archives: dict[str, Path], tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    fd = os.open(layout / ".bundler.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = copy("--no-wait", f"oci-archive:{archives['zst']}", f"oci:{layout}:m")
    finally:
        os.close(fd)
    assert result.exit_code == 1
    assert "another bundler" in result.output and "is writing this bundle" in result.output
    assert blob_files(layout) == []
    assert not (layout / "index.json").exists()
