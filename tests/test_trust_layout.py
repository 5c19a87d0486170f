"""A directory bundle cannot reach outside itself: blob, manifest, ``index.json`` and
``oci-layout`` files that are symbolic links, FIFOs or of the wrong size are refused
by verify, list and import before a byte of them is read or sent."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import BundleLockedError, export_bundle
from bundler.cli.main import main
from bundler.oci.content import REF_NAME
from bundler.oci.receipt import bundle_id_of
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.stores.layout import LOCK_NAME
from bundler.stores.lock import WriterLock

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


# -- one writer at a time --------------------------------------------------------------


def export_process(ref: str, output: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "bundler.cli", "export", ref, "-o",
                             str(output), "--src-tls-verify", "false", "-q", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hold(path: Path) -> int:
    """Hold an flock on ``path`` as another bundler would (our pid in it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def test_two_exports_into_one_directory_keep_both_images(seeded_registry: Seeded,
                                                          tmp_path: Path) -> None:
    _, seeded = seeded_registry
    first, second = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    root = tmp_path / "bundle"
    lock = WriterLock.for_output(root, directory=True)
    lock.acquire()  # as a running export would: both exports below must wait
    try:
        processes = [export_process(e.reference, root) for e in (first, second)]
        for process in processes:
            assert process.stderr is not None
            assert process.stderr.readline() == (
                f"waiting for another bundler writing {root} (pid {os.getpid()}) ...\n")
    finally:
        lock.release()
    for process in processes:  # now they run at the same time, one after the other
        _, err = process.communicate(timeout=GUARD_S)
        assert process.returncode == 0, err
    names = {m["annotations"][REF_NAME]
             for m in json.loads((root / "index.json").read_bytes())["manifests"]}
    assert names == {first.reference, second.reference}
    assert not (root / LOCK_NAME).exists()
    assert invoke("verify", str(root)).exit_code == 0
    # the receipt beside the bundle is the last writer's, written under the lock: it
    # names the index.json that holds both images, as the one inside does
    index_id = bundle_id_of((root / "index.json").read_bytes())
    for receipt in (tmp_path / "bundle.receipt.json", root / "bundler-receipt.json"):
        assert json.loads(receipt.read_bytes())["bundleId"] == index_id, receipt.name


def test_no_wait_fails_at_once_while_another_export_writes(seeded_registry: Seeded,
                                                           tmp_path: Path) -> None:
    _, seeded = seeded_registry
    ref = seeded.get("base/os", "1").reference
    root = tmp_path / "bundle"
    root.mkdir()
    fd = hold(root / LOCK_NAME)
    try:
        done = export_process(ref, root, "--no-wait")
        out, err = done.communicate(timeout=GUARD_S)
        with pytest.raises(BundleLockedError) as caught:
            export_bundle([ref], root, wait=False)
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert err == (f"error: {root}: another bundler (pid {os.getpid()}) is writing this "
                   f"bundle (lock {root / LOCK_NAME}); wait for it to finish, or run "
                   "without --no-wait to wait for it\n")
    assert caught.value.pid == os.getpid()
    assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]  # nothing written


def test_an_archive_is_locked_beside_it(seeded_registry: Seeded, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    ref = seeded.get("base/os", "1").reference
    archive = tmp_path / "b.tar"
    fd = hold(tmp_path / ".b.tar.lock")
    try:
        done = export_process(ref, archive, "--no-wait")
        _, err = done.communicate(timeout=GUARD_S)
    finally:
        os.close(fd)
    assert done.returncode == 1
    assert err.startswith(f"error: {archive}: another bundler (pid {os.getpid()}) is "
                          "writing this bundle")
    assert not archive.exists()
    (tmp_path / ".b.tar.lock").unlink()
    assert invoke("export", ref, "-o", str(archive), "--src-tls-verify", "false",
                  "-q").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_lock_file_left_by_a_killed_export_is_taken_over(seeded_registry: Seeded,
                                                          tmp_path: Path) -> None:
    _, seeded = seeded_registry
    root = tmp_path / "bundle"
    root.mkdir()
    (root / LOCK_NAME).write_text("999999999\n")  # its process is gone: no flock held
    result = invoke("export", seeded.get("base/os", "1").reference, "-o", str(root),
                    "--src-tls-verify", "false", "-q", "--no-wait")
    assert result.exit_code == 0, result.output
    assert not (root / LOCK_NAME).exists()


def test_a_failed_first_export_leaves_no_directory(tmp_path: Path) -> None:
    root = tmp_path / "new" / "bundle"
    result = invoke("export", "127.0.0.1:9/none/such:1", "-o", str(root),
                    "--src-tls-verify", "false", "-q", "--retries", "0")
    assert result.exit_code == 1
    assert not (tmp_path / "new").exists()


def test_a_shared_blob_directory_is_checked_the_same_way(bundle: tuple[Path, str, int],
                                                         tmp_path: Path) -> None:
    root, digest, _ = bundle
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.move(root / "blobs/sha256", shared / "sha256")
    (root / "blobs").mkdir(exist_ok=True)
    path = shared / "sha256" / digest[7:]
    path.unlink()
    path.symlink_to("/dev/zero")
    result = invoke("verify", str(root), "--shared-blob-dir", str(shared))
    assert result.exit_code == 1
    assert f"{path}: cannot read blob {digest}: Is a symbolic link" in result.stderr
