"""Small things a careful user meets: a reader that closes the pipe early, the sizes
``list`` shows when a layer is not held, and the ``artifactType`` of artifact entries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from bundler import export_bundle
from bundler.cli.main import main
from bundler.oci.content import DOCKER_MANIFEST
from bundler.registry.client import TransportOptions
from bundler.sandbox import Image, LocalRegistry, SeededSet, make_image, make_layer, push
from bundler.sandbox.images import sha256_digest

Seeded = tuple[LocalRegistry, SeededSet]
GUARD_S = 120  # a guard against a hang only
FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
ALLOW_URLS = {"validation": {"manifests": {"urls": {"allow": ["^https://"]}}}}


def bundler(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bundler.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def closed_stdout_run(*args: str) -> tuple[int, str]:
    """Run bundler with a stdout pipe whose reader is gone before anything is printed
    (what ``| head -1`` does after its line); the exit status and stderr."""
    process = bundler(*args)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # every write to stdout now fails with EPIPE
    err = process.stderr.read().decode()
    return process.wait(timeout=GUARD_S), err


def test_an_import_whose_reader_stopped_reading_exits_0(
        seeded_registry: Seeded, registry: LocalRegistry, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    entry = seeded.get("base/os", "1")
    export_bundle([entry.reference], tmp_path / "bundle")
    status, err = closed_stdout_run("import", str(tmp_path / "bundle"), "--to",
                                    f"{registry.host}/m", "--dest-tls-verify", "false",
                                    "-q")
    assert (status, err) == (0, "")  # no traceback, no "Exception ignored", no error
    pushed = httpx.head(f"{registry.url}/v2/m/base/os/manifests/1",
                        headers={"Accept": entry.media_type})
    assert pushed.headers["Docker-Content-Digest"] == entry.digest


def test_list_and_verify_into_a_closed_pipe_keep_their_exit_status(
        seeded_registry: Seeded, tmp_path: Path) -> None:
    _, seeded = seeded_registry
    export_bundle([seeded.get("base/os", "1").reference], tmp_path / "bundle")
    assert closed_stdout_run("list", str(tmp_path / "bundle")) == (0, "")
    assert closed_stdout_run("verify", str(tmp_path / "bundle")) == (0, "")


@pytest.mark.parametrize("progress", ["json", "plain"])
def test_an_import_whose_progress_reader_stopped_reading_still_imports(
        progress: str, seeded_registry: Seeded, registry: LocalRegistry,
        tmp_path: Path) -> None:
    """``bundler import ... --progress json 2>&1 >/dev/null | head -1``: the progress
    reader goes after one line; the import goes on and ends with its own status."""
    _, seeded = seeded_registry
    entries = [seeded.get("base/os", "1"), seeded.get("multi/arch", "1")]
    export_bundle([e.reference for e in entries], tmp_path / "bundle")
    process = subprocess.Popen(
        [sys.executable, "-m", "bundler.cli", "import", str(tmp_path / "bundle"), "--to",
         f"{registry.host}/m", "--dest-tls-verify", "false", "--progress", progress],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    first = process.stderr.readline()
    process.stderr.close()  # every later write to stderr fails with EPIPE
    assert first  # the reader did see the first progress line
    assert process.wait(timeout=GUARD_S) == 0
    for entry in entries:
        pushed = httpx.head(f"{registry.url}/v2/m/{entry.repository}/manifests/"
                            f"{entry.tag}", headers={"Accept": entry.media_type})
        assert pushed.headers["Docker-Content-Digest"] == entry.digest


def foreign_image() -> Image:
    """A Docker image: one ordinary layer, then a foreign layer with ``urls``."""
    base = make_image([make_layer({"app.txt": b"ordinary"}),
                       make_layer({"os.txt": b"foreign base" * 5000})], docker=True)
    doc = json.loads(base.manifest_bytes)
    doc["layers"][1]["mediaType"] = FOREIGN
    doc["layers"][1]["urls"] = ["https://example.invalid/layer.tar.gz"]
    data = json.dumps(doc, indent=3).encode()
    return Image(data, DOCKER_MANIFEST, sha256_digest(data), len(data), base.config,
                 base.layers, base.platform)


def test_list_counts_only_the_bytes_the_bundle_holds(registry_factory,
                                                     tmp_path: Path) -> None:
    source = registry_factory(extra_config=ALLOW_URLS)
    image = foreign_image()
    push(source, "win/app", image, tag="1", skip_blobs={image.layers[1].digest})
    bundle = tmp_path / "bundle"
    export_bundle([f"{source.host}/win/app:1"], bundle,
                  options=TransportOptions(retries=1, retry_delay_s=0.01))
    held = sum(p.stat().st_size for p in (bundle / "blobs/sha256").iterdir())
    assert held == image.size + image.config.size + image.layers[0].size
    listed = CliRunner().invoke(main, ["list", str(bundle), "--json"])
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert (doc["uniqueBytes"], doc["totalBytes"], doc["images"][0]["size"]) == (
        held, held, held)
    assert doc["blobs"] == 3  # manifest, config, the ordinary layer


def test_an_artifact_entry_carries_its_artifact_type(seeded_registry: Seeded,
                                                     tmp_path: Path) -> None:
    _, seeded = seeded_registry
    web = seeded.get("apps/web", "1.0")
    signature = next(e for e in seeded.entries if e.tag and e.tag.endswith(".sig"))
    for output in (tmp_path / "bundle", tmp_path / "bundle.tar"):
        export_bundle([web.reference, signature.reference], output)
    index = json.loads((tmp_path / "bundle/index.json").read_bytes())
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert by_digest[signature.digest]["artifactType"] == \
        "application/vnd.dev.bundler.signature.v1"
    assert "artifactType" not in by_digest[web.digest]
    with tarfile.open(tmp_path / "bundle.tar") as archive:
        member = archive.extractfile("index.json")
        assert member is not None
        in_archive = json.loads(member.read())
    assert in_archive["manifests"] == index["manifests"]


def test_an_archive_export_clears_what_a_killed_one_left(seeded_registry: Seeded,
                                                          tmp_path: Path) -> None:
    """SIGKILL leaves a temp archive, temp volumes and a spool beside the output; the next
    export of that output (holding its lock, so no other can be running) removes them, and
    leaves another bundle's alone."""
    import tempfile

    _, seeded = seeded_registry
    output = tmp_path / "k.tar"
    fd, temp = tempfile.mkstemp(prefix=".k.tar.", suffix=".partial", dir=tmp_path)
    os.write(fd, b"half an archive")
    os.close(fd)
    volume = tmp_path / ".k.tar.001.partial"
    volume.write_bytes(b"half a volume")
    spool = Path(tempfile.mkdtemp(prefix=".k.tar.spool-", dir=tmp_path))
    (spool / "blob").write_bytes(b"spooled")
    other = tmp_path / ".k.tar.zst.000.partial"  # another bundle's (k.tar.zst) volume
    other.write_bytes(b"not ours")
    export_bundle([seeded.get("base/os", "1").reference], output)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".k.tar.zst.000.partial", "k.tar", "k.tar.receipt.json"]
    assert not Path(temp).exists() and not volume.exists() and not spool.exists()
