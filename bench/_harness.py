"""Shared pieces of the benchmarks: measured subprocess runs, registries, streamed blobs.

Units: sizes are bytes; ``MB`` in printed figures is 10**6 bytes (throughput and RSS).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin

import httpx
import psutil

from bundler.sandbox import LocalRegistry, start_registry, stream_random_layer
from bundler.sandbox.images import OCI_LAYER, Blob

MB = 1_000_000
SAMPLE_S = 0.05
TIME_BINARY = "/usr/bin/time"


def bundler_command() -> list[str]:
    """The ``bundler`` console script of the interpreter running the benchmark, or
    ``python -m bundler.cli`` when it has none.

    Not a ``bundler`` found on PATH: that may be another installation, or a version
    manager's shim that adds its own start-up time to every run. The package is
    byte-compiled first, as ``pip install`` does for a regular install: an editable
    install under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile every module
    from source on every run (about 0.1 s).
    """
    import bundler

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(bundler.__file__).parent)],
                   check=True, stdout=subprocess.DEVNULL)
    script = Path(sys.executable).parent / "bundler"
    return [str(script)] if os.access(script, os.X_OK) else [sys.executable, "-m", "bundler.cli"]


@dataclass
class Run:
    """One measured subprocess run.

    Attributes:
        argv: the command.
        wall_s: wall time in seconds.
        peak_rss: peak of the summed RSS of the process tree, sampled every 50 ms (bytes).
        max_rss: peak RSS of the largest single process from ``/usr/bin/time`` (exact;
            bytes; 0 when /usr/bin/time is missing).
        returncode: exit status.
        output: the tail of stdout+stderr.
        cpu_s: user + system CPU seconds of the process tree (from ``/usr/bin/time``).
    """

    argv: list[str]
    wall_s: float
    peak_rss: int
    max_rss: int
    returncode: int
    output: str = field(repr=False, default="")
    cpu_s: float = 0.0

    @property
    def rss(self) -> int:
        """The larger of the two peak figures (bytes)."""
        return max(self.peak_rss, self.max_rss)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(argv: Sequence[str], *, log: Path | None = None, check: bool = True,
            env: dict[str, str] | None = None) -> Run:
    """Run ``argv``, sampling the RSS of its process tree every 50 ms; return a :class:`Run`.

    The command runs under ``/usr/bin/time -f "%M %U %S"`` when that exists, for an exact peak
    RSS: the kernel's ``ru_maxrss`` of a child counts the memory of the process that
    forked it, so it is only meaningful when the forking process is small.

    Raises:
        RuntimeError: ``check`` and a non-zero exit status (message has the output tail).
    """
    out_path = log or Path(os.devnull)
    argv = list(argv)
    time_file = out_path.with_name(out_path.name + ".maxrss") if log else None
    wrapped = argv
    if time_file is not None and os.access(TIME_BINARY, os.X_OK):
        wrapped = [TIME_BINARY, "-f", "%M %U %S", "-o", str(time_file), *argv]
    with open(out_path, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        watched = psutil.Process(proc.pid)
        peak = 0
        try:
            while proc.poll() is None:
                peak = max(peak, _tree_rss(watched))
                time.sleep(SAMPLE_S)
        except BaseException:  # interrupted: take the whole command down with us
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
        wall = time.perf_counter() - started
    max_rss, cpu = 0, 0.0
    if wrapped is not argv and time_file is not None and time_file.exists():
        fields = time_file.read_text().split()  # "Command exited ..." may come first
        if len(fields) >= 3 and fields[-3].isdigit():
            max_rss = int(fields[-3]) * 1024
            cpu = float(fields[-2]) + float(fields[-1])
        time_file.unlink()
    text = log.read_text(errors="replace")[-3000:] if log else ""
    run = Run(argv, wall, peak, max_rss, proc.returncode, text, cpu)
    if check and run.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {run.returncode}:\n{text}")
    return run


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop the registries we started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def fresh_dir(path: Path) -> Path:
    """Remove ``path`` if it exists and create it empty."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    """Remove a file or directory tree if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def fresh_registry(workdir: Path) -> LocalRegistry:
    """Start a registry on empty storage under ``workdir`` (wiped first)."""
    return start_registry(fresh_dir(workdir))


