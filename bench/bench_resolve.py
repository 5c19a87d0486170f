"""Image-set resolution against plain tags-list calls, on one local registry.

The registry holds ``--repositories`` repositories (default 200) of ``--tags`` tags each
(default 50: semver, pre-releases and other tags), its seeded storage cached under the
work directory. Each round times, in an order that rotates from round to round:

* baseline: ``GET /v2/<repository>/tags/list`` for every repository, 8 at a time
  (httpx, one client, a thread pool of 8), bodies parsed as JSON;
* resolve:  ``bundler.resolve_image_set`` of the whole registry (the paged catalog walk,
  then each repository's tags list, ``--jobs`` at a time, a semver range and
  ``latest 5`` applied per repository), in this process.

Prints the medians, the ratio resolve/baseline and PASS/FAIL against issue 12's
target (at most 2x), with the CPU seconds each way costs this process (the client
side) and the load average. Seconds are wall time.

Usage:
    python bench/bench_resolve.py --runs 5                      # about a minute once seeded
    python bench/bench_resolve.py --repositories 50 --tags 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _harness import exit_on_sigterm, fresh_dir, median

from bundler.engine.selection import cli_image_set, resolve_image_set
from bundler.engine.tagfilter import TagFilter
from bundler.registry.client import RegistryClient, TransportOptions
from bundler.sandbox import start_registry
from bundler.sandbox.imagesets import seed_catalog

SET_VERSION = 1
TARGET = 2.0


def tag_names(count: int) -> list[str]:
    """``count`` tags: 60% semver (some ``v``), 20% pre-releases, 20% other."""
    out: list[str] = []
    for i in range(count):
        kind = i % 5
        if kind in (0, 1, 2):
            out.append(f"{'v' if i % 7 == 0 else ''}{i // 15}.{i % 15}.{i % 3}")
        elif kind == 3:
            out.append(f"{i // 15 + 1}.0.0-rc.{i}")
        else:
            out.append(f"build-{i:03d}")
    return list(dict.fromkeys(out))


def seeded(workdir: Path, repositories: int, tags: int):  # type: ignore[no-untyped-def]
    """The source registry, seeded once per (repositories, tags) and kept."""
    home = workdir / f"resolve-{repositories}x{tags}-v{SET_VERSION}"
    marker = home / "seeded"
    if not marker.exists():
        fresh_dir(home)
    registry = start_registry(home / "registry")
    if not marker.exists():
        started = time.monotonic()
        names = [f"team-{i % 10}/svc-{i:03d}" for i in range(repositories)]
        seed_catalog(registry, names, tags=tag_names(tags), workers=8)
        marker.write_text(json.dumps({"repositories": repositories, "tags": tags}))
        print(f"seeded {repositories} x {len(tag_names(tags))} tags in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return registry


def baseline(url: str, repositories: list[str]) -> float:
    """Seconds for plain tags-list GETs of every repository, 8 at a time."""
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=8)) as http:
        def get(repo: str) -> int:
            response = http.get(f"{url}/v2/{repo}/tags/list")
            response.raise_for_status()
            return len(response.json()["tags"])

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            total = sum(pool.map(get, repositories))
        seconds = time.monotonic() - started
    assert total > 0
    return seconds


def resolve(host: str, jobs: int) -> tuple[float, int]:
    """Seconds for resolving the whole registry, and the references selected."""
    image_set = cli_image_set([host], all_repositories=True,
                              tags=TagFilter.build(semver=">=1.0.0 <3", latest=5))
    started = time.monotonic()
    resolution = resolve_image_set(image_set, options=TransportOptions(tls_verify=False),
                                   jobs=jobs)
    return time.monotonic() - started, len(resolution.selected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench"))
    parser.add_argument("--repositories", type=int, default=200)
    parser.add_argument("--tags", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    args = parser.parse_args()
    exit_on_sigterm()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    registry = seeded(args.workdir, args.repositories, args.tags)
    try:
        with RegistryClient(registry.host, TransportOptions(tls_verify=False)) as client:
            repositories = client.catalog()
        times: dict[str, list[float]] = {"baseline": [], "resolve": []}
        cpu: dict[str, list[float]] = {"baseline": [], "resolve": []}
        selected = 0
        for index in range(args.warmup + args.runs):
            order = ["baseline", "resolve"] if index % 2 == 0 else ["resolve", "baseline"]
            for way in order:
                started_cpu = time.process_time()
                if way == "baseline":
                    seconds = baseline(registry.url, repositories)
                else:
                    seconds, selected = resolve(registry.host, args.jobs)
                if index >= args.warmup:
                    times[way].append(seconds)
                    cpu[way].append(time.process_time() - started_cpu)
        base, res = median(times["baseline"]), median(times["resolve"])
        ratio = res / base
        figures = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}",
            "repositories": len(repositories), "tagsPerRepository": len(tag_names(args.tags)),
            "selected": selected, "jobs": args.jobs, "runs": args.runs,
            "baselineS": round(base, 3), "resolveS": round(res, 3),
            "ratio": round(ratio, 2), "target": TARGET, "pass": ratio <= TARGET,
            "samples": {k: [round(v, 3) for v in vs] for k, vs in times.items()},
            "cpuS": {k: round(median(vs), 3) for k, vs in cpu.items()},
            "loadAverage": os.getloadavg()[0],
        }
        print(f"{len(repositories)} repositories x {len(tag_names(args.tags))} tags: "
              f"baseline (tags/list, 8 at a time) {base:.3f} s; resolve (catalog + tags "
              f"lists + filters, --jobs {args.jobs}) {res:.3f} s; ratio {ratio:.2f} "
              f"(target <= {TARGET}): {'PASS' if ratio <= TARGET else 'FAIL'}; "
              f"{selected} references selected; client CPU {median(cpu['baseline']):.3f} s "
              f"vs {median(cpu['resolve']):.3f} s; load average {os.getloadavg()[0]:.1f}")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        registry.stop()


if __name__ == "__main__":
    main()
