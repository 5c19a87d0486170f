"""Test sandbox: real local registries on loopback, synthetic images, a fault proxy.

Used by the test suite, the demo script and the benchmarks. Nothing here imports the
rest of ``bundler``: images are built and pushed with plain httpx so the sandbox is an
independent witness of what the project's own client does.

* :func:`start_registry` / :class:`LocalRegistry` run ``/usr/bin/docker-registry``
  (plain, htpasswd, TLS from a ``trustme.CA``, or token auth).
* :class:`TokenServer` is a docker token server for the registry's ``auth: token``.
* ``make_*`` build deterministic images, indexes, attestations and artifacts;
  :func:`push` pushes them; :func:`seed_standard_set` seeds the standard set.
* :class:`FaultProxy` counts requests and injects faults between client and registry.
"""

from __future__ import annotations

from bundler.sandbox.images import (
    Blob,
    Image,
    Index,
    make_artifact,
    make_attestation,
    make_image,
    make_index,
    make_layer,
    random_layer,
)
from bundler.sandbox.proxy import FaultProxy, FaultRule
from bundler.sandbox.push import (
    SandboxAuth,
    push,
    push_big_random_layer_image,
    stream_random_layer,
)
from bundler.sandbox.registry import LocalRegistry, RegistryStartError, free_port, start_registry
from bundler.sandbox.seed import SeededEntry, SeededSet, seed_standard_set
from bundler.sandbox.tokenserver import TokenServer

__all__ = [
    "Blob",
    "FaultProxy",
    "FaultRule",
    "Image",
    "Index",
    "LocalRegistry",
    "RegistryStartError",
    "SandboxAuth",
    "SeededEntry",
    "SeededSet",
    "TokenServer",
    "free_port",
    "make_artifact",
    "make_attestation",
    "make_image",
    "make_index",
    "make_layer",
    "push",
    "push_big_random_layer_image",
    "random_layer",
    "seed_standard_set",
    "start_registry",
    "stream_random_layer",
]
