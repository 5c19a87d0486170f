"""The image-set options of ``export`` and ``mirror``: ``-c FILE``, ``--all-tags``, the
tag filters, ``--all-repositories`` and the repository filters; and the printing of a
resolution (dry run).

Every option is checked before any request (exit 2: an invalid regex, a malformed
semver range, an unknown or malformed key of the file, naming the option or
``FILE:LINE``); resolving the set is the first I/O.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from .. import bundle as api
from ..errors import BundlerError, InvalidReferenceError
from ..oci.platforms import PLATFORM_MODES, PlatformChoice, parse_platform
from ..registry.client import TransportOptions
from ..stores.platform_source import DigestChange
from ..termsafe import escape
from .summary import plural, stdout_may_close

__all__ = ["image_set_from_options", "platform_choice", "platform_options", "print_resolution",
           "require_images", "resolve", "say_changed", "say_vanished", "selection_options"]

_NAMES = ("config", "all_tags", "include_tags", "exclude_tags", "semver", "latest",
          "all_repositories", "include_repositories", "exclude_repositories")


def selection_options(func: Callable) -> Callable:
    """click options that select images the way users think (see docs/image-sets.md)."""
    options = [
        click.option("-c", "--config", type=click.Path(dir_okay=False), metavar="FILE",
                     help="An image set: skopeo sync's YAML, plus tag filters and a "
                          "blocked list (docs/image-sets.md)."),
        click.option("--all-tags", is_flag=True,
                     help="Every tag of each REGISTRY/REPOSITORY argument."),
        click.option("--include-tags", multiple=True, metavar="REGEX",
                     help="Tags that this regex matches whole (repeatable; implies the "
                          "tags are listed)."),
        click.option("--exclude-tags", multiple=True, metavar="REGEX",
                     help="Leave out the tags this regex matches whole (repeatable)."),
        click.option("--semver", metavar="RANGE",
                     help="Only semver tags in RANGE (npm syntax: '>=1.2.0 <2', '^1.4'); "
                          "pre-releases only when the range names one."),
        click.option("--latest", type=click.IntRange(1), metavar="N",
                     help="The N highest tags (semver first, then natural order); "
                          "applied last."),
        click.option("--all-repositories", is_flag=True,
                     help="Arguments are registries: every repository of their catalog "
                          "(/v2/_catalog)."),
        click.option("--include-repositories", multiple=True, metavar="REGEX",
                     help="With --all-repositories: repositories this regex matches whole."),
        click.option("--exclude-repositories", multiple=True, metavar="REGEX",
                     help="With --all-repositories: leave out those this regex matches "
                          "whole."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def platform_options(func: Callable) -> Callable:
    """``--platform OS/ARCH[/VARIANT]`` (repeatable) and ``--platform-mode``."""
    func = click.option(
        "--platform-mode", type=click.Choice(PLATFORM_MODES), default="strip",
        show_default=True,
        help="strip: a new index of the chosen platforms (children keep their digests, "
             "the index gets a new one); sparse: the original index (same digest) with "
             "only the chosen platforms' content, for registries that accept such an "
             "index; single: exactly one platform, stored as that platform's manifest "
             "(its original digest).")(func)
    return click.option(
        "--platform", "platforms", multiple=True, metavar="OS/ARCH[/VARIANT]",
        help="Keep only these platforms of multi-arch indexes (repeatable; default: "
             "all). linux/arm64 matches every arm64 variant.")(func)


def platform_choice(platforms: tuple[str, ...], mode: str) -> PlatformChoice | None:
    """The platform choice of the options, or None for all platforms.

    Raises:
        click.UsageError: a platform that does not parse; ``single`` with other than
        one platform; ``all`` with a platform.
    """
    if mode == "single" and (not platforms or platforms == ("all",)):
        raise click.UsageError("--platform-mode single keeps exactly one platform; give "
                               "it with --platform OS/ARCH[/VARIANT]")
    if not platforms or platforms == ("all",):
        return None
    if "all" in platforms:
        raise click.UsageError("--platform all keeps every platform; give it alone")
    parsed = []
    for text in platforms:
        try:
            parsed.append(parse_platform(text))
        except ValueError as exc:
            raise click.UsageError(f"--platform: {escape(exc)}") from exc
    if mode == "single" and len(parsed) != 1:
        raise click.UsageError(f"--platform-mode single keeps exactly one platform; "
                               f"{len(parsed)} given")
    return PlatformChoice(tuple(dict.fromkeys(parsed)), mode)


def say_changed(changes: list[DigestChange]) -> None:
    """One stdout line per reference stored under another digest than the registry's,
    or as a sparse index (the registry's digest, some platforms' content only)."""
    for change in changes:
        if change.mode == "sparse":
            click.echo(f"sparse index: {escape(change.reference)}: {change.digest} (the "
                       f"registry's digest), with the content of {change.platforms} only")
            continue
        what = ("index stripped to the chosen platforms" if change.mode == "strip" else
                "stored as its platform's manifest")
        click.echo(f"changed digest: {escape(change.reference)}: {what}: {change.digest} "
                   f"(registry: {change.original})")


def image_set_from_options(references: tuple[str, ...], images_file: str | None,
                           kw: dict[str, Any]) -> api.ImageSet | None:
    """The image set the options give, or None when none of them is used (plain
    references). Pops the selection options from ``kw``.

    Raises:
        click.UsageError: contradictory options, a bad regex, range, argument or file
        (every error of the file, each with ``FILE:LINE``).
    """
    values = {name: kw.pop(name) for name in _NAMES}
    config = values.pop("config")
    tag_options = any(values[n] for n in ("include_tags", "exclude_tags")) or \
        values["semver"] is not None or values["latest"] is not None
    repository_options = values["include_repositories"] or values["exclude_repositories"]
    if repository_options and not values["all_repositories"]:
        raise click.UsageError("--include-repositories and --exclude-repositories go with "
                               "--all-repositories")
    if config is not None:
        if references or images_file or tag_options or values["all_tags"] or \
                values["all_repositories"]:
            raise click.UsageError("-c/--config holds the whole image set: give no "
                                   "references, --images-file or selection options with it")
        try:
            return api.read_image_set(config)
        except api.ImageSetError as exc:
            raise click.UsageError("invalid image set:\n" + "\n".join(
                escape(e) for e in exc.errors)) from exc
    if not (tag_options or values["all_tags"] or values["all_repositories"]):
        return None
    if images_file:
        raise click.UsageError("--images-file lists references; the selection options "
                               "take REGISTRY/REPOSITORY arguments (or use -c FILE)")
    if not references:
        what = "REGISTRY" if values["all_repositories"] else "REGISTRY/REPOSITORY"
        raise click.UsageError(f"give a {what} argument to select from")
    try:
        tags = api.TagFilter.build(include=values["include_tags"],
                                   exclude=values["exclude_tags"], semver=values["semver"],
                                   latest=values["latest"])
        return api.cli_image_set(references, all_repositories=values["all_repositories"],
                                 include_repositories=values["include_repositories"],
                                 exclude_repositories=values["exclude_repositories"],
                                 tags=tags)
    except (api.FilterError, InvalidReferenceError) as exc:
        raise click.UsageError(escape(exc)) from exc


def resolve(image_set: api.ImageSet, options: TransportOptions,
            jobs: int) -> api.Resolution:
    """Resolve the set (the first requests); exit 1 with ``error: ...`` if that fails.

    Ctrl-C (or SIGTERM) exits at once, 130 (143): the listing moves nothing, so its
    requests under way (a registry that stalls) are not waited for."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["resolution"] = api.resolve_image_set(image_set, options=options,
                                                          jobs=jobs)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    terminated: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    thread = threading.Thread(target=work, name="bundler-resolve", daemon=True)
    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was moved", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143 if terminated else 130)  # the listing threads are not waited for
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    error = outcome.get("error")
    if isinstance(error, BundlerError):
        click.echo(f"error: {escape(error)}", err=True)
        sys.exit(1)
    if error is not None:
        raise error
    return outcome["resolution"]  # type: ignore[no-any-return]


