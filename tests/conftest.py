"""Shared pytest fixtures: real local registries, the seeded image set, a CA, fault proxies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.sandbox import FaultProxy, LocalRegistry, SeededSet, seed_standard_set, start_registry
from bundler.sandbox.registry import REGISTRY_BINARY

HAVE_REGISTRY = os.access(REGISTRY_BINARY, os.X_OK)
needs_registry = pytest.mark.skipif(
    not HAVE_REGISTRY,
    reason=f"{REGISTRY_BINARY} missing: apt-get install docker-registry",
)


def _require_registry() -> None:
    if not HAVE_REGISTRY:
        pytest.skip(f"{REGISTRY_BINARY} missing: apt-get install docker-registry")


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A plain-http registry in tmp_path, stopped after the test."""
    _require_registry()
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., LocalRegistry]]:
    """Call with start_registry's keyword arguments to get more registries (all stopped)."""
    _require_registry()
    started: list[LocalRegistry] = []

    def factory(**kwargs: Any) -> LocalRegistry:
        reg = start_registry(tmp_path / f"registry-{len(started)}", **kwargs)
        started.append(reg)
        return reg

    try:
        yield factory
    finally:
        for reg in started:
            reg.stop()


@pytest.fixture(scope="session")
def seeded_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalRegistry, SeededSet]]:
    """One session registry with seed_standard_set pushed. Read-only: never write to it."""
    _require_registry()
    reg = start_registry(tmp_path_factory.mktemp("seeded-registry"))
    try:
        yield reg, seed_standard_set(reg)
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def ca() -> Any:
    """A session trustme.CA for TLS registries."""
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture
def fault_proxy() -> Iterator[Callable[..., FaultProxy]]:
    """Call with an upstream URL (and FaultProxy kwargs) to get a started proxy."""
    proxies: list[FaultProxy] = []

    def factory(upstream_url: str, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(upstream_url, **kwargs).start()
        proxies.append(proxy)
        return proxy

    try:
        yield factory
    finally:
        for proxy in proxies:
            proxy.stop()


@pytest.fixture(autouse=True, scope="session")
def _sigint_delivered() -> None:
    """Child processes get SIGINT: a shell that starts the suite in the background (``&``
    without job control) leaves it ignored, and every child would inherit that (the
    Ctrl-C tests would then see a command that cannot be interrupted)."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Docker engine of its own (vfs storage, own containerd and socket), started once
    for the tests that need one (``docker load``/``save``), stopped at the end."""
    from bundler.sandbox.engines import start_dockerd, stop_dockerd

    daemon = start_dockerd(tmp_path_factory.mktemp("dockerd"))
    try:
        yield daemon
    finally:
        stop_dockerd(daemon)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own upload journal (bundler.journal), never the user's."""
    state = tmp_path / "state"
    monkeypatch.setenv("BUNDLER_STATE_DIR", str(state))
    return state


class Served:
    """A running ``bundler serve`` process (see the ``serve`` fixture).

    Attributes:
        url: ``http://127.0.0.1:PORT`` (``https://`` with TLS).
        host: ``127.0.0.1:PORT``.
        process: the Popen; its stdout (the access log) goes to ``log_path``.
    """

    def __init__(self, process: Any, url: str, log_path: Path, err_path: Path) -> None:
        self.process, self.url, self.log_path, self.err_path = process, url, log_path, err_path
        self.host = url.split("://", 1)[1]

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, signum: int = 15, timeout_s: float = 20.0) -> int:
        """Send ``signum`` and wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=timeout_s)


def start_serve(args: list[str], workdir: Path, *, timeout_s: float = 30.0) -> Served:
    """Start ``bundler serve ARGS --listen 127.0.0.1:0`` and wait for its URL.

    Raises:
        AssertionError: it exited or said nothing in ``timeout_s`` (its stderr quoted).
    """
    import subprocess
    import sys
    import time

    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("serve-*.out")))
    out, err = workdir / f"serve-{n}.out", workdir / f"serve-{n}.err"
    listen = [] if any(a == "--listen" for a in args) else ["--listen", "127.0.0.1:0"]
    with open(out, "wb") as o, open(err, "wb") as e:
        process = subprocess.Popen([sys.executable, "-m", "bundler", "serve", *args, *listen],
                                   stdout=o, stderr=e, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = err.read_text()
        for word in text.split():
            if word.startswith(("http://", "https://")):
                return Served(process, word.rstrip(","), out, err)
        if process.poll() is not None:
            raise AssertionError(f"bundler serve exited {process.returncode}: {text}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"bundler serve said no URL in {timeout_s} s: {err.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Call with ``bundler serve`` arguments to start one (stopped after the test)."""
    started: list[Served] = []

    def factory(*args: str) -> Served:
        served = start_serve([str(a) for a in args], tmp_path / "serve")
        started.append(served)
        return served

    try:
        yield factory
    finally:
        for served in started:
            if served.process.poll() is None:
                served.process.kill()
                served.process.wait()


@pytest.fixture(scope="session")
def seeded_bundles(
    seeded_registry: tuple[LocalRegistry, SeededSet],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """The seeded set exported once as a directory, a .tar, split .tar volumes and a
    .tar.zst (read-only: never write to them)."""
    from bundler import export_bundle

    _, seeded = seeded_registry
    root = tmp_path_factory.mktemp("seeded-bundles")
    out = {"dir": root / "dir", "tar": root / "bundle.tar", "split": root / "split.tar",
           "zst": root / "bundle.tar.zst"}
    export_bundle(seeded.references, out["dir"])
    export_bundle(seeded.references, out["tar"])
    export_bundle(seeded.references, out["split"], split_size=256 * 1024)
    export_bundle(seeded.references, out["zst"])
    return out
@pytest.fixture
def referrers_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry serving the OCI 1.1 referrers API (``tools/referrers-registry``, built
    by ``scripts/build-tools.sh``), stopped after the test."""
    from bundler.sandbox.referrers_registry import (
        REFERRERS_REGISTRY_BINARY,
        start_referrers_registry,
    )

    if not REFERRERS_REGISTRY_BINARY.exists():
        pytest.skip(f"{REFERRERS_REGISTRY_BINARY} missing: bash scripts/build-tools.sh")
    reg = start_referrers_registry(tmp_path / "referrers-registry")
    try:
        yield reg
    finally:
        reg.stop()
