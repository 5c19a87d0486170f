"""``bundler export``: images from registries into one deduplicated OCI layout bundle,
chosen by reference, by image set (``-c FILE``, ``--all-tags``, tag filters,
``--all-repositories``) and by platform (``--platform``).

Exit status: 0 success; 1 an error; 2 bad usage (a bad reference, regex, semver range,
image-set file or platform, found before any request); 130 interrupted; 143 terminated.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import click

from .. import bundle as api
from ..engine.export_receipts import holds_no_bundle
from ..engine.exporting import parse_references
from ..errors import BundlerError
from ..events import Tally
from ..stores.archive import output_format
from ..termsafe import escape
from .options import (
    MIN_SPLIT_SIZE,
    check_output_options,
    print_dry_run,
    progress_options,
    referrer_options,
    referrer_policy,
    say_waiting,
    side_options,
    size_option,
    transport_options,
)
from .reporters import make_reporter
from .selecting import (
    image_set_from_options,
    platform_choice,
    platform_options,
    print_resolution,
    require_images,
    resolve,
    say_changed,
    say_vanished,
    selection_options,
)
from .summary import docker_archive_summary, export_summary, run

__all__ = ["export_cmd", "read_base"]


def read_base(since: str, output: str, fmt: str | None, dry_run: bool) -> api.Receipt:
    """The receipt of ``--since BASE``, read before anything moves.

    Raises:
        click.UsageError: (exit 2) BASE is no bundle or receipt, a malformed receipt or
        one of another version; ``--since`` with ``--dry-run`` or ``--format
        docker-archive``, or into a directory that holds a bundle already (its
        ``index.json``).
    """
    if dry_run or fmt == "docker-archive":
        raise click.UsageError("--since writes a differential bundle: not with --dry-run "
                               "or --format docker-archive")
    out = Path(output)
    if fmt in (None, "dir") and not output.endswith((".tar", ".tar.zst")) and out.is_dir():
        # what an interrupted run kept (oci-layout, finished blobs) is continued
        if (out / "index.json").exists():
            raise click.UsageError(f"--since writes a new bundle: {escape(output)} holds a "
                                   "bundle already; choose a new or empty directory")
        if not holds_no_bundle(out):
            raise click.UsageError(f"--since writes a new bundle: {escape(output)} is a "
                                   "directory that is not empty; choose a new or empty "
                                   "directory")
    try:
        return api.read_receipt(since)
    except BundlerError as exc:
        raise click.UsageError(f"--since {escape(since)}: {escape(exc)}") from exc


@click.command("export")
@click.argument("references", nargs=-1)
@click.option("-f", "--images-file", type=click.Path(dir_okay=False, allow_dash=True),
              help="File with one reference per line (# comments allowed); - for stdin.")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Bundle to write: a directory (extended if it exists), NAME.tar or "
                   "NAME.tar.zst (a new single-file bundle).")
@click.option("--format", "fmt", type=click.Choice(["dir", "tar", "tar.zst", "docker-archive"]),
              help="Bundle format (default: from the output name). docker-archive: a file "
                   "docker load, podman load and bundler read, one platform per image "
                   "(--platform picks it; default linux/amd64).")
@click.option("--split-size", metavar="SIZE", callback=size_option(MIN_SPLIT_SIZE),
              help="Cut an archive into volumes NAME.000, NAME.001, ... of SIZE (e.g. 4GiB; "
                   "at least 1KiB).")
@click.option("--compression-level", default=3, show_default=True, type=click.IntRange(1, 22),
              help="zstd level of a .tar.zst bundle.")
@click.option("--no-wait", is_flag=True,
              help="Fail at once (exit 1) if another bundler is writing the same bundle, "
                   "instead of waiting for it.")
@click.option("--since", "since", metavar="BASE", type=click.Path(),
              help="Write a differential bundle: every manifest of the images, and only the "
                   "configs and layers BASE does not hold. BASE: an earlier bundle "
                   "(directory, .tar, .tar.zst, volumes) or its receipt (NAME.receipt.json).")
@click.option("--include-foreign-layers", is_flag=True,
              help="Store non-distributable (foreign) layers too: from the registry, else "
                   "from the URLs their descriptors list (https; no credentials sent).")
@selection_options
@platform_options
@referrer_options
@transport_options("src")
@progress_options
def export_cmd(references: tuple[str, ...], images_file: str | None, output: str,
               fmt: str | None, split_size: int | None, compression_level: int,
               no_wait: bool, since: str | None, include_foreign_layers: bool,
               platforms: tuple[str, ...],
               platform_mode: str,
               jobs: int, quiet: bool, progress: str, keep_going: bool, dry_run: bool,
               as_json: bool, **kw: Any) -> None:
    """Export images from registries into one deduplicated OCI layout bundle.

    REFERENCES are images; with --all-tags or a tag filter, REGISTRY/REPOSITORY; with
    --all-repositories, REGISTRY.

    \b
    Examples:
      bundler export docker.io/library/alpine:3.20 -o ./bundle
      bundler export --images-file images.txt -o ./bundle
      bundler export --images-file images.txt -o bundle.tar.zst --split-size 4GiB
      bundler export --images-file images.txt -o ./bundle --dry-run
      bundler export reg:5000/app --semver '>=1.2.0 <2' --latest 5 -o ./bundle
      bundler export reg:5000 --all-repositories --include-repositories 'team-a/.*' --all-tags -o b
      bundler export -c imageset.yaml -o bundle.tar.zst --dry-run
      bundler export reg:5000/app:1 --platform linux/amd64 --platform linux/arm64 -o b
      bundler export reg:5000/app:1 --platform linux/amd64 --platform-mode sparse -o b
      bundler export registry.internal:5000/team/app:1.4 -o app.tar --format docker-archive
      bundler export -f images.txt -o week2.tar.zst --since week1.tar.zst.receipt.json
    """
    check_output_options(quiet, progress, dry_run, as_json)
    referrers = referrer_policy(kw)
    base = read_base(since, output, fmt, dry_run) if since is not None else None
    if fmt == "docker-archive":
        if split_size is not None or dry_run or include_foreign_layers:
            raise click.UsageError("--format docker-archive writes one file for docker load: "
                                   "no --split-size, --dry-run or --include-foreign-layers")
        if len(platforms) > 1 or platforms == ("all",):
            raise click.UsageError("--format docker-archive holds one platform per image: "
                                   "give --platform once")
    choice = platform_choice(platforms, platform_mode)
    if choice is not None and include_foreign_layers:
        raise click.UsageError("--include-foreign-layers does not go with --platform yet")
    split = split_size
    try:
        archive = (None if fmt == "docker-archive" else
                   output if output_format(output, fmt, split) != "dir" else None)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    image_set = image_set_from_options(references, images_file, kw)
    options = side_options("src", kw)
    resolution: api.Resolution | None = None
    if image_set is not None:
        options = api.transport_for(image_set, options)
        resolution = resolve(image_set, options, jobs)
        refs = resolution.references
        if resolution.platforms and include_foreign_layers:
            raise click.UsageError("--include-foreign-layers does not go with platforms "
                                   "yet")
        if not dry_run:
            require_images(resolution)
    else:
        texts: list[tuple[str, str]] = [(text, "") for text in references]
        try:
            if images_file:
                texts += api.read_images_file(images_file, numbered=True)
            refs = parse_references(texts)
        except BundlerError as exc:
            raise click.UsageError(escape(exc)) from exc
    if dry_run:
        if resolution is not None and not as_json:
            print_resolution(resolution)
        extra = {"selection": resolution.to_json()} if resolution is not None else None
        per_image = resolution.platforms if resolution is not None else {}

        def plan(chosen: list) -> api.ExportPlan:
            return api.plan_export(chosen, output, format=fmt, split_size=split,
                                   options=options, jobs=jobs, platforms=choice,
                                   choices=per_image)

        print_dry_run(lambda: plan(refs) if resolution is None else api.plan_without_vanished(
            plan, resolution, on_vanished=lambda name: say_vanished([name])),
            output, as_json, extra)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    options = dataclasses.replace(options, reporter=reporter)  # shows long waits
    gone: list[str] = []
    changed: list[api.DigestChange] = []

    if fmt == "docker-archive":
        run(lambda stop: api.export_docker_archive(refs, output, options=options,
                                                   platform=platforms[0] if platforms else None,
                                                   jobs=jobs, reporter=reporter, stop=stop),
            tally, lambda result, seconds: docker_archive_summary(result, output, seconds),
            reporter)
        return

    def export(stop: threading.Event, keep: bool) -> api.ExportResult:
        per_image = resolution.platforms if resolution is not None else {}
        if choice is not None or per_image:
            return api.export_platforms(refs, output, choice or api.PlatformChoice(),
                                        choices=per_image, format=fmt, split_size=split,
                                        compression_level=compression_level,
                                        options=options, jobs=jobs, reporter=reporter,
                                        stop=stop, keep_going=keep, wait=not no_wait,
                                        on_wait=say_waiting, changed=changed, since=base)
        return api.export_bundle(refs, output, format=fmt, split_size=split,
                                 compression_level=compression_level, options=options,
                                 jobs=jobs, reporter=reporter, stop=stop, keep_going=keep,
                                 wait=not no_wait, on_wait=say_waiting,
                                 include_foreign_layers=include_foreign_layers,
                                 referrers=referrers, since=base)

    def summary(result: api.ExportResult, seconds: float) -> None:
        say_vanished(gone)
        export_summary(result, output, seconds)
        say_changed(changed)

    if resolution is None:
        action = lambda stop: export(stop, keep_going)  # noqa: E731
    else:
        action = lambda stop: api.tolerate_vanished(  # noqa: E731
            lambda keep: export(stop, keep), resolution, keep_going=keep_going,
            on_vanished=gone.append)
    run(action, tally, summary, reporter, archive=archive)
