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


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own upload journal (bundler.journal), never the user's."""
    state = tmp_path / "state"
    monkeypatch.setenv("BUNDLER_STATE_DIR", str(state))
    return state


@pytest.fixture
def referrers_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    """A registry serving the OCI 1.1 referrers API (``tools/referrers-registry``, built
    by ``scripts/go-peers.sh``), stopped after the test."""
    from bundler.sandbox.referrers_registry import (
        REFERRERS_REGISTRY_BINARY,
        start_referrers_registry,
    )

    if not REFERRERS_REGISTRY_BINARY.exists():
        pytest.skip(f"{REFERRERS_REGISTRY_BINARY} missing: bash scripts/go-peers.sh")
    reg = start_referrers_registry(tmp_path / "referrers-registry")
    try:
        yield reg
    finally:
        reg.stop()
