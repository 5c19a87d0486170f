"""Differential bundles and sparse indexes used the way users (and hostile inputs) use
them: each test here failed before the fix it names.

The source registry gets a base image; the base is exported, a new tag sharing its
layers is pushed, and a diff is exported ``--since`` the base. Expected values come from
what the sandbox pushed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler import export_bundle, import_bundle
from bundler.cli.main import main
from bundler.cli.summary import human
from bundler.engine.receipts import read_receipt
from bundler.sandbox import (
    LocalRegistry,
    make_image,
    make_layer,
    push,
    random_layer,
    start_registry,
)
from bundler.sandbox.images import Image, make_artifact, sha256_digest
from tests.test_foreign_layers import ALLOW_URLS, foreign_image, manifest_digest

KIB = 1024


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@dataclass
class Pair:
    registry: LocalRegistry
    base: Path
    diff: Path
    new: Image  # the image only the diff names (app:2)
    left_out: str  # a layer app:2 needs that the diff leaves to the base


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("breakit3")
    reg = start_registry(root / "registry")
    try:
        common = random_layer(301, 48 * KIB)
        push(reg, "shop/app", make_image([common, random_layer(302, 16 * KIB)]), tag="1")
        base = root / "base"
        export_bundle([f"{reg.host}/shop/app:1"], base)
        new = make_image([common, random_layer(303, 24 * KIB)])
        push(reg, "shop/app", new, tag="2")
        diff = root / "diff"
        export_bundle([f"{reg.host}/shop/app:2"], diff, since=read_receipt(base))
        yield Pair(reg, base, diff, new, common.digest)
    finally:
        reg.stop()


def test_serve_finds_a_diffs_left_out_blob_in_its_base_named_after_it(serve,
                                                                       pair: Pair) -> None:
    """``bundler serve DIFF BASE`` served nothing (exit 1, "blob ... is missing") while
    ``serve BASE DIFF`` worked: a blob was looked for only in the bundle of its image."""
    assert not (pair.diff / "blobs/sha256" / pair.left_out.split(":")[1]).exists()
    served = serve(pair.diff, pair.base, "-q")
    blob = httpx.get(f"{served.url}/v2/shop/app/blobs/{pair.left_out}", timeout=10)
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == pair.left_out
    manifest = httpx.get(f"{served.url}/v2/shop/app/manifests/2", timeout=10,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.content == pair.new.manifest_bytes


def test_serve_of_a_diff_alone_says_the_blob_is_its_bases(pair: Pair) -> None:
    """Serving a diff alone said only "blob ... is missing", as for a damaged bundle."""
    base_id = read_receipt(pair.base).bundle_id
    result = run_cli("serve", str(pair.diff), "--listen", "127.0.0.1:0")
    assert result.exit_code == 1
    assert (f"image shop/app:2: blob {pair.left_out} is missing (a differential bundle "
            f"leaves it to its base {base_id}: serve the base too, or merge them first "
            "with bundler merge)") in result.output


def sharing_the_foreign_layer(first: Image) -> Image:
    """A second Docker image: a new ordinary layer, then ``first``'s foreign layer."""
    made = make_image([make_layer({"app2.txt": b"v2"}), make_layer({"os.txt": b"x"})],
                      docker=True)
    doc = json.loads(made.manifest_bytes)
    doc["layers"][1] = json.loads(first.manifest_bytes)["layers"][1]
    data = json.dumps(doc, indent=3).encode()
    return Image(data, first.media_type, sha256_digest(data), len(data), made.config,
                 made.layers, made.platform)


