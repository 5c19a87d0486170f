"""bundler against every peer that runs here: export, import and mirror, side by side.

The source is the benchmark set of ``bench_vs_skopeo.py`` (26 tags in 6 repositories,
shared base layers, two multi-arch indexes; about 700 MiB of distinct blobs at
``--scale 1``, cached under the work directory). The peers are skopeo (Debian) and, when
``scripts/build-tools.sh`` built them into ``.tools/bin``, crane, oras and regctl. For each
of ``--runs`` rounds (after ``--warmup`` uncounted ones), with the tools' order rotated
from round to round, every tool runs three steps:

* export: the whole list into ONE layout directory (bundler ``export -f``; ``crane pull
  --format oci`` of every reference at once; a loop of ``skopeo copy --all ... oci:DIR:NAME``,
  ``oras cp --to-oci-layout DIR:TAG`` or ``regctl image copy ... ocidir://DIR:TAG``);
* import: that layout into a registry on empty storage (bundler ``import``; a loop of
  ``skopeo copy``, ``oras cp --from-oci-layout`` or ``regctl image copy`` per tag; crane
  cannot push one tag of a many-image layout, so its loop of ``crane push`` reads one
  layout per image, written by ``crane pull`` before the rounds and not timed);
* mirror: registry to registry on empty storage (bundler ``mirror -f``; a loop of
  ``skopeo copy --all``, ``crane copy``, ``oras cp`` or ``regctl image copy`` per tag).

With ``--latency-ms N`` every tool talks to both registries through a TCP proxy on
loopback that holds each piece of data N ms in each direction (``bundler.sandbox.latency``:
a round trip costs 2N ms more, a new connection one round trip more, at most 8 MiB in
flight per direction of a connection): the slow link of issue #17, part 6.

Each run records wall time, CPU seconds (``/usr/bin/time``: user + system of the tool's
process tree) and peak RSS. The report gives medians, each peer's wall time over
bundler's, CPU-ms per MB of unique bytes, and PASS/FAIL against the targets of issue
#17 on this set: export and import at most 0.8x crane and 0.45x skopeo, mirror at most
0.8x ``crane copy``. MB is 10**6 bytes.

Usage:
    bash scripts/build-tools.sh                              # build crane, oras, regctl
    python bench/bench_peers.py --scale 0.1 --runs 1      # a quick check
    python bench/bench_peers.py --runs 3 --json peers.json
    python bench/bench_peers.py --latency-ms 25 --runs 1 --json slow.json   # slow link
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from _harness import (
    MB,
    Run,
    bundler_command,
    fresh_dir,
    fresh_registry,
    machine,
    machine_line,
    mb,
    measure,
    median,
    prepare_workdir,
    remove,
    run_rounds,
)
from bench_vs_skopeo import SET_VERSION, SourceSet, seeded_source

from bundler.sandbox import LocalRegistry
from bundler.sandbox.latency import LatencyProxy

PREFIX = "mirror"
STEPS = ("export", "import", "mirror")
TOOLS_BIN = Path(__file__).resolve().parent.parent / ".tools" / "bin"
GO_PEERS = ("crane", "oras", "regctl")


def tag_of(name: str) -> str:
    """A layout tag for ``repository:tag`` (oras and regctl name layout entries by tag)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)


