"""Helpers for the referrer tests: ``oras`` (built by ``scripts/build-tools.sh``) run
against loopback registries, and the sandbox image they attach to."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bundler.sandbox import LocalRegistry, make_image, make_layer, push

ORAS = Path(__file__).resolve().parents[1] / ".tools/bin/oras"


def oras(*args: str, cwd: Path | None = None) -> str:
    """Run oras with ``--plain-http``; its stdout (a failure fails the test)."""
    if not ORAS.exists():
        pytest.skip(f"{ORAS} missing: bash scripts/build-tools.sh")
    done = subprocess.run([str(ORAS), *args, "--plain-http"], capture_output=True, text=True,
                          cwd=cwd, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def attach(registry: LocalRegistry, reference: str, artifact_type: str, tmp: Path,
           payload: bytes = b"payload", *, api: bool = False) -> dict[str, Any]:
    """``oras attach`` a one-file artifact to ``reference``: its descriptor (JSON)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "file.txt").write_bytes(payload)
    spec = "v1.1-referrers-api" if api else "v1.1-referrers-tag"
    out = oras("attach", "--artifact-type", artifact_type, "--distribution-spec", spec,
               "--annotation", "org.opencontainers.image.created=2026-01-01T00:00:00Z",
               "--format", "json", f"{registry.host}/{reference}", "file.txt", cwd=tmp)
    return json.loads(out)


def discover(registry: LocalRegistry, reference: str, *, api: bool = False) -> list[dict]:
    """``oras discover`` of ``reference``: the referrers, recursively, as oras lists them
    (digest, mediaType, artifactType, size, annotations, and their own referrers),
    sorted by digest."""
    spec = "v1.1-referrers-api" if api else "v1.1-referrers-tag"
    out = json.loads(oras("discover", "--format", "json", "--distribution-spec", spec,
                          f"{registry.host}/{reference}"))

    def clean(items: list[dict] | None) -> list[dict]:
        return sorted(({k: (clean(v) if k == "referrers" else v) for k, v in d.items()
                        if k != "reference"} for d in items or []), key=lambda d: d["digest"])

    return clean(out.get("referrers"))


def push_app(registry: LocalRegistry, repository: str = "apps/signed", tag: str = "1.0",
             seed: int = 1) -> str:
    """Push a small image; its digest."""
    image = make_image([make_layer({"hello.txt": b"hello %d\n" % seed})])
    push(registry, repository, image, tag=tag)
    return image.digest


FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: the real keyless cosign signature manifest (ghcr.io podinfo) and its two blobs
COSIGN_MANIFEST = FIXTURES / "cosign-signature-manifest.keyless-ghcr.json"
COSIGN_BLOBS = (FIXTURES / "cosign-signature-config.podinfo.json",
                FIXTURES / "cosign-simplesigning-payload.podinfo.json")


def push_cosign_signature(registry: LocalRegistry, repository: str, subject: str,
                          suffix: str = ".sig") -> str:
    """Push the real cosign signature fixture (bytes unchanged) under the cosign tag of
    ``subject`` (``sha256-<hex>.sig``); its digest."""
    import httpx

    from bundler.sandbox.images import Blob
    from bundler.sandbox.push import _push_blob, _put_manifest

    raw = COSIGN_MANIFEST.read_bytes()
    doc = json.loads(raw)
    with httpx.Client(timeout=30.0) as client:
        for path, descriptor in zip(COSIGN_BLOBS, [doc["config"], doc["layers"][0]],
                                    strict=True):
            _push_blob(client, registry.url, repository,
                       Blob.of(descriptor["mediaType"], path.read_bytes()))
        _put_manifest(client, registry.url, repository, subject.replace(":", "-") + suffix,
                      doc["mediaType"], raw)
    return "sha256:6162308b7421163281afe8bd1c69ae16d50e675cbe93ff8b34f8ad5efb71a866"


def index_entries(bundle: Path) -> list[dict]:
    """``index.json``'s manifests of a directory bundle."""
    return json.loads((bundle / "index.json").read_text())["manifests"]