def test_a_foreign_layer_is_never_left_to_the_base(registry_factory, tmp_path: Path) -> None:
    """The base's receipt lists a non-distributable layer it does not hold (no bundle
    and no registry does); the diff left it "to the base", and its import was refused
    even into the registry the base was imported into (and verify --base failed)."""
    source, dest = (registry_factory(extra_config=ALLOW_URLS) for _ in range(2))
    first = foreign_image()
    foreign = first.layers[1].digest
    push(source, "win/app", first, tag="1", skip_blobs={foreign})
    base, diff = tmp_path / "base", tmp_path / "diff"
    export_bundle([f"{source.host}/win/app:1"], base)
    assert foreign in read_receipt(base).blobs
    second = sharing_the_foreign_layer(first)
    push(source, "win/app", second, tag="2", skip_blobs={foreign})
    exported = export_bundle([f"{source.host}/win/app:2"], diff, since=read_receipt(base))
    assert [str(d) for d in exported.skipped_foreign] == [foreign]
    receipt = read_receipt(diff)
    assert receipt.base is not None and receipt.omitted == ()
    verified = run_cli("verify", str(diff), "--base", str(base))
    assert verified.exit_code == 0, verified.output
    import_bundle(base, to=f"{dest.host}/m")
    imported = import_bundle(diff, to=f"{dest.host}/m")
    assert [str(d) for d in imported.skipped_foreign] == [foreign]
    assert manifest_digest(dest, "m/win/app/manifests/2") == second.digest


