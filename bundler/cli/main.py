"""The ``bundler`` command line: thin click commands over the library facade.

Exit status: 0 success; 1 an error (message on stderr, naming the image); 2 bad usage
(click's ``Usage: ...`` lines, then ``Error: ...``): an unknown option or bad value, a bad
reference, images file, ``--to`` or ``--mapping``, found before any network use where the
command line alone tells; 130 interrupted (Ctrl-C), after a one-line summary of what
was kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import bundle as api
from ..engine.exporting import parse_references
from ..engine.naming import check_to, parse_mapping
from ..errors import BundlerError, InvalidReferenceError, MappingError
from ..events import Tally
from ..oci.limits import ZSTD_RATIO_LIMIT
from ..oci.reference import Reference
from ..registry.authfile import default_authfile, login, logout
from ..registry.client import TransportOptions
from ..registry.credentials import Credentials, Keychain, load_authfile, normalize_key, parse_creds
from ..registry.journal import UploadJournal
from ..stores.archive import is_archive, output_format
from ..termsafe import escape
from .reporters import make_reporter
from .summary import (
    export_summary,
    human,
    import_summary,
    plural,
    print_plan,
    run,
    stdout_may_close,
)

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


def _size_option(minimum: int) -> Callable[[click.Context, click.Parameter, str | None],
                                           int | None]:
    """A click callback: the option's value as bytes, at least ``minimum``."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        return parse_size(value, minimum=minimum, param=param.opts[0])

    return convert


def _bool(text: str, option: str = "--tls-verify") -> bool:
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
                         type=click.FloatRange(0, 30), callback=_not_nan,
                         help="First retry delay in seconds (0-30)."),
            click.option("--retry-max-wait", default=300.0, show_default=True,
                         metavar="SECONDS", type=click.FloatRange(0), callback=_not_nan,
                         help="Longest wait a registry may ask for (Retry-After); a longer "
                              "one fails the request."),
        ]
        for option in reversed(options if retry else options[:6]):
            func = option(func)
        return func

    return decorate


def _options(side: str, kw: dict[str, Any], **extra: Any) -> TransportOptions:
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
            tls_verify=_bool(kw.pop(f"{side}_tls_verify"), f"--{side}-tls-verify"),
            cert_dir=Path(cert_dir) if cert_dir else None,
            retries=kw.pop("retries"),
            retry_delay_s=kw.pop("retry_delay"),
            retry_max_wait_s=kw.pop("retry_max_wait"),
            **extra,
        )
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc


