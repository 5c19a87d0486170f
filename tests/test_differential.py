"""Differential bundles on real registries: ``export --since``, a diff of a diff,
``verify`` (with and without ``--base``), ``list`` and ``merge``.

The source registry gets a base set; after the base export, new tags that share the
base's layers are pushed and one tag is moved. Every expected value is computed from
what the sandbox pushed (digests, sizes), never from what bundler reports.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle
from bundler.cli.main import main
from bundler.engine.receipts import RECEIPT_MEMBER, Receipt, read_receipt, receipt_path_beside
from bundler.sandbox import LocalRegistry, make_image, push, random_layer, start_registry
from bundler.sandbox.images import Image, make_index
from bundler.stores.archive import ArchiveReader
from tests.referrers_tools import push_app, push_cosign_signature

KIB = 1024


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def images_of(item: object) -> list[Image]:
    return list(getattr(item, "children", None) or [item])


def needs(items: list[object]) -> tuple[dict[str, int], dict[str, int]]:
    """(manifests, configs and layers) the images need: digest -> size."""
    manifests: dict[str, int] = {}
    blobs: dict[str, int] = {}
    for item in items:
        manifests[item.digest] = len(item.manifest_bytes)  # type: ignore[attr-defined]
        for image in images_of(item):
            manifests[image.digest] = len(image.manifest_bytes)
            blobs.update({b.digest: b.size for b in image.blobs})
    return manifests, blobs


def held(bundle: Path) -> set[str]:
    """The blob digests a directory bundle holds."""
    return {"sha256:" + p.name for p in (bundle / "blobs/sha256").iterdir()}


def held_in_archive(bundle: Path) -> set[str]:
    with ArchiveReader(bundle) as reader:
        return {str(m.digest) for m in reader if m.digest is not None}


@dataclass
class Chain:
    """The source registry, what was pushed, and the bundles exported."""

    registry: LocalRegistry
    root: Path
    pushed: dict[str, object] = field(default_factory=dict)  # "repo:tag" -> image/index
    base_refs: list[str] = field(default_factory=list)
    base_items: list[object] = field(default_factory=list)  # as pushed before the base
    diff_refs: list[str] = field(default_factory=list)
    diff2_refs: list[str] = field(default_factory=list)
    base: Path = Path()
    diff: Path = Path()
    diff_result: Result | None = None
    diff2: Path = Path()

    def ref(self, name: str) -> str:
        return f"{self.registry.host}/{name}"

    def items(self, names: list[str]) -> list[object]:
        return [self.pushed[n] for n in names]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("differential")
    reg = start_registry(root / "registry")
    try:
        c = Chain(reg, root)
        common, os_layer = random_layer(101, 64 * KIB), random_layer(102, 32 * KIB)

        def put(name: str, item: object) -> None:
            repository, tag = name.split(":")
            push(reg, repository, item, tag=tag)  # type: ignore[arg-type]
            c.pushed[name] = item

        put("shop/app:1", make_image([common, os_layer, random_layer(103, 48 * KIB)]))
        put("shop/lib:1", make_image([common, random_layer(104, 40 * KIB)]))
        put("shop/multi:1", make_index([
            make_image([common, random_layer(105, 24 * KIB)]),
            make_image([random_layer(106, 20 * KIB)], architecture="arm64", variant="v8")]))
        c.base_refs = ["shop/app:1", "shop/lib:1", "shop/multi:1"]
        c.base_items = c.items(c.base_refs)
        c.base = root / "base"
        export_bundle([c.ref(n) for n in c.base_refs], c.base)
        # new tags sharing the base's layers, and a moved tag
        put("shop/app:2", make_image([common, os_layer, random_layer(107, 56 * KIB)]))
        put("shop/lib:1", make_image([common, random_layer(108, 36 * KIB)]))  # moved
        c.diff_refs = ["shop/app:1", "shop/app:2", "shop/lib:1", "shop/multi:1"]
        c.diff = root / "diff1"
        c.diff_result = run_cli("export", *[c.ref(n) for n in c.diff_refs], "-o", str(c.diff),
                                "--since", str(c.base), "-q")
        # a diff of the diff, since its receipt
        put("shop/app:3", make_image([common, os_layer, random_layer(109, 44 * KIB)]))
        c.diff2_refs = ["shop/app:2", "shop/app:3", "shop/lib:1"]
        c.diff2 = root / "diff2.tar"
        export_bundle([c.ref(n) for n in c.diff2_refs], c.diff2,
                      since=read_receipt(receipt_path_beside(c.diff)))
        yield c
    finally:
        reg.stop()


def test_the_diff_holds_every_manifest_and_only_the_new_blobs(chain: Chain) -> None:
    result = chain.diff_result
    assert result is not None and result.exit_code == 0, result.output
    base_receipt = read_receipt(chain.base)
    base_manifests, base_blobs = needs(chain.base_items)
    assert dict(base_receipt.blobs) == {**base_manifests, **base_blobs}
    manifests, blobs = needs(chain.items(chain.diff_refs))
    new = {d: s for d, s in blobs.items() if d not in base_receipt.blobs}
    assert held(chain.diff) == set(manifests) | set(new)  # exactly
    assert len(new) == 4  # app:2's config and layer, the moved lib:1's config and layer
    receipt = read_receipt(chain.diff)
    assert receipt == read_receipt(receipt_path_beside(chain.diff))
    assert receipt.base is not None
    assert (receipt.base.bundle_id, receipt.base.created) == (base_receipt.bundle_id,
                                                              base_receipt.created)
    assert dict(receipt.blobs) == {**manifests, **blobs}
    omitted = {d: s for d, s in blobs.items() if d in base_receipt.blobs}
    assert {b.digest: b.size for b in receipt.omitted} == omitted
    common = chain.pushed["shop/app:1"].layers[0].digest  # type: ignore[attr-defined]
    by_digest = {b.digest: b for b in receipt.omitted}
    assert by_digest[common].repositories == tuple(
        chain.ref(r) for r in ("shop/app", "shop/lib", "shop/multi"))
    assert by_digest[common].media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    index = json.loads((chain.diff / "index.json").read_bytes())
    assert index["annotations"] == {"dev.bundler.base": base_receipt.bundle_id}
    assert [e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"]] \
        == [chain.ref(n) for n in chain.diff_refs]
    assert result.stdout.splitlines()[1:] == [
        f"differential: {len(omitted)} blobs ({human(sum(omitted.values()))}) left out, "
        f"expected from base {base_receipt.bundle_id}",
        f"bundle id {receipt.bundle_id}; receipt {receipt_path_beside(chain.diff)}"]


def human(size: int) -> str:
    from bundler.cli.summary import human as h

    return h(size)


def test_a_diff_of_a_diff_names_its_own_base(chain: Chain) -> None:
    first = read_receipt(chain.diff)
    receipt = read_receipt(chain.diff2)
    assert receipt.base is not None and receipt.base.bundle_id == first.bundle_id
    manifests, blobs = needs(chain.items(chain.diff2_refs))
    app3 = chain.pushed["shop/app:3"]
    assert held_in_archive(chain.diff2) == set(manifests) | {
        app3.config.digest, app3.layers[2].digest}  # type: ignore[attr-defined]
    # the first diff's receipt lists what it omitted too: a complete base
    assert {b.digest for b in receipt.omitted} == set(blobs) - {
        app3.config.digest, app3.layers[2].digest}  # type: ignore[attr-defined]
    assert dict(receipt.blobs) == {**manifests, **blobs}
    assert receipt_path_beside(chain.diff2).read_bytes() == receipt.to_bytes()


def test_verify_knows_the_omitted_blobs(chain: Chain) -> None:
    receipt = read_receipt(chain.diff)
    assert receipt.base is not None
    result = run_cli("verify", str(chain.diff))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{chain.diff}: OK: 4 images, ")
    assert lines[1] == (f"differential: {len(receipt.omitted)} blobs not held, expected from "
                        f"base {receipt.base.bundle_id}")
    doc = json.loads(run_cli("verify", str(chain.diff2), "--json").stdout)
    diff2 = read_receipt(chain.diff2)
    assert (doc["ok"], doc["bundleId"], doc["base"]) == (True, diff2.bundle_id,
                                                        receipt.bundle_id)
    assert sorted(doc["expected"]) == [b.digest for b in diff2.omitted]


def test_verify_with_its_base(chain: Chain) -> None:
    receipt = read_receipt(chain.diff)
    base_id = read_receipt(chain.base).bundle_id
    result = run_cli("verify", str(chain.diff), "--base", str(chain.base))
    assert result.exit_code == 0, result.output
    n = len(receipt.omitted)
    assert result.stdout.splitlines()[2:] == [
        f"base: {chain.base} (bundle {base_id}) holds {n} of the {n} blobs, each checked"]
    # a chain: the first diff does not hold what it left to its own base
    diff2 = read_receipt(chain.diff2)
    result = run_cli("verify", str(chain.diff2), "--base", str(chain.diff))
    assert result.exit_code == 0, result.output
    in_diff = len([b for b in diff2.omitted if b.digest in held(chain.diff)])
    assert result.stdout.splitlines()[2:] == [
        f"base: {chain.diff} (bundle {receipt.bundle_id}) holds {in_diff} of the "
        f"{len(diff2.omitted)} blobs, each checked",
        f"base: {len(diff2.omitted) - in_diff} expected from base {base_id} of {chain.diff}"]
    # the wrong base: both ids named
    result = run_cli("verify", str(chain.diff2), "--base", str(chain.base))
    assert result.exit_code == 1
    assert result.stderr == (f"problem: --base {chain.base} is bundle {base_id}, but "
                             f"{chain.diff2} was exported since bundle {receipt.bundle_id}\n")


def test_verify_base_missing_a_blob(chain: Chain, tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(chain.base, base)
    gone = chain.pushed["shop/app:1"].layers[2]  # type: ignore[attr-defined]
    (base / "blobs/sha256" / gone.digest[7:]).unlink()
    result = run_cli("verify", str(chain.diff), "--base", str(base))
    assert result.exit_code == 1
    assert result.stderr == (f"problem: {gone.digest} ({gone.size} bytes, needed by "
                             f"{chain.ref('shop/app')}) is not in base {base}\n")


def test_verify_finds_what_the_diff_lacks_beyond_its_receipt(chain: Chain,
                                                             tmp_path: Path) -> None:
    diff = tmp_path / "diff"
    shutil.copytree(chain.diff, diff)
    app2 = chain.pushed["shop/app:2"]
    new_layer = app2.layers[2].digest  # type: ignore[attr-defined]
    (diff / "blobs/sha256" / new_layer[7:]).unlink()
    result = run_cli("verify", str(diff))
    assert result.exit_code == 1
    assert (f"problem: {chain.ref('shop/app:2')}: {diff}: blob {new_layer} is missing"
            in result.stderr)
    # the base annotation without the receipt
    (diff / RECEIPT_MEMBER).unlink()
    base_id = read_receipt(chain.base).bundle_id
    result = run_cli("verify", str(diff))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"problem: {diff}: a differential bundle (index.json names base {base_id}) without "
        f"its {RECEIPT_MEMBER}\n")


def test_list_shows_the_base(chain: Chain) -> None:
    receipt = read_receipt(chain.diff2)
    assert receipt.base is not None
    doc = json.loads(run_cli("list", "--json", str(chain.diff2)).stdout)
    assert doc["bundleId"] == receipt.bundle_id
    assert doc["base"] == {"bundleId": receipt.base.bundle_id,
                           "omittedBlobs": len(receipt.omitted),
                           "omittedBytes": sum(b.size for b in receipt.omitted)}
    manifests, blobs = needs(chain.items(chain.diff2_refs))
    app3 = chain.pushed["shop/app:3"]
    held_blobs = {app3.config.digest, app3.layers[2].digest}  # type: ignore[attr-defined]
    assert doc["uniqueBytes"] == sum(manifests.values()) + sum(blobs[d] for d in held_blobs)
    lines = run_cli("list", str(chain.diff2)).stdout.splitlines()
    assert lines[-1] == (f"differential: {len(receipt.omitted)} blobs "
                         f"({human(receipt.omitted_bytes)}) left out, expected from base "
                         f"{receipt.base.bundle_id}")
    full = json.loads(run_cli("list", "--json", str(chain.base)).stdout)
    assert (full["bundleId"], full["base"]) == (read_receipt(chain.base).bundle_id, None)


def test_merge_gives_a_full_bundle_that_imports_alone(chain: Chain, tmp_path: Path,
                                                      registry: LocalRegistry) -> None:
    full = tmp_path / "full.tar"
    result = run_cli("merge", str(chain.base), str(chain.diff), "-o", str(full), "-q")
    assert result.exit_code == 0, result.output
    manifests, blobs = needs(chain.items(chain.diff_refs))
    assert held_in_archive(full) == set(manifests) | set(blobs)  # the union needed
    receipt = read_receipt(full)
    assert (receipt.base, receipt.omitted) == (None, ())
    assert dict(receipt.blobs) == {**manifests, **blobs}
    assert [i.reference for i in receipt.images] == [chain.ref(n) for n in chain.diff_refs]
    index = json.loads(_member(full, "index.json"))
    assert "annotations" not in index
    assert index["manifests"] == json.loads((chain.diff / "index.json").read_bytes())[
        "manifests"]
    verified = run_cli("verify", str(full))
    assert verified.exit_code == 0, verified.output
    assert verified.stdout.startswith(f"{full}: OK: 4 images, ")
    imported = run_cli("import", str(full), "--to", f"{registry.host}/m", "-q")
    assert imported.exit_code == 0, imported.output
    with httpx.Client(timeout=10) as http:
        for name in chain.diff_refs:
            repository, tag = name.split(":")
            item = chain.pushed[name]
            got = http.get(f"{registry.url}/v2/m/{repository}/manifests/{tag}",
                           headers={"Accept": item.media_type})  # type: ignore[attr-defined]
            assert got.status_code == 200
            assert "sha256:" + hashlib.sha256(got.content).hexdigest() == \
                item.digest  # type: ignore[attr-defined]


def _member(archive: Path, name: str) -> bytes:
    with ArchiveReader(archive) as reader:
        for member in reader:
            if member.name == name:
                return member.file.read()
    raise AssertionError(name)


def test_merge_refuses_the_wrong_base(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "full"
    base_id = read_receipt(chain.base).bundle_id
    diff_id = read_receipt(chain.diff).bundle_id
    result = run_cli("merge", str(chain.base), str(chain.diff2), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: {chain.base} is bundle {base_id}, but "
                                  f"{chain.diff2} was exported since bundle {diff_id}\n")
    assert not out.exists()
    result = run_cli("merge", str(chain.diff), str(chain.base), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: {chain.base} is a full bundle (it names no "
                                  "base): nothing to merge\n")
    assert not out.exists()


# -- bad input, before anything moves ----------------------------------------------------


def test_since_refuses_bad_bases(chain: Chain, tmp_path: Path) -> None:
    ref = chain.ref("shop/app:2")
    out = tmp_path / "out"
    bad = tmp_path / "bad.receipt.json"
    bad.write_bytes(b'{"mediaType": "application/vnd.dev.bundler.receipt.v1+json"')
    v2 = tmp_path / "v2.receipt.json"
    doc = json.loads(receipt_path_beside(chain.base).read_bytes())
    doc["receiptVersion"] = 2
    v2.write_bytes(json.dumps(doc).encode())
    notes = tmp_path / "notes.txt"
    notes.write_text("no bundle\n")
    cases = {
        bad: f"--since {bad}: {bad} is not a bundler receipt",
        v2: f"--since {v2}: {v2} is receipt version 2; this bundler reads version 1",
        notes: f"--since {notes}: {notes} is not a bundler receipt or bundle",
        tmp_path / "absent": f"--since {tmp_path / 'absent'}: {tmp_path / 'absent'}: no such "
                             "bundle or receipt",
    }
    for base, message in cases.items():
        result = run_cli("export", ref, "-o", str(out), "--since", str(base))
        assert result.exit_code == 2, (base, result.output)
        assert result.stderr.endswith(f"Error: {message}\n"), result.stderr
        assert not out.exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    result = run_cli("export", ref, "-o", str(taken), "--since", str(chain.base))
    assert result.exit_code == 2
    assert result.stderr.endswith(f"Error: --since writes a new bundle: {taken} is a directory "
                                  "that is not empty; choose a new or empty directory\n")


def test_since_keeps_referrers(registry: LocalRegistry, tmp_path: Path) -> None:
    image = push_app(registry)
    ref = f"{registry.host}/apps/signed:1.0"
    base = tmp_path / "base"
    assert run_cli("export", ref, "-o", str(base), "-q").exit_code == 0
    signature = push_cosign_signature(registry, "apps/signed", image)
    diff = tmp_path / "diff.tar.zst"
    result = run_cli("export", ref, "-o", str(diff), "--since", str(base), "-q")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("exported 1 image and 1 referrer to ")
    receipt = read_receipt(diff)
    assert [i.digest for i in receipt.images] == [image, signature]
    base_receipt = read_receipt(base)
    image_blobs = {d for d in base_receipt.blobs if d != image}  # config and layer
    assert {b.digest for b in receipt.omitted} == image_blobs
    sig_blobs = set(receipt.blobs) - set(base_receipt.blobs)
    assert held_in_archive(diff) == {image} | sig_blobs
    assert signature in sig_blobs and len(sig_blobs) >= 2
    assert run_cli("verify", str(diff)).exit_code == 0


def test_since_with_an_image_set_and_platforms(chain: Chain, tmp_path: Path) -> None:
    diff = tmp_path / "d"
    result = run_cli("export", chain.ref("shop/multi"), "--all-tags", "--platform",
                     "linux/arm64/v8", "-o", str(diff), "--since", str(chain.base), "-q")
    assert result.exit_code == 0, result.output
    # the arm64 image and its attestation (the amd64 ones are left out by --platform)
    kept = images_of(chain.pushed["shop/multi:1"])[2:]
    receipt = read_receipt(diff)
    kept_blobs = {b.digest for image in kept for b in image.blobs}
    assert {b.digest for b in receipt.omitted} == kept_blobs
    assert {i.digest for i in kept} <= held(diff)
    assert not kept_blobs & held(diff)
    assert run_cli("verify", str(diff), "--base", str(chain.base)).exit_code == 0


def test_a_killed_archive_export_leaves_no_receipt(chain: Chain, tmp_path: Path) -> None:
    """The receipt beside an archive is written after its commit: a failed export leaves
    neither the archive nor a receipt."""
    out = tmp_path / "x.tar"
    result = run_cli("export", chain.ref("shop/app:2"), "127.0.0.1:1/gone/x:1", "-o",
                     str(out), "--since", str(chain.base), "-q")
    assert result.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_receipt_is_canonical(chain: Chain) -> None:
    data = receipt_path_beside(chain.diff).read_bytes()
    assert Receipt.from_bytes(data, "r").to_bytes() == data


def test_the_same_diff_as_a_tar_zst_has_the_same_id_and_serves_as_base(
        chain: Chain, tmp_path: Path) -> None:
    """The bundle id is index.json's digest: the same images since the same base give
    the same id in any format, so a .tar.zst copy of the first diff is the second's base
    (read once by verify --base); merge reads bundles in place and refuses it."""
    again = tmp_path / "diff1.tar.zst"
    export_bundle([chain.ref(n) for n in chain.diff_refs], again,
                  since=read_receipt(chain.base))
    first = read_receipt(chain.diff)
    assert read_receipt(again).bundle_id == first.bundle_id
    assert held_in_archive(again) == held(chain.diff)
    listed = json.loads(run_cli("list", "--json", str(again)).stdout)  # its head, read once
    assert (listed["bundleId"], listed["base"]) == (first.bundle_id, {
        "bundleId": read_receipt(chain.base).bundle_id, "omittedBlobs": len(first.omitted),
        "omittedBytes": first.omitted_bytes})
    assert listed["uniqueBytes"] == json.loads(
        run_cli("list", "--json", str(chain.diff)).stdout)["uniqueBytes"]
    checked = json.loads(run_cli("verify", "--json", str(again)).stdout)
    assert (checked["ok"], sorted(checked["expected"])) == (
        True, [b.digest for b in first.omitted])
    diff2 = read_receipt(chain.diff2)
    in_diff = len([b for b in diff2.omitted if b.digest in held(chain.diff)])
    result = run_cli("verify", str(chain.diff2), "--base", str(again))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[2] == (
        f"base: {again} (bundle {first.bundle_id}) holds {in_diff} of the "
        f"{len(diff2.omitted)} blobs, each checked")
    out = tmp_path / "full"
    refused = run_cli("merge", str(chain.base), str(again), "-o", str(out))
    assert refused.exit_code == 2
    assert refused.stderr.endswith(
        f"Error: DIFF {again}: merge reads bundles in place: give a directory, a .tar or "
        "its volumes (decompress a .tar.zst with zstd -d first)\n")
    assert not out.exists()


def test_the_blobs_left_to_the_base_are_never_requested(chain: Chain, tmp_path: Path) -> None:
    mark = chain.registry.mark()
    out = tmp_path / "again.tar"
    export_bundle([chain.ref(n) for n in chain.diff_refs], out, since=read_receipt(chain.base))
    fetched = sorted(uri.rsplit("/", 1)[-1] for method, uri, _ in
                     chain.registry.access_log(mark)
                     if method == "GET" and "/blobs/" in uri)
    _, blobs = needs(chain.items(chain.diff_refs))
    base = read_receipt(chain.base)
    assert fetched == sorted(d for d in blobs if d not in base.blobs)  # the 4 new ones