class Bench:
    """Runs and records every measured step of every tool."""

    def __init__(self, args: argparse.Namespace, source: SourceSet, tools: list[str]) -> None:
        self.args, self.source, self.tools = args, source, tools
        self.delay_s = args.latency_ms / 1000
        self.source_proxy = (LatencyProxy(source.registry.host, self.delay_s).start()
                             if self.delay_s else None)
        self.source_host = (self.source_proxy.host if self.source_proxy
                            else source.registry.host)
        self.work: Path = args.workdir
        self.cli = bundler_command()
        self.jobs = str(args.jobs)
        self.env = dict(os.environ, HOME=str(self.work / "home"))  # regctl's config
        (self.work / "home").mkdir(exist_ok=True)
        self.times: dict[str, dict[str, list[float]]] = {s: {} for s in STEPS}
        self.cpu: dict[str, dict[str, list[float]]] = {s: {} for s in STEPS}
        self.rss: dict[str, dict[str, list[int]]] = {s: {} for s in STEPS}
        self.warmup_times: dict[str, dict[str, list[float]]] = {s: {} for s in STEPS}
        self.images_file = self.work / "images.txt"
        self.images_file.write_text("\n".join(self.ref(n) for n in source.names) + "\n")
        self.commands: dict[str, dict[str, str]] = {s: {} for s in STEPS}

    def ref(self, name: str) -> str:
        """``repository:tag`` on the source registry, as the tools reach it (through
        the slow link's proxy when there is one)."""
        return f"{self.source_host}/{name}"

    def close(self) -> None:
        if self.source_proxy is not None:
            self.source_proxy.stop()

    def peer(self, name: str) -> str:
        return str(TOOLS_BIN / name) if name in GO_PEERS else name

    def layout(self, tool: str) -> Path:
        return self.work / f"layout-{tool}"

    def script(self, name: str, commands: list[list[str]]) -> list[str]:
        path = self.work / f"{name}.sh"
        path.write_text("set -e\n" + "\n".join(shlex.join(c) for c in commands) + "\n")
        return ["sh", str(path)]

    # -- commands ------------------------------------------------------------------
    def export(self, tool: str) -> list[str]:
        out, names, src = self.layout(tool), self.source.names, self.ref
        if tool == "bundler":
            return [*self.cli, "export", "-f", str(self.images_file), "-o", str(out), "-q",
                    "--jobs", self.jobs]
        if tool == "crane":
            return [self.peer("crane"), "pull", "--insecure", "--format", "oci",
                    "--annotate-ref", *[src(n) for n in names], str(out)]
        if tool == "skopeo":
            return self.script(f"{tool}-export", [[
                "skopeo", "copy", "-q", "--all", "--src-tls-verify=false",
                f"docker://{src(n)}", f"oci:{out}:{n}"] for n in names])
        if tool == "oras":
            return self.script(f"{tool}-export", [[
                self.peer("oras"), "cp", "--from-plain-http", "--to-oci-layout",
                src(n), f"{out}:{tag_of(n)}"] for n in names])
        return self.script(f"{tool}-export", [[
            self.peer("regctl"), "image", "copy", src(n), f"ocidir://{out}:{tag_of(n)}"]
            for n in names])

    def import_(self, tool: str, dest: str) -> list[str]:
        out, names = self.layout(tool), self.source.names
        if tool == "bundler":
            return [*self.cli, "import", str(out), "--to", f"{dest}/{PREFIX}", "-q",
                    "--jobs", self.jobs]
        if tool == "crane":
            return self.script(f"{tool}-import", [[
                self.peer("crane"), "push", "--insecure", str(self.crane_single(n)),
                f"{dest}/{PREFIX}/{n}"] for n in names])
        if tool == "skopeo":
            return self.script(f"{tool}-import", [[
                "skopeo", "copy", "-q", "--all", "--dest-tls-verify=false", f"oci:{out}:{n}",
                f"docker://{dest}/{PREFIX}/{n}"] for n in names])
        if tool == "oras":
            return self.script(f"{tool}-import", [[
                self.peer("oras"), "cp", "--from-oci-layout", "--to-plain-http",
                f"{out}:{tag_of(n)}", f"{dest}/{PREFIX}/{n}"] for n in names])
        return self.script(f"{tool}-import", [[
            self.peer("regctl"), "image", "copy", f"ocidir://{out}:{tag_of(n)}",
            f"{dest}/{PREFIX}/{n}"] for n in names])

    def mirror(self, tool: str, dest: str) -> list[str]:
        names, src = self.source.names, self.ref
        if tool == "bundler":
            return [*self.cli, "mirror", "-f", str(self.images_file), "--to",
                    f"{dest}/{PREFIX}", "-q", "--jobs", self.jobs]
        per_tag = {
            "crane": lambda n: [self.peer("crane"), "copy", "--insecure", src(n),
                                f"{dest}/{PREFIX}/{n}"],
            "skopeo": lambda n: ["skopeo", "copy", "-q", "--all", "--src-tls-verify=false",
                                 "--dest-tls-verify=false", f"docker://{src(n)}",
                                 f"docker://{dest}/{PREFIX}/{n}"],
            "oras": lambda n: [self.peer("oras"), "cp", "--from-plain-http", "--to-plain-http",
                               src(n), f"{dest}/{PREFIX}/{n}"],
            "regctl": lambda n: [self.peer("regctl"), "image", "copy", src(n),
                                 f"{dest}/{PREFIX}/{n}"],
        }[tool]
        return self.script(f"{tool}-mirror", [per_tag(n) for n in names])

    def crane_single(self, name: str) -> Path:
        return self.work / "crane-single" / tag_of(name)

    # -- preparing -----------------------------------------------------------------
    def prepare(self) -> None:
        """Untimed: regctl's plain-http setting for the loopback registries, and the
        one-image layouts crane's import reads."""
        if "regctl" in self.tools:
            subprocess.run([self.peer("regctl"), "registry", "set", "--tls", "disabled",
                            self.source_host], env=self.env, check=True,
                           stdout=subprocess.DEVNULL)
        if "crane" in self.tools:
            fresh_dir(self.work / "crane-single")
            for n in self.source.names:
                subprocess.run([self.peer("crane"), "pull", "--insecure", "--format", "oci",
                                self.source.ref(n), str(self.crane_single(n))], check=True,
                               stdout=subprocess.DEVNULL)

    # -- measuring -----------------------------------------------------------------
    def run(self, step: str, tool: str, argv: list[str], index: int, warmup: bool) -> None:
        os.sync()  # what earlier steps wrote is on disk before this step's clock starts
        run: Run = measure(argv, log=self.work / "logs" / f"{step}-{tool}-{index}.log",
                           env=self.env)
        self.commands[step][tool] = (Path(argv[1]).read_text() if argv[0] == "sh"
                                     else shlex.join(argv))
        if warmup:
            self.warmup_times[step].setdefault(tool, []).append(run.wall_s)
            print(f"  {step:<7} {tool:<8} {run.wall_s:8.2f} s  (warm-up)", file=sys.stderr,
                  flush=True)
            return
        self.times[step].setdefault(tool, []).append(run.wall_s)
        self.cpu[step].setdefault(tool, []).append(run.cpu_s)
        self.rss[step].setdefault(tool, []).append(run.rss)
        print(f"  {step:<7} {tool:<8} {run.wall_s:8.2f} s  CPU {run.cpu_s:6.2f} s  peak RSS "
              f"{mb(run.rss)}", file=sys.stderr, flush=True)

    def destination(self, tool: str) -> tuple[LocalRegistry, LatencyProxy | None, str]:
        """A registry on empty storage, the slow link's proxy in front of it (or None),
        and the ``host:port`` the tools are to push to."""
        dest = fresh_registry(self.work / "dest")
        proxy = LatencyProxy(dest.host, self.delay_s).start() if self.delay_s else None
        host = proxy.host if proxy else dest.host
        if tool == "regctl":
            subprocess.run([self.peer("regctl"), "registry", "set", "--tls", "disabled",
                            host], env=self.env, check=True, stdout=subprocess.DEVNULL)
        return dest, proxy, host

    def round(self, index: int, *, warmup: bool = False) -> None:
        shift = index % len(self.tools)
        order = self.tools[shift:] + self.tools[:shift]
        total = self.args.warmup if warmup else self.args.runs
        print(f"{'warm-up round' if warmup else 'round'} {index + 1}/{total}: "
              f"{', '.join(order)}", file=sys.stderr, flush=True)
        for tool in order:
            remove(self.layout(tool))
            self.run("export", tool, self.export(tool), index, warmup)
        for step in ("import", "mirror"):
            for tool in order:
                dest, proxy, host = self.destination(tool)
                try:
                    argv = (self.import_(tool, host) if step == "import"
                            else self.mirror(tool, host))
                    self.run(step, tool, argv, index, warmup)
                finally:
                    if proxy is not None:
                        proxy.stop()
                    dest.stop()
                    remove(self.work / "dest")
        for tool in order:
            remove(self.layout(tool))