class BlobPusher:
    """Put big seeded random layers into repositories without holding them in memory.

    A layer is uploaded once (one streamed PATCH, then PUT) and cross-repository
    mounted into every other repository that needs it.
    """

    def __init__(self, registry: LocalRegistry, client: httpx.Client) -> None:
        self.base = registry.url
        self.http = client
        self.home: dict[str, str] = {}

    @staticmethod
    def layer(seed: int, size: int) -> Blob:
        """Describe the streamed layer (seed, size) without keeping its bytes."""
        hasher, raw_hasher, total = hashlib.sha256(), hashlib.sha256(), 0
        for piece in stream_random_layer(seed, size, raw_hasher=raw_hasher):
            hasher.update(piece)
            total += len(piece)
        blob = Blob(OCI_LAYER, b"", "sha256:" + hasher.hexdigest(), total,
                    "sha256:" + raw_hasher.hexdigest())
        return blob

    def ensure(self, repository: str, blob: Blob, seed: int, size: int) -> None:
        """Make ``blob`` (built by :meth:`layer` from seed/size) present in ``repository``."""
        if self.http.head(f"{self.base}/v2/{repository}/blobs/{blob.digest}").status_code == 200:
            self.home.setdefault(blob.digest, repository)
            return
        source = self.home.get(blob.digest)
        if source is not None:
            answer = self.http.post(f"{self.base}/v2/{repository}/blobs/uploads/",
                                    params={"mount": blob.digest, "from": source})
            if answer.status_code == 201:
                return
        start = self.http.post(f"{self.base}/v2/{repository}/blobs/uploads/")
        start.raise_for_status()
        location = urljoin(self.base + "/", start.headers["Location"])
        patch = self.http.patch(location, content=stream_random_layer(seed, size),
                                headers={"Content-Type": "application/octet-stream"})
        patch.raise_for_status()
        location = urljoin(self.base + "/", patch.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self.http.put(f"{location}{sep}digest={blob.digest.replace(':', '%3A')}")
        done.raise_for_status()
        self.home[blob.digest] = repository


def sha256_rate(total: int = 512 * MB) -> float:
    """hashlib sha256 throughput in bytes/s over ``total`` bytes in 1 MiB updates."""
    chunk = os.urandom(1 << 20)
    hasher = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(total // len(chunk)):
        hasher.update(chunk)
    return (total // len(chunk)) * len(chunk) / (time.perf_counter() - started)


def disk_write_rate(directory: Path, total: int = 512 * MB, tries: int = 3) -> float:
    """Median of ``tries`` runs of: write ``total`` bytes to a file in ``directory`` in
    1 MiB writes and fsync it; bytes/s (the file is removed after each run).

    A virtual disk often absorbs a burst far faster than it sustains writes, and one
    run lands on either; the median of three is steadier.
    """
    chunk = os.urandom(1 << 20)
    path = directory / "disk-probe.bin"
    count = total // len(chunk)
    rates = []
    for _ in range(tries):
        started = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(count):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        rates.append(count * len(chunk) / (time.perf_counter() - started))
        path.unlink()
    return median(rates)


def curl_rate(url: str, tries: int = 3) -> float:
    """Median ``curl`` download speed of ``url`` to /dev/null in bytes/s (first try warms)."""
    speeds = []
    for _ in range(tries):
        out = subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{speed_download}",
                              url], capture_output=True, text=True, check=True)
        speeds.append(float(out.stdout.strip().replace(",", ".")))
    speeds.sort()
    return speeds[len(speeds) // 2]


def curl_upload_rate(registry: LocalRegistry, directory: Path, total: int = 512 * MB) -> float:
    """``curl -T`` speed of a monolithic blob upload (POST, then PUT ?digest=) in bytes/s.

    The registry must be empty of this random blob; the probe file is removed afterwards.
    """
    path = directory / "upload-probe.bin"
    chunk, hasher = os.urandom(1 << 20), hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(total // len(chunk)):
            piece = i.to_bytes(8, "big") + chunk[8:]
            hasher.update(piece)
            f.write(piece)
    try:
        with registry.client() as http:
            start = http.post(f"{registry.url}/v2/probe/upload/blobs/uploads/")
            start.raise_for_status()
        location = urljoin(registry.url + "/", start.headers["Location"])
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest=sha256%3A{hasher.hexdigest()}"
        out = subprocess.run(["curl", "-s", "-f", "-T", str(path), "-H",
                              "Content-Type: application/octet-stream", "-o", "/dev/null",
                              "-w", "%{speed_upload}", url],
                             capture_output=True, text=True, check=True)
        return float(out.stdout.strip().replace(",", "."))
    finally:
        path.unlink()


class Heartbeat:
    """Print a dot to stderr every ``every_s`` seconds while a long step runs."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            print(".", end="", file=sys.stderr, flush=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> dict:
    """This machine, for a benchmark's JSON: CPUs, RAM in bytes, load averages, Python."""
    return {"cpus": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total,
            "loadavg": os.getloadavg(), "python": platform.python_version()}


def machine_line() -> str:
    """The first line of a benchmark's report: date, CPUs, RAM, load average, Python."""
    m = machine()
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {m['cpus']} CPUs, "
            f"{m['ram_bytes'] / 2**30:.1f} GiB RAM, load avg "
            f"{' '.join(f'{x:.1f}' for x in m['loadavg'])}, Python {m['python']}")


def mb(value: float) -> str:
    """Bytes as ``123.4 MB`` (10**6)."""
    return f"{value / MB:.1f} MB"


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def prepare_workdir(args, parser) -> None:  # type: ignore[no-untyped-def]
    """The start every skopeo benchmark shares: SIGTERM ends it cleanly, skopeo must be
    installed, ``args.workdir`` is made absolute and created, its ``logs`` emptied."""
    exit_on_sigterm()
    if shutil.which("skopeo") is None:
        parser.error("skopeo is not installed")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    fresh_dir(args.workdir / "logs")


def run_rounds(bench, args) -> None:  # type: ignore[no-untyped-def]
    """``args.warmup`` uncounted rounds of ``bench.round``, then ``args.runs`` counted."""
    for index in range(args.warmup):
        bench.round(index, warmup=True)
    for index in range(args.runs):
        bench.round(index)