def _once(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    """An option that may be given at most once (click would keep the last silently)."""
    if len(value) > 1:
        raise click.BadParameter(f"given {len(value)} times ({', '.join(value)}); give it "
                                 "once")
    return value[0] if value else None


def _not_nan(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """Refuse ``nan``, which passes every range check."""
    if value != value:
        raise click.BadParameter("nan is not a number of seconds")
    return value


def _progress_options(func: Callable) -> Callable:
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


def _shared_blob_dir_option(func: Callable) -> Callable:
    return click.option(
        "--shared-blob-dir", type=click.Path(exists=True, file_okay=False), metavar="DIR",
        help="Read the layout's blobs from DIR/<alg>/<hex> (a layout written by skopeo "
             "copy --dest-shared-blob-dir DIR).")(func)


def _check_shared_blob_dir(bundle: str, shared_blob_dir: str | None) -> None:
    """Refuse ``--shared-blob-dir`` for an archive bundle (exit 2)."""
    if shared_blob_dir is not None and is_archive(bundle):
        raise click.UsageError("--shared-blob-dir is for a layout directory; an archive "
                               "holds its own blobs")


def _zstd_ratio_option(func: Callable) -> Callable:
    """``--max-zstd-ratio N``: the decompression ratio a .tar.zst member may have."""
    return click.option(
        "--max-zstd-ratio", type=click.IntRange(1), default=ZSTD_RATIO_LIMIT,
        show_default=True, metavar="N",
        help="Refuse a .tar.zst member that decompresses to more than N bytes per "
             "compressed byte (a decompression bomb); raise it for a trusted bundle with "
             "layers of zeros.")(func)


def _check_output_options(quiet: bool, progress: str, dry_run: bool, as_json: bool) -> None:
    """Refuse contradictory output options (exit 2) instead of ignoring one of them."""
    if as_json and not dry_run:
        raise click.UsageError("--json goes with --dry-run (the plan as JSON); for progress "
                               "events as JSON lines use --progress json")
    if quiet and progress not in ("auto", "none"):
        raise click.UsageError(f"-q/--quiet shows no progress; it contradicts --progress "
                               f"{progress} (give one of them)")


class _StderrHandler(logging.Handler):
    """Writes log records to the current stderr (``--debug``)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(escape(self.format(record)), err=True)


def _configure_debug(debug: bool) -> None:
    logger = logging.getLogger("bundler")
    for handler in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(handler)
    if debug:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        logger.addHandler(handler)
    else:  # warnings of the library (a credential helper missing) as "warning: ..."
        handler = _StderrHandler(logging.WARNING)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.NOTSET)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bundler")
@click.option("--debug", is_flag=True,
              help="Log every HTTP request (method, URL, status) and credential source to "
                   "stderr; never secrets.")
def main(debug: bool) -> None:
    """Move container images across an air gap: export from registries into one bundle,
    import the bundle into a disconnected registry with every digest preserved."""
    _configure_debug(debug)


@main.command("export")
@click.argument("references", nargs=-1)
@click.option("-f", "--images-file", type=click.Path(dir_okay=False, allow_dash=True),
              help="File with one reference per line (# comments allowed); - for stdin.")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Bundle to write: a directory (extended if it exists), NAME.tar or "
                   "NAME.tar.zst (a new single-file bundle).")
@click.option("--format", "fmt", type=click.Choice(["dir", "tar", "tar.zst"]),
              help="Bundle format (default: from the output name).")
@click.option("--split-size", metavar="SIZE", callback=_size_option(MIN_SPLIT_SIZE),
              help="Cut an archive into volumes NAME.000, NAME.001, ... of SIZE (e.g. 4GiB; "
                   "at least 1KiB).")
@click.option("--compression-level", default=3, show_default=True, type=click.IntRange(1, 22),
              help="zstd level of a .tar.zst bundle.")
@click.option("--no-wait", is_flag=True,
              help="Fail at once (exit 1) if another bundler is writing the same bundle, "
                   "instead of waiting for it.")
@click.option("--include-foreign-layers", is_flag=True,
              help="Store non-distributable (foreign) layers too: from the registry, else "
                   "from the URLs their descriptors list (https; no credentials sent).")
@transport_options("src")
@_progress_options
def export_cmd(references: tuple[str, ...], images_file: str | None, output: str,
               fmt: str | None, split_size: int | None, compression_level: int,
               no_wait: bool, include_foreign_layers: bool,
               jobs: int, quiet: bool, progress: str, keep_going: bool, dry_run: bool,
               as_json: bool, **kw: Any) -> None:
    """Export images from registries into one deduplicated OCI layout bundle.

    \b
    Examples:
      bundler export docker.io/library/alpine:3.20 -o ./bundle
      bundler export --images-file images.txt -o ./bundle
      bundler export --images-file images.txt -o bundle.tar.zst --split-size 4GiB
      bundler export --images-file images.txt -o ./bundle --dry-run
    """
    _check_output_options(quiet, progress, dry_run, as_json)
    split = split_size
    try:
        archive = output if output_format(output, fmt, split) != "dir" else None
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    options = _options("src", kw)
    texts: list[tuple[str, str]] = [(text, "") for text in references]
    try:
        if images_file:
            texts += api.read_images_file(images_file, numbered=True)
        refs = parse_references(texts)
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    if dry_run:
        _dry_run(lambda: api.plan_export(refs, output, format=fmt, split_size=split,
                                         options=options, jobs=jobs), output, as_json)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    options = dataclasses.replace(options, reporter=reporter)  # shows long waits
    run(lambda stop: api.export_bundle(refs, output, format=fmt, split_size=split,
                                       compression_level=compression_level, options=options,
                                       jobs=jobs, reporter=reporter, stop=stop,
                                       keep_going=keep_going, wait=not no_wait,
                                       on_wait=_say_waiting,
                                       include_foreign_layers=include_foreign_layers),
        tally, lambda result, seconds: export_summary(result, output, seconds), reporter,
        archive=archive)


def _say_waiting(message: str) -> None:
    """Say on stderr why an export waits (another bundler holds the bundle's lock)."""
    click.echo(escape(message), err=True)


def _dry_run(plan: Callable[[], api.ExportPlan | api.ImportPlan], where: str,
             as_json: bool) -> None:
    """Print the plan ``plan()`` works out; exit 1 (message on stderr) if it fails, 2 on
    a usage error (bad ``--to``, ``--mapping`` or reference)."""
    try:
        with stdout_may_close():  # --dry-run | head: a reader may stop early
            print_plan(plan(), where, as_json)
    except (MappingError, InvalidReferenceError) as exc:
        raise click.UsageError(escape(exc)) from exc
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)


@main.command("import")
@click.argument("bundle", type=click.Path())
@click.option("--to", "to", metavar="REGISTRY[/PREFIX]", callback=_once,
              multiple=True, help="Destination registry and repository prefix.")
@click.option("--mapping", type=click.Path(dir_okay=False), callback=_once, multiple=True,
              help="File of SOURCE=DESTINATION lines (oc image mirror style).")
@click.option("--chunk-size", default="64MiB", show_default=True,
              callback=_size_option(MIN_CHUNK_SIZE),
              help="Blobs larger than this are uploaded in PATCH chunks of this size "
                   "(at least 1KiB).")
@_shared_blob_dir_option
@_zstd_ratio_option
@transport_options("dest")
@_progress_options
def import_cmd(bundle: str, to: str | None, mapping: str | None, chunk_size: int, jobs: int,
               quiet: bool, progress: str, keep_going: bool, dry_run: bool, as_json: bool,
               shared_blob_dir: str | None, max_zstd_ratio: int, **kw: Any) -> None:
    """Push a bundle's images into a registry, preserving every digest.

    BUNDLE is a directory, a .tar or .tar.zst file, split volumes (base name or
    NAME.000), or - to read the archive from stdin (one pass, never unpacked).

    \b
    Examples:
      bundler import ./bundle --to registry.internal:5000/mirror
      bundler import ./bundle --mapping mapping.txt
      bundler import bundle.tar.zst --to registry.internal:5000/mirror
      cat bundle.tar.zst.* | bundler import - --to registry.internal:5000/mirror
      bundler import ./bundle --to registry.internal:5000/mirror --dry-run
    """
    _check_output_options(quiet, progress, dry_run, as_json)
    if (to is None) == (mapping is None):
        raise click.UsageError("give exactly one of --to REGISTRY[/PREFIX] or --mapping FILE")
    _check_shared_blob_dir(bundle, shared_blob_dir)
    try:  # checked before the bundle is opened
        if to is not None:
            check_to(to)
        pairs = parse_mapping(mapping) if mapping is not None else None
    except BundlerError as exc:
        raise click.UsageError(escape(exc)) from exc
    options = _options("dest", kw, chunk_size=chunk_size, journal=UploadJournal())
    if dry_run:
        _dry_run(lambda: api.plan_import(bundle, to=to, mapping=pairs, options=options,
                                         jobs=jobs, shared_blob_dir=shared_blob_dir),
                 bundle, as_json)
        return
    tally = Tally()
    reporter = make_reporter("none" if quiet else progress, tally)
    options = dataclasses.replace(options, reporter=reporter)  # shows long waits
    run(lambda stop: api.import_bundle(bundle, to=to, mapping=pairs, options=options,
                                       jobs=jobs, reporter=reporter, stop=stop,
                                       keep_going=keep_going,
                                       shared_blob_dir=shared_blob_dir,
                                       max_zstd_ratio=max_zstd_ratio),
        tally, import_summary, reporter, importing=True)


R = TypeVar("R")


def _offline(action: Callable[[], R], interrupted: str) -> R:
    """Run a bundle reader (list, verify): exit 1 with ``error: ...`` on a
    :class:`BundlerError`, 130 with ``interrupted`` on Ctrl-C."""
    try:
        return action()
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(interrupted, err=True)
        sys.exit(130)


@main.command("list")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_shared_blob_dir_option
@_zstd_ratio_option
def list_cmd(bundle: str, as_json: bool, shared_blob_dir: str | None,
             max_zstd_ratio: int) -> None:
    """Show the images of a bundle: reference, digest, media type, platforms, size.

    An image whose manifests cannot be read is named on stderr and the others are
    listed; the exit status is then 1."""
    _check_shared_blob_dir(bundle, shared_blob_dir)
    listing = _offline(lambda: api.list_bundle(bundle, shared_blob_dir=shared_blob_dir,
                                               max_zstd_ratio=max_zstd_ratio),
                       "interrupted")
    with stdout_may_close():  # list | head: a reader may stop early
        _print_listing(listing, as_json)
    sys.exit(1 if listing.problems else 0)


def _print_listing(listing: api.BundleListing, as_json: bool) -> None:
    """The listing as a table and a totals line, or as JSON (``problems`` on stderr)."""
    if as_json:
        click.echo(json.dumps({
            "images": [
                {"reference": i.name, "digest": str(i.digest), "mediaType": i.media_type,
                 "platforms": i.platforms, "size": i.size}
                for i in listing.images
            ],
            "uniqueBytes": listing.unique_bytes,
            "totalBytes": listing.total_bytes,
            "blobs": listing.blob_count,
            "problems": listing.problems,
        }, indent=2))
        return
    for problem in listing.problems:
        click.echo(f"problem: {escape(problem)}", err=True)
    rows = [("REFERENCE", "DIGEST", "MEDIA TYPE", "PLATFORMS", "SIZE")]
    for i in listing.images:
        kind = i.media_type.rsplit("/", 1)[-1]
        rows.append((escape(i.name) or "(unnamed)", i.digest.short, escape(kind),
                     escape(",".join(i.platforms)) or "-", human(i.size)))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip())
    saved = listing.total_bytes - listing.unique_bytes
    click.echo(f"{plural(len(listing.images), 'image')}, "
               f"{plural(listing.blob_count, 'blob')}: "
               f"{human(listing.unique_bytes)} stored, {human(listing.total_bytes)} without "
               f"dedup ({human(saved)} saved)"
               + (f"; {plural(len(listing.problems), 'image')} unreadable (see above)"
                  if listing.problems else ""))


@main.command("verify")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_shared_blob_dir_option
@_zstd_ratio_option
def verify_cmd(bundle: str, as_json: bool, shared_blob_dir: str | None,
               max_zstd_ratio: int) -> None:
    """Check a bundle offline: every digest, size and reference. Exit 1 on problems."""
    _check_shared_blob_dir(bundle, shared_blob_dir)
    report = _offline(lambda: api.verify_bundle(bundle, shared_blob_dir=shared_blob_dir,
                                                max_zstd_ratio=max_zstd_ratio),
                      "interrupted: the bundle was not fully checked")
    with stdout_may_close():
        _print_report(report, bundle, as_json)
    sys.exit(0 if report.ok else 1)


def _print_report(report: api.VerifyReport, bundle: str, as_json: bool) -> None:
    """The verify report: problems on stderr and a summary line, or JSON."""
    if as_json:
        click.echo(json.dumps({"ok": report.ok, "images": report.images, "blobs": report.blobs,
                               "bytes": report.bytes, "problems": report.problems,
                               "skipped": [str(d) for d in report.skipped],
                               "warnings": report.warnings}, indent=2))
    else:
        for warning in report.warnings:
            click.echo(f"warning: {escape(warning)}", err=True)
        for problem in report.problems:
            click.echo(f"problem: {escape(problem)}", err=True)
        state = "OK" if report.ok else plural(len(report.problems), "problem")
        skipped = (f", {plural(len(report.skipped), 'non-distributable layer')} not held "
                   "(skipped)"
                   if report.skipped else "")
        click.echo(f"{escape(bundle)}: {state}: {plural(report.images, 'image')}, "
                   f"{plural(report.blobs, 'blob')}, "
                   f"{human(report.bytes)} checked{skipped}")


@main.command("login")
@click.argument("registry")
@click.option("-u", "--username", help="User name.")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--authfile", type=click.Path(dir_okay=False),
              help="Auth file to write (default: $REGISTRY_AUTH_FILE, else "
                   "$XDG_RUNTIME_DIR/containers/auth.json, else ~/.docker/config.json).")
