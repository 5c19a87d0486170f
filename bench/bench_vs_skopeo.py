"""bundler against skopeo on this machine: export, import and no-op runs, side by side.

Starts a source registry holding a seeded, realistic image set (26 tags in 6
repositories, shared base layers, two multi-arch indexes with attestations, about
700 MiB of distinct blobs at ``--scale 1``; the seeded storage is cached under the work
directory, keyed by ``SET_VERSION`` and the scale) and, for each of ``--runs`` rounds,
alternating which tool goes first (after ``--warmup`` rounds that are run the same way
and not counted: the first round otherwise meets a cold page cache and a freshly
started registry, and whichever tool goes first in it pays for that):

* export:   ``bundler export -f images.txt -o DIR`` vs a shell loop of
  ``skopeo copy --all docker://REF oci:SHARED:NAME`` into one shared layout;
* no-op re-export of the same list into the complete bundle / layout;
* import:   ``bundler import DIR --to REG2/mirror`` vs a loop of
  ``skopeo copy --all oci:SHARED:NAME docker://REG2/mirror/NAME`` (a destination
  registry on empty storage for each tool and round);
* no-op re-import into the complete destination.

It prints medians, the ratio bundler/skopeo, bundler's peak RSS and the unique-byte
throughput next to this machine's limits measured in the same run (sha256 of hashlib,
disk write with fsync, curl download from the source registry), with PASS/FAIL against
the targets of issue #6. MB is 10**6 bytes.

Usage:
    python bench/bench_vs_skopeo.py --scale 0.1 --runs 1    # about a minute
    python bench/bench_vs_skopeo.py --json results.json     # full size, 3 runs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from _harness import (
    MB,
    BlobPusher,
    Heartbeat,
    Run,
    bundler_command,
    curl_rate,
    curl_upload_rate,
    disk_write_rate,
    fresh_registry,
    machine,
    machine_line,
    mb,
    measure,
    median,
    prepare_workdir,
    remove,
    run_rounds,
    sha256_rate,
)

from bundler.sandbox import LocalRegistry, make_image, make_index, push, start_registry
from bundler.sandbox.images import Blob, Image, Index

SET_VERSION = "set-v1"
MIB = 1 << 20
MIN_LAYER = 4096
PREFIX = "mirror"

# name -> (seed, MiB at scale 1). Big layers are streamed, never held in memory.
LAYERS: dict[str, tuple[int, float]] = {
    "debian": (101, 40), "debian-arm64": (102, 38), "debian-patch": (103, 2),
    "alpine": (104, 8), "alpine-patch": (105, 1),
    "py311": (111, 45), "py312": (112, 48), "py312-slim": (113, 30), "py313": (114, 50),
    "pip": (115, 3), "py312-arm64": (116, 46),
    "node18": (121, 40), "node20": (122, 42), "node22": (123, 44), "node20-alpine": (124, 35),
    "web1.0": (131, 15), "web1.1": (132, 16), "web1.2": (133, 17), "web2.0": (134, 20),
    "web2.0-arm64": (135, 20),
    "worker1.0": (141, 12), "worker1.1": (142, 13), "worker1.2": (143, 14),
    "cli1": (151, 25), "cli2": (152, 27), "cli3": (153, 30),
}

# (repository, tag, layers) for single images; indexes below.
IMAGES: list[tuple[str, str, list[str]]] = [
    ("base/os", "debian-12", ["debian"]),
    ("base/os", "debian-12.1", ["debian", "debian-patch"]),
    ("base/os", "alpine-3", ["alpine"]),
    ("base/os", "alpine-3.1", ["alpine", "alpine-patch"]),
    ("lang/python", "3.11", ["debian", "py311", "pip"]),
    ("lang/python", "3.12", ["debian", "py312", "pip"]),
    ("lang/python", "3.12-slim", ["debian", "py312-slim"]),
    ("lang/python", "3.13", ["debian", "py313", "pip"]),
    ("lang/node", "18", ["debian", "node18"]),
    ("lang/node", "20", ["debian", "node20"]),
    ("lang/node", "22", ["debian", "node22"]),
    ("lang/node", "20-alpine", ["alpine", "node20-alpine"]),
    ("apps/web", "1.0", ["debian", "py312", "pip", "web1.0"]),
    ("apps/web", "1.1", ["debian", "py312", "pip", "web1.1"]),
    ("apps/web", "1.2", ["debian", "py312", "pip", "web1.2"]),
    ("apps/web", "latest", ["debian", "py312", "pip", "web1.2"]),
    ("apps/worker", "1.0", ["debian", "node20", "worker1.0"]),
    ("apps/worker", "1.1", ["debian", "node20", "worker1.1"]),
    ("apps/worker", "1.2", ["debian", "node20", "worker1.2"]),
    ("apps/worker", "latest", ["debian", "node20", "worker1.2"]),
    ("tools/cli", "1", ["alpine", "cli1"]),
    ("tools/cli", "2", ["alpine", "cli2"]),
    ("tools/cli", "3", ["alpine", "cli3"]),
    ("tools/cli", "latest", ["alpine", "cli3"]),
]
# (repository, tag, [(architecture, variant, layers)])
INDEXES: list[tuple[str, str, list[tuple[str, str | None, list[str]]]]] = [
    ("base/os", "debian-12-multi", [("amd64", None, ["debian"]),
                                    ("arm64", "v8", ["debian-arm64"])]),
    ("apps/web", "2.0", [("amd64", None, ["debian", "py312", "pip", "web2.0"]),
                         ("arm64", "v8", ["debian-arm64", "py312-arm64", "web2.0-arm64"])]),
]


@dataclass
class SourceSet:
    """The seeded source: the running registry and what it holds."""

    registry: LocalRegistry
    names: list[str]          # repository:tag, in push order
    unique_bytes: int         # distinct config + layer + manifest bytes
    blobs: int                # distinct config + layer blobs
    largest: tuple[str, str]  # (repository, digest) of the largest blob

    def ref(self, name: str) -> str:
        """Full reference of ``repository:tag`` on the source registry."""
        return f"{self.registry.host}/{name}"


def _layer_size(mib: float, scale: float) -> int:
    return max(MIN_LAYER, int(mib * scale * MIB))


def _seed(registry: LocalRegistry, scale: float) -> dict:
    """Push the whole set; return the marker document describing it."""
    with registry.client(timeout=600.0) as http:
        pusher = BlobPusher(registry, http)
        blobs: dict[str, Blob] = {}
        for name, (seed, mib) in LAYERS.items():
            blobs[name] = pusher.layer(seed, _layer_size(mib, scale))

        def image(repository: str, layers: list[str], **kw: str | None) -> Image:
            for layer in layers:
                seed, mib = LAYERS[layer]
                pusher.ensure(repository, blobs[layer], seed, _layer_size(mib, scale))
            return make_image([blobs[n] for n in layers], **kw)  # type: ignore[arg-type]

        names: list[str] = []
        sizes: dict[str, int] = {}
        manifest_bytes = 0
        largest = ("", "", -1)
        for repository, tag, layers in IMAGES:
            item: Image | Index = image(repository, layers)
            push(registry, repository, item, tag=tag, client=http)
            names.append(f"{repository}:{tag}")
            for blob in item.blobs:
                sizes[blob.digest] = blob.size
                if blob.size > largest[2]:
                    largest = (repository, blob.digest, blob.size)
            manifest_bytes += item.size
        for repository, tag, platforms in INDEXES:
            children = [image(repository, layers, architecture=arch, variant=variant)
                        for arch, variant, layers in platforms]
            item = make_index(children)
            push(registry, repository, item, tag=tag, client=http)
            names.append(f"{repository}:{tag}")
            for blob in item.blobs:
                sizes[blob.digest] = blob.size
            manifest_bytes += item.size + sum(c.size for c in item.children)
    return {
        "version": SET_VERSION,
        "scale": scale,
        "names": names,
        "unique_bytes": sum(sizes.values()) + manifest_bytes,
        "blobs": len(sizes),
        "largest": [largest[0], largest[1]],
    }


def seeded_source(workdir: Path, scale: float) -> SourceSet:
    """Start the source registry on cached storage, seeding it first when needed."""
    regdir = workdir / f"source-{SET_VERSION}-scale{scale:g}"
    marker = regdir / "seeded.json"
    if not marker.exists():
        print(f"seeding the image set at scale {scale:g} into {regdir} (cached) ...",
              end="", file=sys.stderr, flush=True)
        started = time.perf_counter()
        registry = fresh_registry(regdir)
        try:
            with Heartbeat():
                doc = _seed(registry, scale)
        except BaseException:
            registry.stop()
            raise
        marker.write_text(json.dumps(doc, indent=2))
        print(f" {time.perf_counter() - started:.0f} s", file=sys.stderr)
    else:
        registry = start_registry(regdir)
        doc = json.loads(marker.read_text())
    return SourceSet(registry, doc["names"], doc["unique_bytes"], doc["blobs"],
                     tuple(doc["largest"]))


def _script(path: Path, commands: list[list[str]]) -> list[str]:
    lines = ["set -e"] + [shlex.join(c) for c in commands]
    path.write_text("\n".join(lines) + "\n")
    return ["sh", str(path)]


class Bench:
    """Runs and records every measured step."""

    def __init__(self, args: argparse.Namespace, source: SourceSet) -> None:
        self.args = args
        self.work = args.workdir
        self.source = source
        self.cli = bundler_command()
        self.jobs = str(args.jobs)
        self.times: dict[str, dict[str, list[float]]] = {}
        self.rss: dict[str, dict[str, list[float]]] = {}
        self.cpu: dict[str, dict[str, list[float]]] = {}
        #: step -> tool -> wall seconds of the warm-up rounds (reported, not counted)
        self.warmup_times: dict[str, dict[str, list[float]]] = {}
        self.warming = False
        images = self.work / "images.txt"
        images.write_text("\n".join(source.ref(n) for n in source.names) + "\n")
        self.images_file = images
        self.bundle = self.work / "bundle"
        self.shared = self.work / "skopeo-layout"

    def record(self, step: str, tool: str, run: Run) -> None:
        if self.warming:
            self.warmup_times.setdefault(step, {}).setdefault(tool, []).append(run.wall_s)
            print(f"  {step:<10} {tool:<8} {run.wall_s:8.2f} s  (warm-up)", file=sys.stderr,
                  flush=True)
            return
        self.times.setdefault(step, {}).setdefault(tool, []).append(run.wall_s)
        self.rss.setdefault(step, {}).setdefault(tool, []).append(run.rss)
        self.cpu.setdefault(step, {}).setdefault(tool, []).append(run.cpu_s)
        print(f"  {step:<10} {tool:<8} {run.wall_s:8.2f} s  CPU {run.cpu_s:6.2f} s  "
              f"peak RSS {mb(run.rss)}",
              file=sys.stderr, flush=True)

    def measure(self, argv: list[str], name: str) -> Run:
        """Run one timed step after ``sync``: the data earlier steps wrote is on disk, so
        its writeback does not land on this step's clock (the same for both tools)."""
        os.sync()
        return measure(argv, log=self.log(name))

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    # -- commands -----------------------------------------------------------------
    def bundler_export(self) -> list[str]:
        return [*self.cli, "export", "-f", str(self.images_file), "-o", str(self.bundle),
                "-q", "--jobs", self.jobs]

    def skopeo_export(self) -> list[str]:
        return _script(self.work / "skopeo-export.sh", [
            ["skopeo", "copy", "-q", "--all", "--src-tls-verify=false",
             f"docker://{self.source.ref(n)}", f"oci:{self.shared}:{n}"]
            for n in self.source.names
        ])

    def bundler_import(self, dest: LocalRegistry) -> list[str]:
        return [*self.cli, "import", str(self.bundle), "--to", f"{dest.host}/{PREFIX}", "-q",
                "--jobs", self.jobs]

    def skopeo_import(self, dest: LocalRegistry) -> list[str]:
        return _script(self.work / "skopeo-import.sh", [
            ["skopeo", "copy", "-q", "--all", "--dest-tls-verify=false",
             f"oci:{self.shared}:{n}", f"docker://{dest.host}/{PREFIX}/{n}"]
            for n in self.source.names
        ])

    # -- one round -------------------------------------------------------------------
    def round(self, index: int, *, warmup: bool = False) -> None:
        """Run every step for both tools; a warm-up round is printed but not counted."""
        self.warming = warmup
        order = ["bundler", "skopeo"] if index % 2 == 0 else ["skopeo", "bundler"]
        title = (f"warm-up round {index + 1}/{self.args.warmup}" if warmup
                 else f"round {index + 1}/{self.args.runs}")
        print(f"{title} ({' first, '.join(order)} second)", file=sys.stderr, flush=True)
        for tool in order:
            remove(self.bundle if tool == "bundler" else self.shared)
            argv = self.bundler_export() if tool == "bundler" else self.skopeo_export()
            self.record("export", tool, self.measure(argv, f"export-{tool}-{index}"))
        for tool in order:
            argv = self.bundler_export() if tool == "bundler" else self.skopeo_export()
            self.record("re-export", tool, self.measure(argv, f"reexport-{tool}-{index}"))
        for tool in order:
            dest = fresh_registry(self.work / "dest")
            try:
                argv = self.bundler_import(dest) if tool == "bundler" else self.skopeo_import(dest)
                self.record("import", tool, self.measure(argv, f"import-{tool}-{index}"))
                self.record("re-import", tool,
                            self.measure(argv, f"reimport-{tool}-{index}"))
            finally:
                dest.stop()
                remove(self.work / "dest")


