"""Options and checks the ``bundler`` commands share: sizes, the ``--src-*``/``--dest-*``
transport options, progress options, ``--shared-blob-dir``, ``--max-zstd-ratio``, and
the dry-run printer.

Usage errors raised here are click's (exit 2), before anything moves.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import bundle as api
from ..engine.preflight import WrongBaseError
from ..engine.referrers import ReferrerPolicy
from ..errors import BundlerError, InvalidReferenceError, MappingError
from ..oci.limits import ZSTD_RATIO_LIMIT
from ..registry.client import TransportOptions
from ..registry.credentials import Credentials, Keychain, load_authfile, parse_creds
from ..stores.archive import is_archive
from ..termsafe import escape
from .summary import exit_now, human, print_plan, stdout_may_close

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
          "tb": 1000**4, "tib": 1024**4}


MIN_CHUNK_SIZE = 1024  # bytes: a smaller PATCH chunk only multiplies the requests
MIN_SPLIT_SIZE = 1024  # bytes: a volume holds at least one tar block and some content


def parse_size(text: str, *, minimum: int = 1, param: str = "") -> int:
    """``64MiB``, ``4GiB``, ``700MB``, ``1048576`` -> bytes.

    Args:
        text: the size as given on the command line.
        minimum: the smallest size accepted, in bytes.
        param: the option's name, for the message (e.g. ``--chunk-size``).

    Raises:
        click.BadParameter: not a size, or below ``minimum``.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise click.BadParameter(f"{text!r} is not a size like 64MiB or 4GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < minimum:
        raise click.BadParameter(
            f"{text!r} is too small: {param or 'the size'} must be at least {human(minimum)}")
    return size


def size_option(minimum: int) -> Callable[[click.Context, click.Parameter, str | None],
                                           int | None]:
    """A click callback: the option's value as bytes, at least ``minimum``."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        return parse_size(value, minimum=minimum, param=param.opts[0])

    return convert


def parse_bool(text: str, option: str = "--tls-verify") -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise click.BadParameter(f"{text!r}: expected true or false", param_hint=f"'{option}'")


def transport_options(side: str, *, retry: bool = True) -> Callable:
    """click options ``--{side}-creds``, ``-authfile``, ``-tls-verify``, ``-cert-dir``
    (and ``--retries``, ``--retry-delay``, ``--retry-max-wait`` unless ``retry`` is
    False: a command with two sides gives them once)."""

    def decorate(func: Callable) -> Callable:
        options = [
            click.option(f"--{side}-creds", metavar="USER:PASSWORD",
                         help=f"Credentials for the {side} registries."),
            click.option(f"--{side}-username", metavar="USER",
                         help=f"User name for the {side} registries (with --{side}-password)."),
            click.option(f"--{side}-password", metavar="PASS",
                         help=f"Password for the {side} registries (with --{side}-username)."),
            click.option(f"--{side}-authfile", type=click.Path(dir_okay=False),
                         help="A docker config.json or containers auth.json."),
            click.option(f"--{side}-tls-verify", default="true", metavar="BOOL",
                         help="Verify TLS certificates (false also allows plain http)."),
            click.option(f"--{side}-cert-dir",
                         type=click.Path(exists=True, file_okay=False),
                         help="Directory of *.crt CAs and *.cert/*.key client pairs."),
            click.option("--retries", default=4, show_default=True, type=click.IntRange(0),
                         help="Retries of a failed request."),
            click.option("--retry-delay", default=0.5, show_default=True,
                         type=click.FloatRange(0, 30), callback=not_nan,
                         help="First retry delay in seconds (0-30)."),
            click.option("--retry-max-wait", default=300.0, show_default=True,
                         metavar="SECONDS", type=click.FloatRange(0), callback=not_nan,
                         help="Longest wait a registry may ask for (Retry-After); a longer "
                              "one fails the request."),
        ]
        for option in reversed(options if retry else options[:6]):
            func = option(func)
        return func

    return decorate


def side_options(side: str, kw: dict[str, Any], **extra: Any) -> TransportOptions:
    creds = kw.pop(f"{side}_creds")
    username, password = kw.pop(f"{side}_username"), kw.pop(f"{side}_password")
    authfile = kw.pop(f"{side}_authfile")
    cert_dir = kw.pop(f"{side}_cert_dir")
    if creds and (username or password):
        raise click.UsageError(f"--{side}-creds and --{side}-username/--{side}-password "
                               "are mutually exclusive")
    if (username is None) != (password is None):
        raise click.UsageError(f"--{side}-username and --{side}-password go together")
    try:
        explicit = parse_creds(creds) if creds else None
        if username is not None:
            explicit = Credentials(username, password or "")
        if authfile:
            load_authfile(authfile)  # a missing or broken --authfile is a usage error
        return TransportOptions(
            keychain=Keychain(explicit, authfile),
            tls_verify=parse_bool(kw.pop(f"{side}_tls_verify"), f"--{side}-tls-verify"),
            cert_dir=Path(cert_dir) if cert_dir else None,
            retries=kw.pop("retries"),
            retry_delay_s=kw.pop("retry_delay"),
            retry_max_wait_s=kw.pop("retry_max_wait"),
            **extra,
        )
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc


def once(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    """An option that may be given at most once (click would keep the last silently)."""
    if len(value) > 1:
        raise click.BadParameter(f"given {len(value)} times ({', '.join(value)}); give it "
                                 "once")
    return value[0] if value else None


def not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse ``nan``, which passes every range check."""
    if value != value:
        raise click.BadParameter("nan is not a number of seconds")
    return value


def progress_options(func: Callable) -> Callable:
    func = click.option("--progress", type=click.Choice(["auto", "bar", "plain", "json", "none"]),
                        default="auto", show_default=True, help="How to show progress on stderr.")(func)
    func = click.option("-q", "--quiet", is_flag=True, help="No progress output.")(func)
    func = click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 64),
                        help="Concurrent transfers.")(func)
    func = click.option("--keep-going", is_flag=True,
                        help="Go on after an image fails; list the failed ones at the end "
                             "(exit 1).")(func)
    func = click.option("--dry-run", is_flag=True,
                        help="Print the plan (images, blobs, bytes, what is already there) "
                             "and move nothing.")(func)
    func = click.option("--json", "as_json", is_flag=True,
                        help="With --dry-run: the plan as JSON.")(func)
    return func