def available_tools(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    """The tools that can run here, and why each other one cannot."""
    tools, missing = ["bundler"], {}
    for tool in wanted:
        if tool == "skopeo":
            if shutil.which("skopeo"):
                tools.append(tool)
            else:
                missing[tool] = "skopeo is not installed (apt-get install skopeo)"
        elif os.access(TOOLS_BIN / tool, os.X_OK):
            tools.append(tool)
        else:
            missing[tool] = f"not built: run bash scripts/build-tools.sh ({TOOLS_BIN / tool})"
    return tools, missing


def version(tool: str, bench: Bench) -> str:
    argv = {"bundler": [*bench.cli, "--version"], "skopeo": ["skopeo", "--version"],
            "crane": [bench.peer("crane"), "version"], "oras": [bench.peer("oras"), "version"],
            "regctl": [bench.peer("regctl"), "version", "--format", "{{.VCSTag}}"]}[tool]
    out = subprocess.run(argv, capture_output=True, text=True, env=bench.env).stdout
    words = out.split()
    return words[2] if tool in ("bundler", "skopeo") and len(words) > 2 else (
        words[1] if tool == "oras" and len(words) > 1 else (words[0] if words else "?"))


def report(bench: Bench, missing: dict[str, str]) -> dict:
    """Print the tables and return the JSON document."""
    args, source = bench.args, bench.source
    unique_mb = source.unique_bytes / MB
    med = {s: {t: median(v) for t, v in bench.times[s].items()} for s in STEPS}
    cpu = {s: {t: median(v) for t, v in bench.cpu[s].items()} for s in STEPS}
    peak = {s: {t: max(v) for t, v in bench.rss[s].items()} for s in STEPS}
    print()
    print(machine_line())
    print(f"image set {SET_VERSION} scale {args.scale:g}: {len(source.names)} tags, "
          f"{source.blobs} distinct blobs, {mb(source.unique_bytes)} unique; runs {args.runs} "
          f"(after {args.warmup} warm-up), bundler --jobs {args.jobs}"
          + (f"; slow link: +{args.latency_ms:g} ms each way" if args.latency_ms else
             "; loopback"))
    versions = {t: version(t, bench) for t in bench.tools}
    print("tools: " + ", ".join(f"{t} {v}" for t, v in versions.items()))
    for tool, why in missing.items():
        print(f"not run: {tool}: {why}")
    print()
    print(f"{'step':<7} {'tool':<8} {'median s':>9} {'/bundler':>9} {'CPU s':>7} "
          f"{'CPU ms/MB':>10} {'peak RSS':>10}")
    for step in STEPS:
        base = med[step]["bundler"]
        for tool in bench.tools:
            print(f"{step:<7} {tool:<8} {med[step][tool]:>9.2f} {med[step][tool] / base:>9.2f} "
                  f"{cpu[step][tool]:>7.2f} {cpu[step][tool] * 1000 / unique_mb:>10.2f} "
                  f"{mb(peak[step][tool]):>10}")
    targets: dict[str, bool] = {}
    for step in ("export", "import") if not args.latency_ms else ():  # loopback targets
        for peer, limit in (("crane", 0.8), ("skopeo", 0.45)):
            if peer in med[step]:
                targets[f"{step} <= {limit}x {peer}"] = (
                    med[step]["bundler"] <= limit * med[step][peer])
    if "crane" in med["mirror"] and not args.latency_ms:
        targets["mirror <= 0.8x crane copy"] = (
            med["mirror"]["bundler"] <= 0.8 * med["mirror"]["crane"])
    if args.latency_ms:
        for step in STEPS:
            for tool in bench.tools[1:]:
                targets[f"slow link: {step} <= 0.5x {tool}"] = (
                    med[step]["bundler"] <= 0.5 * med[step][tool])
    print()
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "set": {"version": SET_VERSION, "scale": args.scale, "tags": len(source.names),
                "blobs": source.blobs, "unique_bytes": source.unique_bytes},
        "runs": args.runs, "warmup_rounds": args.warmup, "jobs": args.jobs,
        "latency_ms": args.latency_ms,
        "tools": versions, "not_run": missing,
        "seconds": bench.times, "warmup_seconds": bench.warmup_times,
        "cpu_seconds": bench.cpu, "median_s": med, "median_cpu_s": cpu,
        "cpu_ms_per_mb": {s: {t: c * 1000 / unique_mb for t, c in v.items()}
                          for s, v in cpu.items()},
        "peak_rss_bytes": peak, "targets": targets, "commands": bench.commands,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted rounds before them (default 1)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the full set (0.1 for a quick check)")
    parser.add_argument("--jobs", type=int, default=8, help="bundler --jobs (default 8)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="put a proxy adding this many ms each way in front of both "
                             "registries (default 0: plain loopback)")
    parser.add_argument("--tools", default="skopeo,crane,oras,regctl",
                        help="peers to race, comma-separated (default all four)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bundler-bench-peers"),
                        help="logs, layouts and the cached seeded source "
                             "(default /tmp/bundler-bench-peers)")
    parser.add_argument("--json", type=Path, help="write the results to this file")
    args = parser.parse_args()
    prepare_workdir(args, parser)
    if args.latency_ms < 0:
        parser.error("--latency-ms: not negative")
    tools, missing = available_tools([t for t in args.tools.split(",") if t])
    source = seeded_source(args.workdir, args.scale)
    bench = Bench(args, source, tools)
    try:
        bench.prepare()
        run_rounds(bench, args)
    finally:
        bench.close()
        source.registry.stop()
        for tool in tools:
            remove(bench.layout(tool))
    doc = report(bench, missing)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(doc["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
