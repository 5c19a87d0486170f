"""Plot per-image time against the number of images from ``bench_scale.py --json`` files.

Reads one or more JSON files written by ``bench_scale.py`` (bundler's commands at 500,
2,000 and 20,000 images; the peers' runs, ``--peers ... --peers-only``), merges their
figures by image count, and draws two panels with a logarithmic x axis: wall
milliseconds per image and CPU milliseconds per image, one line per command of
bundler (solid) and per step of each peer (dashed). A flat line is a cost linear in the
number of images.

Usage:
    pip install matplotlib
    python bench/plot_scale.py scale.json peers-500.json -o docs/scale.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BUNDLER = ("export", "import", "mirror", "no-op import", "verify", "list")
MARKERS = {"skopeo": "s", "crane": "^", "regctl": "D"}


def merge(paths: list[Path]) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """command -> image count -> figures, from every file (a later file wins); and the
    machine lines (date, load average) of the runs."""
    series: dict[str, dict[int, dict]] = {}
    notes = []
    for path in paths:
        doc = json.loads(path.read_text())
        load = doc.get("machine", {}).get("loadavg")
        notes.append(f"{doc.get('date', '?')}"
                     + (f", load {load[0]:.1f}" if load else ""))
        for size, commands in doc["results"].items():
            for name, figures in commands.items():
                series.setdefault(name, {})[int(size)] = figures
    return series, notes


def plot(series: dict[str, dict[int, dict]], notes: list[str], output: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharex=True)
    names = [n for n in BUNDLER if n in series] + sorted(n for n in series if n not in BUNDLER)
    for ax, key, title in ((axes[0], "wall_s", "wall time per image"),
                           (axes[1], "cpu_s", "CPU time per image (user + system)")):
        colors = plt.get_cmap("tab20").colors
        for number, name in enumerate(names):
            sizes = sorted(series[name])
            values = [series[name][n][key] / n * 1000 for n in sizes]
            peer = name not in BUNDLER
            ax.plot(sizes, values, marker=MARKERS.get(name.split()[0], "o") if peer else "o",
                    linestyle="--" if peer else "-", color=colors[number % len(colors)],
                    markersize=7 if peer else 5, label=name if peer else f"bundler {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("images")
        ax.set_ylabel("milliseconds per image")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    sizes = sorted({n for s in series.values() for n in s})
    axes[0].set_xticks(sizes, [f"{n:,}" for n in sizes])
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("bundler and its peers: per-image cost against image count "
                 "(tiny images, 20 tags per repository; bundler --jobs 8)", fontsize=11)
    fig.text(0.01, 0.01, "runs: " + "; ".join(notes) + " (2 CPUs, shared host)", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(output, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, nargs="+", help="bench_scale.py --json files")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/scale.png"),
                        help="the PNG to write (default docs/scale.png)")
    args = parser.parse_args()
    series, notes = merge(args.json)
    if not series:
        parser.error("no figures in the files")
    plot(series, notes, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
