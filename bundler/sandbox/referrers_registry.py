"""Start a registry that serves the OCI 1.1 referrers API on loopback, for tests.

Neither the Debian ``docker-registry`` nor distribution v3 serves the referrers API, so
the tests run ``.tools/bin/referrers-registry``: our small Go main
(``tools/referrers-registry``) over go-containerregistry's ``pkg/registry``, built by
``scripts/build-tools.sh``. It answers a manifest PUT with a ``subject`` with
``OCI-Subject``, lists referrers (``artifactType`` filter included), and writes one
access line per request, which :class:`~bundler.sandbox.registry.LocalRegistry` reads.

Spec: distribution-spec v1.1 "Listing Referrers".
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from .registry import LocalRegistry, RegistryStartError, free_port

__all__ = ["REFERRERS_REGISTRY_BINARY", "start_referrers_registry"]

#: Built by ``scripts/build-tools.sh`` (run by ``scripts/setup.sh`` when Go is installed).
REFERRERS_REGISTRY_BINARY = Path(__file__).resolve().parents[2] / ".tools/bin/referrers-registry"


def start_referrers_registry(workdir: Path, *, timeout_s: float = 10.0) -> LocalRegistry:
    """Start the referrers registry on a free loopback port (blobs under ``workdir``)
    and wait until ``GET /v2/`` answers.

    Returns:
        The running :class:`LocalRegistry` (plain http, no auth; ``root`` holds blobs
        only: manifests live in the process).

    Raises:
        RegistryStartError: the binary is missing or did not come up.
    """
    if not REFERRERS_REGISTRY_BINARY.exists():
        raise RegistryStartError(f"{REFERRERS_REGISTRY_BINARY} not found "
                                 "(bash scripts/build-tools.sh builds it)")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = free_port()
        host = f"127.0.0.1:{port}"
        log_path = workdir / f"registry-{port}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(REFERRERS_REGISTRY_BINARY), "-addr", host, "-blobs", str(workdir / "blobs")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        reg = LocalRegistry(host=host, url=f"http://{host}", root=workdir / "blobs",
                            log_path=log_path, cert_dir=None, ca_pem=None, username=None,
                            password=None, process=proc)
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as probe:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if probe.get(reg.url + "/v2/").status_code == 200:
                        return reg
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        reg.stop()
    raise RegistryStartError(f"referrers registry did not come up; log tail:\n{reg.log_tail()}")