@click.option("--tls-verify", default="true", metavar="BOOL", help="Verify TLS certificates.")
@click.option("--cert-dir", type=click.Path(exists=True, file_okay=False),
              help="Directory of *.crt CAs and *.cert/*.key client pairs.")
def login_cmd(registry: str, username: str | None, password: str | None, password_stdin: bool,
              authfile: str | None, tls_verify: str, cert_dir: str | None) -> None:
    """Check credentials against REGISTRY[/NAMESPACE] and store them in an auth file.

    \b
    Examples:
      bundler login registry.internal:5000 -u admin --password-stdin < pass.txt
      bundler login quay.io/team -u robot --password-stdin --authfile ./auth.json
    """
    if password is not None and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    host = normalize_key(registry).split("/", 1)[0]
    try:
        Reference.parse(f"{host}/x")
    except InvalidReferenceError:
        raise click.UsageError(f"{escape(repr(registry))} is not a registry "
                               "HOST[:PORT][/NAMESPACE]") from None
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    try:
        path = login(registry, Credentials(username, password), authfile=authfile,
                     tls_verify=_bool(tls_verify), cert_dir=Path(cert_dir) if cert_dir else None)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    click.echo(f"Login Succeeded! (credentials stored in {escape(path)})")


@main.command("logout")
@click.argument("registry", required=False)
@click.option("-a", "--all", "all_", is_flag=True, help="Remove the entries of all registries.")
@click.option("--authfile", type=click.Path(dir_okay=False),
              help="Auth file to change (default as for login).")
def logout_cmd(registry: str | None, all_: bool, authfile: str | None) -> None:
    """Remove the stored credentials of REGISTRY[/NAMESPACE] (or of all with --all)."""
    if (registry is None) != all_:
        raise click.UsageError("give exactly one of REGISTRY or --all")
    try:
        gone = logout(None if all_ else registry, authfile=authfile)
    except BundlerError as exc:
        click.echo(f"error: {escape(exc)}", err=True)
        sys.exit(1)
    if not gone:
        path = authfile or default_authfile()
        click.echo(f"No stored credentials to remove (in {escape(path)})")
        return
    click.echo(f"Removed login credentials for {escape(', '.join(gone))}")


if __name__ == "__main__":
    main()
