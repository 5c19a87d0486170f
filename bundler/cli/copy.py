"""``bundler copy SRC DST``: one image between registries, layouts and archives, with
the locations skopeo users know (``docker://``, ``oci:``, ``oci-archive:``).

Exit status as for export and import: 0 copied, 1 an error, 2 bad usage (a location
with an unknown transport, a layout holding several images and no ``:NAME``, a
destination equal to the source: before anything moves), 130 interrupted, 143
terminated.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from .. import bundle as api
from ..errors import BundlerError
from ..events import Tally
from ..registry.journal import UploadJournal
from ..termsafe import escape
from .options import (
    MIN_CHUNK_SIZE,
    check_output_options,
    print_dry_run,
    progress_options,
    referrer_options,
    referrer_policy,
    say_waiting,
    side_options,
    size_option,
    transport_options,
    zstd_ratio_option,
)
from .reporters import make_reporter
from .summary import human, rate, run

__all__ = ["copy_cmd"]


@click.command("copy")
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("-a", "--all", "all_", is_flag=True,
              help="Copy an index with all its children (always done; accepted for "
                   "skopeo users).")
@click.option("--chunk-size", default="64MiB", show_default=True,
              callback=size_option(MIN_CHUNK_SIZE),
              help="Blobs larger than this are uploaded to a registry in PATCH chunks "
                   "of this size (at least 1KiB).")
@click.option("--no-wait", is_flag=True,
              help="Fail at once (exit 1) if another bundler is writing the destination "
                   "layout, instead of waiting for it.")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="For a docker-archive: destination, the platform taken from an index "
                   "(docker load takes one; default linux/amd64).")
@zstd_ratio_option
@referrer_options
@transport_options("src")
@transport_options("dest", retry=False)
@progress_options
def copy_cmd(source: str, destination: str, all_: bool, chunk_size: int, no_wait: bool,
             platform: str | None, max_zstd_ratio: int, jobs: int, quiet: bool, progress: str, keep_going: bool,
             dry_run: bool, as_json: bool, **kw: Any) -> None:
    """Copy one image from SRC to DST, every digest preserved; an index goes whole
    (all its platforms, as skopeo copy --all).

    \b
    SRC and DST are one of:
      docker://REFERENCE          an image in a registry
      oci:DIR[:NAME]              an OCI image layout directory; NAME is the image's
                                  org.opencontainers.image.ref.name (needed in a
                                  source that holds several images)
      oci-archive:FILE[:NAME]     a .tar or .tar.zst bundle file (written whole: it
                                  must not exist yet)
      docker-archive:FILE[:NAME]  a docker save archive; as a destination, written in
                                  the form docker load, podman load and bundler read
                                  (one platform of an index: --platform)

    \b
    Examples:
      bundler copy docker://quay.io/team/app:1.4 docker://registry.internal:5000/team/app:1.4
      bundler copy docker://docker.io/library/alpine:3.20 oci:./layout:alpine:3.20
      bundler copy oci:./layout:alpine:3.20 docker://registry.internal:5000/base/alpine:3.20
      bundler copy oci:./layout:alpine:3.20 oci-archive:alpine.tar
      bundler copy docker-archive:saved.tar docker://registry.internal:5000/team/app:1.4
      bundler copy docker://registry.internal:5000/team/app:1.4 docker-archive:app.tar
    """
    check_output_options(quiet, progress, dry_run, as_json)
    referrers = referrer_policy(kw)
    try:  # a bad location is a usage error, found before anything moves
        src, dst = api.check_locations(source, destination)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    shared = {key: kw[key] for key in ("retries", "retry_delay", "retry_max_wait")}
    src_options = side_options("src", kw)
    dest_options = side_options("dest", {**kw, **shared}, chunk_size=chunk_size,
                            journal=UploadJournal())
    if dry_run and dst.transport == "docker-archive":
        raise click.UsageError("--dry-run is not available for a docker-archive: "
                               "destination")
    if dry_run:
        print_dry_run(lambda: api.plan_copy(source, destination, src_options=src_options,
                                       dest_options=dest_options, jobs=jobs,
                                       max_zstd_ratio=max_zstd_ratio),
                 destination if dst.transport != "docker" else source, as_json)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    src_options = dataclasses.replace(src_options, reporter=reporter)
    dest_options = dataclasses.replace(dest_options, reporter=reporter)
    archive = dst.path if dst.transport == "oci-archive" else None
    run(lambda stop: api.copy_image(source, destination, src_options=src_options,
                                    dest_options=dest_options, jobs=jobs, reporter=reporter,
                                    stop=stop, keep_going=keep_going, wait=not no_wait,
                                    on_wait=say_waiting, max_zstd_ratio=max_zstd_ratio,
                                    platform=platform, referrers=referrers),
        tally, _summary, reporter, archive=archive, importing=dst.transport == "docker")


def _summary(result: Any, seconds: float) -> None:
    """One line: what went where, the digest, blobs copied and already there."""
    if not isinstance(result, api.CopyResult):  # --keep-going and the image failed
        click.echo("copied nothing")
        return
    digest = f" ({result.digest})" if result.digest is not None else ""
    mounted = f", mounted {result.blobs_mounted}" if result.blobs_mounted else ""
    click.echo(f"copied {escape(result.source)} -> {escape(result.destination)}{digest}: "
               f"blobs copied {result.blobs_copied} ({human(result.bytes_copied)}){mounted}, "
               f"already there {result.blobs_present}; {seconds:.1f} s, "
               f"{rate(result.bytes_copied, seconds)}")
    for note in result.notes:
        click.echo(f"note: {escape(note)}", err=True)