def machine_limits(workdir: Path, source: SourceSet, probe_bytes: int) -> dict[str, float]:
    """sha256, fsynced disk write and loopback curl download rates in bytes/s.

    The export target is checked against the slowest of these three.
    """
    repository, digest = source.largest
    url = f"{source.registry.url}/v2/{repository}/blobs/{digest}"
    return {
        "sha256": sha256_rate(probe_bytes),
        "disk_write_fsync": disk_write_rate(workdir, probe_bytes),
        "curl_download": curl_rate(url),
    }


def upload_limit(workdir: Path, probe_bytes: int) -> float:
    """``curl -T`` upload rate into an empty registry in bytes/s (context for import)."""
    registry = fresh_registry(workdir / "probe-registry")
    try:
        return curl_upload_rate(registry, workdir, probe_bytes)
    finally:
        registry.stop()
        remove(workdir / "probe-registry")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(bench: Bench, limits: dict[str, float], upload: float,
           args: argparse.Namespace) -> dict:
    """Print the table and return the JSON document."""
    source = bench.source
    med = {step: {tool: median(v) for tool, v in tools.items()}
           for step, tools in bench.times.items()}
    cpu = {step: {tool: median(v) for tool, v in tools.items()}
           for step, tools in bench.cpu.items()}
    peak = {step: {tool: max(v) for tool, v in tools.items()}
            for step, tools in bench.rss.items()}
    slowest = min(limits.values())
    export_rate = source.unique_bytes / med["export"]["bundler"]
    import_rate = source.unique_bytes / med["import"]["bundler"]
    bundler_peak = max(peak[s]["bundler"] for s in peak)
    ratio = {s: med[s]["bundler"] / med[s]["skopeo"] for s in med}
    targets = {
        "export <= 0.6x skopeo": ratio["export"] <= 0.6,
        "import <= 0.5x skopeo": ratio["import"] <= 0.5,
        "no-op re-export < 3 s": med["re-export"]["bundler"] < 3.0,
        "no-op re-import < 3 s": med["re-import"]["bundler"] < 3.0,
        "export >= 60% of slowest limit": export_rate >= 0.6 * slowest,
        f"peak RSS < 200 MB (--jobs {args.jobs})": bundler_peak < 200 * MB,
    }
    print()
    print(machine_line())
    print(f"image set {SET_VERSION} scale {args.scale:g}: {len(source.names)} tags, "
          f"{source.blobs} distinct blobs, {mb(source.unique_bytes)} unique; "
          f"runs {args.runs} (after {args.warmup} warm-up), bundler --jobs {args.jobs}")
    print()
    print(f"{'step':<10} {'bundler s':>10} {'skopeo s':>10} {'ratio':>7} "
          f"{'bundler CPU':>12} {'skopeo CPU':>11} {'bundler RSS':>12} {'skopeo RSS':>11}")
    for step in ("export", "re-export", "import", "re-import"):
        print(f"{step:<10} {med[step]['bundler']:>10.2f} {med[step]['skopeo']:>10.2f} "
              f"{ratio[step]:>7.2f} {cpu[step]['bundler']:>10.2f} s {cpu[step]['skopeo']:>9.2f} s "
              f"{mb(peak[step]['bundler']):>12} {mb(peak[step]['skopeo']):>11}")
    print()
    print(f"bundler export {export_rate / MB:.1f} MB/s, import {import_rate / MB:.1f} MB/s of "
          f"unique bytes; skopeo export "
          f"{source.unique_bytes / med['export']['skopeo'] / MB:.1f} MB/s, import "
          f"{source.unique_bytes / med['import']['skopeo'] / MB:.1f} MB/s")
    print("machine limits: " + ", ".join(f"{k} {v / MB:.0f} MB/s" for k, v in limits.items())
          + f"; (import context) curl_upload {upload / MB:.0f} MB/s")
    print()
    for name, ok in targets.items():
        print(f"{_verdict(ok)}  {name}")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "set": {"version": SET_VERSION, "scale": args.scale, "tags": len(source.names),
                "blobs": source.blobs, "unique_bytes": source.unique_bytes},
        "runs": args.runs,
        "warmup_rounds": args.warmup,
        "warmup_seconds": bench.warmup_times,
        "jobs": args.jobs,
        "seconds": bench.times,
        "cpu_seconds": bench.cpu,
        "median_s": med,
        "median_cpu_s": cpu,
        "ratio_bundler_over_skopeo": ratio,
        "peak_rss_bytes": peak,
        "bundler_mb_per_s": {"export": export_rate / MB, "import": import_rate / MB},
        "limits_mb_per_s": {k: v / MB for k, v in limits.items()},
        "curl_upload_mb_per_s": upload / MB,
        "targets": targets,
        "commands": {
            "bundler_export": shlex.join(bench.bundler_export()),
            "skopeo_export": (bench.work / "skopeo-export.sh").read_text(),
            "bundler_import": shlex.join([*bench.cli, "import", str(bench.bundle), "--to",
                                          f"REG2/{PREFIX}", "-q", "--jobs", bench.jobs]),
            "skopeo_import": (bench.work / "skopeo-import.sh").read_text(),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per step (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted rounds before them (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full set (714 MB of distinct blobs at 1.0; "
                             "0.1 for a quick check)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-skopeo"),
                        help="bundles, logs and the cached seeded source "
                             "(default /tmp/bundler-bench-skopeo)")
    parser.add_argument("--probe-mb", type=int, default=512,
                        help="bytes hashed / written for the machine limits, in MB "
                             "(default 512)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--keep", action="store_true",
                        help="keep the bundle and skopeo layout (the seeded source is cached)")
    args = parser.parse_args()
    prepare_workdir(args, parser)
    source = seeded_source(args.workdir, args.scale)
    bench = Bench(args, source)
    try:
        run_rounds(bench, args)
        # after the rounds: the probes write gigabytes, which no timed step should follow
        print("measuring machine limits ...", file=sys.stderr, flush=True)
        limits = machine_limits(args.workdir, source, args.probe_mb * MB)
        upload = upload_limit(args.workdir, args.probe_mb * MB)
        doc = report(bench, limits, upload, args)
    finally:
        source.registry.stop()
        if not args.keep:
            remove(bench.bundle)
            remove(bench.shared)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(doc["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