def shared_blob_dir_option(func: Callable) -> Callable:
    return click.option(
        "--shared-blob-dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
        help="Read the layout's blobs from DIR/<alg>/<hex> (a layout written by skopeo "
             "copy --dest-shared-blob-dir DIR).")(func)


def check_shared_blob_dir(bundle: str, shared_blob_dir: str | None) -> None:
    """Refuse ``--shared-blob-dir`` for an archive bundle (exit 2)."""
    if shared_blob_dir is not None and is_archive(bundle):
        raise click.UsageError("--shared-blob-dir is for a layout directory; an archive "
                               "holds its own blobs")


def zstd_ratio_option(func: Callable) -> Callable:
    """``--max-zstd-ratio N``: the decompression ratio a .tar.zst member may have."""
    return click.option(
        "--max-zstd-ratio", type=click.IntRange(1), default=ZSTD_RATIO_LIMIT,
        show_default=True, metavar="N",
        help="Refuse a .tar.zst member that decompresses to more than N bytes per "
             "compressed byte (a decompression bomb); raise it for a trusted bundle with "
             "layers of zeros.")(func)


def check_output_options(quiet: bool, progress: str, dry_run: bool, as_json: bool) -> None:
    """Refuse contradictory output options (exit 2) instead of ignoring one of them."""
    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run (the plan as JSON); for progress "
                               "events as JSON lines use --progress json")
    if quiet and progress not in ("auto", "none"):
        raise click.UsageError(f"-q/--quiet shows no progress; it contradicts --progress "
                               f"{progress} (give one of them)")

def say_waiting(message: str) -> None:
    """Say on stderr why an export waits (another bundler holds the bundle's lock)."""
    click.echo(escape(message), err=True)


def print_dry_run(plan: Callable[[], api.ExportPlan | api.ImportPlan], where: str,
             as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """Print the plan ``plan()`` works out; exit 1 (message on stderr) if it fails, 2 on
    a usage error (bad ``--to``, ``--mapping`` or reference). ``extra``: more keys of
    the JSON document."""
    try:
        with stdout_may_close():  # --dry-run | head: a reader may stop early
            print_plan(plan(), where, as_json, extra)
    except (MappingError, InvalidReferenceError, WrongBaseError) as exc:
        raise click.UsageError(escape(exc)) from exc
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # planning threads stalled on a registry are not waited for
        click.echo("interrupted: nothing was moved", err=True)
        exit_now(130)


#: an RFC 6838 media type (type "/" subtype, restricted-name characters), as
#: image-spec requires of ``artifactType``; parameters are not part of it
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                         r"/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


def referrer_options(func: Callable) -> Callable:
    """``--no-referrers``, ``--referrers-artifact-type TYPE`` (repeatable) and
    ``--require-referrers``; the command gets them as ``referrer_policy(kw)`` reads them."""
    func = click.option("--require-referrers", is_flag=True,
                        help="Fail when a referrer (signature, attestation, SBOM) cannot "
                             "be read, instead of a warning.")(func)
    func = click.option("--referrers-artifact-type", "referrer_types", metavar="TYPE",
                        multiple=True,
                        help="Carry only referrers of this artifact type (repeatable).")(func)
    return click.option("--no-referrers", is_flag=True,
                        help="Leave out the signatures, attestations and SBOMs that refer "
                             "to the images (carried by default).")(func)


def referrer_policy(kw: dict[str, Any]) -> ReferrerPolicy | None:
    """The referrer policy of ``referrer_options`` (popped from ``kw``); None with
    ``--no-referrers``.

    Raises:
        click.UsageError: ``--no-referrers`` with another referrer option.
    """
    off, types, required = kw.pop("no_referrers"), kw.pop("referrer_types"), \
        kw.pop("require_referrers")
    if off and (types or required):
        raise click.UsageError("--no-referrers leaves no referrers to filter or require")
    for value in types:
        if not _MEDIA_TYPE.fullmatch(value):
            raise click.UsageError(f"--referrers-artifact-type {escape(value)!r} is not a "
                                   "media type (TYPE/SUBTYPE, e.g. application/spdx+json)")
    return None if off else ReferrerPolicy(artifact_types=tuple(types), required=required)
