"""What the ``export`` and ``import`` commands print: the run itself (exit codes 0, 1, 130),
the final summary on stdout, and the plan of a ``--dry-run``.

The summary of a run names images, blobs moved / skipped / mounted, bytes, seconds and
MB/s (10**6 bytes per second). Errors go to stderr, one ``error: IMAGE: cause`` line per
failed image.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..engine.exporting import ExportResult
from ..engine.importing import ImportResult
from ..engine.planning import ExportPlan, ImportPlan
from ..engine.preflight import FIRST_FEW, WrongBaseError
from ..engine.receipts import receipt_path_beside
from ..errors import (
    BundlerError,
    Cancelled,
    InvalidReferenceError,
    MappingError,
    PartialFailureError,
)
from ..events import Tally
from ..termsafe import escape

__all__ = ["docker_archive_summary", "exit_now", "export_summary", "human", "import_summary", "plural", "print_plan", "rate", "run",
           "quiet_stream", "stdout_may_close"]


def exit_now(code: int) -> None:
    """End the process with ``code`` after an interrupt, without joining worker threads.

    The run has already unwound (its files are removed or kept, its lock released); a
    thread stalled on a registry response would otherwise hold the exit until its read
    timeout. Standard output and error are flushed first.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(code)


def human(size: float) -> str:
    """Bytes as a short human string (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def rate(nbytes: int, seconds: float) -> str:
    """``N.N MB/s`` (10**6 bytes per second) for ``nbytes`` moved in ``seconds``."""
    return f"{nbytes / seconds / 1e6 if seconds > 0 else 0.0:.1f} MB/s"


@contextmanager
def stdout_may_close() -> Iterator[None]:
    """Print what follows, but let a reader that stopped reading end it quietly.

    ``bundler import ... | head -1`` closes the pipe after the first line; the next
    write fails with EPIPE. The work is done by then, so that is no error: the rest of
    the output goes to ``/dev/null`` (also what Python flushes at exit) and the exit
    status stays the command's own.
    """
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        quiet_stream(sys.stdout)


def quiet_stream(stream: Any) -> None:
    """Send the rest of a stream whose reader went away (EPIPE) to ``/dev/null``, so that
    later writes, and the flush at exit, neither fail nor print a traceback."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return  # not a real file (a test runner's buffer)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``0 images``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def run(action: Callable[[threading.Event], Any], tally: Tally,
        done: Callable[[Any, float], None], reporter: Any, *,
        archive: str | None = None, importing: bool = False) -> None:
    """Run ``action(stop)``, then print its summary with ``done(result, seconds)``.

    Exits 1 after an error (with ``--keep-going``: one line per failed image, then the
    summary of the others), 2 after a usage error found by the library (a bad ``--to``,
    ``--mapping`` or reference: :class:`MappingError`, :class:`InvalidReferenceError`,
    printed like click's usage errors), and 130 on Ctrl-C (143 on SIGTERM, which is
    handled the same way), after one line saying what was kept.

    Args:
        action: the export or import, given the stop event.
        tally: counts the events (for the Ctrl-C line).
        done: prints the summary of a result.
        reporter: the progress reporter (closed before anything is printed).
        archive: the archive an export writes; None for a directory export or an import.
            An interrupted archive export keeps nothing (the archive is written whole).
        importing: the action is an import (for the words of the Ctrl-C line).
    """
    stop = threading.Event()
    started = time.monotonic()
    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        previous = None
    try:
        try:
            result = action(stop)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    except (KeyboardInterrupt, Cancelled):
        stop.set()
        reporter.close()
        finished = f"{plural(tally.transferred, 'finished blob')} ({human(tally.bytes_done)})"
        if archive is not None:
            click.echo(f"interrupted: the archive {escape(archive)} was not written and "
                       "nothing was kept; run the same command again to start over", err=True)
        elif importing:
            verb = "is" if tally.transferred == 1 else "are"
            click.echo(f"interrupted: {finished} {verb} in the registry; run the same command "
                       "again to continue", err=True)
        else:
            click.echo(f"interrupted: kept {finished}; run the same command again to "
                       "continue", err=True)
        exit_now(143 if terminated else 130)
    except (MappingError, InvalidReferenceError, WrongBaseError) as exc:
        reporter.close()
        raise click.UsageError(escape(exc)) from exc
    except PartialFailureError as exc:
        reporter.close()
        for failure in exc.failures:
            click.echo(f"error: {escape(failure)}", err=True)
        done(exc.result, time.monotonic() - started)
        kept = exc.result.images if isinstance(exc.result, ExportResult) else exc.result.targets
        failed = len(exc.failures)
        receipt = exc.result.receipt if isinstance(exc.result, ExportResult) else None
        if archive is not None and kept:
            advice = (f"the archive {escape(archive)} holds the other {len(kept)}; export the "
                      "failed ones to another bundle")
        elif receipt is not None and receipt.base is not None and kept:
            advice = (f"the bundle holds the other {len(kept)}; export the failed ones to "
                      "another bundle (--since writes a new bundle)")
        else:
            advice = "run the same command again to retry them"
        click.echo(f"failed: {failed} of {plural(failed + len(kept), 'image')}; {advice}",
                   err=True)
        sys.exit(1)
    except BundlerError as exc:
        reporter.close()
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    reporter.close()
    with stdout_may_close():
        done(result, time.monotonic() - started)