def test_a_new_repository_mounts_the_base_layers_where_the_base_was_imported(
        pair: Pair, registry_factory, tmp_path: Path) -> None:
    """A diff with a new repository sharing the base's layers, imported where the base
    was (same --to, its registry receipt there): refused with "import base ... first",
    because only the diff's own repositories were asked for the omitted blobs."""
    dest = registry_factory()
    import_bundle(pair.base, to=f"{dest.host}/m")
    tool = make_image([random_layer(301, 48 * KIB), random_layer(304, 8 * KIB)])
    push(pair.registry, "shop/tool", tool, tag="1")
    diff = tmp_path / "tool.tar"
    export_bundle([f"{pair.registry.host}/shop/tool:1"], diff, since=read_receipt(pair.base))
    assert [b.digest for b in read_receipt(diff).omitted] == [pair.left_out]
    dry = run_cli("import", str(diff), "--to", f"{dest.host}/m", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "omitted blobs: 1 (0 present, 1 mountable, 0 from --base, 0 missing)" in dry.output
    assert "chain: complete" in dry.output
    imported = import_bundle(diff, to=f"{dest.host}/m")
    assert imported.chain is not None and imported.chain.mountable == 1
    assert imported.blobs_mounted == 1
    layer = httpx.get(f"{dest.url}/v2/m/shop/tool/blobs/{pair.left_out}", timeout=10)
    assert "sha256:" + hashlib.sha256(layer.content).hexdigest() == pair.left_out
    pulled = httpx.get(f"{dest.url}/v2/m/shop/tool/manifests/1", timeout=10,
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert pulled.content == tool.manifest_bytes


def test_the_export_summary_of_a_diff_counts_what_it_holds(pair: Pair,
                                                           tmp_path: Path) -> None:
    """The summary said "N unique" for every blob the images need, the left-out ones
    too (the merged full bundle's size), while list said what the bundle holds."""
    out = tmp_path / "d2"
    result = run_cli("export", f"{pair.registry.host}/shop/app:2", "-o", str(out),
                     "--since", str(pair.base), "-q")
    assert result.exit_code == 0, result.output
    held = sum(p.stat().st_size for p in (out / "blobs/sha256").iterdir())
    assert held == len(pair.new.manifest_bytes) + sum(
        b.size for b in pair.new.blobs if b.digest != pair.left_out)
    shown = f"{human(held)} unique ({human(held)} without dedup, 0% saved)"
    assert f"exported 1 image to {out}: {shown}" in result.output
    listed = run_cli("list", str(out), "--json")
    assert json.loads(listed.output)["uniqueBytes"] == held


def test_a_chain_of_three_merges_into_a_full_bundle(pair: Pair, registry_factory,
                                                    tmp_path: Path) -> None:
    """merge needed BASE to be the very bundle DIFF names and read every blob from the
    two: with week3 since week2 since week1, ``merge week2 week3`` failed (a blob in
    neither bundle) and ``merge FULL2 week3`` was refused (another bundle id), so a
    chain of three could not be rebuilt into a full bundle."""
    third = make_image([random_layer(301, 48 * KIB), random_layer(305, 12 * KIB)])
    push(pair.registry, "shop/app", third, tag="3")
    week3 = tmp_path / "week3.tar"
    export_bundle([f"{pair.registry.host}/shop/app:3"], week3, since=read_receipt(pair.diff))
    assert [b.digest for b in read_receipt(week3).omitted] == [pair.left_out]
    week23 = tmp_path / "week23.tar"
    merged = run_cli("merge", str(pair.diff), str(week3), "-o", str(week23), "-q")
    assert merged.exit_code == 0, merged.output
    base_id = read_receipt(pair.base).bundle_id
    receipt = read_receipt(week23)
    assert receipt.base is not None and receipt.base.bundle_id == base_id
    assert [b.digest for b in receipt.omitted] == [pair.left_out]
    assert f"a differential bundle on base {base_id}" in merged.output
    verified = run_cli("verify", str(week23), "--base", str(pair.base))
    assert verified.exit_code == 0, verified.output
    full = tmp_path / "week3-full"
    assert run_cli("merge", str(pair.base), str(week23), "-o", str(full), "-q").exit_code == 0
    assert read_receipt(full).base is None
    held = {"sha256:" + p.name for p in (full / "blobs/sha256").iterdir()}
    assert held == {third.digest} | {b.digest for b in third.blobs}
    assert run_cli("verify", str(full)).exit_code == 0
    dest = registry_factory()
    import_bundle(full, to=f"{dest.host}/f")
    pulled = httpx.get(f"{dest.url}/v2/f/shop/app/manifests/3", timeout=10,
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert pulled.content == third.manifest_bytes


def test_a_registry_receipt_that_cannot_be_read_is_not_called_not_found(
        pair: Pair, registry_factory, fault_proxy) -> None:
    """The registry answered 500 for the base's receipt; the dry run said "no registry
    receipt (... not found)", as if the base had never been imported there."""
    dest = registry_factory()
    import_bundle(pair.base, to=f"{dest.host}/m")
    proxy = fault_proxy(dest.url)
    proxy.status(r"/m/bundler-receipts/manifests/", 500, method="GET", times=None)
    base_id = read_receipt(pair.base).bundle_id
    tag = "sha256-" + base_id.split(":")[1]
    where = f"{proxy.host}/m/bundler-receipts:{tag}"
    dry = run_cli("import", str(pair.diff), "--to", f"{proxy.host}/m", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert (f"base {base_id}: its registry receipt {where} could not be read (manifest "
            f"{where}: {proxy.host} answered HTTP 500); the omitted blobs were checked "
            "all the same") in dry.output
    assert "not found" not in dry.output
    doc = json.loads(run_cli("import", str(pair.diff), "--to", f"{proxy.host}/m",
                             "--dry-run", "--json").output)
    assert (doc["base"]["receiptFound"], doc["base"]["complete"]) == (False, True)
    assert doc["base"]["receiptError"] == f"manifest {where}: {proxy.host} answered HTTP 500"


def test_bytes_the_base_holds_as_a_manifest_are_not_left_out_as_a_layer(
        pair: Pair, registry_factory, tmp_path: Path) -> None:
    """An artifact whose layer is the exact bytes of a base image's manifest: the diff
    left that layer to the base, but a registry holds a manifest as no blob (HEAD of
    the blob is 404), so the import was refused where the base had been imported."""
    top = json.loads((pair.base / "index.json").read_bytes())["manifests"][0]["digest"]
    manifest_bytes = (pair.base / "blobs/sha256" / top.split(":")[1]).read_bytes()
    artifact = make_artifact(pair.new, manifest_bytes, "application/vnd.dev.copy")
    assert artifact.layers[0].digest == top
    push(pair.registry, "shop/meta", artifact, tag="1")
    dest = registry_factory()
    import_bundle(pair.base, to=f"{dest.host}/m")
    assert httpx.head(f"{dest.url}/v2/m/shop/app/blobs/{top}").status_code == 404
    diff = tmp_path / "meta.tar"
    export_bundle([f"{pair.registry.host}/shop/meta:1"], diff, since=read_receipt(pair.base))
    assert read_receipt(diff).omitted == ()
    import_bundle(diff, to=f"{dest.host}/m")
    layer = httpx.get(f"{dest.url}/v2/m/shop/meta/blobs/{top}", timeout=10)
    assert layer.content == manifest_bytes


def test_import_base_given_as_a_receipt_says_so(pair: Pair, registry_factory) -> None:
    """``import DIFF --base BASE.receipt.json`` said "not a tar archive (invalid
    header)": the receipt was read as an archive."""
    dest = registry_factory()
    receipt = pair.base.with_name(pair.base.name + ".receipt.json")
    assert receipt.is_file()
    result = run_cli("import", str(pair.diff), "--to", f"{dest.host}/m", "--base", str(receipt))
    assert result.exit_code == 2
    assert (f"Error: --base {receipt} is a receipt: import reads the omitted blobs from the "
            "base bundle itself (a directory or a .tar); a receipt serves export --since "
            "and verify --base") in " ".join(result.output.split())
    assert httpx.get(f"{dest.url}/v2/_catalog").json()["repositories"] == []


def test_a_fifo_as_since_or_base_is_named_for_what_it_is(pair: Pair, tmp_path: Path) -> None:
    """A FIFO named as ``--since`` (or ``merge``'s BASE) was "no such bundle or receipt",
    though it is there; it is refused as no regular file, and never opened."""
    fifo = tmp_path / "base.receipt.json"
    os.mkfifo(fifo)
    said = f"{fifo}: not a regular file or directory; give a bundle or a receipt"
    result = run_cli("export", f"{pair.registry.host}/shop/app:2", "-o",
                     str(tmp_path / "out"), "--since", str(fifo))
    assert result.exit_code == 2
    assert f"Error: --since {fifo}: {said}" in " ".join(result.output.split())
    merged = run_cli("merge", str(fifo), str(pair.diff), "-o", str(tmp_path / "m"))
    assert merged.exit_code == 2
    assert f"Error: {said}" in " ".join(merged.output.split())
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists()


def test_export_since_continues_into_the_blobs_an_interrupted_run_kept(
        pair: Pair, tmp_path: Path) -> None:
    """An interrupted ``export --since`` into a directory keeps its finished blobs (no
    index.json) and says "run the same command again to continue"; that command was
    refused (exit 2, "a directory that is not empty")."""
    out = tmp_path / "week2"
    args = ["export", f"{pair.registry.host}/shop/app:2", "-o", str(out), "--since",
            str(pair.base), "-q"]
    assert run_cli(*args).exit_code == 0
    for name in ("index.json", "bundler-receipt.json"):  # what an interrupted run leaves
        (out / name).unlink()
    out.with_name("week2.receipt.json").unlink()
    layer = pair.new.layers[1].digest  # the new layer: downloaded again
    (out / "blobs/sha256" / layer.split(":")[1]).unlink()
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert (f"blobs downloaded 1 ({human(pair.new.layers[1].size)}), already present 1"
            in again.output)  # the config was kept
    assert read_receipt(out) == read_receipt(out.with_name("week2.receipt.json"))
    assert run_cli("verify", str(out), "--base", str(pair.base)).exit_code == 0
    refused = run_cli(*args)  # a bundle is there now
    assert refused.exit_code == 2
    assert (f"--since writes a new bundle: {out} holds a bundle already; choose a new or "
            "empty directory") in " ".join(refused.output.split())


def test_a_failed_image_of_a_diff_leaves_a_receipt_that_reads(
        pair: Pair, fault_proxy, tmp_path: Path) -> None:
    """``export --since --keep-going`` with an image failing: the receipt listed as
    omitted a blob only the failed image needed, so verify, list (and a later --since)
    refused it ("omitted[0].digest names ..., which blobs does not list"); and the
    advice "run the same command again" was refused too (the directory holds a bundle)."""
    only_failed = random_layer(102, 32 * KIB)  # the base's, needed by no other image
    failing = make_image([random_layer(306, 8 * KIB), only_failed])
    push(pair.registry, "shop/failing", failing, tag="1")
    proxy = fault_proxy(pair.registry.url)
    proxy.status(failing.layers[0].digest, 500, method="GET", times=None)
    out = tmp_path / "d"
    result = run_cli("export", f"{proxy.host}/shop/failing:1", f"{proxy.host}/shop/app:2",
                     "-o", str(out), "--since", str(pair.base), "--keep-going",
                     "--retries", "0")
    assert result.exit_code == 1
    assert ("failed: 1 of 2 images; the bundle holds the other 1; export the failed ones to "
            "another bundle (--since writes a new bundle)") in result.output
    receipt = read_receipt(out)
    assert [b.digest for b in receipt.omitted] == [pair.left_out]
    assert only_failed.digest not in receipt.blobs
    assert run_cli("verify", str(out), "--base", str(pair.base)).exit_code == 0
    assert run_cli("list", str(out)).exit_code == 0


def test_merge_continues_into_the_blobs_an_interrupted_merge_kept(pair: Pair,
                                                                  tmp_path: Path) -> None:
    """An interrupted merge into a directory says "run the same command again to
    continue"; that command was refused (exit 2, "a directory that is not empty")."""
    out = tmp_path / "full"
    args = ["merge", str(pair.base), str(pair.diff), "-o", str(out), "-q"]
    assert run_cli(*args).exit_code == 0
    for name in ("index.json", "bundler-receipt.json"):  # what an interrupted run leaves
        (out / name).unlink()
    out.with_name("full.receipt.json").unlink()
    (out / "blobs/sha256" / pair.left_out.split(":")[1]).unlink()
    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    held = {"sha256:" + p.name for p in (out / "blobs/sha256").iterdir()}
    assert held == {pair.new.digest} | {b.digest for b in pair.new.blobs}
    assert run_cli("verify", str(out)).exit_code == 0
    (out / "stray.txt").write_text("x")
    (out / "index.json").unlink()
    refused = run_cli(*args)
    assert refused.exit_code == 2
    assert (f"{out} is a directory that is not empty; merge writes a new bundle: choose a "
            "new or empty directory") in " ".join(refused.output.split())


def test_the_base_receipt_is_read_only_for_a_blob_found_nowhere_else(
        pair: Pair, registry_factory, fault_proxy) -> None:
    """Where every omitted blob is in the import's own repositories, the import makes
    no request more than before: the base's receipt itself is not fetched."""
    dest = registry_factory()
    import_bundle(pair.base, to=f"{dest.host}/m")
    proxy = fault_proxy(dest.url)
    imported = import_bundle(pair.diff, to=f"{proxy.host}/m")
    assert imported.chain is not None and imported.chain.present == 1
    assert proxy.count("GET", r"/m/bundler-receipts/manifests/") == 1
    assert proxy.count("GET", r"/m/bundler-receipts/blobs/") == 0


def test_a_base_in_volumes_serves_import_merge_and_since(pair: Pair, registry_factory,
                                                         tmp_path: Path) -> None:
    """A base exported in volumes (``--split-size``, in bundler's order): ``import
    --base``, ``merge`` refused it ("read at random: give a directory or a .tar") though
    the guide says uncompressed volumes are read at random, and ``--since NAME.001``
    was "not a bundler receipt or bundle"."""
    volumes = tmp_path / "base.tar"
    result = run_cli("export", f"{pair.registry.host}/shop/app:1", "-o", str(volumes),
                     "--split-size", "16KiB", "-q")
    assert result.exit_code == 0, result.output
    second = tmp_path / "base.tar.001"
    assert second.exists()
    assert read_receipt(second).bundle_id == read_receipt(pair.base).bundle_id
    dest = registry_factory()
    imported = import_bundle(pair.diff, to=f"{dest.host}/m", base=second)
    assert imported.chain is not None and imported.chain.from_base == 1
    pulled = httpx.get(f"{dest.url}/v2/m/shop/app/blobs/{pair.left_out}", timeout=10)
    assert "sha256:" + hashlib.sha256(pulled.content).hexdigest() == pair.left_out
    for given in (volumes, tmp_path / "base.tar.000"):
        out = tmp_path / f"full-{given.name}"
        merged = run_cli("merge", str(given), str(pair.diff), "-o", str(out), "-q")
        assert merged.exit_code == 0, merged.output
        assert read_receipt(out).base is None
    since = run_cli("export", f"{pair.registry.host}/shop/app:2", "-o",
                    str(tmp_path / "d"), "--since", str(second), "-q")
    assert since.exit_code == 0, since.output
    assert [b.digest for b in read_receipt(tmp_path / "d").omitted] == [pair.left_out]
