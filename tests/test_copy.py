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
