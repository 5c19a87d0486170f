"""The ping: a registry that is down costs one round of retries per session, and every
attempt that gets no answer shows in ``--debug``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bundler import BundlerError, export_bundle, import_bundle
from bundler.cli.main import main
from bundler.errors import TransportError
from bundler.oci.digest import Digest
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.sandbox import LocalRegistry, SeededSet
from bundler.sandbox.registry import free_port


class HangUp:
    """A TCP listener on 127.0.0.1 that accepts and closes at once, counting connections."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def hang_up() -> Iterator[HangUp]:
    listener = HangUp()
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture(scope="module")
def seeded_bundle(seeded_registry: tuple[LocalRegistry, SeededSet],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The seeded set exported as .tar.zst, and its number of images."""
    _, seeded = seeded_registry
    path = tmp_path_factory.mktemp("dead") / "bundle.tar.zst"
    export_bundle(seeded.references, path)
    return path, len(seeded.entries)


DIGEST = Digest.of(b"nothing")


def test_a_failed_ping_is_remembered_for_the_session(hang_up: HangUp) -> None:
    options = TransportOptions(retries=2, retry_delay_s=0.0)
    with RegistryClient(hang_up.host, options) as client:
        with pytest.raises(TransportError) as first:
            client.has_blob("repo", DIGEST)
        assert hang_up.connections == 1 + 3  # https once, then http with its retries
        with pytest.raises(TransportError) as again:
            client.get_manifest("repo", "latest")
        with pytest.raises(TransportError):
            client.base_url()
    assert hang_up.connections == 4
    assert str(again.value) == str(first.value)
    assert str(first.value).startswith(f"ping {hang_up.host}: cannot reach {hang_up.host}: ")
    assert (again.value.url, again.value.registry) == (first.value.url, first.value.registry)
    assert again.value.__cause__ is first.value


def test_import_to_a_dead_registry_pings_once(seeded_bundle: tuple[Path, int],
                                              hang_up: HangUp) -> None:
    bundle, images = seeded_bundle
    assert images >= 5
    retries = 2
    with pytest.raises(BundlerError):
        import_bundle(bundle, to=f"{hang_up.host}/dead", keep_going=True,
                      options=TransportOptions(retries=retries, retry_delay_s=0.0))
    assert hang_up.connections == 1 + (retries + 1)


def test_debug_shows_attempts_without_an_answer(seeded_bundle: tuple[Path, int]) -> None:
    bundle, _ = seeded_bundle
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(main, [
        "--debug", "import", str(bundle), "--to", f"{host}/dead", "--retries", "1",
        "--retry-delay", "0", "--dest-creds", "user:s3cret-pass", "-q"])
    assert result.exit_code != 0
    http = [line for line in result.stderr.splitlines()
            if line.startswith("debug: bundler.http:")]
    refused = "no answer: [Errno 111] Connection refused"
    assert http == [f"debug: bundler.http: GET https://{host}/v2/ -> {refused}",
                    f"debug: bundler.http: GET http://{host}/v2/ -> {refused}",
                    f"debug: bundler.http: GET http://{host}/v2/ -> {refused}"]
    assert "s3cret" not in result.output + result.stderr


def test_a_session_raises_httpcore_response_reads_to_256_kib(registry: LocalRegistry) -> None:
    import httpcore

    from bundler.registry.transport import RESPONSE_READ_BYTES

    with RegistryClient(registry.host, TransportOptions()) as client:
        assert client.has_blob("any/repo", Digest.of(b"absent")) is False
    assert RESPONSE_READ_BYTES == 256 * 1024
    assert httpcore.HTTP11Connection.READ_NUM_BYTES == RESPONSE_READ_BYTES
