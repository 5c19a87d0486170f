"""--platform-mode sparse: the original index bytes with only the chosen platforms'
content, on real registries. Debian's distribution 2.8 and go-containerregistry's
registry refuse such an index (the refusal names --platform-mode strip, and no tag
moves); distribution v3 with ``validation.manifests.indexes`` takes it, and reads back
byte-equal with skopeo."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import main
from bundler.cli.summary import human
from bundler.errors import ManifestError
from bundler.oci.content import Descriptor, parse_manifest
from bundler.oci.digest import Digest
from bundler.oci.graph import walk
from bundler.oci.platforms import SPARSE, kept_children
from bundler.sandbox import LocalRegistry, make_image, make_index, push, random_layer
from bundler.sandbox.registry import (
    DISTRIBUTION_V3_BINARY,
    SPARSE_INDEX_VALIDATION,
    start_registry,
)

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")
SPARSE_ARGS = ("--platform", "linux/amd64", "--platform-mode", "sparse")
TLS = ("--src-tls-verify", "false")
DEST_TLS = ("--dest-tls-verify", "false")


@pytest.fixture
def accepting(tmp_path: Path) -> Iterator[LocalRegistry]:
    """CNCF distribution v3 that takes an index whose linux/amd64 children it holds
    (``validation.manifests.indexes.platforms: list``), stopped after the test."""
    if not Path(DISTRIBUTION_V3_BINARY).exists():
        pytest.skip(f"{DISTRIBUTION_V3_BINARY} missing: bash scripts/build-tools.sh")
    reg = start_registry(tmp_path / "v3", binary=DISTRIBUTION_V3_BINARY,
                         extra_config=SPARSE_INDEX_VALIDATION)
    try:
        yield reg
    finally:
        reg.stop()


def run_cli(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False, input=stdin)


def three_platforms() -> tuple[Any, list[Any]]:
    """An index of linux/amd64, linux/arm64/v8, linux/s390x, each followed by its
    attestation manifest (children 0-5)."""
    images = [make_image([random_layer(21, 64)], architecture="amd64"),
              make_image([random_layer(22, 64)], architecture="arm64", variant="v8"),
              make_image([random_layer(23, 64)], architecture="s390x")]
    return make_index(images), images


def content_of(*images: Any) -> set[str]:
    """The hex digests of manifests, configs and layers of ``images``."""
    return {d.split(":")[1] for i in images
            for d in (i.digest, i.config.digest, *(layer.digest for layer in i.layers))}


def held(bundle: Path) -> set[str]:
    return {p.name for p in (bundle / "blobs" / "sha256").iterdir()}


def skopeo_raw(ref: str) -> bytes:
    return subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                           f"docker://{ref}"], check=True, capture_output=True,
                          timeout=60).stdout


def served_digest(registry: LocalRegistry, repository: str, tag: str) -> str | None:
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
    answer = httpx.head(f"{registry.url}/v2/{repository}/manifests/{tag}",
                        headers={"Accept": accept})
    return answer.headers["Docker-Content-Digest"] if answer.status_code == 200 else None


@pytest.fixture
def sparse_bundle(registry: LocalRegistry, tmp_path: Path) -> tuple[Path, Any, list[Any], str]:
    """The three-platform index exported sparse for linux/amd64 into a directory:
    (bundle, index, images, source reference)."""
    index, images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    ref = f"{registry.host}/multi/arch:1"
    bundle = tmp_path / "b"
    result = run_cli("export", ref, *SPARSE_ARGS, "-o", str(bundle), "-q", *TLS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"sparse index: {ref}: {index.digest} (the registry's digest), with the content of "
        "linux/amd64 only")
    return bundle, index, images, ref


def problems(result: Result) -> list[str]:
    """The ``problem:`` lines of a verify, sorted."""
    return sorted(result.stderr.splitlines())


def missing(bundle: Path, ref: str, *digests: str) -> list[str]:
    return sorted(f"problem: {ref}: {bundle}: blob {d} is missing" for d in digests)


def test_the_child_filter_keeps_the_annotated_platforms_and_their_attestations() -> None:
    index, _images = three_platforms()
    parsed = parse_manifest(index.manifest_bytes, index.media_type)
    entry = Descriptor(index.media_type, Digest.parse(index.digest), index.size,
                       {SPARSE: "linux/arm64,linux/s390x"})
    kept = kept_children(entry, parsed.manifests)
    assert [str(d.digest) for d in kept] == [c.digest for c in index.children[2:]]
    manifests = {c.digest: c for c in index.children}
    manifests[index.digest] = index

    def load(descriptor: Descriptor) -> Any:
        m = manifests[str(descriptor.digest)]
        return parse_manifest(m.manifest_bytes, m.media_type)

    plan = walk(entry, load, name="x")
    assert plan.sparse == "linux/arm64,linux/s390x"
    assert plan.platforms == ["linux/arm64/v8", "linux/s390x"]
    assert [str(d.digest) for d in plan.omitted] == [c.digest for c in index.children[:2]]
    assert [str(d.digest) for d, _ in plan.manifests] == [
        *(c.digest for c in index.children[2:]), index.digest]
    assert {str(d) for d in plan.blobs} == {
        d for c in index.children[2:] for d in (c.config.digest, *(x.digest for x in c.layers))}
    whole = walk(entry.with_annotations({}), load, name="x")
    assert (whole.omitted, len(whole.manifests), whole.sparse) == ([], 7, None)

    with pytest.raises(ManifestError) as none_there:
        kept_children(entry.with_annotations({SPARSE: "windows/amd64"}), parsed.manifests)
    assert str(none_there.value) == (
        f"sparse index {index.digest} has no manifest for windows/amd64 (it has "
        "linux/amd64, linux/arm64/v8, linux/s390x)")
    with pytest.raises(ManifestError) as unreadable:
        kept_children(entry.with_annotations({SPARSE: "linux"}), parsed.manifests)
    assert str(unreadable.value) == (
        f"index {index.digest}: annotation {SPARSE}: 'linux' is not OS/ARCH[/VARIANT] "
        "(e.g. linux/amd64, linux/arm64/v8) or all")


def test_export_keeps_the_index_bytes_and_only_the_chosen_content(
        sparse_bundle: tuple[Path, Any, list[Any], str]) -> None:
    bundle, index, _images, ref = sparse_bundle
    (entry,) = json.loads((bundle / "index.json").read_text())["manifests"]
    assert entry == {"mediaType": index.media_type, "digest": index.digest,
                     "size": index.size,
                     "annotations": {"org.opencontainers.image.ref.name": ref,
                                     "io.containerd.image.name": ref,
                                     SPARSE: "linux/amd64"}}
    assert (bundle / "blobs/sha256" / index.digest.split(":")[1]).read_bytes() == \
        index.manifest_bytes
    amd64, attestation = index.children[0], index.children[1]
    assert held(bundle) == {index.digest.split(":")[1]} | content_of(amd64, attestation)
    size = sum(p.stat().st_size for p in (bundle / "blobs/sha256").iterdir())

    verify = run_cli("verify", str(bundle))
    assert (verify.exit_code, verify.stdout, verify.stderr) == (
        0, f"{bundle}: OK: 1 image, 7 blobs, {human(size)} checked\n", "")

    listing = run_cli("list", str(bundle))
    assert listing.exit_code == 0
    assert listing.stdout.splitlines()[1].split() == [
        ref, index.digest[:19], "vnd.oci.image.index.v1+json", "linux/amd64", "(sparse)",
        *human(size).split()]
    as_json = json.loads(run_cli("list", str(bundle), "--json").stdout)["images"]
    assert as_json == [{"reference": ref, "digest": index.digest,
                        "mediaType": index.media_type, "platforms": ["linux/amd64"],
                        "size": size, "sparse": True}]


def test_verify_wants_every_kept_child_and_a_whole_index_unless_told(
        sparse_bundle: tuple[Path, Any, list[Any], str]) -> None:
    bundle, index, _images, ref = sparse_bundle
    amd64_layer = index.children[0].layers[0].digest
    path = bundle / "blobs/sha256" / amd64_layer.split(":")[1]
    kept = path.read_bytes()
    path.unlink()
    result = run_cli("verify", str(bundle))
    assert result.exit_code == 1
    assert problems(result) == missing(bundle, ref, amd64_layer)
    path.write_bytes(kept)
    assert run_cli("verify", str(bundle)).exit_code == 0

    index_json = bundle / "index.json"
    (bundle / "bundler-receipt.json").unlink()  # index.json is edited below: no receipt
    doc = json.loads(index_json.read_text())
    del doc["manifests"][0]["annotations"][SPARSE]  # the same index, not said to be sparse
    index_json.write_text(json.dumps(doc))
    result = run_cli("verify", str(bundle))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{bundle}: 4 problems: 1 image, 7 blobs, ")
    assert problems(result) == missing(bundle, ref, *(c.digest for c in index.children[2:]))

    doc["manifests"][0]["annotations"][SPARSE] = "linux/amd64,linux/s390x"  # s390x not held
    index_json.write_text(json.dumps(doc))
    result = run_cli("verify", str(bundle))
    assert result.exit_code == 1
    assert problems(result) == missing(bundle, ref, *(c.digest for c in index.children[4:]))

    doc["manifests"][0]["annotations"][SPARSE] = "linux"
    index_json.write_text(json.dumps(doc))
    result = run_cli("verify", str(bundle))
    assert result.exit_code == 1
    assert problems(result) == [
        f"problem: {ref}: index {index.digest}: annotation {SPARSE}: 'linux' is not "
        "OS/ARCH[/VARIANT] (e.g. linux/amd64, linux/arm64/v8) or all"]


REFUSED = ("(the index is sparse: only its linux/amd64 manifests were pushed, 4 of its "
           "children were not, and this registry refuses an index whose children it does "
           "not hold; use --platform-mode strip for a new index of the chosen platforms)")
BUNDLES = {"dir": "b", "tar": "b.tar", "zst": "b.tar.zst", "split": "s.tar", "pipe": "p.tar"}


def export_sparse(ref: str, kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """Export ``ref`` sparse for linux/amd64 as ``kind``; the bundle and what import
    takes for it (``-`` and the bytes on stdin for a pipe)."""
    bundle = tmp_path / BUNDLES[kind]
    split = ("--split-size", "2KiB") if kind == "split" else ()
    result = run_cli("export", ref, *SPARSE_ARGS, "-o", str(bundle), "-q", *split, *TLS)
    assert result.exit_code == 0, result.output
    return bundle, ["-"] if kind == "pipe" else [str(bundle)]


@needs_skopeo
@pytest.mark.parametrize("kind", list(BUNDLES))
def test_import_pushes_the_kept_children_then_the_original_index(
        kind: str, registry: LocalRegistry, accepting: LocalRegistry,
        tmp_path: Path) -> None:
    index, _images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    bundle, source = export_sparse(f"{registry.host}/multi/arch:1", kind, tmp_path)
    stdin = bundle.read_bytes() if kind == "pipe" else None
    if kind == "split":
        assert sorted(p.name for p in tmp_path.glob("s.tar.0*"))[:2] == ["s.tar.000",
                                                                        "s.tar.001"]
    result = run_cli("import", *source, "--to", accepting.host, "-q", *DEST_TLS, stdin=stdin)
    assert result.exit_code == 0, result.output
    assert skopeo_raw(f"{accepting.host}/multi/arch:1") == index.manifest_bytes
    amd64 = index.children[0]
    assert skopeo_raw(f"{accepting.host}/multi/arch@{amd64.digest}") == amd64.manifest_bytes
    for omitted in index.children[2:]:  # not there: the index is sparse in the registry
        assert served_digest(accepting, "multi/arch", omitted.digest) is None
    assert served_digest(accepting, "multi/arch", index.children[1].digest) == \
        index.children[1].digest


@pytest.mark.parametrize("kind", ["dir", "zst", "pipe"])
def test_a_registry_that_refuses_the_index_gets_told_strip_and_no_tag_moves(
        kind: str, registry_factory, tmp_path: Path) -> None:
    src, dest = registry_factory(), registry_factory()
    index, images = three_platforms()
    push(src, "multi/arch", index, tag="1")
    push(dest, "multi/arch", images[2], tag="1")  # the tag as it was before the import
    bundle, source = export_sparse(f"{src.host}/multi/arch:1", kind, tmp_path)
    stdin = bundle.read_bytes() if kind == "pipe" else None
    result = run_cli("import", *source, "--to", dest.host, "-q", *DEST_TLS, stdin=stdin)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {src.host}/multi/arch:1: manifest {index.digest} to "
                           f"{dest.host}/multi/arch")
    assert f"{dest.host} answered HTTP 400 MANIFEST_BLOB_UNKNOWN" in line
    assert line.endswith(REFUSED)
    assert served_digest(dest, "multi/arch", "1") == images[2].digest
    assert served_digest(dest, "multi/arch", index.digest) is None
    # the kept children went first, as they should
    assert served_digest(dest, "multi/arch", index.children[0].digest) == \
        index.children[0].digest


def test_go_containerregistry_refuses_it_too(registry: LocalRegistry,
                                             referrers_registry: LocalRegistry,
                                             tmp_path: Path) -> None:
    index, _images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    bundle, source = export_sparse(f"{registry.host}/multi/arch:1", "dir", tmp_path)
    dest = referrers_registry
    result = run_cli("import", *source, "--to", dest.host, "-q", *DEST_TLS)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert f"{dest.host} answered HTTP 404 MANIFEST_UNKNOWN" in line
    assert line.endswith(REFUSED)
    assert served_digest(dest, "multi/arch", "1") is None


@needs_skopeo
def test_mirror_sparse_from_registry_to_registry(registry_factory, accepting: LocalRegistry,
                                                  tmp_path: Path) -> None:
    src, refusing = registry_factory(), registry_factory()
    index, _images = three_platforms()
    push(src, "multi/arch", index, tag="1")
    ref = f"{src.host}/multi/arch:1"
    result = run_cli("mirror", ref, *SPARSE_ARGS, "--to", f"{accepting.host}/m", "-q", *TLS,
                     *DEST_TLS)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"sparse index: {ref}: {index.digest} (the registry's digest), with the content of "
        "linux/amd64 only")
    assert skopeo_raw(f"{accepting.host}/m/multi/arch:1") == index.manifest_bytes
    assert served_digest(accepting, "m/multi/arch", index.children[2].digest) is None
    assert served_digest(accepting, "m/multi/arch", index.children[0].digest) == \
        index.children[0].digest

    result = run_cli("mirror", ref, *SPARSE_ARGS, "--to", f"{refusing.host}/m", "-q", *TLS,
                     *DEST_TLS)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {ref}: manifest {index.digest} to {refusing.host}/m/")
    assert line.endswith(REFUSED)
    assert served_digest(refusing, "m/multi/arch", "1") is None


@needs_skopeo
def test_an_image_set_entry_may_be_sparse(registry: LocalRegistry, accepting: LocalRegistry,
                                          tmp_path: Path) -> None:
    index, _images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    push(registry, "whole/arch", index, tag="1")
    config = tmp_path / "set.yaml"
    config.write_text(f"""\
{registry.host}:
  tls-verify: false
  images:
    multi/arch:
      all-tags: true
      platforms: [linux/amd64]
      platform-mode: sparse
    whole/arch: ["1"]
