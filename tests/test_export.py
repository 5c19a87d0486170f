"""End-to-end tests of export (issue #2) against real local registries.

Read-only tests share the session ``seeded_registry`` (see bundler.sandbox.seed) and one
bundle holding the whole seeded set; tests that need their own content or faults start
their own registry or put a FaultProxy in front of the seeded one. Expected values are
computed from what the sandbox pushed, never from what bundler reports.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler.bundle import export_bundle
from bundler.cli.main import human, main
from bundler.errors import AuthenticationError, DigestMismatchError, NotFoundError, TransferError
from bundler.registry.client import TransportOptions
from bundler.registry.credentials import Credentials
from bundler.sandbox import (
    FaultProxy,
    LocalRegistry,
    SeededEntry,
    SeededSet,
    make_image,
    push,
    random_layer,
    start_registry,
)
from bundler.sandbox.images import Index as SandboxIndex

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
BLOB_GET = re.compile(r"^/v2/.+/blobs/sha256:([0-9a-f]{64})")

Seeded = tuple[LocalRegistry, SeededSet]


# -- helpers ----------------------------------------------------------------------------------


def run_cli(*args: str) -> Result:
    """Invoke ``bundler`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def blob_digests(entries: list[SeededEntry]) -> dict[str, int]:
    """``sha256:<hex>`` -> size of every config and layer blob of ``entries``."""
    out: dict[str, int] = {}
    for entry in entries:
        out.update(entry.blob_sizes)
    return out


def manifest_bytes(entries: list[SeededEntry]) -> dict[str, bytes]:
    """``sha256:<hex>`` -> bytes of every manifest and index of ``entries``."""
    out: dict[str, bytes] = {}
    for entry in entries:
        out.update(entry.manifests)
    return out


def image_size(entry: SeededEntry) -> int:
    """Bytes of one image: its manifests and its distinct blobs."""
    return sum(entry.blob_sizes.values()) + sum(len(b) for b in entry.manifests.values())


def bundle_files(root: Path) -> set[str]:
    """Every file under ``root``, as a path relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def expected_files(entries: list[SeededEntry]) -> set[str]:
    digests = set(blob_digests(entries)) | set(manifest_bytes(entries))
    return {"oci-layout", "index.json", "bundler-receipt.json"} | {
        f"blobs/sha256/{d[7:]}" for d in digests}


def index_entries(root: Path) -> list[dict]:
    return json.loads((root / "index.json").read_bytes())["manifests"]


def blob_gets(registry: LocalRegistry, since: int) -> list[str]:
    """Digests of the blob GET requests since ``since``, in order."""
    out = []
    for method, uri in registry.requests(since):
        match = BLOB_GET.match(uri)
        if method == "GET" and match:
            out.append("sha256:" + match.group(1))
    return out


def summary_pattern(images: int, output: Path, downloaded: int, nbytes: int, present: int,
                    unique: int, total: int) -> re.Pattern[str]:
    pct = 100 * (total - unique) / total if total else 0
    return re.compile(
        re.escape(
            f"exported {images} image{'s' if images != 1 else ''} to {output}: {human(unique)} unique ({human(total)} "
            f"without dedup, {pct:.0f}% saved); blobs downloaded {downloaded} "
            f"({human(nbytes)}), already present {present}; "
        )
        + r"\d+\.\d s, \d+\.\d MB/s\n\Z"
    )


# -- fixtures ---------------------------------------------------------------------------------


@dataclass
class FullExport:
    root: Path
    result: Result
    seeded: SeededSet
    registry: LocalRegistry
    blob_gets: list[str]


@pytest.fixture(scope="session")
def full_export(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> FullExport:
    """The whole seeded set exported through the CLI with an images file."""
    registry, seeded = seeded_registry
    work = tmp_path_factory.mktemp("full-export")
    images = work / "images.txt"
    lines = ["# the standard seeded set", ""]
    for ref in seeded.references:
        lines += [ref, "   "]
    images.write_text("\n".join(lines) + "\n")
    root = work / "bundle"
    mark = registry.mark()
    result = run_cli("export", "--images-file", str(images), "-o", str(root), "-q")
    return FullExport(root, result, seeded, registry, blob_gets(registry, mark))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRegistry, str]]:
    """An htpasswd registry (alice / s3cret) holding ``priv/app:1``; yields it and the digest."""
    registry = start_registry(tmp_path_factory.mktemp("auth-registry"), htpasswd=("alice", "s3cret"))
    try:
        image = make_image([random_layer(101, 3000)])
        with registry.client() as client:
            digest = push(registry, "priv/app", image, tag="1", client=client)
        yield registry, digest
    finally:
        registry.stop()


# -- the whole seeded set -------------------------------------------------------------------


def test_full_export_succeeds_and_reports_the_dedup(full_export: FullExport) -> None:
    seeded = full_export.seeded
    assert full_export.result.exit_code == 0, full_export.result.output
    assert full_export.result.stderr == ""
    blobs = blob_digests(seeded.entries)
    manifests = manifest_bytes(seeded.entries)
    unique = sum(blobs.values()) + sum(len(b) for b in manifests.values())
    total = sum(image_size(e) for e in seeded.entries)
    assert (len(blobs), len(manifests)) == (23, 12)
    assert summary_pattern(9, full_export.root, 23, sum(blobs.values()), 0, unique, total).match(
        full_export.result.stdout
    ), full_export.result.stdout


def test_shared_layers_are_stored_and_downloaded_once(full_export: FullExport) -> None:
    seeded = full_export.seeded
    blobs = blob_digests(seeded.entries)
    blob_dir = full_export.root / "blobs" / "sha256"
    names = sorted(p.name for p in blob_dir.iterdir())
    assert len(names) == 35 == len(blobs) + len(manifest_bytes(seeded.entries))
    assert sorted(full_export.blob_gets) == sorted(blobs)
    for digest, size in blobs.items():
        data = (blob_dir / digest[7:]).read_bytes()
        assert len(data) == size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest


def test_manifests_are_stored_byte_for_byte(full_export: FullExport) -> None:
    for digest, raw in manifest_bytes(full_export.seeded.entries).items():
        assert (full_export.root / "blobs" / "sha256" / digest[7:]).read_bytes() == raw


def test_index_json_names_every_image_by_its_full_reference(full_export: FullExport) -> None:
    entries = index_entries(full_export.root)
    assert [
        (e["mediaType"], e["digest"], e["size"], e["annotations"]) for e in entries
    ] == [
        (s.media_type, s.digest, len(s.manifest_bytes), {REF_NAME: s.reference,
                                                         CONTAINERD_NAME: s.reference})
        for s in full_export.seeded.entries
    ]
    doc = json.loads((full_export.root / "index.json").read_bytes())
    assert (doc["schemaVersion"], doc["mediaType"]) == (
        2, "application/vnd.oci.image.index.v1+json",
    )


def test_oci_layout_file_and_no_leftovers(full_export: FullExport) -> None:
    root = full_export.root
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    assert bundle_files(root) == expected_files(full_export.seeded.entries)
    dirs = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}
    assert dirs == {"blobs", "blobs/sha256"}


def test_multi_arch_index_is_kept_whole(full_export: FullExport) -> None:
    entry = full_export.seeded.get("multi/arch", "1")
    assert isinstance(entry.item, SandboxIndex)
    blob_dir = full_export.root / "blobs" / "sha256"
    stored = (blob_dir / entry.digest[7:]).read_bytes()
    assert stored == entry.manifest_bytes
    children = json.loads(stored)["manifests"]
    assert len(children) == 4
    assert [c["platform"] for c in children] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "unknown", "os": "unknown"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "unknown", "os": "unknown"},
    ]
    assert children[1]["annotations"]["vnd.docker.reference.digest"] == children[0]["digest"]
    assert children[3]["annotations"]["vnd.docker.reference.digest"] == children[2]["digest"]
    for child, image in zip(children, entry.item.children, strict=True):
        assert child["digest"] == image.digest
        assert (blob_dir / image.digest[7:]).read_bytes() == image.manifest_bytes
        for blob in image.blobs:
            assert (blob_dir / blob.digest[7:]).read_bytes() == blob.data


# -- other tools read the bundle --------------------------------------------------------------


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=60, check=False)


# skopeo 1.9.3 looks only at OCI media types in index.json, so the Docker schema2 image
# (legacy/tool) is read through umoci and the file checks above instead.
OCI_ENTRIES = ["base/os:1", "base/os:2", "apps/web:1.0", "apps/web:latest", "apps/api:1.0",
               "multi/arch:1", "apps/pinned", "apps/web:sig"]


def seeded_entry(seeded: SeededSet, key: str) -> SeededEntry:
    repository, _, tag = key.partition(":")
    if tag == "sig":
        return next(e for e in seeded.entries if e.tag and e.tag.endswith(".sig"))
    return seeded.get(repository, tag or None)


@pytest.mark.parametrize("key", OCI_ENTRIES)
def test_skopeo_inspect_raw_reads_the_exact_bytes(full_export: FullExport, key: str) -> None:
    entry = seeded_entry(full_export.seeded, key)
    done = skopeo("inspect", "--raw", f"oci:{full_export.root}:{entry.reference}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == entry.manifest_bytes


@pytest.mark.parametrize("key", ["base/os:1", "apps/web:latest", "apps/pinned"])
def test_skopeo_inspect_reports_the_source_digest(full_export: FullExport, key: str) -> None:
    entry = seeded_entry(full_export.seeded, key)
    done = skopeo("inspect", "--format", "{{.Digest}}", f"oci:{full_export.root}:{entry.reference}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().strip() == entry.digest


def test_skopeo_copy_reads_an_image_out_of_the_bundle(
    full_export: FullExport, tmp_path: Path
) -> None:
    entry = full_export.seeded.get("apps/web", "1.0")
    target = tmp_path / "web"
    done = skopeo("copy", "-q", f"oci:{full_export.root}:{entry.reference}", f"dir:{target}")
    assert done.returncode == 0, done.stderr
    assert (target / "manifest.json").read_bytes() == entry.manifest_bytes
    for blob in entry.item.blobs:
        assert (target / blob.digest[7:]).read_bytes() == blob.data
    assert len(os.listdir(target)) == 2 + len(entry.item.blobs)


def test_umoci_lists_every_reference(full_export: FullExport) -> None:
    done = subprocess.run(["umoci", "ls", "--layout", str(full_export.root)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == full_export.seeded.references


# -- bundler list ---------------------------------------------------------------------------


def expected_listing(seeded: SeededSet) -> dict:
    blobs = blob_digests(seeded.entries)
    manifests = manifest_bytes(seeded.entries)
    return {
        "images": [
            {
                "reference": e.reference,
                "digest": e.digest,
                "mediaType": e.media_type,
                "platforms": ["linux/amd64", "linux/arm64/v8"] if e.repository == "multi/arch"
                else [],
                "size": image_size(e),
            }
            for e in seeded.entries
        ],
        "uniqueBytes": sum(blobs.values()) + sum(len(b) for b in manifests.values()),
        "totalBytes": sum(image_size(e) for e in seeded.entries),
        "blobs": len(blobs) + len(manifests),
        "problems": [],
    }


def test_list_json(full_export: FullExport) -> None:
    result = run_cli("list", "--json", str(full_export.root))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    index_json = (full_export.root / "index.json").read_bytes()
    assert doc.pop("bundleId") == "sha256:" + hashlib.sha256(index_json).hexdigest()
    assert doc.pop("base") is None  # a full bundle
    assert doc == expected_listing(full_export.seeded)


def test_list_table(full_export: FullExport) -> None:
    result = run_cli("list", str(full_export.root))
    assert result.exit_code == 0, result.output
    expected = expected_listing(full_export.seeded)
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REFERENCE", "DIGEST", "MEDIA", "TYPE", "PLATFORMS", "SIZE"]
    rows = [line.split() for line in lines[1:-1]]
    assert [row[:4] for row in rows] == [
        [
            image["reference"],
            image["digest"][:19],
            image["mediaType"].rsplit("/", 1)[-1],
            ",".join(image["platforms"]) or "-",
        ]
        for image in expected["images"]
    ]
    assert [" ".join(row[4:]) for row in rows] == [human(i["size"]) for i in expected["images"]]
    unique, total = expected["uniqueBytes"], expected["totalBytes"]
    assert lines[-1] == (
        f"9 images, 35 blobs: {human(unique)} stored, {human(total)} without dedup "
        f"({human(total - unique)} saved)"
    )


# -- references -----------------------------------------------------------------------------


def test_digest_only_and_tag_at_digest_references(seeded_registry: Seeded, tmp_path: Path) -> None:
    registry, seeded = seeded_registry
    pinned = seeded.get("apps/pinned")
    web = seeded.get("apps/web", "1.0")
    tag_at_digest = f"{seeded.host}/apps/web:1.0@{web.digest}"
    mark = registry.mark()
    result = run_cli("export", pinned.reference, tag_at_digest, "-o", str(tmp_path / "b"), "-q",
                     "--no-referrers")  # web:1.0's signature: tests/test_referrers_export.py
    assert result.exit_code == 0, result.output
    entries = index_entries(tmp_path / "b")
    assert [(e["annotations"][REF_NAME], e["digest"]) for e in entries] == [
        (f"{seeded.host}/apps/pinned@{pinned.digest}", pinned.digest),
        (tag_at_digest, web.digest),
    ]
    manifest_gets = sorted(
        uri for method, uri in registry.requests(mark) if method == "GET" and "/manifests/" in uri
    )
    assert manifest_gets == sorted([
        f"/v2/apps/pinned/manifests/{pinned.digest}",
        f"/v2/apps/web/manifests/{web.digest}",
    ])
    assert bundle_files(tmp_path / "b") == expected_files([pinned, web])


def test_invalid_reference_is_a_usage_error_and_writes_nothing(
    seeded_registry: Seeded, tmp_path: Path
) -> None:
    _, seeded = seeded_registry
    bad = f"{seeded.host}/Base/os:1"
    result = run_cli("export", seeded.get("base/os", "1").reference, bad,
                     "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert f"Error: invalid reference {bad!r}: repository name must be lowercase" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "b").exists()


def test_invalid_reference_in_images_file_is_a_usage_error(tmp_path: Path) -> None:
    images = tmp_path / "images.txt"
    images.write_text("# list\n127.0.0.1:1/ok:1\n127.0.0.1:1/bad:" + "x" * 129 + "\n")
    result = run_cli("export", "-f", str(images), "-o", str(tmp_path / "b"))
    assert result.exit_code == 2
    assert "is longer than 128 characters" in result.stderr
    assert "127.0.0.1:1/bad:" in result.stderr
    assert not (tmp_path / "b").exists()


def test_images_file_with_comments_blank_lines_and_duplicates(
    seeded_registry: Seeded, tmp_path: Path
) -> None:
    registry, seeded = seeded_registry
    base, web = seeded.get("base/os", "1"), seeded.get("apps/web", "1.0")
    images = tmp_path / "images.txt"
    images.write_text(
        f"# images to move\n\n{base.reference}\n   \n  {base.reference}   # again\n"
        f"{web.reference}\n# {seeded.get('apps/api', '1.0').reference}\n{base.reference}"
    )
    mark = registry.mark()
    result = run_cli("export", "--images-file", str(images), "-o", str(tmp_path / "b"), "-q",
                     "--no-referrers")  # referrers: tests/test_referrers_export.py
    assert result.exit_code == 0, result.output
    assert [e["annotations"][REF_NAME] for e in index_entries(tmp_path / "b")] == [
        base.reference, web.reference,
    ]
    assert sorted(blob_gets(registry, mark)) == sorted(blob_digests([base, web]))
    assert result.stdout.startswith(f"exported 2 images to {tmp_path / 'b'}: ")


# -- incremental exports ----------------------------------------------------------------------


def test_second_export_downloads_no_blob(seeded_registry: Seeded, tmp_path: Path) -> None:
    registry, seeded = seeded_registry
    chosen = [seeded.get("base/os", "1"), seeded.get("multi/arch", "1")]
    refs = [e.reference for e in chosen]
    blobs = blob_digests(chosen)
    manifests = manifest_bytes(chosen)
    unique = sum(blobs.values()) + sum(len(b) for b in manifests.values())
    total = sum(image_size(e) for e in chosen)
    out = tmp_path / "b"

    mark = registry.mark()
    first = run_cli("export", *refs, "-o", str(out), "-q")
    assert first.exit_code == 0, first.output
    assert sorted(blob_gets(registry, mark)) == sorted(blobs)
    assert len(blobs) == 11
    assert summary_pattern(2, out, 11, sum(blobs.values()), 0, unique, total).match(first.stdout)
    index_before = (out / "index.json").read_bytes()

    mark = registry.mark()
    second = run_cli("export", *refs, "-o", str(out), "-q")
    assert second.exit_code == 0, second.output
    assert blob_gets(registry, mark) == []
    assert summary_pattern(2, out, 0, 0, 11, unique, total).match(second.stdout), second.stdout
    assert (out / "index.json").read_bytes() == index_before
    assert bundle_files(out) == expected_files(chosen)


def test_export_into_an_existing_bundle_adds_and_keeps(
    seeded_registry: Seeded, tmp_path: Path
) -> None:
    registry, seeded = seeded_registry
    base, api = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    out = tmp_path / "b"
    assert run_cli("export", base.reference, "-o", str(out), "-q").exit_code == 0
    (first_entry,) = index_entries(out)

    mark = registry.mark()
    result = run_cli("export", api.reference, "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    new = set(api.blob_sizes) - set(base.blob_sizes)
    assert sorted(blob_gets(registry, mark)) == sorted(new)
    assert len(new) == 2
    assert "blobs downloaded 2 " in result.stdout and "already present 2;" in result.stdout
    entries = index_entries(out)
    assert entries[0] == first_entry
    assert [(e["annotations"][REF_NAME], e["digest"]) for e in entries] == [
        (base.reference, base.digest), (api.reference, api.digest),
    ]
    assert bundle_files(out) == expected_files([base, api])

    # exporting a name again replaces its entry instead of adding a second one
    assert run_cli("export", base.reference, "-o", str(out), "-q").exit_code == 0
    assert index_entries(out) == entries


# -- failures ---------------------------------------------------------------------------------


def test_unknown_tag_fails_and_leaves_the_bundle_alone(
    seeded_registry: Seeded, tmp_path: Path
) -> None:
    _, seeded = seeded_registry
    base, api = seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")
    out = tmp_path / "b"
    assert run_cli("export", base.reference, "-o", str(out), "-q").exit_code == 0
    index_before = (out / "index.json").read_bytes()
    mtime_before = (out / "index.json").stat().st_mtime_ns
    files_before = bundle_files(out)

    missing = f"{seeded.host}/base/os:nope"
    result = run_cli("export", api.reference, missing, "-o", str(out), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {missing}: manifest {missing}: {seeded.host} answered HTTP 404 "
        "MANIFEST_UNKNOWN: manifest unknown\n"
    )
    assert (out / "index.json").read_bytes() == index_before
    assert (out / "index.json").stat().st_mtime_ns == mtime_before
    assert bundle_files(out) == files_before

    with pytest.raises(TransferError) as info:
        export_bundle([missing], out)
    assert info.value.image == missing
    assert isinstance(info.value.cause, NotFoundError)
    assert (info.value.cause.status, info.value.cause.codes) == (404, ("MANIFEST_UNKNOWN",))
    assert bundle_files(out) == files_before


def test_corrupt_blob_is_refused_and_never_stored(
    seeded_registry: Seeded,
    fault_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
) -> None:
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    entry = seeded.get("base/os", "1")
    layer = entry.item.layers[1]
    bad = bytes([layer.data[0] ^ 0x01]) + layer.data[1:]
    proxy.corrupt_body(f"/blobs/{layer.digest}$", times=None)
    ref = f"{proxy.host}/base/os:1"
    out = tmp_path / "b"

    result = run_cli("export", ref, "-o", str(out), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {ref}: digest mismatch ({out}/blobs/sha256/{layer.digest[7:]}): "
        f"expected {layer.digest}, got sha256:{hashlib.sha256(bad).hexdigest()}\n"
    )
    assert proxy.count("GET", f"/blobs/{layer.digest}$") == 2  # downloaded again, once
    assert not [f for f in bundle_files(out) if layer.digest[7:] in f]
    assert not (out / "index.json").exists()

    with pytest.raises(TransferError) as info:
        export_bundle([ref], out)
    cause = info.value.cause
    assert isinstance(cause, DigestMismatchError)
    assert (cause.expected, cause.actual) == (
        layer.digest, "sha256:" + hashlib.sha256(bad).hexdigest(),
    )
    assert not [f for f in bundle_files(out) if layer.digest[7:] in f]

    # once the registry serves the right bytes the same bundle completes
    proxy.clear_rules()
    assert run_cli("export", ref, "-o", str(out), "-q").exit_code == 0
    stored = (out / "blobs" / "sha256" / layer.digest[7:]).read_bytes()
    assert stored == layer.data


# -- credentials ------------------------------------------------------------------------------


def test_wrong_password_fails_naming_the_registry(
    auth_registry: tuple[LocalRegistry, str], tmp_path: Path
) -> None:
    registry, _ = auth_registry
    ref = f"{registry.host}/priv/app:1"
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q",
                     "--src-creds", "alice:not-the-password")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {ref}: manifest {ref}: {registry.host} answered HTTP 401 "
        "(authentication failed: credentials for 'alice' refused)\n"
    )
    assert "not-the-password" not in result.output

    options = TransportOptions(credentials=Credentials("alice", "not-the-password"))
    with pytest.raises(TransferError) as info:
        export_bundle([ref], tmp_path / "c", options=options)
    cause = info.value.cause
    assert isinstance(cause, AuthenticationError)
    assert (cause.status, cause.registry) == (401, registry.host)
    assert "not-the-password" not in str(info.value)


def test_missing_credentials_fail(auth_registry: tuple[LocalRegistry, str], tmp_path: Path) -> None:
    registry, _ = auth_registry
    ref = f"{registry.host}/priv/app:1"
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {ref}: manifest {ref}: {registry.host} answered HTTP 401 "
        "(authentication failed: no credentials given)\n"
    )


def test_correct_password_via_src_creds(
    auth_registry: tuple[LocalRegistry, str], tmp_path: Path
) -> None:
    registry, digest = auth_registry
    ref = f"{registry.host}/priv/app:1"
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q", "--src-creds", "alice:s3cret")
    assert result.exit_code == 0, result.output
    assert [(e["annotations"][REF_NAME], e["digest"]) for e in index_entries(tmp_path / "b")] == [
        (ref, digest),
    ]
    assert "s3cret" not in result.output


def test_correct_password_via_src_authfile(
    auth_registry: tuple[LocalRegistry, str], tmp_path: Path
) -> None:
    registry, digest = auth_registry
    ref = f"{registry.host}/priv/app:1"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "auths": {
            "other.example:5000": {"auth": base64.b64encode(b"bob:x").decode()},
            registry.host: {"auth": base64.b64encode(b"alice:s3cret").decode()},
        }
    }))
    result = run_cli("export", ref, "-o", str(tmp_path / "b"), "-q", "--src-authfile", str(config))
    assert result.exit_code == 0, result.output
    assert [(e["annotations"][REF_NAME], e["digest"]) for e in index_entries(tmp_path / "b")] == [
        (ref, digest),
    ]


# -- partial blobs left by an interrupted run ---------------------------------------------------


@pytest.mark.parametrize(
    ("kept", "statuses"),
    [
        ("all", []),          # complete and right: renamed without a request
        ("half", [206]),      # continued with a Range request
        ("wrong", [200]),     # complete but wrong: discarded and fetched again
        ("too-long", [200]),  # longer than the descriptor: discarded and fetched again
    ],
)
def test_partial_blob_is_continued(
    seeded_registry: Seeded, tmp_path: Path, kept: str, statuses: list[int]
) -> None:
    registry, seeded = seeded_registry
    entry = seeded.get("base/os", "2")
    layer = entry.item.layers[1]
    data = {
        "all": layer.data,
        "half": layer.data[: layer.size // 2],
        "wrong": bytes([layer.data[0] ^ 0x01]) + layer.data[1:],
        "too-long": layer.data + b"!",
    }[kept]
    blob_dir = tmp_path / "b" / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    (blob_dir / f".{layer.digest[7:]}.partial").write_bytes(data)
    mark = registry.mark()
    result = run_cli("export", entry.reference, "-o", str(tmp_path / "b"), "-q")
    assert result.exit_code == 0, result.output
    log = registry.access_log(mark)
    assert [status for method, uri, status in log
            if method == "GET" and uri.endswith(f"/blobs/{layer.digest}")] == statuses
    assert (blob_dir / layer.digest[7:]).read_bytes() == layer.data
    assert bundle_files(tmp_path / "b") == expected_files([entry])


@pytest.mark.parametrize("name", ["b"])
def test_a_blob_damaged_once_on_the_way_is_downloaded_again(
    seeded_registry: Seeded,
    fault_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
    name: str,
) -> None:
    registry, seeded = seeded_registry
    proxy = fault_proxy(registry.url)
    entry = seeded.get("base/os", "1")
    layer = entry.item.layers[1]
    proxy.corrupt_body(f"/blobs/{layer.digest}$", times=1)
    out = tmp_path / name
    result = run_cli("export", f"{proxy.host}/base/os:1", "-o", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (f"warning: blob {layer.digest} arrived damaged and was "
                             "downloaded again (it checks now)\n")
    assert proxy.count("GET", f"/blobs/{layer.digest}$") == 2
    assert (out / "blobs/sha256" / layer.digest[7:]).read_bytes() == layer.data
    assert run_cli("verify", str(out)).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [name, f"{name}.receipt.json"]
