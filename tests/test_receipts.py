"""Bundle receipts (bundler.engine.receipts): the format, its refusals, and reading the
receipt of every kind of bundle. Expected values come from what the sandbox pushed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bundler.bundle import verify_bundle
from bundler.cli.main import main
from bundler.engine.receipts import (
    BASE_ANNOTATION,
    RECEIPT_MEDIA_TYPE,
    RECEIPT_MEMBER,
    BaseRef,
    OmittedBlob,
    Receipt,
    ReceiptError,
    ReceiptImage,
    bundle_id_of,
    compute_receipt,
    read_receipt,
    receipt_path_beside,
)
from bundler.errors import BundleError
from bundler.oci.limits import RECEIPT_LIMIT
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.stores import LayoutStore
from bundler.stores.archive import ArchiveReader

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
BASE_ID = "sha256:" + "b" * 64


def sample() -> Receipt:
    return Receipt(
        bundle_id="sha256:" + "a" * 64, created="2026-12-08T02:30:00Z",
        images=(ReceiptImage("reg.example/app:1", D1,
                             "application/vnd.oci.image.manifest.v1+json", 500),
                ReceiptImage(None, D1, "application/vnd.oci.image.manifest.v1+json", 500)),
        blobs={D3: 30, D1: 500, D2: 20},
        base=BaseRef(BASE_ID, "2026-12-01T00:00:00Z"),
        omitted=(OmittedBlob(D3, 30, "application/vnd.oci.image.layer.v1.tar+gzip",
                             ("reg.example/app", "reg.example/lib")),))


def test_round_trip_and_canonical_bytes() -> None:
    receipt = sample()
    data = receipt.to_bytes()
    assert Receipt.from_bytes(data, "r.json") == receipt
    assert data == json.dumps(json.loads(data), sort_keys=True,
                              separators=(",", ":")).encode() + b"\n"
    doc = json.loads(data)
    assert doc["mediaType"] == RECEIPT_MEDIA_TYPE and doc["receiptVersion"] == 1
    assert [b["digest"] for b in doc["blobs"]] == [D1, D2, D3]  # sorted by digest
    assert doc["base"] == {"bundleId": BASE_ID, "created": "2026-12-01T00:00:00Z"}
    assert doc["omitted"] == [{"digest": D3, "size": 30, "repositories": [
        "reg.example/app", "reg.example/lib"],
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}]
    assert doc["images"][1] == {"reference": None, "digest": D1, "size": 500,
                                "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    assert receipt.differential and receipt.omitted_bytes == 30
    full = Receipt("sha256:" + "a" * 64, "2026-12-08T02:30:00Z", (), {D1: 5})
    assert not full.differential
    assert json.loads(full.to_bytes())["base"] is None
    assert json.loads(full.to_bytes())["omitted"] == []


def _mutated(change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = json.loads(sample().to_bytes())
    change(doc)
    return json.dumps(doc).encode()


REFUSALS = {
    "not-json": (b"{not json", "f.json is not a bundler receipt"),
    "not-object": (b"[1, 2]", "f.json is not a bundler receipt"),
    "media-type": (_mutated(lambda d: d.update(mediaType="application/json")),
                   "f.json is not a bundler receipt"),
    "version-2": (_mutated(lambda d: d.update(receiptVersion=2)),
                  "f.json is receipt version 2; this bundler reads version 1"),
    "version-missing": (_mutated(lambda d: d.pop("receiptVersion")),
                        "f.json is receipt version (none); this bundler reads version 1"),
    "missing-field": (_mutated(lambda d: d.pop("bundleId")),
                      "f.json: receipt field bundleId is missing"),
    "missing-blob-size": (_mutated(lambda d: d["blobs"][1].pop("size")),
                          "f.json: receipt field blobs[1].size is missing"),
    "ill-typed": (_mutated(lambda d: d["images"][0].update(size="500")),
                  "f.json: receipt field images[0].size must be an integer"),
    "bool-size": (_mutated(lambda d: d["blobs"][0].update(size=True)),
                  "f.json: receipt field blobs[0].size must be an integer"),
    "negative": (_mutated(lambda d: d["blobs"][0].update(size=-1)),
                 "f.json: receipt field blobs[0].size must not be negative"),
    "bad-digest": (_mutated(lambda d: d["blobs"][0].update(digest="sha256:abc")),
                   "f.json: receipt field blobs[0].digest is not a digest (sha256:<64 hex>)"),
    "bad-base": (_mutated(lambda d: d["base"].update(bundleId="nope")),
                 "f.json: receipt field base.bundleId is not a digest (sha256:<64 hex>)"),
    "base-type": (_mutated(lambda d: d.update(base=[])),
                  "f.json: receipt field base must be an object or null"),
    "omitted-unlisted": (_mutated(lambda d: d["blobs"].pop()),
                         f"f.json: receipt field omitted[0].digest names {D3}, which blobs "
                         "does not list"),
    "omitted-no-base": (_mutated(lambda d: d.update(base=None)),
                        "f.json: receipt field omitted lists blobs but base is null"),
    "duplicate-blob": (_mutated(lambda d: d["blobs"].append(dict(d["blobs"][0]))),
                       f"f.json: receipt field blobs[3].digest lists {D1} a second time"),
    "repositories": (_mutated(lambda d: d["omitted"][0].update(repositories=[1])),
                     "f.json: receipt field omitted[0].repositories must be a list of "
                     "strings"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case: str) -> None:
    data, message = REFUSALS[case]
    with pytest.raises(ReceiptError) as info:
        Receipt.from_bytes(data, "f.json")
    assert str(info.value) == message


def test_size_limit(tmp_path: Path) -> None:
    data = b" " * (RECEIPT_LIMIT + 1)
    with pytest.raises(ReceiptError) as info:
        Receipt.from_bytes(data, "f.json")
    assert str(info.value) == (f"f.json: a receipt of {RECEIPT_LIMIT + 1} bytes is larger than "
                               "the limit of 67108864 bytes (64 MiB)")
    big = tmp_path / "big.receipt.json"
    with open(big, "wb") as f:
        f.write(b"{")
        f.truncate(RECEIPT_LIMIT + 1)
    with pytest.raises(ReceiptError) as info:
        read_receipt(big)
    assert str(info.value) == (f"{big}: a receipt of {RECEIPT_LIMIT + 1} bytes is larger "
                               "than the limit of 67108864 bytes (64 MiB)")


def test_receipt_path_beside() -> None:
    assert receipt_path_beside("out/") == Path("out.receipt.json")
    assert receipt_path_beside("d/b.tar.zst") == Path("d/b.tar.zst.receipt.json")
    assert receipt_path_beside(Path("b.tar")) == Path("b.tar.receipt.json")


def test_read_receipt_file(tmp_path: Path) -> None:
    path = tmp_path / "x.receipt.json"
    path.write_bytes(sample().to_bytes())
    assert read_receipt(path) == sample()
    bad = tmp_path / "bad.receipt.json"
    bad.write_bytes(_mutated(lambda d: d.update(receiptVersion=2)))
    with pytest.raises(ReceiptError) as info:
        read_receipt(bad)
    assert str(info.value) == f"{bad} is receipt version 2; this bundler reads version 1"
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"hello, this is no bundle\n")
    with pytest.raises(ReceiptError) as info:
        read_receipt(junk)
    assert str(info.value) == f"{junk} is not a bundler receipt or bundle"
    with pytest.raises(BundleError) as info:
        read_receipt(tmp_path / "absent")
    assert str(info.value) == f"{tmp_path / 'absent'}: no such bundle or receipt"


# -- receipts of real bundles -------------------------------------------------------------


def expected_blobs(seeded: SeededSet) -> dict[str, int]:
    """Every blob the seeded images need: manifests, indexes, configs, layers."""
    out: dict[str, int] = {}
    for entry in seeded.entries:
        out.update({d: len(raw) for d, raw in entry.manifests.items()})
        out.update(entry.blob_sizes)
    return out


def index_bytes(bundle: Path) -> bytes:
    if bundle.is_dir():
        return (bundle / "index.json").read_bytes()
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return member.read()


@pytest.mark.parametrize("kind", ["dir", "tar", "split", "zst"])
def test_read_receipt_of_bundles(kind: str, seeded_registry: tuple[LocalRegistry, SeededSet],
                                 seeded_bundles: dict[str, Path]) -> None:
    _, seeded = seeded_registry
    receipt = read_receipt(seeded_bundles[kind])
    want_id = "sha256:" + hashlib.sha256(index_bytes(seeded_bundles["dir"])).hexdigest()
    assert receipt.bundle_id == want_id  # one set, one index.json, whatever the format
    assert dict(receipt.blobs) == expected_blobs(seeded)
    assert [i.reference for i in receipt.images] == seeded.references
    assert [i.digest for i in receipt.images] == [e.digest for e in seeded.entries]
    assert [i.size for i in receipt.images] == [len(e.manifest_bytes) for e in seeded.entries]
    assert receipt.base is None and receipt.omitted == ()


def _layout_copy(seeded_bundles: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(seeded_bundles["dir"], copy)
    (copy / RECEIPT_MEMBER).unlink(missing_ok=True)
    return copy


def test_layout_without_receipt_is_computed(seeded_registry: tuple[LocalRegistry, SeededSet],
                                            seeded_bundles: dict[str, Path],
                                            tmp_path: Path) -> None:
    _, seeded = seeded_registry
    copy = _layout_copy(seeded_bundles, tmp_path)
    receipt = read_receipt(copy)
    assert receipt.bundle_id == bundle_id_of((copy / "index.json").read_bytes())
    assert dict(receipt.blobs) == expected_blobs(seeded)
    assert receipt == compute_receipt((copy / "index.json").read_bytes(), LayoutStore(copy),
                                      created=receipt.created)


def test_inside_receipt_is_read_and_checked(seeded_bundles: dict[str, Path],
                                            tmp_path: Path) -> None:
    copy = _layout_copy(seeded_bundles, tmp_path)
    index_json = (copy / "index.json").read_bytes()
    made = compute_receipt(index_json, LayoutStore(copy), created="2026-01-02T03:04:05Z")
    (copy / RECEIPT_MEMBER).write_bytes(made.to_bytes())
    assert read_receipt(copy) == made
    # the same layout as a .tar, the receipt right after index.json
    archive = tmp_path / "hand.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ["oci-layout", "index.json", RECEIPT_MEMBER]:
            tar.add(copy / name, arcname=name)
        tar.add(copy / "blobs", arcname="blobs")
    assert read_receipt(archive) == made
    # a receipt of another index.json (changed since): no use, one is computed
    other = Receipt("sha256:" + "c" * 64, made.created, made.images, made.blobs)
    (copy / RECEIPT_MEMBER).write_bytes(other.to_bytes())
    assert read_receipt(copy).bundle_id == bundle_id_of(index_json)
    report = verify_bundle(copy)
    assert report.ok, report.problems
    assert report.warnings == [f"{copy}: {RECEIPT_MEMBER} is the receipt of bundle "
                               f"sha256:{'c' * 64}, not of this index.json "
                               f"({bundle_id_of(index_json)}); it is ignored"]
    # a bad inside receipt names the file inside the bundle
    (copy / RECEIPT_MEMBER).write_bytes(b"[]")
    with pytest.raises(ReceiptError) as info:
        read_receipt(copy)
    assert str(info.value) == f"{copy}/{RECEIPT_MEMBER} is not a bundler receipt"


def test_base_annotation_needs_a_matching_receipt(seeded_bundles: dict[str, Path],
                                                  tmp_path: Path) -> None:
    copy = _layout_copy(seeded_bundles, tmp_path)
    doc = json.loads((copy / "index.json").read_bytes())
    doc["annotations"] = {BASE_ANNOTATION: BASE_ID}
    (copy / "index.json").write_bytes(json.dumps(doc).encode())
    with pytest.raises(BundleError) as info:
        read_receipt(copy)
    assert str(info.value) == (f"{copy}: a differential bundle (index.json names base "
                               f"{BASE_ID}) without its {RECEIPT_MEMBER}")
    index_json = (copy / "index.json").read_bytes()
    full = compute_receipt(index_json, LayoutStore(copy), created="2026-01-02T03:04:05Z")
    (copy / RECEIPT_MEMBER).write_bytes(full.to_bytes())
    with pytest.raises(BundleError) as info:
        read_receipt(copy)
    assert str(info.value) == (f"{copy}: index.json names base {BASE_ID} but "
                               f"{RECEIPT_MEMBER} names base none")
    diff = compute_receipt(index_json, LayoutStore(copy), created="2026-01-02T03:04:05Z",
                           base=BaseRef(BASE_ID, "2026-01-01T00:00:00Z"))
    (copy / RECEIPT_MEMBER).write_bytes(diff.to_bytes())
    assert read_receipt(copy) == diff


def test_zst_with_inside_receipt(seeded_bundles: dict[str, Path], tmp_path: Path) -> None:
    import zstandard

    copy = _layout_copy(seeded_bundles, tmp_path)
    index_json = (copy / "index.json").read_bytes()
    made = compute_receipt(index_json, LayoutStore(copy), created="2026-01-02T03:04:05Z")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("oci-layout", (copy / "oci-layout").read_bytes()),
                           ("index.json", index_json), (RECEIPT_MEMBER, made.to_bytes())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "hand.tar.zst"
    archive.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    assert read_receipt(archive) == made  # read from the head: no blob is needed


# -- every export writes the receipt ------------------------------------------------------


def archive_members(bundle: Path) -> list[tuple[str, bytes | None]]:
    """(name, bytes of the small layout files) of an archive's members, in order."""
    out: list[tuple[str, bytes | None]] = []
    with ArchiveReader(bundle) as reader:
        for member in reader:
            small = member.name in ("oci-layout", "index.json", RECEIPT_MEMBER)
            out.append((member.name, member.file.read() if small else None))
    return out


