"""``bundler copy SRC DST`` between registries, layouts and archives, on real registries.

Every pair of location kinds (docker://, oci:, oci-archive:) is copied for a
multi-arch index and a plain image of the seeded set; what arrives is read back from
the destination (the registry's manifest bytes and blobs, or the layout's index.json
and blob files) and checked by digest; a destination bundle passes ``bundler verify``.
skopeo reads what copy writes, and copy reads what skopeo writes. Bad locations are
usage errors (exit 2) that write nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bundler.bundle import export_bundle
from bundler.cli.main import main
from bundler.oci.reference import Reference
from bundler.sandbox import LocalRegistry, SeededEntry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]
Factory = Callable[..., LocalRegistry]
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])
REF_NAME = "org.opencontainers.image.ref.name"
IMAGES = [("multi/arch", "1"), ("apps/web", "1.0")]
KINDS = ["docker", "oci", "oci-archive"]

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo missing")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def copy(*args: str) -> Result:
    return CliRunner().invoke(main, ["copy", "-q", "--src-tls-verify=false",
                                     "--dest-tls-verify=false", *args],
                              catch_exceptions=False)


def layout_index(path: Path) -> list[dict]:
    return json.loads((path / "index.json").read_text())["manifests"]


@pytest.fixture(scope="module")
def sources(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Source locations holding both images: a layout and an archive written by export
    (each entry named by its full reference), and the seeded registry. Read-only."""
    reg, seeded = seeded_registry
    folder = tmp_path_factory.mktemp("copy-sources")
    refs = [Reference.parse(seeded.get(r, t).reference) for r, t in IMAGES]
    export_bundle(refs, folder / "layout")
    export_bundle(refs, folder / "bundle.tar")
    return {"oci": f"oci:{folder / 'layout'}", "oci-archive": f"oci-archive:{folder / 'bundle.tar'}"}


def source_location(kind: str, sources: dict[str, str], entry: SeededEntry) -> str:
    if kind == "docker":
        return f"docker://{entry.reference}"
    return f"{sources[kind]}:{entry.reference}"


def check_registry(reg: LocalRegistry, repository: str, tag: str, entry: SeededEntry) -> None:
    """The destination registry serves the image byte for byte, children and blobs too."""
    with reg.client(base_url=reg.url) as http:
        for identifier, data in [(tag, entry.manifest_bytes), *entry.manifests.items()]:
            got = http.get(f"/v2/{repository}/manifests/{identifier}", headers={"Accept": ACCEPT})
            assert got.status_code == 200, (identifier, got.text)
            assert got.content == data
            assert got.headers["Docker-Content-Digest"] == sha(data)
        for digest, size in entry.blob_sizes.items():
            head = http.head(f"/v2/{repository}/blobs/{digest}")
            assert head.status_code == 200, digest
            assert int(head.headers["Content-Length"]) == size


