"""End-to-end tests of ``bundler mirror`` (registry to registry) on real registries.

The seeded set (a session registry, read-only) is the source; each test mirrors into
its own destination registry, often through FaultProxy instances that count the
requests on either side and inject faults.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler import mirror
from bundler.cli import main
from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet, seed_standard_set

Seeded = tuple[LocalRegistry, SeededSet]
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(url: str, repository: str, identifier: str) -> tuple[int, bytes, str]:
    """(status, bytes, Content-Type) of GET manifest at a registry's base URL."""
    with httpx.Client(timeout=10) as http:
        r = http.get(f"{url}/v2/{repository}/manifests/{identifier}", headers={"Accept": ACCEPT})
        return r.status_code, r.content, r.headers.get("Content-Type", "")


def get_blob(url: str, repository: str, digest: str) -> bytes:
    with httpx.Client(timeout=10) as http:
        r = http.get(f"{url}/v2/{repository}/blobs/{digest}", follow_redirects=True)
        assert r.status_code == 200, (repository, digest, r.status_code)
        return r.content


def identifier(entry: object) -> str:
    return entry.tag or entry.digest  # type: ignore[attr-defined]


def assert_mirrored(seeded: SeededSet, dest_url: str, prefix: str) -> None:
    """Every manifest of the seeded set (children included) is at the destination byte
    for byte under PREFIX/REPOSITORY, with its media type, and every blob reads back with
    its digest."""
    for entry in seeded.entries:
        repo = f"{prefix}/{entry.repository}" if prefix else entry.repository
        status, raw, media_type = get_manifest(dest_url, repo, identifier(entry))
        assert status == 200, (repo, identifier(entry))
        assert sha(raw) == entry.digest and raw == entry.manifest_bytes
        assert media_type == entry.media_type
        for digest, data in entry.manifests.items():
            assert get_manifest(dest_url, repo, digest)[1] == data
        for digest in entry.blob_sizes:
            assert sha(get_blob(dest_url, repo, digest)) == digest


# -- the library ---------------------------------------------------------------------------
def test_mirror_of_the_seeded_set_keeps_every_digest(
    seeded_registry: Seeded, registry: LocalRegistry
) -> None:
    seeded = seeded_registry[1]
    result = mirror(seeded.references, to=f"{registry.host}/mirror", jobs=4)
    assert [t.name for t in result.targets] == seeded.references
    assert result.skipped_images == []
    assert_mirrored(seeded, registry.url, "mirror")
    # each distinct blob uploaded once (to the first repository needing it), mounted
    # into every other repository of the destination that needs it
    repos: dict[str, set[str]] = {}
    for entry in seeded.entries:
        for digest in entry.blob_sizes:
            repos.setdefault(digest, set()).add(entry.repository)
    assert result.blobs_uploaded == len(repos)
    assert result.bytes_uploaded == seeded.unique_bytes
    assert result.blobs_mounted == sum(len(r) - 1 for r in repos.values())


# -- helpers for the command line ------------------------------------------------------------
def run_mirror(*args: str) -> Result:
    """``bundler mirror ARGS`` in-process (progress off unless asked)."""
    extra = [] if any(a.startswith("--progress") or a == "-q" for a in args) else ["-q"]
    return CliRunner().invoke(main, ["mirror", *args, *extra], catch_exceptions=False)


SUMMARY_RE = re.compile(
    r"mirrored (\d+) images? \((\d+) already there\); blobs copied (\d+) \(([^)]*)\), "
    r"mounted (\d+), already present (\d+); \d+\.\d s, \d+\.\d MB/s"
)


def summary(result: Result) -> tuple[int, int, int, int, int]:
    """(images, already there, copied, mounted, present) of the summary line."""
    match = SUMMARY_RE.fullmatch(result.stdout.splitlines()[0])
    assert match, result.stdout + result.stderr
    g = match.groups()
    return int(g[0]), int(g[1]), int(g[2]), int(g[4]), int(g[5])


def proxied(seeded: SeededSet, host: str) -> list[str]:
    """The seeded references with their registry host replaced by ``host``."""
    return [r.replace(seeded.host, host, 1) for r in seeded.references]


def images_file(path: Path, references: list[str]) -> str:
    path.write_text("# the seeded set\n" + "\n".join(references) + "\n")
    return str(path)


def blob_gets(proxy: FaultProxy) -> list[str]:
    """Paths of the blob GETs the proxy saw."""
    return [p for m, p, _, _ in proxy.requests if m == "GET" and "/blobs/sha256:" in p]


def writes(proxy: FaultProxy) -> list[tuple[str, str, int]]:
    """(method, path, status) of the requests that write (POST, PUT, PATCH, DELETE)."""
    return [(m, p, s) for m, p, s, _ in proxy.requests if m in ("POST", "PUT", "PATCH", "DELETE")]


