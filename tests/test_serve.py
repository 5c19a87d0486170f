"""``bundler serve`` end to end: real clients pull from it with every digest equal, and
the command's operation (naming, merging, auth, TLS, access log, signals, bundles that
change on disk, refusals) as a user sees it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Served

from bundler.sandbox import SeededSet

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo missing: apt-get install skopeo")


@pytest.fixture(scope="module")
def seeded(seeded_registry: tuple[object, SeededSet]) -> SeededSet:
    return seeded_registry[1]


def pull_ref(served: Served, entry: object, repository: str | None = None) -> str:
    repo = repository or entry.repository  # type: ignore[attr-defined]
    tag = entry.tag  # type: ignore[attr-defined]
    return f"{served.host}/{repo}:{tag}" if tag else f"{served.host}/{repo}@{entry.digest}"  # type: ignore[attr-defined]


def skopeo_pull(served: Served, ref: str, dest: Path, *extra: str) -> str:
    """skopeo copy --all --preserve-digests into an OCI layout; the digest it wrote."""
    subprocess.run([SKOPEO, "copy", "--all", "--preserve-digests", "--retry-times", "0",
                    "--src-tls-verify=false", *extra, f"docker://{ref}", f"oci:{dest}:x"],
                   check=True, capture_output=True, timeout=120)
    index = json.loads((dest / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    shutil.rmtree(dest)
    return digest


@needs_skopeo
@pytest.mark.parametrize("kind", ["dir", "tar", "split"])
def test_skopeo_pulls_every_image_with_every_digest_equal(
        kind: str, serve, seeded_bundles: dict[str, Path], seeded: SeededSet,
        tmp_path: Path) -> None:
    served = serve(seeded_bundles[kind], "-q")
    for entry in seeded.entries:
        digest = skopeo_pull(served, pull_ref(served, entry), tmp_path / "out")
        assert digest == entry.digest, entry.reference
    assert served.stop(signal.SIGINT) == 0
    assert served.stderr.endswith("stopped (SIGINT)\n")
    assert served.log == ""  # -q: no access log


def test_tar_zst_gets_a_clear_message(seeded_bundles: dict[str, Path]) -> None:
    bundle = seeded_bundles["zst"]
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(bundle)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {bundle}: a zstd-compressed bundle cannot be served in place (it has no "
        "byte offsets to send blobs from); extract it once (zstd -d) into a .tar, or export "
        "the bundle as .tar (or a directory) for serving\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "nowhere"], "Invalid value for '--listen': expected HOST:PORT (e.g. "
                              "127.0.0.1:5000), got 'nowhere'"),
    (["--tls-cert", "c.pem"], "give both --tls-cert and --tls-key, or neither"),
    (["--prefix", "p", "--mapping", "m"], "give --prefix or --mapping, not both"),
])
def test_usage_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(tmp_path), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"Error: {message}"


def test_not_a_bundle_exits_1(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(tmp_path / "no")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"error: {tmp_path / 'no'}: no such bundle (no directory, "
                             "archive or volumes of that name)\n")


def test_access_log_one_line_per_request_and_sigterm(serve, seeded_bundles: dict[str, Path],
                                                     seeded: SeededSet) -> None:
    served = serve(seeded_bundles["dir"])
    asked = ["/v2/apps/web/manifests/1.0", "/v2/apps/web/manifests/nope",
             "/v2/apps/%1b[2Jweb/tags/list?n=1"]
    answers = [httpx.get(served.url + path) for path in asked]
    assert [a.status_code for a in answers] == [200, 404, 404]
    assert served.stop(signal.SIGTERM) == 0
    lines = served.log.splitlines()
    assert len(lines) == 3
    for line, path, answer in zip(lines, asked, answers, strict=True):
        assert re.fullmatch(rf'127\.0\.0\.1 "GET {re.escape(path)} HTTP/1\.1" '
                            rf"{answer.status_code} {len(answer.content)} \d+\.\dms", line), line
    assert "\x1b" not in served.log
    assert served.stderr.splitlines()[-1] == "stopped (SIGTERM)"


def test_a_token_in_the_query_string_stays_out_of_the_access_log(
        serve, seeded_bundles: dict[str, Path]) -> None:
    served = serve(seeded_bundles["dir"])
    asked = "/v2/apps/web/tags/list?n=1&access_token=s3cr3t-t0ken&last=&password=hunter2"
    answer = httpx.get(served.url + asked)
    assert answer.status_code == 200
    assert served.stop(signal.SIGTERM) == 0
    line = served.log.splitlines()[0]
    assert '"GET /v2/apps/web/tags/list?n=1&access_token=-&last=&password=- HTTP/1.1" 200' \
        in line
    assert "s3cr3t" not in served.log and "hunter2" not in served.log


def test_prefix_and_mapping_name_the_images_as_import_does(
        serve, seeded_bundles: dict[str, Path], seeded: SeededSet, tmp_path: Path) -> None:
    web = seeded.get("apps/web", "1.0")
    served = serve(seeded_bundles["dir"], "-q", "--prefix", "mirror/site")
    got = httpx.get(f"{served.url}/v2/mirror/site/apps/web/manifests/1.0")
    assert (got.status_code, got.content) == (200, web.manifest_bytes)
    assert httpx.get(f"{served.url}/v2/apps/web/manifests/1.0").status_code == 404
    assert httpx.get(f"{served.url}/v2/_catalog").json()["repositories"] == [
        f"mirror/site/{name}" for name in seeded.repositories]
    mapping = tmp_path / "mapping.txt"
    mapping.write_text(f"# serve two images only\n{web.reference}=registry.example:5000/team/web:v1\n"
                       f"{seeded.get('base/os', '2').reference}=registry.example:5000/base\n")
    mapped = serve(seeded_bundles["tar"], "-q", "--mapping", mapping)
    assert httpx.get(f"{mapped.url}/v2/_catalog").json() == {"repositories": ["base", "team/web"]}
    assert httpx.get(f"{mapped.url}/v2/team/web/tags/list").json() == {
        "name": "team/web", "tags": ["v1"]}
    got = httpx.get(f"{mapped.url}/v2/base/manifests/2")
    assert got.headers["Docker-Content-Digest"] == seeded.get("base/os", "2").digest


def test_bundles_merge_into_one_namespace_and_conflicts_are_refused(
        serve, seeded: SeededSet, seeded_registry, registry_factory, tmp_path: Path) -> None:
    from bundler import export_bundle
    from bundler.sandbox import make_image, push, random_layer

    reg, _ = seeded_registry
    export_bundle([seeded.get("base/os", "1").reference], tmp_path / "base")
    export_bundle([seeded.get("apps/api", "1.0").reference], tmp_path / "api.tar")
    served = serve(tmp_path / "base", tmp_path / "api.tar", "-q")
    assert httpx.get(f"{served.url}/v2/_catalog").json() == {"repositories": ["apps/api", "base/os"]}
    for entry in (seeded.get("base/os", "1"), seeded.get("apps/api", "1.0")):
        got = httpx.get(f"{served.url}/v2/{entry.repository}/manifests/{entry.tag}")
        assert got.content == entry.manifest_bytes
        for blob in entry.item.blobs:
            assert httpx.get(f"{served.url}/v2/{entry.repository}/blobs/{blob.digest}").content == blob.data
    other = registry_factory()
    push(other, "base/os", make_image([random_layer(99, 1024)]), tag="1")
    export_bundle([f"{other.host}/base/os:1"], tmp_path / "other")
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(tmp_path / "base"),
                             str(tmp_path / "other"), "--listen", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: images '{reg.host}/base/os:1' and '{other.host}/base/os:1' both go to "
        "base/os:1; use --mapping to give each its own destination")


def test_htpasswd_basic_auth_and_no_credential_in_the_log(
        serve, seeded_bundles: dict[str, Path], seeded: SeededSet, tmp_path: Path) -> None:
    import base64

    import bcrypt

    password = "s3cret-pass"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    users = tmp_path / "users.htpasswd"
    users.write_text(f"# users\nalice:{'$2y$' + hashed[4:]}\n")
    served = serve(seeded_bundles["dir"], "--htpasswd", users)
    denied = httpx.get(f"{served.url}/v2/")
    assert denied.status_code == 401
    assert denied.headers["WWW-Authenticate"] == 'Basic realm="bundler serve"'
    assert denied.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert httpx.get(f"{served.url}/v2/", auth=("alice", "wrong")).status_code == 401
    assert httpx.get(f"{served.url}/v2/", auth=("bob", password)).status_code == 401
    assert httpx.get(f"{served.url}/v2/apps/web/manifests/1.0").status_code == 401
    assert httpx.post(f"{served.url}/v2/apps/web/blobs/uploads/").status_code == 401
    web = seeded.get("apps/web", "1.0")
    got = httpx.get(f"{served.url}/v2/apps/web/manifests/1.0", auth=("alice", password))
    assert (got.status_code, got.content) == (200, web.manifest_bytes)
    if SKOPEO is not None:
        digest = skopeo_pull(served, f"{served.host}/apps/web:1.0", tmp_path / "out",
                             "--src-creds", f"alice:{password}")
        assert digest == web.digest
    served.stop()
    log = served.log + served.stderr
    assert password not in log
    assert base64.b64encode(f"alice:{password}".encode()).decode() not in log
    assert " 401 " in log and " 200 " in log


def test_a_weak_htpasswd_hash_is_refused(seeded_bundles: dict[str, Path], tmp_path: Path) -> None:
    users = tmp_path / "users.htpasswd"
    users.write_text("alice:$apr1$abc$defghijklmnop\n")
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(seeded_bundles["dir"]),
                             "--htpasswd", str(users)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"error: {users}:1: the hash of this user is not bcrypt; write "
                             "the file with htpasswd -B\n")


def test_tls(serve, seeded_bundles: dict[str, Path], seeded: SeededSet, ca, tmp_path: Path) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    served = serve(seeded_bundles["split"], "-q", "--tls-cert", tmp_path / "cert.pem",
                   "--tls-key", tmp_path / "key.pem")
    assert served.url.startswith("https://127.0.0.1:")
    entry = seeded.get("multi/arch", "1")
    blob = max(entry.item.blobs, key=lambda b: b.size)
    with httpx.Client(verify=ssl.create_default_context(cafile=tmp_path / "ca.pem")) as client:
        got = client.get(f"{served.url}/v2/multi/arch/blobs/{blob.digest}")
        assert (got.status_code, got.content) == (200, blob.data)
        part = client.get(f"{served.url}/v2/multi/arch/blobs/{blob.digest}",
                          headers={"Range": "bytes=1000-200000"})
        assert (part.status_code, part.content) == (206, blob.data[1000:200001])
    if SKOPEO is not None:
        certs = tmp_path / "certs"
        certs.mkdir()
        ca.cert_pem.write_to_path(str(certs / "ca.crt"))
        subprocess.run([SKOPEO, "copy", "--all", "--preserve-digests", "--src-cert-dir",
                        str(certs), f"docker://{served.host}/multi/arch:1",
                        f"oci:{tmp_path / 'out'}:x"], check=True, capture_output=True, timeout=120)
        index = json.loads((tmp_path / "out" / "index.json").read_text())
        assert index["manifests"][0]["digest"] == entry.digest


def test_a_listen_address_that_is_not_loopback_is_warned_of(
        seeded_bundles: dict[str, Path]) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: nothing is ever listened on
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(seeded_bundles["dir"]),
                             "--listen", "192.0.2.1:5000"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "warning: listening on 192.0.2.1, not a loopback address: anyone who can reach it "
        "can pull every image of the bundles (and no --htpasswd asks who they are)",
        "error: cannot listen on 192.0.2.1:5000: Cannot assign requested address"]


def wait_for(check, timeout_s: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.2)


def test_a_re_export_into_a_served_bundle_is_picked_up(
        serve, seeded: SeededSet, tmp_path: Path) -> None:
    from bundler import export_bundle

    bundle = tmp_path / "bundle"
    export_bundle([seeded.get("base/os", "1").reference], bundle)
    served = serve(bundle, "-q")
    catalog = f"{served.url}/v2/_catalog"
    assert httpx.get(catalog).json() == {"repositories": ["base/os"]}
    api = seeded.get("apps/api", "1.0")
    export_bundle([api.reference], bundle)
    wait_for(lambda: httpx.get(catalog).json() == {"repositories": ["apps/api", "base/os"]})
    got = httpx.get(f"{served.url}/v2/apps/api/manifests/1.0")
    assert got.content == api.manifest_bytes
    assert f"read again: {bundle}: 2 images in 2 repositories" in served.stderr


def test_an_archive_written_over_is_refused_until_it_reads_whole(
        serve, seeded: SeededSet, tmp_path: Path) -> None:
    from bundler import export_bundle

    api, base = seeded.get("apps/api", "1.0"), seeded.get("base/os", "2")
    export_bundle([api.reference], tmp_path / "api.tar")
    export_bundle([base.reference], tmp_path / "base.tar")
    shutil.copy(tmp_path / "api.tar", tmp_path / "served.tar")
    served = serve(tmp_path / "served.tar", "-q")
    manifest = f"{served.url}/v2/apps/api/manifests/1.0"
    assert httpx.get(manifest).content == api.manifest_bytes
    whole = (tmp_path / "served.tar").read_bytes()
    with open(tmp_path / "served.tar", "r+b") as f:  # written over in place, half-way
        f.truncate(len(whole) // 2)
    layer = api.item.blobs[-1]
    blob_status = httpx.get(f"{served.url}/v2/apps/api/blobs/{layer.digest}").status_code
    assert blob_status in (503, 404)  # never the changed bytes
    wait_for(lambda: httpx.get(manifest).status_code == 404)
    assert "refused until it reads whole again, its images are not served: " \
           f"{tmp_path / 'served.tar'} (" in served.stderr
    (tmp_path / "served.tar").write_bytes(whole)
    wait_for(lambda: httpx.get(manifest).status_code == 200)
    got = httpx.get(f"{served.url}/v2/apps/api/blobs/{layer.digest}")
    assert got.content == layer.data
    # replaced by another file: the new one is served once it reads whole
    shutil.copy(tmp_path / "base.tar", tmp_path / "next.tar")
    (tmp_path / "next.tar").replace(tmp_path / "served.tar")
    wait_for(lambda: httpx.get(f"{served.url}/v2/_catalog").json() == {
        "repositories": ["base/os"]})
    got = httpx.get(f"{served.url}/v2/base/os/manifests/2")
    assert got.content == base.manifest_bytes


def test_a_symlink_in_a_bundle_directory_is_never_followed(
        serve, seeded_bundles: dict[str, Path], seeded: SeededSet, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(seeded_bundles["dir"], bundle)
    web = seeded.get("apps/web", "1.0")
    layer = web.item.blobs[-1]
    outside = tmp_path / "host-secret"
    outside.write_bytes(b"S" * layer.size)  # the very size the descriptor asks for
    blob = bundle / "blobs" / "sha256" / layer.digest[7:]
    served = serve(bundle, "-q")
    blob.unlink()
    blob.symlink_to(outside)
    got = httpx.get(f"{served.url}/v2/apps/web/blobs/{layer.digest}")
    assert got.status_code == 404
    assert got.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert b"SSSS" not in got.content
    served.stop()
    result = subprocess.run([sys.executable, "-m", "bundler", "serve", str(bundle)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {blob}: cannot read blob {layer.digest}: Is a symbolic link; refused: the "
        "files of a bundle directory must be regular files inside it (no symbolic links, "
        "FIFOs or devices)\n")


def test_a_refused_bundle_stays_out_while_another_is_read_again(
        serve, seeded: SeededSet, tmp_path: Path) -> None:
    from bundler import export_bundle

    api, base1, base2 = (seeded.get("apps/api", "1.0"), seeded.get("base/os", "1"),
                         seeded.get("base/os", "2"))
    export_bundle([api.reference], tmp_path / "api.tar")
    export_bundle([base1.reference], tmp_path / "base")
    served = serve(tmp_path / "api.tar", tmp_path / "base", "-q")
    catalog = f"{served.url}/v2/_catalog"
    assert httpx.get(catalog).json() == {"repositories": ["apps/api", "base/os"]}
    with open(tmp_path / "api.tar", "r+b") as f:
        f.truncate(1000)
    wait_for(lambda: httpx.get(catalog).json() == {"repositories": ["base/os"]})
    export_bundle([base2.reference], tmp_path / "base")
    wait_for(lambda: httpx.get(f"{served.url}/v2/base/os/tags/list").json()["tags"] == ["1", "2"])
    assert httpx.get(catalog).json() == {"repositories": ["base/os"]}
    assert f"read again: {tmp_path / 'base'}: 2 images in 1 repository" in served.stderr
