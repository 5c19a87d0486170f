"""End-to-end tests of ``bundler import`` against real local registries.

One bundle of the seeded set is exported once per module; each test imports it (or a
part of it, with ``--mapping``) into its own destination registry, sometimes through a
FaultProxy that records every request in the order the client could see the answers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from bundler.cli.main import human, main
from bundler.oci.reference import Reference
from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet, TokenServer, start_registry
from bundler.sandbox.images import Index

Seeded = tuple[LocalRegistry, SeededSet]
ACCEPT = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
SUMMARY_RE = re.compile(
    r"imported (\d+) images? \((\d+) already there\); blobs uploaded (\d+) \(([^)]*)\), "
    r"mounted (\d+), already present (\d+); \d+\.\d s, \d+\.\d MB/s"
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run_import(*args: str) -> Result:
    """``bundler import ARGS -q`` in-process."""
    return CliRunner().invoke(main, ["import", *args, "-q"], catch_exceptions=False)


def summary(result: Result) -> tuple[int, int, int, str, int, int]:
    """(images, already there, uploaded, bytes, mounted, present) of the summary line."""
    match = SUMMARY_RE.fullmatch(result.stdout.splitlines()[0])
    assert match, result.stdout
    g = match.groups()
    assert (" image " in match.group(0)) == (g[0] == "1"), result.stdout
    return int(g[0]), int(g[1]), int(g[2]), g[3], int(g[4]), int(g[5])


def skopeo_raw(reference: str, *extra: str) -> bytes:
    """``skopeo inspect --raw`` bytes of a destination reference."""
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", *(extra or ("--tls-verify=false",)),
         f"docker://{reference}"],
        capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def skopeo_missing(reference: str) -> str:
    """stderr of a ``skopeo inspect`` that must fail."""
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True, timeout=60,
    )
    assert proc.returncode != 0
    return proc.stderr.decode()


def manifest_status(reg: LocalRegistry, repository: str, identifier: str) -> int:
    with httpx.Client(timeout=10) as http:
        return http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                         headers={"Accept": ACCEPT}).status_code


def write_mapping(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def uploads(requests: list[tuple[str, str, int, int]] | list[tuple[str, str, int]],
            ) -> list[tuple[str, str, int]]:
    """(method, uri, status) of the requests that write blobs (POST/PUT/PATCH uploads)."""
    return [(r[0], r[1], r[2]) for r in requests
            if r[0] in ("POST", "PUT", "PATCH") and "/blobs/uploads/" in r[1]]


def blob_repositories(seeded: SeededSet, prefix: str) -> dict[str, list[str]]:
    """Digest -> destination repositories needing it, in bundle order."""
    out: dict[str, list[str]] = {}
    for entry in seeded.entries:
        for digest in entry.blob_sizes:
            repos = out.setdefault(digest, [])
            if f"{prefix}/{entry.repository}" not in repos:
                repos.append(f"{prefix}/{entry.repository}")
    return out


def destination(seeded: SeededSet, host: str, prefix: str, entry: Any) -> str:
    base = f"{host}/{prefix}/{entry.repository}"
    return f"{base}:{entry.tag}" if entry.tag else f"{base}@{entry.digest}"


def first_layer(entry: Any) -> str:
    """Digest of an image's first layer (for base/os, apps/*: the shared "common")."""
    return json.loads(entry.manifest_bytes)["layers"][0]["digest"]


