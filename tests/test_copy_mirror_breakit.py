"""``bundler copy`` and ``bundler mirror`` used as a skopeo or oc user would, and as an
attacker would: each test is a defect found that way, on real registries.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from click.testing import CliRunner, Result

from bundler.bundle import export_bundle
from bundler.cli.main import main
from bundler.oci.reference import Reference
from bundler.sandbox import LocalRegistry, SeededSet

Seeded = tuple[LocalRegistry, SeededSet]


def copy(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(main, ["copy", "-q", "--src-tls-verify=false",
                                     "--dest-tls-verify=false", *args],
                              input=input, catch_exceptions=False)


def blob_files(layout: Path) -> list[str]:
    folder = layout / "blobs" / "sha256"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_archive_into_a_locked_layout_with_no_wait_writes_nothing(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    """oci-archive: -> oci: takes the destination layout's writer lock before it stores
    a blob: with another bundler writing the layout, --no-wait fails at once (exit 1)
    and the layout gets no blob of the image."""
    _, seeded = seeded_registry
    web = seeded.get("apps/web", "1.0")
    archive = tmp_path / "web.tar"
    export_bundle([Reference.parse(web.reference)], archive)
    layout = tmp_path / "layout"
    layout.mkdir()
    fd = os.open(layout / ".bundler.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = copy("--no-wait", f"oci-archive:{archive}", f"oci:{layout}:web")
    finally:
        os.close(fd)
    assert result.exit_code == 1
    assert "another bundler" in result.output and "is writing this bundle" in result.output
    assert blob_files(layout) == []
    assert not (layout / "index.json").exists()


def test_archive_to_layout_counts_blobs_as_the_other_copies_do(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    """A copy from an archive into a new layout says "blobs copied N" with the same N
    (the image's config and layers, not its manifests) as a copy of the same image from
    the registry into a new layout."""
    _, seeded = seeded_registry
    multi = seeded.get("multi/arch", "1")
    archive = tmp_path / "multi.tar"
    export_bundle([Reference.parse(multi.reference)], archive)
    from_registry = copy(f"docker://{multi.reference}", f"oci:{tmp_path / 'a'}")
    from_archive = copy(f"oci-archive:{archive}", f"oci:{tmp_path / 'b'}")
    assert from_registry.exit_code == 0 and from_archive.exit_code == 0, from_archive.output
    blobs = len(multi.blob_sizes)
    assert f"blobs copied {blobs} (" in from_registry.output
    assert f"blobs copied {blobs} (" in from_archive.output
    again = copy(f"oci-archive:{archive}", f"oci:{tmp_path / 'b'}")
    assert f"blobs copied 0 (0 B), already there {blobs};" in again.output


def test_an_archive_source_on_stdin_is_a_usage_error(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    """``oci-archive:-`` as a source (an archive source is read twice: it cannot be a
    pipe) is refused before anything is read or written, exit 2, naming the way to
    import from stdin; it is not read as an empty file, and no layout is left behind."""
    _, seeded = seeded_registry
    base = seeded.get("base/os", "1")
    archive = tmp_path / "os.tar"
    export_bundle([Reference.parse(base.reference)], archive)
    result = copy("oci-archive:-", f"oci:{tmp_path / 'out'}", input=archive.read_bytes())
    assert result.exit_code == 2
    assert ("location 'oci-archive:-': an oci-archive: source is read twice and cannot "
            "be stdin") in result.output
    assert "empty file" not in result.output
    assert not (tmp_path / "out").exists()


def mirror(*args: str) -> Result:
    return CliRunner().invoke(main, ["mirror", "-q", "--src-tls-verify=false",
                                     "--dest-tls-verify=false", *args],
                              catch_exceptions=False)


def test_mirror_and_copy_naming_errors_speak_of_images_not_a_bundle(
        seeded_registry: Seeded, registry: LocalRegistry) -> None:
    """A mirror reads no bundle: two sources that --to sends to one tag, and a
    destination digest that is not the image's, are named as images (exit 2), with no
    word of a bundle; nothing is pushed."""
    reg, seeded = seeded_registry
    port = reg.host.rsplit(":", 1)[1]
    os1 = seeded.get("base/os", "1")
    web = seeded.get("apps/web", "1.0")
    pinned = seeded.get("apps/pinned", None)
    two = mirror(os1.reference, f"localhost:{port}/base/os:1", "--to", f"{registry.host}/m")
    assert two.exit_code == 2
    assert (f"Error: images '{os1.reference}' and 'localhost:{port}/base/os:1' both go to "
            f"{registry.host}/m/base/os:1; use --mapping") in two.output
    wrong = copy(f"docker://{web.reference}",
                 f"docker://{registry.host}/x/web:1@{pinned.digest}")
    assert wrong.exit_code == 2
    assert (f"names digest {pinned.digest}, but '{web.reference}' is {web.digest}; a push "
            "keeps the digest") in wrong.output
    for result in (two, wrong):
        assert "bundle" not in result.output
    with registry.client(base_url=registry.url) as http:
        assert http.get("/v2/_catalog").json()["repositories"] == []


def test_a_mapping_file_with_a_byte_order_mark_is_read_as_an_images_file_is(
        seeded_registry: Seeded, registry: LocalRegistry, tmp_path: Path) -> None:
    """A mapping saved by a Windows editor (UTF-8 byte-order mark, CRLF line ends) is
    read as -f reads an images file: the mark is no part of the first source."""
    _, seeded = seeded_registry
    os1 = seeded.get("base/os", "1")
    mapping = tmp_path / "mapping.txt"
    mapping.write_bytes(f"\ufeff{os1.reference}={registry.host}/bom/os:1\r\n".encode())
    result = mirror("--mapping", str(mapping))
    assert result.exit_code == 0, result.output
    assert (f"{os1.reference} -> {registry.host}/bom/os:1@{os1.digest}"
            in result.output)
    with registry.client(base_url=registry.url) as http:
        got = http.head("/v2/bom/os/manifests/1", headers={"Accept": os1.media_type})
    assert got.headers["Docker-Content-Digest"] == os1.digest