def export_summary(result: ExportResult, output: str, seconds: float) -> None:
    """Print the summary of an export (stdout) and its warnings (stderr)."""
    saved = result.total_bytes - result.unique_bytes
    pct = 100 * saved / result.total_bytes if result.total_bytes else 0
    carried = len(result.referrers)  # signatures, attestations, SBOMs with their images
    click.echo(
        f"exported {plural(len(result.images) - carried, 'image')}"
        + (f" and {plural(carried, 'referrer')}" if carried else "")
        + f" to {escape(output)}: "
        f"{human(result.unique_bytes)} "
        f"unique ({human(result.total_bytes)} without dedup, {pct:.0f}% saved); blobs "
        f"downloaded {result.blobs_downloaded} ({human(result.bytes_downloaded)}), "
        f"already present {result.blobs_reused}; {seconds:.1f} s, "
        f"{rate(result.bytes_downloaded, seconds)}"
    )
    receipt = result.receipt
    if receipt is not None and receipt.base is not None:
        click.echo(f"differential: {plural(len(receipt.omitted), 'blob')} "
                   f"({human(receipt.omitted_bytes)}) left out, expected from base "
                   f"{receipt.base.bundle_id}")
        click.echo(f"bundle id {receipt.bundle_id}; receipt "
                   f"{escape(receipt_path_beside(output))}")
    for digest in result.skipped_foreign:
        click.echo(f"warning: non-distributable layer {digest} was not served; "
                   "it is not in the bundle (--include-foreign-layers fetches it from the "
                   "URLs its descriptor lists)", err=True)
    for digest in result.included_foreign:
        click.echo(f"note: non-distributable layer {digest} is in the bundle "
                   "(--include-foreign-layers)", err=True)
    for digest in result.damaged:
        click.echo(f"warning: blob {digest} arrived damaged and was downloaded again (it "
                   "checks now)", err=True)


def import_summary(result: ImportResult, seconds: float, *, done: str = "imported",
                   moved: str = "uploaded", missing: str = "is not in the bundle") -> None:
    """Print the summary of a push (an import; a mirror with ``done="mirrored"``,
    ``moved="copied"``) and one ``NAME -> DESTINATION`` line per image.

    Args:
        result: what the push did.
        seconds: how long it took.
        done, moved: the verbs for the images and for the blobs sent.
        missing: why a non-distributable layer was not pushed.
    """
    click.echo(
        f"{done} {plural(len(result.targets), 'image')} ({len(result.skipped_images)} already "
        f"there); blobs {moved} {result.blobs_uploaded} ({human(result.bytes_uploaded)}), "
        f"mounted {result.blobs_mounted}, already present {result.blobs_present}; "
        f"{seconds:.1f} s, {rate(result.bytes_uploaded, seconds)}"
    )
    for target in result.targets:
        click.echo(f"  {escape(target.name)} -> {escape(target.destination)}")
    if result.chain is not None:  # a differential bundle: what its base check found
        click.echo(escape(result.chain.imported_line()))
        click.echo(escape(result.chain.blobs_line()))
    if result.receipt:
        click.echo(f"receipt: {escape(result.receipt)}")
    for digest in result.skipped_foreign:
        click.echo(f"note: non-distributable layer {digest} {missing}; it was not pushed",
                   err=True)
    for note in result.notes:
        click.echo(f"note: {escape(note)}", err=True)


