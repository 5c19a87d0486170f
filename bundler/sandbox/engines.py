"""Container engines of the sandbox: a Docker engine and a containerd of their own (in a
temp folder, on unix sockets there, no network), and large layouts written to disk
without holding a layer in memory. For tests and benchmarks.

The Docker engine is Debian's ``docker.io`` (``dockerd --storage-driver=vfs
--bridge=none --iptables=false``): it loads, saves, creates and copies out of images;
it cannot start containers here.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Containerd", "Dockerd", "Podman", "docker_binary", "start_containerd", "start_dockerd",
           "write_large_layout"]

_CHUNK = 1 << 20


def docker_binary() -> str | None:
    """The Docker client to use: Debian's ``/usr/bin/docker`` first, else any on PATH."""
    return "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")


@dataclass
class _Daemon:
    process: subprocess.Popen[bytes]
    socket: Path
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Dockerd(_Daemon):
    """A running dockerd; :meth:`run` runs the docker client against it."""

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        docker = docker_binary()
        assert docker is not None
        proc = subprocess.run([docker, "-H", f"unix://{self.socket}", *args],
                              capture_output=True, timeout=timeout,
                              env={**os.environ, "DOCKER_CONFIG": str(self.socket.parent)})
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.decode()}")
        return proc


class Containerd(_Daemon):
    """A running containerd; :meth:`ctr` runs ``ctr`` against it (namespace ``bundler``)."""

    def ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(["ctr", "--address", str(self.socket), "--namespace", "bundler",
                               *args], capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.decode()}")
        return proc


def _wait_for(process: subprocess.Popen[bytes], socket: Path, log: Path, what: str,
              timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not socket.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def start_containerd(folder: Path) -> Containerd:
    """Start containerd with its root, state and socket under ``folder`` (no CRI)."""
    folder.mkdir(parents=True, exist_ok=True)
    socket = folder / "containerd.sock"
    config = folder / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{folder / "root"}"\nstate = "{folder / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
        f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
        f'[debug]\n  address = "{folder / "debug.sock"}"\n')
    log = folder / "containerd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["containerd", "--config", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT)
    daemon = Containerd(process, socket, log)
    _wait_for(process, socket, log, "containerd")
    return daemon


def start_dockerd(folder: Path) -> Dockerd:
    """Start dockerd (vfs, no bridge, no iptables) with its own containerd, all under
    ``folder``; its socket is ``folder/docker.sock``."""
    folder.mkdir(parents=True, exist_ok=True)
    containerd = start_containerd(folder / "containerd")
    socket = folder / "docker.sock"
    log = folder / "dockerd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["dockerd", "--data-root", str(folder / "data"), "--exec-root",
             str(folder / "exec"), "--pidfile", str(folder / "docker.pid"), "-H",
             f"unix://{socket}", "--storage-driver=vfs", "--bridge=none",
             "--iptables=false", "--ip6tables=false", "--containerd", str(containerd.socket)],
            stdout=out, stderr=subprocess.STDOUT)
    daemon = Dockerd(process, socket, log)
    daemon.containerd = containerd  # type: ignore[attr-defined]
    try:
        _wait_for(process, socket, log, "dockerd")
        deadline = time.monotonic() + 60
        while True:
            try:
                daemon.run("version", timeout=20)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    except BaseException:
        daemon.stop()
        containerd.stop()
        raise
    return daemon


def stop_dockerd(daemon: Dockerd) -> None:
    """Stop dockerd, then its containerd."""
    daemon.stop()
    daemon.containerd.stop()  # type: ignore[attr-defined]


class Podman:
    """podman with its image store under ``root`` (vfs, no events, no cgroups needed);
    its run root is a short folder of /tmp (podman wants under 50 characters), removed
    by :meth:`close`."""

    def __init__(self, root: Path) -> None:
        import tempfile

        self.root = root
        self.run_root = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(["podman", "--root", str(self.root), "--runroot",
                               str(self.run_root), "--storage-driver", "vfs",
                               "--cgroup-manager", "cgroupfs", "--events-backend", "none",
                               *args], capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: {proc.stderr.decode()}")
        return proc

    def close(self) -> None:
        shutil.rmtree(self.run_root, ignore_errors=True)


class _RandomFile:
    """``size`` seeded pseudo-random bytes as a file (never whole in memory)."""

    def __init__(self, seed: int, size: int) -> None:
        self._random, self._left = random.Random(seed), size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        self._left -= n
        return self._random.randbytes(n)


def write_large_layout(root: Path, size: int, *, name: str, seed: int = 7) -> dict[str, str]:
    """Write an OCI layout holding one image with one uncompressed layer of a file of
    ``size`` random bytes, streamed to disk.

    Returns:
        ``manifest``, ``config``, ``layer``: their digests (``sha256:...``).
    """
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    staging = root / "layer.tmp"
    with tarfile.open(staging, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data/large.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644
        tar.addfile(info, _RandomFile(seed, size))  # type: ignore[arg-type]
    hasher = hashlib.sha256()
    with open(staging, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    layer = "sha256:" + hasher.hexdigest()
    layer_size = staging.stat().st_size
    staging.rename(blobs / hasher.hexdigest())

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest, len(data)

    config, config_size = put(json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
        "history": [{"created_by": "sandbox large layer"}]}).encode())
    manifest, manifest_size = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}]}).encode())
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
            "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": name}}]}))
    return {"manifest": manifest, "config": config, "layer": layer}