@pytest.fixture
def source(seeded_registry: Seeded, fault_proxy) -> tuple[SeededSet, FaultProxy]:  # type: ignore[no-untyped-def]
    """The seeded set behind a counting proxy (the set itself stays read-only)."""
    reg, seeded = seeded_registry
    return seeded, fault_proxy(reg.url)


# -- the command ----------------------------------------------------------------------------
def test_cli_mirror_then_a_no_op_rerun_moves_no_blob_bytes(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy, tmp_path: Path
) -> None:
    seeded, src = source
    dest = fault_proxy(registry.url)
    refs = proxied(seeded, src.host)
    listed = images_file(tmp_path / "images.txt", refs)
    first = run_mirror("-f", listed, "--to", f"{dest.host}/mirror")
    assert first.exit_code == 0, first.stderr
    n = len(seeded.entries)
    images, there, copied, mounted, _ = summary(first)
    assert (images, there, copied) == (n, 0, seeded.unique_blob_count)
    assert first.stdout.splitlines()[1:] == [
        f"  {r} -> {dest.host}/mirror/{r.split('/', 1)[1]}" + ("" if "@" in r else
                                                                f"@{e.digest}")
        for r, e in zip(refs, seeded.entries, strict=True)]
    # each distinct blob left the source once
    assert sorted(p.rsplit("/", 1)[1] for p in blob_gets(src)) == sorted(seeded.blobs)
    assert_mirrored(seeded, registry.url, "mirror")

    src.requests.clear()
    dest.requests.clear()
    again = run_mirror("-f", listed, "--to", f"{dest.host}/mirror")
    assert again.exit_code == 0, again.stderr
    assert summary(again) == (n, n, 0, 0, 0)
    assert blob_gets(src) == []  # no blob bytes read at the source...
    assert [r for r in src.requests if "/blobs/" in r[1]] == []
    assert writes(dest) == []  # ...and nothing written at the destination
    assert_mirrored(seeded, registry.url, "mirror")


def test_mapping_into_two_repositories_pulls_a_shared_blob_once_and_mounts_it(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, tmp_path: Path
) -> None:
    """base/os:1 and apps/web:1.0 share two layers; mapped into two repositories of one
    destination, each shared layer is read from the source once, uploaded into the first
    repository and mounted into the second (in the registry's own access log)."""
    seeded, src = source
    os1, web = seeded.get("base/os", "1"), seeded.get("apps/web", "1.0")
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{src.host}/base/os:1={registry.host}/team-a/os:1\n"
                       f"{src.host}/apps/web:1.0={registry.host}/team-b/web\n")
    mark = registry.mark()
    result = run_mirror("--mapping", str(mapping), "--no-referrers")  # web's signature aside
    assert result.exit_code == 0, result.stderr
    shared = set(os1.blob_sizes) & set(web.blob_sizes)
    assert len(shared) == 2
    gets = [p.rsplit("/", 1)[1] for p in blob_gets(src)]
    assert sorted(gets) == sorted(set(os1.blob_sizes) | set(web.blob_sizes))  # once each
    access = registry.access_log(mark)
    mounts = sorted(uri for method, uri, status in access
                    if method == "POST" and "mount=" in uri and status == 201)
    assert mounts == sorted(
        f"/v2/team-b/web/blobs/uploads/?mount={d.replace(':', '%3A')}&from=team-a%2Fos"
        for d in shared)
    assert get_manifest(registry.url, "team-a/os", "1")[1] == os1.manifest_bytes
    assert get_manifest(registry.url, "team-b/web", "1.0")[1] == web.manifest_bytes
    for digest in web.blob_sizes:
        assert sha(get_blob(registry.url, "team-b/web", digest)) == digest


def test_mirror_through_faults_ends_exact(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy
) -> None:
    """A blob download cut half-way (resumed with Range), a 429 with Retry-After on a
    blob GET at the source, a 503 on a blob upload PUT and one on a manifest PUT at the
    destination: the mirror ends with every digest exact."""
    seeded, src = source
    dest = fault_proxy(registry.url)
    big = seeded.get("multi/arch", "1")
    arm = max(big.blob_sizes, key=big.blob_sizes.__getitem__)  # 192 KiB
    src.drop_after(rf"/blobs/{arm}$", 50_000)
    api = seeded.get("apps/api", "1.0")
    api_layer = json.loads(api.manifest_bytes)["layers"][-1]["digest"]
    src.status(rf"/blobs/{api_layer}$", 429, {"Retry-After": "1"}, method="GET")
    web = seeded.get("apps/web", "1.0")
    web_layer = json.loads(web.manifest_bytes)["layers"][-1]["digest"].split(":")[1]
    dest.status(rf"/blobs/uploads/.+digest=sha256(%3A|:){web_layer}", 503, method="PUT")
    dest.status(r"/manifests/1\.0$", 503, method="PUT")
    result = run_mirror(*proxied(seeded, src.host), "--to", f"{dest.host}/m",
                        "--retry-delay", "0.1")
    assert result.exit_code == 0, result.stderr
    assert [r.times for r in src.rules + dest.rules] == [0, 0, 0, 0]  # every fault fired
    ranged = [h for m, p, h in src.headers if m == "GET" and p.endswith(arm)]
    assert len(ranged) == 2 and ranged[1].get("Range") == "bytes=50000-"
    # the upload refused once is sent again, read again from the source
    assert len([p for p in blob_gets(src) if p.endswith(web_layer)]) == 2
    assert_mirrored(seeded, registry.url, "m")


