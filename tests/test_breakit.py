"""What a hostile or merely unlucky user tried against the trust fixes: each case once
broke (a traceback, a wrong exit status, a misleading message)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli import main
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
GUARD_S = 120  # a guard against a hang only
DEEP = "[" * 100_000 + "]" * 100_000


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def closed_stdout_run(*args: str) -> tuple[int, str]:
    """Run bundler with a stdout pipe whose reader is gone (``| head -1``)."""
    process = subprocess.Popen([sys.executable, "-m", "bundler.cli", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=GUARD_S), err


def test_a_dry_run_whose_reader_stopped_reading_exits_0(
        seeded_registry: Seeded, registry: LocalRegistry, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    entry = seeded.get("base/os", "1")
    export_bundle([entry.reference], tmp_path / "bundle")
    assert closed_stdout_run("import", str(tmp_path / "bundle"), "--to",
                             f"{registry.host}/m", "--dry-run") == (0, "")
    assert closed_stdout_run("export", entry.reference, "-o", str(tmp_path / "new"),
                             "--dry-run") == (0, "")


@pytest.mark.parametrize("host", ["x:abc", "[::1", "reg\x1b[2J:5000"])
def test_login_to_a_malformed_registry_name_is_a_usage_error(host: str,
                                                              tmp_path: Path) -> None:
    result = invoke("login", host, "-u", "a", "-p", "b", "--authfile",
                    str(tmp_path / "auth.json"))
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "is not a registry" in result.output
    assert "\x1b" not in result.output
    assert not (tmp_path / "auth.json").exists()


def test_an_auth_file_nested_thousands_deep_is_an_error_not_a_traceback(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    deep = tmp_path / "auth.json"
    deep.write_text('{"auths": ' + DEEP + "}")
    result = invoke("export", seeded.get("base/os", "1").reference, "-o",
                    str(tmp_path / "b"), "--src-authfile", str(deep), "-q")
    assert result.exit_code == 2  # as for an auth file that is no JSON at all
    assert isinstance(result.exception, SystemExit)
    assert f"cannot read auth file {deep}: JSON nested too deeply" in result.output
    result = invoke("logout", "--all", "--authfile", str(deep))
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert f"cannot read auth file {deep}: JSON nested too deeply" in result.output


def layout_with(tmp: Path, seeded: SeededSet, name: str, kind: str) -> Path:
    root = tmp / "bundle"
    export_bundle([seeded.get("base/os", "1").reference], root)
    target = root / name
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    return root


@pytest.mark.parametrize("name", ["index.json", "oci-layout"])
@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_an_index_or_layout_file_that_is_no_regular_file_is_named_as_such(
        seeded_registry: Seeded, tmp_path: Path, name: str, kind: str) -> None:
    _, seeded = seeded_registry
    root = layout_with(tmp_path, seeded, name, kind)
    what = "Is a FIFO" if kind == "fifo" else "Is a symbolic link"
    for command in (["list", str(root)], ["verify", str(root)],
                    ["import", str(root), "--to", "127.0.0.1:9/x"]):
        result = invoke(*command)
        assert result.exit_code == 1, command
        assert f"{root}/{name}: cannot read: {what}; refused" in result.output, command
        assert "missing" not in result.output


def test_a_token_or_error_body_nested_thousands_deep_is_named_plainly(
        seeded_registry: Seeded, fault_proxy, tmp_path: Path) -> None:
    source, _ = seeded_registry
    proxy = fault_proxy(source.url)
    proxy.status(r"/manifests/", 404, {"Content-Type": "application/json"},
                 ('{"errors": ' + DEEP + "}").encode(), times=None)
    result = invoke("export", f"{proxy.host}/base/os:1", "-o", str(tmp_path / "a"), "-q",
                    "--retries", "0")
    assert result.exit_code == 1
    assert f"{proxy.host} answered HTTP 404: " in result.output
    assert "recursion" not in result.output
    proxy.clear_rules()
    proxy.status(r"^/v2/", 401, {"WWW-Authenticate":
                                 f'Bearer realm="{proxy.url}/token",service="s"'},
                 times=None)
    proxy.status(r"^/token", 200, {"Content-Type": "application/json"},
                 ('{"token": ' + DEEP + "}").encode(), times=None)
    result = invoke("export", f"{proxy.host}/base/os:1", "-o", str(tmp_path / "b"), "-q",
                    "--retries", "0")
    assert result.exit_code == 1
    assert (f"{proxy.host}: the token service answered without a token "
            f"({proxy.url}/token)") in result.output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (skips where mounting is not permitted)."""
    point = tmp_path / "disk"
    point.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(point)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {run.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False)


