"""``bundler serve`` end to end: real clients pull from it with every digest equal, and
the command's operation (naming, merging, auth, TLS, access log, signals, bundles that
change on disk, refusals) as a user sees it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
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
