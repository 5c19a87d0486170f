"""An archive read once (a pipe) pushes a referrer only after its subject, whatever the
order of their blobs in the archive."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

from referrers_tools import attach, push_app

from bundler import export_bundle


def _one_pass_tar(bundle: Path, out: Path, subject: str) -> None:
    """``bundle`` as a tar in bundle order (oci-layout, index.json, manifests, configs,
    layers), but with the referrers' layers before the subject's."""
    entries = json.loads((bundle / "index.json").read_bytes())["manifests"]

    def blob(digest: str) -> Path:
        return bundle / "blobs" / "sha256" / digest.split(":", 1)[1]

    manifests = [e["digest"] for e in entries]
    configs, layers = [], []
    for entry in entries:
        manifest = json.loads(blob(entry["digest"]).read_bytes())
        configs.append(manifest["config"]["digest"])
        own = [layer["digest"] for layer in manifest.get("layers", [])]
        layers = (layers + own) if entry["digest"] == subject else (own + layers)
    names = ["oci-layout", "index.json"] + [
        f"blobs/sha256/{d.split(':', 1)[1]}" for d in dict.fromkeys(manifests + configs + layers)]
    with tarfile.open(out, "w") as tar:
        for name in names:
            tar.add(bundle / name, arcname=name)


def test_a_referrer_read_before_its_subject_is_pushed_after_it(
        registry_factory, tmp_path: Path) -> None:
    source, dest = registry_factory(), registry_factory()
    subject = push_app(source, "apps/signed", "1.0", seed=7)
    signature = attach(source, "apps/signed:1.0", "example/sig", tmp_path / "sig", b"sig")
    bundle = tmp_path / "bundle"
    export_bundle([f"{source.host}/apps/signed:1.0"], bundle)
    digests = [e["digest"] for e in json.loads((bundle / "index.json").read_bytes())["manifests"]]
    assert digests == [subject, signature["digest"]]
    archive = tmp_path / "b.tar"
    _one_pass_tar(bundle, archive, subject)
    with open(archive, "rb") as stdin:
        done = subprocess.run([sys.executable, "-m", "bundler.cli", "import", "-", "--to",
                               f"{dest.host}/m", "-q"], stdin=stdin, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    puts = [u for m, u, s in dest.access_log() if m == "PUT" and "/manifests/" in u
            and s == 201]
    first = {d: next(i for i, u in enumerate(puts) if u.endswith(d)) for d in digests}
    assert first[subject] < first[signature["digest"]], puts
    answer = dest.client().get(f"{dest.url}/v2/m/apps/signed/manifests/{signature['digest']}",
                               headers={"Accept": signature["mediaType"]})
    assert answer.status_code == 200
    assert answer.headers["Docker-Content-Digest"] == signature["digest"]