@pytest.mark.parametrize("kind", ["dir", "tar", "split", "zst"])
def test_export_writes_the_receipt_inside_and_beside(
        kind: str, seeded_registry: tuple[LocalRegistry, SeededSet],
        seeded_bundles: dict[str, Path]) -> None:
    _, seeded = seeded_registry
    bundle = seeded_bundles[kind]
    beside = receipt_path_beside(bundle)
    data = beside.read_bytes()
    receipt = Receipt.from_bytes(data, str(beside))
    assert data == receipt.to_bytes()  # canonical
    if kind == "dir":
        inside, index_json = (bundle / RECEIPT_MEMBER).read_bytes(), index_bytes(bundle)
    else:
        members = archive_members(bundle)
        assert [name for name, _ in members[:3]] == ["oci-layout", "index.json",
                                                     RECEIPT_MEMBER]
        assert [name for name, _ in members].count(RECEIPT_MEMBER) == 1
        index_json, inside = members[1][1], members[2][1]
        assert index_json is not None
    assert inside == data
    assert receipt.bundle_id == "sha256:" + hashlib.sha256(index_json).hexdigest()
    assert read_receipt(bundle) == receipt  # the inside one, with its time
    assert dict(receipt.blobs) == expected_blobs(seeded)
    assert (receipt.base, receipt.omitted) == (None, ())


