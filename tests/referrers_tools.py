"""Helpers for the referrer tests: ``oras`` (built by ``scripts/go-peers.sh``) run
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
        pytest.skip(f"{ORAS} missing: bash scripts/go-peers.sh")
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