def check_layout(path: Path, name: str | None, entry: SeededEntry) -> None:
    """The layout's index.json names the image as asked; every manifest and blob file
    is there with the right digest; ``bundler verify`` finds nothing wrong."""
    entries = [e for e in layout_index(path) if e["digest"] == entry.digest]
    assert len(entries) == 1
    assert entries[0].get("annotations", {}).get(REF_NAME) == name
    for digest, data in entry.manifests.items():
        assert (path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
    for digest, size in entry.blob_sizes.items():
        blob = (path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
        assert (len(blob), sha(blob)) == (size, digest)
    verify = CliRunner().invoke(main, ["verify", str(path)])
    assert verify.exit_code == 0, verify.output


def check_archive(path: Path, name: str, entry: SeededEntry) -> None:
    """The archive verifies, and lists exactly the image under the given name."""
    verify = CliRunner().invoke(main, ["verify", str(path)])
    assert verify.exit_code == 0, verify.output
    listing = json.loads(CliRunner().invoke(main, ["list", "--json", str(path)]).output)
    assert [(i["reference"], i["digest"]) for i in listing["images"]] == [(name, entry.digest)]
    assert listing["blobs"] == len(entry.blob_sizes) + len(entry.manifests)


@pytest.mark.parametrize("repository, tag", IMAGES)
@pytest.mark.parametrize("dst_kind", KINDS)
@pytest.mark.parametrize("src_kind", KINDS)
def test_copy_between_every_pair_of_kinds(
        src_kind: str, dst_kind: str, repository: str, tag: str, seeded_registry: Seeded,
        sources: dict[str, str], registry_factory: Factory, tmp_path: Path) -> None:
    entry = seeded_registry[1].get(repository, tag)
    src = source_location(src_kind, sources, entry)
    if dst_kind == "docker":
        dest = registry_factory()
        result = copy(src, f"docker://{dest.host}/copied/{repository}:{tag}")
        assert result.exit_code == 0, result.output
        check_registry(dest, f"copied/{repository}", tag, entry)
    elif dst_kind == "oci":
        result = copy(src, f"oci:{tmp_path / 'out'}:copied-{tag}")
        assert result.exit_code == 0, result.output
        check_layout(tmp_path / "out", f"copied-{tag}", entry)
        assert len(layout_index(tmp_path / "out")) == 1
    else:
        result = copy(src, f"oci-archive:{tmp_path / 'out.tar'}:copied-{tag}")
        assert result.exit_code == 0, result.output
        check_archive(tmp_path / "out.tar", f"copied-{tag}", entry)
    assert f"({entry.digest})" in result.output


@pytest.mark.parametrize("repository, tag", IMAGES)
def test_copy_registry_to_registry(repository: str, tag: str, seeded_registry: Seeded,
                                   registry_factory: Factory) -> None:
    """Three registries: the seeded one -> B -> C, each hop read back byte for byte."""
    entry = seeded_registry[1].get(repository, tag)
    second, third = registry_factory(), registry_factory()
    result = copy(f"docker://{entry.reference}", f"docker://{second.host}/m/{repository}:{tag}")
    assert result.exit_code == 0, result.output
    check_registry(second, f"m/{repository}", tag, entry)
    result = copy("--all", f"docker://{second.host}/m/{repository}:{tag}",
                  f"docker://{third.host}/again/{repository}:copied")
    assert result.exit_code == 0, result.output
    assert f"({entry.digest})" in result.output
    check_registry(third, f"again/{repository}", "copied", entry)


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@needs_skopeo
@pytest.mark.parametrize("repository, tag", IMAGES)
def test_skopeo_reads_what_copy_writes(repository: str, tag: str, seeded_registry: Seeded,
                                       registry_factory: Factory, tmp_path: Path) -> None:
    entry = seeded_registry[1].get(repository, tag)
    result = copy(f"docker://{entry.reference}", f"oci:{tmp_path / 'layout'}:mine")
    assert result.exit_code == 0, result.output
    raw = run("skopeo", "inspect", "--raw", f"oci:{tmp_path / 'layout'}:mine").stdout
    assert raw.encode() == entry.manifest_bytes
    dest = registry_factory()
    run("skopeo", "copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:mine",
        f"docker://{dest.host}/sk/{repository}:{tag}")
    check_registry(dest, f"sk/{repository}", tag, entry)


@needs_skopeo
@pytest.mark.parametrize("named", [True, False])
def test_copy_from_a_layout_skopeo_wrote(named: bool, seeded_registry: Seeded,
                                         registry_factory: Factory, tmp_path: Path) -> None:
    """skopeo names the entry by a bare tag (or by nothing); copy reads it by that tag,
    or as the only image."""
    entry = seeded_registry[1].get("multi/arch", "1")
    layout = tmp_path / "skopeo-layout"
    run("skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{entry.reference}",
        f"oci:{layout}:v1" if named else f"oci:{layout}")
    dest = registry_factory()
    result = copy(f"oci:{layout}:v1" if named else f"oci:{layout}",
                  f"docker://{dest.host}/from-skopeo/arch:1")
    assert result.exit_code == 0, result.output
    check_registry(dest, "from-skopeo/arch", "1", entry)
    result = copy(f"oci:{layout}" + (":v1" if named else ""), f"oci-archive:{tmp_path / 'a.tar'}")
    assert result.exit_code == 0, result.output
    verify = CliRunner().invoke(main, ["verify", str(tmp_path / "a.tar")])
    assert verify.exit_code == 0, verify.output


def test_destination_layout_is_added_to_and_names_replace(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    seeded = seeded_registry[1]
    web, multi, api = (seeded.get("apps/web", "1.0"), seeded.get("multi/arch", "1"),
                       seeded.get("apps/api", "1.0"))
    layout = tmp_path / "layout"
    for item, name in [(web, "x"), (api, "y"), (multi, "x")]:
        result = copy(f"docker://{item.reference}", f"oci:{layout}:{name}")
        assert result.exit_code == 0, result.output
    named = {e["annotations"][REF_NAME]: e["digest"] for e in layout_index(layout)}
    assert named == {"x": multi.digest, "y": api.digest}
    check_layout(layout, "x", multi)
    # within one layout: a second name for the same image costs no blob
    result = copy(f"oci:{layout}:y", f"oci:{layout}:z")
    assert result.exit_code == 0, result.output
    assert "blobs copied 0" in result.output
    named = {e["annotations"][REF_NAME]: e["digest"] for e in layout_index(layout)}
    assert named == {"x": multi.digest, "y": api.digest, "z": api.digest}


def test_destination_without_a_name_is_unnamed_as_skopeo_writes_it(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    seeded = seeded_registry[1]
    web, api = seeded.get("apps/web", "1.0"), seeded.get("apps/api", "1.0")
    layout = tmp_path / "layout"
    for item in (web, web, api):
        result = copy(f"docker://{item.reference}", f"oci:{layout}")
        assert result.exit_code == 0, result.output
    entries = layout_index(layout)
    assert [(e["digest"], e.get("annotations")) for e in entries] == [
        (web.digest, None), (api.digest, None)]
    check_layout(layout, None, web)
    # two images and no name: which one is meant cannot be told
    result = copy(f"oci:{layout}", f"oci:{tmp_path / 'other'}")
    assert result.exit_code == 2
    assert "holds 2 images" in result.output
    assert f"(unnamed) {web.digest}" in result.output
    assert f"oci:{layout}:NAME" in result.output
    assert not (tmp_path / "other").exists()


def test_archive_to_archive_leaves_no_staging(sources: dict[str, str], seeded_registry: Seeded,
                                             tmp_path: Path) -> None:
    entry = seeded_registry[1].get("multi/arch", "1")
    out = tmp_path / "out.tar.zst"
    result = copy(f"{sources['oci-archive']}:{entry.reference}", f"oci-archive:{out}")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar.zst"]
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # zstd, as the name asks
    listing = json.loads(CliRunner().invoke(main, ["list", "--json", str(out)]).output)
    assert [(i["reference"], i["digest"]) for i in listing["images"]] == [("", entry.digest)]


def test_an_existing_archive_destination_is_left_alone(sources: dict[str, str],
                                                       seeded_registry: Seeded,
                                                       tmp_path: Path) -> None:
    entry = seeded_registry[1].get("apps/web", "1.0")
    out = tmp_path / "out.tar"
    out.write_bytes(b"keep me")
    result = copy(f"docker://{entry.reference}", f"oci-archive:{out}")
    assert result.exit_code == 1
    assert "already exists" in result.output
    assert out.read_bytes() == b"keep me"


def test_dry_run_moves_nothing(sources: dict[str, str], seeded_registry: Seeded,
                               registry_factory: Factory, tmp_path: Path) -> None:
    entry = seeded_registry[1].get("multi/arch", "1")
    result = copy("--dry-run", f"docker://{entry.reference}", f"oci:{tmp_path / 'out'}:m")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("dry run: would export 1 image")
    assert f"blobs: {len(entry.blob_sizes)} " in result.output
    assert not (tmp_path / "out").exists()
    dest = registry_factory()
    result = copy("--dry-run", "--json", f"{sources['oci']}:{entry.reference}",
                  f"docker://{dest.host}/d/arch:1")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert [(i["digest"], i["destination"], i["present"]) for i in plan["images"]] == [
        (entry.digest, f"{dest.host}/d/arch:1@{entry.digest}", False)]
    assert plan["toUpload"] == len(entry.blob_sizes)
    with dest.client(base_url=dest.url) as http:
        assert http.get("/v2/_catalog").json()["repositories"] == []


@pytest.mark.parametrize("src, dst, message", [
    ("dir:/tmp/x", "oci:{out}", "unknown transport 'dir'; expected docker://REFERENCE, "
     "oci:DIR[:REFERENCE], oci-archive:FILE[:REFERENCE] or docker-archive:FILE[:REFERENCE]"),
    ("{ref}", "oci:{out}", "no transport; expected docker://REFERENCE"),
    ("docker://{ref}", "{out}", "no transport; expected docker://REFERENCE"),
    ("docker-archive:-", "oci:{out}", "a docker-archive: source is read twice and cannot "
     "be stdin"),
    ("docker://{ref}", "docker-archive:-", "a docker-archive: destination is a file; name it"),
    ("{layout}", "oci:{out}", "holds 2 images ("),
    ("{layout}:nothere", "oci:{out}", "holds no image named 'nothere'; it holds "),
    ("{layout}:{ref}", "{layout}:{ref}", "the destination is the source"),
    ("docker://{ref}", "docker://{ref}", "the destination is the source"),
    ("docker://{ref}", "docker://{host}/x@sha256:" + "a" * 64, "needs a tag"),
    ("docker://{ref}", "oci:{out}:bad name", "is not a valid image name"),
])
def test_bad_locations_are_usage_errors_and_write_nothing(
        src: str, dst: str, message: str, sources: dict[str, str], seeded_registry: Seeded,
        tmp_path: Path) -> None:
    reg, seeded = seeded_registry
    values = {"ref": seeded.get("apps/web", "1.0").reference, "out": tmp_path / "out",
              "tmp": tmp_path, "layout": sources["oci"], "host": reg.host}
    before = sorted(p.name for p in tmp_path.iterdir())
    result = copy(src.format(**values), dst.format(**values))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if "holds" in message:  # the names held and the accepted form
        assert seeded.get("multi/arch", "1").reference in result.output
        assert f"{sources['oci']}:NAME" in result.output
