"""Decoding a .tar.zst bundle: time and peak memory of ``bundler verify`` on a bundle
whose one layer is SIZE bytes of zeros (the case zstd compresses best, about 10000:1),
against the same bundle as a plain .tar.

The bundles are built without a registry (tarfile, then ``zstd``-compatible frames of
the zstandard library). Each verify runs as a subprocess under ``/usr/bin/time -v``;
its wall time and maximum resident set size are printed. ``--max-zstd-ratio`` is
raised for the .tar.zst (a 1 GiB zero layer is past the default cap on purpose).

Usage:
    python bench/bench_zstd.py                 # 1 GiB
    python bench/bench_zstd.py --size-mib 256
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import zstandard

MIB = 1 << 20
RATIO = ["--max-zstd-ratio", "100000"]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count

    def readable(self) -> bool:
        return True


def build(folder: Path, size: int) -> tuple[Path, Path]:
    """``zeros.tar`` and ``zeros.tar.zst``: one image, one layer of ``size`` zero bytes."""
    hasher = hashlib.sha256()
    chunk = bytes(MIB)
    for _ in range(size // MIB):
        hasher.update(chunk)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": "sha256:" + hasher.hexdigest(), "size": size}
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode()
    config_d = {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_d, "layers": [layer]}).encode()
    index = json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
                                       "size": len(manifest), "annotations": {
                                           "org.opencontainers.image.ref.name":
                                               "example.com/zeros/layer:1"}}]}).encode()
    plain = folder / "zeros.tar"
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", index)
        for data in (manifest, config):
            _add(tar, "blobs/sha256/" + hashlib.sha256(data).hexdigest(), data)
        info = tarfile.TarInfo("blobs/sha256/" + hasher.hexdigest())
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size), MIB))
    compressed = folder / "zeros.tar.zst"
    with open(plain, "rb") as src, open(compressed, "wb") as dst:
        zstandard.ZstdCompressor(level=3).copy_stream(src, dst)
    return plain, compressed


def timed(args: list[str]) -> tuple[float, int, int]:
    """(wall seconds, max RSS in KiB, exit code) of a command under /usr/bin/time -v."""
    run = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", run.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    assert wall and rss, run.stderr
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return seconds, int(rss.group(1)), run.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    bundler = str(Path(sys.executable).with_name("bundler"))
    with tempfile.TemporaryDirectory() as work:
        plain, compressed = build(Path(work), args.size_mib * MIB)
        print(f"layer {args.size_mib} MiB of zeros; .tar.zst {compressed.stat().st_size} bytes")
        for path, extra in ((plain, []), (compressed, RATIO)):
            seconds, rss, code = timed([bundler, "verify", str(path), *extra])
            print(f"verify {path.name:14} exit {code}  {seconds:7.1f} s  max RSS "
                  f"{rss / 1024:7.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
