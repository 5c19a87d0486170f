"""``bundler merge BASE DIFF -o FULL``: a differential bundle and its base made into one
full, standalone bundle, offline (to rebuild a standalone backup from a chain).

Exit status: 0 written; 1 an error (a blob in neither bundle, a damaged blob: nothing
is left that looks complete); 2 bad usage (BASE is not the bundle DIFF names, DIFF is no
differential bundle, a bundle that is not one or is read once only, an output directory
that is not empty), found before anything is written.
"""

from __future__ import annotations

import threading
from pathlib import Path

import click

from ..engine.export_receipts import holds_no_bundle
from ..engine.exporting import ExportResult
from ..engine.merging import check_merge, merge_bundles, open_in_place
from ..errors import BundlerError
from ..events import Tally
from ..stores.archive import output_format
from ..stores.archive_files import ArchiveStore
from ..termsafe import escape
from .options import MIN_SPLIT_SIZE, size_option
from .reporters import make_reporter
from .summary import export_summary, run

__all__ = ["merge_cmd"]


@click.command("merge")
@click.argument("base", type=click.Path())
@click.argument("diff", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(),
              help="The full bundle to write: a new (or empty) directory, NAME.tar or "
                   "NAME.tar.zst.")
@click.option("--format", "fmt", type=click.Choice(["dir", "tar", "tar.zst"]),
              help="Bundle format (default: from the output name).")
@click.option("--split-size", metavar="SIZE", callback=size_option(MIN_SPLIT_SIZE),
              help="Cut an archive into volumes NAME.000, NAME.001, ... of SIZE.")
@click.option("--compression-level", default=3, show_default=True, type=click.IntRange(1, 22),
              help="zstd level of a .tar.zst bundle.")
@click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent copies.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option("--progress", type=click.Choice(["auto", "bar", "plain", "json", "none"]),
              default="auto", show_default=True, help="How to show progress on stderr.")
def merge_cmd(base: str, diff: str, output: str, fmt: str | None, split_size: int | None,
              compression_level: int, jobs: int, quiet: bool, progress: str) -> None:
    """Merge a differential bundle DIFF with BASE, the bundle it was exported since, into
    one full bundle: DIFF's images, each blob from DIFF or BASE, every digest checked
    while copied. BASE and DIFF are directories, .tar files or their volumes. A BASE
    that is itself a differential bundle gives a differential bundle on its base.

    \b
    Examples:
      bundler merge week1/ week2.tar -o week2-full.tar.zst
      bundler merge full.tar diff.tar -o rebuilt/
    """
    try:
        archive = output if output_format(output, fmt, split_size) != "dir" else None
        check_merge(base, diff)
        for path, what in ((base, "BASE"), (diff, "DIFF")):
            store = open_in_place(path, what)
            if isinstance(store, ArchiveStore):
                store.close()
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    out = Path(output)
    if archive is None and out.is_dir() and not holds_no_bundle(out):
        raise click.UsageError(f"{escape(output)} is a directory that is not empty; merge "
                               "writes a new bundle: choose a new or empty directory")
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)

    def action(stop: threading.Event) -> ExportResult:
        return merge_bundles(base, diff, output, format=fmt, split_size=split_size,
                             compression_level=compression_level, jobs=jobs,
                             reporter=reporter, stop=stop)

    def summary(result: ExportResult, seconds: float) -> None:
        export_summary(result, output, seconds)
        receipt = result.receipt
        made = "a full bundle" if receipt is None or receipt.base is None else \
            f"a differential bundle on base {receipt.base.bundle_id}"
        click.echo(f"merged {escape(diff)} with its base {escape(base)}: {made} "
                   f"(bundle id {receipt.bundle_id if receipt else '-'})")

    run(action, tally, summary, reporter, archive=archive)
