"""``export --include-foreign-layers``: non-distributable layers fetched into the bundle.

The source registry holds a Docker schema 2 image whose last layer is a foreign layer
with ``urls``, and never gets that blob (as with a Windows base image). The URLs point
at a small loopback HTTP server that serves the blob and records every request's
headers. With the flag, export stores the blob (directory and archive), verify and list
count it, and import pushes it before the manifest, so the destination registry serves
it. distribution 2.8 refuses layer URLs unless ``validation.manifests.urls.allow``
allows them, so the registries here allow http and https URLs.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from bundler import TransferError, export_bundle, import_bundle, list_bundle, verify_bundle
from bundler.cli.main import main
from bundler.errors import BundlerError, DigestMismatchError, ForeignLayerError, RegistryError
from bundler.oci.content import DOCKER_MANIFEST
from bundler.registry.client import TransportOptions
from bundler.registry.foreign import check_url, shown_url
from bundler.sandbox import Image, LocalRegistry, make_image, make_layer, push
from bundler.sandbox.images import sha256_digest
from bundler.sandbox.loopback import LoopbackServer

FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
FAST = TransportOptions(retries=1, retry_delay_s=0.01)
ALLOW_URLS = {"validation": {"manifests": {"urls": {"allow": ["^https?://"]}}}}
LAYER = make_layer({"Files/os.txt": b"windows base layer " * 200})


class BlobServer(LoopbackServer):
    """Serves fixed bytes at fixed paths; a path may redirect elsewhere. Records the
    path and headers of every request (``requests``)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []

    def start(self) -> BlobServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                owner.requests.append((self.path, dict(self.headers.items())))
                if self.path in owner.redirects:
                    self.send_response(302)
                    self.send_header("Location", owner.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = owner.blobs.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def server() -> Any:
    with BlobServer() as blob_server:
        yield blob_server


def foreign_image(urls: list[str]) -> Image:
    """A Docker image: one ordinary layer, then :data:`LAYER` as a foreign layer."""
    base = make_image([make_layer({"app.txt": b"ordinary"}), LAYER], docker=True)
    doc = json.loads(base.manifest_bytes)
    doc["layers"][1]["mediaType"] = FOREIGN
    doc["layers"][1]["urls"] = urls
    data = json.dumps(doc, indent=3).encode()
    return Image(data, DOCKER_MANIFEST, sha256_digest(data), len(data), base.config,
                 base.layers, base.platform)


def source_with(registry_factory, image: Image, config: dict = ALLOW_URLS,
                **kwargs: Any) -> LocalRegistry:
    """A registry holding win/app:1 without its foreign blob."""
    registry = registry_factory(extra_config=config, **kwargs)
    push(registry, "win/app", image, tag="1", skip_blobs={LAYER.digest})
    assert httpx.head(f"{registry.url}/v2/win/app/blobs/{LAYER.digest}",
                      auth=(registry.username, registry.password) if registry.username
                      else None).status_code == 404
    return registry


def served_blob(registry: LocalRegistry, repository: str, digest: str) -> bytes:
    response = httpx.get(f"{registry.url}/v2/{repository}/blobs/{digest}",
                         follow_redirects=True)
    assert response.status_code == 200
    return response.content


def test_a_foreign_layer_is_fetched_from_its_url_stored_verified_and_imported(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    server.blobs["/layers/os.tar.gz"] = LAYER.data
    image = foreign_image([f"{server.url}/layers/os.tar.gz"])
    source = source_with(registry_factory, image)

    bundle = tmp_path / "bundle"
    exported = export_bundle([f"{source.host}/win/app:1"], bundle, options=FAST,
                             include_foreign_layers=True)
    assert ([str(d) for d in exported.included_foreign], exported.skipped_foreign) == \
        ([LAYER.digest], [])
    stored = (bundle / "blobs/sha256" / LAYER.digest[7:]).read_bytes()
    assert "sha256:" + hashlib.sha256(stored).hexdigest() == LAYER.digest
    assert [path for path, _ in server.requests] == ["/layers/os.tar.gz"]

    report = verify_bundle(bundle)
    assert (report.problems, report.skipped, report.images, report.blobs) == ([], [], 1, 4)
    assert list_bundle(bundle).blob_count == 4  # manifest, config, two layers

    dest = registry_factory(extra_config=ALLOW_URLS)
    mark = dest.mark()
    imported = import_bundle(bundle, to=f"{dest.host}/m", options=FAST)
    assert (imported.skipped_foreign, imported.blobs_uploaded) == ([], 3)
    assert served_blob(dest, "m/win/app", LAYER.digest) == LAYER.data
    manifest = httpx.get(f"{dest.url}/v2/m/win/app/manifests/1",
                         headers={"Accept": DOCKER_MANIFEST}).content
    assert sha256_digest(manifest) == image.digest
    log = dest.requests(mark)
    blob_put = next(i for i, (m, u) in enumerate(log)
                    if m == "PUT" and "blobs/uploads" in u and LAYER.digest[7:] in u)
    manifest_put = next(i for i, (m, u) in enumerate(log) if m == "PUT" and "/manifests/" in u)
    assert blob_put < manifest_put  # the foreign blob goes before the manifest


def test_an_archive_export_holds_the_foreign_layer_and_a_piped_import_pushes_it(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    server.blobs["/os.tar.gz"] = LAYER.data
    image = foreign_image([f"{server.url}/os.tar.gz"])
    source = source_with(registry_factory, image)
    archive = tmp_path / "bundle.tar"
    runner = CliRunner()
    shown = runner.invoke(main, ["export", f"{source.host}/win/app:1", "-o", str(archive),
                                 "--include-foreign-layers", "-q"])
    assert shown.exit_code == 0, shown.output
    assert (f"note: non-distributable layer {LAYER.digest} is in the bundle "
            "(--include-foreign-layers)") in shown.stderr
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{LAYER.digest[7:]}")
        assert member is not None and member.read() == LAYER.data

    report = verify_bundle(archive)
    assert (report.problems, report.skipped, report.blobs) == ([], [], 4)

    dest = registry_factory(extra_config=ALLOW_URLS)
    shown = runner.invoke(main, ["import", "-", "--to", f"{dest.host}/m", "-q"],
                          input=archive.read_bytes())
    assert shown.exit_code == 0, shown.output
    assert served_blob(dest, "m/win/app", LAYER.digest) == LAYER.data


def test_the_registry_is_asked_first(registry_factory, server: BlobServer,
                                     tmp_path: Path) -> None:
    image = foreign_image([f"{server.url}/never.tar.gz"])
    source = registry_factory(extra_config=ALLOW_URLS)
    push(source, "win/app", image, tag="1")  # this registry holds the foreign blob
    exported = export_bundle([f"{source.host}/win/app:1"], tmp_path / "b", options=FAST,
                             include_foreign_layers=True)
    assert [str(d) for d in exported.included_foreign] == [LAYER.digest]
    assert (tmp_path / "b/blobs/sha256" / LAYER.digest[7:]).read_bytes() == LAYER.data
    assert server.requests == []


def test_without_the_flag_the_layer_is_left_out_and_no_url_is_fetched(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    server.blobs["/os.tar.gz"] = LAYER.data
    source = source_with(registry_factory, foreign_image([f"{server.url}/os.tar.gz"]))
    shown = CliRunner().invoke(main, ["export", f"{source.host}/win/app:1", "-o",
                                      str(tmp_path / "b"), "-q"])
    assert shown.exit_code == 0, shown.output
    assert (f"warning: non-distributable layer {LAYER.digest} was not served; it is not in "
            "the bundle (--include-foreign-layers fetches it from the URLs its descriptor "
            "lists)") in shown.stderr
    assert not (tmp_path / "b/blobs/sha256" / LAYER.digest[7:]).exists()
    assert server.requests == []


def test_wrong_bytes_from_a_url_fail_with_a_digest_mismatch_naming_the_layer(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    wrong = bytes(b ^ 1 for b in LAYER.data)  # same size, other bytes
    server.blobs["/os.tar.gz"] = wrong
    url = f"{server.url}/os.tar.gz"
    source = source_with(registry_factory, foreign_image([url]))
    bundle = tmp_path / "bundle"
    with pytest.raises(TransferError) as info:
        export_bundle([f"{source.host}/win/app:1"], bundle, options=FAST,
                      include_foreign_layers=True)
    cause = info.value.cause
    assert isinstance(cause, DigestMismatchError)
    assert str(cause) == (f"digest mismatch (non-distributable layer {LAYER.digest} from "
                          f"{url}): expected {LAYER.digest}, got {sha256_digest(wrong)}")
    assert not (bundle / "blobs/sha256" / LAYER.digest[7:]).exists()
    assert not (bundle / "index.json").exists()

    shown = CliRunner().invoke(main, ["export", f"{source.host}/win/app:1", "-o",
                                      str(tmp_path / "b.tar"), "--include-foreign-layers",
                                      "-q", "--retries", "0"])
    assert shown.exit_code == 1
    assert shown.stderr.startswith(f"error: {source.host}/win/app:1: digest mismatch "
                                   f"(non-distributable layer {LAYER.digest} from {url})")
    assert not (tmp_path / "b.tar").exists()


def test_a_url_host_never_receives_the_registry_credentials(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    with BlobServer() as other:
        other.blobs["/real/os.tar.gz"] = LAYER.data
        server.redirects["/os.tar.gz"] = f"{other.url}/real/os.tar.gz"
        image = foreign_image([f"{server.url}/os.tar.gz"])
        source = source_with(registry_factory, image, htpasswd=("win", "s3cret-pass"))
        shown = CliRunner().invoke(main, [
            "export", f"{source.host}/win/app:1", "-o", str(tmp_path / "b"), "-q",
            "--include-foreign-layers", "--src-creds", "win:s3cret-pass"])
        assert shown.exit_code == 0, shown.output
        assert (tmp_path / "b/blobs/sha256" / LAYER.digest[7:]).read_bytes() == LAYER.data
        seen = server.requests + other.requests
        assert [path for path, _ in seen] == ["/os.tar.gz", "/real/os.tar.gz"]
        for _, headers in seen:
            assert not {k.lower() for k in headers} & {"authorization", "cookie"}
            assert "s3cret" not in json.dumps(headers)


@pytest.mark.parametrize("archive", [False, True])
def test_a_registry_refusing_layer_urls_is_named_although_the_blob_was_pushed(
        registry_factory, server: BlobServer, tmp_path: Path, archive: bool) -> None:
    server.blobs["/os.tar.gz"] = LAYER.data
    source = source_with(registry_factory, foreign_image([f"{server.url}/os.tar.gz"]))
    bundle = tmp_path / ("bundle.tar" if archive else "bundle")
    export_bundle([f"{source.host}/win/app:1"], bundle, options=FAST,
                  include_foreign_layers=True)
    dest = registry_factory()  # distribution's default: no layer URL allowed
    with pytest.raises(TransferError) as info:
        import_bundle(bundle, to=f"{dest.host}/m", options=TransportOptions(retries=0))
    cause = info.value.cause
    assert isinstance(cause, RegistryError) and cause.status == 500
    assert str(cause).endswith(
        f"(the blobs were pushed, but this registry refuses the layer URLs of {LAYER.digest}: "
        "it must accept foreign layer URLs, e.g. distribution's "
        "validation.manifests.urls.allow)")
    assert served_blob(dest, "m/win/app", LAYER.digest) == LAYER.data


REFUSED = ("refused: only https URLs are fetched (plain http only for a loopback host or "
           "with --src-tls-verify=false)")


def test_urls_that_may_not_be_fetched_are_refused_and_named(
        registry_factory, server: BlobServer, tmp_path: Path) -> None:
    server.blobs["/os.tar.gz"] = LAYER.data
    urls = ["http://192.0.2.1/os.tar.gz", f"{server.url}/missing.tar.gz"]
    source = source_with(registry_factory, foreign_image(urls))
    with pytest.raises(TransferError) as info:
        export_bundle([f"{source.host}/win/app:1"], tmp_path / "b", options=FAST,
                      include_foreign_layers=True)
    cause = info.value.cause
    assert isinstance(cause, ForeignLayerError)
    assert cause.attempts == [
        f"registry {source.host}: blob {LAYER.digest} from {source.host}/win/app: "
        f"{source.host} answered HTTP 404 BLOB_UNKNOWN: blob unknown to registry",
        f"http://192.0.2.1/os.tar.gz: {REFUSED}",
        f"{server.url}/missing.tar.gz: HTTP 404",
    ]
    assert [path for path, _ in server.requests] == ["/missing.tar.gz"]
    assert str(cause).startswith(f"non-distributable layer {LAYER.digest} could not be "
                                 "fetched: registry ")


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", REFUSED),
    ("ftp://192.0.2.1/os.tar.gz", REFUSED),
    ("http://192.0.2.1/os.tar.gz", REFUSED),
    ("https:///no-host", "refused: no host"),
    (["https://a.example/x"], "refused: not a string"),
])
def test_check_url_refuses_what_it_may_not_fetch(url: object, reason: str) -> None:
    with pytest.raises(BundlerError) as info:
        check_url(url, tls_verify=True)
    assert str(info.value).endswith(f": {reason}")


def test_check_url_allows_https_and_loopback_http_and_drops_user_info() -> None:
    assert str(check_url("https://u:p@a.example/x", tls_verify=True)) == "https://a.example/x"
    assert str(check_url("http://127.0.0.1:9/x", tls_verify=True)) == "http://127.0.0.1:9/x"
    assert str(check_url("http://a.example/x", tls_verify=False)) == "http://a.example/x"
    assert shown_url("https://u:p@a.example/x?sig=secret") == \
        "https://a.example/x?sig=%2A%2A%2A"
    assert shown_url("https://u:p@a.example/\x1b[31mred?sig=secret") == \
        "https://a.example/\\x1b[31mred?***"
    with pytest.raises(BundlerError, match=r"^https://a.example/\\x1b\[31m: refused: malformed"):
        check_url("https://a.example/\x1b[31m", tls_verify=True)