def print_plan(plan: ExportPlan | ImportPlan, where: str, as_json: bool,
               extra: dict[str, Any] | None = None) -> None:
    """Print a dry run's plan: images, then blobs and bytes after dedup and what is there.

    Args:
        plan: from :func:`bundler.plan_export` or :func:`bundler.plan_import`.
        where: the bundle (output of an export, input of an import).
        as_json: one JSON document instead of text.
        extra: more keys of the JSON document (an image set's ``selection``).
    """
    export = isinstance(plan, ExportPlan)
    if as_json:
        doc: dict[str, Any] = {"dryRun": "export" if export else "import", "bundle": where,
                               "images": [], "blobs": plan.blobs, "blobBytes": plan.blob_bytes}
        for image in plan.images:
            item = {"reference": image.name, "digest": str(image.digest), "size": image.size}
            if not export:
                item.update(destination=image.destination, present=image.present)
            doc["images"].append(item)
        if isinstance(plan, ExportPlan):
            doc.update(toFetch=plan.to_fetch, fetchBytes=plan.fetch_bytes,
                       present=plan.present, presentBytes=plan.present_bytes)
        else:
            doc.update(toUpload=plan.to_upload, uploadBytes=plan.upload_bytes,
                       toMount=plan.to_mount, mountBytes=plan.mount_bytes,
                       present=plan.present, presentBytes=plan.present_bytes,
                       base=plan.chain.to_json() if plan.chain is not None else None)
        doc.update(extra or {})
        click.echo(json.dumps(doc, indent=2))
        return
    images = plural(len(plan.images), "image")
    verb = f"export {images} to" if export else f"import {images} from"
    there = 0 if export else sum(1 for image in plan.images if image.present)
    click.echo(f"dry run: would {verb} {escape(where)}"
               + (f" ({there} already there)" if there else ""))
    for image in plan.images:
        if isinstance(plan, ExportPlan):
            click.echo(f"  {escape(image.name)} -> {image.digest}")
        else:
            state = "already there" if image.present else "to push"
            click.echo(f"  {escape(image.name)} -> {escape(image.destination)}: {state}")
    line = f"blobs: {plan.blobs} ({human(plan.blob_bytes)}) after dedup; "
    if isinstance(plan, ExportPlan):
        line += (f"to download {plan.to_fetch} ({human(plan.fetch_bytes)}), already in the "
                 f"bundle {plan.present} ({human(plan.present_bytes)})")
    else:
        line += (f"to upload {plan.to_upload} ({human(plan.upload_bytes)}); per "
                 f"repository: {plan.to_mount} to mount, {plan.present} already present")
    click.echo(line)
    chain = None if isinstance(plan, ExportPlan) else plan.chain
    if chain is not None:  # a differential bundle: is its chain complete?
        click.echo(escape(chain.imported_line()))
        click.echo(escape(chain.blobs_line()))
        for blob in chain.missing[:FIRST_FEW]:
            click.echo(f"  missing {blob.digest} ({human(blob.size)}), needed by "
                       f"{escape(', '.join(blob.images))}")
        click.echo("chain: complete" if chain.complete else
                   f"chain: incomplete: import base {escape(chain.base_id)} first, or give "
                   "--base BUNDLE")


def docker_archive_summary(result: Any, output: str, seconds: float) -> None:
    """Print what ``export --format docker-archive`` wrote (stdout) and the platform
    chosen from each index (stderr)."""
    click.echo(f"exported {plural(len(result.images), 'image')} to {escape(output)} "
               f"(docker-archive): blobs {result.blobs} ({human(result.bytes)}); "
               f"{seconds:.1f} s, {rate(result.bytes, seconds)}")
    for image in result.images:
        click.echo(f"  {escape(image.name) or '(unnamed)'} {image.descriptor.digest}"
                   + (f" {image.platform}" if image.platform else ""))
    for note in result.notes:
        click.echo(f"note: {escape(note)}", err=True)