def test_volumes_with_their_receipt_still_import_from_a_pipe(
        seeded_registry: tuple[LocalRegistry, SeededSet], registry: LocalRegistry,
        tmp_path: Path) -> None:
    from bundler import export_bundle

    _, seeded = seeded_registry
    entry = seeded.get("apps/web", "1.0")
    base = tmp_path / "web.tar"
    export_bundle([entry.reference], base, split_size=64 * 1024)
    names = sorted(p.name for p in tmp_path.glob("web.tar.*"))
    assert names[-2:] == ["web.tar.receipt.json", "web.tar.sha256"]  # after the volumes
    piped = b"".join((tmp_path / n).read_bytes() for n in names)  # cat web.tar.*
    result = CliRunner().invoke(main, ["import", "-", "--to", f"{registry.host}/p", "-q"],
                                input=piped, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    with httpx.Client(timeout=10) as http:
        got = http.get(f"{registry.url}/v2/p/apps/web/manifests/1.0",
                       headers={"Accept": entry.media_type})
    assert got.status_code == 200
    assert got.content == entry.manifest_bytes


def test_a_directory_exported_into_again_gets_new_receipts(
        seeded_registry: tuple[LocalRegistry, SeededSet], tmp_path: Path) -> None:
    from bundler import export_bundle

    _, seeded = seeded_registry
    out = tmp_path / "b"
    first = export_bundle([seeded.get("base/os", "1").reference], out).receipt
    second = export_bundle([seeded.get("base/os", "2").reference], out).receipt
    assert first is not None and second is not None
    assert first.bundle_id != second.bundle_id
    assert second.bundle_id == bundle_id_of((out / "index.json").read_bytes())
    assert read_receipt(out) == second == read_receipt(receipt_path_beside(out))
    assert [i.reference for i in second.images] == [
        seeded.get("base/os", "1").reference, seeded.get("base/os", "2").reference]
    want: dict[str, int] = {}
    for entry in (seeded.get("base/os", "1"), seeded.get("base/os", "2")):
        want.update({d: len(raw) for d, raw in entry.manifests.items()})
        want.update(entry.blob_sizes)
    assert dict(second.blobs) == want
