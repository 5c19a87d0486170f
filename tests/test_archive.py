"""Single-file bundles: .tar / .tar.zst export, split volumes, one-pass import (file,
volumes, stdin), verify and list of archives, safe reading, interrupted exports."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from bundler import (
    BundleError,
    UnsafeArchiveError,
    export_bundle,
    import_bundle,
    list_bundle,
    verify_bundle,
)
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.stores.volumes import read_checksums

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


# -- helpers -----------------------------------------------------------------------------
def tagged(seeded: SeededSet) -> list:
    return [e for e in seeded.entries if e.tag is not None]


def dest_digest(reg: LocalRegistry, repository: str, identifier: str) -> str | None:
    with reg.client() as http:
        response = http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                             headers={"Accept": ACCEPT})
        return response.headers.get("Docker-Content-Digest") if response.status_code == 200 \
            else None


def assert_imported(reg: LocalRegistry, seeded: SeededSet, prefix: str) -> None:
    for entry in seeded.entries:
        identifier = entry.tag or entry.digest
        got = dest_digest(reg, f"{prefix}/{entry.repository}", identifier)
        assert got == entry.digest, entry.reference


def member_names(path: Path) -> list[str]:
    data = path.read_bytes()
    if data[:4] == b"\x28\xb5\x2f\xfd":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data),
                                                          read_across_frames=True).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.name for m in tar.getmembers()]


def pushed(reg: LocalRegistry, since: int) -> list[tuple[str, str]]:
    return [(m, u) for m, u in reg.requests(since) if m in ("PUT", "POST", "PATCH")]


def pairs_count(seeded: SeededSet) -> int:
    """(repository, blob) pairs an import into an empty registry creates."""
    repos: dict[str, set[str]] = {}
    for entry in seeded.entries:
        repos.setdefault(entry.repository, set()).update(entry.blob_sizes)
    return sum(len(blobs) for blobs in repos.values())


@pytest.fixture(scope="module")
def bundles(seeded_registry: tuple[LocalRegistry, SeededSet],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded set exported once as .tar, .tar.zst and three .tar.zst volumes."""
    _, seeded = seeded_registry
    root = tmp_path_factory.mktemp("archives")
    out = {"tar": root / "bundle.tar", "zst": root / "bundle.tar.zst"}
    export_bundle(seeded.references, out["tar"])
    export_bundle(seeded.references, out["zst"])
    split = out["zst"].stat().st_size // 3 + 1
    out["split"] = root / "split" / "bundle.tar.zst"
    out["split"].parent.mkdir()
    export_bundle(seeded.references, out["split"], split_size=split)
    return out


def untimed(archive: bytes) -> bytes:
    """A .tar.zst's tar stream, its receipt's creation time blanked."""
    tar = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive),
                                                     read_across_frames=True).read()
    return re.sub(rb'"created":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z"', b'"created":"-"', tar)


# -- export ------------------------------------------------------------------------------
def test_archive_member_order_and_single_copy(bundles: dict[str, Path],
                                              seeded_registry: tuple) -> None:
    _, seeded = seeded_registry
    names = member_names(bundles["zst"])
    assert names[:5] == ["oci-layout", "index.json", "bundler-receipt.json", "blobs",
                         "blobs/sha256"]
    manifests = {d for e in seeded.entries for d in e.manifests}
    configs = set()
    for entry in seeded.entries:
        images = entry.item.children if hasattr(entry.item, "children") else [entry.item]
        configs.update(image.config.digest for image in images)
    blobs = [n.removeprefix("blobs/sha256/") for n in names[5:]]
    assert len(blobs) == len(set(blobs)) == len(manifests) + seeded.unique_blob_count
    n_manifests = len(manifests)
    assert {"sha256:" + b for b in blobs[:n_manifests]} == manifests
    assert {"sha256:" + b for b in blobs[n_manifests:n_manifests + len(configs)]} == configs
    assert {"sha256:" + b for b in blobs[n_manifests + len(configs):]} == (
        set(seeded.blobs) - configs)
    assert member_names(bundles["tar"]) == names
    assert list(bundles["zst"].parent.glob(".*")) == []  # no temp file, no spool left