def fill(disk: Path) -> None:
    """Write zeros to ``disk`` until it is full."""
    with open(disk / "filler", "wb", buffering=0) as out:
        for _ in range(1024):
            try:
                out.write(bytes(4096))
            except OSError:
                return


def test_an_export_onto_a_full_disk_is_an_error_line_and_leaves_no_lock_file(
        seeded_registry: Seeded, small_disk: Path) -> None:
    _, seeded = seeded_registry
    first, ref = seeded.get("base/os", "1").reference, seeded.get("base/os", "2").reference
    bundle, archive = small_disk / "b", small_disk / "a.tar"
    export_bundle([ref], bundle)  # its blobs stay; index.json then names another image
    export_bundle([first], small_disk / "other")
    (bundle / "index.json").write_bytes((small_disk / "other" / "index.json").read_bytes())
    shutil.rmtree(small_disk / "other")
    for receipt in (bundle / "bundler-receipt.json", small_disk / "b.receipt.json",
                    small_disk / "other.receipt.json"):
        receipt.unlink()  # removing them must free no room for index.json below
    before = (bundle / "index.json").read_bytes()
    fill(small_disk)
    run = subprocess.run([sys.executable, "-m", "bundler.cli", "export", "-q", "-o",
                          str(bundle), ref], capture_output=True, text=True, timeout=GUARD_S)
    assert (run.returncode, run.stderr) == (
        1, f"error: {bundle / 'index.json'}: cannot write index.json: No space left on "
           "device\n")
    assert (bundle / "index.json").read_bytes() == before
    assert not (bundle / ".bundler.lock").exists()
    run = subprocess.run([sys.executable, "-m", "bundler.cli", "export", "-q", "-o",
                          str(archive), ref], capture_output=True, text=True, timeout=GUARD_S)
    assert run.returncode == 1
    assert run.stderr.startswith(f"error: {archive}")
    assert "No space left on device" in run.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == ["b", "filler"]
    assert sorted(p.name for p in bundle.iterdir()) == ["blobs", "index.json", "oci-layout"]


def zstd_long_window(data: bytes) -> bytes:
    """``data`` as one zstd frame of raw blocks whose header asks for a 1 GiB window,
    as ``zstd --long=30`` writes for a large input (RFC 8878 3.1.1.1.2, 3.1.1.2)."""
    out = bytearray(b"\x28\xb5\x2f\xfd" + bytes([0x00, 20 << 3]))
    chunks = [data[i:i + (128 << 10)] for i in range(0, len(data), 128 << 10)] or [b""]
    for n, chunk in enumerate(chunks):
        header = (len(chunk) << 3) | (1 if n == len(chunks) - 1 else 0)  # raw block
        out += header.to_bytes(3, "little") + chunk
    return bytes(out)


def test_a_zstd_archive_with_a_window_over_128_mib_is_not_called_damaged(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    export_bundle([seeded.get("base/os", "1").reference], tmp_path / "b.tar")
    archive = tmp_path / "long.tar.zst"
    archive.write_bytes(zstd_long_window((tmp_path / "b.tar").read_bytes()))
    for command in ("verify", "list"):
        result = invoke(command, str(archive))
        assert result.exit_code == 1
        assert "damaged" not in result.output
        assert (f"{archive}: compressed with a zstd window larger than 128 MiB (zstd --long=28 "
                "or more), which bundler does not decode; decompress it (zstd -d "
                "--memory=2GB) and give the .tar") in result.output


def test_an_archive_manifest_nested_thousands_deep_is_named_with_its_member(
        tmp_path: Path) -> None:
    import hashlib
    import io
    import tarfile

    deep = b"[" * 100_000 + b"]" * 100_000
    digest = hashlib.sha256(deep).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{digest}", "size": len(deep),
        "annotations": {"org.opencontainers.image.ref.name": "example.com/deep/x:1"}}]})
    path = tmp_path / "nm.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", index.encode()),
                           (f"blobs/sha256/{digest}", deep)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = CliRunner().invoke(main, ["import", str(path), "--to", "127.0.0.1:1/x"])
    assert result.exit_code == 1
    assert result.output == (f"error: {path}: blobs/sha256/{digest}: manifest is JSON nested "
                             "too deeply to be read\n")