def require_images(resolution: api.Resolution) -> None:
    """Exit 1 when the set resolved to no image (said with what was listed)."""
    if resolution.selected:
        return
    blocked = (f", {plural(len(resolution.blocked), 'reference')} blocked"
               if resolution.blocked else "")
    click.echo(f"error: the image set selected no images ({plural(resolution.tags_listed, 'tag')} "
               f"listed in {_repositories(resolution.repositories)}{blocked}); "
               "see --dry-run", err=True)
    sys.exit(1)


def print_resolution(resolution: api.Resolution) -> None:
    """The resolution as text: each reference with its entry and filter, then the
    blocked ones (a reader may stop early: ``--dry-run | head``)."""
    with stdout_may_close():
        _print_resolution(resolution)


def _print_resolution(resolution: api.Resolution) -> None:
    click.echo(f"image set: {plural(len(resolution.selected), 'reference')} from "
               f"{plural(resolution.tags_listed, 'listed tag')} in "
               f"{_repositories(resolution.repositories)}"
               + (f"; {len(resolution.blocked)} blocked" if resolution.blocked else ""))
    for s in resolution.selected:
        keep = (f"; platforms {s.platforms} ({s.platforms.mode})" if s.platforms is not None
                else "")
        click.echo(f"  {escape(s.reference)}  [{escape(s.origin)}: {escape(s.selected_by)}"
                   f"{keep}]")
    for s, pattern in resolution.blocked:
        click.echo(f"  blocked: {escape(s.reference)}  [{escape(s.origin)}: "
                   f"{escape(s.selected_by)}; blocked by {escape(shlex.quote(pattern))}]")


def _repositories(count: int) -> str:
    return f"{count} repositor{'y' if count == 1 else 'ies'}"


def say_vanished(gone: list[str]) -> None:
    """One stderr line per listed tag that was gone when it was fetched."""
    for name in gone:
        click.echo(f"skipped: {escape(name)}: listed, but the registry no longer serves it",
                   err=True)