""")
    bundle = tmp_path / "b"
    result = run_cli("export", "-c", str(config), "-o", str(bundle), "-q")
    assert result.exit_code == 0, result.output
    entries = {m["annotations"]["org.opencontainers.image.ref.name"]:
               (m["digest"], m["annotations"].get(SPARSE))
               for m in json.loads((bundle / "index.json").read_text())["manifests"]}
    assert entries == {f"{registry.host}/multi/arch:1": (index.digest, "linux/amd64"),
                       f"{registry.host}/whole/arch:1": (index.digest, None)}
    every = {index.digest.split(":")[1]} | content_of(*index.children)
    assert held(bundle) == every  # the whole image holds what the sparse one leaves out
    assert run_cli("verify", str(bundle)).exit_code == 0
    listed = json.loads(run_cli("list", str(bundle), "--json").stdout)["images"]
    assert [(i["platforms"], i.get("sparse")) for i in listed] == [
        (["linux/amd64"], True), (["linux/amd64", "linux/arm64/v8", "linux/s390x"], None)]

    dry = run_cli("export", "-c", str(config), "-o", str(tmp_path / "c"), "--dry-run",
                  "--json")
    assert json.loads(dry.stdout)["selection"]["selected"][0] == {
        "reference": f"{registry.host}/multi/arch:1", "entry": f"{config}:4",
        "selectedBy": "all tags", "listed": True, "platforms": ["linux/amd64"],
        "platformMode": "sparse"}

    result = run_cli("import", str(bundle), "--to", accepting.host, "-q", *DEST_TLS)
    assert result.exit_code == 0, result.output
    assert skopeo_raw(f"{accepting.host}/multi/arch:1") == index.manifest_bytes
    assert served_digest(accepting, "multi/arch", index.children[2].digest) is None
    assert served_digest(accepting, "whole/arch", index.children[2].digest) == \
        index.children[2].digest

    # read once: the index is a sparse root and a whole one; the whole one reads whole
    archive = tmp_path / "b.tar.zst"
    result = run_cli("export", "-c", str(config), "-o", str(archive), "-q")
    assert result.exit_code == 0, result.output
    assert run_cli("verify", str(archive)).exit_code == 0
    result = run_cli("import", "-", "--to", f"{accepting.host}/pipe", "-q", *DEST_TLS,
                     stdin=archive.read_bytes())
    assert result.exit_code == 0, result.output
    assert served_digest(accepting, "pipe/multi/arch", index.children[2].digest) is None
    assert served_digest(accepting, "pipe/whole/arch", index.children[2].digest) == \
        index.children[2].digest


@needs_skopeo
def test_copy_and_serve_take_a_sparse_bundle(
        sparse_bundle: tuple[Path, Any, list[Any], str], accepting: LocalRegistry,
        serve, tmp_path: Path) -> None:
    bundle, index, _images, ref = sparse_bundle
    result = run_cli("copy", f"oci:{bundle}:{ref}", f"docker://{accepting.host}/c/x:2", "-q",
                     *DEST_TLS)
    assert result.exit_code == 0, result.output
    assert skopeo_raw(f"{accepting.host}/c/x:2") == index.manifest_bytes

    copied = tmp_path / "copied"
    result = run_cli("copy", f"oci:{bundle}", f"oci:{copied}", "-q")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((copied / "index.json").read_text())["manifests"]
    assert (entry["digest"], entry["annotations"][SPARSE]) == (index.digest, "linux/amd64")
    assert held(copied) == held(bundle)
    assert run_cli("verify", str(copied)).exit_code == 0

    served = serve(str(bundle), "-q")
    assert skopeo_raw(f"{served.host}/multi/arch:1") == index.manifest_bytes
    amd64 = index.children[0]
    assert skopeo_raw(f"{served.host}/multi/arch@{amd64.digest}") == amd64.manifest_bytes
    gone = httpx.get(f"{served.url}/v2/multi/arch/manifests/{index.children[2].digest}",
                     headers={"Accept": index.children[2].media_type})
    assert gone.status_code == 404


def test_a_platform_the_index_lacks_fails_the_export(registry: LocalRegistry,
                                                     tmp_path: Path) -> None:
    index, _images = three_platforms()
    push(registry, "multi/arch", index, tag="1")
    result = run_cli("export", f"{registry.host}/multi/arch:1", "--platform", "windows/amd64",
                     "--platform-mode", "sparse", "-o", str(tmp_path / "b"), "-q", *TLS)
    assert result.exit_code == 1
    assert f"index {index.digest} has no manifest for windows/amd64 (it has linux/amd64, " \
           "linux/arm64/v8, linux/s390x)" in result.stderr
    assert not (tmp_path / "b" / "index.json").exists()


def test_a_docker_archive_of_a_sparse_bundle_chooses_among_the_kept_platforms(
        sparse_bundle: tuple[Path, Any, list[Any], str], tmp_path: Path) -> None:
    bundle, _index, images, ref = sparse_bundle
    out = tmp_path / "d.tar"
    result = run_cli("copy", f"oci:{bundle}:{ref}", f"docker-archive:{out}:app:1",
                     "--platform", "linux/arm64/v8", "-q")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: app:1: the index has no image for platform linux/arm64/v8; it has "
        "linux/amd64: choose one with --platform OS/ARCH[/VARIANT]\n")
    result = run_cli("copy", f"oci:{bundle}:{ref}", f"docker-archive:{out}:app:1", "-q")
    assert result.exit_code == 0, result.output
    import tarfile

    with tarfile.open(out) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["Config"] == f"blobs/sha256/{images[0].config.digest.split(':')[1]}"
