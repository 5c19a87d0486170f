"""``bundler mirror``: images from registries straight into another registry.

Exit status as the other commands: 0 success, 1 an error, 2 bad usage (no images,
both or neither of ``--to``/``--mapping``, a bad reference, a destination equal to its
source: all found before any request), 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from .. import bundle as api
from ..engine.mirroring import check_mirror, plan_mirror
from ..engine.naming import check_to, parse_mapping
from ..engine.planning import ImportPlan
from ..engine.referrers import ReferrerPolicy
from ..errors import BundlerError
from ..events import Tally
from ..registry.journal import UploadJournal
from ..termsafe import escape
from .options import (
    MIN_CHUNK_SIZE,
    check_output_options,
    once,
    progress_options,
    referrer_options,
    referrer_policy,
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
from .summary import exit_now, human, import_summary, plural, run, stdout_may_close

__all__ = ["mirror_cmd"]

#: Options both sides share (``transport_options`` declares them with each side).
_SHARED = ("retries", "retry_delay", "retry_max_wait")


def _both_sides(func: Callable) -> Callable:
    """``--src-*`` and ``--dest-*`` credential and TLS options, and the retry options
    once (they apply to both sides)."""
    func = transport_options("dest")(func)
    func = transport_options("src")(func)
    seen: set[str] = set()
    kept = []
    for param in reversed(func.__click_params__):  # type: ignore[attr-defined]
        if param.name in _SHARED and param.name in seen:
            continue
        seen.add(param.name)
        kept.append(param)
    func.__click_params__ = list(reversed(kept))  # type: ignore[attr-defined]
    return func


@click.command("mirror")
@click.argument("references", nargs=-1)
@click.option("-f", "--images-file", type=click.Path(dir_okay=False, allow_dash=True),
              help="File with one source reference per line (# comments allowed); - for "
                   "stdin.")
@click.option("--to", "to", metavar="REGISTRY[/PREFIX]", callback=once, multiple=True,
              help="Destination registry and repository prefix (the source repository "
                   "and tag are kept).")
@click.option("--mapping", type=click.Path(dir_okay=False), callback=once, multiple=True,
              help="File of SOURCE=DESTINATION lines (oc image mirror style); without "
                   "references, its sources are the images.")
@click.option("--chunk-size", default="64MiB", show_default=True,
              callback=size_option(MIN_CHUNK_SIZE),
              help="Blobs larger than this are uploaded in PATCH chunks of this size "
                   "(at least 1KiB).")
@selection_options
@platform_options
@referrer_options
@_both_sides
@progress_options
def mirror_cmd(references: tuple[str, ...], images_file: str | None, to: str | None,
               mapping: str | None, chunk_size: int, jobs: int, quiet: bool, progress: str,
               keep_going: bool, dry_run: bool, as_json: bool, platforms: tuple[str, ...],
               platform_mode: str, **kw: Any) -> None:
    """Copy images from registries into another registry, every digest preserved.

    Blobs stream from the source into the destination (nothing on disk); images and
    blobs the destination has are skipped, blobs shared by several destination
    repositories are pulled once and mounted; a rerun continues an interrupted one.

    REFERENCES are images; with --all-tags or a tag filter, REGISTRY/REPOSITORY; with
    --all-repositories, REGISTRY. Indexes are mirrored whole unless --platform narrows
    them (--platform-mode strip, sparse or single).

    \b
    Examples:
      bundler mirror docker.io/library/alpine:3.20 --to registry.internal:5000/mirror
      bundler mirror -f images.txt --to registry.internal:5000/mirror
      bundler mirror --mapping mapping.txt
      bundler mirror -f images.txt --to registry.internal:5000/mirror --dry-run
      bundler mirror reg:5000/app --semver '>=1.2.0 <2' --latest 3 --to mirror.internal:5000/prod
      bundler mirror -c imageset.yaml --to mirror.internal:5000/prod --dry-run
      bundler mirror reg:5000/app:1 --platform linux/amd64 --platform-mode sparse --to m:5000/p
    """
    check_output_options(quiet, progress, dry_run, as_json)
    referrers = referrer_policy(kw)
    if (to is None) == (mapping is None):
        raise click.UsageError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")
    choice = platform_choice(platforms, platform_mode)
    image_set = image_set_from_options(references, images_file, kw)
    if image_set is not None:
        if to is None:
            raise click.UsageError("an image set goes with --to REGISTRY[/PREFIX]")
        _mirror_set(image_set, to, chunk_size, jobs, quiet, progress, keep_going, dry_run,
                    as_json, kw, choice, referrers)
        return
    sources = api.PlatformSources(choice)
    texts = list(references)
    try:  # everything the command line tells is checked before any request
        if to is not None:
            check_to(to)
        pairs = parse_mapping(mapping) if mapping is not None else None
        if images_file:
            texts += api.read_images_file(images_file)
        if not texts and pairs is None:
            raise BundlerError("no images to mirror: give references, --images-file or "
                               "--mapping")
        refs, pairs = check_mirror(texts, to=to, mapping=pairs)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    shared = {name: kw[name] for name in _SHARED}
    src_options = side_options("src", kw)
    kw.update(shared)
    dest_options = side_options("dest", kw, chunk_size=chunk_size, journal=UploadJournal())
    if dry_run:
        print_dry_run(lambda: plan_mirror(refs, to=to, mapping=pairs, src_options=src_options,
                                     dest_options=dest_options, jobs=jobs,
                                     make_source=sources), as_json)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    src_options = dataclasses.replace(src_options, reporter=reporter)  # long waits
    dest_options = dataclasses.replace(dest_options, reporter=reporter)

    def summary(result: api.ImportResult, seconds: float) -> None:
        mirror_summary(result, seconds)
        say_changed(sources.changed)

    run(lambda stop: api.mirror_images(refs, to=to, mapping=pairs, src_options=src_options,
                                       dest_options=dest_options, jobs=jobs,
                                       reporter=reporter, stop=stop, keep_going=keep_going,
                                       make_source=sources, referrers=referrers),
        tally, summary, reporter, importing=True)


def _mirror_set(image_set: api.ImageSet, to: str, chunk_size: int, jobs: int, quiet: bool,
                progress: str, keep_going: bool, dry_run: bool, as_json: bool,
                kw: dict[str, Any], choice: api.PlatformChoice | None,
                referrers: ReferrerPolicy | None) -> None:
    """A mirror of an image set: check ``--to``, resolve the set, then mirror its
    references (listed tags gone by then are skipped and named)."""
    try:
        check_to(to)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    shared = {name: kw[name] for name in _SHARED}
    src_options = side_options("src", kw)
    kw.update(shared)
    dest_options = side_options("dest", kw, chunk_size=chunk_size, journal=UploadJournal())
    src_options = api.transport_for(image_set, src_options)
    resolution = resolve(image_set, src_options, jobs)
    refs, pairs = [], None
    if resolution.selected:
        try:  # a destination equal to its source
            refs, pairs = check_mirror(resolution.references, to=to, mapping=None)
        except BundlerError as exc:
            raise click.UsageError(escape(exc)) from exc
    sources = api.PlatformSources(choice, resolution.platforms)
    if dry_run:
        if not as_json:
            print_resolution(resolution)
        print_dry_run(lambda: api.plan_without_vanished(
            lambda chosen: plan_mirror(chosen, to=to, mapping=pairs, src_options=src_options,
                                       dest_options=dest_options, jobs=jobs,
                                       make_source=sources),
            resolution, on_vanished=lambda name: say_vanished([name])), as_json,
            {"selection": resolution.to_json()})
        return
    require_images(resolution)
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    src_options = dataclasses.replace(src_options, reporter=reporter)
    dest_options = dataclasses.replace(dest_options, reporter=reporter)
    gone: list[str] = []

    def summary(result: api.ImportResult, seconds: float) -> None:
        say_vanished(gone)
        mirror_summary(result, seconds)
        say_changed(sources.changed)

    run(lambda stop: api.tolerate_vanished(
        lambda keep: api.mirror_images(refs, to=to, mapping=pairs, src_options=src_options,
                                       dest_options=dest_options, jobs=jobs,
                                       reporter=reporter, stop=stop, keep_going=keep,
                                       make_source=sources, referrers=referrers),
        resolution, keep_going=keep_going, on_vanished=gone.append),
        tally, summary, reporter, importing=True)


def mirror_summary(result: api.ImportResult, seconds: float) -> None:
    """Print the summary of a mirror and one ``SOURCE -> DESTINATION`` line per image."""
    import_summary(result, seconds, done="mirrored", moved="copied",
                   missing="is not served by its source")


def print_dry_run(plan: Callable[[], ImportPlan], as_json: bool,
                  extra: dict[str, Any] | None = None) -> None:
    """Print what a mirror would move; exit 1 (message on stderr) if the plan fails.
    ``extra``: more keys of the JSON document."""
    try:
        result = plan()
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # planning threads stalled on a registry are not waited for
        click.echo("interrupted: nothing was moved", err=True)
        exit_now(130)
    with stdout_may_close():
        print_mirror_plan(result, as_json, extra)


def print_mirror_plan(plan: ImportPlan, as_json: bool,
                      extra: dict[str, Any] | None = None) -> None:
    """A mirror's dry run: each image, its destination and whether it is there; then
    the blobs after dedup, those to copy (once per registry) and to mount."""
    if as_json:
        click.echo(json.dumps({**(extra or {}),
            "dryRun": "mirror",
            "images": [{"reference": i.name, "digest": str(i.digest), "size": i.size,
                        "destination": i.destination, "present": i.present}
                       for i in plan.images],
            "blobs": plan.blobs, "blobBytes": plan.blob_bytes,
            "toCopy": plan.to_upload, "copyBytes": plan.upload_bytes,
            "toMount": plan.to_mount, "mountBytes": plan.mount_bytes,
            "present": plan.present, "presentBytes": plan.present_bytes}, indent=2))
        return
    there = sum(1 for image in plan.images if image.present)
    click.echo(f"dry run: would mirror {plural(len(plan.images), 'image')}"
               + (f" ({there} already there)" if there else ""))
    for image in plan.images:
        state = "already there" if image.present else "to copy"
        click.echo(f"  {escape(image.name)} -> {escape(image.destination)}: {state}")
    click.echo(f"blobs: {plan.blobs} ({human(plan.blob_bytes)}) after dedup; to copy "
               f"{plan.to_upload} ({human(plan.upload_bytes)}); per repository: "
               f"{plan.to_mount} to mount, {plan.present} already present")