def test_sigkill_mid_mirror_then_a_rerun_finishes(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy,
    tmp_path: Path
) -> None:
    seeded, src = source
    dest = fault_proxy(registry.url)
    src.slow(r"/blobs/sha256:", 100_000, method="GET")  # ~7 s for the set's blobs
    refs = proxied(seeded, src.host)
    args = [sys.executable, "-m", "bundler", "mirror", *refs, "--to", f"{dest.host}/m",
            "-q", "--jobs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and len(
                [w for w in writes(dest) if w[0] == "PUT" and w[2] == 201]) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    landed = [p for m, p, s in writes(dest) if m == "PUT" and s == 201 and "/blobs/" in p]
    assert 2 <= len(landed) < seeded.unique_blob_count
    src.clear_rules()
    dest.requests.clear()
    again = run_mirror(*refs, "--to", f"{dest.host}/m")
    assert again.exit_code == 0, again.stderr
    images, there, copied, mounted, present = summary(again)
    assert images == len(seeded.entries) and copied < seeded.unique_blob_count
    assert present >= len(landed)
    assert_mirrored(seeded, registry.url, "m")


def test_dry_run_reads_manifests_and_moves_nothing(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy
) -> None:
    seeded, src = source
    dest = fault_proxy(registry.url)
    refs = proxied(seeded, src.host)
    plan = run_mirror(*refs, "--to", f"{dest.host}/m", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["dryRun"] == "mirror"
    assert [i["reference"] for i in doc["images"]] == refs
    assert [i["digest"] for i in doc["images"]] == [e.digest for e in seeded.entries]
    assert not any(i["present"] for i in doc["images"])
    assert (doc["blobs"], doc["blobBytes"]) == (seeded.unique_blob_count, seeded.unique_bytes)
    assert (doc["toCopy"], doc["copyBytes"]) == (seeded.unique_blob_count, seeded.unique_bytes)
    assert blob_gets(src) == [] and writes(dest) == []
    text = run_mirror(*refs[:1], "--to", f"{dest.host}/m", "--dry-run")
    assert text.exit_code == 0, text.stderr
    assert text.stdout.splitlines()[0] == "dry run: would mirror 1 image"
    assert writes(dest) == []


def test_keep_going_mirrors_the_others_and_names_the_missing_one(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry
) -> None:
    seeded, src = source
    refs = proxied(seeded, src.host)[:2]
    missing = f"{src.host}/base/os:404"
    result = run_mirror(refs[0], missing, refs[1], "--to", f"{registry.host}/m",
                        "--keep-going")
    assert result.exit_code == 1
    assert f"error: {missing}: " in result.stderr
    assert "failed: 1 of 3 images" in result.stderr
    assert summary(result)[:3] == (2, 0, len(set(seeded.entries[0].blob_sizes)
                                         | set(seeded.entries[1].blob_sizes)))
    for entry in seeded.entries[:2]:
        assert get_manifest(registry.url, f"m/{entry.repository}", entry.tag)[1] \
            == entry.manifest_bytes


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE"),
    (["--to", "{dest}/m"], "no images to mirror: give references, --images-file or --mapping"),
    (["{src}/base/os:1", "--to", "{dest}/m", "--mapping", "{mapping}"],
     "give exactly one of --to"),
    (["{src}/Base/OS:1", "--to", "{dest}/m"], "repository name must be lowercase"),
    (["{src}/base/os:1", "--to", "{src}"], "is its own source; mirror into another "
                                           "registry or repository"),
    (["{src}/base/os:1", "--to", "http://{dest}"], "expected REGISTRY[/PREFIX] without a "
                                                   "scheme"),
    (["{src}/base/os:1", "{src}/base/os:2", "--mapping", "{mapping}"],
     "no mapping line names {src}/base/os:2"),
    (["--mapping", "{digest_mapping}"], "is a bare digest; a mirror reads from registries"),
])
def test_usage_errors_exit_2_before_any_request(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy,
    tmp_path: Path, args: list[str], message: str
) -> None:
    _, src = source
    dest = fault_proxy(registry.url)
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{src.host}/base/os:1={dest.host}/m/os:1\n")
    digest_mapping = tmp_path / "digests.txt"
    digest_mapping.write_text(f"sha256:{'0' * 64}={dest.host}/m/os:1\n")
    values = {"src": src.host, "dest": dest.host, "mapping": str(mapping),
              "digest_mapping": str(digest_mapping)}
    result = run_mirror(*[a.format(**values) for a in args])
    assert result.exit_code == 2, result.output
    assert message.format(**values) in result.stderr
    assert "Traceback" not in result.stderr
    assert src.requests == [] and dest.requests == []


