"""Real clients pull every image of the seeded (demo) set from ``bundler serve`` with every
digest equal: containerd's ``ctr`` (a containerd started here), buildah, crane and oras
(built by ``scripts/build-tools.sh``), and the OCI distribution-spec conformance suite in
read-only mode. skopeo has its own test in ``test_serve.py``.

Each test skips, saying why, only when its program is not installed or could not be
built; ``scripts/setup.sh`` installs or builds all of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Served, start_serve

from bundler.sandbox import SeededSet

TOOLS = Path(__file__).resolve().parent.parent / ".tools" / "bin"


def tool(name: str) -> str:
    """The path of a program (``.tools/bin`` first), or skip the test."""
    built = TOOLS / name
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed and could not be built: run scripts/setup.sh")
    return found


@pytest.fixture(scope="module")
def seeded(seeded_registry: tuple[object, SeededSet]) -> SeededSet:
    return seeded_registry[1]


@pytest.fixture(scope="module")
def served(seeded_bundles: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server = start_serve([str(seeded_bundles["tar"]), "-q"], tmp_path_factory.mktemp("serve"))
    try:
        yield server
    finally:
        server.stop()


def ref(served: Served, entry: object) -> str:
    tag = entry.tag  # type: ignore[attr-defined]
    repo = entry.repository  # type: ignore[attr-defined]
    return f"{served.host}/{repo}:{tag}" if tag else f"{served.host}/{repo}@{entry.digest}"  # type: ignore[attr-defined]


def every_digest(seeded: SeededSet) -> dict[str, int]:
    """Digest -> size of every manifest and blob of the set."""
    out = dict(seeded.blobs)
    for entry in seeded.entries:
        out.update({d: len(data) for d, data in entry.manifests.items()})
    return out


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A containerd of its own (root, state and socket in a temp dir); its socket."""
    binary = tool("containerd")
    tool("ctr")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    root = tmp_path_factory.mktemp("containerd")
    socket = root / "containerd.sock"
    config = root / "config.toml"
    config.write_text(f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
                      'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                      f'[grpc]\n  address = "{socket}"\n')
    with open(root / "log", "wb") as log:
        process = subprocess.Popen([binary, "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            assert process.poll() is None, (root / "log").read_text()
            assert time.monotonic() < deadline, "containerd did not start"
            time.sleep(0.1)
        yield str(socket)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_ctr_fetches_every_image_with_every_digest(containerd: str, served: Served,
                                                  seeded: SeededSet) -> None:
    ctr = [tool("ctr"), "--address", containerd]
    for entry in seeded.entries:
        subprocess.run([*ctr, "content", "fetch", "--plain-http", "--all-platforms",
                        ref(served, entry)], check=True, capture_output=True, timeout=120)
    listing = subprocess.run([*ctr, "content", "ls", "-q"], check=True, capture_output=True,
                             text=True, timeout=60).stdout
    # containerd checks each digest and size as it writes the content
    assert set(listing.split()) == set(every_digest(seeded))
    # an image pulled and named by containerd keeps its digest
    web = seeded.get("apps/web", "1.0")
    subprocess.run([*ctr, "images", "pull", "--plain-http", ref(served, web)], check=True,
                   capture_output=True, timeout=120)
    images = subprocess.run([*ctr, "images", "ls"], check=True, capture_output=True,
                            text=True, timeout=60).stdout
    assert f"{ref(served, web)} {web.media_type} {web.digest}" in re.sub(r" +", " ", images)


def test_buildah_pulls_every_image(served: Served, seeded: SeededSet, tmp_path: Path) -> None:
    buildah = [tool("buildah"), "--storage-driver", "vfs", "--root", str(tmp_path / "root"),
               "--runroot", str(tmp_path / "run")]
    # the signature is an artifact, not an image: buildah refuses it from any registry
    images = [e for e in seeded.entries if not (e.tag or "").endswith(".sig")]
    for entry in images:
        subprocess.run([*buildah, "pull", "-q", "--tls-verify=false",
                        f"docker://{ref(served, entry)}"], check=True, capture_output=True,
                       timeout=120)
    listing = subprocess.run([*buildah, "images", "--format", "{{.Digest}}"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    assert set(listing.split()) == {e.digest for e in images}


def test_crane_pulls_every_image(served: Served, seeded: SeededSet, tmp_path: Path) -> None:
    crane = tool("crane")
    for entry in seeded.entries:
        out = tmp_path / "layout"
        subprocess.run([crane, "pull", "--insecure", "--format", "oci", ref(served, entry),
                        str(out)], check=True, capture_output=True, timeout=120)
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][0]["digest"] == entry.digest, entry.reference
        digest = subprocess.run([crane, "digest", "--insecure", ref(served, entry)], check=True,
                                capture_output=True, text=True, timeout=60).stdout.strip()
        assert digest == entry.digest
        shutil.rmtree(out)


def test_oras_copies_every_image_and_discovers_referrers(served: Served, seeded: SeededSet,
                                                         tmp_path: Path) -> None:
    oras = tool("oras")
    for number, entry in enumerate(seeded.entries):
        out = tmp_path / f"layout-{number}"
        subprocess.run([oras, "cp", "-r", "--from-plain-http", ref(served, entry),
                        "--to-oci-layout", f"{out}:x"], check=True, capture_output=True,
                       timeout=120)
        index = json.loads((out / "index.json").read_text())
        assert index["manifests"][-1]["digest"] == entry.digest or entry.digest in {
            m["digest"] for m in index["manifests"]}
        assert [m for m in index["manifests"] if m.get("annotations", {}).get(
            "org.opencontainers.image.ref.name") == "x"][0]["digest"] == entry.digest
    web = seeded.get("apps/web", "1.0")
    sig = next(e for e in seeded.entries if (e.tag or "").endswith(".sig"))
    found = json.loads(subprocess.run(
        [oras, "discover", "--plain-http", "--format", "json", ref(served, web)], check=True,
        capture_output=True, text=True, timeout=60).stdout)
    assert [(r["digest"], r["artifactType"]) for r in found["referrers"]] == [
        (sig.digest, "application/vnd.dev.bundler.signature.v1")]


def test_oci_conformance_suite_read_only(served: Served, seeded: SeededSet,
                                         tmp_path: Path) -> None:
    suite = tool("oci-conformance.test")
    web = seeded.get("apps/web", "1.0")
    blocker = tmp_path / "results"
    blocker.write_text("")
    env = {**os.environ,
           "OCI_REGISTRY": served.host, "OCI_TLS": "disabled",
           "OCI_REPO1": "apps/web", "OCI_REPO2": "apps/api",
           "OCI_API_PUSH": "false", "OCI_API_BLOBS_DELETE": "false",
           "OCI_API_MANIFESTS_DELETE": "false", "OCI_API_TAGS_DELETE": "false",
           "OCI_RO_DATA_TAGS": "1.0 latest", "OCI_RO_DATA_MANIFESTS": web.digest,
           "OCI_RO_DATA_BLOBS": " ".join(b.digest for b in web.item.blobs),
           "OCI_RO_DATA_REFERRERS": web.digest,
           # this version of the suite panics writing results.yaml for read-only data
           # (a data entry it never filled in): a results "directory" it cannot create
           # makes it stop after printing the results, which are what is checked here
           "OCI_RESULTS_DIR": str(blocker / "dir")}
    result = subprocess.run([suite, "-test.v"], env=env, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    results = {}
    for line in result.stdout.split("Configuration:")[0].splitlines():
        name, colon, status = line.strip().rpartition(": ")
        if colon and name.startswith("OCI Conformance Test"):
            results.setdefault(name, set()).add(status)
    assert results["OCI Conformance Test"] == {"Pass"}, result.stdout
    assert {n for n, s in results.items() if s - {"Pass", "Disabled"}} == set()
    for name in ("ping", "read-only/pull/manifest-by-tag", "read-only/pull/manifest-by-digest",
                 "read-only/pull/blob-get", "read-only/head/manifest-head-by-tag",
                 "read-only/head/manifest-head-by-digest", "read-only/head/blob-head",
                 "read-only/tag-list", "read-only/referrers", "missing-manifest/by-digest",
                 "missing-manifest/by-tag", "invalid-digest-format/manifest-get",
                 "empty/tag list", "empty/referrers"):
        assert results[f"OCI Conformance Test/{name}"] == {"Pass"}, name
    assert httpx.get(f"{served.url}/v2/").status_code == 200
