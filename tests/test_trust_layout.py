"""A directory bundle cannot reach outside itself: blob, manifest, ``index.json`` and
``oci-layout`` files that are symbolic links, FIFOs or of the wrong size are refused
by verify, list and import before a byte of them is read or sent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli import main
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
GUARD_S = 120  # a guard against a hang only: a refused file ends at once


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``bundler ARGS`` in a subprocess (a hang ends in a TimeoutExpired, not forever)."""
    return subprocess.run([sys.executable, "-m", "bundler.cli", *args], capture_output=True,
                          text=True, timeout=GUARD_S, check=False)


@pytest.fixture
def bundle(seeded_registry: Seeded, tmp_path: Path) -> tuple[Path, str, int]:
    """A bundle of ``base/os:1``; returns its root, the largest layer's digest and size."""
    _, seeded = seeded_registry
    entry = seeded.get("base/os", "1")
    root = tmp_path / "bundle"
    export_bundle([entry.reference], root)
    digest, size = max(entry.blob_sizes.items(), key=lambda item: item[1])
    return root, digest, size


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs/sha256" / digest[7:]


def test_verify_refuses_a_blob_linked_to_dev_zero(bundle: tuple[Path, str, int]) -> None:
    root, digest, _ = bundle
    path = blob_file(root, digest)
    path.unlink()
    path.symlink_to("/dev/zero")
    done = cli("verify", str(root))
    assert done.returncode == 1
    assert f": {path}: cannot read blob {digest}: Is a symbolic link" in done.stderr
    assert done.stderr.startswith("problem: ")
    assert "Traceback" not in done.stderr


def test_verify_refuses_a_fifo(bundle: tuple[Path, str, int]) -> None:
    root, digest, _ = bundle
    path = blob_file(root, digest)
    path.unlink()
    os.mkfifo(path)
    done = cli("verify", str(root))
    assert done.returncode == 1
    assert f"{path}: cannot read blob {digest}: Is a FIFO" in done.stderr


def test_verify_checks_the_size_before_reading(bundle: tuple[Path, str, int]) -> None:
    root, digest, size = bundle
    path = blob_file(root, digest)
    os.truncate(path, 1 << 40)  # sparse: a reader would meet a terabyte of zeros
    done = cli("verify", str(root))
    assert done.returncode == 1
    assert (f"size mismatch for {digest} ({path}): expected {size} bytes, got at least "
            f"{1 << 40}") in done.stderr


def test_import_sends_nothing_of_a_blob_linked_to_a_host_file(
        bundle: tuple[Path, str, int], registry: LocalRegistry, tmp_path: Path) -> None:
    root, digest, size = bundle
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"s" * size)  # same size: only a digest check would notice
    path = blob_file(root, digest)
    path.unlink()
    path.symlink_to(secret)
    mark = registry.mark()
    result = invoke("import", str(root), "--to", f"{registry.host}/m",
                    "--dest-tls-verify", "false", "-q")
    assert result.exit_code == 1
    assert f"{path}: cannot read blob {digest}: Is a symbolic link" in result.stderr
    sent = [(m, u) for m, u in registry.requests(mark) if m in ("POST", "PATCH", "PUT")]
    assert sent == []  # no upload started, no byte of the host file sent


def test_import_refuses_a_blob_of_the_wrong_size_before_sending(
        bundle: tuple[Path, str, int], registry: LocalRegistry) -> None:
    root, digest, size = bundle
    path = blob_file(root, digest)
    os.truncate(path, size - 1)
    mark = registry.mark()
    result = invoke("import", str(root), "--to", f"{registry.host}/m",
                    "--dest-tls-verify", "false", "-q")
    assert result.exit_code == 1
    assert f"size mismatch for {digest} ({path}): expected {size} bytes, got only " \
        f"{size - 1}" in result.stderr
    assert [m for m, _ in registry.requests(mark) if m in ("POST", "PATCH", "PUT")] == []


def test_list_refuses_a_manifest_linked_outside(bundle: tuple[Path, str, int],
                                                seeded_registry: Seeded,
                                                tmp_path: Path) -> None:
    root, _, _ = bundle
    entry = seeded_registry[1].get("base/os", "1")
    path = blob_file(root, entry.digest)
    outside = tmp_path / "manifest-copy"
    shutil.move(path, outside)
    path.symlink_to(outside)
    result = invoke("list", str(root))
    assert result.exit_code == 1
    assert f"{path}: cannot read blob {entry.digest}: Is a symbolic link" in result.stderr


@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
def test_index_json_and_oci_layout_linked_outside_are_refused(
        bundle: tuple[Path, str, int], tmp_path: Path, name: str) -> None:
    root, _, _ = bundle
    outside = tmp_path / f"outside-{name}"
    shutil.move(root / name, outside)
    (root / name).symlink_to(outside)
    for command in ("list", "verify"):
        result = invoke(command, str(root))
        assert result.exit_code == 1
        assert f"{root / name}: cannot read: Is a symbolic link" in result.stderr


def test_a_blob_directory_linked_outside_is_refused(bundle: tuple[Path, str, int],
                                                    tmp_path: Path) -> None:
    root, _, _ = bundle
    outside = tmp_path / "outside-blobs"
    shutil.move(root / "blobs/sha256", outside)
    (root / "blobs/sha256").symlink_to(outside)
    result = invoke("verify", str(root))
    assert result.exit_code == 1
    assert f"{root / 'blobs/sha256'}: cannot read: Is a symbolic link" in result.stderr


def test_export_never_writes_through_a_linked_blob_directory(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    root, outside = tmp_path / "bundle", tmp_path / "elsewhere"
    outside.mkdir()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs/sha256").symlink_to(outside)
    result = invoke("export", seeded.get("base/os", "1").reference, "-o", str(root),
                    "--src-tls-verify", "false", "-q")
    assert result.exit_code == 1
    assert f"{root / 'blobs/sha256'}: cannot read: Is a symbolic link" in result.stderr
    assert list(outside.iterdir()) == []


def test_a_sound_bundle_still_verifies(bundle: tuple[Path, str, int]) -> None:
    root, _, _ = bundle
    result = invoke("verify", str(root))
    assert result.exit_code == 0, result.output
    assert json.loads(invoke("verify", str(root), "--json").stdout)["ok"] is True