def export(seeded: SeededSet, out: Path) -> Path:
    from bundler.bundle import export_bundle

    export_bundle([Reference.parse(r) for r in seeded.references], out)
    return out


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(seeded_registry: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole seeded set exported once. Read-only: copy it before changing it."""
    return export(seeded_registry[1], tmp_path_factory.mktemp("import-bundle") / "bundle")


@dataclass
class Imported:
    """The whole bundle imported once with ``--to PROXY/mirror`` through a counting proxy."""

    registry: LocalRegistry
    proxy: FaultProxy
    seeded: SeededSet
    result: Result
    requests: list[tuple[str, str, int, int]]
    access: list[tuple[str, str, int]]


@pytest.fixture(scope="module")
def imported(seeded_registry: Seeded, bundle: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    reg = start_registry(tmp_path_factory.mktemp("import-dest"))
    proxy = FaultProxy(reg.url).start()
    try:
        mark = reg.mark()
        result = run_import(str(bundle), "--to", f"{proxy.host}/mirror")
        # the registry receipt's requests come last, after every tag
        requests = list(proxy.requests)
        first = next(n for n, r in enumerate(requests) if "/bundler-receipts/" in r[1])
        assert all("/bundler-receipts/" in r[1] or r[1] == "/v2/" for r in requests[first:])
        yield Imported(reg, proxy, seeded_registry[1], result, requests[:first],
                       [r for r in reg.access_log(mark) if "/bundler-receipts/" not in r[1]])
    finally:
        proxy.stop()
        reg.stop()


# -- the whole set -----------------------------------------------------------------------
def receipt_tag(bundle: Path) -> str:
    """The tag of a bundle's registry receipt: ``sha256-`` and the hex of its id."""
    return "sha256-" + hashlib.sha256((bundle / "index.json").read_bytes()).hexdigest()


def test_round_trip_of_the_seeded_set(imported: Imported, bundle: Path) -> None:
    seeded, reg = imported.seeded, imported.registry
    assert imported.result.exit_code == 0, imported.result.stderr
    repos = blob_repositories(seeded, "mirror")
    assert summary(imported.result) == (
        len(seeded.entries), 0, seeded.unique_blob_count, human(seeded.unique_bytes),
        sum(len(r) - 1 for r in repos.values()), 0,
    )
    assert imported.result.stdout.splitlines()[1:] == [
        f"  {e.reference} -> {imported.proxy.host}/mirror/{e.repository}"
        + (f":{e.tag}" if e.tag else "") + f"@{e.digest}"
        for e in seeded.entries
    ] + [f"receipt: {imported.proxy.host}/mirror/bundler-receipts:{receipt_tag(bundle)}"]
    for entry in seeded.entries:
        raw = skopeo_raw(destination(seeded, reg.host, "mirror", entry))
        assert raw == entry.manifest_bytes
        assert sha(raw) == entry.digest


def test_manifests_carry_their_media_type(imported: Imported) -> None:
    with httpx.Client(timeout=10) as http:
        for entry in imported.seeded.entries:
            ident = entry.tag or entry.digest
            response = http.get(f"{imported.registry.url}/v2/mirror/{entry.repository}"
                                f"/manifests/{ident}", headers={"Accept": ACCEPT})
            assert response.status_code == 200
            assert response.headers["Content-Type"] == entry.media_type
            assert response.headers["Docker-Content-Digest"] == entry.digest
            assert response.content == entry.manifest_bytes


def test_multi_arch_index_arrives_with_all_children(imported: Imported) -> None:
    entry = imported.seeded.get("multi/arch", "1")
    assert isinstance(entry.item, Index)
    assert len(entry.item.children) == 4
    with httpx.Client(timeout=10) as http:
        for child in entry.item.children:
            url = f"{imported.registry.url}/v2/mirror/multi/arch/manifests/{child.digest}"
            response = http.get(url, headers={"Accept": ACCEPT})
            assert response.status_code == 200
            assert response.content == child.manifest_bytes
            assert response.headers["Docker-Content-Digest"] == child.digest
            assert response.headers["Content-Type"] == child.media_type
            for blob in child.blobs:
                head = http.head(f"{imported.registry.url}/v2/mirror/multi/arch/blobs/{blob.digest}")
                assert (head.status_code, head.headers["Docker-Content-Digest"],
                        int(head.headers["Content-Length"])) == (200, blob.digest, blob.size)


def test_digest_only_image_is_pushed_by_digest(imported: Imported) -> None:
    entry = imported.seeded.get("apps/pinned")
    assert entry.tag is None
    puts = [(m, u) for m, u, _, _ in imported.requests
            if m == "PUT" and u.startswith("/v2/mirror/apps/pinned/manifests/")]
    assert puts == [("PUT", f"/v2/mirror/apps/pinned/manifests/{entry.digest}")]
    with httpx.Client(timeout=10) as http:
        tags = http.get(f"{imported.registry.url}/v2/mirror/apps/pinned/tags/list")
    assert tags.status_code == 404  # no tag at all: distribution knows no tag directory
    assert [e["code"] for e in tags.json()["errors"]] == ["NAME_UNKNOWN"]


def test_blobs_before_manifests_children_before_index_tag_last(imported: Imported) -> None:
    """Order as the proxy saw the answers: a manifest PUT only after every blob of it
    arrived (upload PUT 201 or mount 201) in its repository; an index after its children."""
    done_at: dict[tuple[str, str], int] = {}
    manifest_at: dict[tuple[str, str], int] = {}
    for position, (method, uri, status, _) in enumerate(imported.requests):
        path, _, query = uri.partition("?")
        params = httpx.QueryParams(query)
        repo = re.match(r"/v2/(.+?)/(blobs|manifests)/", path)
        if repo is None:
            continue
        if method == "PUT" and "/blobs/uploads/" in path and status == 201:
            done_at[(repo.group(1), params["digest"])] = position
        elif method == "POST" and "mount" in params and status == 201:
            done_at[(repo.group(1), params["mount"])] = position
        elif method == "PUT" and "/manifests/" in path and status == 201:
            manifest_at[(repo.group(1), path.rsplit("/", 1)[1])] = position
    for entry in imported.seeded.entries:
        repo = f"mirror/{entry.repository}"
        top = manifest_at[(repo, entry.tag or entry.digest)]
        images = entry.item.children if isinstance(entry.item, Index) else [entry.item]
        for image in images:
            at = top if image is entry.item else manifest_at[(repo, image.digest)]
            assert at <= top
            for blob in image.blobs:
                assert done_at[(repo, blob.digest)] < at, (entry.reference, blob.digest)
        if isinstance(entry.item, Index):
            assert all(manifest_at[(repo, c.digest)] < top for c in entry.item.children)
    # exactly one manifest PUT per distinct (repository, tag or child digest)
    assert sorted(manifest_at) == sorted(
        {(f"mirror/{e.repository}", e.tag or e.digest) for e in imported.seeded.entries}
        | {("mirror/multi/arch", c.digest)
           for c in imported.seeded.get("multi/arch", "1").item.children}  # type: ignore[union-attr]
    )


def test_shared_layers_upload_once_and_mount_elsewhere(imported: Imported) -> None:
    """Each distinct blob is uploaded to the first repository needing it and mounted
    (POST ?mount=&from= answered 201, in the registry's own access log) everywhere else."""
    repos = blob_repositories(imported.seeded, "mirror")
    put = re.compile(r"^/v2/(.+)/blobs/uploads/[^?]+\?.*digest=([^&]+)")
    uploaded = sorted((m.group(1), m.group(2).replace("%3A", ":"))
                      for method, uri, status in imported.access
                      if method == "PUT" and status == 201 and (m := put.match(uri)))
    assert uploaded == sorted((r[0], d) for d, r in repos.items())
    mounts = sorted((uri, status) for method, uri, status in imported.access
                    if method == "POST" and "mount=" in uri)
    assert mounts == sorted(
        (f"/v2/{repo}/blobs/uploads/?mount={d.replace(':', '%3A')}"
         f"&from={r[0].replace('/', '%2F')}", 201)
        for d, r in repos.items() for repo in r[1:]
    )
    common = first_layer(imported.seeded.get("base/os", "1"))
    assert len(repos[common]) == 4  # base/os, apps/web, apps/api, multi/arch
    assert sum(1 for uri, _ in mounts if common.split(":")[1] in uri) == 3


def test_second_import_uploads_nothing(imported: Imported, bundle: Path) -> None:
    proxy, seeded = imported.proxy, imported.seeded
    start = len(proxy.requests)
    again = run_import(str(bundle), "--to", f"{proxy.host}/mirror")
    assert again.exit_code == 0, again.stderr
    assert summary(again) == (len(seeded.entries), len(seeded.entries), 0, "0 B", 0, 0)
    assert again.stdout.splitlines()[1:] == imported.result.stdout.splitlines()[1:-1] + [
        imported.result.stdout.splitlines()[-1] + " (there already)"]
    later = proxy.requests[start:]
    assert uploads(later) == []
    assert [r for r in later if r[0] in ("PUT", "PATCH", "POST", "DELETE")] == []
    for entry in seeded.entries:
        assert sha(skopeo_raw(destination(seeded, imported.registry.host, "mirror", entry))) \
            == entry.digest


# -- partial runs, mapping --------------------------------------------------------------
def test_rerun_after_partial_import_reuses_what_is_there(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    """After only base/os:1 arrived, the full import uploads none of its blobs again and
    mounts them into the other repositories from mirror/base/os."""
    seeded = seeded_registry[1]
    base1 = seeded.get("base/os", "1")
    first = run_import(str(bundle), "--mapping", write_mapping(
        tmp_path / "m.txt", [f"{base1.reference}={registry.host}/mirror/base/os"]))
    assert first.exit_code == 0, first.stderr
    assert summary(first) == (1, 0, 3, human(sum(base1.blob_sizes.values())), 0, 0)
    mark = registry.mark()
    second = run_import(str(bundle), "--to", f"{registry.host}/mirror")
    assert second.exit_code == 0, second.stderr
    images, there, uploaded, _, mounted, present = summary(second)
    assert (images, there) == (len(seeded.entries), 1)
    repos = blob_repositories(seeded, "mirror")
    shared_with_base1 = [d for d in base1.blob_sizes if d in repos]
    log = registry.access_log(mark)
    for digest in shared_with_base1:
        assert not [u for m, u, _ in log if m == "PUT" and digest.replace(":", "%3A") in u]
    common, os1 = (json.loads(base1.manifest_bytes)["layers"][i]["digest"] for i in (0, 1))
    for layer, into in ((common, ("mirror/apps/web", "mirror/apps/api", "mirror/multi/arch")),
                        (os1, ("mirror/apps/web", "mirror/apps/api"))):
        quoted = layer.replace(":", "%3A")
        assert sorted(u for m, u, s in log if m == "POST" and f"mount={quoted}&" in u
                      and s == 201) == sorted(
            f"/v2/{r}/blobs/uploads/?mount={quoted}&from=mirror%2Fbase%2Fos" for r in into)
    assert uploaded == seeded.unique_blob_count - 3
    assert present == 1  # common, seen by HEAD in mirror/base/os for base/os:2
    assert mounted == sum(len(r) - 1 for r in repos.values())
    for entry in seeded.entries:
        assert manifest_status(registry, f"mirror/{entry.repository}",
                               entry.tag or entry.digest) == 200


def test_mapping_limits_and_renames(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    seeded = seeded_registry[1]
    web, pinned = seeded.get("apps/web", "1.0"), seeded.get("apps/pinned")
    mapping = write_mapping(tmp_path / "mapping.txt", [
        "# disaster-recovery site",
        "",
        f"{web.reference}={registry.host}/prod/web:stable",
        f"{pinned.reference} = {registry.host}/prod/pinned   # by digest",
    ])
    result = run_import(str(bundle), "--mapping", mapping)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        f"  {web.reference} -> {registry.host}/prod/web:stable@{web.digest}",
        f"  {pinned.reference} -> {registry.host}/prod/pinned@{pinned.digest}",
        f"receipt: {registry.host}/bundler-receipts:{receipt_tag(bundle)}",
    ]
    with httpx.Client(timeout=10) as http:  # the receipt: the first destination's registry
        assert http.get(f"{registry.url}/v2/_catalog").json() == {
            "repositories": ["bundler-receipts", "prod/pinned", "prod/web"]}
        assert http.get(f"{registry.url}/v2/prod/web/tags/list").json() == {
            "name": "prod/web", "tags": ["stable"]}
    assert skopeo_raw(f"{registry.host}/prod/web:stable") == web.manifest_bytes
    assert skopeo_raw(f"{registry.host}/prod/pinned@{pinned.digest}") == pinned.manifest_bytes



def test_one_source_mapped_to_two_destinations(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    """An image already at one destination is still pushed to the other one."""
    base1 = seeded_registry[1].get("base/os", "1")
    one = write_mapping(tmp_path / "one.txt", [f"{base1.reference}={registry.host}/site-a/os"])
    assert run_import(str(bundle), "--mapping", one).exit_code == 0
    both = write_mapping(tmp_path / "both.txt", [
        f"{base1.reference}={registry.host}/site-a/os",
        f"{base1.reference}={registry.host}/site-b/os:v1",
    ])
    result = run_import(str(bundle), "--mapping", both)
    assert result.exit_code == 0, result.stderr
    assert summary(result) == (2, 1, 0, "0 B", 3, 0)  # mounted from site-a/os
    assert result.stdout.splitlines()[1:] == [
        f"  {base1.reference} -> {registry.host}/site-a/os:1@{base1.digest}",
        f"  {base1.reference} -> {registry.host}/site-b/os:v1@{base1.digest}",
        f"receipt: {registry.host}/bundler-receipts:{receipt_tag(bundle)} (there already)",
    ]
    assert skopeo_raw(f"{registry.host}/site-b/os:v1") == base1.manifest_bytes

def test_mapping_source_not_in_bundle(bundle: Path, registry: LocalRegistry,
                                      tmp_path: Path) -> None:
    mark = registry.mark()
    mapping = write_mapping(tmp_path / "m.txt", [f"docker.io/library/nginx:1.27={registry.host}/x"])
    result = run_import(str(bundle), "--mapping", mapping)
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "\n\nError: mapping source 'docker.io/library/nginx:1.27' is not in the bundle\n")
    assert result.stdout == ""
    assert registry.requests(mark) == []


@pytest.mark.parametrize("args", [["--to", "127.0.0.1:1/x", "--mapping", "m.txt"], []])
def test_to_and_mapping_are_exclusive_usage_errors(bundle: Path, args: list[str]) -> None:
    result = run_import(str(bundle), *args)
    assert result.exit_code == 2
    assert "Error: give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE" in result.stderr


@pytest.mark.parametrize("option, message", [
    (["--chunk-size", "lots"],
     "Invalid value for '--chunk-size': 'lots' is not a size like 64MiB or 4GiB"),
    (["--chunk-size", "0"],
     "Invalid value for '--chunk-size': '0' is too small: --chunk-size must be at least 1.0 KiB"),
    (["--chunk-size", "1023"], "Invalid value for '--chunk-size': '1023' is too small: "
                               "--chunk-size must be at least 1.0 KiB"),
    (["--dest-tls-verify", "maybe"], "Invalid value for '--dest-tls-verify': 'maybe': expected true or false"),
    (["--dest-creds", "nocolon"], "credentials must look like USER:PASSWORD"),
    (["--dest-cert-dir", "/nonexistent"],
     "Invalid value for '--dest-cert-dir': Directory '/nonexistent' does not exist."),
])
def test_bad_option_values_are_usage_errors(bundle: Path, option: list[str], message: str) -> None:
    result = run_import(str(bundle), "--to", "127.0.0.1:1/x", *option)
    assert result.exit_code == 2
    assert result.stderr.endswith(f"\n\nError: {message}\n"), result.stderr
    assert result.stdout == ""


# -- the push protocol -------------------------------------------------------------------
def _multi_arch_mapping(seeded: SeededSet, host: str, tmp_path: Path) -> str:
    multi = seeded.get("multi/arch", "1")
    return write_mapping(tmp_path / "m.txt", [f"{multi.reference}={host}/big/multi"])


def test_chunked_upload_of_blobs_larger_than_chunk_size(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    seeded = seeded_registry[1]
    multi = seeded.get("multi/arch", "1")
    chunk = 64 * 1024
    big = {d: s for d, s in multi.blob_sizes.items() if s > chunk}
    assert len(big) == 3
    mark = registry.mark()
    result = run_import(str(bundle), "--mapping", _multi_arch_mapping(seeded, registry.host, tmp_path),
                        "--chunk-size", "64KiB")
    assert result.exit_code == 0, result.stderr
    log = registry.access_log(mark)
    patches = [(u, s) for m, u, s in log if m == "PATCH"]
    assert len(patches) == sum(math.ceil(s / chunk) for s in big.values())
    assert all(s == 202 and u.startswith("/v2/big/multi/blobs/uploads/") for u, s in patches)
    finals = [u for m, u, s in log if m == "PUT" and "/blobs/uploads/" in u and s == 201
              and not u.startswith("/v2/bundler-receipts/")]  # the receipt's two blobs
    assert len(finals) == len(multi.blob_sizes)
    with httpx.Client(timeout=10) as http:
        for digest, size in big.items():
            body = http.get(f"{registry.url}/v2/big/multi/blobs/{digest}").content
            assert (len(body), sha(body)) == (size, digest)
    assert sha(skopeo_raw(f"{registry.host}/big/multi:1")) == multi.digest


def test_relative_location_through_fault_proxy(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    """Location answered as path + query (no scheme/host) for POST, PATCH and mount."""
    seeded = seeded_registry[1]
    proxy = fault_proxy(registry.url)
    proxy.relative_location()
    result = run_import(str(bundle), "--mapping",
                        _multi_arch_mapping(seeded, proxy.host, tmp_path), "--chunk-size", "64KiB")
    assert result.exit_code == 0, result.stderr
    multi = seeded.get("multi/arch", "1")
    assert proxy.count("PATCH", r"^/v2/big/multi/blobs/uploads/[^?]+\?_state=") == sum(
        math.ceil(s / 65536) for s in multi.blob_sizes.values() if s > 65536)
    assert proxy.count("PUT", r"^/v2/big/multi/blobs/uploads/[^?]+\?_state=.*&digest=sha256") == \
        len(multi.blob_sizes)
    for child in multi.item.children:  # type: ignore[union-attr]
        assert skopeo_raw(f"{registry.host}/big/multi@{child.digest}") == child.manifest_bytes
    assert skopeo_raw(f"{registry.host}/big/multi:1") == multi.manifest_bytes


def _two_repository_mapping(seeded: SeededSet, host: str, tmp_path: Path) -> str:
    """base/os:1 -> a/os, base/os:2 -> b/os: only the first layer ("common") is shared."""
    return write_mapping(tmp_path / "m.txt", [
        f"{seeded.get('base/os', '1').reference}={host}/a/os",
        f"{seeded.get('base/os', '2').reference}={host}/b/os",
    ])


def test_mount_answered_202_uploads_into_the_session_given(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    seeded = seeded_registry[1]
    common = first_layer(seeded.get("base/os", "1"))
    with httpx.Client(timeout=10) as http:
        opened = http.post(f"{registry.url}/v2/b/os/blobs/uploads/")
    assert opened.status_code == 202
    session = httpx.URL(opened.headers["Location"])
    proxy = fault_proxy(registry.url)
    proxy.status(r"^/v2/b/os/blobs/uploads/\?mount=", 202, method="POST", headers={
        "Location": f"{session.raw_path.decode()}", "Docker-Upload-UUID": "x"})
    result = run_import(str(bundle), "--mapping", _two_repository_mapping(seeded, proxy.host, tmp_path))
    assert result.exit_code == 0, result.stderr
    assert summary(result)[2:5] == (6, human(sum(seeded.get("base/os", "1").blob_sizes.values())
                                            + sum(s for d, s in seeded.get("base/os", "2")
                                                  .blob_sizes.items() if d != common)
                                            + seeded.get("base/os", "1").blob_sizes[common]), 0)
    b_os = [(m, u.split("?")[0], s) for m, u, s, _ in proxy.requests
            if u.startswith("/v2/b/os/blobs/uploads/")]
    assert ("POST", "/v2/b/os/blobs/uploads/", 202) in b_os
    assert ("PUT", session.path, 201) in b_os
    assert sum(1 for m, _, _ in b_os if m == "POST") == 3  # the mount + os2 + config
    with httpx.Client(timeout=10) as http:
        head = http.head(f"{registry.url}/v2/b/os/blobs/{common}")
    assert (head.status_code, head.headers["Docker-Content-Digest"]) == (200, common)
    assert skopeo_raw(f"{registry.host}/b/os:2") == seeded.get("base/os", "2").manifest_bytes


@pytest.mark.parametrize("code", [403, 404])
def test_refused_mount_falls_back_to_upload(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy], code: int,
) -> None:
    seeded = seeded_registry[1]
    common = first_layer(seeded.get("base/os", "1"))
    proxy = fault_proxy(registry.url)
    proxy.status(r"^/v2/b/os/blobs/uploads/\?mount=", code, method="POST",
                 headers={"Content-Type": "application/json"},
                 body=b'{"errors":[{"code":"DENIED","message":"no mounts here"}]}')
    result = run_import(str(bundle), "--mapping", _two_repository_mapping(seeded, proxy.host, tmp_path))
    assert result.exit_code == 0, result.stderr
    assert summary(result)[2] == 6 and summary(result)[4] == 0
    assert proxy.count("POST", r"^/v2/b/os/blobs/uploads/\?mount=") == 1
    assert proxy.count("PUT", r"^/v2/b/os/blobs/uploads/.*digest=" + common.replace(":", "%3A")) == 1
    assert skopeo_raw(f"{registry.host}/b/os:2") == seeded.get("base/os", "2").manifest_bytes


def test_wrong_docker_content_digest_on_manifest_put_fails(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    seeded = seeded_registry[1]
    base1 = seeded.get("base/os", "1")
    proxy = fault_proxy(registry.url)
    wrong = "sha256:" + "0" * 64
    proxy.status(r"^/v2/a/os/manifests/1$", 201, method="PUT",
                 headers={"Docker-Content-Digest": wrong})
    mapping = write_mapping(tmp_path / "m.txt", [f"{base1.reference}={proxy.host}/a/os"])
    result = run_import(str(bundle), "--mapping", mapping)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {base1.reference}: digest mismatch (manifest {base1.digest} to "
        f"{proxy.host}/a/os:1): expected {base1.digest}, got {wrong}\n"
    )


def test_failed_child_manifest_leaves_the_index_untagged(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path,
    fault_proxy: Callable[..., FaultProxy],
) -> None:
    seeded = seeded_registry[1]
    multi = seeded.get("multi/arch", "1")
    child = multi.item.children[1]  # type: ignore[union-attr]
    proxy = fault_proxy(registry.url)
    proxy.status(f"^/v2/big/multi/manifests/{child.digest}$", 400, method="PUT",
                 headers={"Content-Type": "application/json"},
                 body=b'{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}')
    result = run_import(str(bundle), "--mapping", _multi_arch_mapping(seeded, proxy.host, tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {multi.reference}: manifest {child.digest} to {proxy.host}/big/multi@"
        f"{child.digest}: {proxy.host} answered HTTP 400 MANIFEST_INVALID: manifest invalid\n"
    )
    assert proxy.count("PUT", r"^/v2/big/multi/manifests/1$") == 0
    assert manifest_status(registry, "big/multi", "1") == 404


def test_corrupted_blob_stops_the_import_and_tags_nothing(
    seeded_registry: Seeded, bundle: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    seeded = seeded_registry[1]
    base2 = seeded.get("base/os", "2")
    layer = json.loads(base2.manifest_bytes)["layers"][-1]["digest"]
    assert layer not in seeded.get("base/os", "1").blob_sizes
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    path = broken / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = run_import(str(broken), "--to", f"{registry.host}/mirror")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {base2.reference}: digest mismatch ({path}): expected {layer}, "
        f"got {sha(bytes(data))}\n"
    )
    assert manifest_status(registry, "mirror/base/os", "2") == 404
    assert "manifest unknown" in skopeo_missing(f"{registry.host}/mirror/base/os:2")
    assert not [u for m, u in registry.requests() if m == "PUT" and u.endswith("/manifests/2")]
    # the upload session of the corrupt blob was cancelled, not left for the registry
    assert [m for m, u in registry.requests() if "/blobs/uploads/" in u and m == "DELETE"]
    sessions = registry.root / "storage/docker/registry/v2/repositories/mirror/base/os/_uploads"
    assert not sessions.exists() or list(sessions.iterdir()) == []


# -- authentication and TLS ------------------------------------------------------------
def test_htpasswd_and_tls_registry_accepts_the_push(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    ca: Any, tmp_path: Path,
) -> None:
    seeded = seeded_registry[1]
    reg = registry_factory(htpasswd=("alice", "s3cret"), tls=ca)
    assert reg.cert_dir is not None and (reg.cert_dir / "ca.crt").is_file()
    mapping = _two_repository_mapping(seeded, reg.host, tmp_path)
    result = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "alice:s3cret",
                        "--dest-cert-dir", str(reg.cert_dir))
    assert result.exit_code == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    for repo, tag in (("a/os", "1"), ("b/os", "2")):
        raw = skopeo_raw(f"{reg.host}/{repo}:{tag}", "--creds", "alice:s3cret",
                         "--cert-dir", str(reg.cert_dir))
        assert raw == seeded.get("base/os", tag).manifest_bytes
    mounts = [(u, s) for m, u, s in reg.access_log() if m == "POST" and "mount=" in u]
    assert [s for _, s in mounts] == [201]


def test_htpasswd_registry_with_authfile_and_tls_verify_false(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    ca: Any, tmp_path: Path,
) -> None:
    seeded = seeded_registry[1]
    reg = registry_factory(htpasswd=("alice", "s3cret"), tls=ca)
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"auths": {reg.host: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    base1 = seeded.get("base/os", "1")
    mapping = write_mapping(tmp_path / "one.txt", [f"{base1.reference}={reg.host}/a/os"])
    result = run_import(str(bundle), "--mapping", mapping, "--dest-authfile", str(authfile),
                        "--dest-tls-verify=false")
    assert result.exit_code == 0, result.stderr
    assert skopeo_raw(f"{reg.host}/a/os:1", "--creds", "alice:s3cret",
                      "--tls-verify=false") == base1.manifest_bytes


def test_tls_without_the_ca_and_wrong_password_fail_clearly(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    ca: Any, tmp_path: Path,
) -> None:
    seeded = seeded_registry[1]
    reg = registry_factory(htpasswd=("alice", "s3cret"), tls=ca)
    base1 = seeded.get("base/os", "1")
    mapping = write_mapping(tmp_path / "one.txt", [f"{base1.reference}={reg.host}/a/os"])
    no_ca = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "alice:s3cret",
                       "--retries", "0")
    assert no_ca.exit_code == 1
    assert no_ca.stderr.startswith(f"error: {base1.reference}: ping {reg.host}: the TLS "
                                   f"certificate of {reg.host} is not trusted (")
    assert no_ca.stderr.endswith(
        f"); pass its CA with --src-cert-dir/--dest-cert-dir (or put it in "
        f"/etc/containers/certs.d/{reg.host}/), or turn verification off with "
        f"--src-tls-verify=false/--dest-tls-verify=false\n")
    wrong = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "alice:nope",
                       "--dest-cert-dir", str(reg.cert_dir))
    assert wrong.exit_code == 1
    assert wrong.stderr == (
        f"error: {base1.reference}: manifest {reg.host}/a/os:1: {reg.host} answered HTTP 401 "
        f"(authentication failed: credentials for 'alice' refused)\n"
    )
    assert "nope" not in wrong.stderr
    assert manifest_status_tls(reg, "a/os", "1") == 404


def manifest_status_tls(reg: LocalRegistry, repository: str, identifier: str) -> int:
    with reg.client() as http:
        return http.head(f"{reg.url}/v2/{repository}/manifests/{identifier}",
                         headers={"Accept": ACCEPT}).status_code


def test_token_auth_asks_for_push_scope(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    tmp_path: Path,
) -> None:
    seeded = seeded_registry[1]
    with TokenServer({"pusher": "push-pw"}) as tokens:
        reg = registry_factory(token=tokens)
        mapping = _two_repository_mapping(seeded, reg.host, tmp_path)
        result = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "pusher:push-pw")
        assert result.exit_code == 0, result.stderr
        scopes = {s for _, _, requested, _ in tokens.requests for s in requested}
        users = {user for _, _, _, user in tokens.requests}
        assert {"repository:a/os:pull,push", "repository:b/os:pull,push"} <= scopes
        assert users == {"pusher"}
        assert all(service == tokens.service for _, service, _, _ in tokens.requests)
        mounts = [s for m, u, s in reg.access_log() if m == "POST" and "mount=" in u]
        assert mounts == [201]
        for repo, tag in (("a/os", "1"), ("b/os", "2")):
            raw = skopeo_raw(f"{reg.host}/{repo}:{tag}", "--creds", "pusher:push-pw",
                             "--tls-verify=false")
            assert raw == seeded.get("base/os", tag).manifest_bytes


def test_token_auth_pull_only_user_is_denied(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    tmp_path: Path,
) -> None:
    seeded = seeded_registry[1]
    base1 = seeded.get("base/os", "1")
    with TokenServer({"reader": "read-pw"}, permissions={"reader": {"pull"}}) as tokens:
        reg = registry_factory(token=tokens)
        mapping = write_mapping(tmp_path / "one.txt", [f"{base1.reference}={reg.host}/a/os"])
        result = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "reader:read-pw")
        assert result.exit_code == 1
        match = re.fullmatch(
            rf"error: {re.escape(base1.reference)}: blob (sha256:[0-9a-f]{{64}}) to "
            rf"{re.escape(reg.host)}/a/os: {re.escape(reg.host)} answered HTTP 401 "
            r"\(access denied: the token for 'reader' does not grant "
            r"repository:a/os:(pull,push|push,pull)\)\n", result.stderr)
        assert match and match.group(1) in base1.blob_sizes, result.stderr
        assert manifest_status_tls(reg, "a/os", "1") == 404  # the reader may pull: no tag
        assert "read-pw" not in result.stderr
        assert ("repository:a/os:pull,push",) in {r[2] for r in tokens.requests}



def test_401_during_push_fetches_a_token_with_push_scope(
    seeded_registry: Seeded, bundle: Path, registry_factory: Callable[..., LocalRegistry],
    fault_proxy: Callable[..., FaultProxy], tmp_path: Path,
) -> None:
    """A registry that answers an upload POST with a Bearer challenge mid-run (token
    expired, say) gets a new token for pull,push on that repository and the same POST."""
    seeded = seeded_registry[1]
    base1 = seeded.get("base/os", "1")
    with TokenServer({"pusher": "push-pw"}) as tokens:
        reg = registry_factory(token=tokens)
        proxy = fault_proxy(reg.url)
        challenge = (f'Bearer realm="{tokens.realm}",service="{tokens.service}",'
                     f'scope="repository:a/os:pull,push"')
        proxy.status(r"^/v2/a/os/blobs/uploads/$", 401, method="POST",
                     headers={"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                     body=b'{"errors":[{"code":"UNAUTHORIZED","message":"token expired"}]}')
        mapping = write_mapping(tmp_path / "one.txt", [f"{base1.reference}={proxy.host}/a/os"])
        result = run_import(str(bundle), "--mapping", mapping, "--dest-creds", "pusher:push-pw",
                            "--jobs", "1")
        assert result.exit_code == 0, result.stderr
        posts = [s for m, u, s, _ in proxy.requests if m == "POST" and u == "/v2/a/os/blobs/uploads/"]
        assert posts == [401, 202, 202, 202]
        push_tokens = [r for r in tokens.requests if "repository:a/os:pull,push" in r[2]]
        assert [(m, user) for m, _, _, user in push_tokens] == [("GET", "pusher")] * 2
        assert skopeo_raw(f"{reg.host}/a/os:1", "--creds", "pusher:push-pw",
                          "--tls-verify=false") == base1.manifest_bytes


def test_blob_uploads_alternate_largest_and_smallest() -> None:
    from bundler.engine.importing import by_size_interleaved
    from bundler.engine.pushplan import BlobPush
    from bundler.oci.content import Descriptor
    from bundler.oci.digest import Digest

    def blob(size: int) -> BlobPush:
        descriptor = Descriptor("application/octet-stream", Digest.of(b"%d" % size), size)
        return BlobPush("r.example", descriptor, ["a"], owner=None)  # type: ignore[arg-type]

    blobs = [blob(size) for size in (30, 1, 50, 7, 900, 2)]
    assert [b.descriptor.size for b in by_size_interleaved(blobs)] == [900, 1, 50, 2, 30, 7]
    assert by_size_interleaved([]) == []
    assert [b.descriptor.size for b in by_size_interleaved(blobs[:1])] == [30]