def test_a_mapping_onto_its_own_source_is_refused(
    source: tuple[SeededSet, FaultProxy], tmp_path: Path
) -> None:
    _, src = source
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{src.host}/base/os:1={src.host}/base/os\n")
    result = run_mirror("--mapping", str(mapping))
    assert result.exit_code == 2
    assert f"the destination of {src.host}/base/os:1 is its own source" in result.stderr
    assert src.requests == []


def test_sigterm_stops_cleanly_with_143_and_a_rerun_finishes(
    source: tuple[SeededSet, FaultProxy], registry: LocalRegistry, fault_proxy
) -> None:
    seeded, src = source
    dest = fault_proxy(registry.url)
    src.slow(r"/blobs/sha256:", 100_000, method="GET")
    refs = proxied(seeded, src.host)
    args = [sys.executable, "-m", "bundler", "mirror", *refs, "--to", f"{dest.host}/m",
            "-q", "--jobs", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not [
                w for w in writes(dest) if w[0] == "PUT" and w[2] == 201]:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr.decode()
    assert re.search(r"^interrupted: (1 finished blob \(.*\) is|\d+ finished blobs \(.*\) are) in the "
                     r"registry; run the "
                     r"same command again to continue$", stderr.decode(), re.M), stderr
    assert "Traceback" not in stderr.decode()
    src.clear_rules()
    again = run_mirror(*refs, "--to", f"{dest.host}/m")
    assert again.exit_code == 0, again.stderr
    assert_mirrored(seeded, registry.url, "m")


def test_each_side_gets_its_own_credentials(registry_factory, tmp_path: Path) -> None:
    """Source and destination require different users: --src-creds go only to the
    source, --dest-creds only to the destination (a swap fails with 401, exit 1)."""
    src = registry_factory(htpasswd=("reader", "src-pass"))
    dest = registry_factory(htpasswd=("writer", "dest-pass"))
    seeded = seed_standard_set(src)
    ref = seeded.get("base/os", "1")
    wrong = run_mirror(ref.reference, "--to", f"{dest.host}/m", "--src-creds",
                       "writer:dest-pass", "--dest-creds", "reader:src-pass", "--retries", "0")
    assert wrong.exit_code == 1
    assert f"{src.host} answered HTTP 401" in wrong.stderr
    result = run_mirror(ref.reference, "--to", f"{dest.host}/m", "--src-creds",
                        "reader:src-pass", "--dest-creds", "writer:dest-pass")
    assert result.exit_code == 0, result.stderr
    with dest.client() as http:
        got = http.get(f"{dest.url}/v2/m/base/os/manifests/1", headers={"Accept": ACCEPT})
    assert got.status_code == 200 and got.content == ref.manifest_bytes


def test_mirror_within_one_registry_mounts_instead_of_copying_bytes(
        registry: LocalRegistry, tmp_path: Path) -> None:
    """Source and destination in one registry: every blob is mounted from the source
    repository (201 in the registry's own log); no blob byte is read or uploaded."""
    seeded = seed_standard_set(registry)
    os1 = seeded.get("base/os", "1")
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"{registry.host}/base/os:1={registry.host}/copy/os:1\n")
    mark = registry.mark()
    result = run_mirror("--mapping", str(mapping))
    assert result.exit_code == 0, result.stderr
    access = registry.access_log(mark)
    mounts = sorted(uri for method, uri, status in access
                    if method == "POST" and "mount=" in uri and status == 201)
    assert mounts == sorted(
        f"/v2/copy/os/blobs/uploads/?mount={d.replace(':', '%3A')}&from=base%2Fos"
        for d in os1.blob_sizes)
    assert [uri for method, uri, _ in access if method == "GET" and "/blobs/" in uri] == []
    assert [uri for method, uri, _ in access if method in ("PATCH", "PUT")
            and "/blobs/" in uri] == []
    assert get_manifest(registry.url, "copy/os", "1")[1] == os1.manifest_bytes