def test_volumes_concatenate_to_the_archive_and_are_listed(bundles: dict[str, Path]) -> None:
    base = bundles["split"]
    volumes = sorted(base.parent.glob("bundle.tar.zst.0*"))
    assert [v.name for v in volumes] == ["bundle.tar.zst.000", "bundle.tar.zst.001",
                                         "bundle.tar.zst.002"]
    joined = b"".join(v.read_bytes() for v in volumes)
    # the same archive as the whole one, but for the time in its receipt
    assert untimed(joined) == untimed(bundles["zst"].read_bytes())
    listed = read_checksums(base)
    assert [(i.name, i.sha256, i.size) for i in listed] == [
        (v.name, hashlib.sha256(v.read_bytes()).hexdigest(), v.stat().st_size) for v in volumes
    ]
    out = subprocess.run(["sha256sum", "-c", "bundle.tar.zst.sha256"], cwd=base.parent,
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [f"{v.name}: OK" for v in volumes]


def test_export_refuses_an_existing_archive(bundles: dict[str, Path],
                                            seeded_registry: tuple) -> None:
    _, seeded = seeded_registry
    with pytest.raises(BundleError) as info:
        export_bundle(seeded.references[:1], bundles["tar"])
    assert str(info.value) == (f"{bundles['tar']} already exists; an archive bundle is "
                               "written whole: remove it or choose another output name")


# -- import ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["zst", "tar"])
def test_round_trip_through_an_archive(kind: str, bundles: dict[str, Path],
                                       seeded_registry: tuple, registry: LocalRegistry) -> None:
    _, seeded = seeded_registry
    result = import_bundle(bundles[kind], to=f"{registry.host}/mirror")
    assert_imported(registry, seeded, "mirror")
    assert result.blobs_uploaded == seeded.unique_blob_count
    assert result.blobs_mounted == pairs_count(seeded) - seeded.unique_blob_count
    assert result.bytes_uploaded == seeded.unique_bytes
    assert result.skipped_images == []
    again = import_bundle(bundles[kind], to=f"{registry.host}/mirror")
    assert (again.blobs_uploaded, again.blobs_mounted) == (0, 0)
    assert again.skipped_images == [e.reference for e in seeded.entries]


@pytest.mark.parametrize("name", ["bundle.tar.zst", "bundle.tar.zst.000"])
def test_round_trip_through_three_volumes(name: str, bundles: dict[str, Path],
                                          seeded_registry: tuple,
                                          registry: LocalRegistry) -> None:
    _, seeded = seeded_registry
    result = import_bundle(bundles["split"].parent / name, to=f"{registry.host}/vol")
    assert_imported(registry, seeded, "vol")
    assert result.blobs_uploaded == seeded.unique_blob_count


def test_present_blobs_are_read_past(bundles: dict[str, Path], seeded_registry: tuple,
                                     registry: LocalRegistry) -> None:
    _, seeded = seeded_registry
    base1 = seeded.get("base/os", "1")
    import_bundle(bundles["tar"], mapping=[(base1.reference, f"{registry.host}/m/base/os")])
    since = registry.mark()
    result = import_bundle(bundles["zst"], to=f"{registry.host}/m")
    assert_imported(registry, seeded, "m")
    assert result.skipped_images == [base1.reference]
    # base/os:1's three blobs are never sent again: present in m/base/os or mounted from it
    assert (result.blobs_uploaded, result.blobs_mounted, result.blobs_present) == (
        seeded.unique_blob_count - 3, pairs_count(seeded) - 2 - 1 - (seeded.unique_blob_count - 3),
        1)
    sent = {u.split("digest=")[1] for m, u in pushed(registry, since)
            if m == "PUT" and "/blobs/uploads/" in u and "/m/bundler-receipts/" not in u}
    assert sent.isdisjoint(base1.blob_sizes)
    assert len(sent) == seeded.unique_blob_count - 3


def test_pipe_import_from_concatenated_volumes(bundles: dict[str, Path], seeded_registry: tuple,
                                               registry: LocalRegistry) -> None:
    _, seeded = seeded_registry
    command = (f"cat bundle.tar.zst.* | {sys.executable} -m bundler.cli import - "
               f"--to {registry.host}/pipe --dest-tls-verify=false -q")
    out = subprocess.run(command, shell=True, cwd=bundles["split"].parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(f"imported {len(seeded.entries)} images (0 "
                                                 f"already there); blobs uploaded "
                                                 f"{seeded.unique_blob_count} ")
    assert_imported(registry, seeded, "pipe")


def test_skopeo_reads_the_uncompressed_tar(bundles: dict[str, Path], seeded_registry: tuple,
                                           registry: LocalRegistry) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo missing")
    _, seeded = seeded_registry
    web = seeded.get("apps/web", "1.0")
    out = subprocess.run(
        ["skopeo", "copy", "--dest-tls-verify=false",
         f"oci-archive:{bundles['tar']}:{web.reference}",
         f"docker://{registry.host}/skopeo/web:1.0"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert dest_digest(registry, "skopeo/web", "1.0") == web.digest


def test_list_of_an_archive_equals_list_of_its_directory(bundles: dict[str, Path],
                                                         seeded_registry: tuple,
                                                         tmp_path: Path) -> None:
    _, seeded = seeded_registry
    export_bundle(seeded.references, tmp_path / "dir")
    expected = list_bundle(tmp_path / "dir")
    for key in ("tar", "zst", "split"):
        assert list_bundle(bundles[key]) == expected
    assert [str(i.digest) for i in expected.images] == [e.digest for e in seeded.entries]


# -- verify ------------------------------------------------------------------------------
def rewrite_tar(source: Path, target: Path, *, drop: str | None = None,
                extra: list[tuple[tarfile.TarInfo, bytes | None]] | None = None,
                rename=None) -> None:  # type: ignore[no-untyped-def]
    """Copy a .tar bundle member by member; drop one, add members after index.json."""
    with tarfile.open(source) as src, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            if info.name == drop:
                continue
            data = src.extractfile(info).read() if info.isfile() else None
            if rename is not None:
                info.name = rename(info.name)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
            if info.name.endswith("index.json"):
                for extra_info, extra_data in extra or ():
                    dst.addfile(extra_info,
                                io.BytesIO(extra_data) if extra_data is not None else None)


def layer_of(seeded: SeededSet, repository: str) -> str:
    entry = seeded.get(repository)
    return entry.item.layers[-1].digest


def test_verify_sound_archives(bundles: dict[str, Path]) -> None:
    for key in ("tar", "zst", "split"):
        report = verify_bundle(bundles[key])
        assert report.problems == []
        assert (report.images, report.blobs) == (9, 35)


def test_verify_finds_a_flipped_byte_in_a_layer(bundles: dict[str, Path], seeded_registry: tuple,
                                                tmp_path: Path) -> None:
    _, seeded = seeded_registry
    digest = layer_of(seeded, "legacy/tool")
    path = tmp_path / "flipped.tar"
    shutil.copy(bundles["tar"], path)
    with tarfile.open(path) as tar:
        info = tar.getmember("blobs/sha256/" + digest.removeprefix("sha256:"))
        content = bytearray(tar.extractfile(info).read())
    content[100] ^= 0x01
    with open(path, "r+b") as f:
        f.seek(info.offset_data + 100)
        f.write(bytes([content[100]]))
    sound = verify_bundle(bundles["tar"])
    report = verify_bundle(path)
    actual = "sha256:" + hashlib.sha256(content).hexdigest()
    registry, _ = seeded_registry
    assert report.problems == [  # named by the image, as a directory's verify does
        f"{registry.host}/legacy/tool:latest: digest mismatch "
        f"(blobs/sha256/{digest.removeprefix('sha256:')}): expected {digest}, got {actual}"
    ]
    assert report.bytes == sound.bytes - len(content)  # only the bytes that checked
    out = subprocess.run([sys.executable, "-m", "bundler.cli", "verify", str(path), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert json.loads(out.stdout)["problems"] == report.problems


def test_verify_finds_a_missing_blob(bundles: dict[str, Path], seeded_registry: tuple,
                                     tmp_path: Path) -> None:
    _, seeded = seeded_registry
    digest = layer_of(seeded, "legacy/tool")
    path = tmp_path / "missing.tar"
    rewrite_tar(bundles["tar"], path, drop="blobs/sha256/" + digest.removeprefix("sha256:"))
    report = verify_bundle(path)
    assert report.problems == [
        f"{seeded.get('legacy/tool').reference}: {digest} is missing from the archive"
    ]


def split_copy(bundles: dict[str, Path], tmp_path: Path) -> Path:
    target = tmp_path / "split"
    shutil.copytree(bundles["split"].parent, target)
    return target / "bundle.tar.zst"


def test_verify_finds_a_truncated_last_volume(bundles: dict[str, Path], tmp_path: Path) -> None:
    base = split_copy(bundles, tmp_path)
    last = base.with_name("bundle.tar.zst.002")
    size = last.stat().st_size
    os.truncate(last, size - 1000)
    report = verify_bundle(base.with_name("bundle.tar.zst.000"))
    assert report.problems[0] == (f"volume bundle.tar.zst.002 has {size - 1000} bytes, the "
                                  f"checksum file says {size} (truncated or from another "
                                  "bundle)")
    assert f"{base}: the archive is truncated or damaged (" in "\n".join(report.problems)
    assert not report.ok


def test_verify_finds_a_volume_of_another_bundle(bundles: dict[str, Path], seeded_registry: tuple,
                                                 tmp_path: Path) -> None:
    _, seeded = seeded_registry
    other = tmp_path / "other" / "bundle.tar.zst"
    other.parent.mkdir()
    split = bundles["split"].with_name("bundle.tar.zst.000").stat().st_size
    export_bundle(seeded.references, other, split_size=split, compression_level=1)
    base = split_copy(bundles, tmp_path)
    shutil.copy(other.with_name("bundle.tar.zst.001"), base.with_name("bundle.tar.zst.001"))
    report = verify_bundle(base)
    theirs = hashlib.sha256(other.with_name("bundle.tar.zst.001").read_bytes()).hexdigest()
    ours = read_checksums(base)[1].sha256
    assert (f"volume bundle.tar.zst.001: sha256 {theirs} does not match the checksum file "
            f"({ours}); it is damaged or belongs to another bundle") in report.problems
    assert not report.ok


# -- unsafe archives ---------------------------------------------------------------------
def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"evil",
            linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if data is not None and kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


HEX = "0" * 64
UNSAFE = {
    "dotdot": (_member("../evil"), "'../evil': paths with '..' are refused"),
    "inner-dotdot": (_member("blobs/../../evil"), "'blobs/../../evil': paths with '..' are "
                                                 "refused"),
    "absolute": (_member("/etc/evil"), "'/etc/evil': absolute paths are refused"),
    "symlink": (_member(f"blobs/sha256/{HEX}", tarfile.SYMTYPE, None, "/etc/passwd"),
                f"'blobs/sha256/{HEX}': symbolic links are refused (-> '/etc/passwd')"),
    "hardlink": (_member(f"blobs/sha256/{HEX}", tarfile.LNKTYPE, None, "index.json"),
                 f"'blobs/sha256/{HEX}': hard links are refused (-> 'index.json')"),
    "chardev": (_member("blobs/sha256/dev", tarfile.CHRTYPE, None),
                "'blobs/sha256/dev': device files are refused"),
    "blockdev": (_member("blobs/sha256/dev", tarfile.BLKTYPE, None),
                 "'blobs/sha256/dev': device files are refused"),
    "fifo": (_member("blobs/sha256/fifo", tarfile.FIFOTYPE, None),
             "'blobs/sha256/fifo': FIFOs are refused"),
    "duplicate": (_member("./index.json", data=b"{}"), "'./index.json': duplicate entry"),
    "outside": (_member("evil.sh"), "'evil.sh': not part of an OCI image layout or docker "
                                    "archive (only oci-layout, index.json and "
                                    "blobs/<algorithm>/<hex> of an OCI image layout, "
                                    "bundler's bundler-receipt.json, and "
                                    "manifest.json, repositories, <id>.json and "
                                    "<id>/layer.tar of docker save, are accepted)"),
    "bad-dir": (_member("etc", tarfile.DIRTYPE, None),
                "'etc': only the directories blobs/ and blobs/<algorithm>/ belong in a bundle"),
}


@pytest.fixture(scope="module")
def small_tar(seeded_registry: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, seeded = seeded_registry
    path = tmp_path_factory.mktemp("small") / "tool.tar"
    export_bundle([seeded.get("legacy/tool").reference], path)
    return path


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_members_are_refused_before_anything_moves(kind: str, small_tar: Path,
                                                          registry: LocalRegistry,
                                                          tmp_path: Path) -> None:
    (info, data), reason = UNSAFE[kind]
    evil = tmp_path / "evil.tar"
    rewrite_tar(small_tar, evil, extra=[(info, data)])
    expected = f"{evil}: unsafe archive member {reason}"
    since = registry.mark()
    with pytest.raises(UnsafeArchiveError) as caught:
        import_bundle(evil, to=f"{registry.host}/evil")
    assert str(caught.value) == expected
    assert registry.requests(since) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar", "registry"]
    assert verify_bundle(evil).problems == [expected]
    with pytest.raises(UnsafeArchiveError):
        list_bundle(evil)


def test_leading_dot_slash_names_are_accepted(small_tar: Path, seeded_registry: tuple,
                                              registry: LocalRegistry, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    dotted = tmp_path / "dotted.tar"
    rewrite_tar(small_tar, dotted, rename=lambda n: "./" + n,
                extra=[(_member("./", tarfile.DIRTYPE, None))])
    tool = seeded.get("legacy/tool")
    assert verify_bundle(dotted).problems == []
    import_bundle(dotted, to=f"{registry.host}/dot")
    assert dest_digest(registry, "dot/legacy/tool", "latest") == tool.digest


# -- interrupted export ------------------------------------------------------------------
def test_killed_export_leaves_no_file_at_the_final_name(seeded_registry: tuple, fault_proxy,
                                                        tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reg, seeded = seeded_registry
    proxy = fault_proxy(reg.url)
    proxy.slow(r"/blobs/sha256:", 4096, method="GET")
    ref = f"{proxy.host}/multi/arch:1"
    output = tmp_path / "out.tar.zst"
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler.cli", "export", ref, "-o", str(output),
         "--src-tls-verify=false", "-q", "--split-size", "64KiB"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while proxy.count("GET", r"/blobs/sha256:") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.count("GET", r"/blobs/sha256:") > 0
        assert process.poll() is None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "out.tar.zst" not in names
    assert not any(n.startswith("out.tar.zst.") for n in names)
    assert any(n.startswith(".out.tar.zst") for n in names)  # only hidden temp names
